//! Gathering doctor's facts from this host: the service managers over their buses,
//! namespaces by creating them in a child, cgroups, the portage user.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use nix::sched::CloneFlags;
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
use nix::unistd::{ForkResult, Gid, Uid};

use super::{Cgroup, Facts, Namespaces, Portage};
use crate::launch::CONNECT_WITHIN;
use crate::plan::mode::{Lost, Reach};
use crate::protocol::findings::Findings;
use crate::protocol::findings::{Cause, Missing};
use crate::sys::host::Linux;
use crate::sys::namespaces::{Kind, Set};
use crate::systemd::Manager;
use crate::systemd::session::Session;

/// The uid root probes unprivileged user namespaces as when there is no portage user.
const NOBODY: u32 = 65534;

pub fn gather() -> Result<Facts> {
    let uid = nix::unistd::geteuid().as_raw();
    let manager = if uid == 0 { Manager::System } else { Manager::User };
    let portage = portage();
    // The probes fork: do it while this process has a single thread, before the
    // async runtime exists.
    let namespaces = namespaces(uid, portage.uid.unwrap_or(NOBODY))?;
    let mut session = Session::new()?;
    Ok(Facts {
        uid,
        manager,
        systemd_running: Path::new("/run/systemd/system").exists(),
        system: reach(Manager::System, &mut session),
        user: reach(Manager::User, &mut session),
        lost: Lost::of_this_caller(manager),
        namespaces,
        cgroup: cgroup(),
        portage,
    })
}

/// The bus `run` would use, and whether systemd answers on it, as `run` connects.
fn reach(manager: Manager, session: &mut Session) -> Reach {
    let found = Reach::of_host(manager);
    let Reach::Found(bus) = found else { return found };
    match session.with(manager, CONNECT_WITHIN, async |client| client.version().await.ok()) {
        Ok(version) => Reach::Answered { bus, version },
        Err(unanswered) => Reach::Silent { bus, error: unanswered.reason() },
    }
}

/// Create each namespace the way phasebox does (`phase::isolate::enter`, in a user
/// namespace when unprivileged), and an unprivileged user namespace, each in a child
/// that exits afterwards.
fn namespaces(uid: u32, unprivileged: u32) -> Result<Namespaces> {
    // The child reports what it could not make as findings do.
    let report = in_child(|| {
        let missing = match crate::phase::isolate::enter(Set::all(), false, &mut Linux) {
            Ok(entered) => entered.missing,
            Err(_) => {
                Kind::ALL.iter().map(|&kind| Missing { kind, cause: Cause::Unshare(libc::EIO) }).collect()
            }
        };
        Findings { missing, ..Findings::default() }.encode()
    })?;
    let missing = Findings::decode(&report).missing;
    let kinds = Kind::ALL
        .into_iter()
        .map(|kind| match missing.iter().find(|m| m.kind == kind) {
            Some(m) => (kind, Err(*m)),
            None => (kind, Ok(())),
        })
        .collect();
    let probed_as = if uid == 0 { unprivileged } else { uid };
    let user = in_child(|| match unprivileged_user_namespace(uid == 0, probed_as) {
        Ok(()) => String::new(),
        Err(error) => format!("{error:#}"),
    })?;
    Ok(Namespaces {
        kinds,
        user: if user.is_empty() { Ok(()) } else { Err(user) },
        user_probed_as: probed_as,
        unprivileged_userns_clone: read_number("/proc/sys/kernel/unprivileged_userns_clone"),
        max_user_namespaces: read_number("/proc/sys/user/max_user_namespaces"),
    })
}

/// In the child: become `uid` (with its primary group) if root, then
/// unshare(CLONE_NEWUSER).
fn unprivileged_user_namespace(drop_root: bool, uid: u32) -> Result<()> {
    if drop_root {
        let gid =
            nix::unistd::User::from_uid(Uid::from_raw(uid)).ok().flatten().map_or(uid, |u| u.gid.as_raw());
        nix::unistd::setgroups(&[]).context("setgroups")?;
        nix::unistd::setgid(Gid::from_raw(gid)).context("setgid")?;
        nix::unistd::setuid(Uid::from_raw(uid)).context("setuid")?;
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER).context("unshare(user) failed")
}

/// Run `probe` in a forked child and return what it reported. The child's changes
/// (namespaces, identity) die with it.
fn in_child(probe: impl FnOnce() -> String) -> Result<String> {
    let (mut read, write) = pipe()?;
    // SAFETY: doctor forks before it starts any thread, and the child only makes
    // system calls and allocations before _exit.
    match unsafe { nix::unistd::fork() }.context("forking a probe")? {
        ForkResult::Child => {
            drop(read);
            let _ = File::from(write).write_all(probe().as_bytes());
            // SAFETY: end the child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(write);
            let mut text = String::new();
            read.read_to_string(&mut text).context("reading a probe's report")?;
            nix::sys::wait::waitpid(child, None).context("waiting for a probe")?;
            Ok(text)
        }
    }
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn cgroup() -> Cgroup {
    let is_cgroup2 = |path: &str| statfs(path).is_ok_and(|fs| fs.filesystem_type() == CGROUP2_SUPER_MAGIC);
    if is_cgroup2("/sys/fs/cgroup") {
        Cgroup::Unified
    } else if !statfs("/sys/fs/cgroup").is_ok_and(|fs| fs.filesystem_type() == TMPFS_MAGIC) {
        Cgroup::Unknown
    } else if is_cgroup2("/sys/fs/cgroup/unified") {
        Cgroup::Hybrid
    } else {
        Cgroup::Legacy
    }
}

fn portage() -> Portage {
    Portage {
        uid: nix::unistd::User::from_name("portage").ok().flatten().map(|user| user.uid.as_raw()),
        lingering: Path::new("/var/lib/systemd/linger/portage").exists(),
    }
}

/// A close-on-exec pipe: the read end as a File, and the write end.
fn pipe() -> Result<(std::fs::File, std::os::fd::OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")?;
    Ok((std::fs::File::from(read), write))
}
