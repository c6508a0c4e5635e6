//! What phasebox tells the user at the end, and the status it exits with.

use crate::backend::Outcome;
use crate::exit::Failure;

pub fn finish(outcome: &Outcome, quiet: bool) -> u8 {
    if !quiet {
        for orphan in &outcome.orphans {
            eprintln!("phasebox: killed orphan {} ({})", orphan.pid, orphan.comm);
        }
    }
    match outcome.limit {
        Some(limit) => {
            eprintln!("phasebox: {}", limit.explain());
            limit.exit_code()
        }
        None => outcome.termination.exit_code(),
    }
}

pub fn fail(failure: &Failure) -> u8 {
    eprintln!("phasebox: {failure}");
    failure.code
}
