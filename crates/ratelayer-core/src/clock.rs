//! Time on the decision path.
//!
//! Every wait and timestamp that ratelayer decides with comes from [`tokio::time`], so a
//! test under `#[tokio::test(start_paused = true)]` checks a 21-minute backoff schedule in
//! milliseconds. Wall-clock time ([`SystemTime`](std::time::SystemTime)) is used only to
//! read headers that carry an absolute date, and is passed in as a value.
//!
//! [`TokioClock`] lets [governor] run on the same clock: governor's own clock and its
//! `until_ready` ignore paused time.

use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;

pub use tokio::time::Instant;

/// The current instant on tokio's clock (paused and advanced by tests).
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::clock;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let start = clock::now();
/// tokio::time::advance(Duration::from_secs(90)).await;
/// assert_eq!(clock::now() - start, Duration::from_secs(90));
/// # }
/// ```
#[inline]
pub fn now() -> Instant {
    Instant::now()
}

/// A request's deadline (tokio time), as a request extension: every layer that waits
/// (retry, fallback) never waits past it, and gives up at once when the wait it would need
/// ends after it.
///
/// One type for the whole stack: insert it once and every layer sees it.
///
/// ```
/// use std::time::Duration;
/// use http::Request;
/// use ratelayer_core::Deadline;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut req = Request::new(String::new());
/// req.extensions_mut().insert(Deadline::after(Duration::from_secs(30)));
/// let d = req.extensions().get::<Deadline>().unwrap();
/// assert_eq!(d.remaining(), Duration::from_secs(30));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// A deadline `d` from now (tokio time); a `d` too large to represent saturates to a
    /// deadline about 30 years away.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::Deadline;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let d = Deadline::after(Duration::from_secs(10));
    /// assert_eq!(d.0 - tokio::time::Instant::now(), Duration::from_secs(10));
    /// let far = Deadline::after(Duration::MAX); // saturates
    /// assert!(far.remaining() > Duration::from_secs(29 * 365 * 86_400));
    /// # }
    /// ```
    pub fn after(d: Duration) -> Self {
        let now = Instant::now();
        Deadline(
            now.checked_add(d)
                .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400)),
        )
    }

    /// The time left until the deadline (zero once it has passed).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::Deadline;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let d = Deadline::after(Duration::from_secs(10));
    /// tokio::time::advance(Duration::from_secs(4)).await;
    /// assert_eq!(d.remaining(), Duration::from_secs(6));
    /// tokio::time::advance(Duration::from_secs(60)).await;
    /// assert_eq!(d.remaining(), Duration::ZERO);
    /// # }
    /// ```
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// When a request was really sent (tokio time), as a *response* extension: a layer that
/// holds requests back before sending them (a concurrency queue, pacing) sets it on the
/// response, so layers outside it that count costs in time windows (tokens per minute)
/// count them from when the provider received the request, not from when they let it
/// pass. A layer sets it only when the response has none or an earlier one: the innermost
/// layer knows best.
///
/// ```
/// use http::Response;
/// use ratelayer_core::SentAt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut resp = Response::new(());
/// SentAt(tokio::time::Instant::now()).stamp(resp.extensions_mut());
/// assert!(resp.extensions().get::<SentAt>().is_some());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SentAt(pub Instant);

impl SentAt {
    /// Sets `self` on `extensions` unless they hold a later instant already.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::SentAt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut ext = http::Extensions::new();
    /// let t = tokio::time::Instant::now();
    /// SentAt(t + Duration::from_secs(2)).stamp(&mut ext); // set by the inner layer
    /// SentAt(t).stamp(&mut ext); // an outer layer's earlier instant is ignored
    /// assert_eq!(ext.get::<SentAt>(), Some(&SentAt(t + Duration::from_secs(2))));
    /// # }
    /// ```
    pub fn stamp(self, extensions: &mut http::Extensions) {
        if extensions.get::<SentAt>().is_none_or(|s| s.0 < self.0) {
            extensions.insert(self);
        }
    }
}

/// A [governor] clock that reads `tokio::time::Instant`, so governor's limiters obey
/// `tokio::time::pause` and `tokio::time::advance`.
///
/// ```
/// use std::num::NonZeroU32;
/// use governor::{Quota, RateLimiter};
/// use ratelayer_core::clock::TokioClock;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = RateLimiter::direct_with_clock(
///     Quota::per_minute(NonZeroU32::new(3).unwrap()).allow_burst(NonZeroU32::new(1).unwrap()),
///     TokioClock::default(),
/// );
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_err());
/// tokio::time::advance(std::time::Duration::from_secs(20)).await;
/// assert!(limiter.check().is_ok());
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

/// An instant of [`TokioClock`]: a `tokio::time::Instant` that governor can use.
///
/// ```
/// use std::time::Duration;
/// use governor::clock::{Clock, Reference};
/// use ratelayer_core::clock::TokioClock;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let a = TokioClock.now();
/// tokio::time::advance(Duration::from_millis(250)).await;
/// assert_eq!(Duration::from(TokioClock.now().duration_since(a)), Duration::from_millis(250));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokioInstant(pub Instant);

impl Add<Nanos> for TokioInstant {
    type Output = TokioInstant;

    fn add(self, rhs: Nanos) -> TokioInstant {
        let d: Duration = rhs.into();
        TokioInstant(self.0.checked_add(d).unwrap_or(self.0))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        let d: Duration = duration.into();
        TokioInstant(self.0.checked_sub(d).unwrap_or(self.0))
    }
}

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = TokioClock;
        let a = c.now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        let b = c.now();
        assert_eq!(
            Duration::from(b.duration_since(a)),
            Duration::from_millis(1500)
        );
        assert_eq!(Duration::from(a.duration_since(b)), Duration::ZERO);
        assert_eq!(
            b.saturating_sub(Nanos::from(Duration::from_millis(1500))),
            a
        );
    }
}
