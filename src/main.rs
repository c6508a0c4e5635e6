use std::process::ExitCode;

use phasebox::{cli, doctor, generate, inner, policy, ps, report, run, stop};

fn main() -> ExitCode {
    let code = match cli::parse().command {
        cli::Command::Run(args) => run::run(*args),
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
                eprintln!("phasebox: {error:#}");
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
    };
    ExitCode::from(code)
}
