//! Exit statuses phasebox documents, and how a phase's end maps onto them.

use std::fmt;

/// phasebox itself failed: bad flag, systemd unreachable, isolation not applied.
pub const PHASEBOX_FAILED: u8 = 125;
/// The command exists but could not be executed.
pub const NOT_EXECUTABLE: u8 = 126;
/// The command was not found.
pub const NOT_FOUND: u8 = 127;
/// The phase ran out of memory (--memory-max, MemoryMax=) and the kernel killed it.
pub const OUT_OF_MEMORY: u8 = 123;
/// The phase ran past --timeout (RuntimeMaxSec=) and was stopped.
pub const TIMED_OUT: u8 = 124;

/// A limit that ended the phase: systemd's Result says so, or phasebox's own timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Time,
    Memory,
}

impl Limit {
    /// From a service's Result property ("timeout", "oom-kill", ...).
    pub fn from_result(result: &str) -> Option<Limit> {
        match result {
            "timeout" => Some(Limit::Time),
            "oom-kill" => Some(Limit::Memory),
            _ => None,
        }
    }

    /// The limit's name in reports.
    pub fn tag(self) -> &'static str {
        match self {
            Limit::Time => "time",
            Limit::Memory => "memory",
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Limit::Time => TIMED_OUT,
            Limit::Memory => OUT_OF_MEMORY,
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            Limit::Time => "the phase ran past its time limit (--timeout, RuntimeMaxSec=) and was stopped",
            Limit::Memory => {
                "the phase ran out of memory (--memory-max, MemoryMax=) and the kernel killed it"
            }
        }
    }
}

/// How the phase's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    Exited(i32),
    Signaled(i32),
}

impl Termination {
    /// The status a shell would report for a direct child that ended this way.
    pub fn exit_code(self) -> u8 {
        match self {
            Termination::Exited(code) => (code & 0xff) as u8,
            Termination::Signaled(signal) => 128u8.wrapping_add((signal & 0x7f) as u8),
        }
    }

    /// Decode systemd's ExecMainCode (a CLD_* code) and ExecMainStatus.
    pub fn from_cld(code: i32, status: i32) -> Option<Termination> {
        match code {
            libc::CLD_EXITED => Some(Termination::Exited(status)),
            libc::CLD_KILLED | libc::CLD_DUMPED => Some(Termination::Signaled(status)),
            _ => None,
        }
    }
}

/// A failure of phasebox itself (or of finding the command), with the status to exit with.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(code: u8, error: anyhow::Error) -> Failure {
        Failure { code, error }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::new(PHASEBOX_FAILED, error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_pass_through() {
        assert_eq!(Termination::Exited(0).exit_code(), 0);
        assert_eq!(Termination::Exited(7).exit_code(), 7);
        assert_eq!(Termination::Exited(255).exit_code(), 255);
    }

    #[test]
    fn signals_map_to_128_plus_n() {
        assert_eq!(Termination::Signaled(9).exit_code(), 137);
        assert_eq!(Termination::Signaled(15).exit_code(), 143);
    }

    #[test]
    fn cld_codes_decode() {
        assert_eq!(Termination::from_cld(1, 3), Some(Termination::Exited(3)));
        assert_eq!(Termination::from_cld(2, 9), Some(Termination::Signaled(9)));
        assert_eq!(Termination::from_cld(3, 11), Some(Termination::Signaled(11)));
        assert_eq!(Termination::from_cld(0, 0), None);
    }

    #[test]
    fn limits_from_systemds_result_have_their_own_statuses() {
        assert_eq!(Limit::from_result("timeout").map(Limit::exit_code), Some(124));
        assert_eq!(Limit::from_result("oom-kill").map(Limit::exit_code), Some(123));
        for other in ["success", "exit-code", "signal", "core-dump"] {
            assert_eq!(Limit::from_result(other), None, "{other}");
        }
    }
}
