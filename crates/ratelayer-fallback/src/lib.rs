//! FallbackLayer: a chain of LLM providers that waits first and falls back second.
//!
//! This crate is being built; see the workspace README.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
