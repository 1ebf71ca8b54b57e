//! An axum server forwarding `/v1/*` to an upstream LLM API through the ratelayer stack,
//! so every local process shares one rate-limit budget (and one key, held here).
//!
//! `cargo run --example axum_proxy`, then point your clients at `http://127.0.0.1:8787`
//! (no key needed on their side; any credential header they send is dropped).
//!
//! Upstream: OpenAI when `OPENAI_API_KEY` is set (`OPENAI_BASE_URL` optional), else
//! ratelayer-mock on loopback. `PROXY_LISTEN` changes the listening address.
//!
//! Failures the stack decides become HTTP answers: a wait longer than allowed is a 429
//! with `Retry-After`, a request that can never fit a 413, a full queue a 503, anything
//! else a 502.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::any;
use http::{HeaderName, Request, Response, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ratelayer::core::{BoxError, LimitState, NeverFits, QueueFull, ReplayBody, WaitTooLong};
use ratelayer::{CREDENTIAL_HEADERS, Preset, ProviderLimits, ProviderService};
use tower::{Layer, ServiceExt};

type Upstream = ProviderService<Client<hyper_rustls::HttpsConnector<HttpConnector>, ReplayBody>>;

/// The largest request body forwarded.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Request headers not forwarded: hop-by-hop, recomputed, or credentials (the proxy
/// sends its own).
fn dropped(name: &HeaderName) -> bool {
    CREDENTIAL_HEADERS.contains(name)
        || [
            header::HOST,
            header::CONNECTION,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
        ]
        .contains(name)
}

async fn forward(State(stack): State<Upstream>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large or unreadable",
            None,
        );
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Request::new(ReplayBody::new(bytes));
    *out.method_mut() = parts.method;
    *out.uri_mut() = path.parse().unwrap_or_default();
    for (name, value) in &parts.headers {
        if !dropped(name) {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    match stack.oneshot(out).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => decided(&e),
    }
}

/// The HTTP answer for a failure the stack decided.
fn decided(e: &BoxError) -> Response<Body> {
    if let Some(w) = e.downcast_ref::<WaitTooLong>() {
        let secs = w.wait.as_secs().max(1);
        return error(StatusCode::TOO_MANY_REQUESTS, &w.to_string(), Some(secs));
    }
    if let Some(n) = e.downcast_ref::<NeverFits>() {
        return error(StatusCode::PAYLOAD_TOO_LARGE, &n.to_string(), None);
    }
    if let Some(q) = e.downcast_ref::<QueueFull>() {
        return error(StatusCode::SERVICE_UNAVAILABLE, &q.to_string(), Some(1));
    }
    error(
        StatusCode::BAD_GATEWAY,
        &format!("upstream failed: {e}"),
        None,
    )
}

fn error(status: StatusCode, message: &str, retry_after: Option<u64>) -> Response<Body> {
    let body = serde_json::json!({"error": {"message": message, "type": "ratelayer_proxy"}});
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Some(s) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, s.into());
    }
    resp
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listen: SocketAddr = std::env::var("PROXY_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8787".to_owned())
        .parse()?;
    let (preset, _mock) = match std::env::var("OPENAI_API_KEY") {
        Ok(key) if !key.trim().is_empty() => {
            let base = std::env::var("OPENAI_BASE_URL")
                .unwrap_or_else(|_| "https://api.openai.com".to_owned());
            println!("upstream: {base}");
            (Preset::openai().base_url(base).api_key(key.trim()), None)
        }
        _ => {
            let mock = ratelayer::mock::MockProvider::builder()
                .rpm(60)
                .tpm(40_000)
                .concurrency(4)
                .build()?;
            let server = ratelayer::mock::serve(mock, ([127, 0, 0, 1], 0).into()).await?;
            println!(
                "no OPENAI_API_KEY: upstream is ratelayer-mock at {}",
                server.url()
            );
            let preset = Preset::openai()
                .base_url(server.url())
                .api_key("sk-mock")
                .limits(
                    ProviderLimits::default()
                        .rpm(60)
                        .tpm(40_000)
                        .max_concurrent(4),
                );
            (preset, Some(server))
        }
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(https);
    let stack: Upstream = preset
        .max_wait(Duration::from_secs(60))
        .layer(&LimitState::new())?
        .layer(client);

    let app = Router::new()
        .route("/v1/{*rest}", any(forward))
        .with_state(stack);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "ratelayer proxy on http://{} (Ctrl-C stops it); try:\n  curl http://{}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"gpt-4o-mini\",\"max_tokens\":16,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'",
        listener.local_addr()?,
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
