//! The response body of [`Fallback`](crate::Fallback).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of [`Fallback`](crate::Fallback): the provider's body, streamed
    /// as is, or (for an error response whose body the fallback read to classify it) the
    /// bytes it read, then whatever the provider's body still holds.
    ///
    /// ```
    /// use http_body_util::BodyExt;
    /// use ratelayer_fallback::ResponseBody;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let body = ResponseBody::new(http_body_util::Full::new(bytes::Bytes::from("ok")));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        prefix: Option<Bytes>,
        #[pin]
        inner: B,
        inner_done: bool,
    }
}

impl<B> ResponseBody<B> {
    /// The provider's body, unchanged.
    ///
    /// ```
    /// # let _ = ratelayer_fallback::ResponseBody::new(http_body_util::Empty::<bytes::Bytes>::new());
    /// ```
    pub fn new(inner: B) -> Self {
        ResponseBody {
            prefix: None,
            inner,
            inner_done: false,
        }
    }

    /// `prefix` (already read from `inner`), then the rest of `inner` unless it ended.
    pub(crate) fn buffered(prefix: Bytes, inner: B, inner_done: bool) -> Self {
        ResponseBody {
            prefix: (!prefix.is_empty()).then_some(prefix),
            inner,
            inner_done,
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if *this.inner_done {
            return Poll::Ready(None);
        }
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            *this.inner_done = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && (self.inner_done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        if self.inner_done {
            return SizeHint::with_exact(prefix);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(prefix));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(prefix));
        }
        hint
    }
}
