//! The backends that run a planned phase: a transient service, a transient scope
//! around phasebox's own namespaces, or the namespaces alone.

mod direct;
pub mod service;

use anyhow::anyhow;

use crate::exit::{Failure, Limit, Termination};
use crate::findings::{Findings, Orphan};
use crate::mode::Backend;
use crate::plan::Plan;
use crate::systemd::client::Client;
use crate::systemd::properties::Property;

/// How a phase ended, as far as the caller needs to know.
#[derive(Debug)]
pub struct Outcome {
    pub termination: Termination,
    /// Processes the command left behind, killed when the phase ended.
    pub orphans: Vec<Orphan>,
    /// The unit's limit that ended the phase, if one did.
    pub limit: Option<Limit>,
}

pub fn launch(plan: Plan) -> Result<Outcome, Failure> {
    let result = launch_backend(plan);
    // Stopped by SIGINT, SIGTERM or SIGHUP: say so, as a shell would, however the
    // phase took it (a phase killed after the grace period reports nothing).
    match (crate::supervise::stopped_by(), result) {
        (Some(signal), Ok(outcome)) => Ok(Outcome { termination: Termination::Signaled(signal), ..outcome }),
        (Some(signal), Err(_)) => {
            Ok(Outcome { termination: Termination::Signaled(signal), orphans: Vec::new(), limit: None })
        }
        (None, result) => result,
    }
}

fn launch_backend(mut plan: Plan) -> Result<Outcome, Failure> {
    plan.announce();
    match plan.backend {
        Backend::Service(manager) => {
            let runtime = runtime()?;
            match runtime.block_on(Client::connect(manager)) {
                Ok(client) => runtime.block_on(service::run(plan, client)),
                Err(error) if plan.auto => {
                    if plan.verbose {
                        eprintln!("phasebox: {error:#}; falling back to unshare mode");
                    }
                    plan.backend = Backend::Unshare;
                    direct::run(plan)
                }
                Err(error) => Err(error.into()),
            }
        }
        Backend::Scope(_) | Backend::Unshare => direct::run(plan),
        // The command replaces phasebox: it is the phase process, as without phasebox.
        Backend::Unconfined => crate::supervise::exec_command(&plan.context),
    }
}

/// -v: the unit about to be started and every property sent, with its signature.
fn announce_unit(heading: &str, properties: &[Property]) {
    eprintln!("phasebox: {heading}");
    for property in properties {
        eprintln!("phasebox:   {property} ({})", property.signature());
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::from(anyhow::Error::new(e).context("starting the async runtime")))
}

/// Turn what the phase's supervisor found into the outcome, or into phasebox's
/// failure when the command could not run as asked. `hint` points at more detail.
fn conclude(findings: Findings, termination: Option<Termination>, hint: &str) -> Result<Outcome, Failure> {
    if findings.refused {
        let lines: Vec<String> = findings
            .missing
            .iter()
            .map(|m| {
                format!("no {}: {} (turn it off with {})", m.kind.describe(), m.reason, m.kind.off_switch())
            })
            .collect();
        return Err(anyhow!(
            "the phase could not get every isolation it asked for, so the command was not run:\n  {}\n\
             Pass --best-effort to run with the isolations that could be had.{hint}",
            lines.join("\n  ")
        )
        .into());
    }
    if let Some(error) = findings.setup_error {
        return Err(anyhow!("could not prepare the phase: {error}{hint}").into());
    }
    let termination = termination
        .or(findings.termination)
        .ok_or_else(|| anyhow!("the phase ended without an exit status{hint}"))?;
    Ok(Outcome { termination, orphans: findings.orphans, limit: None })
}
