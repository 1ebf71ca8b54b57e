//! The tower contract: readiness, clones, no readiness held while waiting, and
//! cancellation at every await point leaking nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{answering, layer_30k, request, used};
use http::{Request, Response};
use ratelayer_core::ReplayBody;
use ratelayer_core::engine::BucketKey;
use ratelayer_mock::contract::StrictService;
use ratelayer_tpm::TpmLimitLayer;
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};

fn tpm(layer: &TpmLimitLayer) -> u64 {
    used(layer, "openai", "gpt-4o", BucketKey::TOKENS_PER_MINUTE)
}

#[tokio::test(start_paused = true)]
async fn readiness_comes_from_the_inner_service() {
    let (inner, mut handle) = tower_test::mock::pair::<Request<ReplayBody>, Response<String>>();
    let mut svc = task::spawn(layer_30k().layer(inner));
    handle.allow(0);
    assert_pending!(svc.enter(|cx, mut s| s.poll_ready(cx)));
    handle.allow(1);
    assert!(svc.is_woken());
    assert_ready_ok!(svc.enter(|cx, mut s| s.poll_ready(cx)));
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_budget() {
    let layer = layer_30k();
    let a = layer.layer(answering("{}"));
    let b = a.clone();
    let c = layer.layer(answering("{}")); // another service from the same layer
    a.oneshot(request("openai", "gpt-4o", 10_000, 0))
        .await
        .unwrap();
    b.oneshot(request("openai", "gpt-4o", 10_000, 0))
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    c.oneshot(request("openai", "gpt-4o", 10_001, 0))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn no_inner_readiness_is_held_while_waiting() {
    // The inner service admits one request at a time: its readiness is a permit.
    let inner = tower::limit::ConcurrencyLimit::new(StrictService::new(answering("{}")), 1);
    let layer = layer_30k();
    let mut svc = layer.layer(inner);
    svc.ready().await.unwrap();
    let fut = svc.call(request("openai", "gpt-4o", 20_000, 0));
    drop(fut);
    svc.ready().await.unwrap();
    let mut waiting = task::spawn(svc.call(request("openai", "gpt-4o", 20_000, 0)));
    assert_pending!(waiting.poll());
    // The waiting request holds no permit: another clone gets ready and is served now
    // (a scope without a budget).
    let mut other = svc.clone();
    let mut ready = task::spawn(other.ready());
    assert_ready_ok!(ready.poll());
    drop(ready);
    other
        .call(request("openai", "gpt-4o-mini", 50, 0))
        .await
        .unwrap();
    advance(Duration::from_secs(60)).await;
    assert_ready!(waiting.poll()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn cancelled_while_queued_or_waiting_gives_everything_back() {
    let layer = layer_30k();
    let inner = StrictService::new(answering("{}"));
    let probe = inner.probe();
    let svc = layer.layer(inner);
    svc.clone()
        .oneshot(request("openai", "gpt-4o", 20_000, 0))
        .await
        .unwrap();

    advance(Duration::from_secs(10)).await;
    // X waits at the head of the queue until 60 s; Y would fit now but waits behind it
    // (booked now, it would still count at 60 s, where X needs 26,000).
    let mut x = task::spawn(svc.clone().oneshot(request("openai", "gpt-4o", 26_000, 0)));
    assert_pending!(x.poll());
    let mut y = task::spawn(svc.clone().oneshot(request("openai", "gpt-4o", 5_000, 0)));
    assert_pending!(y.poll());
    advance(Duration::from_secs(20)).await;
    assert_pending!(x.poll());
    // Cancel the head: Y goes at once, and only Y was booked.
    drop(x);
    assert!(y.is_woken());
    assert_ready!(y.poll()).unwrap();
    assert_eq!(tpm(&layer), 25_000);
    assert_eq!(probe.calls(), 2);

    // Cancel a request queued behind a waiter: the queue forgets it.
    let mut z = task::spawn(svc.clone().oneshot(request("openai", "gpt-4o", 20_000, 0)));
    assert_pending!(z.poll());
    let mut w = task::spawn(svc.clone().oneshot(request("openai", "gpt-4o", 9_000, 0)));
    assert_pending!(w.poll());
    drop(w);
    advance(Duration::from_secs(30)).await; // the first 20,000 leave the window
    assert_ready!(z.poll()).unwrap();
    assert_eq!(tpm(&layer), 25_000);
    // Nobody waits any more: a request that fits goes at once.
    let t0 = tokio::time::Instant::now();
    svc.oneshot(request("openai", "gpt-4o", 5_000, 0))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(probe.calls(), 4);
    assert_eq!(probe.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelled_while_the_inner_service_gets_ready_refunds_the_booking() {
    let (inner, mut handle) = tower_test::mock::pair::<Request<ReplayBody>, Response<String>>();
    let layer = layer_30k();
    let mut svc = layer.layer(inner);
    handle.allow(1);
    svc.ready().await.unwrap();
    let first = svc.call(request("openai", "gpt-4o", 20_000, 0));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(Response::new(String::new()));
    first.await.unwrap();

    handle.allow(1);
    svc.ready().await.unwrap();
    handle.allow(0); // the readied instance is dropped by the wait; no clone gets ready
    let mut waiting = task::spawn(svc.call(request("openai", "gpt-4o", 20_000, 0)));
    assert_pending!(waiting.poll());
    advance(Duration::from_secs(60)).await;
    // Booked now, but the inner service is not ready: it waits, holding the booking.
    assert_pending!(waiting.poll());
    assert_eq!(tpm(&layer), 20_000);
    drop(waiting);
    assert_eq!(tpm(&layer), 0, "the booking was given back");
}

#[tokio::test(start_paused = true)]
async fn cancelled_after_sending_keeps_the_estimate_and_leaves_flight() {
    let layer = layer_30k();
    let inner = StrictService::new(tower::service_fn(|_req: Request<ReplayBody>| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, std::convert::Infallible>(Response::new(String::from("{}")))
    }));
    let probe = inner.probe();
    let svc = layer.layer(inner);
    let mut fut = task::spawn(svc.oneshot(request("openai", "gpt-4o", 10_000, 0)));
    assert_pending!(fut.poll());
    assert_eq!((probe.calls(), probe.in_flight()), (1, 1));
    drop(fut);
    assert_eq!(probe.in_flight(), 0);
    // The provider may have counted it: the estimate stays charged.
    assert_eq!(tpm(&layer), 10_000);
}

#[tokio::test(start_paused = true)]
async fn futures_and_bodies_are_send_for_multi_threaded_runtimes() {
    fn send<T: Send + 'static>(t: T) -> T {
        t
    }
    let mut svc = send(layer_30k().layer(answering("{}")));
    svc.ready().await.unwrap();
    let resp = send(svc.call(request("openai", "gpt-4o", 10, 0)))
        .await
        .unwrap();
    let _body = send(resp.into_body());
    // The waiting path too (queue lock, sleep, refund notification).
    svc.ready().await.unwrap();
    let fut = send(svc.call(request("openai", "gpt-4o", 29_999, 0)));
    let handle = tokio::spawn(fut);
    advance(Duration::from_secs(60)).await;
    handle.await.unwrap().unwrap();
}
