//! Concurrency leases: at most `limit` holders per scope, FIFO within a priority class,
//! a bounded queue, runtime resize.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::store::StoreFuture;
use crate::error::{ConfigError, QueueFull};
use crate::scope::Scope;

/// The priority class of a lease request. `High` is served first, but after
/// [`ConcurrencyConfig::high_streak`] consecutive `High` grants while a `Normal` request
/// waits, one `Normal` request is served (no starvation).
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
/// let mut normal = tokio_test::task::spawn(h.lease(Priority::Normal));
/// let mut high = tokio_test::task::spawn(h.lease(Priority::High));
/// assert!(normal.poll().is_pending() && high.poll().is_pending());
/// drop(held);
/// let served = high.poll(); // queued later, served first
/// assert!(served.is_ready());
/// assert!(normal.poll().is_pending());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// Served first.
    High,
    /// The default.
    #[default]
    Normal,
}

/// What to do when the queue is full.
///
/// ```
/// use ratelayer_core::engine::{ConcurrencyConfig, OnFull, Priority};
/// use ratelayer_core::{LimitState, QueueFull, Scope};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let h = LimitState::new().handle(&Scope::new("kimi"));
/// let cfg = ConcurrencyConfig::new(1).with_queue_bound(1).with_on_full(OnFull::Fail);
/// h.set_concurrency(cfg).unwrap();
/// let _held = h.lease(Priority::Normal).await.unwrap();
/// let mut queued = tokio_test::task::spawn(h.lease(Priority::Normal));
/// assert!(queued.poll().is_pending());
/// let full: QueueFull = h.lease(Priority::Normal).await.unwrap_err();
/// assert_eq!(full.capacity, 1);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnFull {
    /// Fail at once with [`QueueFull`].
    #[default]
    Fail,
    /// Wait for room in the queue.
    Wait,
}

/// Configuration of a scope's concurrency leases.
///
/// ```
/// use ratelayer_core::engine::{ConcurrencyConfig, OnFull};
/// let cfg = ConcurrencyConfig::new(1).with_queue_bound(100).with_on_full(OnFull::Wait);
/// assert!(cfg.validate().is_ok());
/// assert!(ConcurrencyConfig::new(0).validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConcurrencyConfig {
    /// The most leases held at once.
    pub limit: usize,
    /// The most requests waiting in the queue.
    pub queue_bound: usize,
    /// What to do when the queue is full.
    pub on_full: OnFull,
    /// How long a lease is valid before a shared backend may reclaim it from a crashed
    /// holder. The in-memory store releases leases on drop (a crashed process takes its
    /// memory with it) and only reports the deadline.
    pub lease_ttl: Option<Duration>,
    /// Consecutive `High` grants after which a waiting `Normal` request is served.
    pub high_streak: u32,
}

impl ConcurrencyConfig {
    /// `limit` concurrent leases, a queue of 1,024, failing when full, no TTL, a high
    /// streak of 4.
    ///
    /// ```
    /// use ratelayer_core::engine::{ConcurrencyConfig, OnFull};
    ///
    /// let cfg = ConcurrencyConfig::new(2);
    /// assert_eq!((cfg.limit, cfg.queue_bound, cfg.high_streak), (2, 1024, 4));
    /// assert_eq!((cfg.on_full, cfg.lease_ttl), (OnFull::Fail, None));
    /// ```
    pub fn new(limit: usize) -> Self {
        ConcurrencyConfig {
            limit,
            queue_bound: 1024,
            on_full: OnFull::Fail,
            lease_ttl: None,
            high_streak: 4,
        }
    }

    /// Sets the queue bound.
    ///
    /// ```
    /// use ratelayer_core::engine::ConcurrencyConfig;
    /// assert_eq!(ConcurrencyConfig::new(1).with_queue_bound(16).queue_bound, 16);
    /// ```
    pub fn with_queue_bound(mut self, bound: usize) -> Self {
        self.queue_bound = bound;
        self
    }

    /// Sets what to do when the queue is full.
    ///
    /// ```
    /// use ratelayer_core::engine::{ConcurrencyConfig, OnFull};
    /// assert_eq!(ConcurrencyConfig::new(1).with_on_full(OnFull::Wait).on_full, OnFull::Wait);
    /// ```
    pub fn with_on_full(mut self, on_full: OnFull) -> Self {
        self.on_full = on_full;
        self
    }

    /// Sets the lease TTL.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::ConcurrencyConfig;
    ///
    /// let cfg = ConcurrencyConfig::new(1).with_lease_ttl(Duration::from_secs(600));
    /// assert_eq!(cfg.lease_ttl, Some(Duration::from_secs(600)));
    /// assert!(ConcurrencyConfig::new(1).with_lease_ttl(Duration::ZERO).validate().is_err());
    /// ```
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }

    /// Sets the high-priority streak.
    ///
    /// ```
    /// use ratelayer_core::engine::ConcurrencyConfig;
    ///
    /// assert_eq!(ConcurrencyConfig::new(1).with_high_streak(8).high_streak, 8);
    /// assert!(ConcurrencyConfig::new(1).with_high_streak(0).validate().is_err());
    /// ```
    pub fn with_high_streak(mut self, streak: u32) -> Self {
        self.high_streak = streak;
        self
    }

    /// Checks that `limit >= 1`, `high_streak >= 1` and a TTL (if any) is above zero.
    ///
    /// ```
    /// use ratelayer_core::engine::ConcurrencyConfig;
    ///
    /// assert!(ConcurrencyConfig::new(1).validate().is_ok());
    /// let err = ConcurrencyConfig::new(0).validate().unwrap_err();
    /// assert_eq!(err.setting, "concurrency.limit");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.limit == 0 {
            return Err(ConfigError::new(
                "concurrency.limit",
                "the concurrency limit must be at least 1",
            ));
        }
        if self.high_streak == 0 {
            return Err(ConfigError::new(
                "concurrency.high_streak",
                "the high-priority streak must be at least 1 (normal requests would starve)",
            ));
        }
        if self.lease_ttl.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "concurrency.lease_ttl",
                "the lease TTL must be longer than zero (or unset)",
            ));
        }
        Ok(())
    }
}

/// A granted lease, as the store knows it.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{ConcurrencyConfig, MemoryStore, Priority, Store};
/// use ratelayer_core::Scope;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let s = MemoryStore::new().scope(&Scope::new("kimi"));
/// s.set_concurrency(ConcurrencyConfig::new(1).with_lease_ttl(Duration::from_secs(60))).unwrap();
/// let grant = s.acquire_lease(Priority::Normal).await.unwrap();
/// assert_eq!(grant.expires_at, Some(tokio::time::Instant::now() + Duration::from_secs(60)));
/// s.release_lease(&grant);
/// assert_eq!(s.lease_counts(), (0, 0));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseGrant {
    /// The store's identifier of the lease.
    pub id: u64,
    /// When a shared backend may reclaim the lease, if it has a TTL.
    pub expires_at: Option<Instant>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    tx: oneshot::Sender<LeaseGrant>,
}

/// The lease state of one scope.
///
/// What taking and giving back a lease writes when nobody waits (the counts) is small
/// enough to share a cache line with the lock and the `Arc`'s reference counts (see
/// [`Leases::new`]); the queues and the configuration sit behind a pointer, only read
/// then.
#[derive(Debug)]
struct LeaseState {
    held: usize,
    /// The configured limit (`usize::MAX` until configured).
    limit: usize,
    /// Requests in both queues.
    queued: usize,
    next_id: u64,
    queues: Box<Queues>,
}

#[derive(Debug, Default)]
struct Queues {
    config: Option<ConcurrencyConfig>,
    lease_ttl: Option<Duration>,
    high: VecDeque<Waiter>,
    normal: VecDeque<Waiter>,
    streak: u32,
}

impl Default for LeaseState {
    fn default() -> Self {
        LeaseState {
            held: 0,
            limit: usize::MAX,
            queued: 0,
            next_id: 0,
            queues: Box::default(),
        }
    }
}

impl LeaseState {
    fn configure(&mut self, config: ConcurrencyConfig) {
        self.limit = config.limit;
        self.queues.lease_ttl = config.lease_ttl;
        self.queues.config = Some(config);
    }

    fn config(&self) -> Option<ConcurrencyConfig> {
        self.queues.config
    }

    #[inline]
    fn grant(&mut self) -> LeaseGrant {
        self.held += 1;
        self.next_id += 1;
        LeaseGrant {
            id: self.next_id,
            expires_at: self
                .queues
                .lease_ttl
                .and_then(|t| Instant::now().checked_add(t)),
        }
    }

    fn push(&mut self, priority: Priority, w: Waiter) {
        match priority {
            Priority::High => self.queues.high.push_back(w),
            Priority::Normal => self.queues.normal.push_back(w),
        }
        self.queued += 1;
    }

    fn pop_next(&mut self) -> Option<Waiter> {
        let q = &mut *self.queues;
        let streak = q.config.map_or(4, |c| c.high_streak);
        let w = if !q.high.is_empty() && (q.normal.is_empty() || q.streak < streak) {
            if !q.normal.is_empty() {
                q.streak += 1;
            }
            q.high.pop_front()
        } else {
            q.streak = 0;
            q.normal.pop_front()
        };
        if w.is_some() {
            self.queued -= 1;
        }
        w
    }

    /// Grants to queued waiters while there is room. Returns whether any left the queue.
    #[inline]
    fn drain(&mut self) -> bool {
        let mut popped = false;
        while self.queued > 0 && self.held < self.limit {
            let Some(w) = self.pop_next() else { break };
            popped = true;
            let g = self.grant();
            if w.tx.send(g).is_err() {
                // The waiter went away: take the lease back.
                self.held -= 1;
            }
        }
        popped
    }

    fn remove(&mut self, id: u64) -> bool {
        let q = &mut *self.queues;
        for q in [&mut q.high, &mut q.normal] {
            if let Some(pos) = q.iter().position(|w| w.id == id) {
                q.remove(pos);
                self.queued -= 1;
                return true;
            }
        }
        false
    }
}

/// The in-memory lease queue of one scope.
///
/// `repr(C)`, the lock and its state first: see [`Leases::new`].
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Leases {
    state: Mutex<LeaseState>,
    scope: Scope,
    room: Notify,
}

/// The bytes from the start of an `Arc`'s allocation to the end of the lease lock and its
/// state: the two reference counts, then [`Leases::state`].
const HOT: usize = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Mutex<LeaseState>>();

/// A cache line.
const LINE: usize = 64;

const _: () = assert!(HOT <= LINE, "the lease state no longer fits a cache line");

/// How many allocations [`Leases::new`] tries for a good placement.
const PLACEMENT_TRIES: usize = 16;

impl Leases {
    /// A lease queue placed so that its `Arc`'s reference counts, its lock and the counts
    /// a lease changes share one cache line: a lease (which holds the `Arc`) then writes
    /// one shared line when taken and one when given back, as tokio's semaphore and its
    /// owned permit do. Requests running on several cores otherwise pass two or three
    /// lines back and forth for each lease.
    ///
    /// An allocation is tried again (the misplaced ones kept until a good one is found,
    /// so the allocator offers other addresses) a few times; the last one is kept if none
    /// fits, which is correct, only slower.
    pub(crate) fn new(scope: Scope) -> Arc<Self> {
        let make = || {
            Arc::new(Leases {
                state: Mutex::new(LeaseState::default()),
                scope: scope.clone(),
                room: Notify::new(),
            })
        };
        let fits = |l: &Arc<Leases>| {
            // `Arc::as_ptr` points at the value, after the two reference counts.
            let start = (Arc::as_ptr(l) as usize).wrapping_sub(2 * std::mem::size_of::<usize>());
            start % LINE + HOT <= LINE
        };
        let mut misplaced = Vec::new();
        let mut leases = make();
        while !fits(&leases) && misplaced.len() < PLACEMENT_TRIES {
            misplaced.push(leases);
            leases = make();
        }
        leases
    }

    pub(crate) fn scope(&self) -> &Scope {
        &self.scope
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, LeaseState> {
        // Every critical section leaves the state consistent before it can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn configure(&self, config: ConcurrencyConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let mut st = self.lock();
        st.configure(config);
        if st.drain() {
            self.room.notify_waiters();
        }
        Ok(())
    }

    pub(crate) fn config(&self) -> Option<ConcurrencyConfig> {
        self.lock().config()
    }

    pub(crate) fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.held, st.queued)
    }

    #[inline]
    pub(crate) fn release(&self) {
        let mut st = self.lock();
        st.held = st.held.saturating_sub(1);
        if st.queued > 0 && st.drain() {
            self.room.notify_waiters();
        }
    }

    /// Grants at once if there is room and nobody waits.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<LeaseGrant> {
        let mut st = self.lock();
        (st.held < st.limit && st.queued == 0).then(|| st.grant())
    }

    /// Grants at once, enqueues, or fails / waits for room when the queue is full.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        priority: Priority,
    ) -> StoreFuture<Result<LeaseGrant, QueueFull>> {
        let mut st = self.lock();
        if st.held < st.limit && st.queued == 0 {
            return StoreFuture::ready(Ok(st.grant()));
        }
        let config = st.config();
        let bound = config.map_or(usize::MAX, |c| c.queue_bound);
        if st.queued >= bound {
            match config.map(|c| c.on_full).unwrap_or_default() {
                OnFull::Fail => {
                    tracing::debug!(scope = %self.scope, queued = st.queued, "lease queue full");
                    return StoreFuture::ready(Err(QueueFull {
                        scope: self.scope.clone(),
                        capacity: bound,
                    }));
                }
                OnFull::Wait => {
                    drop(st);
                    let me = Arc::clone(self);
                    return StoreFuture::boxed(async move { me.wait_for_room(priority).await });
                }
            }
        }
        let waiting = self.enqueue(&mut st, priority);
        drop(st);
        StoreFuture::boxed(waiting.wait())
    }

    fn enqueue(self: &Arc<Self>, st: &mut LeaseState, priority: Priority) -> Waiting {
        st.next_id += 1;
        let id = st.next_id;
        let (tx, rx) = oneshot::channel();
        st.push(priority, Waiter { id, tx });
        tracing::trace!(scope = %self.scope, queued = st.queued, "lease request queued");
        Waiting {
            leases: Arc::clone(self),
            id,
            rx: Some(rx),
        }
    }

    async fn wait_for_room(self: Arc<Self>, priority: Priority) -> Result<LeaseGrant, QueueFull> {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let waiting = {
                let mut st = self.lock();
                if st.held < st.limit && st.queued == 0 {
                    return Ok(st.grant());
                }
                let bound = st.config().map_or(usize::MAX, |c| c.queue_bound);
                if st.queued < bound {
                    Some(self.enqueue(&mut st, priority))
                } else {
                    None
                }
            };
            match waiting {
                Some(w) => return w.wait().await,
                None => notified.await,
            }
        }
    }
}

/// A queued lease request: removes itself from the queue, or gives back a lease granted
/// in the meantime, when dropped.
struct Waiting {
    leases: Arc<Leases>,
    id: u64,
    rx: Option<oneshot::Receiver<LeaseGrant>>,
}

impl Waiting {
    async fn wait(mut self) -> Result<LeaseGrant, QueueFull> {
        let res = match self.rx.as_mut() {
            Some(rx) => rx.await.ok(),
            None => None,
        };
        self.rx = None;
        // The sender is only dropped without sending if the store itself is gone.
        res.ok_or_else(|| QueueFull {
            scope: self.leases.scope.clone(),
            capacity: 0,
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let removed = self.leases.lock().remove(self.id);
        if removed {
            self.leases.room.notify_waiters();
            return;
        }
        rx.close();
        if rx.try_recv().is_ok() {
            // Granted after we stopped waiting: give it back (to the next in line).
            self.leases.release();
        }
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn the_counts_the_lock_and_the_hot_state_share_a_cache_line() {
        for i in 0..100 {
            let leases = Leases::new(Scope::new(format!("p{i}")));
            let value = Arc::as_ptr(&leases) as usize;
            let state = std::ptr::from_ref(&leases.state) as usize;
            assert_eq!(state, value, "the lock and its state come first");
            let start = value - 2 * std::mem::size_of::<usize>();
            assert!(start % LINE + HOT <= LINE, "placed at {start:#x}");
        }
    }
}
