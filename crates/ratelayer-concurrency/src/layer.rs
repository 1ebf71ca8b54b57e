//! [`ConcurrencyLayer`].

use std::sync::Arc;

use ratelayer_core::{ConfigError, LimitState};
use tower_layer::Layer;

use crate::config::ConcurrencyConfig;
use crate::handle::{ConcurrencyHandle, Shared};
use crate::service::Concurrency;

/// Applies per-scope concurrency limits, reservoirs and spacing to a service. See the
/// [crate docs](crate).
///
/// All services built by one layer (and their clones) share the same limiters: they are
/// created when the layer is built, not per [`layer`](Layer::layer) call.
///
/// ```
/// # use std::time::Duration;
/// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
/// # use ratelayer_core::{LimitState, Scope};
/// # use tower::{Layer, ServiceExt};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
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
/// let config = ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1));
/// let layer = ConcurrencyLayer::new(config).unwrap().with_state(LimitState::new());
/// let handle = layer.handle();
/// let (a, b) = (layer.layer(inner.clone()), layer.layer(inner)); // one limiter for both
/// let first = a.oneshot(request()).await.unwrap(); // in flight until its body is dropped
/// assert_eq!(handle.stats(&Scope::new("kimi")).unwrap().in_flight, 1);
/// let mut second = Box::pin(b.oneshot(request()));
/// assert!(tokio::time::timeout(Duration::from_secs(5), &mut second).await.is_err()); // queued
/// drop(first);
/// assert_eq!(second.await.unwrap().status(), 200); // started once the first finished
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrencyLayer {
    shared: Arc<Shared>,
    state: Option<LimitState>,
}

impl ConcurrencyLayer {
    /// A layer with `config`, validated now.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
    /// let layer = ConcurrencyLayer::new(ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1))).unwrap();
    /// assert_eq!(layer.handle().config().limits_for("kimi", None).max_concurrent, Some(1));
    /// let err = ConcurrencyLayer::new(ConcurrencyConfig::new().provider("", Limits::new())).unwrap_err();
    /// assert_eq!(err.setting, "providers");
    /// ```
    pub fn new(config: ConcurrencyConfig) -> Result<Self, ConfigError> {
        Ok(ConcurrencyLayer {
            shared: Arc::new(Shared::new(config)?),
            state: None,
        })
    }

    /// A layer and the handle to its limits.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
    /// let (layer, handle) = ConcurrencyLayer::pair(ConcurrencyConfig::new()).unwrap();
    /// handle.set_limits("kimi", Limits::new().max_concurrent(2)).unwrap(); // at run time
    /// let config = layer.handle().config();
    /// assert_eq!(config.limits_for("kimi", None).max_concurrent, Some(2)); // the layer's own
    /// ```
    pub fn pair(config: ConcurrencyConfig) -> Result<(Self, ConcurrencyHandle), ConfigError> {
        let layer = Self::new(config)?;
        let handle = layer.handle();
        Ok((layer, handle))
    }

    /// Reads cooldowns and the provider's stated request limits from `state` (shared with
    /// the tier detector): no request starts while its scope cools down, and a stated
    /// request limit stricter than the configured reservoir is enforced too.
    ///
    /// The engine state of the layer's scopes (leases, request buckets) lives in `state`
    /// too, so limits are shared with whatever shares its store. Call it before the layer
    /// serves requests.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer};
    /// use ratelayer_core::{LimitState, Scope};
    /// use tokio::time::Instant;
    /// use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
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
    /// let state = LimitState::new();
    /// let svc = ConcurrencyLayer::new(ConcurrencyConfig::new()).unwrap().with_state(state.clone()).layer(inner);
    /// state.set_cooldown(&Scope::new("kimi"), Instant::now() + Duration::from_secs(10)); // after a 429
    /// let start = Instant::now();
    /// svc.oneshot(request()).await.unwrap();
    /// assert_eq!(start.elapsed(), Duration::from_secs(10)); // no request starts while it cools down
    /// # }
    /// ```
    pub fn with_state(mut self, state: LimitState) -> Self {
        self.shared.set_state(state.clone());
        self.state = Some(state);
        self
    }

    /// A handle to change the limits at run time and look at each scope.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer};
    /// let layer = ConcurrencyLayer::new(ConcurrencyConfig::new()).unwrap();
    /// assert!(layer.handle().all_stats().is_empty());
    /// ```
    pub fn handle(&self) -> ConcurrencyHandle {
        ConcurrencyHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S> Layer<S> for ConcurrencyLayer {
    type Service = Concurrency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Concurrency::from_parts(inner, self.shared.clone(), self.state.clone())
    }
}
