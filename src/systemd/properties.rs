//! Every transient-unit property phasebox sends: D-Bus names, signatures and the
//! conversion of `-p NAME=VALUE` into them. Nothing else names a systemd property.

use std::fmt;
use std::os::fd::{BorrowedFd, RawFd};

use anyhow::{Context, Result, anyhow, bail};
use zbus::{Fd, Variant as Value};

use crate::sys::process::{ProcessSetting, Rlimit};
use crate::systemd::value_syntax as syntax;

/// A typed property value; its D-Bus signature follows from the variant.
#[derive(Debug, Clone, PartialEq)]
pub enum PropValue {
    /// `t`
    U64(u64),
    /// `u`
    U32(u32),
    /// `i`
    I32(i32),
    /// `b`
    Bool(bool),
    /// `s`
    Str(String),
    /// `au`
    U32List(Vec<u32>),
    /// `a(sasb)`: path, argv, ignore-failure
    Exec(Vec<(String, Vec<String>, bool)>),
    /// `h`: a descriptor the launcher keeps open until the unit has started.
    Fd(RawFd),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub name: &'static str,
    pub value: PropValue,
}

impl Property {
    pub fn signature(&self) -> &'static str {
        match self.value {
            PropValue::U64(_) => "t",
            PropValue::U32(_) => "u",
            PropValue::I32(_) => "i",
            PropValue::Bool(_) => "b",
            PropValue::Str(_) => "s",
            PropValue::U32List(_) => "au",
            PropValue::Exec(_) => "a(sasb)",
            PropValue::Fd(_) => "h",
        }
    }

    /// The (name, variant) pair of StartTransientUnit's `a(sv)` argument.
    pub fn to_dbus(&self) -> (&'static str, Value<'_>) {
        let value = match &self.value {
            PropValue::U64(v) => Value::from(*v),
            PropValue::U32(v) => Value::from(*v),
            PropValue::I32(v) => Value::from(*v),
            PropValue::Bool(v) => Value::from(*v),
            PropValue::Str(v) => Value::from(v.as_str()),
            PropValue::U32List(v) => Value::from(v.clone()),
            PropValue::Exec(v) => Value::from(v.clone()),
            // SAFETY: the launcher owns these descriptors (or they are its stdio) and
            // keeps them open until StartTransientUnit has returned.
            PropValue::Fd(fd) => Value::from(Fd::from(unsafe { BorrowedFd::borrow_raw(*fd) })),
        };
        (self.name, value)
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.name)?;
        match &self.value {
            PropValue::U64(u64::MAX) => write!(f, "infinity"),
            PropValue::U64(v) => write!(f, "{v}"),
            PropValue::U32(v) => write!(f, "{v}"),
            PropValue::I32(v) => write!(f, "{v}"),
            PropValue::Bool(v) => write!(f, "{}", if *v { "yes" } else { "no" }),
            PropValue::Str(v) => write!(f, "{v}"),
            PropValue::U32List(v) => write!(f, "{v:?}"),
            PropValue::Exec(v) => {
                let (_, argv, _) = &v[0];
                write!(f, "{}", argv.join(" "))
            }
            PropValue::Fd(fd) => write!(f, "fd {fd}"),
        }
    }
}

fn prop(name: &'static str, value: PropValue) -> Property {
    Property { name, value }
}

// The properties phasebox always sets.

pub fn description(text: &str) -> Property {
    prop("Description", PropValue::Str(text.into()))
}
pub fn slice(name: &str) -> Property {
    prop("Slice", PropValue::Str(name.into()))
}
pub fn service_type_simple() -> Property {
    prop("Type", PropValue::Str("simple".into()))
}
pub fn exec_start(path: &str, argv: Vec<String>) -> Property {
    prop("ExecStart", PropValue::Exec(vec![(path.into(), argv, false)]))
}
pub fn private_network(on: bool) -> Property {
    prop("PrivateNetwork", PropValue::Bool(on))
}
pub fn private_ipc(on: bool) -> Property {
    prop("PrivateIPC", PropValue::Bool(on))
}
pub fn private_users(on: bool) -> Property {
    prop("PrivateUsers", PropValue::Bool(on))
}
/// A PID namespace whose PID 1 is the service's main process (systemd 257). Its
/// D-Bus type is `s` ("yes" or "no"), unlike PrivateNetwork='s and PrivateIPC='s `b`:
/// systemd 257 and 262 refuse a `b` with ENXIO "Unexpected message contents".
pub fn private_pids(on: bool) -> Property {
    prop("PrivatePIDs", PropValue::Str(if on { "yes" } else { "no" }.into()))
}
/// Kill every process of the unit's cgroup, not only the main one.
pub fn kill_mode_control_group() -> Property {
    prop("KillMode", PropValue::Str("control-group".into()))
}
/// Keep the unit (and its exit status) while our bus connection holds a reference.
pub fn add_ref() -> Property {
    prop("AddRef", PropValue::Bool(true))
}
/// Garbage-collect failed units too, once nobody holds a reference.
pub fn collect_inactive_or_failed() -> Property {
    prop("CollectMode", PropValue::Str("inactive-or-failed".into()))
}
/// The memory and io controllers for the unit, so that its cgroup has the whole
/// phase's memory.peak and io.stat (systemd enables CPU's basic figures anyway).
pub fn accounting() -> [Property; 2] {
    [prop("MemoryAccounting", PropValue::Bool(true)), prop("IOAccounting", PropValue::Bool(true))]
}
pub fn timeout_stop_usec(usec: u64) -> Property {
    prop("TimeoutStopUSec", PropValue::U64(usec))
}
/// The processes a scope starts with.
pub fn pids(pids: Vec<u32>) -> Property {
    prop("PIDs", PropValue::U32List(pids))
}
pub fn stdin_fd(fd: RawFd) -> Property {
    prop("StandardInputFileDescriptor", PropValue::Fd(fd))
}
pub fn stdout_fd(fd: RawFd) -> Property {
    prop("StandardOutputFileDescriptor", PropValue::Fd(fd))
}
pub fn stderr_fd(fd: RawFd) -> Property {
    prop("StandardErrorFileDescriptor", PropValue::Fd(fd))
}

/// How the value of a `-p` property is written.
#[derive(Debug, Clone, Copy)]
enum Syntax {
    /// Bytes, "infinity", or a percentage of physical memory (sent as `<Name>Scale`).
    Memory,
    /// A percentage of one CPU, sent as CPUQuotaPerSecUSec.
    CpuQuota,
    /// A count, "infinity", or a percentage (sent as TasksMaxScale).
    Tasks,
    /// A time span, sent in microseconds.
    Time,
    Nice,
    Weight,
    /// A resource limit "N" or "SOFT:HARD", sent as `<Name>` (hard) and `<Name>Soft`.
    Limit {
        resource: libc::__rlimit_resource_t,
        bytes: bool,
    },
    Bool,
    Signal,
}

struct Spec {
    name: &'static str,
    dbus: &'static str,
    soft: &'static str,
    syntax: Syntax,
}

const fn spec(name: &'static str, syntax: Syntax) -> Spec {
    Spec { name, dbus: name, soft: "", syntax }
}

const fn limit(
    name: &'static str,
    soft: &'static str,
    resource: libc::__rlimit_resource_t,
    bytes: bool,
) -> Spec {
    Spec { name, dbus: name, soft, syntax: Syntax::Limit { resource, bytes } }
}

const fn scaled(name: &'static str, scale: &'static str, syntax: Syntax) -> Spec {
    Spec { name, dbus: name, soft: scale, syntax }
}

/// The properties `-p` accepts: what a build needs for limits, accounting and hardening.
const SPECS: &[Spec] = &[
    scaled("MemoryMax", "MemoryMaxScale", Syntax::Memory),
    scaled("MemoryHigh", "MemoryHighScale", Syntax::Memory),
    scaled("MemoryLow", "MemoryLowScale", Syntax::Memory),
    scaled("MemoryMin", "MemoryMinScale", Syntax::Memory),
    scaled("MemorySwapMax", "MemorySwapMaxScale", Syntax::Memory),
    Spec { name: "CPUQuota", dbus: "CPUQuotaPerSecUSec", soft: "", syntax: Syntax::CpuQuota },
    spec("CPUWeight", Syntax::Weight),
    spec("StartupCPUWeight", Syntax::Weight),
    spec("IOWeight", Syntax::Weight),
    spec("StartupIOWeight", Syntax::Weight),
    scaled("TasksMax", "TasksMaxScale", Syntax::Tasks),
    Spec { name: "RuntimeMaxSec", dbus: "RuntimeMaxUSec", soft: "", syntax: Syntax::Time },
    Spec { name: "TimeoutStopSec", dbus: "TimeoutStopUSec", soft: "", syntax: Syntax::Time },
    spec("Nice", Syntax::Nice),
    limit("LimitNOFILE", "LimitNOFILESoft", libc::RLIMIT_NOFILE, false),
    limit("LimitNPROC", "LimitNPROCSoft", libc::RLIMIT_NPROC, false),
    limit("LimitCORE", "LimitCORESoft", libc::RLIMIT_CORE, true),
    limit("LimitAS", "LimitASSoft", libc::RLIMIT_AS, true),
    limit("LimitDATA", "LimitDATASoft", libc::RLIMIT_DATA, true),
    limit("LimitSTACK", "LimitSTACKSoft", libc::RLIMIT_STACK, true),
    limit("LimitFSIZE", "LimitFSIZESoft", libc::RLIMIT_FSIZE, true),
    limit("LimitMEMLOCK", "LimitMEMLOCKSoft", libc::RLIMIT_MEMLOCK, true),
    limit("LimitCPU", "LimitCPUSoft", libc::RLIMIT_CPU, false),
    spec("MemoryAccounting", Syntax::Bool),
    spec("CPUAccounting", Syntax::Bool),
    spec("IOAccounting", Syntax::Bool),
    spec("TasksAccounting", Syntax::Bool),
    spec("PrivateTmp", Syntax::Bool),
    spec("PrivateDevices", Syntax::Bool),
    spec("PrivateUsers", Syntax::Bool),
    spec("NoNewPrivileges", Syntax::Bool),
    spec("SendSIGKILL", Syntax::Bool),
    spec("KillSignal", Syntax::Signal),
];

/// The names `-p` accepts, for messages and documentation.
pub fn accepted_names() -> Vec<&'static str> {
    SPECS.iter().map(|s| s.name).collect()
}

/// A parsed `-p NAME=VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct UserProperty {
    /// As the user wrote the name.
    pub name: &'static str,
    pub properties: Vec<Property>,
    pub applies: Applies,
}

/// Where a property can take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// Resource control, kill and runtime settings: any systemd unit, service or scope.
    Unit,
    /// Execution settings systemd applies when it spawns a service's process.
    ServiceOnly,
    /// A setting of the process itself: phasebox applies it where systemd doesn't
    /// spawn the command (scope and unshare modes).
    Process(ProcessSetting),
    /// An execution setting turned off (`NoNewPrivileges=no`, `PrivateTmp=no`): it
    /// asks for nothing, so every mode honours it; a service still gets it as given.
    Nothing,
}

/// Parse one `-p NAME=VALUE`; errors name the property and say what was expected.
pub fn parse_assignment(text: &str) -> Result<UserProperty> {
    parse_given_as(text, &format!("-p {text}"))
}

/// The same, for a property the user gave as `shown` (a flag such as --memory-max).
pub fn parse_given_as(text: &str, shown: &str) -> Result<UserProperty> {
    let (name, value) = text.split_once('=').ok_or_else(|| anyhow!("{shown}: expected NAME=VALUE"))?;
    let spec = SPECS.iter().find(|s| s.name == name).ok_or_else(|| {
        anyhow!(
            "{shown}: unknown or unsupported property '{name}'; phasebox accepts: {}",
            accepted_names().join(", ")
        )
    })?;
    let properties = convert(spec, value)
        .with_context(|| format!("{shown}: bad value for {name}: {}", expectation(spec.syntax)))?;
    let applies = applies(spec, &properties);
    Ok(UserProperty { name: spec.name, properties, applies })
}

fn applies(spec: &Spec, properties: &[Property]) -> Applies {
    let value = |i: usize| match properties[i].value {
        PropValue::U64(v) => v,
        PropValue::I32(v) => v as u64,
        PropValue::Bool(v) => v as u64,
        _ => 0,
    };
    match (spec.syntax, spec.name) {
        (Syntax::Limit { resource, .. }, _) => {
            Applies::Process(ProcessSetting::Rlimit(Rlimit { resource, soft: value(1), hard: value(0) }))
        }
        (Syntax::Nice, _) => Applies::Process(ProcessSetting::Nice(value(0) as i32)),
        (_, "NoNewPrivileges" | "PrivateTmp" | "PrivateDevices" | "PrivateUsers") if value(0) == 0 => {
            Applies::Nothing
        }
        (_, "NoNewPrivileges") => Applies::Process(ProcessSetting::NoNewPrivileges),
        (_, "PrivateTmp" | "PrivateDevices" | "PrivateUsers") => Applies::ServiceOnly,
        _ => Applies::Unit,
    }
}

fn convert(spec: &Spec, value: &str) -> Result<Vec<Property>> {
    let one = |v| Ok(vec![prop(spec.dbus, v)]);
    match spec.syntax {
        Syntax::Memory | Syntax::Tasks if value.ends_with('%') => {
            one_scaled(spec.soft, syntax::percent_scale(value)?)
        }
        Syntax::Memory => one(PropValue::U64(syntax::size(value)?)),
        Syntax::Tasks if value == "infinity" => one(PropValue::U64(syntax::INFINITY)),
        Syntax::Tasks => one(PropValue::U64(syntax::integer(value, 1, u64::MAX - 1)?)),
        Syntax::CpuQuota => {
            let percent = syntax::percent(value)?;
            if percent <= 0.0 {
                bail!("must be above 0%");
            }
            one(PropValue::U64((percent * 10_000.0).round() as u64))
        }
        Syntax::Time => one(PropValue::U64(syntax::timespan_usec(value)?)),
        Syntax::Nice => one(PropValue::I32(syntax::signed(value, -20, 19)? as i32)),
        Syntax::Weight => one(PropValue::U64(syntax::integer(value, 1, 10_000)?)),
        Syntax::Bool => one(PropValue::Bool(syntax::boolean(value)?)),
        Syntax::Signal => one(PropValue::I32(syntax::signal(value)?)),
        Syntax::Limit { bytes, .. } => {
            let (soft, hard) = value.split_once(':').unwrap_or((value, value));
            let parse = |v: &str| if bytes { syntax::size(v) } else { limit_count(v) };
            let (soft, hard) = (parse(soft)?, parse(hard)?);
            if soft > hard {
                bail!("the soft limit is above the hard limit");
            }
            Ok(vec![prop(spec.dbus, PropValue::U64(hard)), prop(spec.soft, PropValue::U64(soft))])
        }
    }
}

fn one_scaled(name: &'static str, scale: u32) -> Result<Vec<Property>> {
    Ok(vec![prop(name, PropValue::U32(scale))])
}

fn limit_count(value: &str) -> Result<u64> {
    if value == "infinity" { Ok(syntax::INFINITY) } else { syntax::integer(value, 0, u64::MAX - 1) }
}

fn expectation(syntax: Syntax) -> &'static str {
    match syntax {
        Syntax::Memory => {
            "expected bytes with an optional K, M, G, T suffix (e.g. 2G), a percentage, or 'infinity'"
        }
        Syntax::CpuQuota => "expected a percentage of one CPU, e.g. 150%",
        Syntax::Tasks => "expected a number of tasks, a percentage, or 'infinity'",
        Syntax::Time => "expected a time span like 90, 90s, 1min 30s, 2h, or 'infinity'",
        Syntax::Nice => "expected a nice level from -20 to 19",
        Syntax::Weight => "expected a weight from 1 to 10000",
        Syntax::Limit { bytes: true, .. } => {
            "expected a size or SOFT:HARD sizes (e.g. 1G or 512M:1G), or 'infinity'"
        }
        Syntax::Limit { bytes: false, .. } => {
            "expected a number or SOFT:HARD numbers (e.g. 4096 or 1024:4096), or 'infinity'"
        }
        Syntax::Bool => "expected yes or no",
        Syntax::Signal => "expected a signal name or number, e.g. TERM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<Property> {
        parse_assignment(text).unwrap().properties
    }

    #[test]
    fn private_pids_is_a_string_as_systemd_257_wants() {
        assert_eq!(private_pids(true), prop("PrivatePIDs", PropValue::Str("yes".into())));
        assert_eq!(private_pids(true).signature(), "s");
    }

    #[test]
    fn typed_conversions() {
        assert_eq!(parsed("MemoryMax=2G"), [prop("MemoryMax", PropValue::U64(2 << 30))]);
        assert_eq!(parsed("MemoryHigh=50%"), [prop("MemoryHighScale", PropValue::U32(u32::MAX / 2 + 1))]);
        assert_eq!(parsed("CPUQuota=150%"), [prop("CPUQuotaPerSecUSec", PropValue::U64(1_500_000))]);
        assert_eq!(parsed("TasksMax=infinity"), [prop("TasksMax", PropValue::U64(u64::MAX))]);
        assert_eq!(parsed("RuntimeMaxSec=1min"), [prop("RuntimeMaxUSec", PropValue::U64(60_000_000))]);
        assert_eq!(parsed("Nice=-5"), [prop("Nice", PropValue::I32(-5))]);
        assert_eq!(parsed("KillSignal=INT"), [prop("KillSignal", PropValue::I32(2))]);
        assert_eq!(
            parsed("LimitNOFILE=1024:4096"),
            [prop("LimitNOFILE", PropValue::U64(4096)), prop("LimitNOFILESoft", PropValue::U64(1024))]
        );
        assert_eq!(
            parse_assignment("LimitNOFILE=10:20").unwrap().applies,
            Applies::Process(ProcessSetting::Rlimit(Rlimit {
                resource: libc::RLIMIT_NOFILE,
                soft: 10,
                hard: 20
            }))
        );
        assert_eq!(parse_assignment("Nice=-3").unwrap().applies, Applies::Process(ProcessSetting::Nice(-3)));
        assert_eq!(parse_assignment("PrivateTmp=yes").unwrap().applies, Applies::ServiceOnly);
        assert_eq!(parse_assignment("MemoryMax=1G").unwrap().applies, Applies::Unit);
        // Turned off, they ask for nothing: no mode has to refuse them.
        for off in ["NoNewPrivileges=no", "PrivateTmp=no", "PrivateDevices=false", "PrivateUsers=0"] {
            assert_eq!(parse_assignment(off).unwrap().applies, Applies::Nothing, "{off}");
        }
        assert_eq!(
            parse_assignment("NoNewPrivileges=yes").unwrap().applies,
            Applies::Process(ProcessSetting::NoNewPrivileges)
        );
    }

    #[test]
    fn errors_name_the_property_and_the_expected_form() {
        let err = format!("{:#}", parse_assignment("MemoryMax=lots").unwrap_err());
        assert!(err.contains("MemoryMax") && err.contains("expected bytes"), "{err}");
        let err = format!("{:#}", parse_assignment("Frobnicate=1").unwrap_err());
        assert!(
            err.contains("unknown or unsupported property 'Frobnicate'") && err.contains("MemoryMax"),
            "{err}"
        );
        let err = format!("{:#}", parse_assignment("MemoryMax").unwrap_err());
        assert!(err.contains("NAME=VALUE"), "{err}");
        for bad in
            ["Nice=20", "CPUWeight=0", "CPUQuota=0%", "LimitNOFILE=10:5", "User=root", "PrivateNetwork=no"]
        {
            assert!(parse_assignment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_user_property_has_a_signature() {
        for name in accepted_names() {
            let value = match name {
                n if n.starts_with("Limit") => "1",
                "CPUQuota" => "10%",
                "KillSignal" => "TERM",
                "Nice" => "1",
                n if n.ends_with("Sec") => "1s",
                n if n.contains("Accounting")
                    || n.starts_with("Private")
                    || n.starts_with("No")
                    || n.starts_with("Send") =>
                {
                    "yes"
                }
                _ => "1",
            };
            for p in parsed(&format!("{name}={value}")) {
                assert!(!p.signature().is_empty());
            }
        }
    }
}
