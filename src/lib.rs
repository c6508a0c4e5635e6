//! phasebox: run one build phase in a sandbox (a transient systemd unit where
//! systemd runs, namespaces alone where it does not) and kill what it leaves behind.
//!
//! Data flows one way: argv (`cli`) → plan (`plan`) → backend (`backend`) →
//! status (`exit`) → report (`report`). The inner mode (`inner`) is phasebox
//! running inside the unit to restore the caller's context.

/// A line for the user on stderr. Errors are ignored: a notice must never change
/// phasebox's status or lose the report (with stderr unwritable, eprintln!
/// panicked, and phasebox exited 125).
#[macro_export]
macro_rules! notice {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The output a subcommand prints on stdout; a closed stdout is ignored likewise.
#[macro_export]
macro_rules! output {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

pub mod backend;
pub mod cli;
pub mod command_path;
pub mod context;
pub mod doctor;
pub mod exec;
pub mod exit;
pub mod findings;
pub mod generate;
pub mod host;
pub mod inner;
pub mod message;
pub mod mode;
pub mod namespaces;
pub mod orphans;
pub mod plan;
pub mod policy;
pub mod ps;
pub mod report;
pub mod run;
pub mod running;
pub mod runtime_dir;
pub mod sandbox;
pub mod startup;
pub mod stop;
pub mod supervise;
pub mod systemd;
pub mod terminal_guard;
pub mod usage;
pub mod value_syntax;
pub mod watchdog;
mod wire;
