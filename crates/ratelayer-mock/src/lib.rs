//! An honest mock LLM provider (OpenAI, Anthropic, Azure, Gemini, Groq dialects) that
//! enforces rate limits, for testing tower stacks in-process or over loopback HTTP.
//!
//! This crate is being built; [`contract`] is ready: tower-contract checks for any stack.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod contract;
