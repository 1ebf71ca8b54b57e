//! The response body of [`BackoffRetry`](crate::BackoffRetry): core's
//! [`PrefixedBody`](ratelayer_core::body::PrefixedBody), shared with the fallback layer.

/// The body of a response returned by the retry layer: the inner body unchanged (success
/// and any status the classifier does not want to read), or, for an error response that
/// was read to classify it, the bytes read (at most the configured bound) followed by the
/// rest of the inner body. Either way the caller receives every byte the server sent.
///
/// ```
/// use http_body::Body;
/// use ratelayer_retry::ResponseBody;
/// let body = ResponseBody::new(String::from("hello"));
/// assert_eq!(body.size_hint().exact(), Some(5));
/// ```
pub type ResponseBody<B> = ratelayer_core::body::PrefixedBody<B>;
