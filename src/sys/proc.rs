//! The processes left in the phase's control group, listed by the inner mode once
//! the command has ended and before systemd kills them; and the cgroup and /proc
//! facts that finding and waiting for processes rely on.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A process left behind, as the caller knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub pid: u32,
    pub comm: String,
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Every process of our own cgroup except ourselves and `except`.
pub fn list_except_self(except: Option<u32>) -> Result<Vec<Orphan>> {
    let procs = own_cgroup_dir()?.join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).with_context(|| format!("reading {}", procs.display()))?;
    let me = std::process::id();
    Ok(text
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .filter(|&pid| pid != me && Some(pid) != except)
        .map(|pid| Orphan { pid, comm: comm(pid) })
        .collect())
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end_matches('\n').to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Our cgroup v2 directory, on a unified or a hybrid (v1 + /sys/fs/cgroup/unified) host.
pub fn own_cgroup_dir() -> Result<PathBuf> {
    Ok(cgroup_v2_dir(&cgroup_of("self")?))
}

/// The cgroup v2 path of a process ("self" or a PID), as /proc names it.
fn cgroup_of(pid: &str) -> Result<String> {
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .context("this process is in no cgroup v2 hierarchy")
}

/// Whether a process is in our own cgroup.
pub fn in_own_cgroup(pid: u32) -> bool {
    matches!((cgroup_of("self"), cgroup_of(&pid.to_string())), (Ok(ours), Ok(its)) if ours == its)
}

/// SIGKILL every process of our own cgroup, this one included, at once
/// (cgroup.kill, Linux 5.14).
pub fn kill_own_cgroup() -> Result<()> {
    let kill = own_cgroup_dir()?.join("cgroup.kill");
    std::fs::write(&kill, "1").with_context(|| format!("writing {}", kill.display()))
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

/// The live descendants of `root` (not `root` itself), from this process's /proc:
/// the processes a namespace's PID 1 left, as the caller sees them, nested PID
/// namespaces included. Every process of the phase descends from its PID 1 or was
/// reparented to it (a double fork, setsid, a nested namespace's PID 1 all stay
/// below it); zombies are already dead and are left out.
pub fn descendants(root: u32) -> Vec<Orphan> {
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if let Some((comm, state, ppid)) = parse_stat(&stat) {
            processes.push((pid, ppid, state, comm));
        }
    }
    let mut found: Vec<Orphan> = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for &(pid, ppid, state, ref comm) in &processes {
            if ppid == parent && pid != root && !found.iter().any(|o| o.pid == pid) {
                parents.push(pid);
                if state != 'Z' {
                    found.push(Orphan { pid, comm: comm.clone() });
                }
            }
        }
    }
    found.sort_by_key(|o| o.pid);
    found
}

/// The command name, state and parent of a /proc/PID/stat text. The name is in
/// parentheses and may itself hold spaces and parentheses: it ends at the last ')'.
fn parse_stat(stat: &str) -> Option<(String, char, u32)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let (_, comm) = head.split_once('(')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((comm.to_string(), state, ppid))
}

/// Whether a /proc/PID/stat text is a zombie's: already dead, waiting to be reaped.
pub fn is_zombie(stat: &str) -> bool {
    stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_names_may_hold_spaces_and_parentheses() {
        assert_eq!(parse_stat("42 (a) b)) S 7 42 42 0"), Some(("a) b)".to_string(), 'S', 7)));
        assert_eq!(parse_stat("42 (sleep) Z 1 0"), Some(("sleep".to_string(), 'Z', 1)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_grandchild_reparented_or_not_is_a_descendant() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let me = std::process::id();
        let found = crate::sys::proc::descendants(me);
        let below_sh = |found: &[Orphan]| found.iter().filter(|o| o.comm == "sleep").count();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = found;
        while below_sh(&found) < 2 && std::time::Instant::now() < deadline {
            found = descendants(me);
        }
        let _ = std::process::Command::new("pkill").args(["-P", &child.id().to_string()]).status();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.iter().any(|o| o.pid == child.id() && o.comm == "sh"), "{found:?}");
        assert_eq!(below_sh(&found), 2, "{found:?}");
    }
}
