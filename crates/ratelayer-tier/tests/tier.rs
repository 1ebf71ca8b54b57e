//! TierDetectLayer behaviour: detection, publication, cooldowns, events, contract.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use ratelayer_core::{LimitState, ReplayBody, Scope, meta};
use ratelayer_mock::contract::StrictService;
use ratelayer_tier::{TierDetectLayer, TierTables};
use tokio_test::{assert_pending, assert_ready};
use tower::{Layer, Service, ServiceExt, service_fn};

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One global subscriber per test binary (scoped subscribers and parallel tests make
/// tracing's callsite cache flaky); assertions look for lines only their test writes.
fn capture() -> (Logs, ()) {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = Logs::default();
        let w = logs.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(sub).unwrap();
        logs
    });
    (logs.clone(), ())
}

fn response(status: u16, headers: &[(&str, &str)]) -> Response<String> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(String::new()).unwrap()
}

fn scope_of(req: &mut Request<ReplayBody>) -> Scope {
    meta::ensure(req).scope()
}

/// A service answering each request with the next canned response.
fn canned(
    responses: Vec<Response<String>>,
) -> impl Service<
    Request<ReplayBody>,
    Response = Response<String>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<String>, Infallible>>,
> + Clone {
    let queue = Arc::new(Mutex::new(responses.into_iter()));
    service_fn(move |_req: Request<ReplayBody>| {
        let r = queue.lock().unwrap().next().unwrap();
        std::future::ready(Ok::<_, Infallible>(r))
    })
}

#[tokio::test(start_paused = true)]
async fn free_tier_detected_from_a_429_with_event_and_cooldown() {
    let (logs, ()) = capture();
    let state = LimitState::new();
    let layer = TierDetectLayer::new(state.clone());
    let handle = layer.handle();
    let svc = layer.layer(canned(vec![response(
        429,
        &[
            ("x-ratelimit-limit-requests", "3"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20s"),
            ("retry-after-ms", "17500"),
        ],
    )]));
    let mut req = Request::new(ReplayBody::empty());
    let scope = scope_of(&mut req);
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);

    let t = state.tier(&scope).unwrap();
    assert_eq!((&*t.name, t.rpm), ("free", Some(3)));
    assert_eq!(t.base_delay, Duration::from_secs(20));
    assert_eq!(t.pacing, Duration::from_secs(20));
    assert_eq!(
        state.cooldown_remaining(&scope),
        Duration::from_millis(17_500)
    );
    let obs = handle.limits(&scope).unwrap();
    assert_eq!(obs.snapshot.requests.remaining, Some(0));
    assert!(handle.recommendation(&scope).detected);
    let text = logs.text();
    assert!(
        text.contains("detected tier: free (rpm 3, base delay 20s)"),
        "{text}"
    );
    assert!(
        text.contains("tier=free") && text.contains("rpm=3"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn tier_changes_are_published_and_logged_once() {
    let (logs, ()) = capture();
    let state = LimitState::new();
    let ok = |limit: &str, remaining: &str| {
        response(
            200,
            &[
                ("x-ratelimit-limit-requests", limit),
                ("x-ratelimit-remaining-requests", remaining),
            ],
        )
    };
    let mut svc = TierDetectLayer::new(state.clone()).layer(canned(vec![
        ok("500", "499"),
        ok("500", "498"),
        ok("10000", "9999"),
    ]));
    let mut req = Request::new(ReplayBody::empty());
    let scope = scope_of(&mut req);
    let mut names = vec![];
    for _ in 0..3 {
        let req = Request::new(ReplayBody::empty());
        svc.ready().await.unwrap().call(req).await.unwrap();
        let t = state.tier(&scope).unwrap();
        names.push((t.name.to_string(), t.base_delay));
    }
    assert_eq!(
        names,
        [
            ("tier-2".to_string(), Duration::from_millis(120)),
            ("tier-2".to_string(), Duration::from_millis(120)),
            ("tier-5".to_string(), Duration::from_millis(6)),
        ]
    );
    let text = logs.text();
    assert_eq!(
        text.matches("detected tier: tier-2 (rpm 500, base delay 0.12s)")
            .count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("detected tier: tier-5 (rpm 10000, base delay 0.006s)")
            .count(),
        1,
        "{text}"
    );
    // No cooldown without a 429.
    assert_eq!(state.cooldown_until(&scope), None);
}

/// The headers are parsed once per response: a snapshot a layer inside attached (as the
/// TPM layer does) is what the tier is detected from; without one, the layer parses the
/// headers and attaches the snapshot for the layers outside.
#[tokio::test(start_paused = true)]
async fn a_snapshot_attached_inside_is_read_not_parsed_again() {
    // (Limits no other test logs: the log capture is shared by the binary's tests.)
    let state = LimitState::new();
    let headers = [("x-ratelimit-limit-requests", "4321")];
    let mut attached = response(200, &headers);
    let mut inside = ratelayer_core::RateLimitSnapshot::default();
    inside.requests.limit = Some(12_345);
    attached.extensions_mut().insert(inside);
    let mut svc =
        TierDetectLayer::new(state.clone()).layer(canned(vec![attached, response(200, &headers)]));
    let mut req = Request::new(ReplayBody::empty());
    let scope = scope_of(&mut req);
    let resp = svc.ready().await.unwrap().call(req).await.unwrap();
    // Tier 5 (12,345 RPM, from the attached snapshot), not tier 2 (4,321, the header).
    assert_eq!(state.tier(&scope).unwrap().rpm, Some(12_345));
    assert_eq!(&*state.tier(&scope).unwrap().name, "tier-5");
    assert_eq!(
        resp.extensions()
            .get::<ratelayer_core::RateLimitSnapshot>()
            .and_then(|s| s.requests.limit),
        Some(12_345)
    );
    let req = Request::new(ReplayBody::empty());
    let resp = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(state.tier(&scope).unwrap().rpm, Some(4_321));
    assert_eq!(&*state.tier(&scope).unwrap().name, "tier-2");
    let parsed = resp.extensions().get::<ratelayer_core::RateLimitSnapshot>();
    assert_eq!(parsed.and_then(|s| s.requests.limit), Some(4_321));
}

#[tokio::test(start_paused = true)]
async fn conservative_tier_before_detection_and_headerless_responses_change_nothing() {
    let state = LimitState::new();
    let layer = TierDetectLayer::new(state.clone());
    let svc = layer.layer(canned(vec![response(500, &[])]));
    let mut req = Request::new(ReplayBody::empty());
    let scope = scope_of(&mut req);
    assert!(state.tier(&scope).is_none());
    svc.oneshot(req).await.unwrap();
    let t = state.tier(&scope).unwrap();
    assert_eq!(
        (&*t.name, t.rpm, t.base_delay),
        ("free", None, Duration::from_secs(20))
    );
    assert!(state.observed(&scope).is_none());
    assert!(!layer.handle().recommendation(&scope).detected);
}

#[tokio::test(start_paused = true)]
async fn retry_after_http_date_sets_the_cooldown_from_the_wall_clock_passed_in() {
    let state = LimitState::new();
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(90));
    let svc = TierDetectLayer::new(state.clone())
        .layer(canned(vec![response(429, &[("retry-after", &date)])]));
    let mut req = Request::new(ReplayBody::empty());
    let scope = scope_of(&mut req);
    svc.oneshot(req).await.unwrap();
    let left = state.cooldown_remaining(&scope);
    assert!(
        left > Duration::from_secs(88) && left <= Duration::from_secs(90),
        "{left:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn configured_fixed_delay_mismatch_warns() {
    let (logs, ()) = capture();
    let state = LimitState::new();
    let layer = TierDetectLayer::builder(state.clone())
        .configured_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = layer.layer(canned(vec![response(
        200,
        &[("x-ratelimit-limit-requests", "200")],
    )]));
    svc.oneshot(Request::new(ReplayBody::empty()))
        .await
        .unwrap();
    let text = logs.text();
    assert!(
        text.contains(
            "configured fixed delay 1s does not match tier tier-1's recommended base delay 0.3s"
        ),
        "{text}"
    );
    let scope = Scope::new("default");
    assert!(
        layer
            .handle()
            .check_fixed_delay(&scope, Duration::from_millis(300))
    );
}

#[tokio::test(start_paused = true)]
async fn per_provider_tables_load_from_json() {
    let tables: TierTables = serde_json::from_str(
        r#"{"providers": {"default": {"tiers": [
            {"name": "trial", "min_rpm": 0, "base_delay_ms": 12000, "pacing_ms": 12000},
            {"name": "paid", "min_rpm": 50, "base_delay_ms": 1200, "pacing_ms": 1200}]}}}"#,
    )
    .unwrap();
    let state = LimitState::new();
    let svc = TierDetectLayer::builder(state.clone())
        .tables(tables)
        .build()
        .unwrap()
        .layer(canned(vec![response(
            200,
            &[("x-ratelimit-limit-requests", "60")],
        )]));
    svc.oneshot(Request::new(ReplayBody::empty()))
        .await
        .unwrap();
    let t = state.tier(&Scope::new("default")).unwrap();
    assert_eq!(
        (&*t.name, t.base_delay, t.pacing),
        ("paid", Duration::from_millis(1200), Duration::from_secs(1))
    );
}

// ---- tower contract ----

#[tokio::test(start_paused = true)]
async fn contract_readiness_clone_and_cancellation() {
    let state = LimitState::new();
    let inner = StrictService::new(service_fn(|_req: Request<ReplayBody>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(response(429, &[("retry-after", "5")]))
    }));
    let probe = inner.probe();
    let mut svc = TierDetectLayer::new(state.clone()).layer(inner);

    // A clone of a readied service is unready: calling it after its own poll_ready works.
    svc.ready().await.unwrap();
    let mut clone = svc.clone();
    let resp = clone
        .ready()
        .await
        .unwrap()
        .call(Request::new(ReplayBody::empty()))
        .await;
    assert_eq!(resp.unwrap().status(), 429);
    let scope = Scope::new("default");
    assert_eq!(state.cooldown_remaining(&scope), Duration::from_secs(5));
    state.clear_cooldown(&scope);

    // Cancellation: dropping the future at its await point leaks nothing and publishes
    // nothing.
    let mut fut = tokio_test::task::spawn(svc.call(Request::new(ReplayBody::empty())));
    assert_pending!(fut.poll());
    assert_eq!(probe.in_flight(), 1);
    drop(fut);
    assert_eq!(probe.in_flight(), 0);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(state.cooldown_until(&scope), None);

    // And a completed one is polled through.
    let mut fut = tokio_test::task::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(ReplayBody::empty())),
    );
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_secs(1)).await;
    let resp = assert_ready!(fut.poll()).unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(probe.calls(), 3);
    assert_eq!(probe.in_flight(), 0);
}

#[tokio::test]
async fn readiness_is_delegated_via_mock_pair() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<ReplayBody>, Response<String>>();
    let mut svc = tower_test::mock::Spawn::new(TierDetectLayer::new(LimitState::new()).layer(mock));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready!(svc.poll_ready()).unwrap();
    let fut = svc.call(Request::new(ReplayBody::empty()));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(response(200, &[("x-ratelimit-limit-requests", "3")]));
    assert_eq!(fut.await.unwrap().status(), 200);
}
