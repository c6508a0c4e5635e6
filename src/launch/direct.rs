//! The scope and unshare backends: phasebox forks the process that isolates itself
//! with unshare(2) and runs the command, so the command inherits everything the
//! caller has (every descriptor, the terminal, the mount namespace and root). In
//! scope mode that process is first put in a transient scope, so systemd tracks and
//! accounts for every process of the phase.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, anyhow};
use nix::unistd::Pid;

use super::{Outcome, Silent, conclude, runtime};
use crate::launch::Backend;
use crate::launch::Plan;
use crate::phase::{Options, Orphans, pipe, run_phase};
use crate::protocol::findings::Findings;
use crate::protocol::status::{Failure, Limit};
use crate::systemd::Manager;
use crate::systemd::client::Client;
use crate::systemd::properties;

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

/// Scope mode: a child isolates itself and runs the phase once this process has
/// put it in a transient scope. Silent: systemd did not answer, and nothing ran.
pub fn run_scope(plan: &Plan) -> Result<Result<Outcome, Failure>, Silent> {
    let Backend::Scope(manager) = plan.backend else { unreachable!("run_scope runs scope plans") };
    if let Err(failure) = arm(plan) {
        return Ok(Err(failure));
    }
    Ok(in_scope(plan, manager)?.map(with_time_limit))
}

/// Before the phase's processes are forked: this process must have a single
/// thread, and with --timeout phasebox's own timer starts.
fn arm(plan: &Plan) -> Result<(), Failure> {
    crate::systemd::single_threaded()?;
    if let Some(limit) = plan.timeout {
        crate::phase::supervise::stop_after(limit);
    }
    Ok(())
}

/// The phase ran past --timeout when phasebox's timer stopped it.
fn with_time_limit(outcome: Outcome) -> Outcome {
    Outcome { limit: crate::phase::supervise::timed_out().then_some(Limit::Time), ..outcome }
}

fn in_scope(plan: &Plan, manager: Manager) -> Result<Result<Outcome, Failure>, Silent> {
    let failed = |error: anyhow::Error| Ok(Err(error.into()));
    let (mut findings_read, findings_write) = match pipe() {
        Ok(pipe) => pipe,
        Err(error) => return failed(error),
    };
    let (go_read, go_write) = match pipe() {
        Ok(pipe) => pipe,
        Err(error) => return failed(error),
    };
    let go_write_fd = go_write.as_raw_fd();
    // Forked before any thread exists: the child may create a user namespace.
    let isolator =
        crate::phase::supervise::spawn_forwarding(crate::phase::supervise::Supervisor::Isolator, move || {
            // Only the launcher may hold the "go" pipe's write end, or EOF never comes.
            let _ = nix::unistd::close(go_write_fd);
            let findings = if started(go_read) {
                isolate(plan, Orphans::Cgroup, || ())
            } else {
                Findings {
                    setup_error: Some("the launcher did not start the phase".into()),
                    ..Findings::default()
                }
            };
            let _ = File::from(findings_write).write_all(findings.encode().as_bytes());
            // SAFETY: end the child without the parent's destructors.
            unsafe { libc::_exit(0) }
        });
    let isolator = match isolator.context("forking the phase's process") {
        Ok(pid) => pid,
        Err(error) => return failed(error),
    };
    // The phase's process gives up when the "go" pipe closes unwritten.
    let give_up = |go_write: OwnedFd| {
        drop(go_write);
        crate::phase::supervise::wait_for(isolator, false);
    };
    let unit = format!("{}.scope", plan.unit_stem);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(failure) => {
            give_up(go_write);
            return Ok(Err(failure));
        }
    };
    let mut client = match rt.block_on(super::connect(manager)) {
        Ok(client) => client,
        Err(silent) => {
            give_up(go_write);
            return Err(silent);
        }
    };
    plan.announce();
    if let Err(failure) = rt.block_on(start_scope(&mut client, plan, &unit, isolator)) {
        give_up(go_write);
        return Ok(Err(failure));
    }
    let mut go = File::from(go_write);
    if let Err(error) = go.write_all(&[1]).context("starting the phase's process") {
        return failed(error);
    }
    drop(go);

    let mut text = String::new();
    let _ = findings_read.read_to_string(&mut text);
    crate::phase::supervise::wait_for(isolator, false);
    let findings = Findings::decode(&text);
    // Without a PID namespace the orphans outlive the command: stopping the scope
    // kills them (SIGTERM, then SIGKILL after TimeoutStopSec). With one, the kernel
    // kills them as PID 1 exits, but a phase that was stopped may have had its
    // process killed before PID 1: stopping the scope waits until all are gone.
    let stopped = crate::phase::supervise::stopped_by().is_some() || crate::phase::supervise::timed_out();
    if (stopped || (!plan.wanted.pid && !findings.orphans.is_empty()))
        && let Err(error) = rt.block_on(client.stop(&unit))
    {
        return failed(error);
    }
    // When phasebox returns, its unit is gone.
    if let Err(error) = rt.block_on(client.wait_gone(&unit)) {
        return failed(error);
    }
    Ok(conclude(findings, None, &format!(" (scope {unit})")))
}

/// In the forked process: wait until the launcher has put us in the scope.
fn started(mut go: File) -> bool {
    go.read_exact(&mut [0u8]).is_ok()
}

/// Isolate, run the command.
fn isolate<Started>(plan: &Plan, orphans: Orphans, before_start: impl FnOnce() -> Started) -> Findings {
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
