//! Running a planned phase, in the launcher: a transient service (`service`), a
//! transient scope around phasebox's own process (`scope`), or namespaces alone
//! (`unshare`); and how it ended.

mod scope;
pub mod service;
mod unshare;

use std::time::Duration;

use anyhow::anyhow;

use crate::protocol::context::CallerContext;
use crate::protocol::findings::{Findings, Orphan};
use crate::protocol::status::{Failure, Limit, Termination};
use crate::protocol::usage::Usage;
use crate::sys::namespaces::{Kind, Set};
use crate::systemd::Manager;
use crate::systemd::properties::Property;
use crate::systemd::session::{Session, Unanswered};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A transient service: systemd spawns the command (through the inner mode).
    Service(Manager),
    /// A transient scope around phasebox's own process, isolated with unshare(2).
    Scope(Manager),
    /// unshare(2) alone: no systemd.
    Unshare,
    /// No sandbox: the phase policy leaves this phase alone (pkg_postinst...).
    Unconfined,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Service(_) => "service",
            Backend::Scope(_) => "scope",
            Backend::Unshare => "unshare",
            Backend::Unconfined => "unconfined",
        }
    }
}

/// A phase, planned: what its launch needs, decided and checked (`plan` makes it).
pub struct Plan {
    pub backend: Backend,
    /// `--mode auto` chose the backend: it falls back to unshare mode when systemd
    /// turns out not to answer.
    pub auto: bool,
    /// Why this backend, in words (-v says it).
    pub why: String,
    /// The bus the backend was chosen for.
    pub bus: Option<String>,
    /// The isolations asked for.
    pub wanted: Set,
    /// The unit's name without its type suffix.
    pub unit_stem: String,
    pub slice: String,
    pub description: String,
    /// Properties from -p that systemd applies, in order.
    pub unit_properties: Vec<Property>,
    pub user_sets_timeout_stop: bool,
    pub context: CallerContext,
    /// --timeout: systemd enforces it in service mode, phasebox in the others.
    pub timeout: Option<Duration>,
    /// The service's RuntimeMaxSec= (--timeout or -p): systemd's Result "timeout"
    /// means this limit only when the phase ran that long; else a stop took long.
    pub runtime_max: Option<Duration>,
    /// `--phase`: the phase, its package (CATEGORY/PF), and -v's line on what the
    /// policy decided.
    pub phase: Option<&'static str>,
    pub package: Option<String>,
    pub policy_line: Option<String>,
    pub verbose: bool,
}

impl Plan {
    /// Say which backend runs the phase and why (-v): once it is certain, that is
    /// for a service or scope once systemd has answered.
    pub fn announce(&self) {
        if self.verbose {
            let kinds: Vec<_> = self.wanted.kinds().map(Kind::describe).collect();
            if let Some(line) = &self.policy_line {
                crate::notice!("phasebox: {line}");
            }
            crate::notice!("phasebox: {} mode: {}", self.backend.name(), self.why);
            crate::notice!(
                "phasebox: isolations: {}",
                if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") }
            );
        }
    }
}

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
pub const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// Run the plan. SilentBus: `--mode auto` found systemd's bus but systemd did not
/// answer on it, and nothing ran: the caller decides again, knowing that.
pub fn launch(plan: Plan) -> Result<Launched, SilentBus> {
    let mut launched = launch_backend(plan)?;
    // Stopped by SIGINT, SIGTERM or SIGHUP: say so, as a shell would, however the
    // phase took it (a phase killed after the grace period reports nothing).
    if let Some(signal) = crate::phase::supervise::stopped_by() {
        launched.result = Ok(match launched.result {
            Ok(outcome) => Outcome {
                termination: Termination::Signaled(signal),
                // systemd's Result for a stop that outlasted TimeoutStopSec= is "timeout"
                // too: that was this stop, not --timeout.
                limit: outcome.limit.filter(|&limit| limit != Limit::Time),
                ..outcome
            },
            Err(failure) => {
                // phasebox exits as the signal asks, but what went wrong is said.
                crate::notice!("phasebox: while stopping the phase: {failure}");
                Outcome {
                    termination: Termination::Signaled(signal),
                    orphans: Vec::new(),
                    limit: None,
                    usage: None,
                    missing: Vec::new(),
                }
            }
        });
    }
    Ok(launched)
}

/// systemd's bus at `bus` did not answer (`reason`), and `--mode auto` may fall back.
#[derive(Debug)]
pub struct SilentBus {
    pub bus: String,
    pub reason: String,
}

fn launch_backend(plan: Plan) -> Result<Launched, SilentBus> {
    let (backend, wanted) = (plan.backend, plan.wanted);
    let done = |result| Ok(Launched { backend, wanted, result });
    let silent = |plan: &Plan, silent: Unanswered| SilentBus {
        bus: plan.bus.clone().unwrap_or_default(),
        reason: silent.reason(),
    };
    match backend {
        Backend::Service(manager) => {
            let mut session = match Session::new() {
                Ok(session) => session,
                Err(error) => return done(Err(error.into())),
            };
            match session.connect(manager, CONNECT_WITHIN) {
                Ok(()) => {
                    plan.announce();
                    match session
                        .with(manager, CONNECT_WITHIN, async |client| service::run(plan, client).await)
                    {
                        Ok(result) => done(result),
                        Err(Unanswered(error)) => done(Err(error.into())),
                    }
                }
                // The session is dropped before unshare mode forks: no thread of its
                // runtime may outlive it there.
                Err(error) if plan.auto => Err(silent(&plan, error)),
                Err(Unanswered(error)) => done(Err(error.into())),
            }
        }
        Backend::Scope(_) => match scope::run_scope(&plan) {
            Ok(result) => done(result),
            Err(error) if plan.auto => Err(silent(&plan, error)),
            Err(Unanswered(error)) => done(Err(error.into())),
        },
        Backend::Unshare => {
            plan.announce();
            done(unshare::run(&plan))
        }
        // The command replaces phasebox: it is the phase process, as without phasebox.
        Backend::Unconfined => {
            plan.announce();
            crate::phase::supervise::exec_command(&plan.context)
        }
    }
}

/// -v: the unit about to be started and every property sent, with its signature.
fn announce_unit(heading: &str, properties: &[Property]) {
    crate::notice!("phasebox: {heading}");
    for property in properties {
        crate::notice!("phasebox:   {property} ({})", property.signature());
    }
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
