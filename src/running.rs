//! The phases running now, for `phasebox ps` and `phasebox stop`: service and scope
//! phases from systemd's units, unshare phases from the files their launchers keep
//! in phasebox's runtime directory while they run.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::mode::Reach;
use crate::policy::package::Package;
use crate::runtime_dir;
use crate::systemd::Manager;
use crate::systemd::client::Client;

/// How long a manager may take to answer before `ps` reports it unreachable.
const ASK_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    /// The unit's name, or `unshare-PID` for an unshare phase.
    pub id: String,
    /// The manager the unit belongs to; None for an unshare phase.
    pub manager: Option<Manager>,
    pub backend: &'static str,
    /// The unit's Description: `phasebox: CAT/PF PHASE phase`, or the command line.
    pub description: String,
    /// An unshare phase's package, as its launcher registered it.
    pub package: Option<Package>,
    pub main_pid: Option<u32>,
    pub tasks: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// When the phase started, in µs since the epoch.
    pub since_micros: Option<u64>,
}

impl Running {
    /// Whether this is a phase of package CATEGORY/NAME (NAME a PF, or a PN for every
    /// version): a unit's name says, and an unshare phase's file.
    pub fn is_of(&self, category: &str, name: &str) -> bool {
        match (&self.manager, &self.package) {
            (Some(_), _) => {
                let stem = self.id.strip_suffix(".service").or_else(|| self.id.strip_suffix(".scope"));
                stem.is_some_and(|stem| crate::systemd::unit_name::is_phase_of(stem, category, name))
            }
            (None, Some(package)) => {
                package.category == category && (package.pf == name || package.pn() == name)
            }
            (None, None) => false,
        }
    }
}

/// Every running phase this caller can see, and what could not be asked.
pub fn list() -> (Vec<Running>, Vec<String>) {
    let mut phases = Vec::new();
    let mut unreachable = Vec::new();
    for manager in [Manager::System, Manager::User] {
        if !Reach::of_host(manager).usable() {
            continue;
        }
        match units_of(manager) {
            Ok(units) => phases.extend(units),
            Err(error) => unreachable.push(format!("{error:#}")),
        }
    }
    match unshare_phases() {
        Ok(unshare) => phases.extend(unshare),
        Err(error) => unreachable.push(format!("{error:#}")),
    }
    (phases, unreachable)
}

fn units_of(manager: Manager) -> Result<Vec<Running>> {
    let runtime = crate::systemd::runtime()?;
    runtime.block_on(async {
        tokio::time::timeout(ASK_WITHIN, ask(manager)).await.with_context(|| {
            format!("the {} manager did not answer within {} s", manager.name(), ASK_WITHIN.as_secs())
        })?
    })
}

async fn ask(manager: Manager) -> Result<Vec<Running>> {
    let client = Client::connect(manager).await?;
    let mut phases = Vec::new();
    for (unit, description, _, active, ..) in client.phase_units().await? {
        if active != "active" && active != "activating" && active != "deactivating" {
            continue;
        }
        let proxy = client.unit(&unit).await?;
        let since_micros = proxy.active_enter_timestamp().await.ok().filter(|&t| t != 0);
        let counted = |value: zbus::Result<u64>| value.ok().filter(|&v| v != u64::MAX);
        let (backend, main_pid, tasks, memory_bytes) = if unit.ends_with(".service") {
            let service = client.service(&unit).await?;
            let main_pid = service.main_pid().await.ok().filter(|&p| p != 0);
            (
                "service",
                main_pid,
                counted(service.tasks_current().await),
                counted(service.memory_current().await),
            )
        } else {
            let scope = client.scope(&unit).await?;
            let main_pid = scope.control_group().await.ok().and_then(|cgroup| first_process(&cgroup));
            ("scope", main_pid, counted(scope.tasks_current().await), counted(scope.memory_current().await))
        };
        phases.push(Running {
            id: unit,
            manager: Some(manager),
            backend,
            description,
            package: None,
            main_pid,
            tasks,
            memory_bytes,
            since_micros,
        });
    }
    Ok(phases)
}

/// The oldest (lowest-numbered) process of a scope's cgroup: the phase's own, which
/// phasebox forked.
fn first_process(cgroup: &str) -> Option<u32> {
    let procs = std::fs::read_to_string(crate::orphans::cgroup_v2_dir(cgroup).join("cgroup.procs")).ok()?;
    procs.lines().filter_map(|l| l.parse().ok()).min()
}

/// What an unshare-mode launcher says of its phase while it runs.
#[derive(Debug, Serialize, Deserialize)]
struct PhaseFile {
    pid: u32,
    description: String,
    /// CATEGORY/PF of a `--phase` phase.
    #[serde(default)]
    package: Option<String>,
    since_micros: u64,
}

/// The file an unshare-mode launcher keeps while its phase runs, open and locked;
/// removed on drop. The lock says that the launcher still runs: the kernel drops it
/// when the launcher ends, however it ends, and while it is held the PID in the
/// file is the launcher's. The name holds the start time too, so a launcher that
/// reuses the PID of a killed one never meets the stale file's name.
pub struct Registered {
    path: PathBuf,
    _locked: File,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Make this unshare-mode launcher's phase visible to `phasebox ps` and `stop`. A
/// phase that can't be registered still runs (the listing is only a convenience),
/// with a warning unless `quiet`.
pub fn register(description: &str, package: Option<&Package>, quiet: bool) -> Option<Registered> {
    let dir = registry();
    match try_register(&dir, description, package) {
        Ok(registered) => Some(registered),
        Err(error) => {
            if !quiet {
                crate::notice!("phasebox: warning: this phase is not listed by `phasebox ps`: {error:#}");
            }
            None
        }
    }
}

fn try_register(dir: &Path, description: &str, package: Option<&Package>) -> Result<Registered> {
    runtime_dir::create_private(dir)?;
    let since_micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros()
            as u64;
    let pid = std::process::id();
    let package = package.map(ToString::to_string);
    let phase = PhaseFile { pid, description: description.to_string(), package, since_micros };
    let path = dir.join(format!("unshare-{pid}-{since_micros}.phase"));
    // Written and locked while it has no name, then given one: `ps` never finds it
    // unlocked, and nothing half-made is left behind.
    let mut file = OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    file.lock().context("locking the phase's file")?;
    file.write_all(&serde_json::to_vec(&phase)?).context("writing the phase's file")?;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths; linkat creates a name for the open file.
    let linked = unsafe {
        libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW)
    };
    if linked != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("naming {}", path.display()));
    }
    Ok(Registered { path, _locked: file })
}

/// Whether the launcher that registered this file still holds its lock.
fn launcher_runs(file: &File) -> bool {
    matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
}

/// Where this caller's unshare phases are registered: phasebox's runtime directory,
/// or for a user without one (no login session, as on hosts without systemd) a
/// private directory of its own in /tmp.
fn registry() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return runtime_dir::directory(Manager::System);
    }
    let dir = runtime_dir::directory(Manager::User);
    match dir.parent() {
        Some(base) if base.is_dir() => dir,
        _ => std::env::temp_dir().join(format!("phasebox-{}", nix::unistd::geteuid())),
    }
}

/// A registered unshare phase whose launcher runs, and the open file that says so.
struct Listed {
    phase: PhaseFile,
    file: File,
}

/// The registered unshare phases whose launchers still run; stale files (of a
/// launcher that was killed) are removed. Only a directory of the caller's own,
/// closed to others, is read, and only regular files in it, opened without
/// following links or blocking.
fn listed() -> Result<Vec<Listed>> {
    let dir = registry();
    match std::fs::symlink_metadata(&dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        _ => runtime_dir::ensure_private(&dir)?,
    }
    let mut phases = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "phase") {
            continue;
        }
        let Ok(mut file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
        else {
            continue;
        };
        if !file.metadata().is_ok_and(|m| m.file_type().is_file()) {
            continue;
        }
        if !launcher_runs(&file) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            continue;
        }
        if let Ok(phase) = serde_json::from_slice::<PhaseFile>(&bytes) {
            phases.push(Listed { phase, file });
        }
    }
    Ok(phases)
}

fn unshare_phases() -> Result<Vec<Running>> {
    Ok(listed()?
        .into_iter()
        .map(|Listed { phase, .. }| Running {
            id: format!("unshare-{}", phase.pid),
            manager: None,
            backend: "unshare",
            description: phase.description,
            package: phase.package.and_then(|p| Package::parse(&p).ok()),
            main_pid: Some(phase.pid),
            tasks: None,
            memory_bytes: None,
            since_micros: Some(phase.since_micros),
        })
        .collect())
}

/// Stop the unshare phase of the launcher with this PID as SIGTERM to it would, and
/// wait until the launcher is gone. The signal goes through a pidfd taken while
/// the launcher's lock was held: it can't reach a process that reused the PID.
pub fn stop_unshare(pid: u32, within: Duration) -> Result<()> {
    let Some(Listed { file, .. }) = listed()?.into_iter().find(|l| l.phase.pid == pid) else {
        bail!("no running unshare phase has PID {pid}");
    };
    // SAFETY: pidfd_open with a plain PID and no flags.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("opening its phasebox, PID {pid}"));
    }
    // SAFETY: a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    // Still locked after the pidfd was opened: the launcher was alive all along, so
    // the pidfd is the launcher's.
    if !launcher_runs(&file) {
        bail!("its phasebox (PID {pid}) has just ended");
    }
    // SAFETY: pidfd_send_signal on our pidfd, with no siginfo and no flags.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGTERM,
            std::ptr::null::<u8>(),
            0,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("signalling its phasebox, PID {pid}"));
    }
    // A pidfd becomes readable when its process ends.
    let mut poll = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut poll, 1, left.as_millis() as libc::c_int) } {
            1 => return Ok(()),
            0 => bail!("its phasebox (PID {pid}) did not end within {} s", within.as_secs()),
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => return Err(std::io::Error::last_os_error()).context("waiting for its phasebox to end"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(id: &str, manager: Option<Manager>, package: Option<&str>) -> Running {
        Running {
            id: id.into(),
            manager,
            backend: "unshare",
            description: "phasebox: whatever the description says".into(),
            package: package.map(|p| Package::parse(p).unwrap()),
            main_pid: None,
            tasks: None,
            memory_bytes: None,
            since_micros: None,
        }
    }

    #[test]
    fn packages_come_from_unit_names_and_registered_phases_not_descriptions() {
        let unit =
            format!("{}.service", crate::systemd::unit_name::phase_stem(Some(("app-misc", "foo-1")), "test"));
        let running = phase(&unit, Some(Manager::System), None);
        assert!(running.is_of("app-misc", "foo-1") && running.is_of("app-misc", "foo"));
        assert!(!running.is_of("app-misc", "foo-2"));
        let unshare = phase("unshare-42", None, Some("app-misc/foo-1"));
        assert!(unshare.is_of("app-misc", "foo") && !unshare.is_of("app-misc", "bar"));
        assert!(!phase("unshare-43", None, None).is_of("app-misc", "foo"));
    }
}
