//! `phasebox run`: plan the phase, launch it, report how it went — each a step.

use crate::cli::RunArgs;
use crate::plan::Plan;
use crate::{backend, report};

pub fn run(args: RunArgs) -> u8 {
    let mut plan = match Plan::from_args(args) {
        Ok(plan) => plan,
        Err(failure) => return report::fail(&failure),
    };
    let pending = report::Pending::start(&mut plan);
    match backend::launch(plan) {
        (backend, Ok(outcome)) => pending.finish(backend, &outcome),
        (_, Err(failure)) => report::fail(&failure),
    }
}
