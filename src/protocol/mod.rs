//! What phasebox's processes tell each other: the caller's context (launcher →
//! inner mode), the findings (the process that ran the command → the launcher),
//! the typed messages of a PID 1's channel, the registry of running unshare
//! phases, and the run files they live in.

pub mod context;
pub mod findings;
pub mod message;
pub mod registry;
pub mod run_files;
pub mod status;
pub mod usage;
mod wire;
