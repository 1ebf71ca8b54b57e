//! The [`Store`] trait: where bucket state, cooldowns and leases live.
//!
//! The in-memory [`MemoryStore`](super::MemoryStore) is the default. A shared backend
//! (Redis, a database) implements the same two traits: [`Store`] resolves a
//! [`Scope`] to a per-scope [`ScopeStore`] handle once, and the layers call the handle on
//! every request. Operations that a networked backend must await return a
//! [`StoreFuture`], which the in-memory store completes at once without allocating.
//! Operations called from `Drop` (cancel, release) or from synchronous code (cooldowns,
//! learned limits, configuration) are synchronous: a networked backend applies them
//! locally and publishes them in the background.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::lease::{ConcurrencyConfig, LeaseGrant, Priority};
use super::quota::{BucketKey, MAX_BUCKETS, Quota};
use crate::error::{ConfigError, NeverFits, QueueFull, WaitTooLong};
use crate::headers::{Dimension, DimensionLimit};
use crate::scope::Scope;

/// The future of a store operation: ready at once for the in-memory store (no
/// allocation), or a boxed future for a networked backend.
///
/// ```
/// use ratelayer_core::engine::StoreFuture;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(StoreFuture::ready(7).await, 7);
/// assert_eq!(StoreFuture::boxed(async { 8 }).await, 8);
/// assert_eq!(StoreFuture::ready(9).now_or_never(), Some(9));
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct StoreFuture<T> {
    inner: FutInner<T>,
}

enum FutInner<T> {
    Ready(Option<T>),
    Boxed(Pin<Box<dyn Future<Output = T> + Send>>),
}

impl<T> StoreFuture<T> {
    /// A future that is ready with `value`.
    ///
    /// ```
    /// use ratelayer_core::engine::StoreFuture;
    /// assert_eq!(StoreFuture::ready("done").into_ready().ok(), Some("done"));
    /// ```
    #[inline]
    pub fn ready(value: T) -> Self {
        StoreFuture {
            inner: FutInner::Ready(Some(value)),
        }
    }

    /// A boxed future (for backends that really wait).
    ///
    /// ```
    /// use ratelayer_core::engine::StoreFuture;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fut = StoreFuture::boxed(async { tokio::task::yield_now().await; 8 });
    /// assert_eq!(fut.await, 8);
    /// # }
    /// ```
    pub fn boxed(fut: impl Future<Output = T> + Send + 'static) -> Self {
        StoreFuture {
            inner: FutInner::Boxed(Box::pin(fut)),
        }
    }

    /// The value if the future was made [`ready`](Self::ready), or else the future
    /// (without polling it).
    ///
    /// ```
    /// use ratelayer_core::engine::StoreFuture;
    ///
    /// assert_eq!(StoreFuture::ready(7).into_ready().ok(), Some(7));
    /// assert!(StoreFuture::boxed(async { 8 }).into_ready().is_err());
    /// ```
    #[inline]
    pub fn into_ready(self) -> Result<T, Self> {
        match self.inner {
            FutInner::Ready(Some(v)) => Ok(v),
            inner => Err(StoreFuture { inner }),
        }
    }

    /// The value if the future is ready at once (always the case for the in-memory
    /// store); `None` for a pending networked operation.
    ///
    /// ```
    /// use ratelayer_core::engine::StoreFuture;
    ///
    /// assert_eq!(StoreFuture::ready(7).now_or_never(), Some(7));
    /// assert_eq!(StoreFuture::boxed(async { 8 }).now_or_never(), Some(8)); // done on first poll
    /// assert_eq!(StoreFuture::<u32>::boxed(std::future::pending()).now_or_never(), None);
    /// ```
    pub fn now_or_never(self) -> Option<T> {
        match self.inner {
            FutInner::Ready(v) => v,
            FutInner::Boxed(mut f) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match f.as_mut().poll(&mut cx) {
                    Poll::Ready(v) => Some(v),
                    Poll::Pending => None,
                }
            }
        }
    }
}

impl<T> Unpin for StoreFuture<T> {}

impl<T> Future for StoreFuture<T> {
    type Output = T;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.inner {
            FutInner::Ready(v) => match v.take() {
                Some(v) => Poll::Ready(v),
                None => Poll::Pending,
            },
            FutInner::Boxed(f) => f.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for StoreFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            FutInner::Ready(v) => f
                .debug_struct("StoreFuture::Ready")
                .field("taken", &v.is_none())
                .finish(),
            FutInner::Boxed(_) => f.write_str("StoreFuture::Boxed"),
        }
    }
}

/// What one bucket booked for a reservation: enough for the store to undo or adjust it.
/// Everything but [`dimension`](Self::dimension) and [`cost`](Self::cost) is the
/// store's own bookkeeping. Kept small and made of whole words: it travels with every
/// reservation, and moves of it must stay cheap.
///
/// ```
/// use ratelayer_core::Dimension;
/// use ratelayer_core::engine::ReceiptItem;
///
/// let mut item = ReceiptItem::new(3, Dimension::Tokens, 1_200, 7, 42);
/// assert_eq!((item.bucket(), item.dimension(), item.cost()), (3, Dimension::Tokens, 1_200));
/// assert_eq!((item.seq(), item.data()), (7, 42));
/// item.set_cost(900);
/// item.set_data(43);
/// assert_eq!((item.cost(), item.data()), (900, 43));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReceiptItem {
    /// The bucket's identity (low 16 bits) and the dimension (the next 8 bits): one word.
    head: u64,
    cost: u64,
    seq: u64,
    data: u64,
}

impl ReceiptItem {
    const EMPTY: ReceiptItem = ReceiptItem {
        head: 0,
        cost: 0,
        seq: 0,
        data: 0,
    };

    /// An item of bucket `bucket` (the store's identity of the bucket within the scope)
    /// counting `dimension`, booking `cost`, with the store's change counter `seq` and
    /// data `data`.
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// use ratelayer_core::engine::ReceiptItem;
    ///
    /// let item = ReceiptItem::new(1, Dimension::InputTokens, 500, 0, 0);
    /// assert_eq!(item.bucket(), 1);
    /// assert_eq!((item.dimension(), item.cost()), (Dimension::InputTokens, 500));
    /// ```
    #[inline]
    pub const fn new(bucket: u16, dimension: Dimension, cost: u64, seq: u64, data: u64) -> Self {
        ReceiptItem {
            head: Self::head_of(bucket, dimension),
            cost,
            seq,
            data,
        }
    }

    /// The first word of an item of bucket `bucket` counting `dimension`.
    #[inline]
    pub(crate) const fn head_of(bucket: u16, dimension: Dimension) -> u64 {
        bucket as u64 | (dimension as u64) << 16
    }

    /// Overwrites every field (in place: no temporary to copy); `head` from
    /// [`head_of`](Self::head_of).
    #[inline]
    pub(crate) fn set(&mut self, head: u64, cost: u64, seq: u64, data: u64) {
        self.head = head;
        self.cost = cost;
        self.seq = seq;
        self.data = data;
    }

    /// The store's identity of the bucket within the scope.
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// use ratelayer_core::engine::ReceiptItem;
    /// assert_eq!(ReceiptItem::new(u16::MAX, Dimension::Tokens, 1, 0, 0).bucket(), u16::MAX);
    /// ```
    #[inline]
    pub fn bucket(&self) -> u16 {
        self.head as u16
    }

    /// What the bucket counts.
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// use ratelayer_core::engine::ReceiptItem;
    /// let item = ReceiptItem::new(2, Dimension::OutputTokens, 1, 0, 0);
    /// assert_eq!(item.dimension(), Dimension::OutputTokens);
    /// ```
    pub fn dimension(&self) -> Dimension {
        let code = (self.head >> 16) as u8;
        Dimension::ALL
            .into_iter()
            .find(|d| *d as u8 == code)
            .unwrap_or(Dimension::Requests)
    }

    /// What is currently booked in this bucket for the reservation.
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// use ratelayer_core::engine::ReceiptItem;
    /// assert_eq!(ReceiptItem::new(0, Dimension::Tokens, 1_200, 0, 0).cost(), 1_200);
    /// ```
    #[inline]
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// Records a changed cost (after an adjustment).
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// use ratelayer_core::engine::ReceiptItem;
    ///
    /// let mut item = ReceiptItem::new(0, Dimension::Tokens, 1_200, 0, 0);
    /// item.set_cost(300);
    /// assert_eq!(item.cost(), 300);
    /// ```
    #[inline]
    pub fn set_cost(&mut self, cost: u64) {
        self.cost = cost;
    }

    /// The store's change counter at booking time.
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// use ratelayer_core::engine::ReceiptItem;
    /// assert_eq!(ReceiptItem::new(0, Dimension::Tokens, 1, 17, 0).seq(), 17);
    /// ```
    #[inline]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The store's data.
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// use ratelayer_core::engine::ReceiptItem;
    /// assert_eq!(ReceiptItem::new(0, Dimension::Tokens, 1, 0, 99).data(), 99);
    /// ```
    #[inline]
    pub fn data(&self) -> u64 {
        self.data
    }

    /// Records changed store data (such as the slot a re-dated booking moved to).
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// use ratelayer_core::engine::ReceiptItem;
    ///
    /// let mut item = ReceiptItem::new(0, Dimension::Tokens, 1, 0, 5);
    /// item.set_data(6);
    /// assert_eq!(item.data(), 6);
    /// ```
    #[inline]
    pub fn set_data(&mut self, data: u64) {
        self.data = data;
    }
}

impl fmt::Debug for ReceiptItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiptItem")
            .field("bucket", &self.bucket())
            .field("dimension", &self.dimension())
            .field("cost", &self.cost)
            .field("seq", &self.seq)
            .field("data", &self.data)
            .finish()
    }
}

/// Items kept inline (no allocation) in a [`Receipt`]; more spill to the heap.
const INLINE: usize = 2;

/// What a reservation booked, bucket by bucket: up to two buckets (such as requests and
/// tokens per minute) inline, without allocation; more on the heap.
///
/// ```
/// use ratelayer_core::Dimension;
/// use ratelayer_core::engine::{Receipt, ReceiptItem};
///
/// let mut r = Receipt::default();
/// r.push(ReceiptItem::new(0, Dimension::Requests, 1, 1, 0));
/// r.push(ReceiptItem::new(1, Dimension::Tokens, 700, 1, 0));
/// r.push(ReceiptItem::new(2, Dimension::Tokens, 700, 1, 0)); // spills to the heap
/// assert_eq!(r.items().len(), 3);
/// assert_eq!(r.cost(Dimension::Tokens), 1_400);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Items in `inline`; `usize::MAX` when they are all in `heap`.
    len: usize,
    inline: [ReceiptItem; INLINE],
    /// One word while unused (the common case); a receipt of more than two buckets pays
    /// a second allocation.
    #[allow(clippy::box_collection)]
    heap: Option<Box<Vec<ReceiptItem>>>,
}

impl Default for Receipt {
    #[inline]
    fn default() -> Self {
        Receipt {
            len: 0,
            inline: [ReceiptItem::EMPTY; INLINE],
            heap: None,
        }
    }
}

impl Receipt {
    /// Appends an item.
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// use ratelayer_core::engine::{Receipt, ReceiptItem};
    ///
    /// let mut r = Receipt::default();
    /// r.push(ReceiptItem::new(0, Dimension::Requests, 1, 0, 0));
    /// assert_eq!(r.items(), &[ReceiptItem::new(0, Dimension::Requests, 1, 0, 0)]);
    /// ```
    #[inline]
    pub fn push(&mut self, item: ReceiptItem) {
        if self.heap.is_none()
            && let Some(slot) = self.inline.get_mut(self.len)
        {
            *slot = item;
            self.len += 1;
        } else {
            self.push_heap(item);
        }
    }

    /// The next item's place (in line while there is room), for the store to write the
    /// item in place.
    #[inline]
    pub(crate) fn next_slot(&mut self) -> &mut ReceiptItem {
        if self.heap.is_none() && self.len < INLINE {
            self.len += 1;
            return &mut self.inline[self.len - 1];
        }
        self.next_heap_slot()
    }

    #[cold]
    #[inline(never)]
    fn next_heap_slot(&mut self) -> &mut ReceiptItem {
        self.push_heap(ReceiptItem::EMPTY);
        let items = self.items_mut();
        let last = items.len() - 1;
        &mut items[last]
    }

    #[cold]
    #[inline(never)]
    fn push_heap(&mut self, item: ReceiptItem) {
        match &mut self.heap {
            Some(v) => v.push(item),
            None => {
                let mut v = Vec::with_capacity(MAX_BUCKETS);
                v.extend_from_slice(&self.inline[..]);
                v.push(item);
                self.heap = Some(Box::new(v));
                self.len = usize::MAX;
            }
        }
    }

    /// The booked items.
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// use ratelayer_core::engine::{Receipt, ReceiptItem};
    ///
    /// let mut r = Receipt::default();
    /// assert!(r.items().is_empty());
    /// r.push(ReceiptItem::new(4, Dimension::Tokens, 700, 0, 0));
    /// assert_eq!(r.items()[0].bucket(), 4);
    /// ```
    #[inline]
    pub fn items(&self) -> &[ReceiptItem] {
        match &self.heap {
            None => &self.inline[..self.len.min(INLINE)],
            Some(v) => v,
        }
    }

    /// The booked items, mutably (to record adjustments).
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// use ratelayer_core::engine::{Receipt, ReceiptItem};
    ///
    /// let mut r = Receipt::default();
    /// r.push(ReceiptItem::new(0, Dimension::Tokens, 700, 0, 0));
    /// r.items_mut()[0].set_cost(250);
    /// assert_eq!(r.cost(Dimension::Tokens), 250);
    /// ```
    pub fn items_mut(&mut self) -> &mut [ReceiptItem] {
        match &mut self.heap {
            None => &mut self.inline[..self.len.min(INLINE)],
            Some(v) => v,
        }
    }

    /// What is booked in the buckets of `dimension` (summed; zero if none).
    ///
    /// ```
    /// use ratelayer_core::Dimension;
    /// use ratelayer_core::engine::{Receipt, ReceiptItem};
    ///
    /// let mut r = Receipt::default();
    /// r.push(ReceiptItem::new(0, Dimension::Requests, 1, 0, 0));
    /// r.push(ReceiptItem::new(1, Dimension::Tokens, 700, 0, 0));
    /// assert_eq!((r.cost(Dimension::Requests), r.cost(Dimension::Tokens)), (1, 700));
    /// assert_eq!(r.cost(Dimension::OutputTokens), 0);
    /// ```
    pub fn cost(&self, dimension: Dimension) -> u64 {
        self.items()
            .iter()
            .filter(|i| i.dimension() == dimension)
            .map(|i| i.cost)
            .sum()
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.items()).finish()
    }
}

/// A booking made by [`ScopeStore::reserve`]: usable at `ready_at`.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{BucketKey, MemoryStore, Quota, Store};
/// use ratelayer_core::{Dimension, Scope};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let s = MemoryStore::new().scope(&Scope::new("openai"));
/// let rpm = BucketKey::REQUESTS_PER_MINUTE;
/// s.set_quota(rpm, Some(Quota::gcra(1, Duration::from_secs(60)))).unwrap();
/// let now = tokio::time::Instant::now();
/// let first = s.reserve(&[(rpm, 1)], None, now).await.unwrap();
/// assert!(!first.waits && first.ready_at == now);
/// let second = s.reserve(&[(rpm, 1)], None, now).await.unwrap();
/// assert_eq!((second.waits, second.ready_at), (true, now + Duration::from_secs(60)));
/// assert_eq!(second.receipt.cost(Dimension::Requests), 1);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    /// When the reservation may be used (now, or later: the caller sleeps until then).
    pub ready_at: Instant,
    /// Whether `ready_at` was later than the instant of booking.
    pub waits: bool,
    /// What was booked.
    pub receipt: Receipt,
}

/// Why a reservation was not booked. Nothing changed in the store.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{BucketKey, Quota, ReserveError};
/// use ratelayer_core::{LimitState, NeverFits, Scope};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let h = LimitState::new().handle(&Scope::new("openai"));
/// let tpm = BucketKey::TOKENS_PER_MINUTE;
/// h.set_quota(tpm, Quota::sliding_window(30_000, Duration::from_secs(60))).unwrap();
/// match h.reserve(&[(tpm, 40_666)], None).await {
///     Err(ReserveError::NeverFits(NeverFits { requested, capacity, .. })) => {
///         assert_eq!((requested, capacity), (40_666, 30_000));
///     }
///     other => panic!("{other:?}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveError {
    /// The cost exceeds a bucket's capacity: it can never fit.
    NeverFits(NeverFits),
    /// The wait would exceed the allowed maximum.
    WaitTooLong(WaitTooLong),
}

impl ReserveError {
    /// The error as a [`BoxError`](crate::BoxError) holding the inner typed error (so
    /// `downcast_ref::<NeverFits>()` / `downcast_ref::<WaitTooLong>()` work).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::ReserveError;
    /// use ratelayer_core::{Scope, WaitTooLong};
    ///
    /// let e = ReserveError::WaitTooLong(WaitTooLong {
    ///     scope: Scope::new("openai"),
    ///     wait: Duration::from_secs(42),
    ///     max_wait: Duration::from_secs(5),
    ///     reason: "requests per minute",
    /// });
    /// let boxed = e.into_box();
    /// let wait = boxed.downcast_ref::<WaitTooLong>().map(|e| e.wait);
    /// assert_eq!(wait, Some(Duration::from_secs(42)));
    /// ```
    pub fn into_box(self) -> crate::BoxError {
        match self {
            ReserveError::NeverFits(e) => Box::new(e),
            ReserveError::WaitTooLong(e) => Box::new(e),
        }
    }
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReserveError::NeverFits(e) => e.fmt(f),
            ReserveError::WaitTooLong(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReserveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReserveError::NeverFits(e) => Some(e),
            ReserveError::WaitTooLong(e) => Some(e),
        }
    }
}

/// A backend for limiter state: resolves scopes to per-scope handles.
///
/// ```
/// use std::sync::Arc;
/// use ratelayer_core::engine::{MemoryStore, Store};
/// use ratelayer_core::{LimitState, Scope};
///
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let scope = store.scope(&Scope::new("openai").with_model("gpt-4o"));
/// assert_eq!(scope.scope().to_string(), "openai/gpt-4o");
/// // Resolving a model scope also creates its wider scopes (their cooldowns cover it).
/// assert_eq!(store.scopes().len(), 2);
/// let _state = LimitState::with_store(MemoryStore::new());
/// ```
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The handle of `scope`, created if new. Resolve once and keep it: the handle is the
    /// hot path.
    fn scope(&self, scope: &Scope) -> Arc<dyn ScopeStore>;

    /// The scopes the store knows about.
    fn scopes(&self) -> Vec<Scope>;

    /// Whether any cooldown set in this store may still be in force at `now`. `false`
    /// promises that no scope has a cooldown past `now`, so a caller may skip resolving
    /// the scope; the default, `true`, promises nothing.
    fn may_cool_down(&self, now: Instant) -> bool {
        let _ = now;
        true
    }

    /// Whether a cooldown was ever set in this store. `false` promises that no scope has
    /// one, so a caller may skip even reading the clock; the default, `true`, promises
    /// nothing.
    fn ever_cooled_down(&self) -> bool {
        true
    }
}

/// The limiter state of one scope: buckets, cooldown and concurrency leases.
///
/// Use it through [`ScopeHandle`](super::ScopeHandle), which wraps these calls in RAII
/// guards.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{BucketKey, MemoryStore, Quota, Store};
/// use ratelayer_core::Scope;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let s = MemoryStore::new().scope(&Scope::new("openai"));
/// let tpm = BucketKey::TOKENS_PER_MINUTE;
/// s.set_quota(tpm, Some(Quota::sliding_window(1_000, Duration::from_secs(60)))).unwrap();
/// let booking = s.reserve(&[(tpm, 600)], None, tokio::time::Instant::now()).await.unwrap();
/// assert_eq!(s.used(tpm), Some(600));
/// s.cancel(&booking.receipt); // what a dropped `Reservation` does
/// assert_eq!(s.used(tpm), Some(0));
/// # }
/// ```
pub trait ScopeStore: Send + Sync + fmt::Debug + 'static {
    /// The scope.
    fn scope(&self) -> &Scope;

    /// This handle as the in-memory store's scope, if it is one: [`ScopeHandle`]
    /// then books on it directly (no dynamic dispatch, no moves of the booking through a
    /// [`StoreFuture`]) on the hot path. Other stores keep the default, `None`.
    ///
    /// ```
    /// use ratelayer_core::engine::{MemoryStore, Store};
    /// use ratelayer_core::Scope;
    ///
    /// assert!(MemoryStore::new().scope(&Scope::new("openai")).as_memory().is_some());
    /// ```
    ///
    /// [`ScopeHandle`]: super::ScopeHandle
    fn as_memory(self: Arc<Self>) -> Option<Arc<super::MemoryScope>> {
        None
    }

    /// Sets (hot reload: state kept, no burst admitted) or, with `None`, removes the quota
    /// of bucket `key`.
    fn set_quota(&self, key: BucketKey, quota: Option<Quota>) -> Result<(), ConfigError>;

    /// The configured quotas.
    fn quotas(&self) -> Vec<(BucketKey, Quota)>;

    /// The effective capacity of bucket `key` (configured, tightened by learned limits).
    fn capacity(&self, key: BucketKey) -> Option<u64>;

    /// What bucket `key` holds now (booked and not yet refilled or expired, bookings
    /// queued for later included), for logs and metrics. `None` if the bucket has no
    /// quota or the store cannot tell cheaply (the default).
    fn used(&self, key: BucketKey) -> Option<u64> {
        let _ = key;
        None
    }

    /// Books `costs` in every configured bucket, all-or-nothing, for the earliest instant
    /// they all fit (and the cooldown is over). Buckets without a quota are not limited.
    /// With `max_wait`, a longer wait is declined without changing any state.
    /// `now` is the current instant (the caller reads the clock once per operation).
    fn reserve(
        &self,
        costs: &[(BucketKey, u64)],
        max_wait: Option<Duration>,
        now: Instant,
    ) -> StoreFuture<Result<Booking, ReserveError>>;

    /// How long a reservation of `costs` would wait now. No side effects.
    fn wait_time(&self, costs: &[(BucketKey, u64)]) -> StoreFuture<Result<Duration, NeverFits>>;

    /// Gives back an unused booking.
    fn cancel(&self, receipt: &Receipt);

    /// Records that a booking made for `ready_at` was used later, at `used_at`: its cost
    /// counts from then (a window-safe bucket must not forget it early).
    fn commit_late(&self, receipt: &Receipt, ready_at: Instant, used_at: Instant);

    /// Records that a committed booking made for `ready_at` reached the provider later,
    /// at `sent_at` (an inner layer held it back): its costs count from then, as the
    /// provider counts them, and later adjustments apply where they count now. The
    /// default records it as [`commit_late`](Self::commit_late) does (conservative).
    fn redate(&self, receipt: &mut Receipt, ready_at: Instant, sent_at: Instant) {
        self.commit_late(receipt, ready_at, sent_at);
    }

    /// The identity of bucket `key` in receipts ([`ReceiptItem::bucket`]).
    fn bucket_id(&self, key: BucketKey) -> Option<u16>;

    /// Changes what `item` has booked to `actual` (debits more or refunds).
    fn adjust(&self, item: &mut ReceiptItem, actual: u64);

    /// Records what a provider said about `dimension` (tightens buckets, never loosens
    /// beyond what the provider said).
    fn learn(&self, dimension: Dimension, said: &DimensionLimit);

    /// Every reservation of this scope (and of narrower scopes) waits until `until`.
    /// Only ever extends.
    fn set_cooldown(&self, until: Instant);

    /// Removes this scope's own cooldown.
    fn clear_cooldown(&self);

    /// The latest cooldown in force on this scope or a wider one.
    fn cooldown_until(&self) -> Option<Instant>;

    /// Configures concurrency leases (runtime resize: raising admits queued waiters at
    /// once, lowering takes effect as holders finish).
    fn set_concurrency(&self, config: ConcurrencyConfig) -> Result<(), ConfigError>;

    /// The concurrency configuration, if set.
    fn concurrency(&self) -> Option<ConcurrencyConfig>;

    /// Acquires a concurrency lease (FIFO within a priority class).
    fn acquire_lease(&self, priority: Priority) -> StoreFuture<Result<LeaseGrant, QueueFull>>;

    /// Releases a lease.
    fn release_lease(&self, grant: &LeaseGrant);

    /// Leases held now, and requests queued.
    fn lease_counts(&self) -> (usize, usize);

    /// Approximate bytes of state held for this scope (constant per configuration).
    fn approx_size(&self) -> usize;
}
