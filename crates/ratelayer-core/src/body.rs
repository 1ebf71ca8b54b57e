//! Request bodies that the layers can read and replay.
//!
//! Retrying or falling back sends the same request again, and token estimation reads the
//! JSON body. Both need a body that is held in memory. [`ReplayBody`] is such a body for
//! hyper-util's client; [`ReplayableBody`] is the trait the layers use, implemented for
//! `ReplayBody`, `String`, `Vec<u8>`, [`Bytes`], `&'static str`, `()` and http-body-util's
//! `Full` and `Empty`. A body type that does not implement it can still pass through every
//! layer by implementing the trait with its defaults: it is then sent once, never retried.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// What the layers need of a request body: its bytes, if they are in memory, and a copy
/// for another attempt, if one can be made.
///
/// Both methods default to `None`: such a body is sent once and its response returned as
/// is, and its tokens are estimated conservatively from headers alone.
///
/// ```
/// use ratelayer_core::ReplayableBody;
/// let body = String::from(r#"{"model":"gpt-4o"}"#);
/// assert_eq!(body.bytes(), Some(&b"{\"model\":\"gpt-4o\"}"[..]));
/// assert_eq!(body.try_clone().as_deref(), Some(r#"{"model":"gpt-4o"}"#));
/// ```
pub trait ReplayableBody: Sized {
    /// The whole body, if it is held in memory.
    fn bytes(&self) -> Option<&[u8]> {
        None
    }

    /// A copy that sends the whole body again from the start, if one can be made.
    fn try_clone(&self) -> Option<Self> {
        None
    }
}

/// A request body held in memory: cheap to clone (reference-counted), readable by the
/// layers, and an [`http_body::Body`] for hyper and hyper-util.
///
/// A clone always starts from the beginning, even if the original was already sent.
///
/// ```
/// use http_body_util::BodyExt;
/// use ratelayer_core::ReplayBody;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let body = ReplayBody::from(r#"{"model":"gpt-4o","messages":[]}"#);
/// let again = body.clone();
/// let sent = body.collect().await.unwrap().to_bytes();
/// assert_eq!(sent, again.collect().await.unwrap().to_bytes());
/// # }
/// ```
#[derive(Debug, Default)]
pub struct ReplayBody {
    bytes: Bytes,
    sent: bool,
}

impl ReplayBody {
    /// A body of these bytes.
    ///
    /// ```
    /// use ratelayer_core::ReplayBody;
    /// let body = ReplayBody::new(b"{}".to_vec());
    /// assert_eq!(body.as_bytes().as_ref(), b"{}");
    /// ```
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        ReplayBody {
            bytes: bytes.into(),
            sent: false,
        }
    }

    /// An empty body.
    ///
    /// ```
    /// use http_body::Body;
    /// use ratelayer_core::ReplayBody;
    /// let body = ReplayBody::empty();
    /// assert!(body.as_bytes().is_empty());
    /// assert!(body.is_end_stream());
    /// ```
    pub fn empty() -> Self {
        Self::default()
    }

    /// A body holding `value` serialized as JSON.
    ///
    /// ```
    /// use ratelayer_core::ReplayBody;
    /// let body = ReplayBody::json(&serde_json::json!({"model": "gpt-4o"}));
    /// assert_eq!(body.as_bytes().as_ref(), br#"{"model":"gpt-4o"}"#);
    /// ```
    pub fn json(value: &serde_json::Value) -> Self {
        // Serializing a `Value` to a Vec cannot fail.
        Self::new(serde_json::to_vec(value).unwrap_or_default())
    }

    /// The whole body.
    ///
    /// ```
    /// use ratelayer_core::ReplayBody;
    /// let body = ReplayBody::from("hello");
    /// assert_eq!(body.as_bytes().as_ref(), b"hello");
    /// ```
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl Clone for ReplayBody {
    fn clone(&self) -> Self {
        ReplayBody::new(self.bytes.clone())
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent || self.bytes.is_empty() {
            self.sent = true;
            return Poll::Ready(None);
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(self.bytes.clone()))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent || self.bytes.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.sent {
            SizeHint::with_exact(0)
        } else {
            SizeHint::with_exact(self.bytes.len() as u64)
        }
    }
}

macro_rules! from_into_bytes {
    ($($t:ty),*) => {$(
        impl From<$t> for ReplayBody {
            fn from(value: $t) -> Self {
                ReplayBody::new(value)
            }
        }
    )*};
}
from_into_bytes!(Bytes, Vec<u8>, String, &'static str, &'static [u8]);

impl ReplayableBody for ReplayBody {
    fn bytes(&self) -> Option<&[u8]> {
        Some(&self.bytes)
    }
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayableBody for String {
    fn bytes(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayableBody for Vec<u8> {
    fn bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayableBody for Bytes {
    fn bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayableBody for &'static str {
    fn bytes(&self) -> Option<&[u8]> {
        Some(str::as_bytes(self))
    }
    fn try_clone(&self) -> Option<Self> {
        Some(self)
    }
}

impl ReplayableBody for () {
    fn bytes(&self) -> Option<&[u8]> {
        Some(&[])
    }
    fn try_clone(&self) -> Option<Self> {
        Some(())
    }
}

/// `Full` hides its bytes, so it can be replayed but not read: prefer [`ReplayBody`].
impl<D: bytes::Buf + Clone> ReplayableBody for http_body_util::Full<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> ReplayableBody for http_body_util::Empty<D> {
    fn bytes(&self) -> Option<&[u8]> {
        Some(&[])
    }
    fn try_clone(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }
}

/// A copy of `req` for another attempt: method, URI, version, headers, extensions and a
/// replayed body. `None` when the body cannot be replayed.
///
/// ```
/// use http::{HeaderMap, Request};
/// use ratelayer_core::body::try_clone_request;
///
/// let mut req = Request::post("http://localhost/v1/chat/completions")
///     .header("content-type", "application/json")
///     .body(String::from("{}"))
///     .unwrap();
/// req.extensions_mut().insert(7u32);
/// let copy = try_clone_request(&req).unwrap();
/// assert_eq!(copy.uri(), req.uri());
/// assert_eq!(copy.headers(), req.headers());
/// assert_eq!(copy.extensions().get::<u32>(), Some(&7));
/// assert_eq!(copy.body(), "{}");
/// ```
pub fn try_clone_request<B: ReplayableBody>(req: &Request<B>) -> Option<Request<B>> {
    let body = req.body().try_clone()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}

/// Copies a frame's data into [`Bytes`].
fn frame_to_bytes<D: bytes::Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
}

pin_project! {
    /// A response body that a layer may have partly read: the inner body unchanged, or,
    /// for a response whose start was read (an error body, to classify it), the bytes read,
    /// then any read error or trailers met while reading, then the rest of the inner body.
    /// Either way the caller receives every byte the server sent, as [`Bytes`] frames.
    ///
    /// The retry and fallback layers return it (as their `ResponseBody`).
    ///
    /// ```
    /// use http_body::Body;
    /// use ratelayer_core::body::PrefixedBody;
    /// let body = PrefixedBody::new(String::from("hello"));
    /// assert_eq!(body.size_hint().exact(), Some(5));
    /// ```
    pub struct PrefixedBody<B: Body> {
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

impl<B: Body> PrefixedBody<B> {
    /// Wraps a body unchanged.
    ///
    /// ```
    /// use http_body::Body;
    /// use http_body_util::BodyExt;
    /// use ratelayer_core::body::PrefixedBody;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let body = PrefixedBody::new(String::from("hello"));
    /// assert_eq!(body.size_hint().exact(), Some(5)); // the inner body's hint
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    /// # }
    /// ```
    pub fn new(body: B) -> Self {
        PrefixedBody {
            kind: Kind::Passthrough { body },
        }
    }

    /// A body that yields `data` (already read from the inner body), then `error` or
    /// `trailers` if reading met them, then what `rest` still holds (`None`: it ended).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use ratelayer_core::body::PrefixedBody;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let rest = Box::pin(Full::new(Bytes::from(" world")));
    /// let body = PrefixedBody::buffered(Bytes::from("hello"), None, None, Some(rest));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "hello world");
    /// # }
    /// ```
    pub fn buffered(
        data: Bytes,
        error: Option<B::Error>,
        trailers: Option<HeaderMap>,
        rest: Option<Pin<Box<B>>>,
    ) -> Self {
        PrefixedBody {
            kind: Kind::Buffered {
                data: (!data.is_empty()).then_some(data),
                error,
                trailers,
                rest,
            },
        }
    }
}

impl<B: Body> std::fmt::Debug for PrefixedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "passthrough",
            Kind::Buffered { .. } => "buffered",
        };
        f.debug_struct("PrefixedBody").field("kind", &kind).finish()
    }
}

impl<B: Body> Body for PrefixedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Passthrough { body } => {
                let f = ready!(body.poll_frame(cx));
                Poll::Ready(f.map(|r| r.map(frame_to_bytes)))
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
                        Some(f) => return Poll::Ready(Some(f.map(frame_to_bytes))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_clone_of_a_sent_body_replays_everything() {
        let mut b = ReplayBody::from("hello");
        assert_eq!(b.size_hint().exact(), Some(5));
        let first = (&mut b).collect().await.unwrap().to_bytes();
        assert_eq!(&first[..], b"hello");
        assert!(b.is_end_stream());
        assert_eq!(b.size_hint().exact(), Some(0));
        let again = b.clone().collect().await.unwrap().to_bytes();
        assert_eq!(&again[..], b"hello");
        assert_eq!(b.bytes(), Some(&b"hello"[..]));
    }

    #[tokio::test]
    async fn empty_body_ends_at_once() {
        let b = ReplayBody::empty();
        assert!(b.is_end_stream());
        assert!(b.collect().await.unwrap().to_bytes().is_empty());
    }

    #[test]
    fn full_replays_but_cannot_be_read() {
        let f = http_body_util::Full::new(Bytes::from_static(b"x"));
        assert!(f.bytes().is_none());
        assert!(f.try_clone().is_some());
    }
}
