//! Start the command: the caller's signal dispositions and mask, then execve, with
//! everything it needs made beforehand so that starting it makes system calls only.
//! Spawned, the command starts in a child that shares phasebox's memory until its
//! execve, as posix_spawn's child does: no page tables are copied and no page is
//! copied on write, which a fork of phasebox costs (a quarter of a millisecond in a
//! PID namespace's PID 1 here). posix_spawn itself can't wait for a gate, set
//! PR_SET_PDEATHSIG or give signals the caller ignored back to the command.

use std::ffi::{CString, c_char, c_int, c_void};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::ptr;

use nix::unistd::Pid;

use crate::context::CallerContext;
use crate::exit::{NOT_EXECUTABLE, NOT_FOUND, PHASEBOX_FAILED};

/// What the launcher writes one byte to once the command may run; closing it
/// unwritten (the launcher could not finish setting up) means it never runs.
pub struct Gate(pub File);

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
    /// "phasebox: NAME: ", for when execve fails.
    failure_prefix: Vec<u8>,
}

impl Exec {
    pub fn prepare(context: &CallerContext) -> Exec {
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
        if let Some(Gate(gate)) = gate
            && (&*gate).read_exact(&mut [0u8]).is_err()
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
    /// of ours may run in it.
    pub fn spawn(&self, gate: Option<&Gate>) -> nix::Result<Pid> {
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
        let result = if pid < 0 { Err(nix::errno::Errno::last()) } else { Ok(Pid::from_raw(pid)) };
        // SAFETY: restores the mask saved above.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &previous, ptr::null_mut()) };
        result
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
    crate::supervise::die_with(child.parent);
    child.exec.exec_here(child.gate)
}
