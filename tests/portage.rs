//! End to end with real portage: PyPI's portage 3.0.x (tests/portage/setup-venv) builds
//! the probe ebuilds of tests/portage/overlay in a throw-away EPREFIX, through
//! tests/portage/emerge-probe, with the phasebox hook (contrib/portage/bashrc) and
//! without it. The probes' phases check what they can reach of the host: a TCP listener
//! on 127.0.0.1 and a SysV shm segment (see overlay/eclass/pbprobe.eclass).
//! Run by tests/run, as root, on the bare host (unshare mode) and inside the nspawn
//! systemd (scope mode), with `--include-ignored`.

#[allow(dead_code)]
mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::rig::{self, Place, is_gone};

/// One emerge takes a few seconds; a hung one must not hang the suite.
const DEADLINE: Duration = Duration::from_secs(300);

/// Runs of emerge-probe take turns: each looks for leftover `pbprobe-daemon`s
/// afterwards, which another run's src_test may have running at that moment.
static TURN: Mutex<()> = Mutex::new(());

const PBPROBE: &str = "=app-misc/pbprobe-1";
const PBPROBE_FAIL: &str = "=app-misc/pbprobe-fail-1";
const PBPROBE_NET: &str = "=app-misc/pbprobe-net-1";

/// tests/portage: $PHASEBOX_PORTAGE_DIR, else the checkout's (tests/run's container sees
/// the checkout at the same path).
fn portage_dir() -> PathBuf {
    std::env::var_os("PHASEBOX_PORTAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/portage"))
}

/// What one run of emerge-probe printed.
struct Probe {
    log: String,
}

/// Run tests/portage/emerge-probe ARGS... (as root) and return its output; panics
/// if it did not finish within DEADLINE or failed to set up.
fn emerge_probe(args: &[&str]) -> Probe {
    rig::place();
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // A file, not a pipe: nothing left running can keep the test waiting for EOF.
    let path = std::env::temp_dir().join(format!("phasebox-portage-{}-{}.log", std::process::id(), unique()));
    let file = std::fs::File::create(&path).unwrap();
    let mut cmd = Command::new(portage_dir().join("emerge-probe"));
    cmd.args(args).stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file).process_group(0);
    if let Some(venv) = std::env::var_os("PHASEBOX_PORTAGE_VENV") {
        cmd.env("PBPROBE_VENV", venv);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            // SAFETY: kill(2) on the process group we made for the script.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let _ = std::fs::remove_file(&path);
            panic!("emerge-probe {args:?} took more than {DEADLINE:?}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
    std::fs::remove_file(&path).unwrap();
    eprintln!("emerge-probe {args:?}: {status} after {:.1?}", started.elapsed());
    assert_ne!(status.code(), Some(2), "emerge-probe {args:?} could not set up:\n{log}");
    assert!(status.code().is_some(), "emerge-probe {args:?} was killed ({status}):\n{log}");
    Probe { log }
}

fn unique() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The user portage's userpriv phases run as (the rig makes it: tests/rig/users.sh).
fn portage_uid() -> u32 {
    let out = Command::new("id").args(["-u", "portage"]).output().unwrap();
    assert!(out.status.success(), "no portage user");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

impl Probe {
    /// emerge's exit status for ATOM ("pbprobe: emerge ATOM: status N, ...").
    fn status(&self, atom: &str) -> i32 {
        let prefix = format!("pbprobe: emerge {atom}: status ");
        let line = self.lines().find(|l| l.starts_with(&prefix));
        let line = line.unwrap_or_else(|| self.fail(&format!("{atom} was not emerged")));
        line[prefix.len()..].split(',').next().unwrap().parse().unwrap()
    }

    fn lines(&self) -> impl Iterator<Item = &str> {
        self.log.lines().map(|l| l.trim_start_matches(" * ").trim())
    }

    fn has(&self, text: &str) -> bool {
        self.log.contains(text)
    }

    fn expect(&self, text: &str) {
        if !self.has(text) {
            self.fail(&format!("no {text:?} in the output"));
        }
    }

    fn fail(&self, why: &str) -> ! {
        panic!("{why}\n----- emerge-probe's output:\n{}", self.log)
    }

    /// The marker lines the checks of package PF printed in PHASE, as (uid, text).
    fn marks(&self, pf: &str, phase: &str) -> Vec<(u32, String)> {
        let prefix = format!("PBPROBE {pf} {phase} uid=");
        self.lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|rest| {
                let (uid, text) = rest.split_once(": ").unwrap();
                (uid.parse().unwrap(), text.to_string())
            })
            .collect()
    }

    /// Each of CHECKS ran once in PHASE of package PF, as UID, and passed.
    fn checked(&self, pf: &str, phase: &str, uid: u32, checks: &[&str]) {
        let marks = self.marks(pf, phase);
        for check in checks {
            let ran: Vec<_> = marks.iter().filter(|(_, text)| text.starts_with(check)).collect();
            if ran.len() != 1 {
                self.fail(&format!("{pf} {phase}: the check {check:?} ran {} times, not once", ran.len()));
            }
            if ran[0].0 != uid {
                self.fail(&format!("{pf} {phase}: {check:?} ran as uid {}, not {uid}", ran[0].0));
            }
        }
    }

    /// pbprobe-1 was built and installed with every check passing: setup as root on
    /// the host's network and IPC, compile and test (as BUILD_UID) in private ones.
    fn pbprobe_passed(&self, build_uid: u32) {
        if self.status(PBPROBE) != 0 {
            self.fail("emerge pbprobe failed");
        }
        self.checked("pbprobe-1", "setup", 0, &["shared network", "shared IPC"]);
        for phase in ["compile", "test"] {
            self.checked("pbprobe-1", phase, build_uid, &["private network", "private IPC"]);
        }
        self.checked("pbprobe-1", "test", build_uid, &["left pbprobe-daemon"]);
        self.expect("pbprobe: installed usr/bin/pbprobe-hello: mode 755 owner 0:0: hello from pbprobe-1\n");
        self.expect("pbprobe: installed usr/share/pbprobe/pbprobe.data: mode 644 owner 0:0: pbprobe data\n");
        self.expect("pbprobe: leftover pbprobe-daemon: none\n");
    }

    /// phasebox reported killing the daemon, which is gone.
    fn daemon_killed_by_phasebox(&self) {
        let line = self
            .lines()
            .find(|l| l.starts_with("phasebox: killed orphan ") && l.ends_with(" (pbprobe-daemon)"));
        let line = line.unwrap_or_else(|| self.fail("phasebox did not report killing pbprobe-daemon"));
        let pid: u32 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
        assert!(is_gone(pid), "pbprobe-daemon {pid} survived");
    }

    /// The --report records the hook wrote for package PF, by phase.
    fn records(&self, pf: &str) -> Vec<phasebox::report::Record> {
        self.lines()
            .filter_map(|l| l.strip_prefix("pbprobe-record: "))
            .map(|json| serde_json::from_str::<phasebox::report::Record>(json).unwrap())
            .filter(|r| r.package.as_deref() == Some(&format!("app-misc/{pf}")))
            .collect()
    }

    /// Every confined phase of pbprobe-1 left its record in the report next to the
    /// build log, with what it was given and what it left.
    fn reported(&self, root_mode: &str, build_mode: &str) {
        let records = self.records("pbprobe-1");
        let phases: Vec<&str> = records.iter().filter_map(|r| r.phase.as_deref()).collect();
        for phase in ["setup", "unpack", "compile", "test", "install"] {
            if phases.iter().filter(|&&p| p == phase).count() != 1 {
                self.fail(&format!("the report has {phases:?}, not one record of the {phase} phase"));
            }
        }
        let of = |phase: &str| records.iter().find(|r| r.phase.as_deref() == Some(phase)).unwrap();
        let (setup, test) = (of("setup"), of("test"));
        assert_eq!((setup.backend.as_str(), test.backend.as_str()), (root_mode, build_mode), "{}", self.log);
        assert_eq!(setup.isolations, ["pid"], "{}", self.log);
        assert_eq!(test.isolations, ["net", "ipc", "uts", "pid"], "{}", self.log);
        assert_eq!((test.exit_code, test.exited), (0, Some(0)), "{}", self.log);
        assert!(test.orphans.iter().any(|o| o.command == "pbprobe-daemon"), "{}", self.log);
        assert!(test.cpu_user_seconds.is_some() && test.wall_seconds > 0.0, "{}", self.log);
        self.expect("app-misc/pbprobe-1 test\n");
    }

    /// The mode phasebox chose for each phase it ran, in order, as (phase, mode): from
    /// the "phasebox: policy for the PHASE phase of CAT/PF: ..." and "phasebox: MODE
    /// mode: why" lines that -v prints.
    fn modes(&self) -> Vec<(&str, &str)> {
        let mut phase = None;
        let mut modes = Vec::new();
        for line in self.lines() {
            let Some(said) = line.strip_prefix("phasebox: ") else { continue };
            if let Some(rest) = said.strip_prefix("policy for the ") {
                phase = rest.split(' ').next();
            } else if let Some((mode, _)) = said.split_once(" mode: ") {
                let phase = phase.take().unwrap_or_else(|| self.fail(&format!("no phase before {line:?}")));
                modes.push((phase, mode));
            }
        }
        modes
    }

    /// phasebox ran PHASE, each time (of every package) in MODE.
    fn ran(&self, phase: &str, mode: &str) {
        let modes: Vec<_> = self.modes().into_iter().filter(|&(p, _)| p == phase).map(|(_, m)| m).collect();
        if modes.is_empty() || modes.iter().any(|&m| m != mode) {
            self.fail(&format!("phasebox ran the {phase} phase in {modes:?}, expected {mode} mode"));
        }
    }

    /// The hook ran every phase of an emerge (in the modes that -v printed).
    fn hooked(&self, root_phases: &str, build_phases: &str) {
        for phase in ["setup", "install", "instprep"] {
            self.ran(phase, root_phases);
        }
        for phase in ["unpack", "prepare", "configure", "compile", "test"] {
            self.ran(phase, build_phases);
        }
        for phase in ["preinst", "postinst"] {
            self.ran(phase, "unconfined");
        }
    }
}

fn phasebox() -> String {
    rig::phasebox_bin().to_str().unwrap().to_string()
}

/// What --keep-fds makes phasebox pick for root's phases here.
fn root_mode() -> &'static str {
    match rig::place() {
        Place::Nspawn => "scope",
        Place::Bare => "unshare",
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn hook_as_root_isolates_the_build_and_kills_the_daemon() {
    let bin = phasebox();
    let probe = emerge_probe(&["--hook", &bin, PBPROBE, PBPROBE_NET]);
    probe.pbprobe_passed(0);
    probe.daemon_killed_by_phasebox();
    probe.hooked(root_mode(), root_mode());
    probe.reported(root_mode(), root_mode());
    // Without a configuration that grants it, pbprobe-net's test has no network.
    assert_ne!(probe.status(PBPROBE_NET), 0, "{}", probe.log);
    probe.checked("pbprobe-net-1", "compile", 0, &["private network", "private IPC"]);
    probe.expect("ERROR: app-misc/pbprobe-net-1::pbprobe failed (test phase)");
    probe.expect("test: cannot reach the host's listener on 127.0.0.1:");
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn hook_with_userpriv_isolates_the_unprivileged_build() {
    let bin = phasebox();
    let probe = emerge_probe(&["--hook", &bin, "--userpriv", PBPROBE]);
    let uid = portage_uid();
    assert_ne!(uid, 0);
    probe.pbprobe_passed(uid);
    probe.daemon_killed_by_phasebox();
    // Without a user manager of its own, the portage user's phases are in namespaces
    // alone (a user namespace maps it to itself).
    probe.hooked(root_mode(), "unshare");
    if rig::place() == Place::Bare {
        return; // no systemd, so no user manager to try
    }
    // The documented one-time set-up: a lingering user manager for portage. Its
    // phases then run in scopes of that manager.
    let linger = |verb: &str| {
        let out = Command::new("loginctl").args([verb, "portage"]).output().unwrap();
        assert!(out.status.success(), "loginctl {verb} portage: {out:?}");
    };
    linger("enable-linger");
    let bus = PathBuf::from(format!("/run/user/{uid}/bus"));
    let started = Instant::now();
    while !bus.exists() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let probe = emerge_probe(&["--hook", &bin, "--userpriv", PBPROBE]);
    linger("disable-linger");
    probe.pbprobe_passed(uid);
    probe.daemon_killed_by_phasebox();
    probe.hooked(root_mode(), "scope");
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn control_without_any_sandbox_the_checks_fail() {
    let probe = emerge_probe(&[PBPROBE]);
    assert_ne!(probe.status(PBPROBE), 0, "{}", probe.log);
    probe.checked("pbprobe-1", "setup", 0, &["shared network", "shared IPC"]);
    probe.expect("ERROR: app-misc/pbprobe-1::pbprobe failed (compile phase)");
    probe.expect("compile: reached the host's listener on 127.0.0.1:");
    assert!(probe.modes().is_empty() && !probe.has("phasebox:"), "phasebox ran: {}", probe.log);
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn portages_own_sandboxes_pass_the_same_checks() {
    let probe = emerge_probe(&["--features", "network-sandbox ipc-sandbox pid-sandbox", PBPROBE]);
    // portage's PID namespace ends the daemon with the phase.
    probe.pbprobe_passed(0);
    assert!(probe.modes().is_empty() && !probe.has("phasebox:"), "phasebox ran: {}", probe.log);
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn failing_test_fails_emerge_and_the_config_shares_one_packages_network() {
    let bin = phasebox();
    let config = portage_dir().join("pbprobe-net.toml");
    let opts = format!("-v --config {}", config.display());
    let probe = emerge_probe(&["--hook", &bin, "--opts", &opts, PBPROBE_FAIL, PBPROBE_NET]);
    assert_ne!(probe.status(PBPROBE_FAIL), 0, "{}", probe.log);
    probe.expect("PBPROBE pbprobe-fail-1 test: failing on purpose");
    probe.expect("ERROR: app-misc/pbprobe-fail-1::pbprobe failed (test phase)");
    probe.expect("pbprobe-fail: the test suite failed on purpose");
    assert_eq!(probe.status(PBPROBE_NET), 0, "{}", probe.log);
    probe.checked("pbprobe-net-1", "compile", 0, &["private network", "private IPC"]);
    probe.checked("pbprobe-net-1", "test", 0, &["shared network", "private IPC"]);
    probe.ran("test", root_mode());
}
