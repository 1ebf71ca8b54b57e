//! Configuration of a [`MockProvider`](crate::MockProvider): limits, tier presets, faults,
//! latency.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use ratelayer_core::{ConfigError, Dialect};

use crate::MockProvider;

/// The limits the mock enforces, per API key and model. `None` means unlimited.
///
/// ```
/// use ratelayer_mock::{Limits, Tier};
/// let limits = Limits::new().rpm(60).tpm(10_000);
/// assert_eq!(limits.rpm, Some(60));
/// assert_eq!(Tier::Free.limits().rpm, Some(3));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (input + output) per minute.
    pub tpm: Option<u64>,
    /// Input tokens per minute.
    pub itpm: Option<u64>,
    /// Output tokens per minute.
    pub otpm: Option<u64>,
    /// Requests per day.
    pub rpd: Option<u64>,
    /// Requests in flight at once.
    pub concurrency: Option<usize>,
}

macro_rules! limits_setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, n: $ty) -> Self {
                self.$name = Some(n);
                self
            }
        )*
    };
}

impl Limits {
    /// No limits at all.
    ///
    /// ```
    /// assert_eq!(ratelayer_mock::Limits::new().rpm, None);
    /// ```
    pub fn new() -> Self {
        Limits::default()
    }

    limits_setters! {
        /// Sets requests per minute.
        ///
        /// ```
        /// assert_eq!(ratelayer_mock::Limits::new().rpm(3).rpm, Some(3));
        /// ```
        rpm: u64;
        /// Sets tokens per minute.
        ///
        /// ```
        /// assert_eq!(ratelayer_mock::Limits::new().tpm(30_000).tpm, Some(30_000));
        /// ```
        tpm: u64;
        /// Sets input tokens per minute.
        ///
        /// ```
        /// assert_eq!(ratelayer_mock::Limits::new().itpm(500).itpm, Some(500));
        /// ```
        itpm: u64;
        /// Sets output tokens per minute.
        ///
        /// ```
        /// assert_eq!(ratelayer_mock::Limits::new().otpm(500).otpm, Some(500));
        /// ```
        otpm: u64;
        /// Sets requests per day.
        ///
        /// ```
        /// assert_eq!(ratelayer_mock::Limits::new().rpd(200).rpd, Some(200));
        /// ```
        rpd: u64;
        /// Sets the number of requests in flight at once.
        ///
        /// ```
        /// assert_eq!(ratelayer_mock::Limits::new().concurrency(1).concurrency, Some(1));
        /// ```
        concurrency: usize;
    }
}

/// Usage-tier presets, modelled on OpenAI's documented limits for `gpt-4o-mini`.
///
/// | tier | RPM | TPM | RPD |
/// |------|-----|-----|-----|
/// | free | 3 | 40 000 | 200 |
/// | 1 | 500 | 200 000 | 10 000 |
/// | 2 | 5 000 | 2 000 000 | — |
/// | 3 | 5 000 | 4 000 000 | — |
/// | 4 | 10 000 | 10 000 000 | — |
/// | 5 | 30 000 | 150 000 000 | — |
///
/// ```
/// use ratelayer_mock::Tier;
/// assert_eq!(Tier::Tier1.limits().rpm, Some(500));
/// assert_eq!("tier-3".parse::<Tier>(), Ok(Tier::Tier3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Free: 3 RPM, 40 000 TPM, 200 RPD.
    Free,
    /// Tier 1: 500 RPM, 200 000 TPM, 10 000 RPD.
    Tier1,
    /// Tier 2: 5 000 RPM, 2 000 000 TPM.
    Tier2,
    /// Tier 3: 5 000 RPM, 4 000 000 TPM.
    Tier3,
    /// Tier 4: 10 000 RPM, 10 000 000 TPM.
    Tier4,
    /// Tier 5: 30 000 RPM, 150 000 000 TPM.
    Tier5,
}

impl Tier {
    /// The limits of this tier (see the table on [`Tier`]).
    ///
    /// ```
    /// assert_eq!(ratelayer_mock::Tier::Tier5.limits().tpm, Some(150_000_000));
    /// ```
    pub fn limits(self) -> Limits {
        let (rpm, tpm, rpd) = match self {
            Tier::Free => (3, 40_000, Some(200)),
            Tier::Tier1 => (500, 200_000, Some(10_000)),
            Tier::Tier2 => (5_000, 2_000_000, None),
            Tier::Tier3 => (5_000, 4_000_000, None),
            Tier::Tier4 => (10_000, 10_000_000, None),
            Tier::Tier5 => (30_000, 150_000_000, None),
        };
        Limits {
            rpm: Some(rpm),
            tpm: Some(tpm),
            rpd,
            ..Limits::default()
        }
    }
}

impl std::str::FromStr for Tier {
    type Err = ConfigError;

    /// `free`, `1`..`5`, `tier1`..`tier5` or `tier-1`..`tier-5`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.to_ascii_lowercase();
        let n = t.trim_start_matches("tier").trim_start_matches(['-', '_']);
        Ok(match n {
            "free" => Tier::Free,
            "1" => Tier::Tier1,
            "2" => Tier::Tier2,
            "3" => Tier::Tier3,
            "4" => Tier::Tier4,
            "5" => Tier::Tier5,
            _ => {
                return Err(ConfigError::new(
                    "tier",
                    format!("unknown tier {s:?}: use free or 1..5"),
                ));
            }
        })
    }
}

/// What the mock does with a request above the concurrency limit.
///
/// ```
/// use ratelayer_mock::ConcurrencyMode;
/// assert_eq!(ConcurrencyMode::default(), ConcurrencyMode::Refuse);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConcurrencyMode {
    /// Answer 429 at once (the default, like providers with a concurrency limit).
    #[default]
    Refuse,
    /// Wait in a FIFO queue until a request in flight finishes.
    Queue,
}

/// Added latency before an admitted request is answered.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_mock::Latency;
/// let l = Latency::uniform(Duration::from_millis(10), Duration::from_millis(20));
/// assert!(matches!(l, Latency::Uniform { .. }));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Latency {
    /// None.
    #[default]
    None,
    /// Always this long.
    Fixed(Duration),
    /// Uniformly distributed in `[min, max]` (milliseconds resolution), seeded.
    Uniform {
        /// Shortest.
        min: Duration,
        /// Longest.
        max: Duration,
    },
    /// Exponentially distributed with this mean (a long tail, like real completions),
    /// seeded.
    Exponential {
        /// The mean.
        mean: Duration,
    },
}

impl From<Duration> for Latency {
    /// A fixed latency.
    fn from(d: Duration) -> Self {
        Latency::Fixed(d)
    }
}

impl Latency {
    /// A fixed latency.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let l = ratelayer_mock::Latency::fixed(Duration::from_millis(5));
    /// assert_eq!(l, ratelayer_mock::Latency::Fixed(Duration::from_millis(5)));
    /// ```
    pub fn fixed(d: Duration) -> Self {
        Latency::Fixed(d)
    }

    /// A latency uniformly distributed in `[min, max]`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use ratelayer_mock::{Latency, MockProvider};
    /// let l = Latency::uniform(Duration::ZERO, Duration::from_secs(1));
    /// assert_eq!(l, Latency::Uniform { min: Duration::ZERO, max: Duration::from_secs(1) });
    /// // min above max is refused when the mock is built:
    /// let backwards = Latency::uniform(Duration::from_secs(2), Duration::ZERO);
    /// let err = MockProvider::builder().latency(backwards).build().unwrap_err();
    /// assert_eq!(err.setting, "latency");
    /// ```
    pub fn uniform(min: Duration, max: Duration) -> Self {
        Latency::Uniform { min, max }
    }

    /// An exponentially distributed latency with mean `mean`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let l = ratelayer_mock::Latency::exponential(Duration::from_millis(800));
    /// assert_eq!(l, ratelayer_mock::Latency::Exponential { mean: Duration::from_millis(800) });
    /// ```
    pub fn exponential(mean: Duration) -> Self {
        Latency::Exponential { mean }
    }

    pub(crate) fn sample(&self, rng: &mut crate::rng::Rng) -> Duration {
        match *self {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                let span = max.saturating_sub(min).as_millis() as u64;
                min + Duration::from_millis(rng.below(span + 1))
            }
            Latency::Exponential { mean } => {
                // Inverse transform; 1 - u is in (0, 1], so the logarithm is finite.
                let x = -(1.0 - rng.unit()).ln();
                Duration::try_from_secs_f64(mean.as_secs_f64() * x).unwrap_or(Duration::MAX)
            }
        }
    }
}

/// A fault the mock injects.
///
/// ```
/// use ratelayer_core::Dialect;
/// use ratelayer_mock::{ChatRequest, Fault, FaultKind, MockProvider};
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockProvider::builder().fault(Fault::new(FaultKind::QuotaExhausted)).build().unwrap();
/// let chat = ChatRequest::new("gpt-4o-mini").key("sk-test").user("Hi");
/// let resp = mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap();
/// assert_eq!(resp.status(), 429);
/// assert!(resp.headers().get("retry-after").is_none()); // no hint: waiting will not help
/// let entry = mock.journal().entries()[0].clone();
/// assert_eq!((entry.fault, entry.tokens_charged), (Some(FaultKind::QuotaExhausted), 0));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status (500, 502, 503, 529...) and the dialect's error body, before
    /// admission (nothing is charged).
    Status(StatusCode),
    /// Answer 429 with a quota-exhausted body (`insufficient_quota`) and no retry hint,
    /// before admission.
    QuotaExhausted,
    /// Admit the request, then close the connection without answering (in-process: the
    /// response future fails with [`MockError::ConnectionClosed`](crate::MockError)).
    ConnectionClosed,
    /// For streamed requests: cut the stream after about half of its events, before the
    /// usage chunk (the body fails with [`MockError::StreamCut`](crate::MockError)).
    StreamCut,
    /// Add latency to an admitted request: drawn from this distribution when configured;
    /// in the journal, the total the latency faults added, as `Latency::Fixed`.
    Latency(Latency),
}

/// When a fault fires.
///
/// ```
/// use ratelayer_core::Dialect;
/// use ratelayer_mock::{ChatRequest, Fault, MockProvider, Trigger};
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let every_2nd = Fault { trigger: Trigger::Every(2), ..Fault::bad_gateway() };
/// assert_eq!(every_2nd, Fault::bad_gateway().every(2));
/// let mock = MockProvider::builder().fault(every_2nd).build().unwrap();
/// let mut statuses = Vec::new();
/// for _ in 0..4 {
///     let req = ChatRequest::new("gpt-4o-mini").user("Hi").build(Dialect::OpenAi);
///     statuses.push(mock.clone().oneshot(req).await.unwrap().status().as_u16());
/// }
/// assert_eq!(statuses, [200, 502, 200, 502]);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// On each request independently with this probability (seeded).
    Probability(f64),
    /// On the requests with these arrival indices (0-based, per mock).
    Requests(BTreeSet<u64>),
    /// On every `n`-th request (arrival indices `n-1`, `2n-1`, ...).
    Every(u64),
}

/// A fault and when it fires.
///
/// ```
/// use ratelayer_mock::{Fault, FaultKind, Trigger};
/// let f = Fault::unavailable().probability(0.1);
/// assert_eq!(f.kind, FaultKind::Status(http::StatusCode::SERVICE_UNAVAILABLE));
/// assert_eq!(f.trigger, Trigger::Probability(0.1));
/// let g = Fault::connection_closed().on_requests([0, 3]);
/// assert_eq!((g.kind, g.trigger), (FaultKind::ConnectionClosed, Trigger::Requests([0, 3].into())));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// When.
    pub trigger: Trigger,
}

impl Fault {
    /// A fault of `kind` that fires on every request until a trigger is set.
    ///
    /// ```
    /// # use ratelayer_mock::{Fault, FaultKind, Trigger};
    /// assert_eq!(Fault::new(FaultKind::StreamCut).trigger, Trigger::Probability(1.0));
    /// ```
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            kind,
            trigger: Trigger::Probability(1.0),
        }
    }

    /// A status fault.
    ///
    /// ```
    /// # use ratelayer_core::Dialect;
    /// # use ratelayer_mock::{ChatRequest, Fault, MockProvider};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = MockProvider::builder().fault(Fault::status(http::StatusCode::BAD_GATEWAY)).build().unwrap();
    /// let req = ChatRequest::new("gpt-4o-mini").user("Hi").build(Dialect::OpenAi);
    /// assert_eq!(mock.clone().oneshot(req).await.unwrap().status(), 502);
    /// assert_eq!(mock.journal().entries()[0].tokens_charged, 0); // refused before admission
    /// // Only error statuses (4xx, 5xx) are faults:
    /// let err = MockProvider::builder().fault(Fault::status(http::StatusCode::OK)).build().unwrap_err();
    /// assert_eq!(err.setting, "fault.status");
    /// # }
    /// ```
    pub fn status(status: StatusCode) -> Self {
        Fault::new(FaultKind::Status(status))
    }

    /// 500 Internal Server Error.
    ///
    /// ```
    /// use ratelayer_mock::{Fault, FaultKind, Trigger};
    /// let f = Fault::internal_error();
    /// assert_eq!(f.kind, FaultKind::Status(http::StatusCode::INTERNAL_SERVER_ERROR));
    /// assert_eq!(f.trigger, Trigger::Probability(1.0)); // every request until a trigger is set
    /// ```
    pub fn internal_error() -> Self {
        Fault::status(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// 502 Bad Gateway.
    ///
    /// ```
    /// use ratelayer_mock::{Fault, FaultKind, Trigger};
    /// let f = Fault::bad_gateway();
    /// assert_eq!(f.kind, FaultKind::Status(http::StatusCode::BAD_GATEWAY));
    /// assert_eq!(f.trigger, Trigger::Probability(1.0)); // every request until a trigger is set
    /// ```
    pub fn bad_gateway() -> Self {
        Fault::status(StatusCode::BAD_GATEWAY)
    }

    /// 503 Service Unavailable.
    ///
    /// ```
    /// use ratelayer_mock::{Fault, FaultKind, Trigger};
    /// let f = Fault::unavailable();
    /// assert_eq!(f.kind, FaultKind::Status(http::StatusCode::SERVICE_UNAVAILABLE));
    /// assert_eq!(f.trigger, Trigger::Probability(1.0)); // every request until a trigger is set
    /// ```
    pub fn unavailable() -> Self {
        Fault::status(StatusCode::SERVICE_UNAVAILABLE)
    }

    /// 529 Overloaded (Anthropic's).
    ///
    /// ```
    /// assert_eq!(ratelayer_mock::Fault::overloaded().kind,
    ///     ratelayer_mock::FaultKind::Status(http::StatusCode::from_u16(529).unwrap()));
    /// ```
    pub fn overloaded() -> Self {
        Fault::status(overloaded_status())
    }

    /// A quota-exhausted 429.
    ///
    /// ```
    /// use ratelayer_mock::{Fault, FaultKind};
    /// assert_eq!(Fault::quota_exhausted().kind, FaultKind::QuotaExhausted);
    /// // (its 429 carries no retry hint: see the example on [`FaultKind`])
    /// ```
    pub fn quota_exhausted() -> Self {
        Fault::new(FaultKind::QuotaExhausted)
    }

    /// A connection closed mid-request.
    ///
    /// ```
    /// # use ratelayer_core::Dialect;
    /// # use ratelayer_mock::{ChatRequest, Fault, MockError, MockProvider};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = MockProvider::builder().fault(Fault::connection_closed()).build().unwrap();
    /// let req = ChatRequest::new("gpt-4o-mini").user("Hi").build(Dialect::OpenAi);
    /// let err = mock.clone().oneshot(req).await.unwrap_err();
    /// assert!(matches!(err, MockError::ConnectionClosed));
    /// let entry = mock.journal().entries()[0].clone();
    /// assert!(entry.admitted() && entry.status.is_none()); // charged, never answered
    /// # }
    /// ```
    pub fn connection_closed() -> Self {
        Fault::new(FaultKind::ConnectionClosed)
    }

    /// A stream cut before its end.
    ///
    /// ```
    /// # use http_body_util::BodyExt;
    /// # use ratelayer_core::Dialect;
    /// # use ratelayer_mock::{ChatRequest, Fault, MockError, MockProvider};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = MockProvider::builder().fault(Fault::stream_cut()).build().unwrap();
    /// let req = ChatRequest::new("gpt-4o-mini").user("Hi").max_tokens(40).stream(true);
    /// let resp = mock.clone().oneshot(req.build(Dialect::OpenAi)).await.unwrap();
    /// assert_eq!(resp.status(), 200); // the answer starts well...
    /// let err = resp.into_body().collect().await.unwrap_err();
    /// assert!(matches!(err, MockError::StreamCut)); // ...and ends before the usage chunk
    /// # }
    /// ```
    pub fn stream_cut() -> Self {
        Fault::new(FaultKind::StreamCut)
    }

    /// Added latency: a fixed duration or a [`Latency`] distribution.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use ratelayer_mock::{Fault, Latency};
    /// # use ratelayer_core::Dialect;
    /// # use ratelayer_mock::{ChatRequest, FaultKind, MockProvider};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let tail = Fault::latency(Latency::exponential(Duration::from_millis(300))).probability(0.05);
    /// assert_eq!(tail.kind, FaultKind::Latency(Latency::Exponential { mean: Duration::from_millis(300) }));
    /// let mock = MockProvider::builder().fault(Fault::latency(Duration::from_secs(2))).build().unwrap();
    /// let t0 = tokio::time::Instant::now();
    /// let req = ChatRequest::new("gpt-4o-mini").user("Hi").build(Dialect::OpenAi);
    /// assert_eq!(mock.clone().oneshot(req).await.unwrap().status(), 200);
    /// assert_eq!(t0.elapsed(), Duration::from_secs(2)); // (paused time)
    /// assert_eq!(mock.journal().entries()[0].fault, Some(FaultKind::Latency(Latency::Fixed(Duration::from_secs(2)))));
    /// # }
    /// ```
    pub fn latency(latency: impl Into<Latency>) -> Self {
        Fault::new(FaultKind::Latency(latency.into()))
    }

    /// Fires on each request with probability `p` (seeded, deterministic).
    ///
    /// ```
    /// use ratelayer_mock::{Fault, MockProvider, Trigger};
    /// assert_eq!(Fault::internal_error().probability(0.25).trigger, Trigger::Probability(0.25));
    /// let err = MockProvider::builder().fault(Fault::internal_error().probability(1.5)).build().unwrap_err();
    /// assert_eq!(err.setting, "fault.probability");
    /// ```
    pub fn probability(mut self, p: f64) -> Self {
        self.trigger = Trigger::Probability(p);
        self
    }

    /// Fires on the requests with these arrival indices (0-based).
    ///
    /// ```
    /// # use ratelayer_core::Dialect;
    /// # use ratelayer_mock::{ChatRequest, Fault, MockProvider};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = MockProvider::builder().fault(Fault::internal_error().on_requests([0, 1])).build().unwrap();
    /// let mut statuses = Vec::new();
    /// for _ in 0..3 {
    ///     let req = ChatRequest::new("gpt-4o-mini").user("Hi").build(Dialect::OpenAi);
    ///     statuses.push(mock.clone().oneshot(req).await.unwrap().status().as_u16());
    /// }
    /// assert_eq!(statuses, [500, 500, 200]);
    /// # }
    /// ```
    pub fn on_requests(mut self, indices: impl IntoIterator<Item = u64>) -> Self {
        self.trigger = Trigger::Requests(indices.into_iter().collect());
        self
    }

    /// Fires on every `n`-th request.
    ///
    /// ```
    /// use ratelayer_mock::{Fault, MockProvider, Trigger};
    /// assert_eq!(Fault::internal_error().every(10).trigger, Trigger::Every(10)); // requests 9, 19, ...
    /// let err = MockProvider::builder().fault(Fault::internal_error().every(0)).build().unwrap_err();
    /// assert_eq!(err.setting, "fault.every");
    /// ```
    pub fn every(mut self, n: u64) -> Self {
        self.trigger = Trigger::Every(n);
        self
    }

    pub(crate) fn fires(&self, index: u64, roll: f64) -> bool {
        match &self.trigger {
            Trigger::Probability(p) => roll < *p,
            Trigger::Requests(set) => set.contains(&index),
            Trigger::Every(n) => *n > 0 && (index + 1).is_multiple_of(*n),
        }
    }
}

pub(crate) fn overloaded_status() -> StatusCode {
    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// The full configuration of a mock; build one with [`MockProvider::builder`].
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) dialect: Dialect,
    pub(crate) limits: Limits,
    pub(crate) concurrency_mode: ConcurrencyMode,
    pub(crate) context_window: Option<u64>,
    pub(crate) completion_fraction: f64,
    pub(crate) latency: Latency,
    pub(crate) stream_chunk_delay: Duration,
    pub(crate) faults: Vec<Fault>,
    pub(crate) seed: u64,
    pub(crate) wall_origin: Option<SystemTime>,
}

/// Builds a [`MockProvider`]. Setters take and return `self`; [`build`](Self::build)
/// validates.
///
/// ```
/// # use std::time::Duration;
/// # use ratelayer_core::Dialect;
/// use ratelayer_mock::{ConcurrencyMode, Fault, Latency, Limits, MockProvider, Tier};
/// let mock = MockProvider::builder()
///     .dialect(Dialect::Anthropic)
///     .tier(Tier::Tier1).otpm(8_000) // tier 1's limits, plus an output-token limit
///     .concurrency(4).concurrency_mode(ConcurrencyMode::Queue)
///     .context_window(128_000)
///     .latency(Latency::fixed(Duration::from_millis(50)))
///     .fault(Fault::overloaded().probability(0.05))
///     .seed(7)
///     .build().unwrap();
/// assert_eq!(mock.dialect(), Dialect::Anthropic);
/// assert_eq!(mock.limits(), Limits { otpm: Some(8_000), concurrency: Some(4), ..Tier::Tier1.limits() });
/// ```
#[derive(Debug, Clone)]
pub struct MockBuilder {
    config: Config,
}

impl Default for MockBuilder {
    fn default() -> Self {
        MockBuilder {
            config: Config {
                dialect: Dialect::OpenAi,
                limits: Limits::default(),
                concurrency_mode: ConcurrencyMode::Refuse,
                context_window: None,
                completion_fraction: 0.5,
                latency: Latency::None,
                stream_chunk_delay: Duration::ZERO,
                faults: Vec::new(),
                seed: 0,
                wall_origin: None,
            },
        }
    }
}

macro_rules! limit_setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, n: $ty) -> Self {
            self.config.limits.$name = Some(n);
            self
        }
    };
}

impl MockBuilder {
    /// The dialect: `OpenAi` (default), `Azure`, `Anthropic`, `Gemini` or `Groq`.
    ///
    /// ```
    /// use ratelayer_core::Dialect;
    /// use ratelayer_mock::MockProvider;
    /// let mock = MockProvider::builder().dialect(Dialect::Groq).build().unwrap();
    /// assert_eq!(mock.dialect(), Dialect::Groq);
    /// let err = MockProvider::builder().dialect(Dialect::Mistral).build().unwrap_err();
    /// assert_eq!(err.setting, "dialect"); // a dialect the mock does not speak
    /// ```
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.config.dialect = dialect;
        self
    }

    /// Replaces all limits.
    ///
    /// ```
    /// # use ratelayer_mock::{Limits, MockProvider};
    /// let mock = MockProvider::builder().tpm(500).limits(Limits::new().rpm(10)).build().unwrap();
    /// assert_eq!(mock.limits(), Limits::new().rpm(10)); // the tpm set before is gone
    /// ```
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Replaces all limits by a tier's (later setters still override single limits).
    ///
    /// ```
    /// # use ratelayer_mock::{MockProvider, Tier};
    /// let mock = MockProvider::builder().tier(Tier::Free).tpm(1_000).build().unwrap();
    /// assert_eq!(mock.limits().rpm, Some(3)); // the free tier's
    /// assert_eq!(mock.limits().tpm, Some(1_000)); // overridden
    /// ```
    pub fn tier(mut self, tier: Tier) -> Self {
        self.config.limits = tier.limits();
        self
    }

    limit_setter!(
        /// Requests per minute.
        ///
        /// ```
        /// # use ratelayer_core::Dialect;
        /// # use ratelayer_mock::{ChatRequest, MockProvider};
        /// # use tower::ServiceExt;
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// let mock = MockProvider::builder().rpm(1).build().unwrap();
        /// let chat = ChatRequest::new("gpt-4o-mini").user("Hi");
        /// assert_eq!(mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap().status(), 200);
        /// let second = mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap();
        /// assert_eq!(second.status(), 429);
        /// assert_eq!(second.headers()["retry-after"], "60"); // the first leaves the window
        /// # }
        /// ```
        rpm: u64
    );
    limit_setter!(
        /// Tokens per minute (input + output).
        ///
        /// ```
        /// use ratelayer_mock::MockProvider;
        /// assert_eq!(MockProvider::builder().tpm(10_000).build().unwrap().limits().tpm, Some(10_000));
        /// let err = MockProvider::builder().tpm(0).build().unwrap_err();
        /// assert_eq!(err.setting, "tpm"); // 0 admits nothing: leave it unset for no limit
        /// ```
        tpm: u64
    );
    limit_setter!(
        /// Input tokens per minute.
        ///
        /// ```
        /// use ratelayer_mock::MockProvider;
        /// assert_eq!(MockProvider::builder().itpm(10_000).build().unwrap().limits().itpm, Some(10_000));
        /// assert_eq!(MockProvider::builder().itpm(0).build().unwrap_err().setting, "itpm");
        /// ```
        itpm: u64
    );
    limit_setter!(
        /// Output tokens per minute.
        ///
        /// ```
        /// use ratelayer_mock::MockProvider;
        /// assert_eq!(MockProvider::builder().otpm(2_000).build().unwrap().limits().otpm, Some(2_000));
        /// assert_eq!(MockProvider::builder().otpm(0).build().unwrap_err().setting, "otpm");
        /// ```
        otpm: u64
    );
    limit_setter!(
        /// Requests per day.
        ///
        /// ```
        /// use ratelayer_mock::MockProvider;
        /// assert_eq!(MockProvider::builder().rpd(1_000).build().unwrap().limits().rpd, Some(1_000));
        /// assert_eq!(MockProvider::builder().rpd(0).build().unwrap_err().setting, "rpd");
        /// ```
        rpd: u64
    );
    limit_setter!(
        /// Requests in flight at once (per key and model).
        ///
        /// ```
        /// # use ratelayer_core::Dialect;
        /// # use ratelayer_mock::{ChatRequest, MockProvider};
        /// # use tower::ServiceExt;
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// let mock = MockProvider::builder().concurrency(1).build().unwrap();
        /// let chat = ChatRequest::new("gpt-4o-mini").user("Hi");
        /// let first = mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap();
        /// let second = mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap();
        /// assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 429)); // first in flight
        /// drop(first); // its body dropped: finished
        /// assert_eq!(mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap().status(), 200);
        /// # }
        /// ```
        concurrency: usize
    );

    /// Refuse (429, the default) or queue requests above the concurrency limit.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::Dialect;
    /// # use ratelayer_mock::{ChatRequest, ConcurrencyMode, MockProvider};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mock = MockProvider::builder().concurrency(1).concurrency_mode(ConcurrencyMode::Queue).build().unwrap();
    /// let chat = ChatRequest::new("gpt-4o-mini").user("Hi");
    /// let first = mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap();
    /// let mut second = Box::pin(mock.clone().oneshot(chat.build(Dialect::OpenAi)));
    /// let waited = tokio::time::timeout(Duration::from_secs(5), &mut second).await;
    /// assert!(waited.is_err()); // queued, not refused
    /// drop(first);
    /// assert_eq!(second.await.unwrap().status(), 200);
    /// # }
    /// ```
    pub fn concurrency_mode(mut self, mode: ConcurrencyMode) -> Self {
        self.config.concurrency_mode = mode;
        self
    }

    /// The model's context window: a request whose input tokens plus per-choice
    /// `max_tokens` exceed it gets the dialect's context-length error (400).
    ///
    /// ```
    /// # use ratelayer_core::Dialect;
    /// # use ratelayer_mock::{ChatRequest, MockProvider};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = MockProvider::builder().context_window(8_192).build().unwrap();
    /// let req = ChatRequest::new("gpt-4o-mini").user("Hi").max_tokens(10_000);
    /// let resp = mock.clone().oneshot(req.build(Dialect::OpenAi)).await.unwrap();
    /// assert_eq!(resp.status(), 400); // 6 input tokens + 10 000 do not fit in 8 192
    /// assert!(!mock.journal().entries()[0].admitted());
    /// # }
    /// ```
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.config.context_window = Some(tokens);
        self
    }

    /// The fraction of `max_tokens` the mock really generates (default 0.5; in `[0, 1]`).
    ///
    /// ```
    /// # use ratelayer_core::Dialect;
    /// # use ratelayer_mock::{ChatRequest, MockProvider};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = MockProvider::builder().completion_fraction(1.0).build().unwrap();
    /// let req = ChatRequest::new("gpt-4o-mini").user("Hi").max_tokens(40);
    /// drop(mock.clone().oneshot(req.build(Dialect::OpenAi)).await.unwrap());
    /// assert_eq!(mock.journal().entries()[0].completion_tokens, 40); // all of max_tokens
    /// let err = MockProvider::builder().completion_fraction(1.5).build().unwrap_err();
    /// assert_eq!(err.setting, "completion_fraction");
    /// # }
    /// ```
    pub fn completion_fraction(mut self, fraction: f64) -> Self {
        self.config.completion_fraction = fraction;
        self
    }

    /// Latency added to every admitted request.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::Dialect;
    /// # use ratelayer_mock::{ChatRequest, Latency, MockProvider};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mock = MockProvider::builder().latency(Latency::fixed(Duration::from_millis(20))).build().unwrap();
    /// let t0 = tokio::time::Instant::now();
    /// let req = ChatRequest::new("gpt-4o-mini").user("Hi").build(Dialect::OpenAi);
    /// assert_eq!(mock.clone().oneshot(req).await.unwrap().status(), 200);
    /// assert_eq!(t0.elapsed(), Duration::from_millis(20)); // (paused time)
    /// # }
    /// ```
    pub fn latency(mut self, latency: Latency) -> Self {
        self.config.latency = latency;
        self
    }

    /// Delay between the events of a streamed response (default none).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use http_body_util::BodyExt;
    /// # use ratelayer_core::Dialect;
    /// # use ratelayer_mock::{ChatRequest, MockProvider};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mock = MockProvider::builder().stream_chunk_delay(Duration::from_millis(5)).build().unwrap();
    /// let req = ChatRequest::new("gpt-4o-mini").user("Hi").max_tokens(8).stream(true);
    /// let resp = mock.clone().oneshot(req.build(Dialect::OpenAi)).await.unwrap();
    /// let t0 = tokio::time::Instant::now(); // the headers came at once; the events are paced
    /// resp.into_body().collect().await.unwrap();
    /// assert!(t0.elapsed() >= Duration::from_millis(10)); // (paused time)
    /// # }
    /// ```
    pub fn stream_chunk_delay(mut self, delay: Duration) -> Self {
        self.config.stream_chunk_delay = delay;
        self
    }

    /// Adds a fault. Faults are checked in the order added; the first status, quota,
    /// connection or stream fault that fires applies, and every latency fault that fires
    /// adds up.
    ///
    /// ```
    /// # use ratelayer_core::Dialect;
    /// # use ratelayer_mock::{ChatRequest, Fault, MockProvider};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = MockProvider::builder()
    ///     .fault(Fault::unavailable().every(3))
    ///     .fault(Fault::internal_error().on_requests([2, 3]))
    ///     .build()
    ///     .unwrap();
    /// let mut statuses = Vec::new();
    /// for _ in 0..4 {
    ///     let req = ChatRequest::new("gpt-4o-mini").user("Hi").build(Dialect::OpenAi);
    ///     statuses.push(mock.clone().oneshot(req).await.unwrap().status().as_u16());
    /// }
    /// assert_eq!(statuses, [200, 200, 503, 500]); // request 2: the first added wins
    /// # }
    /// ```
    pub fn fault(mut self, fault: Fault) -> Self {
        self.config.faults.push(fault);
        self
    }

    /// The seed of every random choice (faults, latency). Same seed, same arrival order:
    /// same behaviour.
    ///
    /// ```
    /// # use ratelayer_core::Dialect;
    /// # use ratelayer_mock::{ChatRequest, Fault, MockProvider};
    /// # use tower::ServiceExt;
    /// async fn statuses(seed: u64) -> Vec<u16> {
    ///     let mock = MockProvider::builder().fault(Fault::unavailable().probability(0.5)).seed(seed).build().unwrap();
    ///     let mut statuses = Vec::new();
    ///     for _ in 0..16 {
    ///         let req = ChatRequest::new("gpt-4o-mini").user("Hi").build(Dialect::OpenAi);
    ///         statuses.push(mock.clone().oneshot(req).await.unwrap().status().as_u16());
    ///     }
    ///     statuses
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// assert_eq!(statuses(42).await, statuses(42).await);
    /// assert_ne!(statuses(42).await, statuses(7).await);
    /// # }
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// The wall-clock time that corresponds to the mock's creation, for headers that carry
    /// an absolute date (Anthropic's resets). Default: `SystemTime::now()` at build.
    ///
    /// ```
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mock = ratelayer_mock::MockProvider::builder().wall_clock_origin(UNIX_EPOCH).build().unwrap();
    /// let later = tokio::time::Instant::now() + Duration::from_secs(90); // (paused time)
    /// assert_eq!(mock.wall_time(later), UNIX_EPOCH + Duration::from_secs(90));
    /// # }
    /// ```
    pub fn wall_clock_origin(mut self, origin: SystemTime) -> Self {
        self.config.wall_origin = Some(origin);
        self
    }

    /// Validates the configuration and builds the mock.
    ///
    /// ```
    /// let err = ratelayer_mock::MockProvider::builder().rpm(0).build().unwrap_err();
    /// assert!(err.to_string().contains("rpm"));
    /// ```
    pub fn build(self) -> Result<MockProvider, ConfigError> {
        self.validate()?;
        Ok(MockProvider::from_config(self.config))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        if !matches!(
            c.dialect,
            Dialect::OpenAi | Dialect::Azure | Dialect::Anthropic | Dialect::Gemini | Dialect::Groq
        ) {
            return Err(ConfigError::new(
                "dialect",
                format!(
                    "the mock speaks OpenAi, Azure, Anthropic, Gemini and Groq, not {:?}",
                    c.dialect
                ),
            ));
        }
        let l = &c.limits;
        for (name, v) in [
            ("rpm", l.rpm),
            ("tpm", l.tpm),
            ("itpm", l.itpm),
            ("otpm", l.otpm),
            ("rpd", l.rpd),
            ("concurrency", l.concurrency.map(|n| n as u64)),
            ("context_window", c.context_window),
        ] {
            if v == Some(0) {
                return Err(ConfigError::new(
                    name,
                    "a limit of 0 admits nothing; leave it unset for no limit",
                ));
            }
        }
        if !(0.0..=1.0).contains(&c.completion_fraction) {
            return Err(ConfigError::new(
                "completion_fraction",
                "must be within [0, 1]: the real usage never exceeds max_tokens",
            ));
        }
        let latencies = c.faults.iter().filter_map(|f| match f.kind {
            FaultKind::Latency(l) => Some(l),
            _ => None,
        });
        for l in std::iter::once(c.latency).chain(latencies) {
            if let Latency::Uniform { min, max } = l
                && min > max
            {
                return Err(ConfigError::new(
                    "latency",
                    "uniform latency needs min <= max",
                ));
            }
        }
        for f in &c.faults {
            match &f.trigger {
                Trigger::Probability(p) if !(0.0..=1.0).contains(p) => {
                    return Err(ConfigError::new(
                        "fault.probability",
                        format!("{p} is not a probability in [0, 1]"),
                    ));
                }
                Trigger::Every(0) => {
                    return Err(ConfigError::new(
                        "fault.every",
                        "every 0th request: use n >= 1",
                    ));
                }
                _ => {}
            }
            if let FaultKind::Status(s) = f.kind
                && !(s.is_client_error() || s.is_server_error())
            {
                return Err(ConfigError::new(
                    "fault.status",
                    format!("{s} is not an error status (4xx or 5xx)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn latency_distributions_have_their_shape() {
        let mut rng = Rng::new(5);
        let ms = Duration::from_millis;
        let n = 20_000;
        let exp = Latency::exponential(ms(800));
        let mean = (0..n)
            .map(|_| exp.sample(&mut rng).as_secs_f64())
            .sum::<f64>()
            / n as f64;
        assert!((0.76..0.84).contains(&mean), "{mean}");
        let uni = Latency::uniform(ms(10), ms(20));
        let xs: Vec<Duration> = (0..n).map(|_| uni.sample(&mut rng)).collect();
        assert!(xs.iter().all(|x| (ms(10)..=ms(20)).contains(x)));
        assert!(xs.contains(&ms(10)) && xs.contains(&ms(20)));
        assert_eq!(Latency::from(ms(3)).sample(&mut rng), ms(3));
        assert_eq!(Latency::None.sample(&mut rng), Duration::ZERO);
    }

    #[test]
    fn bad_configurations_are_refused_with_the_setting_named() {
        let b = MockBuilder::default;
        let err = |b: MockBuilder| b.build().unwrap_err().setting;
        assert_eq!(err(b().dialect(Dialect::Mistral)), "dialect");
        assert_eq!(err(b().concurrency(0)), "concurrency");
        assert_eq!(err(b().completion_fraction(1.5)), "completion_fraction");
        assert_eq!(
            err(b().fault(Fault::unavailable().probability(-0.1))),
            "fault.probability"
        );
        assert_eq!(err(b().fault(Fault::unavailable().every(0))), "fault.every");
        assert_eq!(
            err(b().fault(Fault::status(StatusCode::OK))),
            "fault.status"
        );
        let backwards = Latency::uniform(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(err(b().fault(Fault::latency(backwards))), "latency");
        assert_eq!(err(b().latency(backwards)), "latency");
        assert!(b().tier(Tier::Free).build().is_ok());
    }
}
