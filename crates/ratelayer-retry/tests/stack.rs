//! The two layers together against ratelayer-mock (the judge): in-process under paused
//! time, and over loopback HTTP with hyper-util's legacy client underneath.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use ratelayer_core::{LimitState, ReplayBody};
use ratelayer_mock::MockProvider;
use ratelayer_retry::{BackoffRetryLayer, RetryReport};
use ratelayer_tier::TierDetectLayer;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","max_tokens":20,"messages":[{"role":"user","content":"Hello"}]}"#;

fn chat(uri: &str) -> Request<ReplayBody> {
    Request::post(uri)
        .header("authorization", "Bearer sk-test")
        .header("content-type", "application/json")
        .body(ReplayBody::from(CHAT))
        .unwrap()
}

/// Retry outside tier detection, both on one shared state, around `inner`.
fn stack<S: Clone>(
    inner: S,
    pacing: bool,
) -> ratelayer_retry::BackoffRetry<ratelayer_tier::TierDetect<S>> {
    let state = LimitState::new();
    BackoffRetryLayer::builder(state.clone())
        .pacing(pacing)
        .build()
        .unwrap()
        .layer(TierDetectLayer::new(state).layer(inner))
}

/// Free tier (3 RPM): ten concurrent requests all succeed, in (about) the minimum time
/// 3 RPM allows (requests 10 needs the fourth minute: 180 s), collecting (almost) no 429s:
/// the first request probes the scope, the tier layer learns limit 3 and remaining, and
/// the retry layer paces the rest on it (and on the cooldown, had a 429 come).
#[tokio::test(start_paused = true)]
async fn free_tier_ten_concurrent_requests_in_minimum_time() {
    let mock = MockProvider::builder()
        .rpm(3)
        .tpm(1_000_000)
        .build()
        .unwrap();
    let stack = stack(mock.clone(), true);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let svc = stack.clone();
        tasks.spawn(async move {
            let resp = svc.oneshot(chat("/v1/chat/completions")).await.unwrap();
            let status = resp.status();
            let report = RetryReport::of(&resp);
            resp.into_body().collect().await.unwrap();
            (status, report)
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        let (status, _report) = r.unwrap();
        assert_eq!(status, StatusCode::OK);
        ok += 1;
    }
    let took = start.elapsed();
    let journal = mock.journal();
    assert_eq!(ok, 10);
    assert_eq!(journal.count_status(StatusCode::OK), 10);
    assert_eq!(journal.rate_limited(), 0, "429s collected");
    assert!(journal.max_requests_in_window(Duration::from_secs(60)) <= 3);
    let min = Duration::from_secs(180);
    assert!(took >= min, "{took:?}");
    assert!(
        took <= min.mul_f64(1.1),
        "{took:?} is more than 10% above {min:?}"
    );
}

/// After a 429, the cooldown makes queued requests wait instead of each collecting its
/// own 429 — even with pacing off (the cooldown alone).
#[tokio::test(start_paused = true)]
async fn cooldown_alone_keeps_queued_requests_from_collecting_429s() {
    let mock = MockProvider::builder()
        .rpm(3)
        .tpm(1_000_000)
        .build()
        .unwrap();
    let stack = stack(mock.clone(), false);
    // Use up the minute, then collect one 429.
    for _ in 0..3 {
        stack
            .clone()
            .oneshot(chat("/v1/chat/completions"))
            .await
            .unwrap();
    }
    let first = tokio::spawn(stack.clone().oneshot(chat("/v1/chat/completions")));
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(mock.journal().rate_limited(), 1);
    // Five more while the cooldown is in force: none reaches the mock before it ends.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..5 {
        tasks.spawn(stack.clone().oneshot(chat("/v1/chat/completions")));
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(mock.journal().len(), 4);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
}

/// hyper-util's legacy client underneath, over loopback HTTP: no transport-level retry
/// re-sends a 429; the mock's journal holds exactly the attempts the layer reports.
#[tokio::test(start_paused = true)]
async fn hyper_util_client_sends_exactly_the_layers_attempts() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let mock = MockProvider::builder()
        .rpm(2)
        .tpm(1_000_000)
        .build()
        .unwrap();
    let server = mock.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("{}/v1/chat/completions", server.url());
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody>();
    // Pacing off, so that the layer does collect 429s and has to retry them.
    let stack = stack(client, false);
    let mut attempts = 0;
    let mut statuses = vec![];
    for _ in 0..4 {
        let resp = stack.clone().oneshot(chat(&url)).await.unwrap();
        let report = RetryReport::of(&resp);
        attempts += report.attempts as usize;
        statuses.push(resp.status().as_u16());
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(statuses, [200, 200, 200, 200]);
    let journal = mock.journal();
    assert!(journal.rate_limited() >= 1, "the test must exercise a 429");
    assert_eq!(journal.len(), attempts);
    assert_eq!(journal.count_status(StatusCode::OK), 4);
    assert_eq!(journal.rate_limited(), attempts - 4);
    server.shutdown().await;
}
