//! [`TpmLimitLayer`]: builds [`TpmLimit`] services that share one token budget.

use std::sync::Arc;
use std::time::Duration;

use ratelayer_core::error::ConfigError;
use ratelayer_core::meta::{DefaultEstimator, TokenEstimator};
use ratelayer_core::{LimitState, NeverFits, RequestMeta};
use tower_layer::Layer;

use crate::calibration::Calibration;
use crate::charge::{Estimate, Shared};
use crate::config::TpmConfig;
use crate::service::TpmLimit;

/// Tokens-per-minute admission: see the [crate docs](crate).
///
/// The budgets, the calibration and the limiter state are created when the layer is built
/// and shared (through an `Arc`) by every service it makes and all their clones.
///
/// ```
/// use ratelayer_tpm::{Budget, ModelLimits, TpmConfig, TpmLimitLayer};
///
/// let layer = TpmLimitLayer::new(
///     TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(30_000)).model("gpt-4o")),
/// )
/// .unwrap();
/// assert!(TpmLimitLayer::new(TpmConfig::new().safety_margin(2.0)).is_err());
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct TpmLimitLayer {
    shared: Arc<Shared>,
}

impl TpmLimitLayer {
    /// A layer with its own limiter state and the default estimator. Fails if the
    /// configuration is invalid.
    ///
    /// ```
    /// use ratelayer_tpm::{Budget, ModelLimits, TpmConfig, TpmLimitLayer};
    /// let layer = TpmLimitLayer::new(TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(30_000)))).unwrap();
    /// assert_eq!(layer.config().budgets.len(), 1);
    /// let err = TpmLimitLayer::new(TpmConfig::new().budget(Budget::new("", ModelLimits::tpm(30_000)))).unwrap_err();
    /// assert_eq!(err.setting, "tpm.budgets[0].provider");
    /// ```
    pub fn new(config: TpmConfig) -> Result<Self, ConfigError> {
        Self::build(config, LimitState::new(), Arc::new(DefaultEstimator::new()))
    }

    /// A layer keeping its budgets in `state`, shared with the other layers of the stack
    /// (the tier detector's learned limits and cooldowns then apply here).
    ///
    /// ```
    /// # use std::time::Duration;
    /// use ratelayer_core::{LimitState, RequestMeta};
    /// use ratelayer_tpm::{Budget, ModelLimits, TpmConfig, TpmLimitLayer};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let state = LimitState::new();
    /// let config = TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(30_000)));
    /// let layer = TpmLimitLayer::with_state(config, state.clone()).unwrap();
    /// let meta = RequestMeta::new("openai", 1_000, 100);
    /// assert_eq!(layer.wait_time(&meta).unwrap(), Duration::ZERO);
    /// // A cooldown another layer (the tier detector, on a 429) sets in `state` applies here:
    /// state.set_cooldown(&meta.scope(), tokio::time::Instant::now() + Duration::from_secs(20));
    /// assert_eq!(layer.wait_time(&meta).unwrap(), Duration::from_secs(20));
    /// # }
    /// ```
    pub fn with_state(config: TpmConfig, state: LimitState) -> Result<Self, ConfigError> {
        Self::build(config, state, Arc::new(DefaultEstimator::new()))
    }

    /// A layer with its own state and a chosen token estimator (such as
    /// `TiktokenEstimator` with the `tiktoken` feature).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, ReplayBody};
    /// # use ratelayer_tpm::{Budget, ModelLimits, TpmConfig, TpmLimitLayer};
    /// # use tower::{Layer, ServiceExt, service_fn};
    /// use ratelayer_core::meta::TokenEstimator;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// struct Pessimist; // counts every text as 50 000 tokens
    /// impl TokenEstimator for Pessimist {
    ///     fn count_text(&self, _text: &str, _model: Option<&str>) -> u64 { 50_000 }
    /// }
    /// let config = TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(30_000)));
    /// let layer = TpmLimitLayer::with_estimator(config, LimitState::new(), Pessimist).unwrap();
    /// # let svc = layer.layer(service_fn(|_: Request<ReplayBody>| async { Ok::<_, Infallible>(Response::new(String::new())) }));
    /// let body = ReplayBody::new(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#);
    /// let req = Request::post("https://api.openai.com/v1/chat/completions").body(body).unwrap();
    /// let err = svc.oneshot(req).await.unwrap_err(); // "Hi" counted as 50 000: never fits
    /// assert!(err.downcast_ref::<NeverFits>().unwrap().requested > 50_000);
    /// # }
    /// ```
    pub fn with_estimator(
        config: TpmConfig,
        state: LimitState,
        estimator: impl TokenEstimator,
    ) -> Result<Self, ConfigError> {
        Self::build(config, state, Arc::new(estimator))
    }

    fn build(
        config: TpmConfig,
        state: LimitState,
        estimator: Arc<dyn TokenEstimator>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(TpmLimitLayer {
            shared: Arc::new(Shared::new(config, state, estimator)),
        })
    }

    /// The limiter state holding the budgets.
    ///
    /// ```
    /// # use ratelayer_tpm::{TpmConfig, TpmLimitLayer};
    /// # use std::time::Duration;
    /// # use ratelayer_core::RequestMeta;
    /// # use ratelayer_tpm::{Budget, ModelLimits};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let config = TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(30_000)));
    /// let layer = TpmLimitLayer::new(config).unwrap();
    /// let meta = RequestMeta::new("openai", 1_000, 100);
    /// let until = tokio::time::Instant::now() + Duration::from_secs(5);
    /// layer.state().set_cooldown(&meta.scope(), until);
    /// assert_eq!(layer.wait_time(&meta).unwrap(), Duration::from_secs(5)); // its budgets wait
    /// # }
    /// ```
    pub fn state(&self) -> &LimitState {
        &self.shared.state
    }

    /// The configuration.
    ///
    /// ```
    /// # use ratelayer_tpm::{TpmConfig, TpmLimitLayer};
    /// let layer = TpmLimitLayer::new(TpmConfig::new()).unwrap();
    /// assert_eq!(layer.config().safety_margin, 0.01);
    /// ```
    pub fn config(&self) -> &TpmConfig {
        &self.shared.config
    }

    /// The calibration learned so far.
    ///
    /// ```
    /// # use ratelayer_tpm::{TpmConfig, TpmLimitLayer};
    /// let layer = TpmLimitLayer::new(TpmConfig::new()).unwrap();
    /// assert_eq!(layer.calibration().factor(&ratelayer_core::Scope::new("openai")), 1.0);
    /// ```
    pub fn calibration(&self) -> &Calibration {
        &self.shared.calibration
    }
}

impl TpmLimitLayer {
    /// How long a request with this metadata would wait now for its token budget,
    /// including the requests already queued for it; `Err(NeverFits)` if it can never
    /// fit; zero for a scope without a budget. No side effects: a fallback layer can ask
    /// it before choosing a provider (the engine's own wait query cannot see the requests
    /// queued in this layer, which book only when they are sent).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::RequestMeta;
    /// use ratelayer_tpm::{Budget, ModelLimits, TpmConfig, TpmLimitLayer};
    ///
    /// let layer = TpmLimitLayer::new(
    ///     TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(30_000))),
    /// )
    /// .unwrap();
    /// let small = RequestMeta::new("openai", 1_000, 100).with_model("gpt-4o");
    /// assert_eq!(layer.wait_time(&small).unwrap(), Duration::ZERO);
    /// let huge = RequestMeta::new("openai", 40_000, 666).with_model("gpt-4o");
    /// assert_eq!(layer.wait_time(&huge).unwrap_err().requested, 40_666);
    /// ```
    pub fn wait_time(&self, meta: &RequestMeta) -> Result<Duration, NeverFits> {
        let scope = meta.scope();
        let Some(entry) = self.shared.entry(&scope) else {
            return Ok(Duration::ZERO);
        };
        let estimate = Estimate::of(&self.shared.calibration, &scope, meta);
        let costs = estimate.costs();
        if entry.idle() {
            entry
                .handle
                .wait_time(&costs)
                .now_or_never()
                .unwrap_or(Ok(Duration::ZERO))
        } else {
            entry.queue_wait(&costs)
        }
    }
}

impl<S> Layer<S> for TpmLimitLayer {
    type Service = TpmLimit<S>;

    fn layer(&self, inner: S) -> TpmLimit<S> {
        TpmLimit::from_shared(inner, Arc::clone(&self.shared))
    }
}
