pub mod interfaces;
