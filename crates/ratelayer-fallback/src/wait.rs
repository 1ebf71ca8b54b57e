//! Wait estimates and the per-request extensions that steer the fallback.

use std::sync::Arc;
use std::time::Duration;

use ratelayer_core::engine::BucketKey;
use ratelayer_core::{LimitState, NeverFits, RequestMeta};

/// How long a request would have to wait now before a provider admits it, asked before
/// the fallback chooses a provider. It must have no side effects.
///
/// `meta` is the request's metadata as rewritten for the provider (its scope is the
/// provider's scope). `Err(NeverFits)` says the request can never fit the provider's
/// budgets: the provider is skipped.
///
/// [`EngineWait`] asks the shared [`LimitState`]; a closure works too:
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::{NeverFits, RequestMeta};
/// use ratelayer_fallback::WaitEstimator;
///
/// let fixed = |_provider: &str, _meta: &RequestMeta| -> Result<Duration, NeverFits> {
///     Ok(Duration::from_secs(2))
/// };
/// let m = RequestMeta::new("openai", 10, 10);
/// assert_eq!(fixed.wait("openai", &m).unwrap(), Duration::from_secs(2));
/// ```
pub trait WaitEstimator: Send + Sync + 'static {
    /// The wait for `provider` (the configured provider name) and this request.
    fn wait(&self, provider: &str, meta: &RequestMeta) -> Result<Duration, NeverFits>;
}

impl<F> WaitEstimator for F
where
    F: Fn(&str, &RequestMeta) -> Result<Duration, NeverFits> + Send + Sync + 'static,
{
    fn wait(&self, provider: &str, meta: &RequestMeta) -> Result<Duration, NeverFits> {
        self(provider, meta)
    }
}

/// Two estimators together: the longer of their waits (and `NeverFits` if either says
/// so). For example the engine's view and a TPM layer's, which also sees the requests
/// queued in that layer:
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::{LimitState, NeverFits, RequestMeta};
/// use ratelayer_fallback::{EngineWait, WaitEstimator};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let queue = |_: &str, _: &RequestMeta| -> Result<Duration, NeverFits> { Ok(Duration::from_secs(3)) };
/// let both = (EngineWait::new(LimitState::new()), queue);
/// let m = RequestMeta::new("openai", 10, 10);
/// assert_eq!(both.wait("openai", &m).unwrap(), Duration::from_secs(3));
/// # }
/// ```
impl<A: WaitEstimator, C: WaitEstimator> WaitEstimator for (A, C) {
    fn wait(&self, provider: &str, meta: &RequestMeta) -> Result<Duration, NeverFits> {
        Ok(self
            .0
            .wait(provider, meta)?
            .max(self.1.wait(provider, meta)?))
    }
}

/// The default estimator: asks the limiter engine of the shared [`LimitState`] how long a
/// reservation of this request would wait now on its scope (cooldowns after 429s, learned
/// and configured token and request budgets), without side effects.
///
/// The costs asked are one request and the request's token estimate in every standard
/// bucket ([`BucketKey::REQUESTS_PER_MINUTE`], `TOKENS_PER_MINUTE`, the input and output
/// token buckets, and the per-day ones); buckets that no layer configured do not limit.
/// A store that cannot answer at once (a networked backend) is read as no wait: the
/// provider's stack then waits or declines itself.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::{LimitState, RequestMeta};
/// use ratelayer_fallback::{EngineWait, WaitEstimator};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let state = LimitState::new();
/// let meta = RequestMeta::new("openai", 100, 100).with_model("gpt-4o");
/// state.set_cooldown(&meta.scope(), tokio::time::Instant::now() + Duration::from_secs(7));
/// let w = EngineWait::new(state).wait("openai", &meta).unwrap();
/// assert_eq!(w, Duration::from_secs(7));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EngineWait {
    state: LimitState,
}

impl EngineWait {
    /// An estimator reading `state`.
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
    /// let wait = EngineWait::new(state.clone());
    /// let meta = RequestMeta::new("openai", 100, 100);
    /// assert_eq!(wait.wait("openai", &meta).unwrap(), Duration::ZERO);
    /// state.set_cooldown(&meta.scope(), tokio::time::Instant::now() + Duration::from_secs(3));
    /// assert_eq!(wait.wait("openai", &meta).unwrap(), Duration::from_secs(3));
    /// # }
    /// ```
    pub fn new(state: LimitState) -> Self {
        EngineWait { state }
    }
}

impl WaitEstimator for EngineWait {
    fn wait(&self, _provider: &str, meta: &RequestMeta) -> Result<Duration, NeverFits> {
        let scope = meta.scope();
        let total = meta.total_tokens();
        let costs = [
            (BucketKey::REQUESTS_PER_MINUTE, 1),
            (BucketKey::REQUESTS_PER_DAY, 1),
            (BucketKey::TOKENS_PER_MINUTE, total),
            (BucketKey::TOKENS_PER_DAY, total),
            (BucketKey::INPUT_TOKENS_PER_MINUTE, meta.input_tokens),
            (BucketKey::OUTPUT_TOKENS_PER_MINUTE, meta.output_tokens),
        ];
        let engine = self
            .state
            .handle(&scope)
            .wait_time(&costs)
            .now_or_never()
            .unwrap_or(Ok(Duration::ZERO))?;
        Ok(engine.max(self.state.cooldown_remaining(&scope)))
    }
}

pub(crate) type SharedEstimator = Arc<dyn WaitEstimator>;

/// A per-request wait budget: the longest this request may wait for a provider, instead
/// of the layer's [`wait_budget`](crate::FallbackBuilder::wait_budget).
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
///     .build()
///     .unwrap();
/// f.clone().oneshot(req()).await.unwrap(); // 60 s fits the layer's 2 min budget: openai
/// let mut urgent = req();
/// urgent.extensions_mut().insert(WaitBudget(Duration::from_secs(5)));
/// f.clone().oneshot(urgent).await.unwrap(); // not this request's 5 s: kimi
/// assert_eq!(f.stats().snapshot().provider("kimi").unwrap().successes, 1);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitBudget(pub Duration);

pub use ratelayer_core::Deadline;

/// Sends the request to this provider (by its configured name) only, bypassing the
/// chain, its circuit breakers and wait budgets: the provider's stack waits as long as
/// it must. Unexpected failures are still retried once.
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
///     .provider(Provider::new("openai", reply(200)))
///     .provider(Provider::new("anthropic", reply(200)))
///     .build()
///     .unwrap();
/// let mut req = req();
/// req.extensions_mut().insert(PreferredProvider::new("anthropic"));
/// f.clone().oneshot(req).await.unwrap();
/// let s = f.stats().snapshot();
/// assert_eq!((s.provider("openai").unwrap().requests, s.provider("anthropic").unwrap().successes), (0, 1));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferredProvider(pub Arc<str>);

impl PreferredProvider {
    /// The provider named `name`.
    ///
    /// ```
    /// use ratelayer_fallback::PreferredProvider;
    /// let p = PreferredProvider::new("openai");
    /// assert_eq!(&*p.0, "openai");
    /// assert_eq!(p, PreferredProvider(std::sync::Arc::from("openai")));
    /// ```
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        PreferredProvider(name.into())
    }
}
