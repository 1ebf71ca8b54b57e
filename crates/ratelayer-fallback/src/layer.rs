//! [`FallbackBuilder`], [`FallbackLayer`] and the shared chain state.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use ratelayer_core::{BoxError, Classifier, ConfigError, DefaultClassifier, LimitState};
use tokio::time::Instant;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::{Breaker, BreakerConfig, CircuitState};
use crate::provider::{Provider, ProviderSpec};
use crate::service::Fallback;
use crate::stats::FallbackStats;
use crate::wait::{EngineWait, SharedEstimator, WaitEstimator};

pub(crate) type BoxSvc<B, ResB> = BoxCloneSyncService<Request<B>, Response<ResB>, BoxError>;

/// A provider's spec and, unless it is a layer's primary slot, its service.
type Entry<B, ResB> = (ProviderSpec<B>, Option<BoxSvc<B, ResB>>);

/// The shared chain, and the services in chain order (`None`: the layer's primary slot).
type Built<B, ResB> = (Arc<Chain<B>>, Vec<Option<BoxSvc<B, ResB>>>);

/// What to do with a fatal failure (such as bad credentials or a bad request).
///
/// ```
/// use ratelayer_fallback::OnFatal;
/// assert_eq!(OnFatal::default(), OnFatal::Fail);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFatal {
    /// Return it to the caller at once: the response as is, or the error.
    #[default]
    Fail,
    /// Try the next provider.
    FallBack,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) wait_budget: Duration,
    pub(crate) on_fatal: OnFatal,
    pub(crate) rate_limit_retries: u32,
    pub(crate) quota_skip: Duration,
    pub(crate) max_error_body: usize,
}

/// The state every clone of a chain shares: created once when the chain is built.
pub(crate) struct Chain<B> {
    pub(crate) specs: Vec<ProviderSpec<B>>,
    pub(crate) breakers: Vec<Arc<Breaker>>,
    pub(crate) quota_until: Vec<Mutex<Option<Instant>>>,
    pub(crate) policy: Policy,
    pub(crate) classifier: Arc<dyn Classifier>,
    pub(crate) estimator: SharedEstimator,
    pub(crate) stats: FallbackStats,
}

impl<B> fmt::Debug for Chain<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("providers", &self.specs)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<B> Chain<B> {
    pub(crate) fn circuit(&self, provider: &str) -> Option<CircuitState> {
        let i = self.specs.iter().position(|s| &*s.name == provider)?;
        Some(self.breakers[i].state())
    }
}

/// Configures a chain of providers; builds a [`Fallback`] service (every provider given)
/// or a [`FallbackLayer`] (the wrapped service is the primary).
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use http::{Request, Response};
/// use ratelayer_core::{LimitState, ReplayBody};
/// use ratelayer_fallback::{Fallback, OnFatal, ProviderSpec};
///
/// let ok = || tower::service_fn(|_req: Request<ReplayBody>| async {
///     Ok::<_, Infallible>(Response::new(ReplayBody::empty()))
/// });
/// let fallback = Fallback::builder()
///     .provider(ProviderSpec::new("openai").context_window(128_000).service(ok()))
///     .provider(ProviderSpec::new("kimi").model("kimi-k2").context_window(256_000).service(ok()))
///     .limit_state(LimitState::new())
///     .wait_budget(Duration::from_secs(90))
///     .on_fatal(OnFatal::Fail)
///     .build()
///     .unwrap();
/// assert_eq!(fallback.stats().snapshot().providers.len(), 2);
/// ```
pub struct FallbackBuilder<B, ResB> {
    providers: Vec<Provider<B, ResB>>,
    policy: Policy,
    breaker: BreakerConfig,
    classifier: Arc<dyn Classifier>,
    estimator: SharedEstimator,
}

impl<B, ResB> fmt::Debug for FallbackBuilder<B, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackBuilder")
            .field("providers", &self.providers)
            .field("policy", &self.policy)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<B, ResB> Default for FallbackBuilder<B, ResB> {
    fn default() -> Self {
        FallbackBuilder {
            providers: Vec::new(),
            policy: Policy {
                wait_budget: Duration::from_secs(120),
                on_fatal: OnFatal::Fail,
                rate_limit_retries: 1,
                quota_skip: Duration::from_secs(600),
                max_error_body: 64 * 1024,
            },
            breaker: BreakerConfig::default(),
            classifier: Arc::new(DefaultClassifier::new()),
            estimator: Arc::new(|_: &str, _: &ratelayer_core::RequestMeta| Ok(Duration::ZERO)),
        }
    }
}

impl<B: 'static, ResB: 'static> FallbackBuilder<B, ResB> {
    /// An empty chain with the defaults: a wait budget of 2 minutes, fatal failures
    /// returned, one wait-out of a rate-limited response per provider, a quota skip of
    /// 10 minutes, the default breaker and classifier, and no wait estimate (set
    /// [`limit_state`](Self::limit_state)).
    ///
    /// ```
    /// use ratelayer_fallback::FallbackBuilder;
    /// let b = FallbackBuilder::<String, String>::new();
    /// let defaults = "wait_budget: 120s, on_fatal: Fail, rate_limit_retries: 1, quota_skip: 600s";
    /// assert!(format!("{b:?}").contains(defaults));
    /// // No provider yet: building fails.
    /// assert_eq!(b.build().unwrap_err().setting, "fallback.providers");
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider (tried in priority order, then in the order added).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// let f = FallbackBuilder::new()
    ///     .provider(Provider::new("openai", reply(500)))
    ///     .provider(Provider::new("kimi", reply(200)))
    ///     .build()
    ///     .unwrap();
    /// let resp = f.clone().oneshot(req()).await.unwrap();
    /// // openai failed twice (the request and its retry), then kimi answered.
    /// assert_eq!(resp.status(), 200);
    /// assert_eq!(f.stats().snapshot().provider("kimi").unwrap().successes, 1);
    /// # }
    /// ```
    pub fn provider(mut self, provider: Provider<B, ResB>) -> Self {
        self.providers.push(provider);
        self
    }

    /// The longest a request may wait for a provider (its cooldown, token budget or
    /// reservoir, or a rate-limited response's delay) before the fallback tries the next
    /// one. Default 2 minutes; a request's [`WaitBudget`](crate::WaitBudget) and
    /// [`Deadline`](crate::Deadline) override it.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// # let openai_busy_for_a_minute = |p: &str, _: &RequestMeta| -> Result<Duration, NeverFits> {
    /// #     Ok(if p == "openai" { Duration::from_secs(60) } else { Duration::ZERO })
    /// # };
    /// let f = Fallback::builder()
    ///     .provider(Provider::new("openai", reply(200)))
    ///     .provider(Provider::new("kimi", reply(200)))
    ///     .wait_estimator(openai_busy_for_a_minute)
    ///     .wait_budget(Duration::from_secs(30))
    ///     .build()
    ///     .unwrap();
    /// f.clone().oneshot(req()).await.unwrap();
    /// let stats = f.stats().snapshot();
    /// assert_eq!((stats.served_by_fallback, stats.fallbacks[&FallbackReason::WaitTooLong]), (1, 1));
    /// # }
    /// ```
    pub fn wait_budget(mut self, budget: Duration) -> Self {
        self.policy.wait_budget = budget;
        self
    }

    /// What to do with fatal failures (default [`OnFatal::Fail`]).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// let f = Fallback::builder()
    ///     .provider(Provider::new("openai", reply(401))) // a bad key
    ///     .provider(Provider::new("kimi", reply(200)))
    ///     .on_fatal(OnFatal::FallBack)
    ///     .build()
    ///     .unwrap();
    /// // With the default (`OnFatal::Fail`), the 401 would be returned.
    /// assert_eq!(f.clone().oneshot(req()).await.unwrap().status(), 200);
    /// assert_eq!(f.stats().snapshot().fallbacks[&FallbackReason::Fatal], 1);
    /// # }
    /// ```
    pub fn on_fatal(mut self, on_fatal: OnFatal) -> Self {
        self.policy.on_fatal = on_fatal;
        self
    }

    /// How many times the fallback itself waits out a rate-limited response (its
    /// `Retry-After`, or the provider's wait estimate) on the same provider when the wait
    /// fits the budget, before falling back. Default 1. Set 0 when every provider's stack
    /// has its own retry layer (its 429s then mean "still limited after its retries").
    /// A 429 with no delay (neither in the response nor from the wait estimate) falls
    /// back at once: retrying now would meet the same limit.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// # let limited = tower::service_fn(|_r: Request<String>| async {
    /// #     Ok::<_, Infallible>(Response::builder().status(429).header("retry-after", "1").body(String::new()).unwrap())
    /// # });
    /// let f = Fallback::builder()
    ///     .provider(Provider::new("openai", limited)) // 429, retry-after: 1
    ///     .provider(Provider::new("kimi", reply(200)))
    ///     .rate_limit_retries(0)
    ///     .build()
    ///     .unwrap();
    /// f.clone().oneshot(req()).await.unwrap();
    /// // Not waited out (the default would retry openai once after 1 s): kimi at once.
    /// assert_eq!(f.stats().snapshot().provider("openai").unwrap().requests, 1);
    /// assert_eq!(f.stats().snapshot().provider("kimi").unwrap().successes, 1);
    /// # }
    /// ```
    pub fn rate_limit_retries(mut self, n: u32) -> Self {
        self.policy.rate_limit_retries = n;
        self
    }

    /// How long a provider whose quota is exhausted is skipped when the response did not
    /// say when the quota resets. Default 10 minutes.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// let f = Fallback::builder()
    ///     .provider(Provider::new("openai", answer(429, r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#)))
    ///     .provider(Provider::new("kimi", reply(200)))
    ///     .quota_skip(Duration::from_secs(3600))
    ///     .build()
    ///     .unwrap();
    /// # let openai_requests = || f.stats().snapshot().provider("openai").unwrap().requests;
    /// f.clone().oneshot(req()).await.unwrap(); // openai: quota exhausted; kimi answers
    /// f.clone().oneshot(req()).await.unwrap(); // openai skipped
    /// assert_eq!(openai_requests(), 1);
    /// tokio::time::advance(Duration::from_secs(3600)).await;
    /// f.clone().oneshot(req()).await.unwrap(); // openai tried again
    /// assert_eq!(openai_requests(), 2);
    /// # }
    /// ```
    pub fn quota_skip(mut self, skip: Duration) -> Self {
        self.policy.quota_skip = skip;
        self
    }

    /// At most this many bytes of an error response's body are read to classify it
    /// (default 64 KiB); the rest stays in the body.
    ///
    /// ```
    /// use ratelayer_fallback::{FallbackBuilder, ProviderSpec};
    /// # let ok = tower::service_fn(|_r: http::Request<String>| async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) });
    /// let b = || FallbackBuilder::<String, String>::new().provider(ProviderSpec::new("openai").service(ok.clone()));
    /// assert!(b().max_error_body(16 * 1024).build().is_ok());
    /// // Error bodies must be read to classify them: 0 is refused.
    /// let err = b().max_error_body(0).build().unwrap_err();
    /// assert_eq!(err.setting, "fallback.max_error_body");
    /// ```
    pub fn max_error_body(mut self, bytes: usize) -> Self {
        self.policy.max_error_body = bytes;
        self
    }

    /// The circuit breaker of every provider.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// let f = Fallback::builder()
    ///     .provider(Provider::new("openai", reply(500)))
    ///     .provider(Provider::new("kimi", reply(200)))
    ///     .breaker(BreakerConfig::default().consecutive_failures(1))
    ///     .build()
    ///     .unwrap();
    /// f.clone().oneshot(req()).await.unwrap(); // openai fails once: its circuit opens
    /// assert!(matches!(f.circuit("openai"), Some(CircuitState::Open { .. })));
    /// f.clone().oneshot(req()).await.unwrap(); // skipped without a call
    /// assert_eq!(f.stats().snapshot().provider("openai").unwrap().requests, 1);
    /// # }
    /// ```
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// The classifier of responses and errors (default
    /// [`DefaultClassifier`]).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// # use ratelayer_core::{Classification, Classifier, DefaultClassifier, RateLimitSnapshot};
    /// # use http::{HeaderMap, StatusCode};
    /// struct Teapot;
    /// impl Classifier for Teapot {
    ///     fn classify_response(&self, status: StatusCode, h: &HeaderMap, body: Option<&[u8]>,
    ///     s: &RateLimitSnapshot) -> Classification {
    ///         if status == StatusCode::IM_A_TEAPOT { return Classification::Transient { retry_after: None } }
    ///         DefaultClassifier::new().classify_response(status, h, body, s)
    ///     }
    /// #   fn classify_error(&self, e: &(dyn std::error::Error + 'static)) -> Classification { DefaultClassifier::new().classify_error(e) }
    /// }
    /// # let f = Fallback::builder().provider(Provider::new("gateway", reply(418))).provider(Provider::new("kimi", reply(200)));
    /// let f = f.classifier(Teapot).build().unwrap();
    /// // The gateway's 418 means "upstream down": unexpected, not fatal, so kimi answers.
    /// assert_eq!(f.clone().oneshot(req()).await.unwrap().status(), 200);
    /// assert_eq!(f.stats().snapshot().fallbacks[&FallbackReason::Unexpected], 1);
    /// # }
    /// ```
    pub fn classifier(mut self, classifier: impl Classifier) -> Self {
        self.classifier = Arc::new(classifier);
        self
    }

    /// How the wait of a provider is estimated before choosing it.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// let openai_never_fits = |p: &str, m: &RequestMeta| -> Result<Duration, NeverFits> {
    ///     let too_big = NeverFits { scope: m.scope(), what: "tokens per minute", requested: m.total_tokens(), capacity: 0 };
    ///     if p == "openai" { Err(too_big) } else { Ok(Duration::ZERO) }
    /// };
    /// let f = Fallback::builder()
    ///     .provider(Provider::new("openai", reply(200)))
    ///     .provider(Provider::new("kimi", reply(200)))
    ///     .wait_estimator(openai_never_fits)
    ///     .build()
    ///     .unwrap();
    /// f.clone().oneshot(req()).await.unwrap();
    /// assert_eq!(f.stats().snapshot().fallbacks[&FallbackReason::NeverFits], 1);
    /// # }
    /// ```
    pub fn wait_estimator(mut self, estimator: impl WaitEstimator) -> Self {
        self.estimator = Arc::new(estimator);
        self
    }

    /// Estimates waits from the limit state the providers' stacks share
    /// ([`EngineWait`]).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// let state = LimitState::new();
    /// let f = Fallback::builder()
    ///     .provider(Provider::new("openai", reply(200)))
    ///     .provider(Provider::new("kimi", reply(200)))
    ///     .limit_state(state.clone())
    ///     .build()
    ///     .unwrap();
    /// // After a 429 asking for 5 minutes, openai's cooldown is longer than the 2 min budget.
    /// let five_min = tokio::time::Instant::now() + Duration::from_secs(300);
    /// state.set_cooldown(&ratelayer_core::Scope::new("openai"), five_min);
    /// f.clone().oneshot(req()).await.unwrap();
    /// assert_eq!(f.stats().snapshot().fallbacks[&FallbackReason::WaitTooLong], 1);
    /// # }
    /// ```
    pub fn limit_state(self, state: LimitState) -> Self {
        self.wait_estimator(EngineWait::new(state))
    }

    fn validate(&self, specs: &[&ProviderSpec<B>]) -> Result<(), ConfigError> {
        if specs.is_empty() {
            return Err(ConfigError::new(
                "fallback.providers",
                "the chain is empty; add at least one provider",
            ));
        }
        let mut names = HashSet::new();
        for s in specs {
            if s.name.is_empty() {
                return Err(ConfigError::new(
                    "fallback.providers.name",
                    "a provider has an empty name",
                ));
            }
            if !names.insert(&*s.name) {
                return Err(ConfigError::new(
                    format!("fallback.providers.{}", s.name),
                    "two providers have this name; give each a unique name",
                ));
            }
            if s.context_window == Some(0) {
                return Err(ConfigError::new(
                    format!("fallback.providers.{}.context_window", s.name),
                    "must be positive",
                ));
            }
            if let Some(e) = s.errors.first() {
                return Err(ConfigError::new(
                    format!("fallback.providers.{}", s.name),
                    format!("invalid rewrite: {e}"),
                ));
            }
        }
        if self.policy.quota_skip.is_zero() {
            return Err(ConfigError::new(
                "fallback.quota_skip",
                "must be a positive duration",
            ));
        }
        if self.policy.max_error_body == 0 {
            return Err(ConfigError::new(
                "fallback.max_error_body",
                "must be positive: error bodies are read to classify them",
            ));
        }
        self.breaker.validate()
    }

    /// Sorts by priority (stable) and builds the shared state.
    fn into_chain(self, primary: Option<ProviderSpec<B>>) -> Result<Built<B, ResB>, ConfigError> {
        let mut all: Vec<Entry<B, ResB>> = primary
            .into_iter()
            .map(|s| (s, None))
            .chain(
                self.providers
                    .iter()
                    .map(|p| (p.spec.clone(), Some(p.service.clone()))),
            )
            .collect();
        let specs: Vec<&ProviderSpec<B>> = all.iter().map(|(s, _)| s).collect();
        self.validate(&specs)?;
        all.sort_by_key(|(s, _)| s.priority);
        let (specs, services): (Vec<_>, Vec<_>) = all.into_iter().unzip();
        let stats = FallbackStats::new(specs.iter().map(|s| s.name.to_string()));
        let chain = Chain {
            breakers: specs
                .iter()
                .map(|s| Arc::new(Breaker::new(s.name.clone(), self.breaker)))
                .collect(),
            quota_until: specs.iter().map(|_| Mutex::new(None)).collect(),
            specs,
            policy: self.policy,
            classifier: self.classifier,
            estimator: self.estimator,
            stats,
        };
        Ok((Arc::new(chain), services))
    }

    /// Validates the configuration and builds the service.
    ///
    /// ```
    /// use ratelayer_fallback::{Fallback, FallbackBuilder};
    /// let err = FallbackBuilder::<String, String>::new().build().unwrap_err();
    /// assert!(err.to_string().contains("empty"));
    /// ```
    pub fn build(self) -> Result<Fallback<B, ResB>, ConfigError> {
        let (chain, services) = self.into_chain(None)?;
        let services: Vec<BoxSvc<B, ResB>> = services.into_iter().flatten().collect();
        Ok(Fallback::from_parts(chain, services.into()))
    }

    /// Validates the configuration and builds a layer whose wrapped service is the
    /// provider `primary` (placed in the chain by its priority).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// use tower::Layer;
    /// let layer = FallbackBuilder::new()
    ///     .provider(Provider::new("anthropic", reply(200)).priority(1))
    ///     .layer(ProviderSpec::new("openai"))
    ///     .unwrap();
    /// let fallback = layer.layer(reply(200)); // the wrapped service is "openai"
    /// fallback.clone().oneshot(req()).await.unwrap();
    /// let stats = fallback.stats().snapshot();
    /// assert_eq!((stats.providers[0].name.as_str(), stats.providers[0].successes), ("openai", 1));
    /// # }
    /// ```
    pub fn layer(self, primary: ProviderSpec<B>) -> Result<FallbackLayer<B, ResB>, ConfigError> {
        let name = primary.name.clone();
        let (chain, services) = self.into_chain(Some(primary))?;
        let slot = services.iter().position(Option::is_none).unwrap_or(0);
        Ok(FallbackLayer {
            chain,
            services,
            slot,
            primary: name,
        })
    }
}

impl<B: 'static, ResB> Provider<B, ResB> {
    /// Lower priorities are tried first (see [`ProviderSpec::priority`]).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// let f = Fallback::builder()
    ///     .provider(Provider::new("groq", reply(200)).priority(5))
    ///     .provider(Provider::new("openai", reply(200)))
    ///     .build()
    ///     .unwrap();
    /// f.clone().oneshot(req()).await.unwrap();
    /// // Added first, tried second: openai (priority 0) served the request.
    /// let names: Vec<_> = f.stats().snapshot().providers.into_iter().map(|p| (p.name, p.successes)).collect();
    /// assert_eq!(names, [("openai".to_string(), 1), ("groq".to_string(), 0)]);
    /// # }
    /// ```
    pub fn priority(mut self, priority: i32) -> Self {
        self.spec.priority = priority;
        self
    }

    /// The context window in tokens (see [`ProviderSpec::context_window`]).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// # let chat = |max_tokens: u32| Request::new(format!(r#"{{"max_tokens":{max_tokens},"messages":[{{"role":"user","content":"Hi"}}]}}"#));
    /// # let overflow = answer(400, r#"{"error":{"code":"context_length_exceeded"}}"#);
    /// let f = Fallback::builder()
    ///     .provider(Provider::new("small", overflow)) // answers 400 context_length_exceeded
    ///     .provider(Provider::new("groq", reply(200)).context_window(8_192))
    ///     .provider(Provider::new("large", reply(200)).context_window(128_000))
    ///     .build()
    ///     .unwrap();
    /// f.clone().oneshot(chat(10_000)).await.unwrap();
    /// // groq's window is too small for this request: straight to large.
    /// let stats = f.stats().snapshot();
    /// assert_eq!((stats.provider("groq").unwrap().requests, stats.provider("large").unwrap().successes), (0, 1));
    /// # }
    /// ```
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.spec.context_window = Some(tokens);
        self
    }
}

/// A [`Layer`] that makes the wrapped service the primary provider of a chain. Build it
/// with [`FallbackBuilder::layer`]. Every service it makes shares the chain's circuit
/// breakers, quota skips and [stats](Self::stats).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use ratelayer_fallback::{FallbackBuilder, FallbackLayer, Provider, ProviderSpec};
/// let backup = tower::service_fn(|_r: Request<String>| async {
///     Ok::<_, Infallible>(Response::new(String::new()))
/// });
/// let layer: FallbackLayer<String, String> = FallbackBuilder::new()
///     .provider(Provider::new("backup", backup).priority(1))
///     .layer(ProviderSpec::new("primary"))
///     .unwrap();
/// assert_eq!(layer.stats().snapshot().providers[0].name, "primary");
/// ```
pub struct FallbackLayer<B, ResB> {
    chain: Arc<Chain<B>>,
    services: Vec<Option<BoxSvc<B, ResB>>>,
    slot: usize,
    primary: Arc<str>,
}

impl<B, ResB> Clone for FallbackLayer<B, ResB> {
    fn clone(&self) -> Self {
        FallbackLayer {
            chain: self.chain.clone(),
            services: self.services.clone(),
            slot: self.slot,
            primary: self.primary.clone(),
        }
    }
}

impl<B, ResB> fmt::Debug for FallbackLayer<B, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("primary", &self.primary)
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

impl<B, ResB> FallbackLayer<B, ResB> {
    /// The stats handle shared by every service of this layer.
    ///
    /// See [`FallbackBuilder::layer`] for an example.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use http::{Request, Response};
    /// use ratelayer_fallback::{FallbackBuilder, FallbackLayer, ProviderSpec};
    /// use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let primary = tower::service_fn(|_r: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    /// let layer: FallbackLayer<String, String> = FallbackBuilder::new().layer(ProviderSpec::new("primary")).unwrap();
    /// let stats = layer.stats();
    /// layer.layer(primary).oneshot(Request::new(String::new())).await.unwrap();
    /// assert_eq!(stats.snapshot().provider("primary").unwrap().successes, 1);
    /// # }
    /// ```
    pub fn stats(&self) -> FallbackStats {
        self.chain.stats.clone()
    }

    /// The circuit state of the provider named `provider`.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use http::{Request, Response};
    /// use ratelayer_fallback::{CircuitState, FallbackBuilder, ProviderSpec};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = FallbackBuilder::<String, String>::new().layer(ProviderSpec::new("openai")).unwrap();
    /// assert_eq!(layer.circuit("openai"), Some(CircuitState::Closed));
    /// # }
    /// ```
    pub fn circuit(&self, provider: &str) -> Option<CircuitState> {
        self.chain.circuit(provider)
    }
}

impl<S, B, ResB> Layer<S> for FallbackLayer<B, ResB>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: 'static,
    ResB: 'static,
{
    type Service = Fallback<B, ResB>;

    fn layer(&self, inner: S) -> Fallback<B, ResB> {
        let mut primary = Some(BoxCloneSyncService::new(inner.map_err(Into::into)));
        let services: Vec<BoxSvc<B, ResB>> = self
            .services
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Some(s) => Some(s.clone()),
                None if i == self.slot => primary.take(),
                None => None,
            })
            .collect();
        Fallback::from_parts(self.chain.clone(), services.into())
    }
}
