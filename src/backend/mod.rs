//! The backends that run a planned phase: a transient service, a transient scope
//! around phasebox's own namespaces, or the namespaces alone.

mod direct;
pub mod service;

use anyhow::anyhow;

use crate::exit::{Failure, Limit, Termination};
use crate::findings::{Findings, Orphan};
use crate::mode::Backend;
use crate::namespaces::Kind;
use crate::plan::Plan;
use crate::systemd::client::Client;
use crate::systemd::properties::Property;
use crate::usage::Usage;

/// How a phase ended, as far as the caller needs to know.
#[derive(Debug)]
pub struct Outcome {
    pub termination: Termination,
    /// Processes the command left behind, killed when the phase ended.
    pub orphans: Vec<Orphan>,
    /// The unit's limit that ended the phase, if one did.
    pub limit: Option<Limit>,
    /// What the phase used, when the process that ran the command could say.
    pub usage: Option<Usage>,
    /// Isolations asked for but not in force (accepted with --best-effort).
    pub missing: Vec<Kind>,
}

/// Run the plan; the backend that ran it (auto mode may fall back to unshare) and
/// how it ended.
pub fn launch(plan: Plan) -> (Backend, Result<Outcome, Failure>) {
    let (backend, result) = launch_backend(plan);
    // Stopped by SIGINT, SIGTERM or SIGHUP: say so, as a shell would, however the
    // phase took it (a phase killed after the grace period reports nothing).
    let result = match (crate::supervise::stopped_by(), result) {
        (Some(signal), Ok(outcome)) => Ok(Outcome {
            termination: Termination::Signaled(signal),
            // systemd's Result for a stop that outlasted TimeoutStopSec= is "timeout"
            // too: that was this stop, not --timeout.
            limit: outcome.limit.filter(|&limit| limit != Limit::Time),
            ..outcome
        }),
        (Some(signal), Err(_)) => Ok(Outcome {
            termination: Termination::Signaled(signal),
            orphans: Vec::new(),
            limit: None,
            usage: None,
            missing: Vec::new(),
        }),
        (None, result) => result,
    };
    (backend, result)
}

fn launch_backend(mut plan: Plan) -> (Backend, Result<Outcome, Failure>) {
    plan.announce();
    let backend = plan.backend;
    match backend {
        Backend::Service(manager) => {
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(failure) => return (backend, Err(failure)),
            };
            match runtime.block_on(Client::connect(manager)) {
                Ok(client) => (backend, runtime.block_on(service::run(plan, client))),
                Err(error) if plan.auto && !plan.unit_properties.is_empty() => (
                    backend,
                    Err(anyhow!(
                        "{error:#}; the limits and properties asked for need systemd, so phasebox \
                         does not fall back to unshare mode"
                    )
                    .into()),
                ),
                Err(error) if plan.auto => {
                    if plan.verbose {
                        eprintln!("phasebox: {error:#}; falling back to unshare mode");
                    }
                    plan.backend = Backend::Unshare;
                    (Backend::Unshare, direct::run(plan))
                }
                Err(error) => (backend, Err(error.into())),
            }
        }
        Backend::Scope(_) | Backend::Unshare => (backend, direct::run(plan)),
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
    Ok(crate::systemd::runtime()?)
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
    let missing = findings.missing.iter().map(|m| m.kind).collect();
    Ok(Outcome { termination, orphans: findings.orphans, limit: None, usage: findings.usage, missing })
}
