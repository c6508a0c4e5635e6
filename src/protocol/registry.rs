//! The registry of running unshare phases, for `phasebox ps` and `stop`: each
//! unshare-mode launcher keeps a file, locked, in a private directory while its
//! phase runs (written by the launcher; read, cleaned and signalled through by
//! `ps` and `stop`).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::protocol::run_files;
use crate::systemd::Manager;

/// What an unshare-mode launcher says of its phase while it runs.
#[derive(Debug, Serialize, Deserialize)]
pub struct PhaseFile {
    pub pid: u32,
    pub description: String,
    /// CATEGORY/PF of a `--phase` phase.
    #[serde(default)]
    pub package: Option<String>,
    pub since_micros: u64,
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
pub fn register(description: &str, package: Option<String>, quiet: bool) -> Option<Registered> {
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

fn try_register(dir: &Path, description: &str, package: Option<String>) -> Result<Registered> {
    run_files::create_private(dir)?;
    let since_micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros()
            as u64;
    let pid = std::process::id();
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
        return run_files::directory(Manager::System);
    }
    let dir = run_files::directory(Manager::User);
    match dir.parent() {
        Some(base) if base.is_dir() => dir,
        _ => std::env::temp_dir().join(format!("phasebox-{}", nix::unistd::geteuid())),
    }
}

/// A registered unshare phase whose launcher runs, and the open file that says so.
pub struct Listed {
    pub phase: PhaseFile,
    file: File,
}

/// The registered unshare phases whose launchers still run; stale files (of a
/// launcher that was killed) are removed. Only a directory of the caller's own,
/// closed to others, is read, and only regular files in it, opened without
/// following links or blocking.
pub fn listed() -> Result<Vec<Listed>> {
    let dir = registry();
    match std::fs::symlink_metadata(&dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        _ => run_files::ensure_private(&dir)?,
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
