//! What the process that ran the command found, sent back to the launcher (through
//! a file from the inner mode, a pipe from the scope and unshare backends): missing
//! isolations, a setup failure, how the command ended, and the orphans it left.

use std::fmt::Write as _;

use crate::exit::Termination;
use crate::namespaces::Kind;
use crate::sandbox::{Cause, Missing};
use crate::usage::Usage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub pid: u32,
    pub comm: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Isolations that were asked for but are not in force.
    pub missing: Vec<Missing>,
    /// The command was not started because an isolation was missing.
    pub refused: bool,
    /// Preparing the command's context failed; the command was not started.
    pub setup_error: Option<String>,
    /// How the command ended, when it ran.
    pub termination: Option<Termination>,
    /// Processes left behind when the command ended.
    pub orphans: Vec<Orphan>,
    /// What the command and the processes reaped with it used.
    pub usage: Option<Usage>,
}

impl Findings {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for missing in &self.missing {
            let (cause, errno) = missing.cause.encode();
            let _ = writeln!(out, "missing {} {cause} {errno}", missing.kind.tag());
        }
        if self.refused {
            out.push_str("refused\n");
        }
        if let Some(error) = &self.setup_error {
            let _ = writeln!(out, "setup-error {}", one_line(error));
        }
        match self.termination {
            Some(Termination::Exited(code)) => {
                let _ = writeln!(out, "exited {code}");
            }
            Some(Termination::Signaled(signal)) => {
                let _ = writeln!(out, "signaled {signal}");
            }
            None => {}
        }
        for orphan in &self.orphans {
            let _ = writeln!(out, "orphan {} {}", orphan.pid, one_line(&orphan.comm));
        }
        if let Some(usage) = self.usage {
            let _ = writeln!(out, "usage {}", usage.encode());
        }
        out
    }

    /// Lines that can't be understood are skipped; a missing `refused` only means
    /// the command was allowed to run, and a missing status is reported as such.
    pub fn decode(text: &str) -> Findings {
        let mut findings = Findings::default();
        for line in text.lines() {
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "missing" => {
                    let mut fields = rest.split(' ');
                    let kind = fields.next().and_then(Kind::from_tag);
                    let cause = fields.next().zip(fields.next().and_then(|n| n.parse().ok()));
                    if let (Some(kind), Some(cause)) = (kind, cause.and_then(|(t, n)| Cause::decode(t, n))) {
                        findings.missing.push(Missing { kind, cause });
                    }
                }
                "refused" => findings.refused = true,
                "setup-error" => findings.setup_error = Some(rest.to_string()),
                "exited" => findings.termination = rest.parse().ok().map(Termination::Exited),
                "signaled" => findings.termination = rest.parse().ok().map(Termination::Signaled),
                "usage" => findings.usage = Usage::decode(rest),
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

    /// Add what a nested process (PID 1 of a new namespace) found.
    pub fn merge(&mut self, other: Findings) {
        self.missing.extend(other.missing);
        self.refused |= other.refused;
        self.setup_error = self.setup_error.take().or(other.setup_error);
        self.termination = self.termination.or(other.termination);
        self.orphans.extend(other.orphans);
        self.usage = self.usage.or(other.usage);
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
            missing: vec![
                Missing { kind: Kind::Network, cause: Cause::KernelConfig },
                Missing { kind: Kind::Pid, cause: Cause::NoUserNamespace(1) },
            ],
            refused: true,
            setup_error: Some("cannot chdir\nto /x".into()),
            termination: Some(Termination::Signaled(9)),
            orphans: vec![Orphan { pid: 42, comm: "sleep 1".into() }, Orphan { pid: 7, comm: "a\tb".into() }],
            usage: Some(Usage { user_micros: 5, ..Usage::default() }),
        };
        let decoded = Findings::decode(&findings.encode());
        assert_eq!(decoded.missing, findings.missing);
        assert!(decoded.refused);
        assert_eq!(decoded.setup_error.as_deref(), Some("cannot chdir?to /x"));
        assert_eq!(decoded.termination, Some(Termination::Signaled(9)));
        assert_eq!(decoded.orphans[0], findings.orphans[0]);
        assert_eq!(decoded.orphans[1].comm, "a?b");
        assert_eq!(decoded.usage, findings.usage);
        assert_eq!(Findings::decode("garbage\norphan x y\nexited z\n"), Findings::default());
    }
}
