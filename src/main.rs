use std::process::ExitCode;

use phasebox::{backend, cli, generate, inner, plan, policy, report};

fn main() -> ExitCode {
    let code = match cli::parse().command {
        cli::Command::Run(args) => {
            let quiet = args.quiet;
            match plan::Plan::from_args(args).and_then(backend::launch) {
                Ok(outcome) => report::finish(&outcome, quiet),
                Err(failure) => report::fail(&failure),
            }
        }
        cli::Command::Policy(args) => match policy::print(&args) {
            Ok(()) => 0,
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
