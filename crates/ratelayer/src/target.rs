//! [`TargetLayer`]: sends a request to one provider: its base URL, its credential header
//! (marked sensitive) and its name for scopes.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Uri};
use ratelayer_core::ConfigError;
use ratelayer_core::meta::{ProviderName, RequestMeta, fingerprint};
use tower_layer::Layer;
use tower_service::Service;

use crate::provider::Provider;

/// Points every request at one provider: replaces the URI's scheme and authority by the
/// base URL's (prefixing its path, if it has one), sets the credential header (marked
/// sensitive, so it is never shown by `Debug` or logged), and names the provider for the
/// layers' scopes (core's [`ProviderName`]; an already computed [`RequestMeta`] is
/// updated, so every provider of a fallback chain gets its own scope).
///
/// A request keeps its own path and query: `/v1/chat/completions` sent through a target
/// of `https://api.moonshot.ai` goes to `https://api.moonshot.ai/v1/chat/completions`.
///
/// ```
/// use http::Request;
/// use ratelayer::{Provider, TargetLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let target = TargetLayer::new(Provider::Anthropic, "http://127.0.0.1:9000")
///     .unwrap()
///     .api_key("sk-ant-secret");
/// let svc = ServiceBuilder::new().layer(target).service_fn(|req: Request<String>| async move {
///     Ok::<_, std::convert::Infallible>(format!("{} {:?}", req.uri(), req.headers()))
/// });
/// let seen = svc.oneshot(Request::post("/v1/messages").body(String::new()).unwrap()).await.unwrap();
/// assert!(seen.starts_with("http://127.0.0.1:9000/v1/messages"));
/// assert!(seen.contains("x-api-key") && !seen.contains("sk-ant-secret"));
/// # }
/// ```
#[derive(Clone)]
pub struct TargetLayer {
    inner: Arc<TargetConfig>,
}

#[derive(Clone)]
struct TargetConfig {
    name: ProviderName,
    provider: Provider,
    scheme: Scheme,
    authority: Authority,
    path_prefix: String,
    /// The credential header's value (sensitive) and its fingerprint.
    credential: Option<(HeaderValue, Arc<str>)>,
}

impl fmt::Debug for TargetLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.inner;
        f.debug_struct("TargetLayer")
            .field("name", &c.name.as_str())
            .field("provider", &c.provider)
            .field(
                "base",
                &format_args!("{}://{}{}", c.scheme, c.authority, c.path_prefix),
            )
            .field("credential", &c.credential.as_ref().map(|(_, fp)| fp))
            .finish()
    }
}

impl TargetLayer {
    /// A target for `provider` (named after it) at `base_url`.
    ///
    /// ```
    /// use ratelayer::{Provider, TargetLayer};
    /// let target = TargetLayer::new(Provider::Moonshot, "https://api.moonshot.ai").unwrap();
    /// assert_eq!(target.name(), "moonshot");
    /// let err = TargetLayer::new(Provider::OpenAi, "/v1").unwrap_err();
    /// assert_eq!(err.setting, "openai.base_url");
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] when `base_url` is not an absolute `http`/`https` URL.
    pub fn new(provider: Provider, base_url: &str) -> Result<Self, ConfigError> {
        Self::named(provider.name(), provider, base_url)
    }

    /// A target for `provider` named `name` (the name of its scopes) at `base_url`.
    ///
    /// ```
    /// use ratelayer::{Provider, TargetLayer};
    /// let target = TargetLayer::named("kimi", Provider::Moonshot, "https://api.moonshot.ai").unwrap();
    /// assert_eq!(target.name(), "kimi");
    /// let err = TargetLayer::named("kimi", Provider::Moonshot, "ftp://x").unwrap_err();
    /// assert_eq!(err.setting, "kimi.base_url");
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] when `base_url` is not an absolute `http`/`https` URL.
    pub fn named(name: &str, provider: Provider, base_url: &str) -> Result<Self, ConfigError> {
        let bad =
            |why: &str| ConfigError::new(format!("{name}.base_url"), format!("{base_url:?} {why}"));
        let uri: Uri = base_url.parse().map_err(|_| bad("is not a URL"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(bad("must be absolute, such as https://api.openai.com"));
        };
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(bad("must use http or https"));
        }
        Ok(TargetLayer {
            inner: Arc::new(TargetConfig {
                name: ProviderName::new(name),
                provider,
                scheme,
                authority,
                path_prefix: uri.path().trim_end_matches('/').to_owned(),
                credential: None,
            }),
        })
    }

    /// Sends `key` in the provider's credential header (`Authorization: Bearer`,
    /// `x-api-key` or `api-key`), marked sensitive. A key that is not a valid header
    /// value is ignored with a warning that does not show it.
    ///
    /// ```
    /// use http::Request;
    /// use ratelayer::{Provider, TargetLayer};
    /// use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let target = TargetLayer::new(Provider::OpenAi, "http://127.0.0.1:9000").unwrap().api_key("sk-1");
    /// let svc = target.layer(tower::service_fn(|req: Request<()>| async move {
    ///     Ok::<_, std::convert::Infallible>(req.headers()["authorization"].clone())
    /// }));
    /// let sent = svc.oneshot(Request::new(())).await.unwrap();
    /// assert_eq!(sent, "Bearer sk-1");
    /// assert!(sent.is_sensitive());
    /// # }
    /// ```
    pub fn api_key(self, key: &str) -> Self {
        let mut c = Arc::unwrap_or_clone(self.inner);
        c.credential = match HeaderValue::from_str(&c.provider.credential_value(key)) {
            Ok(mut value) => {
                value.set_sensitive(true);
                let fp = Arc::from(fingerprint(value.as_bytes()));
                Some((value, fp))
            }
            Err(_) => {
                tracing::warn!(
                    provider = c.name.as_str(),
                    "API key is not a valid header value; sending no key"
                );
                None
            }
        };
        TargetLayer { inner: Arc::new(c) }
    }

    /// The provider name the requests get.
    ///
    /// ```
    /// use ratelayer::{Provider, TargetLayer};
    /// let target = TargetLayer::new(Provider::AzureOpenAi, "https://my.openai.azure.com").unwrap();
    /// assert_eq!(target.name(), "azure");
    /// ```
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }
}

impl<S> Layer<S> for TargetLayer {
    type Service = Target<S>;

    fn layer(&self, inner: S) -> Target<S> {
        Target {
            inner,
            config: self.inner.clone(),
        }
    }
}

/// The service of [`TargetLayer`].
///
/// ```
/// use http::Request;
/// use ratelayer::{Provider, Target, TargetLayer};
/// use tower::{Layer, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = TargetLayer::named("kimi", Provider::Moonshot, "http://127.0.0.1:9000/proxy").unwrap();
/// let svc: Target<_> = layer.layer(tower::service_fn(|req: Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(req.uri().to_string())
/// }));
/// let uri = svc.oneshot(Request::get("/v1/models?x=1").body(()).unwrap()).await.unwrap();
/// assert_eq!(uri, "http://127.0.0.1:9000/proxy/v1/models?x=1");
/// # }
/// ```
#[derive(Clone)]
pub struct Target<S> {
    inner: S,
    config: Arc<TargetConfig>,
}

impl<S: fmt::Debug> fmt::Debug for Target<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("provider", &self.config.name.as_str())
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, B> Service<Request<B>> for Target<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let c = &*self.config;
        // A request already addressed to the base (no path prefix to add) keeps its URI.
        // (Authorities compared as written first: the case-insensitive comparison is
        // the slow one, and a base URL is usually written as the request's.)
        let addressed = c.path_prefix.is_empty()
            && req.uri().scheme() == Some(&c.scheme)
            && req
                .uri()
                .authority()
                .is_some_and(|a| a.as_str() == c.authority.as_str() || *a == c.authority)
            && req.uri().path_and_query().is_some();
        if !addressed {
            rewrite_uri(c, &mut req);
        }
        let mut fp = None;
        if let Some((value, print)) = &c.credential {
            let name = c.provider.credential_header();
            // The same key already set is only marked sensitive (as the configured value
            // is): equal values compare equal whether marked or not.
            match req.headers_mut().get_mut(&name) {
                Some(v) if v == value => v.set_sensitive(true),
                _ => {
                    req.headers_mut().insert(name, value.clone());
                }
            }
            fp = Some(print.clone());
        }
        if req.extensions().get::<ProviderName>() != Some(&c.name) {
            req.extensions_mut().insert(c.name.clone());
        }
        if let Some(meta) = req.extensions_mut().get_mut::<RequestMeta>() {
            if *meta.provider != *c.name.as_str() {
                meta.provider = Arc::from(c.name.as_str());
            }
            if fp.is_some() {
                meta.credential = fp;
            }
        }
        self.inner.call(req)
    }
}

/// Points `req` at the configured base: scheme, authority and path prefix.
fn rewrite_uri<B>(c: &TargetConfig, req: &mut Request<B>) {
    {
        let mut parts = req.uri().clone().into_parts();
        if !c.path_prefix.is_empty() {
            let pq = parts
                .path_and_query
                .as_ref()
                .map_or("/", PathAndQuery::as_str);
            let joined = format!("{}{}", c.path_prefix, pq);
            parts.path_and_query = joined.parse().ok().or(parts.path_and_query);
        } else if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        parts.scheme = Some(c.scheme.clone());
        parts.authority = Some(c.authority.clone());
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// The `kimi` target at `base`, with its key.
    fn kimi(base: &str) -> TargetLayer {
        TargetLayer::named("kimi", Provider::Moonshot, base)
            .unwrap()
            .api_key("sk-kimi")
    }

    /// `layer` around a service answering with the request it was given.
    fn echo(
        layer: &TargetLayer,
    ) -> impl Service<Request<String>, Response = Request<String>, Error = std::convert::Infallible>
    {
        layer.layer(tower::service_fn(|req: Request<String>| async move {
            Ok::<_, std::convert::Infallible>(req)
        }))
    }

    #[tokio::test]
    async fn rewrites_uri_names_the_provider_and_updates_cached_meta() {
        let layer = kimi("http://127.0.0.1:7/proxy/");
        let svc = echo(&layer);
        let mut req = Request::post("https://api.openai.com/v1/chat/completions?x=1")
            .body(String::new())
            .unwrap();
        req.extensions_mut()
            .insert(RequestMeta::new("openai", 10, 10));
        let out = svc.oneshot(req).await.unwrap();
        assert_eq!(
            out.uri(),
            "http://127.0.0.1:7/proxy/v1/chat/completions?x=1"
        );
        let auth = out.headers().get("authorization").unwrap();
        assert!(auth.is_sensitive());
        assert_eq!(auth, "Bearer sk-kimi");
        let meta = out.extensions().get::<RequestMeta>().unwrap();
        assert_eq!(&*meta.provider, "kimi");
        assert_eq!(
            meta.credential.as_deref(),
            Some(fingerprint(b"Bearer sk-kimi").as_str())
        );
        assert_eq!(
            out.extensions().get::<ProviderName>().unwrap().as_str(),
            "kimi"
        );
        assert!(!format!("{layer:?}").contains("sk-kimi"));
    }

    #[tokio::test]
    async fn a_request_already_addressed_to_the_base_keeps_its_uri_and_is_still_named() {
        let layer = kimi("http://127.0.0.1:7");
        let svc = echo(&layer);
        let mut req = Request::post("http://127.0.0.1:7/v1/chat/completions")
            .header("authorization", "Bearer sk-other")
            .body(String::new())
            .unwrap();
        req.extensions_mut().insert(ProviderName::new("openai"));
        let out = svc.oneshot(req).await.unwrap();
        assert_eq!(out.uri(), "http://127.0.0.1:7/v1/chat/completions");
        // Another key is replaced, another provider name too.
        assert_eq!(out.headers()["authorization"], "Bearer sk-kimi");
        assert_eq!(
            out.extensions().get::<ProviderName>().unwrap().as_str(),
            "kimi"
        );
        // A path-only URI is addressed to the base.
        let svc = echo(&layer);
        let out = svc
            .oneshot(Request::post("/v1/embeddings").body(String::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(out.uri(), "http://127.0.0.1:7/v1/embeddings");
        // The same key set by the caller, unmarked, leaves marked sensitive.
        let svc = echo(&layer);
        let req = Request::post("http://127.0.0.1:7/v1/chat/completions")
            .header("authorization", "Bearer sk-kimi")
            .body(String::new())
            .unwrap();
        assert!(!req.headers()["authorization"].is_sensitive());
        let out = svc.oneshot(req).await.unwrap();
        assert_eq!(out.headers()["authorization"], "Bearer sk-kimi");
        assert!(out.headers()["authorization"].is_sensitive());
    }

    #[test]
    fn base_url_must_be_absolute_http() {
        for bad in ["/v1", "ftp://x", "not a url"] {
            let e = TargetLayer::new(Provider::OpenAi, bad).unwrap_err();
            assert_eq!(e.setting, "openai.base_url");
        }
    }
}
