//! Scope mode, in the launcher: it forks the isolator, a child that waits on their
//! channel until the launcher has put it in a transient scope (so systemd tracks
//! and accounts for every process of the phase), then isolates itself and runs the
//! phase as unshare mode does and sends its findings back.
//!
//! Processes: the launcher (here, and the systemd session while it asks for the scope)
//! and the isolator it forks before any thread exists. The isolator: the caller's
//! namespaces until it creates the phase's own; one thread; forwards SIGINT, SIGTERM,
//! SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the phase; dies with the launcher
//! (PR_SET_PDEATHSIG); sends Findings over the channel and exits.

use std::os::fd::AsRawFd;

use anyhow::{Context, anyhow};
use nix::unistd::Pid;

use super::unshare::{arm, isolate, with_time_limit};
use super::{CONNECT_WITHIN, Outcome, conclude};
use crate::launch::{Backend, Plan};
use crate::phase::Orphans;
use crate::phase::supervise::{Supervisor, spawn_forwarding};
use crate::protocol::findings::Findings;
use crate::protocol::message::{Channel, Message};
use crate::protocol::status::Failure;
use crate::systemd::Manager;
use crate::systemd::client::Client;
use crate::systemd::properties;
use crate::systemd::session::{Session, Unanswered};

/// Scope mode: a child isolates itself and runs the phase once this process has
/// put it in a transient scope. Unanswered: systemd did not answer, and nothing ran.
pub fn run_scope(plan: &Plan) -> Result<Result<Outcome, Failure>, Unanswered> {
    let Backend::Scope(manager) = plan.backend else { unreachable!("run_scope runs scope plans") };
    if let Err(failure) = arm(plan) {
        return Ok(Err(failure));
    }
    Ok(in_scope(plan, manager)?.map(with_time_limit))
}

fn in_scope(plan: &Plan, manager: Manager) -> Result<Result<Outcome, Failure>, Unanswered> {
    let failed = |error: anyhow::Error| Ok(Err(error.into()));
    let (channel, isolator_end) = match Channel::pair().context("creating the phase's channel") {
        Ok(pair) => pair,
        Err(error) => return failed(error),
    };
    let launcher_fd = channel.as_raw_fd();
    // Forked before any thread exists: the child may create a user namespace.
    let isolator = spawn_forwarding(Supervisor::Isolator, move || {
        // Only the launcher may hold its end, or the end of file never comes.
        let _ = nix::unistd::close(launcher_fd);
        let findings = match isolator_end.recv() {
            // The launcher has put this process in the scope.
            Ok(Some(Message::Start)) => isolate(plan, Orphans::Cgroup, || ()),
            _ => Findings {
                setup_error: Some("the launcher did not start the phase".into()),
                ..Findings::default()
            },
        };
        let _ = isolator_end.send(&Message::Report(findings));
        // SAFETY: end the child without the parent's destructors.
        unsafe { libc::_exit(0) }
    });
    let isolator = match isolator.context("forking the phase's process") {
        Ok(pid) => pid,
        Err(error) => return failed(error),
    };
    // The phase's process gives up when the channel closes without Start.
    let give_up = |channel: Channel| {
        drop(channel);
        crate::phase::supervise::wait_for(isolator, false);
    };
    let unit = format!("{}.scope", plan.unit_stem);
    let mut session = match Session::new() {
        Ok(session) => session,
        Err(error) => {
            give_up(channel);
            return failed(error);
        }
    };
    if let Err(unanswered) = session.connect(manager, CONNECT_WITHIN) {
        give_up(channel);
        return Err(unanswered);
    }
    plan.announce();
    // Connected above: a call can fail, not the connection.
    let started = session
        .with(manager, CONNECT_WITHIN, async |client| start_scope(client, plan, &unit, isolator).await);
    if let Err(failure) = started.unwrap_or_else(|Unanswered(error)| Err(error.into())) {
        give_up(channel);
        return Ok(Err(failure));
    }
    if let Err(error) = channel.send(&Message::Start).context("starting the phase's process") {
        return failed(error);
    }
    let findings = channel.recv_findings().ok().flatten().unwrap_or_default();
    // A scope has no Result systemd would set to oom-kill on every version: the
    // phase's process read its cgroup's memory.events before it reported.
    let oom_killed = findings.oom_killed;
    crate::phase::supervise::wait_for(isolator, false);
    // The phase is over: stop its scope. Without a PID namespace the orphans
    // outlive the command, and the stop kills them (SIGTERM, then SIGKILL after
    // TimeoutStopSec); with one, the kernel killed them as PID 1 exited, or (a
    // stopped phase's process killed before PID 1) the stop waits until all are
    // gone. An empty scope would end anyway, but only once systemd notices its
    // empty cgroup, which can take longer than the whole phase.
    if let Err(error) = session
        .with(manager, CONNECT_WITHIN, async |client| client.stop(&unit).await)
        .unwrap_or_else(|Unanswered(error)| Err(error))
    {
        return failed(error);
    }
    // When phasebox returns, its unit is gone.
    if let Err(error) = session
        .with(manager, CONNECT_WITHIN, async |client| client.wait_gone(&unit).await)
        .unwrap_or_else(|Unanswered(error)| Err(error))
    {
        return failed(error);
    }
    Ok(conclude(findings, None, &format!(" (scope {unit})"))
        .map(|outcome| with_memory_limit(outcome, oom_killed)))
}

/// The command was SIGKILLed and the kernel's OOM killer had acted in the scope:
/// the phase ran out of memory (--memory-max, MemoryMax=), as a service's oom-kill
/// result says in service mode.
fn with_memory_limit(outcome: Outcome, oom_killed: bool) -> Outcome {
    let killed = outcome.termination == crate::protocol::status::Termination::Signaled(libc::SIGKILL);
    match oom_killed && killed && outcome.limit.is_none() {
        true => Outcome { limit: Some(crate::protocol::status::Limit::Memory), ..outcome },
        false => outcome,
    }
}

/// A transient scope holding the phase's process, started before the phase is.
async fn start_scope(client: &mut Client, plan: &Plan, unit: &str, isolator: Pid) -> Result<(), Failure> {
    let mut list = vec![
        properties::description(&plan.description),
        properties::slice(&plan.slice),
        properties::pids(vec![isolator.as_raw() as u32]),
        properties::collect_inactive_or_failed(),
    ];
    list.extend(properties::accounting());
    if !plan.user_sets_timeout_stop {
        list.push(properties::timeout_stop_usec(super::service::DEFAULT_TIMEOUT_STOP_USEC));
    }
    list.extend(plan.unit_properties.iter().cloned());
    if plan.verbose {
        super::announce_unit(&format!("starting {unit}"), &list);
    }
    client.watch_unit(unit).await?;
    let job = client.start(unit, &list).await.map_err(|e| super::service::explain_start_error(e, unit))?;
    match client.job_result(unit, &job).await?.as_str() {
        "done" => Ok(()),
        result => Err(anyhow!("systemd could not start {unit} (job result: {result})").into()),
    }
}
