//! Mounts a phase gets in a mount namespace of its own: private propagation, its
//! PID namespace's /proc, and its own IPC filesystems.

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};

/// In a mount namespace of this process's own, made for the phase: make every
/// mount private, so that none made in it reaches the host.
pub fn private_propagation() -> Result<()> {
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("making mounts private")
}

/// Mount a /proc that shows this PID namespace.
pub fn mount_proc() -> Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>).context("mounting /proc")
}

/// Mount a fresh mqueue over every mqueue filesystem in sight (/dev/mqueue, and
/// wherever else the host mounted one) and a fresh tmpfs at /dev/shm: the phase's
/// POSIX message queues, shared memory and semaphores are then its own, and the
/// host's can't be opened by path.
pub fn mount_ipc() -> Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for target in mount_points_of("mqueue")? {
        match mount(Some("mqueue"), target.as_str(), Some("mqueue"), flags, None::<&str>) {
            // EBUSY: this IPC namespace's own mqueue is mounted there already
            // (systemd's PrivateIPC= mounts it at /dev/mqueue).
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(errno) => {
                return Err(errno).with_context(|| format!("mounting a private mqueue on {target}"));
            }
        }
    }
    if std::path::Path::new("/dev/shm").is_dir() {
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(Some("shm"), "/dev/shm", Some("tmpfs"), flags, Some("mode=1777"))
            .context("mounting a private /dev/shm")?;
    }
    Ok(())
}

/// Where filesystems of this type are mounted, from /proc/self/mountinfo.
fn mount_points_of(fstype: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut points = Vec::new();
    for line in text.lines() {
        // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
        let Some((before, after)) = line.split_once(" - ") else { continue };
        if after.split(' ').next() == Some(fstype)
            && let Some(point) = before.split(' ').nth(4)
        {
            // Octal escapes of spaces and such, as the kernel writes them.
            points.push(unescape(point));
        }
    }
    points.dedup();
    Ok(points)
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 4)) {
            (b'\\', Some(digits)) if digits.iter().all(|d| (b'0'..=b'7').contains(d)) => {
                out.push(digits.iter().fold(0u8, |n, d| n * 8 + (d - b'0')));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(super::unescape("/dev/mqueue"), "/dev/mqueue");
        assert_eq!(super::unescape("/run/a\\040b"), "/run/a b");
    }
}
