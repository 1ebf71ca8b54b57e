//! The fallback in front of real provider stacks (retry, tier detection, TPM) over
//! in-process mock providers, under paused time.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use http::{Request, StatusCode};
use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
use ratelayer_core::{LimitState, ReplayBody};
use ratelayer_fallback::{Fallback, FallbackReason, ProviderSpec, StatsSnapshot};
use ratelayer_mock::{Fault, Journal, Latency, MockProvider};
use ratelayer_retry::{Backoff, BackoffRetryLayer};
use ratelayer_tier::TierDetectLayer;
use ratelayer_tpm::{Budget, ModelLimits, TpmConfig, TpmLimitLayer};
use tower::{Layer, ServiceBuilder, ServiceExt};

fn chat(id: u64, max_tokens: u64) -> Request<ReplayBody> {
    let body = format!(
        r#"{{"model":"gpt-4o","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"Summarize request {id}"}}]}}"#
    );
    Request::post("http://127.0.0.1/v1/chat/completions")
        .header("authorization", "Bearer sk-test")
        .header("x-request-id", id.to_string())
        .body(ReplayBody::from(body))
        .unwrap()
}

/// Request ids (x-request-id) answered 200 by a mock.
fn served(j: &Journal) -> BTreeSet<u64> {
    j.entries()
        .iter()
        .filter(|e| e.status == Some(StatusCode::OK))
        .filter_map(|e| e.request_id.as_deref()?.parse().ok())
        .collect()
}

/// The primary: 100 requests a minute, 20,000 tokens a minute, 8 in flight, 0.8 s
/// latency, 3 % of requests failing with a 503 (seeded). The backup: unlimited.
fn workload_mocks() -> (MockProvider, MockProvider) {
    let primary = MockProvider::builder()
        .rpm(100)
        .tpm(20_000)
        .concurrency(8)
        .latency(Latency::fixed(Duration::from_millis(800)))
        .fault(Fault::unavailable().probability(0.03))
        .seed(11)
        .build()
        .unwrap();
    let backup = MockProvider::builder()
        .latency(Latency::fixed(Duration::from_millis(800)))
        .build()
        .unwrap();
    (primary, backup)
}

fn retry(state: &LimitState) -> BackoffRetryLayer {
    BackoffRetryLayer::builder(state.clone())
        .max_rate_limit_retries(1)
        .overloaded(Backoff::new(Duration::from_secs(1), 2.0, 0))
        .pacing(false)
        .seed(7)
        .build()
        .unwrap()
}

/// A fallback over two stacks on `state`: waits first, leaves rate limits to the stacks.
fn workload_chain<S, ResB>(state: &LimitState, primary: S, backup: S) -> Fallback<ReplayBody, ResB>
where
    S: tower::Service<Request<ReplayBody>, Response = http::Response<ResB>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<ratelayer_core::BoxError>,
    S::Future: Send + 'static,
    ResB: 'static,
{
    Fallback::builder()
        .provider(ProviderSpec::new("primary").service(primary))
        .provider(
            ProviderSpec::new("backup")
                .model("backup-model")
                .service(backup),
        )
        .limit_state(state.clone())
        .rate_limit_retries(0)
        .wait_budget(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// 1,000 requests in bursts of 40 to 130 (seeded) every 45 s; every one must succeed.
async fn drive<ResB>(f: &Fallback<ReplayBody, ResB>)
where
    ResB: http_body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<ratelayer_core::BoxError> + Send,
{
    let mut tasks = Vec::new();
    let mut seed: u64 = 0x5eed;
    let mut id = 0u64;
    while id < 1_000 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let size = 40 + (seed >> 33) % 91;
        for _ in 0..size.min(1_000 - id) {
            let f = f.clone();
            let req = chat(id, 50);
            tasks.push(tokio::spawn(async move {
                f.oneshot(req).await.map(|r| r.status())
            }));
            id += 1;
        }
        tokio::time::sleep(Duration::from_secs(45)).await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), StatusCode::OK);
    }
}

/// Checks the stats against the judges' journals; returns the primary's 429 count.
fn check(s: &StatsSnapshot, pj: &Journal, bj: &Journal) -> usize {
    let on_primary = served(pj);
    let on_backup = served(bj);
    eprintln!(
        "primary: {} requests, {} 429s; backup: {} requests; stats: {s:?}",
        pj.len(),
        pj.rate_limited(),
        bj.len()
    );
    // Every request succeeded exactly once.
    assert_eq!((s.requests, s.successes, s.failures), (1_000, 1_000, 0));
    assert!(on_primary.is_disjoint(&on_backup));
    assert_eq!(on_primary.len() + on_backup.len(), 1_000);
    // The stats say what the judges' journals say.
    let p = s.provider("primary").unwrap();
    let b = s.provider("backup").unwrap();
    assert_eq!(p.successes as usize, on_primary.len());
    assert_eq!(b.successes as usize, on_backup.len());
    assert_eq!(s.served_by_fallback as usize, on_backup.len());
    assert_eq!(b.requests as usize, bj.len(), "the backup never retried");
    let fallbacks: u64 = s.fallbacks.values().sum();
    assert_eq!(fallbacks as usize, on_backup.len());
    // Requests that left the primary rate limited are those the primary's journal ends
    // with a 429 for; the others never reached it (wait first).
    let mut last: BTreeMap<u64, Option<StatusCode>> = BTreeMap::new();
    for e in pj.entries() {
        if let Some(id) = e.request_id.as_deref().and_then(|i| i.parse().ok()) {
            last.insert(id, e.status);
        }
    }
    let left_limited = last
        .values()
        .filter(|st| **st == Some(StatusCode::TOO_MANY_REQUESTS))
        .count();
    let count = |r: FallbackReason| s.fallbacks.get(&r).copied().unwrap_or(0);
    assert_eq!(count(FallbackReason::RateLimited) as usize, left_limited);
    // Each request the fallback sent to the primary's stack reached the mock once, plus
    // once more per 429 the retry layer retried (every 429 but a request's last).
    assert_eq!(
        p.requests as usize,
        pj.len() - pj.rate_limited() + left_limited
    );
    // The second 503 of a request is a fallback; its first was retried by the fallback.
    let fives = pj.count_status(StatusCode::SERVICE_UNAVAILABLE) as u64;
    assert_eq!(
        p.requests,
        last.len() as u64 + fives - count(FallbackReason::Unexpected)
    );
    // Waiting first kept the fallback share low.
    assert!(s.fallback_share() <= 0.10, "{}", s.fallback_share());
    assert!(s.primary_share() >= 0.90);
    // The judge: the primary never admitted more than its request limit.
    assert!(pj.max_requests_in_window(Duration::from_secs(60)) <= 100);
    pj.rate_limited()
}

/// Bursts of 429s whose Retry-After is about 15 s: each provider's stack is retry (one
/// rate-limit retry, no overloaded retries) > tier detection > mock; the fallback waits
/// first (the cooldown in the shared state), retries a 503 once, and falls back when the
/// primary's retries are exhausted or it fails twice.
#[tokio::test(start_paused = true)]
async fn a_thousand_requests_through_bursts_of_429s() {
    let state = LimitState::new();
    let (primary, backup) = workload_mocks();
    let stack = |mock: &MockProvider| {
        ServiceBuilder::new()
            .layer(retry(&state))
            .layer(TierDetectLayer::new(state.clone()))
            .service(mock.clone())
    };
    let f = workload_chain(&state, stack(&primary), stack(&backup));
    drive(&f).await;
    let limited = check(&f.stats().snapshot(), &primary.journal(), &backup.journal());
    // The workload really had bursts of 429s, with short delays.
    assert!(limited >= 10, "{limited}");
}

/// The same workload through the whole recommended stack: retry > tier detection > TPM
/// > concurrency > mock. The stack keeps the primary inside its limits (next to no 429s).
#[tokio::test(start_paused = true)]
async fn a_thousand_requests_through_the_whole_stack() {
    let state = LimitState::new();
    let (primary, backup) = workload_mocks();
    let tpm = TpmLimitLayer::with_state(
        TpmConfig::new().budget(Budget::new("primary", ModelLimits::tpm(20_000))),
        state.clone(),
    )
    .unwrap();
    let concurrency = ConcurrencyLayer::new(
        ConcurrencyConfig::new().provider("primary", Limits::new().max_concurrent(8)),
    )
    .unwrap()
    .with_state(state.clone());
    let stack = |mock: &MockProvider| {
        ServiceBuilder::new()
            .layer(retry(&state))
            .layer(TierDetectLayer::new(state.clone()))
            .layer(tpm.clone())
            .layer(concurrency.clone())
            .service(mock.clone())
    };
    let f = workload_chain(&state, stack(&primary), stack(&backup));
    drive(&f).await;
    let pj = primary.journal();
    let limited = check(&f.stats().snapshot(), &pj, &backup.journal());
    assert!(limited <= 10, "{limited}");
    assert!(pj.max_tokens_in_window(Duration::from_secs(60)) <= 20_000);
    assert!(pj.max_in_flight() <= 8);
}

fn tpm_stack(
    state: &LimitState,
    mock: &MockProvider,
    tpm: u64,
    provider: &str,
) -> impl tower::Service<
    Request<ReplayBody>,
    Response = http::Response<ratelayer_tpm::ResponseBody<ratelayer_mock::MockBody>>,
    Error = ratelayer_core::BoxError,
    Future: Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let config = TpmConfig::new()
        .budget(Budget::new(provider, ModelLimits::tpm(tpm)))
        .safety_margin(0.0)
        .max_wait(Some(Duration::from_secs(1)));
    TpmLimitLayer::with_state(config, state.clone())
        .unwrap()
        .layer(mock.clone())
}

type TpmChain = Fallback<ReplayBody, ratelayer_tpm::ResponseBody<ratelayer_mock::MockBody>>;

/// A primary with a 1,000 TPM budget and an unlimited backup, each behind a TPM layer
/// (maximum wait 1 s) on one shared state; the fallback reads that state if `wait_first`.
fn tpm_chain(wait_first: bool) -> (TpmChain, MockProvider, MockProvider) {
    let state = LimitState::new();
    let primary = MockProvider::builder().build().unwrap();
    let backup = MockProvider::builder().build().unwrap();
    let mut b = Fallback::builder()
        .provider(
            ProviderSpec::new("primary").service(tpm_stack(&state, &primary, 1_000, "primary")),
        )
        .provider(
            ProviderSpec::new("backup").service(tpm_stack(&state, &backup, 1_000_000, "backup")),
        )
        .wait_budget(Duration::from_secs(10));
    if wait_first {
        b = b.limit_state(state);
    }
    (b.build().unwrap(), primary, backup)
}

#[tokio::test(start_paused = true)]
async fn token_budgets_are_waited_for_first_and_their_errors_fall_back() {
    // With the shared state, the fallback sees the TPM wait before choosing.
    let (f, primary, backup) = tpm_chain(true);
    f.clone().oneshot(chat(0, 600)).await.unwrap();
    f.clone().oneshot(chat(1, 600)).await.unwrap();
    assert_eq!((primary.journal().len(), backup.journal().len()), (1, 1));
    let s = f.stats().snapshot();
    assert_eq!(s.fallbacks[&FallbackReason::WaitTooLong], 1);
    assert_eq!(s.provider("primary").unwrap().requests, 1);

    // Without it, the TPM layer's own WaitTooLong and NeverFits errors fall back.
    let (f, primary, backup) = tpm_chain(false);
    f.clone().oneshot(chat(0, 600)).await.unwrap();
    f.clone().oneshot(chat(1, 600)).await.unwrap();
    f.clone().oneshot(chat(2, 5_000)).await.unwrap();
    assert_eq!((primary.journal().len(), backup.journal().len()), (1, 2));
    let s = f.stats().snapshot();
    assert_eq!(s.provider("primary").unwrap().requests, 3);
    assert_eq!(s.fallbacks[&FallbackReason::WaitTooLong], 1);
    assert_eq!(s.fallbacks[&FallbackReason::NeverFits], 1);
}

/// The engine cannot see requests queued in a TPM layer (they book when sent); the TPM
/// layer's own query can. Combined with the engine's, the fallback skips a provider whose
/// queue is longer than the budget.
#[tokio::test(start_paused = true)]
async fn a_tpm_layers_queue_is_seen_before_choosing() {
    let state = LimitState::new();
    let config = TpmConfig::new()
        .budget(Budget::new("primary", ModelLimits::tpm(1_000)))
        .safety_margin(0.0)
        .max_wait(None);
    let tpm = TpmLimitLayer::with_state(config, state.clone()).unwrap();
    let primary = MockProvider::builder().build().unwrap();
    let backup = MockProvider::builder().build().unwrap();
    let queue = tpm.clone();
    let queue_wait = move |_: &str, m: &ratelayer_core::RequestMeta| queue.wait_time(m);
    let f = Fallback::builder()
        .provider(ProviderSpec::new("primary").service(tpm.layer(primary.clone())))
        .provider(ProviderSpec::new("backup").service(tpm.layer(backup.clone())))
        .wait_estimator((ratelayer_fallback::EngineWait::new(state), queue_wait))
        .wait_budget(Duration::from_secs(20))
        .build()
        .unwrap();

    f.clone().oneshot(chat(0, 590)).await.unwrap();
    tokio::time::advance(Duration::from_secs(50)).await;
    // Waits about 10 s (fits the budget) in the TPM layer's queue.
    let queued = tokio::spawn(f.clone().oneshot(chat(1, 890)));
    tokio::task::yield_now().await;
    // 300 tokens fit the engine now, but not before the queued 900 leave the window.
    f.clone().oneshot(chat(2, 290)).await.unwrap();
    assert_eq!(backup.journal().len(), 1);
    queued.await.unwrap().unwrap();
    assert_eq!(primary.journal().len(), 2);
    let s = f.stats().snapshot();
    assert_eq!(s.fallbacks[&FallbackReason::WaitTooLong], 1);
}
