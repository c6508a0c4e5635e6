//! What the process that ran the command found, sent back to the launcher as a
//! `Message::Report` over their channel (`protocol::message`): missing isolations,
//! a setup failure, how the command ended, and the orphans it left.

use std::fmt::Write as _;

use crate::protocol::status::Termination;
use nix::errno::Errno;

use crate::protocol::usage::Usage;
use crate::sys::namespaces::Kind;
pub use crate::sys::proc::Orphan;

/// An isolation that is not in force, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    pub kind: Kind,
    pub cause: Cause,
}

/// Why an isolation is not in force: a fact to decide on (doctor picks its fix by
/// it), with the words for people in its Display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// unshare(2) failed with EINVAL: a kernel without CONFIG_*_NS.
    KernelConfig,
    /// EPERM or EACCES: no CAP_SYS_ADMIN, or a seccomp profile denies unshare.
    NotPermitted,
    /// ENOSPC or EUSERS: a user.max_*_namespaces limit is reached.
    NamespaceLimit,
    /// Another errno of unshare(2).
    Unshare(i32),
    /// An unprivileged caller needs a user namespace, and creating one failed.
    NoUserNamespace(i32),
    /// systemd accepted the property but the namespace is still the launcher's.
    SystemdIgnored,
    /// unshare(2) succeeded but the namespace is still the launcher's.
    StillTheLaunchers,
}

impl Cause {
    pub fn of_unshare(errno: Errno) -> Cause {
        match errno {
            Errno::EINVAL => Cause::KernelConfig,
            Errno::EPERM | Errno::EACCES => Cause::NotPermitted,
            Errno::ENOSPC | Errno::EUSERS => Cause::NamespaceLimit,
            other => Cause::Unshare(other as i32),
        }
    }

    /// The tag and number the findings carry it as.
    pub fn encode(self) -> (&'static str, i32) {
        match self {
            Cause::KernelConfig => ("kernel-config", 0),
            Cause::NotPermitted => ("not-permitted", 0),
            Cause::NamespaceLimit => ("namespace-limit", 0),
            Cause::Unshare(errno) => ("unshare", errno),
            Cause::NoUserNamespace(errno) => ("no-user-namespace", errno),
            Cause::SystemdIgnored => ("systemd-ignored", 0),
            Cause::StillTheLaunchers => ("still-the-launchers", 0),
        }
    }

    pub fn decode(tag: &str, errno: i32) -> Option<Cause> {
        Some(match tag {
            "kernel-config" => Cause::KernelConfig,
            "not-permitted" => Cause::NotPermitted,
            "namespace-limit" => Cause::NamespaceLimit,
            "unshare" => Cause::Unshare(errno),
            "no-user-namespace" => Cause::NoUserNamespace(errno),
            "systemd-ignored" => Cause::SystemdIgnored,
            "still-the-launchers" => Cause::StillTheLaunchers,
            _ => return None,
        })
    }
}

impl Missing {
    /// Why, in words.
    pub fn reason(&self) -> String {
        let config = match self.kind {
            Kind::Network => "CONFIG_NET_NS",
            Kind::Ipc => "CONFIG_IPC_NS",
            Kind::Uts => "CONFIG_UTS_NS",
            Kind::Pid => "CONFIG_PID_NS",
        };
        let unshare = |why: &str| format!("unshare({}) failed: {why}", self.kind.tag());
        match self.cause {
            Cause::KernelConfig => unshare(&format!("the kernel was built without {config}")),
            Cause::NotPermitted => unshare(
                "not permitted here: the process lacks CAP_SYS_ADMIN, or a seccomp profile such as Docker's \
                 default denies unshare (run with --privileged or --security-opt seccomp=unconfined)",
            ),
            Cause::NamespaceLimit => unshare("the namespace limit is reached (sysctl user.max_*_namespaces)"),
            Cause::Unshare(errno) => unshare(Errno::from_raw(errno).desc()),
            Cause::NoUserNamespace(errno) => format!(
                "an unprivileged caller needs a user namespace, and creating one failed ({}): user namespaces \
                 are disabled (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0), or a \
                 seccomp profile such as Docker's default denies unshare; run as root, or through systemd \
                 (phasebox --mode service)",
                Errno::from_raw(errno).desc()
            ),
            Cause::SystemdIgnored => {
                let property = match self.kind {
                    Kind::Network => "PrivateNetwork=",
                    Kind::Ipc => "PrivateIPC=",
                    Kind::Uts => "a private hostname",
                    Kind::Pid => "PrivatePIDs=",
                };
                format!("systemd accepted {property} but did not apply it")
            }
            Cause::StillTheLaunchers => {
                format!("unshare({}) succeeded but the namespace is still phasebox's", self.kind.tag())
            }
        }
    }
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
    /// The kernel's OOM killer killed a process of the phase's own cgroup (its
    /// memory.events), where the phase has a cgroup of its own.
    pub oom_killed: bool,
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
        if self.oom_killed {
            out.push_str("oom-killed\n");
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
                "oom-killed" => findings.oom_killed = true,
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
        self.oom_killed |= other.oom_killed;
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
            oom_killed: true,
        };
        let decoded = Findings::decode(&findings.encode());
        assert_eq!(decoded.missing, findings.missing);
        assert!(decoded.refused);
        assert_eq!(decoded.setup_error.as_deref(), Some("cannot chdir?to /x"));
        assert_eq!(decoded.termination, Some(Termination::Signaled(9)));
        assert_eq!(decoded.orphans[0], findings.orphans[0]);
        assert_eq!(decoded.orphans[1].comm, "a?b");
        assert_eq!(decoded.usage, findings.usage);
        assert!(decoded.oom_killed);
        assert_eq!(Findings::decode("garbage\norphan x y\nexited z\n"), Findings::default());
    }
}
