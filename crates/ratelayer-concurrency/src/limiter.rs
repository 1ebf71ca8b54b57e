//! The limiter of one scope, on the engine of `ratelayer-core`: concurrency leases (FIFO
//! per priority class, bounded queue, resize) and request buckets (reservoir, burst,
//! spacing, learned limits) of the scope's [`ScopeHandle`].

use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ratelayer_core::engine::{
    BucketKey, ConcurrencyConfig as LeaseConfig, Lease, LeaseFuture, OnFull, Priority, Quota,
    Reservation, Reserve, ReserveError, ScopeHandle,
};
use ratelayer_core::{BoxError, Dimension, QueueFull, Scope, ScopeHasher};
use tokio::time::Instant;

use crate::config::{Limits, WhenFull};

/// A request limit the provider stated: `limit` per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) limit: u32,
    pub(crate) interval: Duration,
}

/// What a scope's limiter and queue look like now.
///
/// ```
/// use ratelayer_concurrency::ScopeStats;
/// let s = ScopeStats::default();
/// assert_eq!((s.in_flight, s.queued), (0, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeStats {
    /// Requests holding a permit (in flight, or booked to start).
    pub in_flight: usize,
    /// Requests waiting for a permit.
    pub queued: usize,
    /// The maximum of concurrent requests (`None`: unlimited).
    pub max_concurrent: Option<usize>,
    /// How long a request would wait now for the reservoir, spacing and cooldown (not
    /// counting the queue).
    pub pacing_wait: Duration,
}

#[derive(Debug)]
struct Applied {
    max: Option<usize>,
    configured: Vec<(BucketKey, Quota)>,
    learned: Option<Window>,
    /// The buckets this layer set on the scope (to remove them when they go away).
    owned: Vec<BucketKey>,
    /// One unit in each of them: what a request books.
    costs: Arc<[(BucketKey, u64)]>,
}

/// A scope's identity as the hot path compares it, on cache lines of its own.
///
/// The scope's strings are often shared with a request's metadata, small allocations
/// among those every request makes and frees, so their cache lines are written by other
/// cores all the time (false sharing): a copy padded by a cache line on each side is
/// read from lines nothing else writes.
#[derive(Debug)]
struct ScopeKey {
    /// Provider, credential and model bytes, one after the other, between paddings.
    buf: Box<[u8]>,
    provider: usize,
    credential: Option<usize>,
    model: Option<usize>,
}

/// A cache line (and then some, for adjacent-line prefetching).
const PAD: usize = 128;

impl ScopeKey {
    fn new(scope: &Scope) -> Self {
        let parts = [
            scope.provider(),
            scope.credential().unwrap_or(""),
            scope.model().unwrap_or(""),
        ];
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut buf = Vec::with_capacity(2 * PAD + len);
        buf.resize(PAD, 0);
        for p in parts {
            buf.extend_from_slice(p.as_bytes());
        }
        buf.resize(2 * PAD + len, 0);
        ScopeKey {
            buf: buf.into_boxed_slice(),
            provider: scope.provider().len(),
            credential: scope.credential().map(str::len),
            model: scope.model().map(str::len),
        }
    }

    /// Whether the scope is (`provider`, `credential`, `model`).
    #[inline]
    fn matches(&self, provider: &str, credential: Option<&str>, model: Option<&str>) -> bool {
        if provider.len() != self.provider
            || credential.map(str::len) != self.credential
            || model.map(str::len) != self.model
        {
            return false;
        }
        let mut at = PAD;
        for part in [provider, credential.unwrap_or(""), model.unwrap_or("")] {
            if part.is_empty() {
                continue;
            }
            let end = at + part.len();
            if self.buf.get(at..end) != Some(part.as_bytes()) {
                return false;
            }
            at = end;
        }
        true
    }
}

/// [`ScopeLimiter::learned_from`]'s "never".
const NOT_LEARNED: u64 = u64::MAX;

/// The limiter of one scope, shared by every clone of the layer's services.
///
/// Aligned to a cache line, so that no other allocation shares the lines every request
/// reads.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct ScopeLimiter {
    scope: Scope,
    key: ScopeKey,
    engine: ScopeHandle,
    applied: Mutex<Applied>,
    /// Whether any request bucket is set (read without the lock on the hot path).
    paced: AtomicBool,
    /// What the learned request limit was last derived from (see [`Self::learn_key`]);
    /// `NOT_LEARNED`: nothing yet.
    learned_from: AtomicU64,
    /// Hashes a request's model into [`Self::learn_key`].
    hasher: ScopeHasher,
}

pub(crate) enum Admit {
    Now(Permit),
    Queued(Waiter),
}

/// The buckets of `limits`: the reservoir (window-safe), its burst bound (GCRA at the
/// same rate) and the minimum spacing (GCRA, burst 1: exact pacing).
pub(crate) fn buckets(limits: &Limits) -> Vec<(BucketKey, Quota)> {
    let mut out: Vec<(BucketKey, Quota)> = Vec::new();
    let mut push = |key: BucketKey, q: Quota| {
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, q));
        }
    };
    let spacing = limits.min_spacing_duration();
    if !spacing.is_zero() {
        push(
            BucketKey::new(Dimension::Requests, spacing),
            Quota::gcra(1, spacing).with_burst(1),
        );
    }
    if let Some(r) = limits.reservoir {
        let n = u64::from(r.requests);
        let interval = r.interval();
        push(
            BucketKey::new(Dimension::Requests, interval),
            Quota::sliding_window(n, interval),
        );
        if let Some(b) = r.burst.map(u64::from).filter(|b| *b < n) {
            // b per (interval * b / n): the reservoir's rate, at most b at once.
            let w = interval.mul_f64(b as f64 / n as f64);
            push(
                BucketKey::new(Dimension::Requests, w),
                Quota::gcra(b, w).with_burst(b),
            );
        }
    }
    out
}

impl ScopeLimiter {
    pub(crate) fn new(scope: Scope, engine: ScopeHandle, limits: &Limits) -> Self {
        let l = ScopeLimiter {
            key: ScopeKey::new(&scope),
            scope,
            engine,
            applied: Mutex::new(Applied {
                max: None,
                configured: Vec::new(),
                learned: None,
                owned: Vec::new(),
                costs: Arc::new([]),
            }),
            paced: AtomicBool::new(false),
            learned_from: AtomicU64::new(NOT_LEARNED),
            hasher: ScopeHasher::default(),
        };
        l.reconfigure(limits);
        l
    }

    /// What a request's learned limit derives from: the state's
    /// [`generation`](ratelayer_core::LimitState::generation) (tiers and stated request
    /// limits) and the request's model (a scope counted across models learns from each
    /// request's own model).
    #[inline]
    pub(crate) fn learn_key(&self, generation: u64, model: Option<&str>) -> u64 {
        generation.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.hasher.hash_one(model)
    }

    /// Whether the learned limit was last derived from `key` (nothing changed since).
    #[inline]
    pub(crate) fn learned_from(&self, key: u64) -> bool {
        key != NOT_LEARNED && self.learned_from.load(Ordering::Acquire) == key
    }

    pub(crate) fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Whether this is the scope of (`provider`, `credential`, `model`).
    #[inline]
    pub(crate) fn matches(
        &self,
        provider: &str,
        credential: Option<&str>,
        model: Option<&str>,
    ) -> bool {
        self.key.matches(provider, credential, model)
    }

    fn lock(&self) -> MutexGuard<'_, Applied> {
        // Every critical section leaves `Applied` consistent before it can panic.
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies new limits: a raised maximum admits queued requests at once; a lowered one
    /// takes effect as in-flight requests finish. Bucket state (history) is kept.
    pub(crate) fn reconfigure(&self, limits: &Limits) {
        let lease = LeaseConfig::new(limits.max_concurrent.map_or(usize::MAX, |n| n as usize))
            .with_queue_bound(limits.queue_capacity.unwrap_or(usize::MAX))
            .with_on_full(match limits.when_full {
                WhenFull::Wait => OnFull::Wait,
                WhenFull::Fail => OnFull::Fail,
            })
            .with_high_streak(limits.high_priority_streak.max(1));
        if let Err(e) = self.engine.set_concurrency(lease) {
            // Validated with the configuration; never expected.
            tracing::error!(scope = %self.scope, error = %e, "concurrency not applied");
        }
        let mut a = self.lock();
        a.max = limits.max_concurrent.map(|n| n as usize);
        a.configured = buckets(limits);
        self.apply_buckets(&mut a);
    }

    /// Records that the learned limit is derived from `key` (see
    /// [`learn_key`](Self::learn_key)), and sets (or clears) the request limit the
    /// provider stated when `learned` is given (`None`: this scope does not learn, the
    /// limit stays as it is). The key is kept under the limit's lock, so it always names
    /// what the applied limit was derived from.
    pub(crate) fn learned(&self, key: u64, learned: Option<Option<Window>>) {
        let mut a = self.lock();
        self.learned_from.store(key, Ordering::Release);
        let Some(learned) = learned else {
            return;
        };
        if a.learned == learned {
            return;
        }
        tracing::debug!(
            scope = %self.scope,
            limit = learned.map(|w| w.limit),
            interval_secs = learned.map(|w| w.interval.as_secs_f64()),
            "request limit learned from the provider"
        );
        a.learned = learned;
        self.apply_buckets(&mut a);
    }

    fn apply_buckets(&self, a: &mut Applied) {
        let mut want = a.configured.clone();
        if let Some(w) = a.learned {
            let key = BucketKey::new(Dimension::Requests, w.interval);
            let q = Quota::sliding_window(u64::from(w.limit), w.interval);
            match want.iter_mut().find(|(k, _)| *k == key) {
                // The stricter of the configured and the stated limit.
                Some((_, cur)) => {
                    if q.limit < cur.limit {
                        *cur = q;
                    }
                }
                None => want.push((key, q)),
            }
        }
        for key in &a.owned {
            if !want.iter().any(|(k, _)| k == key) {
                self.engine.remove_quota(*key);
            }
        }
        let mut owned = Vec::with_capacity(want.len());
        for (key, q) in &want {
            match self.engine.set_quota(*key, *q) {
                Ok(()) => owned.push(*key),
                Err(e) => {
                    tracing::warn!(scope = %self.scope, bucket = key.describe(), error = %e,
                        "request limit not applied")
                }
            }
        }
        a.costs = owned.iter().map(|k| (*k, 1)).collect();
        self.paced.store(!owned.is_empty(), Ordering::Release);
        a.owned = owned;
    }

    pub(crate) fn stats(&self) -> ScopeStats {
        let (in_flight, queued) = self.engine.lease_counts();
        let (max, costs) = {
            let a = self.lock();
            (a.max, a.costs.clone())
        };
        let pacing_wait = self
            .engine
            .wait_time(&costs)
            .now_or_never()
            .and_then(Result::ok)
            .unwrap_or_default();
        ScopeStats {
            in_flight,
            queued,
            max_concurrent: max,
            pacing_wait,
        }
    }

    /// A permit at once if one is free and nobody waits; otherwise a place in the queue,
    /// or [`QueueFull`] when the queue is full and the scope is set to fail.
    pub(crate) fn acquire(&self, priority: Priority) -> Result<Admit, QueueFull> {
        let mut fut = self.engine.lease(priority);
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut fut).poll(&mut cx) {
            Poll::Ready(Ok(lease)) => Ok(Admit::Now(Permit { lease })),
            Poll::Ready(Err(full)) => {
                tracing::warn!(scope = %self.scope, capacity = full.capacity,
                    "queue full: request rejected");
                Err(full)
            }
            Poll::Pending => {
                let (in_flight, queued) = self.engine.lease_counts();
                tracing::debug!(
                    scope = %self.scope,
                    priority = priority_str(priority),
                    in_flight,
                    queued,
                    "request queued for a concurrency permit"
                );
                Ok(Admit::Queued(Waiter { fut }))
            }
        }
    }
}

impl ScopeLimiter {
    /// A permit at once, with nothing to book, when the scope sets no request bucket
    /// (reservoir, spacing, learned limit) and a permit is free with nobody queued, on a
    /// store that can tell without waiting. `None`: take the general path
    /// ([`acquire`](Self::acquire), then [`book`](Self::book)).
    #[inline]
    pub(crate) fn try_start_now(&self) -> Option<Permit> {
        if self.paced.load(Ordering::Acquire) {
            return None;
        }
        self.try_permit()
    }

    /// A permit at once when one is free with nobody queued, on a store that can tell
    /// without waiting (a paced start must still be [booked](Self::book)).
    #[inline]
    pub(crate) fn try_permit(&self) -> Option<Permit> {
        self.engine.try_lease().map(|lease| Permit { lease })
    }

    /// Books a start in the scope's request buckets (call it holding a permit).
    #[inline]
    pub(crate) fn book(&self) -> Result<Book, BoxError> {
        if !self.paced.load(Ordering::Acquire) {
            return Ok(Book::Done(Booking::immediate()));
        }
        let costs = self.lock().costs.clone();
        let mut cx = Context::from_waker(Waker::noop());
        // A start that fits now is booked and used at once (one clock read); the
        // booking is kept by the bucket (a used booking needs no guard).
        let mut take = self.engine.take(&costs);
        match Pin::new(&mut take).poll(&mut cx) {
            Poll::Ready(Ok(_used)) => return Ok(Book::Done(Booking::immediate())),
            Poll::Ready(Err(ReserveError::NeverFits(e))) => return Err(Box::new(e)),
            // It must wait (or the store answers later): book it for its turn.
            Poll::Ready(Err(_)) | Poll::Pending => {}
        }
        drop(take);
        let mut fut = self.engine.reserve(&costs, None);
        match Pin::new(&mut fut).poll(&mut cx) {
            Poll::Ready(r) => Ok(Book::Done(Booking::from_reserved(r)?)),
            Poll::Pending => Ok(Book::Pending(fut)),
        }
    }
}

pub(crate) fn priority_str(p: Priority) -> &'static str {
    match p {
        Priority::High => "high",
        Priority::Normal => "normal",
    }
}

/// A place in a scope's queue. Dropping it leaves the queue (or gives back a permit
/// granted to it in the meantime).
pub(crate) struct Waiter {
    fut: LeaseFuture,
}

impl Waiter {
    pub(crate) fn poll_acquire(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, QueueFull>> {
        Pin::new(&mut self.fut)
            .poll(cx)
            .map(|r| r.map(|lease| Permit { lease }))
    }
}

/// A concurrency permit of one scope (an engine lease), given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    #[allow(dead_code)] // held for its Drop
    lease: Lease,
}

/// Booking a start: at once when nothing paces (or the store answered at once), or a
/// pending reservation from a store that really waits.
pub(crate) enum Book {
    Done(Booking),
    Pending(Reserve),
}

/// A booked start. Dropped before [`use_now`](Self::use_now), it gives back what it
/// booked.
#[derive(Debug)]
pub(crate) struct Booking {
    reservation: Option<Reservation>,
}

impl Booking {
    #[inline]
    fn immediate() -> Self {
        Booking { reservation: None }
    }

    pub(crate) fn from_reserved(r: Result<Reservation, ReserveError>) -> Result<Self, BoxError> {
        Ok(Booking {
            reservation: Some(r.map_err(ReserveError::into_box)?),
        })
    }

    /// When the request may start (now if nothing paces).
    #[inline]
    pub(crate) fn ready_at(&self) -> Option<Instant> {
        self.reservation.as_ref().map(Reservation::ready_at)
    }

    /// The request starts now: the booking is used.
    #[inline]
    pub(crate) fn use_now(&mut self) {
        if let Some(r) = self.reservation.take() {
            drop(r.commit());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_key_matches_only_its_own_scope() {
        let full = Scope::new("openai")
            .with_credential("fp")
            .with_model("gpt-4o");
        let k = ScopeKey::new(&full);
        assert!(k.matches("openai", Some("fp"), Some("gpt-4o")));
        assert!(!k.matches("openai", Some("fp"), None));
        assert!(!k.matches("openai", Some("fp"), Some("gpt-4x")));
        assert!(!k.matches("openai", Some("fq"), Some("gpt-4o")));
        assert!(!k.matches("openal", Some("fp"), Some("gpt-4o")));
        // The same bytes split differently are another scope.
        assert!(!k.matches("openaif", Some("p"), Some("gpt-4o")));

        let bare = ScopeKey::new(&Scope::new("kimi"));
        assert!(bare.matches("kimi", None, None));
        assert!(!bare.matches("kimi", Some(""), None));
        assert!(!bare.matches("kimi", None, Some("")));
        assert!(!bare.matches("kim", None, None));
    }
}
