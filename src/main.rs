// phasebox starts once per build phase: it does without std's runtime start-up
// (see `startup` for what of it is done by hand instead).
#![no_main]

use phasebox::cli;
use phasebox::protocol::status::PHASEBOX_FAILED;
use phasebox::sys::startup;

/// The entry point, called by the C runtime.
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    startup::prepare();
    // A panic is phasebox's own failure, not a status of the command.
    let code = std::panic::catch_unwind(cli::main).unwrap_or(PHASEBOX_FAILED);
    // exit() flushes stdout, as returning from std's main would.
    std::process::exit(i32::from(code))
}
