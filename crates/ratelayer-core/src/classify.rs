//! Response classification: what a response or an error means for rate limiting.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::headers::{Dimension, RateLimitSnapshot};

/// What a response (or a transport error) means for rate limiting and retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// A successful response.
    Success,
    /// A transient rate limit (429): retry after a delay.
    RateLimited {
        /// The exhausted dimension, where the response said which.
        dimension: Option<Dimension>,
        /// The delay the server asked for.
        retry_after: Option<Duration>,
    },
    /// Quota or spend exhausted (OpenAI `insufficient_quota`, Anthropic spend limits, or a
    /// requested delay above the configured threshold): never retried like a transient 429.
    QuotaExhausted {
        /// When the quota resets, if the response said.
        retry_after: Option<Duration>,
    },
    /// The provider is overloaded (Anthropic 529, 503 overloaded): retried with backoff.
    Overloaded {
        /// The delay the server asked for.
        retry_after: Option<Duration>,
    },
    /// The prompt does not fit the model's context window: never retried on this model.
    ContextOverflow,
    /// A transient failure (5xx, 408, connection error, timeout): retried with a short
    /// backoff.
    Transient {
        /// The delay the server asked for.
        retry_after: Option<Duration>,
    },
    /// Any other failure (other 4xx, such as a bad request or bad credentials).
    Fatal,
}

impl Classification {
    /// A short name for logs and metrics: `success`, `rate_limited`, `quota_exhausted`,
    /// `overloaded`, `context_overflow`, `transient`, `fatal`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Classification::Success => "success",
            Classification::RateLimited { .. } => "rate_limited",
            Classification::QuotaExhausted { .. } => "quota_exhausted",
            Classification::Overloaded { .. } => "overloaded",
            Classification::ContextOverflow => "context_overflow",
            Classification::Transient { .. } => "transient",
            Classification::Fatal => "fatal",
        }
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match *self {
            Classification::RateLimited { retry_after, .. }
            | Classification::QuotaExhausted { retry_after }
            | Classification::Overloaded { retry_after }
            | Classification::Transient { retry_after } => retry_after,
            _ => None,
        }
    }
}

/// Decides what a response or error means. Implement it to teach ratelayer a provider's
/// own error conventions; [`DefaultClassifier`] knows the common ones.
pub trait Classifier: Send + Sync + 'static {
    /// Classifies a response from its status, headers, parsed rate-limit snapshot and,
    /// where the layer buffered it, its body (see [`Classifier::wants_body`]).
    fn classify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Option<&[u8]>,
        snapshot: &RateLimitSnapshot,
    ) -> Classification;

    /// Classifies an error returned by the inner service (connection errors, timeouts).
    fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> Classification;

    /// Whether a layer should buffer the body of a response with this status before
    /// classifying it. By default, every status of 400 and above.
    fn wants_body(&self, status: StatusCode) -> bool {
        status.as_u16() >= 400
    }
}

/// The classifier that knows the common providers' conventions.
#[derive(Debug, Clone)]
pub struct DefaultClassifier {
    quota_threshold: Duration,
}

impl Default for DefaultClassifier {
    fn default() -> Self {
        DefaultClassifier {
            quota_threshold: Duration::from_secs(3600),
        }
    }
}

impl DefaultClassifier {
    /// A classifier with the default quota threshold (one hour).
    pub fn new() -> Self {
        Self::default()
    }

    /// A requested delay above this is read as quota exhaustion, not a transient limit.
    pub fn quota_threshold(mut self, threshold: Duration) -> Self {
        self.quota_threshold = threshold;
        self
    }
}

impl Classifier for DefaultClassifier {
    fn classify_response(
        &self,
        status: StatusCode,
        _headers: &HeaderMap,
        _body: Option<&[u8]>,
        snapshot: &RateLimitSnapshot,
    ) -> Classification {
        let retry_after = snapshot.retry_after;
        match status.as_u16() {
            200..=399 => Classification::Success,
            429 => Classification::RateLimited {
                dimension: snapshot.exhausted().map(|(d, _)| d),
                retry_after,
            },
            529 => Classification::Overloaded { retry_after },
            408 | 500..=599 => Classification::Transient { retry_after },
            _ => Classification::Fatal,
        }
    }

    fn classify_error(&self, _error: &(dyn std::error::Error + 'static)) -> Classification {
        Classification::Transient { retry_after: None }
    }
}
