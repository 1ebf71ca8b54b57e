//! Tokens-per-minute admission for LLM API clients.
//!
//! [`TpmLimitLayer`] keeps a client inside its providers' token budgets (tokens per
//! minute, and input and output tokens per minute where a provider limits them apart):
//!
//! - **Before each attempt** it reserves the request's estimated tokens (input estimate
//!   plus output allowance, from [`ratelayer_core::meta`], corrected by the
//!   [calibration](Calibration)) in every budget of the request's scope (provider,
//!   credential, model), all or nothing. If they fit, the request is sent at once.
//!   Otherwise it joins the scope's FIFO queue and waits exactly until they fit (a sliding
//!   window matching the providers' accounting), with a tracing event naming the model,
//!   the limit, what is used, the request's size and the wait. A request behind the head
//!   (arriving, or queued when a finished request gives tokens back) goes ahead only if
//!   it fits now and the head still fits as early as it would alone (backfilling: the
//!   head is never delayed, so a large request is never starved by small ones, and budget
//!   the head cannot use yet is not left idle). Tokens are booked when the request is
//!   sent, so a refund from a finished request serves the next one at once (the head of
//!   the queue wakes for it). The inner service is driven ready only after
//!   the wait: no permit or readiness is held while sleeping.
//! - A request that would wait longer than [`TpmConfig::max_wait`] fails at once with
//!   [`WaitTooLong`](ratelayer_core::WaitTooLong), changing nothing (a fallback layer
//!   goes elsewhere); a request larger than a budget can ever hold fails at once with
//!   [`NeverFits`](ratelayer_core::NeverFits), naming both numbers, and is never sent.
//! - **After the response** the reservation is reconciled with what the provider
//!   counted: the `usage` of a JSON body or the usage events of a stream, read by
//!   [`usage::UsageScanner`] as the body streams through (never buffered whole); without
//!   usage, the remaining-tokens headers correct the budget. The difference is debited or
//!   refunded. A rejected request (4xx, 429) is refunded; a stream cut short, a server
//!   error or a transport error keeps its estimate charged.
//! - Budgets are configured ([`TpmConfig`], serde) and tightened by the limits the
//!   provider's headers state (never loosened beyond the configuration); each budget is
//!   enforced with a small safety margin ([`config::DEFAULT_SAFETY_MARGIN`], 1 %).
//! - Token counting: core's conservative default estimator; with the `tiktoken` feature,
//!   `tiktoken::TiktokenEstimator` counts OpenAI models exactly, offline.
//! - Memory is constant per scope: a fixed ring per budget, one calibration factor, no
//!   per-request history.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response};
//! use ratelayer_core::{NeverFits, ReplayBody, RequestMeta, meta};
//! use ratelayer_tpm::{Budget, ModelLimits, TpmConfig, TpmLimitLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = TpmLimitLayer::new(
//!     TpmConfig::new()
//!         .budget(Budget::new("openai", ModelLimits::tpm(30_000)).model("gpt-4o"))
//!         .safety_margin(0.0),
//! )
//! .unwrap();
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|_req: Request<ReplayBody>| async {
//!     Ok::<_, Infallible>(Response::new(String::from("{}")))
//! }));
//!
//! let request = |tokens: u64| {
//!     let mut req = Request::post("https://api.openai.com/v1/chat/completions").body(ReplayBody::empty()).unwrap();
//!     meta::set(&mut req, RequestMeta::new("openai", tokens, 0).with_model("gpt-4o"));
//!     req
//! };
//!
//! svc.clone().oneshot(request(12_071)).await.unwrap();
//! let start = tokio::time::Instant::now();
//! svc.clone().oneshot(request(22_117)).await.unwrap(); // waits for the first to leave the window
//! assert_eq!(start.elapsed(), Duration::from_secs(60));
//!
//! let err = svc.clone().oneshot(request(40_666)).await.unwrap_err();
//! let never = err.downcast_ref::<NeverFits>().unwrap();
//! assert_eq!((never.requested, never.capacity), (40_666, 30_000));
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::float_cmp))]

mod body;
pub mod calibration;
mod charge;
pub mod config;
mod future;
mod layer;
mod service;
#[cfg(feature = "tiktoken")]
pub mod tiktoken;
pub mod usage;

pub use body::ResponseBody;
pub use calibration::Calibration;
pub use config::{Budget, CalibrationConfig, ModelLimits, TpmConfig};
pub use future::ResponseFuture;
pub use layer::TpmLimitLayer;
pub use service::TpmLimit;
