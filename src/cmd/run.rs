//! `phasebox run`, in the launcher: resolve the flags, plan the phase, open the
//! report, launch it, report how it went — each a step.
//!
//! Process: the launcher, the phasebox the caller started. Namespaces: the caller's.
//! Threads: one, and a systemd session's runtime while it talks to systemd (dropped
//! before any fork). Signals: SIGPIPE ignored; SIGINT, SIGTERM and SIGHUP stop the
//! phase (see the mode's file). Reports: the phase's exit status (or 123-125, 128+N),
//! the summary on stderr and the --report record.

use anyhow::anyhow;

use crate::launch::SilentBus;
use crate::plan::mode::Reach;
use crate::plan::{Flags, Settings};
use crate::protocol::status::Failure;
use crate::{launch, report};

/// The phase's status (the command's own, or what a limit or a signal makes it), or
/// phasebox's failure.
pub fn run(flags: Flags) -> Result<u8, Failure> {
    let settings = Settings::resolve(flags)?;
    let plan = settings.plan(&settings.reach)?;
    // Opened last: a run refused for anything else leaves no file behind.
    let file = settings.report.as_deref().map(report::open_file).transpose()?;
    let pending = report::Pending::start(&plan, file);
    let launched = match launch::launch(plan) {
        Ok(launched) => launched,
        // --mode auto found systemd's bus, but systemd did not answer on it: decide
        // again, knowing that, and run the phase in unshare mode with its own
        // isolations (or refuse, if it asked for what only systemd gives).
        Err(SilentBus { bus, reason }) => {
            let plan = settings.plan(&Reach::Silent { bus, error: reason })?;
            launch::launch(plan).map_err(|silent| anyhow!("systemd does not answer at {}", silent.bus))?
        }
    };
    Ok(pending.finish(launched.backend, launched.wanted, &launched.result?))
}
