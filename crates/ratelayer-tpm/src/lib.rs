//! Tokens-per-minute admission for LLM API clients: [`TpmLimitLayer`] reserves each
//! request's estimated tokens before it is sent, waits exactly as long as the budget
//! requires, fails at once when a request can never fit or would wait too long, and
//! reconciles every reservation with what the provider counted.
//!
//! This crate is being built: the configuration ([`TpmConfig`]), the usage scanner
//! ([`usage`]) and the calibration ([`Calibration`]) are in place; the layer follows.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::float_cmp))]

pub mod calibration;
pub mod config;
pub mod usage;

pub use calibration::Calibration;
pub use config::{Budget, CalibrationConfig, ModelLimits, TpmConfig};
