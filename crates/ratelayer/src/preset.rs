//! Presets: the recommended per-provider stack for OpenAI, Anthropic, Azure OpenAI and
//! Moonshot/Kimi, built in the recommended order.
//!
//! ```text
//! SetSensitiveRequestHeaders   authorization, x-api-key, api-key never logged
//!   Target                     base URL, credential header, provider name
//!     BackoffRetry             one logical request -> attempts; sleeps between them
//!       TierDetect             reads every attempt's headers into the shared state
//!         TpmLimit             reserves each attempt's tokens; reconciles after
//!           Concurrency        permit + reservoir around the real exchange only
//!             your client      hyper-util, or any tower::Service<http::Request<B>>
//! ```

use std::fmt;
use std::time::Duration;

use ratelayer_concurrency::{
    Concurrency, ConcurrencyConfig, ConcurrencyHandle, ConcurrencyLayer, Limits, Reservoir,
};
use ratelayer_core::{ConfigError, LimitState};
use ratelayer_retry::{BackoffRetry, BackoffRetryLayer};
use ratelayer_tier::{TierDetect, TierDetectLayer, TierHandle};
use ratelayer_tpm::{Budget, ModelLimits, TpmConfig, TpmLimit, TpmLimitLayer};
use tower_http::sensitive_headers::{SetSensitiveRequestHeaders, SetSensitiveRequestHeadersLayer};
use tower_layer::Layer;

use crate::config::ApiKey;
use crate::limits::ProviderLimits;
use crate::provider::Provider;
use crate::target::{Target, TargetLayer};

/// The longest a request waits on one provider unless [`Preset::max_wait`] says
/// otherwise: 5 minutes.
///
/// ```
/// use std::time::Duration;
/// use ratelayer::DEFAULT_MAX_WAIT;
/// assert_eq!(DEFAULT_MAX_WAIT, Duration::from_secs(5 * 60));
/// ```
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);

/// The retry layer's base delay before a tier is known (the free tier's).
const UNKNOWN_TIER_BASE_DELAY: Duration = Duration::from_secs(20);

/// The service a [`ProviderLayer`] builds around a client `S`.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use ratelayer::{Preset, ProviderService, core::{LimitState, ReplayBody}};
/// use tower::{Layer, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let client = tower::service_fn(|_req: Request<ReplayBody>| async {
///     Ok::<_, Infallible>(Response::new(String::new()))
/// });
/// let layer = Preset::openai().api_key("sk-test").layer(&LimitState::new()).unwrap();
/// let svc: ProviderService<_> = layer.layer(client);
/// let resp = svc.oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap();
/// assert_eq!(resp.status(), 200);
/// # }
/// ```
pub type ProviderService<S> =
    SetSensitiveRequestHeaders<Target<BackoffRetry<TierDetect<TpmLimit<Concurrency<S>>>>>>;

/// The recommended configuration of one provider: where it is, its key, its limits.
/// Build its stack with [`layer`](Self::layer), in the recommended order:
///
/// ```text
/// SetSensitiveRequestHeaders   authorization, x-api-key, api-key never logged
///   Target                     base URL, credential header, provider name
///     BackoffRetry             one logical request -> attempts; sleeps between them
///       TierDetect             reads every attempt's headers into the shared state
///         TpmLimit             reserves each attempt's tokens; reconciles after
///           Concurrency        permit + reservoir around the real exchange only
///             your client      hyper-util, or any tower::Service<http::Request<B>>
/// ```
///
/// ```
/// use ratelayer::{Preset, ProviderLimits};
/// use ratelayer::core::LimitState;
///
/// let preset = Preset::moonshot()
///     .api_key("sk-not-real")
///     .limits(ProviderLimits::default().rpm(4).max_concurrent(1));
/// let layer = preset.layer(&LimitState::new()).unwrap();
/// assert_eq!(layer.name(), "moonshot");
/// ```
#[derive(Clone)]
pub struct Preset {
    name: String,
    provider: Provider,
    base_url: String,
    api_key: Option<ApiKey>,
    limits: ProviderLimits,
    max_wait: Option<Duration>,
    max_retries: Option<u32>,
    model: Option<String>,
    context_window: Option<u64>,
    tier: Option<String>,
}

impl fmt::Debug for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Preset")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("limits", &self.limits)
            .field("max_wait", &self.max_wait)
            .field("max_retries", &self.max_retries)
            .field("model", &self.model)
            .field("context_window", &self.context_window)
            .field("tier", &self.tier)
            .finish()
    }
}

impl Preset {
    /// The preset of `provider`: its default base URL, its documented example limits,
    /// no key yet.
    ///
    /// ```
    /// use ratelayer::{Preset, Provider, core::LimitState};
    /// let preset = Preset::new(Provider::Anthropic);
    /// assert_eq!(preset.provider(), Provider::Anthropic);
    /// let layer = preset.layer(&LimitState::new()).unwrap();
    /// assert_eq!(layer.name(), "anthropic");
    /// // The provider's documented example limits: 10 at once for Anthropic.
    /// let config = layer.concurrency_handle().config();
    /// assert_eq!(config.limits_for("anthropic", None).max_concurrent, Some(10));
    /// ```
    pub fn new(provider: Provider) -> Self {
        Preset {
            name: provider.name().to_owned(),
            provider,
            base_url: provider.default_base_url().to_owned(),
            api_key: None,
            limits: provider.example_limits(),
            max_wait: None,
            max_retries: None,
            model: None,
            context_window: None,
            tier: None,
        }
    }

    /// OpenAI.
    ///
    /// ```
    /// use ratelayer::{Preset, Provider, core::LimitState};
    /// assert_eq!(Preset::openai().provider(), Provider::OpenAi);
    /// assert_eq!(Preset::openai().layer(&LimitState::new()).unwrap().name(), "openai");
    /// ```
    pub fn openai() -> Self {
        Self::new(Provider::OpenAi)
    }

    /// Anthropic.
    ///
    /// ```
    /// use ratelayer::{Preset, Provider, core::LimitState};
    /// assert_eq!(Preset::anthropic().provider(), Provider::Anthropic);
    /// assert_eq!(Preset::anthropic().layer(&LimitState::new()).unwrap().name(), "anthropic");
    /// ```
    pub fn anthropic() -> Self {
        Self::new(Provider::Anthropic)
    }

    /// Azure OpenAI at your resource's endpoint, such as
    /// `https://my-resource.openai.azure.com`.
    ///
    /// ```
    /// use ratelayer::{Preset, Provider, core::LimitState};
    /// let preset = Preset::azure_openai("https://my-resource.openai.azure.com");
    /// assert_eq!(preset.provider(), Provider::AzureOpenAi);
    /// assert!(preset.layer(&LimitState::new()).is_ok());
    /// // The endpoint must be an absolute URL.
    /// let err = Preset::azure_openai("my-resource").layer(&LimitState::new()).unwrap_err();
    /// assert_eq!(err.setting, "azure.base_url");
    /// ```
    pub fn azure_openai(endpoint: &str) -> Self {
        Self::new(Provider::AzureOpenAi).base_url(endpoint)
    }

    /// Moonshot AI (Kimi).
    ///
    /// ```
    /// use ratelayer::{Preset, Provider, core::LimitState};
    /// let preset = Preset::moonshot();
    /// assert_eq!(preset.provider(), Provider::Moonshot);
    /// assert_eq!(preset.layer(&LimitState::new()).unwrap().name(), "moonshot");
    /// ```
    pub fn moonshot() -> Self {
        Self::new(Provider::Moonshot)
    }

    /// The name of the provider's scopes (default: the provider's, such as `openai`).
    ///
    /// ```
    /// use ratelayer::{Preset, core::LimitState};
    /// let layer = Preset::openai().name("openai-batch").layer(&LimitState::new()).unwrap();
    /// assert_eq!(layer.name(), "openai-batch");
    /// // Settings are named after it in errors.
    /// let zero_wait = Preset::openai().name("openai-batch").max_wait(Default::default());
    /// assert_eq!(zero_wait.layer(&LimitState::new()).unwrap_err().setting, "openai-batch.max_wait");
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The base URL (scheme, host, optional path prefix).
    ///
    /// ```
    /// use http::{Request, Response};
    /// use ratelayer::{Preset, core::{LimitState, ReplayBody}};
    /// use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # // A client that answers with the URI it was sent to, in `x-uri`.
    /// # let client = tower::service_fn(|req: Request<ReplayBody>| async move {
    /// #     let resp = Response::builder().header("x-uri", req.uri().to_string()).body(String::new());
    /// #     Ok::<_, std::convert::Infallible>(resp.unwrap())
    /// # });
    /// let preset = Preset::openai().base_url("http://127.0.0.1:9000/proxy");
    /// let svc = preset.layer(&LimitState::new()).unwrap().layer(client);
    /// let req = Request::post("/v1/chat/completions").body(ReplayBody::from("{}")).unwrap();
    /// let resp = svc.oneshot(req).await.unwrap();
    /// assert_eq!(resp.headers()["x-uri"], "http://127.0.0.1:9000/proxy/v1/chat/completions");
    /// # }
    /// ```
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The API key, sent in the provider's credential header (marked sensitive).
    ///
    /// ```
    /// use http::{Request, Response};
    /// use ratelayer::{Preset, core::{LimitState, ReplayBody}};
    /// use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # // A client that answers with the request's headers.
    /// # let client = tower::service_fn(|req: Request<ReplayBody>| async move {
    /// #     let mut resp = Response::new(String::new());
    /// #     *resp.headers_mut() = req.headers().clone();
    /// #     Ok::<_, std::convert::Infallible>(resp)
    /// # });
    /// let preset = Preset::anthropic().api_key("sk-ant-test");
    /// let svc = preset.layer(&LimitState::new()).unwrap().layer(client);
    /// let resp = svc.oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap();
    /// assert_eq!(resp.headers()["x-api-key"], "sk-ant-test");
    /// assert!(resp.headers()["x-api-key"].is_sensitive());
    /// assert!(!format!("{preset:?}").contains("sk-ant-test"));
    /// # }
    /// ```
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(ApiKey::new(key));
        self
    }

    /// The key from the first of the provider's environment variables that is set
    /// ([`Provider::key_env_vars`]), if any; else no key.
    ///
    /// ```
    /// use http::{Request, Response};
    /// use ratelayer::{Preset, core::{LimitState, ReplayBody}};
    /// use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # // A client that answers with the request's headers.
    /// # let client = tower::service_fn(|req: Request<ReplayBody>| async move {
    /// #     let mut resp = Response::new(String::new());
    /// #     *resp.headers_mut() = req.headers().clone();
    /// #     Ok::<_, std::convert::Infallible>(resp)
    /// # });
    /// let preset = Preset::anthropic().api_key_from_env(); // ANTHROPIC_API_KEY, if set
    /// let svc = preset.layer(&LimitState::new()).unwrap().layer(client);
    /// let resp = svc.oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap();
    /// let from_env = std::env::var("ANTHROPIC_API_KEY").ok().map(|k| k.trim().to_owned());
    /// // (`assert!`, not `assert_eq!`: a failure would print the key.)
    /// let sent = resp.headers().get("x-api-key").map(|v| v.to_str().unwrap().to_owned());
    /// assert!(sent == from_env.filter(|k| !k.is_empty()));
    /// # }
    /// ```
    pub fn api_key_from_env(mut self) -> Self {
        self.api_key = self
            .provider
            .key_env_vars()
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|k| !k.trim().is_empty()))
            .map(|k| ApiKey::new(k.trim()));
        self
    }

    /// The account's limits (default: [`Provider::example_limits`]).
    ///
    /// ```
    /// use ratelayer::{Preset, ProviderLimits, core::LimitState};
    /// let preset = Preset::moonshot().limits(ProviderLimits::default().rpm(3).max_concurrent(2));
    /// let layer = preset.layer(&LimitState::new()).unwrap();
    /// let config = layer.concurrency_handle().config();
    /// let limits = config.limits_for("moonshot", None);
    /// assert_eq!(limits.max_concurrent, Some(2));
    /// assert_eq!(limits.reservoir.unwrap().requests, 3); // per minute
    /// // A zero limit is refused when the layer is built.
    /// let zero = Preset::moonshot().limits(ProviderLimits::default().rpm(0));
    /// assert_eq!(zero.layer(&LimitState::new()).unwrap_err().setting, "moonshot.limits.rpm");
    /// ```
    pub fn limits(mut self, limits: ProviderLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The longest a request may wait on this provider, in total (token budget,
    /// cooldowns, backoff): a longer token wait fails at once with `WaitTooLong`, and
    /// retries stop rather than wait longer (in a chain: the next provider takes over).
    /// Default: [`DEFAULT_MAX_WAIT`].
    ///
    /// ```
    /// use std::time::Duration;
    /// # use http::{Request, Response};
    /// use ratelayer::{Preset, ProviderLimits, core::{LimitState, ReplayBody, WaitTooLong}};
    /// use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let client = tower::service_fn(|_req: Request<ReplayBody>| async {
    /// #     Ok::<_, std::convert::Infallible>(Response::new(String::new()))
    /// # });
    /// let preset = Preset::openai()
    ///     .limits(ProviderLimits::default().tpm(1_000))
    ///     .max_wait(Duration::from_secs(5));
    /// let svc = preset.layer(&LimitState::new()).unwrap().layer(client);
    /// let req = || Request::new(ReplayBody::from(r#"{"model":"gpt-4o-mini","max_tokens":600,"messages":[]}"#));
    /// assert!(svc.clone().oneshot(req()).await.is_ok());
    /// // The second 600 tokens would wait most of a minute: more than 5 s.
    /// let err = svc.oneshot(req()).await.unwrap_err();
    /// assert!(err.downcast_ref::<WaitTooLong>().is_some(), "{err}");
    /// # }
    /// ```
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    /// The most retries of a rate-limited (429) request on this provider. Transient
    /// failures (5xx, 408, connection errors) and overloaded answers (529, 503
    /// "overloaded") keep the retry layer's own backoff and counts
    /// ([`BackoffRetryLayerBuilder::transient`](crate::retry::BackoffRetryLayerBuilder::transient),
    /// [`overloaded`](crate::retry::BackoffRetryLayerBuilder::overloaded)): `max_retries(0)`
    /// does not make a [`Chain`] fall back at once on a 503.
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// use http::{Request, Response, StatusCode};
    /// use ratelayer::{Preset, core::{LimitState, ReplayBody}};
    /// use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let calls = Arc::new(AtomicUsize::new(0));
    /// # let seen = calls.clone();
    /// # // A client that always answers 429, asking for a 1 s wait.
    /// # let client = tower::service_fn(move |_req: Request<ReplayBody>| {
    /// #     seen.fetch_add(1, Ordering::SeqCst);
    /// #     let resp = Response::builder().status(429).header("retry-after", "1").body(String::new());
    /// #     async move { Ok::<_, std::convert::Infallible>(resp.unwrap()) }
    /// # });
    /// let svc = Preset::openai().max_retries(2).layer(&LimitState::new()).unwrap().layer(client);
    /// let resp = svc.oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap();
    /// assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS); // passed through, as upstream said
    /// assert_eq!(calls.load(Ordering::SeqCst), 1 + 2);
    /// # }
    /// ```
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// In a [`Chain`]: the model this provider is asked for (the `model` of the JSON body
    /// is rewritten), when it differs from the caller's.
    ///
    /// ```
    /// use http::{Request, Response};
    /// use ratelayer::{Chain, Preset, core::ReplayBody};
    /// use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # // A client that answers with the request body it got, in `x-body`.
    /// # let client = tower::service_fn(|req: Request<ReplayBody>| async move {
    /// #     let body = String::from_utf8_lossy(req.body().as_bytes()).into_owned();
    /// #     Ok::<_, std::convert::Infallible>(Response::builder().header("x-body", body).body(String::new()).unwrap())
    /// # });
    /// let (svc, _stats) = Chain::new()
    ///     .provider(Preset::moonshot().api_key("sk-test").model("kimi-k2-0905-preview"))
    ///     .build(client)
    ///     .unwrap();
    /// let req = Request::new(ReplayBody::from(r#"{"model":"gpt-4o-mini","messages":[]}"#));
    /// let resp = svc.oneshot(req).await.unwrap();
    /// let sent = resp.headers()["x-body"].to_str().unwrap();
    /// assert!(sent.contains(r#""model":"kimi-k2-0905-preview""#), "{sent}");
    /// # }
    /// ```
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// In a [`Chain`]: the model's context window in tokens. A request that overflowed
    /// an earlier provider's window (that provider answered with a context-length error;
    /// the chain still tries providers in order, as the token estimate is rough) then goes
    /// straight to the first later provider whose window fits it, skipping those too
    /// small.
    ///
    /// ```
    /// # use http::{Request, Response};
    /// use ratelayer::{Chain, Preset, core::ReplayBody};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # // A client where Moonshot's model overflows; the others answer with their host.
    /// # let client = tower::service_fn(|req: Request<ReplayBody>| async move {
    /// #     let host = req.uri().host().unwrap_or_default().to_owned();
    /// #     let overflow = r#"{"error":{"code":"context_length_exceeded"}}"#;
    /// #     let (status, body) = if host == "api.moonshot.ai" { (400, overflow) } else { (200, "") };
    /// #     let resp = Response::builder().status(status).header("x-host", host).body(body.to_owned());
    /// #     Ok::<_, std::convert::Infallible>(resp.unwrap())
    /// # });
    /// let (svc, stats) = Chain::new()
    ///     .provider(Preset::moonshot().api_key("sk-1").context_window(8_000))
    ///     .provider(Preset::anthropic().api_key("sk-2").context_window(16_000))
    ///     .provider(Preset::openai().api_key("sk-3").context_window(128_000))
    ///     .build(client)
    ///     .unwrap();
    /// // Too large for Moonshot's 8k: the chain skips Anthropic's 16k for OpenAI's 128k.
    /// let req = Request::new(ReplayBody::from(r#"{"max_tokens":20000,"messages":[]}"#));
    /// let resp = svc.oneshot(req).await.unwrap();
    /// assert_eq!(resp.headers()["x-host"], "api.openai.com");
    /// assert_eq!(stats.snapshot().served_by_fallback, 1);
    /// # }
    /// ```
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// The account's tier, if known (`free`, `1`..`5`, or a tier name of the provider's
    /// tier table): the scope of this key and model (the [`model`](Self::model), else
    /// the provider's default) starts on it instead of the most conservative tier, until
    /// the headers say otherwise.
    ///
    /// ```
    /// use ratelayer::{Preset, Scope, core::LimitState};
    /// let state = LimitState::new();
    /// let layer = Preset::openai().model("gpt-4o").tier("2").layer(&state).unwrap();
    /// let scope = Scope::new("openai").with_model("gpt-4o"); // (no key: no credential)
    /// assert_eq!(&*layer.tier_handle().tier(&scope).name, "tier-2");
    /// // A tier the provider's table does not know is refused.
    /// let err = Preset::openai().tier("gold").layer(&state).unwrap_err();
    /// assert_eq!(err.setting, "openai.tier");
    /// ```
    pub fn tier(mut self, tier: impl Into<String>) -> Self {
        self.tier = Some(tier.into());
        self
    }

    /// The provider.
    ///
    /// ```
    /// use ratelayer::{Preset, Provider};
    /// let preset = Preset::new(Provider::Moonshot).name("kimi");
    /// assert_eq!(preset.provider(), Provider::Moonshot);
    /// ```
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The per-provider stack as one layer, every layer sharing `state`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer::{Preset, core::LimitState};
    /// let state = LimitState::new(); // share it with your other stacks and handles
    /// let layer = Preset::openai().api_key("sk-test").layer(&state).unwrap();
    /// assert_eq!(layer.name(), "openai");
    /// let err = Preset::openai().max_wait(Duration::ZERO).layer(&state).unwrap_err();
    /// assert_eq!(err.setting, "openai.max_wait");
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting at fault.
    pub fn layer(&self, state: &LimitState) -> Result<ProviderLayer, ConfigError> {
        self.limits.validate(&self.name)?;
        let mut target = TargetLayer::named(&self.name, self.provider, &self.base_url)?;
        if let Some(key) = &self.api_key {
            target = target.api_key(key.expose());
        }
        // One wait budget for the whole provider stack: the TPM layer refuses longer
        // waits with `WaitTooLong`, and the retry layer gives up rather than wait longer
        // in total (so such a refusal reaches the caller, or the fallback layer, at once).
        let max_wait = self.max_wait.unwrap_or(DEFAULT_MAX_WAIT);
        if max_wait.is_zero() {
            return Err(ConfigError::new(
                format!("{}.max_wait", self.name),
                "must be positive: a request that may not wait at all cannot be retried",
            ));
        }
        let mut retry = BackoffRetryLayer::builder(state.clone()).max_total_wait(max_wait);
        if max_wait < UNKNOWN_TIER_BASE_DELAY {
            // The free tier's 20 s first delay would not fit the budget.
            retry = retry.default_base_delay(max_wait);
        }
        if let Some(n) = self.max_retries {
            retry = retry.max_rate_limit_retries(n);
        }
        let tier = TierDetectLayer::new(state.clone());
        if let Some(name) = &self.tier {
            self.seed_tier(name, state)?;
        }
        let l = &self.limits;
        let mut tpm = TpmConfig::new().max_wait(Some(max_wait));
        let model_limits = match (l.tpm, l.input_tpm, l.output_tpm) {
            (Some(t), None, None) => Some(ModelLimits::tpm(t)),
            (t, i, o) if t.is_some() || i.is_some() || o.is_some() => Some(ModelLimits {
                tokens_per_minute: t,
                input_tokens_per_minute: i,
                output_tokens_per_minute: o,
            }),
            _ => None,
        };
        if let Some(m) = model_limits {
            tpm = tpm.budget(Budget::new(self.name.clone(), m));
        }
        if model_limits.is_some() || l.rpm.is_some() || l.max_concurrent.is_some() {
            // The configured limits hold the first burst: no probe needed. The
            // concurrency layer inside paces from what the provider says (it learns the
            // request limit), so the retry layer does not pace a second time; it still
            // waits out every cooldown.
            retry = retry.probe(false).pacing(false);
        }
        let mut conc = Limits::new();
        if let Some(n) = l.max_concurrent {
            conc = conc.max_concurrent(n);
        }
        if let Some(rpm) = l.rpm {
            let rpm = u32::try_from(rpm).unwrap_or(u32::MAX);
            conc = conc.reservoir(Reservoir::new(rpm, Duration::from_secs(60)));
        }
        if let Some(ms) = l.min_spacing_ms {
            conc = conc.min_spacing(Duration::from_millis(ms));
        }
        let concurrency =
            ConcurrencyLayer::new(ConcurrencyConfig::new().provider(self.name.clone(), conc))?
                .with_state(state.clone());
        Ok(ProviderLayer {
            sensitive: crate::sensitive_credentials(),
            tier_handle: tier.handle(),
            concurrency_handle: concurrency.handle(),
            target,
            retry: retry.build()?,
            tier,
            tpm: TpmLimitLayer::with_state(tpm, state.clone())?,
            concurrency,
        })
    }
}

impl Preset {
    /// Publishes the configured tier for this key and model into `state`.
    fn seed_tier(&self, name: &str, state: &LimitState) -> Result<(), ConfigError> {
        let tables = ratelayer_tier::TierTables::new();
        let table = tables.for_provider(&self.name);
        let wanted = name.trim().to_ascii_lowercase();
        // A row may hold several tiers: `3`, `4` and `tier-3` all name `tier-3/4`.
        let number = wanted.trim_start_matches("tier").trim_start_matches('-');
        let spec = table
            .tiers
            .iter()
            .find(|t| {
                let t = t.name.to_ascii_lowercase();
                t == wanted
                    || t == format!("tier-{wanted}")
                    || t.replace('-', "") == wanted
                    || t.strip_prefix("tier-")
                        .is_some_and(|n| n.split('/').any(|part| part == number))
            })
            .ok_or_else(|| {
                let known: Vec<&str> = table.tiers.iter().map(|t| t.name.as_str()).collect();
                ConfigError::new(
                    format!("{}.tier", self.name),
                    format!("unknown tier {name:?}: use one of {known:?}"),
                )
            })?;
        let mut scope = ratelayer_core::Scope::new(self.name.clone());
        if let Some(key) = &self.api_key {
            let value = self.provider.credential_value(key.expose());
            scope = scope.with_credential(ratelayer_core::meta::fingerprint(value.as_bytes()));
        }
        let model = self
            .model
            .clone()
            .unwrap_or_else(|| self.provider.default_model().to_owned());
        state.set_tier(&scope.with_model(model), spec.info(None));
        Ok(())
    }
}

/// One provider's stack (see [`Preset`]) as a single layer.
///
/// ```
/// use http::{Request, Response};
/// use ratelayer::{Preset, ProviderLayer, core::{LimitState, ReplayBody}};
/// use tower::{ServiceBuilder, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer: ProviderLayer = Preset::moonshot().api_key("sk-test").layer(&LimitState::new()).unwrap();
/// let svc = ServiceBuilder::new().layer(layer).service_fn(|_req: Request<ReplayBody>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(String::new()))
/// });
/// let resp = svc.oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap();
/// assert_eq!(resp.status(), 200);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ProviderLayer {
    sensitive: SetSensitiveRequestHeadersLayer,
    target: TargetLayer,
    retry: BackoffRetryLayer,
    tier: TierDetectLayer,
    tpm: TpmLimitLayer,
    concurrency: ConcurrencyLayer,
    tier_handle: TierHandle,
    concurrency_handle: ConcurrencyHandle,
}

impl ProviderLayer {
    /// The provider's name.
    ///
    /// ```
    /// use ratelayer::{Preset, core::LimitState};
    /// let layer = Preset::moonshot().name("kimi").layer(&LimitState::new()).unwrap();
    /// assert_eq!(layer.name(), "kimi");
    /// ```
    pub fn name(&self) -> &str {
        self.target.name()
    }

    /// The tier detector's handle (tier, limits and recommendation per scope).
    ///
    /// ```
    /// use ratelayer::{Preset, Scope, core::LimitState};
    /// let layer = Preset::openai().layer(&LimitState::new()).unwrap();
    /// let scope = Scope::new("openai").with_model("gpt-4o-mini");
    /// let recommendation = layer.tier_handle().recommendation(&scope);
    /// assert!(!recommendation.detected); // no response seen yet: the free tier is assumed
    /// assert_eq!(&*recommendation.tier, "free");
    /// ```
    pub fn tier_handle(&self) -> &TierHandle {
        &self.tier_handle
    }

    /// The concurrency layer's handle (hot reload, stats per scope).
    ///
    /// ```
    /// use ratelayer::{Preset, ProviderLimits, concurrency::Limits, core::LimitState};
    /// let layer = Preset::moonshot()
    ///     .limits(ProviderLimits::default().max_concurrent(1))
    ///     .layer(&LimitState::new())
    ///     .unwrap();
    /// let handle = layer.concurrency_handle();
    /// handle.set_limits("moonshot", Limits::new().max_concurrent(2)).unwrap(); // at run time
    /// assert_eq!(handle.config().limits_for("moonshot", None).max_concurrent, Some(2));
    /// ```
    pub fn concurrency_handle(&self) -> &ConcurrencyHandle {
        &self.concurrency_handle
    }
}

impl<S> Layer<S> for ProviderLayer {
    type Service = ProviderService<S>;

    fn layer(&self, client: S) -> Self::Service {
        let inner = self.concurrency.layer(client);
        let inner = self.tpm.layer(inner);
        let inner = self.tier.layer(inner);
        let inner = self.retry.layer(inner);
        let inner = self.target.layer(inner);
        self.sensitive.layer(inner)
    }
}

/// A fallback chain of presets (feature `fallback`): waits first, falls back second.
/// Each provider gets its own [`ProviderLayer`] stack around a clone of one client, every
/// layer shares one [`LimitState`], and the whole chain marks credential headers
/// sensitive.
///
/// ```
/// # use std::convert::Infallible;
/// # use std::time::Duration;
/// # use http::{Request, Response};
/// # use ratelayer::core::ReplayBody;
/// use ratelayer::{Chain, Preset};
/// # use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// # let client = tower::service_fn(|req: Request<ReplayBody>| async move {
/// #     let host = req.uri().host().unwrap_or_default().to_owned();
/// #     Ok::<_, Infallible>(Response::builder().header("x-host", host).body(String::new()).unwrap())
/// # });
/// // `client` answers with the host it was sent to, in `x-host`.
/// let chain = Chain::new()
///     .provider(Preset::openai().api_key("sk-not-real"))
///     .provider(Preset::moonshot().api_key("sk-not-real").model("kimi-k2-0905-preview"))
///     .wait_budget(Duration::from_secs(30));
/// let (stack, stats) = chain.build::<_, ReplayBody, _>(client).unwrap();
/// let resp = stack.oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap();
/// assert_eq!(resp.headers()["x-host"], "api.openai.com"); // the first, while it has room
/// assert_eq!(stats.snapshot().providers.len(), 2);
/// assert_eq!(stats.snapshot().primary_share(), 1.0);
/// # }
/// ```
#[cfg(feature = "fallback")]
#[derive(Debug, Clone, Default)]
pub struct Chain {
    presets: Vec<Preset>,
    wait_budget: Option<Duration>,
    state: Option<LimitState>,
}

/// The service a [`Chain`] builds: the fallback over the providers' stacks, for request
/// bodies `B` and the stacks' response bodies `ResB`.
///
/// ```
/// use http::{Request, Response};
/// use ratelayer::{Chain, ChainService, Preset, core::ReplayBody};
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let client = tower::service_fn(|_req: Request<ReplayBody>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(String::new()))
/// });
/// let (svc, _stats) = Chain::new().provider(Preset::openai()).build(client).unwrap();
/// let svc: ChainService<ReplayBody, _> = svc;
/// assert_eq!(svc.oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap().status(), 200);
/// # }
/// ```
#[cfg(feature = "fallback")]
pub type ChainService<B, ResB> = SetSensitiveRequestHeaders<ratelayer_fallback::Fallback<B, ResB>>;

#[cfg(feature = "fallback")]
impl Chain {
    /// An empty chain.
    ///
    /// ```
    /// use http::Request;
    /// use ratelayer::{Chain, core::ReplayBody};
    /// # let client = tower::service_fn(|_req: Request<ReplayBody>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    /// # });
    /// // An empty chain does not build: add a provider.
    /// let err = Chain::new().build::<_, ReplayBody, _>(client).unwrap_err();
    /// assert_eq!(err.setting, "fallback.chain");
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider; providers are tried in the order added.
    ///
    /// ```
    /// use http::{Request, Response};
    /// use ratelayer::{Chain, Preset, core::ReplayBody};
    /// use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # // A client where OpenAI answers 503 and every other host 200.
    /// # let client = tower::service_fn(|req: Request<ReplayBody>| async move {
    /// #     let status = if req.uri().host() == Some("api.openai.com") { 503 } else { 200 };
    /// #     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(String::new()).unwrap())
    /// # });
    /// let (svc, stats) = Chain::new()
    ///     .provider(Preset::openai().api_key("sk-1").max_retries(0)) // tried first
    ///     .provider(Preset::anthropic().api_key("sk-2"))
    ///     .build(client)
    ///     .unwrap();
    /// let resp = svc.oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap();
    /// assert_eq!(resp.status(), 200);
    /// assert_eq!(stats.snapshot().served_by_fallback, 1);
    /// # }
    /// ```
    pub fn provider(mut self, preset: Preset) -> Self {
        self.presets.push(preset);
        self
    }

    /// How long a request may wait for a provider before the next one is tried; also
    /// each provider's [`Preset::max_wait`] unless set. Default: 2 minutes.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use http::{Request, Response};
    /// use ratelayer::{Chain, Preset, ProviderLimits, core::ReplayBody};
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # // A client that answers with the host it was sent to, in `x-host`.
    /// # let client = tower::service_fn(|req: Request<ReplayBody>| async move {
    /// #     let host = req.uri().host().unwrap_or_default().to_owned();
    /// #     Ok::<_, std::convert::Infallible>(Response::builder().header("x-host", host).body(String::new()).unwrap())
    /// # });
    /// let (svc, _stats) = Chain::new()
    ///     .provider(Preset::moonshot().api_key("sk-1").limits(ProviderLimits::default().rpm(1)))
    ///     .provider(Preset::openai().api_key("sk-2"))
    ///     .wait_budget(Duration::from_secs(10))
    ///     .build(client).unwrap();
    /// let first = svc.clone().oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap();
    /// assert_eq!(first.headers()["x-host"], "api.moonshot.ai");
    /// // Moonshot's next request slot is a minute away, more than 10 s: OpenAI takes it.
    /// let second = svc.oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap();
    /// assert_eq!(second.headers()["x-host"], "api.openai.com");
    /// # }
    /// ```
    pub fn wait_budget(mut self, budget: Duration) -> Self {
        self.wait_budget = Some(budget);
        self
    }

    /// The shared state of every layer (default: a new one).
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::Request;
    /// use ratelayer::{Chain, Preset, Scope, core::{LimitState, ReplayBody}};
    /// # let client = tower::service_fn(|_req: Request<ReplayBody>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    /// # });
    /// let state = LimitState::new();
    /// let chain = Chain::new().provider(Preset::openai().tier("2")).state(state.clone());
    /// let (_svc, _stats) = chain.build::<_, ReplayBody, _>(client).unwrap();
    /// // What the chain's layers know, this handle sees (here: the configured tier).
    /// let scope = Scope::new("openai").with_model("gpt-4o-mini");
    /// assert_eq!(state.tier(&scope).unwrap().base_delay, Duration::from_millis(120));
    /// ```
    pub fn state(mut self, state: LimitState) -> Self {
        self.state = Some(state);
        self
    }

    /// The chain around `client` and its statistics handle.
    ///
    /// ```
    /// use http::{Request, Response};
    /// use ratelayer::{Chain, Preset, core::ReplayBody};
    /// use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let client = tower::service_fn(|_req: Request<ReplayBody>| async {
    ///     Ok::<_, std::convert::Infallible>(Response::new(String::new()))
    /// });
    /// let (svc, stats) = Chain::new().provider(Preset::anthropic()).build(client).unwrap();
    /// let resp = svc.oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap();
    /// assert_eq!(resp.status(), 200);
    /// assert_eq!((stats.snapshot().requests, stats.snapshot().successes), (1, 1));
    /// # }
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting at fault (an empty chain, duplicate names,
    /// any provider's own errors).
    pub fn build<S, B, ResB>(
        self,
        client: S,
    ) -> Result<(ChainService<B, ResB>, ratelayer_fallback::FallbackStats), ConfigError>
    where
        S: Clone,
        ProviderService<S>: tower_service::Service<http::Request<B>, Response = http::Response<ResB>>
            + Clone
            + Send
            + Sync
            + 'static,
        <ProviderService<S> as tower_service::Service<http::Request<B>>>::Error:
            Into<ratelayer_core::BoxError>,
        <ProviderService<S> as tower_service::Service<http::Request<B>>>::Future: Send + 'static,
        ResB: 'static,
        B: ratelayer_core::ReplayableBody + From<Vec<u8>> + 'static,
    {
        if self.presets.is_empty() {
            return Err(ConfigError::new(
                "fallback.chain",
                "is empty: add at least one provider",
            ));
        }
        let budget = self.wait_budget.unwrap_or(DEFAULT_WAIT_BUDGET);
        let state = self.state.unwrap_or_default();
        let mut fallback = ratelayer_fallback::Fallback::builder()
            .wait_budget(budget)
            .limit_state(state.clone())
            // Each provider's stack retries its own 429s: one that comes back means
            // "still limited after its retries".
            .rate_limit_retries(0);
        for preset in self.presets {
            let preset = match preset.max_wait {
                Some(_) => preset,
                None => preset.max_wait(budget),
            };
            let layer = preset.layer(&state)?;
            let mut spec = ratelayer_fallback::ProviderSpec::new(layer.name().to_owned())
                .scope_provider(layer.name().to_owned());
            for h in &crate::CREDENTIAL_HEADERS {
                spec = spec.remove_header(h.as_str());
            }
            if let Some(key) = &preset.api_key {
                // The credential goes in before the chain estimates the provider's wait,
                // so the estimate is for the same scope (provider, key, model) as the
                // stack's.
                spec = spec.header(
                    preset.provider.credential_header().as_str(),
                    &preset.provider.credential_value(key.expose()),
                );
            }
            if let Some(model) = &preset.model {
                spec = spec.model(model.clone());
            }
            if let Some(tokens) = preset.context_window {
                spec = spec.context_window(tokens);
            }
            fallback = fallback.provider(spec.service(layer.layer(client.clone())));
        }
        let fallback = fallback.build()?;
        let stats = fallback.stats();
        Ok((crate::sensitive_credentials().layer(fallback), stats))
    }
}

/// How long a request waits for a provider of a [`Chain`] before the next is tried,
/// unless [`Chain::wait_budget`] says otherwise: 2 minutes.
///
/// ```
/// use std::time::Duration;
/// use ratelayer::DEFAULT_WAIT_BUDGET;
/// assert_eq!(DEFAULT_WAIT_BUDGET, Duration::from_secs(2 * 60));
/// ```
#[cfg(feature = "fallback")]
pub const DEFAULT_WAIT_BUDGET: Duration = Duration::from_secs(120);
