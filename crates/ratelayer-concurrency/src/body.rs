//! [`ResponseBody`]: holds the concurrency permit until the body ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::limiter::Permit;

pin_project! {
    /// The response body of [`Concurrency`](crate::Concurrency): the inner body, holding
    /// the request's concurrency permit until it ends (or fails) or is dropped, because
    /// providers count an open stream as a request in flight.
    ///
    /// ```
    /// use http_body_util::BodyExt;
    /// use ratelayer_concurrency::ResponseBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let body = ResponseBody::detached(http_body_util::Full::new(bytes::Bytes::from("hi")));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, permit: Option<Permit>) -> Self {
        ResponseBody { inner, permit }
    }

    /// A body that holds no permit (for responses made outside the layer).
    ///
    /// ```
    /// use ratelayer_concurrency::ResponseBody;
    /// let body = ResponseBody::detached(String::from("made elsewhere"));
    /// assert!(!body.holds_permit());
    /// ```
    pub fn detached(inner: B) -> Self {
        ResponseBody {
            inner,
            permit: None,
        }
    }

    /// Whether the body still holds its permit.
    ///
    /// ```
    /// use http_body_util::BodyExt;
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
    /// use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use std::convert::Infallible;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{RequestMeta, meta};
    /// # let request = || {
    /// #     let mut req = Request::new(String::new());
    /// #     meta::set(&mut req, RequestMeta::new("kimi", 10, 10));
    /// #     req
    /// # };
    /// # let inner = tower::service_fn(|_: Request<String>| async { Ok::<_, Infallible>(Response::new(String::from("ok"))) });
    /// let layer = ConcurrencyLayer::new(ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1))).unwrap();
    /// let mut body = layer.layer(inner).oneshot(request()).await.unwrap().into_body();
    /// assert!(body.holds_permit());
    /// body.frame().await; // the last frame: the permit goes back
    /// assert!(!body.holds_permit());
    /// # }
    /// ```
    pub fn holds_permit(&self) -> bool {
        self.permit.is_some()
    }

    /// The inner body.
    ///
    /// ```
    /// use ratelayer_concurrency::ResponseBody;
    /// let body = ResponseBody::detached(String::from("hi"));
    /// assert_eq!(body.get_ref(), "hi");
    /// ```
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !this.inner.is_end_stream() => {}
            _ => {
                // The end of the stream, or an error: the exchange is over.
                this.permit.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
