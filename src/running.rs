//! The phases running now, for `phasebox ps` and `phasebox stop`: service and scope
//! phases from systemd's units, unshare phases from the files their launchers keep
//! in phasebox's runtime directory while they run.

use std::fs::{File, TryLockError};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::mode::bus_socket;
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
    pub main_pid: Option<u32>,
    pub tasks: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// When the phase started, in µs since the epoch.
    pub since_micros: Option<u64>,
}

impl Running {
    /// The package of a `--phase` phase, from its Description.
    pub fn package(&self) -> Option<&str> {
        let rest = self.description.strip_prefix("phasebox: ")?;
        let (package, _) = rest.split_once(' ')?;
        package.contains('/').then_some(package)
    }
}

/// Every running phase this caller can see, and what could not be asked.
pub fn list() -> (Vec<Running>, Vec<String>) {
    let mut phases = Vec::new();
    let mut unreachable = Vec::new();
    for manager in [Manager::System, Manager::User] {
        if bus_socket(manager).is_err() {
            continue;
        }
        match units_of(manager) {
            Ok(units) => phases.extend(units),
            Err(error) => unreachable.push(format!("{error:#}")),
        }
    }
    phases.extend(unshare_phases());
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
    since_micros: u64,
}

/// The file an unshare-mode launcher keeps while its phase runs, open and locked;
/// removed on drop. The lock says that the launcher still runs: the kernel drops it
/// when the launcher ends, however it ends, and while it is held the PID in the
/// file can't belong to another process.
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
/// phase that can't be registered still runs: the listing is only a convenience.
pub fn register(description: &str) -> Option<Registered> {
    let dir = registry();
    runtime_dir::create_private(&dir).ok()?;
    let since_micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros()
            as u64;
    let pid = std::process::id();
    let phase = PhaseFile { pid, description: description.to_string(), since_micros };
    let path = dir.join(format!("unshare-{pid}.phase"));
    // Written and locked under another name, so `ps` never finds it unlocked.
    let draft = path.with_extension("draft");
    let mut file = File::create(&draft).ok()?;
    file.lock().ok()?;
    file.write_all(&serde_json::to_vec(&phase).ok()?).ok()?;
    std::fs::rename(&draft, &path).ok()?;
    Some(Registered { path, _locked: file })
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

/// The registered unshare phases whose launchers still run; stale files (of a
/// launcher that was killed) are removed.
fn unshare_phases() -> Vec<Running> {
    let mut phases = Vec::new();
    for entry in std::fs::read_dir(registry()).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "phase") {
            continue;
        }
        let Ok(mut opened) = File::open(&path) else { continue };
        if !launcher_runs(&opened) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let mut bytes = Vec::new();
        if opened.read_to_end(&mut bytes).is_err() {
            continue;
        }
        let Ok(file) = serde_json::from_slice::<PhaseFile>(&bytes) else { continue };
        phases.push(Running {
            id: format!("unshare-{}", file.pid),
            manager: None,
            backend: "unshare",
            description: file.description,
            main_pid: Some(file.pid),
            tasks: None,
            memory_bytes: None,
            since_micros: Some(file.since_micros),
        });
    }
    phases
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(description: &str) -> Running {
        Running {
            id: "x".into(),
            manager: None,
            backend: "unshare",
            description: description.into(),
            main_pid: None,
            tasks: None,
            memory_bytes: None,
            since_micros: None,
        }
    }

    #[test]
    fn packages_come_from_phase_descriptions() {
        assert_eq!(phase("phasebox: app-misc/foo-1 test phase").package(), Some("app-misc/foo-1"));
        assert_eq!(phase("phasebox: test phase").package(), None);
        assert_eq!(phase("make check").package(), None);
    }
}
