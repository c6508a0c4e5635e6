//! Settings of a process: resource limits, and the -p settings phasebox applies to
//! the command (never to itself), with the system calls that apply them.

/// One resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// A `-p` setting of the command's own process (Limit*, Nice, NoNewPrivileges).
/// phasebox applies it to the command alone, just before execve, in every mode:
/// never to itself (`-p LimitFSIZE=0` would stop it writing its own files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessSetting {
    Rlimit(Rlimit),
    Nice(i32),
    NoNewPrivileges,
}

/// Apply a setting to this process; the errno when it fails. Only system calls:
/// it runs in a child that shares its parent's memory.
pub fn apply(setting: ProcessSetting) -> Result<(), libc::c_int> {
    // SAFETY: plain system calls with integer arguments and a local struct.
    let rc = unsafe {
        match setting {
            ProcessSetting::Rlimit(limit) => {
                let value = libc::rlimit { rlim_cur: limit.soft, rlim_max: limit.hard };
                libc::setrlimit(limit.resource as libc::__rlimit_resource_t, &value)
            }
            ProcessSetting::Nice(nice) => libc::setpriority(libc::PRIO_PROCESS, 0, nice),
            ProcessSetting::NoNewPrivileges => libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        }
    };
    if rc == 0 { Ok(()) } else { Err(nix::errno::Errno::last_raw()) }
}
