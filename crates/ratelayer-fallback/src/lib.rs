//! FallbackLayer: a chain of LLM providers that waits first and falls back second.
//!
//! A [`Fallback`] holds an ordered chain of [`Provider`]s, each its own service (usually
//! its own stack of ratelayer layers), with a name, a priority, a context window and
//! request rewrites (model, path, credential headers) so one logical request can go to
//! OpenAI, Anthropic or Kimi in their own shapes. For each request:
//!
//! 1. **Wait first.** Before a provider is tried, a [`WaitEstimator`] says how long it
//!    would make the request wait now (by default [`EngineWait`]: the shared
//!    [`LimitState`](ratelayer_core::LimitState)'s cooldowns, token budgets and
//!    reservoirs, without side effects; pair it with a TPM layer's `wait_time`, which
//!    also sees the requests queued in that layer, as `(EngineWait, closure)`). If that
//!    fits the request's wait budget
//!    ([`FallbackBuilder::wait_budget`], a per-request [`WaitBudget`], and its
//!    [`Deadline`]), the request goes there and the provider's stack waits; otherwise the
//!    next provider is tried.
//! 2. **Fall back second**, by the outcome, classified by a
//!    [`Classifier`](ratelayer_core::Classifier) from the status, headers and the first
//!    bytes of an error response's body (read up to
//!    [`max_error_body`](FallbackBuilder::max_error_body) and kept in the returned
//!    [`ResponseBody`]):
//!    - rate limited: waited out on the same provider up to
//!      [`rate_limit_retries`](FallbackBuilder::rate_limit_retries) times when the delay
//!      fits the budget, then the next provider; a `WaitTooLong` error from the stack goes
//!      to the next provider at once;
//!    - an unexpected failure (5xx, overloaded, transport error) is retried once on the
//!      same provider; a second one falls back;
//!    - quota exhausted: the provider is skipped until its reset (or for
//!      [`quota_skip`](FallbackBuilder::quota_skip));
//!    - context overflow: straight to the first later provider whose context window fits
//!      the request's token estimate (`NeverFits` from a stack: the next provider);
//!    - fatal (bad credentials, bad request): returned, or the next provider
//!      ([`OnFatal`]).
//! 3. A [circuit breaker](BreakerConfig) per provider skips a dead provider without a
//!    wait, and lets one probe through after its cool-down.
//! 4. A [`PreferredProvider`] extension sends the request to that provider only.
//!
//! When every provider failed, the error is
//! [`AllProvidersFailed`](ratelayer_core::error::AllProvidersFailed), listing each
//! attempt with its provider and reason. Every fallback is a `fallback` tracing event
//! (target `ratelayer::fallback`, fields `from`, `to`, `reason`) and is counted in the
//! [`FallbackStats`] handle.
//!
//! Bodies are replayed, not re-read: use a [`ReplayableBody`](ratelayer_core::ReplayableBody)
//! such as [`ReplayBody`](ratelayer_core::ReplayBody). A body that cannot be replayed is
//! sent once, to the first provider chosen.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, StatusCode};
//! use ratelayer_core::{LimitState, ReplayBody};
//! use ratelayer_fallback::{Fallback, FallbackReason, ProviderSpec};
//! use ratelayer_mock::MockProvider;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let primary = MockProvider::builder().rpm(1).build().unwrap();
//! let backup = MockProvider::builder().build().unwrap();
//! let fallback = Fallback::builder()
//!     .provider(ProviderSpec::new("openai").service(primary.clone()))
//!     .provider(ProviderSpec::new("kimi").model("kimi-k2").service(backup.clone()))
//!     .limit_state(LimitState::new())
//!     .wait_budget(Duration::from_secs(5))
//!     .build()
//!     .unwrap();
//! let request = || {
//!     Request::post("http://127.0.0.1/v1/chat/completions")
//!         .header("authorization", "Bearer sk-test")
//!         .body(ReplayBody::from(r#"{"model":"gpt-4o","max_tokens":10,"messages":[]}"#))
//!         .unwrap()
//! };
//! for _ in 0..2 {
//!     let resp = fallback.clone().oneshot(request()).await.unwrap();
//!     assert_eq!(resp.status(), StatusCode::OK);
//! }
//! // The second request met a 429 asking for about a minute: longer than the budget.
//! let stats = fallback.stats().snapshot();
//! assert_eq!(stats.provider("kimi").unwrap().successes, 1);
//! assert_eq!(stats.fallbacks[&FallbackReason::RateLimited], 1);
//! assert_eq!(backup.journal().entries()[0].model, "kimi-k2");
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod breaker;
mod future;
mod layer;
mod provider;
mod service;
mod stats;
mod wait;

pub use body::ResponseBody;
pub use breaker::{BreakerConfig, CircuitState};
pub use future::ResponseFuture;
pub use layer::{FallbackBuilder, FallbackLayer, OnFatal};
pub use provider::{Provider, ProviderSpec, Rewrite};
pub use service::Fallback;
pub use stats::{FallbackReason, FallbackStats, ProviderStats, StatsSnapshot};
pub use wait::{Deadline, EngineWait, PreferredProvider, WaitBudget, WaitEstimator};
