//! The inner mode's guard against a killed launcher. A service outlives the
//! systemd-run that started it; a phase must not outlive the phasebox that waits for
//! it. A small watcher process, forked by the inner mode before anything else, waits
//! for the launcher to die and then kills every process of the unit, so systemd
//! stops it at once. The watcher dies with the inner mode.
//!
//! Process: the watcher, forked by the inner mode. Namespaces: the unit's, as systemd
//! made them (forked before the inner mode creates any). Threads: one. Signals: the
//! inner mode's mask and dispositions; dies with the inner mode (PR_SET_PDEATHSIG).
//! Reports: nothing; it kills the unit's processes (cgroup.kill) when the launcher dies.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

use crate::protocol::context::Launcher;
use nix::unistd::{ForkResult, fork};

static WATCHER: AtomicU32 = AtomicU32::new(0);

/// The watcher's PID, which is no orphan of the phase.
pub fn watcher() -> Option<u32> {
    Some(WATCHER.load(Ordering::Relaxed)).filter(|&pid| pid != 0)
}

/// Kill the watcher and reap it: the phase is over.
pub fn end_watcher() {
    if let Some(pid) = watcher() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        WATCHER.store(0, Ordering::Relaxed);
    }
}

/// How the watcher learns that the launcher is gone.
#[derive(Debug, Clone, Copy)]
pub enum Sight {
    /// By its PID: the launcher is in this process's PID namespace.
    Pid,
    /// By the hangup of this connection to it (the channel): systemd made this
    /// process PID 1 of a PID namespace (PrivatePIDs=), where the launcher's PID
    /// names nothing, and only the launcher holds the other end.
    Hangup(RawFd),
}

/// Fork the watcher; fails when the launcher is already gone. Call while this
/// process is single-threaded and before it creates namespaces.
pub fn guard(launcher: Launcher, sight: Sight) -> Result<()> {
    let gone = || bail!("phasebox, which started this phase (PID {}), is gone", launcher.pid);
    let pidfd = match sight {
        Sight::Pid => {
            // SAFETY: pidfd_open with a plain PID and no flags.
            let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, launcher.pid as libc::c_int, 0) };
            // SAFETY: a new descriptor that nothing else owns.
            let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) });
            // Checked after opening: the pidfd then refers to the launcher, not a successor.
            if !launcher.is_alive() {
                return gone();
            }
            pidfd
        }
        Sight::Hangup(fd) => {
            if hung_up(fd, 0) {
                return gone();
            }
            None
        }
    };
    let inner = nix::unistd::getpid();
    // SAFETY: the inner mode is single-threaded here.
    match unsafe { fork() }.context("forking the launcher's watcher")? {
        ForkResult::Child => {
            // SAFETY: a prctl with plain integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            if nix::unistd::getppid() == inner {
                match sight {
                    Sight::Pid => watch(launcher, pidfd),
                    Sight::Hangup(fd) => {
                        while !hung_up(fd, -1) {}
                        stop_all(launcher);
                    }
                }
            }
            // SAFETY: leave without the inner mode's destructors.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            WATCHER.store(child.as_raw() as u32, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// Wait until `fd` is readable; only EINTR is tried again, any other error ends
/// the wait (a loop on every error would spin).
fn wait_readable(fd: i32) -> std::io::Result<()> {
    let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, -1) } >= 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(error);
        }
    }
}

/// In the watcher: wait for the launcher's end, then SIGKILL every other process of
/// our cgroup (the inner mode, the command and all it started).
fn watch(launcher: Launcher, pidfd: Option<OwnedFd>) {
    // A pidfd becomes readable when its process exits. Kernels before 5.3 have no
    // pidfd, and a poll that fails for another reason than a signal can't be
    // trusted to wake up: then look every 100 ms.
    if pidfd.is_none_or(|fd| wait_readable(fd.as_raw_fd()).is_err()) {
        while launcher.is_alive() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    stop_all(launcher);
}

/// Whether the peer of the connected socket `fd` has closed it, waiting up to
/// `timeout_ms` (-1: until it has, or until poll fails other than by EINTR, which
/// counts as closed: a wait that can't be trusted must not hold a phase).
fn hung_up(fd: RawFd, timeout_ms: i32) -> bool {
    let mut poll = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
    loop {
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut poll, 1, timeout_ms) } {
            0 => return false,
            n if n > 0 => {
                return poll.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL)
                    != 0;
            }
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            _ => return true,
        }
    }
}

/// The launcher is gone: SIGKILL every other process of our cgroup.
fn stop_all(launcher: Launcher) {
    crate::notice!("phasebox: the launcher (PID {}) is gone; stopping the phase", launcher.pid);
    // All at once, this watcher included, where the kernel can (5.14).
    if crate::sys::proc::kill_own_cgroup().is_ok() {
        return;
    }
    // Else again and again (a process may fork while we kill), each through a pidfd
    // of a process still in our cgroup once the pidfd is open: a PID that was
    // reused meanwhile is never signalled.
    for _ in 0..10 {
        let others = crate::sys::proc::list_except_self(watcher()).unwrap_or_default();
        if others.is_empty() {
            break;
        }
        for process in others {
            // SAFETY: pidfd_open with a plain PID and no flags.
            let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, process.pid as libc::c_int, 0) };
            if raw < 0 {
                continue;
            }
            // SAFETY: a new descriptor that nothing else owns.
            let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
            if crate::sys::proc::in_own_cgroup(process.pid) {
                // SAFETY: pidfd_send_signal on our pidfd, with no siginfo and no flags.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<u8>(),
                        0,
                    )
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_that_fails_ends_the_wait_instead_of_spinning() {
        let (read, _write) = nix::unistd::pipe().unwrap();
        // In a child, where poll(2) fails with EINVAL: one descriptor is more than
        // RLIMIT_NOFILE allows. The child exits 0 only if the wait returned that error.
        // SAFETY: the child makes only system calls before _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => unsafe {
                libc::alarm(5);
                let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::setrlimit(libc::RLIMIT_NOFILE, &none);
                let einval = wait_readable(read.as_raw_fd()).err().and_then(|e| e.raw_os_error());
                libc::_exit(if einval == Some(libc::EINVAL) { 0 } else { 1 })
            },
            ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
