//! The security suite: every isolation phasebox claims, attacked for real, for root
//! and for an unprivileged caller, in every mode this place runs. Each attack is
//! first made without phasebox (the control): it must get through there, so that a
//! test can't pass because the attack itself was broken. The attacks are
//! tests/security/attack.py's. Run by tests/run inside the nspawn systemd (service,
//! scope and unshare modes) and on the bare host (unshare mode), with
//! `--include-ignored`.

#[allow(dead_code)]
mod common;

use std::io::Read;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use common::rig::{
    self, Place, Who, cases, code, host, output, phasebox_for, run, sh, sleeping, stderr, stdout, within,
};

/// tests/security/attack.py, where tests/run shows the checkout.
fn attack_py() -> String {
    format!("{}/tests/security/attack.py", env!("CARGO_MANIFEST_DIR"))
}

/// `attack.py ARGS...` without phasebox, as WHO: the control.
fn unsandboxed(who: Who, args: &[&str]) -> Output {
    let mut cmd = match who {
        Who::Root => Command::new("python3"),
        Who::User => rig::as_rig_user("python3"),
    };
    output(cmd.arg(attack_py()).args(args).stdin(Stdio::null()))
}

/// `phasebox run --mode MODE [EXTRA...] -- python3 attack.py ARGS...` as WHO.
fn sandboxed(mode: &str, who: Who, extra: &[&str], args: &[&str]) -> Output {
    let attack = attack_py();
    let mut full: Vec<&str> = extra.to_vec();
    full.extend(["--", "python3", &attack]);
    full.extend(args);
    run(mode, who, &full)
}

/// The attack got through (attack.py exits 0).
fn escaped(out: &Output) -> bool {
    out.status.code() == Some(0) && stdout(out).starts_with("escaped: ")
}

/// The attack was tried and stopped (attack.py exits 3).
fn blocked(out: &Output) -> bool {
    out.status.code() == Some(3) && stdout(out).starts_with("blocked: ")
}

/// The control first, then every (mode, caller): the attack gets through without
/// phasebox and is stopped with it.
fn attack_everywhere(args: &[&str]) {
    for who in [Who::Root, Who::User] {
        let control = unsandboxed(who, args);
        assert!(escaped(&control), "control {who:?} {args:?}: {control:?}");
    }
    for (mode, who) in cases() {
        let out = sandboxed(mode, who, &[], args);
        assert!(blocked(&out), "{mode} {who:?} {args:?}: {}{}", stdout(&out), stderr(&out));
    }
}

/// A pseudo-terminal: the caller's terminal in these tests.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

impl Pty {
    fn new() -> Pty {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two descriptors; the other arguments may be NULL.
        let rc = unsafe {
            libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: fresh descriptors owned by nobody else.
        unsafe { Pty { master: OwnedFd::from_raw_fd(master), slave: OwnedFd::from_raw_fd(slave) } }
    }

    /// Run CMD as a process whose controlling terminal this is, on its stdin, as
    /// an interactive shell's command would be.
    fn run(&self, cmd: &mut Command) -> Output {
        let slave = self.slave.as_raw_fd();
        // SAFETY: only setsid, dup2 and ioctl, in the forked child before it execs.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::dup2(slave, 0) < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        output(cmd.stdin(Stdio::null()))
    }

    /// What is waiting in the terminal's input, to be read by its shell.
    fn pending_input(&self) -> String {
        let fd = self.slave.as_raw_fd();
        // SAFETY: fcntl on our descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) };
        let mut file = std::fs::File::from(self.slave.try_clone().unwrap());
        let mut text = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
        let _ = &self.master;
        String::from_utf8_lossy(&text).into_owned()
    }
}

/// dev.tty.legacy_tiocsti=1 while alive (kernels since 6.2 let only CAP_SYS_ADMIN
/// push input otherwise): the attack must be possible without phasebox.
struct LegacyTiocsti(Option<String>);

impl LegacyTiocsti {
    fn on() -> LegacyTiocsti {
        let path = "/proc/sys/dev/tty/legacy_tiocsti";
        match std::fs::read_to_string(path) {
            Ok(value) if value.trim() == "0" => {
                std::fs::write(path, "1")
                    .expect("control: dev.tty.legacy_tiocsti is 0 and can't be set to 1");
                LegacyTiocsti(Some(value))
            }
            _ => LegacyTiocsti(None),
        }
    }
}

impl Drop for LegacyTiocsti {
    fn drop(&mut self) {
        if let Some(value) = &self.0 {
            let _ = std::fs::write("/proc/sys/dev/tty/legacy_tiocsti", value);
        }
    }
}

/// Issue 15 item 1: a phase that pushes a command into the caller's terminal with
/// TIOCSTI would have the caller's shell run it, outside the sandbox, once phasebox
/// exits. The terminal guard refuses TIOCSTI (and TIOCLINUX) in every mode.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn a_phase_cannot_type_into_the_callers_terminal() {
    let _legacy = LegacyTiocsti::on();
    let typed = "echo PWNED\n";
    let attack = attack_py();
    for who in [Who::Root, Who::User] {
        let pty = Pty::new();
        let mut cmd = match who {
            Who::Root => Command::new("python3"),
            Who::User => rig::as_rig_user("python3"),
        };
        let out = pty.run(cmd.args([attack.as_str(), "tiocsti", typed]));
        assert!(escaped(&out), "control {who:?}: {out:?}");
        assert_eq!(pty.pending_input(), typed, "control {who:?}: the terminal got no input");
    }
    for (mode, who) in cases() {
        let pty = Pty::new();
        let out =
            pty.run(&mut phasebox_for(who, &["--mode", mode, "--", "python3", &attack, "tiocsti", typed]));
        assert!(blocked(&out), "{mode} {who:?}: {}{}", stdout(&out), stderr(&out));
        assert_eq!(pty.pending_input(), "", "{mode} {who:?}: the phase typed into the terminal");
        // Job control and the rest of the terminal still work.
        let out = pty.run(&mut phasebox_for(who, &["--mode", mode, "--", "stty", "size"]));
        assert_eq!(code(&out), 0, "{mode} {who:?}: {}", stderr(&out));
    }
}

/// The host's POSIX message queue, its shared memory object, and SysV objects;
/// removed when dropped.
struct HostIpc {
    name: String,
    mqueue_dir: String,
    sysv: Vec<(&'static str, String)>,
}

impl HostIpc {
    fn new() -> HostIpc {
        let name = format!("phasebox-security-{}", std::process::id());
        let create = format!(
            "import ctypes, os\n\
             libc = ctypes.CDLL(None, use_errno=True)\n\
             os.umask(0)\n\
             assert libc.mq_open(b'/{name}', os.O_RDWR | os.O_CREAT, 0o666, None) >= 0\n\
             open('/dev/shm/{name}', 'w').write('host secret')\n\
             os.chmod('/dev/shm/{name}', 0o666)"
        );
        host("python3", &["-c", &create]);
        // The host's mqueue filesystem, wherever it is mounted (/dev/mqueue on
        // systemd and OpenRC hosts; tests/rig/bare mounts one on the bare host).
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mqueue_dir = mountinfo
            .lines()
            .find(|l| l.contains(" - mqueue "))
            .and_then(|l| l.split(' ').nth(4))
            .expect("control: the host has an mqueue filesystem mounted")
            .to_string();
        let make = |flag: &str, arg: Option<&str>| {
            let mut args = vec![flag];
            args.extend(arg);
            args.extend(["-p", "0666"]);
            stdout(&host("ipcmk", &args)).trim().rsplit(' ').next().unwrap().to_string()
        };
        let sysv = vec![
            ("shm", make("-M", Some("4096"))),
            ("sem", make("-S", Some("1"))),
            ("msg", make("-Q", None)),
        ];
        HostIpc { name, mqueue_dir, sysv }
    }
}

impl Drop for HostIpc {
    fn drop(&mut self) {
        let name = &self.name;
        let _ = output(
            Command::new("python3")
                .args(["-c", &format!("import ctypes; ctypes.CDLL(None).mq_unlink(b'/{name}')")]),
        );
        let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
        for (kind, id) in &self.sysv {
            let flag = match *kind {
                "shm" => "-m",
                "sem" => "-s",
                _ => "-q",
            };
            let _ = output(Command::new("ipcrm").args([flag, id]));
        }
    }
}

/// Issue 15 item 2, and the IPC isolation that already held: the host's POSIX
/// message queues, by name and through an mqueue filesystem, its POSIX shared
/// memory and semaphores through /dev/shm, and its SysV objects are out of reach.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn the_hosts_ipc_objects_are_out_of_reach_by_name_and_by_path() {
    let ipc = HostIpc::new();
    let name = ipc.name.as_str();
    let queue_file = format!("{}/{name}", ipc.mqueue_dir);
    let mut attacks: Vec<Vec<&str>> = vec![vec!["mq-name", name], vec!["mq-path", &queue_file]];
    attacks.push(vec!["shm-path", name]);
    for (kind, id) in &ipc.sysv {
        attacks.push(vec!["sysv", kind, id]);
    }
    for attack in &attacks {
        attack_everywhere(attack);
    }
    // The phase's own /dev/shm works, as builds need it.
    for (mode, who) in cases() {
        let out = sh(mode, who, "echo mine > /dev/shm/phasebox-own && cat /dev/shm/phasebox-own");
        assert_eq!(stdout(&out), "mine\n", "{mode} {who:?}: {}", stderr(&out));
    }
    assert!(std::fs::metadata("/dev/shm/phasebox-own").is_err(), "a phase's /dev/shm reached the host");
}

/// Issue 15 item 3: PID 1 of the phase's namespace once held the outer /proc open,
/// and through /proc/1/fd/3 a phase reached the host's namespaces and memory.
/// No process in sight of the phase may hold such a descriptor.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn no_process_in_sight_holds_the_hosts_proc_open() {
    // Control: the same probe finds the door of a PID 1 that holds one.
    let attack = attack_py();
    let door = format!("exec 3</proc; exec unshare --pid --fork --mount-proc python3 {attack} proc-door");
    let out = output(Command::new("sh").args(["-c", &door]));
    assert!(escaped(&out), "control root: {out:?}");
    let door_user = format!(
        "exec 3</proc; exec unshare --user --map-root-user --pid --fork --mount-proc python3 {attack} proc-door"
    );
    let out = output(rig::as_rig_user("sh").args(["-c", &door_user]));
    assert!(escaped(&out), "control user: {out:?}");
    for (mode, who) in cases() {
        // Service mode has no PID namespace unless asked for.
        let out = sandboxed(mode, who, &["--pid"], &["proc-door"]);
        assert!(blocked(&out), "{mode} {who:?}: {}{}", stdout(&out), stderr(&out));
    }
}

/// A directory where USER may write, as the portage user may write where records go.
fn writable_by_user() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("phasebox-security-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_, uid) = rig::rig_user();
    std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
    dir
}

/// Issue 15 item 4: root appended records through a symbolic link another user
/// planted at the --report path, and hung on a FIFO there. Never again, in any mode.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn the_report_is_never_written_through_a_planted_link_nor_blocks_on_a_fifo() {
    let dir = writable_by_user();
    let secret = std::env::temp_dir().join(format!("phasebox-security-secret-{}", std::process::id()));
    std::fs::write(&secret, "root's own\n").unwrap();
    let link = dir.join("link.jsonl");
    let fifo = dir.join("fifo.jsonl");
    let as_user =
        |args: &[&str]| assert!(output(rig::as_rig_user(args[0]).args(&args[1..])).status.success());
    as_user(&["ln", "-s", secret.to_str().unwrap(), link.to_str().unwrap()]);
    as_user(&["mkfifo", fifo.to_str().unwrap()]);
    // Controls: a plain append follows the link, and opening the FIFO blocks.
    let out = output(Command::new("sh").args(["-c", &format!("echo appended >> {}", link.display())]));
    assert_eq!(code(&out), 0);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root's own\nappended\n", "control: the link");
    std::fs::write(&secret, "root's own\n").unwrap();
    let out = output(Command::new("timeout").args(["2", "sh", "-c", &format!(": >> {}", fifo.display())]));
    assert_eq!(code(&out), 124, "control: opening the FIFO must block");
    for (mode, who) in cases().into_iter().filter(|(_, who)| *who == Who::Root) {
        for (path, why) in [(&link, "is a symbolic link"), (&fifo, "is a FIFO or socket")] {
            let started = std::time::Instant::now();
            let out = run(mode, who, &["--report", path.to_str().unwrap(), "true"]);
            assert_eq!(code(&out), 125, "{mode}: {}", stderr(&out));
            assert!(stderr(&out).contains(why), "{mode}: {}", stderr(&out));
            assert!(started.elapsed().as_secs() < 10, "{mode}: phasebox hung on {}", path.display());
        }
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "root's own\n",
            "{mode}: written through the link"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&secret).unwrap();
}

/// `phasebox ARGS...` as the rig user without a runtime directory (no
/// XDG_RUNTIME_DIR, no /run/user), as on hosts without systemd: its unshare phases
/// are then listed in TMPDIR/phasebox-UID, here TMP.
fn without_runtime_dir(tmp: &std::path::Path, args: &[&str]) -> Command {
    let (_, uid) = rig::rig_user();
    let script = format!(
        "mount -t tmpfs phasebox-none /run/user 2>/dev/null; exec setpriv --reuid={uid} --regid={uid} \
         --clear-groups env -u XDG_RUNTIME_DIR TMPDIR={} HOME={} \"$@\"",
        tmp.display(),
        rig::rig_home()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(rig::phasebox_bin())
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null());
    cmd
}

/// Issue 15 item 5: without XDG_RUNTIME_DIR, an unprivileged caller's unshare
/// phases are listed in /tmp/phasebox-UID, which another user may create first.
/// phasebox then neither trusts it (stop signalled a process the attacker named)
/// nor hangs on a FIFO, and prints no escape sequence it finds there.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn a_registry_another_user_planted_is_not_trusted() {
    let (_, uid) = rig::rig_user();
    let tmp = std::env::temp_dir().join(format!("phasebox-security-tmp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    // The victim's unrelated process, and the attacker's (root's) directory naming it.
    let mut victim =
        rig::as_rig_user("sleep").arg("1777.5").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let planted = tmp.join(format!("phasebox-{uid}"));
    std::fs::create_dir_all(&planted).unwrap();
    let record = format!(
        r#"{{"pid":{},"description":"phasebox: app-misc/pbvictim-1 test phase\u001b[2J","since_micros":1}}"#,
        victim.id()
    );
    std::fs::write(planted.join(format!("unshare-{}-1.phase", victim.id())), record).unwrap();
    let as_victim = |args: &[&str]| output(&mut without_runtime_dir(&tmp, args));
    // Control: the victim's process could be signalled by the victim.
    assert!(output(rig::as_rig_user("kill").args(["-0", &victim.id().to_string()])).status.success());
    let out = as_victim(&["stop", "app-misc/pbvictim"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{} must be a directory owned by you", planted.display())),
        "{}",
        stderr(&out)
    );
    assert!(victim.try_wait().unwrap().is_none(), "phasebox stop killed the victim's process");
    let out = as_victim(&["ps"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(!stdout(&out).contains('\u{1b}') && !stderr(&out).contains('\u{1b}'), "{out:?}");
    let out = as_victim(&["run", "--mode", "unshare", "--", "echo", "ran"]);
    assert_eq!((code(&out), stdout(&out)), (0, "ran\n".into()), "{}", stderr(&out));
    assert!(stderr(&out).contains("this phase is not listed by `phasebox ps`"), "{}", stderr(&out));
    std::fs::remove_dir_all(&planted).unwrap();

    // The caller's own directory: a FIFO there neither hangs ps nor stop, and an
    // escape sequence in a description is shown escaped.
    let own = tmp.join(format!("phasebox-{uid}"));
    let mkdir =
        rig::as_rig_user("install").args(["-d", "-m", "0700", own.to_str().unwrap()]).status().unwrap();
    assert!(mkdir.success());
    let fifo = own.join("unshare-1-1.phase");
    assert!(rig::as_rig_user("mkfifo").arg(&fifo).status().unwrap().success());
    let out = output(Command::new("timeout").args(["2", "cat", fifo.to_str().unwrap()]));
    assert_eq!(code(&out), 124, "control: reading the FIFO must block");
    let mut phase = without_runtime_dir(&tmp, &[])
        .args([
            "run",
            "--mode",
            "unshare",
            "--description",
            "evil\u{1b}[2Jname",
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 1777.6",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(phase.stdout.take().unwrap()), &mut line)
        .unwrap();
    let started = std::time::Instant::now();
    let out = as_victim(&["ps"]);
    assert!(started.elapsed().as_secs() < 10, "ps hung on a FIFO");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("evil\\x1b[2Jname") && !stdout(&out).contains('\u{1b}'),
        "{}",
        stdout(&out)
    );
    let out = as_victim(&["stop", &format!("unshare-{}", phase.id())]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(phase.wait().unwrap().code(), Some(143));
    victim.kill().unwrap();
    victim.wait().unwrap();
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Issue 15 item 6: a command that ignores SIGTERM outlives --timeout's stop by the
/// grace period; phasebox still exits 124, writes the record and names the orphans.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn a_command_that_ignores_sigterm_still_times_out_with_its_record() {
    // Control: the command does ignore SIGTERM.
    let out = output(Command::new("timeout").args([
        "-s",
        "TERM",
        "1",
        "sh",
        "-c",
        "trap '' TERM; sleep 3; echo outlived",
    ]));
    assert_eq!(stdout(&out), "outlived\n", "control: {out:?}");
    for (mode, who) in cases() {
        let report = std::env::temp_dir().join(format!("phasebox-security-{mode}-{who:?}.jsonl"));
        let _ = std::fs::remove_file(&report);
        let marker = "1666.5";
        let script = format!("trap '' TERM; sleep {marker} >/dev/null 2>&1 </dev/null & exec sleep {marker}");
        let limit = rig::short_limit();
        let args = ["--timeout", &limit, "--report", report.to_str().unwrap(), "sh", "-c", &script];
        let out = run(mode, who, &args);
        let err = stderr(&out);
        assert_eq!(code(&out), 124, "{mode} {who:?}: {err}");
        let record: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&report).unwrap().trim()).unwrap();
        assert_eq!(record["limit"], "time", "{mode} {who:?}: {record}");
        assert!(err.contains("phasebox: killed orphan ") && err.contains("(sleep)"), "{mode} {who:?}: {err}");
        assert!(within(2.0, || sleeping(marker).is_empty()), "{mode} {who:?}: {:?}", sleeping(marker));
        std::fs::remove_file(&report).unwrap();
    }
}

/// Issue 15 item 7: with stderr unwritable, phasebox's notices once panicked and it
/// exited 125. The command's status and the record must come through unchanged.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn an_unwritable_stderr_changes_neither_the_status_nor_the_record() {
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let control = output(Command::new("sh").args(["-c", "echo notice >&2"]).stderr(full()));
    assert_ne!(code(&control), 0, "control: /dev/full must refuse writes");
    for (mode, who) in cases() {
        let report = std::env::temp_dir().join(format!("phasebox-security-full-{mode}-{who:?}.jsonl"));
        let _ = std::fs::remove_file(&report);
        let args = [
            "--mode",
            mode,
            "--report",
            report.to_str().unwrap(),
            "sh",
            "-c",
            "sleep 1555 >/dev/null 2>&1 </dev/null & exit 3",
        ];
        let out = output(phasebox_for(who, &args).stderr(full()));
        assert_eq!(code(&out), 3, "{mode} {who:?}");
        let record: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&report).unwrap().trim()).unwrap();
        assert_eq!(record["exit_code"], 3, "{mode} {who:?}: {record}");
        assert_eq!(record["orphans"].as_array().unwrap().len(), 1, "{mode} {who:?}: {record}");
        std::fs::remove_file(&report).unwrap();
    }
}

/// Issue 15 item 8: -p LimitFSIZE=0 applied to phasebox itself in unshare mode,
/// which died of SIGXFSZ writing its own files. Limits are the command's alone.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn limits_apply_to_the_command_not_to_phasebox() {
    let control = output(
        Command::new("sh").args(["-c", "ulimit -f 0; echo x > /dev/shm/phasebox-fsize; echo survived"]),
    );
    assert_ne!(stdout(&control), "survived\n", "control: the limit must stop a write");
    let _ = std::fs::remove_file("/dev/shm/phasebox-fsize");
    for (mode, who) in cases() {
        let report = std::env::temp_dir().join(format!("phasebox-security-fsize-{mode}-{who:?}.jsonl"));
        let _ = std::fs::remove_file(&report);
        let file = format!("{}/phasebox-fsize-{mode}", rig::rig_home());
        let write = format!("echo x > {file}");
        let out =
            run(mode, who, &["-p", "LimitFSIZE=0", "--report", report.to_str().unwrap(), "sh", "-c", &write]);
        // The command's write raises SIGXFSZ in the command; phasebox goes on.
        assert_eq!(code(&out), 128 + libc::SIGXFSZ, "{mode} {who:?}: {}", stderr(&out));
        let record: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&report).unwrap().trim()).unwrap();
        assert_eq!(record["signal"], libc::SIGXFSZ, "{mode} {who:?}: {record}");
        let _ = std::fs::remove_file(&file);
        std::fs::remove_file(&report).unwrap();
    }
}

/// Issue 15 item 9: `phasebox __inner FILE` removed any file it could read before
/// it knew FILE for a context file.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn the_inner_mode_removes_nothing_but_its_own_context() {
    let file = std::env::temp_dir().join(format!("phasebox-security-inner-{}", std::process::id()));
    std::fs::write(&file, "not a context\n").unwrap();
    let out = output(Command::new(rig::phasebox_bin()).arg("__inner").arg(&file));
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a context\n", "the inner mode removed the file");
    std::fs::remove_file(&file).unwrap();
}

/// Issue 15 item 10, and the orphans that already died: what a phase leaves behind
/// by a double fork, in a new session, and in a PID namespace of its own is killed
/// with the phase, and each process is named.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn survivors_of_double_forks_sessions_and_nested_pid_namespaces_are_killed_and_named() {
    for who in [Who::Root, Who::User] {
        let marker = "1444.5";
        let out = unsandboxed(who, &["survive", marker]);
        assert!(escaped(&out), "control {who:?}: {out:?}");
        let left = sleeping(marker);
        assert_eq!(left.len(), 3, "control {who:?}: {left:?}");
        for pid in left {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
        }
    }
    for (mode, who) in cases() {
        let marker = "1444.6";
        let out = sandboxed(mode, who, &[], &["survive", marker]);
        assert_eq!(code(&out), 0, "{mode} {who:?}: {}", stderr(&out));
        assert!(
            within(2.0, || sleeping(marker).is_empty()),
            "{mode} {who:?}: survived: {:?}",
            sleeping(marker)
        );
        let named = stderr(&out)
            .lines()
            .filter(|l| l.starts_with("phasebox: killed orphan ") && l.ends_with(" (sleep)"))
            .count();
        assert_eq!(named, 3, "{mode} {who:?}: {}", stderr(&out));
    }
}

/// The descriptors the command gets are the caller's, and none of phasebox's own
/// (its channel, pidfds, registry, findings file): in scope and unshare modes every
/// descriptor the caller passes, in service mode 0-2.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn the_command_inherits_no_descriptor_of_phaseboxs_own() {
    let passed = |cmd: &mut Command| -> Output {
        let (read, write) = nix::unistd::pipe().unwrap();
        let fd = write.as_raw_fd();
        // SAFETY: only close_range and dup2 in the forked child before it execs.
        unsafe {
            cmd.pre_exec(move || {
                libc::dup2(fd, 5);
                libc::syscall(libc::SYS_close_range, 6, u32::MAX, 0);
                libc::syscall(libc::SYS_close_range, 3, 4, 0);
                Ok(())
            });
        }
        let out = output(cmd);
        drop((read, write));
        out
    };
    for who in [Who::Root, Who::User] {
        let mut cmd = match who {
            Who::Root => Command::new("python3"),
            Who::User => rig::as_rig_user("python3"),
        };
        let out = passed(cmd.arg(attack_py()).args(["fds", "0", "1", "2"]));
        assert!(escaped(&out) && stdout(&out).contains("{5: 'pipe:"), "control {who:?}: {out:?}");
    }
    let attack = attack_py();
    for (mode, who) in cases() {
        let allowed: &[&str] = if mode == "service" { &["0", "1", "2"] } else { &["0", "1", "2", "5"] };
        let mut args = vec!["--mode", mode, "--keep-fds", "--", "python3", &attack, "fds"];
        if mode == "service" {
            args.remove(2);
        }
        args.extend(allowed);
        let out = passed(&mut phasebox_for(who, &args));
        assert!(blocked(&out), "{mode} {who:?}: {}{}", stdout(&out), stderr(&out));
    }
}

/// The host's processes are out of sight and reach where the phase has a PID
/// namespace (every mode with --pid; scope and unshare modes by default).
#[test]
#[ignore = "needs the rig: run tests/run"]
fn host_processes_are_out_of_reach() {
    let mut victim =
        rig::as_rig_user("sleep").arg("1333.5").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = victim.id().to_string();
    for who in [Who::Root, Who::User] {
        let out = unsandboxed(who, &["pid", &pid]);
        assert!(escaped(&out), "control {who:?}: {out:?}");
    }
    for (mode, who) in cases() {
        let out = sandboxed(mode, who, &["--pid"], &["pid", &pid]);
        assert!(blocked(&out), "{mode} {who:?}: {}{}", stdout(&out), stderr(&out));
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
}

/// Host TCP services on loopback, and abstract unix sockets (which belong to the
/// network namespace).
#[test]
#[ignore = "needs the rig: run tests/run"]
fn host_services_on_loopback_and_abstract_sockets_are_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let name = format!("phasebox-security-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let _abstract = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    attack_everywhere(&["tcp", "127.0.0.1", &port]);
    attack_everywhere(&["abstract", &name]);
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn hostname_is_localhost_and_the_hosts_is_untouched() {
    let before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(before.trim(), "localhost", "control: the host must have another name");
    for (mode, who) in cases() {
        let out = sh(mode, who, "cat /proc/sys/kernel/hostname; hostname changed-inside 2>/dev/null; true");
        assert_eq!(stdout(&out), "localhost\n", "{mode} {who:?}: {}", stderr(&out));
    }
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(), before);
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn host_udp_on_loopback_gets_nothing_from_inside() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let send = format!("printf inside >/dev/udp/127.0.0.1/{port}");
    for (mode, who) in cases() {
        // bash's /dev/udp: inside, 127.0.0.1 is the phase's own loopback.
        run(mode, who, &["bash", "-c", &send]);
    }
    // A control from outside, sent last: it must be the first datagram to arrive.
    let out = output(Command::new("bash").args(["-c", &send.replace("inside", "outside")]));
    assert_eq!(code(&out), 0, "control: {}", stderr(&out));
    socket.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).expect("control: the host's own datagram did not arrive");
    assert_eq!(&buf[..n], b"outside", "a phase reached the host's UDP socket");
}

/// The host's own addresses besides loopback (every global IPv4 and IPv6 address).
fn host_addresses() -> Vec<std::net::IpAddr> {
    let out = host("ip", &["-o", "addr", "show", "scope", "global"]);
    let addresses: Vec<std::net::IpAddr> = stdout(&out)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
        .collect();
    assert!(!addresses.is_empty(), "control: this host has no address besides loopback to try");
    addresses
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn host_services_on_the_hosts_other_addresses_are_unreachable() {
    let addresses = host_addresses();
    let listeners: Vec<TcpListener> = addresses.iter().map(|a| TcpListener::bind((*a, 0)).unwrap()).collect();
    let sockets: Vec<std::net::UdpSocket> =
        addresses.iter().map(|a| std::net::UdpSocket::bind((*a, 0)).unwrap()).collect();
    // One Python list of (kind, address, port) for the phase to try.
    let targets: Vec<String> = listeners
        .iter()
        .map(|l| format!("('tcp', '{}', {})", l.local_addr().unwrap().ip(), l.local_addr().unwrap().port()))
        .chain(sockets.iter().map(|s| {
            format!("('udp', '{}', {})", s.local_addr().unwrap().ip(), s.local_addr().unwrap().port())
        }))
        .collect();
    let script = format!(
        "import socket\n\
         for kind, address, port in [{}]:\n\
         \x20   family = socket.AF_INET6 if ':' in address else socket.AF_INET\n\
         \x20   try:\n\
         \x20       if kind == 'tcp':\n\
         \x20           socket.create_connection((address, port), timeout=5).close()\n\
         \x20       else:\n\
         \x20           socket.socket(family, socket.SOCK_DGRAM).sendto(b'inside', (address, port))\n\
         \x20       print('reached', kind, address)\n\
         \x20   except OSError as error:\n\
         \x20       print('failed', kind, address, error.strerror)\n",
        targets.join(", ")
    );
    let control = output(Command::new("python3").args(["-c", &script]));
    assert_eq!(stdout(&control).matches("reached").count(), targets.len(), "control: {}", stdout(&control));
    for socket in &sockets {
        // Drain the control's datagram; later, only phases could have sent one.
        socket.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        socket.recv(&mut [0u8; 64]).expect("control: the host's own datagram did not arrive");
    }
    for (mode, who) in cases() {
        let out = run(mode, who, &["python3", "-c", &script]);
        let text = stdout(&out);
        assert_eq!(text.matches("failed").count(), targets.len(), "{mode} {who:?}: {text} {}", stderr(&out));
        assert!(!text.contains("reached"), "{mode} {who:?}: {text}");
    }
    for socket in &sockets {
        socket.set_nonblocking(true).unwrap();
        let got = socket.recv(&mut [0u8; 64]);
        assert!(got.is_err(), "a phase's datagram reached {}", socket.local_addr().unwrap());
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn a_server_inside_is_unreachable_from_the_host() {
    for (mode, who) in cases() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Listens on every address of the phase, checks that it does, then waits.
        let script = format!(
            "import socket, sys\n\
             server = socket.socket(socket.AF_INET6)\n\
             server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n\
             server.bind(('::', {port}))\n\
             server.listen()\n\
             socket.create_connection(('127.0.0.1', {port})).close()\n\
             print('listening', flush=True)\n\
             sys.stdin.readline()\n"
        );
        let args = ["--mode", mode, "python3", "-c", &script];
        let mut cmd = phasebox_for(who, &args);
        let mut child =
            cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
            .unwrap();
        assert_eq!(line, "listening\n", "{mode} {who:?}");
        let mut addresses = host_addresses();
        addresses.extend(["127.0.0.1".parse::<std::net::IpAddr>().unwrap(), "::1".parse().unwrap()]);
        for address in addresses {
            let reached = std::net::TcpStream::connect((address, port));
            assert!(reached.is_err(), "{mode} {who:?}: the host reached the phase's server on {address}");
        }
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"done\n").unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0), "{mode} {who:?}");
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn an_unprivileged_caller_gains_no_privilege() {
    let (_, uid) = rig::rig_user();
    for (mode, _) in cases().into_iter().filter(|(_, who)| *who == Who::User) {
        let out = sh(mode, Who::User, "id -u; id -g; grep -E '^Cap(Prm|Eff|Amb)' /proc/self/status");
        assert_eq!(
            stdout(&out),
            format!(
                "{uid}\n{uid}\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapAmb:\t0000000000000000\n"
            ),
            "{mode}: {}",
            stderr(&out)
        );
        let out = run(mode, Who::User, &["-p", "User=root", "id", "-u"]);
        assert_eq!(code(&out), 125, "{mode}: {}", stderr(&out));
        assert!(stderr(&out).contains("unknown or unsupported property 'User'"), "{mode}: {}", stderr(&out));
    }
    if rig::place() == Place::Nspawn {
        // The system manager runs services as root and only lets root start units.
        let out = run("service", Who::User, &["--system", "id", "-u"]);
        assert_eq!((code(&out), stdout(&out)), (125, String::new()), "{}", stderr(&out));
        assert!(stderr(&out).contains("you are not root; leave out --system"), "{}", stderr(&out));
        let out = run("scope", Who::User, &["--system", "id", "-u"]);
        assert_eq!((code(&out), stdout(&out)), (125, String::new()), "{}", stderr(&out));
        assert!(stderr(&out).contains("systemd refused to start"), "{}", stderr(&out));
    }
}
