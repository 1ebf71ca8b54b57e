//! ConcurrencyLayer: per-provider concurrency limits, reservoir pacing and FIFO-fair queuing for LLM API clients.
//!
//! This crate is being built; see the workspace README.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
