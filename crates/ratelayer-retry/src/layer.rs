//! [`BackoffRetryLayer`], its builder and the decision logic shared by its services.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use ratelayer_core::headers::{DelaySource, Dimension};
use ratelayer_core::{
    Classification, Classifier, ConfigError, DefaultClassifier, LimitState, RateLimitSnapshot,
    Scope,
};
use tokio::time::Instant;
use tower_layer::Layer;

use crate::budget::RetryBudget;
use crate::gate::Gate;
use crate::policy::{Backoff, Jitter, OverCap, Rng, StopReason, random_seed};
use crate::service::BackoffRetry;

/// Retries one logical request over several attempts, tier-aware and honouring the
/// server's requested delays. See the [crate docs](crate) for the decision rules.
///
/// ```
/// # use std::time::Duration;
/// # use http::{Request, Response};
/// # use ratelayer_core::{LimitState, ReplayBody};
/// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
/// # use tower::{Layer, ServiceExt, service_fn};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
/// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
/// # });
/// # let req = || Request::new(ReplayBody::empty());
/// let layer = BackoffRetryLayer::builder(LimitState::new())
///     .max_rate_limit_retries(2)
///     .jitter(Jitter::Equal)
///     .max_delay(Duration::from_secs(600))
///     .build()
///     .unwrap();
/// let resp = layer.layer(always(429)).oneshot(req()).await.unwrap();
/// // Retries used up: the last 429 is returned as is, with a report.
/// assert_eq!(resp.status(), 429);
/// assert_eq!(RetryReport::of(&resp).attempts, 3);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BackoffRetryLayer {
    shared: Arc<Shared>,
}

impl BackoffRetryLayer {
    /// A layer with the default configuration (see [`BackoffRetryLayerBuilder`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, ReplayBody};
    /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
    /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
    /// # });
    /// # let req = || Request::new(ReplayBody::empty());
    /// let svc = BackoffRetryLayer::new(LimitState::new()).layer(always(429));
    /// let resp = svc.oneshot(req()).await.unwrap();
    /// let report = RetryReport::of(&resp);
    /// // Six retries on the free tier's schedule: 20 + 40 + 80 + 160 + 320 + 640 s.
    /// assert_eq!((report.attempts, report.total_wait.as_secs()), (7, 1260));
    /// # }
    /// ```
    pub fn new(state: LimitState) -> Self {
        // The defaults are valid by construction.
        match Self::builder(state).build() {
            Ok(l) => l,
            Err(e) => unreachable!("default configuration is valid: {e}"),
        }
    }

    /// A builder reading tiers and cooldowns from `state`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, ReplayBody};
    /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
    /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
    /// # });
    /// # let req = || Request::new(ReplayBody::empty());
    /// # let mut request = req();
    /// # let scope = ratelayer_core::meta::ensure(&mut request).scope();
    /// use ratelayer_core::state::TierInfo;
    /// let state = LimitState::new();
    /// state.set_tier(&scope, TierInfo::new("tier-1", Duration::from_millis(300)));
    /// let layer = BackoffRetryLayer::builder(state).max_rate_limit_retries(2).build().unwrap();
    /// let resp = layer.layer(always(429)).oneshot(request).await.unwrap();
    /// // The tier's base delay (not the free tier's 20 s) × 2ⁿ: 0.3 + 0.6 s.
    /// assert_eq!(RetryReport::of(&resp).total_wait, Duration::from_millis(900));
    /// # }
    /// ```
    pub fn builder(state: LimitState) -> BackoffRetryLayerBuilder {
        BackoffRetryLayerBuilder {
            state,
            cfg: Config::default(),
            classifier: None,
            seed: None,
        }
    }
}

impl<S> Layer<S> for BackoffRetryLayer {
    type Service = BackoffRetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BackoffRetry::new(inner, self.shared.clone())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) rate_limit: Backoff,
    pub(crate) transient: Backoff,
    pub(crate) overloaded: Backoff,
    pub(crate) jitter: Jitter,
    pub(crate) max_delay: Duration,
    pub(crate) over_cap: OverCap,
    pub(crate) max_total_wait: Duration,
    pub(crate) max_body: usize,
    pub(crate) pacing: bool,
    pub(crate) probe: bool,
    pub(crate) pacing_margin: Duration,
    pub(crate) share_cooldown: bool,
    pub(crate) budget_ttl: Duration,
    pub(crate) budget_min_per_sec: u32,
    pub(crate) budget_percent: f32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rate_limit: Backoff::new(Duration::from_secs(20), 2.0, 6),
            transient: Backoff::new(Duration::from_millis(500), 2.0, 3),
            overloaded: Backoff::new(Duration::from_secs(1), 2.0, 4),
            jitter: Jitter::None,
            max_delay: Duration::from_secs(15 * 60),
            over_cap: OverCap::Wait,
            max_total_wait: Duration::from_secs(30 * 60),
            max_body: 64 * 1024,
            pacing: true,
            probe: true,
            pacing_margin: Duration::from_millis(500),
            share_cooldown: true,
            budget_ttl: Duration::from_secs(10),
            budget_min_per_sec: 10,
            budget_percent: 0.2,
        }
    }
}

/// Builds a [`BackoffRetryLayer`]. Setters take and return `self`; [`build`](Self::build)
/// checks the configuration.
///
/// | Setting | Default |
/// |---|---|
/// | [`max_rate_limit_retries`](Self::max_rate_limit_retries) | 6 |
/// | [`default_base_delay`](Self::default_base_delay) (tier unknown) | 20 s (free tier) |
/// | [`factor`](Self::factor) | 2 |
/// | [`transient`](Self::transient) (5xx, 408, connection errors, timeouts) | 0.5 s × 2ⁿ, 3 retries |
/// | [`overloaded`](Self::overloaded) (529) | 1 s × 2ⁿ, 4 retries |
/// | [`jitter`](Self::jitter) | none |
/// | [`max_delay`](Self::max_delay) (per delay) | 15 min |
/// | [`over_cap`](Self::over_cap) | wait |
/// | [`max_total_wait`](Self::max_total_wait) | 30 min |
/// | [`retry_budget`](Self::retry_budget) | 20 % of the last 10 s of requests, at least 10 retries/s |
/// | [`max_error_body`](Self::max_error_body) | 64 KiB |
/// | [`pacing`](Self::pacing), [`pacing_margin`](Self::pacing_margin) | on, 0.5 s |
/// | [`probe`](Self::probe) (a scope's first request alone) | on |
/// | [`share_cooldown`](Self::share_cooldown) | on |
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::LimitState;
/// use ratelayer_retry::{Backoff, BackoffRetryLayer, OverCap};
///
/// let err = BackoffRetryLayer::builder(LimitState::new()).factor(0.5).build().unwrap_err();
/// assert_eq!(err.setting, "retry.factor");
///
/// let layer = BackoffRetryLayer::builder(LimitState::new())
///     .transient(Backoff::new(Duration::from_millis(200), 2.0, 2))
///     .over_cap(OverCap::GiveUp)
///     .seed(42)
///     .build()
///     .unwrap();
/// ```
#[derive(Clone)]
pub struct BackoffRetryLayerBuilder {
    state: LimitState,
    cfg: Config,
    classifier: Option<Arc<dyn Classifier>>,
    seed: Option<u64>,
}

impl std::fmt::Debug for BackoffRetryLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackoffRetryLayerBuilder")
            .field("cfg", &self.cfg)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty => $($field:ident).+) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.cfg.$($field).+ = value;
            self
        }
    };
}

impl BackoffRetryLayerBuilder {
    setter!(
        /// Retries of rate-limited (429) responses.
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # let req = || Request::new(ReplayBody::empty());
        /// let layer = BackoffRetryLayer::builder(LimitState::new())
        ///     .max_rate_limit_retries(1)
        ///     .build()
        ///     .unwrap();
        /// let resp = layer.layer(always(429)).oneshot(req()).await.unwrap();
        /// let report = RetryReport::of(&resp);
        /// // One retry: two attempts, then the last 429 is returned.
        /// assert_eq!((report.attempts, report.reason), (2, StopReason::RetriesExhausted));
        /// # }
        /// ```
        max_rate_limit_retries: u32 => rate_limit.max_retries
    );
    setter!(
        /// The base delay of rate-limit backoff when the scope's tier is unknown.
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # let req = || Request::new(ReplayBody::empty());
        /// let layer = BackoffRetryLayer::builder(LimitState::new())
        ///     .max_rate_limit_retries(2)
        ///     .default_base_delay(Duration::from_secs(10))
        ///     .build()
        ///     .unwrap();
        /// let resp = layer.layer(always(429)).oneshot(req()).await.unwrap();
        /// let report = RetryReport::of(&resp);
        /// // 10 s, then 10 s × 2 (the free tier's 20 s is not used).
        /// assert_eq!(report.total_wait, Duration::from_secs(30));
        /// # }
        /// ```
        default_base_delay: Duration => rate_limit.base
    );
    setter!(
        /// The growth factor of rate-limit backoff (at least 1).
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # let req = || Request::new(ReplayBody::empty());
        /// let layer = BackoffRetryLayer::builder(LimitState::new())
        ///     .max_rate_limit_retries(2)
        ///     .factor(3.0)
        ///     .build()
        ///     .unwrap();
        /// let resp = layer.layer(always(429)).oneshot(req()).await.unwrap();
        /// let report = RetryReport::of(&resp);
        /// // 20 s, then 20 s × 3.
        /// assert_eq!(report.total_wait, Duration::from_secs(80));
        /// assert_eq!(BackoffRetryLayer::builder(LimitState::new()).factor(0.5).build().unwrap_err().setting, "retry.factor");
        /// # }
        /// ```
        factor: f64 => rate_limit.factor
    );
    setter!(
        /// Backoff and retry count of transient failures (5xx, 408, connection errors,
        /// timeouts).
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # let req = || Request::new(ReplayBody::empty());
        /// let layer = BackoffRetryLayer::builder(LimitState::new())
        ///     .transient(Backoff::new(Duration::from_millis(100), 2.0, 3))
        ///     .build()
        ///     .unwrap();
        /// let resp = layer.layer(always(500)).oneshot(req()).await.unwrap();
        /// let report = RetryReport::of(&resp);
        /// // A 500, retried 3 times after 0.1, 0.2 and 0.4 s.
        /// assert_eq!((report.attempts, report.total_wait), (4, Duration::from_millis(700)));
        /// # }
        /// ```
        transient: Backoff => transient
    );
    setter!(
        /// Backoff and retry count of overloaded responses (529, 503 "overloaded").
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # let req = || Request::new(ReplayBody::empty());
        /// let layer = BackoffRetryLayer::builder(LimitState::new())
        ///     .overloaded(Backoff::new(Duration::from_secs(2), 2.0, 2))
        ///     .build()
        ///     .unwrap();
        /// let resp = layer.layer(always(529)).oneshot(req()).await.unwrap();
        /// let report = RetryReport::of(&resp);
        /// // A 529, retried twice after 2 and 4 s.
        /// assert_eq!((report.attempts, report.total_wait), (3, Duration::from_secs(6)));
        /// # }
        /// ```
        overloaded: Backoff => overloaded
    );
    setter!(
        /// Jitter of computed delays.
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # let req = || Request::new(ReplayBody::empty());
        /// let layer = BackoffRetryLayer::builder(LimitState::new())
        ///     .max_rate_limit_retries(1)
        ///     .jitter(Jitter::Equal)
        ///     .build()
        ///     .unwrap();
        /// let resp = layer.layer(always(429)).oneshot(req()).await.unwrap();
        /// let report = RetryReport::of(&resp);
        /// // The 20 s delay becomes a random one between 10 and 20 s.
        /// let w = report.total_wait;
        /// assert!(w >= Duration::from_secs(10) && w <= Duration::from_secs(20), "{w:?}");
        /// # }
        /// ```
        jitter: Jitter => jitter
    );
    setter!(
        /// The cap of any one delay. Computed delays are clamped to it; a server delay
        /// above it follows [`over_cap`](Self::over_cap).
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # let req = || Request::new(ReplayBody::empty());
        /// let layer = BackoffRetryLayer::builder(LimitState::new())
        ///     .max_rate_limit_retries(4)
        ///     .max_delay(Duration::from_secs(120))
        ///     .build()
        ///     .unwrap();
        /// let resp = layer.layer(always(429)).oneshot(req()).await.unwrap();
        /// let report = RetryReport::of(&resp);
        /// // 20 + 40 + 80 s, then 160 s clamped to 120 s.
        /// assert_eq!(report.total_wait, Duration::from_secs(260));
        /// # }
        /// ```
        max_delay: Duration => max_delay
    );
    setter!(
        /// What to do with a server delay above [`max_delay`](Self::max_delay).
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # let req = || Request::new(ReplayBody::empty());
        /// # let hour = service_fn(|_: Request<ReplayBody>| async {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(429).header("retry-after", "3600").body(String::new()).unwrap())
        /// # });
        /// let layer = BackoffRetryLayer::builder(LimitState::new())
        ///     .over_cap(OverCap::GiveUp)
        ///     .build()
        ///     .unwrap();
        /// // A 429 asking for an hour, above the 15 min cap: returned at once.
        /// let resp = layer.layer(hour).oneshot(req()).await.unwrap();
        /// let report = RetryReport::of(&resp);
        /// assert_eq!((report.attempts, report.reason), (1, StopReason::DelayAboveCap));
        /// # }
        /// ```
        over_cap: OverCap => over_cap
    );
    setter!(
        /// The most time one logical request may spend waiting in total.
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # let req = || Request::new(ReplayBody::empty());
        /// let layer = BackoffRetryLayer::builder(LimitState::new())
        ///     .max_total_wait(Duration::from_secs(60))
        ///     .build()
        ///     .unwrap();
        /// let resp = layer.layer(always(429)).oneshot(req()).await.unwrap();
        /// let report = RetryReport::of(&resp);
        /// // 20 + 40 s fit in the minute; the next 80 s would not.
        /// assert_eq!((report.attempts, report.total_wait.as_secs()), (3, 60));
        /// assert_eq!(report.reason, StopReason::WaitBudgetExhausted);
        /// # }
        /// ```
        max_total_wait: Duration => max_total_wait
    );
    setter!(
        /// How much of an error response's body is read to classify it (the rest is
        /// passed on unread).
        ///
        /// ```
        /// use ratelayer_core::LimitState;
        /// use ratelayer_retry::BackoffRetryLayer;
        /// let b = || BackoffRetryLayer::builder(LimitState::new());
        /// assert!(b().max_error_body(16 * 1024).build().is_ok());
        /// // Error bodies are small: a bound above 16 MiB is refused.
        /// let err = b().max_error_body(32 << 20).build().unwrap_err();
        /// assert_eq!(err.setting, "retry.max_error_body");
        /// ```
        max_error_body: usize => max_body
    );
    setter!(
        /// Pace attempts from what the provider said (see the crate docs).
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # let req = || Request::new(ReplayBody::empty());
        /// # let mut request = req();
        /// # let scope = ratelayer_core::meta::ensure(&mut request).scope();
        /// # let mut said = ratelayer_core::RateLimitSnapshot::default();
        /// let state = LimitState::new();
        /// said.requests.remaining = Some(0);
        /// said.requests.reset = Some(Duration::from_secs(30));
        /// state.observe(&scope, said); // (what ratelayer-tier publishes)
        /// let paced = BackoffRetryLayer::builder(state.clone()).probe(false).build().unwrap();
        /// let unpaced = BackoffRetryLayer::builder(state).pacing(false).build().unwrap();
        /// let start = tokio::time::Instant::now();
        /// unpaced.layer(always(200)).oneshot(req()).await.unwrap();
        /// assert_eq!(start.elapsed(), Duration::ZERO);
        /// paced.layer(always(200)).oneshot(request).await.unwrap();
        /// assert_eq!(start.elapsed(), Duration::from_secs(30));
        /// # }
        /// ```
        pacing: bool => pacing
    );
    setter!(
        /// With pacing on, send a scope's first request alone and hold the others until
        /// its response has told the account's limits (on by default). Turn it off when
        /// the limits are configured in the layers inside (a TPM or concurrency budget):
        /// they already keep the first burst within them, and the probe would cost one
        /// response's latency. `ratelayer`'s presets do so when limits are given.
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # fn req() -> Request<ReplayBody> { Request::new(ReplayBody::empty()) }
        /// # async fn two_at_once(layer: BackoffRetryLayer) -> Duration {
        /// #     let slow = service_fn(|_: Request<ReplayBody>| async {
        /// #         tokio::time::sleep(Duration::from_secs(1)).await;
        /// #         Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        /// #     });
        /// #     let start = tokio::time::Instant::now();
        /// #     let (a, b) = (layer.layer(slow.clone()), layer.layer(slow));
        /// #     let (ra, rb) = tokio::join!(a.oneshot(req()), b.oneshot(req()));
        /// #     (ra.unwrap(), rb.unwrap());
        /// #     start.elapsed()
        /// # }
        /// // Two requests to a new scope, each answered in 1 s.
        /// let probing = BackoffRetryLayer::builder(LimitState::new()).build().unwrap();
        /// let not_probing = BackoffRetryLayer::builder(LimitState::new()).probe(false).build().unwrap();
        /// assert_eq!(two_at_once(probing).await, Duration::from_secs(2)); // one after the other
        /// assert_eq!(two_at_once(not_probing).await, Duration::from_secs(1)); // side by side
        /// # }
        /// ```
        probe: bool => probe
    );
    setter!(
        /// The margin added to a learned window before a slot counts as free again.
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # let req = || Request::new(ReplayBody::empty());
        /// # let mut request = req();
        /// # let scope = ratelayer_core::meta::ensure(&mut request).scope();
        /// # let mut said = ratelayer_core::RateLimitSnapshot::default();
        /// let state = LimitState::new();
        /// said.requests.limit = Some(1);
        /// said.requests.window = Some(Duration::from_secs(10));
        /// state.observe(&scope, said); // learned: 1 request per 10 s
        /// let layer = BackoffRetryLayer::builder(state).probe(false).pacing_margin(Duration::ZERO);
        /// let svc = layer.build().unwrap().layer(always(200));
        /// let start = tokio::time::Instant::now();
        /// svc.clone().oneshot(req()).await.unwrap();
        /// svc.oneshot(request).await.unwrap();
        /// // The second starts when the window ends, not 0.5 s later (the default margin).
        /// assert_eq!(start.elapsed(), Duration::from_secs(10));
        /// # }
        /// ```
        pacing_margin: Duration => pacing_margin
    );
    setter!(
        /// Publish every wait after a rate-limited response as the scope's cooldown, so
        /// queued requests wait too (inner layers' own refusals, such as a `WaitTooLong`
        /// error, are not published).
        ///
        /// ```
        /// # use std::time::Duration;
        /// # use http::{Request, Response};
        /// # use ratelayer_core::{LimitState, ReplayBody};
        /// # use ratelayer_retry::{BackoffRetryLayerBuilder, Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
        /// # use tower::{Layer, ServiceExt, service_fn};
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
        /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
        /// # });
        /// # let req = || Request::new(ReplayBody::empty());
        /// # async fn cooldown_1s_into_a_429(f: fn(BackoffRetryLayerBuilder) -> BackoffRetryLayerBuilder) -> Duration {
        /// #     let always_429 = service_fn(|_: Request<ReplayBody>| async {
        /// #         Ok::<_, std::convert::Infallible>(Response::builder().status(429).body(String::new()).unwrap())
        /// #     });
        /// #     let mut request = Request::new(ReplayBody::empty());
        /// #     let scope = ratelayer_core::meta::ensure(&mut request).scope();
        /// #     let state = LimitState::new();
        /// #     let layer = f(BackoffRetryLayer::builder(state.clone())).build().unwrap();
        /// #     let task = tokio::spawn(layer.layer(always_429).oneshot(request));
        /// #     tokio::time::sleep(Duration::from_secs(1)).await;
        /// #     task.abort();
        /// #     state.cooldown_remaining(&scope)
        /// # }
        /// // During the 20 s wait after a 429, the scope's other requests wait too ...
        /// assert_eq!(cooldown_1s_into_a_429(|b| b).await, Duration::from_secs(19));
        /// // ... unless the wait is kept to this request.
        /// assert_eq!(cooldown_1s_into_a_429(|b| b.share_cooldown(false)).await, Duration::ZERO);
        /// # }
        /// ```
        share_cooldown: bool => share_cooldown
    );

    /// The retry budget: retries may be at most `percent` of the requests of the last
    /// `ttl` (1 to 60 s), plus a floor of `min_per_sec` retries per second (tower's
    /// `TpsBudget` algorithm, with one clock read per request shared with the pacing
    /// gate).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, ReplayBody};
    /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
    /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
    /// # });
    /// # let req = || Request::new(ReplayBody::empty());
    /// let layer = BackoffRetryLayer::builder(LimitState::new())
    ///     .retry_budget(Duration::from_secs(10), 0, 0.0)
    ///     .build()
    ///     .unwrap();
    /// let resp = layer.layer(always(500)).oneshot(req()).await.unwrap();
    /// let report = RetryReport::of(&resp);
    /// // No floor and no share of traffic: not even one retry of the 500.
    /// assert_eq!((report.attempts, report.reason), (1, StopReason::RetryBudgetExhausted));
    /// # }
    /// ```
    pub fn retry_budget(mut self, ttl: Duration, min_per_sec: u32, percent: f32) -> Self {
        self.cfg.budget_ttl = ttl;
        self.cfg.budget_min_per_sec = min_per_sec;
        self.cfg.budget_percent = percent;
        self
    }

    /// The classifier (default: [`DefaultClassifier`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, ReplayBody};
    /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
    /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
    /// # });
    /// # let req = || Request::new(ReplayBody::empty());
    /// # use ratelayer_core::{Classification, Classifier, DefaultClassifier, RateLimitSnapshot};
    /// # use http::{HeaderMap, StatusCode};
    /// /// Retries 418 as a transient failure; everything else as the default does.
    /// struct TeapotIsTransient;
    /// impl Classifier for TeapotIsTransient {
    ///     fn classify_response(&self, status: StatusCode, h: &HeaderMap, body: Option<&[u8]>,
    ///     s: &RateLimitSnapshot) -> Classification {
    ///         if status == StatusCode::IM_A_TEAPOT { return Classification::Transient { retry_after: None } }
    ///         DefaultClassifier::new().classify_response(status, h, body, s)
    ///     }
    /// #   fn classify_error(&self, e: &(dyn std::error::Error + 'static)) -> Classification { DefaultClassifier::new().classify_error(e) }
    /// }
    /// let layer = BackoffRetryLayer::builder(LimitState::new()).classifier(TeapotIsTransient).build().unwrap();
    /// let resp = layer.layer(always(418)).oneshot(req()).await.unwrap();
    /// assert_eq!(RetryReport::of(&resp).attempts, 4); // the 3 transient retries
    /// # }
    /// ```
    pub fn classifier(mut self, classifier: impl Classifier) -> Self {
        self.classifier = Some(Arc::new(classifier));
        self
    }

    /// Seeds the jitter (for reproducible tests). Without a seed, every layer draws
    /// its own.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, ReplayBody};
    /// # use ratelayer_retry::{Backoff, BackoffRetryLayer, Jitter, OverCap, RetryReport, StopReason};
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let always = |status: u16| service_fn(move |_: Request<ReplayBody>| async move {
    /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
    /// # });
    /// # let req = || Request::new(ReplayBody::empty());
    /// # async fn first_wait(layer: BackoffRetryLayer) -> Duration {
    /// #     let always_429 = service_fn(|_: Request<ReplayBody>| async {
    /// #         Ok::<_, std::convert::Infallible>(Response::builder().status(429).body(String::new()).unwrap())
    /// #     });
    /// #     let resp = layer.layer(always_429).oneshot(Request::new(ReplayBody::empty())).await.unwrap();
    /// #     RetryReport::of(&resp).total_wait
    /// # }
    /// let seeded = || {
    ///     BackoffRetryLayer::builder(LimitState::new())
    ///         .max_rate_limit_retries(1)
    ///         .jitter(Jitter::Full)
    ///         .seed(7)
    ///         .build()
    ///         .unwrap()
    /// };
    /// // The same seed draws the same jittered delay.
    /// assert_eq!(first_wait(seeded()).await, first_wait(seeded()).await);
    /// # }
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the configuration and builds the layer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::LimitState;
    /// use ratelayer_retry::BackoffRetryLayer;
    /// let e = BackoffRetryLayer::builder(LimitState::new())
    ///     .retry_budget(Duration::from_secs(120), 1, 0.2)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(e.to_string().contains("retry.budget.ttl"));
    /// ```
    pub fn build(self) -> Result<BackoffRetryLayer, ConfigError> {
        let c = &self.cfg;
        let err = |s: &str, p: &str| Err(ConfigError::new(s, p));
        for (name, b) in [
            ("retry.rate_limit", c.rate_limit),
            ("retry.transient", c.transient),
            ("retry.overloaded", c.overloaded),
        ] {
            if !(b.factor.is_finite() && b.factor >= 1.0) {
                let s = if name == "retry.rate_limit" {
                    "retry.factor".to_string()
                } else {
                    format!("{name}.factor")
                };
                return err(
                    &s,
                    "the backoff factor must be a finite number of at least 1",
                );
            }
            if b.base.is_zero() {
                return err(
                    &format!("{name}.base"),
                    "the base delay must be positive (a zero delay retries in a tight loop)",
                );
            }
        }
        if c.max_delay.is_zero() {
            return err("retry.max_delay", "the per-delay cap must be positive");
        }
        if c.max_total_wait < c.max_delay.min(c.rate_limit.base) {
            return err(
                "retry.max_total_wait",
                "the total wait budget is below the first delay: nothing could ever be retried",
            );
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&c.budget_ttl) {
            return err("retry.budget.ttl", "must be between 1 and 60 seconds");
        }
        if !(c.budget_percent.is_finite() && (0.0..=1000.0).contains(&c.budget_percent)) {
            return err("retry.budget.percent", "must be between 0 and 1000");
        }
        if c.budget_min_per_sec >= i32::MAX as u32 {
            return err("retry.budget.min_per_sec", "must be below 2^31 - 1");
        }
        if c.max_body > 16 * 1024 * 1024 {
            return err(
                "retry.max_error_body",
                "at most 16 MiB (error bodies are small; a bigger bound only wastes memory)",
            );
        }
        let budget = RetryBudget::new(
            c.budget_ttl,
            c.budget_min_per_sec,
            c.budget_percent,
            Instant::now(),
        );
        Ok(BackoffRetryLayer {
            shared: Arc::new(Shared {
                budget,
                rng: Rng::new(self.seed.unwrap_or_else(random_seed)),
                classifier: self
                    .classifier
                    .unwrap_or_else(|| Arc::new(DefaultClassifier::new())),
                state: self.state,
                gate: Arc::new(Gate::default()),
                cfg: self.cfg,
            }),
        })
    }
}

/// What every service of one layer shares.
pub(crate) struct Shared {
    pub(crate) cfg: Config,
    pub(crate) classifier: Arc<dyn Classifier>,
    pub(crate) state: LimitState,
    pub(crate) budget: RetryBudget,
    pub(crate) rng: Rng,
    pub(crate) gate: Arc<Gate>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Retries used so far, per class.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    rate_limited: u32,
    overloaded: u32,
    transient: u32,
}

/// What to do after an attempt.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    Stop(StopReason),
    Retry(Duration),
}

/// The inputs of one decision.
pub(crate) struct Attempt<'a> {
    pub(crate) class: Classification,
    pub(crate) snapshot: Option<&'a RateLimitSnapshot>,
    pub(crate) status: Option<StatusCode>,
    pub(crate) scope: &'a Scope,
    pub(crate) total_wait: Duration,
    pub(crate) deadline: Option<Instant>,
    pub(crate) replayable: bool,
}

fn reset_source(d: Dimension) -> &'static str {
    match d {
        Dimension::Requests => "reset-requests",
        Dimension::Tokens => "reset-tokens",
        Dimension::InputTokens => "reset-input-tokens",
        Dimension::OutputTokens => "reset-output-tokens",
    }
}

impl Shared {
    /// Decides whether and how long to wait before the next attempt, logs the wait and
    /// publishes a rate-limit wait as the scope's cooldown.
    pub(crate) fn decide(&self, a: Attempt<'_>, counters: &mut Counters) -> Decision {
        let cfg = &self.cfg;
        if a.class == Classification::Success {
            return Decision::Stop(StopReason::Success);
        }
        let should = a.snapshot.and_then(|s| s.should_retry);
        if should == Some(false) {
            return Decision::Stop(StopReason::ServerSaidNoRetry);
        }
        let class = if a.class.is_retryable() {
            a.class
        } else if should == Some(true) {
            Classification::Transient {
                retry_after: a.class.retry_after(),
            }
        } else {
            return Decision::Stop(StopReason::NotRetryable(a.class.as_str()));
        };
        let rate_limited = matches!(class, Classification::RateLimited { .. });
        let (what, backoff, count) = match class {
            Classification::RateLimited { .. } => {
                ("rate limited", cfg.rate_limit, &mut counters.rate_limited)
            }
            Classification::Overloaded { .. } => {
                ("overloaded", cfg.overloaded, &mut counters.overloaded)
            }
            _ => ("transient failure", cfg.transient, &mut counters.transient),
        };
        if *count >= backoff.max_retries {
            return Decision::Stop(StopReason::RetriesExhausted);
        }
        if !a.replayable {
            return Decision::Stop(StopReason::NotReplayable);
        }
        let server = a
            .snapshot
            .and_then(|s| {
                s.retry_after.map(|d| {
                    (
                        d,
                        s.retry_after_source.map_or("server", DelaySource::as_str),
                    )
                })
            })
            .or_else(|| {
                a.snapshot
                    .filter(|_| rate_limited)
                    .and_then(|s| s.exhausted())
                    .and_then(|(dim, reset)| reset.map(|r| (r, reset_source(dim))))
            })
            .or_else(|| class.retry_after().map(|d| (d, "classifier")));
        let (tier, base) = if rate_limited {
            match self.state.tier(a.scope) {
                Some(t) => (t.name, t.base_delay),
                None => (Arc::from("free"), backoff.base),
            }
        } else {
            (Arc::from("-"), backoff.base)
        };
        let (delay, source) = match server {
            Some((d, src)) => {
                if d > cfg.max_delay && cfg.over_cap == OverCap::GiveUp {
                    tracing::info!(scope = %a.scope, delay_ms = d.as_millis() as u64,
                        max_delay_ms = cfg.max_delay.as_millis() as u64, source = src,
                        "server asked for {:.1}s, above the {:.1}s cap: giving up",
                        d.as_secs_f64(), cfg.max_delay.as_secs_f64());
                    return Decision::Stop(StopReason::DelayAboveCap);
                }
                (d, src)
            }
            None => {
                let d = backoff.delay(base, *count).min(cfg.max_delay);
                (self.rng.jitter(cfg.jitter, d), "backoff")
            }
        };
        // A cooldown already in force (another request's 429) is waited for anyway.
        let delay = delay.max(self.state.cooldown_remaining(a.scope));
        if a.total_wait.saturating_add(delay) > cfg.max_total_wait {
            return Decision::Stop(StopReason::WaitBudgetExhausted);
        }
        let now = Instant::now();
        if a.deadline.is_some_and(|d| now + delay > d) {
            return Decision::Stop(StopReason::DeadlineExceeded);
        }
        if !self.budget.withdraw(now) {
            return Decision::Stop(StopReason::RetryBudgetExhausted);
        }
        *count += 1;
        // Only a provider's rate-limited response makes the whole scope wait: an inner
        // layer's own refusal (a `WaitTooLong` for one large request) does not.
        if rate_limited && a.status.is_some() && cfg.share_cooldown && !delay.is_zero() {
            self.state.set_cooldown(a.scope, now + delay);
        }
        let status = a
            .status
            .map_or_else(|| "error".to_string(), |s| s.as_u16().to_string());
        tracing::info!(
            scope = %a.scope,
            status = %status,
            classification = class.as_str(),
            delay_ms = delay.as_millis() as u64,
            retry = *count,
            max_retries = backoff.max_retries,
            tier = %tier,
            base_delay_ms = base.as_millis() as u64,
            source,
            "{what} ({status}), waiting {:.1}s before retry {}/{} (tier {tier}, base {}s, source {source})",
            delay.as_secs_f64(),
            *count,
            backoff.max_retries,
            base.as_secs_f64(),
        );
        Decision::Retry(delay)
    }
}

impl Shared {
    /// A logical request begins at `now` (the budget's one deposit for it).
    pub(crate) fn budget_deposit(&self, now: Instant) {
        self.budget.deposit(now);
    }
}
