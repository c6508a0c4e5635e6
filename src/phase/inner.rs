//! The inner mode: phasebox as the unit's ExecStart. It creates what systemd could
//! not (see `sandbox::run`), verifies the isolation, restores the caller's exact
//! context, runs the command, lists the orphans left in the cgroup for the launcher,
//! and exits the way the command did.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::phase::supervise::exit_like;
use crate::phase::watcher;
use crate::phase::{Options, Orphans, run_phase};
use crate::protocol::context::CallerContext;
use crate::protocol::message::Channel;
use crate::protocol::status::PHASEBOX_FAILED;

pub fn main(context_path: &Path) -> u8 {
    let (context, mut findings_file) = match open(context_path) {
        Ok(opened) => opened,
        Err(error) => {
            crate::notice!("phasebox: inner mode: {error:#}");
            return PHASEBOX_FAILED;
        }
    };
    if let Err(error) = watcher::guard(context.launcher) {
        crate::notice!("phasebox: inner mode: {error:#}; not starting the phase");
        return PHASEBOX_FAILED;
    }
    // With PrivatePIDs= this process is the namespace's PID 1, and the launcher
    // names what the command leaves: it listens for us on its socket.
    let channel = match context.channel.as_os_str().is_empty() {
        true => None,
        false => match Channel::connect(&context.channel) {
            Ok(channel) => Some(channel),
            Err(error) => {
                crate::notice!("phasebox: inner mode: connecting to {}: {error}", context.channel.display());
                return PHASEBOX_FAILED;
            }
        },
    };
    let options = Options {
        unshare: context.unshare,
        loopback_addresses: context.loopback_addresses,
        restore: true,
        orphans: if channel.is_some() { Orphans::Launcher } else { Orphans::Cgroup },
        channel,
        own_cgroup: true,
    };
    let findings = run_phase(&context, &options, || ());
    if let Err(error) = findings_file.write_all(findings.encode().as_bytes()) {
        crate::notice!("phasebox: inner mode: cannot write {}: {error}", context.findings_path.display());
    }
    match findings.termination {
        Some(termination) => exit_like(termination),
        None => PHASEBOX_FAILED,
    }
}

/// Read the context, and once it is known to be one, remove it at once (it holds
/// the environment); then open the findings file while still privileged: the
/// command may run as another user. Only a regular file of this user's, reached
/// without a symbolic link, is read; nothing else is ever removed.
fn open(path: &Path) -> Result<(CallerContext, File)> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let meta = file.metadata().with_context(|| format!("inspecting {}", path.display()))?;
    if !meta.file_type().is_file() || meta.uid() != nix::unistd::geteuid().as_raw() {
        bail!("{} is not a context file of phasebox's: not a regular file of this user's", path.display());
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    let context = CallerContext::decode(&bytes).with_context(|| format!("decoding {}", path.display()))?;
    let _ = std::fs::remove_file(path);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&context.findings_path)
        .with_context(|| format!("creating {}", context.findings_path.display()))?;
    Ok((context, file))
}
