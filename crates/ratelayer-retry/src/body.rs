//! The response body of [`BackoffRetry`](crate::BackoffRetry).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response returned by the retry layer: the inner body unchanged
    /// (success and any status the classifier does not want to read), or, for an error
    /// response that was read to classify it, the bytes read (at most the configured
    /// bound) followed by the rest of the inner body. Either way the caller receives
    /// every byte the server sent, as [`Bytes`] frames.
    ///
    /// ```
    /// use http_body::Body;
    /// use ratelayer_retry::ResponseBody;
    /// let body = ResponseBody::new(String::from("hello"));
    /// assert_eq!(body.size_hint().exact(), Some(5));
    /// ```
    pub struct ResponseBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Passthrough { #[pin] body: B },
        Buffered {
            data: Option<Bytes>,
            error: Option<B::Error>,
            trailers: Option<HeaderMap>,
            rest: Option<Pin<Box<B>>>,
        },
    }
}

impl<B: Body> ResponseBody<B> {
    /// Wraps a body unchanged.
    ///
    /// ```
    /// use ratelayer_retry::ResponseBody;
    /// let body = ResponseBody::new(String::new());
    /// ```
    pub fn new(body: B) -> Self {
        ResponseBody {
            kind: Kind::Passthrough { body },
        }
    }

    pub(crate) fn buffered(
        data: Bytes,
        error: Option<B::Error>,
        trailers: Option<HeaderMap>,
        rest: Option<Pin<Box<B>>>,
    ) -> Self {
        ResponseBody {
            kind: Kind::Buffered {
                data: (!data.is_empty()).then_some(data),
                error,
                trailers,
                rest,
            },
        }
    }
}

impl<B: Body> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "passthrough",
            Kind::Buffered { .. } => "buffered",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

fn to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Passthrough { body } => {
                let f = ready!(body.poll_frame(cx));
                Poll::Ready(f.map(|r| r.map(to_bytes)))
            }
            KindProj::Buffered {
                data,
                error,
                trailers,
                rest,
            } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                if let Some(e) = error.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                if let Some(r) = rest {
                    match ready!(r.as_mut().poll_frame(cx)) {
                        Some(f) => return Poll::Ready(Some(f.map(to_bytes))),
                        None => *rest = None,
                    }
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passthrough { body } => body.is_end_stream(),
            Kind::Buffered {
                data,
                error,
                trailers,
                rest,
            } => {
                data.is_none()
                    && error.is_none()
                    && trailers.is_none()
                    && rest.as_ref().is_none_or(|r| r.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passthrough { body } => body.size_hint(),
            Kind::Buffered { data, rest, .. } => {
                let n = data.as_ref().map_or(0, |d| d.len() as u64);
                match rest {
                    None => SizeHint::with_exact(n),
                    Some(r) => {
                        let h = r.size_hint();
                        let mut s = SizeHint::new();
                        s.set_lower(h.lower().saturating_add(n));
                        if let Some(u) = h.upper() {
                            s.set_upper(u.saturating_add(n));
                        }
                        s
                    }
                }
            }
        }
    }
}
