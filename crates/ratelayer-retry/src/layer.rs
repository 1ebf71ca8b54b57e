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
/// use std::time::Duration;
/// use ratelayer_core::LimitState;
/// use ratelayer_retry::{BackoffRetryLayer, Jitter};
///
/// let layer = BackoffRetryLayer::builder(LimitState::new())
///     .max_rate_limit_retries(6)
///     .jitter(Jitter::Equal)
///     .max_delay(Duration::from_secs(600))
///     .build()
///     .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct BackoffRetryLayer {
    shared: Arc<Shared>,
}

impl BackoffRetryLayer {
    /// A layer with the default configuration (see [`BackoffRetryLayerBuilder`]).
    ///
    /// ```
    /// use ratelayer_core::LimitState;
    /// use ratelayer_retry::BackoffRetryLayer;
    /// let layer = BackoffRetryLayer::new(LimitState::new());
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
    /// use ratelayer_core::LimitState;
    /// use ratelayer_retry::BackoffRetryLayer;
    /// let layer = BackoffRetryLayer::builder(LimitState::new()).build().unwrap();
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
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.max_rate_limit_retries(3);
        /// ```
        max_rate_limit_retries: u32 => rate_limit.max_retries
    );
    setter!(
        /// The base delay of rate-limit backoff when the scope's tier is unknown.
        ///
        /// ```
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.default_base_delay(std::time::Duration::from_secs(10));
        /// ```
        default_base_delay: Duration => rate_limit.base
    );
    setter!(
        /// The growth factor of rate-limit backoff (at least 1).
        ///
        /// ```
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.factor(3.0);
        /// ```
        factor: f64 => rate_limit.factor
    );
    setter!(
        /// Backoff and retry count of transient failures (5xx, 408, connection errors,
        /// timeouts).
        ///
        /// ```
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.transient(ratelayer_retry::Backoff::new(std::time::Duration::from_millis(100), 2.0, 5));
        /// ```
        transient: Backoff => transient
    );
    setter!(
        /// Backoff and retry count of overloaded responses (529, 503 "overloaded").
        ///
        /// ```
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.overloaded(ratelayer_retry::Backoff::new(std::time::Duration::from_secs(2), 2.0, 3));
        /// ```
        overloaded: Backoff => overloaded
    );
    setter!(
        /// Jitter of computed delays.
        ///
        /// ```
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.jitter(ratelayer_retry::Jitter::Full);
        /// ```
        jitter: Jitter => jitter
    );
    setter!(
        /// The cap of any one delay. Computed delays are clamped to it; a server delay
        /// above it follows [`over_cap`](Self::over_cap).
        ///
        /// ```
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.max_delay(std::time::Duration::from_secs(120));
        /// ```
        max_delay: Duration => max_delay
    );
    setter!(
        /// What to do with a server delay above [`max_delay`](Self::max_delay).
        ///
        /// ```
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.over_cap(ratelayer_retry::OverCap::GiveUp);
        /// ```
        over_cap: OverCap => over_cap
    );
    setter!(
        /// The most time one logical request may spend waiting in total.
        ///
        /// ```
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.max_total_wait(std::time::Duration::from_secs(300));
        /// ```
        max_total_wait: Duration => max_total_wait
    );
    setter!(
        /// How much of an error response's body is read to classify it (the rest is
        /// passed on unread).
        ///
        /// ```
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.max_error_body(16 * 1024);
        /// ```
        max_error_body: usize => max_body
    );
    setter!(
        /// Pace attempts from what the provider said (see the crate docs).
        ///
        /// ```
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.pacing(false);
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
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.probe(false);
        /// ```
        probe: bool => probe
    );
    setter!(
        /// The margin added to a learned window before a slot counts as free again.
        ///
        /// ```
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.pacing_margin(std::time::Duration::ZERO);
        /// ```
        pacing_margin: Duration => pacing_margin
    );
    setter!(
        /// Publish every wait after a rate-limited response as the scope's cooldown, so
        /// queued requests wait too (inner layers' own refusals, such as a `WaitTooLong`
        /// error, are not published).
        ///
        /// ```
        /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
        /// let b = b.share_cooldown(false);
        /// ```
        share_cooldown: bool => share_cooldown
    );

    /// The retry budget: retries may be at most `percent` of the requests of the last
    /// `ttl` (1 to 60 s), plus a floor of `min_per_sec` retries per second (tower's
    /// `TpsBudget` algorithm, with one clock read per request shared with the pacing
    /// gate).
    ///
    /// ```
    /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
    /// let b = b.retry_budget(std::time::Duration::from_secs(10), 1, 0.1);
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
    /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
    /// let b = b.classifier(ratelayer_core::DefaultClassifier::new());
    /// ```
    pub fn classifier(mut self, classifier: impl Classifier) -> Self {
        self.classifier = Some(Arc::new(classifier));
        self
    }

    /// Seeds the jitter (for reproducible tests). Without a seed, every layer draws
    /// its own.
    ///
    /// ```
    /// # let b = ratelayer_retry::BackoffRetryLayer::builder(Default::default());
    /// let b = b.seed(7);
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
