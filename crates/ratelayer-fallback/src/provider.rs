//! Providers of a chain: a name, a priority, a context window, request rewrites and a
//! service.

use std::fmt;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use ratelayer_core::BoxError;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_service::Service;

/// Rewrites a request into a provider's shape (model, path, credentials, body).
///
/// Any `Fn(&mut Request<B>)` is a rewrite:
///
/// ```
/// use http::Request;
/// use ratelayer_fallback::Rewrite;
/// let add = |req: &mut Request<String>| {
///     req.headers_mut().insert("anthropic-version", "2023-06-01".parse().unwrap());
/// };
/// let mut req = Request::new(String::new());
/// add.rewrite(&mut req);
/// assert_eq!(req.headers()["anthropic-version"], "2023-06-01");
/// ```
pub trait Rewrite<B>: Send + Sync + 'static {
    /// Rewrites `req` in place.
    fn rewrite(&self, req: &mut Request<B>);
}

impl<B, F> Rewrite<B> for F
where
    F: Fn(&mut Request<B>) + Send + Sync + 'static,
{
    fn rewrite(&self, req: &mut Request<B>) {
        self(req)
    }
}

/// Headers whose values are credentials: marked sensitive so they are never logged.
const SENSITIVE: [&str; 4] = ["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// Everything about a provider except its service: build it with the setters, then
/// attach the service with [`service`](Self::service) (or give it to
/// [`FallbackBuilder::layer`](crate::FallbackBuilder::layer) as the primary of a layer).
///
/// ```
/// use ratelayer_core::ReplayBody;
/// use ratelayer_fallback::ProviderSpec;
/// let spec = ProviderSpec::<ReplayBody>::new("anthropic")
///     .priority(1)
///     .context_window(200_000)
///     .model("claude-sonnet-4-5")
///     .path("/v1/messages")
///     .remove_header("authorization")
///     .header("x-api-key", "sk-ant-test");
/// assert_eq!(spec.name(), "anthropic");
/// ```
pub struct ProviderSpec<B> {
    pub(crate) name: Arc<str>,
    pub(crate) scope_provider: Option<Arc<str>>,
    pub(crate) priority: i32,
    pub(crate) context_window: Option<u64>,
    pub(crate) rewrites: Vec<Arc<dyn Rewrite<B>>>,
    pub(crate) errors: Vec<String>,
}

impl<B> Clone for ProviderSpec<B> {
    fn clone(&self) -> Self {
        ProviderSpec {
            name: self.name.clone(),
            scope_provider: self.scope_provider.clone(),
            priority: self.priority,
            context_window: self.context_window,
            rewrites: self.rewrites.clone(),
            errors: self.errors.clone(),
        }
    }
}

impl<B> fmt::Debug for ProviderSpec<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSpec")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .field("context_window", &self.context_window)
            .field("rewrites", &self.rewrites.len())
            .finish_non_exhaustive()
    }
}

impl<B: 'static> ProviderSpec<B> {
    /// A provider named `name` (unique in its chain), priority 0, no known context
    /// window, no rewrites.
    ///
    /// ```
    /// let spec = ratelayer_fallback::ProviderSpec::<String>::new("openai");
    /// assert_eq!(spec.name(), "openai");
    /// let debug = format!("{spec:?}");
    /// assert!(debug.contains("priority: 0, context_window: None, rewrites: 0"), "{debug}");
    /// ```
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        ProviderSpec {
            name: name.into(),
            scope_provider: None,
            priority: 0,
            context_window: None,
            rewrites: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The configured name.
    ///
    /// ```
    /// assert_eq!(ratelayer_fallback::ProviderSpec::<String>::new("kimi").name(), "kimi");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Lower priorities are tried first; equal priorities keep the order they were added
    /// in.
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
    ///     .provider(ProviderSpec::new("kimi").priority(2).service(reply(200)))
    ///     .provider(ProviderSpec::new("openai").service(reply(500)))
    ///     .provider(ProviderSpec::new("anthropic").service(reply(200)))
    ///     .build()
    ///     .unwrap();
    /// f.clone().oneshot(req()).await.unwrap();
    /// // openai (0) failed, anthropic (0, added after it) answered; kimi (2) was not needed.
    /// let s = f.stats().snapshot();
    /// assert_eq!((s.provider("anthropic").unwrap().successes, s.provider("kimi").unwrap().requests), (1, 0));
    /// # }
    /// ```
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// The context window of the provider's model, in tokens: a request that overflowed
    /// another provider's window goes to the first provider whose window fits it.
    ///
    /// ```
    /// use ratelayer_fallback::{Fallback, ProviderSpec};
    /// # let ok = tower::service_fn(|_r: http::Request<String>| async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) });
    /// let spec = ProviderSpec::<String>::new("kimi").context_window(128_000);
    /// assert!(format!("{spec:?}").contains("context_window: Some(128000)"));
    /// // A window of 0 tokens is refused when the chain is built.
    /// let zero = ProviderSpec::new("kimi").context_window(0).service(ok);
    /// let err = Fallback::builder().provider(zero).build().unwrap_err();
    /// assert_eq!(err.setting, "fallback.providers.kimi.context_window");
    /// ```
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// The provider name of this provider's scopes (limits, cooldowns, tiers), set on each
    /// request as [`ProviderName`](ratelayer_core::meta::ProviderName). By default, the
    /// configured name.
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
    ///     .provider(ProviderSpec::new("openai-eu").scope_provider("openai").service(reply(200)))
    ///     .provider(ProviderSpec::new("kimi").service(reply(200)))
    ///     .limit_state(state.clone())
    ///     .build()
    ///     .unwrap();
    /// // openai's account cools down for 5 minutes: openai-eu shares it, so kimi answers.
    /// let five_min = tokio::time::Instant::now() + Duration::from_secs(300);
    /// state.set_cooldown(&ratelayer_core::Scope::new("openai"), five_min);
    /// f.clone().oneshot(req()).await.unwrap();
    /// assert_eq!(f.stats().snapshot().provider("kimi").unwrap().successes, 1);
    /// # }
    /// ```
    pub fn scope_provider(mut self, provider: impl Into<Arc<str>>) -> Self {
        self.scope_provider = Some(provider.into());
        self
    }

    /// Adds a rewrite, applied after the ones added before.
    ///
    /// ```
    /// use http::Request;
    /// let spec = ratelayer_fallback::ProviderSpec::<String>::new("kimi")
    ///     .header("openai-organization", "org-1")
    ///     .rewrite(|req: &mut Request<String>| { req.headers_mut().remove("openai-organization"); });
    /// let mut req = Request::new(String::new());
    /// spec.apply(&mut req);
    /// // Applied in order: the header set first is removed by the rewrite after it.
    /// assert!(req.headers().get("openai-organization").is_none());
    /// ```
    pub fn rewrite(mut self, rewrite: impl Rewrite<B>) -> Self {
        self.rewrites.push(Arc::new(rewrite));
        self
    }

    /// Replaces the request's path (and query, if `path_and_query` has one), keeping the
    /// scheme and authority.
    ///
    /// ```
    /// use http::Request;
    /// let spec = ratelayer_fallback::ProviderSpec::<String>::new("anthropic").path("/v1/messages?beta=true");
    /// let mut req = Request::post("https://api.example.com/v1/chat/completions").body(String::new()).unwrap();
    /// spec.apply(&mut req);
    /// assert_eq!(req.uri(), "https://api.example.com/v1/messages?beta=true");
    /// ```
    pub fn path(mut self, path_and_query: &str) -> Self {
        match http::uri::PathAndQuery::try_from(path_and_query) {
            Ok(pq) => {
                self.rewrites.push(Arc::new(move |req: &mut Request<B>| {
                    let mut parts = req.uri().clone().into_parts();
                    parts.path_and_query = Some(pq.clone());
                    if let Ok(uri) = Uri::from_parts(parts) {
                        *req.uri_mut() = uri;
                    }
                }));
            }
            Err(e) => self.errors.push(format!("path {path_and_query:?}: {e}")),
        }
        self
    }

    /// Sets a header (credential headers such as `authorization` and `x-api-key` are
    /// marked sensitive, so they are never logged).
    ///
    /// ```
    /// use http::Request;
    /// let spec = ratelayer_fallback::ProviderSpec::<String>::new("anthropic").header("x-api-key", "sk-ant-test");
    /// let mut req = Request::new(String::new());
    /// spec.apply(&mut req);
    /// assert_eq!(req.headers()["x-api-key"], "sk-ant-test");
    /// assert!(req.headers()["x-api-key"].is_sensitive()); // never logged
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let parsed = (HeaderName::try_from(name), HeaderValue::try_from(value));
        match parsed {
            (Ok(name), Ok(mut value)) => {
                if SENSITIVE.contains(&name.as_str()) {
                    value.set_sensitive(true);
                }
                self.rewrites.push(Arc::new(move |req: &mut Request<B>| {
                    req.headers_mut().insert(name.clone(), value.clone());
                }));
            }
            // Never echo the value: it may be a key.
            _ => self
                .errors
                .push(format!("header {name:?}: invalid header name or value")),
        }
        self
    }

    /// Removes a header (such as the primary's `authorization` when this provider takes
    /// `x-api-key`).
    ///
    /// ```
    /// use http::Request;
    /// let spec = ratelayer_fallback::ProviderSpec::<String>::new("anthropic").remove_header("authorization");
    /// let mut req = Request::builder().header("authorization", "Bearer sk-openai").body(String::new()).unwrap();
    /// spec.apply(&mut req);
    /// assert!(req.headers().get("authorization").is_none());
    /// ```
    pub fn remove_header(mut self, name: &str) -> Self {
        match HeaderName::try_from(name) {
            Ok(name) => self.rewrites.push(Arc::new(move |req: &mut Request<B>| {
                req.headers_mut().remove(&name);
            })),
            Err(e) => self.errors.push(format!("remove_header {name:?}: {e}")),
        }
        self
    }

    /// Attaches the provider's service (usually its own stack of layers).
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::{Request, Response};
    /// use ratelayer_fallback::ProviderSpec;
    /// let svc = tower::service_fn(|_req: Request<String>| async {
    ///     Ok::<_, Infallible>(Response::new(String::new()))
    /// });
    /// let p = ProviderSpec::new("openai").service(svc);
    /// assert_eq!(p.name(), "openai");
    /// ```
    pub fn service<S, ResB>(self, service: S) -> Provider<B, ResB>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Provider {
            spec: self,
            service: BoxCloneSyncService::new(service.map_err(Into::into)),
        }
    }
}

impl<B> ProviderSpec<B>
where
    B: ratelayer_core::ReplayableBody + From<Vec<u8>> + 'static,
{
    /// Sets the `model` of a JSON object body (the built-in model rewrite). Bodies that are
    /// not a JSON object are left alone (set the model in the path with
    /// [`path`](Self::path) for Gemini and Azure).
    ///
    /// ```
    /// use http::Request;
    /// use ratelayer_core::ReplayBody;
    /// use ratelayer_fallback::{ProviderSpec, Rewrite};
    /// let spec = ProviderSpec::<ReplayBody>::new("kimi").model("kimi-k2");
    /// let mut req = Request::new(ReplayBody::from(r#"{"model":"gpt-4o","messages":[]}"#));
    /// spec.apply(&mut req);
    /// let body: serde_json::Value = serde_json::from_slice(req.body().as_bytes()).unwrap();
    /// assert_eq!(body["model"], "kimi-k2");
    /// ```
    pub fn model(mut self, model: impl Into<String>) -> Self {
        let model = serde_json::Value::String(model.into());
        self.rewrites.push(Arc::new(move |req: &mut Request<B>| {
            let Some(bytes) = req.body().bytes() else {
                return;
            };
            let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_slice(bytes) else {
                return;
            };
            obj.insert("model".to_owned(), model.clone());
            if let Ok(new) = serde_json::to_vec(&obj) {
                req.headers_mut().remove(http::header::CONTENT_LENGTH);
                *req.body_mut() = B::from(new);
            }
        }));
        self
    }
}

impl<B: 'static> ProviderSpec<B> {
    /// Applies every rewrite, in order.
    ///
    /// ```
    /// use http::Request;
    /// use ratelayer_fallback::ProviderSpec;
    /// let spec = ProviderSpec::<String>::new("anthropic").path("/v1/messages");
    /// let mut req = Request::post("http://127.0.0.1:9/v1/chat/completions").body(String::new()).unwrap();
    /// spec.apply(&mut req);
    /// assert_eq!(req.uri(), "http://127.0.0.1:9/v1/messages");
    /// ```
    pub fn apply(&self, req: &mut Request<B>) {
        for r in &self.rewrites {
            r.rewrite(req);
        }
    }
}

/// A provider of a chain: a [`ProviderSpec`] and its service, boxed (providers' stacks
/// have different types).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use ratelayer_fallback::Provider;
/// let p = Provider::new("openai", tower::service_fn(|_req: Request<String>| async {
///     Ok::<_, Infallible>(Response::new(String::new()))
/// }));
/// assert_eq!(p.name(), "openai");
/// ```
pub struct Provider<B, ResB> {
    pub(crate) spec: ProviderSpec<B>,
    pub(crate) service: BoxCloneSyncService<Request<B>, Response<ResB>, BoxError>,
}

impl<B, ResB> Clone for Provider<B, ResB> {
    fn clone(&self) -> Self {
        Provider {
            spec: self.spec.clone(),
            service: self.service.clone(),
        }
    }
}

impl<B, ResB> fmt::Debug for Provider<B, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl<B: 'static, ResB> Provider<B, ResB> {
    /// A provider named `name` with default settings (see [`ProviderSpec`]).
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
    ///     .provider(Provider::new("groq", reply(200)))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(f.clone().oneshot(req()).await.unwrap().status(), 200);
    /// assert_eq!(f.stats().snapshot().provider("groq").unwrap().successes, 1);
    /// # }
    /// ```
    pub fn new<S>(name: impl Into<Arc<str>>, service: S) -> Self
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        ProviderSpec::new(name).service(service)
    }

    /// The configured name.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use http::{Request, Response};
    /// let p = ratelayer_fallback::Provider::new("groq", tower::service_fn(|_r: Request<String>| async {
    ///     Ok::<_, Infallible>(Response::new(()))
    /// }));
    /// assert_eq!(p.name(), "groq");
    /// ```
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}
