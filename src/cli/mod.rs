//! The command line: every flag is defined once here, with its documentation, and
//! turned once into the plain settings the subcommands take (`cmd::Subcommand`):
//! nothing below this layer sees clap's types. Runs in the process the caller
//! started.

pub mod generate;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::Resettable;
use clap::{Args, CommandFactory, FromArgMatches, Parser};

use crate::cmd::Subcommand;
use crate::plan::Flags;
use crate::plan::mode::Choice;
use crate::plan::policy::Inputs;
use crate::systemd::Manager;

/// Run one build phase in a sandbox, with a private network (only loopback) and
/// private IPC, and kill everything it leaves behind: a transient systemd unit where
/// systemd runs, namespaces alone where it does not.
#[derive(Parser, Debug)]
#[command(name = "phasebox", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Run COMMAND in a sandbox (a transient systemd service or scope, or namespaces
    /// alone) and exit with its status.
    Run(Deferred<Box<RunArgs>>),
    /// Print the per-phase policy that `run --phase` applies: portage's decisions,
    /// changed by the ebuild's PROPERTIES/RESTRICT and by the config file.
    Policy(Deferred<PolicyArgs>),
    /// Print a file written by `run --report` as a table, the longest phase first.
    Report(Deferred<ReportArgs>),
    /// List the running phases: service and scope phases of the system manager and
    /// of the caller's user manager, and the caller's unshare-mode phases. Exits 1
    /// when a manager could not be asked.
    Ps,
    /// Stop running phases cleanly, as SIGTERM to their phasebox would (which then
    /// exits 143). Exits 1 when a target matches no running phase or one could not
    /// be stopped.
    Stop(Deferred<StopArgs>),
    /// Print what this host can do (systemd and its bus, namespaces, cgroups, the
    /// portage user) and what `run --phase` will do for each phase, with the command
    /// that fixes anything missing. Exits 0 when every default isolation is
    /// available to the caller, 1 when one is missing, 125 when doctor itself fails.
    Doctor(Deferred<DoctorArgs>),
    /// Internal: ExecStart of the unit; restores the caller's context and runs the command.
    #[command(name = "__inner", hide = true)]
    Inner(Deferred<InnerArgs>),
    /// For packagers: print the man page or a shell's completion script, generated
    /// from these definitions.
    #[command(hide = true)]
    Generate(Deferred<GenerateArgs>),
}

pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  N        the command's own exit status
  123      the phase ran out of memory (--memory-max, MemoryMax=) and was killed
  124      the phase ran past --timeout (RuntimeMaxSec=) and was stopped
  125      phasebox itself failed (bad flag, systemd unreachable, an isolation missing)
  126      the command was found but could not be executed
  127      the command was not found
  128+N    the command was killed by signal N, or phasebox was stopped by
           SIGINT, SIGTERM or SIGHUP (130, 143, 129), which stop the whole phase";

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Set a unit property, in systemd-run's syntax (e.g. MemoryMax=2G, CPUQuota=150%,
    /// TasksMax=512, RuntimeMaxSec=30min, Nice=10, LimitNOFILE=4096). Repeatable.
    /// Unknown or malformed properties are refused before anything starts, and so are
    /// those the chosen mode can't honour. Limit*, Nice and NoNewPrivileges apply to
    /// the command alone, in every mode (phasebox sets them just before its execve);
    /// resource control needs systemd.
    #[arg(short = 'p', long = "property", value_name = "NAME=VALUE")]
    pub properties: Vec<String>,

    /// Limit the phase's memory (MemoryMax=): bytes with K, M, G or T, a percentage
    /// of RAM, or "infinity". A phase that exceeds it is killed and phasebox exits 123.
    /// Needs systemd: service or scope mode.
    #[arg(long, value_name = "SIZE")]
    pub memory_max: Option<String>,

    /// Limit the phase's CPU time (CPUQuota=), as a percentage of one CPU: "150%" is
    /// one and a half CPUs. Needs systemd: service or scope mode.
    #[arg(long, value_name = "PERCENT")]
    pub cpu_quota: Option<String>,

    /// Limit how many processes and threads the phase may have at once (TasksMax=).
    /// Needs systemd: service or scope mode.
    #[arg(long, value_name = "N")]
    pub tasks_max: Option<String>,

    /// Stop the phase after DURATION ("90", "30min", "1h 30min"), as SIGTERM to
    /// phasebox would, and exit 124. systemd enforces it in service mode
    /// (RuntimeMaxSec=), phasebox itself in scope and unshare modes.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Append one JSON object describing the phase (what ran, where, how it ended,
    /// what it used, the orphans killed) to FILE; see the README for the fields.
    /// `phasebox report FILE` prints such a file as a table.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Name of the transient unit (".service" or ".scope" is appended).
    /// Default: phasebox-<random>, or with --phase phasebox-CATEGORY-PF-PHASE-<random>.
    #[arg(long, value_name = "NAME")]
    pub unit: Option<String>,

    /// Slice to place the unit in.
    #[arg(long, value_name = "SLICE", default_value = "phasebox.slice")]
    pub slice: String,

    /// Description of the unit, shown by systemctl. Default: the command line, or
    /// with --phase "phasebox: CATEGORY/PF PHASE phase".
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,

    /// Set an environment variable for the command, on top of the caller's
    /// environment. NAME alone keeps the caller's value. Repeatable.
    #[arg(short = 'E', long = "setenv", value_name = "NAME[=VALUE]")]
    pub setenv: Vec<OsString>,

    /// How to run the phase: as a transient systemd service, in a transient scope
    /// around phasebox's own namespaces, or with namespaces alone (no systemd).
    /// auto picks service when systemd is reachable and nothing the caller has would
    /// be lost in a service, scope when something would (a chroot, another mount
    /// namespace, --keep-fds), unshare when systemd is not reachable.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,

    /// The command needs descriptors beyond 0-2 that the caller passes down (a
    /// service gets only 0-2): auto picks scope or unshare mode.
    #[arg(long)]
    pub keep_fds: bool,

    /// Run an ebuild phase (EBUILD_PHASE or its function name: test, src_test,
    /// pkg_setup...) with portage's sandbox policy for it, as `phasebox policy`
    /// prints: setup, pretend and info keep the host's network and IPC; config,
    /// preinst, postinst, prerm and postrm are not confined at all (their command
    /// runs directly, so daemons they restart survive); every other phase is
    /// sandboxed. The isolation switches below override the policy.
    #[arg(long, value_name = "NAME")]
    pub phase: Option<String>,

    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Give the phase a private network and hostname (the default, unless --phase's
    /// policy keeps the host's).
    #[arg(long, overrides_with = "no_network")]
    pub network: bool,

    /// Do not give the phase a private network (nor hostname); keep the host's.
    #[arg(long, overrides_with = "network")]
    pub no_network: bool,

    /// Give the phase private IPC (the default, unless --phase's policy keeps the
    /// host's).
    #[arg(long, overrides_with = "no_ipc")]
    pub ipc: bool,

    /// Do not give the phase private IPC; keep the host's.
    #[arg(long, overrides_with = "ipc")]
    pub no_ipc: bool,

    /// Give the phase a PID namespace, with phasebox as its PID 1 (the default in
    /// scope and unshare modes; in service mode, phasebox's inner mode creates it).
    #[arg(long, overrides_with = "no_pid")]
    pub pid: bool,

    /// Do not give the phase a PID namespace. In unshare mode, processes the command
    /// leaves behind are then neither tracked nor killed.
    #[arg(long, overrides_with = "pid")]
    pub no_pid: bool,

    /// Talk to the caller's user service manager (the default for non-root callers).
    #[arg(long, conflicts_with = "system")]
    pub user: bool,

    /// Talk to the system service manager (the default for root).
    #[arg(long)]
    pub system: bool,

    /// Continue with a warning when an isolation can't be had (systemd did not apply
    /// it, or the kernel refused the namespace), instead of failing with status 125.
    /// The other isolations still hold.
    #[arg(long)]
    pub best_effort: bool,

    /// Do not print phasebox's own notices (killed orphans, best-effort warnings, the
    /// summary line).
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print the chosen mode and why, the isolations, the unit name and the
    /// properties sent to systemd.
    #[arg(short, long)]
    pub verbose: bool,

    /// The command to run, and its arguments.
    #[arg(value_name = "COMMAND", required = true, trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

/// What the phase policy is looked up for (`run --phase`, `policy`).
#[derive(Args, Debug, Default)]
pub struct PolicyArgs {
    /// The package the phase belongs to, as CATEGORY/PF; names the unit and selects
    /// the config file's [package."..."] tables. Default: $CATEGORY/$PF.
    #[arg(long, value_name = "CAT/PF")]
    pub package: Option<String>,

    /// The policy config file. Default: $PHASEBOX_CONFIG, else
    /// /etc/phasebox/phasebox.toml if it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The ebuild's PROPERTIES (live, test_network open the network for unpack,
    /// test). Default: $PORTAGE_PROPERTIES, else $PROPERTIES.
    #[arg(long = "properties", value_name = "WORDS")]
    pub ebuild_properties: Option<String>,

    /// The ebuild's RESTRICT (network-sandbox opens the network). Default:
    /// $PORTAGE_RESTRICT, else $RESTRICT.
    #[arg(long = "restrict", value_name = "WORDS")]
    pub ebuild_restrict: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A file of JSON records written by `phasebox run --report FILE`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// What to stop: a unit name (with or without .service/.scope), an unshare-PID
    /// from `phasebox ps`, a package as CATEGORY/PF, or every version as CATEGORY/PN.
    #[arg(value_name = "UNIT|PACKAGE", required = true)]
    pub targets: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print the report as one JSON object (schema in the README).
    #[arg(long)]
    pub json: bool,

    /// The phases are shown with the policy for these.
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    Auto,
    Service,
    Scope,
    Unshare,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// What to print: the man page phasebox(1), or the completion script for a shell.
    #[arg(value_enum)]
    pub artifact: Artifact,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Artifact {
    Man,
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct InnerArgs {
    /// The launcher's socket, where the inner mode gets the caller's context.
    pub socket: PathBuf,
}

/// A subcommand's arguments, defined only once that subcommand is parsed or
/// documented: phasebox starts once per build phase, and defining every
/// subcommand's flags at every start cost about 0.02 ms. The subcommand keeps the
/// summary its variant gives it, not that of its arguments' struct.
#[derive(Debug)]
pub struct Deferred<T>(pub T);

impl<T> std::ops::Deref for Deferred<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Args> Args for Deferred<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.defer(define::<T>)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd.defer(define::<T>)
    }
}

fn define<T: Args>(cmd: clap::Command) -> clap::Command {
    let about = Resettable::from(cmd.get_about().cloned());
    let long_about = Resettable::from(cmd.get_long_about().cloned());
    T::augment_args(cmd).about(about).long_about(long_about)
}

// The _mut forms take the values out of the matches; the others would copy them
// all first.
impl<T: FromArgMatches> FromArgMatches for Deferred<T> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Deferred)
    }
    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(matches).map(Deferred)
    }
    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

/// The clap definition, with the parts generated from other modules' tables.
pub fn command() -> clap::Command {
    let properties = crate::systemd::properties::accepted_names().join(", ");
    Cli::command().mut_subcommand("run", |run| {
        run.after_long_help(format!("Properties accepted by -p:\n  {properties}\n\n{EXIT_STATUS_HELP}"))
    })
}

/// phasebox: parse argv, then run the subcommand; the exit status. (`generate`
/// renders this very definition, so it is this layer's own.)
pub fn main() -> u8 {
    match parse().command {
        Command::Generate(args) => match generate::print(args.artifact) {
            Ok(()) => 0,
            Err(error) => crate::cmd::fail(&error.into()),
        },
        command => crate::cmd::main(command.into()),
    }
}

impl From<Command> for Subcommand {
    fn from(command: Command) -> Subcommand {
        match command {
            Command::Run(Deferred(args)) => Subcommand::Run(Box::new(Flags::from(*args))),
            Command::Policy(Deferred(args)) => Subcommand::Policy(Inputs::from(args)),
            Command::Report(Deferred(args)) => Subcommand::Report(args.file),
            Command::Ps => Subcommand::Ps,
            Command::Stop(Deferred(args)) => Subcommand::Stop(args.targets),
            Command::Doctor(Deferred(args)) => {
                Subcommand::Doctor { json: args.json, policy: Inputs::from(args.policy) }
            }
            Command::Inner(Deferred(args)) => Subcommand::Inner(args.socket),
            Command::Generate(_) => unreachable!("cli::main renders it"),
        }
    }
}

impl From<PolicyArgs> for Inputs {
    fn from(args: PolicyArgs) -> Inputs {
        Inputs {
            package: args.package,
            config: args.config,
            properties: args.ebuild_properties,
            restrict: args.ebuild_restrict,
        }
    }
}

impl From<RunArgs> for Flags {
    fn from(args: RunArgs) -> Flags {
        let switch = |on: bool, off: bool| {
            if on {
                Some(true)
            } else if off {
                Some(false)
            } else {
                None
            }
        };
        Flags {
            properties: args.properties,
            memory_max: args.memory_max,
            cpu_quota: args.cpu_quota,
            tasks_max: args.tasks_max,
            timeout: args.timeout,
            report: args.report,
            unit: args.unit,
            slice: args.slice,
            description: args.description,
            setenv: args.setenv,
            mode: match args.mode {
                ModeArg::Auto => Choice::Auto,
                ModeArg::Service => Choice::Service,
                ModeArg::Scope => Choice::Scope,
                ModeArg::Unshare => Choice::Unshare,
            },
            keep_fds: args.keep_fds,
            phase: args.phase,
            policy: Inputs::from(args.policy),
            network: switch(args.network, args.no_network),
            ipc: switch(args.ipc, args.no_ipc),
            pid: switch(args.pid, args.no_pid),
            manager: match (args.user, args.system) {
                (true, _) => Some(Manager::User),
                (false, true) => Some(Manager::System),
                (false, false) => None,
            },
            best_effort: args.best_effort,
            quiet: args.quiet,
            verbose: args.verbose,
            command: args.command,
        }
    }
}

/// Parse argv. Usage errors exit with 125 like every failure of phasebox itself
/// (clap's own default, 2, would look like the command's status).
pub fn parse() -> Cli {
    let mut matches = command().try_get_matches().unwrap_or_else(|error| exit_on(error));
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|error| exit_on(error))
}

fn exit_on(error: clap::Error) -> ! {
    let _ = error.print();
    std::process::exit(if error.use_stderr() { crate::protocol::status::PHASEBOX_FAILED as i32 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Settings;
    use crate::plan::mode::Reach;
    use crate::sys::namespaces::Set;

    #[test]
    fn definitions_are_consistent() {
        command().debug_assert();
    }

    #[test]
    fn long_help_lists_the_properties_and_exit_statuses() {
        let mut run = command().find_subcommand("run").unwrap().clone();
        let help = run.render_long_help().to_string();
        assert!(help.contains("MemoryMax, MemoryHigh") && help.contains("128+N"), "{help}");
    }

    #[test]
    fn command_arguments_that_look_like_flags_belong_to_the_command() {
        let cli = Cli::try_parse_from(["phasebox", "run", "-q", "ls", "-l", "--all"]).unwrap();
        let Command::Run(Deferred(args)) = cli.command else { panic!("not run") };
        assert!(args.quiet);
        assert_eq!(args.command, ["ls", "-l", "--all"]);
    }

    #[test]
    fn subcommands_keep_their_own_summary() {
        let mut cli = command();
        cli.build();
        let about = |name: &str| cli.find_subcommand(name).unwrap().get_about().unwrap().to_string();
        assert!(about("policy").starts_with("Print the per-phase policy"), "{}", about("policy"));
        assert!(about("doctor").starts_with("Print what this host can do"), "{}", about("doctor"));
        assert!(cli.find_subcommand("doctor").unwrap().get_arguments().any(|a| a.get_id() == "package"));
    }

    fn wanted(argv: &[&str], reach: &Reach) -> Set {
        let cli = Cli::try_parse_from(["phasebox", "run"].iter().chain(argv).chain(&["true"])).unwrap();
        let Command::Run(Deferred(args)) = cli.command else { panic!("not run") };
        Settings::resolve(Flags::from(*args)).unwrap().plan(reach).unwrap().wanted
    }

    #[test]
    fn switches_override_the_phase_policy() {
        let found = Reach::Found("/run/dbus/system_bus_socket".into());
        let all = Set::all();
        assert_eq!(wanted(&["--mode", "unshare"], &found), all);
        assert_eq!(wanted(&["--mode", "service"], &found), Set { pid: false, ..all });
        let test = ["--mode", "service", "--config", "/dev/null", "--phase", "src_test"];
        assert_eq!(wanted(&test, &found), all);
        let unshare = ["--mode", "unshare", "--config", "/dev/null"];
        assert_eq!(
            wanted(&[&unshare[..], &["--phase", "test", "--no-network", "--no-pid"]].concat(), &found),
            Set { network: false, uts: false, ..Set { pid: false, ..all } }
        );
        let setup = [&unshare[..], &["--phase", "setup"]].concat();
        assert_eq!(wanted(&setup, &found), Set { pid: true, ..Set::default() });
        assert_eq!(wanted(&[&setup[..], &["--network", "--ipc"]].concat(), &found), all);
        let live = [&unshare[..], &["--properties", "live", "--phase", "unpack"]].concat();
        assert_eq!(wanted(&live, &found), Set { network: false, uts: false, ..all });
    }

    #[test]
    fn a_command_is_required() {
        assert!(Cli::try_parse_from(["phasebox", "run"]).is_err());
    }
}
