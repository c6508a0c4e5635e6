//! Running phasebox where tests/run puts the suites: inside the nspawn systemd
//! (PHASEBOX_RIG=nspawn) or on the bare host without systemd (PHASEBOX_RIG=bare).

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub const NEEDS_RIG: &str = "needs the booted systemd: run tests/run";

/// The phasebox binary: the copy tests/run installed in the container, or cargo's.
pub fn phasebox_bin() -> PathBuf {
    std::env::var_os("PHASEBOX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_phasebox").into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Inside the container, with systemd as PID 1.
    Nspawn,
    /// On the host, which has no systemd.
    Bare,
}

/// Where this test binary was started by tests/run; refuses to run elsewhere.
pub fn place() -> Place {
    match std::env::var("PHASEBOX_RIG").as_deref() {
        Ok("nspawn") => Place::Nspawn,
        Ok("bare") => Place::Bare,
        _ => panic!("this test {NEEDS_RIG} (which sets PHASEBOX_RIG)"),
    }
}

/// Refuse to run outside the container: these tests need a real systemd as PID 1.
pub fn require_rig() {
    assert_eq!(place(), Place::Nspawn, "this test needs the nspawn systemd");
}

/// The lingering unprivileged user tests/run created, as (name, uid).
pub fn rig_user() -> (String, u32) {
    let name = std::env::var("PHASEBOX_RIG_USER").expect("PHASEBOX_RIG_USER");
    let uid = std::env::var("PHASEBOX_RIG_UID").expect("PHASEBOX_RIG_UID").parse().unwrap();
    (name, uid)
}

/// The rig user's home: /home/NAME in the container, elsewhere on the bare host
/// (tests/rig/bare says where), which the suites must not touch.
pub fn rig_home() -> String {
    std::env::var("PHASEBOX_RIG_HOME").unwrap_or_else(|_| format!("/home/{}", rig_user().0))
}

/// How much of a load test's work to do: `PHASEBOX_RIG_SCALE`, a fraction in (0, 1],
/// default 1 (the full load). tests/vm/suites sets it for its VMs, where TCG runs
/// programs several times slower than natively: a test then makes fewer runs, phases
/// or orphans, and checks every one of them exactly as at full scale. A value that
/// is not such a fraction fails the test rather than running it at some other scale.
pub fn scale() -> f64 {
    match std::env::var("PHASEBOX_RIG_SCALE") {
        Err(std::env::VarError::NotPresent) => 1.0,
        Ok(text) => match text.parse::<f64>() {
            Ok(s) if s > 0.0 && s <= 1.0 => s,
            _ => panic!("PHASEBOX_RIG_SCALE={text:?}: must be a number in (0, 1]"),
        },
        Err(e) => panic!("PHASEBOX_RIG_SCALE: {e}"),
    }
}

/// FULL iterations of a load test at this rig's `scale()`, rounded up, at least
/// `at_least` (the fewest that still exercise what the test is about).
pub fn scaled(full: usize, at_least: usize) -> usize {
    ((full as f64 * scale()).ceil() as usize).max(at_least).min(full)
}

/// Seconds of the short time limit (--timeout, -p RuntimeMaxSec=) with which tests
/// see a limit stop a phase: `PHASEBOX_RIG_SHORT_LIMIT`, default 1. The limit counts
/// from the unit's start and must stop the command, not the phase's start: under TCG
/// a phase took up to 3.6 s to start (forky, two tests at once), and a 1 s
/// RuntimeMaxSec= then ended it before the command ran (125, "the phase never
/// started"). tests/vm/suites sets 5.
pub fn short_limit() -> String {
    let text = std::env::var("PHASEBOX_RIG_SHORT_LIMIT").unwrap_or_else(|_| "1".into());
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s < 60.0 => text,
        _ => panic!("PHASEBOX_RIG_SHORT_LIMIT={text:?}: must be seconds, more than 0 and under 60"),
    }
}

/// The version of the systemd the suite runs under, from `systemctl --version`
/// (252 in the nspawn rig and the bookworm VM, 257 in trixie's, 262 in forky's).
pub fn systemd_version() -> u32 {
    let text = stdout(&host("systemctl", &["--version"]));
    let word = text.split_whitespace().nth(1).unwrap_or_default();
    word.parse().unwrap_or_else(|_| panic!("no systemd version in `systemctl --version`: {text}"))
}

/// Whether this cgroup tree has the memory controller, so that MemoryMax= is
/// enforced and a unit has memory.peak: yes in the VMs (unified cgroup v2, every
/// controller); no in the nspawn rig on a host with hybrid cgroups.
pub fn memory_controller() -> bool {
    let controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    controllers.split_whitespace().any(|c| c == "memory")
}

/// Who runs phasebox: root, or the rig's unprivileged user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Root,
    User,
}

/// Every (mode, caller) this place can run.
pub fn cases() -> Vec<(&'static str, Who)> {
    let modes: &[&str] = match place() {
        Place::Nspawn => &["service", "scope", "unshare"],
        Place::Bare => &["unshare"],
    };
    modes.iter().flat_map(|&m| [(m, Who::Root), (m, Who::User)]).collect()
}

/// `phasebox run ARGS...` as WHO.
pub fn phasebox_for<S: AsRef<OsStr>>(who: Who, args: &[S]) -> Command {
    match who {
        Who::Root => phasebox(args),
        Who::User => phasebox_as_user(args),
    }
}

/// `phasebox run --mode MODE ARGS...` as WHO, run to its end.
pub fn run(mode: &str, who: Who, args: &[&str]) -> Output {
    let mut full = vec!["--mode", mode];
    full.extend_from_slice(args);
    output(&mut phasebox_for(who, &full))
}

/// `phasebox run --mode MODE sh -c SCRIPT` as WHO, run to its end.
pub fn sh(mode: &str, who: Who, script: &str) -> Output {
    run(mode, who, &["sh", "-c", script])
}

/// `phasebox run ARGS...` as root.
pub fn phasebox<S: AsRef<OsStr>>(args: &[S]) -> Command {
    place();
    let mut cmd = Command::new(phasebox_bin());
    cmd.arg("run").args(args).stdin(Stdio::null());
    cmd
}

/// `phasebox run ARGS...` as the rig's unprivileged user, with its session bus.
pub fn phasebox_as_user<S: AsRef<OsStr>>(args: &[S]) -> Command {
    place();
    let mut cmd = as_rig_user(phasebox_bin());
    cmd.arg("run").args(args);
    cmd
}

/// PROGRAM as the rig's unprivileged user, in its home, with its session bus (add
/// the arguments).
pub fn as_rig_user(program: impl AsRef<OsStr>) -> Command {
    let (_, uid) = rig_user();
    let home = rig_home();
    let mut cmd = Command::new("setpriv");
    cmd.args([format!("--reuid={uid}"), format!("--regid={uid}"), "--init-groups".into(), "--".into()])
        .arg("env")
        .arg(format!("HOME={home}"))
        .arg(format!("XDG_RUNTIME_DIR=/run/user/{uid}"))
        .arg(format!("DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus"))
        .arg(program)
        .current_dir(home)
        .stdin(Stdio::null());
    cmd
}

pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| panic!("killed by a signal: {out:?}"))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run a helper command in the test's own (the "host's") namespaces.
pub fn host(program: &str, args: &[&str]) -> Output {
    let out = output(Command::new(program).args(args));
    assert!(out.status.success(), "{program} {args:?} failed: {}", stderr(&out));
    out
}

/// The system manager's units matching PATTERN, loaded or not, one per line.
pub fn units_matching(pattern: &str) -> String {
    stdout(&host("systemctl", &["list-units", "--all", "--no-legend", "--plain", pattern]))
}

/// PIDs of live `sleep MARKER...` processes: tests give each leftover a distinctive
/// duration to find it by.
pub fn sleeping(marker: &str) -> Vec<u32> {
    let wanted = format!("sleep\0{marker}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.starts_with(wanted.as_bytes()) && !is_gone(pid) {
            found.push(pid);
        }
    }
    found
}

/// Leaves `sleep 1000` behind, prints its PID (as the caller sees it) once it has
/// exec'd, and exits 7. The orphan's stdio goes nowhere: one that survives must not
/// hold the test's pipes open.
pub const LEAVE_ORPHAN: &str = "sleep 1000 >/dev/null 2>&1 </dev/null & \
     while [ \"$(cat /proc/$!/comm)\" != sleep ]; do :; done; echo $!; exit 7";

/// Whether a process is gone (or only a zombie waiting to be reaped).
pub fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => phasebox::sys::proc::is_zombie(&stat),
    }
}

/// Check `done` every 20 ms until it holds or `seconds` have passed.
pub fn within(seconds: f64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(seconds);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    done()
}
