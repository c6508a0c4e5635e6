//! The inner mode: phasebox as the unit's ExecStart. It verifies the isolation,
//! restores the caller's exact context, runs the command as its child, lists the
//! orphans the command left in the cgroup, and exits the way the command did.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::context::{Caller, CallerContext, Rlimit};
use crate::exit::{NOT_EXECUTABLE, NOT_FOUND, PHASEBOX_FAILED, Termination};
use crate::findings::Findings;
use crate::host::{Host, Linux};
use crate::namespaces::Kind;

/// Signals sent to the unit's main process are passed on to the command.
const FORWARDED: [Signal; 6] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

pub fn main(context_path: &Path) -> u8 {
    let context = match read_context(context_path) {
        Ok(context) => context,
        Err(error) => {
            eprintln!("phasebox: inner mode: {error:#}");
            return PHASEBOX_FAILED;
        }
    };
    let mut host = Linux;
    let mut findings = Findings { missing: missing_isolations(&context, &host), ..Findings::default() };
    if !findings.missing.is_empty() {
        if context.best_effort {
            if !context.quiet {
                for kind in &findings.missing {
                    eprintln!(
                        "phasebox: warning: running without {} (systemd did not apply {}); --best-effort allowed it",
                        kind.describe(),
                        kind.property()
                    );
                }
            }
        } else {
            findings.refused = true;
            return give_up(&context, &findings);
        }
    }
    if let Err(error) = restore(&context.caller, &mut host) {
        findings.setup_error = Some(format!("{error:#}"));
        return give_up(&context, &findings);
    }
    let termination = run_command(&context);
    findings.orphans = crate::orphans::list_except_self().unwrap_or_default();
    write_findings(&context, &findings);
    exit_like(termination)
}

fn read_context(path: &Path) -> Result<CallerContext> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // Only this process needs it, and it holds the environment: remove it at once.
    let _ = std::fs::remove_file(path);
    CallerContext::decode(&bytes).with_context(|| format!("decoding {}", path.display()))
}

fn give_up(context: &CallerContext, findings: &Findings) -> u8 {
    write_findings(context, findings);
    PHASEBOX_FAILED
}

fn write_findings(context: &CallerContext, findings: &Findings) {
    if let Err(error) = std::fs::write(&context.findings_path, findings.encode()) {
        eprintln!("phasebox: inner mode: cannot write {}: {error}", context.findings_path.display());
    }
}

/// Isolations asked for whose namespace is still the launcher's (or can't be read).
pub fn missing_isolations(context: &CallerContext, host: &impl Host) -> Vec<Kind> {
    context
        .expected
        .iter()
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

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(signal: libc::c_int) {
    let child = CHILD.load(Ordering::Relaxed);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, signal) };
    }
}

/// Fork, exec the command in the child, and wait for it, forwarding signals.
fn run_command(context: &CallerContext) -> Termination {
    let forwarded: SigSet = FORWARDED.iter().copied().collect();
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), None);
    // SAFETY: this process is single-threaded, so the child may do anything.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => exec_command(context),
        Ok(ForkResult::Parent { child }) => {
            CHILD.store(child.as_raw(), Ordering::Relaxed);
            let action =
                SigAction::new(SigHandler::Handler(forward_signal), SaFlags::SA_RESTART, SigSet::empty());
            for signal in FORWARDED {
                // SAFETY: the handler only calls kill().
                let _ = unsafe { sigaction(signal, &action) };
            }
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded), None);
            wait_for(child)
        }
        Err(error) => {
            eprintln!("phasebox: cannot fork: {error}");
            Termination::Exited(PHASEBOX_FAILED as i32)
        }
    }
}

fn wait_for(child: Pid) -> Termination {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Termination::Exited(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Termination::Signaled(signal as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(error) => {
                eprintln!("phasebox: waiting for the command: {error}");
                return Termination::Exited(PHASEBOX_FAILED as i32);
            }
        }
    }
}

/// In the child: the caller's signal dispositions and mask, then execve.
fn exec_command(context: &CallerContext) -> ! {
    // systemd starts services with SIGPIPE ignored; a direct child of the caller
    // would have the caller's dispositions instead.
    for signal in Signal::iterator() {
        if signal == Signal::SIGKILL || signal == Signal::SIGSTOP {
            continue;
        }
        let handler = if context.caller.ignored_signals.contains(&(signal as i32 as u32)) {
            SigHandler::SigIgn
        } else {
            SigHandler::SigDfl
        };
        // SAFETY: installing SIG_DFL/SIG_IGN is always sound.
        let _ = unsafe { sigaction(signal, &SigAction::new(handler, SaFlags::empty(), SigSet::empty())) };
    }
    let mask: SigSet =
        context.caller.blocked_signals.iter().filter_map(|&s| Signal::try_from(s as i32).ok()).collect();
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);

    let cstring = |b: &[u8]| CString::new(b).unwrap_or_default();
    let program = cstring(context.program.as_bytes());
    let argv: Vec<CString> = context.argv.iter().map(|a| cstring(a.as_bytes())).collect();
    let env: Vec<CString> = context.caller.env.iter().map(|e| cstring(e.as_bytes())).collect();
    let error = nix::unistd::execve(&program, &argv, &env).unwrap_err();
    let shown = context.argv.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    eprintln!("phasebox: {shown}: {}", error.desc());
    let code = if error == nix::errno::Errno::ENOENT { NOT_FOUND } else { NOT_EXECUTABLE };
    // SAFETY: leave the forked child without running the parent's destructors.
    unsafe { libc::_exit(code as i32) }
}

/// End this process the way the command ended, so systemd records the same status.
fn exit_like(termination: Termination) -> u8 {
    match termination {
        Termination::Exited(code) => code as u8,
        Termination::Signaled(signal) => {
            if let Ok(signal) = Signal::try_from(signal) {
                // The command already dumped core if it was going to.
                let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                // SAFETY: plain system calls on our own process.
                unsafe {
                    libc::setrlimit(libc::RLIMIT_CORE, &none);
                    let _ = sigaction(
                        signal,
                        &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty()),
                    );
                }
                let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&std::iter::once(signal).collect()), None);
                let _ = nix::sys::signal::raise(signal);
            }
            termination.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use crate::namespaces::NsId;

    fn context() -> CallerContext {
        CallerContext::example()
    }

    #[test]
    fn an_isolation_is_missing_when_the_namespace_is_the_launchers() {
        let mut host = FakeHost::new(true);
        host.namespaces =
            vec![(Kind::Network, NsId { dev: 4, ino: 1 }), (Kind::Ipc, NsId { dev: 4, ino: 9 })];
        assert_eq!(missing_isolations(&context(), &host), [Kind::Network]);
        host.namespaces =
            vec![(Kind::Network, NsId { dev: 4, ino: 8 }), (Kind::Ipc, NsId { dev: 4, ino: 9 })];
        assert!(missing_isolations(&context(), &host).is_empty());
        // A namespace that can't be read counts as missing: never assume isolation.
        host.namespaces = vec![(Kind::Ipc, NsId { dev: 4, ino: 9 })];
        assert_eq!(missing_isolations(&context(), &host), [Kind::Network]);
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
