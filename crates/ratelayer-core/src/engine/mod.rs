//! The limiter engine: buckets, all-or-nothing reservations with exact waits, refunds,
//! concurrency leases, cooldowns and learned limits, behind a [`Store`] trait.
//!
//! # Overview
//!
//! - A [`Scope`] (provider, credential, model) holds up to [`MAX_BUCKETS`] buckets, each
//!   keyed by a [`BucketKey`] (a [`Dimension`] and a window) and configured by a
//!   [`Quota`]: [GCRA](Algorithm::Gcra) (capacity `burst`, refilled at `limit / window`;
//!   exact pacing with burst 1) or a window-safe [sliding window](Algorithm::SlidingWindow)
//!   (any window admits at most `limit`: what providers and ratelayer-mock enforce). Both
//!   keep constant memory per bucket.
//! - [`ScopeHandle::reserve`] books one request's costs in every bucket at once, for the
//!   earliest instant when all fit and the scope's cooldown is over. The [`Reservation`]
//!   says when ([`ready_at`](Reservation::ready_at)); the caller sleeps with
//!   `tokio::time::sleep_until` and then [`commit`](Reservation::commit)s. Bookings are
//!   made in arrival order, so waiters are served FIFO and exactly, even under
//!   contention. A cost above a bucket's capacity fails at once with [`NeverFits`]; with a
//!   `max_wait`, a longer wait is declined with [`WaitTooLong`] without changing any
//!   state.
//! - Dropping a [`Reservation`] before [`commit`](Reservation::commit) gives back what it
//!   took. If nothing else touched a bucket since, the bucket is restored exactly (as if
//!   the reservation never happened); otherwise what is still outstanding is refunded
//!   (GCRA: the part of the booking not yet refilled; sliding window: the cost, from the
//!   slot it was recorded in, if that slot is still in the window), which never creates
//!   capacity beyond the limit. The booking's position in time may remain (later
//!   bookings keep their instants): conservative, never early.
//! - After the response, [`Committed::adjust`] debits more or refunds the difference
//!   between the actual and the estimated cost.
//! - [`ScopeHandle::wait_time`] says how long a reservation would wait now, without side
//!   effects (for choosing a provider).
//! - [`ScopeHandle::learn`] applies what a provider's headers said: a lower limit tightens
//!   a bucket (never above the configured limit, and a later statement can raise it back
//!   only up to the configured limit); whatever the provider counted as used beyond what
//!   the scope had admitted (another client of the key, under-estimated costs) counts as
//!   used until the provider's `reset`. [`ScopeHandle::set_cooldown`] (after a 429) makes every
//!   reservation of the scope, and of narrower scopes, wait until then; a reservation
//!   booked before the cooldown sees it in [`Reservation::ready_at_now`] (check it after
//!   sleeping).
//! - [`ScopeHandle::lease`] acquires a concurrency lease: at most `limit` holders, FIFO
//!   within two [`Priority`] classes (with no starvation of `Normal`), a bounded queue
//!   ([`QueueFull`] or wait), runtime resize, released on drop. Leases do not wait for
//!   the cooldown: the layer that takes a lease also reserves (at least a request
//!   reservoir), and the reservation waits for it; or it checks
//!   [`ScopeHandle::cooldown_until`] itself.
//! - [`ScopeHandle::set_quota`] changes a quota at run time (hot reload) keeping the
//!   state: lowering a limit makes waits longer at once; raising it or the burst never
//!   admits a burst (GCRA carries the outstanding load over, extra burst refills at the
//!   new rate; the sliding window keeps its history).
//!
//! Every instant is `tokio::time::Instant`, so tests run under paused time.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use ratelayer_core::engine::{BucketKey, Quota};
//! use ratelayer_core::{LimitState, NeverFits, Scope};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), ratelayer_core::BoxError> {
//! let state = LimitState::new();
//! let scope = Scope::new("openai").with_model("gpt-4o");
//! // Resolve once and keep the handle (layers cache it): it is the hot path.
//! let h = state.handle(&scope);
//! h.set_quota(BucketKey::REQUESTS_PER_MINUTE, Quota::gcra(500, Duration::from_secs(60)))?;
//! h.set_quota(BucketKey::TOKENS_PER_MINUTE, Quota::sliding_window(30_000, Duration::from_secs(60)))?;
//!
//! // 12,071 tokens now: fits at once.
//! let r = h.reserve(&[(BucketKey::REQUESTS_PER_MINUTE, 1), (BucketKey::TOKENS_PER_MINUTE, 12_071)], None)
//!     .await.map_err(|e| e.into_box())?;
//! assert_eq!(r.wait(), Duration::ZERO);
//! let used = r.commit();
//!
//! // 22,117 more must wait until the first 12,071 leave the window: exactly 60 s.
//! let cost = [(BucketKey::REQUESTS_PER_MINUTE, 1), (BucketKey::TOKENS_PER_MINUTE, 22_117)];
//! assert_eq!(h.wait_time(&cost).await?, Duration::from_secs(60));
//! let r = h.reserve(&cost, None).await.map_err(|e| e.into_box())?;
//! tokio::time::sleep_until(r.ready_at()).await;
//! let mut second = r.commit();
//! // The response said 20,000 tokens were used: refund the rest.
//! second.adjust(BucketKey::TOKENS_PER_MINUTE, 20_000);
//!
//! // 40,000 tokens can never fit a 30,000 TPM budget: fails at once.
//! let err = h.reserve(&[(BucketKey::TOKENS_PER_MINUTE, 40_000)], None).await.unwrap_err();
//! let err = err.into_box();
//! assert_eq!(err.downcast_ref::<NeverFits>().map(|e| e.capacity), Some(30_000));
//!
//! // With a maximum wait, a longer wait is declined without booking anything.
//! let err = h.reserve(&cost, Some(Duration::from_secs(5))).await.unwrap_err().into_box();
//! assert!(err.is::<ratelayer_core::WaitTooLong>());
//! drop(used);
//! # Ok(())
//! # }
//! ```
//!
//! Leases:
//!
//! ```
//! use ratelayer_core::engine::{ConcurrencyConfig, Priority};
//! use ratelayer_core::{LimitState, Scope};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), ratelayer_core::BoxError> {
//! let h = LimitState::new().handle(&Scope::new("kimi"));
//! h.set_concurrency(ConcurrencyConfig::new(1))?;
//! let first = h.lease(Priority::Normal).await?;
//! let mut second = tokio_test::task::spawn(h.lease(Priority::Normal));
//! assert!(second.poll().is_pending()); // queued, FIFO
//! drop(first); // released on drop: the next in line gets it
//! assert!(second.poll().is_ready());
//! # Ok(())
//! # }
//! ```
//!
//! [`Dimension`]: crate::Dimension
//! [`NeverFits`]: crate::NeverFits
//! [`WaitTooLong`]: crate::WaitTooLong
//! [`QueueFull`]: crate::QueueFull

mod bucket;
mod lease;
mod memory;
#[cfg(test)]
mod proptests;
mod quota;
mod store;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

pub use lease::{ConcurrencyConfig, LeaseGrant, OnFull, Priority};
pub use memory::{MemoryScope, MemoryStore};
pub use quota::{Algorithm, BucketKey, MAX_BUCKETS, MAX_SLOTS, Quota};
pub use store::{Booking, Receipt, ReceiptItem, ReserveError, ScopeStore, Store, StoreFuture};

use crate::error::{ConfigError, NeverFits, QueueFull};
use crate::headers::{Dimension, DimensionLimit, RateLimitSnapshot};
use crate::scope::Scope;

/// How late a [`Reservation::commit`] may be, after `ready_at`, and still count as sent
/// at `ready_at` (scheduling jitter far below network jitter). Later commits record their
/// real time.
pub const LATE_COMMIT_SLACK: Duration = Duration::from_millis(1);

/// The limiter state of one scope: a cheap, cloneable handle (an `Arc`). Get it from
/// [`LimitState::handle`](crate::LimitState::handle) once and keep it.
///
/// Clones (and handles resolved again for the same scope from the same state) share the
/// state. See the [module documentation](self) for a full example.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{BucketKey, Quota};
/// use ratelayer_core::{LimitState, Scope};
///
/// let state = LimitState::new();
/// let a = state.handle(&Scope::new("groq"));
/// a.set_quota(BucketKey::REQUESTS_PER_DAY, Quota::sliding_window(14_400, Duration::from_secs(86_400)))
///     .unwrap();
/// let b = state.handle(&Scope::new("groq"));
/// assert_eq!(b.capacity(BucketKey::REQUESTS_PER_DAY), Some(14_400));
/// ```
#[derive(Clone)]
pub struct ScopeHandle {
    store: Arc<dyn ScopeStore>,
}

impl fmt::Debug for ScopeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeHandle")
            .field("scope", self.store.scope())
            .finish()
    }
}

impl ScopeHandle {
    /// Wraps a store's scope handle.
    pub fn new(store: Arc<dyn ScopeStore>) -> Self {
        ScopeHandle { store }
    }

    /// The scope.
    pub fn scope(&self) -> &Scope {
        self.store.scope()
    }

    /// The underlying store handle.
    pub fn store(&self) -> &Arc<dyn ScopeStore> {
        &self.store
    }

    /// Sets the quota of bucket `key` (validated; hot reload keeps the state).
    pub fn set_quota(&self, key: BucketKey, quota: Quota) -> Result<(), ConfigError> {
        self.store.set_quota(key, Some(quota))
    }

    /// Removes the quota of bucket `key` (the dimension becomes unlimited).
    pub fn remove_quota(&self, key: BucketKey) {
        // Removing never fails.
        let _ = self.store.set_quota(key, None);
    }

    /// The configured quotas.
    pub fn quotas(&self) -> Vec<(BucketKey, Quota)> {
        self.store.quotas()
    }

    /// The effective capacity of bucket `key`: the most one reservation can take.
    pub fn capacity(&self, key: BucketKey) -> Option<u64> {
        self.store.capacity(key)
    }

    /// What bucket `key` holds now (booked and not yet refilled or expired, bookings
    /// queued for later included); `None` without a quota (or from a store that cannot
    /// tell).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// assert_eq!(h.used(BucketKey::TOKENS_PER_MINUTE), None);
    /// h.set_quota(BucketKey::TOKENS_PER_MINUTE, Quota::sliding_window(1_000, Duration::from_secs(60))).unwrap();
    /// let r = h.reserve(&[(BucketKey::TOKENS_PER_MINUTE, 300)], None).await.unwrap();
    /// assert_eq!(h.used(BucketKey::TOKENS_PER_MINUTE), Some(300));
    /// drop(r); // cancelled: given back
    /// assert_eq!(h.used(BucketKey::TOKENS_PER_MINUTE), Some(0));
    /// # }
    /// ```
    pub fn used(&self, key: BucketKey) -> Option<u64> {
        self.store.used(key)
    }

    /// Reserves `costs` all-or-nothing. See the [module documentation](self).
    #[inline]
    pub fn reserve(&self, costs: &[(BucketKey, u64)], max_wait: Option<Duration>) -> Reserve {
        self.reserve_at(costs, max_wait, Instant::now())
    }

    /// [`reserve`](Self::reserve) with the current instant read by the caller, who reads
    /// the clock once per operation (and may pass the same instant to
    /// [`Reservation::commit_at`]).
    #[inline]
    pub fn reserve_at(
        &self,
        costs: &[(BucketKey, u64)],
        max_wait: Option<Duration>,
        now: Instant,
    ) -> Reserve {
        Reserve {
            fut: self.store.reserve(costs, max_wait, now),
            store: Some(Arc::clone(&self.store)),
        }
    }

    /// How long a reservation of `costs` would wait now (zero if it fits now). No side
    /// effects.
    pub fn wait_time(
        &self,
        costs: &[(BucketKey, u64)],
    ) -> StoreFuture<Result<Duration, NeverFits>> {
        self.store.wait_time(costs)
    }

    /// Applies what a provider said about `dimension` to this scope's buckets of that
    /// dimension (those whose window equals `said.window`, or all of them when the window
    /// is not stated):
    ///
    /// - `limit` below the configured limit tightens the bucket; a later statement can
    ///   raise it again, but never above the configured limit.
    /// - `remaining` says what the provider counted as used: its `limit` (or the
    ///   bucket's, when not stated) less `remaining`. What exceeds the bucket's own
    ///   admissions so far (another client sharing the key, or costs under-estimated)
    ///   counts as used until `reset` (a window from now when not stated): the provider's
    ///   reset is when its window is fully replenished, so that usage has left it by
    ///   then. Usage the bucket booked itself already counts there and leaves the window
    ///   as it leaves the provider's: a statement consistent with the bucket's own
    ///   bookings delays nothing. A newer statement replaces the previous one (each
    ///   states the provider's whole usage), so repeated statements never add up.
    ///
    /// A dimension without a configured bucket is not limited, and the statement is
    /// ignored (the cooldown after a 429 still applies).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota};
    /// use ratelayer_core::headers::DimensionLimit;
    /// use ratelayer_core::{Dimension, LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// h.set_quota(BucketKey::TOKENS_PER_MINUTE, Quota::sliding_window(90_000, Duration::from_secs(60))).unwrap();
    /// h.learn(Dimension::Tokens, &DimensionLimit {
    ///     limit: Some(30_000),
    ///     remaining: Some(0),
    ///     reset: Some(Duration::from_secs(3)),
    ///     window: Some(Duration::from_secs(60)),
    /// });
    /// assert_eq!(h.capacity(BucketKey::TOKENS_PER_MINUTE), Some(30_000));
    /// // Nothing of ours was admitted: the 30,000 used are someone else's, until the reset.
    /// let wait = h.wait_time(&[(BucketKey::TOKENS_PER_MINUTE, 1)]).await.unwrap();
    /// assert_eq!(wait, Duration::from_secs(3));
    /// # }
    /// ```
    pub fn learn(&self, dimension: Dimension, said: &DimensionLimit) {
        self.store.learn(dimension, said);
    }

    /// Applies every dimension of a snapshot.
    pub fn learn_snapshot(&self, snapshot: &RateLimitSnapshot) {
        for d in Dimension::ALL {
            let said = snapshot.get(d);
            if !said.is_empty() {
                self.store.learn(d, said);
            }
        }
    }

    /// Every reservation of this scope (and narrower scopes) waits until `until`; only
    /// ever extends.
    pub fn set_cooldown(&self, until: Instant) {
        self.store.set_cooldown(until);
    }

    /// Removes this scope's own cooldown.
    pub fn clear_cooldown(&self) {
        self.store.clear_cooldown();
    }

    /// The cooldown in force on this scope (or a wider one).
    pub fn cooldown_until(&self) -> Option<Instant> {
        self.store.cooldown_until()
    }

    /// Configures (or resizes) concurrency leases.
    pub fn set_concurrency(&self, config: ConcurrencyConfig) -> Result<(), ConfigError> {
        self.store.set_concurrency(config)
    }

    /// Acquires a concurrency lease (unlimited until [`set_concurrency`](Self::set_concurrency)).
    pub fn lease(&self, priority: Priority) -> LeaseFuture {
        LeaseFuture {
            fut: self.store.acquire_lease(priority),
            store: Some(Arc::clone(&self.store)),
        }
    }

    /// Leases held now, and requests queued.
    pub fn lease_counts(&self) -> (usize, usize) {
        self.store.lease_counts()
    }

    /// Approximate bytes of state of this scope (constant for a given configuration).
    pub fn approx_size(&self) -> usize {
        self.store.approx_size()
    }
}

/// The future of [`ScopeHandle::reserve`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Reserve {
    fut: StoreFuture<Result<Booking, ReserveError>>,
    store: Option<Arc<dyn ScopeStore>>,
}

impl Future for Reserve {
    type Output = Result<Reservation, ReserveError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = std::task::ready!(Pin::new(&mut self.fut).poll(cx));
        let Some(store) = self.store.take() else {
            return Poll::Pending;
        };
        Poll::Ready(match res {
            Ok(booking) => {
                if booking.waits {
                    let wait = booking.ready_at.saturating_duration_since(Instant::now());
                    tracing::debug!(scope = %store.scope(),
                        wait_ms = wait.as_millis() as u64, "reservation waits");
                }
                Ok(Reservation {
                    store,
                    booking,
                    live: true,
                })
            }
            Err(e) => {
                tracing::debug!(scope = %store.scope(), error = %e, "reservation declined");
                Err(e)
            }
        })
    }
}

/// A booked reservation: usable at [`ready_at`](Self::ready_at). Dropped before
/// [`commit`](Self::commit), it gives back what it booked.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{BucketKey, Quota};
/// use ratelayer_core::{LimitState, Scope};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let h = LimitState::new().handle(&Scope::new("openai"));
/// let rpm = BucketKey::REQUESTS_PER_MINUTE;
/// h.set_quota(rpm, Quota::gcra(1, Duration::from_secs(60))).unwrap();
/// let r = h.reserve(&[(rpm, 1)], None).await.unwrap();
/// assert_eq!(h.wait_time(&[(rpm, 1)]).await.unwrap(), Duration::from_secs(60));
/// drop(r); // cancelled (say, the caller went away): given back
/// assert_eq!(h.wait_time(&[(rpm, 1)]).await.unwrap(), Duration::ZERO);
/// # }
/// ```
#[must_use = "a reservation dropped at once is cancelled"]
pub struct Reservation {
    store: Arc<dyn ScopeStore>,
    booking: Booking,
    live: bool,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("scope", self.store.scope())
            .field("ready_at", &self.booking.ready_at)
            .field("receipt", &self.booking.receipt)
            .finish()
    }
}

impl Reservation {
    /// When the reservation may be used: sleep until then with
    /// `tokio::time::sleep_until`.
    pub fn ready_at(&self) -> Instant {
        self.booking.ready_at
    }

    /// [`ready_at`](Self::ready_at), or later if a cooldown was set on the scope (or a
    /// wider one) after the booking: a 429 seen by another request while this one slept.
    /// Check it again after sleeping, and sleep again if it moved:
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::{LimitState, Scope};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let r = h.reserve(&[], None).await.unwrap();
    /// h.set_cooldown(tokio::time::Instant::now() + Duration::from_secs(20));
    /// loop {
    ///     let at = r.ready_at_now();
    ///     if at <= tokio::time::Instant::now() { break; }
    ///     tokio::time::sleep_until(at).await;
    /// }
    /// let _used = r.commit();
    /// # }
    /// ```
    pub fn ready_at_now(&self) -> Instant {
        match self.store.cooldown_until() {
            Some(cd) if cd > self.booking.ready_at => cd,
            _ => self.booking.ready_at,
        }
    }

    /// How long from now until [`ready_at`](Self::ready_at).
    pub fn wait(&self) -> Duration {
        self.booking
            .ready_at
            .saturating_duration_since(Instant::now())
    }

    /// What was booked.
    pub fn receipt(&self) -> &Receipt {
        &self.booking.receipt
    }

    /// Marks the reservation used (the request is being sent now): it is no longer given
    /// back on drop.
    ///
    /// Call it when the request is sent, at or after [`ready_at`](Self::ready_at). A use
    /// more than [`LATE_COMMIT_SLACK`] after `ready_at` is recorded at its real time, so
    /// a window-safe bucket counts the cost from when it was really sent.
    pub fn commit(self) -> Committed {
        self.commit_at(Instant::now())
    }

    /// [`commit`](Self::commit) with the current instant read by the caller.
    #[inline]
    pub fn commit_at(mut self, now: Instant) -> Committed {
        self.live = false;
        if now > self.booking.ready_at + LATE_COMMIT_SLACK {
            self.store
                .commit_late(&self.booking.receipt, self.booking.ready_at, now);
        }
        Committed { inner: self }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.live {
            self.store.cancel(&self.booking.receipt);
        }
    }
}

/// A used reservation: adjust it when the actual cost is known. Dropping it changes
/// nothing.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{BucketKey, Quota};
/// use ratelayer_core::{LimitState, Scope};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let h = LimitState::new().handle(&Scope::new("openai"));
/// let tpm = BucketKey::TOKENS_PER_MINUTE;
/// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
/// let mut used = h.reserve(&[(tpm, 8_000)], None).await.unwrap().commit();
/// used.adjust(tpm, 3_000); // the response said 3,000 tokens: 5,000 come back
/// assert_eq!(h.wait_time(&[(tpm, 7_000)]).await.unwrap(), Duration::ZERO);
/// # }
/// ```
pub struct Committed {
    /// The reservation, no longer live (nothing happens on drop).
    inner: Reservation,
}

impl fmt::Debug for Committed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committed")
            .field("scope", self.inner.store.scope())
            .field("receipt", &self.inner.booking.receipt)
            .finish()
    }
}

impl Committed {
    /// The request reached the provider at `at`, later than it was committed (a layer
    /// inside held it back, such as a concurrency queue): its costs count from then, as
    /// the provider counts them, so a window-safe bucket neither forgets them before the
    /// provider does nor holds the rest of their slot longer. Nothing changes when `at`
    /// is not later than the booking's `ready_at`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
    /// let mut used = h.reserve(&[(tpm, 8_000)], None).await.unwrap().commit();
    /// tokio::time::advance(Duration::from_secs(5)).await;
    /// used.sent_at(tokio::time::Instant::now()); // queued 5 s below us before it was sent
    /// tokio::time::advance(Duration::from_secs(56)).await;
    /// // The provider counts the 8,000 tokens until 65 s: 4 s more.
    /// assert_eq!(h.wait_time(&[(tpm, 8_000)]).await.unwrap(), Duration::from_secs(4));
    /// # }
    /// ```
    pub fn sent_at(&mut self, at: Instant) {
        let r = &mut self.inner;
        if at > r.booking.ready_at + LATE_COMMIT_SLACK {
            r.store
                .redate(&mut r.booking.receipt, r.booking.ready_at, at);
        }
    }

    /// Sets the actual cost in bucket `key`: debits the difference if it is more than
    /// booked, refunds it if less (a refund never creates capacity beyond the limit).
    /// No effect for a bucket the reservation did not book.
    pub fn adjust(&mut self, key: BucketKey, actual: u64) {
        let r = &mut self.inner;
        let Some(id) = r.store.bucket_id(key) else {
            return;
        };
        let items = r.booking.receipt.items_mut();
        if let Some(item) = items.iter_mut().find(|i| i.bucket == id)
            && item.cost != actual
        {
            r.store.adjust(item, actual);
        }
    }

    /// Sets the actual cost of every booked bucket of `dimension` (such as tokens per
    /// minute and per day together).
    pub fn adjust_dimension(&mut self, dimension: Dimension, actual: u64) {
        let r = &mut self.inner;
        for item in r.booking.receipt.items_mut() {
            if item.dimension == dimension && item.cost != actual {
                r.store.adjust(item, actual);
            }
        }
    }

    /// What is booked now.
    pub fn receipt(&self) -> &Receipt {
        &self.inner.booking.receipt
    }
}

/// The future of [`ScopeHandle::lease`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct LeaseFuture {
    fut: StoreFuture<Result<LeaseGrant, QueueFull>>,
    store: Option<Arc<dyn ScopeStore>>,
}

impl Future for LeaseFuture {
    type Output = Result<Lease, QueueFull>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = std::task::ready!(Pin::new(&mut self.fut).poll(cx));
        let Some(store) = self.store.take() else {
            return Poll::Pending;
        };
        Poll::Ready(res.map(|grant| Lease { store, grant }))
    }
}

/// A held concurrency lease, released on drop. See [`ScopeHandle::lease`] and the
/// [module documentation](self) for an example.
pub struct Lease {
    store: Arc<dyn ScopeStore>,
    grant: LeaseGrant,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("scope", self.store.scope())
            .field("grant", &self.grant)
            .finish()
    }
}

impl Lease {
    /// When a shared backend may reclaim the lease (if it has a TTL).
    pub fn expires_at(&self) -> Option<Instant> {
        self.grant.expires_at
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.store.release_lease(&self.grant);
    }
}
