//! Request metadata: provider, credential, model and token estimate, computed once per
//! logical request and cached in the request's extensions.
//!
//! Every layer asks [`ensure`] (or [`ensure_with`] and its own [`TokenEstimator`]): the
//! first computes the metadata and caches it in the request's extensions, later layers and
//! attempts (which copy the extensions) read the cached value. A caller can [`set`] it
//! explicitly instead, for bodies the layers cannot read.
//!
//! ```
//! use http::Request;
//! use ratelayer_core::meta;
//!
//! let mut req = Request::post("https://api.openai.com/v1/chat/completions")
//!     .header("authorization", "Bearer sk-test")
//!     .body(String::from(
//!         r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"max_tokens":64}"#,
//!     ))
//!     .unwrap();
//! let m = meta::ensure(&mut req);
//! assert_eq!(&*m.provider, "openai");
//! assert_eq!(m.model.as_deref(), Some("gpt-4o-mini"));
//! assert_eq!(m.output_tokens, 64);
//! assert_eq!(m.credential.as_deref().map(str::len), Some(8)); // a fingerprint, not the key
//! assert!(meta::get(&req).is_some()); // cached
//! ```

use std::sync::Arc;

use http::{HeaderMap, HeaderName, Request, Uri};

use crate::body::ReplayableBody;
use crate::headers::Dialect;
use crate::scope::Scope;

mod estimate;
mod names;
mod scan;
#[cfg(test)]
mod tests;

pub use estimate::{DefaultEstimator, EstimateInput, TokenEstimate, TokenEstimator, estimate_json};

/// How a [`RequestMeta`]'s token estimate was obtained.
///
/// ```
/// use ratelayer_core::meta::EstimateSource;
/// assert_ne!(EstimateSource::Body, EstimateSource::Conservative);
/// ```
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
///
/// ```
/// use ratelayer_core::RequestMeta;
/// let m = RequestMeta::new("anthropic", 1_000, 512).with_model("claude-sonnet-4-5");
/// assert_eq!(m.total_tokens(), 1_512);
/// assert_eq!(m.scope().to_string(), "anthropic/claude-sonnet-4-5");
/// ```
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
    /// Of `input_tokens`, the part counted from text that is not ASCII (CJK and other
    /// dense scripts): calibration never shrinks it. At most `input_tokens`; 0 for
    /// explicit metadata ([`RequestMeta::new`]).
    ///
    /// ```
    /// use http::Request;
    /// use ratelayer_core::{meta, RequestMeta};
    /// let mut req = Request::post("https://api.moonshot.ai/v1/chat/completions")
    ///     .body(String::from(r#"{"model":"kimi-k2","messages":[{"role":"user","content":"请总结"}]}"#))
    ///     .unwrap();
    /// assert_eq!(meta::ensure(&mut req).dense_input_tokens, 3); // 9 bytes of CJK
    /// assert_eq!(RequestMeta::new("moonshot", 100, 10).dense_input_tokens, 0);
    /// ```
    pub dense_input_tokens: u64,
    /// Output allowance: `max_tokens` (or its dialect's name) times `n`.
    pub output_tokens: u64,
    /// How the estimate was obtained.
    pub source: EstimateSource,
}

impl RequestMeta {
    /// Metadata set explicitly: a provider and a token estimate
    /// ([`EstimateSource::Explicit`]), no credential, no model.
    ///
    /// ```
    /// use ratelayer_core::meta::{EstimateSource, RequestMeta};
    /// let m = RequestMeta::new("openai", 100, 50);
    /// assert_eq!(m.source, EstimateSource::Explicit);
    /// ```
    pub fn new(provider: impl Into<Arc<str>>, input_tokens: u64, output_tokens: u64) -> Self {
        RequestMeta {
            provider: provider.into(),
            credential: None,
            model: None,
            input_tokens,
            dense_input_tokens: 0,
            output_tokens,
            source: EstimateSource::Explicit,
        }
    }

    /// With a model.
    ///
    /// ```
    /// use ratelayer_core::RequestMeta;
    /// let m = RequestMeta::new("openai", 1, 1).with_model("gpt-4o");
    /// assert_eq!(m.model.as_deref(), Some("gpt-4o"));
    /// ```
    pub fn with_model(mut self, model: impl Into<Arc<str>>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// With a credential fingerprint (see [`fingerprint`]; never pass the key itself).
    ///
    /// ```
    /// use ratelayer_core::{meta, RequestMeta};
    /// let m = RequestMeta::new("openai", 1, 1).with_credential(meta::fingerprint(b"sk-test"));
    /// assert_eq!(m.credential.as_deref().map(str::len), Some(8));
    /// ```
    pub fn with_credential(mut self, fingerprint: impl Into<Arc<str>>) -> Self {
        self.credential = Some(fingerprint.into());
        self
    }

    /// Input estimate plus output allowance.
    ///
    /// ```
    /// use ratelayer_core::RequestMeta;
    /// assert_eq!(RequestMeta::new("openai", 10, 5).total_tokens(), 15);
    /// ```
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// The scope of this request: provider, credential and model.
    ///
    /// ```
    /// use ratelayer_core::RequestMeta;
    /// let m = RequestMeta::new("groq", 1, 1).with_model("llama-3.1-8b-instant");
    /// assert_eq!(m.scope().model(), Some("llama-3.1-8b-instant"));
    /// ```
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

    /// The header dialect of the provider, as a hint for [`headers::parse`](crate::headers::parse).
    ///
    /// ```
    /// use ratelayer_core::{Dialect, RequestMeta};
    /// assert_eq!(RequestMeta::new("groq", 1, 1).dialect(), Some(Dialect::Groq));
    /// assert_eq!(RequestMeta::new("127.0.0.1", 1, 1).dialect(), None);
    /// ```
    pub fn dialect(&self) -> Option<Dialect> {
        Dialect::for_provider(&self.provider)
    }
}

/// The provider of a request, set explicitly by a preset, a fallback layer or the caller:
/// it wins over the provider inferred from the URI (but not over a [`RequestMeta`] already
/// cached).
///
/// ```
/// use http::Request;
/// use ratelayer_core::meta::{self, ProviderName};
///
/// let mut req = Request::post("http://127.0.0.1:8080/v1/chat/completions").body(String::new()).unwrap();
/// req.extensions_mut().insert(ProviderName::new("openai"));
/// assert_eq!(&*meta::ensure(&mut req).provider, "openai");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderName(Arc<str>);

impl ProviderName {
    /// A provider name, such as `openai`.
    ///
    /// ```
    /// use ratelayer_core::meta::ProviderName;
    /// assert_eq!(ProviderName::new("groq").as_str(), "groq");
    /// ```
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        ProviderName(name.into())
    }

    /// The name.
    ///
    /// ```
    /// use ratelayer_core::meta::ProviderName;
    /// assert_eq!(ProviderName::new("mistral").as_str(), "mistral");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The metadata cached in `req`, if any.
///
/// ```
/// use http::Request;
/// use ratelayer_core::meta;
/// let req = Request::new(String::new());
/// assert!(meta::get(&req).is_none());
/// ```
pub fn get<B>(req: &Request<B>) -> Option<&RequestMeta> {
    req.extensions().get::<RequestMeta>()
}

/// Sets `req`'s metadata explicitly (for bodies the layers cannot read).
///
/// ```
/// use http::Request;
/// use ratelayer_core::{meta, RequestMeta};
/// let mut req = Request::new(String::from("not json"));
/// meta::set(&mut req, RequestMeta::new("openai", 5_000, 1_000));
/// assert_eq!(meta::ensure(&mut req).total_tokens(), 6_000);
/// ```
pub fn set<B>(req: &mut Request<B>, meta: RequestMeta) {
    req.extensions_mut().insert(meta);
}

/// The metadata of `req`: the cached value, or a new estimate by [`DefaultEstimator`]
/// cached for later layers and attempts.
///
/// ```
/// use http::Request;
/// use ratelayer_core::meta;
/// let mut req = Request::post("https://api.anthropic.com/v1/messages")
///     .body(String::from(r#"{"model":"claude-haiku-4-5","max_tokens":256,"messages":[{"role":"user","content":"Hi"}]}"#))
///     .unwrap();
/// let m = meta::ensure(&mut req);
/// assert_eq!((&*m.provider, m.output_tokens), ("anthropic", 256));
/// ```
pub fn ensure<B: ReplayableBody>(req: &mut Request<B>) -> &RequestMeta {
    ensure_with(req, &DefaultEstimator::new())
}

/// Like [`ensure`], with a chosen estimator (used only when nothing is cached yet).
///
/// ```
/// use http::Request;
/// use ratelayer_core::meta::{self, TokenEstimator};
///
/// struct Generous;
/// impl TokenEstimator for Generous {
///     fn count_text(&self, text: &str, _model: Option<&str>) -> u64 {
///         text.len() as u64
///     }
/// }
///
/// let mut req = Request::post("https://api.openai.com/v1/embeddings")
///     .body(String::from(r#"{"model":"text-embedding-3-small","input":"abcdef"}"#))
///     .unwrap();
/// // 6 characters + 4 for the one input item (embeddings have no reply priming).
/// assert_eq!(meta::ensure_with(&mut req, &Generous).input_tokens, 6 + 4);
/// ```
pub fn ensure_with<'r, B: ReplayableBody, E: TokenEstimator + ?Sized>(
    req: &'r mut Request<B>,
    estimator: &E,
) -> &'r RequestMeta {
    if req.extensions().get::<RequestMeta>().is_none() {
        let meta = compute(req, estimator);
        req.extensions_mut().insert(meta);
    }
    match req.extensions().get::<RequestMeta>() {
        Some(m) => m,
        None => unreachable!("inserted above"),
    }
}

/// The metadata of `req` computed afresh (ignoring and not touching any cached value).
///
/// ```
/// use http::Request;
/// use ratelayer_core::meta::{self, DefaultEstimator};
/// let req = Request::post("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent")
///     .header("x-goog-api-key", "AIza-test")
///     .body(String::from(r#"{"contents":[{"parts":[{"text":"Hi"}]}],"generationConfig":{"maxOutputTokens":100}}"#))
///     .unwrap();
/// let m = meta::compute(&req, &DefaultEstimator::new());
/// assert_eq!(&*m.provider, "gemini");
/// assert_eq!(m.model.as_deref(), Some("gemini-2.0-flash"));
/// assert_eq!(m.output_tokens, 100);
/// ```
pub fn compute<B: ReplayableBody, E: TokenEstimator + ?Sized>(
    req: &Request<B>,
    estimator: &E,
) -> RequestMeta {
    let body = req.body().bytes();
    let provider = match req.extensions().get::<ProviderName>() {
        Some(p) => p.0.clone(),
        None => provider_name_for_uri(req.uri()),
    };
    let path = req.uri().path();
    let path_model = model_in_path(path);
    // Only a body that is not in memory is estimated from its length.
    let content_length = match body {
        Some(_) => None,
        None => req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok()),
    };
    let input = EstimateInput::new(path, body)
        .content_length(content_length)
        .model(path_model);
    let (estimate, body_model) = estimator.estimate_and_model(&input);
    let model = body_model.or_else(|| path_model.and_then(|m| names::name(m.as_bytes())));
    let credential = credential(req.headers(), req.uri());
    tracing::debug!(
        provider = %provider,
        model = model.as_deref().unwrap_or("-"),
        credential = credential.as_deref().unwrap_or("-"),
        input_tokens = estimate.input_tokens,
        dense_input_tokens = estimate.dense_input_tokens,
        output_tokens = estimate.output_tokens,
        source = ?estimate.source,
        "estimated request"
    );
    // Built last, where it is returned (not built, logged, then copied there).
    RequestMeta {
        provider,
        credential,
        model,
        input_tokens: estimate.input_tokens,
        dense_input_tokens: estimate.dense_input_tokens,
        output_tokens: estimate.output_tokens,
        source: estimate.source,
    }
}

/// The provider a URI goes to: a well-known API host's provider name, else the host,
/// else `default`.
///
/// | Host | Provider |
/// |---|---|
/// | `api.openai.com` | `openai` |
/// | `*.openai.azure.com`, `*.cognitiveservices.azure.com` | `azure` |
/// | `api.anthropic.com` | `anthropic` |
/// | `api.groq.com` | `groq` |
/// | `generativelanguage.googleapis.com`, `*aiplatform.googleapis.com` | `gemini` |
/// | `api.moonshot.ai`, `api.moonshot.cn` | `moonshot` |
/// | `api.mistral.ai` | `mistral` |
/// | `openrouter.ai` | `openrouter` |
///
/// ```
/// use ratelayer_core::meta::provider_for_uri;
/// let uri = "https://my-resource.openai.azure.com/openai/deployments/gpt4o/chat/completions".parse().unwrap();
/// assert_eq!(provider_for_uri(&uri), "azure");
/// assert_eq!(provider_for_uri(&"http://127.0.0.1:8080/v1".parse().unwrap()), "127.0.0.1");
/// assert_eq!(provider_for_uri(&"/v1/chat/completions".parse().unwrap()), "default");
/// ```
pub fn provider_for_uri(uri: &Uri) -> String {
    match provider_of(uri) {
        Provider::Known(name) => name.to_owned(),
        Provider::Host(host) => host.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// [`provider_for_uri`] as a shared name.
fn provider_name_for_uri(uri: &Uri) -> Arc<str> {
    let shared = match provider_of(uri) {
        Provider::Known(name) => names::name(name.as_bytes()),
        Provider::Host(host) => {
            let host = host.trim_end_matches('.');
            if host.bytes().any(|b| b.is_ascii_uppercase()) {
                names::name(host.to_ascii_lowercase().as_bytes())
            } else {
                names::name(host.as_bytes())
            }
        }
    };
    // A `str` is always UTF-8: the fallback is never taken.
    shared.unwrap_or_else(|| Arc::from(provider_for_uri(uri)))
}

/// The provider a URI goes to, before the host is written in lower case.
enum Provider<'u> {
    /// A well-known API's provider, or `default` without a host.
    Known(&'static str),
    /// Any other host, as the URI writes it.
    Host(&'u str),
}

/// Well-known API hosts and their providers.
const KNOWN_HOSTS: [(&str, &str); 8] = [
    ("api.openai.com", "openai"),
    ("api.anthropic.com", "anthropic"),
    ("api.groq.com", "groq"),
    ("generativelanguage.googleapis.com", "gemini"),
    ("api.moonshot.ai", "moonshot"),
    ("api.moonshot.cn", "moonshot"),
    ("api.mistral.ai", "mistral"),
    ("openrouter.ai", "openrouter"),
];

/// Well-known API host suffixes and their providers.
const KNOWN_HOST_SUFFIXES: [(&str, &str); 3] = [
    (".openai.azure.com", "azure"),
    (".cognitiveservices.azure.com", "azure"),
    ("aiplatform.googleapis.com", "gemini"),
];

/// The provider of [`provider_for_uri`].
fn provider_of(uri: &Uri) -> Provider<'_> {
    let Some(host) = uri.host() else {
        return Provider::Known("default");
    };
    let h = host.trim_end_matches('.');
    let ends = |suffix: &str| {
        h.len() >= suffix.len()
            && h.as_bytes()[h.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    };
    let known = KNOWN_HOSTS
        .iter()
        .find(|(name, _)| h.eq_ignore_ascii_case(name))
        .or_else(|| KNOWN_HOST_SUFFIXES.iter().find(|(suffix, _)| ends(suffix)));
    match known {
        Some((_, provider)) => Provider::Known(provider),
        None => Provider::Host(host),
    }
}

/// The model a path names (`/models/{model}:…`, `/deployments/{model}/…`).
fn model_in_path(path: &str) -> Option<&str> {
    let b = path.as_bytes();
    // Most paths name no model: look only after a `/` that ends `models` or
    // `deployments` (as a whole segment).
    let after = (0..b.len()).filter(|i| b[*i] == b'/').find_map(|i| {
        let segment = &b[..i];
        let named = [&b"models"[..], b"deployments"].iter().any(|name| {
            segment.ends_with(name)
                && (segment.len() == name.len() || segment[segment.len() - name.len() - 1] == b'/')
        });
        named.then_some(i + 1)
    })?;
    let next = &b[after..];
    let next = &next[..next.iter().position(|c| *c == b'/').unwrap_or(next.len())];
    let name = &next[..next.iter().position(|c| *c == b':').unwrap_or(next.len())];
    if name.is_empty() || name.len() > scan::MAX_MODEL_LEN {
        return None;
    }
    std::str::from_utf8(name).ok()
}

/// A short, stable fingerprint of a credential: 8 lower-case hex digits of its 64-bit
/// FNV-1a hash (folded to 32 bits). It tells keys apart in scopes and logs without
/// revealing them, and is the same in every process and release.
///
/// ```
/// use ratelayer_core::meta::fingerprint;
/// assert_eq!(fingerprint(b"Bearer sk-test"), fingerprint(b"Bearer sk-test"));
/// assert_ne!(fingerprint(b"Bearer sk-test"), fingerprint(b"Bearer sk-tesu"));
/// assert_eq!(fingerprint(b"").len(), 8);
/// ```
pub fn fingerprint(secret: &[u8]) -> String {
    hex_str(&fingerprint_hex(secret)).to_owned()
}

/// Eight ASCII hex digits as text (always UTF-8).
fn hex_str(hex: &[u8; 8]) -> &str {
    std::str::from_utf8(hex).unwrap_or("00000000")
}

/// [`fingerprint`] as eight ASCII hex digits, without allocating.
fn fingerprint_hex(secret: &[u8]) -> [u8; 8] {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let h = secret
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME));
    let v = (h ^ (h >> 32)) as u32;
    let mut out = [0u8; 8];
    for (i, d) in out.iter_mut().enumerate() {
        *d = DIGITS[((v >> (28 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// The fingerprint of the credential `req` carries (the first of `authorization`,
/// `x-api-key`, `api-key`, `x-goog-api-key`, else a `key=` query parameter), as in
/// [`RequestMeta::credential`]; never the credential itself.
///
/// ```
/// use http::Request;
/// use ratelayer_core::meta::{credential_of, fingerprint};
/// let req = Request::get("https://api.openai.com/v1/models")
///     .header("authorization", "Bearer sk-test")
///     .body(())
///     .unwrap();
/// assert_eq!(credential_of(&req).as_deref(), Some(fingerprint(b"Bearer sk-test").as_str()));
/// ```
pub fn credential_of<B>(req: &Request<B>) -> Option<Arc<str>> {
    credential(req.headers(), req.uri())
}

/// Credential headers, in the order they are looked for.
static CREDENTIAL_HEADERS: [HeaderName; 4] = [
    http::header::AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-goog-api-key"),
];

/// The fingerprint of the request's credential: the first credential header, else
/// Gemini's `key` query parameter.
fn credential(headers: &HeaderMap, uri: &Uri) -> Option<Arc<str>> {
    let from_header = CREDENTIAL_HEADERS
        .iter()
        .find_map(|name| headers.get(name))
        .map(|v| v.as_bytes());
    let from_query = || {
        uri.query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("key="))
            .map(str::as_bytes)
    };
    let secret = from_header.or_else(from_query).filter(|v| !v.is_empty())?;
    let hex = fingerprint_hex(secret);
    names::name(&hex).or_else(|| Some(Arc::from(hex_str(&hex))))
}
