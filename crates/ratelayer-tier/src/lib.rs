//! TierDetectLayer: infers an LLM provider account's rate-limit tier from response headers and publishes limits, resets and cooldowns to shared state.
//!
//! This crate is being built; see the workspace README.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
