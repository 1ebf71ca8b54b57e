//! The judge: ratelayer-mock's journal, in-process under paused time.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits, Reservoir};
use ratelayer_core::meta::{self, EstimateSource};
use ratelayer_core::{Dialect, RequestMeta};
use ratelayer_mock::{ChatRequest, Latency, MockProvider};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

/// Chat request number `i` to `provider` (at `base`, or in-process), tagged with
/// `x-request-id: i`.
fn chat_to(base: Option<&str>, provider: &str, i: usize, stream: bool) -> Request<Full<Bytes>> {
    let mut chat = ChatRequest::new("kimi-k2");
    if let Some(base) = base {
        chat = chat.base_url(base);
    }
    let mut req = chat
        .key("sk-test")
        .user("Hello")
        .max_tokens(20)
        .stream(stream)
        .request_id(i.to_string())
        .build(Dialect::OpenAi);
    meta::set(
        &mut req,
        RequestMeta {
            provider: provider.into(),
            credential: None,
            model: Some("kimi-k2".into()),
            input_tokens: 10,
            dense_input_tokens: 0,
            output_tokens: 20,
            source: EstimateSource::Explicit,
        },
    );
    req
}

/// Sends `n` requests from `n` concurrent callers (arriving in order) to the server at `base`
/// (in-process when `None`), each reading its response body to the end.
async fn run_to<S, B>(svc: S, base: Option<&str>, provider: &str, n: usize, stream: bool)
where
    S: tower::Service<
            Request<Full<Bytes>>,
            Response = http::Response<ratelayer_concurrency::ResponseBody<B>>,
            Error = ratelayer_core::BoxError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let svc = svc.clone();
            let req = chat_to(base, provider, i, stream);
            tokio::spawn(async move {
                let res = svc.oneshot(req).await.unwrap();
                assert_eq!(res.status(), 200);
                res.into_body().collect().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// The judge for a limit of 1: all `n` admitted, never two in flight, started in arrival
/// order.
fn assert_one_at_a_time_in_order(mock: &MockProvider, n: usize) {
    let journal = mock.journal();
    assert_eq!(journal.len(), n);
    assert_eq!(journal.rate_limited(), 0, "{:?}", journal.by_status());
    assert_eq!(journal.max_in_flight(), 1);
    let expect: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(started_ids(mock), expect, "arrival order");
}

fn started_ids(mock: &MockProvider) -> Vec<String> {
    let journal = mock.journal();
    let mut by_start: Vec<_> = journal
        .entries()
        .iter()
        .map(|e| (e.start.unwrap(), e.id, e.request_id.clone().unwrap()))
        .collect();
    by_start.sort();
    by_start.into_iter().map(|(_, _, r)| r).collect()
}

#[tokio::test(start_paused = true)]
async fn limit_one_with_20_callers_never_overlaps_and_keeps_arrival_order() {
    let mock = MockProvider::builder()
        .concurrency(1)
        .latency(Latency::fixed(Duration::from_millis(700)))
        .build()
        .unwrap();
    let layer = ConcurrencyLayer::new(
        ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1)),
    )
    .unwrap();
    run_to(layer.layer(mock.clone()), None, "kimi", 20, false).await;
    assert_one_at_a_time_in_order(&mock, 20);
}

#[tokio::test(start_paused = true)]
async fn a_reservoir_of_4_per_minute_holds_in_every_window() {
    let mock = MockProvider::builder()
        .rpm(4)
        .concurrency(1)
        .latency(Latency::fixed(Duration::from_secs(2)))
        .build()
        .unwrap();
    let layer = ConcurrencyLayer::new(
        ConcurrencyConfig::new().provider(
            "kimi",
            Limits::new()
                .max_concurrent(1)
                .reservoir(Reservoir::new(4, Duration::from_secs(60))),
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    run_to(layer.layer(mock.clone()), None, "kimi", 12, false).await;
    let journal = mock.journal();
    assert_eq!(journal.rate_limited(), 0, "{:?}", journal.by_status());
    assert!(journal.max_requests_in_window(Duration::from_secs(60)) <= 4);
    assert_eq!(journal.max_in_flight(), 1);
    // Exactly paced, not slower: the 9th..12th start a little after 120 s.
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_secs(120) && elapsed < Duration::from_secs(140),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_streamed_response_holds_the_permit_until_its_end() {
    let mock = MockProvider::builder()
        .concurrency(1)
        .stream_chunk_delay(Duration::from_millis(300))
        .build()
        .unwrap();
    let layer = ConcurrencyLayer::new(
        ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1)),
    )
    .unwrap();
    run_to(layer.layer(mock.clone()), None, "kimi", 5, true).await;
    let journal = mock.journal();
    assert_eq!(journal.rate_limited(), 0, "{:?}", journal.by_status());
    assert_eq!(journal.max_in_flight(), 1);
    let mut spans: Vec<_> = journal
        .entries()
        .iter()
        .map(|e| (e.start.unwrap(), e.finish.unwrap()))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 > w[0].0, "the stream took time");
        assert!(
            w[1].0 >= w[0].1,
            "next start before the stream ended: {w:?}"
        );
    }
}

/// Runs 30 callers through `config` to a mock of `mock` and judges: no 429, at most
/// (exactly) `concurrency` in flight, starts at least `spacing` apart. Returns the journal.
async fn example_limits(
    json: &str,
    provider: &str,
    mock: ratelayer_mock::MockBuilder,
    concurrency: usize,
    spacing: Duration,
) -> ratelayer_mock::Journal {
    let config: ConcurrencyConfig = serde_json::from_str(json).unwrap();
    let mock = mock.concurrency(concurrency).build().unwrap();
    let layer = ConcurrencyLayer::new(config).unwrap();
    run_to(layer.layer(mock.clone()), None, provider, 30, false).await;
    let journal = mock.journal();
    assert_eq!(journal.rate_limited(), 0, "{:?}", journal.by_status());
    assert_eq!(journal.max_in_flight(), concurrency);
    let mut starts: Vec<_> = journal.entries().iter().map(|e| e.start.unwrap()).collect();
    starts.sort();
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= spacing, "{:?}", w[1] - w[0]);
    }
    journal
}

/// GLM's example limits: 10 concurrent, 100 ms between starts.
#[tokio::test(start_paused = true)]
async fn glm_example_limits_ten_concurrent_and_100ms_apart() {
    example_limits(
        r#"{ "providers": { "glm": { "max_concurrent": 10, "min_spacing_ms": 100 } } }"#,
        "glm",
        MockProvider::builder().latency(Latency::fixed(Duration::from_secs(3))),
        10,
        Duration::from_millis(100),
    )
    .await;
}

/// The same judge over real loopback HTTP, with hyper-util's client underneath.
#[tokio::test(start_paused = true)]
async fn over_loopback_http_limit_one_never_overlaps_and_keeps_order() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let mock = MockProvider::builder()
        .concurrency(1)
        .latency(Latency::fixed(Duration::from_millis(200)))
        .build()
        .unwrap();
    let server = mock.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = server.url();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let layer = ConcurrencyLayer::new(
        ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1)),
    )
    .unwrap();
    run_to(layer.layer(client), Some(&base), "kimi", 20, false).await;
    assert_one_at_a_time_in_order(&mock, 20);
    server.shutdown().await;
}

/// No reservoir configured: the limit the provider stated (here the tier's 2 requests per
/// minute, as the tier detector publishes it) is enforced.
#[tokio::test(start_paused = true)]
async fn a_request_limit_learned_from_the_provider_is_enforced() {
    use ratelayer_core::state::TierInfo;
    use ratelayer_core::{LimitState, Scope};

    let mock = MockProvider::builder().rpm(2).build().unwrap();
    let state = LimitState::new();
    let mut tier = TierInfo::new("free", Duration::from_secs(20));
    tier.rpm = Some(2);
    state.set_tier(&Scope::new("kimi").with_model("kimi-k2"), tier);
    let layer = ConcurrencyLayer::new(
        ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(4)),
    )
    .unwrap()
    .with_state(state);
    let t0 = Instant::now();
    run_to(layer.layer(mock.clone()), None, "kimi", 6, false).await;
    let journal = mock.journal();
    assert_eq!(journal.rate_limited(), 0, "{:?}", journal.by_status());
    assert!(journal.max_requests_in_window(Duration::from_secs(60)) <= 2);
    assert!(t0.elapsed() >= Duration::from_secs(120));
}

/// Featherless's example limits: 5 concurrent, 200 ms between starts, 20 per minute.
#[tokio::test(start_paused = true)]
async fn featherless_example_limits_hold_together() {
    let journal = example_limits(
        r#"{ "providers": { "featherless": { "max_concurrent": 5, "min_spacing_ms": 200,
              "reservoir": { "requests": 20, "interval_secs": 60 } } } }"#,
        "featherless",
        MockProvider::builder()
            .rpm(20)
            .latency(Latency::fixed(Duration::from_secs(2))),
        5,
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(journal.max_requests_in_window(Duration::from_secs(60)), 20);
}

/// A tier published while requests flow (the tier detector's job) paces the next ones
/// at once: the layer derives its learned limit again when the state's tiers change.
#[tokio::test(start_paused = true)]
async fn a_tier_published_mid_stream_paces_the_next_requests() {
    use ratelayer_core::state::TierInfo;
    use ratelayer_core::{LimitState, Scope};

    let state = LimitState::new();
    let layer = ConcurrencyLayer::new(
        ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(100)),
    )
    .unwrap()
    .with_state(state.clone());
    let svc = layer.layer(tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
    }));
    let req = || {
        let mut r = Request::post("http://127.0.0.1:1/v1/chat/completions")
            .body(Full::new(Bytes::new()))
            .unwrap();
        meta::set(&mut r, RequestMeta::new("kimi", 1, 1).with_model("kimi-k2"));
        r
    };
    // Nothing learned yet: no pacing.
    let t0 = Instant::now();
    for _ in 0..3 {
        svc.clone().oneshot(req()).await.unwrap();
    }
    assert_eq!(Instant::now(), t0);
    // The provider's tier says 1 request per minute.
    let mut tier = TierInfo::new("free", Duration::from_secs(20));
    tier.rpm = Some(1);
    state.set_tier(&Scope::new("kimi").with_model("kimi-k2"), tier);
    svc.clone().oneshot(req()).await.unwrap();
    svc.clone().oneshot(req()).await.unwrap();
    assert!(
        Instant::now() - t0 >= Duration::from_secs(60),
        "the second request after the tier waited its minute: {:?}",
        Instant::now() - t0
    );
}
