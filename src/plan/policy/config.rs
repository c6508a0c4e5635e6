//! The policy config file (/etc/phasebox/phasebox.toml): changes to portage's
//! per-phase decisions, for every package or for some.
//!
//! ```toml
//! [phase.test]                          # every package's test phase
//! ipc = "shared"
//! [package."dev-python/requests".test]  # CAT/PN, CAT/PF or CAT/*; phase or "*"
//! network = "shared"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::Sharing;
use super::package::Package;

pub const DEFAULT_PATH: &str = "/etc/phasebox/phasebox.toml";

/// One table's changes; an absent key changes nothing.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub network: Option<Sharing>,
    pub ipc: Option<Sharing>,
    pub pid: Option<Sharing>,
    pub confine: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    phase: BTreeMap<String, Change>,
    #[serde(default)]
    package: BTreeMap<String, BTreeMap<String, Change>>,
}

#[derive(Debug, Default)]
pub struct Config {
    /// Where it was read from; None when there is no file.
    path: Option<PathBuf>,
    file: File,
}

impl Config {
    /// The file given (by --config or PHASEBOX_CONFIG), which must exist, else the
    /// default path, which may be absent.
    pub fn load(given: Option<&Path>) -> Result<Config> {
        let from_env = std::env::var_os("PHASEBOX_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from);
        let (path, required) = match given.map(Path::to_path_buf).or(from_env) {
            Some(path) => (path, true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("reading the policy config {}", path.display())),
        };
        Config::parse(&text, path)
    }

    fn parse(text: &str, path: PathBuf) -> Result<Config> {
        let file: File =
            toml::from_str(text).with_context(|| format!("in the policy config {}", path.display()))?;
        let check_phase = |key: &str, table: &str| -> Result<()> {
            if key != "*" && super::phase_name(key).is_err() {
                bail!(
                    "in the policy config {}: [{table}]: {key:?} is not an ebuild phase (one of: {}, or \"*\")",
                    path.display(),
                    super::PHASES.join(", ")
                );
            }
            Ok(())
        };
        for phase in file.phase.keys() {
            check_phase(phase, &format!("phase.{phase}"))?;
        }
        for (package, phases) in &file.package {
            if Package::parse(package).is_err() {
                bail!(
                    "in the policy config {}: [package.{package:?}]: expected \"CATEGORY/PN\", \
                     \"CATEGORY/PF\" or \"CATEGORY/*\"",
                    path.display()
                );
            }
            for phase in phases.keys() {
                check_phase(phase, &format!("package.{package:?}.{phase}"))?;
            }
        }
        Ok(Config { path: Some(path), file })
    }

    /// Where the policy comes from, for `phasebox policy`.
    pub fn describe(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None => format!("none, {DEFAULT_PATH} does not exist"),
        }
    }

    /// The tables that apply to a phase of a package, least specific first, each with
    /// where it is in the file.
    pub fn changes(&self, phase: &str, package: Option<&Package>) -> Vec<(String, Change)> {
        let named = |table: &BTreeMap<String, Change>| {
            let mut found = Vec::new();
            for (key, change) in table {
                if key == "*" {
                    found.insert(0, (key.clone(), *change));
                } else if super::phase_name(key).ok() == Some(phase) {
                    found.push((key.clone(), *change));
                }
            }
            found
        };
        let mut changes: Vec<(String, Change)> = named(&self.file.phase)
            .into_iter()
            .map(|(key, c)| (format!("config [phase.{key:?}]"), c))
            .collect();
        if let Some(package) = package {
            let keys = [
                format!("{}/*", package.category),
                format!("{}/{}", package.category, package.pn()),
                package.to_string(),
            ];
            for key in keys {
                if let Some(table) = self.file.package.get(&key) {
                    changes.extend(
                        named(table)
                            .into_iter()
                            .map(|(phase, c)| (format!("config [package.{key:?}.{phase:?}]"), c)),
                    );
                }
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EbuildFlags, decide};
    use super::*;

    fn config(text: &str) -> Result<Config> {
        Config::parse(text, PathBuf::from("test.toml"))
    }

    #[test]
    fn package_tables_beat_phase_tables_and_the_most_specific_wins() {
        let c = config(
            r#"
            [phase.test]
            ipc = "shared"
            [package."app-misc/foo"."*"]
            pid = "shared"
            [package."app-misc/foo".src_test]
            network = "shared"
            [package."app-misc/foo-1.0".test]
            network = "private"
            [package."app-misc/*".compile]
            confine = false
            "#,
        )
        .unwrap();
        let foo2 = Package::parse("app-misc/foo-2.0").unwrap();
        let d = decide("test", Some(&foo2), &EbuildFlags::default(), &c);
        assert_eq!(
            (d.network, d.ipc, d.pid, d.confine),
            (Sharing::Shared, Sharing::Shared, Sharing::Shared, true)
        );
        assert!(
            d.notes.iter().any(|n| n.to_string() == r#"network: config [package."app-misc/foo"."src_test"]"#),
            "{:?}",
            d.notes
        );
        let foo1 = Package::parse("app-misc/foo-1.0").unwrap();
        assert_eq!(decide("test", Some(&foo1), &EbuildFlags::default(), &c).network, Sharing::Private);
        let other = Package::parse("app-misc/bar-1").unwrap();
        assert!(!decide("compile", Some(&other), &EbuildFlags::default(), &c).confine);
        assert_eq!(decide("test", Some(&other), &EbuildFlags::default(), &c).network, Sharing::Private);
        assert_eq!(decide("test", None, &EbuildFlags::default(), &c).ipc, Sharing::Shared);
    }

    #[test]
    fn mistakes_are_named() {
        let error = |text: &str| format!("{:#}", config(text).unwrap_err());
        assert!(error("[phase.tset]\nnetwork = \"shared\"").contains("\"tset\" is not an ebuild phase"));
        assert!(error("[phase.test]\nnetwork = \"open\"").contains("unknown variant"));
        assert!(error("[phase.test]\nnetwrok = \"shared\"").contains("unknown field"));
        assert!(error("[package.foo.test]\nnetwork = \"shared\"").contains("CATEGORY/PN"));
        assert!(error("[phase.test]\nnetwork = ").contains("test.toml"));
    }

    #[test]
    fn an_explicit_path_must_exist() {
        let error = Config::load(Some(Path::new("/nonexistent/phasebox.toml"))).unwrap_err();
        assert!(format!("{error:#}").contains("/nonexistent/phasebox.toml"));
    }
}
