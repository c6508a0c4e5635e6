//! Portage's per-phase sandbox policy (`--phase`): which phases keep the host's
//! network and IPC, which get a PID namespace, which are confined at all — as
//! portage's _doebuild_spawn decides, then changed by the config file.

pub mod config;
pub mod package;

use std::fmt;

use anyhow::{Result, bail};
use serde::Deserialize;

use config::Config;
use package::Package;

/// The phases portage runs through ebuild.sh or misc-functions.sh, by their
/// EBUILD_PHASE name.
#[rustfmt::skip]
pub const PHASES: &[&str] = &[
    "pretend", "setup", "nofetch", "unpack", "prepare", "configure", "compile", "test", "install",
    "instprep", "package", "preinst", "postinst", "prerm", "postrm", "config", "info", "clean", "cleanrm",
];

/// Phases that keep the host's IPC and network in portage (`_ipc_phases`).
const SHARED_PHASES: &[&str] =
    &["setup", "pretend", "config", "info", "preinst", "postinst", "prerm", "postrm"];

/// Phases portage runs in the host's PID namespace (`_global_pid_phases`): they may
/// start or restart daemons that must outlive the phase, so phasebox does not confine
/// them at all.
const UNCONFINED_PHASES: &[&str] = &["config", "preinst", "postinst", "prerm", "postrm"];

/// The canonical name of a phase given as EBUILD_PHASE (`test`) or as its function
/// (`src_test`, `pkg_setup`).
pub fn phase_name(given: &str) -> Result<&'static str> {
    let bare = given.strip_prefix("src_").or_else(|| given.strip_prefix("pkg_")).unwrap_or(given);
    match PHASES.iter().find(|p| **p == bare) {
        Some(phase) => Ok(phase),
        None => bail!("--phase {given}: not an ebuild phase (one of: {})", PHASES.join(", ")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// The phase gets its own (the sandbox).
    Private,
    /// The phase keeps the host's.
    Shared,
}

impl fmt::Display for Sharing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sharing::Private => "private",
            Sharing::Shared => "shared",
        })
    }
}

/// What one phase of one package gets, and what changed it from portage's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub network: Sharing,
    pub ipc: Sharing,
    pub pid: Sharing,
    /// Run in a unit (or namespaces) whose leftover processes are killed.
    pub confine: bool,
    /// Why it differs from the plain phase default, for `phasebox policy` and -v.
    pub notes: Vec<Note>,
}

/// What a decision sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Network,
    Ipc,
    Pid,
    Confine,
}

/// What changed a setting from the phase's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changer {
    /// The ebuild's PROPERTIES or RESTRICT ("PROPERTIES=live").
    Ebuild(&'static str),
    /// A table of the config file (`config [phase."test"]`).
    Config(String),
}

/// One change of a decision, and what made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub field: Field,
    pub by: Changer,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = match self.field {
            Field::Network => "network",
            Field::Ipc => "ipc",
            Field::Pid => "pid",
            Field::Confine => "confine",
        };
        match &self.by {
            Changer::Ebuild(flag) => write!(f, "{field}: {flag}"),
            Changer::Config(table) => write!(f, "{field}: {table}"),
        }
    }
}

impl Decision {
    /// The notes as one text ("network: PROPERTIES=live; ipc: config [...]").
    pub fn notes_text(&self) -> String {
        self.notes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    }
}

/// The ebuild's PROPERTIES and RESTRICT, which open the network for some phases.
#[derive(Debug, Clone, Default)]
pub struct EbuildFlags {
    pub properties: Vec<String>,
    pub restrict: Vec<String>,
}

impl EbuildFlags {
    /// From the values given, else from the phase environment portage sets (the
    /// USE-reduced PORTAGE_* variables first).
    pub fn new(properties: Option<&str>, restrict: Option<&str>) -> EbuildFlags {
        let words = |given: Option<&str>, names: [&str; 2]| -> Vec<String> {
            let text = given.map(str::to_string).or_else(|| names.iter().find_map(|n| std::env::var(n).ok()));
            text.unwrap_or_default().split_whitespace().map(str::to_string).collect()
        };
        EbuildFlags {
            properties: words(properties, ["PORTAGE_PROPERTIES", "PROPERTIES"]),
            restrict: words(restrict, ["PORTAGE_RESTRICT", "RESTRICT"]),
        }
    }

    fn has(list: &[String], word: &str) -> bool {
        list.iter().any(|w| w == word)
    }
}

/// Portage's decision for a phase, then the config file's changes for the package.
pub fn decide(phase: &str, package: Option<&Package>, flags: &EbuildFlags, config: &Config) -> Decision {
    let shared = SHARED_PHASES.contains(&phase);
    let mut decision = Decision {
        network: if shared { Sharing::Shared } else { Sharing::Private },
        ipc: if shared { Sharing::Shared } else { Sharing::Private },
        pid: if UNCONFINED_PHASES.contains(&phase) { Sharing::Shared } else { Sharing::Private },
        confine: !UNCONFINED_PHASES.contains(&phase),
        notes: Vec::new(),
    };
    let opens_network = [
        (phase == "unpack" && EbuildFlags::has(&flags.properties, "live"), "PROPERTIES=live"),
        (phase == "test" && EbuildFlags::has(&flags.properties, "test_network"), "PROPERTIES=test_network"),
        (EbuildFlags::has(&flags.restrict, "network-sandbox"), "RESTRICT=network-sandbox"),
    ];
    if let Some((_, flag)) = opens_network.iter().find(|(applies, _)| *applies)
        && decision.network == Sharing::Private
    {
        decision.network = Sharing::Shared;
        decision.notes.push(Note { field: Field::Network, by: Changer::Ebuild(flag) });
    }
    for (table, change) in config.changes(phase, package) {
        let mut apply = |which: Field, field: &mut Sharing, value: Option<Sharing>| {
            if let Some(value) = value
                && *field != value
            {
                *field = value;
                decision.notes.push(Note { field: which, by: Changer::Config(table.clone()) });
            }
        };
        apply(Field::Network, &mut decision.network, change.network);
        apply(Field::Ipc, &mut decision.ipc, change.ipc);
        apply(Field::Pid, &mut decision.pid, change.pid);
        if let Some(confine) = change.confine
            && decision.confine != confine
        {
            decision.confine = confine;
            decision.notes.push(Note { field: Field::Confine, by: Changer::Config(table.clone()) });
        }
    }
    decision
}

/// What the phase policy is looked up for, as the command line gave it.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// CATEGORY/PF; else $CATEGORY/$PF.
    pub package: Option<String>,
    /// The config file; else $PHASEBOX_CONFIG, else /etc/phasebox/phasebox.toml.
    pub config: Option<std::path::PathBuf>,
    /// The ebuild's PROPERTIES and RESTRICT; else from portage's environment.
    pub properties: Option<String>,
    pub restrict: Option<String>,
}

/// `run --phase`: the phase, its package and what the policy gives it.
#[derive(Debug, Clone)]
pub struct PhaseRun {
    pub phase: &'static str,
    pub package: Option<Package>,
    pub decision: Decision,
}

impl PhaseRun {
    pub fn resolve(given: &str, args: &Inputs) -> Result<PhaseRun> {
        let phase = phase_name(given)?;
        let (package, flags, config) = inputs(args)?;
        let decision = decide(phase, package.as_ref(), &flags, &config);
        Ok(PhaseRun { phase, package, decision })
    }

    /// The unit's Description: what a person looking at systemctl wants to know.
    pub fn description(&self) -> String {
        match &self.package {
            Some(package) => format!("phasebox: {package} {} phase", self.phase),
            None => format!("phasebox: {} phase", self.phase),
        }
    }
}

/// The package, the ebuild's flags and the config file, from flags or environment.
pub fn inputs(args: &Inputs) -> Result<(Option<Package>, EbuildFlags, Config)> {
    let package = match &args.package {
        Some(text) => Some(Package::parse(text)?),
        None => Package::from_environment(),
    };
    let flags = EbuildFlags::new(args.properties.as_deref(), args.restrict.as_deref());
    Ok((package, flags, Config::load(args.config.as_deref())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(properties: &str, restrict: &str) -> EbuildFlags {
        EbuildFlags { properties: vec![properties.into()], restrict: vec![restrict.into()] }
    }

    fn plain(phase: &str) -> Decision {
        decide(phase, None, &EbuildFlags::default(), &Config::default())
    }

    #[test]
    fn phases_by_either_name() {
        assert_eq!(phase_name("src_test").unwrap(), "test");
        assert_eq!(phase_name("pkg_setup").unwrap(), "setup");
        assert_eq!(phase_name("compile").unwrap(), "compile");
        let error = phase_name("src_bogus").unwrap_err().to_string();
        assert!(error.contains("not an ebuild phase") && error.contains("compile"), "{error}");
        assert!(phase_name("depend").is_err());
    }

    #[test]
    fn portage_defaults() {
        use Sharing::*;
        for phase in ["unpack", "prepare", "configure", "compile", "test", "install", "nofetch", "clean"] {
            let d = plain(phase);
            assert_eq!((d.network, d.ipc, d.pid, d.confine), (Private, Private, Private, true), "{phase}");
        }
        for phase in ["setup", "pretend", "info"] {
            let d = plain(phase);
            assert_eq!((d.network, d.ipc, d.pid, d.confine), (Shared, Shared, Private, true), "{phase}");
        }
        for phase in ["config", "preinst", "postinst", "prerm", "postrm"] {
            let d = plain(phase);
            assert_eq!((d.network, d.ipc, d.pid, d.confine), (Shared, Shared, Shared, false), "{phase}");
        }
        assert!(plain("test").notes.is_empty());
    }

    #[test]
    fn properties_and_restrict_open_the_network_where_portage_does() {
        let c = Config::default();
        let live = flags("live", "");
        assert_eq!(decide("unpack", None, &live, &c).network, Sharing::Shared);
        assert_eq!(decide("compile", None, &live, &c).network, Sharing::Private);
        let test_network = flags("test_network", "");
        let d = decide("test", None, &test_network, &c);
        assert_eq!((d.network, d.ipc), (Sharing::Shared, Sharing::Private));
        assert_eq!(d.notes_text(), "network: PROPERTIES=test_network");
        assert_eq!(decide("unpack", None, &test_network, &c).network, Sharing::Private);
        let restricted = flags("", "network-sandbox");
        for phase in ["unpack", "compile", "install"] {
            assert_eq!(decide(phase, None, &restricted, &c).network, Sharing::Shared);
        }
    }
}
