//! From the command line to a complete plan: which manager, which unit, which
//! properties, and the caller's context to restore. Everything that can be refused
//! is refused here, before anything starts.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use anyhow::Context;

use crate::cli::RunArgs;
use crate::command_path;
use crate::context::{Caller, CallerContext, Expected, apply_setenv};
use crate::exit::Failure;
use crate::namespaces::{Kind, NsId};
use crate::runtime_dir::RunFiles;
use crate::systemd::properties::{self, Property, parse_assignment};
use crate::systemd::{Manager, unit_name};

/// Default grace period between SIGTERM and SIGKILL for what a phase leaves behind:
/// short, so an orphan that ignores SIGTERM can't hold the caller for systemd's 90 s.
pub const DEFAULT_TIMEOUT_STOP_USEC: u64 = 5_000_000;

pub struct Plan {
    pub manager: Manager,
    pub unit: String,
    pub slice: String,
    pub description: String,
    /// Properties from -p, already converted; they come after phasebox's defaults.
    pub user_properties: Vec<Property>,
    pub user_sets_timeout_stop: bool,
    pub context: CallerContext,
    pub files: RunFiles,
    pub verbose: bool,
}

impl Plan {
    pub fn from_args(args: RunArgs) -> Result<Plan, Failure> {
        let mut user_properties = Vec::new();
        let mut overridden_rlimits = Vec::new();
        let mut user_sets_timeout_stop = false;
        for text in &args.properties {
            let parsed = parse_assignment(text)?;
            overridden_rlimits.extend(parsed.rlimit);
            user_sets_timeout_stop |= parsed.name == "TimeoutStopSec";
            user_properties.extend(parsed.properties);
        }

        let manager = if args.user {
            Manager::User
        } else if args.system || nix::unistd::geteuid().is_root() {
            Manager::System
        } else {
            Manager::User
        };
        let unit = match &args.unit {
            Some(name) => unit_name::service_name(name)?,
            None => unit_name::random_service_name(),
        };

        let mut caller = Caller::capture()?;
        apply_setenv(&mut caller.env, &args.setenv)?;
        let program = command_path::resolve(&args.command[0], &caller.env, &caller.cwd)?;
        caller.rlimits.retain(|r| !overridden_rlimits.contains(&r.resource));

        let mut expected = Vec::new();
        for kind in Kind::ALL {
            let launcher_ns = NsId::of_self(kind).context("reading phasebox's own namespaces")?;
            expected.push(Expected { kind, launcher_ns });
        }

        let files = RunFiles::paths(manager, &unit)?;
        let description = args.description.clone().unwrap_or_else(|| describe(&args.command));
        let context = CallerContext {
            program,
            argv: args.command,
            caller,
            expected,
            best_effort: args.best_effort,
            quiet: args.quiet,
            findings_path: files.findings.clone(),
        };
        Ok(Plan {
            manager,
            unit,
            slice: args.slice,
            description,
            user_properties,
            user_sets_timeout_stop,
            context,
            files,
            verbose: args.verbose,
        })
    }

    /// The isolation and lifecycle properties phasebox always sends, then the user's.
    pub fn unit_properties(&self, exec_path: &str, stdio: [i32; 3]) -> Vec<Property> {
        let context_arg = self.files.context.to_string_lossy().into_owned();
        let mut list = vec![
            properties::description(&self.description),
            properties::slice(&self.slice),
            properties::service_type_simple(),
            properties::exec_start(exec_path, vec!["phasebox".into(), "__inner".into(), context_arg]),
            properties::private_network(true),
            properties::private_ipc(true),
            properties::kill_mode_control_group(),
            properties::add_ref(),
            properties::collect_inactive_or_failed(),
            properties::stdin_fd(stdio[0]),
            properties::stdout_fd(stdio[1]),
            properties::stderr_fd(stdio[2]),
        ];
        if self.manager == Manager::User {
            // A user manager can only create a network namespace inside a user namespace.
            list.push(properties::private_users(true));
        }
        if !self.user_sets_timeout_stop {
            list.push(properties::timeout_stop_usec(DEFAULT_TIMEOUT_STOP_USEC));
        }
        list.extend(self.user_properties.iter().cloned());
        list
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
