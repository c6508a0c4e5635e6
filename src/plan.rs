//! From the command line to a complete plan. `Settings` are the flags checked and
//! resolved once; `mode::decide` picks the backend from them and the host; `Plan`
//! is what the chosen backend needs. Everything that can be refused is refused
//! before anything starts, and before anything is written.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{ModeArg, RunArgs};
use crate::command_path;
use crate::context::{Caller, CallerContext, Expected, Setting, apply_setenv};
use crate::exit::Failure;
use crate::mode::{self, Asked, Backend, Lost, Mode, Reach, Request, Why};
use crate::namespaces::{Kind, NsId, Set};
use crate::policy::{Field, PhaseRun};
use crate::systemd::properties::{Applies, PropValue, Property, UserProperty, parse_given_as};
use crate::systemd::{Manager, unit_name};

/// The flags of `run`, checked and resolved: nothing here depends on the backend.
pub struct Settings {
    pub mode: ModeArg,
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
    pub fn resolve(args: RunArgs) -> Result<Settings, Failure> {
        let root = nix::unistd::geteuid().is_root();
        let manager = if args.user {
            Manager::User
        } else if args.system || root {
            Manager::System
        } else {
            Manager::User
        };
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
                let usec = crate::value_syntax::timespan_usec(value).with_context(|| {
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
        let switch = |on: bool, off: bool| {
            if on {
                Some(true)
            } else if off {
                Some(false)
            } else {
                None
            }
        };
        let reach = Reach::of_host(manager);
        let lost =
            if args.mode == ModeArg::Auto && reach.usable() { Lost::of_this_caller(manager) } else { None };
        Ok(Settings {
            mode: args.mode,
            manager,
            keep_fds: args.keep_fds,
            phase,
            network: switch(args.network, args.no_network),
            ipc: switch(args.ipc, args.no_ipc),
            pid: switch(args.pid, args.no_pid),
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
        Plan::new(self, mode, reach)
    }
}

pub struct Plan {
    pub backend: Backend,
    /// `--mode auto` chose the backend: it falls back to unshare mode when systemd
    /// turns out not to answer.
    pub auto: bool,
    pub why: Why,
    /// The bus the backend was chosen for.
    pub bus: Option<String>,
    /// The isolations asked for.
    pub wanted: Set,
    /// The unit's name without its type suffix.
    pub unit_stem: String,
    pub slice: String,
    pub description: String,
    /// Properties from -p that systemd applies, in order.
    pub unit_properties: Vec<Property>,
    pub user_sets_timeout_stop: bool,
    pub context: CallerContext,
    /// --timeout: systemd enforces it in service mode, phasebox in the others.
    pub timeout: Option<Duration>,
    /// The service's RuntimeMaxSec= (--timeout or -p): systemd's Result "timeout"
    /// means this limit only when the phase ran that long; else a stop took long.
    pub runtime_max: Option<Duration>,
    /// `--phase`: what the policy decided, shown by -v.
    pub phase: Option<PhaseRun>,
    pub verbose: bool,
}

impl Plan {
    fn new(settings: &Settings, mode: Mode, reach: &Reach) -> Result<Plan, Failure> {
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
            if let (
                Backend::Service(_),
                Some(Property { name: "RuntimeMaxUSec", value: PropValue::U64(usec) }),
            ) = (backend, parsed.properties.first())
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
            findings_path: Default::default(),
            channel: Default::default(),
            launcher: Default::default(),
        };
        Ok(Plan {
            backend,
            auto: settings.mode == ModeArg::Auto,
            why,
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
            phase: settings.phase.clone(),
            verbose: settings.verbose,
        })
    }

    /// Say which backend runs the phase and why (-v): once it is certain, that is
    /// for a service or scope once systemd has answered.
    pub fn announce(&self) {
        if self.verbose {
            let kinds: Vec<_> = self.wanted.kinds().map(Kind::describe).collect();
            if let Some(run) = &self.phase {
                let d = &run.decision;
                let package = run.package.as_ref().map_or(String::new(), |p| format!(" of {p}"));
                let changed =
                    if d.notes.is_empty() { String::new() } else { format!(" ({})", d.notes_text()) };
                crate::notice!(
                    "phasebox: policy for the {} phase{package}: network {}, ipc {}, pid {}{changed}",
                    run.phase,
                    d.network,
                    d.ipc,
                    d.pid
                );
            }
            crate::notice!("phasebox: {} mode: {}", self.backend.name(), self.why);
            crate::notice!(
                "phasebox: isolations: {}",
                if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") }
            );
        }
    }
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
    use clap::Parser;
    use std::os::unix::ffi::OsStringExt;

    fn wanted(argv: &[&str], reach: &Reach) -> Set {
        let cli =
            crate::cli::Cli::try_parse_from(["phasebox", "run"].iter().chain(argv).chain(&["true"])).unwrap();
        let crate::cli::Command::Run(crate::cli::Deferred(args)) = cli.command else { panic!("not run") };
        Settings::resolve(*args).unwrap().plan(reach).unwrap().wanted
    }

    #[test]
    fn switches_override_the_phase_policy() {
        let found = Reach::Found("/run/dbus/system_bus_socket".into());
        let all = Set::all();
        assert_eq!(wanted(&["--mode", "unshare"], &found), all);
        assert_eq!(wanted(&["--mode", "service"], &found), Set { pid: false, ..all });
        let test = ["--mode", "service", "--config", "/dev/null", "--phase", "src_test"];
        assert_eq!(wanted(&test, &found), all);
        let unshare = ["--mode", "unshare", "--config", "/dev/null"];
        assert_eq!(
            wanted(&[&unshare[..], &["--phase", "test", "--no-network", "--no-pid"]].concat(), &found),
            Set { network: false, uts: false, ..Set { pid: false, ..all } }
        );
        let setup = [&unshare[..], &["--phase", "setup"]].concat();
        assert_eq!(wanted(&setup, &found), Set { pid: true, ..Set::default() });
        assert_eq!(wanted(&[&setup[..], &["--network", "--ipc"]].concat(), &found), all);
        let live = [&unshare[..], &["--properties", "live", "--phase", "unpack"]].concat();
        assert_eq!(wanted(&live, &found), Set { network: false, uts: false, ..all });
    }

    #[test]
    fn descriptions_are_one_readable_line() {
        let d = describe(&["sh".into(), "-c".into(), "a\nb".into(), OsString::from_vec(vec![0xff])]);
        assert_eq!(d, "phasebox: sh -c a b \u{fffd}");
        let long = describe(&["x".repeat(500).into()]);
        assert!(long.chars().count() <= 202);
    }
}
