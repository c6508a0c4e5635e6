//! The per-run files shared by the launcher and the inner mode: the caller's context
//! (read and removed by the inner mode) and the findings it writes back.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::systemd::Manager;

/// The files are removed when this is dropped, whatever happened to the phase.
pub struct RunFiles {
    pub context: PathBuf,
    pub findings: PathBuf,
    /// Where the launcher listens for the inner mode's channel (PrivatePIDs=).
    pub socket: PathBuf,
}

/// /run/phasebox for the system manager; $XDG_RUNTIME_DIR/phasebox for the user's.
pub fn directory(manager: Manager) -> PathBuf {
    match manager {
        Manager::System => PathBuf::from("/run/phasebox"),
        Manager::User => {
            let base = std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix::unistd::getuid())));
            base.join("phasebox")
        }
    }
}

impl RunFiles {
    pub fn paths(manager: Manager, unit: &str) -> RunFiles {
        let dir = directory(manager);
        RunFiles {
            context: dir.join(format!("{unit}.context")),
            findings: dir.join(format!("{unit}.findings")),
            socket: dir.join(format!("{unit}.socket")),
        }
    }

    /// Write the context file, readable only by the caller (and root).
    pub fn write_context(&self, bytes: &[u8]) -> Result<()> {
        let dir = self.context.parent().expect("context files live in a directory");
        create_private(dir)?;
        // Rewritten when systemd refused a property and the start is retried.
        let _ = std::fs::remove_file(&self.context);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.context)
            .with_context(|| format!("creating {}", self.context.display()))?;
        file.write_all(bytes).with_context(|| format!("writing {}", self.context.display()))
    }

    pub fn read_findings(&self) -> Option<Vec<u8>> {
        std::fs::read(&self.findings).ok()
    }
}

/// Create phasebox's runtime directory if needed; it must be ours and closed to others.
pub fn create_private(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    ensure_private(dir)
}

/// The directory must be ours and closed to others: the context holds the
/// environment, and what phasebox reads from it must be what it wrote itself.
pub fn ensure_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("checking {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != nix::unistd::getuid().as_raw() || meta.mode() & 0o077 != 0 {
        bail!("{} must be a directory owned by you with mode 0700; remove it and try again", dir.display());
    }
    Ok(())
}

impl Drop for RunFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.context);
        let _ = std::fs::remove_file(&self.findings);
        let _ = std::fs::remove_file(&self.socket);
    }
}
