//! `phasebox doctor`: what this host can do and what phasebox will do here. The
//! facts are gathered once (`probe`) into plain values, the decisions about them are
//! made by the same functions `run` uses (`assess`), and only then printed
//! (`render`), so every verdict is testable with constructed facts.

pub mod assess;
pub mod probe;
pub mod render;

use anyhow::Result;

use crate::plan::mode::{Lost, Reach};
use crate::plan::policy::Inputs;
use crate::protocol::findings::{Cause, Missing};
use crate::sys::namespaces::Kind;
use crate::systemd::Manager;

/// Exit status when some default isolation is missing for the caller.
pub const SOMETHING_MISSING: u8 = 1;

/// Everything doctor looked at, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The caller's effective uid.
    pub uid: u32,
    /// The manager `run` uses by default: the system manager for root, else the
    /// caller's user manager.
    pub manager: Manager,
    /// /run/systemd/system exists: the host was booted with systemd.
    pub systemd_running: bool,
    /// Each manager's bus, as `run` would find it, and whether systemd answered.
    pub system: Reach,
    pub user: Reach,
    /// What a service would lose of the caller's state (a chroot...), as `auto` sees it.
    pub lost: Option<Lost>,
    pub namespaces: Namespaces,
    pub cgroup: Cgroup,
    pub portage: Portage,
}

impl Facts {
    pub fn of(&self, manager: Manager) -> &Reach {
        match manager {
            Manager::System => &self.system,
            Manager::User => &self.user,
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Namespaces this caller can create, probed for real in a child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    /// For each kind phasebox isolates: created, or why not (for an unprivileged
    /// caller, inside a user namespace, as phasebox does it).
    pub kinds: Vec<(Kind, Result<(), Missing>)>,
    /// An unprivileged user's user namespace (root probes as `user_probed_as`).
    pub user: Result<(), String>,
    pub user_probed_as: u32,
    /// /proc/sys/kernel/unprivileged_userns_clone (Debian's switch), where present.
    pub unprivileged_userns_clone: Option<u64>,
    /// /proc/sys/user/max_user_namespaces, where present.
    pub max_user_namespaces: Option<u64>,
}

impl Namespaces {
    pub fn kind(&self, kind: Kind) -> Result<(), Missing> {
        self.kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(Err(Missing { kind, cause: Cause::Unshare(0) }), |(_, r)| *r)
    }
}

/// The cgroup hierarchy layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cgroup {
    /// cgroup v2 only.
    Unified,
    /// v1 controllers with a v2 hierarchy at /sys/fs/cgroup/unified.
    Hybrid,
    /// cgroup v1 only.
    Legacy,
    /// /sys/fs/cgroup is neither (not mounted, in some containers).
    Unknown,
}

impl Cgroup {
    pub fn name(self) -> &'static str {
        match self {
            Cgroup::Unified => "unified",
            Cgroup::Hybrid => "hybrid",
            Cgroup::Legacy => "legacy",
            Cgroup::Unknown => "unknown",
        }
    }
}

/// The `portage` user, which runs FEATURES=userpriv phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portage {
    pub uid: Option<u32>,
    /// /var/lib/systemd/linger/portage exists: systemd keeps a user manager for it.
    pub lingering: bool,
}

/// `phasebox doctor`: print the facts and verdict; the exit status.
pub fn main(json: bool, policy: &Inputs) -> Result<u8> {
    let facts = probe::gather()?;
    let (package, flags, config) = crate::plan::policy::inputs(policy)?;
    let assessment = assess::assess(&facts, package.as_ref(), &flags, &config);
    let text = if json {
        render::json(&facts, &assessment)?
    } else {
        render::text(&facts, &assessment, &config.describe())
    };
    crate::output!("{text}");
    Ok(assessment.exit_status())
}
