//! The [`TierDetect`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use ratelayer_core::{ReplayableBody, meta};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::layer::Detector;

/// The service of [`TierDetectLayer`](crate::TierDetectLayer): passes every request
/// through unchanged and reads the rate-limit headers of every response (429s included).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use ratelayer_core::{LimitState, ReplayBody};
/// use ratelayer_tier::TierDetectLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = TierDetectLayer::new(LimitState::new()).layer(service_fn(|_req: Request<ReplayBody>| async {
///     Ok::<_, Infallible>(Response::new(String::new()))
/// }));
/// let resp = svc.oneshot(Request::new(ReplayBody::empty())).await.unwrap();
/// assert_eq!(resp.status(), 200);
/// # }
/// ```
#[derive(Debug)]
pub struct TierDetect<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Detector>,
}

impl<S: Clone> Clone for TierDetect<S> {
    fn clone(&self) -> Self {
        TierDetect {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for TierDetect<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: ReplayableBody,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let scope = meta::ensure(&mut req).scope();
        self.shared.on_request(&scope);
        ResponseFuture {
            inner: self.inner.call(req),
            scope: Some(scope),
            shared: self.shared.clone(),
        }
    }
}
