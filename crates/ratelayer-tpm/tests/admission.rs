//! Admission: exact waits, requests that can never fit, waits beyond the maximum, FIFO
//! order and separate input/output budgets, under paused time.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{answering, anthropic_layer, layer_30k, request, used};
use http::Request;
use http_body_util::BodyExt;
use ratelayer_core::ReplayBody;
use ratelayer_core::engine::BucketKey;
use ratelayer_core::{NeverFits, WaitTooLong};
use ratelayer_mock::MockProvider;
use ratelayer_mock::contract::StrictService;
use ratelayer_tpm::{Budget, ModelLimits, TpmConfig, TpmLimitLayer};
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_request_waits_exactly_as_long_as_the_budget_requires() {
    let inner = StrictService::new(answering("{}"));
    let probe = inner.probe();
    let svc = layer_30k().layer(inner);

    let t0 = Instant::now();
    svc.clone()
        .oneshot(request("openai", "gpt-4o", 12_071, 0))
        .await
        .unwrap();
    advance(Duration::from_secs(10)).await;

    // 12,071 + 22,117 > 30,000: the request fits only when the first leaves the window,
    // 60 s after it was admitted: a wait of exactly 50 s.
    let mut second = task::spawn(svc.clone().oneshot(request("openai", "gpt-4o", 22_117, 0)));
    assert_pending!(second.poll());
    assert_eq!(probe.calls(), 1);
    advance(Duration::from_millis(49_999)).await;
    assert_pending!(second.poll());
    assert_eq!(probe.calls(), 1, "not sent before the budget allows");
    advance(Duration::from_millis(1)).await;
    assert!(second.is_woken());
    assert_ready!(second.poll()).unwrap();
    assert_eq!(probe.calls(), 2);
    assert_eq!(Instant::now() - t0, Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn the_wait_is_exact_with_the_default_margin_too() {
    // 1 % margin: the budget holds 29,700; 12,071 + 22,117 still waits for the window.
    let layer = TpmLimitLayer::new(
        TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(30_000))),
    )
    .unwrap();
    let svc = layer.layer(answering("{}"));
    let t0 = Instant::now();
    svc.clone()
        .oneshot(request("openai", "gpt-4o", 12_071, 0))
        .await
        .unwrap();
    svc.clone()
        .oneshot(request("openai", "gpt-4o", 22_117, 0))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(60));
    let err = svc
        .oneshot(request("openai", "gpt-4o", 29_701, 0))
        .await
        .unwrap_err();
    let e = err.downcast_ref::<NeverFits>().unwrap();
    assert_eq!((e.requested, e.capacity), (29_701, 29_700));
}

#[tokio::test(start_paused = true)]
async fn a_request_that_can_never_fit_fails_at_once_and_is_never_sent() {
    let mock = MockProvider::builder().tpm(30_000).build().unwrap();
    let svc = layer_30k().layer(mock.clone());
    let t0 = Instant::now();
    let err = svc
        .oneshot(request("openai", "gpt-4o", 40_000, 666))
        .await
        .unwrap_err();
    let e = err.downcast_ref::<NeverFits>().unwrap();
    assert_eq!((e.requested, e.capacity), (40_666, 30_000));
    let msg = err.to_string();
    assert!(msg.contains("40666") && msg.contains("30000"), "{msg}");
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(mock.journal().is_empty(), "the mock saw no request");
}

#[tokio::test(start_paused = true)]
async fn a_wait_beyond_the_maximum_fails_at_once_and_changes_nothing() {
    let layer = TpmLimitLayer::new(
        TpmConfig::new()
            .budget(Budget::new("openai", ModelLimits::tpm(30_000)))
            .safety_margin(0.0)
            .max_wait(Some(Duration::from_secs(10))),
    )
    .unwrap();
    let inner = StrictService::new(answering("{}"));
    let probe = inner.probe();
    let svc = layer.layer(inner);
    svc.clone()
        .oneshot(request("openai", "gpt-4o", 12_071, 0))
        .await
        .unwrap();
    let err = svc
        .clone()
        .oneshot(request("openai", "gpt-4o", 22_117, 0))
        .await
        .unwrap_err();
    let e = err.downcast_ref::<WaitTooLong>().unwrap();
    assert_eq!(
        (e.wait, e.max_wait),
        (Duration::from_secs(60), Duration::from_secs(10))
    );
    assert_eq!(probe.calls(), 1);
    // Nothing was booked: exactly what is left still fits at once.
    let t0 = Instant::now();
    svc.oneshot(request("openai", "gpt-4o", 17_929, 0))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(probe.calls(), 2);
}

/// 25,000 tokens used at 0 s; at 30 s a request of `large` waits for them to leave the
/// window at 60 s, and then a 1,000-token request arrives. Returns whether the small one
/// was sent at once; checks that the large one is sent exactly at 60 s either way.
async fn small_behind_a_waiting_head(large: u64) -> bool {
    let inner = StrictService::new(answering("{}"));
    let probe = inner.probe();
    let svc = layer_30k().layer(inner);
    svc.clone()
        .oneshot(request("openai", "gpt-4o", 25_000, 0))
        .await
        .unwrap();
    advance(Duration::from_secs(30)).await;
    let mut head = task::spawn(svc.clone().oneshot(request("openai", "gpt-4o", large, 0)));
    assert_pending!(head.poll());
    let mut small = task::spawn(svc.clone().oneshot(request("openai", "gpt-4o", 1_000, 0)));
    let went = small.poll().is_ready();
    assert_eq!(probe.calls(), 1 + usize::from(went));
    advance(Duration::from_secs(30)).await;
    assert_ready!(head.poll()).unwrap();
    if !went {
        // Behind the head, whose 60 s turn left no room for it.
        assert_pending!(small.poll());
    }
    assert_eq!(probe.calls(), 2 + usize::from(went));
    went
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    // Booked at 30 s, the small request would still count at 60 s, where the head needs
    // 29,500 of 30,000: it must not overtake.
    assert!(!small_behind_a_waiting_head(29_500).await);
}

#[tokio::test(start_paused = true)]
async fn a_newcomer_that_delays_the_head_not_at_all_goes_first() {
    // At 60 s the head's 20,000 and the small request's 1,000 fit together: it goes now.
    assert!(small_behind_a_waiting_head(20_000).await);
}

#[tokio::test(start_paused = true)]
async fn input_and_output_budgets_are_reserved_separately() {
    let layer = anthropic_layer();
    let svc = layer.layer(answering("{}"));
    let t0 = Instant::now();
    svc.clone()
        .oneshot(request("anthropic", "claude-sonnet-4-5", 1_000, 5_000))
        .await
        .unwrap();
    // Input has room, output does not: waits for the output window.
    let resp = svc
        .clone()
        .oneshot(request("anthropic", "claude-sonnet-4-5", 1_000, 5_000))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(60));
    resp.into_body().collect().await.unwrap();
    // An output allowance above the output budget can never fit.
    let err = svc
        .oneshot(request("anthropic", "claude-sonnet-4-5", 10, 9_000))
        .await
        .unwrap_err();
    let e = err.downcast_ref::<NeverFits>().unwrap();
    assert_eq!(
        (e.requested, e.capacity, e.what),
        (9_000, 8_000, "output tokens per minute")
    );
}

#[tokio::test(start_paused = true)]
async fn scopes_without_a_budget_pass_through() {
    let svc = layer_30k().layer(answering("{}"));
    let t0 = Instant::now();
    for _ in 0..3 {
        svc.clone()
            .oneshot(request("openai", "gpt-4o-mini", 1_000_000, 0))
            .await
            .unwrap();
    }
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_wait_query_sees_the_queue() {
    let layer = layer_30k();
    let svc = layer.layer(answering("{}"));
    svc.clone()
        .oneshot(request("openai", "gpt-4o", 25_000, 0))
        .await
        .unwrap();
    let meta = ratelayer_core::RequestMeta::new("openai", 1_000, 0).with_model("gpt-4o");
    assert_eq!(layer.wait_time(&meta).unwrap(), Duration::ZERO);
    // A request of 20,000 queues for the window; 1,000 more would now wait behind it.
    let mut queued = task::spawn(svc.oneshot(request("openai", "gpt-4o", 20_000, 0)));
    assert_pending!(queued.poll());
    assert_eq!(layer.wait_time(&meta).unwrap(), Duration::from_secs(60));
    drop(queued);
    assert_eq!(
        layer.wait_time(&meta).unwrap(),
        Duration::ZERO,
        "nothing stays queued"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cooldown_in_the_shared_state_is_waited_out_or_declined() {
    let state = ratelayer_core::LimitState::new();
    let config = TpmConfig::new()
        .budget(Budget::new("openai", ModelLimits::tpm(30_000)))
        .max_wait(Some(Duration::from_secs(10)));
    let layer = TpmLimitLayer::with_state(config, state.clone()).unwrap();
    let svc = layer.layer(answering("{}"));
    // The budget is set up on first use; then a 429 elsewhere puts the provider on hold.
    svc.clone()
        .oneshot(request("openai", "gpt-4o", 10, 0))
        .await
        .unwrap();
    state.set_cooldown(
        &ratelayer_core::Scope::new("openai"),
        Instant::now() + Duration::from_secs(30),
    );
    let err = svc
        .clone()
        .oneshot(request("openai", "gpt-4o", 10, 0))
        .await
        .unwrap_err();
    let e = err.downcast_ref::<WaitTooLong>().unwrap();
    assert_eq!(e.wait, Duration::from_secs(30));
    assert!(e.reason.contains("cooldown"), "{}", e.reason);

    let patient = TpmLimitLayer::with_state(
        TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(30_000))),
        state,
    )
    .unwrap()
    .layer(answering("{}"));
    let t0 = Instant::now();
    patient
        .oneshot(request("openai", "gpt-4o", 10, 0))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(30));
}

/// Counts every byte of text as a token: far above the default estimate.
struct PerByte;

impl ratelayer_core::meta::TokenEstimator for PerByte {
    fn count_text(&self, text: &str, _model: Option<&str>) -> u64 {
        text.len() as u64
    }
}

#[tokio::test(start_paused = true)]
async fn the_layers_own_estimator_counts_a_request_an_outer_layer_estimated_first() {
    use ratelayer_core::meta;
    let layer = TpmLimitLayer::with_estimator(
        TpmConfig::new()
            .budget(Budget::new("openai", ModelLimits::tpm(1_000_000)).model("gpt-4o"))
            .safety_margin(0.0),
        ratelayer_core::LimitState::new(),
        PerByte,
    )
    .unwrap();
    let text = "x".repeat(900);
    let body = format!(
        r#"{{"model":"gpt-4o","max_tokens":10,"messages":[{{"role":"user","content":"{text}"}}]}}"#
    );
    let mut req = Request::post("https://api.openai.com/v1/chat/completions")
        .body(ReplayBody::from(body))
        .unwrap();
    // An outer layer (retry, tier) read the metadata first, with the default estimator.
    let outer = meta::ensure(&mut req).input_tokens;
    assert!(outer < 400, "default estimate {outer}");
    let svc = layer.clone().layer(answering("{}"));
    let _ = svc.oneshot(req).await.unwrap();
    // 900 + "user" 4 + 4 per message + 3 priming, plus 10 output.
    assert_eq!(
        used(&layer, "openai", "gpt-4o", BucketKey::TOKENS_PER_MINUTE),
        900 + 4 + 4 + 3 + 10
    );
}
