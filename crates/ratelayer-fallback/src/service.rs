//! The [`Fallback`] service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use ratelayer_core::{BoxError, ReplayableBody};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::breaker::CircuitState;
use crate::future::{ResponseFuture, run};
use crate::layer::{BoxSvc, Chain, FallbackBuilder};
use crate::stats::FallbackStats;

/// A chain of providers that waits first and falls back second. Build it with
/// [`Fallback::builder`] (or make the wrapped service the primary with
/// [`FallbackLayer`](crate::FallbackLayer)); see the [crate documentation](crate).
///
/// `poll_ready` is always ready: which provider a request goes to is decided in its
/// response future, which drives that provider's readiness before every attempt (and
/// never holds a readied provider while it waits). Clones share the chain's circuit
/// breakers, quota skips and stats.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use ratelayer_core::ReplayBody;
/// use ratelayer_fallback::{Fallback, Provider};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = tower::service_fn(|_r: Request<ReplayBody>| async {
///     Ok::<_, Infallible>(Response::new(ReplayBody::from("hi")))
/// });
/// let fallback = Fallback::builder().provider(Provider::new("openai", svc)).build().unwrap();
/// let resp = fallback.clone().oneshot(Request::new(ReplayBody::from("{}"))).await.unwrap();
/// assert_eq!(resp.status(), 200);
/// assert_eq!(fallback.stats().snapshot().successes, 1);
/// # }
/// ```
pub struct Fallback<B, ResB> {
    chain: Arc<Chain<B>>,
    services: Arc<[BoxSvc<B, ResB>]>,
}

impl<B, ResB> Clone for Fallback<B, ResB> {
    fn clone(&self) -> Self {
        Fallback {
            chain: self.chain.clone(),
            services: self.services.clone(),
        }
    }
}

impl<B, ResB> fmt::Debug for Fallback<B, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

impl<B: 'static, ResB: 'static> Fallback<B, ResB> {
    /// A builder of a chain.
    ///
    /// ```
    /// use ratelayer_fallback::Fallback;
    /// // An empty chain: add providers before building.
    /// let err = Fallback::<String, String>::builder().build().unwrap_err();
    /// assert_eq!(err.setting, "fallback.providers");
    /// ```
    pub fn builder() -> FallbackBuilder<B, ResB> {
        FallbackBuilder::new()
    }
}

impl<B, ResB> Fallback<B, ResB> {
    pub(crate) fn from_parts(chain: Arc<Chain<B>>, services: Arc<[BoxSvc<B, ResB>]>) -> Self {
        Fallback { chain, services }
    }

    /// The stats handle shared by every clone.
    ///
    /// See [`Fallback`] for an example.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use http::{Request, Response, StatusCode};
    /// use ratelayer_fallback::{Fallback, Provider};
    /// use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let reply = |status: u16| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(String::new()).unwrap())
    /// # });
    /// let fallback = Fallback::builder()
    ///     .provider(Provider::new("down", reply(500)))
    ///     .provider(Provider::new("up", reply(200)))
    ///     .build().unwrap();
    /// let resp = fallback.clone().oneshot(Request::new(String::new())).await.unwrap();
    /// assert_eq!(resp.status(), StatusCode::OK);
    /// let stats = fallback.stats().snapshot(); // shared by every clone
    /// assert_eq!((stats.served_by_fallback, stats.provider("down").unwrap().successes), (1, 0));
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
    /// use ratelayer_fallback::{CircuitState, Fallback, Provider};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let f = Fallback::builder().provider(Provider::new("a", tower::service_fn(
    ///     |_r: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) })))
    ///     .build().unwrap();
    /// assert_eq!(f.circuit("a"), Some(CircuitState::Closed));
    /// assert_eq!(f.circuit("b"), None);
    /// # }
    /// ```
    pub fn circuit(&self, provider: &str) -> Option<CircuitState> {
        self.chain.circuit(provider)
    }
}

impl<B, ResB> Service<Request<B>> for Fallback<B, ResB>
where
    B: ReplayableBody + Send + 'static,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<ResB>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ResponseFuture::new(run(self.chain.clone(), self.services.clone(), req))
    }
}
