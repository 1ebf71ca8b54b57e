//! TierDetectLayer: infers an LLM provider account's rate-limit tier from response
//! headers and publishes limits, resets and cooldowns to shared state.
//!
//! Every response (429s included) is read through
//! [`ratelayer_core::headers::parse`]; what it says is published into the shared
//! [`LimitState`](ratelayer_core::LimitState) for the request's scope
//! ([`meta::ensure`](ratelayer_core::meta::ensure)`(..).scope()`):
//!
//! - the snapshot (limits, remaining, resets) via
//!   [`LimitState::observe`](ratelayer_core::LimitState::observe), which also tightens the
//!   engine's learned limits;
//! - a cooldown when the server asks for a delay (a 429's `retry-after-ms`,
//!   `Retry-After` or the exhausted dimension's reset; a 503/529's `Retry-After`);
//! - the tier, inferred from the requests-per-minute limit with a per-provider
//!   [`TierTable`] (serde-loadable). Until anything is detected, a scope is on its
//!   table's most conservative tier (`free`: base delay 20 s), so backoff is safe from
//!   the first request. Every tier change is an `info` event:
//!   `detected tier: free (rpm 3, base delay 20s)` with fields `scope`, `tier`, `rpm`,
//!   `base_delay_ms`, `pacing_ms`, `previous`.
//!
//! Only headers are read: the response body passes through untouched (same type, not
//! buffered). Delay hints that live in error bodies (Gemini's `RetryInfo`) are picked up
//! by `ratelayer-retry`'s `BackoffRetryLayer`, which buffers error bodies to classify them
//! and publishes the cooldown itself.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use ratelayer_core::{LimitState, ReplayBody, Scope, meta};
//! use ratelayer_tier::TierDetectLayer;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let state = LimitState::new();
//! let layer = TierDetectLayer::new(state.clone());
//! let handle = layer.handle();
//! let svc = layer.layer(service_fn(|_req: Request<ReplayBody>| async {
//!     let resp = Response::builder()
//!         .status(StatusCode::TOO_MANY_REQUESTS)
//!         .header("x-ratelimit-limit-requests", "3")
//!         .header("x-ratelimit-remaining-requests", "0")
//!         .header("retry-after", "20")
//!         .body(String::new())
//!         .unwrap();
//!     Ok::<_, Infallible>(resp)
//! }));
//! let mut req = Request::new(ReplayBody::empty());
//! let scope = meta::ensure(&mut req).scope();
//! let resp = svc.oneshot(req).await.unwrap();
//! assert_eq!(resp.status(), 429);
//! let rec = handle.recommendation(&scope);
//! assert_eq!((&*rec.tier, rec.rpm, rec.base_delay.as_secs()), ("free", Some(3), 20));
//! assert_eq!(state.cooldown_remaining(&scope).as_secs(), 20);
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod future;
mod layer;
mod service;
mod table;

pub use future::ResponseFuture;
pub use layer::{Recommendation, TierDetectLayer, TierDetectLayerBuilder, TierHandle};
pub use service::TierDetect;
pub use table::{TierSpec, TierTable, TierTables};
