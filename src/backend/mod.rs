//! Backends that run a planned phase. Today: a transient systemd service.

mod service;

use crate::exit::{Failure, Termination};
use crate::findings::Orphan;
use crate::plan::Plan;

/// How a phase ended, as far as the caller needs to know.
#[derive(Debug)]
pub struct Outcome {
    pub termination: Termination,
    /// Processes the command left behind, killed with the unit's cgroup.
    pub orphans: Vec<Orphan>,
}

pub fn launch(plan: Plan) -> Result<Outcome, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::from(anyhow::Error::new(e).context("starting the async runtime")))?;
    runtime.block_on(service::run(plan))
}
