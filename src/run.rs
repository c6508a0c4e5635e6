//! `phasebox run`: resolve the flags, plan the phase, open the report, launch it,
//! report how it went — each a step.

use crate::cli::RunArgs;
use crate::plan::Settings;
use crate::{backend, report};

pub fn run(args: RunArgs) -> u8 {
    let settings = match Settings::resolve(args) {
        Ok(settings) => settings,
        Err(failure) => return report::fail(&failure),
    };
    let plan = match settings.plan(&settings.reach) {
        Ok(plan) => plan,
        Err(failure) => return report::fail(&failure),
    };
    // Opened last: a run refused for anything else leaves no file behind.
    let file = match settings.report.as_deref().map(report::open_file).transpose() {
        Ok(file) => file,
        Err(failure) => return report::fail(&failure),
    };
    let pending = report::Pending::start(&plan, file);
    let launched = backend::launch(plan, &settings);
    match launched.result {
        Ok(outcome) => pending.finish(launched.backend, launched.wanted, &outcome),
        Err(failure) => report::fail(&failure),
    }
}
