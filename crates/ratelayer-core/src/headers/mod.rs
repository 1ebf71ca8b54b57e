//! The rate-limit header parser: one normalized [`RateLimitSnapshot`] from every
//! provider's dialect.
//!
//! See [`parse`] for the entry point and the dialects it understands, and [`value`] for
//! the strict value parsers it is built from.

use std::time::{Duration, SystemTime};

use http::header::AsHeaderName;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

mod body;
mod ietf;
#[cfg(test)]
mod tests;
pub mod value;

use value::{
    parse_count, parse_go_duration, parse_millis, parse_retry_after, parse_seconds,
    until_epoch_millis, until_epoch_seconds, until_rfc3339,
};

/// A dimension that providers limit.
///
/// ```
/// use ratelayer_core::Dimension;
/// assert_eq!(Dimension::InputTokens.as_str(), "input_tokens");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Requests.
    Requests,
    /// Tokens, input and output together.
    Tokens,
    /// Input (prompt) tokens, where the provider limits them separately (Anthropic).
    InputTokens,
    /// Output (completion) tokens, where the provider limits them separately (Anthropic).
    OutputTokens,
}

impl Dimension {
    /// Every dimension, in a fixed order.
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// assert_eq!(Dimension::ALL[0], Dimension::Requests);
    /// ```
    pub const ALL: [Dimension; 4] = [
        Dimension::Requests,
        Dimension::Tokens,
        Dimension::InputTokens,
        Dimension::OutputTokens,
    ];

    /// A lower-case name for logs: `requests`, `tokens`, `input_tokens`, `output_tokens`.
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// assert_eq!(Dimension::Tokens.as_str(), "tokens");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::Tokens => "tokens",
            Dimension::InputTokens => "input_tokens",
            Dimension::OutputTokens => "output_tokens",
        }
    }
}

/// What a response said about one dimension. Every field is `None` when the response did
/// not say it (or said it in a form that could not be read): the parser never invents a
/// number.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::headers::DimensionLimit;
/// let l = DimensionLimit { limit: Some(60), remaining: Some(0), reset: Some(Duration::from_secs(1)), window: None };
/// assert!(!l.is_empty());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimensionLimit {
    /// The limit for the window.
    pub limit: Option<u64>,
    /// What remains of the limit in the current window.
    pub remaining: Option<u64>,
    /// Time from the response until the limit is fully replenished (or the window resets).
    pub reset: Option<Duration>,
    /// The window the limit applies to, where the dialect states it (a minute for OpenAI
    /// tokens, a day for Groq requests, `w=` of an IETF policy).
    pub window: Option<Duration>,
}

impl DimensionLimit {
    /// Whether the response said nothing about this dimension.
    ///
    /// ```
    /// use ratelayer_core::headers::DimensionLimit;
    /// assert!(DimensionLimit::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        *self == DimensionLimit::default()
    }
}

/// Where the server's requested delay came from.
///
/// ```
/// use ratelayer_core::headers::DelaySource;
/// assert_eq!(DelaySource::RetryAfterMs.as_str(), "retry-after-ms");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DelaySource {
    /// The `retry-after-ms` header (OpenAI, Azure OpenAI).
    RetryAfterMs,
    /// The `Retry-After` header, delta-seconds or an HTTP-date (RFC 9110).
    RetryAfter,
    /// A hint in the error body, such as Gemini's `google.rpc.RetryInfo.retryDelay`.
    Body,
}

impl DelaySource {
    /// A short name for logs: `retry-after-ms`, `retry-after`, `body`.
    ///
    /// ```
    /// use ratelayer_core::headers::DelaySource;
    /// assert_eq!(DelaySource::Body.as_str(), "body");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            DelaySource::RetryAfterMs => "retry-after-ms",
            DelaySource::RetryAfter => "retry-after",
            DelaySource::Body => "body",
        }
    }
}

/// A provider's header dialect: the parser's hint for names that mean different things at
/// different providers.
///
/// ```
/// use ratelayer_core::Dialect;
/// assert_eq!(Dialect::for_provider("Groq"), Some(Dialect::Groq));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// OpenAI: `x-ratelimit-*-{requests,tokens}`, Go-style duration resets.
    OpenAi,
    /// Azure OpenAI: OpenAI's names, bare-second resets, `-1` placeholders.
    Azure,
    /// Anthropic: `anthropic-ratelimit-*` with RFC 3339 reset instants.
    Anthropic,
    /// Groq: OpenAI's names, but requests are per day and tokens per minute.
    Groq,
    /// Gemini / Vertex AI: no headers; `RetryInfo` in the JSON error body.
    Gemini,
    /// OpenRouter: resets as epoch milliseconds.
    OpenRouter,
    /// GitHub and GitLab style: `x-ratelimit-reset` as epoch seconds.
    GitHub,
    /// Mistral.
    Mistral,
    /// The IETF `RateLimit` header drafts.
    Ietf,
}

impl Dialect {
    /// The dialect of a well-known provider name (`openai`, `azure`, `anthropic`, `groq`,
    /// `gemini`, `vertex`, `openrouter`, `github`, `gitlab`, `mistral`, `moonshot`, `kimi`,
    /// `ietf`).
    ///
    /// ```
    /// use ratelayer_core::Dialect;
    /// assert_eq!(Dialect::for_provider("azure"), Some(Dialect::Azure));
    /// assert_eq!(Dialect::for_provider("127.0.0.1"), None);
    /// ```
    pub fn for_provider(provider: &str) -> Option<Dialect> {
        let p = provider.to_ascii_lowercase();
        Some(match p.as_str() {
            "openai" | "moonshot" | "kimi" | "deepseek" | "together" | "fireworks" => {
                Dialect::OpenAi
            }
            "azure" | "azure-openai" | "azure_openai" => Dialect::Azure,
            "anthropic" | "claude" => Dialect::Anthropic,
            "groq" => Dialect::Groq,
            "gemini" | "vertex" | "google" => Dialect::Gemini,
            "openrouter" => Dialect::OpenRouter,
            "github" | "gitlab" => Dialect::GitHub,
            "mistral" => Dialect::Mistral,
            "ietf" => Dialect::Ietf,
            _ => return None,
        })
    }
}

/// Everything a response said about rate limits, normalized across dialects: see
/// [`parse`].
///
/// The tier and TPM layers attach the snapshot of a response's headers to the response
/// as an extension ([`parse_once`]), so the layers outside read it instead of parsing
/// the headers again, and a caller can read the limits the response stated.
///
/// ```
/// use ratelayer_core::RateLimitSnapshot;
/// assert!(RateLimitSnapshot::default().is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitSnapshot {
    /// The request limit.
    pub requests: DimensionLimit,
    /// The token limit (input and output together).
    pub tokens: DimensionLimit,
    /// The input-token limit, where separate.
    pub input_tokens: DimensionLimit,
    /// The output-token limit, where separate.
    pub output_tokens: DimensionLimit,
    /// How long the server asked the client to wait before trying again.
    pub retry_after: Option<Duration>,
    /// Where [`retry_after`](Self::retry_after) came from.
    pub retry_after_source: Option<DelaySource>,
    /// The `x-should-retry` hint: `Some(false)` means do not retry, `Some(true)` retry.
    pub should_retry: Option<bool>,
}

impl RateLimitSnapshot {
    /// What the response said about `dimension`.
    ///
    /// ```
    /// use ratelayer_core::{Dimension, RateLimitSnapshot};
    /// let mut s = RateLimitSnapshot::default();
    /// s.tokens.limit = Some(30_000);
    /// assert_eq!(s.get(Dimension::Tokens).limit, Some(30_000));
    /// ```
    pub fn get(&self, dimension: Dimension) -> &DimensionLimit {
        match dimension {
            Dimension::Requests => &self.requests,
            Dimension::Tokens => &self.tokens,
            Dimension::InputTokens => &self.input_tokens,
            Dimension::OutputTokens => &self.output_tokens,
        }
    }

    /// Mutable access to what the response said about `dimension`.
    ///
    /// ```
    /// use ratelayer_core::{Dimension, RateLimitSnapshot};
    /// let mut s = RateLimitSnapshot::default();
    /// s.get_mut(Dimension::Requests).remaining = Some(2);
    /// assert_eq!(s.requests.remaining, Some(2));
    /// ```
    pub fn get_mut(&mut self, dimension: Dimension) -> &mut DimensionLimit {
        match dimension {
            Dimension::Requests => &mut self.requests,
            Dimension::Tokens => &mut self.tokens,
            Dimension::InputTokens => &mut self.input_tokens,
            Dimension::OutputTokens => &mut self.output_tokens,
        }
    }

    /// Whether the response said nothing about rate limits at all.
    ///
    /// ```
    /// use ratelayer_core::RateLimitSnapshot;
    /// let mut s = RateLimitSnapshot::default();
    /// s.should_retry = Some(false);
    /// assert!(!s.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        *self == RateLimitSnapshot::default()
    }

    /// The exhausted dimension (remaining 0) whose reset is furthest away, with that reset.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{Dimension, RateLimitSnapshot};
    /// let mut s = RateLimitSnapshot::default();
    /// s.requests.remaining = Some(0);
    /// s.requests.reset = Some(Duration::from_secs(1));
    /// s.tokens.remaining = Some(0);
    /// s.tokens.reset = Some(Duration::from_secs(30));
    /// assert_eq!(s.exhausted(), Some((Dimension::Tokens, Some(Duration::from_secs(30)))));
    /// ```
    pub fn exhausted(&self) -> Option<(Dimension, Option<Duration>)> {
        Dimension::ALL
            .into_iter()
            .filter(|d| self.get(*d).remaining == Some(0))
            .max_by_key(|d| self.get(*d).reset)
            .map(|d| (d, self.get(d).reset))
    }
}

/// Parses a response's rate-limit information into one normalized snapshot.
///
/// - `status`: the response status. The body of an error response (400 and above) is read
///   for delay hints; a success body never is.
/// - `headers`: the response headers.
/// - `body`: the response body, if the caller buffered it (error bodies are small);
///   `None` when it was not read.
/// - `now`: the wall-clock time the response was received, used only for values that are
///   absolute instants (HTTP-date `Retry-After`, RFC 3339 and epoch resets). It is never
///   read inside.
/// - `hint`: the provider's dialect, where names are ambiguous. With `None` the dialect is
///   recognized from the header names alone, and windows that only the provider tells
///   apart (OpenAI's per-minute requests vs Groq's per-day requests) stay unknown.
///
/// # Dialects
///
/// | Provider | Headers | Resets |
/// |---|---|---|
/// | OpenAI | `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` | Go durations `6m0s`; window a minute with the hint |
/// | Azure OpenAI | the same names; `-1` means unknown | bare seconds |
/// | Groq | the same names | requests per day, tokens per minute (with the hint) |
/// | Anthropic | `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}` | RFC 3339 instants; window a minute |
/// | Gemini / Vertex | none: `google.rpc.RetryInfo.retryDelay` in the JSON error body | |
/// | OpenRouter | `x-ratelimit-{limit,remaining,reset}` | epoch milliseconds |
/// | GitHub / GitLab | `x-ratelimit-{limit,remaining,reset}` | epoch seconds |
/// | Mistral (Kong) | `ratelimitbysize-{limit,remaining,reset}` (tokens), `x-ratelimit[bysize]-{limit,remaining}-{minute,…}` | delta seconds |
/// | IETF drafts | `RateLimit-Policy` + `RateLimit` (structured), or `RateLimit-{Limit,Remaining,Reset}` | delta seconds |
///
/// Without a hint, `x-ratelimit-reset` is read by magnitude: from 10¹² on as epoch
/// milliseconds, from 10⁹ on as epoch seconds, below as delta seconds.
///
/// When several families describe the same dimension, the first in the table's order that
/// says anything about it wins, whole (limit, remaining and reset are never mixed across
/// families).
///
/// # The requested delay
///
/// `retry-after-ms` first, then `Retry-After` (RFC 9110 delta-seconds, fractions accepted,
/// or an HTTP-date in any of its three formats), then a hint in an error body (Gemini's
/// `RetryInfo`, "Please try again in 7.66s", "retry after 6 seconds"). A value that cannot
/// be read falls through to the next.
///
/// # Bad input
///
/// Never panics and never invents a number: a value that cannot be read exactly (garbage,
/// signs, `NaN`, `inf`, unit suffixes where none belong, non-ASCII, empty) is absent;
/// instants in the past give zero; every duration is rounded up to a whole millisecond and
/// saturates at [`value::MAX_DELAY`].
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{HeaderMap, StatusCode};
/// use ratelayer_core::headers::{parse, DelaySource, Dialect};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-limit-requests", "60".parse().unwrap());
/// headers.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset-requests", "1s".parse().unwrap());
/// headers.insert("x-ratelimit-limit-tokens", "150000".parse().unwrap());
/// headers.insert("x-ratelimit-remaining-tokens", "149984".parse().unwrap());
/// headers.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
/// headers.insert("retry-after-ms", "20".parse().unwrap());
/// headers.insert("retry-after", "1".parse().unwrap());
///
/// let s = parse(StatusCode::TOO_MANY_REQUESTS, &headers, None, SystemTime::now(), Some(Dialect::OpenAi));
/// assert_eq!(s.requests.limit, Some(60));
/// assert_eq!(s.requests.remaining, Some(0));
/// assert_eq!(s.requests.reset, Some(Duration::from_secs(1)));
/// assert_eq!(s.requests.window, Some(Duration::from_secs(60)));
/// assert_eq!(s.tokens.reset, Some(Duration::from_secs(360)));
/// assert_eq!(s.retry_after, Some(Duration::from_millis(20)));
/// assert_eq!(s.retry_after_source, Some(DelaySource::RetryAfterMs));
/// ```
pub fn parse(
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<&[u8]>,
    now: SystemTime,
    hint: Option<Dialect>,
) -> RateLimitSnapshot {
    let mut snap = RateLimitSnapshot::default();
    let mut h = Headers::new(headers);
    let seen = h.collect();
    if seen.ratelimit() {
        for dimension in Dimension::ALL {
            *snap.get_mut(dimension) = dimension_limit(&h, &seen, dimension, now, hint);
        }
    }
    if !seen.other && body.is_none() {
        return snap;
    }
    let delay = [
        (
            DelaySource::RetryAfterMs,
            h.get_other(&RETRY_AFTER_MS).and_then(parse_millis),
        ),
        (
            DelaySource::RetryAfter,
            h.get_other(http::header::RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, now)),
        ),
    ]
    .into_iter()
    .find_map(|(source, d)| d.map(|d| (source, d)))
    .or_else(|| {
        body.filter(|_| status.as_u16() >= 400)
            .and_then(body::delay)
            .map(|d| (DelaySource::Body, d))
    });
    if let Some((source, d)) = delay {
        snap.retry_after = Some(d);
        snap.retry_after_source = Some(source);
    }
    snap.should_retry = h.get_other(&X_SHOULD_RETRY).and_then(|v| {
        if v.eq_ignore_ascii_case("true") {
            Some(true)
        } else if v.eq_ignore_ascii_case("false") {
            Some(false)
        } else {
            None
        }
    });
    snap
}

/// The snapshot of a response's headers (no body), parsed once per response: the one a
/// layer inside already attached to `extensions`, else `headers` parsed now (with the
/// wall clock `now()` reads, for absolute dates, and the dialect `hint()` gives) and
/// attached when it states anything, for the layers outside. A response whose headers state nothing gets an empty snapshot
/// without a parse or a clock read ([`states_limits`]).
///
/// ```
/// use std::time::SystemTime;
/// use http::{Response, StatusCode};
/// use ratelayer_core::{Dialect, RateLimitSnapshot, headers::parse_once};
/// let mut resp = Response::builder()
///     .header("x-ratelimit-limit-requests", "500")
///     .body(())
///     .unwrap();
/// let (parts, _) = resp.into_parts();
/// let (headers, mut ext) = (parts.headers, parts.extensions);
/// let hint = || Some(Dialect::OpenAi);
/// let first = parse_once(StatusCode::OK, &headers, &mut ext, SystemTime::now, hint);
/// assert_eq!(first.requests.limit, Some(500));
/// // Attached: a second reader (a layer outside) gets it without parsing.
/// assert_eq!(ext.get::<RateLimitSnapshot>(), Some(&first));
/// let again = parse_once(StatusCode::OK, &headers, &mut ext, || unreachable!(), || None);
/// assert_eq!(again, first);
/// ```
pub fn parse_once(
    status: StatusCode,
    headers: &HeaderMap,
    extensions: &mut http::Extensions,
    now: impl FnOnce() -> SystemTime,
    hint: impl FnOnce() -> Option<Dialect>,
) -> RateLimitSnapshot {
    if !states_limits(headers) {
        return RateLimitSnapshot::default();
    }
    if let Some(snap) = extensions.get::<RateLimitSnapshot>() {
        return snap.clone();
    }
    let snap = parse(status, headers, None, now(), hint());
    if !snap.is_empty() {
        extensions.insert(snap.clone());
    }
    snap
}

const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// Which kinds of header [`parse`] reads a response has, from one pass over its names.
/// Every rate-limit family's names start with one of three prefixes, so a family whose
/// prefix no name has is not looked up at all (each lookup hashes a long name).
#[derive(Default)]
struct Seen {
    /// A name starting `anthropic-ratelimit-` (Anthropic).
    anthropic: bool,
    /// A name starting `x-ratelimit` (OpenAI, Azure, Groq, GitHub, OpenRouter, Kong).
    x: bool,
    /// A name starting `ratelimit` (the IETF fields, Kong's and Mistral's combined ones).
    bare: bool,
    /// `retry-after`, `retry-after-ms` or `x-should-retry`.
    other: bool,
}

impl Seen {
    /// Notes `name`: whether it is a rate-limit family's (its family noted too).
    #[inline]
    fn note(&mut self, name: &HeaderName) -> bool {
        let n = name.as_str().as_bytes();
        let family = if n.starts_with(b"x-ratelimit") {
            &mut self.x
        } else if n.starts_with(b"ratelimit") {
            &mut self.bare
        } else if n.starts_with(b"anthropic-ratelimit-") {
            &mut self.anthropic
        } else {
            if *name == http::header::RETRY_AFTER
                || *name == RETRY_AFTER_MS
                || *name == X_SHOULD_RETRY
            {
                self.other = true;
            }
            return false;
        };
        *family = true;
        true
    }

    /// One pass over the names of `headers`.
    fn of(headers: &HeaderMap) -> Seen {
        let mut seen = Seen::default();
        for name in headers.keys() {
            seen.note(name);
        }
        seen
    }

    /// A name of any rate-limit family.
    fn ratelimit(&self) -> bool {
        self.anthropic || self.x || self.bare
    }
}

/// Whether `headers` hold anything [`parse`] reads from headers: a rate-limit family's
/// header, `retry-after`, `retry-after-ms` or `x-should-retry`. One pass over the names;
/// a layer asks this first and spares itself the clock read and the parse of a response
/// that states nothing.
///
/// ```
/// use http::HeaderMap;
/// use ratelayer_core::headers::states_limits;
/// let mut h = HeaderMap::new();
/// h.insert("content-type", "application/json".parse().unwrap());
/// assert!(!states_limits(&h));
/// h.insert("x-ratelimit-remaining-tokens", "100".parse().unwrap());
/// assert!(states_limits(&h));
/// let mut r = HeaderMap::new();
/// r.insert("retry-after", "2".parse().unwrap());
/// assert!(states_limits(&r));
/// ```
pub fn states_limits(headers: &HeaderMap) -> bool {
    let seen = Seen::of(headers);
    seen.ratelimit() || seen.other
}

/// Rate-limit family headers a response may have before lookups go to the map instead
/// of the list [`Headers::collect`] keeps.
const FEW: usize = 24;

/// Header lookup returning the first value as trimmed visible ASCII, `None` when absent,
/// empty or not visible ASCII. The rate-limit families' headers are collected in one
/// pass over the response's headers and looked up in that short list (a length and a
/// byte compare each), not hashed into the map for every name a family may use.
struct Headers<'a> {
    map: &'a HeaderMap,
    /// The rate-limit family headers, in the map's order (a name's first value first).
    few: [Option<(&'a [u8], &'a HeaderValue)>; FEW],
    n: usize,
    /// Whether `few` holds all of them (else lookups go to the map).
    complete: bool,
}

/// A header name as [`Headers`] compares it.
trait Name: AsHeaderName {
    fn bytes(&self) -> &[u8];
}

impl Name for &HeaderName {
    fn bytes(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Name for &str {
    fn bytes(&self) -> &[u8] {
        str::as_bytes(self)
    }
}

impl<'a> Headers<'a> {
    fn new(map: &'a HeaderMap) -> Self {
        Headers {
            map,
            few: [None; FEW],
            n: 0,
            complete: true,
        }
    }

    /// One pass over the headers: which kinds they are, the rate-limit family ones kept.
    fn collect(&mut self) -> Seen {
        let mut seen = Seen::default();
        for (name, value) in self.map {
            if !seen.note(name) {
                continue;
            }
            match self.few.get_mut(self.n) {
                Some(slot) => {
                    *slot = Some((name.as_str().as_bytes(), value));
                    self.n += 1;
                }
                None => self.complete = false,
            }
        }
        seen
    }

    /// A rate-limit family header.
    fn get(&self, name: impl Name) -> Option<&'a str> {
        let value = if self.complete {
            let want = name.bytes();
            self.few[..self.n]
                .iter()
                .flatten()
                .find(|(n, _)| *n == want)
                .map(|(_, v)| *v)?
        } else {
            self.map.get(name)?
        };
        visible(value)
    }

    /// Any other header (looked up in the map).
    fn get_other(&self, name: impl AsHeaderName) -> Option<&'a str> {
        visible(self.map.get(name)?)
    }
}

/// A header value as trimmed visible ASCII, `None` when empty or not visible ASCII.
fn visible(value: &HeaderValue) -> Option<&str> {
    let v = value.to_str().ok()?.trim();
    (!v.is_empty()).then_some(v)
}

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// `[limit, remaining, reset]` header names of one family for one dimension.
type Names = [HeaderName; 3];

/// Anthropic's names, by [`Dimension::ALL`] order.
static ANTHROPIC: [Names; 4] = [
    [
        HeaderName::from_static("anthropic-ratelimit-requests-limit"),
        HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
        HeaderName::from_static("anthropic-ratelimit-requests-reset"),
    ],
    [
        HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
        HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
    ],
    [
        HeaderName::from_static("anthropic-ratelimit-input-tokens-limit"),
        HeaderName::from_static("anthropic-ratelimit-input-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-input-tokens-reset"),
    ],
    [
        HeaderName::from_static("anthropic-ratelimit-output-tokens-limit"),
        HeaderName::from_static("anthropic-ratelimit-output-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-output-tokens-reset"),
    ],
];

/// OpenAI's (Azure's, Groq's) names for requests and tokens.
static OPENAI: [Names; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];

/// The separate IETF fields (requests) and Mistral's by-size fields (tokens).
static COMBINED: [Names; 2] = [
    [
        HeaderName::from_static("ratelimit-limit"),
        HeaderName::from_static("ratelimit-remaining"),
        HeaderName::from_static("ratelimit-reset"),
    ],
    [
        HeaderName::from_static("ratelimitbysize-limit"),
        HeaderName::from_static("ratelimitbysize-remaining"),
        HeaderName::from_static("ratelimitbysize-reset"),
    ],
];

/// Kong's per-period `[limit, remaining]` names and period in seconds (Mistral's gateway),
/// shortest first, for requests and for tokens (by size).
static PERIODS: [[(HeaderName, HeaderName, u64); 6]; 2] = [
    [
        (
            HeaderName::from_static("x-ratelimit-limit-second"),
            HeaderName::from_static("x-ratelimit-remaining-second"),
            1,
        ),
        (
            HeaderName::from_static("x-ratelimit-limit-minute"),
            HeaderName::from_static("x-ratelimit-remaining-minute"),
            60,
        ),
        (
            HeaderName::from_static("x-ratelimit-limit-hour"),
            HeaderName::from_static("x-ratelimit-remaining-hour"),
            3_600,
        ),
        (
            HeaderName::from_static("x-ratelimit-limit-day"),
            HeaderName::from_static("x-ratelimit-remaining-day"),
            86_400,
        ),
        (
            HeaderName::from_static("x-ratelimit-limit-month"),
            HeaderName::from_static("x-ratelimit-remaining-month"),
            2_592_000,
        ),
        (
            HeaderName::from_static("x-ratelimit-limit-year"),
            HeaderName::from_static("x-ratelimit-remaining-year"),
            31_536_000,
        ),
    ],
    [
        (
            HeaderName::from_static("x-ratelimitbysize-limit-second"),
            HeaderName::from_static("x-ratelimitbysize-remaining-second"),
            1,
        ),
        (
            HeaderName::from_static("x-ratelimitbysize-limit-minute"),
            HeaderName::from_static("x-ratelimitbysize-remaining-minute"),
            60,
        ),
        (
            HeaderName::from_static("x-ratelimitbysize-limit-hour"),
            HeaderName::from_static("x-ratelimitbysize-remaining-hour"),
            3_600,
        ),
        (
            HeaderName::from_static("x-ratelimitbysize-limit-day"),
            HeaderName::from_static("x-ratelimitbysize-remaining-day"),
            86_400,
        ),
        (
            HeaderName::from_static("x-ratelimitbysize-limit-month"),
            HeaderName::from_static("x-ratelimitbysize-remaining-month"),
            2_592_000,
        ),
        (
            HeaderName::from_static("x-ratelimitbysize-limit-year"),
            HeaderName::from_static("x-ratelimitbysize-remaining-year"),
            31_536_000,
        ),
    ],
];

/// The index of requests (0) and tokens (1) in the two-dimension tables.
fn requests_or_tokens(dimension: Dimension) -> Option<usize> {
    match dimension {
        Dimension::Requests => Some(0),
        Dimension::Tokens => Some(1),
        Dimension::InputTokens | Dimension::OutputTokens => None,
    }
}

fn dimension_limit(
    h: &Headers<'_>,
    seen: &Seen,
    dimension: Dimension,
    now: SystemTime,
    hint: Option<Dialect>,
) -> DimensionLimit {
    // Each family with whether a name of its prefix is present (one without any would
    // find nothing).
    let families: [(bool, &dyn Fn() -> DimensionLimit); 6] = [
        (seen.anthropic, &|| anthropic(h, dimension, now)),
        (seen.x, &|| openai(h, dimension, hint)),
        (seen.bare, &|| ietf_structured(h, dimension)),
        (seen.bare, &|| kong_combined(h, dimension)),
        (seen.x, &|| x_ratelimit(h, dimension, now, hint)),
        (seen.x, &|| kong_periods(h, dimension)),
    ];
    families
        .into_iter()
        .filter(|(present, _)| *present)
        .map(|(_, f)| f())
        .find(|l| !l.is_empty())
        .unwrap_or_default()
}

/// `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`.
fn anthropic(h: &Headers<'_>, dimension: Dimension, now: SystemTime) -> DimensionLimit {
    let i = match dimension {
        Dimension::Requests => 0,
        Dimension::Tokens => 1,
        Dimension::InputTokens => 2,
        Dimension::OutputTokens => 3,
    };
    let [limit, remaining, reset] = &ANTHROPIC[i];
    let mut l = DimensionLimit {
        limit: h.get(limit).and_then(parse_count),
        remaining: h.get(remaining).and_then(parse_count),
        reset: h.get(reset).and_then(|v| until_rfc3339(v, now)),
        window: None,
    };
    if !l.is_empty() {
        // Anthropic's limits are per minute (RPM, ITPM, OTPM).
        l.window = Some(MINUTE);
    }
    l
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` of OpenAI, Azure and Groq.
fn openai(h: &Headers<'_>, dimension: Dimension, hint: Option<Dialect>) -> DimensionLimit {
    let Some(i) = requests_or_tokens(dimension) else {
        return DimensionLimit::default();
    };
    let [limit, remaining, reset] = &OPENAI[i];
    let mut l = DimensionLimit {
        limit: h.get(limit).and_then(parse_count),
        remaining: h.get(remaining).and_then(parse_count),
        // Go durations (OpenAI, Groq) or bare seconds (Azure).
        reset: h
            .get(reset)
            .and_then(|v| parse_go_duration(v).or_else(|| parse_seconds(v))),
        window: None,
    };
    if !l.is_empty() {
        l.window = match (hint, dimension) {
            (Some(Dialect::Groq), Dimension::Requests) => Some(DAY),
            (Some(Dialect::OpenAi | Dialect::Groq), _) => Some(MINUTE),
            _ => None,
        };
    }
    l
}

/// The structured `RateLimit-Policy` / `RateLimit` fields.
fn ietf_structured(h: &Headers<'_>, dimension: Dimension) -> DimensionLimit {
    ietf::structured(h.get("ratelimit-policy"), h.get("ratelimit"), dimension).unwrap_or_default()
}

/// The shortest Kong period whose limit header is present.
fn kong_window(h: &Headers<'_>, i: usize) -> Option<Duration> {
    PERIODS[i]
        .iter()
        .find(|(limit, _, _)| h.get(limit).is_some())
        .map(|(_, _, secs)| Duration::from_secs(*secs))
}

/// Requests: the separate IETF `RateLimit-{Limit,Remaining,Reset}` fields (Kong sends
/// them too). Tokens: Mistral's `ratelimitbysize-{limit,remaining,reset}`.
fn kong_combined(h: &Headers<'_>, dimension: Dimension) -> DimensionLimit {
    let Some(i) = requests_or_tokens(dimension) else {
        return DimensionLimit::default();
    };
    let [limit, remaining, reset] = &COMBINED[i];
    let limit = h.get(limit);
    let mut l = DimensionLimit {
        limit: limit.and_then(|v| parse_count(ietf::first_item(v))),
        remaining: h.get(remaining).and_then(parse_count),
        reset: h.get(reset).and_then(parse_seconds),
        window: limit.and_then(ietf::limit_field_window),
    };
    if !l.is_empty() && l.window.is_none() {
        l.window = kong_window(h, i);
    }
    l
}

/// Kong's per-period headers alone: `x-ratelimit[bysize]-{limit,remaining}-{period}`. The
/// period with the least remaining wins (the shorter on a tie).
fn kong_periods(h: &Headers<'_>, dimension: Dimension) -> DimensionLimit {
    let Some(i) = requests_or_tokens(dimension) else {
        return DimensionLimit::default();
    };
    PERIODS[i]
        .iter()
        .map(|(limit, remaining, secs)| DimensionLimit {
            limit: h.get(limit).and_then(parse_count),
            remaining: h.get(remaining).and_then(parse_count),
            reset: None,
            window: Some(Duration::from_secs(*secs)),
        })
        .filter(|l| l.limit.is_some() || l.remaining.is_some())
        .min_by_key(|l| l.remaining.unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// GitHub, GitLab, OpenRouter: `x-ratelimit-{limit,remaining,reset}` (requests).
fn x_ratelimit(
    h: &Headers<'_>,
    dimension: Dimension,
    now: SystemTime,
    hint: Option<Dialect>,
) -> DimensionLimit {
    if dimension != Dimension::Requests {
        return DimensionLimit::default();
    }
    DimensionLimit {
        limit: h.get("x-ratelimit-limit").and_then(parse_count),
        remaining: h.get("x-ratelimit-remaining").and_then(parse_count),
        reset: h
            .get("x-ratelimit-reset")
            .and_then(|v| reset_by_magnitude(v, now, hint)),
        window: None,
    }
}

/// An `x-ratelimit-reset` value: epoch milliseconds (OpenRouter), epoch seconds (GitHub,
/// GitLab) or, without a hint, by magnitude (see [`parse`]).
fn reset_by_magnitude(v: &str, now: SystemTime, hint: Option<Dialect>) -> Option<Duration> {
    match hint {
        Some(Dialect::OpenRouter) => until_epoch_millis(v, now),
        Some(Dialect::GitHub) => until_epoch_seconds(v, now),
        _ => {
            let whole = v.split('.').next().unwrap_or(v);
            // Leading zeros do not make a number larger.
            let magnitude = whole.trim_start_matches('0').len();
            if magnitude >= 13 {
                until_epoch_millis(v, now)
            } else if magnitude >= 10 {
                until_epoch_seconds(v, now)
            } else {
                parse_seconds(v)
            }
        }
    }
}
