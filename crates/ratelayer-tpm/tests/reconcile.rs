//! Reconciliation with what the provider counted: JSON usage, streamed usage, the
//! remaining-tokens header, a cut stream, a rejected request, calibration.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{ChannelBody, answering, anthropic_layer, layer_30k, request, used};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use ratelayer_core::ReplayBody;
use ratelayer_core::engine::BucketKey;
use ratelayer_tpm::TpmLimitLayer;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const TPM: BucketKey = BucketKey::TOKENS_PER_MINUTE;
const ITPM: BucketKey = BucketKey::INPUT_TOKENS_PER_MINUTE;
const OTPM: BucketKey = BucketKey::OUTPUT_TOKENS_PER_MINUTE;

type Replied =
    std::future::Ready<Result<Response<http_body_util::Full<Bytes>>, std::convert::Infallible>>;

/// An inner service answering every request with this status, headers and body.
fn replying(
    status: StatusCode,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> impl tower::Service<
    Request<ReplayBody>,
    Response = Response<http_body_util::Full<Bytes>>,
    Error = std::convert::Infallible,
    Future = Replied,
> + Clone {
    tower::service_fn(move |_req: Request<ReplayBody>| {
        let mut resp = Response::builder().status(status);
        for (name, value) in headers {
            resp = resp.header(*name, *value);
        }
        let resp = resp
            .body(http_body_util::Full::new(Bytes::from_static(
                body.as_bytes(),
            )))
            .unwrap();
        std::future::ready(Ok(resp))
    })
}

fn tpm(layer: &TpmLimitLayer) -> u64 {
    used(layer, "openai", "gpt-4o", TPM)
}

#[tokio::test(start_paused = true)]
async fn json_usage_refunds_the_difference() {
    let layer = layer_30k();
    let svc = layer.layer(answering(
        r#"{"id":"c","choices":[{"message":{"content":"hi"}}],
            "usage":{"prompt_tokens":3000,"completion_tokens":1000,"total_tokens":4000}}"#,
    ));
    let resp = svc
        .clone()
        .oneshot(request("openai", "gpt-4o", 10_000, 2_000))
        .await
        .unwrap();
    assert_eq!(tpm(&layer), 12_000, "the estimate until the body is read");
    resp.into_body().collect().await.unwrap();
    assert_eq!(tpm(&layer), 4_000, "reconciled with the reported usage");
    // What was refunded is usable at once.
    let t0 = Instant::now();
    svc.oneshot(request("openai", "gpt-4o", 26_000, 0))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn json_usage_above_the_estimate_debits_more() {
    let layer = layer_30k();
    let svc = layer.layer(answering(
        r#"{"usage":{"prompt_tokens":9000,"completion_tokens":500}}"#,
    ));
    let resp = svc
        .oneshot(request("openai", "gpt-4o", 5_000, 500))
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    assert_eq!(tpm(&layer), 9_500);
}

type Streamed = std::future::Ready<Result<Response<ChannelBody>, std::convert::Infallible>>;

/// An inner service whose single response streams from a channel the test holds.
fn streaming(
    rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>,
) -> impl tower::Service<
    Request<ReplayBody>,
    Response = Response<ChannelBody>,
    Error = std::convert::Infallible,
    Future = Streamed,
> + Clone {
    let rx = Arc::new(Mutex::new(Some(rx)));
    tower::service_fn(move |_req: Request<ReplayBody>| {
        let rx = rx.lock().unwrap().take().unwrap();
        std::future::ready(Ok(Response::new(ChannelBody(rx))))
    })
}

type Sender = mpsc::UnboundedSender<Result<Bytes, std::io::Error>>;

/// `layer` over a streaming inner service, and the response of a request with this
/// estimate, its body fed through `Sender`.
async fn streamed(
    layer: TpmLimitLayer,
    provider: &str,
    model: &str,
    estimate: (u64, u64),
) -> (
    TpmLimitLayer,
    Sender,
    Response<ratelayer_tpm::ResponseBody<ChannelBody>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let svc = layer.layer(streaming(rx));
    let resp = svc
        .oneshot(request(provider, model, estimate.0, estimate.1))
        .await
        .unwrap();
    (layer, tx, resp)
}

/// An openai/gpt-4o request estimated at 12,000 tokens (10,000 in, 2,000 out), streamed.
async fn streamed_openai() -> (
    TpmLimitLayer,
    Sender,
    Response<ratelayer_tpm::ResponseBody<ChannelBody>>,
) {
    streamed(layer_30k(), "openai", "gpt-4o", (10_000, 2_000)).await
}

#[tokio::test(start_paused = true)]
async fn streamed_usage_is_read_as_the_stream_passes() {
    let (layer, tx, resp) = streamed_openai().await;
    let mut body = resp.into_body();
    tx.send(Ok(Bytes::from_static(
        b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
    )))
    .unwrap();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(
        first.starts_with(b"data: "),
        "frames pass through unchanged"
    );
    assert_eq!(tpm(&layer), 12_000);
    // The final chunk's usage arrives split across two frames.
    tx.send(Ok(Bytes::from_static(
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2500,",
    )))
    .unwrap();
    tx.send(Ok(Bytes::from_static(
        b"\"completion_tokens\":700,\"total_tokens\":3200}}\n\ndata: [DONE]\n\n",
    )))
    .unwrap();
    drop(tx);
    while let Some(f) = body.frame().await {
        f.unwrap();
    }
    assert_eq!(tpm(&layer), 3_200);
}

#[tokio::test(start_paused = true)]
async fn anthropic_stream_reconciles_input_and_output_budgets() {
    let (layer, tx, resp) = streamed(
        anthropic_layer(),
        "anthropic",
        "claude-sonnet-4-5",
        (4_000, 4_096),
    )
    .await;
    let u = |k| used(&layer, "anthropic", "claude-sonnet-4-5", k);
    assert_eq!((u(ITPM), u(OTPM)), (4_000, 4_096));
    for event in [
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3100,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":250}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ] {
        tx.send(Ok(Bytes::from(event))).unwrap();
    }
    drop(tx);
    resp.into_body().collect().await.unwrap();
    assert_eq!((u(ITPM), u(OTPM)), (3_100, 250));
}

#[tokio::test(start_paused = true)]
async fn a_cut_stream_is_charged_its_estimate() {
    let (layer, tx, resp) = streamed_openai().await;
    let mut body = resp.into_body();
    tx.send(Ok(Bytes::from_static(b"data: {\"choices\":[]}\n\n")))
        .unwrap();
    body.frame().await.unwrap().unwrap();
    drop(body); // the caller gives up mid-stream
    assert_eq!(tpm(&layer), 12_000);

    // A stream that fails mid-way: the same.
    let (layer, tx, resp) = streamed_openai().await;
    tx.send(Err(std::io::Error::other("connection reset")))
        .unwrap();
    assert!(resp.into_body().collect().await.is_err());
    assert_eq!(tpm(&layer), 12_000);
}

#[tokio::test(start_paused = true)]
async fn the_remaining_tokens_header_corrects_the_budget() {
    let layer = layer_30k();
    let svc = layer.layer(replying(
        StatusCode::OK,
        &[
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "20s"),
        ],
        "{}",
    ));
    let resp = svc
        .clone()
        .oneshot(request("openai", "gpt-4o", 1_000, 0))
        .await
        .unwrap();
    // The snapshot the layer parsed rides on the response, for the layers outside
    // (tier detection reads it instead of parsing the headers again) and the caller.
    let snap = resp.extensions().get::<ratelayer_core::RateLimitSnapshot>();
    assert_eq!(snap.and_then(|s| s.tokens.remaining), Some(0));
    resp.into_body().collect().await.unwrap();
    // We booked 1,000 of 30,000, but the provider says nothing remains for 20 s: the next
    // request waits for its reset.
    let t0 = Instant::now();
    svc.oneshot(request("openai", "gpt-4o", 100, 0))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn a_rejected_request_is_refunded() {
    let layer = layer_30k();
    let svc = layer.layer(replying(StatusCode::TOO_MANY_REQUESTS, &[], "{}"));
    let resp = svc
        .oneshot(request("openai", "gpt-4o", 10_000, 2_000))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "passed through"
    );
    assert_eq!(tpm(&layer), 0);
}

#[tokio::test(start_paused = true)]
async fn calibration_raises_later_estimates() {
    let layer = layer_30k();
    let svc = layer.layer(answering(
        r#"{"usage":{"prompt_tokens":1300,"completion_tokens":0,"total_tokens":1300}}"#,
    ));
    let resp = svc
        .clone()
        .oneshot(request("openai", "gpt-4o", 1_000, 0))
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    let scope = ratelayer_core::Scope::new("openai").with_model("gpt-4o");
    assert!((layer.calibration().factor(&scope) - 1.3).abs() < 1e-9);
    // The next request of 1,000 estimated input tokens books 1,300.
    let resp = svc
        .oneshot(request("openai", "gpt-4o", 1_000, 0))
        .await
        .unwrap();
    assert_eq!(tpm(&layer), 1_300 + 1_300);
    drop(resp);
}

#[tokio::test(start_paused = true)]
async fn a_refund_wakes_the_request_waiting_for_it() {
    let (layer, tx, resp) = streamed(layer_30k(), "openai", "gpt-4o", (18_000, 2_000)).await;
    // 20,000 booked and in flight: a request of 15,000 waits (for the window, 60 s).
    let svc = layer.layer(answering("{}"));
    let mut waiting = tokio_test::task::spawn(svc.oneshot(request("openai", "gpt-4o", 15_000, 0)));
    tokio_test::assert_pending!(waiting.poll());
    tokio::time::advance(Duration::from_secs(5)).await;
    tokio_test::assert_pending!(waiting.poll());
    // The response reports 3,000 tokens: the refund lets the waiting request go now.
    tx.send(Ok(Bytes::from_static(
        b"{\"usage\":{\"prompt_tokens\":2000,\"completion_tokens\":1000,\"total_tokens\":3000}}",
    )))
    .unwrap();
    drop(tx);
    resp.into_body().collect().await.unwrap();
    assert!(waiting.is_woken());
    tokio_test::assert_ready!(waiting.poll()).unwrap();
    assert_eq!(tpm(&layer), 18_000);
}

#[tokio::test(start_paused = true)]
async fn a_lower_limit_in_the_headers_tightens_the_budget() {
    let layer = layer_30k();
    let svc = layer.layer(replying(
        StatusCode::OK,
        &[("x-ratelimit-limit-tokens", "10000")],
        r#"{"usage":{"prompt_tokens":1000,"completion_tokens":0}}"#,
    ));
    let resp = svc
        .clone()
        .oneshot(request("openai", "gpt-4o", 1_000, 0))
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    // Configured 30,000, but the provider says 10,000: 1,000 + 9,500 must wait.
    let t0 = Instant::now();
    svc.clone()
        .oneshot(request("openai", "gpt-4o", 9_500, 0))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(60));
    let err = svc
        .oneshot(request("openai", "gpt-4o", 10_001, 0))
        .await
        .unwrap_err();
    let e = err.downcast_ref::<ratelayer_core::NeverFits>().unwrap();
    assert_eq!(e.capacity, 10_000);
}

/// An inner layer that holds every request back `hold` before sending it (like a
/// concurrency queue) and stamps the response with when it was sent.
fn holding(
    hold: Duration,
) -> impl tower::Service<
    Request<ReplayBody>,
    Response = Response<http_body_util::Full<Bytes>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_req: Request<ReplayBody>| async move {
        tokio::time::sleep(hold).await;
        let sent = Instant::now();
        let mut resp = Response::new(http_body_util::Full::new(Bytes::from_static(
            br#"{"usage":{"prompt_tokens":20000,"completion_tokens":0,"total_tokens":20000}}"#,
        )));
        ratelayer_core::SentAt(sent).stamp(resp.extensions_mut());
        Ok::<_, std::convert::Infallible>(resp)
    })
}

#[tokio::test(start_paused = true)]
async fn a_request_held_back_below_counts_from_when_it_was_sent() {
    let layer = layer_30k();
    let t0 = Instant::now();
    let resp = layer
        .layer(holding(Duration::from_secs(10)))
        .oneshot(request("openai", "gpt-4o", 20_000, 0))
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(10));
    // Booked at 0 s but sent at 10 s: the provider counts the 20,000 tokens until 70 s,
    // so a 20,000-token request booked now waits until then, not until 60 s.
    let svc = layer.layer(answering(r#"{}"#));
    svc.oneshot(request("openai", "gpt-4o", 20_000, 0))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(70));
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_goes_ahead_on_a_refund_that_delays_the_head_not_at_all() {
    use tokio_test::{assert_pending, assert_ready, task};
    // 16,000 booked at 0 s for a response whose body is still open, 10,000 more done.
    let (layer, tx, resp) = streamed(layer_30k(), "openai", "gpt-4o", (16_000, 0)).await;
    let svc = layer.layer(answering("{}"));
    svc.clone()
        .oneshot(request("openai", "gpt-4o", 10_000, 0))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    let t0 = Instant::now();
    // The head needs everything booked at 0 s to leave the window at 60 s; 5,000 do not
    // fit now either, and queue behind it.
    let mut head = task::spawn(svc.clone().oneshot(request("openai", "gpt-4o", 25_000, 0)));
    assert_pending!(head.poll());
    let mut small = task::spawn(svc.clone().oneshot(request("openai", "gpt-4o", 5_000, 0)));
    assert_pending!(small.poll());
    tokio::time::advance(Duration::from_secs(10)).await;
    // The open response used 6,000: 10,000 come back. The head still needs 60 s, where
    // the small request (counted until 80 s) leaves it room: the small one goes now.
    tx.send(Ok(Bytes::from_static(
        br#"{"usage":{"prompt_tokens":6000,"completion_tokens":0,"total_tokens":6000}}"#,
    )))
    .unwrap();
    drop(tx);
    resp.into_body().collect().await.unwrap();
    assert!(small.is_woken());
    assert_ready!(small.poll()).unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(10));
    assert_pending!(head.poll());
    tokio::time::advance(Duration::from_secs(40)).await;
    assert_ready!(head.poll()).unwrap();
    assert_eq!(tpm(&layer), 30_000);
}

/// A Kimi chat request: one user message of `text`, `max_tokens` 10.
fn kimi_request(text: &str) -> Request<ReplayBody> {
    let body = serde_json::json!({
        "model": "kimi-k2",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": text}],
    });
    Request::post("https://api.moonshot.ai/v1/chat/completions")
        .body(ReplayBody::from(body.to_string()))
        .unwrap()
}

/// After English responses have driven the calibration to its floor, a Chinese request
/// is still reserved in full: the factor shrinks only the ASCII part of an estimate (here
/// its role and per-message charges), and the Chinese response does not move it.
#[tokio::test(start_paused = true)]
async fn a_cjk_request_after_english_traffic_is_reserved_in_full() {
    let layer = TpmLimitLayer::new(
        ratelayer_tpm::TpmConfig::new()
            .budget(
                ratelayer_tpm::Budget::new("moonshot", ratelayer_tpm::ModelLimits::tpm(1_000_000))
                    .model("kimi-k2"),
            )
            .safety_margin(0.0),
    )
    .unwrap();
    let scope = ratelayer_core::Scope::new("moonshot").with_model("kimi-k2");
    let reserved = |layer: &TpmLimitLayer| used(layer, "moonshot", "kimi-k2", TPM);
    // English: 3,000 ASCII bytes, estimated 1,000 tokens; the provider counts 600.
    let english = "lorem ipsum dolor sit amet ".repeat(112)[..3_000].to_owned();
    let svc = layer.layer(answering(
        r#"{"usage":{"prompt_tokens":600,"completion_tokens":10,"total_tokens":610}}"#,
    ));
    for _ in 0..150 {
        let resp = svc.clone().oneshot(kimi_request(&english)).await.unwrap();
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(layer.calibration().factor(&scope), 0.75);

    // An English request of the same size is reserved at three quarters of its input.
    let mut probe = kimi_request(&english);
    let m = ratelayer_core::meta::ensure(&mut probe).clone();
    assert_eq!(m.dense_input_tokens, 0);
    let before = reserved(&layer);
    let held = svc.clone().oneshot(probe).await.unwrap();
    let english_booked = reserved(&layer) - before;
    assert_eq!(
        english_booked,
        (m.input_tokens * 3).div_ceil(4) + m.output_tokens
    );
    drop(held);

    // Chinese: 3,600 bytes, 1,200 tokens by length, all dense.
    let chinese = "请用三句话总结以下报告。".repeat(100);
    let mut probe = kimi_request(&chinese);
    let m = ratelayer_core::meta::ensure(&mut probe).clone();
    assert_eq!(m.dense_input_tokens, 1_200);
    let overhead = m.input_tokens - m.dense_input_tokens; // "user", per message, priming
    assert_eq!(overhead, 2 + 4 + 3);
    let cjk_svc = layer.layer(answering(
        r#"{"usage":{"prompt_tokens":1100,"completion_tokens":10,"total_tokens":1110}}"#,
    ));
    let before = reserved(&layer);
    let resp = cjk_svc.clone().oneshot(probe).await.unwrap();
    let cjk_booked = reserved(&layer) - before;
    // The Chinese text in full; only its 9 ASCII tokens of overhead shrink (to 7).
    assert_eq!(
        cjk_booked,
        m.dense_input_tokens + (overhead * 3).div_ceil(4) + m.output_tokens
    );
    assert!(cjk_booked >= m.dense_input_tokens + m.output_tokens);
    // Without the split, its input would have been reserved a quarter short (907 for
    // 1,209).
    assert!(cjk_booked > (m.input_tokens * 3).div_ceil(4) + m.output_tokens + 290);
    // Its response (the provider counted 1,100) teaches the factor nothing: the ASCII
    // part is below the sample size.
    resp.into_body().collect().await.unwrap();
    assert_eq!(layer.calibration().factor(&scope), 0.75);
    // Reconciled to what the provider counted, as any request.
    assert_eq!(reserved(&layer) - before, 1_110);
}
