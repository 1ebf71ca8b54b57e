//! Pacing before every attempt: the probe, remaining 0 until the reset, the learned
//! limit, and the cooldown.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use ratelayer_core::{LimitState, ReplayBody};
use ratelayer_retry::BackoffRetryLayer;
use ratelayer_tier::TierDetectLayer;
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

/// Retry outside tier detection around a service with 1 s latency answering 200 with
/// `headers`; returns the stack and the call instants.
#[allow(clippy::type_complexity)]
fn stack(
    headers: &'static [(&'static str, &'static str)],
    probe: bool,
) -> (
    impl tower::Service<
        Request<ReplayBody>,
        Response = Response<ratelayer_retry::ResponseBody<String>>,
        Error = ratelayer_core::BoxError,
        Future = impl Future + Send,
    > + Clone
    + Send
    + 'static,
    Arc<Mutex<Vec<Instant>>>,
) {
    let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let c = calls.clone();
    let inner = service_fn(move |_req: Request<ReplayBody>| {
        c.lock().unwrap().push(Instant::now());
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut b = Response::builder();
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            Ok::<_, Infallible>(b.body(String::new()).unwrap())
        }
    });
    let state = LimitState::new();
    let svc = BackoffRetryLayer::builder(state.clone())
        .pacing_margin(Duration::ZERO)
        .probe(probe)
        .build()
        .unwrap()
        .layer(TierDetectLayer::new(state).layer(inner));
    (svc, calls)
}

/// Sends three requests at once and checks all succeed.
async fn three_at_once<S>(svc: &S)
where
    S: tower::Service<
            Request<ReplayBody>,
            Response = Response<ratelayer_retry::ResponseBody<String>>,
            Error = ratelayer_core::BoxError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..3 {
        set.spawn(svc.clone().oneshot(Request::new(ReplayBody::empty())));
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap().unwrap().status(), 200);
    }
}

fn offsets(calls: &Mutex<Vec<Instant>>, start: Instant) -> Vec<u64> {
    calls
        .lock()
        .unwrap()
        .iter()
        .map(|t| (*t - start).as_millis() as u64)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn first_request_of_a_scope_probes_alone() {
    let (svc, calls) = stack(&[("x-ratelimit-limit-requests", "1000")], true);
    let start = Instant::now();
    three_at_once(&svc).await;
    // The probe at 0; the others once its response (1 s latency) was seen.
    assert_eq!(offsets(&calls, start), [0, 1000, 1000]);
}

#[tokio::test(start_paused = true)]
async fn without_the_probe_the_first_requests_start_together() {
    let (svc, calls) = stack(&[("x-ratelimit-limit-requests", "1000")], false);
    let start = Instant::now();
    three_at_once(&svc).await;
    assert_eq!(offsets(&calls, start), [0, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn remaining_zero_waits_for_the_reset() {
    let (svc, calls) = stack(
        &[
            ("x-ratelimit-limit-requests", "1000"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "30s"),
        ],
        true,
    );
    let start = Instant::now();
    svc.clone()
        .oneshot(Request::new(ReplayBody::empty()))
        .await
        .unwrap();
    svc.clone()
        .oneshot(Request::new(ReplayBody::empty()))
        .await
        .unwrap();
    // The first response (at 1 s) said none remain for 30 s.
    assert_eq!(offsets(&calls, start), [0, 31_000]);
}

/// A scope the shared state already knows (another stack sharing it saw a response
/// saying none remain) is not probed: its first attempt already waits for the reset.
#[tokio::test(start_paused = true)]
async fn a_scope_known_to_the_shared_state_is_not_probed() {
    let state = LimitState::new();
    let mut req = Request::new(ReplayBody::empty());
    let scope = ratelayer_core::meta::ensure(&mut req).scope();
    let mut said = ratelayer_core::RateLimitSnapshot::default();
    said.requests.remaining = Some(0);
    said.requests.reset = Some(Duration::from_secs(30));
    state.observe(&scope, said);
    let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let c = calls.clone();
    let svc = BackoffRetryLayer::new(state).layer(service_fn(move |_req: Request<ReplayBody>| {
        c.lock().unwrap().push(Instant::now());
        async { Ok::<_, Infallible>(Response::new(String::new())) }
    }));
    let start = Instant::now();
    svc.oneshot(req).await.unwrap();
    assert_eq!(offsets(&calls, start), [30_000]);
}

#[tokio::test(start_paused = true)]
async fn learned_limit_spaces_starts_over_the_window() {
    let (svc, calls) = stack(&[("x-ratelimit-limit-requests", "2")], true);
    let start = Instant::now();
    svc.clone()
        .oneshot(Request::new(ReplayBody::empty()))
        .await
        .unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..3 {
        set.spawn(svc.clone().oneshot(Request::new(ReplayBody::empty())));
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    // Limit 2 per minute: starts at 0 and 1 s, then 60 s and 61 s (a minute after each).
    assert_eq!(offsets(&calls, start), [0, 1000, 60_000, 61_000]);
}
