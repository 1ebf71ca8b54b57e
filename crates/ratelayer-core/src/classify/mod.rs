//! Response classification: what a response or an error means for rate limiting.
//!
//! [`DefaultClassifier`] knows the conventions of the common providers (status codes,
//! error types and messages in their bodies); implement [`Classifier`] to teach ratelayer
//! another provider's.
//!
//! ```
//! use std::time::SystemTime;
//! use http::{HeaderMap, StatusCode};
//! use ratelayer_core::classify::{Classification, Classifier, DefaultClassifier};
//! use ratelayer_core::headers;
//!
//! let body = br#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
//! let status = StatusCode::TOO_MANY_REQUESTS;
//! let headers = HeaderMap::new();
//! let snapshot = headers::parse(status, &headers, Some(body), SystemTime::now(), None);
//! let c = DefaultClassifier::new().classify_response(status, &headers, Some(body), &snapshot);
//! assert_eq!(c, Classification::QuotaExhausted { retry_after: None });
//! assert!(!c.is_retryable());
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::headers::{Dimension, RateLimitSnapshot};

/// What a response (or a transport error) means for rate limiting and retrying.
///
/// ```
/// use ratelayer_core::{Classification, Dimension};
/// let c = Classification::RateLimited { dimension: Some(Dimension::Tokens), retry_after: None };
/// assert_eq!(c.as_str(), "rate_limited");
/// ```
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
    ///
    /// ```
    /// use ratelayer_core::Classification;
    /// assert_eq!(Classification::ContextOverflow.as_str(), "context_overflow");
    /// ```
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

    /// Whether a retry of the same request to the same provider can succeed: rate limited,
    /// overloaded and transient failures can; success, quota exhaustion, context overflow
    /// and fatal failures cannot.
    ///
    /// ```
    /// use ratelayer_core::Classification;
    /// assert!(Classification::Transient { retry_after: None }.is_retryable());
    /// assert!(!Classification::ContextOverflow.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Classification::RateLimited { .. }
                | Classification::Overloaded { .. }
                | Classification::Transient { .. }
        )
    }

    /// The delay the server asked for, if any.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::Classification;
    /// let c = Classification::Overloaded { retry_after: Some(Duration::from_secs(5)) };
    /// assert_eq!(c.retry_after(), Some(Duration::from_secs(5)));
    /// assert_eq!(Classification::Fatal.retry_after(), None);
    /// ```
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
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use ratelayer_core::classify::{Classification, Classifier, DefaultClassifier};
/// use ratelayer_core::RateLimitSnapshot;
///
/// /// A gateway that answers 503 while it rotates credentials: retry it.
/// struct MyGateway(DefaultClassifier);
///
/// impl Classifier for MyGateway {
///     fn classify_response(
///         &self,
///         status: StatusCode,
///         headers: &HeaderMap,
///         body: Option<&[u8]>,
///         snapshot: &RateLimitSnapshot,
///     ) -> Classification {
///         if status == StatusCode::FORBIDDEN && headers.contains_key("x-rotating") {
///             return Classification::Transient { retry_after: None };
///         }
///         self.0.classify_response(status, headers, body, snapshot)
///     }
///
///     fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> Classification {
///         self.0.classify_error(error)
///     }
/// }
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-rotating", "1".parse().unwrap());
/// let c = MyGateway(DefaultClassifier::new()).classify_response(
///     StatusCode::FORBIDDEN, &headers, None, &RateLimitSnapshot::default());
/// assert!(c.is_retryable());
/// ```
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

/// A shared classifier is a classifier, so layers can hold `Arc<dyn Classifier>`.
///
/// ```
/// use std::sync::Arc;
/// use http::StatusCode;
/// use ratelayer_core::classify::{Classifier, DefaultClassifier};
/// let shared: Arc<dyn Classifier> = Arc::new(DefaultClassifier::new());
/// assert!(shared.wants_body(StatusCode::TOO_MANY_REQUESTS));
/// ```
impl<C: Classifier + ?Sized> Classifier for Arc<C> {
    fn classify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Option<&[u8]>,
        snapshot: &RateLimitSnapshot,
    ) -> Classification {
        (**self).classify_response(status, headers, body, snapshot)
    }

    fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> Classification {
        (**self).classify_error(error)
    }

    fn wants_body(&self, status: StatusCode) -> bool {
        (**self).wants_body(status)
    }
}

/// The classifier that knows the common providers' conventions.
///
/// Responses, in this order (the body is read case-insensitively, at most its first
/// 64 KiB):
///
/// 1. 1xx–3xx: [`Success`](Classification::Success).
/// 2. A 4xx whose body says the prompt does not fit (`context_length_exceeded`, "maximum
///    context length", "prompt is too long", "request too large", …), or any 413:
///    [`ContextOverflow`](Classification::ContextOverflow).
/// 3. 402, or a body that says the quota or spend is exhausted (OpenAI
///    `insufficient_quota`, `billing_hard_limit_reached`; Anthropic "credit balance is too
///    low", "reached your specified API usage limits"; spend limits; OpenRouter
///    "insufficient credits"): [`QuotaExhausted`](Classification::QuotaExhausted).
/// 4. 529, or a 5xx whose body says "overloaded" (Anthropic's `overloaded_error`,
///    OpenAI's and Gemini's 503s): [`Overloaded`](Classification::Overloaded).
/// 5. A 4xx whose body mentions a rate limit ("rate limit", "ratelimit", "quota",
///    "too many requests", "resource_exhausted", "concurrency"), or else a 429 whose body
///    does not say "overloaded" (which is [`Overloaded`](Classification::Overloaded)):
///    [`RateLimited`](Classification::RateLimited), with the exhausted dimension (from the
///    headers, else the body's wording) and the server's delay (the requested delay,
///    else the exhausted dimension's reset). A delay above the
///    [quota threshold](DefaultClassifier::quota_threshold) makes it
///    [`QuotaExhausted`](Classification::QuotaExhausted) instead.
/// 6. 408, and 5xx other than 501 and 505: [`Transient`](Classification::Transient).
/// 7. Anything else: [`Fatal`](Classification::Fatal).
///
/// `x-should-retry: false` turns a transient result fatal, and `x-should-retry: true` a
/// fatal one transient (as OpenAI's SDKs do).
///
/// Errors: see [`classify_error`](DefaultClassifier::classify_error).
///
/// ```
/// use std::time::Duration;
/// use http::{HeaderMap, StatusCode};
/// use ratelayer_core::classify::{Classification, Classifier, DefaultClassifier};
/// use ratelayer_core::RateLimitSnapshot;
///
/// let c = DefaultClassifier::new().quota_threshold(Duration::from_secs(600));
/// let mut snapshot = RateLimitSnapshot::default();
/// snapshot.retry_after = Some(Duration::from_secs(3600));
/// let got = c.classify_response(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), None, &snapshot);
/// assert_eq!(got, Classification::QuotaExhausted { retry_after: Some(Duration::from_secs(3600)) });
/// ```
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
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use http::{HeaderMap, StatusCode};
    /// use ratelayer_core::{Classification, Classifier, DefaultClassifier, RateLimitSnapshot};
    /// let mut snapshot = RateLimitSnapshot::default();
    /// snapshot.retry_after = Some(Duration::from_secs(3600)); // at the threshold: transient
    /// let got = DefaultClassifier::new().classify_response(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), None, &snapshot);
    /// assert_eq!(got, Classification::RateLimited { dimension: None, retry_after: snapshot.retry_after });
    /// snapshot.retry_after = Some(Duration::from_secs(3601)); // above: quota exhausted
    /// let got = DefaultClassifier::new().classify_response(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), None, &snapshot);
    /// assert_eq!(got, Classification::QuotaExhausted { retry_after: snapshot.retry_after });
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// A requested delay above this is read as quota exhaustion, not a transient limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use http::{HeaderMap, StatusCode};
    /// use ratelayer_core::{Classification, Classifier, DefaultClassifier, RateLimitSnapshot};
    /// let mut snapshot = RateLimitSnapshot::default();
    /// snapshot.retry_after = Some(Duration::from_secs(20 * 60));
    /// let classify = |c: &DefaultClassifier| {
    ///     c.classify_response(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), None, &snapshot).as_str()
    /// };
    /// assert_eq!(classify(&DefaultClassifier::new()), "rate_limited"); // 20 min <= 1 h
    /// let c = DefaultClassifier::new().quota_threshold(Duration::from_secs(15 * 60));
    /// assert_eq!(classify(&c), "quota_exhausted"); // 20 min > 15 min
    /// ```
    pub fn quota_threshold(mut self, threshold: Duration) -> Self {
        self.quota_threshold = threshold;
        self
    }
}

/// At most this much of a body is read.
const MAX_BODY_SCAN: usize = 64 * 1024;

const CONTEXT_OVERFLOW: &[&str] = &[
    "context_length_exceeded",
    "maximum context length",
    "context length exceeded",
    "prompt is too long",
    "input is too long",
    "request too large",
    "request_too_large",
    "exceeds the context window",
    "exceeds the maximum number of tokens",
    "too many input tokens",
];

const QUOTA_EXHAUSTED: &[&str] = &[
    "insufficient_quota",
    "billing_hard_limit",
    "billing hard limit",
    "credit balance is too low",
    "insufficient credits",
    "insufficient_credits",
    "spend limit",
    "spending limit",
    "specified api usage limits",
    "out of credits",
];

/// Also matches Anthropic's `overloaded_error` and Moonshot's `engine_overloaded_error`.
const OVERLOADED: &[&str] = &["overloaded"];

const RATE_LIMITED: &[&str] = &[
    "rate limit",
    "ratelimit",
    "rate_limit",
    "rate-limit",
    "quota",
    "too many requests",
    "too_many_requests",
    "resource_exhausted",
    "concurrency",
];

/// The first [`MAX_BODY_SCAN`] bytes of a body, lower-cased (ASCII).
fn scan_text(body: Option<&[u8]>) -> String {
    let body = body.unwrap_or_default();
    let body = &body[..body.len().min(MAX_BODY_SCAN)];
    String::from_utf8_lossy(body).to_ascii_lowercase()
}

fn mentions(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| text.contains(n))
}

/// The dimension an error message names ("tokens per min (TPM)", "input tokens per
/// minute", "requests per day"), if it names one.
fn dimension_in(text: &str) -> Option<Dimension> {
    if text.contains("input tokens") || text.contains("input_tokens") {
        Some(Dimension::InputTokens)
    } else if text.contains("output tokens") || text.contains("output_tokens") {
        Some(Dimension::OutputTokens)
    } else if text.contains("tokens per")
        || text.contains("(tpm)")
        || text.contains("(tpd)")
        || text.contains("token rate limit")
        || text.contains("\"type\":\"tokens\"")
    {
        Some(Dimension::Tokens)
    } else if text.contains("requests per")
        || text.contains("(rpm)")
        || text.contains("(rpd)")
        || text.contains("\"type\":\"requests\"")
    {
        Some(Dimension::Requests)
    } else {
        None
    }
}

impl DefaultClassifier {
    fn rate_limited(&self, text: &str, snapshot: &RateLimitSnapshot) -> Classification {
        let exhausted = snapshot.exhausted();
        let dimension = exhausted.map(|(d, _)| d).or_else(|| dimension_in(text));
        let retry_after = snapshot
            .retry_after
            .or_else(|| exhausted.and_then(|(_, reset)| reset));
        if retry_after.is_some_and(|d| d > self.quota_threshold) {
            return Classification::QuotaExhausted { retry_after };
        }
        Classification::RateLimited {
            dimension,
            retry_after,
        }
    }
}

impl Classifier for DefaultClassifier {
    fn classify_response(
        &self,
        status: StatusCode,
        _headers: &HeaderMap,
        body: Option<&[u8]>,
        snapshot: &RateLimitSnapshot,
    ) -> Classification {
        let code = status.as_u16();
        if code < 400 {
            return Classification::Success;
        }
        let text = scan_text(body);
        let retry_after = snapshot.retry_after;
        let client_error = (400..500).contains(&code);
        let c = if code == 413 || (client_error && mentions(&text, CONTEXT_OVERFLOW)) {
            Classification::ContextOverflow
        } else if code == 402 || mentions(&text, QUOTA_EXHAUSTED) {
            Classification::QuotaExhausted { retry_after }
        } else if code == 529 || (code >= 500 && mentions(&text, OVERLOADED)) {
            Classification::Overloaded { retry_after }
        } else if client_error && mentions(&text, RATE_LIMITED) {
            // Before "overloaded": Moonshot reports its per-account concurrency limit as
            // an `engine_overloaded_error`.
            self.rate_limited(&text, snapshot)
        } else if client_error && mentions(&text, OVERLOADED) {
            Classification::Overloaded { retry_after }
        } else if code == 429 {
            self.rate_limited(&text, snapshot)
        } else if code == 408 || (code >= 500 && code != 501 && code != 505) {
            Classification::Transient { retry_after }
        } else {
            Classification::Fatal
        };
        let c = match (c, snapshot.should_retry) {
            (Classification::Transient { .. }, Some(false)) => Classification::Fatal,
            (Classification::Fatal, Some(true)) => Classification::Transient { retry_after },
            (c, _) => c,
        };
        tracing::debug!(
            status = code,
            classification = c.as_str(),
            retry_after_ms = c.retry_after().map(|d| d.as_millis() as u64),
            "classified response"
        );
        c
    }

    /// Walks the error and its [`source`](std::error::Error::source) chain (at most 32
    /// deep) and classifies by the first link it recognizes:
    ///
    /// - ratelayer's own errors: [`NeverFits`](crate::error::NeverFits) is
    ///   [`ContextOverflow`](Classification::ContextOverflow) (the request can never fit
    ///   this provider), [`WaitTooLong`](crate::error::WaitTooLong) is
    ///   [`RateLimited`](Classification::RateLimited) with the wait,
    ///   [`QueueFull`](crate::error::QueueFull) is
    ///   [`Overloaded`](Classification::Overloaded), a
    ///   [`ConfigError`](crate::error::ConfigError) is [`Fatal`](Classification::Fatal);
    /// - `std::io::Error`: [`Transient`](Classification::Transient), except the kinds
    ///   `InvalidInput`, `InvalidData`, `PermissionDenied` and `Unsupported`, which are
    ///   fatal;
    /// - `tokio::time::error::Elapsed`, tower's timeout `Elapsed` ("request timed out"),
    ///   hyper and hyper-util connection errors (recognized by message: "connect",
    ///   "connection", "timed out", "timeout", "broken pipe", "reset by peer",
    ///   "dns error", "unexpected eof", "canceled"): transient.
    ///
    /// An error nothing in the chain explains is [`Fatal`](Classification::Fatal): an
    /// LLM request costs money and may not be idempotent, so it is retried only when the
    /// failure is known to be a transport one. Wrap such errors in a `std::io::Error`, or
    /// supply your own [`Classifier`], to have them retried.
    ///
    /// ```
    /// use ratelayer_core::classify::{Classification, Classifier, DefaultClassifier};
    /// let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    /// let c = DefaultClassifier::new().classify_error(&reset);
    /// assert_eq!(c, Classification::Transient { retry_after: None });
    /// ```
    fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> Classification {
        let c = classify_error_chain(error);
        tracing::debug!(classification = c.as_str(), "classified error");
        c
    }
}

fn classify_error_chain(error: &(dyn std::error::Error + 'static)) -> Classification {
    use crate::error::{AllProvidersFailed, ConfigError, NeverFits, QueueFull, WaitTooLong};
    use std::io::ErrorKind;

    let transient = Classification::Transient { retry_after: None };
    let mut link: Option<&(dyn std::error::Error + 'static)> = Some(error);
    for _ in 0..32 {
        let Some(e) = link else { break };
        if e.is::<NeverFits>() {
            return Classification::ContextOverflow;
        }
        if let Some(w) = e.downcast_ref::<WaitTooLong>() {
            return Classification::RateLimited {
                dimension: None,
                retry_after: Some(w.wait),
            };
        }
        if e.is::<QueueFull>() {
            return Classification::Overloaded { retry_after: None };
        }
        if e.is::<ConfigError>() || e.is::<AllProvidersFailed>() {
            return Classification::Fatal;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                ErrorKind::InvalidInput
                | ErrorKind::InvalidData
                | ErrorKind::PermissionDenied
                | ErrorKind::Unsupported => Classification::Fatal,
                _ => transient,
            };
        }
        if e.is::<tokio::time::error::Elapsed>() {
            return transient;
        }
        let message = e.to_string().to_ascii_lowercase();
        const TRANSPORT: &[&str] = &[
            "timed out",
            "timeout",
            "connect",
            "connection",
            "broken pipe",
            "reset by peer",
            "dns error",
            "unexpected eof",
            "canceled",
            "cancelled",
            "channel closed",
            "incomplete message",
            "refused stream",
            "go away",
            "goaway",
        ];
        if mentions(&message, TRANSPORT) {
            return transient;
        }
        link = e.source();
    }
    Classification::Fatal
}

#[cfg(test)]
mod tests;
