//! The state shared by a layer and its services, and the settlement of one request's
//! token reservation.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use http::response::Parts;
use http::{Request, StatusCode};
use ratelayer_core::engine::{BucketKey, Quota, ScopeHandle, Taken};
use ratelayer_core::headers::{self, DimensionLimit};
use ratelayer_core::meta::{self, EstimateSource, TokenEstimator};
use ratelayer_core::{
    LimitState, NeverFits, RateLimitSnapshot, ReplayableBody, RequestMeta, Scope, ScopeMap, SentAt,
};

use crate::calibration::Calibration;
use crate::config::TpmConfig;
use crate::usage::Usage;

/// The window of every budget.
pub(crate) const MINUTE: Duration = Duration::from_secs(60);

/// Slots of each sliding window: 250 ms wide, so a window loses at most 0.4 % of its
/// capacity to slot rounding (memory: a few KiB per bucket, constant).
pub(crate) const SLOTS: u32 = 240;

/// The buckets a budget may configure, with their dimensions.
pub(crate) const KEYS: [BucketKey; 3] = [
    BucketKey::TOKENS_PER_MINUTE,
    BucketKey::INPUT_TOKENS_PER_MINUTE,
    BucketKey::OUTPUT_TOKENS_PER_MINUTE,
];

/// One scope's budget: the limiter handle and the FIFO queue of requests waiting for it.
#[derive(Debug)]
pub(crate) struct ScopeEntry {
    pub(crate) handle: ScopeHandle,
    /// Held by the request at the head of the queue while it waits for the budget.
    pub(crate) queue: Arc<tokio::sync::Mutex<()>>,
    /// Woken when a settled request gives tokens back: the head of the queue plans again.
    pub(crate) refunded: Arc<tokio::sync::Notify>,
    /// Requests waiting (queued or at the head), and the tokens they will book.
    waiting: AtomicUsize,
    queued: [AtomicU64; 3],
    /// The tokens the request at the head of the queue will book (0 when none).
    head: [AtomicU64; 3],
}

impl ScopeEntry {
    /// Tells the head of the queue, if any, that tokens came back.
    fn wake_head(&self) {
        if !self.idle() {
            self.refunded.notify_waiters();
        }
    }

    /// Whether no request waits: a new one may book at once without jumping the queue.
    pub(crate) fn idle(&self) -> bool {
        self.waiting.load(Ordering::Acquire) == 0
    }

    /// Whether a request of `costs` that arrives while others wait may go now: it fits
    /// now, and the head of the queue fits beside it as early as it fits alone (its
    /// booking is still in the window when the head's turn comes, so it must leave room
    /// for the head then). Nobody at the head (between two heads): no.
    pub(crate) fn backfills(&self, costs: &[(BucketKey, u64); 3]) -> bool {
        let mut head = [(BucketKey::TOKENS_PER_MINUTE, 0u64); 3];
        let mut any = false;
        for ((slot, h), (key, _)) in head.iter_mut().zip(&self.head).zip(costs) {
            let c = h.load(Ordering::Acquire);
            any |= c > 0;
            *slot = (*key, c);
        }
        if !any {
            return false;
        }
        let mut both = head;
        for (b, (_, c)) in both.iter_mut().zip(costs) {
            b.1 = b.1.saturating_add(*c);
        }
        let wait = |costs: &[(BucketKey, u64); 3]| {
            self.handle
                .wait_time(costs)
                .now_or_never()
                .and_then(Result::ok)
        };
        matches!(wait(costs), Some(w) if w.is_zero())
            && matches!((wait(&head), wait(&both)), (Some(alone), Some(beside)) if beside <= alone)
    }

    /// An estimate of how long a request of `costs` would wait behind the queue: as if
    /// everything queued and this request were booked at once, plus a window for every
    /// capacity's worth beyond that.
    pub(crate) fn queue_wait(&self, costs: &[(BucketKey, u64); 3]) -> Result<Duration, NeverFits> {
        let mut combined = *costs;
        let mut windows = 0u32;
        for (i, (key, cost)) in combined.iter_mut().enumerate() {
            let total = cost.saturating_add(self.queued[i].load(Ordering::Acquire));
            match self.handle.capacity(*key) {
                Some(cap) if cap > 0 && total > cap => {
                    windows = windows.max(u32::try_from(total / cap).unwrap_or(u32::MAX));
                    *cost = (total % cap).max(*cost);
                }
                _ => *cost = total,
            }
        }
        let base = self
            .handle
            .wait_time(&combined)
            .now_or_never()
            .unwrap_or(Ok(Duration::ZERO))?;
        Ok(base.saturating_add(MINUTE.saturating_mul(windows)))
    }
}

/// The head of a scope's queue: holds the queue's lock and publishes what it will book,
/// so a request that delays it not at all may go first ([`ScopeEntry::backfills`]).
/// Leaving the head (dropped) clears it.
pub(crate) struct Head {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    entry: Arc<ScopeEntry>,
}

impl Head {
    pub(crate) fn new(
        guard: tokio::sync::OwnedMutexGuard<()>,
        entry: Arc<ScopeEntry>,
        costs: &[(BucketKey, u64); 3],
    ) -> Self {
        for (h, (_, c)) in entry.head.iter().zip(costs) {
            h.store(*c, Ordering::Release);
        }
        Head {
            _guard: guard,
            entry,
        }
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        for h in &self.entry.head {
            h.store(0, Ordering::Release);
        }
    }
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Head").finish_non_exhaustive()
    }
}

/// A request's place among the waiters of a scope; leaves it on drop.
#[derive(Debug)]
pub(crate) struct Ticket {
    pub(crate) entry: Arc<ScopeEntry>,
    costs: [(BucketKey, u64); 3],
}

impl Ticket {
    pub(crate) fn new(entry: Arc<ScopeEntry>, costs: [(BucketKey, u64); 3]) -> Self {
        entry.waiting.fetch_add(1, Ordering::AcqRel);
        for (q, (_, c)) in entry.queued.iter().zip(costs) {
            q.fetch_add(c, Ordering::AcqRel);
        }
        Ticket { entry, costs }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        for (q, (_, c)) in self.entry.queued.iter().zip(self.costs) {
            q.fetch_sub(c, Ordering::AcqRel);
        }
        self.entry.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every clone of a layer and its services shares.
pub(crate) struct Shared {
    pub(crate) config: TpmConfig,
    pub(crate) state: LimitState,
    pub(crate) calibration: Calibration,
    pub(crate) estimator: Arc<dyn TokenEstimator>,
    /// The estimator counts otherwise than the default one (asked once).
    own_count: bool,
    /// The scopes seen so far (`None`: no budget applies).
    scopes: Mutex<ScopeMap<Option<Arc<ScopeEntry>>>>,
    /// The first scope seen and its entry: found without a lock or a hash (most layers
    /// serve one scope).
    first: OnceLock<(Scope, Option<Arc<ScopeEntry>>)>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("calibration", &self.calibration)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The request's metadata, its token estimate made by this layer's estimator: one
    /// an outer layer cached with the default estimator is counted again when this
    /// layer's estimator counts otherwise (an exact tokenizer, another output allowance).
    pub(crate) fn metadata<'r, B: ReplayableBody>(
        &self,
        req: &'r mut Request<B>,
    ) -> &'r RequestMeta {
        let recount =
            self.own_count && meta::get(req).is_some_and(|m| m.source == EstimateSource::Body);
        if recount {
            let fresh = meta::compute(req, &*self.estimator);
            if let Some(m) = req.extensions_mut().get_mut::<RequestMeta>() {
                m.input_tokens = fresh.input_tokens;
                m.dense_input_tokens = fresh.dense_input_tokens;
                m.output_tokens = fresh.output_tokens;
            }
        }
        meta::ensure_with(req, &*self.estimator)
    }

    pub(crate) fn new(
        config: TpmConfig,
        state: LimitState,
        estimator: Arc<dyn TokenEstimator>,
    ) -> Self {
        Shared {
            calibration: Calibration::new(config.calibration),
            config,
            state,
            own_count: !estimator.same_as_default(),
            estimator,
            scopes: Mutex::new(ScopeMap::default()),
            first: OnceLock::new(),
        }
    }

    /// The budget of `scope` (its quotas set on first use), or `None` if no budget
    /// applies.
    pub(crate) fn entry(&self, scope: &Scope) -> Option<Arc<ScopeEntry>> {
        if let Some((first, entry)) = self.first.get()
            && first == scope
        {
            return entry.clone();
        }
        let entry = self.entry_slow(scope);
        if self.first.get().is_none() {
            let _ = self.first.set((scope.clone(), entry.clone()));
        }
        entry
    }

    fn entry_slow(&self, scope: &Scope) -> Option<Arc<ScopeEntry>> {
        let mut map = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get(scope) {
            return e.clone();
        }
        let entry = self.config.limits_for(scope).map(|limits| {
            let h = self.state.handle(scope);
            for (key, limit) in KEYS.into_iter().zip([
                limits.tokens_per_minute,
                limits.input_tokens_per_minute,
                limits.output_tokens_per_minute,
            ]) {
                if let Some(limit) = limit {
                    let quota = Quota::sliding_window(self.config.effective(limit), MINUTE)
                        .with_slots(SLOTS);
                    if let Err(e) = h.set_quota(key, quota) {
                        // Validated when the layer was built; kept as a diagnostic.
                        tracing::warn!(scope = %scope, error = %e, "tpm: budget not applied");
                    }
                }
            }
            Arc::new(ScopeEntry {
                handle: h,
                queue: Arc::new(tokio::sync::Mutex::new(())),
                refunded: Arc::new(tokio::sync::Notify::new()),
                waiting: AtomicUsize::new(0),
                queued: Default::default(),
                head: Default::default(),
            })
        });
        map.insert(scope.clone(), entry.clone());
        entry
    }

    /// Applies the limits a response's headers state (after the safety margin): they
    /// tighten the budget, never loosen it beyond the configuration.
    fn learn_limits(&self, handle: &ScopeHandle, snapshot: &RateLimitSnapshot) {
        for key in KEYS {
            let said = snapshot.get(key.dimension);
            if let Some(limit) = said.limit {
                let dl = DimensionLimit {
                    limit: Some(self.config.effective(limit).max(1)),
                    remaining: None,
                    reset: None,
                    window: said.window,
                };
                handle.learn(key.dimension, &dl);
            }
        }
    }

    /// Applies the remaining tokens a response's headers state (less the margin).
    fn learn_remaining(&self, handle: &ScopeHandle, snapshot: &RateLimitSnapshot) -> bool {
        let mut any = false;
        for key in KEYS {
            let said = snapshot.get(key.dimension);
            if let Some(remaining) = said.remaining {
                let margin = said
                    .limit
                    .map_or(0, |l| l.saturating_sub(self.config.effective(l)));
                let dl = DimensionLimit {
                    limit: None,
                    remaining: Some(remaining.saturating_sub(margin)),
                    reset: said.reset,
                    window: said.window,
                };
                handle.learn(key.dimension, &dl);
                tracing::debug!(scope = %handle.scope(), dimension = key.dimension.as_str(),
                    remaining, reset_ms = ?said.reset.map(|r| r.as_millis() as u64),
                    "tpm: corrected by the remaining-tokens header");
                any = true;
            }
        }
        any
    }
}

/// What one request booked: input (after calibration) and output, and the input the
/// estimator said before calibration (and the dense part of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Estimate {
    pub(crate) raw_input: u64,
    /// Of `raw_input`, the tokens of text that is not ASCII (never shrunk).
    pub(crate) raw_dense: u64,
    pub(crate) input: u64,
    pub(crate) output: u64,
}

impl Estimate {
    /// The estimate of a request with metadata `m`, its input corrected by calibration.
    pub(crate) fn of(calibration: &Calibration, scope: &Scope, m: &RequestMeta) -> Self {
        Estimate {
            raw_input: m.input_tokens,
            raw_dense: m.dense_input_tokens,
            input: calibration.correct_split(scope, m.input_tokens, m.dense_input_tokens),
            output: m.output_tokens,
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }

    /// The cost in each bucket.
    pub(crate) fn costs(&self) -> [(BucketKey, u64); 3] {
        [
            (BucketKey::TOKENS_PER_MINUTE, self.total()),
            (BucketKey::INPUT_TOKENS_PER_MINUTE, self.input),
            (BucketKey::OUTPUT_TOKENS_PER_MINUTE, self.output),
        ]
    }
}

/// A committed reservation (the request was sent), waiting for what the provider
/// counted: its bare receipt, adjusted through the scope's handle (which the entry
/// keeps). Dropped without being settled (a failed or cut-short response), it keeps its
/// estimate charged.
pub(crate) struct Charge {
    taken: Taken,
    entry: Arc<ScopeEntry>,
    shared: Arc<Shared>,
    estimate: Estimate,
    /// Boxed: most responses state no limits, and a charge is moved with its future.
    snapshot: Option<Box<RateLimitSnapshot>>,
}

impl fmt::Debug for Charge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Charge")
            .field("scope", self.entry.handle.scope())
            .field("estimate", &self.estimate)
            .finish_non_exhaustive()
    }
}

impl Charge {
    pub(crate) fn new(
        taken: Taken,
        entry: Arc<ScopeEntry>,
        shared: Arc<Shared>,
        estimate: Estimate,
    ) -> Self {
        Charge {
            taken,
            entry,
            shared,
            estimate,
            snapshot: None,
        }
    }

    /// The response's head arrived: learn the limits it states, give everything back if
    /// the provider rejected the request (4xx, 429 included: nothing was counted), keep
    /// the estimate for a server error, and otherwise watch the body for usage.
    pub(crate) fn on_response(mut self, parts: &mut Parts) -> Option<Charge> {
        if !self.shared.config.reconcile {
            return None;
        }
        let scope = self.entry.handle.scope();
        let snapshot = headers::parse_once(
            parts.status,
            &parts.headers,
            &mut parts.extensions,
            SystemTime::now,
            || headers::Dialect::for_provider(scope.provider()),
        );
        self.shared.learn_limits(&self.entry.handle, &snapshot);
        if let Some(sent) = parts.extensions.get::<SentAt>() {
            // An inner layer held the request back: the provider counts it from then.
            self.entry.handle.sent_at(&mut self.taken, sent.0);
        }
        let status = parts.status;
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_client_error() {
            for (key, _) in self.estimate.costs() {
                self.entry.handle.adjust(&mut self.taken, key, 0);
            }
            tracing::debug!(scope = %self.entry.handle.scope(), status = status.as_u16(),
                refunded = self.estimate.total(), "tpm: rejected by the provider, refunded");
            self.entry.wake_head();
            return None;
        }
        if status.is_server_error() {
            tracing::debug!(scope = %self.entry.handle.scope(), status = status.as_u16(),
                charged = self.estimate.total(), "tpm: server error, estimate kept");
            return None;
        }
        if !snapshot.is_empty() {
            self.snapshot = Some(Box::new(snapshot));
        }
        Some(self)
    }

    /// The body ended: reconcile with the usage it reported, else with the
    /// remaining-tokens headers, else keep the estimate.
    pub(crate) fn settle(mut self, usage: Option<Usage>) {
        let scope = self.entry.handle.scope().clone();
        let e = self.estimate;
        let Some(u) = usage else {
            let corrected = self
                .snapshot
                .as_ref()
                .is_some_and(|s| self.shared.learn_remaining(&self.entry.handle, s));
            if !corrected {
                tracing::debug!(scope = %scope, charged = e.total(),
                    "tpm: no usage reported, estimate kept");
            }
            return;
        };
        let total = u
            .total_tokens()
            .or_else(|| u.input.map(|i| i.saturating_add(e.output)))
            .or_else(|| u.output.map(|o| e.input.saturating_add(o)));
        if let Some(t) = total {
            let h = &self.entry.handle;
            h.adjust(&mut self.taken, BucketKey::TOKENS_PER_MINUTE, t);
        }
        if let Some(i) = u.input {
            let h = &self.entry.handle;
            h.adjust(&mut self.taken, BucketKey::INPUT_TOKENS_PER_MINUTE, i);
            let cal = &self.shared.calibration;
            cal.observe_split(&scope, e.raw_input, e.raw_dense, i);
        }
        if let Some(o) = u.output {
            let h = &self.entry.handle;
            h.adjust(&mut self.taken, BucketKey::OUTPUT_TOKENS_PER_MINUTE, o);
        }
        tracing::debug!(scope = %scope, estimated = e.total(), actual = ?total,
            input = ?u.input, output = ?u.output, "tpm: reconciled with reported usage");
        self.entry.wake_head();
    }
}
