//! Shared helpers of the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use ratelayer_core::{ReplayBody, RequestMeta, meta};
use ratelayer_tpm::{Budget, ModelLimits, TpmConfig, TpmLimitLayer};

/// A request to `provider`/`model` whose estimate is set explicitly.
pub fn request(provider: &str, model: &str, input: u64, output: u64) -> Request<ReplayBody> {
    let mut req = Request::post("http://api.test/v1/chat/completions")
        .body(ReplayBody::from(r#"{"model":"m","messages":[]}"#))
        .unwrap();
    meta::set(
        &mut req,
        RequestMeta::new(provider, input, output).with_model(model),
    );
    req
}

/// A 30,000 TPM budget for openai/gpt-4o, without a safety margin.
pub fn layer_30k() -> TpmLimitLayer {
    TpmLimitLayer::new(
        TpmConfig::new()
            .budget(Budget::new("openai", ModelLimits::tpm(30_000)).model("gpt-4o"))
            .safety_margin(0.0),
    )
    .unwrap()
}

/// The response of [`answering`].
pub type Answer = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

/// Anthropic's separate budgets for claude-sonnet-4-5: 30,000 input and 8,000 output
/// tokens per minute, without a safety margin.
pub fn anthropic_layer() -> TpmLimitLayer {
    TpmLimitLayer::new(
        TpmConfig::new()
            .budget(Budget::new(
                "anthropic",
                ModelLimits::input_output(30_000, 8_000),
            ))
            .safety_margin(0.0),
    )
    .unwrap()
}

/// An inner service answering every request with `body`.
pub fn answering(
    body: &'static str,
) -> impl tower::Service<
    Request<ReplayBody>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = Answer,
> + Clone {
    tower::service_fn(move |_req: Request<ReplayBody>| {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(
            body.as_bytes(),
        )))))
    })
}

/// A response body fed by the test, chunk by chunk; dropping the sender ends it, sending
/// an `Err` fails it.
pub struct ChannelBody(pub tokio::sync::mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

/// The used tokens of openai/gpt-4o's TPM bucket.
pub fn used(
    layer: &TpmLimitLayer,
    provider: &str,
    model: &str,
    key: ratelayer_core::engine::BucketKey,
) -> u64 {
    let scope = ratelayer_core::Scope::new(provider).with_model(model);
    layer.state().handle(&scope).used(key).unwrap_or(0)
}
