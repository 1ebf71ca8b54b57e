//! The stats handle: what the fallback did, counted.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Why a request left a provider for the next one.
///
/// ```
/// use ratelayer_fallback::FallbackReason;
/// assert_eq!(FallbackReason::WaitTooLong.as_str(), "wait_too_long");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FallbackReason {
    /// The provider's wait (cooldown, token budget, reservoir) was longer than the
    /// request's wait budget or deadline, or its stack said so (`WaitTooLong`).
    WaitTooLong,
    /// The provider was still rate limited after its own retries.
    RateLimited,
    /// The provider's quota is exhausted: skipped until its reset.
    QuotaExhausted,
    /// The prompt did not fit the provider's context window.
    ContextOverflow,
    /// The request can never fit the provider's budgets (`NeverFits`).
    NeverFits,
    /// A second unexpected failure (5xx, overloaded, transport error) on the provider.
    Unexpected,
    /// A fatal failure (such as bad credentials), with falling back configured.
    Fatal,
    /// The provider's circuit breaker is open.
    CircuitOpen,
    /// The request body cannot be replayed, so no other provider can be tried.
    NotReplayable,
}

impl FallbackReason {
    /// A short name for logs and metrics.
    ///
    /// ```
    /// use ratelayer_fallback::FallbackReason;
    /// assert_eq!(FallbackReason::CircuitOpen.as_str(), "circuit_open");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::WaitTooLong => "wait_too_long",
            FallbackReason::RateLimited => "rate_limited",
            FallbackReason::QuotaExhausted => "quota_exhausted",
            FallbackReason::ContextOverflow => "context_overflow",
            FallbackReason::NeverFits => "never_fits",
            FallbackReason::Unexpected => "unexpected",
            FallbackReason::Fatal => "fatal",
            FallbackReason::CircuitOpen => "circuit_open",
            FallbackReason::NotReplayable => "not_replayable",
        }
    }
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of one provider.
///
/// ```
/// use ratelayer_fallback::ProviderStats;
/// let p = ProviderStats::default();
/// assert_eq!((p.requests, p.successes), (0, 0));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderStats {
    /// The provider's name.
    pub name: String,
    /// Requests sent to this provider's stack (each attempt counts).
    pub requests: u64,
    /// Successful responses from it.
    pub successes: u64,
}

/// A consistent copy of the counters, taken by [`FallbackStats::snapshot`].
///
/// ```
/// use ratelayer_fallback::StatsSnapshot;
/// let s = StatsSnapshot::default();
/// assert_eq!(s.primary_share(), 0.0);
/// assert_eq!(s.mean_wait(), std::time::Duration::ZERO);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Logical requests received by the fallback.
    pub requests: u64,
    /// Logical requests that got a successful response.
    pub successes: u64,
    /// Logical requests that failed (every provider failed, or a fatal failure).
    pub failures: u64,
    /// Logical requests whose response future was dropped before it finished.
    /// `requests == successes + failures + cancelled` once nothing is in flight.
    pub cancelled: u64,
    /// Per provider, in chain order.
    pub providers: Vec<ProviderStats>,
    /// Fallbacks (moves from one provider to the next) by reason.
    pub fallbacks: BTreeMap<FallbackReason, u64>,
    /// Successful requests served by a provider other than the first of the chain.
    pub served_by_fallback: u64,
    /// Time requests were expected or made to wait before being sent: the accepted wait
    /// estimates of the providers chosen, plus the fallback's own waits after a
    /// rate-limited response.
    pub total_wait: Duration,
}

impl StatsSnapshot {
    /// The share of successful requests served by the first provider of the chain (0 when
    /// none succeeded).
    ///
    /// ```
    /// use ratelayer_fallback::StatsSnapshot;
    /// let s = StatsSnapshot { successes: 10, served_by_fallback: 1, ..Default::default() };
    /// assert_eq!(s.primary_share(), 0.9);
    /// ```
    pub fn primary_share(&self) -> f64 {
        if self.successes == 0 {
            return 0.0;
        }
        (self.successes - self.served_by_fallback.min(self.successes)) as f64
            / self.successes as f64
    }

    /// The share of successful requests served by a fallback provider.
    ///
    /// ```
    /// use ratelayer_fallback::StatsSnapshot;
    /// let s = StatsSnapshot { successes: 4, served_by_fallback: 1, ..Default::default() };
    /// assert_eq!(s.fallback_share(), 0.25);
    /// ```
    pub fn fallback_share(&self) -> f64 {
        if self.successes == 0 {
            return 0.0;
        }
        self.served_by_fallback as f64 / self.successes as f64
    }

    /// Fallbacks for `reason` per logical request.
    ///
    /// ```
    /// use ratelayer_fallback::{FallbackReason, StatsSnapshot};
    /// let mut s = StatsSnapshot { requests: 4, ..Default::default() };
    /// s.fallbacks.insert(FallbackReason::RateLimited, 1);
    /// assert_eq!(s.fallback_rate(FallbackReason::RateLimited), 0.25);
    /// ```
    pub fn fallback_rate(&self, reason: FallbackReason) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.fallbacks.get(&reason).copied().unwrap_or(0) as f64 / self.requests as f64
    }

    /// The mean wait per logical request.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_fallback::StatsSnapshot;
    /// let s = StatsSnapshot { requests: 2, total_wait: Duration::from_secs(3), ..Default::default() };
    /// assert_eq!(s.mean_wait(), Duration::from_millis(1500));
    /// ```
    pub fn mean_wait(&self) -> Duration {
        match u32::try_from(self.requests) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total_wait / n,
            Err(_) => Duration::from_secs_f64(self.total_wait.as_secs_f64() / self.requests as f64),
        }
    }

    /// The counts of the provider named `name`.
    ///
    /// ```
    /// use ratelayer_fallback::StatsSnapshot;
    /// assert!(StatsSnapshot::default().provider("openai").is_none());
    /// ```
    pub fn provider(&self, name: &str) -> Option<&ProviderStats> {
        self.providers.iter().find(|p| p.name == name)
    }
}

/// A shared handle to the fallback's counters; clones share them.
///
/// Get it from [`Fallback::stats`](crate::Fallback::stats) or
/// [`FallbackLayer::stats`](crate::FallbackLayer::stats).
///
/// ```
/// use ratelayer_fallback::FallbackStats;
/// let stats = FallbackStats::new(["openai", "anthropic"]);
/// assert_eq!(stats.snapshot().providers.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct FallbackStats {
    inner: Arc<Mutex<StatsSnapshot>>,
}

impl FallbackStats {
    /// Counters for these providers, in chain order.
    ///
    /// ```
    /// use ratelayer_fallback::FallbackStats;
    /// assert_eq!(FallbackStats::new(["a"]).snapshot().requests, 0);
    /// ```
    pub fn new<I: IntoIterator<Item = N>, N: Into<String>>(providers: I) -> Self {
        let providers = providers
            .into_iter()
            .map(|name| ProviderStats {
                name: name.into(),
                ..ProviderStats::default()
            })
            .collect();
        FallbackStats {
            inner: Arc::new(Mutex::new(StatsSnapshot {
                providers,
                ..StatsSnapshot::default()
            })),
        }
    }

    /// A consistent copy of every counter.
    ///
    /// ```
    /// use ratelayer_fallback::FallbackStats;
    /// let s = FallbackStats::new(["a"]).snapshot();
    /// assert_eq!(s.provider("a").map(|p| p.requests), Some(0));
    /// ```
    pub fn snapshot(&self) -> StatsSnapshot {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, StatsSnapshot> {
        // Every update is a few additions: a panic cannot leave them half-done.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn request(&self) {
        self.lock().requests += 1;
    }

    pub(crate) fn sent(&self, provider: usize) {
        if let Some(p) = self.lock().providers.get_mut(provider) {
            p.requests += 1;
        }
    }

    pub(crate) fn success(&self, provider: usize, primary: bool) {
        let mut s = self.lock();
        s.successes += 1;
        if !primary {
            s.served_by_fallback += 1;
        }
        if let Some(p) = s.providers.get_mut(provider) {
            p.successes += 1;
        }
    }

    pub(crate) fn failure(&self) {
        self.lock().failures += 1;
    }

    pub(crate) fn cancelled(&self) {
        self.lock().cancelled += 1;
    }

    pub(crate) fn fallback(&self, reason: FallbackReason) {
        *self.lock().fallbacks.entry(reason).or_insert(0) += 1;
    }

    pub(crate) fn waited(&self, wait: Duration) {
        if !wait.is_zero() {
            let mut s = self.lock();
            s.total_wait = s.total_wait.saturating_add(wait);
        }
    }
}
