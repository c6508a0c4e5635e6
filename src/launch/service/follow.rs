//! Following a started unit to its end and reading its status: through its
//! PropertiesChanged signals, across `systemctl daemon-reexec` (systemd away from the
//! bus for a moment) and a restart of the bus daemon (the connection is lost: connect
//! again, take a new reference on the unit, go on waiting).

use anyhow::{Context, anyhow};
use futures_util::StreamExt;
use zbus::fdo::PropertiesChangedStream;

use super::StopRequests;
use crate::systemd::client::{Client, RECONNECT_WITHIN};
use crate::systemd::{is_disconnect, is_reply};

const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";

/// How the service's main process ended, as systemd saw it.
pub struct Status {
    pub code: i32,
    pub status: i32,
    /// "success", "exit-code", "timeout", "oom-kill", ...
    pub result: String,
}

/// Wait for `unit` to end and read its status; None when it ended and was collected
/// while the bus was away (the inner mode's findings still carry the command's
/// status). SIGINT, SIGTERM and SIGHUP are passed on to the phase meanwhile.
pub async fn follow(
    client: &mut Client,
    unit: &str,
    mut changes: PropertiesChangedStream,
    stop_requests: &mut StopRequests,
    quiet: bool,
) -> anyhow::Result<Option<Status>> {
    loop {
        match until_ended(client, unit, &mut changes, stop_requests).await {
            Ok(status) => return Ok(Some(status)),
            Err(Lost::Other(error)) => return Err(error),
            Err(Lost::Connection) => {}
        }
        let bus = client.kind.bus();
        if !quiet {
            crate::notice!(
                "phasebox: lost the connection to the {bus} bus while the phase ran; reconnecting"
            );
        }
        tokio::select! {
            reconnected = client.reconnect() => reconnected.with_context(|| format!(
                "lost the connection to the {bus} bus while the phase ran and could not reconnect \
                 within {} s, so the phase is stopped; is dbus running? (`systemctl status dbus`)",
                RECONNECT_WITHIN.as_secs()
            ))?,
            stop = stop_requests.next() => {
                crate::phase::supervise::record_stop(stop);
                return Err(anyhow!("stopped while the bus was away"));
            }
        }
        // Listen before looking, as at the start: the unit may end in between.
        changes = client.watch(unit).await?;
        if !client.take_ref(unit).await? {
            return Ok(None);
        }
        if let Some(signal) = crate::phase::supervise::stopped_by() {
            // Told to stop while reconnecting: systemd has not heard of it yet.
            client.interrupt(unit, signal).await?;
        }
    }
}

/// Why following the unit stopped short.
enum Lost {
    /// The bus connection broke: reconnect and go on.
    Connection,
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Lost {
    fn from(error: anyhow::Error) -> Lost {
        if is_disconnect(&error) { Lost::Connection } else { Lost::Other(error) }
    }
}

impl From<zbus::Error> for Lost {
    fn from(error: zbus::Error) -> Lost {
        anyhow::Error::from(error).into()
    }
}

async fn until_ended(
    client: &Client,
    unit: &str,
    changes: &mut PropertiesChangedStream,
    stop_requests: &mut StopRequests,
) -> Result<Status, Lost> {
    let unit_proxy = client.unit(unit).await?;
    // After the start job ended (or after a reconnect, once we listen again) a Get is
    // authoritative; later changes arrive as signals, and our reference keeps the
    // unit until we have read it.
    loop {
        let state = across_reexec(|| unit_proxy.active_state()).await?;
        if state == "inactive" || state == "failed" {
            break;
        }
        loop {
            let signal = tokio::select! {
                signal = changes.next() => signal,
                stop = stop_requests.next() => {
                    crate::phase::supervise::record_stop(stop);
                    // Every stop request is passed on; one that fails is said, and
                    // the phase is still followed to its end.
                    if let Err(error) = client.interrupt(unit, stop).await {
                        if is_disconnect(&error) {
                            return Err(Lost::Connection);
                        }
                        crate::notice!("phasebox: warning: {error:#}");
                    }
                    continue;
                }
            };
            let signal = signal.ok_or(Lost::Connection)?;
            let args = signal.args().context("decoding PropertiesChanged")?;
            if args.interface_name.as_str() == UNIT_INTERFACE
                && args.changed_properties.contains_key("ActiveState")
            {
                break;
            }
        }
    }
    let service = client.service(unit).await?;
    let (code, status, result) = across_reexec(|| async {
        futures_util::try_join!(service.exec_main_code(), service.exec_main_status(), service.result())
    })
    .await?;
    // Collected now rather than when systemd notices our disconnect.
    across_reexec(|| unit_proxy.unref()).await?;
    Ok(Status { code, status, result })
}

/// A read (or Unref) of the unit, again while systemd is away: `systemctl
/// daemon-reexec` drops its bus name for a moment, and calls then fail with NoReply
/// or ServiceUnknown. Gives up after 30 s.
async fn across_reexec<T, F, Fut>(mut call: F) -> zbus::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = zbus::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match call().await {
            Err(error)
                if is_reply(
                    &error,
                    &[
                        "org.freedesktop.DBus.Error.NoReply",
                        "org.freedesktop.DBus.Error.ServiceUnknown",
                        "org.freedesktop.DBus.Error.NameHasNoOwner",
                    ],
                ) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            result => return result,
        }
    }
}
