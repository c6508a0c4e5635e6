//! What a phase used, as getrusage(RUSAGE_CHILDREN) tells the process that waited for
//! the command: the command and every process of the phase that ended before it (as
//! a namespace's PID 1, phasebox reaps the orphans, so they count too).

/// CPU time, the largest resident set, and storage IO.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub user_micros: u64,
    pub system_micros: u64,
    /// The peak resident memory of the largest single process.
    pub max_rss_bytes: u64,
    /// Bytes read from and written to storage (not page cache hits).
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// getrusage counts block IO in 512-byte units.
const BLOCK: u64 = 512;

impl Usage {
    /// The children this process has waited for, so far.
    pub fn of_waited_children() -> Usage {
        let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
        let Ok(usage) = usage else { return Usage::default() };
        let micros = |t: nix::sys::time::TimeVal| (t.tv_sec() as u64) * 1_000_000 + t.tv_usec() as u64;
        Usage {
            user_micros: micros(usage.user_time()),
            system_micros: micros(usage.system_time()),
            max_rss_bytes: usage.max_rss() as u64 * 1024,
            read_bytes: usage.block_reads() as u64 * BLOCK,
            write_bytes: usage.block_writes() as u64 * BLOCK,
        }
    }

    pub fn cpu_micros(&self) -> u64 {
        self.user_micros + self.system_micros
    }

    pub fn encode(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.user_micros, self.system_micros, self.max_rss_bytes, self.read_bytes, self.write_bytes
        )
    }

    pub fn decode(text: &str) -> Option<Usage> {
        let numbers: Vec<u64> = text.split(' ').map(str::parse).collect::<Result<_, _>>().ok()?;
        let [user_micros, system_micros, max_rss_bytes, read_bytes, write_bytes] = numbers[..] else {
            return None;
        };
        Some(Usage { user_micros, system_micros, max_rss_bytes, read_bytes, write_bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let usage = Usage {
            user_micros: 1,
            system_micros: 2,
            max_rss_bytes: 3 << 20,
            read_bytes: 512,
            write_bytes: 0,
        };
        assert_eq!(Usage::decode(&usage.encode()), Some(usage));
        assert_eq!(Usage::decode("1 2 3"), None);
        assert_eq!(Usage::decode("1 2 3 4 x"), None);
    }

    #[test]
    fn a_waited_child_counts() {
        let before = Usage::of_waited_children();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let after = Usage::of_waited_children();
        assert!(after.cpu_micros() > before.cpu_micros(), "{before:?} {after:?}");
        assert!(after.max_rss_bytes > 0);
    }
}
