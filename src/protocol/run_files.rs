//! phasebox's runtime directory (/run/phasebox, $XDG_RUNTIME_DIR/phasebox) and a
//! service-mode run's socket in it, where the launcher listens for the inner mode.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use anyhow::{Context, Result, bail};

use crate::systemd::Manager;

/// A run's socket, where the launcher listens for the inner mode; removed when this
/// is dropped, whatever happened to the phase.
pub struct RunFiles {
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
        RunFiles { socket: directory(manager).join(format!("{unit}.socket")) }
    }

    /// Listen on the socket, in a directory of the caller's own closed to others:
    /// only the caller (and root) may connect, and the launcher checks who did.
    pub fn listen(&self) -> Result<UnixListener> {
        let dir = self.socket.parent().expect("run files live in a directory");
        create_private(dir)?;
        let _ = std::fs::remove_file(&self.socket);
        UnixListener::bind(&self.socket).with_context(|| format!("listening on {}", self.socket.display()))
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
        let _ = std::fs::remove_file(&self.socket);
    }
}
