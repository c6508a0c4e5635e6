//! A connection to a service manager. The signals of a unit (its jobs' ends, its
//! removal, its property changes) are listened to before anything is asked of it,
//! so none is missed however fast the unit ends; each stream is matched by the bus
//! to that one unit, so signals of other units never pile up unread.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures_util::{FutureExt, StreamExt};
use zbus::OwnedObjectPath;
use zbus::fdo::{PropertiesChangedStream, PropertiesProxy};
use zbus::proxy::CacheProperties;

use super::properties::Property;
use super::proxies::{
    JobRemovedStream, ListedUnit, ManagerProxy, ScopeProxy, ServiceProxy, UnitProxy, UnitRemovedStream,
};
use super::unit_name;
use super::{Disconnected, Manager, is_disconnect, is_reply};

const DESTINATION: &str = "org.freedesktop.systemd1";

/// How long phasebox waits for the bus daemon and systemd to come back.
pub const RECONNECT_WITHIN: Duration = Duration::from_secs(30);

/// How long systemd may take to unload a unit whose processes are all gone.
const GONE_WITHIN: Duration = Duration::from_secs(10);

pub struct Client {
    pub kind: Manager,
    connection: zbus::Connection,
    manager: ManagerProxy<'static>,
    watched: HashMap<String, Watched>,
}

/// The signals of one unit.
struct Watched {
    jobs: JobRemovedStream,
    removed: UnitRemovedStream,
}

impl Client {
    /// Connect, then Subscribe: systemd sends unit and job signals only to
    /// subscribed connections.
    pub async fn connect(kind: Manager) -> Result<Client> {
        let connection = super::connect(kind).await?;
        Client::over(kind, connection).await
    }

    /// The same over an existing connection (tests use a peer-to-peer one).
    pub async fn over(kind: Manager, connection: zbus::Connection) -> Result<Client> {
        let manager = ManagerProxy::builder(&connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .context("creating the systemd manager proxy")?;
        manager.subscribe().await.context("subscribing to systemd signals")?;
        Ok(Client { kind, connection, manager, watched: HashMap::new() })
    }

    /// Listen for the ends of a unit's jobs and for its removal: before a job is
    /// asked for, so its end can't be missed.
    pub async fn watch_unit(&mut self, unit: &str) -> Result<()> {
        let jobs = self
            .manager
            .receive_job_removed_with_args(&[(2, unit)])
            .await
            .context("subscribing to job signals")?;
        let removed = self
            .manager
            .receive_unit_removed_with_args(&[(0, unit)])
            .await
            .context("subscribing to unit signals")?;
        self.watched.insert(unit.to_string(), Watched { jobs, removed });
        Ok(())
    }

    /// Wait until systemd has unloaded `unit` (once every process of it is gone),
    /// so that a phase's unit is gone when phasebox returns. Warns, and returns,
    /// if it is still there after GONE_WITHIN.
    pub async fn wait_gone(&mut self, unit: &str) -> Result<()> {
        let Some(watched) = self.watched.get_mut(unit) else {
            return Err(anyhow!("phasebox did not watch {unit}"));
        };
        // Already seen go; else, if still loaded now, its removal comes as a signal.
        if watched.removed.next().now_or_never().flatten().is_some() {
            return Ok(());
        }
        match self.manager.get_unit(unit).await {
            Err(error) if is_reply(&error, &["org.freedesktop.systemd1.NoSuchUnit"]) => return Ok(()),
            Err(error) => return Err(error).with_context(|| format!("looking up {unit}")),
            Ok(_) => {}
        }
        let watched = self.watched.get_mut(unit).expect("watched above");
        match tokio::time::timeout(GONE_WITHIN, watched.removed.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(anyhow::Error::new(Disconnected).context(format!("waiting for {unit} to go"))),
            Err(_) => {
                crate::notice!(
                    "phasebox: warning: systemd still has {unit} {} s after the phase ended",
                    GONE_WITHIN.as_secs()
                );
                Ok(())
            }
        }
    }

    /// systemd's major version, from its Version property ("252.38-1~deb12u1" → 252).
    pub async fn version(&self) -> Result<u32> {
        let text = self.manager.version().await.context("reading systemd's Version")?;
        parse_version(&text).ok_or_else(|| anyhow!("cannot understand systemd's version {text:?}"))
    }

    /// Property changes of a unit, with its jobs and removal, listened to before it
    /// is started.
    pub async fn watch(&mut self, unit: &str) -> Result<PropertiesChangedStream> {
        self.watch_unit(unit).await?;
        PropertiesProxy::builder(&self.connection)
            .destination(DESTINATION)
            .path(unit_name::object_path(unit))
            .build()
            .await
            .context("creating the unit's properties proxy")?
            .receive_properties_changed()
            .await
            .context("subscribing to the unit's property changes")
    }

    pub async fn start(&self, unit: &str, properties: &[Property]) -> zbus::Result<OwnedObjectPath> {
        let dbus: Vec<_> = properties.iter().map(|p| p.to_dbus()).collect();
        self.manager.start_transient_unit(unit, "fail", &dbus, &[]).await
    }

    /// Wait for a job of a watched unit to end; its result ("done", "failed",
    /// "canceled", ...).
    pub async fn job_result(&mut self, unit: &str, job: &OwnedObjectPath) -> Result<String> {
        let watched = self.watched.get_mut(unit).with_context(|| format!("phasebox did not watch {unit}"))?;
        while let Some(signal) = watched.jobs.next().await {
            let args = signal.args().context("decoding JobRemoved")?;
            if args.job == *job {
                return Ok(args.result);
            }
        }
        Err(anyhow::Error::new(Disconnected).context("waiting for a systemd job"))
    }

    /// Stop a phase that phasebox was told to stop: `signal` to every process of the
    /// unit, then a stop job (SIGTERM, SIGKILL after TimeoutStopSec) for those that
    /// ignore it. Doesn't wait: the unit's end arrives like any other.
    pub async fn interrupt(&self, unit: &str, signal: i32) -> Result<()> {
        let gone = |e: &zbus::Error| {
            is_reply(e, &["org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.systemd1.NoSuchProcess"])
        };
        // The stop is asked for even when the signal could not be sent: the phase
        // must end either way.
        let killed = match self.manager.kill_unit(unit, "all", signal).await {
            Err(e) if !gone(&e) => Err(e).with_context(|| format!("signalling {unit}")),
            _ => Ok(()),
        };
        match self.manager.stop_unit(unit, "replace").await {
            Err(e) if !gone(&e) => Err(e).with_context(|| format!("stopping {unit}")),
            _ => killed,
        }
    }

    /// Stop a unit and wait until it is stopped; one already gone is stopped too.
    /// Reconnects once if the bus went away meanwhile.
    pub async fn stop(&mut self, unit: &str) -> Result<()> {
        match self.stop_once(unit).await {
            Err(error) if is_disconnect(&error) => {
                self.reconnect().await?;
                self.stop_once(unit).await
            }
            result => result,
        }
    }

    async fn stop_once(&mut self, unit: &str) -> Result<()> {
        if !self.watched.contains_key(unit) {
            self.watch_unit(unit).await?;
        }
        let job = match self.manager.stop_unit(unit, "fail").await {
            Ok(job) => job,
            Err(error) if is_reply(&error, &["org.freedesktop.systemd1.NoSuchUnit"]) => return Ok(()),
            Err(error) => return Err(error).with_context(|| format!("stopping {unit}")),
        };
        self.job_result(unit, &job).await.map(|_| ())
    }

    /// The bus went away (`systemctl restart dbus`): connect again as the first time,
    /// once the bus daemon is back and systemd is on it again. Gives up after
    /// RECONNECT_WITHIN.
    pub async fn reconnect(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + RECONNECT_WITHIN;
        loop {
            match Client::connect(self.kind).await {
                Ok(client) => {
                    *self = client;
                    return Ok(());
                }
                Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    /// Take a reference on a unit again, after a reconnect; false when systemd has
    /// already collected it.
    pub async fn take_ref(&self, unit: &str) -> Result<bool> {
        let gone = |e: &zbus::Error| {
            is_reply(e, &["org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.DBus.Error.UnknownObject"])
        };
        match self.manager.get_unit(unit).await {
            Ok(_) => {}
            Err(error) if gone(&error) => return Ok(false),
            Err(error) => return Err(error).with_context(|| format!("looking up {unit}")),
        }
        match self.unit(unit).await?.take_ref().await {
            Ok(()) => Ok(true),
            Err(error) if gone(&error) => Ok(false),
            Err(error) => Err(error).with_context(|| format!("taking a reference on {unit}")),
        }
    }

    pub async fn unit(&self, unit: &str) -> Result<UnitProxy<'static>> {
        Ok(UnitProxy::builder(&self.connection)
            .path(unit_name::object_path(unit))
            .cache_properties(CacheProperties::No)
            .build()
            .await?)
    }

    /// phasebox's units loaded in this manager (ListUnitsByPatterns).
    pub async fn phase_units(&self) -> Result<Vec<ListedUnit>> {
        self.manager
            .list_units_by_patterns(&[], &["phasebox-*.service", "phasebox-*.scope"])
            .await
            .context("listing phasebox's units")
    }

    pub async fn scope(&self, unit: &str) -> Result<ScopeProxy<'static>> {
        Ok(ScopeProxy::builder(&self.connection)
            .path(unit_name::object_path(unit))
            .cache_properties(CacheProperties::No)
            .build()
            .await?)
    }

    pub async fn service(&self, unit: &str) -> Result<ServiceProxy<'static>> {
        Ok(ServiceProxy::builder(&self.connection)
            .path(unit_name::object_path(unit))
            .cache_properties(CacheProperties::No)
            .build()
            .await?)
    }
}

fn parse_version(text: &str) -> Option<u32> {
    let digits: String = text.trim_start_matches('v').chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions() {
        assert_eq!(super::parse_version("252.38-1~deb12u1"), Some(252));
        assert_eq!(super::parse_version("245"), Some(245));
        assert_eq!(super::parse_version("v257.1"), Some(257));
        assert_eq!(super::parse_version("unknown"), None);
    }
}
