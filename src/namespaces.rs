//! Identities of Linux namespaces, to verify that an isolation is really in force.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};

/// The namespace kinds phasebox isolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Network,
    Ipc,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Network, Kind::Ipc];

    fn proc_name(self) -> &'static str {
        match self {
            Kind::Network => "net",
            Kind::Ipc => "ipc",
        }
    }

    /// What the user asked for, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Network => "private network",
            Kind::Ipc => "private IPC",
        }
    }

    /// The systemd property that asks for this isolation.
    pub fn property(self) -> &'static str {
        match self {
            Kind::Network => "PrivateNetwork=",
            Kind::Ipc => "PrivateIPC=",
        }
    }

    pub fn tag(self) -> &'static str {
        self.proc_name()
    }

    pub fn from_tag(tag: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

/// A namespace is identified by the device and inode of its /proc/PID/ns link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl NsId {
    pub fn of_process(pid: &str, kind: Kind) -> Result<NsId> {
        let path = Path::new("/proc").join(pid).join("ns").join(kind.proc_name());
        let meta = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(NsId { dev: meta.dev(), ino: meta.ino() })
    }

    pub fn of_self(kind: Kind) -> Result<NsId> {
        NsId::of_process("self", kind)
    }
}
