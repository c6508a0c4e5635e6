//! The backends that run a planned phase: a transient service, a transient scope
//! around phasebox's own namespaces, or the namespaces alone.

mod direct;
pub mod service;

use std::time::Duration;

use anyhow::anyhow;

use crate::exit::{Failure, Limit, Termination};
use crate::findings::{Findings, Orphan};
use crate::mode::{Backend, Reach};
use crate::namespaces::{Kind, Set};
use crate::plan::{Plan, Settings};
use crate::systemd::Manager;
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

/// How a launch went: the backend that ran the phase and the isolations it was
/// given (`--mode auto` may have fallen back to unshare mode), and how it ended.
pub struct Launched {
    pub backend: Backend,
    pub wanted: Set,
    pub result: Result<Outcome, Failure>,
}

/// How long connecting to a manager that has a bus may take before `--mode auto`
/// treats it as not answering.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// systemd's bus is there but connecting to it failed: `--mode auto` falls back.
pub struct Silent(pub anyhow::Error);

impl Silent {
    /// What failed, in the fewest words (the bus's own error).
    pub fn reason(&self) -> String {
        self.0.root_cause().to_string()
    }
}

/// Run the plan.
pub fn launch(plan: Plan, settings: &Settings) -> Launched {
    let mut launched = launch_backend(plan, settings);
    // Stopped by SIGINT, SIGTERM or SIGHUP: say so, as a shell would, however the
    // phase took it (a phase killed after the grace period reports nothing).
    if let Some(signal) = crate::supervise::stopped_by() {
        launched.result = Ok(match launched.result {
            Ok(outcome) => Outcome {
                termination: Termination::Signaled(signal),
                // systemd's Result for a stop that outlasted TimeoutStopSec= is "timeout"
                // too: that was this stop, not --timeout.
                limit: outcome.limit.filter(|&limit| limit != Limit::Time),
                ..outcome
            },
            Err(_) => Outcome {
                termination: Termination::Signaled(signal),
                orphans: Vec::new(),
                limit: None,
                usage: None,
                missing: Vec::new(),
            },
        });
    }
    launched
}

fn launch_backend(plan: Plan, settings: &Settings) -> Launched {
    let (backend, wanted) = (plan.backend, plan.wanted);
    let done = |result| Launched { backend, wanted, result };
    match backend {
        Backend::Service(manager) => {
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(failure) => return done(Err(failure)),
            };
            match runtime.block_on(connect(manager)) {
                Ok(client) => {
                    plan.announce();
                    done(runtime.block_on(service::run(plan, client)))
                }
                Err(silent) if plan.auto => {
                    // No thread of the runtime may outlive it: unshare mode forks and
                    // may create a user namespace.
                    drop(runtime);
                    fall_back(settings, &plan, &silent)
                }
                Err(Silent(error)) => done(Err(error.into())),
            }
        }
        Backend::Scope(_) => match direct::run_scope(&plan) {
            Ok(result) => done(result),
            Err(silent) if plan.auto => fall_back(settings, &plan, &silent),
            Err(Silent(error)) => done(Err(error.into())),
        },
        Backend::Unshare => {
            plan.announce();
            done(direct::run(&plan))
        }
        // The command replaces phasebox: it is the phase process, as without phasebox.
        Backend::Unconfined => {
            plan.announce();
            crate::supervise::exec_command(&plan.context)
        }
    }
}

/// `--mode auto` found systemd's bus, but systemd did not answer on it: decide
/// again, knowing that, and run the phase in unshare mode with its own isolations.
fn fall_back(settings: &Settings, tried: &Plan, silent: &Silent) -> Launched {
    let reach = Reach::Silent { bus: tried.bus.clone().unwrap_or_default(), error: silent.reason() };
    match settings.plan(&reach) {
        Ok(plan) => {
            plan.announce();
            let (backend, wanted) = (plan.backend, plan.wanted);
            Launched { backend, wanted, result: direct::run(&plan) }
        }
        Err(failure) => Launched { backend: tried.backend, wanted: tried.wanted, result: Err(failure) },
    }
}

/// Connect to a manager whose bus was found, within CONNECT_WITHIN.
pub async fn connect(manager: Manager) -> Result<Client, Silent> {
    match tokio::time::timeout(CONNECT_WITHIN, Client::connect(manager)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) => Err(Silent(error)),
        Err(_) => Err(Silent(anyhow!(
            "systemd did not answer within {} s on the {} bus",
            CONNECT_WITHIN.as_secs(),
            manager.bus()
        ))),
    }
}

/// -v: the unit about to be started and every property sent, with its signature.
fn announce_unit(heading: &str, properties: &[Property]) {
    crate::notice!("phasebox: {heading}");
    for property in properties {
        crate::notice!("phasebox:   {property} ({})", property.signature());
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
                format!("no {}: {} (turn it off with {})", m.kind.describe(), m.reason(), m.kind.off_switch())
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
