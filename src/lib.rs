//! The ratelayer workspace's root package: examples, the demo and whole-stack tests.
//! It is not published; the library is the `ratelayer` crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
