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
    format!("phasebox-{}", random_hex::<8>())
}

/// A name a person can read in `systemctl list-units 'phasebox-*'`:
/// phasebox-CATEGORY-PF-PHASE-<8 random hex digits>, each byte a unit name can't
/// hold escaped as \xNN like systemd-escape does.
pub fn phase_stem(package: Option<(&str, &str)>, phase: &str) -> String {
    let mut stem = String::from("phasebox-");
    if let Some((category, pf)) = package {
        // Room for the rest: unit names end at 255 bytes with ".service".
        let mut name = format!("{}-{}", escape(category), escape(pf));
        if name.len() > 200 {
            // Every byte is ASCII now; don't cut an \xNN escape in two.
            let cut = match name[197..200].rfind('\\') {
                Some(backslash) => 197 + backslash,
                None => 200,
            };
            name.truncate(cut);
        }
        stem.push_str(&name);
        stem.push('-');
    }
    stem.push_str(&escape(phase));
    stem.push('-');
    stem.push_str(&random_hex::<4>());
    stem
}

/// TEXT as a unit name may hold it: other bytes as \xNN, like systemd-escape.
pub fn escape(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b":_.-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    if getrandom(&mut bytes).is_err() {
        let fallback = ((std::process::id() as u64) << 32 ^ nanos()).to_le_bytes();
        for (b, f) in bytes.iter_mut().zip(fallback.iter().cycle()) {
            *b = *f;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    #[test]
    fn phase_names_are_readable_and_valid_for_any_package() {
        let name = phase_stem(Some(("app-misc", "foo-1.2-r1")), "test");
        assert!(name.starts_with("phasebox-app-misc-foo-1.2-r1-test-") && name.len() == 42, "{name}");
        let odd = phase_stem(Some(("dev/x y", "gtk+-ü\n")), "test");
        assert!(odd.starts_with("phasebox-dev\\x2fx\\x20y-gtk\\x2b-\\xc3\\xbc\\x0a-test-"), "{odd}");
        assert_eq!(stem(&odd).unwrap(), odd);
        let long = phase_stem(Some(("c", &"é".repeat(200))), "compile");
        assert!(long.len() + ".service".len() <= 255 && stem(&long).is_ok(), "{long}");
        assert!(phase_stem(None, "setup").starts_with("phasebox-setup-"));
    }
}
