//! The process-level system calls the inner mode makes, behind a small trait so
//! the logic that decides them is unit-testable without privileges.

use std::path::Path;

use anyhow::{Context, Result};
use nix::sched::CloneFlags;

use crate::sys::namespaces::{Kind, NsId};
use crate::sys::process::Rlimit;

pub trait Host {
    fn namespace(&self, kind: Kind) -> Result<NsId>;
    fn is_root(&self) -> bool;
    fn current_ids(&self) -> (u32, u32);
    fn rlimit(&self, resource: u32) -> Result<Rlimit>;
    fn set_rlimit(&mut self, limit: Rlimit) -> Result<()>;
    fn set_groups(&mut self, groups: &[u32]) -> Result<()>;
    fn set_gid(&mut self, gid: u32) -> Result<()>;
    fn set_uid(&mut self, uid: u32) -> Result<()>;
    fn chdir(&mut self, dir: &Path) -> Result<()>;
    fn umask(&mut self, mask: u32);
    /// unshare(2); the error keeps its errno for the diagnosis.
    fn unshare(&mut self, flags: CloneFlags) -> nix::Result<()>;
    /// Write a /proc/self file (uid_map, gid_map, setgroups).
    fn write_proc_self(&mut self, name: &str, content: &str) -> Result<()>;
    fn set_hostname(&mut self, name: &str) -> Result<()>;
    fn loopback_up(&mut self) -> Result<()>;
    /// In a mount namespace of this process's own: make every mount private, then
    /// mount the phase's own IPC filesystems.
    fn ipc_mounts(&mut self) -> Result<()>;
}

/// The real thing.
pub struct Linux;

impl Host for Linux {
    fn namespace(&self, kind: Kind) -> Result<NsId> {
        NsId::of_self(kind)
    }

    fn is_root(&self) -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn current_ids(&self) -> (u32, u32) {
        (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw())
    }

    fn rlimit(&self, resource: u32) -> Result<Rlimit> {
        let mut value = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(resource as libc::__rlimit_resource_t, &mut value) } != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit");
        }
        Ok(Rlimit { resource, soft: value.rlim_cur, hard: value.rlim_max })
    }

    fn set_rlimit(&mut self, limit: Rlimit) -> Result<()> {
        let value = libc::rlimit { rlim_cur: limit.soft, rlim_max: limit.hard };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(limit.resource as libc::__rlimit_resource_t, &value) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit");
        }
        Ok(())
    }

    fn set_groups(&mut self, groups: &[u32]) -> Result<()> {
        let groups: Vec<_> = groups.iter().map(|&g| nix::unistd::Gid::from_raw(g)).collect();
        nix::unistd::setgroups(&groups).context("setgroups")
    }

    fn set_gid(&mut self, gid: u32) -> Result<()> {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)).context("setgid")
    }

    fn set_uid(&mut self, uid: u32) -> Result<()> {
        nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).context("setuid")
    }

    fn chdir(&mut self, dir: &Path) -> Result<()> {
        nix::unistd::chdir(dir)
            .with_context(|| format!("cannot enter the working directory {}", dir.display()))
    }

    fn umask(&mut self, mask: u32) {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask as libc::mode_t));
    }

    fn unshare(&mut self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn write_proc_self(&mut self, name: &str, content: &str) -> Result<()> {
        std::fs::write(format!("/proc/self/{name}"), content)
            .with_context(|| format!("writing /proc/self/{name}"))
    }

    fn set_hostname(&mut self, name: &str) -> Result<()> {
        nix::unistd::sethostname(name).context("sethostname")
    }

    fn loopback_up(&mut self) -> Result<()> {
        crate::sys::loopback::set_up()
    }

    fn ipc_mounts(&mut self) -> Result<()> {
        crate::sys::mounts::private_propagation()?;
        crate::sys::mounts::mount_ipc()
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    /// Records every call; namespaces and identity are whatever the test sets.
    pub struct FakeHost {
        pub root: bool,
        pub ids: (u32, u32),
        pub namespaces: Vec<(Kind, NsId)>,
        pub calls: Vec<String>,
        pub fail_raising_limits: bool,
        /// unshare(2) flags that fail, with the errno they fail with.
        pub refused: Vec<(CloneFlags, nix::errno::Errno)>,
    }

    impl FakeHost {
        pub fn new(root: bool) -> FakeHost {
            FakeHost {
                root,
                ids: (0, 0),
                namespaces: vec![],
                calls: vec![],
                fail_raising_limits: false,
                refused: vec![],
            }
        }
    }

    impl Host for FakeHost {
        fn namespace(&self, kind: Kind) -> Result<NsId> {
            self.namespaces.iter().find(|(k, _)| *k == kind).map(|(_, id)| *id).context("no such namespace")
        }
        fn is_root(&self) -> bool {
            self.root
        }
        fn current_ids(&self) -> (u32, u32) {
            self.ids
        }
        fn rlimit(&self, resource: u32) -> Result<Rlimit> {
            Ok(Rlimit { resource, soft: 1024, hard: 65536 })
        }
        fn set_rlimit(&mut self, limit: Rlimit) -> Result<()> {
            if self.fail_raising_limits && limit.hard == u64::MAX {
                anyhow::bail!("EPERM");
            }
            self.calls.push(format!("rlimit {} {} {}", limit.resource, limit.soft, limit.hard));
            Ok(())
        }
        fn set_groups(&mut self, groups: &[u32]) -> Result<()> {
            self.calls.push(format!("groups {groups:?}"));
            Ok(())
        }
        fn set_gid(&mut self, gid: u32) -> Result<()> {
            self.calls.push(format!("gid {gid}"));
            Ok(())
        }
        fn set_uid(&mut self, uid: u32) -> Result<()> {
            self.calls.push(format!("uid {uid}"));
            Ok(())
        }
        fn chdir(&mut self, dir: &Path) -> Result<()> {
            self.calls.push(format!("chdir {}", dir.display()));
            Ok(())
        }
        fn umask(&mut self, mask: u32) {
            self.calls.push(format!("umask {mask:o}"));
        }
        fn unshare(&mut self, flags: CloneFlags) -> nix::Result<()> {
            if let Some((_, errno)) = self.refused.iter().find(|(f, _)| flags.intersects(*f)) {
                return Err(*errno);
            }
            let names: Vec<_> = flags.iter_names().map(|(name, _)| name).collect();
            self.calls.push(format!("unshare {}", names.join(" | ")));
            Ok(())
        }
        fn write_proc_self(&mut self, name: &str, content: &str) -> Result<()> {
            self.calls.push(format!("{name}: {content}"));
            Ok(())
        }
        fn set_hostname(&mut self, name: &str) -> Result<()> {
            self.calls.push(format!("hostname {name}"));
            Ok(())
        }
        fn loopback_up(&mut self) -> Result<()> {
            self.calls.push("lo up".into());
            Ok(())
        }
        fn ipc_mounts(&mut self) -> Result<()> {
            self.calls.push("ipc mounts".into());
            Ok(())
        }
    }
}
