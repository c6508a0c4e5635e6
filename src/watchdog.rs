//! The inner mode's guard against a killed launcher. A service outlives the
//! systemd-run that started it; a phase must not outlive the phasebox that waits for
//! it. The inner mode watches the launcher and, when it dies, kills every process of
//! the unit (itself last), so systemd stops the unit at once.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Barrier};

use anyhow::{Result, bail};

/// The launcher, named by PID and start time (a PID alone may be reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launcher {
    pub pid: u32,
    pub start_time: u64,
}

impl Launcher {
    pub fn this_process() -> Launcher {
        let pid = std::process::id();
        Launcher { pid, start_time: start_time(pid).unwrap_or(0) }
    }

    fn is_alive(self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }
}

/// Field 22 of /proc/PID/stat, in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Start watching; fails when the launcher is already gone. Call before forking:
/// the watching thread holds no lock once this returns.
pub fn guard(launcher: Launcher) -> Result<()> {
    // SAFETY: pidfd_open with a plain PID and no flags.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, launcher.pid as libc::c_int, 0) };
    let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) });
    // Checked after opening: the pidfd then refers to the launcher, not a successor.
    if !launcher.is_alive() {
        bail!("phasebox, which started this phase (PID {}), is gone", launcher.pid);
    }
    let started = Arc::new(Barrier::new(2));
    let ready = started.clone();
    std::thread::spawn(move || {
        ready.wait();
        match pidfd {
            Some(fd) => wait_readable(&fd),
            // Kernels before 5.3 have no pidfd: look every 100 ms.
            None => {
                while launcher.is_alive() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
        kill_the_unit();
    });
    started.wait();
    Ok(())
}

fn wait_readable(fd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd; a pidfd becomes readable when the process exits.
    while unsafe { libc::poll(&mut poll, 1, -1) } < 0 {}
}

/// SIGKILL every other process of our cgroup, then ourselves.
fn kill_the_unit() -> ! {
    eprintln!("phasebox: inner mode: the launcher was killed; stopping the phase");
    // Repeat: a process may fork while we kill.
    for _ in 0..10 {
        let others = crate::orphans::list_except_self().unwrap_or_default();
        if others.is_empty() {
            break;
        }
        for process in others {
            // SAFETY: kill with a plain PID.
            unsafe { libc::kill(process.pid as i32, libc::SIGKILL) };
        }
    }
    // SAFETY: end the process at once; the command is gone.
    unsafe { libc::_exit(crate::exit::PHASEBOX_FAILED as i32) }
}
