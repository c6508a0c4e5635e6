//! Start the command: the caller's signal dispositions and mask, then execve, with
//! everything it needs made beforehand so that starting it makes system calls only.
//! Spawned, the command starts in a child that shares phasebox's memory until its
//! execve, as posix_spawn's child does: no page tables are copied and no page is
//! copied on write, which a fork of phasebox costs. posix_spawn itself can't wait
//! for a gate, set PR_SET_PDEATHSIG or give signals the caller ignored back to the
//! command.
//!
//! Process: the command's child until its execve, sharing its parent's memory; it
//! dies with its parent (PR_SET_PDEATHSIG). Signals: all blocked from the spawn to
//! the execve, then the caller's mask and dispositions. Reports: an execve that
//! failed, as the errno its parent reads (126/127).

use std::ffi::{CString, c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use nix::unistd::Pid;

use crate::phase::terminal_guard::TerminalGuard;
use crate::protocol::context::{CallerContext, Setting};
use crate::protocol::status::{NOT_EXECUTABLE, NOT_FOUND, PHASEBOX_FAILED};
use crate::sys::process;

/// PID 1's end of its channel, on which the command waits for `Start` before its
/// execve; the channel closing first (the launcher could not finish setting up)
/// means it never runs.
pub struct Gate(pub std::os::fd::RawFd);

/// The child's stack; it only makes system calls.
const STACK_SIZE: usize = 64 * 1024;

pub struct Exec {
    program: CString,
    // Owners of the strings `argv` and `env` point into.
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    env: Vec<*const c_char>,
    /// The signals the caller ignored; all others get their default action.
    ignored: Vec<c_int>,
    mask: libc::sigset_t,
    /// -p settings of the command's process, applied just before execve.
    settings: Vec<Setting>,
    /// The terminal guard, for a confined phase.
    guard: Option<TerminalGuard>,
    /// Set by the child when applying settings[failed_setting] failed, with errno:
    /// the child shares this memory until it execs or exits.
    failed_errno: AtomicI32,
    failed_setting: AtomicUsize,
    /// "phasebox: NAME: ", for when execve fails.
    failure_prefix: Vec<u8>,
}

/// What failed_setting says when the terminal guard could not be installed.
const GUARD: usize = usize::MAX;

impl Exec {
    /// `confined`: the phase is sandboxed, and its command gets the terminal guard.
    pub fn prepare(context: &CallerContext, confined: bool) -> Exec {
        let cstring = |b: &[u8]| CString::new(b).unwrap_or_default();
        let argv: Vec<CString> = context.argv.iter().map(|a| cstring(a.as_bytes())).collect();
        let env: Vec<CString> = context.caller.env.iter().map(|e| cstring(e.as_bytes())).collect();
        let pointers = |strings: &[CString]| {
            strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(ptr::null())).collect::<Vec<_>>()
        };
        // SAFETY: sigemptyset/sigaddset on a local sigset_t.
        let mask = unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            for &signal in &context.caller.blocked_signals {
                libc::sigaddset(&mut mask, signal as c_int);
            }
            mask
        };
        let shown = context.argv.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
        Exec {
            program: cstring(context.program.as_bytes()),
            argv: pointers(&argv),
            env: pointers(&env),
            _strings: argv.into_iter().chain(env).collect(),
            ignored: context.caller.ignored_signals.iter().map(|&s| s as c_int).collect(),
            mask,
            settings: context.settings.clone(),
            guard: confined.then(TerminalGuard::new),
            failed_errno: AtomicI32::new(0),
            failed_setting: AtomicUsize::new(0),
            failure_prefix: format!("phasebox: {shown}: ").into_bytes(),
        }
    }

    /// Become the command (this process must be single-threaded); on failure, exit
    /// 126 or 127. With a gate, only once the gate opens.
    pub fn exec_here(&self, gate: Option<&Gate>) -> ! {
        // systemd starts services with SIGPIPE ignored, and this process forwards
        // signals: the command gets the caller's dispositions instead.
        for signal in 1..32 {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let handler = if self.ignored.contains(&signal) { libc::SIG_IGN } else { libc::SIG_DFL };
            // SAFETY: installing SIG_DFL/SIG_IGN is always sound.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler;
                libc::sigaction(signal, &action, ptr::null_mut());
            }
        }
        // SAFETY: a valid sigset_t.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.mask, ptr::null_mut()) };
        let applied = self
            .settings
            .iter()
            .enumerate()
            .map(|(index, s)| process::apply(s.setting).map_err(|e| (index, e)));
        let guarded = self.guard.iter().map(|guard| guard.install().map_err(|e| (GUARD, e)));
        if let Some(Err((index, errno))) = applied.chain(guarded).find(Result::is_err) {
            self.failed_setting.store(index, Ordering::Relaxed);
            self.failed_errno.store(errno, Ordering::Relaxed);
            // SAFETY: leave without running any destructor of the parent's.
            unsafe { libc::_exit(PHASEBOX_FAILED as c_int) }
        }
        if let Some(Gate(gate)) = gate
            && !crate::protocol::message::started(*gate)
        {
            // SAFETY: leave without running any destructor of the parent's.
            unsafe { libc::_exit(PHASEBOX_FAILED as c_int) }
        }
        // SAFETY: NUL-terminated strings and NULL-terminated arrays owned by self.
        unsafe { libc::execve(self.program.as_ptr(), self.argv.as_ptr(), self.env.as_ptr()) };
        let error = nix::errno::Errno::last();
        let desc = error.desc().as_bytes();
        // SAFETY: writes of owned buffers, then leave without destructors.
        unsafe {
            for part in [&self.failure_prefix[..], desc, b"\n"] {
                libc::write(2, part.as_ptr().cast(), part.len());
            }
            let code = if error == nix::errno::Errno::ENOENT { NOT_FOUND } else { NOT_EXECUTABLE };
            libc::_exit(code as c_int)
        }
    }

    /// Start the command in a child that shares this process's memory until its
    /// execve (or exit), this process waiting meanwhile. The child is killed if this
    /// process dies. All signals stay blocked here until it has started: no handler
    /// of ours may run in it. A -p setting the child could not apply is an error,
    /// the child reaped.
    pub fn spawn(&self, gate: Option<&Gate>) -> Result<Pid, String> {
        // Left uninitialised: only the pages the child touches are ever faulted in.
        let mut stack: Vec<u8> = Vec::with_capacity(STACK_SIZE);
        let child = Child { exec: self, gate, parent: nix::unistd::getpid().as_raw() };
        // SAFETY: sigfillset on a local set; sigprocmask with valid pointers.
        let previous = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_SETMASK, &all, &mut previous);
            previous
        };
        // The stack grows down from its 16-byte aligned top.
        let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
        // SAFETY: CLONE_VFORK suspends this process until the child has exec'd or
        // exited, so `child` and `stack` outlive its use of them.
        let pid = unsafe {
            libc::clone(
                start_child,
                top as *mut c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &child as *const Child as *mut c_void,
            )
        };
        let result = if pid < 0 {
            Err(format!("cannot start the command: {}", nix::errno::Errno::last()))
        } else {
            Ok(Pid::from_raw(pid))
        };
        // SAFETY: restores the mask saved above.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &previous, ptr::null_mut()) };
        let child = result?;
        let errno = self.failed_errno.load(Ordering::Relaxed);
        if errno != 0 {
            let _ = nix::sys::wait::waitpid(child, None);
            let what = match self.failed_setting.load(Ordering::Relaxed) {
                GUARD => "guarding the terminal (a seccomp filter against TIOCSTI)",
                index => &self.settings[index].shown,
            };
            return Err(format!("{what}: {}", nix::errno::Errno::from_raw(errno).desc()));
        }
        Ok(child)
    }
}

struct Child<'a> {
    exec: &'a Exec,
    gate: Option<&'a Gate>,
    parent: libc::pid_t,
}

extern "C" fn start_child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Child that spawn() keeps alive while it is suspended.
    let child = unsafe { &*(arg as *const Child) };
    crate::phase::supervise::die_with(child.parent);
    child.exec.exec_here(child.gate)
}
