//! doctor's verdict on the facts: for each phase, what `run --phase` picks with
//! `--mode auto` (with and without `--keep-fds`) and which isolations it gets, decided
//! by the functions `run` itself uses; then what is missing and the command that fixes it.

use crate::launch::service::{PRIVATE_IPC_SINCE, PRIVATE_PIDS_SINCE, Split};
use crate::plan;
use crate::plan::mode::{self, Backend, Choice, Mode, Reach, Request};
use crate::plan::policy::config::Config;
use crate::plan::policy::package::Package;
use crate::plan::policy::{self, Decision, EbuildFlags, PhaseRun};
use crate::protocol::findings::{Cause, Missing};
use crate::sys::namespaces::Kind;
use crate::systemd::Manager;

use super::{Cgroup, Facts, SOMETHING_MISSING};

/// The namespace properties of a service, and the systemd version that has each
/// (None: every version phasebox can talk to).
pub const FEATURES: [(&str, Option<u32>); 3] = [
    ("PrivateNetwork", None),
    ("PrivateIPC", Some(PRIVATE_IPC_SINCE)),
    ("PrivatePIDs", Some(PRIVATE_PIDS_SINCE)),
];

/// Whether a systemd of this version has a feature of `FEATURES`.
pub fn has_feature(version: u32, since: Option<u32>) -> bool {
    since.is_none_or(|since| version >= since)
}

#[derive(Debug)]
pub struct Assessment {
    pub phases: Vec<PhaseOutlook>,
    /// Default isolations the caller can't have: each makes doctor exit non-zero.
    pub problems: Vec<Finding>,
    /// What works but could be better (systemd's accounting, FEATURES=userpriv).
    pub advice: Vec<Finding>,
}

impl Assessment {
    pub fn exit_status(&self) -> u8 {
        if self.problems.is_empty() { 0 } else { SOMETHING_MISSING }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub problem: String,
    /// A command to run, or what to change when no command does it.
    pub fix: String,
}

#[derive(Debug)]
pub struct PhaseOutlook {
    pub phase: &'static str,
    pub decision: Decision,
    /// `phasebox run --phase PHASE`.
    pub auto: Outlook,
    /// `phasebox run --phase PHASE --keep-fds`, as the portage hook runs it.
    pub keep_fds: Outlook,
}

#[derive(Debug)]
pub struct Outlook {
    pub backend: Backend,
    pub reason: String,
    pub isolations: Vec<Isolation>,
    /// `run` would fail before running the command, and why.
    pub fails: Option<String>,
}

#[derive(Debug)]
pub struct Isolation {
    pub kind: Kind,
    /// Who creates it: "systemd", "phasebox" or "systemd and phasebox".
    pub by: &'static str,
    /// Whether it can be had here, or why not.
    pub available: Result<(), Missing>,
}

pub fn assess(facts: &Facts, package: Option<&Package>, flags: &EbuildFlags, config: &Config) -> Assessment {
    let phases: Vec<PhaseOutlook> = policy::PHASES
        .iter()
        .map(|phase| {
            let decision = policy::decide(phase, package, flags, config);
            PhaseOutlook {
                phase,
                auto: outlook(facts, phase, package, &decision, false),
                keep_fds: outlook(facts, phase, package, &decision, true),
                decision,
            }
        })
        .collect();
    let problems = problems(facts, &phases);
    let advice = advice(facts, &problems);
    Assessment { phases, problems, advice }
}

fn outlook(
    facts: &Facts,
    phase: &'static str,
    package: Option<&Package>,
    decision: &Decision,
    keep_fds: bool,
) -> Outlook {
    let run = PhaseRun { phase, package: package.cloned(), decision: decision.clone() };
    let manager = facts.manager;
    let reach = facts.of(manager);
    let request = Request {
        mode: Choice::Auto,
        manager,
        root: facts.is_root(),
        keep_fds,
        lost: facts.lost,
        policy: Some((decision, plan::unconfined_reason(&run))),
        network: None,
        ipc: None,
        pid: None,
        needs_systemd: None,
        needs_service: None,
    };
    let Mode { backend, why, isolations: wanted } = match mode::decide(&request, reach) {
        Ok(mode) => mode,
        Err(refused) => {
            return Outlook {
                backend: refused.backend(),
                reason: String::new(),
                isolations: Vec::new(),
                fails: Some(refused.to_string()),
            };
        }
    };
    let reason = why.to_string();
    let fails = None;
    let isolations = match backend {
        Backend::Service(manager) => {
            let split = Split::new(wanted, manager, reach.version());
            wanted
                .kinds()
                .map(|kind| {
                    let (systemd, inner) = (split.systemd.contains(kind), split.inner.contains(kind));
                    let by = match (systemd, inner) {
                        (true, true) => "systemd and phasebox",
                        (true, false) => "systemd",
                        (false, _) => "phasebox",
                    };
                    // The system manager is root: what it creates is there. A user
                    // manager needs a user namespace like the caller, and the inner
                    // mode runs as the caller: the caller's own probe answers.
                    let available =
                        if inner || manager == Manager::User { facts.namespaces.kind(kind) } else { Ok(()) };
                    Isolation { kind, by, available }
                })
                .collect()
        }
        _ => wanted
            .kinds()
            .map(|kind| Isolation { kind, by: "phasebox", available: facts.namespaces.kind(kind) })
            .collect(),
    };
    Outlook { backend, reason, isolations, fails }
}

/// What keeps a default isolation from some phase, each once, with its fix.
fn problems(facts: &Facts, phases: &[PhaseOutlook]) -> Vec<Finding> {
    let mut problems: Vec<Finding> = Vec::new();
    let mut add = |finding: Finding| {
        if !problems.contains(&finding) {
            problems.push(finding);
        }
    };
    for outlook in phases.iter().flat_map(|p| [&p.auto, &p.keep_fds]) {
        if let Some(why) = &outlook.fails {
            add(Finding {
                problem: format!(
                    "`run --phase` would fail with 125 in {} mode: {why}",
                    outlook.backend.name()
                ),
                fix: manager_fix(facts, facts.manager),
            });
        }
        for isolation in &outlook.isolations {
            if let Err(missing) = &isolation.available {
                add(Finding {
                    problem: format!("no {}: {}", isolation.kind.describe(), missing.reason()),
                    fix: namespace_fix(facts, missing),
                });
            }
        }
    }
    problems
}

/// What works, but without systemd's tracking or for other callers than this one.
fn advice(facts: &Facts, problems: &[Finding]) -> Vec<Finding> {
    let mut advice = Vec::new();
    let reach = facts.of(facts.manager);
    if facts.systemd_running && !reach.usable() {
        let finding = Finding {
            problem: format!(
                "systemd runs but its {} manager can't be reached ({reach}): phases run in unshare mode, \
                 without systemd's accounting and resource limits",
                facts.manager.name()
            ),
            fix: manager_fix(facts, facts.manager),
        };
        if !problems.iter().any(|p| p.fix == finding.fix) {
            advice.push(finding);
        }
    }
    if facts.systemd_running && facts.portage.uid.is_some() && !facts.portage.lingering {
        advice.push(Finding {
            problem: "the portage user has no user manager: FEATURES=userpriv phases run in unshare mode \
                      (with a user namespace) instead of scopes with systemd's accounting"
                .into(),
            fix: "loginctl enable-linger portage".into(),
        });
    }
    if facts.is_root()
        && let Err(why) = &facts.namespaces.user
    {
        advice.push(Finding {
            problem: format!(
                "unprivileged users (uid {}) can't create user namespaces ({why}): phases of unprivileged \
                 callers, such as FEATURES=userpriv phases run as portage, can't be sandboxed",
                facts.namespaces.user_probed_as
            ),
            fix: user_namespace_fix(facts),
        });
    }
    if facts.systemd_running && matches!(facts.cgroup, Cgroup::Hybrid | Cgroup::Legacy) {
        advice.push(Finding {
            problem: format!(
                "the cgroup hierarchy is {}: systemd's resource control (-p MemoryMax=, CPUQuota=...) is \
                 complete only on the unified (v2) hierarchy",
                facts.cgroup.name()
            ),
            fix: "boot with systemd.unified_cgroup_hierarchy=1 on the kernel command line".into(),
        });
    }
    advice
}

/// How to make a manager reachable: a bus socket first, then an answer on it.
fn manager_fix(facts: &Facts, manager: Manager) -> String {
    let socket = matches!(facts.of(manager), Reach::Found(_) | Reach::Answered { .. } | Reach::Silent { .. });
    match (manager, socket) {
        (Manager::System, false) => "systemctl start dbus".into(),
        (Manager::System, true) => "systemctl restart dbus".into(),
        (Manager::User, false) => format!("loginctl enable-linger {}", facts.uid),
        (Manager::User, true) => "systemctl --user restart dbus".into(),
    }
}

/// How to get a namespace `phase::isolate::enter` could not create, by why it could not.
fn namespace_fix(facts: &Facts, missing: &Missing) -> String {
    let kind = missing.kind;
    match missing.cause {
        Cause::NoUserNamespace(_) => user_namespace_fix(facts),
        _ if !facts.is_root() && facts.namespaces.user.is_err() => user_namespace_fix(facts),
        Cause::KernelConfig => format!("a kernel built with CONFIG_{}_NS", kind.tag().to_uppercase()),
        Cause::NamespaceLimit => format!("sysctl -w user.max_{}_namespaces=10000", kind.tag()),
        Cause::NotPermitted | Cause::Unshare(_) | Cause::SystemdIgnored | Cause::StillTheLaunchers => {
            "run phasebox with CAP_SYS_ADMIN (as root) and without a seccomp profile that denies unshare \
             (docker run --security-opt seccomp=unconfined)"
                .into()
        }
    }
}

/// How to let unprivileged users create user namespaces.
fn user_namespace_fix(facts: &Facts) -> String {
    let namespaces = &facts.namespaces;
    if namespaces.unprivileged_userns_clone == Some(0) {
        "sysctl -w kernel.unprivileged_userns_clone=1".into()
    } else if namespaces.max_user_namespaces == Some(0) {
        "sysctl -w user.max_user_namespaces=10000".into()
    } else {
        "allow unprivileged user namespaces (a seccomp profile such as Docker's default denies them; so does \
         AppArmor with kernel.apparmor_restrict_unprivileged_userns=1), or run as root"
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::doctor::{Namespaces, Portage};

    fn no_manager() -> Reach {
        Reach::NotBooted
    }

    fn manager(version: u32) -> Reach {
        Reach::Answered { bus: "/run/dbus/system_bus_socket".into(), version: Some(version) }
    }

    /// Root on a host without systemd where every namespace can be made.
    fn bare_root() -> Facts {
        Facts {
            uid: 0,
            manager: Manager::System,
            systemd_running: false,
            system: no_manager(),
            user: no_manager(),
            lost: None,
            namespaces: Namespaces {
                kinds: Kind::ALL.into_iter().map(|k| (k, Ok(()))).collect(),
                user: Ok(()),
                user_probed_as: 250,
                unprivileged_userns_clone: Some(1),
                max_user_namespaces: Some(15000),
            },
            cgroup: Cgroup::Unified,
            portage: Portage { uid: None, lingering: false },
        }
    }

    fn user(mut facts: Facts) -> Facts {
        facts.uid = 1000;
        facts.manager = Manager::User;
        facts
    }

    fn assessed(facts: &Facts) -> Assessment {
        assess(facts, None, &EbuildFlags::default(), &Config::default())
    }

    fn phase<'a>(assessment: &'a Assessment, name: &str) -> &'a PhaseOutlook {
        assessment.phases.iter().find(|p| p.phase == name).unwrap()
    }

    fn kinds(outlook: &Outlook) -> Vec<(Kind, &'static str)> {
        outlook.isolations.iter().map(|i| (i.kind, i.by)).collect()
    }

    #[test]
    fn without_systemd_every_confined_phase_gets_unshare_mode_and_all_is_well() {
        for facts in [bare_root(), user(bare_root())] {
            let assessment = assessed(&facts);
            assert_eq!(assessment.exit_status(), 0, "{:?}", assessment.problems);
            assert!(assessment.advice.is_empty(), "{:?}", assessment.advice);
            let compile = phase(&assessment, "compile");
            for outlook in [&compile.auto, &compile.keep_fds] {
                assert_eq!(outlook.backend, Backend::Unshare);
                assert!(outlook.reason.contains("not reachable"), "{}", outlook.reason);
                assert_eq!(outlook.isolations.len(), 4);
            }
            let setup = phase(&assessment, "setup");
            assert_eq!(kinds(&setup.auto), [(Kind::Pid, "phasebox")]);
            let postinst = phase(&assessment, "postinst");
            assert_eq!(postinst.auto.backend, Backend::Unconfined);
            assert!(postinst.auto.isolations.is_empty());
        }
    }

    #[test]
    fn an_unprivileged_caller_without_user_namespaces_is_told_the_sysctl() {
        let mut facts = user(bare_root());
        let missing = |kind| Missing { kind, cause: Cause::NoUserNamespace(libc::EPERM) };
        facts.namespaces.kinds = Kind::ALL.into_iter().map(|k| (k, Err(missing(k)))).collect();
        facts.namespaces.user = Err("unshare(user) failed: Operation not permitted".into());
        facts.namespaces.unprivileged_userns_clone = Some(0);
        let assessment = assessed(&facts);
        assert_eq!(assessment.exit_status(), SOMETHING_MISSING);
        assert_eq!(assessment.problems.len(), 4, "{:?}", assessment.problems);
        assert!(assessment.problems.iter().all(|p| p.fix == "sysctl -w kernel.unprivileged_userns_clone=1"));
        facts.namespaces.unprivileged_userns_clone = None;
        facts.namespaces.max_user_namespaces = Some(0);
        assert_eq!(assessed(&facts).problems[0].fix, "sysctl -w user.max_user_namespaces=10000");
    }

    #[test]
    fn root_is_advised_when_unprivileged_users_lack_user_namespaces_but_still_passes() {
        let mut facts = bare_root();
        facts.namespaces.user = Err("unshare(user) failed: Operation not permitted".into());
        facts.namespaces.unprivileged_userns_clone = Some(0);
        let assessment = assessed(&facts);
        assert_eq!(assessment.exit_status(), 0);
        assert_eq!(assessment.advice[0].fix, "sysctl -w kernel.unprivileged_userns_clone=1");
    }

    #[test]
    fn a_kernel_without_network_namespaces_fails_the_phases_that_want_one() {
        let mut facts = bare_root();
        facts.namespaces.kinds[0] =
            (Kind::Network, Err(Missing { kind: Kind::Network, cause: Cause::KernelConfig }));
        let assessment = assessed(&facts);
        assert_eq!(assessment.exit_status(), SOMETHING_MISSING);
        assert_eq!(assessment.problems.len(), 1, "{:?}", assessment.problems);
        assert!(assessment.problems[0].problem.starts_with("no private network: "));
        assert_eq!(assessment.problems[0].fix, "a kernel built with CONFIG_NET_NS");
        // The phases that share the host's network are unaffected.
        assert!(phase(&assessment, "setup").auto.isolations.iter().all(|i| i.available.is_ok()));
    }

    #[test]
    fn with_systemd_service_and_scope_modes_split_as_run_splits_them() {
        let mut facts = bare_root();
        facts.systemd_running = true;
        facts.system = manager(252);
        let assessment = assessed(&facts);
        assert_eq!(assessment.exit_status(), 0);
        let compile = phase(&assessment, "compile");
        assert_eq!(compile.auto.backend, Backend::Service(Manager::System));
        assert_eq!(
            kinds(&compile.auto),
            [
                (Kind::Network, "systemd"),
                (Kind::Ipc, "systemd"),
                (Kind::Uts, "phasebox"),
                (Kind::Pid, "phasebox")
            ]
        );
        assert_eq!(compile.keep_fds.backend, Backend::Scope(Manager::System));
        assert!(compile.keep_fds.isolations.iter().all(|i| i.by == "phasebox"));
        // Before PrivateIPC= the inner mode creates the IPC namespace.
        facts.system = manager(247);
        let assessment = assessed(&facts);
        assert!(kinds(&phase(&assessment, "compile").auto).contains(&(Kind::Ipc, "phasebox")));
    }

    #[test]
    fn a_bus_without_an_answer_gives_unshare_mode_with_its_pid_namespace() {
        let mut facts = bare_root();
        facts.systemd_running = true;
        facts.system = Reach::Silent { bus: "/run/dbus/system_bus_socket".into(), error: "refused".into() };
        let assessment = assessed(&facts);
        let compile = phase(&assessment, "compile");
        for outlook in [&compile.auto, &compile.keep_fds] {
            assert_eq!(outlook.backend, Backend::Unshare);
            assert!(outlook.fails.is_none());
            assert!(outlook.reason.contains("does not answer: refused"), "{}", outlook.reason);
            assert_eq!(kinds(outlook).len(), 4, "{:?}", kinds(outlook));
            assert!(kinds(outlook).contains(&(Kind::Pid, "phasebox")));
        }
        assert_eq!(assessment.exit_status(), 0, "{:?}", assessment.problems);
        assert_eq!(assessment.advice[0].fix, "systemctl restart dbus");
    }

    #[test]
    fn systemd_without_its_bus_or_lingering_portage_is_advice_not_failure() {
        let mut facts = bare_root();
        facts.systemd_running = true;
        facts.system = Reach::NoSocket("/run/dbus/system_bus_socket".into());
        facts.portage = Portage { uid: Some(250), lingering: false };
        facts.cgroup = Cgroup::Hybrid;
        let assessment = assessed(&facts);
        assert_eq!(assessment.exit_status(), 0);
        let fixes: Vec<_> = assessment.advice.iter().map(|a| a.fix.as_str()).collect();
        assert_eq!(fixes[..2], ["systemctl start dbus", "loginctl enable-linger portage"]);
        assert!(fixes[2].contains("systemd.unified_cgroup_hierarchy=1"));
        facts.portage.lingering = true;
        assert_eq!(assessed(&facts).advice.len(), 2);
    }

    #[test]
    fn an_unprivileged_caller_without_a_user_manager_is_told_to_linger() {
        let mut facts = user(bare_root());
        facts.systemd_running = true;
        facts.user = Reach::NoSocket("/run/user/1000/bus".into());
        let assessment = assessed(&facts);
        assert_eq!(assessment.exit_status(), 0);
        assert_eq!(assessment.advice[0].fix, "loginctl enable-linger 1000");
    }

    #[test]
    fn the_policy_config_changes_what_doctor_reports() {
        let path = std::env::temp_dir().join(format!("phasebox-doctor-{}.toml", std::process::id()));
        std::fs::write(&path, "[phase.test]\nnetwork = \"shared\"\n").unwrap();
        let config = Config::load(Some(&path)).unwrap();
        std::fs::remove_file(&path).unwrap();
        let assessment = assess(&bare_root(), None, &EbuildFlags::default(), &config);
        let test = phase(&assessment, "test");
        assert!(!test.auto.isolations.iter().any(|i| i.kind == Kind::Network));
    }
}
