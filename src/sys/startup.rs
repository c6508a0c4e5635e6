//! The part of std's runtime start-up that phasebox needs, done by hand: main.rs
//! does without that runtime, whose start-up (a read of /proc/self/maps to place
//! a stack guard, an alternate signal stack) is a measurable part of a phase's
//! cost in unshare mode.
//! - Descriptors 0-2 are open, so nothing phasebox opens lands on them.
//! - SIGPIPE is ignored, so a write to a closed pipe fails with EPIPE instead of
//!   killing phasebox; but first the caller's disposition is noted, since the
//!   command must get the caller's, not ours.

use std::sync::atomic::{AtomicBool, Ordering};

static CALLER_IGNORES_SIGPIPE: AtomicBool = AtomicBool::new(false);

pub fn prepare() {
    for fd in 0..3 {
        // SAFETY: fcntl and open on plain integers and a constant path.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                // The lowest free descriptor: the closed one.
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
    // SAFETY: installing SIG_IGN is always sound; `old` receives the previous action.
    unsafe {
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPIPE, &ignore, &mut old) == 0 {
            CALLER_IGNORES_SIGPIPE.store(old.sa_sigaction == libc::SIG_IGN, Ordering::Relaxed);
        }
    }
}

/// Whether the caller had SIGPIPE ignored when phasebox started.
pub fn caller_ignores_sigpipe() -> bool {
    CALLER_IGNORES_SIGPIPE.load(Ordering::Relaxed)
}
