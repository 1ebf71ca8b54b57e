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
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{BucketKey, LATE_COMMIT_SLACK, Quota};
/// use ratelayer_core::{LimitState, Scope};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let h = LimitState::new().handle(&Scope::new("openai"));
/// let tpm = BucketKey::TOKENS_PER_MINUTE;
/// h.set_quota(tpm, Quota::sliding_window(1_000, Duration::from_secs(60))).unwrap();
/// let r = h.reserve(&[(tpm, 1_000)], None).await.unwrap();
/// tokio::time::advance(Duration::from_secs(10)).await;
/// let _used = r.commit(); // 10 s late, far beyond the slack: counts from now
/// assert!(LATE_COMMIT_SLACK < Duration::from_secs(10));
/// assert_eq!(h.wait_time(&[(tpm, 1)]).await.unwrap(), Duration::from_secs(60));
/// # }
/// ```
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
    /// The same store when it is the in-memory one: the hot path books on it directly.
    memory: Option<Arc<MemoryScope>>,
    /// The in-memory lease queue, when the store is the in-memory one.
    leases: Option<Arc<lease::Leases>>,
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
    ///
    /// ```
    /// use std::sync::Arc;
    /// use ratelayer_core::engine::{MemoryStore, ScopeHandle, Store};
    /// use ratelayer_core::Scope;
    ///
    /// let store = MemoryStore::new();
    /// let h = ScopeHandle::new(store.scope(&Scope::new("openai")));
    /// assert!(Arc::ptr_eq(h.store(), &store.scope(&Scope::new("openai"))));
    /// ```
    pub fn new(store: Arc<dyn ScopeStore>) -> Self {
        let memory = Arc::clone(&store).as_memory();
        let leases = memory.as_ref().map(|m| Arc::clone(m.leases()));
        ScopeHandle {
            store,
            memory,
            leases,
        }
    }

    /// The scope.
    ///
    /// ```
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// let scope = Scope::new("openai").with_model("gpt-4o");
    /// assert_eq!(LimitState::new().handle(&scope).scope(), &scope);
    /// ```
    pub fn scope(&self) -> &Scope {
        self.store.scope()
    }

    /// The underlying store handle.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let rpm = BucketKey::REQUESTS_PER_MINUTE;
    /// h.set_quota(rpm, Quota::gcra(500, Duration::from_secs(60))).unwrap();
    /// assert_eq!(h.store().capacity(rpm), Some(500));
    /// assert!(h.store().clone().as_memory().is_some()); // the in-memory store
    /// ```
    pub fn store(&self) -> &Arc<dyn ScopeStore> {
        &self.store
    }

    /// Sets the quota of bucket `key` (validated; hot reload keeps the state).
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
    /// h.set_quota(tpm, Quota::sliding_window(30_000, Duration::from_secs(60))).unwrap();
    /// let _used = h.reserve(&[(tpm, 20_000)], None).await.unwrap().commit();
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap(); // reload
    /// assert_eq!(h.used(tpm), Some(20_000)); // the state is kept: a full window must pass
    /// assert_eq!(h.wait_time(&[(tpm, 1)]).await.unwrap(), Duration::from_secs(60));
    /// assert!(h.set_quota(tpm, Quota::sliding_window(0, Duration::from_secs(60))).is_err());
    /// # }
    /// ```
    pub fn set_quota(&self, key: BucketKey, quota: Quota) -> Result<(), ConfigError> {
        self.store.set_quota(key, Some(quota))
    }

    /// Removes the quota of bucket `key` (the dimension becomes unlimited).
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
    /// h.set_quota(tpm, Quota::sliding_window(30_000, Duration::from_secs(60))).unwrap();
    /// h.remove_quota(tpm);
    /// assert_eq!(h.capacity(tpm), None);
    /// assert_eq!(h.wait_time(&[(tpm, 1_000_000)]).await.unwrap(), Duration::ZERO);
    /// # }
    /// ```
    pub fn remove_quota(&self, key: BucketKey) {
        // Removing never fails.
        let _ = self.store.set_quota(key, None);
    }

    /// The configured quotas.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let rpm = Quota::gcra(500, Duration::from_secs(60));
    /// h.set_quota(BucketKey::REQUESTS_PER_MINUTE, rpm).unwrap();
    /// assert_eq!(h.quotas(), vec![(BucketKey::REQUESTS_PER_MINUTE, rpm)]);
    /// ```
    pub fn quotas(&self) -> Vec<(BucketKey, Quota)> {
        self.store.quotas()
    }

    /// The effective capacity of bucket `key`: the most one reservation can take.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let rpm = BucketKey::REQUESTS_PER_MINUTE;
    /// assert_eq!(h.capacity(rpm), None); // no quota: unlimited
    /// h.set_quota(rpm, Quota::gcra(500, Duration::from_secs(60)).with_burst(10)).unwrap();
    /// assert_eq!(h.capacity(rpm), Some(10));
    /// ```
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
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let (rpm, tpm) = (BucketKey::REQUESTS_PER_MINUTE, BucketKey::TOKENS_PER_MINUTE);
    /// h.set_quota(rpm, Quota::gcra(500, Duration::from_secs(60))).unwrap();
    /// h.set_quota(tpm, Quota::sliding_window(1_000, Duration::from_secs(60))).unwrap();
    /// let _first = h.reserve(&[(rpm, 1), (tpm, 800)], None).await.unwrap().commit();
    /// let second = h.reserve(&[(rpm, 1), (tpm, 800)], None).await.unwrap();
    /// assert_eq!(second.wait(), Duration::from_secs(60)); // tokens do not fit before then
    /// # }
    /// ```
    #[inline(always)]
    pub fn reserve(&self, costs: &[(BucketKey, u64)], max_wait: Option<Duration>) -> Reserve {
        self.reserve_at(costs, max_wait, Instant::now())
    }

    /// [`reserve`](Self::reserve) with the current instant read by the caller, who reads
    /// the clock once per operation (and may pass the same instant to
    /// [`Reservation::commit_at`]).
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
    /// h.set_quota(rpm, Quota::gcra(2, Duration::from_secs(60)).with_burst(1)).unwrap();
    /// let now = tokio::time::Instant::now();
    /// let _used = h.reserve_at(&[(rpm, 1)], None, now).await.unwrap().commit_at(now);
    /// let next = h.reserve_at(&[(rpm, 1)], None, now).await.unwrap();
    /// assert_eq!(next.ready_at(), now + Duration::from_secs(30)); // paced: one every 30 s
    /// # }
    /// ```
    #[inline(always)]
    pub fn reserve_at(
        &self,
        costs: &[(BucketKey, u64)],
        max_wait: Option<Duration>,
        now: Instant,
    ) -> Reserve {
        Reserve {
            inner: Pending::book(self, costs, max_wait, now),
        }
    }

    /// Books `costs` if they all fit now, and commits them at once: the request is sent
    /// now, or not at all (what governor's `check_n` does, with exact waits, several
    /// buckets and a receipt to [`adjust`](Committed::adjust)). One clock read: the
    /// instant of booking is the instant of use.
    ///
    /// The same as [`reserve`](Self::reserve) with a `max_wait` of zero followed at once
    /// by [`commit`](Reservation::commit): a wait is declined with
    /// [`ReserveError::WaitTooLong`] (saying how long and what for) without changing any
    /// state, and a cost above a bucket's capacity fails with
    /// [`ReserveError::NeverFits`]. The in-memory store answers at once; a networked
    /// store's answer arriving late is committed at its arrival.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota, ReserveError};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(1_000, Duration::from_secs(60))).unwrap();
    /// let mut used = h.take(&[(tpm, 800)]).await.unwrap();
    /// match h.take(&[(tpm, 800)]).await {
    ///     Err(ReserveError::WaitTooLong(e)) => assert_eq!(e.wait, Duration::from_secs(60)),
    ///     other => panic!("{other:?}"),
    /// }
    /// used.adjust(tpm, 200); // the response said 200 tokens: 600 come back
    /// assert!(h.take(&[(tpm, 800)]).await.is_ok());
    /// # }
    /// ```
    #[inline(always)]
    pub fn take(&self, costs: &[(BucketKey, u64)]) -> Take {
        Take {
            inner: Pending::book(self, costs, Some(Duration::ZERO), Instant::now()),
        }
    }

    /// [`take`](Self::take) without a guard: books `costs` if they all fit now and
    /// commits them at once, returning the bare receipt ([`Taken`]), which holds no
    /// reference to the store. Adjust it later through this handle (or a clone of it):
    /// [`adjust`](Self::adjust), [`adjust_dimension`](Self::adjust_dimension) and
    /// [`sent_at`](Self::sent_at) do exactly what [`Committed`]'s methods of the same
    /// names do. The cheapest way to book a request that is sent at once (no reference
    /// count taken and given back, nothing moved through a future), for a caller that
    /// keeps the handle anyway.
    ///
    /// `Some(Err(..))` as [`take`](Self::take) fails (a wait, declined without changing
    /// any state, or a cost that never fits). `None`, without asking the store, from a
    /// store other than the in-memory one (which may have to wait for its answer: use
    /// [`take`](Self::take) or [`reserve`](Self::reserve) there, whose futures wait for
    /// it); the in-memory store always answers.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota, ReserveError};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(1_000, Duration::from_secs(60))).unwrap();
    /// let mut used = h.try_take(&[(tpm, 800)]).expect("in memory").unwrap();
    /// match h.try_take(&[(tpm, 800)]) {
    ///     Some(Err(ReserveError::WaitTooLong(e))) => assert_eq!(e.wait, Duration::from_secs(60)),
    ///     other => panic!("{other:?}"),
    /// }
    /// h.adjust(&mut used, tpm, 200); // the response said 200 tokens: 600 come back
    /// assert!(matches!(h.try_take(&[(tpm, 800)]), Some(Ok(_))));
    /// # }
    /// ```
    #[inline(always)]
    pub fn try_take(&self, costs: &[(BucketKey, u64)]) -> Option<Result<Taken, ReserveError>> {
        let m = self.memory.as_ref()?;
        let now = Instant::now();
        let mut receipt = Receipt::default();
        Some(match m.book_now_into(costs, now, &mut receipt) {
            Some(ready_at) => Ok(Taken { ready_at, receipt }),
            None => take_planned(m, costs, now),
        })
    }

    /// [`Committed::adjust`] for a booking [`try_take`](Self::try_take)n from this
    /// handle's scope: sets the actual cost in bucket `key` (debits the difference or
    /// refunds it; a refund never creates capacity beyond the limit).
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
    /// let mut used = h.try_take(&[(tpm, 8_000)]).unwrap().unwrap();
    /// h.adjust(&mut used, tpm, 3_000); // 5,000 come back
    /// assert_eq!(h.used(tpm), Some(3_000));
    /// # }
    /// ```
    pub fn adjust(&self, taken: &mut Taken, key: BucketKey, actual: u64) {
        adjust_key(&*self.store, &mut taken.receipt, key, actual);
    }

    /// [`Committed::adjust_dimension`] for a booking [`try_take`](Self::try_take)n from
    /// this handle's scope.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota};
    /// use ratelayer_core::{Dimension, LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let (tpm, tpd) = (BucketKey::TOKENS_PER_MINUTE, BucketKey::TOKENS_PER_DAY);
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
    /// h.set_quota(tpd, Quota::sliding_window(100_000, Duration::from_secs(86_400))).unwrap();
    /// let mut used = h.try_take(&[(tpm, 8_000), (tpd, 8_000)]).unwrap().unwrap();
    /// h.adjust_dimension(&mut used, Dimension::Tokens, 1_000);
    /// assert_eq!((h.used(tpm), h.used(tpd)), (Some(1_000), Some(1_000)));
    /// # }
    /// ```
    pub fn adjust_dimension(&self, taken: &mut Taken, dimension: Dimension, actual: u64) {
        adjust_dimension(&*self.store, &mut taken.receipt, dimension, actual);
    }

    /// [`Committed::sent_at`] for a booking [`try_take`](Self::try_take)n from this
    /// handle's scope: the request reached the provider at `at`, later than it was
    /// booked, and its costs count from then.
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
    /// let mut used = h.try_take(&[(tpm, 8_000)]).unwrap().unwrap();
    /// tokio::time::advance(Duration::from_secs(5)).await;
    /// h.sent_at(&mut used, tokio::time::Instant::now());
    /// tokio::time::advance(Duration::from_secs(56)).await;
    /// assert_eq!(h.wait_time(&[(tpm, 8_000)]).await.unwrap(), Duration::from_secs(4));
    /// # }
    /// ```
    pub fn sent_at(&self, taken: &mut Taken, at: Instant) {
        sent_at(&*self.store, &mut taken.receipt, taken.ready_at, at);
    }

    /// How long a reservation of `costs` would wait now (zero if it fits now). No side
    /// effects.
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
    /// let _used = h.reserve(&[(rpm, 1)], None).await.unwrap().commit();
    /// assert_eq!(h.wait_time(&[(rpm, 1)]).await.unwrap(), Duration::from_secs(60));
    /// // Asking again gives the same answer: asking books nothing.
    /// assert_eq!(h.wait_time(&[(rpm, 1)]).await.unwrap(), Duration::from_secs(60));
    /// assert_eq!(h.wait_time(&[(rpm, 2)]).await.unwrap_err().capacity, 1); // never fits
    /// # }
    /// ```
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
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota};
    /// use ratelayer_core::{LimitState, RateLimitSnapshot, Scope};
    ///
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let (rpm, tpm) = (BucketKey::REQUESTS_PER_MINUTE, BucketKey::TOKENS_PER_MINUTE);
    /// let minute = Duration::from_secs(60);
    /// h.set_quota(rpm, Quota::sliding_window(500, minute)).unwrap();
    /// h.set_quota(tpm, Quota::sliding_window(90_000, minute)).unwrap();
    /// let mut snap = RateLimitSnapshot::default();
    /// (snap.requests.limit, snap.tokens.limit) = (Some(60), Some(30_000));
    /// h.learn_snapshot(&snap);
    /// assert_eq!((h.capacity(rpm), h.capacity(tpm)), (Some(60), Some(30_000)));
    /// ```
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
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let state = LimitState::new();
    /// let provider = state.handle(&Scope::new("openai"));
    /// let model = state.handle(&Scope::new("openai").with_model("gpt-4o"));
    /// let until = tokio::time::Instant::now() + Duration::from_secs(30);
    /// provider.set_cooldown(until);
    /// provider.set_cooldown(until - Duration::from_secs(10)); // earlier: ignored
    /// assert_eq!(model.cooldown_until(), Some(until));
    /// let r = model.reserve(&[], None).await.unwrap();
    /// assert_eq!(r.ready_at(), until); // every reservation waits for it
    /// # }
    /// ```
    pub fn set_cooldown(&self, until: Instant) {
        self.store.set_cooldown(until);
    }

    /// Removes this scope's own cooldown.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let state = LimitState::new();
    /// let provider = state.handle(&Scope::new("openai"));
    /// let model = state.handle(&Scope::new("openai").with_model("gpt-4o"));
    /// let now = tokio::time::Instant::now();
    /// model.set_cooldown(now + Duration::from_secs(60));
    /// provider.set_cooldown(now + Duration::from_secs(30));
    /// model.clear_cooldown(); // its own only: the provider's still covers it
    /// assert_eq!(model.cooldown_until(), Some(now + Duration::from_secs(30)));
    /// # }
    /// ```
    pub fn clear_cooldown(&self) {
        self.store.clear_cooldown();
    }

    /// The cooldown in force on this scope (or a wider one).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// assert_eq!(h.cooldown_until(), None);
    /// let until = tokio::time::Instant::now() + Duration::from_secs(5);
    /// h.set_cooldown(until);
    /// assert_eq!(h.cooldown_until(), Some(until));
    /// # }
    /// ```
    pub fn cooldown_until(&self) -> Option<Instant> {
        self.store.cooldown_until()
    }

    /// Configures (or resizes) concurrency leases.
    ///
    /// ```
    /// use ratelayer_core::engine::{ConcurrencyConfig, Priority};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("kimi"));
    /// h.set_concurrency(ConcurrencyConfig::new(1)).unwrap();
    /// let _first = h.lease(Priority::Normal).await.unwrap();
    /// let mut second = tokio_test::task::spawn(h.lease(Priority::Normal));
    /// assert!(second.poll().is_pending());
    /// h.set_concurrency(ConcurrencyConfig::new(2)).unwrap(); // raising admits the queued at once
    /// assert!(second.is_woken());
    /// assert!(h.set_concurrency(ConcurrencyConfig::new(0)).is_err());
    /// # }
    /// ```
    pub fn set_concurrency(&self, config: ConcurrencyConfig) -> Result<(), ConfigError> {
        self.store.set_concurrency(config)
    }

    /// Acquires a concurrency lease (unlimited until [`set_concurrency`](Self::set_concurrency)).
    ///
    /// On the in-memory store, the lease holds the scope's lease queue itself, whose
    /// reference count shares a cache line with its lock: taking and giving back a lease
    /// writes that one shared line.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{ConcurrencyConfig, Priority};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("kimi"));
    /// let unlimited = h.lease(Priority::Normal).await.unwrap(); // not configured yet
    /// drop(unlimited);
    /// h.set_concurrency(ConcurrencyConfig::new(1)).unwrap();
    /// let _held = h.lease(Priority::High).await.unwrap();
    /// assert_eq!(h.lease_counts(), (1, 0));
    /// # }
    /// ```
    #[inline]
    pub fn lease(&self, priority: Priority) -> LeaseFuture {
        match &self.leases {
            Some(leases) => LeaseFuture {
                fut: leases.acquire(priority),
                owner: Some(LeaseOwner::Memory(Arc::clone(leases))),
            },
            None => LeaseFuture {
                fut: self.store.acquire_lease(priority),
                owner: Some(LeaseOwner::Store(Arc::clone(&self.store))),
            },
        }
    }

    /// A lease at once if one is free and nobody waits, when the store can tell without
    /// waiting (the in-memory store); `None` otherwise, and then [`lease`](Self::lease)
    /// queues, fails or waits as configured. A cheaper first try on a hot path.
    ///
    /// ```
    /// use ratelayer_core::engine::ConcurrencyConfig;
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// let h = LimitState::new().handle(&Scope::new("kimi"));
    /// h.set_concurrency(ConcurrencyConfig::new(1)).unwrap();
    /// let first = h.try_lease().expect("a free slot");
    /// assert!(h.try_lease().is_none(), "full");
    /// drop(first);
    /// assert!(h.try_lease().is_some());
    /// ```
    #[inline]
    pub fn try_lease(&self) -> Option<Lease> {
        let leases = self.leases.as_ref()?;
        let grant = leases.try_acquire()?;
        Some(Lease {
            owner: LeaseOwner::Memory(Arc::clone(leases)),
            grant,
        })
    }

    /// Leases held now, and requests queued.
    ///
    /// ```
    /// use ratelayer_core::engine::{ConcurrencyConfig, Priority};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("kimi"));
    /// h.set_concurrency(ConcurrencyConfig::new(1)).unwrap();
    /// let _held = h.lease(Priority::Normal).await.unwrap();
    /// let mut waiting = tokio_test::task::spawn(h.lease(Priority::Normal));
    /// assert!(waiting.poll().is_pending());
    /// assert_eq!(h.lease_counts(), (1, 1));
    /// # }
    /// ```
    pub fn lease_counts(&self) -> (usize, usize) {
        self.store.lease_counts()
    }

    /// Approximate bytes of state of this scope (constant for a given configuration).
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
    /// h.set_quota(tpm, Quota::sliding_window(30_000, Duration::from_secs(60))).unwrap();
    /// let size = h.approx_size();
    /// for _ in 0..100 {
    ///     let _ = h.reserve(&[(tpm, 100)], None).await.unwrap().commit();
    /// }
    /// assert_eq!(h.approx_size(), size); // constant memory, however many requests
    /// # }
    /// ```
    pub fn approx_size(&self) -> usize {
        self.store.approx_size()
    }
}

/// What a booking becomes: a live reservation, or a use.
trait Outcome: Sized {
    /// Whether the booking is given back on drop.
    const LIVE: bool;

    fn from_booked(booked: Booked, ready_at: Instant) -> Self;

    /// The store's answer arrived after a wait (a store that really waits).
    fn arrived_late(&self) {}
}

impl Outcome for Reservation {
    const LIVE: bool = true;

    #[inline]
    fn from_booked(booked: Booked, ready_at: Instant) -> Self {
        Reservation { ready_at, booked }
    }
}

impl Outcome for Committed {
    const LIVE: bool = false;

    #[inline]
    fn from_booked(booked: Booked, ready_at: Instant) -> Self {
        Committed { ready_at, booked }
    }

    /// Used at the answer's arrival: recorded then if that is late.
    fn arrived_late(&self) {
        let b = &self.booked;
        record_use(&*b.store, &b.receipt, self.ready_at, Instant::now());
    }
}

/// A store operation's outcome: at hand (the in-memory store), or awaited from a store
/// that really waits.
#[derive(Debug)]
enum Pending<T> {
    Done(Option<Result<T, ReserveError>>),
    Waiting {
        fut: StoreFuture<Result<Booking, ReserveError>>,
        store: Arc<dyn ScopeStore>,
    },
}

impl<T: Outcome> Pending<T> {
    /// Books `costs` for `now`: on the in-memory store directly when everything fits
    /// now (the booking is built here, and the future only hands it over), else through
    /// the store.
    #[inline(always)]
    fn book(
        h: &ScopeHandle,
        costs: &[(BucketKey, u64)],
        max_wait: Option<Duration>,
        now: Instant,
    ) -> Self {
        // The guard's reference is taken before booking: an atomic increment then waits
        // for few pending stores (after booking, it would wait for all of the booking's).
        let store = Arc::clone(&h.store);
        let mut receipt = Receipt::default();
        if let Some(m) = &h.memory
            && let Some(ready_at) = m.book_now_into(costs, now, &mut receipt)
        {
            let booked = Booked {
                store,
                receipt,
                live: Live::new(T::LIVE),
            };
            return Pending::Done(Some(Ok(T::from_booked(booked, ready_at))));
        }
        Pending::through_store(h, costs, max_wait, now, store)
    }

    /// Books through the store: what does not fit now, or a store other than the
    /// in-memory one. Out of line, so that the booking made at once is written where it
    /// is returned, not merged with this path's result through registers first (whose
    /// narrow stores would stall the wide loads of the copy that follows).
    #[inline(never)]
    fn through_store(
        h: &ScopeHandle,
        costs: &[(BucketKey, u64)],
        max_wait: Option<Duration>,
        now: Instant,
        store: Arc<dyn ScopeStore>,
    ) -> Self {
        match h.store.reserve(costs, max_wait, now).into_ready() {
            Ok(res) => Pending::Done(Some(arrived(&h.store, res))),
            Err(fut) => Pending::Waiting { fut, store },
        }
    }

    #[inline(always)]
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, ReserveError>> {
        match self {
            Pending::Done(v) => match v.take() {
                Some(v) => Poll::Ready(v),
                None => Poll::Pending,
            },
            Pending::Waiting { fut, store } => {
                let res = std::task::ready!(Pin::new(fut).poll(cx));
                let out = arrived::<T>(store, res);
                if let Ok(t) = &out {
                    t.arrived_late();
                }
                *self = Pending::Done(None);
                Poll::Ready(out)
            }
        }
    }
}

/// What the store's answer becomes (logged if it waits or was declined).
#[inline]
fn arrived<T: Outcome>(
    store: &Arc<dyn ScopeStore>,
    res: Result<Booking, ReserveError>,
) -> Result<T, ReserveError> {
    match res {
        Ok(Booking {
            ready_at,
            waits,
            receipt,
        }) => {
            if waits {
                booked_for_later(&**store, ready_at);
            }
            let booked = Booked {
                store: Arc::clone(store),
                receipt,
                live: Live::new(T::LIVE),
            };
            Ok(T::from_booked(booked, ready_at))
        }
        Err(e) => {
            declined(&**store, &e);
            Err(e)
        }
    }
}

#[cold]
fn booked_for_later(store: &dyn ScopeStore, ready_at: Instant) {
    let wait = ready_at.saturating_duration_since(Instant::now());
    tracing::debug!(scope = %store.scope(), wait_ms = wait.as_millis() as u64,
        "reservation waits");
}

#[cold]
fn declined(store: &dyn ScopeStore, e: &ReserveError) {
    tracing::debug!(scope = %store.scope(), error = %e, "reservation declined");
}

/// The future of [`ScopeHandle::reserve`].
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
/// let _used = h.reserve(&[(rpm, 1)], None).await.unwrap().commit();
/// // The in-memory store answers at once, even when the reservation is for later:
/// let mut fut = tokio_test::task::spawn(h.reserve(&[(rpm, 1)], None));
/// let r = tokio_test::assert_ready!(fut.poll()).unwrap();
/// assert_eq!(r.wait(), Duration::from_secs(60));
/// # }
/// ```
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Reserve {
    inner: Pending<Reservation>,
}

impl Future for Reserve {
    type Output = Result<Reservation, ReserveError>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.poll(cx)
    }
}

/// The future of [`ScopeHandle::take`]: ready at once for the in-memory store.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{BucketKey, Quota};
/// use ratelayer_core::{LimitState, Scope};
///
/// let h = LimitState::new().handle(&Scope::new("openai"));
/// let rpm = BucketKey::REQUESTS_PER_MINUTE;
/// h.set_quota(rpm, Quota::gcra(2, Duration::from_secs(60))).unwrap();
/// let mut take = tokio_test::task::spawn(h.take(&[(rpm, 1)]));
/// assert!(take.poll().is_ready());
/// ```
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Take {
    inner: Pending<Committed>,
}

impl Future for Take {
    type Output = Result<Committed, ReserveError>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.poll(cx)
    }
}

/// Records a use at `now` of a booking made for `ready_at`, if later by more than the
/// slack.
#[inline(always)]
fn record_use(store: &dyn ScopeStore, receipt: &Receipt, ready_at: Instant, now: Instant) {
    // The first comparison is the common case (used at the instant of booking), and
    // spares the addition.
    if now > ready_at && now > ready_at + LATE_COMMIT_SLACK {
        store.commit_late(receipt, ready_at, now);
    }
}

/// What a reservation holds: the store and the receipt; given back on drop while live.
struct Booked {
    store: Arc<dyn ScopeStore>,
    receipt: Receipt,
    live: Live,
}

/// Whether a booking is still given back on drop: a whole word, so that the futures and
/// results around it are copied in whole words (a byte written and then read as part of
/// a wider load stalls the copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
enum Live {
    No = 0,
    Yes = 1,
}

impl Live {
    #[inline]
    const fn new(live: bool) -> Self {
        if live { Live::Yes } else { Live::No }
    }
}

impl Drop for Booked {
    #[inline(always)]
    fn drop(&mut self) {
        if self.live == Live::Yes {
            self.store.cancel(&self.receipt);
        }
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
    ready_at: Instant,
    booked: Booked,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("scope", self.booked.store.scope())
            .field("ready_at", &self.ready_at)
            .field("receipt", &self.booked.receipt)
            .finish()
    }
}

impl Reservation {
    /// When the reservation may be used: sleep until then with
    /// `tokio::time::sleep_until`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::engine::{BucketKey, Quota};
    /// # use ratelayer_core::{Dimension, LimitState, Scope};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
    /// let _first = h.reserve(&[(tpm, 8_000)], None).await.unwrap().commit();
    /// let r = h.reserve(&[(tpm, 8_000)], None).await.unwrap();
    /// assert_eq!(r.ready_at(), tokio::time::Instant::now() + Duration::from_secs(60));
    /// tokio::time::sleep_until(r.ready_at()).await;
    /// let _second = r.commit();
    /// # }
    /// ```
    pub fn ready_at(&self) -> Instant {
        self.ready_at
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
    /// # let h = LimitState::new().handle(&Scope::new("openai"));
    /// let r = h.reserve(&[], None).await.unwrap();
    /// let t0 = tokio::time::Instant::now();
    /// assert_eq!(r.ready_at_now(), r.ready_at()); // at once
    /// h.set_cooldown(t0 + Duration::from_secs(20));
    /// assert_eq!(r.ready_at_now(), t0 + Duration::from_secs(20)); // moved by the cooldown
    /// loop {
    ///     let at = r.ready_at_now();
    ///     if at <= tokio::time::Instant::now() { break; }
    ///     tokio::time::sleep_until(at).await;
    /// }
    /// assert_eq!(t0.elapsed(), Duration::from_secs(20)); // (paused time)
    /// let _used = r.commit();
    /// # }
    /// ```
    pub fn ready_at_now(&self) -> Instant {
        match self.booked.store.cooldown_until() {
            Some(cd) if cd > self.ready_at => cd,
            _ => self.ready_at,
        }
    }

    /// How long from now until [`ready_at`](Self::ready_at).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::engine::{BucketKey, Quota};
    /// # use ratelayer_core::{Dimension, LimitState, Scope};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
    /// let _first = h.reserve(&[(tpm, 8_000)], None).await.unwrap().commit();
    /// let r = h.reserve(&[(tpm, 8_000)], None).await.unwrap();
    /// assert_eq!(r.wait(), Duration::from_secs(60));
    /// tokio::time::advance(Duration::from_secs(45)).await;
    /// assert_eq!(r.wait(), Duration::from_secs(15));
    /// # }
    /// ```
    pub fn wait(&self) -> Duration {
        self.ready_at.saturating_duration_since(Instant::now())
    }

    /// What was booked.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::engine::{BucketKey, Quota};
    /// # use ratelayer_core::{Dimension, LimitState, Scope};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
    /// let rpm = BucketKey::REQUESTS_PER_MINUTE;
    /// let r = h.reserve(&[(tpm, 8_000), (rpm, 1)], None).await.unwrap();
    /// assert_eq!(r.receipt().items().len(), 1); // no quota on requests: nothing booked there
    /// assert_eq!(r.receipt().cost(Dimension::Tokens), 8_000);
    /// # }
    /// ```
    pub fn receipt(&self) -> &Receipt {
        &self.booked.receipt
    }

    /// Marks the reservation used (the request is being sent now): it is no longer given
    /// back on drop.
    ///
    /// Call it when the request is sent, at or after [`ready_at`](Self::ready_at). A use
    /// more than [`LATE_COMMIT_SLACK`] after `ready_at` is recorded at its real time, so
    /// a window-safe bucket counts the cost from when it was really sent.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::engine::{BucketKey, Quota};
    /// # use ratelayer_core::{Dimension, LimitState, Scope};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
    /// let r = h.reserve(&[(tpm, 8_000)], None).await.unwrap();
    /// let used = r.commit();
    /// drop(used); // used: nothing is given back
    /// assert_eq!(h.used(tpm), Some(8_000));
    /// # }
    /// ```
    #[inline(always)]
    pub fn commit(self) -> Committed {
        self.commit_at(Instant::now())
    }

    /// [`commit`](Self::commit) with the current instant read by the caller.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::engine::{BucketKey, Quota};
    /// # use ratelayer_core::{Dimension, LimitState, Scope};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
    /// let now = tokio::time::Instant::now();
    /// let r = h.reserve_at(&[(tpm, 8_000)], None, now).await.unwrap();
    /// let _used = r.commit_at(now); // one clock read for booking and use
    /// assert_eq!(h.wait_time(&[(tpm, 8_000)]).await.unwrap(), Duration::from_secs(60));
    /// # }
    /// ```
    #[inline(always)]
    pub fn commit_at(self, now: Instant) -> Committed {
        record_use(
            &*self.booked.store,
            &self.booked.receipt,
            self.ready_at,
            now,
        );
        // Copied first and marked after: a copy of a word just written would stall.
        let mut used = Committed {
            ready_at: self.ready_at,
            booked: self.booked,
        };
        used.booked.live = Live::No;
        used
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
    /// When the booking was usable (the use counts from then, or from a later
    /// [`sent_at`](Self::sent_at)).
    ready_at: Instant,
    /// No longer live: nothing happens on drop.
    booked: Booked,
}

impl fmt::Debug for Committed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committed")
            .field("scope", self.booked.store.scope())
            .field("receipt", &self.booked.receipt)
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
        let r = &mut self.booked;
        sent_at(&*r.store, &mut r.receipt, self.ready_at, at);
    }

    /// Sets the actual cost in bucket `key`: debits the difference if it is more than
    /// booked, refunds it if less (a refund never creates capacity beyond the limit).
    /// No effect for a bucket the reservation did not book.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::engine::{BucketKey, Quota};
    /// # use ratelayer_core::{Dimension, LimitState, Scope};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
    /// let mut used = h.reserve(&[(tpm, 2_000)], None).await.unwrap().commit();
    /// used.adjust(tpm, 5_000); // the response said 5,000 tokens: 3,000 more are debited
    /// assert_eq!(h.used(tpm), Some(5_000));
    /// used.adjust(BucketKey::TOKENS_PER_DAY, 9_999); // not booked: no effect
    /// assert_eq!(used.receipt().cost(Dimension::Tokens), 5_000);
    /// # }
    /// ```
    pub fn adjust(&mut self, key: BucketKey, actual: u64) {
        let r = &mut self.booked;
        adjust_key(&*r.store, &mut r.receipt, key, actual);
    }

    /// Sets the actual cost of every booked bucket of `dimension` (such as tokens per
    /// minute and per day together).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::engine::{BucketKey, Quota};
    /// # use ratelayer_core::{Dimension, LimitState, Scope};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
    /// let tpd = BucketKey::TOKENS_PER_DAY;
    /// h.set_quota(tpd, Quota::sliding_window(100_000, Duration::from_secs(86_400))).unwrap();
    /// let mut used = h.reserve(&[(tpm, 8_000), (tpd, 8_000)], None).await.unwrap().commit();
    /// used.adjust_dimension(Dimension::Tokens, 2_500);
    /// assert_eq!((h.used(tpm), h.used(tpd)), (Some(2_500), Some(2_500)));
    /// # }
    /// ```
    pub fn adjust_dimension(&mut self, dimension: Dimension, actual: u64) {
        let r = &mut self.booked;
        adjust_dimension(&*r.store, &mut r.receipt, dimension, actual);
    }

    /// What is booked now.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::engine::{BucketKey, Quota};
    /// # use ratelayer_core::{Dimension, LimitState, Scope};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
    /// let mut used = h.reserve(&[(tpm, 8_000)], None).await.unwrap().commit();
    /// used.adjust(tpm, 3_000);
    /// assert_eq!(used.receipt().cost(Dimension::Tokens), 3_000); // after the adjustment
    /// # }
    /// ```
    pub fn receipt(&self) -> &Receipt {
        &self.booked.receipt
    }

    /// The bare receipt, without the reference to the store: adjust it through the
    /// scope's handle from now on (as one [`ScopeHandle::try_take`] returns).
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
    /// let mut used = h.reserve(&[(tpm, 8_000)], None).await.unwrap().commit().into_taken();
    /// h.adjust(&mut used, tpm, 3_000);
    /// assert_eq!(h.used(tpm), Some(3_000));
    /// # }
    /// ```
    pub fn into_taken(mut self) -> Taken {
        Taken {
            ready_at: self.ready_at,
            receipt: std::mem::take(&mut self.booked.receipt),
        }
    }
}

/// [`ScopeHandle::try_take`] when the booking does not fit at once: planned (booked if
/// it waits zero) or declined. Out of line, as [`Pending::through_store`].
#[inline(never)]
fn take_planned(
    m: &MemoryScope,
    costs: &[(BucketKey, u64)],
    now: Instant,
) -> Result<Taken, ReserveError> {
    match m.reserve_now(costs, Some(Duration::ZERO), now) {
        Ok(Booking {
            ready_at, receipt, ..
        }) => Ok(Taken { ready_at, receipt }),
        Err(e) => {
            declined(m, &e);
            Err(e)
        }
    }
}

/// Redates a used booking made for `ready_at` to `at` (see [`Committed::sent_at`]).
fn sent_at(store: &dyn ScopeStore, receipt: &mut Receipt, ready_at: Instant, at: Instant) {
    if at > ready_at + LATE_COMMIT_SLACK {
        store.redate(receipt, ready_at, at);
    }
}

/// Sets the actual cost of a used booking in bucket `key` (see [`Committed::adjust`]).
fn adjust_key(store: &dyn ScopeStore, receipt: &mut Receipt, key: BucketKey, actual: u64) {
    let Some(id) = store.bucket_id(key) else {
        return;
    };
    if let Some(item) = receipt.items_mut().iter_mut().find(|i| i.bucket() == id)
        && item.cost() != actual
    {
        store.adjust(item, actual);
    }
}

/// Sets the actual cost of a used booking in every bucket of `dimension` (see
/// [`Committed::adjust_dimension`]).
fn adjust_dimension(
    store: &dyn ScopeStore,
    receipt: &mut Receipt,
    dimension: Dimension,
    actual: u64,
) {
    for item in receipt.items_mut() {
        if item.dimension() == dimension && item.cost() != actual {
            store.adjust(item, actual);
        }
    }
}

/// A booking taken and committed at once by [`ScopeHandle::try_take`]: what was booked
/// and when, without a reference to the store (dropping it changes nothing, as for a
/// [`Committed`]). Adjust it through the handle of the scope it was taken from:
/// [`ScopeHandle::adjust`], [`ScopeHandle::adjust_dimension`], [`ScopeHandle::sent_at`].
/// Given to another scope's handle, a receipt's buckets are not that scope's: keep the
/// handle beside it.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{BucketKey, Quota};
/// use ratelayer_core::{Dimension, LimitState, Scope};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let h = LimitState::new().handle(&Scope::new("openai"));
/// let tpm = BucketKey::TOKENS_PER_MINUTE;
/// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
/// let used = h.try_take(&[(tpm, 8_000)]).unwrap().unwrap();
/// assert_eq!(used.receipt().cost(Dimension::Tokens), 8_000);
/// assert_eq!(used.ready_at(), tokio::time::Instant::now());
/// # }
/// ```
#[derive(Debug)]
pub struct Taken {
    ready_at: Instant,
    receipt: Receipt,
}

impl Taken {
    /// When the booking was made (and used).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::engine::{BucketKey, Quota};
    /// # use ratelayer_core::{Dimension, LimitState, Scope};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
    /// let now = tokio::time::Instant::now();
    /// let used = h.try_take(&[(tpm, 8_000)]).unwrap().unwrap();
    /// assert_eq!(used.ready_at(), now);
    /// # }
    /// ```
    pub fn ready_at(&self) -> Instant {
        self.ready_at
    }

    /// What is booked now.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratelayer_core::engine::{BucketKey, Quota};
    /// # use ratelayer_core::{Dimension, LimitState, Scope};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("openai"));
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// h.set_quota(tpm, Quota::sliding_window(10_000, Duration::from_secs(60))).unwrap();
    /// let mut used = h.try_take(&[(tpm, 8_000)]).unwrap().unwrap();
    /// h.adjust(&mut used, tpm, 1_000);
    /// assert_eq!(used.receipt().cost(Dimension::Tokens), 1_000);
    /// # }
    /// ```
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }
}

/// The future of [`ScopeHandle::lease`].
///
/// ```
/// use ratelayer_core::engine::{ConcurrencyConfig, Priority};
/// use ratelayer_core::{LimitState, Scope};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let h = LimitState::new().handle(&Scope::new("kimi"));
/// h.set_concurrency(ConcurrencyConfig::new(1)).unwrap();
/// let held = h.lease(Priority::Normal).await.unwrap();
/// let mut next = tokio_test::task::spawn(h.lease(Priority::Normal));
/// assert!(next.poll().is_pending()); // queued
/// drop(next); // cancelled: leaves the queue
/// assert_eq!(h.lease_counts(), (1, 0));
/// # drop(held);
/// # }
/// ```
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct LeaseFuture {
    fut: StoreFuture<Result<LeaseGrant, QueueFull>>,
    owner: Option<LeaseOwner>,
}

/// What a lease is given back to: the in-memory lease queue directly, or the store.
#[derive(Debug)]
enum LeaseOwner {
    Memory(Arc<lease::Leases>),
    Store(Arc<dyn ScopeStore>),
}

impl Future for LeaseFuture {
    type Output = Result<Lease, QueueFull>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = std::task::ready!(Pin::new(&mut self.fut).poll(cx));
        let Some(owner) = self.owner.take() else {
            return Poll::Pending;
        };
        Poll::Ready(res.map(|grant| Lease { owner, grant }))
    }
}

/// A held concurrency lease, released on drop. See [`ScopeHandle::lease`] and the
/// [module documentation](self) for an example.
///
/// ```
/// use ratelayer_core::engine::{ConcurrencyConfig, Priority};
/// use ratelayer_core::{LimitState, Scope};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let h = LimitState::new().handle(&Scope::new("kimi"));
/// h.set_concurrency(ConcurrencyConfig::new(2)).unwrap();
/// let lease = h.lease(Priority::Normal).await.unwrap();
/// assert_eq!(h.lease_counts(), (1, 0));
/// drop(lease); // released on drop
/// assert_eq!(h.lease_counts(), (0, 0));
/// # }
/// ```
pub struct Lease {
    owner: LeaseOwner,
    grant: LeaseGrant,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = match &self.owner {
            LeaseOwner::Memory(l) => l.scope(),
            LeaseOwner::Store(s) => s.scope(),
        };
        f.debug_struct("Lease")
            .field("scope", scope)
            .field("grant", &self.grant)
            .finish()
    }
}

impl Lease {
    /// When a shared backend may reclaim the lease (if it has a TTL).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{ConcurrencyConfig, Priority};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let h = LimitState::new().handle(&Scope::new("kimi"));
    /// let ttl = Duration::from_secs(300);
    /// h.set_concurrency(ConcurrencyConfig::new(2).with_lease_ttl(ttl)).unwrap();
    /// let lease = h.lease(Priority::Normal).await.unwrap();
    /// assert_eq!(lease.expires_at(), Some(tokio::time::Instant::now() + ttl));
    /// # }
    /// ```
    pub fn expires_at(&self) -> Option<Instant> {
        self.grant.expires_at
    }
}

impl Drop for Lease {
    #[inline]
    fn drop(&mut self) {
        match &self.owner {
            LeaseOwner::Memory(l) => l.release(),
            LeaseOwner::Store(s) => s.release_lease(&self.grant),
        }
    }
}
