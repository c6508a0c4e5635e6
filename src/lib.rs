//! phasebox: run one build phase in a sandbox (a transient systemd unit where
//! systemd runs, namespaces alone where it does not) and kill what it leaves behind.
//!
//! The layers, each using only those below it:
//!   cli       the command line: flags, man page, completions
//!   cmd       one module per subcommand; the one place errors become statuses
//!   report    what phasebox tells the user at the end, and the --report record
//!   plan      pure decisions: the flags resolved, the mode, the isolations, the
//!             phase policy, the command's path
//!   launch    running a plan: a transient service, a scope, or namespaces alone
//!   phase     what runs inside: isolation, PID 1, the command, the inner mode
//!   protocol  what those processes tell each other: context, findings, messages
//!   systemd   the D-Bus client, its typed proxies, unit properties and names
//!   sys       system calls and /proc facts, behind a trait with a fake

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

pub mod cli;
pub mod cmd;
pub mod launch;
pub mod phase;
pub mod plan;
pub mod protocol;
pub mod report;
pub mod sys;
pub mod systemd;
