//! Typed proxies for exactly the systemd D-Bus members phasebox uses.
//! dbus-interfaces/ holds the same members as introspection XML; tests check both
//! against each other and against the live systemd.

use zbus::proxy;
use zbus::{OwnedObjectPath, Variant as Value};

/// One entry of ListUnitsByPatterns: name, description, load, active and sub state,
/// the unit it follows, its object, and its job (id, type, object).
pub type ListedUnit =
    (String, String, String, String, String, String, OwnedObjectPath, u32, String, OwnedObjectPath);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    /// Ask for unit and job signals to be sent to this connection.
    fn subscribe(&self) -> zbus::Result<()>;

    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;

    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// Loaded units whose names match PATTERNS, in any of STATES (all when empty):
    /// name, description, load, active and sub state, following, object, job.
    fn list_units_by_patterns(&self, states: &[&str], patterns: &[&str]) -> zbus::Result<Vec<ListedUnit>>;

    /// The object of a loaded unit; NoSuchUnit once a transient unit is collected.
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// Send a signal to a unit's processes (`whom`: "main", "control" or "all").
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;

    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: OwnedObjectPath, unit: String, result: String) -> zbus::Result<()>;

    /// A unit was unloaded: a transient unit is then gone for good.
    #[zbus(signal)]
    fn unit_removed(&self, id: String, unit: OwnedObjectPath) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> zbus::Result<String>;
}

#[proxy(interface = "org.freedesktop.systemd1.Unit", default_service = "org.freedesktop.systemd1")]
pub trait Unit {
    /// Keep the unit loaded until Unref or until this connection closes (after the
    /// bus restarted, the reference AddRef=yes took is gone).
    #[zbus(name = "Ref")]
    fn take_ref(&self) -> zbus::Result<()>;

    /// Drop the reference AddRef=yes took, so systemd collects the unit now.
    fn unref(&self) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "false"))]
    fn active_state(&self) -> zbus::Result<String>;

    #[zbus(property(emits_changed_signal = "false"))]
    fn description(&self) -> zbus::Result<String>;

    /// When the unit last became active, in µs since the epoch.
    #[zbus(property(emits_changed_signal = "false"))]
    fn active_enter_timestamp(&self) -> zbus::Result<u64>;
}

#[proxy(interface = "org.freedesktop.systemd1.Service", default_service = "org.freedesktop.systemd1")]
pub trait Service {
    /// A CLD_* code: 1 exited, 2 killed, 3 dumped; 0 when the main process never ran.
    #[zbus(property(emits_changed_signal = "false"))]
    fn exec_main_code(&self) -> zbus::Result<i32>;

    /// The exit status or the signal number, depending on ExecMainCode.
    #[zbus(property(emits_changed_signal = "false"))]
    fn exec_main_status(&self) -> zbus::Result<i32>;

    /// "success", "exit-code", "signal", "core-dump", "timeout", "oom-kill", "resources", ...
    #[zbus(property(emits_changed_signal = "false"))]
    fn result(&self) -> zbus::Result<String>;

    #[zbus(property(emits_changed_signal = "false"), name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;

    /// u64::MAX when not counted.
    #[zbus(property(emits_changed_signal = "false"))]
    fn tasks_current(&self) -> zbus::Result<u64>;

    /// u64::MAX when not counted.
    #[zbus(property(emits_changed_signal = "false"))]
    fn memory_current(&self) -> zbus::Result<u64>;
}

#[proxy(interface = "org.freedesktop.systemd1.Scope", default_service = "org.freedesktop.systemd1")]
pub trait Scope {
    /// The scope's cgroup, below the hierarchy's root.
    #[zbus(property(emits_changed_signal = "false"))]
    fn control_group(&self) -> zbus::Result<String>;

    #[zbus(property(emits_changed_signal = "false"))]
    fn tasks_current(&self) -> zbus::Result<u64>;

    #[zbus(property(emits_changed_signal = "false"))]
    fn memory_current(&self) -> zbus::Result<u64>;
}

/// The D-Bus signatures of the Rust types the proxies above use, member by member
/// (methods as `IN->OUT`), so tests can compare them with dbus-interfaces/.
pub fn member_signatures() -> Vec<(&'static str, &'static str, String)> {
    use zbus::Type;
    fn sig<T: Type>() -> String {
        T::SIGNATURE.to_string()
    }
    vec![
        ("org.freedesktop.systemd1.Manager", "Subscribe", String::new()),
        (
            "org.freedesktop.systemd1.Manager",
            "StartTransientUnit",
            format!(
                "{}{}{}{}->{}",
                sig::<&str>(),
                sig::<&str>(),
                sig::<&[(&str, Value<'_>)]>(),
                sig::<&[(&str, &[(&str, Value<'_>)])]>(),
                sig::<OwnedObjectPath>()
            ),
        ),
        (
            "org.freedesktop.systemd1.Manager",
            "StopUnit",
            format!("{}{}->{}", sig::<&str>(), sig::<&str>(), sig::<OwnedObjectPath>()),
        ),
        (
            "org.freedesktop.systemd1.Manager",
            "ListUnitsByPatterns",
            format!("{}{}->{}", sig::<&[&str]>(), sig::<&[&str]>(), sig::<Vec<ListedUnit>>()),
        ),
        (
            "org.freedesktop.systemd1.Manager",
            "GetUnit",
            format!("{}->{}", sig::<&str>(), sig::<OwnedObjectPath>()),
        ),
        (
            "org.freedesktop.systemd1.Manager",
            "KillUnit",
            format!("{}{}{}", sig::<&str>(), sig::<&str>(), sig::<i32>()),
        ),
        ("org.freedesktop.systemd1.Manager", "Version", sig::<String>()),
        (
            "org.freedesktop.systemd1.Manager",
            "JobRemoved",
            format!("{}{}{}{}", sig::<u32>(), sig::<OwnedObjectPath>(), sig::<String>(), sig::<String>()),
        ),
        (
            "org.freedesktop.systemd1.Manager",
            "UnitRemoved",
            format!("{}{}", sig::<String>(), sig::<OwnedObjectPath>()),
        ),
        ("org.freedesktop.systemd1.Unit", "Ref", String::new()),
        ("org.freedesktop.systemd1.Unit", "Unref", String::new()),
        ("org.freedesktop.systemd1.Unit", "ActiveState", sig::<String>()),
        ("org.freedesktop.systemd1.Unit", "Description", sig::<String>()),
        ("org.freedesktop.systemd1.Unit", "ActiveEnterTimestamp", sig::<u64>()),
        ("org.freedesktop.systemd1.Service", "ExecMainCode", sig::<i32>()),
        ("org.freedesktop.systemd1.Service", "ExecMainStatus", sig::<i32>()),
        ("org.freedesktop.systemd1.Service", "Result", sig::<String>()),
        ("org.freedesktop.systemd1.Service", "MainPID", sig::<u32>()),
        ("org.freedesktop.systemd1.Service", "TasksCurrent", sig::<u64>()),
        ("org.freedesktop.systemd1.Service", "MemoryCurrent", sig::<u64>()),
        ("org.freedesktop.systemd1.Scope", "ControlGroup", sig::<String>()),
        ("org.freedesktop.systemd1.Scope", "TasksCurrent", sig::<u64>()),
        ("org.freedesktop.systemd1.Scope", "MemoryCurrent", sig::<u64>()),
    ]
}
