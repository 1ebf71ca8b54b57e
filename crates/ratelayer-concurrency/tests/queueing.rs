//! Queueing, hot reload, priorities, queue bounds and cancellation, under paused time with
//! tower-test's mock service.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{req, scope};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use ratelayer_concurrency::{
    ConcurrencyConfig, ConcurrencyHandle, ConcurrencyLayer, Limits, Priority, WhenFull,
};
use ratelayer_core::{LimitState, QueueFull};
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, ServiceExt};
use tower_test::mock;

type Mock = mock::Mock<Request<String>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<String>, Response<Full<Bytes>>>;

fn setup(
    limits: Limits,
) -> (
    ratelayer_concurrency::Concurrency<Mock>,
    Handle,
    ConcurrencyHandle,
) {
    let (layer, handle) =
        ConcurrencyLayer::pair(ConcurrencyConfig::new().provider("p", limits)).unwrap();
    let (mock, mh) = mock::pair();
    (layer.layer(mock), mh, handle)
}

fn ok(body: &str) -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from(body.to_owned())))
}

/// Starts `n` callers (bodies "0".."n-1") and polls them once, in order.
macro_rules! callers {
    ($svc:expr, $n:expr) => {{
        let mut v: Vec<_> = (0..$n)
            .map(|i| task::spawn($svc.clone().oneshot(req("p", i.to_string()))))
            .collect();
        for t in v.iter_mut() {
            assert_pending!(t.poll());
        }
        v
    }};
}

async fn next_body(mh: &mut Handle) -> (String, mock::SendResponse<Response<Full<Bytes>>>) {
    let (r, send) = mh
        .next_request()
        .await
        .expect("a request reached the inner service");
    (r.into_body(), send)
}

#[tokio::test(start_paused = true)]
async fn limit_one_is_fifo_and_the_body_holds_the_permit() {
    let (svc, mut mh, handle) = setup(Limits::new().max_concurrent(1));
    let mut tasks = callers!(svc, 4);
    assert_eq!(handle.stats(&scope("p")).unwrap().queued, 3);
    for i in 0..tasks.len() {
        for t in &mut tasks[i..] {
            assert_pending!(t.poll());
        }
        let t = &mut tasks[i];
        let (body, send) = next_body(&mut mh).await;
        assert_eq!(body, i.to_string(), "arrival order");
        assert!(mh.poll_request().is_pending(), "only one in flight");
        send.send_response(ok("done"));
        let res = assert_ready!(t.poll()).unwrap();
        assert!(res.body().holds_permit());
        // The response arrived, but its body is not read yet: still in flight.
        assert_eq!(handle.stats(&scope("p")).unwrap().in_flight, 1);
        assert!(mh.poll_request().is_pending());
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "done");
    }
    let s = handle.stats(&scope("p")).unwrap();
    assert_eq!((s.in_flight, s.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn raising_the_limit_admits_queued_requests_at_once() {
    let (svc, mut mh, handle) = setup(Limits::new().max_concurrent(1));
    let mut tasks = callers!(svc, 4);
    let (_, first) = next_body(&mut mh).await;
    handle
        .set_limits("p", Limits::new().max_concurrent(3))
        .unwrap();
    for t in tasks.iter_mut() {
        let _ = t.poll();
    }
    // Two more start at once, without anything finishing.
    let (b1, s1) = next_body(&mut mh).await;
    let (b2, s2) = next_body(&mut mh).await;
    assert_eq!((b1.as_str(), b2.as_str()), ("1", "2"));
    assert!(mh.poll_request().is_pending());
    assert_eq!(handle.stats(&scope("p")).unwrap().in_flight, 3);
    drop((first, s1, s2));
}

#[tokio::test(start_paused = true)]
async fn lowering_the_limit_waits_for_in_flight_requests() {
    let (svc, mut mh, handle) = setup(Limits::new().max_concurrent(3));
    let mut tasks = callers!(svc, 4);
    let mut sends = Vec::new();
    for _ in 0..3 {
        sends.push(next_body(&mut mh).await.1);
    }
    handle
        .set_limits("p", Limits::new().max_concurrent(1))
        .unwrap();
    // Nothing in flight is cancelled.
    assert_eq!(handle.stats(&scope("p")).unwrap().in_flight, 3);
    for (i, send) in sends.into_iter().enumerate() {
        send.send_response(ok("x"));
        drop(assert_ready!(tasks[i].poll()).unwrap());
        assert_pending!(tasks[3].poll());
        if i < 2 {
            assert!(mh.poll_request().is_pending(), "still above the new limit");
        }
    }
    // All three finished: the fourth starts, alone.
    let (b, send) = next_body(&mut mh).await;
    assert_eq!(b, "3");
    send.send_response(ok("x"));
    assert_ready!(tasks[3].poll()).unwrap();
}

/// Polls every unfinished caller (twice, so a released permit reaches the next one) and
/// drops finished responses (releasing their permits).
fn drive<F, B>(tasks: &mut [Option<task::Spawn<F>>])
where
    F: std::future::Future<Output = Result<Response<B>, ratelayer_core::BoxError>>,
{
    for _ in 0..2 {
        for slot in tasks.iter_mut() {
            if let Some(t) = slot
                && let std::task::Poll::Ready(r) = t.poll()
            {
                drop(r.unwrap());
                *slot = None;
            }
        }
    }
}

/// Serves `n` requests one at a time, in the order the layer lets them reach the inner
/// service; returns their bodies.
fn serve<F, B>(mh: &mut Handle, tasks: &mut [Option<task::Spawn<F>>], n: usize) -> Vec<String>
where
    F: std::future::Future<Output = Result<Response<B>, ratelayer_core::BoxError>>,
{
    let mut order = Vec::new();
    for _ in 0..n {
        drive(tasks);
        let std::task::Poll::Ready(Some((r, send))) = mh.poll_request() else {
            panic!("no request reached the inner service (served so far: {order:?})");
        };
        assert!(mh.poll_request().is_pending(), "only one in flight");
        order.push(r.into_body());
        send.send_response(ok("x"));
        drive(tasks);
    }
    order
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_fails_at_once_or_waits() {
    let limits = Limits::new().max_concurrent(1).queue_capacity(2);
    let (svc, mut mh, handle) = setup(limits.clone().when_full(WhenFull::Fail));
    let mut tasks: Vec<_> = callers!(svc, 3).into_iter().map(Some).collect();
    let mut rejected = task::spawn(svc.clone().oneshot(req("p", "x")));
    let err = assert_ready!(rejected.poll()).unwrap_err();
    let full = err.downcast_ref::<QueueFull>().expect("a QueueFull error");
    assert_eq!(full.capacity, 2);
    assert_eq!(full.scope, scope("p"));
    assert!(err.to_string().contains("queue"), "{err}");

    handle
        .set_limits("p", limits.when_full(WhenFull::Wait))
        .unwrap();
    let mut patient = task::spawn(svc.clone().oneshot(req("p", "late")));
    assert_pending!(patient.poll());
    // It waits for room: the queue keeps its bound.
    assert_eq!(handle.stats(&scope("p")).unwrap().queued, 2);
    tasks.push(Some(patient));
    // It is served after the others, in order.
    assert_eq!(serve(&mut mh, &mut tasks, 4), ["0", "1", "2", "late"]);
}

#[tokio::test(start_paused = true)]
async fn high_priority_goes_first_and_normal_is_not_starved() {
    let (svc, mut mh, _handle) = setup(Limits::new().max_concurrent(1).high_priority_streak(2));
    let mut tasks = vec![Some(task::spawn(svc.clone().oneshot(req("p", "blocker"))))];
    drive(&mut tasks);
    for name in ["n1", "n2", "h1", "h2", "h3", "h4"] {
        let mut r = req("p", name);
        if name.starts_with('h') {
            r.extensions_mut().insert(Priority::High);
        }
        tasks.push(Some(task::spawn(svc.clone().oneshot(r))));
    }
    let order = serve(&mut mh, &mut tasks, 7);
    // High first, but at most 2 in a row while a normal request waits.
    assert_eq!(order, ["blocker", "h1", "h2", "n1", "h3", "h4", "n2"]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_leaves_the_queue() {
    let (svc, mut mh, handle) = setup(Limits::new().max_concurrent(1));
    let mut tasks = callers!(svc, 3);
    assert_eq!(handle.stats(&scope("p")).unwrap().queued, 2);
    let dropped = tasks.remove(1);
    drop(dropped);
    assert_eq!(handle.stats(&scope("p")).unwrap().queued, 1);
    let (b, send) = next_body(&mut mh).await;
    assert_eq!(b, "0");
    send.send_response(ok("x"));
    drop(assert_ready!(tasks[0].poll()).unwrap());
    assert_pending!(tasks[1].poll());
    let (b, _send) = next_body(&mut mh).await;
    assert_eq!(
        b, "2",
        "the dropped request never reached the inner service"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_stream_releases_its_permit() {
    type Chan = http_body_util::channel::Channel<Bytes>;
    let (layer, handle) = ConcurrencyLayer::pair(
        ConcurrencyConfig::new().provider("p", Limits::new().max_concurrent(1)),
    )
    .unwrap();
    let (mock, mut mh) = mock::pair::<Request<String>, Response<Chan>>();
    let svc = layer.layer(mock);
    let mut first = task::spawn(svc.clone().oneshot(req("p", "stream")));
    assert_pending!(first.poll());
    let mut second = task::spawn(svc.clone().oneshot(req("p", "next")));
    assert_pending!(second.poll());
    let (_, send) = mh.next_request().await.unwrap();
    let (mut tx, body) = Chan::new(4);
    send.send_response(Response::new(body));
    let mut res = assert_ready!(first.poll()).unwrap();
    tx.send_data(Bytes::from("data: 1\n\n")).await.unwrap();
    let frame = res.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "data: 1\n\n");
    // Mid-stream: still in flight, the next request waits.
    assert!(res.body().holds_permit());
    assert_pending!(second.poll());
    assert!(mh.poll_request().is_pending());
    drop(res);
    assert_eq!(
        handle.stats(&scope("p")).unwrap().in_flight,
        1,
        "handed to the next"
    );
    assert_pending!(second.poll());
    let (r, _) = mh.next_request().await.unwrap();
    assert_eq!(r.into_body(), "next");
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_ends_releases_its_permit() {
    type Chan = http_body_util::channel::Channel<Bytes>;
    let layer = ConcurrencyLayer::new(
        ConcurrencyConfig::new().provider("p", Limits::new().max_concurrent(1)),
    )
    .unwrap();
    let handle = layer.handle();
    let (mock, mut mh) = mock::pair::<Request<String>, Response<Chan>>();
    let svc = layer.layer(mock);
    let mut first = task::spawn(svc.clone().oneshot(req("p", "stream")));
    assert_pending!(first.poll());
    let (_, send) = mh.next_request().await.unwrap();
    let (mut tx, body) = Chan::new(4);
    send.send_response(Response::new(body));
    let mut res = assert_ready!(first.poll()).unwrap();
    tx.send_data(Bytes::from("a")).await.unwrap();
    drop(tx);
    let _ = res.body_mut().frame().await;
    assert!(res.body_mut().frame().await.is_none());
    assert!(
        !res.body().holds_permit(),
        "released at the end of the stream"
    );
    assert_eq!(handle.stats(&scope("p")).unwrap().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn nothing_starts_during_a_cooldown() {
    let state = LimitState::new();
    let layer = ConcurrencyLayer::new(ConcurrencyConfig::new())
        .unwrap()
        .with_state(state.clone());
    let (mock, mut mh) = mock::pair::<Request<String>, Response<Full<Bytes>>>();
    let svc = layer.layer(mock);
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    state.set_cooldown(&scope("p"), until);
    let mut t = task::spawn(svc.clone().oneshot(req("p", "x")));
    assert_pending!(t.poll());
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_pending!(t.poll());
    assert!(mh.poll_request().is_pending());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_pending!(t.poll());
    let (r, send) = mh.next_request().await.unwrap();
    assert_eq!(tokio::time::Instant::now(), until);
    assert_eq!(r.into_body(), "x");
    send.send_response(ok("y"));
    assert_ready!(t.poll()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn permits_of_each_scope_go_back_to_their_own_scope() {
    // "p" is the layer's first scope, "q" another one: their permits are given back
    // through different owners, and each admits only its own queue.
    let (layer, handle) = ConcurrencyLayer::pair(
        ConcurrencyConfig::new()
            .provider("p", Limits::new().max_concurrent(1))
            .provider("q", Limits::new().max_concurrent(1)),
    )
    .unwrap();
    let (mock, mut mh) = mock::pair::<Request<String>, Response<Full<Bytes>>>();
    let svc = layer.layer(mock);
    let mut p1 = task::spawn(svc.clone().oneshot(req("p", "p1")));
    let mut q1 = task::spawn(svc.clone().oneshot(req("q", "q1")));
    let mut p2 = task::spawn(svc.clone().oneshot(req("p", "p2")));
    let mut q2 = task::spawn(svc.clone().oneshot(req("q", "q2")));
    for t in [&mut p1, &mut q1, &mut p2, &mut q2] {
        assert_pending!(t.poll());
    }
    let stats = |p: &str| {
        let s = handle.stats(&scope(p)).unwrap();
        (s.in_flight, s.queued)
    };
    assert_eq!((stats("p"), stats("q")), ((1, 1), (1, 1)));
    let (a, send_a) = next_body(&mut mh).await;
    let (b, send_b) = next_body(&mut mh).await;
    assert_eq!((a.as_str(), b.as_str()), ("p1", "q1"));

    // q1 ends: only q2 is admitted.
    send_b.send_response(ok("q1"));
    drop(assert_ready!(q1.poll()).unwrap());
    assert_eq!((stats("p"), stats("q")), ((1, 1), (1, 0)));
    assert_pending!(p2.poll());
    assert_pending!(q2.poll());
    let (c, send_c) = next_body(&mut mh).await;
    assert_eq!(c, "q2");

    // p1 ends: p2 is admitted; then everything ends and nothing stays held.
    send_a.send_response(ok("p1"));
    drop(assert_ready!(p1.poll()).unwrap());
    assert_eq!((stats("p"), stats("q")), ((1, 0), (1, 0)));
    assert_pending!(p2.poll());
    let (d, send_d) = next_body(&mut mh).await;
    assert_eq!(d, "p2");
    send_c.send_response(ok("q2"));
    send_d.send_response(ok("p2"));
    drop(assert_ready!(q2.poll()).unwrap());
    drop(assert_ready!(p2.poll()).unwrap());
    assert_eq!((stats("p"), stats("q")), ((0, 0), (0, 0)));
}
