//! The tower contract: readiness, clones, and cancellation at every await point.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{req, scope};
use http::{Request, Response};
use http_body_util::Full;
use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits, Reservoir};
use ratelayer_core::LimitState;
use ratelayer_mock::contract::StrictService;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

fn ok() -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(b"ok")))
}

#[tokio::test(start_paused = true)]
async fn strict_inner_is_called_only_when_ready_from_every_clone() {
    let layer = ConcurrencyLayer::new(
        ConcurrencyConfig::new().provider(
            "p",
            Limits::new()
                .max_concurrent(2)
                .min_spacing(Duration::from_millis(100)),
        ),
    )
    .unwrap();
    let inner = StrictService::new(tower::service_fn(|_: Request<String>| async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        Ok::<_, Infallible>(ok())
    }));
    let probe = inner.probe();
    let svc = layer.layer(inner);
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(req("p", i.to_string())).await.map(drop) })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(probe.calls(), 10);
    assert_eq!(probe.max_in_flight(), 2);
    assert_eq!(probe.in_flight(), 0);
    let stats = layer.handle().stats(&scope("p")).unwrap();
    assert_eq!((stats.in_flight, stats.queued), (0, 0));
}

/// Limits live in the layer (an `Arc` made when it was built): every service it builds, and
/// every clone of them, counts against the same limit.
#[tokio::test(start_paused = true)]
async fn services_of_one_layer_share_their_limits() {
    let layer = ConcurrencyLayer::new(
        ConcurrencyConfig::new().provider("p", Limits::new().max_concurrent(1)),
    )
    .unwrap();
    let inner = || tower::service_fn(|_: Request<String>| async { Ok::<_, Infallible>(ok()) });
    let a = layer.layer(inner());
    let b = layer.layer(inner());
    let held = a.clone().oneshot(req("p", "a")).await.unwrap();
    let mut waiting = task::spawn(b.clone().oneshot(req("p", "b")));
    assert_pending!(waiting.poll());
    drop(held);
    assert_ready!(waiting.poll()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn inner_readiness_is_not_held_while_a_request_waits() {
    let sem = Arc::new(Semaphore::new(2));
    let inner = tower::limit::ConcurrencyLimit::with_semaphore(
        tower::service_fn(|_: Request<String>| async { Ok::<_, Infallible>(ok()) }),
        sem.clone(),
    );
    let layer = ConcurrencyLayer::new(
        ConcurrencyConfig::new().provider("p", Limits::new().max_concurrent(1)),
    )
    .unwrap();
    let mut svc = layer.layer(inner);
    let held = svc
        .ready()
        .await
        .unwrap()
        .call(req("p", "0"))
        .await
        .unwrap();
    assert_eq!(sem.available_permits(), 2, "the inner exchange is over");
    // Our permit is still in `held`'s body: the next request queues. It was polled ready
    // (taking an inner permit), and must give that readiness up while it waits.
    let mut waiting = task::spawn(svc.ready().await.unwrap().call(req("p", "1")));
    assert_pending!(waiting.poll());
    assert_eq!(sem.available_permits(), 2);
    drop(held);
    let res = assert_ready!(waiting.poll()).unwrap();
    drop(res);
    assert_eq!(sem.available_permits(), 2);
}

/// One target request passes through every await point: cooldown, queue, reservoir
/// sleep, inner readiness, inner call, streamed body. Dropped after each of them, it must
/// leave nothing behind.
#[tokio::test(start_paused = true)]
async fn cancellation_at_every_await_point_leaks_nothing() {
    for cancel_at in 0..=6 {
        let state = LimitState::new();
        let (layer, handle) = ConcurrencyLayer::pair(
            ConcurrencyConfig::new().provider(
                "p",
                Limits::new()
                    .max_concurrent(1)
                    .reservoir(Reservoir::new(1, Duration::from_secs(60))),
            ),
        )
        .unwrap();
        let layer = layer.with_state(state.clone());
        let (mock, mut mh) = mock::pair::<Request<String>, Response<Full<Bytes>>>();
        let inner = StrictService::new(mock);
        let probe = inner.probe();
        let svc = layer.layer(inner);
        let t0 = Instant::now();

        // A blocker holds the permit (in its body) and the reservoir's one start.
        let mut blocker = task::spawn(svc.clone().oneshot(req("p", "blocker")));
        assert_pending!(blocker.poll());
        let (_, send) = mh.next_request().await.unwrap();
        send.send_response(ok());
        let mut blocker = Some(assert_ready!(blocker.poll()).unwrap());

        state.set_cooldown(&scope("p"), t0 + Duration::from_secs(10));
        let mut target = task::spawn(svc.clone().oneshot(req("p", "target")));
        let mut response = None;
        let mut sent = None;
        for step in 0..=cancel_at {
            match step {
                0 => assert_pending!(target.poll()), // cooling down
                1 => {
                    tokio::time::advance(Duration::from_secs(10)).await;
                    assert_pending!(target.poll()); // queued behind the blocker
                    assert_eq!(handle.stats(&scope("p")).unwrap().queued, 1);
                }
                2 => {
                    blocker = None; // releases the permit
                    assert_pending!(target.poll()); // sleeping for the reservoir
                    assert_eq!(handle.stats(&scope("p")).unwrap().in_flight, 1);
                }
                3 => {
                    mh.allow(0);
                    tokio::time::advance(Duration::from_secs(50)).await;
                    assert_pending!(target.poll()); // waiting for inner readiness
                    assert_eq!(probe.calls(), 1);
                }
                4 => {
                    mh.allow(1);
                    assert_pending!(target.poll()); // called, waiting for the response
                    assert_eq!(probe.calls(), 2);
                    sent = Some(mh.next_request().await.unwrap().1);
                }
                5 => {
                    sent.take().unwrap().send_response(ok());
                    response = Some(assert_ready!(target.poll()).unwrap()); // body holds permit
                }
                _ => response = None, // body dropped: done
            }
        }
        drop(target);
        drop(response);
        drop(sent);
        drop(blocker);
        let stats = handle.stats(&scope("p")).unwrap();
        assert_eq!(stats.in_flight, 0, "permit leaked (cancel at {cancel_at})");
        assert_eq!(stats.queued, 0, "queue slot leaked (cancel at {cancel_at})");
        assert_eq!(
            probe.in_flight(),
            0,
            "inner future leaked (cancel at {cancel_at})"
        );
        if cancel_at < 4 {
            // The unused reservoir booking was given back: only the blocker's start counts.
            let expect = (t0 + Duration::from_secs(60)).saturating_duration_since(Instant::now());
            assert_eq!(
                stats.pacing_wait, expect,
                "booking leaked (cancel at {cancel_at})"
            );
            assert_eq!(probe.calls(), 1, "target sent (cancel at {cancel_at})");
        }
    }
}
