//! Shared vocabulary of [ratelayer]: everything the layers agree on.
//!
//! - [`headers`]: one parser for every provider's rate-limit header dialect, producing a
//!   normalized [`RateLimitSnapshot`].
//! - [`classify`]: what a response or error means for rate limiting (success, rate limited,
//!   quota exhausted, overloaded, context overflow, transient, fatal).
//! - [`meta`]: provider, model and token estimate of a request, computed once per logical
//!   request and cached in its extensions.
//! - [`body`]: a cloneable request body whose bytes the layers can read and replay.
//! - [`engine`]: the limiter engine (buckets, reservations, leases, learned limits) behind a
//!   store trait.
//! - [`state`]: the shared limit state through which the layers cooperate.
//! - [`clock`]: all decision-path time comes from `tokio::time`, so paused-time tests work.
//! - [`error`]: the typed errors that ratelayer itself decides.
//!
//! [ratelayer]: https://docs.rs/ratelayer
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::float_cmp))]

pub mod body;
pub mod classify;
pub mod clock;
pub mod engine;
pub mod error;
pub mod headers;
pub mod meta;
pub mod scope;
pub mod state;

pub use body::{ReplayBody, ReplayableBody};
pub use classify::{Classification, Classifier, DefaultClassifier};
pub use clock::{Deadline, SentAt};
pub use error::{ConfigError, NeverFits, QueueFull, WaitTooLong};
pub use headers::{Dialect, Dimension, RateLimitSnapshot};
pub use meta::RequestMeta;
pub use scope::{Scope, ScopeHasher, ScopeMap};
pub use state::LimitState;

/// The error type of services in a ratelayer stack: any error, boxed.
///
/// ```
/// use ratelayer_core::{BoxError, QueueFull, Scope};
/// let e: BoxError = QueueFull { scope: Scope::new("kimi"), capacity: 8 }.into();
/// assert_eq!(e.downcast_ref::<QueueFull>().map(|q| q.capacity), Some(8));
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
