//! Which backend runs a phase, and why: `--mode auto` looks at what this host and
//! this caller have.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::namespaces::NsId;
use crate::systemd::Manager;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A transient service: systemd spawns the command (through the inner mode).
    Service(Manager),
    /// A transient scope around phasebox's own process, isolated with unshare(2).
    Scope(Manager),
    /// unshare(2) alone: no systemd.
    Unshare,
    /// No sandbox: the phase policy leaves this phase alone (pkg_postinst...).
    Unconfined,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Service(_) => "service",
            Backend::Scope(_) => "scope",
            Backend::Unshare => "unshare",
            Backend::Unconfined => "unconfined",
        }
    }
}

/// The facts `auto` decides on, gathered from the host (or set by tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Situation {
    /// The bus of the chosen manager, when it looks reachable; else why not.
    pub bus: Result<PathBuf, String>,
    pub keep_fds: bool,
    /// What a service would lose of the caller's state, if anything.
    pub state_a_service_loses: Option<String>,
}

/// `--mode auto`: service when systemd is reachable and the caller loses nothing in a
/// service; scope when systemd is reachable but something would be lost; else unshare.
pub fn choose(manager: Manager, situation: &Situation) -> (Backend, String) {
    match (&situation.bus, situation.keep_fds, &situation.state_a_service_loses) {
        (Err(why), _, _) => (Backend::Unshare, format!("systemd is not reachable ({why})")),
        (Ok(_), true, _) => (
            Backend::Scope(manager),
            "--keep-fds: a service gets only descriptors 0-2, a scope keeps them all".to_string(),
        ),
        (Ok(_), false, Some(lost)) => {
            (Backend::Scope(manager), format!("{lost}: a service would not keep it"))
        }
        (Ok(bus), false, None) => (
            Backend::Service(manager),
            format!("systemd is reachable at {} and a service keeps all the caller needs", bus.display()),
        ),
    }
}

impl Situation {
    pub fn of_this_host(manager: Manager, keep_fds: bool) -> Situation {
        Situation {
            bus: bus_socket(manager),
            keep_fds,
            state_a_service_loses: state_a_service_loses(manager),
        }
    }
}

/// The bus socket of a manager, if systemd is running and the socket exists.
pub fn bus_socket(manager: Manager) -> Result<PathBuf, String> {
    if !Path::new("/run/systemd/system").exists() {
        return Err("this host was not booted with systemd: /run/systemd/system is missing".into());
    }
    let (variable, default) = match manager {
        Manager::System => ("DBUS_SYSTEM_BUS_ADDRESS", PathBuf::from("/run/dbus/system_bus_socket")),
        // Like zbus and sd-bus, /run/user/UID when XDG_RUNTIME_DIR is unset (portage
        // phases under FEATURES=userpriv run without a login session's variables).
        Manager::User => (
            "DBUS_SESSION_BUS_ADDRESS",
            std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix::unistd::geteuid())))
                .join("bus"),
        ),
    };
    let path = match std::env::var(variable) {
        Ok(address) => match address.split(';').find_map(|a| a.strip_prefix("unix:path=")) {
            Some(path) => PathBuf::from(path.split(',').next().unwrap_or(path)),
            // Not a plain socket path (abstract, tcp...): let the connection decide.
            None => return Ok(PathBuf::from(address)),
        },
        Err(_) => default,
    };
    if path.exists() { Ok(path) } else { Err(format!("no bus socket at {}", path.display())) }
}

/// A chroot or another mount namespace than systemd's (PID 1): a service, spawned
/// by systemd, would see systemd's files instead of the caller's.
fn state_a_service_loses(manager: Manager) -> Option<String> {
    if manager == Manager::User {
        // An unprivileged caller can't inspect PID 1; its user manager lives in the
        // host's mount namespace like PID 1 in practice.
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
    }
    let root = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    if let (Some(ours), Some(systemds)) = (root("/"), root("/proc/1/root"))
        && ours != systemds
    {
        return Some("the caller is in a chroot".into());
    }
    let mnt = |pid: &str| NsId::of_link(&format!("/proc/{pid}/ns/mnt")).ok();
    match (mnt("self"), mnt("1")) {
        (Some(ours), Some(systemds)) if ours != systemds => {
            Some("the caller is in another mount namespace than systemd".into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn situation(bus: bool, keep_fds: bool, lost: Option<&str>) -> Situation {
        Situation {
            bus: if bus { Ok("/run/dbus/system_bus_socket".into()) } else { Err("no systemd".into()) },
            keep_fds,
            state_a_service_loses: lost.map(str::to_string),
        }
    }

    #[test]
    fn auto_picks_service_scope_or_unshare() {
        let m = Manager::System;
        assert_eq!(choose(m, &situation(true, false, None)).0, Backend::Service(m));
        assert_eq!(choose(m, &situation(true, true, None)).0, Backend::Scope(m));
        let (backend, why) = choose(m, &situation(true, false, Some("the caller is in a chroot")));
        assert_eq!(backend, Backend::Scope(m));
        assert!(why.contains("chroot"));
        let (backend, why) = choose(m, &situation(false, true, Some("x")));
        assert_eq!(backend, Backend::Unshare);
        assert!(why.contains("no systemd"));
    }
}
