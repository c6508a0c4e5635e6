//! Parsers for systemd's value syntax (sizes, percentages, time spans, booleans,
//! signals), as systemd-run accepts them on -p. Each error says what was expected.

use anyhow::{Result, bail};

pub const INFINITY: u64 = u64::MAX;

/// "infinity" or a byte count with an optional base-1024 suffix: 512, 64K, 1.5G.
pub fn size(text: &str) -> Result<u64> {
    if text == "infinity" {
        return Ok(INFINITY);
    }
    let text = text.strip_suffix('B').unwrap_or(text);
    let power = match text.chars().last() {
        Some('K') => 1,
        Some('M') => 2,
        Some('G') => 3,
        Some('T') => 4,
        Some('P') => 5,
        Some('E') => 6,
        _ => 0,
    };
    let number = if power > 0 { &text[..text.len() - 1] } else { text };
    let Ok(number) = decimal(number) else {
        bail!("'{text}' is not a size");
    };
    let value = number * 1024f64.powi(power);
    if value >= u64::MAX as f64 {
        bail!("too large");
    }
    Ok(value as u64)
}

/// "N%" with 0 <= N <= 100, as systemd's 32-bit scale (0 .. u32::MAX).
pub fn percent_scale(text: &str) -> Result<u32> {
    let p = percent(text)?;
    if p > 100.0 {
        bail!("a percentage above 100%");
    }
    Ok((p / 100.0 * u32::MAX as f64).round() as u32)
}

/// "N%" with N >= 0, as a plain number.
pub fn percent(text: &str) -> Result<f64> {
    let Some(number) = text.strip_suffix('%') else { bail!("expected a percentage like 50%") };
    decimal(number)
}

fn decimal(text: &str) -> Result<f64> {
    let ok = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.chars().filter(|&c| c == '.').count() <= 1
        && text != ".";
    if !ok {
        bail!("'{text}' is not a non-negative number");
    }
    Ok(text.parse()?)
}

/// An unsigned integer within `min..=max`.
pub fn integer(text: &str, min: u64, max: u64) -> Result<u64> {
    let Ok(n) = text.parse::<u64>() else { bail!("'{text}' is not a whole number") };
    if !(min..=max).contains(&n) {
        bail!("{n} is outside {min}..{max}");
    }
    Ok(n)
}

/// A signed integer within `min..=max`.
pub fn signed(text: &str, min: i64, max: i64) -> Result<i64> {
    let Ok(n) = text.parse::<i64>() else { bail!("'{text}' is not a whole number") };
    if !(min..=max).contains(&n) {
        bail!("{n} is outside {min}..{max}");
    }
    Ok(n)
}

/// "infinity" or a time span in microseconds: 30, 30s, 500ms, 1min 30s, 2h, 1d.
/// A bare number is seconds, as in systemd.
pub fn timespan_usec(text: &str) -> Result<u64> {
    if text == "infinity" {
        return Ok(INFINITY);
    }
    let mut rest = text.trim();
    if rest.is_empty() {
        bail!("empty time span");
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number = decimal(&rest[..digits])?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let factor: f64 = match unit {
            "us" | "usec" | "µs" => 1.0,
            "ms" | "msec" => 1e3,
            "" | "s" | "sec" | "second" | "seconds" => 1e6,
            "m" | "min" | "minute" | "minutes" => 60e6,
            "h" | "hr" | "hour" | "hours" => 3600e6,
            "d" | "day" | "days" => 86400e6,
            "w" | "week" | "weeks" => 604800e6,
            other => bail!("unknown time unit '{other}' (use us, ms, s, min, h, d or w)"),
        };
        total += number * factor;
    }
    if total >= u64::MAX as f64 {
        bail!("too long");
    }
    Ok(total as u64)
}

pub fn boolean(text: &str) -> Result<bool> {
    match text {
        "1" | "yes" | "y" | "true" | "t" | "on" => Ok(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Ok(false),
        _ => bail!("expected yes or no"),
    }
}

/// A signal by number or name (TERM, SIGTERM).
pub fn signal(text: &str) -> Result<i32> {
    if let Ok(n) = text.parse::<i32>() {
        if nix::sys::signal::Signal::try_from(n).is_ok() {
            return Ok(n);
        }
        bail!("{n} is not a signal number");
    }
    let name = if text.starts_with("SIG") { text.to_string() } else { format!("SIG{text}") };
    match name.parse::<nix::sys::signal::Signal>() {
        Ok(signal) => Ok(signal as i32),
        Err(_) => bail!("'{text}' is not a signal name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("512").unwrap(), 512);
        assert_eq!(size("64K").unwrap(), 65536);
        assert_eq!(size("2G").unwrap(), 2 << 30);
        assert_eq!(size("1.5M").unwrap(), 1572864);
        assert_eq!(size("infinity").unwrap(), INFINITY);
        for bad in ["", "lots", "-1", "1X", "1..2K", "K", "99999999E"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentages() {
        assert_eq!(percent_scale("100%").unwrap(), u32::MAX);
        assert_eq!(percent_scale("0%").unwrap(), 0);
        assert!(percent_scale("101%").is_err());
        assert_eq!(percent("150%").unwrap(), 150.0);
        assert!(percent("150").is_err());
    }

    #[test]
    fn timespans() {
        assert_eq!(timespan_usec("30").unwrap(), 30_000_000);
        assert_eq!(timespan_usec("500ms").unwrap(), 500_000);
        assert_eq!(timespan_usec("1min 30s").unwrap(), 90_000_000);
        assert_eq!(timespan_usec("1min30s").unwrap(), 90_000_000);
        assert_eq!(timespan_usec("2h").unwrap(), 7_200_000_000);
        assert_eq!(timespan_usec("infinity").unwrap(), INFINITY);
        for bad in ["", "soon", "5 parsecs", "1e9"] {
            assert!(timespan_usec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals_and_booleans() {
        assert_eq!(signal("TERM").unwrap(), 15);
        assert_eq!(signal("SIGKILL").unwrap(), 9);
        assert_eq!(signal("2").unwrap(), 2);
        assert!(signal("FOO").is_err());
        assert!(signal("999").is_err());
        assert!(boolean("yes").unwrap());
        assert!(!boolean("off").unwrap());
        assert!(boolean("maybe").is_err());
    }
}
