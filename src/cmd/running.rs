//! The phases running now, for `phasebox ps` and `phasebox stop`: service and scope
//! phases from systemd's units, unshare phases from the files their launchers keep
//! in phasebox's runtime directory while they run.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::plan::mode::Reach;
use crate::plan::policy::package::Package;
use crate::protocol::registry::{self, Listed};
use crate::systemd::client::Client;
use crate::systemd::session::{Session, Unanswered};
use crate::systemd::{Manager, unit_name};

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
                stem.is_some_and(|stem| is_phase_of(stem, category, name))
            }
            (None, Some(package)) => {
                package.category == category && (package.pf == name || package.pn() == name)
            }
            (None, None) => false,
        }
    }
}

/// Whether a unit's name (without its suffix) is that of a phase of package
/// CATEGORY/NAME, where NAME is a PF (that one version) or a PN (any version): a
/// phase's unit is named by `phase_stem`. Matched against the wanted package, as
/// CATEGORY-PF can't be split back in general: both may hold dashes.
pub fn is_phase_of(stem: &str, category: &str, name: &str) -> bool {
    let Some(rest) = stem.strip_prefix("phasebox-") else { return false };
    // "-PHASE-HEX": a phase name and 8 hex digits at the end.
    let Some((front, hex)) = rest.rsplit_once('-') else { return false };
    let Some((package, phase)) = front.rsplit_once('-') else { return false };
    if hex.len() != 8
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        || !crate::plan::policy::PHASES.contains(&phase)
    {
        return false;
    }
    let Some(pf) = package.strip_prefix(&format!("{}-", unit_name::escape(category))) else { return false };
    let name = unit_name::escape(name);
    pf == name
        || pf.strip_prefix(&name).and_then(|v| v.strip_prefix('-')).is_some_and(|version| {
            version.starts_with(|c: char| c.is_ascii_digit())
                && Package { category: String::new(), pf: pf.to_string() }.pn() == name
        })
}

/// Every running phase this caller can see, and what could not be asked.
pub fn list(session: &mut Session) -> (Vec<Running>, Vec<String>) {
    let mut phases = Vec::new();
    let mut unreachable = Vec::new();
    for manager in [Manager::System, Manager::User] {
        if !Reach::of_host(manager).usable() {
            continue;
        }
        match units_of(session, manager) {
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

fn units_of(session: &mut Session, manager: Manager) -> Result<Vec<Running>> {
    let asked = session
        .with(manager, ASK_WITHIN, async |client| tokio::time::timeout(ASK_WITHIN, ask(client)).await)
        .map_err(|Unanswered(error)| error)?;
    asked.with_context(|| {
        format!("the {} manager did not answer within {} s", manager.name(), ASK_WITHIN.as_secs())
    })?
}

async fn ask(client: &Client) -> Result<Vec<Running>> {
    let manager = client.kind;
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
    let procs = std::fs::read_to_string(crate::sys::proc::cgroup_v2_dir(cgroup).join("cgroup.procs")).ok()?;
    procs.lines().filter_map(|l| l.parse().ok()).min()
}

fn unshare_phases() -> Result<Vec<Running>> {
    Ok(registry::listed()?
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
    fn a_phase_units_package_is_matched_from_its_name() {
        let stem = unit_name::phase_stem(Some(("app-misc", "foo-bar-1.0-r2")), "compile");
        assert!(is_phase_of(&stem, "app-misc", "foo-bar-1.0-r2"));
        assert!(is_phase_of(&stem, "app-misc", "foo-bar"));
        assert!(!is_phase_of(&stem, "app-misc", "foo"), "foo is not foo-bar");
        // (Category "app" and PN "misc-foo-bar" would match too: no such category exists.)
        assert!(!is_phase_of(&stem, "app-misc", "foo-bar-1.0"), "another PF");
        let odd = unit_name::phase_stem(Some(("dev-libs", "lib+x-2")), "test");
        assert!(is_phase_of(&odd, "dev-libs", "lib+x") && is_phase_of(&odd, "dev-libs", "lib+x-2"));
        assert!(!is_phase_of("phasebox-0a1b2c3d4e5f6a7b", "app-misc", "foo"));
        assert!(!is_phase_of(&unit_name::phase_stem(None, "test"), "app-misc", "foo"));
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
