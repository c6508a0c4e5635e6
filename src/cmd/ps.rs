//! `phasebox ps`: the running phases as a table.

use crate::cmd::running::{self, Running};
use crate::report::columns::{align, or_dash};
use crate::report::{bytes, seconds};
use crate::systemd::Manager;
use crate::systemd::session::Session;

use anyhow::Result;

pub fn print() -> Result<u8> {
    let (mut phases, unreachable) = running::list(&mut Session::new()?);
    phases.sort_by_key(|p| p.since_micros);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
    crate::output!("{}", render(&phases, now as u64));
    for why in &unreachable {
        crate::notice!("phasebox: {why}");
    }
    Ok(if unreachable.is_empty() { 0 } else { 1 })
}

fn render(phases: &[Running], now_micros: u64) -> String {
    let mut rows =
        vec![["UNIT", "BACKEND", "MANAGER", "PID", "TASKS", "MEMORY", "RUNTIME", "PHASE"].map(String::from)];
    for phase in phases {
        let manager = phase.manager.map_or("-", Manager::name);
        let runtime = phase.since_micros.map(|since| seconds(now_micros.saturating_sub(since) as f64 / 1e6));
        rows.push([
            phase.id.clone(),
            phase.backend.to_string(),
            manager.to_string(),
            or_dash(phase.main_pid.map(|p| p.to_string())),
            or_dash(phase.tasks.map(|t| t.to_string())),
            or_dash(phase.memory_bytes.map(bytes)),
            or_dash(runtime),
            phase.description.strip_prefix("phasebox: ").unwrap_or(&phase.description).to_string(),
        ]);
    }
    align(&rows, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_phase_under_a_header() {
        let phase = Running {
            id: "phasebox-app-misc-foo-1-test-0a1b2c3d.service".into(),
            manager: Some(Manager::System),
            backend: "service",
            description: "phasebox: app-misc/foo-1 test phase".into(),
            package: None,
            main_pid: Some(42),
            tasks: Some(3),
            memory_bytes: Some(2 << 20),
            since_micros: Some(1_000_000),
        };
        let table = render(&[phase], 3_500_000);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("UNIT "), "{table}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "phasebox-app-misc-foo-1-test-0a1b2c3d.service",
                "service",
                "system",
                "42",
                "3",
                "2.0M",
                "2.500s",
                "app-misc/foo-1",
                "test",
                "phase"
            ]
        );
    }
}
