//! The in-memory store: the default backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use parking_lot::{Mutex as BucketLock, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::bucket::Bucket;
use super::lease::{ConcurrencyConfig, LeaseGrant, Leases, Priority};
use super::quota::{BucketKey, MAX_BUCKETS, Quota};
use super::store::{Booking, Receipt, ReceiptItem, ReserveError, ScopeStore, Store, StoreFuture};
use crate::error::{ConfigError, NeverFits, QueueFull, WaitTooLong};
use crate::headers::{Dimension, DimensionLimit};
use crate::scope::Scope;

/// The in-memory [`Store`]: per-scope state behind a per-scope lock; every operation
/// completes at once (no allocation on the reserve path).
///
/// ```
/// use std::sync::Arc;
/// use ratelayer_core::engine::{MemoryStore, Store};
/// use ratelayer_core::Scope;
///
/// let store = MemoryStore::new();
/// let a = store.scope(&Scope::new("openai"));
/// let b = store.scope(&Scope::new("openai"));
/// assert!(Arc::ptr_eq(&a, &b));
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    epoch: Instant,
    scopes: Mutex<HashMap<Scope, Arc<MemoryScope>>>,
    /// The latest cooldown end set on any scope (nanos since `epoch`), never lowered.
    latest_cooldown: Arc<AtomicU64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    ///
    /// ```
    /// use ratelayer_core::engine::{MemoryStore, Store};
    ///
    /// let store = MemoryStore::new();
    /// assert!(store.scopes().is_empty());
    /// assert!(!store.ever_cooled_down());
    /// ```
    pub fn new() -> Self {
        MemoryStore {
            epoch: Instant::now(),
            scopes: Mutex::new(HashMap::new()),
            latest_cooldown: Arc::new(AtomicU64::new(0)),
        }
    }

    fn get_or_create(
        &self,
        map: &mut HashMap<Scope, Arc<MemoryScope>>,
        scope: &Scope,
    ) -> Arc<MemoryScope> {
        if let Some(s) = map.get(scope) {
            return Arc::clone(s);
        }
        let mut wider: Vec<Arc<MemoryScope>> = Vec::new();
        let no_model = scope.without_model();
        if no_model != *scope {
            wider.push(self.get_or_create(map, &no_model));
        }
        let provider = Scope::new(scope.provider());
        if provider != *scope && provider != no_model {
            wider.push(self.get_or_create(map, &provider));
        }
        let s = Arc::new(MemoryScope {
            scope: scope.clone(),
            epoch: self.epoch,
            wider: wider.into_boxed_slice(),
            cooldown: AtomicU64::new(0),
            latest_cooldown: Arc::clone(&self.latest_cooldown),
            buckets: BucketLock::new(Buckets::default()),
            next_bucket: AtomicU16::new(0),
            leases: Leases::new(scope.clone()),
        });
        map.insert(scope.clone(), Arc::clone(&s));
        s
    }
}

impl Store for MemoryStore {
    fn scope(&self, scope: &Scope) -> Arc<dyn ScopeStore> {
        let mut map = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        self.get_or_create(&mut map, scope)
    }

    fn scopes(&self) -> Vec<Scope> {
        let map = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        map.keys().cloned().collect()
    }

    #[inline]
    fn may_cool_down(&self, now: Instant) -> bool {
        let latest = self.latest_cooldown.load(Ordering::Acquire);
        latest != 0 && Duration::from_nanos(latest) > now.saturating_duration_since(self.epoch)
    }

    fn ever_cooled_down(&self) -> bool {
        self.latest_cooldown.load(Ordering::Acquire) != 0
    }
}

/// The buckets of a scope, and the latest instant a reservation read from the clock.
#[derive(Debug, Default)]
struct Buckets {
    list: Vec<Bucket>,
    /// The latest `now` of a reservation (nanoseconds since the epoch): whoever takes the
    /// lock after it is at least as late, even if its own clock read came first (another
    /// thread read the clock a moment later and booked first). Without it, that racing
    /// reservation would see a later booking and wait a few hundred nanoseconds.
    seen: u64,
}

impl std::ops::Deref for Buckets {
    type Target = Vec<Bucket>;

    #[inline]
    fn deref(&self) -> &Vec<Bucket> {
        &self.list
    }
}

impl std::ops::DerefMut for Buckets {
    #[inline]
    fn deref_mut(&mut self) -> &mut Vec<Bucket> {
        &mut self.list
    }
}

/// [`MemoryScope::lock_contended`]'s first wait, in spin-loop hints.
const BACKOFF_SPINS: u32 = 64;
/// How many times [`MemoryScope::lock_contended`] waits before it blocks (each wait twice
/// as long as the one before: about 2,000 spin-loop hints in all, some µs to some tens of
/// µs depending on the processor).
const BACKOFF_ROUNDS: u32 = 5;

/// The in-memory state of one scope.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{BucketKey, MemoryStore, Quota, ScopeStore, Store};
/// use ratelayer_core::Scope;
///
/// let memory = MemoryStore::new().scope(&Scope::new("openai")).as_memory().unwrap();
/// let rpm = BucketKey::REQUESTS_PER_MINUTE;
/// memory.set_quota(rpm, Some(Quota::gcra(500, Duration::from_secs(60)))).unwrap();
/// assert_eq!((memory.scope().provider(), memory.capacity(rpm)), ("openai", Some(500)));
/// ```
#[derive(Debug)]
pub struct MemoryScope {
    scope: Scope,
    epoch: Instant,
    /// The scope without its model, and the provider: their cooldowns cover this scope.
    wider: Box<[Arc<MemoryScope>]>,
    /// Cooldown end in nanoseconds since `epoch`; 0 means none.
    cooldown: AtomicU64,
    /// The store's latest cooldown end over all scopes.
    latest_cooldown: Arc<AtomicU64>,
    buckets: BucketLock<Buckets>,
    next_bucket: AtomicU16,
    leases: Arc<Leases>,
}

impl MemoryScope {
    /// The scope's lease queue.
    pub(crate) fn leases(&self) -> &Arc<Leases> {
        &self.leases
    }

    #[inline]
    fn nanos(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.epoch);
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }

    #[inline]
    fn instant(&self, n: u64) -> Instant {
        let d = Duration::from_nanos(n);
        self.epoch
            .checked_add(d)
            .unwrap_or_else(|| self.epoch + Duration::from_secs(86_400 * 365 * 100))
    }

    /// Locks the buckets (a panic cannot leave them half-updated: bucket updates are
    /// plain arithmetic, and the lock does not poison).
    #[inline]
    fn lock(&self) -> MutexGuard<'_, Buckets> {
        match self.buckets.try_lock() {
            Some(guard) => guard,
            None => self.lock_contended(),
        }
    }

    /// [`lock`](Self::lock) when another thread holds the lock: waits without touching
    /// the lock, twice as long each time it finds the lock still held, then blocks.
    /// Meanwhile the holder keeps the lock's cache line and its buckets' lines in its
    /// own core and goes on booking (a waiter that spun on the lock word would pull the
    /// line away in the middle of each booking, and take the lock, and the buckets'
    /// lines, at the first gap): two threads booking in one scope at once hand the lock
    /// over once in tens of bookings instead of about every other one, and move the
    /// lines between cores that much less often.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) -> MutexGuard<'_, Buckets> {
        let mut spins = BACKOFF_SPINS;
        for _ in 0..BACKOFF_ROUNDS {
            for _ in 0..spins {
                std::hint::spin_loop();
            }
            if let Some(guard) = self.buckets.try_lock() {
                return guard;
            }
            spins *= 2;
        }
        self.buckets.lock()
    }

    /// Locks the buckets for a reservation at `now_i`: the guard, and the instant in
    /// nanoseconds and as an `Instant` (`now_i`, or the latest instant a reservation
    /// booked at, if later: another thread read the clock after this one and booked
    /// first).
    #[inline]
    fn lock_at(&self, now_i: Instant) -> (MutexGuard<'_, Buckets>, u64, Instant) {
        let read = self.nanos(now_i);
        let mut buckets = self.lock();
        let now = read.max(buckets.seen);
        buckets.seen = now;
        let now_i = if now == read {
            now_i
        } else {
            self.instant(now)
        };
        (buckets, now, now_i)
    }

    /// Cooldown end (nanos), over this scope and the wider ones.
    #[inline]
    fn cooldown_nanos(&self) -> u64 {
        let own = self.cooldown.load(Ordering::Acquire);
        self.wider
            .iter()
            .map(|w| w.cooldown.load(Ordering::Acquire))
            .fold(own, u64::max)
    }

    /// The earliest time all `costs` fit, and what it waits for.
    #[inline]
    fn plan(
        &self,
        buckets: &[Bucket],
        costs: &[(BucketKey, u64)],
        now: u64,
    ) -> Result<(u64, &'static str), NeverFits> {
        let mut ready = now;
        let mut reason = "";
        for b in buckets {
            let cost = cost_of(costs, b.key);
            if cost == 0 {
                continue;
            }
            let cap = b.capacity();
            if cost > cap {
                return Err(NeverFits {
                    scope: self.scope.clone(),
                    what: b.key.describe(),
                    requested: cost,
                    capacity: cap,
                });
            }
            let t = b.earliest(now, cost);
            if t > ready {
                ready = t;
                reason = b.key.describe();
            }
        }
        let cd = self.cooldown_nanos();
        if cd > ready {
            ready = cd;
            reason = "a cooldown after a rate-limited response";
        }
        Ok((ready, reason))
    }

    /// Books `costs` at `now_i` if they all fit then and no cooldown is in force: the
    /// common case, without planning a later instant (one pass to check, one to book).
    /// The receipt and the instant booked (`now_i`, or a little later if another
    /// reservation read the clock after this one and booked first); `None` if it does not
    /// fit now (nothing booked: [`reserve_now`](Self::reserve_now) plans it).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, MemoryStore, Quota, ScopeStore, Store};
    /// use ratelayer_core::Scope;
    ///
    /// let scope = MemoryStore::new().scope(&Scope::new("openai")).as_memory().unwrap();
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// scope.set_quota(tpm, Some(Quota::sliding_window(1_000, Duration::from_secs(60)))).unwrap();
    /// let now = tokio::time::Instant::now();
    /// let (receipt, at) = scope.book_now(&[(tpm, 600)], now).unwrap();
    /// assert_eq!((receipt.items()[0].cost(), at), (600, now));
    /// assert!(scope.book_now(&[(tpm, 600)], now).is_none()); // does not fit now
    /// ```
    #[inline]
    pub fn book_now(
        &self,
        costs: &[(BucketKey, u64)],
        now_i: Instant,
    ) -> Option<(Receipt, Instant)> {
        let mut receipt = Receipt::default();
        let at = self.book_now_into(costs, now_i, &mut receipt)?;
        Some((receipt, at))
    }

    /// [`book_now`](Self::book_now) writing the items into `receipt` (empty; left empty
    /// if it does not fit): written before the lock is released, they are not copied
    /// while still in flight to memory (a wide load of narrow stores in flight stalls).
    #[inline]
    pub(crate) fn book_now_into(
        &self,
        costs: &[(BucketKey, u64)],
        now_i: Instant,
        receipt: &mut Receipt,
    ) -> Option<Instant> {
        let (mut buckets, now, now_i) = self.lock_at(now_i);
        // One load says whether any cooldown in the store lasts past now.
        if self.latest_cooldown.load(Ordering::Acquire) > now && self.cooldown_nanos() > now {
            return None;
        }
        // Each bucket's cost, found once for both passes.
        let mut each = [0u64; MAX_BUCKETS];
        for (b, c) in buckets.iter().zip(each.iter_mut()) {
            *c = cost_of(costs, b.key);
            if *c != 0 && !b.fits_now(now, *c) {
                return None;
            }
        }
        for (b, &cost) in buckets.iter_mut().zip(each.iter()) {
            if cost > 0 {
                b.book(now, cost, now, receipt.next_slot());
            }
        }
        drop(buckets);
        Some(now_i)
    }

    /// Reserves synchronously (the in-memory store never waits inside the store).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, MemoryStore, Quota, ReserveError};
    /// use ratelayer_core::engine::{ScopeStore, Store};
    /// use ratelayer_core::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let memory = MemoryStore::new().scope(&Scope::new("openai")).as_memory().unwrap();
    /// let rpm = BucketKey::REQUESTS_PER_MINUTE;
    /// memory.set_quota(rpm, Some(Quota::gcra(1, Duration::from_secs(60)))).unwrap();
    /// let now = tokio::time::Instant::now();
    /// assert_eq!(memory.reserve_now(&[(rpm, 1)], None, now).unwrap().ready_at, now);
    /// let declined = memory.reserve_now(&[(rpm, 1)], Some(Duration::from_secs(1)), now);
    /// let Err(ReserveError::WaitTooLong(e)) = declined else { panic!("{declined:?}") };
    /// assert_eq!(e.wait, Duration::from_secs(60)); // declined: nothing booked
    /// # }
    /// ```
    #[inline]
    pub fn reserve_now(
        &self,
        costs: &[(BucketKey, u64)],
        max_wait: Option<Duration>,
        now_i: Instant,
    ) -> Result<Booking, ReserveError> {
        match self.book_now(costs, now_i) {
            Some((receipt, ready_at)) => Ok(Booking {
                ready_at,
                waits: false,
                receipt,
            }),
            None => self.reserve_planned(costs, max_wait, now_i),
        }
    }

    /// [`reserve_now`](Self::reserve_now) when it does not fit at once: plans the
    /// earliest instant, or declines.
    #[inline(never)]
    fn reserve_planned(
        &self,
        costs: &[(BucketKey, u64)],
        max_wait: Option<Duration>,
        now_i: Instant,
    ) -> Result<Booking, ReserveError> {
        let (mut buckets, now, now_i) = self.lock_at(now_i);
        let (ready, reason) = self
            .plan(&buckets, costs, now)
            .map_err(ReserveError::NeverFits)?;
        if let Some(max) = max_wait {
            let wait = Duration::from_nanos(ready - now);
            if wait > max {
                return Err(ReserveError::WaitTooLong(WaitTooLong {
                    scope: self.scope.clone(),
                    wait,
                    max_wait: max,
                    reason,
                }));
            }
        }
        let mut receipt = Receipt::default();
        for b in buckets.iter_mut() {
            let cost = cost_of(costs, b.key);
            if cost > 0 {
                b.book(ready, cost, now, receipt.next_slot());
            }
        }
        drop(buckets);
        let ready_at = if ready == now {
            now_i
        } else {
            self.instant(ready)
        };
        Ok(Booking {
            ready_at,
            waits: ready > now,
            receipt,
        })
    }
}

#[inline]
fn cost_of(costs: &[(BucketKey, u64)], key: BucketKey) -> u64 {
    costs
        .iter()
        .filter(|(k, _)| *k == key)
        .fold(0u64, |a, (_, c)| a.saturating_add(*c))
}

impl ScopeStore for MemoryScope {
    fn scope(&self) -> &Scope {
        &self.scope
    }

    fn as_memory(self: Arc<Self>) -> Option<Arc<MemoryScope>> {
        Some(self)
    }

    fn set_quota(&self, key: BucketKey, quota: Option<Quota>) -> Result<(), ConfigError> {
        let now = self.nanos(Instant::now());
        let mut buckets = self.lock();
        let pos = buckets.iter().position(|b| b.key == key);
        match (quota, pos) {
            (None, Some(i)) => {
                buckets.remove(i);
            }
            (None, None) => {}
            (Some(q), _) => {
                q.validate(key.describe())?;
                match pos {
                    Some(i) => buckets[i].reconfigure(q, now),
                    None if buckets.len() >= MAX_BUCKETS => {
                        return Err(ConfigError::new(
                            key.describe(),
                            format!(
                                "a scope holds at most {MAX_BUCKETS} buckets; \
                                 remove one or use a narrower scope"
                            ),
                        ));
                    }
                    None => {
                        let id = self.next_bucket.fetch_add(1, Ordering::Relaxed);
                        buckets.push(Bucket::new(key, id, q, now));
                    }
                }
                tracing::debug!(scope = %self.scope, bucket = key.describe(), limit = q.limit,
                    window_ms = q.window.as_millis() as u64, "quota set");
            }
        }
        Ok(())
    }

    fn quotas(&self) -> Vec<(BucketKey, Quota)> {
        self.lock().iter().map(|b| (b.key, b.quota())).collect()
    }

    fn capacity(&self, key: BucketKey) -> Option<u64> {
        self.lock()
            .iter()
            .find(|b| b.key == key)
            .map(Bucket::capacity)
    }

    fn used(&self, key: BucketKey) -> Option<u64> {
        let now = self.nanos(Instant::now());
        self.lock()
            .iter()
            .find(|b| b.key == key)
            .map(|b| b.used(now))
    }

    #[inline]
    fn reserve(
        &self,
        costs: &[(BucketKey, u64)],
        max_wait: Option<Duration>,
        now: Instant,
    ) -> StoreFuture<Result<Booking, ReserveError>> {
        StoreFuture::ready(self.reserve_now(costs, max_wait, now))
    }

    fn wait_time(&self, costs: &[(BucketKey, u64)]) -> StoreFuture<Result<Duration, NeverFits>> {
        let now = self.nanos(Instant::now());
        let buckets = self.lock();
        StoreFuture::ready(
            self.plan(&buckets, costs, now)
                .map(|(ready, _)| Duration::from_nanos(ready - now)),
        )
    }

    fn cancel(&self, receipt: &Receipt) {
        let now = self.nanos(Instant::now());
        let mut buckets = self.lock();
        // Undo in reverse booking order so exact restores stack.
        for item in receipt.items().iter().rev() {
            if let Some(b) = buckets.iter_mut().find(|b| b.id == item.bucket()) {
                b.cancel(item, now);
            }
        }
    }

    fn commit_late(&self, receipt: &Receipt, ready_at: Instant, used_at: Instant) {
        let ready = self.nanos(ready_at);
        let used = self.nanos(used_at);
        let mut buckets = self.lock();
        for item in receipt.items() {
            if let Some(b) = buckets.iter_mut().find(|b| b.id == item.bucket()) {
                b.commit_late(item, ready, used);
            }
        }
    }

    fn redate(&self, receipt: &mut Receipt, ready_at: Instant, sent_at: Instant) {
        let ready = self.nanos(ready_at);
        let sent = self.nanos(sent_at);
        let mut buckets = self.lock();
        for item in receipt.items_mut() {
            if let Some(b) = buckets.iter_mut().find(|b| b.id == item.bucket()) {
                b.redate(item, ready, sent);
            }
        }
    }

    fn bucket_id(&self, key: BucketKey) -> Option<u16> {
        self.lock().iter().find(|b| b.key == key).map(|b| b.id)
    }

    fn adjust(&self, item: &mut ReceiptItem, actual: u64) {
        let now = self.nanos(Instant::now());
        let mut buckets = self.lock();
        match buckets.iter_mut().find(|b| b.id == item.bucket()) {
            Some(b) => b.adjust(item, actual, now),
            None => item.set_cost(actual),
        }
    }

    fn learn(&self, dimension: Dimension, said: &DimensionLimit) {
        if said.limit.is_none() && said.remaining.is_none() {
            return;
        }
        let now_i = Instant::now();
        let now = self.nanos(now_i);
        // A reset from the network may be absurdly far: saturate, never panic.
        let reset_at = said
            .reset
            .map(|r| now.saturating_add(u64::try_from(r.as_nanos()).unwrap_or(u64::MAX)));
        let mut buckets = self.lock();
        for b in buckets.iter_mut().filter(|b| b.key.dimension == dimension) {
            if said.window.is_some_and(|w| w != b.key.window) {
                continue;
            }
            b.learn(said.limit, said.remaining, reset_at, now);
            tracing::debug!(scope = %self.scope, bucket = b.key.describe(),
                limit = ?said.limit, remaining = ?said.remaining,
                reset_ms = ?said.reset.map(|r| r.as_millis() as u64), "learned limit");
        }
    }

    fn set_cooldown(&self, until: Instant) {
        let n = self.nanos(until).max(1);
        let prev = self.cooldown.fetch_max(n, Ordering::AcqRel);
        self.latest_cooldown.fetch_max(n, Ordering::AcqRel);
        if prev < n {
            tracing::debug!(scope = %self.scope,
                cooldown_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64,
                "cooldown set");
        }
    }

    fn clear_cooldown(&self) {
        self.cooldown.store(0, Ordering::Release);
    }

    fn cooldown_until(&self) -> Option<Instant> {
        let n = self.cooldown_nanos();
        let now = Instant::now();
        (n > self.nanos(now)).then(|| self.instant(n))
    }

    fn set_concurrency(&self, config: ConcurrencyConfig) -> Result<(), ConfigError> {
        self.leases.configure(config)
    }

    fn concurrency(&self) -> Option<ConcurrencyConfig> {
        self.leases.config()
    }

    fn acquire_lease(&self, priority: Priority) -> StoreFuture<Result<LeaseGrant, QueueFull>> {
        self.leases.acquire(priority)
    }

    fn release_lease(&self, _grant: &LeaseGrant) {
        self.leases.release();
    }

    fn lease_counts(&self) -> (usize, usize) {
        self.leases.counts()
    }

    fn approx_size(&self) -> usize {
        let buckets = self.lock();
        std::mem::size_of::<Self>()
            + buckets.capacity() * std::mem::size_of::<Bucket>()
            + buckets.iter().map(Bucket::approx_size).sum::<usize>()
    }
}
