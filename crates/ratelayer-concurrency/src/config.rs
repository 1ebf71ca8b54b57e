//! Configuration: limits per provider, validated when the layer is built.
//!
//! Limits are data, not code: the example limits of the providers the original system used
//! are written below as configuration, and nothing in the layer knows any provider by name.
//!
//! ```
//! use ratelayer_concurrency::ConcurrencyConfig;
//!
//! // One concurrent request and 4 per minute for Kimi K2; 10 concurrent and 100 ms
//! // between starts for GLM; 5 concurrent, 200 ms and 20 per minute for Featherless.
//! let config: ConcurrencyConfig = serde_json::from_str(r#"{
//!     "providers": {
//!         "kimi":        { "max_concurrent": 1,
//!                          "reservoir": { "requests": 4, "interval_secs": 60 } },
//!         "glm":         { "max_concurrent": 10, "min_spacing_ms": 100 },
//!         "featherless": { "max_concurrent": 5, "min_spacing_ms": 200,
//!                          "reservoir": { "requests": 20, "interval_secs": 60 } }
//!     }
//! }"#).unwrap();
//! config.validate().unwrap();
//! assert_eq!(config.limits_for("kimi", None).max_concurrent, Some(1));
//! assert_eq!(config.limits_for("other", None).max_concurrent, None);
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use ratelayer_core::ConfigError;
use serde::{Deserialize, Serialize};

/// What a request does when its scope's queue is full.
///
/// ```
/// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits, WhenFull};
/// use ratelayer_core::QueueFull;
/// use tower::{Layer, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use std::convert::Infallible;
/// # use http::{Request, Response};
/// # use ratelayer_core::{RequestMeta, meta};
/// # let request = || {
/// #     let mut req = Request::new(String::new());
/// #     meta::set(&mut req, RequestMeta::new("kimi", 10, 10));
/// #     req
/// # };
/// # let inner = tower::service_fn(|_: Request<String>| async { Ok::<_, Infallible>(Response::new(String::from("ok"))) });
/// let limits = Limits::new().max_concurrent(1).queue_capacity(1).when_full(WhenFull::Fail);
/// let svc = ConcurrencyLayer::new(ConcurrencyConfig::new().provider("kimi", limits)).unwrap().layer(inner);
/// let in_flight = svc.clone().oneshot(request()).await.unwrap(); // holds the permit
/// let mut queued = tokio_test::task::spawn(svc.clone().oneshot(request()));
/// tokio_test::assert_pending!(queued.poll()); // the queue's one place
/// let err = svc.clone().oneshot(request()).await.unwrap_err();
/// assert_eq!(err.downcast_ref::<QueueFull>().unwrap().capacity, 1);
/// # drop(in_flight);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait anyway: the request keeps its place in line behind the queue (default).
    #[default]
    Wait,
    /// Fail at once with [`QueueFull`](ratelayer_core::QueueFull).
    Fail,
}

/// A reservoir: at most `requests` starts in any window of `interval_secs` seconds, of
/// which at most `burst` back to back.
///
/// ```
/// use ratelayer_concurrency::Reservoir;
/// let r = Reservoir::new(4, std::time::Duration::from_secs(60)).with_burst(2);
/// assert_eq!((r.requests, r.interval_secs, r.burst), (4, 60.0, Some(2)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservoir {
    /// Requests allowed per interval.
    pub requests: u32,
    /// The interval, in seconds (fractions allowed).
    pub interval_secs: f64,
    /// How many requests may start back to back; the rest are spread evenly over the
    /// interval. `None` (default) lets the whole reservoir go at once.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl Reservoir {
    /// `requests` per `interval`, no burst limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_concurrency::Reservoir;
    /// let r = Reservoir::new(4, Duration::from_secs(60));
    /// assert_eq!((r.requests, r.interval_secs, r.burst), (4, 60.0, None));
    /// ```
    pub fn new(requests: u32, interval: Duration) -> Self {
        Reservoir {
            requests,
            interval_secs: interval.as_secs_f64(),
            burst: None,
        }
    }

    /// Limits how many requests may start back to back.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_concurrency::{Limits, Reservoir};
    /// assert_eq!(Reservoir::new(20, Duration::from_secs(60)).with_burst(5).burst, Some(5));
    /// let too_big = Limits::new().reservoir(Reservoir::new(4, Duration::from_secs(60)).with_burst(5));
    /// assert_eq!(too_big.validate("providers.kimi").unwrap_err().setting, "providers.kimi.reservoir.burst");
    /// ```
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The interval as a duration (zero if it is not a valid, positive number).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_concurrency::Reservoir;
    /// assert_eq!(Reservoir::new(4, Duration::from_millis(1500)).interval(), Duration::from_millis(1500));
    /// let nan = Reservoir { requests: 4, interval_secs: f64::NAN, burst: None };
    /// assert_eq!(nan.interval(), Duration::ZERO);
    /// ```
    pub fn interval(&self) -> Duration {
        Duration::try_from_secs_f64(self.interval_secs).unwrap_or_default()
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.requests == 0 {
            return Err(ConfigError::new(
                format!("{at}.reservoir.requests"),
                "must be at least 1; remove the reservoir to allow unlimited requests",
            ));
        }
        if !(self.interval_secs.is_finite() && self.interval_secs > 0.0)
            || self.interval().is_zero()
        {
            return Err(ConfigError::new(
                format!("{at}.reservoir.interval_secs"),
                format!(
                    "must be a positive number of seconds, got {}",
                    self.interval_secs
                ),
            ));
        }
        if let Some(b) = self.burst
            && (b == 0 || b > self.requests)
        {
            return Err(ConfigError::new(
                format!("{at}.reservoir.burst"),
                format!(
                    "must be between 1 and requests ({}), got {b}",
                    self.requests
                ),
            ));
        }
        Ok(())
    }
}

/// The limits of one scope (a provider and credential, optionally a model).
///
/// Every limit is optional; the default limits nothing.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_concurrency::{Limits, Reservoir, WhenFull};
///
/// let kimi = Limits::new()
///     .max_concurrent(1)
///     .reservoir(Reservoir::new(4, Duration::from_secs(60)))
///     .queue_capacity(100)
///     .when_full(WhenFull::Fail);
/// assert_eq!(kimi.max_concurrent, Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// At most this many requests in flight (a streamed response counts until its body
    /// ends or is dropped). `None`: unlimited.
    pub max_concurrent: Option<u32>,
    /// A reservoir of requests per interval.
    pub reservoir: Option<Reservoir>,
    /// At least this many milliseconds between two request starts.
    pub min_spacing_ms: Option<u64>,
    /// How many requests may wait for a permit. `None`: unbounded.
    pub queue_capacity: Option<usize>,
    /// What a request does when the queue is full.
    pub when_full: WhenFull,
    /// With requests waiting in both priority classes, at most this many high-priority
    /// requests are admitted in a row before one normal request (so normal requests are
    /// never starved). Default 4.
    pub high_priority_streak: u32,
    /// Also enforce the request limit the provider stated (read from the shared
    /// [`LimitState`](ratelayer_core::LimitState): the tier's requests per minute and the
    /// last `limit-requests` header), when it is stricter. Default true.
    pub learn_from_provider: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent: None,
            reservoir: None,
            min_spacing_ms: None,
            queue_capacity: None,
            when_full: WhenFull::Wait,
            high_priority_streak: 4,
            learn_from_provider: true,
        }
    }
}

impl Limits {
    /// No limits.
    ///
    /// ```
    /// use ratelayer_concurrency::{Limits, WhenFull};
    /// let l = Limits::new();
    /// assert_eq!((l.max_concurrent, l.reservoir, l.queue_capacity), (None, None, None));
    /// assert_eq!((l.when_full, l.high_priority_streak, l.learn_from_provider), (WhenFull::Wait, 4, true));
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the maximum of concurrent requests.
    ///
    /// ```
    /// use ratelayer_concurrency::Limits;
    /// assert_eq!(Limits::new().max_concurrent(1).max_concurrent, Some(1));
    /// let err = Limits::new().max_concurrent(0).validate("default").unwrap_err();
    /// assert_eq!(err.setting, "default.max_concurrent");
    /// ```
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// Sets the reservoir.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_concurrency::{Limits, Reservoir};
    /// let l = Limits::new().reservoir(Reservoir::new(4, Duration::from_secs(60)));
    /// assert_eq!(l.reservoir.map(|r| r.requests), Some(4));
    /// let empty = Limits::new().reservoir(Reservoir::new(0, Duration::from_secs(60)));
    /// assert_eq!(empty.validate("default").unwrap_err().setting, "default.reservoir.requests");
    /// ```
    pub fn reservoir(mut self, reservoir: Reservoir) -> Self {
        self.reservoir = Some(reservoir);
        self
    }

    /// Sets the minimum time between request starts (millisecond precision).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_concurrency::Limits;
    /// let l = Limits::new().min_spacing(Duration::from_micros(100_900));
    /// assert_eq!(l.min_spacing_ms, Some(100)); // millisecond precision
    /// ```
    pub fn min_spacing(mut self, spacing: Duration) -> Self {
        self.min_spacing_ms = Some(u64::try_from(spacing.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Bounds the queue.
    ///
    /// ```
    /// use ratelayer_concurrency::{Limits, WhenFull};
    /// assert_eq!(Limits::new().queue_capacity(100).queue_capacity, Some(100));
    /// let none_may_wait = Limits::new().queue_capacity(0).when_full(WhenFull::Fail);
    /// assert_eq!(none_may_wait.validate("default").unwrap_err().setting, "default.queue_capacity");
    /// ```
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = Some(capacity);
        self
    }

    /// Sets what happens when the queue is full.
    ///
    /// ```
    /// use ratelayer_concurrency::{Limits, WhenFull};
    /// assert_eq!(Limits::new().when_full, WhenFull::Wait);
    /// assert_eq!(Limits::new().when_full(WhenFull::Fail).when_full, WhenFull::Fail);
    /// ```
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// Sets how many high-priority requests may pass normal ones in a row.
    ///
    /// ```
    /// use ratelayer_concurrency::Limits;
    /// assert_eq!(Limits::new().high_priority_streak(8).high_priority_streak, 8);
    /// let err = Limits::new().high_priority_streak(0).validate("default").unwrap_err();
    /// assert_eq!(err.setting, "default.high_priority_streak");
    /// ```
    pub fn high_priority_streak(mut self, streak: u32) -> Self {
        self.high_priority_streak = streak;
        self
    }

    /// Enables or disables tightening from the provider's stated request limit.
    ///
    /// ```
    /// use ratelayer_concurrency::Limits;
    /// assert!(Limits::new().learn_from_provider);
    /// assert!(!Limits::new().learn_from_provider(false).learn_from_provider);
    /// ```
    pub fn learn_from_provider(mut self, learn: bool) -> Self {
        self.learn_from_provider = learn;
        self
    }

    /// The minimum spacing as a duration (zero if none).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_concurrency::Limits;
    /// assert_eq!(Limits::new().min_spacing_duration(), Duration::ZERO);
    /// let glm = Limits::new().min_spacing(Duration::from_millis(100));
    /// assert_eq!(glm.min_spacing_duration(), Duration::from_millis(100));
    /// ```
    pub fn min_spacing_duration(&self) -> Duration {
        Duration::from_millis(self.min_spacing_ms.unwrap_or(0))
    }

    /// Checks the limits; `at` names them in the error (such as `providers.kimi`).
    ///
    /// ```
    /// use ratelayer_concurrency::Limits;
    /// let err = Limits::new().max_concurrent(0).validate("providers.kimi").unwrap_err();
    /// assert_eq!(err.setting, "providers.kimi.max_concurrent");
    /// ```
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.max_concurrent == Some(0) {
            return Err(ConfigError::new(
                format!("{at}.max_concurrent"),
                "must be at least 1 (0 would block every request); omit it for no limit",
            ));
        }
        if let Some(r) = &self.reservoir {
            r.validate(at)?;
        }
        if self.queue_capacity == Some(0) && self.when_full == WhenFull::Fail {
            return Err(ConfigError::new(
                format!("{at}.queue_capacity"),
                "0 with when_full = fail rejects every request that cannot start at once; \
                 use at least 1, or when_full = wait",
            ));
        }
        for (key, quota) in crate::limiter::buckets(self) {
            quota.validate(&format!("{at}: {}", key.describe()))?;
        }
        if self.high_priority_streak == 0 {
            return Err(ConfigError::new(
                format!("{at}.high_priority_streak"),
                "must be at least 1 (high priority would never go first)",
            ));
        }
        Ok(())
    }
}

/// Which parts of a request's [`Scope`](ratelayer_core::Scope) its limits are counted
/// under.
///
/// ```
/// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits, ScopeBy};
/// use ratelayer_core::Scope;
/// use tower::{Layer, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use std::convert::Infallible;
/// # use http::{Request, Response};
/// # use ratelayer_core::{RequestMeta, meta};
/// # let request = || {
/// #     let mut req = Request::new(String::new());
/// #     meta::set(&mut req, RequestMeta::new("kimi", 10, 10));
/// #     req
/// # };
/// # let inner = tower::service_fn(|_: Request<String>| async { Ok::<_, Infallible>(Response::new(String::from("ok"))) });
/// let config = ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1));
/// let (layer, handle) = ConcurrencyLayer::pair(config.scope_by(ScopeBy::ProviderCredentialModel)).unwrap();
/// let mut req = request();
/// meta::set(&mut req, RequestMeta::new("kimi", 10, 10).with_model("kimi-k2"));
/// let _res = layer.layer(inner).oneshot(req).await.unwrap();
/// assert_eq!(handle.stats(&Scope::new("kimi").with_model("kimi-k2")).unwrap().in_flight, 1);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeBy {
    /// Provider and credential: all models of an account share the limits (default).
    #[default]
    ProviderCredential,
    /// Provider, credential and model: each model has its own limits.
    ProviderCredentialModel,
}

/// The configuration of a [`ConcurrencyLayer`](crate::ConcurrencyLayer): limits per
/// provider (or `provider/model`), and defaults for the rest. See the
/// [module docs](self) for the documented example limits.
///
/// ```
/// use ratelayer_concurrency::{ConcurrencyConfig, Limits};
/// let config = ConcurrencyConfig::new()
///     .default_limits(Limits::new().max_concurrent(8))
///     .provider("kimi", Limits::new().max_concurrent(1));
/// assert_eq!(config.limits_for("kimi", Some("kimi-k2")).max_concurrent, Some(1));
/// assert_eq!(config.limits_for("openai", None).max_concurrent, Some(8));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConcurrencyConfig {
    /// Limits of providers not listed in `providers`.
    pub default: Limits,
    /// Limits by provider name, or by `provider/model` (which wins over the provider).
    pub providers: BTreeMap<String, Limits>,
    /// Which parts of the scope the limits are counted under.
    pub scope_by: ScopeBy,
}

impl ConcurrencyConfig {
    /// No limits at all.
    ///
    /// ```
    /// use ratelayer_concurrency::ConcurrencyConfig;
    /// let config = ConcurrencyConfig::new();
    /// assert!(config.providers.is_empty());
    /// assert_eq!(config.limits_for("openai", None).max_concurrent, None);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the limits of providers not listed.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, Limits};
    /// let config = ConcurrencyConfig::new().default_limits(Limits::new().max_concurrent(8));
    /// assert_eq!(config.limits_for("any", None).max_concurrent, Some(8));
    /// ```
    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.default = limits;
        self
    }

    /// Sets the limits of a provider (`"kimi"`) or of one model (`"kimi/kimi-k2"`).
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, Limits};
    /// let config = ConcurrencyConfig::new()
    ///     .provider("kimi", Limits::new().max_concurrent(1))
    ///     .provider("kimi/kimi-k2-thinking", Limits::new().max_concurrent(2));
    /// assert_eq!(config.limits_for("kimi", Some("kimi-k2")).max_concurrent, Some(1));
    /// assert_eq!(config.limits_for("kimi", Some("kimi-k2-thinking")).max_concurrent, Some(2));
    /// ```
    pub fn provider(mut self, name: impl Into<String>, limits: Limits) -> Self {
        self.providers.insert(name.into(), limits);
        self
    }

    /// Sets which parts of the scope the limits are counted under.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ScopeBy};
    /// assert_eq!(ConcurrencyConfig::new().scope_by, ScopeBy::ProviderCredential);
    /// let config = ConcurrencyConfig::new().scope_by(ScopeBy::ProviderCredentialModel);
    /// assert_eq!(config.scope_by, ScopeBy::ProviderCredentialModel);
    /// ```
    pub fn scope_by(mut self, scope_by: ScopeBy) -> Self {
        self.scope_by = scope_by;
        self
    }

    /// The limits that apply to `provider` and `model`.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, Limits};
    /// let config = ConcurrencyConfig::new()
    ///     .default_limits(Limits::new().max_concurrent(8))
    ///     .provider("glm", Limits::new().max_concurrent(10))
    ///     .provider("glm/glm-4.6", Limits::new().max_concurrent(3));
    /// let max = |provider, model| config.limits_for(provider, model).max_concurrent;
    /// assert_eq!(max("glm", Some("glm-4.6")), Some(3)); // provider/model first
    /// assert_eq!(max("glm", Some("glm-4.5")), Some(10)); // then the provider
    /// assert_eq!(max("openai", Some("gpt-4o")), Some(8)); // then the default
    /// ```
    pub fn limits_for(&self, provider: &str, model: Option<&str>) -> &Limits {
        if let Some(m) = model {
            // `provider/model`, joined on the stack when short (every request asks).
            let mut buf = [0u8; 128];
            let n = provider.len() + 1 + m.len();
            let found = if n <= buf.len() {
                buf[..provider.len()].copy_from_slice(provider.as_bytes());
                buf[provider.len()] = b'/';
                buf[provider.len() + 1..n].copy_from_slice(m.as_bytes());
                std::str::from_utf8(&buf[..n])
                    .ok()
                    .and_then(|key| self.providers.get(key))
            } else {
                self.providers.get(&format!("{provider}/{m}"))
            };
            if let Some(l) = found {
                return l;
            }
        }
        self.providers.get(provider).unwrap_or(&self.default)
    }

    /// Checks every limit.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, Limits, Reservoir};
    /// let bad = ConcurrencyConfig::new()
    ///     .provider("kimi", Limits::new().reservoir(Reservoir {
    ///         requests: 4, interval_secs: 0.0, burst: None }));
    /// let err = bad.validate().unwrap_err();
    /// assert_eq!(err.setting, "providers.kimi.reservoir.interval_secs");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.default.validate("default")?;
        for (name, limits) in &self.providers {
            if name.is_empty() {
                return Err(ConfigError::new(
                    "providers",
                    "a provider name is empty; use the provider's name as in RequestMeta",
                ));
            }
            limits.validate(&format!("providers.{name}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_limits_round_trip_and_validate() {
        let cfg = ConcurrencyConfig::new()
            .provider(
                "kimi",
                Limits::new()
                    .max_concurrent(1)
                    .reservoir(Reservoir::new(4, Duration::from_secs(60))),
            )
            .provider(
                "glm",
                Limits::new()
                    .max_concurrent(10)
                    .min_spacing(Duration::from_millis(100)),
            )
            .provider(
                "featherless",
                Limits::new()
                    .max_concurrent(5)
                    .min_spacing(Duration::from_millis(200))
                    .reservoir(Reservoir::new(20, Duration::from_secs(60))),
            );
        cfg.validate().unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        let back: ConcurrencyConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(
            back.limits_for("glm", None).min_spacing_duration(),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn invalid_settings_are_named() {
        let cases = [
            (Limits::new().max_concurrent(0), "x.max_concurrent"),
            (
                Limits::new().reservoir(Reservoir::new(0, Duration::from_secs(1))),
                "x.reservoir.requests",
            ),
            (
                Limits::new().reservoir(Reservoir::new(4, Duration::from_secs(60)).with_burst(5)),
                "x.reservoir.burst",
            ),
            (
                Limits::new().queue_capacity(0).when_full(WhenFull::Fail),
                "x.queue_capacity",
            ),
            (
                Limits::new().high_priority_streak(0),
                "x.high_priority_streak",
            ),
        ];
        for (limits, setting) in cases {
            let err = limits.validate("x").unwrap_err();
            assert_eq!(err.setting, setting, "{err}");
        }
        let nan = Reservoir {
            requests: 1,
            interval_secs: f64::NAN,
            burst: None,
        };
        assert!(Limits::new().reservoir(nan).validate("x").is_err());
        assert!(serde_json::from_str::<Limits>(r#"{"max_concurent": 1}"#).is_err());
    }

    #[test]
    fn model_key_wins_over_provider() {
        let cfg = ConcurrencyConfig::new()
            .provider("kimi", Limits::new().max_concurrent(2))
            .provider("kimi/k2", Limits::new().max_concurrent(1));
        assert_eq!(cfg.limits_for("kimi", Some("k2")).max_concurrent, Some(1));
        assert_eq!(cfg.limits_for("kimi", Some("k1")).max_concurrent, Some(2));
    }
}
