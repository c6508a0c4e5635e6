//! System calls and facts of /proc and cgroups: the `Host` trait (with a recording
//! fake) for what the namespace logic decides, namespace identities, lo, mounts,
//! processes, and phasebox's own start-up.

pub mod host;
pub mod loopback;
pub mod mounts;
pub mod namespaces;
pub mod proc;
pub mod process;
pub mod startup;
