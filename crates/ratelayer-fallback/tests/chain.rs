//! The fallback's decisions, under paused time, against in-process mock providers.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use ratelayer_core::error::AllProvidersFailed;
use ratelayer_core::{BoxError, LimitState, ReplayBody, RequestMeta, Scope};
use ratelayer_fallback::{
    BreakerConfig, CircuitState, Fallback, FallbackBuilder, FallbackReason, OnFatal,
    PreferredProvider, ProviderSpec, ResponseBody, WaitBudget,
};
use ratelayer_mock::{Fault, MockBody, MockProvider};
use ratelayer_tier::TierDetectLayer;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

type Chain = Fallback<ReplayBody, MockBody>;
type Resp = Response<ResponseBody<MockBody>>;

fn chat(max_tokens: u64) -> Request<ReplayBody> {
    let body = format!(
        r#"{{"model":"gpt-4o","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"Hello there"}}]}}"#
    );
    Request::post("http://127.0.0.1/v1/chat/completions")
        .header("authorization", "Bearer sk-test")
        .header("content-type", "application/json")
        .body(ReplayBody::from(body))
        .unwrap()
}

async fn send(f: &Chain, req: Request<ReplayBody>) -> Result<Resp, BoxError> {
    f.clone().oneshot(req).await
}

fn statuses(m: &MockProvider) -> Vec<Option<u16>> {
    m.journal()
        .entries()
        .iter()
        .map(|e| e.status.map(|s| s.as_u16()))
        .collect()
}

fn two(primary: &MockProvider, backup: &MockProvider) -> FallbackBuilder<ReplayBody, MockBody> {
    Fallback::builder()
        .provider(ProviderSpec::new("primary").service(primary.clone()))
        .provider(
            ProviderSpec::new("backup")
                .model("backup-model")
                .service(backup.clone()),
        )
}

#[tokio::test(start_paused = true)]
async fn a_short_retry_after_is_waited_out_on_the_primary() {
    let primary = MockProvider::builder().rpm(1).build().unwrap();
    let backup = MockProvider::builder().build().unwrap();
    let f = two(&primary, &backup)
        .wait_budget(Duration::from_secs(30))
        .build()
        .unwrap();

    assert_eq!(send(&f, chat(10)).await.unwrap().status(), StatusCode::OK);
    tokio::time::advance(Duration::from_secs(55)).await;
    let start = Instant::now();
    let resp = send(&f, chat(10)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited <= Duration::from_secs(6),
        "{waited:?}"
    );

    assert_eq!(statuses(&primary), [Some(200), Some(429), Some(200)]);
    assert!(backup.journal().is_empty(), "no fallback");
    let s = f.stats().snapshot();
    assert_eq!(s.provider("primary").unwrap().requests, 3);
    assert_eq!(s.provider("primary").unwrap().successes, 2);
    assert!(s.fallbacks.is_empty(), "{:?}", s.fallbacks);
    assert_eq!(s.primary_share(), 1.0);
    assert!(s.total_wait >= Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_falls_back_and_the_next_request_skips_the_cooled_down_primary() {
    let state = LimitState::new();
    let primary = MockProvider::builder().rpm(1).build().unwrap();
    let backup = MockProvider::builder().build().unwrap();
    let primary_stack = TierDetectLayer::new(state.clone()).layer(primary.clone());
    let f = Fallback::builder()
        .provider(ProviderSpec::new("primary").service(primary_stack))
        .provider(ProviderSpec::new("backup").service(backup.clone()))
        .limit_state(state.clone())
        .wait_budget(Duration::from_secs(30))
        .build()
        .unwrap();

    assert_eq!(send(&f, chat(10)).await.unwrap().status(), StatusCode::OK);
    let start = Instant::now();
    assert_eq!(send(&f, chat(10)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::ZERO, "fell back without waiting");
    assert_eq!(statuses(&primary), [Some(200), Some(429)]);
    assert_eq!(statuses(&backup), [Some(200)]);

    // Wait first: the tier layer published the 429's cooldown (about 60 s, over the
    // budget), so the next request goes to the backup without touching the primary.
    assert_eq!(send(&f, chat(10)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(primary.journal().len(), 2);
    assert_eq!(backup.journal().len(), 2);

    let s = f.stats().snapshot();
    assert_eq!(s.fallbacks[&FallbackReason::RateLimited], 1);
    assert_eq!(s.fallbacks[&FallbackReason::WaitTooLong], 1);
    assert_eq!(s.served_by_fallback, 2);
    assert_eq!(s.provider("primary").unwrap().requests, 2);
    assert_eq!(s.provider("backup").unwrap().successes, 2);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_a_delay_falls_back_at_once() {
    let primary = MockProvider::builder()
        .fault(Fault::status(StatusCode::TOO_MANY_REQUESTS))
        .build()
        .unwrap();
    let backup = MockProvider::builder().build().unwrap();
    let f = two(&primary, &backup).build().unwrap();
    assert_eq!(send(&f, chat(10)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(statuses(&primary), [Some(429)], "not retried blindly");
    assert_eq!(statuses(&backup), [Some(200)]);
    assert_eq!(
        f.stats().snapshot().fallbacks[&FallbackReason::RateLimited],
        1
    );
}

#[tokio::test(start_paused = true)]
async fn wait_first_follows_the_shared_state_the_budget_and_the_deadline() {
    let state = LimitState::new();
    let primary = MockProvider::builder().build().unwrap();
    let backup = MockProvider::builder().build().unwrap();
    let f = two(&primary, &backup)
        .limit_state(state.clone())
        .wait_budget(Duration::from_secs(10))
        .build()
        .unwrap();
    let scope = Scope::new("primary");

    // A 5 s cooldown fits the 10 s budget: the primary's stack is trusted to wait.
    state.set_cooldown(&scope, Instant::now() + Duration::from_secs(5));
    send(&f, chat(10)).await.unwrap();
    assert_eq!((primary.journal().len(), backup.journal().len()), (1, 0));

    // ... but not a per-request budget of 2 s, nor a deadline in 3 s.
    let mut req = chat(10);
    req.extensions_mut()
        .insert(WaitBudget(Duration::from_secs(2)));
    send(&f, req).await.unwrap();
    let mut req = chat(10);
    req.extensions_mut().insert(ratelayer_fallback::Deadline(
        Instant::now() + Duration::from_secs(3),
    ));
    send(&f, req).await.unwrap();
    assert_eq!((primary.journal().len(), backup.journal().len()), (1, 2));

    // A 30 s cooldown is over the budget.
    state.set_cooldown(&scope, Instant::now() + Duration::from_secs(30));
    send(&f, chat(10)).await.unwrap();
    assert_eq!((primary.journal().len(), backup.journal().len()), (1, 3));
    let s = f.stats().snapshot();
    assert_eq!(s.fallbacks[&FallbackReason::WaitTooLong], 3);
    assert_eq!(s.total_wait, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn one_500_is_retried_on_the_same_provider_a_second_falls_back() {
    let primary = MockProvider::builder()
        .fault(Fault::internal_error().on_requests([0, 2, 3]))
        .build()
        .unwrap();
    let backup = MockProvider::builder().build().unwrap();
    let f = two(&primary, &backup).build().unwrap();

    assert_eq!(send(&f, chat(10)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(statuses(&primary), [Some(500), Some(200)]);
    assert!(backup.journal().is_empty());

    assert_eq!(send(&f, chat(10)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        statuses(&primary),
        [Some(500), Some(200), Some(500), Some(500)]
    );
    assert_eq!(statuses(&backup), [Some(200)]);
    // The body was rewritten for the backup.
    assert_eq!(backup.journal().entries()[0].model, "backup-model");
    let s = f.stats().snapshot();
    assert_eq!(s.fallbacks[&FallbackReason::Unexpected], 1);
    assert_eq!(s.provider("primary").unwrap().requests, 4);
}

#[tokio::test(start_paused = true)]
async fn context_overflow_goes_straight_to_the_large_context_provider() {
    let small = MockProvider::builder()
        .context_window(8_192)
        .build()
        .unwrap();
    let also_small = MockProvider::builder()
        .context_window(8_192)
        .build()
        .unwrap();
    let large = MockProvider::builder()
        .context_window(128_000)
        .build()
        .unwrap();
    let f = Fallback::builder()
        .provider(
            ProviderSpec::new("small")
                .context_window(8_192)
                .service(small.clone()),
        )
        .provider(
            ProviderSpec::new("also-small")
                .context_window(8_192)
                .service(also_small.clone()),
        )
        .provider(
            ProviderSpec::new("large")
                .context_window(128_000)
                .service(large.clone()),
        )
        .build()
        .unwrap();

    let resp = send(&f, chat(10_000)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(statuses(&small), [Some(400)]);
    assert!(
        also_small.journal().is_empty(),
        "skipped: its window is too small"
    );
    assert_eq!(statuses(&large), [Some(200)]);
    let s = f.stats().snapshot();
    assert_eq!(s.fallbacks[&FallbackReason::ContextOverflow], 1);
    assert_eq!(s.fallbacks.len(), 1);
    // A small request stays on the first provider.
    send(&f, chat(100)).await.unwrap();
    assert_eq!(small.journal().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_preferred_provider_is_honoured() {
    let primary = MockProvider::builder().build().unwrap();
    let backup = MockProvider::builder().build().unwrap();
    let f = two(&primary, &backup).build().unwrap();
    let mut req = chat(10);
    req.extensions_mut()
        .insert(PreferredProvider::new("backup"));
    assert_eq!(send(&f, req).await.unwrap().status(), StatusCode::OK);
    assert!(primary.journal().is_empty());
    assert_eq!(statuses(&backup), [Some(200)]);
    let s = f.stats().snapshot();
    assert!(s.fallbacks.is_empty());
    assert_eq!(s.served_by_fallback, 1);

    let mut req = chat(10);
    req.extensions_mut()
        .insert(PreferredProvider::new("nobody"));
    let err = send(&f, req).await.unwrap_err();
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    assert_eq!(all.attempts[0].provider, "nobody");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_skipped_without_a_call_then_probed() {
    let primary = MockProvider::builder()
        .fault(Fault::internal_error())
        .build()
        .unwrap();
    let backup = MockProvider::builder().build().unwrap();
    let f = two(&primary, &backup)
        .breaker(
            BreakerConfig::default()
                .consecutive_failures(2)
                .open_for(Duration::from_secs(30)),
        )
        .build()
        .unwrap();

    send(&f, chat(10)).await.unwrap();
    assert_eq!(primary.journal().len(), 2);
    assert!(matches!(
        f.circuit("primary"),
        Some(CircuitState::Open { .. })
    ));

    for _ in 0..3 {
        assert_eq!(send(&f, chat(10)).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(primary.journal().len(), 2, "skipped without a call");
    assert_eq!(backup.journal().len(), 4);
    assert_eq!(
        f.stats().snapshot().fallbacks[&FallbackReason::CircuitOpen],
        3
    );

    // After the cool-down one probe goes through; it fails, the circuit opens again and
    // the request falls back at once.
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(f.circuit("primary"), Some(CircuitState::HalfOpen));
    send(&f, chat(10)).await.unwrap();
    assert_eq!(primary.journal().len(), 3);
    assert!(matches!(
        f.circuit("primary"),
        Some(CircuitState::Open { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_successful_probe_closes_the_circuit() {
    let primary = MockProvider::builder()
        .fault(Fault::internal_error().on_requests([0, 1]))
        .build()
        .unwrap();
    let backup = MockProvider::builder().build().unwrap();
    let f = two(&primary, &backup)
        .breaker(BreakerConfig::default().consecutive_failures(2))
        .build()
        .unwrap();
    send(&f, chat(10)).await.unwrap();
    assert!(matches!(
        f.circuit("primary"),
        Some(CircuitState::Open { .. })
    ));
    tokio::time::advance(Duration::from_secs(31)).await;
    send(&f, chat(10)).await.unwrap();
    assert_eq!(f.circuit("primary"), Some(CircuitState::Closed));
    assert_eq!(statuses(&primary), [Some(500), Some(500), Some(200)]);
}

#[tokio::test(start_paused = true)]
async fn all_failed_lists_every_attempt() {
    let down = MockProvider::builder()
        .fault(Fault::unavailable())
        .build()
        .unwrap();
    let broke = MockProvider::builder()
        .fault(Fault::quota_exhausted())
        .build()
        .unwrap();
    let limited = MockProvider::builder().rpm(1).build().unwrap();
    limited.clone().oneshot(chat(10)).await.unwrap();
    let f = Fallback::builder()
        .provider(ProviderSpec::new("down").service(down.clone()))
        .provider(ProviderSpec::new("broke").service(broke.clone()))
        .provider(ProviderSpec::new("limited").service(limited.clone()))
        .wait_budget(Duration::from_secs(30))
        .build()
        .unwrap();

    let err = send(&f, chat(10)).await.unwrap_err();
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    let got: Vec<(&str, &str, Option<u16>)> = all
        .attempts
        .iter()
        .map(|a| {
            (
                a.provider.as_str(),
                a.reason.split(':').next().unwrap(),
                a.status.map(|s| s.as_u16()),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("down", "unexpected", Some(503)),
            ("broke", "quota_exhausted", Some(429)),
            ("limited", "rate_limited", Some(429)),
        ]
    );
    assert!(err.to_string().starts_with("every provider failed: down ("));

    // The exhausted quota is skipped without a call until its reset.
    let err = send(&f, chat(10)).await.unwrap_err();
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    assert_eq!(all.attempts.len(), 3);
    assert_eq!(all.attempts[1].status, None);
    assert_eq!(broke.journal().len(), 1);
    let s = f.stats().snapshot();
    assert_eq!((s.requests, s.failures, s.successes), (2, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn fatal_failures_are_returned_whole_or_fall_back_as_configured() {
    let primary = MockProvider::builder()
        .fault(Fault::status(StatusCode::UNAUTHORIZED))
        .build()
        .unwrap();
    let backup = MockProvider::builder().build().unwrap();

    let f = two(&primary, &backup).build().unwrap();
    let resp = send(&f, chat(10)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(json.get("error").is_some(), "the whole body: {json}");
    assert!(backup.journal().is_empty());

    let f = two(&primary, &backup)
        .on_fatal(OnFatal::FallBack)
        .build()
        .unwrap();
    assert_eq!(send(&f, chat(10)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(f.stats().snapshot().fallbacks[&FallbackReason::Fatal], 1);
}

type Seen = Arc<Mutex<Vec<Request<ReplayBody>>>>;

/// A provider of these tests: any closure over requests, boxed.
type TestProvider =
    tower::util::BoxCloneSyncService<Request<ReplayBody>, Response<ReplayBody>, Infallible>;

/// A provider that answers 200 and keeps every request it was sent.
fn recorder() -> (Seen, TestProvider) {
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let svc = tower::service_fn(move |req: Request<ReplayBody>| {
        s2.lock().unwrap().push(req);
        async { Ok::<_, Infallible>(Response::new(ReplayBody::from("ok"))) }
    });
    (seen, TestProvider::new(svc))
}

/// A provider that answers 429 with a Retry-After far beyond any wait.
fn limited_for_long() -> TestProvider {
    TestProvider::new(tower::service_fn(|_req: Request<ReplayBody>| async {
        let resp = Response::builder()
            .status(429)
            .header("retry-after", "999")
            .body(ReplayBody::empty())
            .unwrap();
        Ok::<_, Infallible>(resp)
    }))
}

#[tokio::test(start_paused = true)]
async fn rewrites_shape_the_request_and_refresh_its_metadata() {
    let (seen, anthropic) = recorder();
    let limited = limited_for_long();
    let f = Fallback::builder()
        .provider(ProviderSpec::new("openai").service(limited))
        .provider(
            ProviderSpec::new("anthropic")
                .model("claude-sonnet-4-5")
                .path("/v1/messages")
                .remove_header("authorization")
                .header("x-api-key", "sk-ant-test")
                .header("anthropic-version", "2023-06-01")
                .service(anthropic),
        )
        .build()
        .unwrap();
    let resp = f.clone().oneshot(chat(10)).await.unwrap();
    assert_eq!(resp.status(), 200);

    let seen = seen.lock().unwrap();
    let req = &seen[0];
    assert_eq!(req.uri(), "http://127.0.0.1/v1/messages");
    assert!(req.headers().get("authorization").is_none());
    assert!(req.headers()["x-api-key"].is_sensitive());
    assert_eq!(req.headers()["anthropic-version"], "2023-06-01");
    let body: serde_json::Value = serde_json::from_slice(req.body().as_bytes()).unwrap();
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["max_tokens"], 10);
    let meta = req.extensions().get::<RequestMeta>().unwrap();
    assert_eq!(&*meta.provider, "anthropic");
    assert_eq!(meta.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(meta.output_tokens, 10);
    assert_eq!(
        meta.credential.as_deref(),
        Some(ratelayer_core::meta::fingerprint(b"sk-ant-test").as_str())
    );
}

/// A provider whose rewrites touch only headers keeps the estimate and model read from
/// the body (no second read), and carries its own credential and provider.
#[tokio::test(start_paused = true)]
async fn header_only_rewrites_keep_the_estimate_and_change_the_credential() {
    let (seen, backup) = recorder();
    let limited = limited_for_long();
    let f = Fallback::builder()
        .provider(ProviderSpec::new("openai").service(limited))
        .provider(
            ProviderSpec::new("backup")
                .header("authorization", "Bearer sk-backup")
                .service(backup),
        )
        .build()
        .unwrap();
    let mut original = chat(10);
    let expected = ratelayer_core::meta::ensure(&mut original).clone();
    assert_eq!(f.clone().oneshot(chat(10)).await.unwrap().status(), 200);

    let seen = seen.lock().unwrap();
    let meta = seen[0].extensions().get::<RequestMeta>().unwrap();
    assert_eq!(&*meta.provider, "backup");
    assert_eq!(
        meta.credential.as_deref(),
        Some(ratelayer_core::meta::fingerprint(b"Bearer sk-backup").as_str())
    );
    assert_ne!(meta.credential, expected.credential);
    assert_eq!(meta.model.as_deref(), Some("gpt-4o"));
    assert_eq!(
        (meta.input_tokens, meta.output_tokens, meta.source),
        (
            expected.input_tokens,
            expected.output_tokens,
            expected.source
        )
    );
}

#[test]
fn configuration_is_validated_when_built() {
    let svc = || MockProvider::builder().build().unwrap();
    let err = Fallback::<ReplayBody, MockBody>::builder()
        .build()
        .unwrap_err();
    assert_eq!(err.setting, "fallback.providers");
    let err = Fallback::builder()
        .provider(ProviderSpec::<ReplayBody>::new("a").service(svc()))
        .provider(ProviderSpec::new("a").service(svc()))
        .build()
        .unwrap_err();
    assert!(err.problem.contains("unique"), "{err}");
    let err = Fallback::builder()
        .provider(
            ProviderSpec::<ReplayBody>::new("a")
                .header("x-api-key", "bad\nvalue")
                .service(svc()),
        )
        .build()
        .unwrap_err();
    assert!(
        !err.to_string().contains("bad"),
        "never echoes a key: {err}"
    );
    let err = Fallback::builder()
        .provider(ProviderSpec::<ReplayBody>::new("a").service(svc()))
        .breaker(BreakerConfig::default().failure_ratio(1.5))
        .build()
        .unwrap_err();
    assert!(err.setting.contains("failure_ratio"));
    let err = Fallback::builder()
        .provider(ProviderSpec::<ReplayBody>::new("a").service(svc()))
        .layer(ProviderSpec::new("a"))
        .unwrap_err();
    assert!(err.problem.contains("unique"));
}

#[tokio::test(start_paused = true)]
async fn the_layer_makes_the_wrapped_service_the_primary_by_priority() {
    let primary = MockProvider::builder()
        .fault(Fault::internal_error())
        .build()
        .unwrap();
    let backup = MockProvider::builder().build().unwrap();
    let layer = FallbackBuilder::new()
        .provider(
            ProviderSpec::new("backup")
                .priority(1)
                .service(backup.clone()),
        )
        .layer(ProviderSpec::new("primary"))
        .unwrap();
    let a = layer.layer(primary.clone());
    let b = layer.layer(primary.clone());
    a.oneshot(chat(10)).await.unwrap();
    b.oneshot(chat(10)).await.unwrap();
    assert_eq!(primary.journal().len(), 4);
    assert_eq!(backup.journal().len(), 2);
    // Services of one layer share the stats.
    let s = layer.stats().snapshot();
    assert_eq!(s.providers[0].name, "primary");
    assert_eq!((s.requests, s.served_by_fallback), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn huge_durations_never_panic() {
    let primary = MockProvider::builder()
        .fault(Fault::quota_exhausted())
        .build()
        .unwrap();
    let backup = MockProvider::builder()
        .fault(Fault::internal_error())
        .build()
        .unwrap();
    let f = two(&primary, &backup)
        .quota_skip(Duration::MAX)
        .breaker(
            BreakerConfig::default()
                .consecutive_failures(1)
                .open_for(Duration::MAX),
        )
        .wait_budget(Duration::MAX)
        .build()
        .unwrap();
    let err = send(&f, chat(10)).await.unwrap_err();
    assert!(err.is::<AllProvidersFailed>());
    assert!(matches!(
        f.circuit("backup"),
        Some(CircuitState::Open { .. })
    ));
    let err = send(&f, chat(10)).await.unwrap_err();
    let all = err.downcast_ref::<AllProvidersFailed>().unwrap();
    assert!(all.attempts[0].reason.starts_with("quota_exhausted"));
    assert!(all.attempts[1].reason.starts_with("circuit_open"));
}

/// An error response whose body the fallback read to classify it comes back whole: every
/// byte, and the trailers met while reading.
#[tokio::test(start_paused = true)]
async fn a_read_error_body_keeps_its_bytes_and_trailers() {
    type Body = http_body_util::combinators::WithTrailers<
        http_body_util::Full<bytes::Bytes>,
        std::future::Ready<Option<Result<http::HeaderMap, std::convert::Infallible>>>,
    >;
    let svc = tower::service_fn(|_req: Request<ReplayBody>| async {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-trailer", http::HeaderValue::from_static("kept"));
        let body: Body = http_body_util::Full::new(bytes::Bytes::from(
            r#"{"error":{"message":"bad request","type":"invalid_request_error"}}"#,
        ))
        .with_trailers(std::future::ready(Some(Ok(trailers))));
        Ok::<_, BoxError>(
            Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(body)
                .unwrap(),
        )
    });
    let f: Fallback<ReplayBody, Body> = Fallback::builder()
        .provider(ProviderSpec::new("only").service(svc))
        .build()
        .unwrap();
    let resp = f.oneshot(chat(10)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(
        collected.trailers().and_then(|t| t.get("x-trailer")),
        Some(&http::HeaderValue::from_static("kept"))
    );
    assert_eq!(
        collected.to_bytes(),
        r#"{"error":{"message":"bad request","type":"invalid_request_error"}}"#
    );
}
