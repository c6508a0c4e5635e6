//! The service backend, in systemd-run's steps: build properties, listen, start
//! (negotiating what this systemd supports), wait for the unit to end without losing
//! a fast one, read its status, report.
//!
//! Process: the launcher. Namespaces: the caller's; the phase's are systemd's and the
//! inner mode's. Threads: the systemd session's current-thread runtime. Signals:
//! SIGINT, SIGTERM and SIGHUP are read by the runtime and stop the unit (systemd starts
//! services in a session of their own, so a terminal's Ctrl-C reaches the phase only
//! this way). Talks to: systemd over D-Bus; the inner mode over UNIT.socket (context
//! out, orphans named, findings back).

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::net::UnixListener;

use anyhow::{Context, anyhow};

use super::{Outcome, conclude};
use crate::launch::Plan;
use crate::protocol::context::CallerContext;
use crate::protocol::context::Launcher;
use crate::protocol::findings::{Findings, Orphan};
use crate::protocol::message::{AsyncChannel, Message};
use crate::protocol::run_files::RunFiles;
use crate::protocol::status::{Failure, Limit, Termination};
use crate::sys::namespaces::{Kind, Set};
use crate::systemd::client::Client;
use crate::systemd::properties::{self, Property};
use crate::systemd::{Manager, error_reply};

/// Default grace period between SIGTERM and SIGKILL for what a phase leaves behind:
/// short, so an orphan that ignores SIGTERM can't hold the caller for systemd's 90 s,
/// but longer than the inner mode's own grace (`supervise::STOP_GRACE_SECONDS`, one
/// more with a PID 1), so that on a stop or a time limit the inner mode kills the
/// command itself and reports how it ended before systemd kills the unit.
pub const DEFAULT_TIMEOUT_STOP_USEC: u64 =
    (crate::phase::supervise::STOP_GRACE_SECONDS as u64 + 3) * 1_000_000;

/// PrivateIPC= exists since systemd 248.
pub const PRIVATE_IPC_SINCE: u32 = 248;

/// PrivatePIDs= exists since systemd 257.
pub const PRIVATE_PIDS_SINCE: u32 = 257;

/// Which isolations systemd provides and which the inner mode creates itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub systemd: Set,
    pub inner: Set,
    /// The inner mode adds portage's loopback addresses to systemd's network namespace.
    pub loopback_addresses: bool,
}

impl Split {
    pub fn new(wanted: Set, manager: Manager, version: Option<u32>) -> Split {
        let ipc_by_systemd = version.is_none_or(|v| v >= PRIVATE_IPC_SINCE);
        // Only a version read as 257 or later: an unknown one may be older.
        let pid_by_systemd = version.is_some_and(|v| v >= PRIVATE_PIDS_SINCE);
        let systemd = Set {
            network: wanted.network,
            ipc: wanted.ipc && ipc_by_systemd,
            pid: wanted.pid && pid_by_systemd,
            ..Set::default()
        };
        // systemd has no way to set the hostname to localhost, nor (before 257) a PID
        // namespace: the inner mode makes those. With PrivatePIDs= the inner mode is
        // the namespace's PID 1, and the launcher names what the command leaves.
        let mut inner = Set { uts: wanted.uts, pid: wanted.pid && !pid_by_systemd, ..Set::default() }
            .with(Kind::Ipc, wanted.ipc && !ipc_by_systemd);
        let mut loopback_addresses = wanted.network;
        if manager == Manager::User {
            // Unprivileged inside the user manager's namespace, the inner mode can only
            // set up lo in a network namespace of its own (in a nested user namespace),
            // and mount the phase's /dev/mqueue only for an IPC namespace of its own.
            inner.network = wanted.network;
            inner.ipc = wanted.ipc;
            loopback_addresses = false;
        }
        Split { systemd, inner, loopback_addresses }
    }

    /// systemd refused this isolation's property: the inner mode creates it instead.
    pub fn move_to_inner(&mut self, kind: Kind) {
        self.systemd = self.systemd.with(kind, false);
        self.inner = self.inner.with(kind, true);
        if kind == Kind::Network {
            self.loopback_addresses = false;
        }
    }
}

pub async fn run(plan: Plan, client: &mut Client) -> Result<Outcome, Failure> {
    let manager = client.kind;
    let unit = format!("{}.service", plan.unit_stem);
    let files = RunFiles::paths(manager, &unit);
    let mut context = plan.context.clone();
    context.launcher = Launcher::this_process();
    let version = client.version().await.ok();
    let mut split = Split::new(plan.wanted, manager, version);
    let exec_path = inner_executable()?;
    let stdio = Stdio::of_caller()?;
    let started = std::time::Instant::now();
    // Listen before starting: a phase may end before StartTransientUnit returns;
    // and the inner mode connects as soon as it runs.
    let changes = client.watch(&unit).await?;
    let mut stop_requests = StopRequests::new()?;
    let listener = files.listen()?;

    let job = start_negotiating(client, &unit, &mut split, plan.verbose, |split| {
        Ok(unit_properties(&plan, manager, split, &exec_path, &files, stdio.raw()))
    })
    .await?;
    drop(stdio);
    // What this systemd makes decides what the inner mode makes.
    context.unshare = split.inner;
    context.loopback_addresses = split.loopback_addresses;
    context.pid1_by_systemd = split.systemd.pid;

    // 1. The start job ends: the unit has started, or failed to.
    client.job_result(&unit, &job).await?;
    // 2. The unit ends, while the inner mode gets its context and reports back
    // over its channel; 3. its exact status, then what the inner mode found.
    let served = RefCell::new(Served::default());
    let status = {
        let serving = serve(&listener, &context, &unit, &served);
        let following = follow::follow(client, &unit, changes, &mut stop_requests, plan.context.quiet);
        tokio::pin!(serving, following);
        let status = tokio::select! {
            status = &mut following => status?,
            () = &mut serving => following.await?,
        };
        // The unit's processes are gone, so is the inner mode's end of the channel:
        // what it sent is all there, and its end of file right behind.
        if served.borrow().connected && !served.borrow().ended {
            let _ = tokio::time::timeout(DRAIN_WITHIN, &mut serving).await;
        }
        status
    };
    // 4. systemd unloads it: when phasebox returns, its unit is gone.
    client.wait_gone(&unit).await?;
    let journal = match manager {
        Manager::System => format!("journalctl -u {unit}"),
        Manager::User => format!("journalctl --user -u {unit}"),
    };
    let Served { findings, named, .. } = served.into_inner();
    let Some(findings) = findings else {
        let result = status.map_or_else(|| "unknown: the unit was collected".into(), |s| s.result);
        return Err(anyhow!(
            "the phase never started inside {unit} (systemd's result: {result}); see `{journal}`"
        )
        .into());
    };
    let hint = format!(" See `{journal}`.");
    let Some(status) = status else {
        // Collected while the bus was away: the inner mode's word is all there is.
        return conclude(Findings { orphans: [findings.orphans, named].concat(), ..findings }, None, &hint);
    };
    let mut outcome = conclude(findings, Termination::from_cld(status.code, status.status), &hint)?;
    outcome.orphans.extend(named);
    // "timeout" is also the Result of a stop that outlasted TimeoutStopSec=: it is
    // the phase's time limit only if the phase had one and ran that long.
    let limit = match Limit::from_result(&status.result) {
        Some(Limit::Time) if plan.runtime_max.is_none_or(|max| started.elapsed() < max) => None,
        limit => limit,
    };
    Ok(Outcome { limit, ..outcome })
}

/// How long the inner mode's last messages may take to arrive once its unit ended.
const DRAIN_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// What came over the inner mode's channel.
#[derive(Default)]
struct Served {
    /// The inner mode connected and got its context.
    connected: bool,
    /// Its end of the channel closed.
    ended: bool,
    findings: Option<Findings>,
    /// What the command left, named by this process (the PID 1 systemd made asked).
    named: Vec<Orphan>,
}

/// Serve the inner mode's channel: give the unit's main process (and no other) the
/// context; as the PID 1 systemd made, when it says the command has ended and left
/// others (stopped), name them (its descendants) as the caller sees them; take the
/// findings. Returns once the inner mode's end closes.
async fn serve(listener: &UnixListener, context: &CallerContext, unit: &str, served: &RefCell<Served>) {
    let mut channel = loop {
        let Ok((stream, _)) = listener.accept().await else { return std::future::pending().await };
        let channel = AsyncChannel::from(stream);
        match channel.peer_pid() {
            Ok(peer) if in_unit(peer, unit) => break channel,
            // Someone else's connection: the context is the inner mode's alone.
            _ => continue,
        }
    };
    let Ok(peer) = channel.peer_pid() else { return };
    served.borrow_mut().connected = true;
    if channel.send(&Message::Context(Box::new(context.clone()))).await.is_ok() {
        loop {
            match channel.recv().await {
                Ok(Some(Message::Orphans)) => {
                    served.borrow_mut().named = crate::sys::proc::descendants(peer);
                    if channel.send(&Message::Listed).await.is_err() {
                        break;
                    }
                }
                Ok(Some(Message::Report(findings))) => served.borrow_mut().findings = Some(findings),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    served.borrow_mut().ended = true;
}

/// Whether a process is in the unit's cgroup: the unit's own, not a stranger that
/// found its socket.
fn in_unit(pid: u32, unit: &str) -> bool {
    let suffix = format!("/{unit}");
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|text| text.lines().any(|line| line.trim_end().ends_with(&suffix)))
}

/// SIGINT, SIGTERM and SIGHUP sent to phasebox: each stops the phase. (systemd starts
/// services with setsid(), so a terminal's Ctrl-C reaches the phase only this way.)
struct StopRequests {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopRequests {
    fn new() -> Result<StopRequests, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind| signal(kind).context("listening for signals");
        Ok(StopRequests {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
        }
    }
}

/// StartTransientUnit, and when systemd refuses an isolation property (an older
/// systemd), again without it, the inner mode then creating that namespace.
pub async fn start_negotiating(
    client: &Client,
    unit: &str,
    split: &mut Split,
    verbose: bool,
    mut properties_for: impl FnMut(&Split) -> anyhow::Result<Vec<Property>>,
) -> Result<zbus::OwnedObjectPath, Failure> {
    loop {
        let properties = properties_for(split)?;
        if verbose {
            super::announce_unit(
                &format!("starting {unit} on the {} manager", client.kind.name()),
                &properties,
            );
        }
        match client.start(unit, &properties).await {
            Ok(job) => return Ok(job),
            Err(error) => match refused_isolation(&error) {
                Some(kind) if split.systemd.contains(kind) => {
                    if verbose {
                        crate::notice!(
                            "phasebox: this systemd refused {} ({error}); phasebox creates it itself",
                            kind.describe()
                        );
                    }
                    split.move_to_inner(kind);
                }
                _ => return Err(explain_start_error(error, unit)),
            },
        }
    }
}

/// The isolation whose property an older systemd did not know.
fn refused_isolation(error: &zbus::Error) -> Option<Kind> {
    let (name, text) = error_reply(error)?;
    if !matches!(
        name.as_str(),
        "org.freedesktop.DBus.Error.PropertyReadOnly" | "org.freedesktop.DBus.Error.UnknownProperty"
    ) {
        return None;
    }
    [(Kind::Ipc, "PrivateIPC"), (Kind::Network, "PrivateNetwork"), (Kind::Pid, "PrivatePIDs")]
        .into_iter()
        .find(|(_, property)| {
            text.contains(&format!("property {property},")) || text.contains(&format!("property {property} "))
        })
        .map(|(kind, _)| kind)
}

/// The isolation and lifecycle properties phasebox sends, then the user's.
pub fn unit_properties(
    plan: &Plan,
    manager: Manager,
    split: &Split,
    exec_path: &str,
    files: &RunFiles,
    stdio: [i32; 3],
) -> Vec<Property> {
    let socket_arg = files.socket.to_string_lossy().into_owned();
    let mut list = vec![
        properties::description(&plan.description),
        properties::slice(&plan.slice),
        properties::service_type_simple(),
        properties::exec_start(exec_path, vec!["phasebox".into(), "__inner".into(), socket_arg]),
    ];
    list.extend(isolation_properties(split, manager));
    list.extend([
        properties::kill_mode_control_group(),
        properties::add_ref(),
        properties::collect_inactive_or_failed(),
        properties::stdin_fd(stdio[0]),
        properties::stdout_fd(stdio[1]),
        properties::stderr_fd(stdio[2]),
    ]);
    list.extend(properties::accounting());
    if !plan.user_sets_timeout_stop {
        list.push(properties::timeout_stop_usec(DEFAULT_TIMEOUT_STOP_USEC));
    }
    list.extend(plan.unit_properties.iter().cloned());
    list
}

pub fn isolation_properties(split: &Split, manager: Manager) -> Vec<Property> {
    let mut list = Vec::new();
    if split.systemd.network {
        list.push(properties::private_network(true));
    }
    if split.systemd.ipc {
        list.push(properties::private_ipc(true));
    }
    if split.systemd.pid {
        list.push(properties::private_pids(true));
    }
    if manager == Manager::User && !split.systemd.is_empty() {
        // A user manager can only create these namespaces inside a user namespace.
        list.push(properties::private_users(true));
    }
    list
}

pub fn explain_start_error(error: zbus::Error, unit: &str) -> Failure {
    let message = match error_reply(&error) {
        Some((name, text)) => match name.as_str() {
            "org.freedesktop.systemd1.UnitExists" => {
                format!("unit {unit} already exists; choose another name with --unit, or leave --unit out")
            }
            "org.freedesktop.DBus.Error.AccessDenied"
            | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" => {
                format!("systemd refused to start {unit}: {text}; run as root, or use --user")
            }
            "org.freedesktop.DBus.Error.PropertyReadOnly" | "org.freedesktop.DBus.Error.UnknownProperty" => {
                format!("this systemd does not accept a property phasebox sent: {text}")
            }
            "org.freedesktop.DBus.Error.InvalidArgs" => format!("systemd rejected a property value: {text}"),
            _ => format!("systemd refused to start {unit}: {name}: {text}"),
        },
        None => format!("asking systemd to start {unit} failed: {error}"),
    };
    Failure::from(anyhow!(message))
}

/// phasebox itself, run by systemd as the unit's ExecStart in inner mode.
fn inner_executable() -> Result<String, Failure> {
    let path = std::env::current_exe().context("finding phasebox's own executable")?;
    path.to_str().map(str::to_owned).ok_or_else(|| {
        anyhow!("phasebox's own path {} is not UTF-8, which D-Bus can't carry", path.display()).into()
    })
}

/// The caller's stdin, stdout and stderr, handed to systemd as descriptors; a closed
/// one is replaced by /dev/null so the command still finds 0, 1 and 2 open.
struct Stdio {
    raw: [i32; 3],
    _replacements: Vec<OwnedFd>,
}

impl Stdio {
    fn of_caller() -> Result<Stdio, Failure> {
        let mut raw = [0, 1, 2];
        let mut replacements = Vec::new();
        for (fd, slot) in raw.iter_mut().enumerate() {
            // SAFETY: F_GETFD only checks whether the descriptor is open.
            if unsafe { libc::fcntl(fd as i32, libc::F_GETFD) } == -1 {
                let null: OwnedFd = std::fs::OpenOptions::new()
                    .read(fd == 0)
                    .write(fd != 0)
                    .open("/dev/null")
                    .context("opening /dev/null for a closed standard descriptor")?
                    .into();
                *slot = null.as_raw_fd();
                replacements.push(null);
            }
        }
        Ok(Stdio { raw, _replacements: replacements })
    }

    fn raw(&self) -> [i32; 3] {
        self.raw
    }
}

mod follow;
#[cfg(test)]
mod tests;
