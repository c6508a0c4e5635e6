// phasebox starts once per build phase: it does without std's runtime start-up
// (see `startup` for what of it is done by hand instead).
#![no_main]

use phasebox::{cli, doctor, exit, generate, inner, policy, ps, report, run, startup, stop};

/// The entry point, called by the C runtime.
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    startup::prepare();
    // A panic is phasebox's own failure, not a status of the command.
    let code = std::panic::catch_unwind(dispatch).unwrap_or(exit::PHASEBOX_FAILED);
    // exit() flushes stdout, as returning from std's main would.
    std::process::exit(i32::from(code))
}

fn dispatch() -> u8 {
    match cli::parse().command {
        cli::Command::Run(cli::Deferred(args)) => run::run(*args),
        cli::Command::Policy(args) => match policy::print(&args) {
            Ok(()) => 0,
            Err(error) => report::fail(&error.into()),
        },
        cli::Command::Report(args) => match report::table::print(&args.file) {
            Ok(()) => 0,
            Err(error) => report::fail(&error.into()),
        },
        cli::Command::Ps => ps::print(),
        cli::Command::Stop(args) => match stop::stop(&args.targets) {
            Ok(()) => 0,
            Err(error) => {
                phasebox::notice!("phasebox: {error:#}");
                1
            }
        },
        cli::Command::Doctor(args) => match doctor::main(&args) {
            Ok(code) => code,
            Err(error) => report::fail(&error.into()),
        },
        cli::Command::Inner(args) => inner::main(&args.context),
        cli::Command::Generate(args) => match generate::print(args.artifact) {
            Ok(()) => 0,
            Err(error) => report::fail(&error.into()),
        },
    }
}
