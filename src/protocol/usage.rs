//! What a phase used. Where the phase has a control group of its own on the
//! unified (v2) hierarchy (service and scope modes), the whole phase's figures come
//! from it: cpu.stat, memory.peak (the peak of all its processes together) and
//! io.stat, read by the phasebox process in that cgroup once the command has
//! ended. Elsewhere (unshare mode, hybrid hosts) they come from
//! getrusage(RUSAGE_CHILDREN) of the process that waited for the command: the
//! command and every process of the phase that ended before it (as a namespace's
//! PID 1, phasebox reaps the orphans, so they count too), with the memory peak of
//! the largest single process. Each figure says where it came from.

use std::path::Path;

/// Where a figure came from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// getrusage(RUSAGE_CHILDREN): the processes waited for.
    #[default]
    Rusage,
    /// The phase's own cgroup: every process of the phase.
    Cgroup,
}

impl Source {
    pub fn tag(self) -> &'static str {
        match self {
            Source::Rusage => "rusage",
            Source::Cgroup => "cgroup",
        }
    }

    fn from_tag(tag: &str) -> Option<Source> {
        [Source::Rusage, Source::Cgroup].into_iter().find(|s| s.tag() == tag)
    }
}

/// CPU time, the memory peak, and storage IO, each with its source.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub user_micros: u64,
    pub system_micros: u64,
    pub cpu_source: Source,
    /// The whole phase's peak (cgroup), or the largest single process's (rusage).
    pub memory_peak_bytes: u64,
    pub memory_source: Source,
    /// Bytes read from and written to storage (not page cache hits).
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub io_source: Source,
}

/// getrusage counts block IO in 512-byte units.
const BLOCK: u64 = 512;

/// How many processes the kernel's OOM killer killed in this process's own cgroup
/// (`oom_kill` of memory.events; 0 where there is no such file: no memory controller).
pub fn own_cgroup_oom_kills() -> u64 {
    let Ok(dir) = crate::sys::proc::own_cgroup_dir() else { return 0 };
    std::fs::read_to_string(dir.join("memory.events")).map_or(0, |text| oom_kills(&text))
}

fn oom_kills(memory_events: &str) -> u64 {
    memory_events.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()).unwrap_or(0)
}

impl Usage {
    /// The children this process has waited for, so far.
    pub fn of_waited_children() -> Usage {
        let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
        let Ok(usage) = usage else { return Usage::default() };
        let micros = |t: nix::sys::time::TimeVal| (t.tv_sec() as u64) * 1_000_000 + t.tv_usec() as u64;
        Usage {
            user_micros: micros(usage.user_time()),
            system_micros: micros(usage.system_time()),
            memory_peak_bytes: usage.max_rss() as u64 * 1024,
            read_bytes: usage.block_reads() as u64 * BLOCK,
            write_bytes: usage.block_writes() as u64 * BLOCK,
            ..Usage::default()
        }
    }

    /// These figures, replaced by those of this process's own cgroup (the phase's
    /// unit) wherever the unified hierarchy has them.
    pub fn with_own_cgroup(self) -> Usage {
        match crate::sys::proc::own_cgroup_dir() {
            Ok(dir) if dir.join("cgroup.controllers").exists() => self.with_cgroup(&dir),
            _ => self,
        }
    }

    fn with_cgroup(mut self, dir: &Path) -> Usage {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        if let Some(stat) = read("cpu.stat") {
            let field = |name: &str| {
                stat.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
            };
            if let (Some(user), Some(system)) = (field("user_usec"), field("system_usec")) {
                (self.user_micros, self.system_micros, self.cpu_source) = (user, system, Source::Cgroup);
            }
        }
        if let Some(peak) = read("memory.peak").and_then(|text| text.trim().parse().ok()) {
            (self.memory_peak_bytes, self.memory_source) = (peak, Source::Cgroup);
        }
        // io.stat has a line per device, and is there only where the io controller is.
        if let Some(stat) = read("io.stat") {
            let total = |key: &str| -> u64 {
                stat.split_whitespace().filter_map(|w| w.strip_prefix(key)?.parse::<u64>().ok()).sum()
            };
            (self.read_bytes, self.write_bytes, self.io_source) =
                (total("rbytes="), total("wbytes="), Source::Cgroup);
        }
        self
    }

    pub fn cpu_micros(&self) -> u64 {
        self.user_micros + self.system_micros
    }

    pub fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {}",
            self.user_micros,
            self.system_micros,
            self.cpu_source.tag(),
            self.memory_peak_bytes,
            self.memory_source.tag(),
            self.read_bytes,
            self.write_bytes,
            self.io_source.tag()
        )
    }

    pub fn decode(text: &str) -> Option<Usage> {
        let fields: Vec<&str> = text.split(' ').collect();
        let [user, system, cpu, peak, memory, read, write, io] = fields[..] else { return None };
        let number = |text: &str| text.parse::<u64>().ok();
        Some(Usage {
            user_micros: number(user)?,
            system_micros: number(system)?,
            cpu_source: Source::from_tag(cpu)?,
            memory_peak_bytes: number(peak)?,
            memory_source: Source::from_tag(memory)?,
            read_bytes: number(read)?,
            write_bytes: number(write)?,
            io_source: Source::from_tag(io)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_come_from_memory_events() {
        let events = "low 0\nhigh 0\nmax 31\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills(events), 1);
        assert_eq!(oom_kills("low 0\n"), 0);
    }

    #[test]
    fn round_trip() {
        let usage = Usage {
            user_micros: 1,
            system_micros: 2,
            memory_peak_bytes: 3 << 20,
            memory_source: Source::Cgroup,
            read_bytes: 512,
            ..Usage::default()
        };
        assert_eq!(Usage::decode(&usage.encode()), Some(usage));
        assert_eq!(Usage::decode("1 2 rusage 3"), None);
        assert_eq!(Usage::decode("1 2 rusage 3 cgroup 4 x rusage"), None);
        assert_eq!(Usage::decode("1 2 what 3 cgroup 4 5 rusage"), None);
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
        assert!(after.memory_peak_bytes > 0);
    }

    #[test]
    fn a_cgroups_files_give_the_whole_phases_figures() {
        let dir = std::env::temp_dir().join(format!("phasebox-usage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rusage = Usage { user_micros: 7, memory_peak_bytes: 9, read_bytes: 11, ..Usage::default() };
        std::fs::write(dir.join("cpu.stat"), "usage_usec 300\nuser_usec 200\nsystem_usec 100\n").unwrap();
        std::fs::write(dir.join("memory.peak"), "209715200\n").unwrap();
        let usage = rusage.with_cgroup(&dir);
        assert_eq!((usage.user_micros, usage.system_micros, usage.cpu_source), (200, 100, Source::Cgroup));
        assert_eq!((usage.memory_peak_bytes, usage.memory_source), (209715200, Source::Cgroup));
        // No io.stat (no io controller): the process's own figures stay.
        assert_eq!((usage.read_bytes, usage.io_source), (11, Source::Rusage));
        std::fs::write(
            dir.join("io.stat"),
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n",
        )
        .unwrap();
        let usage = rusage.with_cgroup(&dir);
        assert_eq!((usage.read_bytes, usage.write_bytes, usage.io_source), (4097, 8194, Source::Cgroup));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
