//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use http::Request;
use ratelayer_core::meta::{self, EstimateSource};
use ratelayer_core::{RequestMeta, Scope};

/// A request to `provider` (model `m`) whose body names it.
pub fn req(provider: &str, body: impl Into<String>) -> Request<String> {
    let mut r = Request::new(body.into());
    meta::set(
        &mut r,
        RequestMeta {
            provider: provider.into(),
            credential: None,
            model: Some("m".into()),
            input_tokens: 1,
            dense_input_tokens: 0,
            output_tokens: 1,
            source: EstimateSource::Explicit,
        },
    );
    r
}

/// The scope a provider's requests are counted under by default.
pub fn scope(provider: &str) -> Scope {
    Scope::new(provider)
}
