//! From the command line to a complete plan. `Settings` are the flags checked and
//! resolved once; `mode::decide` picks the backend from them and the host; `Plan`
//! is what the chosen backend needs. Everything that can be refused is refused
//! before anything starts, and before anything is written.

pub mod command_path;
pub mod mode;
pub mod policy;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::plan::policy::{Field, PhaseRun};
use crate::protocol::context::{Caller, CallerContext, Expected, Setting, apply_setenv};
use crate::protocol::status::Failure;
use crate::sys::namespaces::{Kind, NsId, Set};
use crate::systemd::properties::{Applies, PropValue, Property, UserProperty, parse_given_as};
use crate::systemd::{Manager, unit_name};
use mode::{Asked, Backend, Choice, Lost, Mode, Reach, Request};

use crate::launch::Plan;

/// The flags of `run` as the command line gave them: the cli layer fills them in,
/// and nothing below it sees clap's types.
#[derive(Debug, Default)]
pub struct Flags {
    /// -p NAME=VALUE, in order.
    pub properties: Vec<String>,
    pub memory_max: Option<String>,
    pub cpu_quota: Option<String>,
    pub tasks_max: Option<String>,
    pub timeout: Option<String>,
    pub report: Option<PathBuf>,
    pub unit: Option<String>,
    pub slice: String,
    pub description: Option<String>,
    /// -E NAME[=VALUE], in order.
    pub setenv: Vec<OsString>,
    pub mode: Choice,
    pub keep_fds: bool,
    pub phase: Option<String>,
    pub policy: policy::Inputs,
    /// --network / --no-network, --ipc / --no-ipc, --pid / --no-pid, if given.
    pub network: Option<bool>,
    pub ipc: Option<bool>,
    pub pid: Option<bool>,
    /// --user or --system, if given.
    pub manager: Option<Manager>,
    pub best_effort: bool,
    pub quiet: bool,
    pub verbose: bool,
    pub command: Vec<OsString>,
}

/// The flags of `run`, checked and resolved: nothing here depends on the backend.
pub struct Settings {
    pub mode: Choice,
    pub manager: Manager,
    pub keep_fds: bool,
    /// `--phase`: what the policy decided.
    pub phase: Option<PhaseRun>,
    network: Option<bool>,
    ipc: Option<bool>,
    pid: Option<bool>,
    /// Every -p and limit flag, parsed, with how the user gave it.
    properties: Vec<(UserProperty, String)>,
    /// --timeout as given, and as a duration.
    timeout: Option<(String, Duration)>,
    /// What is known of the manager's bus before connecting to it.
    pub reach: Reach,
    /// What a service would lose of the caller's state (looked at only when
    /// `--mode auto` could pick a service).
    lost: Option<Lost>,
    pub unit_stem: String,
    pub slice: String,
    pub description: String,
    program: OsString,
    argv: Vec<OsString>,
    caller: Caller,
    best_effort: bool,
    pub quiet: bool,
    pub verbose: bool,
    /// --report: opened only once everything else was checked.
    pub report: Option<PathBuf>,
}

impl Settings {
    pub fn resolve(args: Flags) -> Result<Settings, Failure> {
        let root = nix::unistd::geteuid().is_root();
        let manager = args.manager.unwrap_or(if root { Manager::System } else { Manager::User });
        let phase = match &args.phase {
            Some(given) => Some(PhaseRun::resolve(given, &args.policy)?),
            None => None,
        };
        // The limit flags are properties too, checked and refused the same way.
        let mut assignments: Vec<(String, String)> =
            args.properties.iter().map(|text| (text.clone(), format!("-p {text}"))).collect();
        for (flag, property, value) in [
            ("--memory-max", "MemoryMax", &args.memory_max),
            ("--cpu-quota", "CPUQuota", &args.cpu_quota),
            ("--tasks-max", "TasksMax", &args.tasks_max),
        ] {
            if let Some(value) = value {
                assignments.push((format!("{property}={value}"), format!("{flag} {value}")));
            }
        }
        let timeout = match &args.timeout {
            Some(value) => {
                let usec = crate::systemd::value_syntax::timespan_usec(value).with_context(|| {
                    format!("--timeout {value}: not a duration (like 90, 30min, 1h 30min)")
                })?;
                Some((value.clone(), Duration::from_micros(usec)))
            }
            None => None,
        };
        let properties = assignments
            .iter()
            .map(|(text, shown)| Ok((parse_given_as(text, shown)?, shown.clone())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let unit_stem = match (&args.unit, &phase) {
            (Some(name), _) => unit_name::stem(name)?,
            (None, Some(run)) => unit_name::phase_stem(
                run.package.as_ref().map(|p| (p.category.as_str(), p.pf.as_str())),
                run.phase,
            ),
            (None, None) => unit_name::random_stem(),
        };
        let mut caller = Caller::capture()?;
        apply_setenv(&mut caller.env, &args.setenv)?;
        let program = command_path::resolve(&args.command[0], &caller.env, &caller.cwd)?;
        let description = match (&args.description, &phase) {
            (Some(text), _) => text.clone(),
            (None, Some(run)) => run.description(),
            (None, None) => describe(&args.command),
        };
        let reach = Reach::of_host(manager);
        let lost =
            if args.mode == Choice::Auto && reach.usable() { Lost::of_this_caller(manager) } else { None };
        Ok(Settings {
            mode: args.mode,
            manager,
            keep_fds: args.keep_fds,
            phase,
            network: args.network,
            ipc: args.ipc,
            pid: args.pid,
            properties,
            timeout,
            reach,
            lost,
            unit_stem,
            slice: args.slice,
            description,
            program,
            argv: args.command,
            caller,
            best_effort: args.best_effort,
            quiet: args.quiet,
            verbose: args.verbose,
            report: args.report,
        })
    }

    /// What `mode::decide` decides on, besides the bus.
    pub fn request(&self) -> Request<'_> {
        let first = |applies: fn(&Applies) -> bool| {
            self.properties
                .iter()
                .find(|(p, _)| applies(&p.applies))
                .map(|(p, shown)| Asked { shown: shown.clone(), property: p.name })
        };
        Request {
            mode: self.mode,
            manager: self.manager,
            root: nix::unistd::geteuid().is_root(),
            keep_fds: self.keep_fds,
            lost: self.lost,
            policy: self.phase.as_ref().map(|run| (&run.decision, unconfined_reason(run))),
            network: self.network,
            ipc: self.ipc,
            pid: self.pid,
            needs_systemd: first(|a| matches!(a, Applies::Unit)),
            needs_service: first(|a| matches!(a, Applies::ServiceOnly)),
        }
    }

    /// Decide the mode for what is known of the bus, and plan for it.
    pub fn plan(&self, reach: &Reach) -> Result<Plan, Failure> {
        let mode = mode::decide(&self.request(), reach).map_err(anyhow::Error::new)?;
        launch_plan(self, mode, reach)
    }
}

/// What the launch of a decided mode needs.
fn launch_plan(settings: &Settings, mode: Mode, reach: &Reach) -> Result<Plan, Failure> {
    let Mode { backend, why, isolations: wanted } = mode;
    let mut unit_properties = Vec::new();
    let mut process = Vec::new();
    let mut user_sets_timeout_stop = false;
    let mut runtime_max = None;
    let timeout_property = match (&settings.timeout, backend) {
        // systemd would stop a scope from outside, unseen: there phasebox times the
        // phase itself, as it stops it on SIGTERM.
        (Some((value, _)), Backend::Service(_)) => Some((
            parse_given_as(&format!("RuntimeMaxSec={value}"), &format!("--timeout {value}"))?,
            String::new(),
        )),
        _ => None,
    };
    for (parsed, shown) in settings.properties.iter().chain(&timeout_property) {
        user_sets_timeout_stop |= parsed.name == "TimeoutStopSec";
        // `mode::decide` refused what the backend can't apply. Settings of the
        // command's process are phasebox's to apply, in every mode.
        if let (Backend::Service(_), Some(Property { name: "RuntimeMaxUSec", value: PropValue::U64(usec) })) =
            (backend, parsed.properties.first())
        {
            runtime_max = Some(Duration::from_micros(*usec));
        }
        match (&parsed.applies, backend) {
            (_, Backend::Unconfined) => {}
            (Applies::Process(setting), _) => {
                process.push(Setting { setting: *setting, shown: shown.clone() })
            }
            // What asks for nothing a service still gets as given.
            (_, Backend::Service(_)) | (Applies::Unit, Backend::Scope(_)) => {
                unit_properties.extend(parsed.properties.iter().cloned())
            }
            (Applies::Nothing, _) => {}
            (Applies::Unit | Applies::ServiceOnly, _) => {
                unreachable!("mode::decide refuses {} in {} mode", parsed.name, backend.name())
            }
        }
    }
    let mut expected = Vec::new();
    // A PID namespace is verified by its PID 1, which must be PID 1 in it.
    for kind in wanted.kinds().filter(|&kind| kind != Kind::Pid) {
        let launcher_ns = NsId::of_self(kind).context("reading phasebox's own namespaces")?;
        expected.push(Expected { kind, launcher_ns });
    }
    let context = CallerContext {
        program: settings.program.clone(),
        argv: settings.argv.clone(),
        caller: settings.caller.clone(),
        expected,
        unshare: Set::default(),
        settings: process,
        loopback_addresses: false,
        best_effort: settings.best_effort,
        quiet: settings.quiet,
        pid1_by_systemd: false,
        launcher: Default::default(),
    };
    Ok(Plan {
        backend,
        auto: settings.mode == Choice::Auto,
        why: why.to_string(),
        bus: reach.bus().map(str::to_string),
        wanted,
        unit_stem: settings.unit_stem.clone(),
        slice: settings.slice.clone(),
        description: settings.description.clone(),
        unit_properties,
        user_sets_timeout_stop,
        context,
        timeout: settings.timeout.as_ref().map(|(_, duration)| *duration),
        runtime_max,
        phase: settings.phase.as_ref().map(|run| run.phase),
        package: settings.phase.as_ref().and_then(|run| run.package.as_ref()).map(ToString::to_string),
        policy_line: settings.phase.as_ref().map(policy_line),
        verbose: settings.verbose,
    })
}

/// -v's line on the phase policy: what it decided, and what changed it.
fn policy_line(run: &PhaseRun) -> String {
    let d = &run.decision;
    let package = run.package.as_ref().map_or(String::new(), |p| format!(" of {p}"));
    let changed = if d.notes.is_empty() { String::new() } else { format!(" ({})", d.notes_text()) };
    format!(
        "policy for the {} phase{package}: network {}, ipc {}, pid {}{changed}",
        run.phase, d.network, d.ipc, d.pid
    )
}

pub fn unconfined_reason(run: &PhaseRun) -> String {
    match run.decision.notes.iter().find(|n| n.field == Field::Confine) {
        Some(note) => format!("the {} phase is not confined ({note})", run.phase),
        None => format!(
            "the {} phase is not confined: like portage, phasebox leaves it in the host's namespaces, \
             where daemons it (re)starts must keep running",
            run.phase
        ),
    }
}

/// A readable one-line description: the command line, shortened.
fn describe(command: &[OsString]) -> String {
    let mut text = String::from("phasebox:");
    for arg in command {
        text.push(' ');
        text.push_str(&String::from_utf8_lossy(arg.as_bytes()));
        if text.len() > 200 {
            text.truncate(200);
            text.push('…');
            break;
        }
    }
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn descriptions_are_one_readable_line() {
        let d = describe(&["sh".into(), "-c".into(), "a\nb".into(), OsString::from_vec(vec![0xff])]);
        assert_eq!(d, "phasebox: sh -c a b \u{fffd}");
        let long = describe(&["x".repeat(500).into()]);
        assert!(long.chars().count() <= 202);
    }
}
