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
