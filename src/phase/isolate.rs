//! Isolation by raw unshare(2), for when systemd can't give it: the scope and
//! unshare backends, and the inner mode for what an old systemd lacks. One missing
//! namespace never drops the others: each is created, and diagnosed, on its own.

use anyhow::Result;
use nix::errno::Errno;
use nix::sched::CloneFlags;

use crate::protocol::findings::{Cause, Missing};
use crate::sys::host::Host;
use crate::sys::namespaces::{Kind, Set};

/// What `enter` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Entered {
    pub missing: Vec<Missing>,
    /// A PID namespace was created: the next child forked is its PID 1.
    pub pid: bool,
    /// PID 1 makes a mount namespace of its own, to mount a /proc that shows its
    /// PID namespace (and the IPC filesystems). Not this process: then its exit
    /// need not tear one down.
    pub mount: bool,
    /// PID 1 mounts the phase's own IPC filesystems in its mount namespace.
    pub ipc_mounts: bool,
    /// Without a PID namespace, this process made the mount namespace for the
    /// phase's own IPC filesystems: `finish` mounts them.
    pub mount_here: bool,
    /// A network namespace was created: lo still has to be set up (`finish`).
    pub network: bool,
    /// A UTS namespace was created: the hostname still has to be set (`finish`).
    pub uts: bool,
}

/// Create the namespaces in `wanted` for this process (a PID namespace for its next
/// child). Without privilege, a user namespace maps the caller's own uid and gid to
/// themselves, so the files a phase creates belong to the caller. `ipc_mounts`:
/// the phase has private IPC and gets its own /dev/mqueue and /dev/shm, in a mount
/// namespace of PID 1's or, without a PID namespace, of this process. `finish`
/// then sets them up; it may run while PID 1 prepares itself.
pub fn enter(wanted: Set, ipc_mounts: bool, host: &mut impl Host) -> Result<Entered> {
    let mut entered = Entered::default();
    let mount_here = ipc_mounts && !wanted.pid;
    if wanted.is_empty() && !mount_here {
        return Ok(entered);
    }
    if !host.is_root()
        && let Err(errno) = enter_user_namespace(host)
    {
        entered.missing = wanted
            .kinds()
            .map(|kind| Missing { kind, cause: Cause::NoUserNamespace(errno as i32) })
            .collect();
        return Ok(entered);
    }
    for kind in wanted.kinds() {
        match host.unshare(kind.clone_flag()) {
            Ok(()) => match kind {
                Kind::Network => entered.network = true,
                Kind::Uts => entered.uts = true,
                Kind::Pid => {
                    entered.pid = true;
                    entered.mount = true;
                    entered.ipc_mounts = ipc_mounts;
                }
                Kind::Ipc => {}
            },
            Err(errno) => entered.missing.push(Missing { kind, cause: Cause::of_unshare(errno) }),
        }
    }
    if mount_here {
        host.unshare(CloneFlags::CLONE_NEWNS)
            .map_err(|errno| anyhow::anyhow!("creating a mount namespace: {}", errno.desc()))?;
        entered.mount_here = true;
    }
    Ok(entered)
}

/// Set up the namespaces `enter` created: lo with portage's addresses, hostname
/// `localhost`, and the IPC filesystems when this process made the mount namespace.
pub fn finish(entered: &Entered, host: &mut impl Host) -> Result<()> {
    if entered.network {
        host.loopback_up()?;
    }
    if entered.uts {
        host.set_hostname("localhost")?;
    }
    if entered.mount_here {
        host.ipc_mounts()?;
    }
    Ok(())
}

fn enter_user_namespace(host: &mut impl Host) -> Result<(), Errno> {
    let (uid, gid) = host.current_ids();
    host.unshare(CloneFlags::CLONE_NEWUSER)?;
    // Without "deny", an unprivileged process may not write gid_map.
    let maps = [
        ("setgroups", "deny".to_string()),
        ("uid_map", format!("{uid} {uid} 1")),
        ("gid_map", format!("{gid} {gid} 1")),
    ];
    for (file, content) in maps {
        host.write_proc_self(file, &content).map_err(|_| Errno::EPERM)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::host::fake::FakeHost;

    #[test]
    fn root_unshares_each_namespace_and_sets_it_up() {
        let mut host = FakeHost::new(true);
        let entered = enter(Set::all(), true, &mut host).unwrap();
        assert!(entered.missing.is_empty() && entered.pid && entered.mount);
        finish(&entered, &mut host).unwrap();
        assert_eq!(
            host.calls,
            [
                "unshare CLONE_NEWNET",
                "unshare CLONE_NEWIPC",
                "unshare CLONE_NEWUTS",
                "unshare CLONE_NEWPID",
                "lo up",
                "hostname localhost",
            ]
        );
    }

    #[test]
    fn unprivileged_callers_map_their_own_ids_first() {
        let mut host = FakeHost::new(false);
        host.ids = (1000, 100);
        enter(Set { ipc: true, ..Set::default() }, false, &mut host).unwrap();
        assert_eq!(
            host.calls,
            [
                "unshare CLONE_NEWUSER",
                "setgroups: deny",
                "uid_map: 1000 1000 1",
                "gid_map: 100 100 1",
                "unshare CLONE_NEWIPC"
            ]
        );
    }

    #[test]
    fn one_missing_namespace_keeps_the_others() {
        let mut host = FakeHost::new(true);
        host.refused = vec![(CloneFlags::CLONE_NEWNET, Errno::EINVAL)];
        let entered = enter(Set::all(), true, &mut host).unwrap();
        finish(&entered, &mut host).unwrap();
        assert_eq!(entered.missing.len(), 1);
        assert_eq!(entered.missing[0].kind, Kind::Network);
        assert_eq!(entered.missing[0].cause, Cause::KernelConfig);
        assert!(entered.missing[0].reason().contains("CONFIG_NET_NS"), "{}", entered.missing[0].reason());
        assert!(host.calls.contains(&"unshare CLONE_NEWIPC".to_string()));
        assert!(!host.calls.contains(&"lo up".to_string()));
    }

    #[test]
    fn without_user_namespaces_an_unprivileged_caller_gets_nothing_and_is_told_why() {
        let mut host = FakeHost::new(false);
        host.refused = vec![(CloneFlags::CLONE_NEWUSER, Errno::EPERM)];
        let entered = enter(Set::all(), true, &mut host).unwrap();
        assert_eq!(entered.missing.len(), 4);
        assert_eq!(entered.missing[0].cause, Cause::NoUserNamespace(libc::EPERM));
        assert!(entered.missing[0].reason().contains("user namespace"));
    }
}
