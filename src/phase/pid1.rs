//! PID 1 of a new PID namespace, a process of its own, forked by the process that
//! runs the phase (`run_as_pid1`): its own mount namespace with its /proc (and the
//! phase's IPC filesystems), the command as its child, the reaping of every orphan,
//! and the end of all that is left when the command ends. It blocks the signals it
//! forwards until the command has started; it talks to its parent through its
//! channel (`protocol::message`), and reports its findings there. It holds nothing
//! of the namespace above (no descriptor of the outer /proc): its parent names what
//! is left, by the PIDs the caller knows.
//!
//! Process: PID 1 of the phase's PID namespace. Namespaces: the phase's, plus a mount
//! namespace of its own. Threads: one. Signals: forwards the signals of
//! `supervise::FORWARDED` to the command; dies with its parent (PR_SET_PDEATHSIG).
//! Reports: `Findings` over its channel to the process that forked it.

use std::os::fd::AsRawFd;

use anyhow::{Context, Result};

use crate::phase::exec::Exec;
use crate::phase::{Options, Orphans, run_in_place};
use crate::protocol::context::CallerContext;
use crate::protocol::findings::Findings;
use crate::protocol::message::{Channel, Message};
use crate::sys::mounts::{mount_ipc, mount_proc, private_propagation};

/// As the namespace's PID 1: make its mount namespace (`mounts`: Some, with the
/// IPC filesystems too or not), run the command and, once it has ended, have what
/// it left named by the process that forked PID 1, then kill and reap it all.
pub fn as_pid1(
    context: &CallerContext,
    exec: &Exec,
    options: &Options,
    mounts: Option<bool>,
    channel: &Channel,
) -> Findings {
    let mut nested = Findings::default();
    if let Some(ipc) = mounts
        && let Err(error) = pid1_mounts(ipc)
    {
        nested.setup_error = Some(format!("{error:#}"));
        return nested;
    }
    // All but the command's execve is done while lo is being set up.
    let gate = crate::phase::exec::Gate(channel.as_raw_fd());
    run_in_place(context, exec, options, Orphans::Untracked, Some(gate), &mut nested);
    if nested.termination.is_some() && !alone_in_namespace() {
        stop_all();
        // Listed, or the other side is gone: either way, on to the end.
        if channel.send(&Message::Orphans).is_ok() {
            let _ = channel.recv();
        }
        kill_and_reap_all();
    }
    nested
}

/// PID 1's own mount namespace: its /proc, and with private IPC the IPC
/// filesystems. Without its own /proc the PID namespace still holds (tools just
/// see the host's), so only the IPC filesystems are a must.
fn pid1_mounts(ipc: bool) -> Result<()> {
    let made = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("creating a mount namespace");
    if made.is_err() && !ipc {
        return Ok(());
    }
    made?;
    private_propagation()?;
    let _ = mount_proc();
    if ipc {
        mount_ipc()?;
    }
    Ok(())
}

/// Whether this PID 1 is the only process left in its namespace (a zombie counts).
/// Every other process of the phase descends from PID 1, or was reparented to it:
/// PID 1 is alone exactly when it has no child. (A process put in the namespace
/// from outside, by setns, is no child of it and not the phase's; the kernel still
/// kills it as PID 1 exits.) WNOWAIT: the question reaps nothing.
pub fn alone_in_namespace() -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    waitid(Id::All, flags) == Err(nix::errno::Errno::ECHILD)
}

/// As PID 1, once the command has ended and others are left: stop every other
/// process of the namespace (and of namespaces nested in it), so that none forks
/// while the process that forked PID 1 lists them. A round stops what was forked
/// while the round before ran.
pub fn stop_all() {
    for _ in 0..3 {
        // SAFETY: kill(-1) from a namespace's PID 1 reaches every other process in it.
        unsafe { libc::kill(-1, libc::SIGSTOP) };
    }
}

/// As PID 1: kill every other process of the namespace and reap them all, so that
/// once PID 1 has reported, nothing of the phase is left but PID 1 itself, exiting.
pub fn kill_and_reap_all() {
    // SAFETY: kill(-1) from a namespace's PID 1 reaches every other process in it.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    // Orphans are reparented to PID 1 as they die: reap until there is no child.
    while matches!(nix::sys::wait::waitpid(None, None), Ok(_) | Err(nix::errno::Errno::EINTR)) {}
}
