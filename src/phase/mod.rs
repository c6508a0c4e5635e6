//! What runs inside the phase. `run_phase` runs the command isolated: it creates
//! the namespaces this process must make itself, forks PID 1 when there is a new
//! PID namespace, restores the caller's context when the process is not already the
//! caller's fork, verifies, supervises, and says what was found. It runs in the
//! process that runs the phase: the launcher in unshare mode, the isolator in scope
//! mode, the inner mode in a service.
//!
//! Threads: one, always (it forks and creates namespaces). Signals: the ones in
//! `supervise::FORWARDED` are caught and passed on to PID 1 or the command. Reports:
//! `Findings` (missing isolations with their causes, orphans, usage, the command's
//! termination), which its caller sends on or concludes from.

pub mod exec;
pub mod inner;
pub mod isolate;
pub mod pid1;
pub mod supervise;
pub mod terminal_guard;
pub mod watcher;

use std::os::fd::AsRawFd;

use anyhow::{Context, Result};

use crate::phase::exec::Exec;
use crate::phase::isolate::{Entered, enter, finish};
use crate::phase::pid1::{kill_and_reap_all, stop_all};
use crate::protocol::context::{Caller, CallerContext, Rlimit};
use crate::protocol::findings::Findings;
use crate::protocol::findings::{Cause, Missing};
use crate::protocol::message::{Channel, Message};
use crate::sys::host::{Host, Linux};
use crate::sys::namespaces::{Kind, Set};

/// Where the orphans of a phase are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphans {
    /// In our own control group (a service or scope: systemd kills them).
    Cgroup,
    /// Nowhere: without systemd or a PID namespace they can't be told apart.
    Untracked,
    /// Below this process, the PID 1 systemd made (PrivatePIDs=): the launcher,
    /// outside, names them through `Options::channel`, then this process kills them.
    Launcher,
}

pub struct Options<'a> {
    /// Namespaces to create here.
    pub unshare: Set,
    /// Add portage's loopback addresses to a network namespace systemd created.
    pub loopback_addresses: bool,
    /// Restore the caller's identity, limits, directory and umask (inner mode).
    pub restore: bool,
    pub orphans: Orphans,
    /// The channel to the launcher, with `Orphans::Launcher`.
    pub channel: Option<&'a Channel>,
    /// This process is in the phase's own cgroup (a service or scope): its
    /// figures are the whole phase's use.
    pub own_cgroup: bool,
}

/// `before_start` is called once the namespaces exist, before the command may run;
/// what it returns is kept until the phase is over.
pub fn run_phase<Started>(
    context: &CallerContext,
    options: &Options,
    before_start: impl FnOnce() -> Started,
) -> Findings {
    let mut host = Linux;
    let mut findings = Findings::default();
    // What systemd was asked for is verified before anything is added to it; what
    // this process creates, before lo and the hostname are set up in it. A PID
    // namespace systemd made has this process as its PID 1.
    let from_systemd = Set::all().without(options.unshare);
    let mut skipped = unapplied(context, from_systemd, false, &[]);
    if options.orphans == Orphans::Launcher && nix::unistd::getpid().as_raw() != 1 {
        skipped.push(Missing { kind: Kind::Pid, cause: Cause::SystemdIgnored });
    }
    if !accept_missing(context, &mut findings, skipped) {
        return findings;
    }
    let network_missing = missing_kinds(&findings).contains(&Kind::Network);
    if options.loopback_addresses
        && !network_missing
        && let Err(error) = host.loopback_up()
    {
        findings.setup_error = Some(format!("adding portage's loopback addresses: {error:#}"));
        return findings;
    }
    // The phase's own /dev/mqueue and /dev/shm come with private IPC, whoever made
    // the IPC namespace (systemd's PrivateIPC= shares /dev/shm).
    let ipc_mounts = context.expected.iter().any(|x| x.kind == Kind::Ipc)
        && !missing_kinds(&findings).contains(&Kind::Ipc);
    let mut entered = match enter(options.unshare, ipc_mounts, &mut host) {
        Ok(entered) => entered,
        Err(error) => {
            findings.setup_error = Some(format!("{error:#}"));
            return findings;
        }
    };
    if !accept_missing(context, &mut findings, std::mem::take(&mut entered.missing)) {
        return findings;
    }
    let unapplied = unapplied(context, options.unshare, true, &missing_kinds(&findings));
    if !accept_missing(context, &mut findings, unapplied) {
        return findings;
    }
    // Made before PID 1 is forked, and freed only once it is done: PID 1 only reads
    // it, and no page of it is copied on write.
    let exec = Exec::prepare(context, true);
    if !entered.pid {
        if let Err(error) = finish(&entered, &mut host) {
            findings.setup_error = Some(format!("{error:#}"));
            return findings;
        }
        let _started = before_start();
        run_in_place(context, &exec, options, options.orphans, None, &mut findings);
        with_own_cgroups_usage(options, &mut findings);
        return findings;
    }
    match run_as_pid1(context, &exec, options, &entered, before_start) {
        Ok(nested) => findings.merge(nested),
        Err(error) => findings.setup_error = Some(format!("{error:#}")),
    }
    with_own_cgroups_usage(options, &mut findings);
    findings
}

/// The whole phase's figures, where this process is in its own cgroup.
fn with_own_cgroups_usage(options: &Options, findings: &mut Findings) {
    if options.own_cgroup {
        findings.usage = findings.usage.map(crate::protocol::usage::Usage::with_own_cgroup);
        findings.oom_killed |= crate::protocol::usage::own_cgroup_oom_kills() > 0;
    }
}

/// Fork PID 1 of the new namespace, which runs the command and reports back. This
/// process sets up lo and the hostname meanwhile; the command, forked and ready,
/// waits for that only at its execve, and `before_start` runs meanwhile too. When
/// the command has ended and others are left, this process names them (PID 1
/// can't see the PIDs the caller knows, and holds nothing of the namespace above).
fn run_as_pid1<Started>(
    context: &CallerContext,
    exec: &Exec,
    options: &Options,
    entered: &Entered,
    before_start: impl FnOnce() -> Started,
) -> Result<Findings> {
    let (channel, pid1_end) = Channel::pair().context("creating PID 1's channel")?;
    let channel_fd = channel.as_raw_fd();
    let mounts = entered.mount.then_some(entered.ipc_mounts);
    // The closure owns PID 1's end: this process closes it when the closure is
    // dropped, so its reads end when PID 1 is gone.
    let pid1 = supervise::spawn_forwarding(supervise::Supervisor::Pid1, move || {
        let _ = nix::unistd::close(channel_fd);
        // The PID namespace's own check; and only PID 1 may kill(-1) in as_pid1.
        let nested = if nix::unistd::getpid().as_raw() == 1 {
            pid1::as_pid1(context, exec, options, mounts, &pid1_end)
        } else {
            Findings {
                setup_error: Some("unshare(pid) succeeded but its first child is not PID 1".into()),
                ..Findings::default()
            }
        };
        // Reported and closed, the launcher may go on while PID 1's exit tears
        // down its memory and mount namespace.
        let _ = pid1_end.send(&Message::Report(nested));
        // SAFETY: end PID 1 without the parent's destructors; should anything have
        // escaped the reaping, the kernel kills it as PID 1 exits.
        unsafe { libc::_exit(0) }
    })?;
    let _started = before_start();
    // The channel closing without Start tells the command not to run.
    let setup = finish(entered, &mut Linux);
    if setup.is_ok() {
        let _ = channel.send(&Message::Start);
    }
    let mut orphans = Vec::new();
    let nested = loop {
        match channel.recv() {
            Ok(Some(Message::Orphans)) => {
                orphans = crate::sys::proc::descendants(pid1.as_raw() as u32);
                let _ = channel.send(&Message::Listed);
            }
            Ok(Some(Message::Report(nested))) => break nested,
            // PID 1 ended without a report (it was killed).
            _ => break Findings::default(),
        }
    };
    // A PID 1 that saw the command end has killed and reaped what was left before
    // reporting. One that did not (killed, or never started the command) may leave
    // the rest to the kernel, which kills it as PID 1 exits: wait for that.
    if nested.termination.is_none() {
        supervise::wait_for(pid1, false);
    }
    setup?;
    Ok(Findings { orphans, ..nested })
}

/// The isolations already found missing (and accepted with --best-effort).
fn missing_kinds(findings: &Findings) -> Vec<Kind> {
    findings.missing.iter().map(|m| m.kind).collect()
}

/// The isolations of `among` asked for whose namespace is still the launcher's, but
/// for those already found missing and allowed (`accepted`), which are not reported
/// again. `created_here`: by this process's unshare(2), not by systemd.
fn unapplied(context: &CallerContext, among: Set, created_here: bool, accepted: &[Kind]) -> Vec<Missing> {
    missing_isolations(context, among, &Linux)
        .into_iter()
        .filter(|k| !accepted.contains(k))
        .map(|kind| Missing {
            kind,
            cause: if created_here { Cause::StillTheLaunchers } else { Cause::SystemdIgnored },
        })
        .collect()
}

/// Restore, run the command here and list what it left.
pub(crate) fn run_in_place(
    context: &CallerContext,
    exec: &Exec,
    options: &Options,
    orphans: Orphans,
    gate: Option<crate::phase::exec::Gate>,
    findings: &mut Findings,
) {
    if options.restore
        && let Err(error) = restore(&context.caller, &mut Linux)
    {
        findings.setup_error = Some(format!("{error:#}"));
        return;
    }
    let reap_all = matches!(orphans, Orphans::Untracked | Orphans::Launcher);
    match supervise::run_command(exec, reap_all, gate) {
        Ok(termination) => findings.termination = Some(termination),
        Err(error) => {
            findings.setup_error = Some(error);
            return;
        }
    }
    findings.usage = Some(crate::protocol::usage::Usage::of_waited_children());
    match orphans {
        Orphans::Cgroup => {
            // The inner mode's watcher is no orphan of the phase.
            findings.orphans = crate::sys::proc::list_except_self(watcher::watcher()).unwrap_or_default();
        }
        Orphans::Launcher if !pid1::alone_in_namespace() => {
            // The watcher of a killed launcher has nothing left to guard.
            crate::phase::watcher::end_watcher();
            stop_all();
            if let Some(channel) = options.channel
                && channel.send(&Message::Orphans).is_ok()
            {
                let _ = channel.recv();
            }
            kill_and_reap_all();
        }
        Orphans::Launcher | Orphans::Untracked => {}
    }
}

/// Record missing isolations; false when the command must therefore not run.
fn accept_missing(context: &CallerContext, findings: &mut Findings, missing: Vec<Missing>) -> bool {
    if missing.is_empty() {
        return true;
    }
    if context.best_effort && !context.quiet {
        for m in &missing {
            crate::notice!(
                "phasebox: warning: running without {} ({}); --best-effort allowed it",
                m.kind.describe(),
                m.reason()
            );
        }
    }
    findings.missing.extend(missing);
    if !context.best_effort {
        findings.refused = true;
    }
    context.best_effort
}

/// Isolations of `among` asked for whose namespace is still the launcher's (or can't
/// be read).
pub fn missing_isolations(context: &CallerContext, among: Set, host: &impl Host) -> Vec<Kind> {
    context
        .expected
        .iter()
        .filter(|x| among.contains(x.kind))
        .filter(|x| host.namespace(x.kind).map_or(true, |ours| ours == x.launcher_ns))
        .map(|x| x.kind)
        .collect()
}

/// Restore the caller's limits, identity, working directory and umask.
pub fn restore(context: &Caller, host: &mut impl Host) -> Result<()> {
    for &limit in &context.rlimits {
        // An unprivileged caller may have had a higher hard limit than the manager
        // grants: then keep the manager's hard limit and come as close as it allows.
        if host.set_rlimit(limit).is_err()
            && let Ok(current) = host.rlimit(limit.resource)
        {
            let _ = host.set_rlimit(Rlimit { soft: limit.soft.min(current.hard), ..current });
        }
    }
    if host.is_root() {
        host.set_groups(&context.groups)?;
        host.set_gid(context.gid)?;
        host.set_uid(context.uid)?;
    } else if host.current_ids() != (context.uid, context.gid) {
        let (uid, gid) = host.current_ids();
        anyhow::bail!(
            "the unit runs as uid {uid} gid {gid}, not as the caller (uid {} gid {})",
            context.uid,
            context.gid
        );
    }
    host.chdir(&context.cwd)?;
    host.umask(context.umask);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::context::Rlimit;
    use crate::sys::host::fake::FakeHost;
    use crate::sys::namespaces::NsId;

    fn context() -> CallerContext {
        CallerContext::example()
    }

    #[test]
    fn an_isolation_is_missing_when_the_namespace_is_the_launchers() {
        let mut host = FakeHost::new(true);
        host.namespaces = vec![(Kind::Network, NsId(1)), (Kind::Ipc, NsId(9))];
        assert_eq!(missing_isolations(&context(), Set::all(), &host), [Kind::Network]);
        // Only the kinds asked about are checked.
        let ipc_only = Set { ipc: true, ..Set::default() };
        assert!(missing_isolations(&context(), ipc_only, &host).is_empty());
        host.namespaces = vec![(Kind::Network, NsId(8)), (Kind::Ipc, NsId(9))];
        assert!(missing_isolations(&context(), Set::all(), &host).is_empty());
        // A namespace that can't be read counts as missing: never assume isolation.
        host.namespaces = vec![(Kind::Ipc, NsId(9))];
        assert_eq!(missing_isolations(&context(), Set::all(), &host), [Kind::Network]);
    }

    #[test]
    fn root_restores_groups_then_gid_then_uid() {
        let mut host = FakeHost::new(true);
        restore(&context().caller, &mut host).unwrap();
        assert_eq!(
            host.calls,
            [
                "rlimit 7 1024 18446744073709551615",
                "groups [100, 27]",
                "gid 100",
                "uid 1000",
                "chdir /work",
                "umask 27"
            ]
        );
    }

    #[test]
    fn a_non_root_unit_must_already_be_the_caller() {
        let mut host = FakeHost::new(false);
        host.ids = (1000, 100);
        restore(&context().caller, &mut host).unwrap();
        assert!(!host.calls.iter().any(|c| c.starts_with("uid") || c.starts_with("groups")));
        host.ids = (1001, 100);
        let err = restore(&context().caller, &mut host).unwrap_err().to_string();
        assert!(err.contains("uid 1001"), "{err}");
    }

    #[test]
    fn limits_that_cannot_be_raised_fall_back_to_the_soft_value() {
        let mut host = FakeHost::new(false);
        host.ids = (1000, 100);
        host.fail_raising_limits = true;
        let mut caller = context().caller;
        caller.rlimits = vec![Rlimit { resource: 7, soft: 4096, hard: u64::MAX }];
        restore(&caller, &mut host).unwrap();
        assert_eq!(host.calls[0], "rlimit 7 4096 65536");
    }
}
