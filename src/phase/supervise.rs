//! Run the command (started by `exec`) as a child and wait for it: signals passed
//! on to it, and (as a namespace's PID 1) every orphan reaped along the way.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::phase::exec::{Exec, Gate};
use crate::protocol::context::CallerContext;
use crate::protocol::status::{PHASEBOX_FAILED, Termination};

/// Signals sent to the supervising process are passed on to its child.
pub const FORWARDED: [Signal; 6] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

/// After a stopping signal, how long the phase may take to end before it is killed.
pub const STOP_GRACE_SECONDS: u32 = 5;

static CHILD: AtomicI32 = AtomicI32::new(0);
/// This process's grace period: longer than its child's when the child is itself a
/// phasebox process that gives the command its own, so the command's ends first
/// and the child still reports how it ended (see `Supervisor`).
static GRACE: AtomicU32 = AtomicU32::new(STOP_GRACE_SECONDS);
static STOPPED_BY: AtomicI32 = AtomicI32::new(0);
static TIMED_OUT: AtomicBool = AtomicBool::new(false);

/// Remember the first SIGINT, SIGTERM or SIGHUP this process got: phasebox then exits
/// 128+N whatever the command made of it. True the first time.
pub fn record_stop(signal: libc::c_int) -> bool {
    matches!(signal, libc::SIGINT | libc::SIGTERM | libc::SIGHUP)
        && STOPPED_BY.compare_exchange(0, signal, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// The stopping signal this process got, if any.
pub fn stopped_by() -> Option<i32> {
    Some(STOPPED_BY.load(Ordering::Relaxed)).filter(|&s| s != 0)
}

extern "C" fn forward_signal(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if record_stop(signal) {
        // A command that ignores being stopped is killed after the grace period.
        // SAFETY: alarm is async-signal-safe.
        unsafe { libc::alarm(GRACE.load(Ordering::Relaxed)) };
    }
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

/// SIGALRM: the first one of --timeout stops the child as SIGTERM to us would and
/// starts the grace period; the one ending a grace period kills the child.
extern "C" fn on_alarm(_: libc::c_int) {
    let child = CHILD.load(Ordering::Relaxed);
    let stopping = STOPPED_BY.load(Ordering::Relaxed) != 0 || TIMED_OUT.swap(true, Ordering::Relaxed);
    // SAFETY: kill and alarm are async-signal-safe.
    unsafe {
        if stopping {
            if child > 0 {
                libc::kill(child, libc::SIGKILL);
            }
        } else {
            if child > 0 {
                libc::kill(child, libc::SIGTERM);
            }
            libc::alarm(GRACE.load(Ordering::Relaxed));
        }
    }
}

/// --timeout where phasebox enforces it: after `limit`, stop the phase (the child
/// this process spawns) as SIGTERM to phasebox would. Call before forking.
pub fn stop_after(limit: std::time::Duration) {
    let action = SigAction::new(SigHandler::Handler(on_alarm), SaFlags::SA_RESTART, SigSet::empty());
    // SAFETY: the handler only calls kill() and alarm().
    let _ = unsafe { sigaction(Signal::SIGALRM, &action) };
    let at = libc::timeval {
        tv_sec: limit.as_secs() as libc::time_t,
        tv_usec: limit.subsec_micros().max(u32::from(limit.is_zero())) as libc::suseconds_t,
    };
    let timer = libc::itimerval { it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 }, it_value: at };
    // SAFETY: a valid itimerval; fork() does not pass the timer on to children.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
}

/// Whether --timeout stopped the phase.
pub fn timed_out() -> bool {
    TIMED_OUT.load(Ordering::Relaxed)
}

/// Which phasebox process a child forked by `spawn_forwarding` is: how many
/// supervisors, itself included, stand between this process and the command.
#[derive(Debug, Clone, Copy)]
pub enum Supervisor {
    /// A PID namespace's PID 1, which runs the command.
    Pid1,
    /// Scope mode's isolator, which runs the command or forks PID 1.
    Isolator,
}

/// Fork; the child runs `child` (which should end the process itself), this process
/// passes the FORWARDED signals on to it. The child is killed if this process dies,
/// so a phase never outlives a killed phasebox; on a stop or --timeout, only after
/// the child's own grace period, so that it still reports. Returns the child's PID.
pub fn spawn_forwarding(role: Supervisor, child: impl FnOnce()) -> nix::Result<Pid> {
    let levels = match role {
        Supervisor::Pid1 => 1,
        Supervisor::Isolator => 2,
    };
    GRACE.store(STOP_GRACE_SECONDS + levels, Ordering::Relaxed);
    forwarding(|previous| {
        let parent = nix::unistd::getpid();
        // SAFETY: every process that calls this is single-threaded.
        match unsafe { fork() }? {
            ForkResult::Parent { child } => Ok(child),
            ForkResult::Child => {
                GRACE.store(STOP_GRACE_SECONDS, Ordering::Relaxed);
                die_with(parent.as_raw());
                let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(previous), None);
                child();
                // SAFETY: never return into the parent's code in the child.
                unsafe { libc::_exit(PHASEBOX_FAILED as i32) }
            }
        }
    })
}

/// In a child just started: be killed when `parent` dies, and if it already has,
/// leave at once. Only system calls: it also runs in a child sharing its parent's
/// memory.
pub fn die_with(parent: libc::pid_t) {
    // SAFETY: a prctl with plain integer arguments, getppid, and _exit without
    // running any destructor of the parent's.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // The parent may have died before that: then we are reparented (a new
        // PID namespace's PID 1 sees 0 here; it learns from its channel instead).
        let ppid = libc::getppid();
        if ppid != parent && ppid != 0 {
            libc::_exit(PHASEBOX_FAILED as libc::c_int);
        }
    }
}

/// Start a child with `start`, with the FORWARDED signals blocked until they are
/// passed on to it (and SIGALRM ends its grace period). `start` gets the signal
/// mask to restore.
fn forwarding(start: impl FnOnce(&SigSet) -> nix::Result<Pid>) -> nix::Result<Pid> {
    let forwarded: SigSet = FORWARDED.iter().copied().collect();
    let mut previous = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), Some(&mut previous))?;
    let started = start(&previous);
    if let Ok(child) = started {
        CHILD.store(child.as_raw(), Ordering::Relaxed);
        let flags = SaFlags::SA_RESTART | SaFlags::SA_SIGINFO;
        let action = SigAction::new(SigHandler::SigAction(forward_signal), flags, SigSet::empty());
        for signal in FORWARDED {
            // SAFETY: the handler only calls kill() and alarm().
            let _ = unsafe { sigaction(signal, &action) };
        }
        let alarm = SigAction::new(SigHandler::Handler(on_alarm), SaFlags::SA_RESTART, SigSet::empty());
        // SAFETY: the handler only calls kill() and alarm().
        let _ = unsafe { sigaction(Signal::SIGALRM, &alarm) };
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&previous), None)?;
    started
}

/// Start the command and wait for it. As a namespace's PID 1 (`reap_all`), also
/// reap every orphan that is reparented here meanwhile. With a gate, the command
/// is started at once but execs only once the gate opens. An error: the command
/// could not be started.
pub fn run_command(exec: &Exec, reap_all: bool, gate: Option<Gate>) -> Result<Termination, String> {
    let mut refused = None;
    let started = forwarding(|_| {
        exec.spawn(gate.as_ref()).map_err(|error| {
            refused = Some(error);
            nix::errno::Errno::ECANCELED
        })
    });
    match started {
        Ok(child) => Ok(wait_for(child, reap_all)),
        Err(error) => Err(refused.unwrap_or_else(|| format!("cannot start the command: {error}"))),
    }
}

/// Wait for `child`; with `reap_all`, reap any other child that ends meanwhile.
/// Once reaped, its PID may be reused: no signal is passed on to it any more.
pub fn wait_for(child: Pid, reap_all: bool) -> Termination {
    let termination = wait_until_reaped(child, reap_all);
    let _ = CHILD.compare_exchange(child.as_raw(), 0, Ordering::Relaxed, Ordering::Relaxed);
    termination
}

fn wait_until_reaped(child: Pid, reap_all: bool) -> Termination {
    let target = if reap_all { None } else { Some(child) };
    loop {
        match waitpid(target, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return Termination::Exited(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                return Termination::Signaled(signal as i32);
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(error) => {
                crate::notice!("phasebox: waiting for the command: {error}");
                return Termination::Exited(PHASEBOX_FAILED as i32);
            }
        }
    }
}

/// The caller's signal dispositions and mask, then execve; on failure, exit 126/127.
pub fn exec_command(context: &CallerContext) -> ! {
    Exec::prepare(context, false).exec_here(None)
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
