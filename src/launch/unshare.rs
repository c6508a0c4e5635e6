//! Unshare mode, in the launcher: no systemd; this process isolates itself with
//! unshare(2), lists the phase for `phasebox ps` while PID 1 prepares, and runs
//! the command, which inherits everything the caller has (every descriptor, the
//! terminal, the mount namespace and root). Also what scope mode's isolator runs.
//!
//! Process: the launcher itself runs the phase (`run_phase`): it creates the phase's
//! namespaces in its own process, so it must have one thread (checked). Signals:
//! forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to PID 1 or the
//! command; --timeout is its SIGALRM. Reports: its own findings, to `conclude`.

use super::{Outcome, conclude};
use crate::launch::Plan;
use crate::phase::{Options, Orphans, run_phase};
use crate::protocol::findings::Findings;
use crate::protocol::status::{Failure, Limit};

/// Unshare mode: this process isolates itself and runs the phase.
pub fn run(plan: &Plan) -> Result<Outcome, Failure> {
    arm(plan)?;
    if !plan.wanted.pid && !plan.context.quiet {
        crate::notice!(
            "phasebox: warning: without a PID namespace or systemd, processes the command leaves \
             behind are not tracked and keep running"
        );
    }
    // Nothing else needs this process: it isolates itself, and lists the phase for
    // `ps` while PID 1 prepares.
    let package = plan.package.clone();
    let listed = || crate::protocol::registry::register(&plan.description, package, plan.context.quiet);
    conclude(isolate(plan, Orphans::Untracked, listed), None, "").map(with_time_limit)
}

/// Before the phase's processes are forked: this process must have a single
/// thread, and with --timeout phasebox's own timer starts.
pub(super) fn arm(plan: &Plan) -> Result<(), Failure> {
    crate::systemd::single_threaded()?;
    if let Some(limit) = plan.timeout {
        crate::phase::supervise::stop_after(limit);
    }
    Ok(())
}

/// The phase ran past --timeout when phasebox's timer stopped it.
pub(super) fn with_time_limit(outcome: Outcome) -> Outcome {
    Outcome {
        limit: crate::phase::supervise::timed_out().then_some(Limit::Time).or(outcome.limit),
        ..outcome
    }
}

/// Isolate, run the command.
pub(super) fn isolate<Started>(
    plan: &Plan,
    orphans: Orphans,
    before_start: impl FnOnce() -> Started,
) -> Findings {
    let options = Options {
        unshare: plan.wanted,
        loopback_addresses: false,
        restore: false,
        orphans,
        channel: None,
        own_cgroup: orphans == Orphans::Cgroup,
    };
    run_phase(&plan.context, &options, before_start)
}
