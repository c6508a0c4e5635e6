//! `phasebox report FILE`: the records of a --report file as a table, the longest
//! phase first, with totals.

use std::path::Path;

use anyhow::{Context, Result};

use super::columns::{align, or_dash};
use super::{Record, bytes, seconds};

/// The records of the file at PATH, as a table.
pub fn read(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let records = parse(&text).with_context(|| format!("reading {}", path.display()))?;
    Ok(render(records))
}

/// Every non-empty line must be a record: a report that can't be read is an error,
/// not a shorter table.
fn parse(text: &str) -> Result<Vec<Record>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).with_context(|| format!("line {}: not a phasebox record", n + 1))
        })
        .collect()
}

fn render(mut records: Vec<Record>) -> String {
    records.sort_by(|a, b| b.wall_seconds.total_cmp(&a.wall_seconds));
    let mut rows: Vec<[String; 9]> = vec![[
        "WALL".into(),
        "CPU".into(),
        "MEMORY".into(),
        "READ".into(),
        "WRITTEN".into(),
        "ORPHANS".into(),
        "STATUS".into(),
        "BACKEND".into(),
        "PHASE".into(),
    ]];
    for record in &records {
        let phase = match (&record.package, &record.phase) {
            (Some(package), Some(phase)) => format!("{package} {phase}"),
            (None, Some(phase)) => phase.clone(),
            _ => record.command.join(" "),
        };
        rows.push([
            seconds(record.wall_seconds),
            or_dash(record.cpu_seconds().map(seconds)),
            or_dash(record.memory_peak_bytes.map(bytes)),
            or_dash(record.io_read_bytes.map(bytes)),
            or_dash(record.io_write_bytes.map(bytes)),
            record.orphans.len().to_string(),
            record.ending(),
            record.backend.clone(),
            phase,
        ]);
    }
    let sum = |f: fn(&Record) -> Option<f64>| records.iter().filter_map(f).sum::<f64>();
    let total = |f: fn(&Record) -> Option<u64>| records.iter().filter_map(f).sum::<u64>();
    rows.push([
        seconds(sum(|r| Some(r.wall_seconds))),
        seconds(sum(Record::cpu_seconds)),
        or_dash(records.iter().filter_map(|r| r.memory_peak_bytes).max().map(bytes)),
        bytes(total(|r| r.io_read_bytes)),
        bytes(total(|r| r.io_write_bytes)),
        records.iter().map(|r| r.orphans.len()).sum::<usize>().to_string(),
        String::new(),
        String::new(),
        format!("total of {} phase{}", records.len(), if records.len() == 1 { "" } else { "s" }),
    ]);
    // The six figures right-aligned, the words left-aligned.
    align(&rows, 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(phase: &str, wall: f64) -> String {
        format!(
            r#"{{"package":"app-misc/foo-1","phase":"{phase}","command":["true"],"unit":null,"backend":"scope","isolations":["net"],"missing":[],"exit_code":0,"exited":0,"signal":null,"limit":null,"started_at":0.0,"wall_seconds":{wall},"cpu_user_seconds":0.5,"cpu_system_seconds":0.25,"memory_peak_bytes":1048576,"io_read_bytes":0,"io_write_bytes":2048,"orphans":[]}}"#
        )
    }

    #[test]
    fn the_longest_phase_comes_first_and_totals_come_last() {
        let text = [line("compile", 2.0), line("test", 5.0), line("unpack", 0.5)].join("\n");
        let table = render(parse(&text).unwrap());
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].trim_start().starts_with("WALL"), "{table}");
        assert!(lines[1].ends_with("app-misc/foo-1 test"), "{table}");
        assert!(lines[2].ends_with("app-misc/foo-1 compile"), "{table}");
        assert!(lines[3].ends_with("app-misc/foo-1 unpack"), "{table}");
        let totals: Vec<&str> = lines[4].split_whitespace().take(6).collect();
        assert_eq!(totals, ["7.500s", "2.250s", "1.0M", "0B", "6.0K", "0"], "{table}");
        assert!(lines[4].ends_with("total of 3 phases"), "{table}");
    }

    #[test]
    fn a_line_that_is_not_a_record_is_an_error_naming_it() {
        let text = format!("{}\n\nnot json\n", line("test", 1.0));
        let error = parse(&text).unwrap_err();
        assert_eq!(format!("{error:#}").split(':').next(), Some("line 3"), "{error:#}");
    }
}
