//! `phasebox policy`: the per-phase policy `run --phase` applies, as a table.

use anyhow::Result;

use crate::plan::policy::config::Config;
use crate::plan::policy::package::Package;
use crate::plan::policy::{EbuildFlags, Inputs, PHASES, decide, inputs};

/// `phasebox policy`.
pub fn print(args: &Inputs) -> Result<()> {
    let (package, flags, config) = inputs(args)?;
    crate::output!("{}", table(package.as_ref(), &flags, &config));
    Ok(())
}

/// The effective decision for every phase, as a table.
pub fn table(package: Option<&Package>, flags: &EbuildFlags, config: &Config) -> String {
    let mut out = format!(
        "policy for {} (config: {})\n{:<10} {:<8} {:<8} {:<8} {:<9} {}\n",
        package.map_or("every package".to_string(), |p| p.to_string()),
        config.describe(),
        "PHASE",
        "NETWORK",
        "IPC",
        "PID",
        "CONFINED",
        "CHANGED BY"
    );
    for phase in PHASES {
        let d = decide(phase, package, flags, config);
        out.push_str(&format!(
            "{:<10} {:<8} {:<8} {:<8} {:<9} {}\n",
            phase,
            d.network.to_string(),
            d.ipc.to_string(),
            d.pid.to_string(),
            if d.confine { "yes" } else { "no" },
            d.notes_text()
        ));
    }
    out
}
