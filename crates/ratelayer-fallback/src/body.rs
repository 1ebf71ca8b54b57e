//! The response body of [`Fallback`](crate::Fallback): core's
//! [`PrefixedBody`](ratelayer_core::body::PrefixedBody), shared with the retry layer.

/// The response body of [`Fallback`](crate::Fallback): the provider's body, streamed as
/// is, or (for an error response whose body the fallback read to classify it) the bytes it
/// read and any trailers met, then whatever the provider's body still holds.
///
/// ```
/// use http_body_util::BodyExt;
/// use ratelayer_fallback::ResponseBody;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let body = ResponseBody::new(http_body_util::Full::new(bytes::Bytes::from("ok")));
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
/// # }
/// ```
pub type ResponseBody<B> = ratelayer_core::body::PrefixedBody<B>;
