//! Talking to systemd over D-Bus: typed proxies, properties, unit names.

pub mod client;
pub mod properties;
pub mod proxies;
pub mod session;
pub mod unit_name;
pub mod value_syntax;

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

/// Which service manager a phase is started on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    System,
    User,
}

impl Manager {
    /// "system" or "user", as people and reports name the manager.
    pub fn name(self) -> &'static str {
        match self {
            Manager::System => "system",
            Manager::User => "user",
        }
    }

    /// "system" or "session": the bus this manager is reached on.
    pub fn bus(self) -> &'static str {
        match self {
            Manager::System => "system",
            Manager::User => "session",
        }
    }

    pub fn connect_hint(self) -> &'static str {
        match self {
            Manager::System => {
                "is systemd running as PID 1 with dbus? (`systemctl is-system-running`); run as root, or use --user"
            }
            Manager::User => {
                "is your user manager running with a session bus at /run/user/UID/bus? (`systemctl \
                 --user status`; for a user without a login session, such as portage: `loginctl \
                 enable-linger USER`)"
            }
        }
    }
}

/// The name and text of an error reply, whether zbus made it an `fdo::Error` or not.
pub fn error_reply(error: &zbus::Error) -> Option<(String, String)> {
    use zbus::DBusError;
    match error {
        zbus::Error::MethodError(name, text, _) => Some((name.to_string(), text.clone().unwrap_or_default())),
        zbus::Error::FDO(fdo) => {
            Some((fdo.name().to_string(), fdo.description().unwrap_or_default().to_string()))
        }
        _ => None,
    }
}

/// Whether `error` is an error reply with one of these names.
pub fn is_reply(error: &zbus::Error, names: &[&str]) -> bool {
    error_reply(error).is_some_and(|(name, _)| names.contains(&name.as_str()))
}

/// The bus connection closed while phasebox waited for a signal.
#[derive(Debug)]
pub struct Disconnected;

impl std::fmt::Display for Disconnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the bus connection closed")
    }
}

impl std::error::Error for Disconnected {}

/// Whether `error` means the connection itself is gone (the bus daemon restarted),
/// rather than a reply from the other side.
pub fn is_disconnect(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<Disconnected>()
            || matches!(cause.downcast_ref::<zbus::Error>(), Some(zbus::Error::InputOutput(_)))
    })
}

/// Set once a session's runtime exists: only it starts threads in phasebox.
static RUNTIME_MADE: AtomicBool = AtomicBool::new(false);

/// Check that this process has one thread, before it forks or creates a user
/// namespace. Only the async runtime starts threads: a process that never made one
/// has a single thread, and is not asked.
pub fn single_threaded() -> Result<()> {
    if !RUNTIME_MADE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let threads = std::fs::read_dir("/proc/self/task").context("counting phasebox's threads")?.count();
    if threads != 1 {
        anyhow::bail!(
            "phasebox has {threads} threads where it must have one (a D-Bus runtime outlived its use); \
             this is a bug in phasebox"
        );
    }
    Ok(())
}

/// Connect to the bus of the chosen service manager.
pub async fn connect(manager: Manager) -> Result<zbus::Connection> {
    let connection = match manager {
        Manager::System => zbus::Connection::system().await,
        Manager::User => zbus::Connection::session().await,
    };
    connection
        .with_context(|| format!("cannot connect to the {} bus: {}", manager.bus(), manager.connect_hint()))
}
