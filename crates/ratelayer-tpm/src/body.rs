//! The response body of [`TpmLimit`](crate::TpmLimit): passes every frame through
//! unchanged while a [`UsageScanner`] watches for the provider's usage, and settles the
//! request's reservation when the body ends.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::charge::Charge;
use crate::usage::UsageScanner;

/// A reservation waiting for the usage its response reports.
#[derive(Debug)]
pub(crate) struct Watch {
    scanner: UsageScanner,
    charge: Charge,
}

impl Watch {
    pub(crate) fn new(charge: Charge) -> Self {
        Watch {
            scanner: UsageScanner::new(),
            charge,
        }
    }

    fn feed<D: Buf>(&mut self, data: &D) {
        if data.chunk().len() == data.remaining() {
            self.scanner.feed(data.chunk());
            return;
        }
        let mut slices = [IoSlice::new(&[]); 64];
        let n = data.chunks_vectored(&mut slices);
        for s in &slices[..n] {
            self.scanner.feed(s);
        }
    }

    fn finish(self) {
        self.charge.settle(self.scanner.usage());
    }
}

pin_project! {
    /// The response body: the inner body's frames, unchanged. When the body ends, the
    /// request's token reservation is reconciled with the usage the provider reported in
    /// it (a JSON `usage` object or the usage of a stream's final events); a body that
    /// fails or is dropped before its end is charged its estimate.
    ///
    /// ```
    /// use http_body_util::{BodyExt, Full};
    /// use ratelayer_tpm::ResponseBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Without a reservation (the request matched no budget) it is a plain pass-through.
    /// let body = ResponseBody::passthrough(Full::new(bytes::Bytes::from_static(b"{}")));
    /// assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"{}");
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        watch: Option<Box<Watch>>,
    }
}

impl<B> ResponseBody<B> {
    /// A body that only passes `inner` through.
    ///
    /// ```
    /// use http_body::Body;
    /// use ratelayer_tpm::ResponseBody;
    /// let body = ResponseBody::passthrough(String::from("{}"));
    /// assert_eq!(body.size_hint().exact(), Some(2));
    /// ```
    pub fn passthrough(inner: B) -> Self {
        ResponseBody { inner, watch: None }
    }

    pub(crate) fn watched(inner: B, watch: Option<Watch>) -> Self {
        ResponseBody {
            inner,
            watch: watch.map(Box::new),
        }
    }

    /// The inner body.
    ///
    /// ```
    /// # use ratelayer_tpm::ResponseBody;
    /// let body = ResponseBody::passthrough(String::from("{}"));
    /// assert_eq!(body.get_ref(), "{}");
    /// ```
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The inner body, dropping the watch (its reservation is charged its estimate).
    ///
    /// ```
    /// # use ratelayer_tpm::ResponseBody;
    /// let body = ResponseBody::passthrough(String::from("{}"));
    /// assert_eq!(body.into_inner(), "{}");
    /// ```
    pub fn into_inner(self) -> B {
        self.inner
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
        let polled = this.inner.as_mut().poll_frame(cx);
        let Some(watch) = this.watch else {
            return polled;
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    watch.feed(data);
                }
                // Consumers such as hyper stop polling once the body says it has ended.
                if this.inner.is_end_stream()
                    && let Some(w) = this.watch.take()
                {
                    w.finish();
                }
            }
            // Ended: settle with what was seen. Failed: the watch is dropped below, and
            // the reservation is charged its estimate.
            Poll::Ready(None) => {
                if let Some(w) = this.watch.take() {
                    w.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                *this.watch = None;
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
