//! What the inner mode found inside the unit, written to a file for the launcher:
//! isolations that were missing, a setup failure, and the orphans left behind.

use std::fmt::Write as _;

use crate::namespaces::Kind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub pid: u32,
    pub comm: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Isolations systemd was asked for but did not apply.
    pub missing: Vec<Kind>,
    /// The command was not started because an isolation was missing.
    pub refused: bool,
    /// Restoring the caller's context failed; the command was not started.
    pub setup_error: Option<String>,
    /// Processes still in the unit's cgroup when the command ended.
    pub orphans: Vec<Orphan>,
}

impl Findings {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for kind in &self.missing {
            let _ = writeln!(out, "missing {}", kind.tag());
        }
        if self.refused {
            out.push_str("refused\n");
        }
        if let Some(error) = &self.setup_error {
            let _ = writeln!(out, "setup-error {}", one_line(error));
        }
        for orphan in &self.orphans {
            let _ = writeln!(out, "orphan {} {}", orphan.pid, one_line(&orphan.comm));
        }
        out
    }

    /// Lines that can't be understood are skipped: findings are advisory except
    /// `refused`, whose absence only means the command was allowed to run.
    pub fn decode(text: &str) -> Findings {
        let mut findings = Findings::default();
        for line in text.lines() {
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "missing" => findings.missing.extend(Kind::from_tag(rest)),
                "refused" => findings.refused = true,
                "setup-error" => findings.setup_error = Some(rest.to_string()),
                "orphan" => {
                    let (pid, comm) = rest.split_once(' ').unwrap_or((rest, ""));
                    if let Ok(pid) = pid.parse() {
                        findings.orphans.push(Orphan { pid, comm: comm.to_string() });
                    }
                }
                _ => {}
            }
        }
        findings
    }
}

fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let findings = Findings {
            missing: vec![Kind::Network, Kind::Ipc],
            refused: true,
            setup_error: Some("cannot chdir\nto /x".into()),
            orphans: vec![Orphan { pid: 42, comm: "sleep 1".into() }, Orphan { pid: 7, comm: "a\tb".into() }],
        };
        let decoded = Findings::decode(&findings.encode());
        assert_eq!(decoded.missing, findings.missing);
        assert!(decoded.refused);
        assert_eq!(decoded.setup_error.as_deref(), Some("cannot chdir?to /x"));
        assert_eq!(decoded.orphans[0], findings.orphans[0]);
        assert_eq!(decoded.orphans[1].comm, "a?b");
        assert_eq!(Findings::decode("garbage\norphan x y\n"), Findings::default());
    }
}
