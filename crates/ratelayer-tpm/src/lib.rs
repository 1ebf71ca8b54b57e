//! TpmLimitLayer: tokens-per-minute admission with exact waits and reconciliation against the provider's reported usage.
//!
//! This crate is being built; see the workspace README.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
