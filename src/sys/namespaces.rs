//! Identities of Linux namespaces, to verify that an isolation is really in force.

use std::os::unix::ffi::OsStrExt;

use anyhow::{Context, Result};

/// The namespace kinds phasebox isolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Network,
    Ipc,
    Uts,
    Pid,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Network, Kind::Ipc, Kind::Uts, Kind::Pid];

    /// The name under /proc/PID/ns/.
    fn proc_name(self) -> &'static str {
        match self {
            Kind::Network => "net",
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
            Kind::Pid => "pid",
        }
    }

    /// What the user asked for, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Network => "private network",
            Kind::Ipc => "private IPC",
            Kind::Uts => "private hostname",
            Kind::Pid => "private PID namespace",
        }
    }

    /// The switch that turns this isolation off.
    pub fn off_switch(self) -> &'static str {
        match self {
            Kind::Network => "--no-network",
            Kind::Ipc => "--no-ipc",
            Kind::Uts => "--no-network",
            Kind::Pid => "--no-pid",
        }
    }

    pub fn clone_flag(self) -> nix::sched::CloneFlags {
        use nix::sched::CloneFlags;
        match self {
            Kind::Network => CloneFlags::CLONE_NEWNET,
            Kind::Ipc => CloneFlags::CLONE_NEWIPC,
            Kind::Uts => CloneFlags::CLONE_NEWUTS,
            Kind::Pid => CloneFlags::CLONE_NEWPID,
        }
    }

    pub fn tag(self) -> &'static str {
        self.proc_name()
    }

    pub fn from_tag(tag: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

/// A namespace is identified by its inode number, which its /proc/PID/ns link names
/// ("net:[4026531840]"). The link is read rather than stat'ed: a stat makes the
/// kernel build an inode for the namespace every time, several times the cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsId(pub u64);

impl NsId {
    /// The namespace a /proc/PID/ns/NAME link names.
    pub fn of_link(path: &str) -> Result<NsId> {
        let target = std::fs::read_link(path).with_context(|| format!("reading {path}"))?;
        NsId::parse(target.as_os_str().as_bytes())
            .with_context(|| format!("{path} names no namespace ({})", target.display()))
    }

    pub fn of_self(kind: Kind) -> Result<NsId> {
        NsId::of_link(&format!("/proc/self/ns/{}", kind.proc_name()))
    }

    fn parse(link: &[u8]) -> Option<NsId> {
        let (_, inode) = std::str::from_utf8(link).ok()?.split_once(":[")?;
        inode.strip_suffix(']')?.parse().ok().map(NsId)
    }
}

/// A set of namespace kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Set {
    pub network: bool,
    pub ipc: bool,
    pub uts: bool,
    pub pid: bool,
}

impl Set {
    pub fn all() -> Set {
        Set { network: true, ipc: true, uts: true, pid: true }
    }

    /// The kinds of this set that are not in `other`.
    pub fn without(self, other: Set) -> Set {
        Set {
            network: self.network && !other.network,
            ipc: self.ipc && !other.ipc,
            uts: self.uts && !other.uts,
            pid: self.pid && !other.pid,
        }
    }

    pub fn contains(self, kind: Kind) -> bool {
        match kind {
            Kind::Network => self.network,
            Kind::Ipc => self.ipc,
            Kind::Uts => self.uts,
            Kind::Pid => self.pid,
        }
    }

    pub fn with(mut self, kind: Kind, on: bool) -> Set {
        match kind {
            Kind::Network => self.network = on,
            Kind::Ipc => self.ipc = on,
            Kind::Uts => self.uts = on,
            Kind::Pid => self.pid = on,
        }
        self
    }

    pub fn kinds(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |&k| self.contains(k))
    }

    pub fn is_empty(self) -> bool {
        self.kinds().next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_link_names_its_inode() {
        assert_eq!(NsId::parse(b"net:[4026531840]"), Some(NsId(4026531840)));
        assert_eq!(NsId::parse(b"net:[]"), None);
        assert_eq!(NsId::parse(b"/proc/1/ns/net"), None);
    }

    #[test]
    fn this_process_has_namespaces_and_their_kinds_differ() {
        let net = NsId::of_self(Kind::Network).unwrap();
        assert_ne!(net, NsId::of_self(Kind::Ipc).unwrap());
    }
}
