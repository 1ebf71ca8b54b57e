//! Request metadata: provider, credential, model and token estimate, computed once per
//! logical request and cached in the request's extensions.

use std::sync::Arc;

use http::Request;

use crate::body::ReplayableBody;
use crate::scope::Scope;

/// How a [`RequestMeta`]'s token estimate was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EstimateSource {
    /// Set by the caller.
    Explicit,
    /// Read from a recognized JSON request body.
    Body,
    /// The body could not be read or recognized: a conservative default.
    Conservative,
}

/// What the layers need to know about a request: who it goes to and how many tokens it
/// may cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    /// The provider's name, such as `openai`.
    pub provider: Arc<str>,
    /// A fingerprint of the credential (never the key itself).
    pub credential: Option<Arc<str>>,
    /// The model, if known.
    pub model: Option<Arc<str>>,
    /// Estimated input (prompt) tokens.
    pub input_tokens: u64,
    /// Output allowance: `max_tokens` (or its dialect's name) times `n`.
    pub output_tokens: u64,
    /// How the estimate was obtained.
    pub source: EstimateSource,
}

impl RequestMeta {
    /// Input estimate plus output allowance.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// The scope of this request: provider, credential and model.
    pub fn scope(&self) -> Scope {
        let mut s = Scope::new(self.provider.clone());
        if let Some(c) = &self.credential {
            s = s.with_credential(c.clone());
        }
        if let Some(m) = &self.model {
            s = s.with_model(m.clone());
        }
        s
    }
}

/// The metadata cached in `req`, if any.
pub fn get<B>(req: &Request<B>) -> Option<&RequestMeta> {
    req.extensions().get::<RequestMeta>()
}

/// Sets `req`'s metadata explicitly (for bodies the layers cannot read).
pub fn set<B>(req: &mut Request<B>, meta: RequestMeta) {
    req.extensions_mut().insert(meta);
}

/// The metadata of `req`: the cached value, or a new estimate cached for later layers and
/// attempts.
pub fn ensure<B: ReplayableBody>(req: &mut Request<B>) -> &RequestMeta {
    if req.extensions().get::<RequestMeta>().is_none() {
        let meta = RequestMeta {
            provider: Arc::from("default"),
            credential: None,
            model: None,
            input_tokens: 0,
            output_tokens: 0,
            source: EstimateSource::Conservative,
        };
        req.extensions_mut().insert(meta);
    }
    match req.extensions().get::<RequestMeta>() {
        Some(m) => m,
        None => unreachable!("inserted above"),
    }
}
