//! The subcommands, one module each, run by the process the caller started; and
//! the one place where how a subcommand ended becomes phasebox's exit status.

pub mod doctor;
pub mod policy;
pub mod ps;
pub mod report;
pub mod run;
pub mod running;
pub mod stop;

use std::path::PathBuf;

use crate::plan::Flags;
use crate::plan::policy::Inputs;
use crate::protocol::status::Failure;

/// A subcommand with its settings, as the command line gave them.
pub enum Subcommand {
    Run(Box<Flags>),
    Policy(Inputs),
    Report(PathBuf),
    Ps,
    Stop(Vec<String>),
    Doctor {
        json: bool,
        policy: Inputs,
    },
    /// The unit's ExecStart in service mode, with the launcher's socket.
    Inner(PathBuf),
}

/// Run a subcommand; its exit status. A failure is phasebox's own (125, or the
/// status the failure carries: 126/127 for a command that can't run, 1 where a
/// subcommand documents it), said in one line.
pub fn main(subcommand: Subcommand) -> u8 {
    let ended: Result<u8, Failure> = match subcommand {
        Subcommand::Run(flags) => run::run(*flags),
        Subcommand::Policy(inputs) => policy::print(&inputs).map(|()| 0).map_err(Failure::from),
        Subcommand::Report(file) => report::print(&file).map(|()| 0).map_err(Failure::from),
        Subcommand::Ps => ps::print().map_err(Failure::from),
        Subcommand::Stop(targets) => {
            stop::stop(&targets).map(|()| 0).map_err(|e| Failure::new(stop::FAILED, e))
        }
        Subcommand::Doctor { json, policy } => doctor::main(json, &policy).map_err(Failure::from),
        Subcommand::Inner(context) => Ok(crate::phase::inner::main(&context)),
    };
    ended.unwrap_or_else(|failure| fail(&failure))
}

/// Say why phasebox failed; the status it exits with.
pub fn fail(failure: &Failure) -> u8 {
    crate::notice!("phasebox: {failure}");
    failure.code
}
