//! The same sandbox from every backend, for root and for an unprivileged user:
//! run by tests/run inside the nspawn systemd (service, scope and unshare modes)
//! and on the bare host without systemd (unshare mode), with `--include-ignored`.

#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Output};

use common::rig::{
    self, LEAVE_ORPHAN, Place, Who, cases, code, host, is_gone, output, phasebox_for, run, sh, sleeping,
    stderr, stdout, within,
};

#[test]
#[ignore = "needs the rig: run tests/run"]
fn loopback_has_portages_four_addresses_and_is_alone() {
    for (mode, who) in cases() {
        let out = sh(mode, who, "ip -o link show; ip -o addr show");
        assert_eq!(code(&out), 0, "{mode} {who:?}: {}", stderr(&out));
        let text = stdout(&out);
        let links: Vec<_> = text.lines().filter(|l| l.contains("link/")).collect();
        assert_eq!(links.len(), 1, "{mode} {who:?}: {text}");
        assert!(links[0].starts_with("1: lo: <LOOPBACK,UP,LOWER_UP>"), "{mode} {who:?}: {text}");
        for address in ["inet 127.0.0.1/8", "inet 10.0.0.1/8", "inet6 ::1/128", "inet6 fd::1/8"] {
            assert!(text.contains(address), "{mode} {who:?}: no {address}:\n{text}");
        }
    }
    assert!(
        stdout(&host("ip", &["-o", "link", "show"])).lines().count() > 1,
        "control: the host has more than lo"
    );
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn orphans_are_killed_and_reported_with_the_callers_pids() {
    for (mode, who) in cases() {
        let out = sh(mode, who, LEAVE_ORPHAN);
        assert_eq!(code(&out), 7, "{mode} {who:?}: {}", stderr(&out));
        let err = stderr(&out);
        let line = err.lines().find(|l| l.starts_with("phasebox: killed orphan ")).unwrap_or_else(|| {
            panic!("{mode} {who:?}: no orphan reported: {err}");
        });
        assert!(line.ends_with("(sleep)"), "{mode} {who:?}: {line}");
        let pid: u32 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
        assert!(is_gone(pid), "{mode} {who:?}: orphan {pid} survived");
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn exit_statuses_are_exact() {
    for (mode, who) in cases() {
        assert_eq!(code(&sh(mode, who, "exit 0")), 0, "{mode} {who:?}");
        assert_eq!(code(&sh(mode, who, "exit 42")), 42, "{mode} {who:?}");
        assert_eq!(code(&sh(mode, who, "kill -TERM $$")), 143, "{mode} {who:?}");
        assert_eq!(code(&sh(mode, who, "kill -KILL $$")), 137, "{mode} {who:?}");
        assert_eq!(code(&run(mode, who, &["no-such-command-phasebox"])), 127, "{mode} {who:?}");
    }
}

/// The command gets the signals the caller ignored as ignored, and no others:
/// phasebox itself ignores SIGPIPE and handles the signals it forwards.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn the_command_ignores_exactly_the_signals_the_caller_ignored() {
    let callers: [(&[i32], &str); 2] =
        [(&[], "0000000000000000"), (&[libc::SIGPIPE, libc::SIGUSR2], "0000000000001800")];
    for (mode, who) in cases() {
        for (ignored, expected) in callers {
            let args = ["--mode", mode, "grep", "SigIgn", "/proc/self/status"];
            let mut cmd = phasebox_for(who, &args);
            // SAFETY: only signal(2), in the forked child before it execs.
            unsafe {
                cmd.pre_exec(move || {
                    // The caller's dispositions are exactly the ones given here, whatever
                    // this test inherited (a shell without job control runs its
                    // background jobs with SIGINT and SIGQUIT ignored).
                    for signal in 1..libc::SIGRTMIN() {
                        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                            libc::signal(signal, libc::SIG_DFL);
                        }
                    }
                    for &signal in ignored {
                        libc::signal(signal, libc::SIG_IGN);
                    }
                    Ok(())
                });
            }
            let out = output(&mut cmd);
            assert_eq!(code(&out), 0, "{mode} {who:?}: {}", stderr(&out));
            assert_eq!(
                stdout(&out).trim(),
                format!("SigIgn:\t{expected}"),
                "{mode} {who:?} ignoring {ignored:?}"
            );
        }
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn files_belong_to_the_caller() {
    let (_, uid) = rig::rig_user();
    for (mode, who) in cases() {
        let file = format!("{}/owned-{mode}-{who:?}", rig::rig_home());
        let _ = std::fs::remove_file(&file);
        let out = run(mode, who, &["touch", &file]);
        assert_eq!(code(&out), 0, "{mode} {who:?}: {}", stderr(&out));
        let owner = std::fs::metadata(&file).unwrap().uid();
        assert_eq!(owner, if who == Who::Root { 0 } else { uid }, "{mode} {who:?}");
        std::fs::remove_file(&file).unwrap();
    }
}

/// Run `phasebox run --mode MODE [--keep-fds] -- sh -c 'echo through-fd-5 >&5'` with a
/// pipe on descriptor 5, and return what came through it.
fn through_fd_5(mode: &str, who: Who, keep: bool) -> (String, Output) {
    let (read, write) = nix::unistd::pipe().unwrap();
    let mut args = vec!["--mode", mode];
    if keep {
        args.push("--keep-fds");
    }
    args.extend(["sh", "-c", "echo through-fd-5 >&5"]);
    let mut cmd = phasebox_for(who, &args);
    let fd = write.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 5) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = output(&mut cmd);
    drop(write);
    let mut text = String::new();
    // SAFETY: we own the read end.
    unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(read)) }
        .read_to_string(&mut text)
        .unwrap();
    (text, out)
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn scope_and_unshare_modes_inherit_every_descriptor() {
    for (mode, who) in cases() {
        let (text, out) = through_fd_5(mode, who, false);
        if mode == "service" {
            assert_ne!(code(&out), 0, "a service gets only 0-2");
        } else {
            assert_eq!(text, "through-fd-5\n", "{mode} {who:?}: {}", stderr(&out));
        }
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn auto_picks_the_backend_and_says_why() {
    let auto = |args: &[&str], who: Who| {
        let mut full = vec!["-v"];
        full.extend_from_slice(args);
        full.push("true");
        let out = output(&mut phasebox_for(who, &full));
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        stderr(&out).lines().find(|l| l.contains(" mode: ")).unwrap_or_default().to_string()
    };
    match rig::place() {
        Place::Bare => {
            assert!(auto(&[], Who::Root).starts_with("phasebox: unshare mode: systemd is not reachable"));
            assert!(auto(&[], Who::User).starts_with("phasebox: unshare mode: systemd is not reachable"));
        }
        Place::Nspawn => {
            assert!(auto(&[], Who::Root).starts_with("phasebox: service mode: systemd is reachable"));
            assert!(auto(&[], Who::User).starts_with("phasebox: service mode: systemd is reachable"));
            assert!(auto(&["--keep-fds"], Who::Root).starts_with("phasebox: scope mode: --keep-fds"));
            assert!(auto(&["--keep-fds"], Who::User).starts_with("phasebox: scope mode: --keep-fds"));
            // A caller in its own mount namespace (as in a chroot) would lose it in a service.
            let out = output(
                Command::new("unshare")
                    .args(["-m", "--propagation", "private"])
                    .arg(rig::phasebox_bin())
                    .args(["run", "-v", "true"]),
            );
            assert!(
                stderr(&out).contains("scope mode: the caller is in another mount namespace than systemd"),
                "{}",
                stderr(&out)
            );
        }
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn without_namespaces_the_phase_fails_clearly_unless_best_effort() {
    // An unprivileged process in a chroot may not create user namespaces (EPERM), so
    // unshare mode can isolate nothing: phasebox must say so and run nothing.
    let chroot = Chroot::new();
    let root = chroot.0.clone();
    let (_, uid) = rig::rig_user();
    let bin = "/phasebox";
    std::fs::copy(rig::phasebox_bin(), format!("{root}{bin}")).unwrap();
    let chrooted = |extra: &[&str]| {
        let mut cmd = Command::new("chroot");
        cmd.args([format!("--userspec={uid}:{uid}"), root.clone(), bin.into(), "run".into()]);
        cmd.args(["--mode", "unshare"]).args(extra).args(["/bin/sh", "-c", "echo ran"]);
        output(&mut cmd)
    };
    let out = chrooted(&[]);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    for what in ["no private network", "no private IPC", "no private hostname", "no private PID namespace"] {
        assert!(err.contains(what), "{what}: {err}");
    }
    assert!(err.contains("user namespace") && err.contains("--best-effort"), "{err}");
    let out = chrooted(&["--best-effort"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "ran\n");
    assert!(stderr(&out).contains("warning: running without private network"), "{}", stderr(&out));
}

/// A directory that works as a chroot: the system's /usr read-only and a /proc,
/// unmounted and removed when dropped.
struct Chroot(String);

impl Chroot {
    fn new() -> Chroot {
        let root = format!("/var/tmp/phasebox-chroot-{}", std::process::id());
        for dir in ["usr", "proc", "tmp"] {
            std::fs::create_dir_all(format!("{root}/{dir}")).unwrap();
        }
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        for link in ["bin", "lib", "lib64", "sbin"] {
            std::os::unix::fs::symlink(format!("usr/{link}"), format!("{root}/{link}")).unwrap();
        }
        let chroot = Chroot(root);
        host("mount", &["--bind", "-o", "ro", "/usr", &format!("{}/usr", chroot.0)]);
        host("mount", &["-t", "proc", "proc", &format!("{}/proc", chroot.0)]);
        chroot
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let unmounted = ["proc", "usr"].iter().all(|dir| {
            Command::new("umount").arg(format!("{}/{dir}", self.0)).status().is_ok_and(|s| s.success())
        });
        // Never recurse into what is still mounted there.
        if unmounted {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn without_a_pid_namespace_a_scope_still_kills_orphans_and_unshare_warns() {
    let modes: &[&str] = if rig::place() == Place::Nspawn { &["scope", "unshare"] } else { &["unshare"] };
    for &mode in modes {
        let out = run(mode, Who::Root, &["--no-pid", "sh", "-c", LEAVE_ORPHAN]);
        assert_eq!(code(&out), 7, "{mode}: {}", stderr(&out));
        let pid: u32 = stdout(&out).trim().parse().unwrap();
        if mode == "scope" {
            assert!(stderr(&out).contains(&format!("killed orphan {pid} (sleep)")), "{}", stderr(&out));
            assert!(is_gone(pid), "scope: orphan {pid} survived");
        } else {
            assert!(stderr(&out).contains("are not tracked and keep running"), "{}", stderr(&out));
            host("kill", &[&pid.to_string()]);
        }
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn pid_namespaces_where_asked_for() {
    let asked: &[(&str, &[&str])] = match rig::place() {
        Place::Nspawn => &[("service", &["--pid"]), ("scope", &[]), ("unshare", &[])],
        Place::Bare => &[("unshare", &[])],
    };
    for &(mode, extra) in asked {
        for who in [Who::Root, Who::User] {
            let mut args = extra.to_vec();
            args.extend(["sh", "-c", "echo $$; ps -e -o pid= | wc -l"]);
            let out = run(mode, who, &args);
            // phasebox is PID 1, the shell PID 2; ps sees PID 1, the shell, ps and wc.
            // In service mode on systemd 257+ systemd makes the namespace (PrivatePIDs=)
            // around the inner mode, whose watcher of the launcher is then PID 2 in it:
            // the shell is PID 3 and ps sees one process more.
            let by_systemd = mode == "service" && rig::systemd_version() >= 257;
            assert_eq!(
                stdout(&out).split_whitespace().collect::<Vec<_>>(),
                if by_systemd { ["3", "5"] } else { ["2", "4"] },
                "{mode} {who:?}: {}",
                stderr(&out)
            );
        }
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn phase_policy_shares_and_confines_like_portage() {
    let ns = |kind: &str| std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap().display().to_string();
    let (host_net, host_ipc, host_pid) = (ns("net"), ns("ipc"), ns("pid"));
    let script = "readlink /proc/self/ns/net /proc/self/ns/ipc /proc/self/ns/pid";
    let phase = |mode: &str, who: Who, phase: &str, script: &str| {
        let out = run(mode, who, &["--config", "/dev/null", "--phase", phase, "sh", "-c", script]);
        assert_eq!(code(&out), 0, "{mode} {who:?} {phase}: {}", stderr(&out));
        stdout(&out)
    };
    for (mode, who) in cases() {
        let seen = |p: &str| -> Vec<bool> {
            let text = phase(mode, who, p, script);
            let lines: Vec<&str> = text.lines().collect();
            vec![lines[0] == host_net, lines[1] == host_ipc, lines[2] == host_pid]
        };
        // [shares network, shares IPC, shares PID namespace]
        assert_eq!(seen("pkg_setup"), [true, true, false], "{mode} {who:?}");
        assert_eq!(seen("src_test"), [false, false, false], "{mode} {who:?}");
        assert_eq!(seen("pkg_postinst"), [true, true, true], "{mode} {who:?}");
        // A daemon (re)started by pkg_postinst outlives the phase.
        let text = phase(mode, who, "postinst", "sleep 300 >/dev/null 2>&1 & echo $!");
        let daemon: u32 = text.trim().parse().unwrap();
        assert!(!is_gone(daemon), "{mode} {who:?}: the postinst daemon was killed");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon as i32), nix::sys::signal::SIGKILL).unwrap();
    }
}

/// Start a phase that leaves a process behind and runs on; return it once both
/// processes run. Each process's command line carries `marker`.
fn start_lingering_phase(mode: &str, who: Who, marker: &str, script_prefix: &str) -> std::process::Child {
    let script = format!(
        "{script_prefix} sleep {marker}1 >/dev/null 2>&1 </dev/null & echo ready; exec sleep {marker}2"
    );
    let unit = format!("phasebox-fault-{}", marker.replace('.', "-"));
    let args = ["--mode", mode, "--unit", &unit, "sh", "-c", &script];
    let mut cmd = phasebox_for(who, &args);
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
        .unwrap();
    assert_eq!(line, "ready\n", "{mode} {who:?}");
    assert!(within(5.0, || sleeping(marker).len() == 2), "{mode} {who:?}: {:?}", sleeping(marker));
    child
}

fn exit_status_within(child: &mut std::process::Child, seconds: f64) -> Option<std::process::ExitStatus> {
    let mut status = None;
    within(seconds, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn sigint_sigterm_sighup_stop_the_whole_phase_with_128_plus_n() {
    use nix::sys::signal::{Signal, kill};
    let mut n = 0;
    for (mode, who) in cases() {
        for (signal, status) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143), (Signal::SIGHUP, 129)] {
            n += 1;
            let marker = format!("1{n:03}.5");
            let mut child = start_lingering_phase(mode, who, &marker, "");
            kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
            let exit = exit_status_within(&mut child, 20.0).expect("phasebox did not end");
            assert_eq!(exit.code(), Some(status), "{mode} {who:?} {signal}");
            assert_eq!(sleeping(&marker), Vec::<u32>::new(), "{mode} {who:?} {signal}: processes survived");
        }
        // A phase that ignores the signal is killed after the grace period.
        n += 1;
        let marker = format!("1{n:03}.5");
        let mut child = start_lingering_phase(mode, who, &marker, "trap '' TERM INT HUP;");
        kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let exit = exit_status_within(&mut child, 20.0).expect("phasebox did not end");
        assert_eq!(exit.code(), Some(143), "{mode} {who:?}: ignoring SIGTERM");
        assert_eq!(sleeping(&marker), Vec::<u32>::new(), "{mode} {who:?}: processes survived");
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn a_killed_phasebox_leaves_nothing_behind_within_2_s() {
    for (i, (mode, who)) in cases().into_iter().enumerate() {
        let marker = format!("2{i:03}.5");
        let mut child = start_lingering_phase(mode, who, &marker, "");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            within(2.0, || sleeping(&marker).is_empty()),
            "{mode} {who:?}: {:?} survived",
            sleeping(&marker)
        );
        if mode == "unshare" {
            // Its registration for ps is left behind; ps must not take it for a phase.
            let mut ps = match who {
                Who::Root => Command::new(rig::phasebox_bin()),
                Who::User => rig::as_rig_user(rig::phasebox_bin()),
            };
            let listed = stdout(&output(ps.arg("ps")));
            assert!(
                !listed.contains(&format!("unshare-{} ", child.id())),
                "{who:?}: still listed:\n{listed}"
            );
        }
        if rig::place() == Place::Nspawn && mode != "unshare" {
            let unit = format!("phasebox-fault-{}*", marker.replace('.', "-"));
            let listed = || {
                let args = ["list-units", "--all", "--no-legend", "--plain", &unit];
                match who {
                    Who::Root => stdout(&host("systemctl", &args)),
                    Who::User => stdout(&output(rig::as_rig_user("systemctl").arg("--user").args(args))),
                }
            };
            assert!(within(2.0, || listed().trim().is_empty()), "{mode} {who:?}: {}", listed());
        }
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn bad_input_is_refused_in_one_line_with_125_or_passed_through_exactly() {
    for (mode, who) in cases() {
        let refused = |args: &[&str], why: &str| {
            let out = run(mode, who, args);
            assert_eq!(code(&out), 125, "{mode} {who:?} {args:?}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains(why), "{mode} {who:?} {args:?}: {err}");
            assert!(stdout(&out).is_empty(), "{mode} {who:?} {args:?}: something ran");
        };
        refused(&["-p", "Frobnicate=1", "echo", "ran"], "unknown or unsupported property 'Frobnicate'");
        refused(&["-p", "MemoryMax=lots", "echo", "ran"], "bad value for MemoryMax");
        refused(&["-p", "MemoryMax", "echo", "ran"], "expected NAME=VALUE");
        refused(&["--phase", "bogus", "echo", "ran"], "not an ebuild phase");
        refused(&["--config", "/nonexistent.toml", "--phase", "test", "echo", "ran"], "/nonexistent.toml");
        refused(&[""], "the command is an empty string");
        refused(&[], "required arguments were not provided");
        // 10,000 arguments and a 1 MiB environment (16 variables of 64 KiB: one
        // string may not exceed 128 KiB) arrive exactly.
        let many: Vec<String> = (0..10_000).map(|i| format!("a{i}")).collect();
        let total = "n=0; for v in $(seq 0 15); do eval \"n=\\$((n + \\${#BIG$v}))\"; done";
        let script = format!("{total}; echo $# \"$1\" \"${{10000}}\" $n");
        let mut args = vec!["sh", "-c", &script, "sh"];
        args.extend(many.iter().map(String::as_str));
        let mut cmd = phasebox_for(who, &[&["--mode", mode][..], &args].concat());
        for v in 0..16 {
            cmd.env(format!("BIG{v}"), "x".repeat(1 << 16));
        }
        let out =
            cmd.output().unwrap_or_else(|e| panic!("{mode} {who:?}: spawning with 10,000 arguments: {e}"));
        assert_eq!(code(&out), 0, "{mode} {who:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "10000 a0 a9999 1048576\n", "{mode} {who:?}");
        // Arguments that are not UTF-8 arrive byte for byte.
        let odd: std::ffi::OsString =
            std::os::unix::ffi::OsStringExt::from_vec(b"caf\xe9 \xff\x80\x01".to_vec());
        let mut cmd = phasebox_for(who, &["--mode", mode, "sh", "-c", "printf %s \"$1\"", "sh"]);
        let out = output(cmd.arg(&odd));
        assert_eq!(code(&out), 0, "{mode} {who:?}: {}", stderr(&out));
        assert_eq!(out.stdout, b"caf\xe9 \xff\x80\x01", "{mode} {who:?}");
    }
    // A working directory that no longer exists.
    let gone = std::env::temp_dir().join(format!("phasebox-gone-{}", std::process::id()));
    std::fs::create_dir_all(&gone).unwrap();
    let out = output(
        Command::new("sh")
            .args(["-c", "cd \"$1\" && rmdir \"$1\" && exec \"$2\" run true", "sh"])
            .arg(&gone)
            .arg(rig::phasebox_bin()),
    );
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(stderr(&out).contains("current working directory is not accessible"), "{}", stderr(&out));
}

/// `phasebox doctor [--json]` as WHO; it must exit 0 here.
fn doctor(who: Who, json: bool) -> String {
    let mut cmd = match who {
        Who::Root => Command::new(rig::phasebox_bin()),
        Who::User => rig::as_rig_user(rig::phasebox_bin()),
    };
    cmd.args(["doctor", "--config", "/dev/null"]).stdin(std::process::Stdio::null());
    if json {
        cmd.arg("--json");
    }
    let out = output(&mut cmd);
    assert_eq!(code(&out), 0, "{who:?} json={json}:\n{}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

/// `CMD...` as WHO, in a mount namespace where /etc/passwd has no `portage` line
/// and nsswitch.conf looks users up in files, then systemd (Debian's and Gentoo's
/// default): a lookup of `portage` then loads libnss_systemd.so.2.
fn with_nss_module(who: Who, cmd: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!("phasebox-nss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let passwd: String = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("portage:"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(dir.join("passwd"), passwd).unwrap();
    std::fs::write(dir.join("nsswitch.conf"), "passwd: files systemd\ngroup: files systemd\n").unwrap();
    let (_, uid) = rig::rig_user();
    let identity = match who {
        Who::Root => String::new(),
        Who::User => format!("setpriv --reuid={uid} --regid={uid} --clear-groups"),
    };
    let script = format!(
        "mount --bind {0}/passwd /etc/passwd && mount --bind {0}/nsswitch.conf /etc/nsswitch.conf && \
         cd / && exec {identity} \"$@\"",
        dir.display()
    );
    let out = output(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script, "sh"])
            .args(cmd)
            .stdin(std::process::Stdio::null()),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

/// phasebox was once linked statically against glibc, which crashes when a name
/// lookup loads an NSS module; doctor looked the `portage` user up on every host.
/// Every subcommand, as root and as an unprivileged user, must survive lookups of
/// users that /etc/passwd does not know.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn lookups_of_users_missing_from_etc_passwd_do_not_crash() {
    let control = std::env::var("PHASEBOX_NSS_CONTROL").expect("PHASEBOX_NSS_CONTROL: tests/run builds it");
    assert!(
        ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64"]
            .iter()
            .any(|dir| std::path::Path::new(dir).join("libnss_systemd.so.2").exists()),
        "control: libnss_systemd.so.2 must be installed (package libnss-systemd)"
    );
    let bin = rig::phasebox_bin();
    let bin = bin.to_str().unwrap();
    for who in [Who::Root, Who::User] {
        // Control: a statically linked lookup of `portage` crashes here: SIGSEGV
        // (Debian 12's glibc on the host and in nspawn; forky), SIGFPE in trixie
        // (the host's static glibc 2.36 loading trixie's libnss_systemd, glibc 2.41).
        let out = with_nss_module(who, &[&control, "portage"]);
        let crashes = [libc::SIGSEGV, libc::SIGFPE, libc::SIGBUS, libc::SIGILL, libc::SIGABRT];
        assert!(out.status.signal().is_some_and(|s| crashes.contains(&s)), "control {who:?}: {out:?}");
        for args in [
            &["doctor", "--config", "/dev/null"][..],
            &["doctor", "--json", "--config", "/dev/null"],
            &["policy", "--config", "/dev/null"],
            &["ps"],
            &["run", "--config", "/dev/null", "--phase", "compile", "--", "true"],
        ] {
            let out = with_nss_module(who, &[&[bin][..], args].concat());
            let status = out.status.code().unwrap_or_else(|| panic!("{who:?} {args:?} crashed: {out:?}"));
            // doctor exits 1 when a default isolation is missing; ps when a manager
            // does not answer.
            assert!(status <= 1, "{who:?} {args:?}: {}{}", stdout(&out), stderr(&out));
            // It did look portage up, and found nobody.
            if args[0] == "doctor" {
                let text = stdout(&out);
                let said = if args[1] == "--json" {
                    serde_json::from_str::<serde_json::Value>(&text).unwrap()["portage"]["uid"].is_null()
                } else {
                    text.lines().any(|l| l.starts_with("portage user") && l.ends_with("does not exist"))
                };
                assert!(said, "{who:?} {args:?}: {text}");
            }
        }
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn doctor_says_what_this_place_can_do_and_what_run_will_do() {
    for who in [Who::Root, Who::User] {
        let text = doctor(who, false);
        let report: serde_json::Value = serde_json::from_str(&doctor(who, true)).unwrap();
        assert_eq!((&report["ok"], &report["exit_status"]), (&true.into(), &0.into()), "{who:?}: {report}");
        let manager = if who == Who::Root { "system" } else { "user" };
        assert_eq!(report["manager"], manager, "{who:?}");
        let phases = report["phases"].as_array().unwrap();
        let mode_of = |phase: &str, column: &str| {
            let entry = phases.iter().find(|p| p["phase"] == phase).unwrap();
            entry[column]["mode"].as_str().unwrap().to_string()
        };
        match rig::place() {
            Place::Bare => {
                assert!(
                    text.contains("not running: this host was not booted with systemd"),
                    "{who:?}:\n{text}"
                );
                assert_eq!(report["systemd"]["running"], false);
                assert_eq!(report["systemd"][manager]["version"], serde_json::Value::Null);
                assert_eq!(
                    (mode_of("compile", "auto"), mode_of("compile", "keep_fds")),
                    ("unshare".into(), "unshare".into())
                );
            }
            Place::Nspawn => {
                let version = stdout(&host("systemctl", &["--version"]))
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
                let reachable =
                    format!("{:<17}systemd {version}, reachable at", format!("{manager} manager"));
                assert!(text.contains(&reachable), "{who:?}: no {reachable:?}:\n{text}");
                assert!(text.contains("PrivateIPC yes (248+)"), "{who:?}:\n{text}");
                assert_eq!(report["systemd"]["running"], true);
                assert_eq!(report["systemd"][manager]["version"], version, "{who:?}");
                assert_eq!(report["systemd"][manager]["features"]["PrivateIPC"], true, "{who:?}");
                assert_eq!(report["systemd"][manager]["features"]["PrivatePIDs"], version >= 257, "{who:?}");
                assert_eq!(
                    (mode_of("compile", "auto"), mode_of("compile", "keep_fds")),
                    ("service".into(), "scope".into())
                );
            }
        }
        assert_eq!(mode_of("postinst", "auto"), "unconfined");
        assert!(text.contains("every default isolation is available (exit 0)"), "{who:?}:\n{text}");
        // The text and the JSON agree, phase by phase.
        for phase in phases {
            let row = format!(
                "{:<10} {:<11} ",
                phase["phase"].as_str().unwrap(),
                phase["auto"]["mode"].as_str().unwrap()
            );
            assert!(text.lines().any(|l| l.starts_with(&row)), "{who:?}: no row {row:?}:\n{text}");
        }
        // Control: run itself picks the mode doctor said, for the phase and the hook's way.
        for (args, column) in [(&[][..], "auto"), (&["--keep-fds"][..], "keep_fds")] {
            let mut full = vec!["-v", "--config", "/dev/null", "--phase", "compile"];
            full.extend_from_slice(args);
            full.push("true");
            let out = output(&mut phasebox_for(who, &full));
            let said = format!("phasebox: {} mode: ", mode_of("compile", column));
            assert!(stderr(&out).contains(&said), "{who:?} {args:?}: no {said:?}:\n{}", stderr(&out));
        }
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn the_summary_and_the_report_say_what_a_phase_used() {
    // On disk: /tmp may be a tmpfs, where writing is no storage IO.
    let dir = std::path::Path::new("/var/tmp").join(format!("phasebox-usage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // Known use: 0.3 s of CPU, 64 MiB touched, 8 MiB written to disk; an orphan; exit 3.
    let script = "import os, subprocess, sys, time\n\
        start = time.process_time()\n\
        while time.process_time() - start < 0.3: pass\n\
        block = bytearray(64 << 20)\n\
        with open(sys.argv[1], 'wb') as f:\n\
        \x20   f.write(b'x' * (8 << 20)); f.flush(); os.fsync(f.fileno())\n\
        subprocess.Popen(['sleep', '1777.5'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
        sys.exit(3)\n";
    for (n, (mode, who)) in cases().into_iter().enumerate() {
        let report = dir.join(format!("{n}.jsonl"));
        let written = dir.join(format!("{n}.data"));
        let report_arg = report.to_str().unwrap();
        let out =
            run(mode, who, &["--report", report_arg, "python3", "-c", script, written.to_str().unwrap()]);
        assert_eq!(code(&out), 3, "{mode} {who:?}: {}", stderr(&out));
        let text = std::fs::read_to_string(&report).unwrap();
        assert_eq!(text.lines().count(), 1, "{mode} {who:?}: {text}");
        let record: phasebox::report::Record = serde_json::from_str(text.trim()).unwrap();
        assert_eq!((record.exit_code, record.exited, record.signal), (3, Some(3), None), "{mode} {who:?}");
        assert_eq!(record.backend, mode);
        let unit_type = record.unit.as_deref().and_then(|u| u.rsplit('.').next());
        let expected_type = match mode {
            "service" => Some("service"),
            "scope" => Some("scope"),
            _ => None,
        };
        assert_eq!(unit_type, expected_type, "{mode} {who:?}: {record:?}");
        let isolations: &[&str] =
            if mode == "service" { &["net", "ipc", "uts"] } else { &["net", "ipc", "uts", "pid"] };
        assert_eq!(record.isolations, isolations, "{mode} {who:?}");
        assert!(record.cpu_seconds().unwrap() >= 0.3, "{mode} {who:?}: {record:?}");
        assert!(record.memory_peak_bytes.unwrap() >= 64 << 20, "{mode} {who:?}: {record:?}");
        assert!(record.io_write_bytes.unwrap() >= 8 << 20, "{mode} {who:?}: {record:?}");
        assert!(record.wall_seconds >= 0.3, "{mode} {who:?}: {record:?}");
        assert_eq!(record.orphans.len(), 1, "{mode} {who:?}: {record:?}");
        assert_eq!(record.orphans[0].command, "sleep", "{mode} {who:?}: {record:?}");
        // The summary line says the same.
        let summary = phasebox::report::summary(&record);
        assert!(stderr(&out).contains(&format!("phasebox: {summary}\n")), "{mode} {who:?}: {}", stderr(&out));
        assert!(
            summary.starts_with("exited 3 after ") && summary.ends_with("; 1 orphan killed"),
            "{summary}"
        );
        // -q: no summary.
        let out = run(mode, who, &["-q", "true"]);
        assert_eq!((code(&out), stderr(&out)), (0, String::new()), "{mode} {who:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn limits_are_enforced_or_refused_by_name() {
    for (mode, who) in cases() {
        // --timeout: systemd's RuntimeMaxSec= in service mode, phasebox's own timer
        // in the others; the phase and what it started are stopped either way.
        let limit = rig::short_limit();
        let out = run(mode, who, &["--timeout", &limit, "sh", "-c", "sleep 1888.5 & exec sleep 1888.6"]);
        assert_eq!(code(&out), 124, "{mode} {who:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("ran past its time limit"), "{mode} {who:?}: {}", stderr(&out));
        assert!(within(2.0, || sleeping("1888.").is_empty()), "{mode} {who:?}: the phase survived");
        let out = run(mode, who, &["--timeout", "30", "sh", "-c", "exit 4"]);
        assert_eq!(code(&out), 4, "{mode} {who:?}: a phase within its time was misreported");
        let limits =
            ["--memory-max", "1G", "--cpu-quota", "150%", "--tasks-max", "100", "sh", "-c", "exit 5"];
        let out = run(mode, who, &limits);
        if mode == "unshare" {
            // Nothing could enforce them without systemd: refused, not ignored.
            assert_eq!(code(&out), 125, "{mode} {who:?}: {}", stderr(&out));
            assert!(stderr(&out).contains("--memory-max 1G: MemoryMax needs systemd"), "{}", stderr(&out));
        } else {
            assert_eq!(code(&out), 5, "{mode} {who:?}: {}", stderr(&out));
        }
        let out = run(mode, who, &["--memory-max", "lots", "true"]);
        assert_eq!(code(&out), 125, "{mode} {who:?}");
        assert!(stderr(&out).contains("--memory-max lots: bad value for MemoryMax"), "{}", stderr(&out));
    }
}

#[test]
#[ignore = "needs the rig: run tests/run"]
fn ps_lists_running_phases_and_stop_stops_them() {
    for (n, (mode, who)) in cases().into_iter().enumerate() {
        let package = format!("app-misc/pbps-{n}");
        let marker = format!("3{n:03}.5");
        let script = format!("sleep {marker} >/dev/null 2>&1 </dev/null & echo ready; exec sleep {marker}");
        let args = ["--mode", mode, "--phase", "test", "--package", &package, "sh", "-c", &script];
        let mut cmd = phasebox_for(who, &args);
        let mut child = KilledOnDrop(cmd.stdout(std::process::Stdio::piped()).spawn().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.0.stdout.take().unwrap()), &mut line)
            .unwrap();
        assert_eq!(line, "ready\n", "{mode} {who:?}");
        let tool = |args: &[&str]| {
            let mut cmd = match who {
                Who::Root => Command::new(rig::phasebox_bin()),
                Who::User => rig::as_rig_user(rig::phasebox_bin()),
            };
            output(cmd.args(args))
        };
        let out = tool(&["ps"]);
        assert_eq!(code(&out), 0, "{mode} {who:?}: {}", stderr(&out));
        let row = stdout(&out)
            .lines()
            .find(|l| l.ends_with(&format!("{package} test phase")))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{mode} {who:?}: not listed:\n{}", stdout(&out)));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], mode, "{mode} {who:?}: {row}");
        assert!(cells[3].parse::<u32>().is_ok(), "{mode} {who:?}: no PID in {row}");
        let out = tool(&["stop", &package]);
        assert_eq!(code(&out), 0, "{mode} {who:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("stopped {}\n", cells[0]), "{mode} {who:?}");
        let status =
            exit_status_within(&mut child.0, 15.0).expect("the stopped phase's phasebox did not end");
        assert_eq!(status.code(), Some(143), "{mode} {who:?}");
        assert!(within(2.0, || sleeping(&marker).is_empty()), "{mode} {who:?}: the phase survived");
        let out = tool(&["stop", &package]);
        assert_eq!(code(&out), 1, "{mode} {who:?}: a stopped phase was found again");
    }
}

/// A phasebox that a failing test must not leave running (its phase dies with it).
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--memory-max 64M` and a command that touches 200 MiB. Where the cgroup tree has
/// the memory controller (the VMs: unified cgroup v2 under systemd 252, 257 and 262),
/// the kernel's OOM killer kills it inside the unit and phasebox exits 123 with a
/// message naming the limit, in service and scope mode, for root and for the user
/// manager (which has memory delegated). Where it has none (the nspawn rig on a host
/// with hybrid cgroups), systemd takes MemoryMax= but nothing enforces it: the
/// command completes. (Unshare mode refuses --memory-max: see
/// limits_are_enforced_or_refused_by_name.) No swap in the VMs or on the rig's host
/// is assumed: -p MemorySwapMax=0 keeps swap out of it.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn a_phase_over_its_memory_max_exits_123_naming_the_limit() {
    let hog = "x = b'x' * (200 << 20); print('survived')";
    if rig::place() == Place::Bare {
        // No systemd: nothing enforces it, and the only mode refuses it by name.
        let out = run("unshare", Who::Root, &["--memory-max", "64M", "--", "python3", "-c", hog]);
        assert_eq!(code(&out), 125, "{}", stderr(&out));
        return assert!(
            stderr(&out).contains("--memory-max 64M: MemoryMax needs systemd"),
            "{}",
            stderr(&out)
        );
    }
    let enforced = rig::memory_controller();
    eprintln!("memory controller: {enforced} (systemd {})", rig::systemd_version());
    for (mode, who) in cases().into_iter().filter(|&(mode, _)| mode != "unshare") {
        let args = ["--memory-max", "64M", "-p", "MemorySwapMax=0", "--", "python3", "-c", hog];
        let out = run(mode, who, &args);
        if enforced {
            assert_eq!(code(&out), 123, "{mode} {who:?}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("the phase ran out of memory (--memory-max, MemoryMax=)"),
                "{mode} {who:?}: the limit is not named: {}",
                stderr(&out)
            );
            assert_eq!(stdout(&out), "", "{mode} {who:?}");
        } else {
            assert_eq!(
                (code(&out), stdout(&out)),
                (0, "survived\n".into()),
                "{mode} {who:?}: {}",
                stderr(&out)
            );
        }
    }
}

/// Two processes of 100 MiB each at the same time. In service and scope mode on a
/// cgroup tree with the memory controller (the VMs) the phase's peak is its cgroup's
/// memory.peak, which counts both: at least 200 MiB, source "cgroup". Where there is
/// no memory.peak (unshare mode; the nspawn rig, without the memory controller) it is
/// the largest process's peak (rusage): at least 100 MiB, under 200 MiB, and the
/// summary says "(largest process)".
#[test]
#[ignore = "needs the rig: run tests/run"]
fn the_memory_peak_is_the_whole_phases_where_its_cgroup_has_one() {
    // Each child touches 100 MiB, says so, and waits until the parent has heard from
    // both: the two are at their peak at the same time, with no sleep.
    let script = "import os, sys\n\
        r, w = os.pipe(); gr, gw = os.pipe(); kids = []\n\
        for _ in range(2):\n\
        \x20   pid = os.fork()\n\
        \x20   if pid == 0:\n\
        \x20       os.close(r); os.close(gw)\n\
        \x20       block = b'x' * (100 << 20)\n\
        \x20       os.write(w, b'1'); os.read(gr, 1); os._exit(0)\n\
        \x20   kids.append(pid)\n\
        os.close(w); os.close(gr)\n\
        ready = b''\n\
        while len(ready) < 2:\n\
        \x20   chunk = os.read(r, 2)\n\
        \x20   if not chunk: sys.exit(9)\n\
        \x20   ready += chunk\n\
        os.close(gw)\n\
        sys.exit(sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in kids))\n";
    let dir = std::path::Path::new("/var/tmp").join(format!("phasebox-peak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    const MIB: u64 = 1 << 20;
    for (n, (mode, who)) in cases().into_iter().enumerate() {
        let report = dir.join(format!("{n}.jsonl"));
        let out = run(mode, who, &["--report", report.to_str().unwrap(), "python3", "-c", script]);
        assert_eq!(code(&out), 0, "{mode} {who:?}: {}", stderr(&out));
        let record: phasebox::report::Record =
            serde_json::from_str(std::fs::read_to_string(&report).unwrap().trim()).unwrap();
        let peak = record.memory_peak_bytes.unwrap();
        let source = record.usage_sources.as_ref().map(|s| s.memory.as_str());
        if mode != "unshare" && rig::memory_controller() {
            assert_eq!(source, Some("cgroup"), "{mode} {who:?}: {record:?}");
            assert!(peak >= 200 * MIB, "{mode} {who:?}: phase-wide peak {} MiB < 200 MiB", peak / MIB);
        } else {
            assert_eq!(source, Some("rusage"), "{mode} {who:?}: {record:?}");
            assert!((100 * MIB..200 * MIB).contains(&peak), "{mode} {who:?}: {} MiB", peak / MIB);
            assert!(stderr(&out).contains(" (largest process)"), "{mode} {who:?}: {}", stderr(&out));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The host's PIDs of a process's namespaces, outermost first (its NSpid line).
fn ns_pids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:")).unwrap_or_default();
    line.split_whitespace().map(|p| p.parse().unwrap()).collect()
}

/// `--pid` in service mode. systemd 257 and later (trixie, forky) make the PID
/// namespace (PrivatePIDs=, a string property) with the inner mode as its PID 1, for
/// the system manager and for a user manager (with PrivateUsers=); before 257
/// (bookworm's and the nspawn rig's 252) the inner mode makes it and forks PID 1.
/// Either way the command's orphan is named by the PID the caller sees and killed,
/// a killed launcher ends the phase, and `doctor --json` says who makes it.
#[test]
#[ignore = "needs the rig: run tests/run"]
fn pid_namespace_in_service_mode_is_systemds_from_257_as_doctor_says() {
    if rig::place() == Place::Bare {
        // No systemd: doctor says so, and service mode is refused.
        let report: serde_json::Value = serde_json::from_str(&doctor(Who::Root, true)).unwrap();
        assert_eq!(report["systemd"]["running"], false);
        let out = run("service", Who::Root, &["--pid", "true"]);
        return assert_eq!(code(&out), 125, "{}", stderr(&out));
    }
    let version = rig::systemd_version();
    let by_systemd = version >= 257;
    eprintln!("systemd {version}: PrivatePIDs= {}", if by_systemd { "by systemd" } else { "by phasebox" });
    for who in [Who::Root, Who::User] {
        let report: serde_json::Value = serde_json::from_str(&doctor(who, true)).unwrap();
        let manager = if who == Who::Root { "system" } else { "user" };
        assert_eq!(report["systemd"][manager]["features"]["PrivatePIDs"], by_systemd, "{who:?}: {report}");
        let compile = report["phases"].as_array().unwrap().iter().find(|p| p["phase"] == "compile").unwrap();
        assert_eq!(compile["auto"]["mode"], "service", "{who:?}");
        let pid =
            compile["auto"]["isolations"].as_array().unwrap().iter().find(|i| i["kind"] == "pid").unwrap();
        assert_eq!(pid["by"], if by_systemd { "systemd" } else { "phasebox" }, "{who:?}: {pid}");

        let unit = format!("phasebox-privatepids-{}-{manager}", std::process::id());
        let script = "sleep 1257.5 >/dev/null 2>&1 </dev/null & echo $$ $!; read line; exit 7";
        let args = ["-v", "--mode", "service", "--pid", "--unit", &unit, "--", "sh", "-c", script];
        let mut child = KilledOnDrop(
            phasebox_for(who, &args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let line = first_line(&mut child.0);
        let inside: Vec<u32> = line.split_whitespace().map(|p| p.parse().unwrap()).collect();
        assert_eq!(inside.len(), 2, "{who:?}: {line:?}");
        // PID 1 is the inner mode (with its watcher as PID 2 under PrivatePIDs=), or
        // the process the inner mode forked.
        assert_eq!(inside[0], if by_systemd { 3 } else { 2 }, "{who:?}: the shell's PID inside");
        let show = |property: &str| {
            let mut cmd = match who {
                Who::Root => Command::new("systemctl"),
                Who::User => {
                    let mut cmd = rig::as_rig_user("systemctl");
                    cmd.arg("--user");
                    cmd
                }
            };
            stdout(&output(cmd.args(["show", "--value", "-p", property, &format!("{unit}.service")])))
                .trim()
                .to_string()
        };
        let main: u32 = show("MainPID").parse().unwrap();
        let levels = ns_pids(main);
        if by_systemd {
            assert_eq!(show("PrivatePIDs"), "yes", "{who:?}");
            assert_eq!(
                (levels.len(), levels.last()),
                (2, Some(&1)),
                "{who:?}: the main process is not PID 1"
            );
        } else {
            assert_eq!(levels, [main], "{who:?}: systemd put the main process in a PID namespace");
        }
        let orphans = sleeping("1257.5");
        assert_eq!(orphans.len(), 1, "{who:?}: {orphans:?}");
        assert_eq!(ns_pids(orphans[0]).last(), Some(&inside[1]), "{who:?}");
        drop(child.0.stdin.take().unwrap().write_all(b"go\n"));
        let mut err = String::new();
        child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = child.0.wait().unwrap();
        assert_eq!(status.code(), Some(7), "{who:?}: {err}");
        let named = format!("phasebox: killed orphan {} (sleep)", orphans[0]);
        assert!(err.contains(&named), "{who:?}: no {named:?}: {err}");
        assert_eq!(err.contains("PrivatePIDs=yes"), by_systemd, "{who:?}: {err}");
        assert!(within(2.0, || is_gone(orphans[0])), "{who:?}: orphan {} survived", orphans[0]);

        // A launcher killed mid-phase ends it: the inner mode's watcher sees it go,
        // by its PID, or (PrivatePIDs=, where that PID names nothing) by its channel.
        let script = "sleep 1257.6 >/dev/null 2>&1 </dev/null & echo ready; exec sleep 1257.7";
        let mut child = KilledOnDrop(
            phasebox_for(who, &["--mode", "service", "--pid", "--", "sh", "-c", script])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        assert_eq!(first_line(&mut child.0), "ready\n", "{who:?}");
        // "ready" comes before the shell's exec: wait for both sleeps to be there.
        assert!(within(10.0, || sleeping("1257.").len() == 2), "{who:?}: {:?}", sleeping("1257."));
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        assert!(within(2.0, || sleeping("1257.").is_empty()), "{who:?}: the phase outlived its launcher");
    }
}

/// The first line a child wrote to its piped stdout (the pipe stays open).
fn first_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line)
        .unwrap();
    line
}
