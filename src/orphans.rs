//! The processes left in the phase's control group, listed by the inner mode once
//! the command has ended and before systemd kills them; and the cgroup and /proc
//! facts that finding and waiting for processes rely on.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::findings::Orphan;

/// Every process of our own cgroup except ourselves (and the inner mode's watcher).
pub fn list_except_self() -> Result<Vec<Orphan>> {
    let procs = own_cgroup_dir()?.join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).with_context(|| format!("reading {}", procs.display()))?;
    let me = std::process::id();
    let watcher = crate::watchdog::watcher();
    Ok(text
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .filter(|&pid| pid != me && Some(pid) != watcher)
        .map(|pid| Orphan { pid, comm: comm(pid) })
        .collect())
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end_matches('\n').to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Our cgroup v2 directory, on a unified or a hybrid (v1 + /sys/fs/cgroup/unified) host.
fn own_cgroup_dir() -> Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("this process is in no cgroup v2 hierarchy")?;
    Ok(cgroup_v2_dir(path))
}

/// The directory of a cgroup (as systemd and /proc name it, from the hierarchy's
/// root) in the cgroup v2 tree, on a unified or a hybrid host.
pub fn cgroup_v2_dir(cgroup: &str) -> PathBuf {
    let root = if Path::new("/sys/fs/cgroup/cgroup.procs").exists() {
        Path::new("/sys/fs/cgroup")
    } else {
        Path::new("/sys/fs/cgroup/unified")
    };
    root.join(cgroup.trim_start_matches('/'))
}

/// Whether a /proc/PID/stat text is a zombie's: already dead, waiting to be reaped.
pub fn is_zombie(stat: &str) -> bool {
    stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'))
}
