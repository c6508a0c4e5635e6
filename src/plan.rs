//! From the command line to a complete plan: which backend and why, which
//! isolations, which properties, and the caller's context. Everything that can be
//! refused is refused here, before anything starts.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use anyhow::{Context, anyhow};

use crate::cli::{ModeArg, RunArgs};
use crate::command_path;
use crate::context::{Caller, CallerContext, Expected, apply_setenv};
use crate::exit::Failure;
use crate::mode::{self, Backend, Situation};
use crate::namespaces::{Kind, NsId, Set};
use crate::policy::{Decision, PhaseRun, Sharing};
use crate::systemd::properties::{Applies, ProcessSetting, Property, parse_given_as};
use crate::systemd::{Manager, unit_name};

pub struct Plan {
    pub backend: Backend,
    /// `--mode auto` chose the backend: it may still fall back to unshare when
    /// systemd turns out unreachable.
    pub auto: bool,
    pub reason: String,
    /// The isolations asked for.
    pub wanted: Set,
    /// The unit's name without its type suffix.
    pub unit_stem: String,
    pub slice: String,
    pub description: String,
    /// Properties from -p that systemd applies, in order.
    pub unit_properties: Vec<Property>,
    pub user_sets_timeout_stop: bool,
    /// Settings of -p that phasebox applies itself when systemd doesn't spawn the command.
    pub process_settings: Vec<ProcessSetting>,
    pub context: CallerContext,
    /// --timeout: systemd enforces it in service mode, phasebox in the others.
    pub timeout: Option<std::time::Duration>,
    /// --report: the file the phase's record is appended to, opened before it runs.
    pub report: Option<std::fs::File>,
    /// `--phase`: what the policy decided, shown by -v.
    pub phase: Option<PhaseRun>,
    pub verbose: bool,
}

impl Plan {
    pub fn from_args(args: RunArgs) -> Result<Plan, Failure> {
        let manager = if args.user {
            Manager::User
        } else if args.system || nix::unistd::geteuid().is_root() {
            Manager::System
        } else {
            Manager::User
        };
        let phase = match &args.phase {
            Some(given) => Some(PhaseRun::resolve(given, &args.policy)?),
            None => None,
        };
        let (backend, reason) = match (&phase, args.mode) {
            (Some(run), _) if !run.decision.confine => (Backend::Unconfined, unconfined_reason(run)),
            (_, ModeArg::Auto) => mode::choose(manager, &Situation::of_this_host(manager, args.keep_fds)),
            (_, ModeArg::Service) if args.keep_fds => {
                return Err(anyhow!(
                    "--keep-fds needs --mode scope or unshare: a service gets only descriptors 0-2"
                )
                .into());
            }
            (_, ModeArg::Service) => (Backend::Service(manager), "--mode service".into()),
            (_, ModeArg::Scope) => (Backend::Scope(manager), "--mode scope".into()),
            (_, ModeArg::Unshare) => (Backend::Unshare, "--mode unshare".into()),
        };
        if backend == Backend::Service(Manager::System) && !nix::unistd::geteuid().is_root() {
            // The system manager would run the command as root: no way to gain that here.
            return Err(anyhow!(
                "a service of the system manager would run the command as root, and you are not root; \
                 leave out --system (your user manager runs it as you), or use --mode scope"
            )
            .into());
        }
        let wanted = match backend {
            Backend::Unconfined => Set::default(),
            _ => wanted_isolations(&args, phase.as_ref().map(|run| &run.decision), backend),
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
                // systemd would stop a scope from outside, unseen: there phasebox times
                // the phase itself, as it stops it on SIGTERM.
                if matches!(backend, Backend::Service(_)) {
                    assignments.push((format!("RuntimeMaxSec={value}"), format!("--timeout {value}")));
                }
                Some(std::time::Duration::from_micros(usec))
            }
            None => None,
        };
        let report =
            match &args.report {
                Some(path) => {
                    Some(std::fs::OpenOptions::new().append(true).create(true).open(path).with_context(
                        || format!("--report {}: cannot open it for appending", path.display()),
                    )?)
                }
                None => None,
            };

        let mut unit_properties = Vec::new();
        let mut process_settings = Vec::new();
        let mut user_sets_timeout_stop = false;
        for (text, shown) in &assignments {
            let parsed = parse_given_as(text, shown)?;
            user_sets_timeout_stop |= parsed.name == "TimeoutStopSec";
            match (parsed.applies, backend) {
                // Nothing of a sandbox applies to a phase the policy leaves alone.
                (_, Backend::Unconfined) => {}
                (_, Backend::Service(_)) => {
                    if let Applies::Process(setting) = parsed.applies {
                        process_settings.push(setting);
                    }
                    unit_properties.extend(parsed.properties);
                }
                (Applies::Process(setting), _) => process_settings.push(setting),
                (Applies::Unit, Backend::Scope(_)) => unit_properties.extend(parsed.properties),
                (Applies::ServiceOnly, _) => {
                    return Err(anyhow!(
                        "{shown}: only a service can apply {}, and this phase runs in {} mode ({reason}); \
                         use --mode service",
                        parsed.name,
                        backend.name()
                    )
                    .into());
                }
                (Applies::Unit, Backend::Unshare) => {
                    return Err(anyhow!(
                        "{shown}: {} needs systemd (service or scope mode), and this phase runs in \
                         unshare mode ({reason})",
                        parsed.name
                    )
                    .into());
                }
            }
        }

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
        if matches!(backend, Backend::Service(_)) {
            // systemd sets these limits from -p; the caller's must not undo them.
            caller.rlimits.retain(|r| {
                !process_settings
                    .iter()
                    .any(|s| matches!(s, ProcessSetting::Rlimit(l) if l.resource == r.resource))
            });
        }

        let mut expected = Vec::new();
        // A PID namespace is verified by its PID 1, which must be PID 1 in it.
        for kind in wanted.kinds().filter(|&kind| kind != Kind::Pid) {
            let launcher_ns = NsId::of_self(kind).context("reading phasebox's own namespaces")?;
            expected.push(Expected { kind, launcher_ns });
        }
        let description = match (&args.description, &phase) {
            (Some(text), _) => text.clone(),
            (None, Some(run)) => run.description(),
            (None, None) => describe(&args.command),
        };
        let context = CallerContext {
            program,
            argv: args.command,
            caller,
            expected,
            unshare: Set::default(),
            loopback_addresses: false,
            best_effort: args.best_effort,
            quiet: args.quiet,
            findings_path: Default::default(),
            launcher: Default::default(),
        };
        Ok(Plan {
            backend,
            auto: args.mode == ModeArg::Auto,
            reason,
            wanted,
            unit_stem,
            slice: args.slice,
            description,
            unit_properties,
            user_sets_timeout_stop,
            process_settings,
            context,
            timeout,
            report,
            phase,
            verbose: args.verbose,
        })
    }

    /// Say which backend runs the phase and why (-v).
    pub fn announce(&self) {
        if self.verbose {
            let kinds: Vec<_> = self.wanted.kinds().map(Kind::describe).collect();
            if let Some(run) = &self.phase {
                let d = &run.decision;
                let package = run.package.as_ref().map_or(String::new(), |p| format!(" of {p}"));
                let changed =
                    if d.notes.is_empty() { String::new() } else { format!(" ({})", d.notes.join("; ")) };
                eprintln!(
                    "phasebox: policy for the {} phase{package}: network {}, ipc {}, pid {}{changed}",
                    run.phase, d.network, d.ipc, d.pid
                );
            }
            eprintln!("phasebox: {} mode: {}", self.backend.name(), self.reason);
            eprintln!(
                "phasebox: isolations: {}",
                if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") }
            );
        }
    }
}

/// The isolations asked for: the phase policy's (or, without --phase, its default),
/// then the switches.
fn wanted_isolations(args: &RunArgs, decision: Option<&Decision>, backend: Backend) -> Set {
    let Set { network, ipc, pid, .. } = default_isolations(decision, backend);
    let switch = |on: bool, off: bool, default: bool| {
        if on {
            true
        } else if off {
            false
        } else {
            default
        }
    };
    let network = switch(args.network, args.no_network, network);
    Set {
        network,
        uts: network,
        ipc: switch(args.ipc, args.no_ipc, ipc),
        pid: switch(args.pid, args.no_pid, pid),
    }
}

/// The isolations a confined phase gets without switches: the phase policy's, or
/// without --phase all but a PID namespace in service mode. (`doctor` shows these.)
pub fn default_isolations(decision: Option<&Decision>, backend: Backend) -> Set {
    let private = |sharing: Sharing| sharing == Sharing::Private;
    let (network, ipc, pid) = match decision {
        Some(d) => (private(d.network), private(d.ipc), private(d.pid)),
        None => (true, true, !matches!(backend, Backend::Service(_))),
    };
    Set { network, uts: network, ipc, pid }
}

pub fn unconfined_reason(run: &PhaseRun) -> String {
    match run.decision.notes.iter().find(|n| n.starts_with("confine:")) {
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

    fn wanted(argv: &[&str], backend: Backend) -> Set {
        let cli =
            crate::cli::Cli::try_parse_from(["phasebox", "run"].iter().chain(argv).chain(&["true"])).unwrap();
        let crate::cli::Command::Run(crate::cli::Deferred(args)) = cli.command else { panic!("not run") };
        let phase = args.phase.as_deref().map(|p| PhaseRun::resolve(p, &args.policy).unwrap());
        wanted_isolations(&args, phase.as_ref().map(|run| &run.decision), backend)
    }

    #[test]
    fn switches_override_the_phase_policy() {
        let all = Set { network: true, uts: true, ipc: true, pid: true };
        assert_eq!(wanted(&[], Backend::Unshare), all);
        assert_eq!(wanted(&[], Backend::Service(Manager::System)), Set { pid: false, ..all });
        let test = ["--config", "/dev/null", "--phase", "src_test"];
        assert_eq!(wanted(&test, Backend::Service(Manager::System)), all);
        assert_eq!(
            wanted(&[&test[..], &["--no-network", "--no-pid"]].concat(), Backend::Unshare),
            Set { network: false, uts: false, ..Set { pid: false, ..all } }
        );
        let setup = ["--config", "/dev/null", "--phase", "setup"];
        assert_eq!(wanted(&setup, Backend::Unshare), Set { pid: true, ..Set::default() });
        assert_eq!(wanted(&[&setup[..], &["--network", "--ipc"]].concat(), Backend::Unshare), all);
        let live = ["--config", "/dev/null", "--properties", "live", "--phase", "unpack"];
        assert_eq!(wanted(&live, Backend::Unshare), Set { network: false, uts: false, ..all });
    }

    #[test]
    fn descriptions_are_one_readable_line() {
        let d = describe(&["sh".into(), "-c".into(), "a\nb".into(), OsString::from_vec(vec![0xff])]);
        assert_eq!(d, "phasebox: sh -c a b \u{fffd}");
        let long = describe(&["x".repeat(500).into()]);
        assert!(long.chars().count() <= 202);
    }
}
