//! Configuration pieces, the outcome extension, the deadline extension and the seeded
//! jitter source.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Randomization of computed backoff delays. Server-requested delays are never
/// randomized.
///
/// ```
/// use ratelayer_retry::Jitter;
/// assert_eq!(Jitter::default(), Jitter::None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Jitter {
    /// The exact delay (deterministic schedules).
    #[default]
    None,
    /// Uniform in `[0, delay]` ("full jitter").
    Full,
    /// `delay / 2` plus uniform in `[0, delay / 2]` ("equal jitter").
    Equal,
}

/// What to do when the server asks for a delay above the per-delay cap.
///
/// ```
/// use ratelayer_retry::OverCap;
/// assert_eq!(OverCap::default(), OverCap::Wait);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OverCap {
    /// Wait as long as the server asked (the total-wait budget and the deadline still
    /// apply): retrying earlier would only collect another 429.
    #[default]
    Wait,
    /// Give up at once and return the response (a fallback layer can act on it).
    GiveUp,
}

/// Exponential backoff for one class of failures: `base × factor^n` for the `n`-th retry
/// (0-based), at most `max_retries` retries.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_retry::Backoff;
/// let b = Backoff::new(Duration::from_millis(500), 2.0, 3);
/// assert_eq!(b.delay(Duration::from_millis(500), 2), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub base: Duration,
    /// The growth factor per retry (at least 1).
    pub factor: f64,
    /// How many retries at most.
    pub max_retries: u32,
}

impl Backoff {
    /// A backoff policy.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_retry::Backoff;
    /// let b = Backoff::new(Duration::from_secs(1), 2.0, 4);
    /// assert_eq!(b.max_retries, 4);
    /// ```
    pub fn new(base: Duration, factor: f64, max_retries: u32) -> Self {
        Backoff {
            base,
            factor,
            max_retries,
        }
    }

    /// `base × factor^n`, computed in whole nanoseconds (exact for integer factors),
    /// saturating at about 292 years.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_retry::Backoff;
    /// let b = Backoff::new(Duration::ZERO, 2.0, 6);
    /// let free: Vec<u64> = (0..6).map(|n| b.delay(Duration::from_secs(20), n).as_secs()).collect();
    /// assert_eq!(free, [20, 40, 80, 160, 320, 640]);
    /// ```
    pub fn delay(&self, base: Duration, n: u32) -> Duration {
        let nanos = base.as_nanos() as f64 * self.factor.powi(n.min(i32::MAX as u32) as i32);
        if !nanos.is_finite() || nanos >= u64::MAX as f64 {
            Duration::from_nanos(u64::MAX)
        } else {
            Duration::from_nanos(nanos.round().max(0.0) as u64)
        }
    }
}

pub use ratelayer_core::Deadline;

/// Why the retry layer stopped and returned what it returned.
///
/// ```
/// use ratelayer_retry::StopReason;
/// assert_eq!(StopReason::RetriesExhausted.to_string(), "retries exhausted");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The response succeeded (or was not a failure).
    Success,
    /// The failure is never retried (quota exhausted, context overflow, fatal 4xx).
    NotRetryable(&'static str),
    /// The server said `x-should-retry: false`.
    ServerSaidNoRetry,
    /// The class's retry count is used up.
    RetriesExhausted,
    /// The server asked for a delay above the cap and the policy is [`OverCap::GiveUp`].
    DelayAboveCap,
    /// The next wait would exceed the total-wait budget.
    WaitBudgetExhausted,
    /// The next wait would end after the request's [`Deadline`].
    DeadlineExceeded,
    /// The retry budget (share of recent traffic) is used up.
    RetryBudgetExhausted,
    /// The request body cannot be replayed: sent once.
    NotReplayable,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Success => f.write_str("success"),
            StopReason::NotRetryable(c) => write!(f, "not retryable ({c})"),
            StopReason::ServerSaidNoRetry => f.write_str("server said x-should-retry: false"),
            StopReason::RetriesExhausted => f.write_str("retries exhausted"),
            StopReason::DelayAboveCap => f.write_str("requested delay above the cap"),
            StopReason::WaitBudgetExhausted => f.write_str("total wait budget exhausted"),
            StopReason::DeadlineExceeded => f.write_str("deadline exceeded"),
            StopReason::RetryBudgetExhausted => f.write_str("retry budget exhausted"),
            StopReason::NotReplayable => f.write_str("body not replayable"),
        }
    }
}

/// How the retry layer came to return a response: how many attempts were made, how long
/// was waited in total, and why it stopped.
///
/// It is a response extension on every response the layer returns after a retry or a
/// wait, and on every response it stops at for any reason but success (retries
/// exhausted, not retryable, ...). A response that succeeded at its first attempt with no
/// wait, the common case, carries none (so that the common case allocates no extensions
/// map): [`RetryReport::of`] reads a response's report either way.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_retry::{RetryReport, StopReason};
/// let r = RetryReport { attempts: 3, total_wait: Duration::from_secs(60), reason: StopReason::Success };
/// assert_eq!(r.retries(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryReport {
    /// Attempts sent (at least 1).
    pub attempts: u32,
    /// Time spent waiting (backoff, cooldowns, pacing) in total.
    pub total_wait: Duration,
    /// Why the layer returned this response.
    pub reason: StopReason,
}

impl RetryReport {
    /// The report of a response that succeeded at its first attempt, with no wait: not
    /// attached to the response (see [`RetryReport::of`]).
    ///
    /// ```
    /// use ratelayer_retry::{RetryReport, StopReason};
    /// assert_eq!(RetryReport::FIRST_ATTEMPT.attempts, 1);
    /// assert!(RetryReport::FIRST_ATTEMPT.total_wait.is_zero());
    /// assert_eq!(RetryReport::FIRST_ATTEMPT.reason, StopReason::Success);
    /// ```
    pub const FIRST_ATTEMPT: RetryReport = RetryReport {
        attempts: 1,
        total_wait: Duration::ZERO,
        reason: StopReason::Success,
    };

    /// The report of `response`, returned by the retry layer: its extension, else
    /// [`RetryReport::FIRST_ATTEMPT`] (the layer attaches none to a response that
    /// succeeded at its first attempt with no wait).
    ///
    /// ```
    /// use http::Response;
    /// use ratelayer_retry::{RetryReport, StopReason};
    /// let mut resp = Response::new(());
    /// assert_eq!(RetryReport::of(&resp), RetryReport::FIRST_ATTEMPT);
    /// let retried = RetryReport { attempts: 2, total_wait: std::time::Duration::from_secs(7), reason: StopReason::Success };
    /// resp.extensions_mut().insert(retried);
    /// assert_eq!(RetryReport::of(&resp).retries(), 1);
    /// ```
    pub fn of<B>(response: &http::Response<B>) -> RetryReport {
        response
            .extensions()
            .get::<RetryReport>()
            .copied()
            .unwrap_or(RetryReport::FIRST_ATTEMPT)
    }

    /// Attempts after the first.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_retry::{RetryReport, StopReason};
    /// let r = RetryReport { attempts: 1, total_wait: Duration::ZERO, reason: StopReason::Success };
    /// assert_eq!(r.retries(), 0);
    /// ```
    pub fn retries(&self) -> u32 {
        self.attempts.saturating_sub(1)
    }
}

/// SplitMix64 over an atomic counter: a tiny seedable PRNG shared by a layer's clones.
#[derive(Debug)]
pub(crate) struct Rng(AtomicU64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(AtomicU64::new(seed))
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&self) -> f64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .0
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn jitter(&self, jitter: Jitter, d: Duration) -> Duration {
        match jitter {
            Jitter::None => d,
            Jitter::Full => d.mul_f64(self.next_f64()),
            Jitter::Equal => d / 2 + (d / 2).mul_f64(self.next_f64()),
        }
    }
}

/// A seed that differs per process and per layer.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5EED);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_is_seeded() {
        let d = Duration::from_secs(10);
        let a = Rng::new(7);
        let b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.jitter(Jitter::Full, d);
            assert_eq!(x, b.jitter(Jitter::Full, d));
            assert!(x <= d);
            let y = a.jitter(Jitter::Equal, d);
            assert_eq!(y, b.jitter(Jitter::Equal, d));
            assert!(y >= d / 2 && y <= d, "{y:?}");
        }
        assert_eq!(a.jitter(Jitter::None, d), d);
        let mean: f64 = (0..10_000).map(|_| a.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn backoff_is_exact_for_integer_factors() {
        let b = Backoff::new(Duration::ZERO, 2.0, 6);
        let tier1: Vec<u128> = (0..6)
            .map(|n| b.delay(Duration::from_millis(300), n).as_millis())
            .collect();
        assert_eq!(tier1, [300, 600, 1200, 2400, 4800, 9600]);
        assert_eq!(
            b.delay(Duration::from_secs(1), 200),
            Duration::from_nanos(u64::MAX)
        );
    }
}
