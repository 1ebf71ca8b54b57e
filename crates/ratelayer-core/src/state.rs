//! The shared limit state through which the layers cooperate.
//!
//! Layers never know each other: the tier detector publishes what it learned (tier,
//! limits, remaining, resets, a cooldown after a 429) here, keyed by [`Scope`]; the retry
//! layer reads the tier's base delay and the cooldown; the TPM and concurrency layers
//! tighten their budgets from it. A user can hold the same handle to read or override the
//! state at run time.
//!
//! ```
//! use std::time::Duration;
//! use ratelayer_core::{LimitState, Scope};
//! use ratelayer_core::state::TierInfo;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let state = LimitState::new();
//! let scope = Scope::new("openai").with_model("gpt-4o");
//! state.set_tier(&scope, TierInfo::new("free", Duration::from_secs(20)));
//! assert_eq!(state.tier(&scope).unwrap().base_delay, Duration::from_secs(20));
//!
//! let until = tokio::time::Instant::now() + Duration::from_secs(30);
//! state.set_cooldown(&scope, until);
//! assert_eq!(state.cooldown_remaining(&scope), Duration::from_secs(30));
//! # }
//! ```
//!
//! `LimitState` holds the limiter [`Store`] (the in-memory
//! [`MemoryStore`] unless built [`with_store`](LimitState::with_store)): cooldowns live
//! there (so a shared backend shares them), [`observe`](LimitState::observe) publishes
//! learned limits into it, and [`handle`](LimitState::handle) gives the per-scope engine
//! handle the TPM and concurrency layers reserve through (see [`engine`](crate::engine)).

use crate::ScopeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::{MemoryStore, ScopeHandle, Store};
use crate::headers::RateLimitSnapshot;
use crate::scope::Scope;

/// The tier of an account for a scope, as inferred by the tier detector.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::state::TierInfo;
///
/// let free = TierInfo {
///     pacing: Duration::from_secs(20),
///     rpm: Some(3),
///     ..TierInfo::new("free", Duration::from_secs(20))
/// };
/// assert_eq!(free.rpm, Some(3));
/// assert_eq!(&*free.name, "free");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierInfo {
    /// The tier's name, such as `free` or `tier-1`.
    pub name: Arc<str>,
    /// The base delay of backoff after a rate-limited response.
    pub base_delay: Duration,
    /// The recommended minimum interval between request starts.
    pub pacing: Duration,
    /// The requests-per-minute limit the tier was inferred from, if known.
    pub rpm: Option<u64>,
}

impl TierInfo {
    /// A tier with this name and base delay (no pacing, no known limit).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::state::TierInfo;
    ///
    /// let t = TierInfo::new("tier-1", Duration::from_millis(500));
    /// assert_eq!(t.base_delay, Duration::from_millis(500));
    /// assert_eq!((t.pacing, t.rpm), (Duration::ZERO, None));
    /// ```
    pub fn new(name: impl Into<Arc<str>>, base_delay: Duration) -> Self {
        TierInfo {
            name: name.into(),
            base_delay,
            pacing: Duration::ZERO,
            rpm: None,
        }
    }
}

/// The last rate-limit snapshot seen for a scope, with the instant it was received.
///
/// ```
/// use ratelayer_core::{LimitState, RateLimitSnapshot, Scope};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let state = LimitState::new();
/// let mut snap = RateLimitSnapshot::default();
/// snap.tokens.remaining = Some(29_000);
/// state.observe(&Scope::new("openai"), snap.clone());
/// let seen = state.observed(&Scope::new("openai")).unwrap();
/// assert_eq!((seen.snapshot, seen.at), (snap, tokio::time::Instant::now()));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// What the response said.
    pub snapshot: RateLimitSnapshot,
    /// When the response was received (tokio time).
    pub at: Instant,
}

#[derive(Debug, Default)]
struct Entry {
    tier: Option<TierInfo>,
    observed: Option<Observed>,
}

#[derive(Debug)]
struct Inner {
    scopes: Mutex<ScopeMap<Entry>>,
    store: Arc<dyn Store>,
    /// Bumped whenever a scope's tier or stated request limit changes.
    generation: AtomicU64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            scopes: Mutex::new(ScopeMap::default()),
            store: Arc::new(MemoryStore::new()),
            generation: AtomicU64::new(0),
        }
    }
}

/// A shared handle to what ratelayer knows about every scope: tiers, cooldowns and the
/// last rate-limit snapshot. Clones share the same state.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::{LimitState, Scope, state::TierInfo};
///
/// let state = LimitState::new();
/// let for_the_retry_layer = state.clone();
/// state.set_tier(&Scope::new("groq"), TierInfo::new("free", Duration::from_secs(20)));
/// assert!(for_the_retry_layer.has_tier(&Scope::new("groq")));
/// ```
#[derive(Debug, Clone, Default)]
pub struct LimitState {
    inner: Arc<Inner>,
}

impl LimitState {
    /// An empty in-memory state.
    ///
    /// ```
    /// use ratelayer_core::LimitState;
    /// let state = LimitState::new();
    /// assert!(state.scopes().is_empty());
    /// assert_eq!(state.generation(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// A state whose limiter state (buckets, cooldowns, leases) lives in `store`.
    ///
    /// ```
    /// use ratelayer_core::LimitState;
    /// use ratelayer_core::engine::MemoryStore;
    /// let state = LimitState::with_store(MemoryStore::new());
    /// assert!(state.scopes().is_empty());
    /// ```
    pub fn with_store(store: impl Store) -> Self {
        LimitState {
            inner: Arc::new(Inner {
                scopes: Mutex::new(ScopeMap::default()),
                store: Arc::new(store),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// The limiter store.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// let state = LimitState::new();
    /// assert!(!state.store().ever_cooled_down());
    /// let until = tokio::time::Instant::now() + Duration::from_secs(5);
    /// state.set_cooldown(&Scope::new("openai"), until);
    /// assert!(state.store().ever_cooled_down());
    /// ```
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The engine handle of `scope`: quotas, reservations, leases, cooldown. Resolve it
    /// once and keep it (the handle is the hot path). See [`engine`](crate::engine).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota};
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// let state = LimitState::new();
    /// let h = state.handle(&Scope::new("openai").with_model("gpt-4o"));
    /// let rpm = BucketKey::REQUESTS_PER_MINUTE;
    /// h.set_quota(rpm, Quota::gcra(500, Duration::from_secs(60))).unwrap();
    /// assert_eq!(h.scope().to_string(), "openai/gpt-4o");
    /// let again = state.handle(&Scope::new("openai").with_model("gpt-4o")); // the same state
    /// assert_eq!(again.capacity(rpm), Some(500));
    /// ```
    pub fn handle(&self, scope: &Scope) -> ScopeHandle {
        ScopeHandle::new(self.inner.store.scope(scope))
    }

    fn lock(&self) -> MutexGuard<'_, ScopeMap<Entry>> {
        // A panic while holding this lock cannot leave an entry half-written (every
        // critical section is a single assignment), so a poisoned lock is still usable.
        self.inner
            .scopes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes the tier of `scope`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope, state::TierInfo};
    ///
    /// let state = LimitState::new();
    /// let s = Scope::new("openai");
    /// state.set_tier(&s, TierInfo::new("free", Duration::from_secs(20)));
    /// state.set_tier(&s, TierInfo::new("tier-2", Duration::from_secs(1))); // replaces it
    /// assert_eq!(state.tier(&s).map(|t| t.base_delay), Some(Duration::from_secs(1)));
    /// ```
    pub fn set_tier(&self, scope: &Scope, tier: TierInfo) {
        let mut map = self.lock();
        let e = map.entry(scope.clone()).or_default();
        if e.tier.as_ref() != Some(&tier) {
            e.tier = Some(tier);
            self.bump();
        }
    }

    fn bump(&self) {
        self.inner.generation.fetch_add(1, Ordering::Release);
    }

    /// A number that changes whenever any scope's tier or stated request limit (the
    /// `limit` and window of a snapshot's requests line) changes, and only then (not
    /// with every `remaining`). A layer may keep what it derived from
    /// [`with_scope`](Self::with_scope) while this stays the same; read it before
    /// reading the state, so a change made meanwhile shows as a new number next time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, RateLimitSnapshot, Scope, state::TierInfo};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let st = LimitState::new();
    /// let s = Scope::new("openai");
    /// let g0 = st.generation();
    /// st.set_tier(&s, TierInfo::new("tier-1", Duration::from_secs(20)));
    /// let g1 = st.generation();
    /// assert_ne!(g0, g1);
    /// let mut snap = RateLimitSnapshot::default();
    /// snap.requests.limit = Some(500);
    /// snap.requests.remaining = Some(499);
    /// st.observe(&s, snap.clone());
    /// let g2 = st.generation();
    /// assert_ne!(g1, g2);
    /// snap.requests.remaining = Some(498); // only the remaining count moved
    /// st.observe(&s, snap);
    /// assert_eq!(st.generation(), g2);
    /// # }
    /// ```
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Whether a tier was detected or set for `scope` (no copy of it is made).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope, state::TierInfo};
    /// let st = LimitState::new();
    /// let s = Scope::new("openai");
    /// assert!(!st.has_tier(&s));
    /// st.set_tier(&s, TierInfo::new("tier-1", Duration::from_secs(20)));
    /// assert!(st.has_tier(&s));
    /// ```
    pub fn has_tier(&self, scope: &Scope) -> bool {
        self.lock().get(scope).is_some_and(|e| e.tier.is_some())
    }

    /// The tier of `scope`, if one was detected or set.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope, state::TierInfo};
    ///
    /// let state = LimitState::new();
    /// let s = Scope::new("openai").with_model("gpt-4o");
    /// assert_eq!(state.tier(&s), None);
    /// state.set_tier(&s, TierInfo::new("tier-1", Duration::from_millis(500)));
    /// assert_eq!(state.tier(&s).as_ref().map(|t| &*t.name), Some("tier-1"));
    /// assert_eq!(state.tier(&s.without_model()), None); // tiers are kept per exact scope
    /// ```
    pub fn tier(&self, scope: &Scope) -> Option<TierInfo> {
        self.lock().get(scope).and_then(|e| e.tier.clone())
    }

    /// Every request on `scope` (and on narrower scopes: a cooldown on a provider covers
    /// its models) waits until `until`. A cooldown only ever extends: an earlier `until`
    /// than the current one is ignored.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let state = LimitState::new();
    /// let provider = Scope::new("openai");
    /// let now = tokio::time::Instant::now();
    /// state.set_cooldown(&provider, now + Duration::from_secs(30));
    /// state.set_cooldown(&provider, now + Duration::from_secs(10)); // earlier: ignored
    /// let model = provider.with_model("gpt-4o"); // covered by its provider's cooldown
    /// assert_eq!(state.cooldown_remaining(&model), Duration::from_secs(30));
    /// # }
    /// ```
    pub fn set_cooldown(&self, scope: &Scope, until: Instant) {
        self.inner.store.scope(scope).set_cooldown(until);
    }

    /// Removes the cooldown of `scope` (an operator override).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let state = LimitState::new();
    /// let s = Scope::new("openai");
    /// state.set_cooldown(&s, tokio::time::Instant::now() + Duration::from_secs(30));
    /// state.clear_cooldown(&s);
    /// assert_eq!(state.cooldown_until(&s), None);
    /// # }
    /// ```
    pub fn clear_cooldown(&self, scope: &Scope) {
        self.inner.store.scope(scope).clear_cooldown();
    }

    /// The latest instant until which `scope` must wait, considering the scope itself,
    /// the scope without its model, and the provider as a whole. `None` if no cooldown
    /// is in force now.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let state = LimitState::new();
    /// let model = Scope::new("openai").with_model("gpt-4o");
    /// let until = tokio::time::Instant::now() + Duration::from_secs(30);
    /// state.set_cooldown(&model.without_model(), until); // on the whole provider
    /// assert_eq!(state.cooldown_until(&model), Some(until));
    /// tokio::time::advance(Duration::from_secs(30)).await;
    /// assert_eq!(state.cooldown_until(&model), None); // over
    /// # }
    /// ```
    pub fn cooldown_until(&self, scope: &Scope) -> Option<Instant> {
        if !self.inner.store.ever_cooled_down() {
            // No cooldown was ever set: not even the clock needs reading.
            return None;
        }
        self.cooldown_until_at(scope, Instant::now())
    }

    /// [`cooldown_until`](Self::cooldown_until) for a caller that has just read the
    /// clock: when no cooldown anywhere in the store lasts past `now`, it answers `None`
    /// without resolving the scope.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope};
    /// use tokio::time::Instant;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let st = LimitState::new();
    /// let s = Scope::new("openai");
    /// let now = Instant::now();
    /// assert_eq!(st.cooldown_until_at(&s, now), None);
    /// st.set_cooldown(&s, now + Duration::from_secs(5));
    /// assert_eq!(st.cooldown_until_at(&s, now), Some(now + Duration::from_secs(5)));
    /// # }
    /// ```
    pub fn cooldown_until_at(&self, scope: &Scope, now: Instant) -> Option<Instant> {
        if !self.inner.store.may_cool_down(now) {
            return None;
        }
        self.inner.store.scope(scope).cooldown_until()
    }

    /// How long `scope` must wait for its cooldown from now (zero if none).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let state = LimitState::new();
    /// let s = Scope::new("anthropic");
    /// assert_eq!(state.cooldown_remaining(&s), Duration::ZERO);
    /// state.set_cooldown(&s, tokio::time::Instant::now() + Duration::from_secs(30));
    /// tokio::time::advance(Duration::from_secs(12)).await;
    /// assert_eq!(state.cooldown_remaining(&s), Duration::from_secs(18));
    /// # }
    /// ```
    pub fn cooldown_remaining(&self, scope: &Scope) -> Duration {
        self.cooldown_until(scope)
            .map(|u| u.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    /// Records the last rate-limit snapshot seen for `scope`, and publishes what it says
    /// about limits into the engine: learned limits tighten the buckets of `scope` (never
    /// loosening beyond what the provider said; see [`ScopeHandle::learn`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{BucketKey, Quota};
    /// use ratelayer_core::{LimitState, RateLimitSnapshot, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let state = LimitState::new();
    /// let s = Scope::new("openai");
    /// let tpm = BucketKey::TOKENS_PER_MINUTE;
    /// let tpm_quota = Quota::sliding_window(90_000, Duration::from_secs(60));
    /// state.handle(&s).set_quota(tpm, tpm_quota).unwrap();
    /// let mut snap = RateLimitSnapshot::default();
    /// snap.tokens.limit = Some(30_000); // the account's real limit is lower
    /// state.observe(&s, snap);
    /// assert_eq!(state.handle(&s).capacity(tpm), Some(30_000));
    /// assert_eq!(state.observed(&s).unwrap().snapshot.tokens.limit, Some(30_000));
    /// # }
    /// ```
    pub fn observe(&self, scope: &Scope, snapshot: RateLimitSnapshot) {
        if !snapshot.is_empty() {
            self.handle(scope).learn_snapshot(&snapshot);
        }
        let at = Instant::now();
        let said = |s: &RateLimitSnapshot| (s.requests.limit, s.requests.window);
        let mut map = self.lock();
        let e = map.entry(scope.clone()).or_default();
        let changed = e.observed.as_ref().map(|o| said(&o.snapshot)) != Some(said(&snapshot));
        e.observed = Some(Observed { snapshot, at });
        if changed {
            self.bump();
        }
    }

    /// The last rate-limit snapshot seen for `scope`.
    ///
    /// ```
    /// use ratelayer_core::{LimitState, RateLimitSnapshot, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let state = LimitState::new();
    /// let s = Scope::new("openai");
    /// assert!(state.observed(&s).is_none());
    /// let mut snap = RateLimitSnapshot::default();
    /// snap.requests.remaining = Some(499);
    /// state.observe(&s, snap);
    /// assert_eq!(state.observed(&s).unwrap().snapshot.requests.remaining, Some(499));
    /// # }
    /// ```
    pub fn observed(&self, scope: &Scope) -> Option<Observed> {
        self.with_observed(scope, Observed::clone)
    }

    /// Reads the last snapshot observed for exactly `scope` in place, without copying it:
    /// `f`'s answer, or `None` when nothing was observed.
    ///
    /// ```
    /// use ratelayer_core::{LimitState, RateLimitSnapshot, Scope};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let st = LimitState::new();
    /// let s = Scope::new("openai");
    /// assert_eq!(st.with_observed(&s, |o| o.snapshot.requests.limit), None);
    /// let mut snap = RateLimitSnapshot::default();
    /// snap.requests.limit = Some(500);
    /// st.observe(&s, snap);
    /// assert_eq!(st.with_observed(&s, |o| o.snapshot.requests.limit), Some(Some(500)));
    /// # }
    /// ```
    pub fn with_observed<R>(&self, scope: &Scope, f: impl FnOnce(&Observed) -> R) -> Option<R> {
        self.lock()
            .get(scope)
            .and_then(|e| e.observed.as_ref())
            .map(f)
    }

    /// Reads what is known of exactly `scope` (its tier and its last snapshot) in place,
    /// in one lookup and without copying either: `f`'s answer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope, state::TierInfo};
    /// let st = LimitState::new();
    /// let s = Scope::new("openai");
    /// assert_eq!(st.with_scope(&s, |tier, _| tier.is_some()), false);
    /// st.set_tier(&s, TierInfo::new("tier-1", Duration::from_secs(20)));
    /// let (name, seen) = st.with_scope(&s, |tier, seen| (tier.map(|t| t.name.clone()), seen.is_some()));
    /// assert_eq!((name.as_deref(), seen), (Some("tier-1"), false));
    /// ```
    pub fn with_scope<R>(
        &self,
        scope: &Scope,
        f: impl FnOnce(Option<&TierInfo>, Option<&Observed>) -> R,
    ) -> R {
        let map = self.lock();
        match map.get(scope) {
            Some(e) => f(e.tier.as_ref(), e.observed.as_ref()),
            None => f(None, None),
        }
    }

    /// The scopes this state knows about (with a tier, a snapshot, or engine state).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope, state::TierInfo};
    ///
    /// let state = LimitState::new();
    /// state.set_tier(&Scope::new("openai"), TierInfo::new("tier-1", Duration::from_secs(1)));
    /// let _ = state.handle(&Scope::new("anthropic")); // engine state
    /// assert_eq!(state.scopes(), vec![Scope::new("anthropic"), Scope::new("openai")]);
    /// ```
    pub fn scopes(&self) -> Vec<Scope> {
        let mut all: Vec<Scope> = self.lock().keys().cloned().collect();
        all.extend(self.inner.store.scopes());
        all.sort();
        all.dedup();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cooldown_extends_only_and_covers_narrower_scopes() {
        let st = LimitState::new();
        let provider = Scope::new("openai");
        let model = provider.clone().with_model("gpt-4o");
        let now = Instant::now();
        assert!(!st.store().ever_cooled_down());
        assert_eq!(st.cooldown_until(&model), None);
        st.set_cooldown(&model, now + Duration::from_secs(10));
        assert!(st.store().ever_cooled_down());
        st.set_cooldown(&model, now + Duration::from_secs(5));
        assert_eq!(st.cooldown_remaining(&model), Duration::from_secs(10));
        st.set_cooldown(&provider, now + Duration::from_secs(20));
        assert_eq!(st.cooldown_remaining(&model), Duration::from_secs(20));
        let other = provider.clone().with_model("gpt-4o-mini");
        assert_eq!(st.cooldown_remaining(&other), Duration::from_secs(20));
        assert!(st.store().may_cool_down(Instant::now()));
        tokio::time::advance(Duration::from_secs(21)).await;
        // Past every cooldown: the store says so without resolving a scope.
        assert!(!st.store().may_cool_down(Instant::now()));
        assert_eq!(st.cooldown_until(&model), None);
        assert_eq!(st.cooldown_remaining(&model), Duration::ZERO);
        // A cooldown set directly on a scope's handle counts too.
        st.handle(&other)
            .set_cooldown(Instant::now() + Duration::from_secs(3));
        assert!(st.store().may_cool_down(Instant::now()));
        assert_eq!(st.cooldown_remaining(&other), Duration::from_secs(3));
    }

    #[test]
    fn clones_share_state() {
        let a = LimitState::new();
        let b = a.clone();
        let s = Scope::new("anthropic");
        a.set_tier(&s, TierInfo::new("tier-1", Duration::from_millis(300)));
        assert_eq!(
            b.tier(&s).map(|t| t.name.to_string()).as_deref(),
            Some("tier-1")
        );
    }
}
