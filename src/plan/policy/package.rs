//! The package a phase belongs to: CATEGORY/PF, and its PN for config lookups.

use std::fmt;

use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub category: String,
    /// Name, version and revision: `foo-1.2-r1`.
    pub pf: String,
}

impl Package {
    /// From `CAT/PF` (`--package`).
    pub fn parse(text: &str) -> Result<Package> {
        match text.split_once('/') {
            Some((category, pf)) if !category.is_empty() && !pf.is_empty() && !pf.contains('/') => {
                Ok(Package { category: category.into(), pf: pf.into() })
            }
            _ => bail!("--package {text}: expected CATEGORY/PF, e.g. dev-libs/foo-1.2-r1"),
        }
    }

    /// From the phase environment portage sets (CATEGORY and PF), if both are there.
    pub fn from_environment() -> Option<Package> {
        match (std::env::var("CATEGORY"), std::env::var("PF")) {
            (Ok(category), Ok(pf)) if !category.is_empty() && !pf.is_empty() => {
                Some(Package { category, pf })
            }
            _ => None,
        }
    }

    /// The package name without version and revision: `foo` of `foo-1.2-r1`.
    pub fn pn(&self) -> &str {
        let without_revision = match self.pf.rsplit_once("-r") {
            Some((rest, revision))
                if !revision.is_empty() && revision.bytes().all(|b| b.is_ascii_digit()) =>
            {
                rest
            }
            _ => &self.pf,
        };
        match without_revision.rsplit_once('-') {
            Some((name, version))
                if !name.is_empty() && version.starts_with(|c: char| c.is_ascii_digit()) =>
            {
                name
            }
            _ => without_revision,
        }
    }
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.category, self.pf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_versions() {
        let pn = |pf: &str| Package::parse(&format!("cat/{pf}")).unwrap().pn().to_string();
        assert_eq!(pn("foo-1.2-r1"), "foo");
        assert_eq!(pn("foo-bar-2.0_rc1"), "foo-bar");
        assert_eq!(pn("gtk+-3.24.41"), "gtk+");
        assert_eq!(pn("font-r8-1"), "font-r8");
        assert_eq!(pn("noversion"), "noversion");
    }

    #[test]
    fn refuses_what_is_not_cat_pf() {
        for bad in ["", "foo", "/foo-1", "cat/", "a/b/c"] {
            assert!(Package::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Package::parse("app-misc/x-1").unwrap().to_string(), "app-misc/x-1");
    }
}
