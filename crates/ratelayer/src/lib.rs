//! Tower middleware that keeps LLM API clients inside their providers' rate limits, and
//! makes the most of them.
//!
//! This facade re-exports the ratelayer crates, one feature each (all on by default):
//!
//! | feature | module | what it does |
//! |---|---|---|
//! | (always) | [`core`] | header dialects, classification, metadata, limiter engine, shared state, errors |
//! | `tier` | `tier` | `TierDetectLayer`: learns the account tier and limits from headers |
//! | `retry` | `retry` | `BackoffRetryLayer`: tier-aware backoff honouring `Retry-After` |
//! | `tpm` | `tpm` | `TpmLimitLayer`: tokens-per-minute admission with exact waits |
//! | `concurrency` | `concurrency` | `ConcurrencyLayer`: concurrency, reservoir pacing, fair queue |
//! | `fallback` | `fallback` | `FallbackLayer`: a provider chain, wait first, fall back second |
//! | `config` | `config` | a TOML configuration that builds the same stacks as the presets |
//! | `mock` (off) | `mock` | ratelayer-mock, an honest mock provider for your tests |
//!
//! Credential headers are marked sensitive with tower-http: see
//! [`sensitive_credentials`].
//!
//! # Presets and chains
//!
//! [`Preset`] builds one provider's stack in the recommended order (retry, tier
//! detection, TPM admission, concurrency, around your client); [`Chain`] puts a
//! fallback over several, waiting first and falling back second:
//!
//! ```
//! use std::time::Duration;
//! use ratelayer::{Chain, Preset, ProviderLimits};
//! # use std::convert::Infallible;
//! # use http::{Request, Response};
//! # use ratelayer::core::ReplayBody;
//! # use tower::ServiceExt;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ratelayer::BoxError> {
//! # let client = tower::service_fn(|_req: Request<ReplayBody>| async {
//! #     Ok::<_, Infallible>(Response::new(String::new()))
//! # });
//! let (stack, stats) = Chain::new()
//!     .provider(Preset::openai().api_key_from_env()) // OPENAI_API_KEY
//!     .provider(
//!         Preset::moonshot() // MOONSHOT_API_KEY or KIMI_API_KEY
//!             .api_key_from_env()
//!             .model("kimi-k2-0905-preview")
//!             .limits(ProviderLimits::default().rpm(4).max_concurrent(1)),
//!     )
//!     .wait_budget(Duration::from_secs(30)) // wait up to 30 s, then fall back
//!     .build(client)?; // any tower::Service<http::Request<B>>
//!
//! let req = Request::post("/v1/chat/completions")
//!     .body(ReplayBody::from(r#"{"model":"gpt-4o-mini","max_tokens":8,"messages":[]}"#))?;
//! let resp = stack.oneshot(req).await?;
//! assert_eq!(resp.status(), 200);
//! assert_eq!(stats.snapshot().successes, 1);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "concurrency")]
pub use ratelayer_concurrency as concurrency;
pub use ratelayer_core as core;
#[cfg(feature = "fallback")]
pub use ratelayer_fallback as fallback;
#[cfg(feature = "mock")]
pub use ratelayer_mock as mock;
#[cfg(feature = "retry")]
pub use ratelayer_retry as retry;
#[cfg(feature = "tier")]
pub use ratelayer_tier as tier;
#[cfg(feature = "tpm")]
pub use ratelayer_tpm as tpm;

pub use ratelayer_core::{BoxError, ConfigError, LimitState, RequestMeta, Scope};

mod builder;
#[cfg(feature = "config")]
pub mod config;
mod limits;
#[cfg(all(
    feature = "tier",
    feature = "retry",
    feature = "tpm",
    feature = "concurrency"
))]
mod preset;
mod provider;
mod sensitive;
mod target;

pub use builder::ServiceBuilderExt;
pub use limits::ProviderLimits;
#[cfg(all(
    feature = "fallback",
    feature = "tier",
    feature = "retry",
    feature = "tpm",
    feature = "concurrency"
))]
pub use preset::{Chain, ChainService, DEFAULT_WAIT_BUDGET};
#[cfg(all(
    feature = "tier",
    feature = "retry",
    feature = "tpm",
    feature = "concurrency"
))]
pub use preset::{DEFAULT_MAX_WAIT, Preset, ProviderLayer, ProviderService};
pub use provider::Provider;
pub use sensitive::{CREDENTIAL_HEADERS, sensitive_credentials};
pub use target::{Target, TargetLayer};
