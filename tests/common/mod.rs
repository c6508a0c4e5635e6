pub mod interfaces;
pub mod rig;
