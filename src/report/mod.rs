//! What phasebox tells the user at the end: the orphans it killed, the limit that
//! ended the phase, a summary line, the --report record, and the status it exits with.

pub mod columns;
pub mod table;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use serde::{Deserialize, Serialize};

use crate::launch::Backend;
use crate::launch::Outcome;
use crate::launch::Plan;
use crate::protocol::status::{Failure, Termination};
use crate::protocol::usage::Usage;
use crate::sys::namespaces::Set;

/// What is known of a phase before it runs, kept for the report after it.
pub struct Pending {
    package: Option<String>,
    phase: Option<String>,
    command: Vec<String>,
    unit_stem: String,
    quiet: bool,
    file: Option<File>,
    started_at: SystemTime,
    started: Instant,
}

impl Pending {
    /// Taken just before the phase starts, with the --report file.
    pub fn start(plan: &Plan, file: Option<File>) -> Pending {
        Pending {
            package: plan.package.clone(),
            phase: plan.phase.map(str::to_string),
            command: plan.context.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            unit_stem: plan.unit_stem.clone(),
            quiet: plan.context.quiet,
            file,
            started_at: SystemTime::now(),
            started: Instant::now(),
        }
    }

    /// Tell the user how the phase went, append its record, and return the status.
    /// `wanted`: the isolations the backend that ran it was asked for.
    pub fn finish(self, backend: Backend, wanted: Set, outcome: &Outcome) -> u8 {
        let wall = self.started.elapsed();
        let code = match outcome.limit {
            Some(limit) => limit.exit_code(),
            None => outcome.termination.exit_code(),
        };
        if !self.quiet {
            for orphan in &outcome.orphans {
                // A process names itself: its name reaches the terminal escaped.
                crate::notice!(
                    "phasebox: killed orphan {} ({})",
                    orphan.pid,
                    columns::printable(&orphan.comm)
                );
            }
        }
        if let Some(limit) = outcome.limit {
            crate::notice!("phasebox: {}", limit.explain());
        }
        let record = self.record(backend, wanted, outcome, wall, code);
        if !self.quiet {
            crate::notice!("phasebox: {}", summary(&record));
        }
        if let Some(mut file) = self.file {
            let mut line = serde_json::to_string(&record).expect("a record always serializes");
            line.push('\n');
            // One write of the whole line: concurrent phases may append to one file.
            if let Err(error) = file.write_all(line.as_bytes()) {
                crate::notice!(
                    "phasebox: warning: could not append the phase's record to the --report file: {error}"
                );
            }
        }
        code
    }

    fn record(&self, backend: Backend, wanted: Set, outcome: &Outcome, wall: Duration, code: u8) -> Record {
        let unit = match backend {
            Backend::Service(_) => Some(format!("{}.service", self.unit_stem)),
            Backend::Scope(_) => Some(format!("{}.scope", self.unit_stem)),
            Backend::Unshare | Backend::Unconfined => None,
        };
        let in_force = wanted.kinds().filter(|k| !outcome.missing.contains(k));
        let (exited, signal) = match outcome.termination {
            Termination::Exited(code) => (Some(code), None),
            Termination::Signaled(signal) => (None, Some(signal)),
        };
        let usage = outcome.usage;
        let micros = |f: fn(&Usage) -> u64| usage.as_ref().map(|u| f(u) as f64 / 1e6);
        let bytes = |f: fn(&Usage) -> u64| usage.as_ref().map(f);
        Record {
            package: self.package.clone(),
            phase: self.phase.clone(),
            command: self.command.clone(),
            unit,
            backend: backend.name().to_string(),
            isolations: in_force.map(|k| k.tag().to_string()).collect(),
            missing: outcome.missing.iter().map(|k| k.tag().to_string()).collect(),
            exit_code: code,
            exited,
            signal,
            limit: outcome.limit.map(|l| l.tag().to_string()),
            started_at: self
                .started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            wall_seconds: wall.as_secs_f64(),
            cpu_user_seconds: micros(|u| u.user_micros),
            cpu_system_seconds: micros(|u| u.system_micros),
            memory_peak_bytes: bytes(|u| u.memory_peak_bytes),
            io_read_bytes: bytes(|u| u.read_bytes),
            io_write_bytes: bytes(|u| u.write_bytes),
            usage_sources: usage.map(|u| UsageSources {
                cpu: u.cpu_source.tag().to_string(),
                memory: u.memory_source.tag().to_string(),
                io: u.io_source.tag().to_string(),
            }),
            orphans: outcome
                .orphans
                .iter()
                .map(|o| OrphanRecord { pid: o.pid, command: o.comm.clone() })
                .collect(),
        }
    }
}

/// One line of a --report file. The fields are documented in the README.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub package: Option<String>,
    pub phase: Option<String>,
    pub command: Vec<String>,
    pub unit: Option<String>,
    pub backend: String,
    pub isolations: Vec<String>,
    pub missing: Vec<String>,
    pub exit_code: u8,
    pub exited: Option<i32>,
    pub signal: Option<i32>,
    pub limit: Option<String>,
    pub started_at: f64,
    pub wall_seconds: f64,
    pub cpu_user_seconds: Option<f64>,
    pub cpu_system_seconds: Option<f64>,
    pub memory_peak_bytes: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    /// Where each figure came from: "cgroup" (the whole phase) or "rusage" (the
    /// processes waited for). Records of older phasebox versions have none.
    #[serde(default)]
    pub usage_sources: Option<UsageSources>,
    pub orphans: Vec<OrphanRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsageSources {
    pub cpu: String,
    pub memory: String,
    pub io: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrphanRecord {
    pub pid: u32,
    pub command: String,
}

impl Record {
    /// How the phase ended, in words.
    pub fn ending(&self) -> String {
        match (&self.limit, self.exited, self.signal) {
            (Some(limit), _, _) => format!("stopped by its {limit} limit"),
            (None, Some(code), _) => format!("exited {code}"),
            (None, None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None, None) => "ended".to_string(),
        }
    }

    pub fn cpu_seconds(&self) -> Option<f64> {
        Some(self.cpu_user_seconds? + self.cpu_system_seconds?)
    }
}

/// The line printed after each phase, like systemd-run's.
pub fn summary(record: &Record) -> String {
    let mut parts = Vec::new();
    let who = match (&record.package, &record.phase) {
        (Some(package), Some(phase)) => format!("{package} {phase}: "),
        (None, Some(phase)) => format!("{phase}: "),
        _ => String::new(),
    };
    parts.push(format!("{who}{} after {}", record.ending(), seconds(record.wall_seconds)));
    if let (Some(user), Some(system)) = (record.cpu_user_seconds, record.cpu_system_seconds) {
        parts.push(format!(
            "CPU {} (user {}, system {})",
            seconds(user + system),
            seconds(user),
            seconds(system)
        ));
    }
    if let Some(peak) = record.memory_peak_bytes {
        let whose = match &record.usage_sources {
            Some(sources) if sources.memory == "rusage" => " (largest process)",
            _ => "",
        };
        parts.push(format!("memory peak {}{whose}", bytes(peak)));
    }
    if let (Some(read), Some(written)) = (record.io_read_bytes, record.io_write_bytes) {
        parts.push(format!("IO read {}, written {}", bytes(read), bytes(written)));
    }
    let orphans = record.orphans.len();
    parts.push(format!("{orphans} orphan{} killed", if orphans == 1 { "" } else { "s" }));
    parts.join("; ")
}

pub fn seconds(value: f64) -> String {
    format!("{value:.3}s")
}

/// Bytes in binary units, like systemd's (1.5M is 1.5 MiB).
pub fn bytes(value: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut scaled = value as f64;
    let mut unit = 0;
    while scaled >= 1024.0 && unit < UNITS.len() - 1 {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{value}B") } else { format!("{scaled:.1}{}", UNITS[unit]) }
}

/// Open the --report file for appending, where someone else may have put something
/// at its path first (the portage hook writes records as root into directories the
/// `portage` user can write): never through a symbolic link, never blocking (a
/// FIFO), and only a regular file of the caller's or root's with one link.
pub fn open_file(path: &Path) -> Result<File, Failure> {
    let refused = |why: String| Failure::from(anyhow!("--report {}: {why}", path.display()));
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ELOOP) => {
                refused("is a symbolic link; phasebox appends only to a regular file".into())
            }
            Some(libc::ENXIO) => {
                refused("is a FIFO or socket; phasebox appends only to a regular file".into())
            }
            _ => refused(format!("cannot open it for appending: {error}")),
        })?;
    let meta = file.metadata().map_err(|error| refused(format!("cannot inspect it: {error}")))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_file() {
        return Err(refused("is not a regular file".into()));
    }
    if meta.uid() != me && meta.uid() != 0 {
        return Err(refused(format!("belongs to uid {}, not to you (uid {me}) or root", meta.uid())));
    }
    if meta.nlink() != 1 {
        return Err(refused(format!(
            "has {} hard links; phasebox appends only to a file with one",
            meta.nlink()
        )));
    }
    // Appends of one record must not come back short with EAGAIN.
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_APPEND))
        .map_err(|error| refused(format!("cannot make it blocking: {error}")))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            package: Some("app-misc/foo-1".into()),
            phase: Some("test".into()),
            command: vec!["true".into()],
            unit: None,
            backend: "unshare".into(),
            isolations: vec!["net".into()],
            missing: vec![],
            exit_code: 0,
            exited: Some(0),
            signal: None,
            limit: None,
            started_at: 0.0,
            wall_seconds: 1.5,
            cpu_user_seconds: Some(0.75),
            cpu_system_seconds: Some(0.25),
            memory_peak_bytes: Some(3 << 20),
            io_read_bytes: Some(0),
            io_write_bytes: Some(10 << 20),
            usage_sources: Some(UsageSources {
                cpu: "cgroup".into(),
                memory: "cgroup".into(),
                io: "rusage".into(),
            }),
            orphans: vec![OrphanRecord { pid: 7, command: "sleep".into() }],
        }
    }

    #[test]
    fn the_summary_says_what_the_phase_used() {
        assert_eq!(
            summary(&record()),
            "app-misc/foo-1 test: exited 0 after 1.500s; CPU 1.000s (user 0.750s, system 0.250s); \
             memory peak 3.0M; IO read 0B, written 10.0M; 1 orphan killed"
        );
        let unknown =
            Record { cpu_user_seconds: None, memory_peak_bytes: None, io_read_bytes: None, ..record() };
        assert_eq!(summary(&unknown), "app-misc/foo-1 test: exited 0 after 1.500s; 1 orphan killed");
        let sources = UsageSources { cpu: "rusage".into(), memory: "rusage".into(), io: "rusage".into() };
        let rusage = Record { usage_sources: Some(sources), ..record() };
        assert!(summary(&rusage).contains("memory peak 3.0M (largest process);"), "{}", summary(&rusage));
        let timed_out = Record { limit: Some("time".into()), signal: Some(15), exited: None, ..record() };
        assert!(summary(&timed_out).starts_with("app-misc/foo-1 test: stopped by its time limit after"));
    }

    #[test]
    fn records_survive_a_round_trip() {
        let line = serde_json::to_string(&record()).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), record());
    }

    #[test]
    fn sizes_read_like_systemds() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(10 << 30), "10.0G");
    }
}
