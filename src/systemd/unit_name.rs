//! Unit names and the object paths systemd derives from them.

use anyhow::{Result, bail};

/// The name from `--unit` without a ".service" or ".scope" suffix; the backend adds
/// the one it needs.
pub fn stem(requested: &str) -> Result<String> {
    let stem =
        requested.strip_suffix(".service").or_else(|| requested.strip_suffix(".scope")).unwrap_or(requested);
    let valid_char = |c: char| c.is_ascii_alphanumeric() || ":_.\\-".contains(c);
    if stem.is_empty() || stem.len() > 240 || !stem.chars().all(valid_char) || stem.contains('@') {
        bail!(
            "--unit {requested}: not a valid unit name (use letters, digits and ':_.-\\', \
             at most 255 characters; escape other text with `systemd-escape`)"
        );
    }
    Ok(stem.to_string())
}

/// A fresh default name: phasebox-<16 random hex digits>.
pub fn random_stem() -> String {
    let mut bytes = [0u8; 8];
    if getrandom(&mut bytes).is_err() {
        let fallback = (std::process::id() as u64) << 32 ^ nanos();
        bytes = fallback.to_le_bytes();
    }
    format!("phasebox-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The object path of a unit: every byte that is not ASCII alphanumeric (and a leading
/// digit) becomes `_xx`, as in systemd's bus_label_escape().
pub fn object_path(unit: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            path.push(b as char);
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_escape_like_systemd() {
        assert_eq!(object_path("dbus.service"), "/org/freedesktop/systemd1/unit/dbus_2eservice");
        assert_eq!(
            object_path("phasebox-1a.service"),
            "/org/freedesktop/systemd1/unit/phasebox_2d1a_2eservice"
        );
        assert_eq!(object_path("0x.service"), "/org/freedesktop/systemd1/unit/_30x_2eservice");
    }

    #[test]
    fn unit_names() {
        assert_eq!(stem("build-1").unwrap(), "build-1");
        assert_eq!(stem("a.service").unwrap(), "a");
        assert_eq!(stem("a.scope").unwrap(), "a");
        for bad in ["", ".service", "a b", "a/b", "x@y", "ü"] {
            assert!(stem(bad).is_err(), "{bad}");
        }
        let a = random_stem();
        assert!(a.starts_with("phasebox-") && a.len() == "phasebox-".len() + 16);
        assert_ne!(a, random_stem());
    }
}
