//! `ConcurrencyLayer`: per-provider concurrency limits, reservoir pacing and FIFO-fair
//! queuing for clients of LLM APIs.
//!
//! Per scope (by default a provider and credential; configurable to include the model):
//!
//! - a maximum of concurrent requests, with a FIFO-fair queue (bounded if configured: a
//!   full queue makes a request wait, or fail at once with
//!   [`QueueFull`](ratelayer_core::QueueFull));
//! - a reservoir of N requests per interval (at most N starts in any window of that
//!   length), optionally with a burst bound, and tightened by the request limit the
//!   provider stated (read from the shared [`LimitState`](ratelayer_core::LimitState));
//! - a minimum time between request starts;
//! - the scope's cooldown (after a 429) before anything starts;
//! - two priority classes ([`Priority`], an optional request extension): high goes first,
//!   normal is never starved.
//!
//! Admission runs on the limiter engine of `ratelayer-core`: leases and request buckets
//! of the scope's [`ScopeHandle`](ratelayer_core::engine::ScopeHandle), in the
//! [`LimitState`](ratelayer_core::LimitState) given with
//! [`ConcurrencyLayer::with_state`] (or a private one), so a shared store shares them.
//!
//! The permit is held around the real exchange only: it is taken in the response future
//! after any cooldown wait, then the inner service is polled ready and called; for a
//! response it stays in the [`ResponseBody`] until the body ends or is dropped (a
//! streamed answer counts as in flight). Limits change at run time through a
//! [`ConcurrencyHandle`]: raising a maximum admits queued requests at once, lowering it
//! takes effect as in-flight requests finish.
//!
//! Put this layer innermost (directly around the HTTP client), inside retry and TPM
//! admission, so no permit is held while a retry backs off.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits, Reservoir};
//! use ratelayer_core::{RequestMeta, meta};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), ratelayer_core::BoxError> {
//! let config = ConcurrencyConfig::new().provider(
//!     "kimi",
//!     Limits::new()
//!         .max_concurrent(1)
//!         .reservoir(Reservoir::new(4, std::time::Duration::from_secs(60))),
//! );
//! let (layer, handle) = ConcurrencyLayer::pair(config)?;
//! let client = ServiceBuilder::new().layer(layer).service(tower::service_fn(
//!     |_req: Request<String>| async { Ok::<_, Infallible>(Response::new(String::from("ok"))) },
//! ));
//!
//! let mut req = Request::new(String::from("{}"));
//! meta::set(&mut req, RequestMeta::new("kimi", 10, 10).with_model("kimi-k2"));
//! let res = client.oneshot(req).await?;
//! // The permit is held by the body until it is read to the end or dropped.
//! let scope = ratelayer_core::Scope::new("kimi");
//! assert_eq!(handle.stats(&scope).unwrap().in_flight, 1);
//! drop(res);
//! assert_eq!(handle.stats(&scope).unwrap().in_flight, 0);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
pub mod config;
mod future;
mod handle;
mod layer;
mod limiter;
mod service;

pub use body::ResponseBody;
pub use config::{ConcurrencyConfig, Limits, Reservoir, ScopeBy, WhenFull};
pub use future::ResponseFuture;
pub use handle::ConcurrencyHandle;
pub use layer::ConcurrencyLayer;
pub use limiter::ScopeStats;
pub use ratelayer_core::engine::Priority;
pub use service::Concurrency;
