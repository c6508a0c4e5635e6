//! The inner mode: phasebox as a service's ExecStart (`phasebox __inner SOCKET`), a
//! process systemd spawns in the unit's namespaces and cgroup, with SIGPIPE
//! ignored, single-threaded. It connects to the launcher's socket and receives
//! the caller's context; forks its watcher (which ends the phase if the launcher
//! dies); creates what systemd could not and verifies the isolation
//! (`run_phase`); restores the caller's exact context; runs the command; lists the
//! orphans left in the cgroup (or, as the PID 1 systemd made, has the launcher name
//! them); sends the findings back over the channel; and exits the way the command
//! did.
//!
//! Process: the unit's main process. Namespaces: what systemd gave the unit, plus
//! what this process creates. Threads: one. Signals: SIGPIPE ignored; forwards
//! `supervise::FORWARDED` to the command; systemd's stop signal reaches it as the
//! unit's main process. Reports: `Findings` over UNIT.socket; exits as the command did.

use std::path::Path;

use crate::phase::supervise::exit_like;
use crate::phase::watcher;
use crate::phase::{Options, Orphans, run_phase};
use crate::protocol::message::{Channel, Message};
use crate::protocol::status::PHASEBOX_FAILED;

pub fn main(socket: &Path) -> u8 {
    let failed = |what: String| {
        crate::notice!("phasebox: inner mode: {what}");
        PHASEBOX_FAILED
    };
    let channel = match Channel::connect(socket) {
        Ok(channel) => channel,
        Err(error) => return failed(format!("connecting to the launcher at {}: {error}", socket.display())),
    };
    let context = match channel.recv() {
        Ok(Some(Message::Context(context))) => *context,
        Ok(_) => return failed("the launcher sent no context".into()),
        Err(error) => return failed(format!("reading the context: {error}")),
    };
    // In a PID namespace systemd made (PrivatePIDs=), the launcher's PID names
    // nothing here: its end of the channel closing tells that it is gone.
    let sight = match context.pid1_by_systemd {
        true => watcher::Sight::Hangup(std::os::fd::AsRawFd::as_raw_fd(&channel)),
        false => watcher::Sight::Pid,
    };
    if let Err(error) = watcher::guard(context.launcher, sight) {
        return failed(format!("{error:#}; not starting the phase"));
    }
    let options = Options {
        unshare: context.unshare,
        loopback_addresses: context.loopback_addresses,
        restore: true,
        orphans: if context.pid1_by_systemd { Orphans::Launcher } else { Orphans::Cgroup },
        channel: Some(&channel),
        own_cgroup: true,
    };
    let findings = run_phase(&context, &options, || ());
    let termination = findings.termination;
    if let Err(error) = channel.send(&Message::Report(findings)) {
        crate::notice!("phasebox: inner mode: cannot report to the launcher: {error}");
    }
    match termination {
        Some(termination) => exit_like(termination),
        None => PHASEBOX_FAILED,
    }
}
