//! Tower middleware that keeps LLM API clients inside their providers' rate limits.
//!
//! This facade re-exports the ratelayer layers; it is being built, see the workspace README.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use ratelayer_core as core;
