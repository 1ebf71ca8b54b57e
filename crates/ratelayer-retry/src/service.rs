//! The [`BackoffRetry`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use ratelayer_core::{BoxError, ReplayableBody, meta};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::future::ResponseFuture;
use crate::layer::Shared;
use crate::policy::Deadline;

/// The service of [`BackoffRetryLayer`](crate::BackoffRetryLayer).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use ratelayer_core::{LimitState, ReplayBody};
/// use ratelayer_retry::{BackoffRetryLayer, RetryReport};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let svc = BackoffRetryLayer::new(LimitState::new()).layer(service_fn(|_req: Request<ReplayBody>| async {
///     Ok::<_, Infallible>(Response::new(String::from("ok")))
/// }));
/// let resp = svc.oneshot(Request::new(ReplayBody::empty())).await.unwrap();
/// // A first attempt that succeeded with no wait: no extension to allocate.
/// assert!(resp.extensions().get::<RetryReport>().is_none());
/// assert_eq!(RetryReport::of(&resp).attempts, 1);
/// # }
/// ```
#[derive(Debug)]
pub struct BackoffRetry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> BackoffRetry<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        BackoffRetry { inner, shared }
    }
}

impl<S: Clone> Clone for BackoffRetry<S> {
    fn clone(&self) -> Self {
        BackoffRetry {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for BackoffRetry<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ReqB: ReplayableBody,
    ResB: Body,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqB, ResB>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let scope = meta::ensure(&mut req).scope();
        let deadline = req.extensions().get::<Deadline>().map(|d| d.0);
        // The readied service moves into the future; this instance keeps a fresh clone.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(service, req, scope, deadline, self.shared.clone())
    }
}
