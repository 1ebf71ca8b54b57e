//! Tower-contract tests: strict inner services (readiness before every call, clones start
//! unready), and cancellation at every await point leaves nothing behind.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use ratelayer_core::error::AllProvidersFailed;
use ratelayer_core::{ReplayBody, ReplayableBody};
use ratelayer_fallback::{BreakerConfig, CircuitState, Fallback, FallbackStats, ProviderSpec};
use ratelayer_mock::contract::{Probe, StrictService};
use ratelayer_mock::{Fault, Latency, MockProvider};
use tokio_test::task;
use tower::{Service, ServiceExt};

fn chat() -> Request<ReplayBody> {
    Request::post("http://127.0.0.1/v1/chat/completions")
        .header("authorization", "Bearer sk-test")
        .body(ReplayBody::from(
            r#"{"model":"gpt-4o","max_tokens":10,"messages":[{"role":"user","content":"Hi"}]}"#,
        ))
        .unwrap()
}

struct Setup {
    fallback: Fallback<ReplayBody, ratelayer_mock::MockBody>,
    mocks: [MockProvider; 2],
    probes: [Probe; 2],
}

/// A primary that fails once (500), then answers a 429 asking for 30 s, then succeeds
/// after 1 s of latency; a backup that succeeds after 1 s. One request on it goes through
/// every await point of the fallback: readiness and call, reading an error body, the
/// retry of an unexpected failure, a wait-out of a rate limit, and a slow success.
async fn setup() -> Setup {
    let primary = MockProvider::builder()
        .rpm(2)
        .latency(Latency::fixed(Duration::from_secs(1)))
        .fault(Fault::internal_error().on_requests([2]))
        .build()
        .unwrap();
    // Fill the primary's minute (arrival indices 0 and 1).
    for _ in 0..2 {
        primary.clone().oneshot(chat()).await.unwrap();
    }
    let backup = MockProvider::builder()
        .latency(Latency::fixed(Duration::from_secs(1)))
        .build()
        .unwrap();
    let p = StrictService::new(primary.clone());
    let b = StrictService::new(backup.clone());
    let probes = [p.probe(), b.probe()];
    let fallback = Fallback::builder()
        .provider(ProviderSpec::new("primary").service(p))
        .provider(ProviderSpec::new("backup").service(b))
        .build()
        .unwrap();
    Setup {
        fallback,
        mocks: [primary, backup],
        probes,
    }
}

fn consistent(stats: &FallbackStats) {
    let s = stats.snapshot();
    assert_eq!(s.requests, s.successes + s.failures + s.cancelled, "{s:?}");
    let sent: u64 = s.providers.iter().map(|p| p.requests).sum();
    let ok: u64 = s.providers.iter().map(|p| p.successes).sum();
    assert_eq!(ok, s.successes);
    assert!(sent >= ok);
}

#[tokio::test(start_paused = true)]
async fn strict_inners_see_readiness_before_every_call() {
    let Setup {
        fallback,
        mocks,
        probes,
    } = setup().await;
    // Through a clone of a clone, readied before the call as a caller would.
    let mut svc = fallback.clone().clone();
    let resp = svc.ready().await.unwrap().call(chat()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);
    // 500 (retried once), then 429 waited out, then 200: three calls, each readied.
    assert_eq!(probes[0].calls(), 3);
    assert_eq!(probes[0].ready_polls(), 3);
    assert_eq!(probes[1].calls(), 0);
    assert_eq!(probes[0].in_flight(), 0);
    assert_eq!(
        mocks[0].journal().entries()[2..]
            .iter()
            .map(|e| e.status.map(|s| s.as_u16()))
            .collect::<Vec<_>>(),
        [Some(500), Some(429), Some(200)]
    );
    consistent(&fallback.stats());
}

#[tokio::test(start_paused = true)]
async fn cancellation_at_every_await_point_leaks_nothing() {
    let mut k = 0;
    loop {
        let Setup {
            fallback,
            mocks,
            probes,
        } = setup().await;
        let mut fut = task::spawn(fallback.clone().oneshot(chat()));
        let mut finished = false;
        for _ in 0..=k {
            if fut.poll().is_ready() {
                finished = true;
                break;
            }
            tokio::time::advance(Duration::from_millis(700)).await;
        }
        drop(fut);
        for p in &probes {
            assert_eq!(p.in_flight(), 0, "after {k} polls");
        }
        for m in &mocks {
            let j = m.journal();
            assert!(
                j.entries().iter().all(|e| e.finish.is_some()),
                "the mock saw every request end after {k} polls: {:?}",
                j.entries()
            );
        }
        consistent(&fallback.stats());
        let s = fallback.stats().snapshot();
        if finished {
            assert_eq!((s.successes, s.cancelled), (1, 0));
            assert!(k > 3, "the scenario has several await points");
            break;
        }
        assert_eq!((s.successes, s.cancelled), (0, 1), "after {k} polls");
        k += 1;
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_releases_the_half_open_circuit() {
    let primary = MockProvider::builder()
        .latency(Latency::fixed(Duration::from_secs(5)))
        .fault(Fault::internal_error().on_requests([0, 1]))
        .build()
        .unwrap();
    let backup = MockProvider::builder().build().unwrap();
    let f = Fallback::builder()
        .provider(ProviderSpec::new("primary").service(StrictService::new(primary.clone())))
        .provider(ProviderSpec::new("backup").service(StrictService::new(backup.clone())))
        .breaker(BreakerConfig::default().consecutive_failures(2))
        .build()
        .unwrap();
    f.clone().oneshot(chat()).await.unwrap();
    assert!(matches!(
        f.circuit("primary"),
        Some(CircuitState::Open { .. })
    ));
    tokio::time::advance(Duration::from_secs(31)).await;

    // The probe is in flight (5 s latency) when its request is dropped.
    let mut probe = task::spawn(f.clone().oneshot(chat()));
    assert!(probe.poll().is_pending());
    assert_eq!(primary.journal().len(), 3);
    drop(probe);
    assert_eq!(f.circuit("primary"), Some(CircuitState::HalfOpen));

    // The next request may probe: it reaches the primary and closes the circuit.
    let resp = f.clone().oneshot(chat()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(primary.journal().len(), 4);
    assert_eq!(f.circuit("primary"), Some(CircuitState::Closed));
    consistent(&f.stats());
}

/// A body that cannot be replayed.
#[derive(Debug)]
struct Once;
impl ReplayableBody for Once {}

#[tokio::test(start_paused = true)]
async fn a_body_that_cannot_be_replayed_is_sent_once() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    let failing = tower::service_fn(move |_req: Request<Once>| {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async {
            let resp = Response::builder()
                .status(500)
                .body(ReplayBody::empty())
                .unwrap();
            Ok::<_, Infallible>(resp)
        }
    });
    let f = Fallback::builder()
        .provider(ProviderSpec::new("primary").service(StrictService::new(failing.clone())))
        .provider(ProviderSpec::new("backup").service(StrictService::new(failing)))
        .build()
        .unwrap();
    let err = f.clone().oneshot(Request::new(Once)).await.unwrap_err();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    assert_eq!(all.attempts.len(), 1);
    assert!(all.attempts[0].reason.starts_with("not_replayable"));
    consistent(&f.stats());
}

#[test]
fn public_types_are_send_sync_and_the_future_is_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Fallback<ReplayBody, ratelayer_mock::MockBody>>();
    send_sync::<ratelayer_fallback::FallbackLayer<ReplayBody, ratelayer_mock::MockBody>>();
    send_sync::<FallbackStats>();
    send::<ratelayer_fallback::ResponseFuture<ratelayer_mock::MockBody>>();
}
