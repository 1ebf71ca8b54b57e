//! [`TierDetectLayer`] and the shared detector behind it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;
use ratelayer_core::state::{Observed, TierInfo};
use ratelayer_core::{ConfigError, LimitState, RateLimitSnapshot, Scope};
use tokio::time::Instant;
use tower_layer::Layer;

use crate::service::TierDetect;
use crate::table::{TierTables, secs};

/// Detects the account tier of every scope from response headers and publishes limits,
/// remaining, resets, cooldowns and the tier into a shared [`LimitState`].
///
/// Build it with [`TierDetectLayer::builder`] (or [`TierDetectLayer::new`] for the
/// defaults); every service made from one layer shares one detector.
///
/// ```
/// # use std::convert::Infallible;
/// # use http::{Request, Response};
/// use ratelayer_core::{LimitState, ReplayBody, meta};
/// use ratelayer_tier::TierDetectLayer;
/// use tower::{Layer, ServiceExt, service_fn};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// # let upstream = service_fn(|_: Request<ReplayBody>| async {
/// #     let resp = Response::builder().header("x-ratelimit-limit-requests", "500");
/// #     Ok::<_, Infallible>(resp.body(String::new()).unwrap())
/// # });
///
/// let state = LimitState::new();
/// let layer = TierDetectLayer::new(state.clone());
/// let handle = layer.handle();
/// let mut req = Request::new(ReplayBody::empty());
/// let scope = meta::ensure(&mut req).scope();
/// assert_eq!(&*handle.tier(&scope).name, "free"); // assumed until a response says
/// layer.layer(upstream).oneshot(req).await.unwrap(); // answers with a 500 RPM limit
/// assert_eq!(&*handle.tier(&scope).name, "tier-2");
/// assert!(state.has_tier(&scope)); // published into the shared state
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TierDetectLayer {
    pub(crate) shared: Arc<Detector>,
}

/// Builds a [`TierDetectLayer`]; configuration is checked by [`build`](Self::build).
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::{LimitState, Scope};
/// use ratelayer_tier::{TierDetectLayer, TierSpec, TierTable, TierTables};
///
/// let trial = TierTable { tiers: vec![TierSpec::new("trial", 0, 5_000, 1_000)] };
/// let layer = TierDetectLayer::builder(LimitState::new())
///     .tables(TierTables::new().with_provider("kimi", trial))
///     .configured_delay(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// let h = layer.handle();
/// assert_eq!(h.tier(&Scope::new("kimi")).base_delay, Duration::from_secs(5));
/// assert_eq!(&*h.tier(&Scope::new("openai")).name, "free"); // others: the default table
/// ```
#[derive(Debug, Clone)]
pub struct TierDetectLayerBuilder {
    state: LimitState,
    tables: TierTables,
    configured_delay: Option<Duration>,
}

impl TierDetectLayerBuilder {
    /// Tier tables per provider (default: [`TierTables::new`]).
    ///
    /// ```
    /// use ratelayer_core::{LimitState, Scope};
    /// use ratelayer_tier::{TierDetectLayer, TierSpec, TierTable, TierTables};
    /// let slow = TierTable { tiers: vec![TierSpec::new("slow", 0, 60_000, 60_000)] };
    /// let tables = TierTables::new().with_provider("groq", slow);
    /// let layer = TierDetectLayer::builder(LimitState::new()).tables(tables).build().unwrap();
    /// assert_eq!(&*layer.handle().tier(&Scope::new("groq")).name, "slow");
    /// ```
    pub fn tables(mut self, tables: TierTables) -> Self {
        self.tables = tables;
        self
    }

    /// A fixed delay that your own code uses between retries: whenever a tier is detected
    /// whose base delay differs, a warning is logged.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::io::Write;
    /// # use std::sync::{Arc, Mutex};
    /// # use http::{Request, Response};
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, ReplayBody};
    /// use ratelayer_tier::TierDetectLayer;
    /// use tower::{Layer, ServiceExt};
    /// # #[derive(Clone, Default)]
    /// # struct Logs(Arc<Mutex<Vec<u8>>>);
    /// # impl Write for Logs {
    /// #     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
    /// #         self.0.lock().unwrap().extend_from_slice(b);
    /// #         Ok(b.len())
    /// #     }
    /// #     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let logs = Logs::default();
    /// # let w = logs.clone();
    /// # let subscriber = tracing_subscriber::fmt().with_writer(move || w.clone()).with_ansi(false).finish();
    /// # let _guard = tracing::subscriber::set_default(subscriber);
    /// # let upstream = tower::service_fn(|_: Request<ReplayBody>| async {
    /// #     let resp = Response::builder().header("x-ratelimit-limit-requests", "3");
    /// #     Ok::<_, Infallible>(resp.body(String::new()).unwrap())
    /// # });
    /// let layer = TierDetectLayer::builder(LimitState::new())
    ///     .configured_delay(Duration::from_secs(2))
    ///     .build()
    ///     .unwrap();
    /// // A response with a 3 RPM limit: the free tier, whose base delay is 20 s.
    /// layer.layer(upstream).oneshot(Request::new(ReplayBody::empty())).await.unwrap();
    /// let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    /// assert!(logged.contains("configured fixed delay 2s does not match tier free's recommended base delay 20s"));
    /// # }
    /// ```
    pub fn configured_delay(mut self, delay: Duration) -> Self {
        self.configured_delay = Some(delay);
        self
    }

    /// Checks the configuration and builds the layer.
    ///
    /// ```
    /// use ratelayer_core::LimitState;
    /// use ratelayer_tier::{TierDetectLayer, TierTable, TierTables};
    /// let bad = TierTables::new().with_provider("x", TierTable { tiers: vec![] });
    /// assert!(TierDetectLayer::builder(LimitState::new()).tables(bad).build().is_err());
    /// ```
    pub fn build(self) -> Result<TierDetectLayer, ConfigError> {
        self.tables.validate()?;
        Ok(TierDetectLayer {
            shared: Arc::new(Detector {
                state: self.state,
                tables: self.tables,
                configured_delay: self.configured_delay,
                seeded: OnceLock::new(),
            }),
        })
    }
}

impl TierDetectLayer {
    /// A layer with the default tier tables, publishing into `state`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope, state::TierInfo};
    /// use ratelayer_tier::TierDetectLayer;
    /// let state = LimitState::new();
    /// let layer = TierDetectLayer::new(state.clone());
    /// let scope = Scope::new("openai");
    /// assert_eq!(&*layer.handle().tier(&scope).name, "free"); // the default table's lowest
    /// state.set_tier(&scope, TierInfo::new("tier-1", Duration::from_millis(300)));
    /// assert_eq!(&*layer.handle().tier(&scope).name, "tier-1"); // read from `state`
    /// ```
    pub fn new(state: LimitState) -> Self {
        TierDetectLayer {
            shared: Arc::new(Detector {
                state,
                tables: TierTables::new(),
                configured_delay: None,
                seeded: OnceLock::new(),
            }),
        }
    }

    /// A builder publishing into `state`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope, state::TierInfo};
    /// use ratelayer_tier::TierDetectLayer;
    /// let state = LimitState::new();
    /// let layer = TierDetectLayer::builder(state.clone()).build().unwrap();
    /// let scope = Scope::new("openai");
    /// layer.handle().state().set_tier(&scope, TierInfo::new("tier-1", Duration::from_millis(300)));
    /// assert!(state.has_tier(&scope)); // one state: the layer's is `state`
    /// ```
    pub fn builder(state: LimitState) -> TierDetectLayerBuilder {
        TierDetectLayerBuilder {
            state,
            tables: TierTables::new(),
            configured_delay: None,
        }
    }

    /// A handle answering the tier, limits and recommendation of any scope.
    ///
    /// ```
    /// use ratelayer_core::{LimitState, Scope};
    /// use ratelayer_tier::TierDetectLayer;
    /// let handle = TierDetectLayer::new(LimitState::new()).handle();
    /// assert_eq!(&*handle.tier(&Scope::new("openai")).name, "free");
    /// ```
    pub fn handle(&self) -> TierHandle {
        TierHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S> Layer<S> for TierDetectLayer {
    type Service = TierDetect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TierDetect {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// What the tier layer recommends for a scope.
///
/// ```
/// use ratelayer_core::{LimitState, Scope};
/// use ratelayer_tier::TierDetectLayer;
/// let r = TierDetectLayer::new(LimitState::new()).handle().recommendation(&Scope::new("openai"));
/// assert!(!r.detected);
/// assert_eq!(r.base_delay.as_secs(), 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    /// The tier's name.
    pub tier: Arc<str>,
    /// Whether the tier was detected from a response (or only assumed).
    pub detected: bool,
    /// The base delay of backoff after a rate-limited response.
    pub base_delay: Duration,
    /// The recommended minimum interval between request starts.
    pub pacing: Duration,
    /// The requests-per-minute limit the tier was inferred from.
    pub rpm: Option<u64>,
}

/// Answers the current tier, limits and recommendation of a scope. Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::{LimitState, Scope};
/// use ratelayer_tier::TierDetectLayer;
/// let handle = TierDetectLayer::new(LimitState::new()).handle();
/// let scope = Scope::new("openai").with_model("gpt-4o");
/// assert!(handle.limits(&scope).is_none());
/// // A fixed 1 s delay does not suit the (assumed) free tier: logs a warning.
/// assert!(!handle.check_fixed_delay(&scope, Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone)]
pub struct TierHandle {
    shared: Arc<Detector>,
}

impl TierHandle {
    /// The tier of `scope`: the detected (or user-set) one, else the most conservative
    /// tier of its provider's table.
    ///
    /// ```
    /// use ratelayer_core::{LimitState, Scope};
    /// use ratelayer_tier::TierDetectLayer;
    /// let h = TierDetectLayer::new(LimitState::new()).handle();
    /// assert_eq!(h.tier(&Scope::new("openai")).base_delay.as_secs(), 20);
    /// ```
    pub fn tier(&self, scope: &Scope) -> TierInfo {
        self.shared.tier(scope)
    }

    /// The last rate-limit snapshot seen for `scope`.
    ///
    /// ```
    /// use ratelayer_core::{LimitState, Scope};
    /// use ratelayer_tier::TierDetectLayer;
    /// let h = TierDetectLayer::new(LimitState::new()).handle();
    /// assert!(h.limits(&Scope::new("openai")).is_none());
    /// ```
    pub fn limits(&self, scope: &Scope) -> Option<Observed> {
        self.shared.state.observed(scope)
    }

    /// The recommendation for `scope`: tier, base delay and pacing.
    ///
    /// ```
    /// use ratelayer_core::{LimitState, Scope};
    /// use ratelayer_tier::TierDetectLayer;
    /// let h = TierDetectLayer::new(LimitState::new()).handle();
    /// assert_eq!(h.recommendation(&Scope::new("openai")).pacing.as_secs(), 20);
    /// ```
    pub fn recommendation(&self, scope: &Scope) -> Recommendation {
        let t = self.tier(scope);
        Recommendation {
            detected: t.rpm.is_some(),
            tier: t.name,
            base_delay: t.base_delay,
            pacing: t.pacing,
            rpm: t.rpm,
        }
    }

    /// Whether a user-configured fixed `delay` matches the recommendation of `scope`'s
    /// tier; logs a warning when it does not.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::{LimitState, Scope};
    /// use ratelayer_tier::TierDetectLayer;
    /// let h = TierDetectLayer::new(LimitState::new()).handle();
    /// assert!(h.check_fixed_delay(&Scope::new("openai"), Duration::from_secs(20)));
    /// ```
    pub fn check_fixed_delay(&self, scope: &Scope, delay: Duration) -> bool {
        check_delay(scope, &self.tier(scope), delay)
    }

    /// The shared limit state the layer publishes into.
    ///
    /// ```
    /// use ratelayer_core::LimitState;
    /// use ratelayer_tier::TierDetectLayer;
    /// let state = LimitState::new();
    /// let h = TierDetectLayer::new(state.clone()).handle();
    /// assert!(h.state().scopes().is_empty());
    /// ```
    pub fn state(&self) -> &LimitState {
        &self.shared.state
    }
}

fn check_delay(scope: &Scope, tier: &TierInfo, delay: Duration) -> bool {
    let ok = delay == tier.base_delay;
    if !ok {
        tracing::warn!(
            scope = %scope,
            tier = %tier.name,
            configured_delay_ms = delay.as_millis() as u64,
            recommended_delay_ms = tier.base_delay.as_millis() as u64,
            "configured fixed delay {} does not match tier {}'s recommended base delay {}",
            secs(delay),
            tier.name,
            secs(tier.base_delay),
        );
    }
    ok
}

/// The detector shared by a layer's services.
#[derive(Debug)]
pub(crate) struct Detector {
    pub(crate) state: LimitState,
    tables: TierTables,
    configured_delay: Option<Duration>,
    /// The first scope known to have a tier (a tier, once known, stays): its requests
    /// skip the state lookup (most layers serve one scope).
    seeded: OnceLock<Scope>,
}

impl Detector {
    fn tier(&self, scope: &Scope) -> TierInfo {
        self.state.tier(scope).unwrap_or_else(|| {
            self.tables
                .for_provider(scope.provider())
                .lowest()
                .info(None)
        })
    }

    /// Before a request: a scope seen for the first time is on its most conservative
    /// tier, published so every layer reads the same base delay.
    pub(crate) fn on_request(&self, scope: &Scope) {
        if self.seeded.get() == Some(scope) {
            return;
        }
        if self.state.has_tier(scope) {
            if self.seeded.get().is_none() {
                let _ = self.seeded.set(scope.clone());
            }
        } else {
            let t = self
                .tables
                .for_provider(scope.provider())
                .lowest()
                .info(None);
            self.state.set_tier(scope, t);
        }
    }

    /// After a response: publish what its headers said (`snap`, parsed once per response:
    /// [`parse_once`](ratelayer_core::headers::parse_once)).
    pub(crate) fn on_response(&self, scope: &Scope, status: StatusCode, snap: RateLimitSnapshot) {
        if snap.is_empty() {
            return;
        }
        let asked = match status.as_u16() {
            429 => snap
                .retry_after
                .or_else(|| snap.exhausted().and_then(|(_, reset)| reset)),
            503 | 529 => snap.retry_after,
            _ => None,
        };
        if let Some(delay) = asked.filter(|d| !d.is_zero()) {
            tracing::debug!(scope = %scope, status = status.as_u16(),
                cooldown_ms = delay.as_millis() as u64, "server asked for a delay: cooldown");
            self.state.set_cooldown(scope, Instant::now() + delay);
        }
        let requests = snap.requests;
        self.state.observe(scope, snap);
        let Some(limit) = requests.limit.filter(|l| *l > 0) else {
            return;
        };
        let window = requests.window.unwrap_or(Duration::from_secs(60));
        if window != Duration::from_secs(60) {
            // A per-day (Groq) or other window is not what the tier tables are keyed on.
            return;
        }
        let table = self.tables.for_provider(scope.provider());
        let spec = table.classify(limit);
        let info = spec.info(Some((limit, window)));
        let prev = self.state.tier(scope);
        if prev.as_ref() == Some(&info) {
            return;
        }
        self.state.set_tier(scope, info.clone());
        let changed = prev
            .as_ref()
            .is_none_or(|p| p.name != info.name || p.rpm.is_none());
        if changed {
            tracing::info!(
                scope = %scope,
                tier = %info.name,
                rpm = limit,
                base_delay_ms = info.base_delay.as_millis() as u64,
                pacing_ms = info.pacing.as_millis() as u64,
                previous = prev.as_ref().map(|p| &*p.name),
                "detected tier: {} (rpm {}, base delay {})",
                info.name,
                limit,
                secs(info.base_delay),
            );
            if let Some(d) = self.configured_delay {
                check_delay(scope, &info, d);
            }
        }
    }
}
