//! The caller's execution context, captured by the launcher and restored, byte-exact,
//! by the inner mode inside the unit. systemd's Environment= refuses some names
//! (exported bash functions, non-UTF-8), so the context travels over the launcher's
//! channel instead (`message::Message::Context`), in this binary encoding.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::protocol::wire::{Decoder, Encoder};
use crate::sys::host::{Host, Linux};
use crate::sys::namespaces::{Kind, NsId, Set};
pub use crate::sys::process::{ProcessSetting, Rlimit};

const MAGIC: &[u8] = b"phasebox-context-4";

/// A process setting and how the user gave it (`-p LimitNOFILE=1024`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub setting: ProcessSetting,
    pub shown: String,
}

/// An isolation the launcher asked systemd for, and the launcher's own namespace of
/// that kind: the phase's namespace must differ from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub kind: Kind,
    pub launcher_ns: NsId,
}

/// The launcher, named by PID and start time (a PID alone may be reused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Launcher {
    pub pid: u32,
    pub start_time: u64,
}

impl Launcher {
    pub fn this_process() -> Launcher {
        let pid = std::process::id();
        Launcher { pid, start_time: crate::sys::proc::start_time(pid).unwrap_or(0) }
    }

    pub fn is_alive(self) -> bool {
        crate::sys::proc::start_time(self.pid) == Some(self.start_time)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerContext {
    /// The resolved executable (absolute, or relative to `cwd` when it contains a slash).
    pub program: OsString,
    pub argv: Vec<OsString>,
    pub caller: Caller,
    pub expected: Vec<Expected>,
    /// Namespaces the inner mode creates itself (systemd can't, or not here).
    pub unshare: Set,
    /// -p settings of the command's process.
    pub settings: Vec<Setting>,
    /// Add portage's loopback addresses to the network namespace systemd made.
    pub loopback_addresses: bool,
    pub best_effort: bool,
    pub quiet: bool,
    /// systemd made the inner mode PID 1 of a PID namespace (PrivatePIDs=): the
    /// launcher names what the command leaves, asked over the channel.
    pub pid1_by_systemd: bool,
    /// The phasebox process that waits for the phase (set by the service backend):
    /// the inner mode ends the phase if it dies.
    pub launcher: Launcher,
}

impl CallerContext {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        e.bytes(MAGIC)
            .bytes(self.program.as_bytes())
            .list(&self.argv, |e, a| {
                e.bytes(a.as_bytes());
            })
            .list(&self.caller.env, |e, v| {
                e.bytes(v.as_bytes());
            })
            .bytes(self.caller.cwd.as_os_str().as_bytes())
            .u32(self.caller.umask)
            .u32(self.caller.uid)
            .u32(self.caller.gid)
            .list(&self.caller.groups, |e, g| {
                e.u32(*g);
            })
            .list(&self.caller.rlimits, |e, r| {
                e.u32(r.resource).u64(r.soft).u64(r.hard);
            })
            .list(&self.caller.ignored_signals, |e, s| {
                e.u32(*s);
            })
            .list(&self.caller.blocked_signals, |e, s| {
                e.u32(*s);
            })
            .list(&self.expected, |e, x| {
                e.bytes(x.kind.tag().as_bytes()).u64(x.launcher_ns.0);
            })
            .bool(self.unshare.network)
            .bool(self.unshare.ipc)
            .bool(self.unshare.uts)
            .bool(self.unshare.pid)
            .list(&self.settings, |e, s| {
                match s.setting {
                    ProcessSetting::Rlimit(r) => e.u32(0).u32(r.resource).u64(r.soft).u64(r.hard),
                    ProcessSetting::Nice(nice) => e.u32(1).u32(nice as u32),
                    ProcessSetting::NoNewPrivileges => e.u32(2),
                };
                e.bytes(s.shown.as_bytes());
            })
            .bool(self.loopback_addresses)
            .bool(self.best_effort)
            .bool(self.quiet)
            .bool(self.pid1_by_systemd)
            .u32(self.launcher.pid)
            .u64(self.launcher.start_time);
        e.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<CallerContext> {
        let mut d = Decoder::new(bytes);
        if d.bytes()? != MAGIC {
            bail!("not a phasebox context of this version");
        }
        let os = |b: &[u8]| OsString::from_vec(b.to_vec());
        let context = CallerContext {
            program: os(d.bytes()?),
            argv: d.list(|d| Ok(os(d.bytes()?)))?,
            caller: Caller {
                env: d.list(|d| Ok(os(d.bytes()?)))?,
                cwd: PathBuf::from(os(d.bytes()?)),
                umask: d.u32()?,
                uid: d.u32()?,
                gid: d.u32()?,
                groups: d.list(|d| d.u32())?,
                rlimits: d.list(|d| Ok(Rlimit { resource: d.u32()?, soft: d.u64()?, hard: d.u64()? }))?,
                ignored_signals: d.list(|d| d.u32())?,
                blocked_signals: d.list(|d| d.u32())?,
            },
            expected: d.list(|d| {
                let tag = String::from_utf8_lossy(d.bytes()?).into_owned();
                let kind = Kind::from_tag(&tag).with_context(|| format!("unknown namespace {tag}"))?;
                Ok(Expected { kind, launcher_ns: NsId(d.u64()?) })
            })?,
            unshare: Set { network: d.bool()?, ipc: d.bool()?, uts: d.bool()?, pid: d.bool()? },
            settings: d.list(|d| {
                let setting = match d.u32()? {
                    0 => {
                        ProcessSetting::Rlimit(Rlimit { resource: d.u32()?, soft: d.u64()?, hard: d.u64()? })
                    }
                    1 => ProcessSetting::Nice(d.u32()? as i32),
                    2 => ProcessSetting::NoNewPrivileges,
                    other => bail!("unknown process setting {other}"),
                };
                Ok(Setting { setting, shown: String::from_utf8_lossy(d.bytes()?).into_owned() })
            })?,
            loopback_addresses: d.bool()?,
            best_effort: d.bool()?,
            quiet: d.bool()?,
            pid1_by_systemd: d.bool()?,
            launcher: Launcher { pid: d.u32()?, start_time: d.u64()? },
        };
        d.end()?;
        Ok(context)
    }
}

#[cfg(test)]
impl CallerContext {
    /// A context with every field set to something a real caller could have.
    pub fn example() -> CallerContext {
        CallerContext {
            program: "/bin/sh".into(),
            argv: vec!["sh".into(), OsString::from_vec(b"\xff\xfe".to_vec())],
            caller: Caller {
                env: vec!["BASH_FUNC_f%%=() { echo; }".into(), OsString::from_vec(b"X=\x80".to_vec())],
                cwd: "/work".into(),
                umask: 0o027,
                uid: 1000,
                gid: 100,
                groups: vec![100, 27],
                rlimits: vec![Rlimit { resource: 7, soft: 1024, hard: u64::MAX }],
                ignored_signals: vec![13],
                blocked_signals: vec![10, 12],
            },
            expected: vec![
                Expected { kind: Kind::Network, launcher_ns: NsId(1) },
                Expected { kind: Kind::Ipc, launcher_ns: NsId(2) },
            ],
            unshare: Set { uts: true, pid: true, ..Set::default() },
            settings: vec![
                Setting {
                    setting: ProcessSetting::Rlimit(Rlimit { resource: 1, soft: 0, hard: 0 }),
                    shown: "-p LimitFSIZE=0".into(),
                },
                Setting { setting: ProcessSetting::Nice(-5), shown: "-p Nice=-5".into() },
                Setting { setting: ProcessSetting::NoNewPrivileges, shown: "-p NoNewPrivileges=yes".into() },
            ],
            loopback_addresses: true,
            best_effort: false,
            quiet: false,
            pid1_by_systemd: true,
            launcher: Launcher { pid: 4242, start_time: 123_456 },
        }
    }
}

/// Resource limits the inner mode restores (the service manager sets its own defaults).
pub const RLIMITS: [u32; 16] = [
    libc::RLIMIT_CPU,
    libc::RLIMIT_FSIZE,
    libc::RLIMIT_DATA,
    libc::RLIMIT_STACK,
    libc::RLIMIT_CORE,
    libc::RLIMIT_RSS,
    libc::RLIMIT_NPROC,
    libc::RLIMIT_NOFILE,
    libc::RLIMIT_MEMLOCK,
    libc::RLIMIT_AS,
    libc::RLIMIT_LOCKS,
    libc::RLIMIT_SIGPENDING,
    libc::RLIMIT_MSGQUEUE,
    libc::RLIMIT_NICE,
    libc::RLIMIT_RTPRIO,
    libc::RLIMIT_RTTIME,
];

/// The calling process's own state that a direct child would inherit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// NAME=VALUE entries, in the caller's order, byte-exact.
    pub env: Vec<OsString>,
    pub cwd: PathBuf,
    pub umask: u32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub rlimits: Vec<Rlimit>,
    /// Signals the caller ignores (SIG_IGN survives exec) and blocks.
    pub ignored_signals: Vec<u32>,
    pub blocked_signals: Vec<u32>,
}

impl Caller {
    pub fn capture() -> Result<Caller> {
        let cwd = std::env::current_dir()
            .context("the current working directory is not accessible (was it removed?)")?;
        Ok(Caller {
            env: raw_environment(),
            cwd,
            umask: current_umask(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            groups: supplementary_groups().context("reading supplementary groups")?,
            rlimits: RLIMITS.iter().filter_map(|&r| Linux.rlimit(r).ok()).collect(),
            ignored_signals: ignored_signals(),
            blocked_signals: blocked_signals(),
        })
    }
}

/// getgroups(2) asked for the count first: nix's getgroups sizes its buffer by
/// sysconf(_SC_NGROUPS_MAX), which glibc answers by reading a file in /proc.
fn supplementary_groups() -> std::io::Result<Vec<u32>> {
    loop {
        // SAFETY: a size of 0 only asks for the count.
        let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if count < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut groups = vec![0; count as usize];
        // SAFETY: the buffer holds `count` gid_t.
        let got = unsafe { libc::getgroups(count, groups.as_mut_ptr()) };
        if got >= 0 {
            groups.truncate(got as usize);
            return Ok(groups);
        }
        // EINVAL: the groups changed in between; ask again.
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINVAL) {
            return Err(error);
        }
    }
}

/// Signals whose disposition is SIG_IGN: a direct child would inherit that. For
/// SIGPIPE, which phasebox ignores itself, the caller's disposition at start-up.
fn ignored_signals() -> Vec<u32> {
    (1..libc::SIGRTMIN())
        .filter(|&sig| {
            if sig == libc::SIGPIPE {
                return crate::sys::startup::caller_ignores_sigpipe();
            }
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: a NULL new action only queries the current one into `old`.
            let rc = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
            rc == 0 && old.sa_sigaction == libc::SIG_IGN
        })
        .map(|sig| sig as u32)
        .collect()
}

/// The calling thread's blocked signals (the mask survives exec too).
fn blocked_signals() -> Vec<u32> {
    let mask =
        nix::sys::signal::SigSet::thread_get_mask().unwrap_or_else(|_| nix::sys::signal::SigSet::empty());
    mask.iter().map(|s| s as i32 as u32).collect()
}

/// The environment exactly as the kernel gave it to us: std's env::vars_os() drops
/// entries without '=' and would merge duplicates, /proc/self/environ reflects later
/// changes poorly, so read environ(7) directly.
fn raw_environment() -> Vec<OsString> {
    unsafe extern "C" {
        static environ: *const *const libc::c_char;
    }
    let mut out = Vec::new();
    // SAFETY: environ is a NULL-terminated array of NUL-terminated strings, and this
    // program never modifies its environment.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            out.push(OsString::from_vec(std::ffi::CStr::from_ptr(*p).to_bytes().to_vec()));
            p = p.add(1);
        }
    }
    out
}

fn current_umask() -> u32 {
    // umask can only be read by setting it; this process is still single-threaded here.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}

/// Apply `-E NAME=VALUE` (set) and `-E NAME` (keep the caller's value) to an environment.
pub fn apply_setenv(env: &mut Vec<OsString>, assignments: &[OsString]) -> Result<()> {
    for assignment in assignments {
        let bytes = assignment.as_bytes();
        let Some(eq) = bytes.iter().position(|&b| b == b'=') else {
            if bytes.is_empty() {
                bail!("-E needs NAME or NAME=VALUE, got an empty string");
            }
            continue;
        };
        if eq == 0 {
            bail!("-E {}: the variable name is empty", assignment.to_string_lossy());
        }
        let name = &bytes[..=eq];
        env.retain(|entry| !entry.as_bytes().starts_with(name));
        env.push(assignment.clone());
    }
    Ok(())
}

/// The value of NAME in an environment, as raw bytes.
pub fn lookup<'e>(env: &'e [OsString], name: &str) -> Option<&'e [u8]> {
    env.iter().rev().find_map(|entry| {
        let b = entry.as_bytes();
        (b.len() > name.len() && b.starts_with(name.as_bytes()) && b[name.len()] == b'=')
            .then(|| &b[name.len() + 1..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_round_trips_byte_exact() {
        let c = CallerContext::example();
        assert_eq!(CallerContext::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn damaged_context_is_refused() {
        let bytes = CallerContext::example().encode();
        for cut in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(CallerContext::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn setenv_overrides_and_keeps() {
        let mut env: Vec<OsString> = vec!["A=1".into(), "AB=2".into()];
        apply_setenv(&mut env, &["A=3".into(), "AB".into(), "C=".into()]).unwrap();
        assert_eq!(env, ["AB=2", "A=3", "C="]);
        assert_eq!(lookup(&env, "A"), Some(&b"3"[..]));
        assert_eq!(lookup(&env, "C"), Some(&b""[..]));
        assert!(apply_setenv(&mut env, &["=x".into()]).is_err());
    }

    #[test]
    fn raw_environment_sees_our_own_environment() {
        let env = raw_environment();
        assert!(env.iter().any(|e| e.as_bytes().starts_with(b"PATH=")));
    }
}
