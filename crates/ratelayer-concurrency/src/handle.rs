//! The run-time handle: hot reload of limits and a view of every scope.

use ratelayer_core::ScopeMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard};

use ratelayer_core::{ConfigError, LimitState, RequestMeta, Scope};

use crate::config::{ConcurrencyConfig, Limits, ScopeBy};
use crate::limiter::{ScopeLimiter, ScopeStats};

/// State shared by a layer, its services (all clones) and its handles.
///
/// Aligned to a cache line so that, inside its `Arc`, the fields every request reads sit
/// on another line than the reference counts every service clone and permit writes.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct Shared {
    config: RwLock<ConcurrencyConfig>,
    /// Fixed for the layer's life (a reload cannot change it).
    scope_by: ScopeBy,
    /// The first scope's limiter: found without a lock (most layers serve one scope).
    first: OnceLock<Arc<ScopeLimiter>>,
    scopes: RwLock<ScopeMap<Arc<ScopeLimiter>>>,
    /// Where the engine state (leases, buckets) lives.
    state: RwLock<LimitState>,
    /// Bumped by every reload, before the new configuration is in force.
    epoch: AtomicU64,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Writers never leave a half-applied value behind, so poisoning is ignored.
    l.read().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn new(config: ConcurrencyConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Shared {
            scope_by: config.scope_by,
            first: OnceLock::new(),
            config: RwLock::new(config),
            scopes: RwLock::default(),
            state: RwLock::new(LimitState::new()),
            epoch: AtomicU64::new(0),
        })
    }

    /// Changes with every reload of the configuration.
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn set_state(&self, state: LimitState) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    pub(crate) fn config(&self) -> RwLockReadGuard<'_, ConcurrencyConfig> {
        read(&self.config)
    }

    /// The limiter of the request described by `meta`.
    #[inline]
    pub(crate) fn limiter_for(&self, meta: &RequestMeta) -> LimiterRef<'_> {
        let by_model = self.scope_by == ScopeBy::ProviderCredentialModel;
        let model = if by_model {
            meta.model.as_deref()
        } else {
            None
        };
        if let Some(l) = self
            .first
            .get()
            .filter(|l| l.matches(&meta.provider, meta.credential.as_deref(), model))
        {
            return LimiterRef::Borrowed(l);
        }
        let mut scope = Scope::new(meta.provider.clone());
        if let Some(c) = &meta.credential {
            scope = scope.with_credential(c.clone());
        }
        if by_model && let Some(m) = &meta.model {
            scope = scope.with_model(m.clone());
        }
        let l = self.limiter(scope);
        if self.first.set(l.clone()).is_ok()
            && let Some(first) = self.first.get()
        {
            return LimiterRef::Borrowed(first);
        }
        LimiterRef::Owned(l)
    }

    /// The limiter of `scope`, created with the limits configured for it on first use.
    pub(crate) fn limiter(&self, scope: Scope) -> Arc<ScopeLimiter> {
        if let Some(l) = read(&self.scopes).get(&scope) {
            return l.clone();
        }
        // Read the limits before taking the scopes lock (reload takes them in the other
        // order: config, then scopes).
        let config = self.config();
        let limits = config.limits_for(scope.provider(), scope.model()).clone();
        let mut scopes = self.scopes.write().unwrap_or_else(|p| p.into_inner());
        drop(config);
        scopes
            .entry(scope.clone())
            .or_insert_with(|| {
                tracing::debug!(scope = %scope, ?limits, "new concurrency scope");
                let engine = read(&self.state).handle(&scope);
                Arc::new(ScopeLimiter::new(scope, engine, &limits))
            })
            .clone()
    }
}

/// A scope's limiter, borrowed from the layer's cache or owned.
pub(crate) enum LimiterRef<'a> {
    Borrowed(&'a Arc<ScopeLimiter>),
    Owned(Arc<ScopeLimiter>),
}

impl Deref for LimiterRef<'_> {
    type Target = Arc<ScopeLimiter>;

    #[inline]
    fn deref(&self) -> &Arc<ScopeLimiter> {
        match self {
            LimiterRef::Borrowed(l) => l,
            LimiterRef::Owned(l) => l,
        }
    }
}

/// A handle to a [`ConcurrencyLayer`](crate::ConcurrencyLayer)'s limits, shared with every
/// service it built: change limits at run time, and look at each scope.
///
/// Raising a maximum lets queued requests in at once; lowering it takes effect as
/// in-flight requests finish (none is cancelled).
///
/// ```
/// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
///
/// let (layer, handle) = ConcurrencyLayer::pair(
///     ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1)),
/// ).unwrap();
/// handle.set_limits("kimi", Limits::new().max_concurrent(2)).unwrap();
/// assert_eq!(handle.config().limits_for("kimi", None).max_concurrent, Some(2));
/// assert!(handle.set_limits("kimi", Limits::new().max_concurrent(0)).is_err());
/// # drop(layer);
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrencyHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ConcurrencyHandle {
    /// Replaces the whole configuration. `scope_by` cannot change at run time.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits, ScopeBy};
    /// let (_layer, handle) = ConcurrencyLayer::pair(ConcurrencyConfig::new()).unwrap();
    /// handle.reload(ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1))).unwrap();
    /// assert_eq!(handle.config().limits_for("kimi", None).max_concurrent, Some(1));
    /// let err = handle.reload(ConcurrencyConfig::new().scope_by(ScopeBy::ProviderCredentialModel)).unwrap_err();
    /// assert_eq!(err.setting, "scope_by");
    /// ```
    pub fn reload(&self, config: ConcurrencyConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let mut current = self
            .shared
            .config
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if current.scope_by != config.scope_by {
            return Err(ConfigError::new(
                "scope_by",
                "cannot change at run time (requests in flight are counted under the old \
                 scopes); build a new layer instead",
            ));
        }
        *current = config;
        // Whoever read the old configuration saw the old epoch: what it derived from it
        // is derived again.
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        let scopes = read(&self.shared.scopes);
        for limiter in scopes.values() {
            let s = limiter.scope();
            limiter.reconfigure(current.limits_for(s.provider(), s.model()));
        }
        tracing::info!(scopes = scopes.len(), "concurrency limits reloaded");
        Ok(())
    }

    /// Sets the limits of one provider (or `provider/model`) and applies them at once.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
    /// use ratelayer_core::Scope;
    /// use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use std::convert::Infallible;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{RequestMeta, meta};
    /// # let request = || {
    /// #     let mut req = Request::new(String::new());
    /// #     meta::set(&mut req, RequestMeta::new("kimi", 10, 10));
    /// #     req
    /// # };
    /// # let inner = tower::service_fn(|_: Request<String>| async { Ok::<_, Infallible>(Response::new(String::from("ok"))) });
    /// let (layer, handle) = ConcurrencyLayer::pair(ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1))).unwrap();
    /// let svc = layer.layer(inner);
    /// let _first = svc.clone().oneshot(request()).await.unwrap(); // holds the only permit
    /// let mut second = tokio_test::task::spawn(svc.clone().oneshot(request()));
    /// tokio_test::assert_pending!(second.poll());
    /// handle.set_limits("kimi", Limits::new().max_concurrent(2)).unwrap();
    /// assert!(second.is_woken()); // raising the maximum admits the queued request at once
    /// assert!(tokio_test::assert_ready!(second.poll()).is_ok());
    /// # }
    /// ```
    pub fn set_limits(&self, provider: &str, limits: Limits) -> Result<(), ConfigError> {
        let mut config = self.config();
        config.providers.insert(provider.to_owned(), limits);
        self.reload(config)
    }

    /// Sets the limits of providers not configured by name.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
    /// let (_layer, handle) = ConcurrencyLayer::pair(ConcurrencyConfig::new()).unwrap();
    /// handle.set_default_limits(Limits::new().max_concurrent(8)).unwrap();
    /// assert_eq!(handle.config().limits_for("openai", None).max_concurrent, Some(8));
    /// let err = handle.set_default_limits(Limits::new().max_concurrent(0)).unwrap_err();
    /// assert_eq!(err.setting, "default.max_concurrent");
    /// ```
    pub fn set_default_limits(&self, limits: Limits) -> Result<(), ConfigError> {
        let mut config = self.config();
        config.default = limits;
        self.reload(config)
    }

    /// The configuration in force.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
    /// let config = ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1));
    /// let (_layer, handle) = ConcurrencyLayer::pair(config.clone()).unwrap();
    /// assert_eq!(handle.config(), config);
    /// ```
    pub fn config(&self) -> ConcurrencyConfig {
        self.shared.config().clone()
    }

    /// In flight, queued and maximum of `scope` (as counted: see
    /// [`ScopeBy`](crate::ScopeBy)), if it has seen a request.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
    /// use ratelayer_core::Scope;
    /// use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use std::convert::Infallible;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{RequestMeta, meta};
    /// # let request = || {
    /// #     let mut req = Request::new(String::new());
    /// #     meta::set(&mut req, RequestMeta::new("kimi", 10, 10));
    /// #     req
    /// # };
    /// # let inner = tower::service_fn(|_: Request<String>| async { Ok::<_, Infallible>(Response::new(String::from("ok"))) });
    /// let (layer, handle) = ConcurrencyLayer::pair(ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1))).unwrap();
    /// assert!(handle.stats(&Scope::new("kimi")).is_none()); // no request yet
    /// let res = layer.layer(inner).oneshot(request()).await.unwrap();
    /// let stats = handle.stats(&Scope::new("kimi")).unwrap();
    /// assert_eq!((stats.in_flight, stats.queued, stats.max_concurrent), (1, 0, Some(1)));
    /// # drop(res);
    /// # }
    /// ```
    pub fn stats(&self, scope: &Scope) -> Option<ScopeStats> {
        read(&self.shared.scopes).get(scope).map(|l| l.stats())
    }

    /// Every scope that has seen a request, with its stats.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer};
    /// use ratelayer_core::Scope;
    /// use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use std::convert::Infallible;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{RequestMeta, meta};
    /// # let request = || {
    /// #     let mut req = Request::new(String::new());
    /// #     meta::set(&mut req, RequestMeta::new("kimi", 10, 10));
    /// #     req
    /// # };
    /// # let inner = tower::service_fn(|_: Request<String>| async { Ok::<_, Infallible>(Response::new(String::from("ok"))) });
    /// let (layer, handle) = ConcurrencyLayer::pair(ConcurrencyConfig::new()).unwrap();
    /// drop(layer.layer(inner).oneshot(request()).await.unwrap());
    /// let all = handle.all_stats();
    /// assert_eq!(all.len(), 1);
    /// assert_eq!((&all[0].0, all[0].1.in_flight), (&Scope::new("kimi"), 0));
    /// # }
    /// ```
    pub fn all_stats(&self) -> Vec<(Scope, ScopeStats)> {
        read(&self.shared.scopes)
            .iter()
            .map(|(s, l)| (s.clone(), l.stats()))
            .collect()
    }
}
