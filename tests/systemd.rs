//! phasebox against a real systemd: run by tests/run inside a systemd-nspawn
//! container (PHASEBOX_RIG=1), with `--include-ignored`.

#[allow(dead_code)]
mod common;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::rig::{
    self, LEAVE_ORPHAN, code, host, is_gone, output, phasebox, phasebox_as_user, stderr, stdout,
    units_matching,
};

/// NAME made this test process's own, so that two runs of the suite at once (a
/// check that phases don't race each other) never share a unit or a file.
fn own(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn exit_statuses_pass_through() {
    for status in [0, 1, 7] {
        let out = output(&mut phasebox(&sh(&format!("exit {status}"))));
        assert_eq!(code(&out), status, "{}", stderr(&out));
    }
    let out = output(&mut phasebox(&sh("kill -TERM $$")));
    assert_eq!(code(&out), 128 + 15, "{}", stderr(&out));
    let out = output(&mut phasebox(&sh("kill -KILL $$")));
    assert_eq!(code(&out), 128 + 9, "{}", stderr(&out));
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn missing_and_unexecutable_commands_are_127_and_126() {
    let out = output(&mut phasebox(&["no-such-command-phasebox"]));
    assert_eq!(code(&out), 127);
    assert!(stderr(&out).contains("no-such-command-phasebox: command not found"), "{}", stderr(&out));

    let file = std::env::temp_dir().join(own("phasebox-not-executable"));
    std::fs::write(&file, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = output(&mut phasebox(&[&file]));
    assert_eq!(code(&out), 126);
    assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn stdio_is_the_callers() {
    // -q: without phasebox's summary line, stderr is the command's alone.
    let mut child = phasebox(&[vec!["-q".to_string()], sh("cat; echo to-stderr >&2")].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"to-stdin\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "to-stdin\n");
    assert_eq!(stderr(&out), "to-stderr\n");
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn a_100_mb_stream_passes_byte_exact() {
    const SIZE: usize = 100 << 20;
    // xorshift: every byte value, no repeating pattern a copy bug could hide in.
    let mut state = 0x9e3779b97f4a7c15u64;
    let data: Vec<u8> = (0..SIZE / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    let mut child = phasebox(&["cat"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || stdin.write_all(&data))
    };
    let mut received = Vec::with_capacity(SIZE);
    child.stdout.take().unwrap().read_to_end(&mut received).unwrap();
    writer.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(received.len(), SIZE);
    assert!(received == data, "the stream was altered");
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn environment_arrives_byte_exact() {
    let env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("BASH_FUNC_greet%%".into(), "() {  echo hello from an exported function\n}".into()),
        ("LATIN1".into(), OsString::from_vec(b"caf\xe9 \xff\x80".to_vec())),
        (OsString::from_vec(b"NAME\xe9".to_vec()), "non-UTF-8 name".into()),
        ("WITH SPACE".into(), "systemd refuses this name".into()),
        ("EMPTY".into(), "".into()),
        ("MULTI".into(), "line one\nline two\ttab".into()),
    ];
    let mut cmd = phasebox(&["cat", "/proc/self/environ"]);
    cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    let out = output(&mut cmd);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut got: Vec<&[u8]> = out.stdout.split(|&b| b == 0).filter(|e| !e.is_empty()).collect();
    let wanted: Vec<Vec<u8>> = env.iter().map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat()).collect();
    let mut wanted: Vec<&[u8]> = wanted.iter().map(|e| e.as_slice()).collect();
    got.sort();
    wanted.sort();
    assert_eq!(got, wanted);

    let mut cmd = phasebox(&["bash", "-c", "greet"]);
    cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    assert_eq!(stdout(&output(&mut cmd)), "hello from an exported function\n");

    let mut cmd = phasebox(&["-E", "ADDED=1", "-E", "PATH", "--", "sh", "-c", "echo $ADDED $PATH"]);
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    assert_eq!(stdout(&output(&mut cmd)), "1 /usr/bin:/bin\n");
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn working_directory_umask_and_identity_are_the_callers() {
    let dir = std::env::temp_dir().join(own("phasebox cwd test"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = phasebox(&sh("pwd; umask; id -u; id -g"));
    cmd.current_dir(&dir);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o027);
            Ok(())
        });
    }
    let out = output(&mut cmd);
    assert_eq!(stdout(&out), format!("{}\n0027\n0\n0\n", dir.display()), "{}", stderr(&out));
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn only_loopback_exists_and_it_is_up() {
    let out = output(&mut phasebox(&["ip", "-o", "link", "show"]));
    let links = stdout(&out);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.starts_with("1: lo: <LOOPBACK,UP,LOWER_UP>"), "{links}");
    let out = output(&mut phasebox(&["ip", "-o", "addr", "show"]));
    let addrs = stdout(&out);
    assert!(addrs.lines().all(|l| l.contains(" lo ")), "{addrs}");
    assert!(addrs.contains("inet 127.0.0.1/8"), "{addrs}");
    assert!(addrs.contains("inet6 ::1/128"), "{addrs}");
    // The host has more than loopback: the comparison means something.
    let host_links = stdout(&host("ip", &["-o", "link", "show"]));
    assert!(host_links.lines().count() > 1, "{host_links}");
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn host_tcp_on_loopback_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
    let direct = output(Command::new("bash").args(["-c", &connect]));
    assert!(direct.status.success(), "control: the listener must be reachable without phasebox");
    let out = output(&mut phasebox(&["bash", "-c", &connect]));
    assert_ne!(code(&out), 0, "reached the host's listener from inside");
    assert!(stderr(&out).contains("Connection refused"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn host_sysv_shared_memory_is_invisible() {
    let made = stdout(&host("ipcmk", &["-M", "4096"]));
    let id = made.trim().rsplit(' ').next().unwrap().to_string();
    let listed = |text: &str| text.lines().any(|l| l.split_whitespace().nth(1) == Some(id.as_str()));
    let on_host = stdout(&host("ipcs", &["-m"]));
    let inside = stdout(&output(&mut phasebox(&["ipcs", "-m"])));
    host("ipcrm", &["-m", &id]);
    assert!(listed(&on_host), "control: segment {id} must be visible on the host:\n{on_host}");
    assert!(!listed(&inside), "segment {id} visible inside:\n{inside}");
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn host_abstract_unix_socket_is_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("phasebox-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let connect = format!("import socket; socket.socket(socket.AF_UNIX).connect('\\0{name}')");
    let direct = output(Command::new("python3").args(["-c", &connect]));
    assert!(direct.status.success(), "control: {}", stderr(&direct));
    let out = output(&mut phasebox(&["python3", "-c", &connect]));
    assert_ne!(code(&out), 0, "reached the host's abstract socket from inside");
    assert!(stderr(&out).contains("ConnectionRefusedError"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn host_posix_message_queue_is_invisible() {
    // mq_open through ctypes: exits 0 if the queue opens, 3 if it does not exist.
    let queue = format!("/phasebox-test-{}", std::process::id());
    let script = |flags: &str| {
        format!(
            "import ctypes, os, sys\n\
             libc = ctypes.CDLL(None, use_errno=True)\n\
             libc.mq_open.restype = ctypes.c_int\n\
             fd = libc.mq_open(b'{queue}', {flags}, 0o600, None)\n\
             sys.exit(0 if fd >= 0 else 3 if ctypes.get_errno() == 2 else 1)"
        )
    };
    let create = script("os.O_RDWR | os.O_CREAT");
    let open = script("os.O_RDWR");
    host("python3", &["-c", &create]);
    let control = output(Command::new("python3").args(["-c", &open]));
    let inside = output(&mut phasebox(&["python3", "-c", &open]));
    let unlink = format!("import ctypes; ctypes.CDLL(None).mq_unlink(b'{queue}')");
    host("python3", &["-c", &unlink]);
    assert_eq!(code(&control), 0, "control: the queue must open on the host: {}", stderr(&control));
    assert_eq!(code(&inside), 3, "the host's queue is visible inside: {}", stderr(&inside));
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn orphans_are_killed_and_reported() {
    let out = output(&mut phasebox(&sh(LEAVE_ORPHAN)));
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    let pid = stdout(&out).trim().to_string();
    assert!(stderr(&out).contains(&format!("phasebox: killed orphan {pid} (sleep)")), "{}", stderr(&out));
    assert!(is_gone(pid.parse().unwrap()), "orphan {pid} survived");

    let out = output(&mut phasebox(&[vec!["-q".to_string()], sh(LEAVE_ORPHAN)].concat()));
    let pid = stdout(&out).trim().to_string();
    assert_eq!(stderr(&out), "", "-q must silence the orphan report");
    assert!(is_gone(pid.parse().unwrap()), "orphan {pid} survived");
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn unprivileged_user_gets_the_same_sandbox_from_its_user_manager() {
    let (_, uid) = rig::rig_user();
    let out = output(&mut phasebox_as_user(&sh(
        "id -u; ip -o link show | wc -l; touch phasebox-owned; echo out; exit 5",
    )));
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{uid}\n1\nout\n"), "{}", stderr(&out));
    let meta = std::fs::metadata(format!("{}/phasebox-owned", rig::rig_home())).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, uid), "files the phase creates belong to the caller");

    let out = output(&mut phasebox_as_user(&sh(LEAVE_ORPHAN)));
    let pid = stdout(&out).trim().to_string();
    assert!(stderr(&out).contains(&format!("killed orphan {pid} (sleep)")), "{}", stderr(&out));
    assert!(is_gone(pid.parse().unwrap()));
}

/// A user manager without PrivateUsers= silently skips PrivateNetwork= and
/// PrivateIPC=. The inner mode makes (and checks) every namespace of a user
/// manager's phase itself, so the phase still gets them. (That a namespace found
/// to be the launcher's stops the phase is checked against a fake host in
/// `sandbox::run`'s unit tests, and end to end in the isolation suite's chroot.)
#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn an_isolation_a_user_manager_skips_is_made_by_the_inner_mode() {
    let script = "readlink /proc/self/ns/net /proc/self/ns/ipc /proc/self/ns/uts";
    let host = stdout(&output(rig::as_rig_user("sh").args(["-c", script])));
    let out = output(&mut phasebox_as_user(&["-p", "PrivateUsers=no", "--", "sh", "-c", script]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (inside, outside) in stdout(&out).lines().zip(host.lines()) {
        assert_ne!(inside, outside, "the phase shares a namespace with the host: {}", stdout(&out));
    }
    assert_eq!(stdout(&out).lines().count(), 3);
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn a_thousand_runs_leave_no_unit_behind() {
    let stem = own("phasebox-loop");
    // 1000 at full scale; fewer where PHASEBOX_RIG_SCALE says (the VMs), each checked.
    let runs = rig::scaled(1000, 50);
    eprintln!("{runs} runs (PHASEBOX_RIG_SCALE {})", rig::scale());
    for i in 0..runs {
        let out = output(&mut phasebox(&["-q", "--unit", &format!("{stem}-{i}"), "--", "true"]));
        assert_eq!(code(&out), 0, "run {i}: {}", stderr(&out));
    }
    for i in 0..10 {
        let out = output(&mut phasebox(&["-q", "--unit", &format!("{stem}-failed-{i}"), "--", "false"]));
        assert_eq!(code(&out), 1, "failing run {i}: {}", stderr(&out));
    }
    assert_eq!(units_matching(&format!("{stem}-*")), "");
    let leftovers: Vec<_> = std::fs::read_dir("/run/phasebox")
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.as_bytes().starts_with(stem.as_bytes()))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn bad_properties_fail_before_anything_starts() {
    let unit = own("phasebox-bad-prop");
    let out = output(&mut phasebox(&["--unit", &unit, "-p", "MemoryMax=lots", "--", "true"]));
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("MemoryMax"), "{}", stderr(&out));
    let out = output(&mut phasebox(&["--unit", &unit, "-p", "Frobnicate=1", "--", "true"]));
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("unknown or unsupported property 'Frobnicate'"), "{}", stderr(&out));
    let state = stdout(&host("systemctl", &["show", "-P", "LoadState", &format!("{unit}.service")]));
    assert_eq!(state.trim(), "not-found");
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn typed_properties_reach_the_unit() {
    let out = output(&mut phasebox(&[
        "-v",
        "-p",
        "MemoryMax=64M",
        "-p",
        "TasksMax=77",
        "-p",
        "LimitNOFILE=1000:2000",
        "-p",
        "Nice=5",
        "--",
        "sh",
        "-c",
        "cat /proc/self/cgroup; ulimit -Sn; ulimit -Hn; nice",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let cgroup = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap().to_string();
    let mut lines = text.lines().skip_while(|l| !l.starts_with("0::")).skip(1);
    assert_eq!(lines.next(), Some("1000"));
    assert_eq!(lines.next(), Some("2000"));
    assert_eq!(lines.next(), Some("5"));
    assert!(cgroup.starts_with("/phasebox.slice/phasebox-"), "{cgroup}");
    let err = stderr(&out);
    assert!(
        err.contains("PrivateNetwork=yes")
            && err.contains("MemoryMax=67108864")
            && err.contains("TasksMax=77"),
        "{err}"
    );
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn phase_units_are_named_and_described_for_people() {
    // The unit's name is the last part of the phase's cgroup; ask systemd about it
    // while the phase still runs (until its stdin closes).
    let script = "sed -n 's|^0::.*/||p' /proc/self/cgroup; cat >/dev/null";
    for mode in ["service", "scope"] {
        let mut cmd = phasebox(&["--mode", mode, "--phase", "src_compile", "--", "sh", "-c", script]);
        cmd.env("CATEGORY", "app-misc")
            .env("PF", format!("odd+name-1.{}-r2", std::process::id()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut unit = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut unit)
            .unwrap();
        let unit = unit.trim().to_string();
        let description = stdout(&host("systemctl", &["show", "-P", "Description", &unit]));
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success(), "{mode}");
        let prefix = format!(r"phasebox-app-misc-odd\x2bname-1.{}-r2-compile-", std::process::id());
        assert!(unit.starts_with(&prefix) && unit.ends_with(&format!(".{mode}")), "{mode}: {unit}");
        let expected = format!("phasebox: app-misc/odd+name-1.{}-r2 compile phase", std::process::id());
        assert_eq!(description.trim(), expected, "{mode}");
    }
    assert_eq!(units_matching(&format!(r"phasebox-app-misc-odd*1.{}*", std::process::id())), "");
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn an_existing_unit_name_is_refused() {
    let unit = own("phasebox-taken");
    host("systemd-run", &["--quiet", "--unit", &unit, "sleep", "300"]);
    let out = output(&mut phasebox(&["--unit", &unit, "--", "true"]));
    host("systemctl", &["stop", &format!("{unit}.service")]);
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains(&format!("{unit}.service already exists")), "{}", stderr(&out));
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn checked_in_interfaces_match_the_live_systemd() {
    rig::require_rig();
    let introspect = |path: &str| {
        stdout(&host("busctl", &["introspect", "--xml-interface", "org.freedesktop.systemd1", path]))
    };
    let mut live = common::interfaces::flatten(&introspect("/org/freedesktop/systemd1"));
    live.extend(common::interfaces::flatten(&introspect("/org/freedesktop/systemd1/unit/dbus_2eservice")));
    live.extend(common::interfaces::flatten(&introspect("/org/freedesktop/systemd1/unit/init_2escope")));
    let ours = common::interfaces::ours();
    assert!(!ours.is_empty());
    for (member, signature) in &ours {
        assert_eq!(live.get(member), Some(signature), "{member:?} differs from the live systemd");
    }
}

/// A bus address that names a host makes zbus resolve it on a thread of the async
/// runtime. When nothing answers there, the unprivileged caller's phase falls back
/// to unshare mode, which creates a user namespace: no thread may be left by then.
#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn a_fallback_after_a_bus_address_was_resolved_still_creates_its_namespaces() {
    // A "bus" that accepts and hangs up at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            drop(connection);
        }
    });
    let out = output(
        rig::as_rig_user("env")
            .arg(format!("DBUS_SESSION_BUS_ADDRESS=tcp:host=localhost,port={port}"))
            .arg(rig::phasebox_bin())
            .args(["run", "-v", "--", "sh", "-c", LEAVE_ORPHAN]),
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 7, "{err}");
    assert!(
        err.contains("phasebox: unshare mode: systemd is not reachable (its bus at tcp:host=localhost"),
        "{err}"
    );
    let line = err.lines().find(|l| l.starts_with("phasebox: killed orphan ")).expect(&err);
    assert!(line.ends_with(" (sleep)"), "{err}");
    assert!(is_gone(line.split_whitespace().nth(3).unwrap().parse().unwrap()), "{err}");
}

#[test]
#[ignore = "needs the booted systemd: run tests/run"]
fn a_limit_that_ends_the_phase_is_named_with_its_own_status() {
    let (seconds, runtime_max) = (rig::short_limit(), format!("RuntimeMaxSec={}", rig::short_limit()));
    for limit in [&["--timeout", &seconds][..], &["-p", &runtime_max]] {
        let out = output(&mut phasebox(&[limit, &["--", "sleep", "60"]].concat()));
        assert_eq!(code(&out), 124, "{limit:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("ran past its time limit"), "{limit:?}: {}", stderr(&out));
    }
    // On a host with hybrid cgroups (like the development machine) the container's
    // cgroup v2 tree has no memory controller, so MemoryMax= can't bite there.
    let controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        let hog = "x = b'x' * (512 * 1024 * 1024)";
        let out = output(&mut phasebox(&[
            "--memory-max",
            "32M",
            "-p",
            "MemorySwapMax=0",
            "--",
            "python3",
            "-c",
            hog,
        ]));
        assert_eq!(code(&out), 123, "{}", stderr(&out));
        assert!(stderr(&out).contains("ran out of memory"), "{}", stderr(&out));
    } else {
        eprintln!("no memory controller in this cgroup tree: the out-of-memory case is not checked");
    }
    // The same command within its limits is not misreported.
    let out =
        output(&mut phasebox(&["-p", "RuntimeMaxSec=30", "-p", "MemoryMax=1G", "--", "sh", "-c", "exit 4"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
}
