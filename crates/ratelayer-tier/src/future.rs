//! The response future of [`TierDetect`](crate::TierDetect).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use http::Response;
use pin_project_lite::pin_project;
use ratelayer_core::{RateLimitSnapshot, Scope, headers};

use crate::layer::Detector;

pin_project! {
    /// Resolves to the inner service's response, after publishing what its headers said.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use http::{Request, Response};
    /// use ratelayer_core::{LimitState, ReplayBody, meta};
    /// use ratelayer_tier::{ResponseFuture, TierDetectLayer};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let inner = service_fn(|_: Request<ReplayBody>| async {
    /// #     Ok::<_, Infallible>(Response::builder().header("x-ratelimit-limit-requests", "500").body(String::new()).unwrap())
    /// # });
    /// let layer = TierDetectLayer::new(LimitState::new());
    /// let mut svc = layer.layer(inner);
    /// let mut req = Request::new(ReplayBody::empty());
    /// let scope = meta::ensure(&mut req).scope();
    /// let fut: ResponseFuture<_> = svc.ready().await.unwrap().call(req);
    /// assert_eq!(layer.handle().recommendation(&scope).rpm, None); // nothing seen yet
    /// fut.await.unwrap();
    /// assert_eq!(layer.handle().recommendation(&scope).rpm, Some(500));
    /// # }
    /// ```
    pub struct ResponseFuture<F> {
        #[pin]
        pub(crate) inner: F,
        pub(crate) scope: Option<Scope>,
        pub(crate) shared: Arc<Detector>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut out = ready!(this.inner.poll(cx));
        if let (Ok(resp), Some(scope)) = (&mut out, this.scope.take()) {
            let status = resp.status();
            // The snapshot a layer inside attached (the TPM layer's), else the headers
            // parsed here when they state anything; the wall clock is read here, at the
            // edge, only to parse.
            if let Some(snap) = resp.extensions().get::<RateLimitSnapshot>() {
                this.shared.on_response(&scope, status, snap.clone());
            } else if headers::states_limits(resp.headers()) {
                let hint = || headers::Dialect::for_provider(scope.provider());
                // The extensions are taken out for the call (headers are read meanwhile).
                let mut ext = std::mem::take(resp.extensions_mut());
                let snap =
                    headers::parse_once(status, resp.headers(), &mut ext, SystemTime::now, hint);
                *resp.extensions_mut() = ext;
                this.shared.on_response(&scope, status, snap);
            }
        }
        Poll::Ready(out)
    }
}
