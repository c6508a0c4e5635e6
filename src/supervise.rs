//! Run the command as a child and wait for it: the caller's signal dispositions and
//! mask for the command, signals passed on to it, and (as a namespace's PID 1) every
//! orphan reaped along the way.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::context::CallerContext;
use crate::exit::{NOT_EXECUTABLE, NOT_FOUND, PHASEBOX_FAILED, Termination};

/// Signals sent to the supervising process are passed on to its child.
pub const FORWARDED: [Signal; 6] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A terminal's signals (SI_KERNEL) reach the whole foreground process group,
    // the child included: passing them on would deliver them twice.
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
    if unsafe { (*info).si_code } == libc::SI_KERNEL {
        return;
    }
    let child = CHILD.load(Ordering::Relaxed);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, signal) };
    }
}

/// Fork; the child runs `child` (which should end the process itself), this process
/// passes the FORWARDED signals on to it. Returns the child's PID.
pub fn spawn_forwarding(child: impl FnOnce()) -> nix::Result<Pid> {
    let forwarded: SigSet = FORWARDED.iter().copied().collect();
    let mut previous = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), Some(&mut previous))?;
    // SAFETY: every process that calls this is single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
            child();
            // SAFETY: never return into the parent's code in the child.
            unsafe { libc::_exit(PHASEBOX_FAILED as i32) }
        }
        Ok(ForkResult::Parent { child }) => {
            CHILD.store(child.as_raw(), Ordering::Relaxed);
            let flags = SaFlags::SA_RESTART | SaFlags::SA_SIGINFO;
            let action = SigAction::new(SigHandler::SigAction(forward_signal), flags, SigSet::empty());
            for signal in FORWARDED {
                // SAFETY: the handler only calls kill().
                let _ = unsafe { sigaction(signal, &action) };
            }
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&previous), None)?;
            Ok(child)
        }
        Err(error) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
            Err(error)
        }
    }
}

/// Start the command and wait for it. As a namespace's PID 1 (`reap_all`), also
/// reap every orphan that is reparented here meanwhile.
pub fn run_command(context: &CallerContext, reap_all: bool) -> Termination {
    match spawn_forwarding(|| exec_command(context)) {
        Ok(child) => wait_for(child, reap_all),
        Err(error) => {
            eprintln!("phasebox: cannot fork: {error}");
            Termination::Exited(PHASEBOX_FAILED as i32)
        }
    }
}

/// Wait for `child`; with `reap_all`, reap any other child that ends meanwhile.
pub fn wait_for(child: Pid, reap_all: bool) -> Termination {
    let target = if reap_all { None } else { Some(child) };
    loop {
        match waitpid(target, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return Termination::Exited(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                return Termination::Signaled(signal as i32);
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(error) => {
                eprintln!("phasebox: waiting for the command: {error}");
                return Termination::Exited(PHASEBOX_FAILED as i32);
            }
        }
    }
}

/// The caller's signal dispositions and mask, then execve; on failure, exit 126/127.
pub fn exec_command(context: &CallerContext) -> ! {
    // systemd starts services with SIGPIPE ignored, and this process forwards
    // signals: the command gets the caller's dispositions instead.
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
pub fn exit_like(termination: Termination) -> u8 {
    if let Termination::Signaled(signal) = termination
        && let Ok(signal) = Signal::try_from(signal)
    {
        // The command already dumped core if it was going to.
        let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: plain system calls on our own process.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            let _ = sigaction(signal, &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty()));
        }
        let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&std::iter::once(signal).collect()), None);
        let _ = nix::sys::signal::raise(signal);
    }
    termination.exit_code()
}
