//! The ratelayer workspace's root package: examples, the demo and whole-stack tests.
//! It is not published; the library is the `ratelayer` crate.
//!
//! The pieces here are shared by `examples/demo.rs`, `examples/goodput.rs` and the
//! whole-stack tests, so every comparison runs the same workload the same way:
//!
//! - [`workload`]: a seeded workload of chat requests of varied sizes;
//! - [`run`]: concurrent callers, and the naive client (fixed 1-2-4-8 s backoff on 429);
//! - [`baseline`]: tower's own `Retry` + `ConcurrencyLimit` + `RateLimit`, configured well;
//! - [`report`]: progress bars and the results table;
//! - [`chart`]: an SVG chart of tokens per second against the limit;
//! - [`goodput`]: binding-limit share, 429 rate and theoretical minimum of a run;
//! - [`demo`]: the demo's mock providers, its table rows and its chart.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod baseline;
pub mod chart;
pub mod demo;
pub mod goodput;
pub mod report;
pub mod run;
pub mod workload;
