//! Find the command the way a shell would, before anything starts, so a missing or
//! non-executable command is reported as such (127/126) and never as a phase failure.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use nix::unistd::{AccessFlags, access};

use crate::protocol::context::lookup;
use crate::protocol::status::{Failure, NOT_EXECUTABLE, NOT_FOUND, PHASEBOX_FAILED};

/// The PATH bash uses when none is set.
const DEFAULT_PATH: &[u8] = b"/usr/local/bin:/usr/bin:/bin";

/// Resolve `program` against the caller's PATH (from `env`) and working directory.
/// Returns the path the inner mode should execute.
pub fn resolve(program: &OsStr, env: &[OsString], cwd: &Path) -> Result<OsString, Failure> {
    let shown = program.to_string_lossy();
    if program.is_empty() {
        return Err(Failure::new(
            PHASEBOX_FAILED,
            anyhow!("the command is an empty string: name a program to run"),
        ));
    }
    if program.as_bytes().contains(&b'/') {
        return match check(&cwd.join(program)) {
            Candidate::Runnable => Ok(program.to_owned()),
            Candidate::Missing => Err(Failure::new(NOT_FOUND, anyhow!("{shown}: No such file or directory"))),
            Candidate::NotRunnable(why) => Err(Failure::new(NOT_EXECUTABLE, anyhow!("{shown}: {why}"))),
        };
    }
    let search = lookup(env, "PATH").unwrap_or(DEFAULT_PATH);
    let mut not_runnable = None;
    for dir in search.split(|&b| b == b':') {
        // An empty PATH entry means the current directory.
        let dir = if dir.is_empty() { cwd.to_path_buf() } else { cwd.join(OsStr::from_bytes(dir)) };
        let candidate: PathBuf = dir.join(program);
        match check(&candidate) {
            Candidate::Runnable => return Ok(candidate.into_os_string()),
            Candidate::NotRunnable(why) => {
                not_runnable.get_or_insert((candidate, why));
            }
            Candidate::Missing => {}
        }
    }
    match not_runnable {
        Some((path, why)) => Err(Failure::new(NOT_EXECUTABLE, anyhow!("{}: {why}", path.display()))),
        None => Err(Failure::new(NOT_FOUND, anyhow!("{shown}: command not found"))),
    }
}

enum Candidate {
    Runnable,
    Missing,
    NotRunnable(&'static str),
}

fn check(path: &Path) -> Candidate {
    match std::fs::metadata(path) {
        Err(_) => Candidate::Missing,
        Ok(meta) if meta.is_dir() => Candidate::NotRunnable("Is a directory"),
        Ok(_) if access(path, AccessFlags::X_OK).is_err() => Candidate::NotRunnable("Permission denied"),
        Ok(_) => Candidate::Runnable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env(path: &str) -> Vec<OsString> {
        vec![format!("PATH={path}").into()]
    }

    #[test]
    fn finds_commands_on_the_callers_path() {
        let found = resolve("sh".as_ref(), &env("/nonexistent:/bin"), "/".as_ref()).unwrap();
        assert_eq!(found, "/bin/sh");
    }

    #[test]
    fn missing_commands_are_127_and_unexecutable_ones_126() {
        let dir = std::env::temp_dir().join(format!("phasebox-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("not-executable");
        std::fs::write(&file, "data").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let root = nix::unistd::geteuid().is_root();

        let missing = resolve("no-such-command-xyz".as_ref(), &env("/bin"), "/".as_ref()).unwrap_err();
        assert_eq!(missing.code, NOT_FOUND);
        assert!(missing.to_string().contains("command not found"));

        let is_dir = resolve("/".as_ref(), &env("/bin"), "/".as_ref()).unwrap_err();
        assert_eq!(is_dir.code, NOT_EXECUTABLE);

        // root may execute any file with an x bit; this one has none, so even root can't.
        let not_exec = resolve("./not-executable".as_ref(), &env(""), &dir).unwrap_err();
        assert_eq!(not_exec.code, NOT_EXECUTABLE, "root={root}");
        let via_path = resolve("not-executable".as_ref(), &env(dir.to_str().unwrap()), "/".as_ref());
        assert_eq!(via_path.unwrap_err().code, NOT_EXECUTABLE);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relative_programs_are_kept_relative_to_the_working_directory() {
        assert_eq!(resolve("./sh".as_ref(), &env(""), "/bin".as_ref()).unwrap(), "./sh");
    }
}
