//! Credential headers are sensitive: never logged, never shown in `Debug` output.

use http::HeaderName;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

/// The headers that carry LLM API credentials: `authorization` (OpenAI, Moonshot and
/// most OpenAI-compatible APIs), `x-api-key` (Anthropic) and `api-key` (Azure OpenAI).
///
/// ```
/// use ratelayer::{CREDENTIAL_HEADERS, Provider};
/// assert!(Provider::ALL.iter().all(|p| CREDENTIAL_HEADERS.contains(&p.credential_header())));
/// assert_eq!(CREDENTIAL_HEADERS[1], "x-api-key");
/// ```
pub const CREDENTIAL_HEADERS: [HeaderName; 3] = [
    http::header::AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
];

/// tower-http's [`SetSensitiveRequestHeadersLayer`] for [`CREDENTIAL_HEADERS`]: the
/// header values are marked sensitive, so `Debug` output (and so tracing) shows
/// `Sensitive` instead of the key. The presets put it outermost.
///
/// ```
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(ratelayer::sensitive_credentials())
///     .service_fn(|req: Request<()>| async move {
///         let shown = format!("{:?}", req.headers());
///         Ok::<_, std::convert::Infallible>(Response::new(shown))
///     });
/// let req = Request::builder().header("x-api-key", "sk-secret").body(()).unwrap();
/// let shown = svc.oneshot(req).await.unwrap().into_body();
/// assert!(!shown.contains("sk-secret") && shown.contains("Sensitive"));
/// # }
/// ```
pub fn sensitive_credentials() -> SetSensitiveRequestHeadersLayer {
    SetSensitiveRequestHeadersLayer::new(CREDENTIAL_HEADERS)
}
