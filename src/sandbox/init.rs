//! PID 1 of a new PID namespace: its own /proc, the list of what is left in the
//! namespace when the command ends, and the end of all of it.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};

use crate::findings::Orphan;

/// A handle on the /proc of the PID namespace above, opened before the fork: it
/// names processes by the PIDs the caller sees.
pub struct OuterProc(OwnedFd);

impl OuterProc {
    pub fn open() -> Result<OuterProc> {
        // SAFETY: a plain open; the descriptor is owned below.
        let fd =
            unsafe { libc::open(c"/proc".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening /proc");
        }
        // SAFETY: fd is fresh and owned by nobody else.
        Ok(OuterProc(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn read_link(&self, path: &CStr) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        // SAFETY: buf is writable for its length; the fd is a directory.
        let n = unsafe {
            libc::readlinkat(self.0.as_raw_fd(), path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        (n > 0).then(|| buf[..n as usize].to_vec())
    }

    fn read(&self, path: &str) -> Option<String> {
        let path = std::ffi::CString::new(path).ok()?;
        // SAFETY: openat on our directory fd; the result is owned below.
        let fd = unsafe { libc::openat(self.0.as_raw_fd(), path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is fresh.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        std::io::read_to_string(file).ok()
    }

    /// Every live process of our PID namespace but ourselves, by outer PID.
    pub fn namespace_members(&self) -> Vec<Orphan> {
        let Some(own) = self.read_link(c"self/ns/pid") else { return Vec::new() };
        let Some(me) = self.read_link(c"self").and_then(|b| String::from_utf8(b).ok()) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", self.0.as_raw_fd())) else {
            return Vec::new();
        };
        let mut members = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(pid) = name.parse::<u32>() else { continue };
            if name == me {
                continue;
            }
            let link = std::ffi::CString::new(format!("{pid}/ns/pid")).expect("no NUL in a path of digits");
            if self.read_link(&link).as_deref() != Some(own.as_slice()) {
                continue;
            }
            let Some(stat) = self.read(&format!("{pid}/stat")) else { continue };
            // Zombies are already dead: only live processes are orphans to kill.
            if crate::orphans::is_zombie(&stat) {
                continue;
            }
            let comm =
                self.read(&format!("{pid}/comm")).map(|c| c.trim_end().to_string()).unwrap_or_default();
            members.push(Orphan { pid, comm });
        }
        members
    }
}

/// As PID 1: kill every other process of the namespace and reap them all, so that
/// once PID 1 has reported, nothing of the phase is left but PID 1 itself, exiting.
pub fn kill_and_reap_all() {
    // SAFETY: kill(-1) from a namespace's PID 1 reaches every other process in it.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    // Orphans are reparented to PID 1 as they die: reap until there is no child.
    while matches!(nix::sys::wait::waitpid(None, None), Ok(_) | Err(nix::errno::Errno::EINTR)) {}
}

/// Mount a /proc that shows this PID namespace, in a mount namespace of our own
/// and without the mount reaching the host: every mount of it is made private.
pub fn mount_own_proc() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("creating a mount namespace")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("making mounts private")?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>).context("mounting /proc")
}
