//! Tower contract of BackoffRetry: readiness re-driven per attempt, clones, nothing held
//! while sleeping, cancellation at every await point leaks nothing.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use ratelayer_core::{LimitState, ReplayBody, Scope};
use ratelayer_mock::contract::StrictService;
use ratelayer_retry::BackoffRetryLayer;
use tokio::time::Instant;
use tokio_test::assert_pending;
use tower::limit::ConcurrencyLimitLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

/// An inner service: 1 s of latency, the first `failures` calls answer 429 (no hints),
/// then 200.
fn inner(
    failures: usize,
) -> impl Service<
    Request<ReplayBody>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
> + Clone
+ Send {
    let n = Arc::new(AtomicUsize::new(0));
    service_fn(move |_req: Request<ReplayBody>| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let status = if i < failures { 429 } else { 200 };
            Ok(Response::builder()
                .status(status)
                .body(String::new())
                .unwrap())
        }
    })
}

fn req() -> Request<ReplayBody> {
    Request::new(ReplayBody::from("{}"))
}

#[tokio::test(start_paused = true)]
async fn every_attempt_redrives_readiness_and_clones_start_unready() {
    let strict = StrictService::new(inner(2));
    let probe = strict.probe();
    let mut svc = BackoffRetryLayer::new(LimitState::new()).layer(strict);
    svc.ready().await.unwrap();
    // A clone of a readied service is unready: it must be polled itself.
    let mut clone = svc.clone();
    let resp = clone.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(probe.calls(), 3);
    // StrictService panics on a call without readiness: three calls, each after its own
    // successful poll_ready.
    assert!(probe.ready_polls() >= 3);
    assert_eq!(probe.in_flight(), 0);
    assert_eq!(probe.max_in_flight(), 1);
}

/// With a concurrency limit of 1 underneath, a request sleeping in backoff holds no
/// permit: another request goes through meanwhile. The same for a request waiting for a
/// cooldown before its first attempt (its readied service is given back).
#[tokio::test(start_paused = true)]
async fn nothing_is_held_while_sleeping() {
    let state = LimitState::new();
    let svc = BackoffRetryLayer::builder(state.clone())
        .pacing(false)
        .share_cooldown(false)
        .build()
        .unwrap()
        .layer(ConcurrencyLimitLayer::new(1).layer(inner(1)));
    let a = tokio::spawn(svc.clone().oneshot(req()));
    // A's first attempt answers 429 at 1 s; it then sleeps 20 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = Instant::now();
    let b = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(b.status(), 200);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(a.await.unwrap().unwrap().status(), 200);

    // A cooldown before the first attempt: the readied service (holding the permit) is
    // dropped while waiting.
    let scope = Scope::new("default");
    state.set_cooldown(&scope, Instant::now() + Duration::from_secs(60));
    let mut waiting = svc.clone();
    waiting.ready().await.unwrap();
    let w = tokio::spawn(waiting.call(req()));
    tokio::task::yield_now().await;
    let mut other = svc.clone();
    let got = tokio::time::timeout(Duration::from_secs(5), other.ready()).await;
    assert!(
        got.is_ok(),
        "the waiting request still holds the only permit"
    );
    drop(other);
    let start = Instant::now();
    assert_eq!(w.await.unwrap().unwrap().status(), 200);
    assert!(start.elapsed() >= Duration::from_secs(59));
}

/// Drop the response future after k polls, for every k through a whole life (probe wait,
/// readiness, call, backoff sleep, second call), and check nothing leaked: no in-flight
/// inner future, the only permit free, the scope's probe released (a new request goes).
#[tokio::test(start_paused = true)]
async fn cancellation_at_every_await_point_leaks_nothing() {
    // Steps between polls (ms): through the probe's call (1 s), its 429, the 20 s
    // backoff, and the second attempt.
    const STEPS: [u64; 13] = [
        300, 300, 300, 300, 5_000, 10_000, 4_500, 300, 300, 300, 300, 300, 300,
    ];
    for k in 0..=STEPS.len() {
        let strict = StrictService::new(inner(1));
        let probe = strict.probe();
        let state = LimitState::new();
        let svc = BackoffRetryLayer::new(state.clone())
            .layer(ConcurrencyLimitLayer::new(1).layer(strict));
        // A first request holds the probe so that the second waits for it.
        let mut first = tokio_test::task::spawn(svc.clone().oneshot(req()));
        let mut second = tokio_test::task::spawn(svc.clone().oneshot(req()));
        let mut done = false;
        for step in STEPS.iter().take(k) {
            let _ = first.poll();
            if second.poll().is_ready() {
                done = true;
                break;
            }
            tokio::time::advance(Duration::from_millis(*step)).await;
        }
        if !done {
            drop(second);
        }
        drop(first);
        assert_eq!(probe.in_flight(), 0, "k = {k}");
        // Nothing leaked: a fresh request completes (permit free, probe released).
        let r = tokio::time::timeout(Duration::from_secs(600), svc.clone().oneshot(req())).await;
        assert!(r.is_ok(), "k = {k}: a fresh request is stuck");
        assert_eq!(probe.in_flight(), 0, "k = {k}");
    }
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_delegated() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<ReplayBody>, Response<String>>();
    let mut svc =
        tower_test::mock::Spawn::new(BackoffRetryLayer::new(LimitState::new()).layer(mock));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let fut = tokio::spawn(svc.call(req()));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_response(
        Response::builder()
            .status(429)
            .header("retry-after", "3")
            .body(String::new())
            .unwrap(),
    );
    // The retry waits 3 s, re-drives readiness (allow one more), and sends again.
    handle.allow(1);
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(String::from("ok")));
    assert_eq!(fut.await.unwrap().unwrap().status(), 200);
}

/// A body that never ends and records its drop.
struct Stalled(Arc<AtomicUsize>);

impl http_body::Body for Stalled {
    type Data = bytes::Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        std::task::Poll::Pending
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Cancelled while reading an error body to classify it: the body is dropped with the
/// future, and the probe is released.
#[tokio::test(start_paused = true)]
async fn cancellation_while_reading_an_error_body() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let strict = StrictService::new(service_fn(move |_req: Request<ReplayBody>| {
        let body = Stalled(d.clone());
        std::future::ready(Ok::<_, Infallible>(
            Response::builder().status(500).body(body).unwrap(),
        ))
    }));
    let probe = strict.probe();
    let svc = BackoffRetryLayer::new(LimitState::new()).layer(strict);
    let mut fut = tokio_test::task::spawn(svc.clone().oneshot(req()));
    assert_pending!(fut.poll());
    assert_eq!(probe.calls(), 1);
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    drop(fut);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    assert_eq!(probe.in_flight(), 0);
    // The scope is not stuck behind a probe.
    let mut next = tokio_test::task::spawn(svc.clone().oneshot(req()));
    assert_pending!(next.poll());
    assert_eq!(probe.calls(), 2);
}
