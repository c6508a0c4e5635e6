//! `phasebox stop TARGET...`: stop running phases cleanly, as SIGTERM to their
//! phasebox would: every process of the phase ends, and its phasebox reports it.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd::running::{self, Running};
use crate::launch::CONNECT_WITHIN;
use crate::systemd::session::{Session, Unanswered};

/// The status of a stop that matched nothing or could not stop a phase.
pub const FAILED: u8 = 1;

/// An unshare phase gets the launcher's grace period and a little more to end.
const UNSHARE_STOP_WITHIN: Duration =
    Duration::from_secs(crate::phase::supervise::STOP_GRACE_SECONDS as u64 + 5);

/// Stop every phase a target names: a unit (with or without its .service/.scope), an
/// `unshare-PID` from `phasebox ps`, a package as CAT/PF, or all its versions as CAT/PN.
pub fn stop(targets: &[String]) -> Result<()> {
    let mut session = Session::new()?;
    let (phases, unreachable) = running::list(&mut session);
    for target in targets {
        let chosen: Vec<&Running> = phases.iter().filter(|p| names(p, target)).collect();
        if chosen.is_empty() {
            let also =
                if unreachable.is_empty() { String::new() } else { format!(" ({})", unreachable.join("; ")) };
            bail!("no running phase matches {target}; `phasebox ps` lists them{also}");
        }
        for phase in chosen {
            stop_one(&mut session, phase).with_context(|| format!("stopping {}", phase.id))?;
            crate::output!("stopped {}\n", phase.id);
        }
    }
    Ok(())
}

fn names(phase: &Running, target: &str) -> bool {
    let stem = phase.id.strip_suffix(".service").or_else(|| phase.id.strip_suffix(".scope"));
    if phase.id == target || stem == Some(target) {
        return true;
    }
    // CAT/PF, or CAT/PN for every version.
    target.split_once('/').is_some_and(|(category, name)| phase.is_of(category, name))
}

fn stop_one(session: &mut Session, phase: &Running) -> Result<()> {
    match (phase.manager, phase.main_pid) {
        (Some(manager), _) => session
            .with(manager, CONNECT_WITHIN, async |client| client.stop(&phase.id).await)
            .map_err(|Unanswered(error)| error)?,
        // The launcher stops its phase on SIGTERM, and exits once all of it is gone.
        (None, Some(pid)) => crate::protocol::registry::stop_unshare(pid, UNSHARE_STOP_WITHIN),
        (None, None) => bail!("it has no process to signal"),
    }
}
