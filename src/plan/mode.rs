//! Which backend runs a phase, with which isolations, and why: one pure decision,
//! `decide`, made by `run` (before connecting to systemd, and again when systemd
//! then does not answer) and by `doctor` for every phase, from the same facts.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::plan::policy::{Decision, Sharing};
use crate::sys::namespaces::{NsId, Set};
use crate::systemd::Manager;

/// The mode asked for with `--mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Choice {
    #[default]
    Auto,
    Service,
    Scope,
    Unshare,
}

pub use crate::launch::Backend;

/// What is known of a service manager's bus when the mode is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The host was not booted with systemd: /run/systemd/system is missing.
    NotBooted,
    /// No socket where the manager's bus should be.
    NoSocket(String),
    /// The bus (a socket path, or an address to connect to) is there; nothing was
    /// asked over it yet. `run` decides on this before it connects.
    Found(String),
    /// systemd answered on the bus (its major version, when it could be read).
    Answered { bus: String, version: Option<u32> },
    /// The bus is there, but connecting or asking systemd failed.
    Silent { bus: String, error: String },
}

impl Reach {
    /// What this host shows without asking anything over the bus.
    pub fn of_host(manager: Manager) -> Reach {
        if !Path::new("/run/systemd/system").exists() {
            return Reach::NotBooted;
        }
        let (variable, default) = match manager {
            Manager::System => ("DBUS_SYSTEM_BUS_ADDRESS", "/run/dbus/system_bus_socket".to_string()),
            // Like zbus and sd-bus, /run/user/UID when XDG_RUNTIME_DIR is unset (portage
            // phases under FEATURES=userpriv run without a login session's variables).
            Manager::User => (
                "DBUS_SESSION_BUS_ADDRESS",
                format!(
                    "{}/bus",
                    std::env::var("XDG_RUNTIME_DIR")
                        .unwrap_or_else(|_| format!("/run/user/{}", nix::unistd::geteuid()))
                ),
            ),
        };
        let path = match std::env::var(variable) {
            Ok(address) => match address.split(';').find_map(|a| a.strip_prefix("unix:path=")) {
                Some(path) => path.split(',').next().unwrap_or(path).to_string(),
                // Not a plain socket path (abstract, tcp...): let the connection decide.
                None => return Reach::Found(address),
            },
            Err(_) => default,
        };
        if Path::new(&path).exists() { Reach::Found(path) } else { Reach::NoSocket(path) }
    }

    /// Whether a unit may be asked for: the bus is there and nothing failed on it.
    pub fn usable(&self) -> bool {
        matches!(self, Reach::Found(_) | Reach::Answered { .. })
    }

    /// The bus's socket or address, where there is one.
    pub fn bus(&self) -> Option<&str> {
        match self {
            Reach::NotBooted => None,
            Reach::NoSocket(bus) | Reach::Found(bus) => Some(bus),
            Reach::Answered { bus, .. } | Reach::Silent { bus, .. } => Some(bus),
        }
    }

    /// systemd's version, when it answered with one.
    pub fn version(&self) -> Option<u32> {
        match self {
            Reach::Answered { version, .. } => *version,
            _ => None,
        }
    }
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reach::NotBooted => {
                f.write_str("this host was not booted with systemd: /run/systemd/system is missing")
            }
            Reach::NoSocket(path) => write!(f, "no bus socket at {path}"),
            Reach::Found(bus) => write!(f, "its bus is at {bus}"),
            Reach::Answered { bus, .. } => write!(f, "it answers at {bus}"),
            Reach::Silent { bus, error } => write!(f, "its bus at {bus} does not answer: {error}"),
        }
    }
}

/// What a service would lose of the caller's state: a service is spawned by
/// systemd, in systemd's root and mount namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    Chroot,
    MountNamespace,
}

impl Lost {
    /// A chroot or another mount namespace than systemd's (PID 1) for this caller.
    pub fn of_this_caller(manager: Manager) -> Option<Lost> {
        // An unprivileged caller can't inspect PID 1; its user manager lives in the
        // host's mount namespace like PID 1 in practice.
        if manager == Manager::User && !nix::unistd::geteuid().is_root() {
            return None;
        }
        let root = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        if let (Some(ours), Some(systemds)) = (root("/"), root("/proc/1/root"))
            && ours != systemds
        {
            return Some(Lost::Chroot);
        }
        let mnt = |pid: &str| NsId::of_link(&format!("/proc/{pid}/ns/mnt")).ok();
        match (mnt("self"), mnt("1")) {
            (Some(ours), Some(systemds)) if ours != systemds => Some(Lost::MountNamespace),
            _ => None,
        }
    }
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lost::Chroot => "the caller is in a chroot",
            Lost::MountNamespace => "the caller is in another mount namespace than systemd",
        })
    }
}

/// Why a backend was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// `--mode MODE`.
    Asked(&'static str),
    /// The phase policy does not confine the phase (the policy's own words).
    NotConfined(String),
    KeepFds,
    Loses(Lost),
    Reachable(String),
    Unreachable(Reach),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Asked(mode) => write!(f, "--mode {mode}"),
            Why::NotConfined(text) => f.write_str(text),
            Why::KeepFds => {
                f.write_str("--keep-fds: a service gets only descriptors 0-2, a scope keeps them all")
            }
            Why::Loses(lost) => write!(f, "{lost}: a service would not keep it"),
            Why::Reachable(bus) => {
                write!(f, "systemd is reachable at {bus} and a service keeps all the caller needs")
            }
            Why::Unreachable(reach) => write!(f, "systemd is not reachable ({reach})"),
        }
    }
}

/// A flag that asks for something only some backends can give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// As the user gave it: `--memory-max 1G`, `-p PrivateTmp=yes`.
    pub shown: String,
    /// The property it sets.
    pub property: &'static str,
}

/// Everything the decision depends on besides the bus.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub mode: Choice,
    pub manager: Manager,
    pub root: bool,
    pub keep_fds: bool,
    pub lost: Option<Lost>,
    /// The `--phase` policy's decision, if any, and why it leaves a phase alone.
    pub policy: Option<(&'a Decision, String)>,
    /// --network/--no-network, --ipc/--no-ipc, --pid/--no-pid.
    pub network: Option<bool>,
    pub ipc: Option<bool>,
    pub pid: Option<bool>,
    /// The first property asked for that needs systemd (resource control...).
    pub needs_systemd: Option<Asked>,
    /// The first that only a service can apply (PrivateTmp=yes...).
    pub needs_service: Option<Asked>,
}

/// The decision: the backend, why, and the isolations asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mode {
    pub backend: Backend,
    pub why: Why,
    pub isolations: Set,
}

/// What can't be run as asked, before anything starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    KeepFdsInService,
    SystemServiceNotRoot,
    /// `--mode service|scope` where systemd can't be reached.
    Unreachable {
        backend: Backend,
        reach: Reach,
    },
    /// A flag needs systemd (or a service), and this phase can't have it.
    Needs {
        asked: Asked,
        what: &'static str,
        backend: Backend,
        why: Why,
    },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::KeepFdsInService => {
                f.write_str("--keep-fds needs --mode scope or unshare: a service gets only descriptors 0-2")
            }
            Refused::SystemServiceNotRoot => f.write_str(
                "a service of the system manager would run the command as root, and you are not root; \
                 leave out --system (your user manager runs it as you), or use --mode scope",
            ),
            Refused::Unreachable { backend, reach } => write!(
                f,
                "--mode {} needs systemd, and it is not reachable ({reach}); leave out --mode for unshare \
                 mode",
                backend.name()
            ),
            Refused::Needs { asked, what, backend, why } => write!(
                f,
                "{}: {} needs {what}, and this phase runs in {} mode ({why})",
                asked.shown,
                asked.property,
                backend.name()
            ),
        }
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// The backend that was chosen, and can't run the phase as asked.
    pub fn backend(&self) -> Backend {
        match self {
            Refused::KeepFdsInService => Backend::Service(Manager::System),
            Refused::SystemServiceNotRoot => Backend::Service(Manager::System),
            Refused::Unreachable { backend, .. } | Refused::Needs { backend, .. } => *backend,
        }
    }
}

/// The one decision: `--mode auto` picks service when systemd is reachable and the
/// caller loses nothing in a service, scope when something would be lost, and
/// unshare (with unshare mode's own isolations) when systemd is not reachable —
/// whether that was seen before connecting or only when connecting failed.
pub fn decide(request: &Request, reach: &Reach) -> Result<Mode, Refused> {
    if let Some((decision, why)) = &request.policy
        && !decision.confine
    {
        return Ok(Mode {
            backend: Backend::Unconfined,
            why: Why::NotConfined(why.clone()),
            isolations: Set::default(),
        });
    }
    let manager = request.manager;
    let (backend, why) = match request.mode {
        Choice::Auto if !reach.usable() => (Backend::Unshare, Why::Unreachable(reach.clone())),
        Choice::Auto if request.keep_fds => (Backend::Scope(manager), Why::KeepFds),
        Choice::Auto => match request.lost {
            Some(lost) => (Backend::Scope(manager), Why::Loses(lost)),
            None => (Backend::Service(manager), Why::Reachable(reach.bus().unwrap_or_default().to_string())),
        },
        Choice::Service if request.keep_fds => return Err(Refused::KeepFdsInService),
        Choice::Service => (Backend::Service(manager), Why::Asked("service")),
        Choice::Scope => (Backend::Scope(manager), Why::Asked("scope")),
        Choice::Unshare => (Backend::Unshare, Why::Asked("unshare")),
    };
    if matches!(backend, Backend::Service(_) | Backend::Scope(_)) && !reach.usable() {
        return Err(Refused::Unreachable { backend, reach: reach.clone() });
    }
    if backend == Backend::Service(Manager::System) && !request.root {
        return Err(Refused::SystemServiceNotRoot);
    }
    let needs = |asked: &Option<Asked>, what| {
        asked.clone().map(|asked| Refused::Needs { asked, what, backend, why: why.clone() })
    };
    match backend {
        Backend::Unshare => {
            if let Some(refused) = needs(&request.needs_systemd, "systemd (service or scope mode)")
                .or_else(|| needs(&request.needs_service, "a service (--mode service)"))
            {
                return Err(refused);
            }
        }
        Backend::Scope(_) => {
            if let Some(refused) = needs(&request.needs_service, "a service (--mode service)") {
                return Err(refused);
            }
        }
        Backend::Service(_) | Backend::Unconfined => {}
    }
    Ok(Mode { backend, isolations: isolations(request, backend), why })
}

/// The isolations asked for: the phase policy's (or, without --phase, phasebox's
/// default for the backend), then the switches.
fn isolations(request: &Request, backend: Backend) -> Set {
    let Set { network, ipc, pid, .. } = default_isolations(request.policy.as_ref().map(|(d, _)| *d), backend);
    let network = request.network.unwrap_or(network);
    Set { network, uts: network, ipc: request.ipc.unwrap_or(ipc), pid: request.pid.unwrap_or(pid) }
}

/// The isolations a confined phase gets without switches: the phase policy's, or
/// without --phase all but a PID namespace in service mode (where systemd's
/// control group kills what the phase leaves behind).
pub fn default_isolations(decision: Option<&Decision>, backend: Backend) -> Set {
    let private = |sharing: Sharing| sharing == Sharing::Private;
    let (network, ipc, pid) = match decision {
        Some(d) => (private(d.network), private(d.ipc), private(d.pid)),
        None => (true, true, !matches!(backend, Backend::Service(_))),
    };
    Set { network, uts: network, ipc, pid }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request<'static> {
        Request {
            mode: Choice::Auto,
            manager: Manager::System,
            root: true,
            keep_fds: false,
            lost: None,
            policy: None,
            network: None,
            ipc: None,
            pid: None,
            needs_systemd: None,
            needs_service: None,
        }
    }

    fn found() -> Reach {
        Reach::Found("/run/dbus/system_bus_socket".into())
    }

    fn silent() -> Reach {
        Reach::Silent { bus: "/run/dbus/system_bus_socket".into(), error: "Connection refused".into() }
    }

    #[test]
    fn auto_picks_service_scope_or_unshare() {
        let m = Manager::System;
        assert_eq!(decide(&request(), &found()).unwrap().backend, Backend::Service(m));
        let keep = Request { keep_fds: true, ..request() };
        assert_eq!(decide(&keep, &found()).unwrap().backend, Backend::Scope(m));
        let chroot = Request { lost: Some(Lost::Chroot), ..request() };
        let mode = decide(&chroot, &found()).unwrap();
        assert_eq!(mode.backend, Backend::Scope(m));
        assert!(mode.why.to_string().contains("chroot"), "{}", mode.why);
        let mode = decide(&keep, &Reach::NotBooted).unwrap();
        assert_eq!(mode.backend, Backend::Unshare);
        assert!(mode.why.to_string().starts_with("systemd is not reachable"), "{}", mode.why);
    }

    #[test]
    fn a_bus_that_does_not_answer_gives_unshare_modes_full_isolation() {
        // Before connecting, a service without a PID namespace (its cgroup kills
        // orphans); once the bus turns out silent, unshare mode with its PID 1.
        let before = decide(&request(), &found()).unwrap();
        assert!(!before.isolations.pid);
        for keep_fds in [false, true] {
            let after = decide(&Request { keep_fds, ..request() }, &silent()).unwrap();
            assert_eq!(after.backend, Backend::Unshare);
            assert_eq!(after.isolations, Set::all());
            assert!(after.why.to_string().contains("does not answer: Connection refused"), "{}", after.why);
        }
    }

    #[test]
    fn what_only_systemd_gives_is_never_dropped_in_a_fallback() {
        let asked = Asked { shown: "--memory-max 1G".into(), property: "MemoryMax" };
        let limited = Request { needs_systemd: Some(asked), ..request() };
        assert_eq!(decide(&limited, &found()).unwrap().backend, Backend::Service(Manager::System));
        for reach in [silent(), Reach::NotBooted] {
            let refused = decide(&limited, &reach).unwrap_err().to_string();
            assert!(refused.starts_with("--memory-max 1G: MemoryMax needs systemd"), "{refused}");
        }
        let private_tmp = Asked { shown: "-p PrivateTmp=yes".into(), property: "PrivateTmp" };
        let service_only = Request { needs_service: Some(private_tmp), keep_fds: true, ..request() };
        let refused = decide(&service_only, &found()).unwrap_err().to_string();
        assert!(refused.contains("needs a service") && refused.contains("scope mode"), "{refused}");
    }

    #[test]
    fn asked_modes_are_checked_against_the_host() {
        let asked = |mode| Request { mode, ..request() };
        assert_eq!(decide(&asked(Choice::Unshare), &found()).unwrap().why, Why::Asked("unshare"));
        assert!(matches!(
            decide(&asked(Choice::Scope), &Reach::NotBooted),
            Err(Refused::Unreachable { backend: Backend::Scope(_), .. })
        ));
        let keep = Request { keep_fds: true, ..asked(Choice::Service) };
        assert_eq!(decide(&keep, &found()), Err(Refused::KeepFdsInService));
        let user = Request { root: false, ..asked(Choice::Service) };
        assert_eq!(decide(&user, &found()), Err(Refused::SystemServiceNotRoot));
    }

    #[test]
    fn switches_override_the_phase_policy_and_the_backends_default() {
        let config = crate::plan::policy::config::Config::default();
        let flags = crate::plan::policy::EbuildFlags::default();
        let setup = crate::plan::policy::decide("setup", None, &flags, &config);
        let with = |decision: &Decision, network, pid| {
            let r = Request { policy: Some((decision, String::new())), network, pid, ..request() };
            decide(&r, &found()).unwrap().isolations
        };
        assert_eq!(with(&setup, None, None), Set { pid: true, ..Set::default() });
        assert_eq!(with(&setup, Some(true), Some(false)), Set { network: true, uts: true, ..Set::default() });
        let postinst = crate::plan::policy::decide("postinst", None, &flags, &config);
        let r = Request { policy: Some((&postinst, "left alone".into())), ..request() };
        let mode = decide(&r, &Reach::NotBooted).unwrap();
        assert_eq!((mode.backend, mode.why.to_string()), (Backend::Unconfined, "left alone".to_string()));
    }
}
