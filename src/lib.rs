//! phasebox: run one build phase in a sandbox (a transient systemd unit where
//! systemd runs, namespaces alone where it does not) and kill what it leaves behind.
//!
//! Data flows one way: argv (`cli`) → plan (`plan`) → backend (`backend`) →
//! status (`exit`) → report (`report`). The inner mode (`inner`) is phasebox
//! running inside the unit to restore the caller's context.

pub mod backend;
pub mod cli;
pub mod command_path;
pub mod context;
pub mod doctor;
pub mod exec;
pub mod exit;
pub mod findings;
pub mod generate;
pub mod host;
pub mod inner;
pub mod mode;
pub mod namespaces;
pub mod orphans;
pub mod plan;
pub mod policy;
pub mod ps;
pub mod report;
pub mod run;
pub mod running;
pub mod runtime_dir;
pub mod sandbox;
pub mod startup;
pub mod stop;
pub mod supervise;
pub mod systemd;
pub mod usage;
pub mod value_syntax;
pub mod watchdog;
mod wire;
