//! BackoffRetryLayer: tier-aware retries of 429, 529 and transient failures that honour the server's Retry-After.
//!
//! This crate is being built; see the workspace README.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
