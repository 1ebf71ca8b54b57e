//! BackoffRetryLayer: tier-aware retries of 429, 529 and transient failures that honour
//! the server's Retry-After.
//!
//! One logical request becomes several attempts. Each attempt's response is classified
//! with a [`Classifier`](ratelayer_core::Classifier) ([`DefaultClassifier`] by default);
//! error bodies (status ≥ 400, as the classifier's `wants_body` says) are read up to a
//! bound (64 KiB) so that OpenAI's `insufficient_quota` 429, context-overflow 400s,
//! Anthropic's `overloaded_error` and Gemini's `RetryInfo` are told apart. The bytes read
//! are given back to the caller in front of the unread rest: the response body type is
//! [`ResponseBody<B>`] (frames of `Bytes`, every byte the server sent); success bodies
//! pass through unread.
//!
//! # Delays
//!
//! For a rate-limited response, in order:
//!
//! 1. the server's requested delay (core's parser: `retry-after-ms` > `Retry-After`
//!    seconds or HTTP-date > a body hint such as Gemini's `RetryInfo`);
//! 2. the reset of the exhausted dimension (remaining 0);
//! 3. the scope's tier base delay (from [`LimitState`](ratelayer_core::LimitState),
//!    published by `ratelayer-tier`; 20 s, the free tier, when unknown) × factor^n:
//!    free tier 20, 40, 80, 160, 320, 640 s; tier 1 0.3, 0.6, 1.2, 2.4, 4.8, 9.6 s.
//!
//! Computed delays get the configured [`Jitter`] and the per-delay cap; a server delay
//! above the cap follows [`OverCap`]. Every delay counts against the total-wait budget
//! and must end before the request's [`Deadline`], else the last response is returned.
//! Overloaded (529) and transient failures (5xx, 408, connection errors, timeouts) have
//! their own [`Backoff`] and retry counts. Quota exhaustion, context overflow and fatal
//! 4xx are never retried; `x-should-retry: false` stops and `true` forces a retry.
//! Retries also draw on a retry budget (tower's `TpsBudget` algorithm: a share of recent requests
//! plus a floor), so a failing provider does not see its load multiplied.
//!
//! Each wait is an `info` event:
//! `rate limited (429), waiting 20.0s before retry 1/6 (tier free, base 20s, source retry-after)`
//! with fields `scope`, `status`, `classification`, `delay_ms`, `retry`, `max_retries`,
//! `tier`, `base_delay_ms`, `source`. The outcome is an event too, and a returned response
//! carries a [`RetryReport`] extension (attempts, total wait, reason) unless it succeeded
//! at its first attempt with no wait ([`RetryReport::of`] reads it either way). When
//! retries are exhausted, the last response is returned unchanged (apart from that
//! extension). An error of the inner service (a transport failure) is returned as is
//! once its retries are used up. A wait before an attempt (cooldown, pacing) that would
//! end after the request's [`Deadline`] fails at once with
//! [`WaitTooLong`](ratelayer_core::WaitTooLong). A `WaitTooLong` from an inner layer (a
//! TPM or concurrency layer declining a wait longer than its maximum) is final: it is
//! returned at once, never retried, so a fallback layer outside can go elsewhere.
//!
//! # Waiting before every attempt (the first included)
//!
//! - **Cooldown.** A rate-limit wait is published as the scope's cooldown (and
//!   `ratelayer-tier` publishes the server's delay), so after the first 429 every queued
//!   request waits for it instead of collecting its own 429.
//! - **Pacing** (on by default) from what the tier layer learned: until a scope's first
//!   response, one request goes alone (a probe, unless turned off with
//!   [`probe`](BackoffRetryLayerBuilder::probe)) and the others wait for it; when the last
//!   snapshot says no requests remain, wait for its reset; with a learned limit `L` per
//!   window `W`, at most `L` attempts start in any `W` (plus a 0.5 s margin). On the free
//!   tier (3 RPM) ten concurrent requests then finish in the minimum time, 3 a minute,
//!   without collecting 429s. Token budgets are `ratelayer-tpm`'s business.
//!
//! # Tower contract
//!
//! The readied inner service moves into the response future; before any wait it is
//! swapped for a fresh clone, so nothing (readiness, permit, queue slot) is held while
//! sleeping. Each later attempt drives the clone's readiness again. A request whose body
//! cannot be replayed ([`ReplayableBody`](ratelayer_core::ReplayableBody)) is sent once
//! and its response returned as is, with a warning.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use http::{Request, Response};
//! use ratelayer_core::{LimitState, ReplayBody};
//! use ratelayer_retry::{BackoffRetryLayer, RetryReport};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let c = calls.clone();
//! let inner = service_fn(move |_req: Request<ReplayBody>| {
//!     let n = c.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let status = if n == 0 { 429 } else { 200 };
//!         let resp = Response::builder().status(status).header("retry-after", "7").body(String::new()).unwrap();
//!         Ok::<_, Infallible>(resp)
//!     }
//! });
//! let svc = BackoffRetryLayer::new(LimitState::new()).layer(inner);
//! let start = tokio::time::Instant::now();
//! let resp = svc.oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap();
//! assert_eq!(resp.status(), 200);
//! assert_eq!(start.elapsed().as_secs(), 7);
//! let report = resp.extensions().get::<RetryReport>().unwrap();
//! assert_eq!((report.attempts, report.total_wait.as_secs()), (2, 7));
//! # }
//! ```
//!
//! [`DefaultClassifier`]: ratelayer_core::DefaultClassifier
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod budget;
mod future;
mod gate;
mod layer;
mod policy;
mod service;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::{BackoffRetryLayer, BackoffRetryLayerBuilder};
pub use policy::{Backoff, Deadline, Jitter, OverCap, RetryReport, StopReason};
pub use service::BackoffRetry;
