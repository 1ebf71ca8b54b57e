//! The limiter engine's hot path, side by side with governor's `check_n` and tower's
//! `ConcurrencyLimit` in the same run: uncontended, then from two threads.
//!
//! `cargo bench -p ratelayer-core --bench engine -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used)]

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant as StdInstant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota as GQuota, RateLimiter};
use ratelayer_core::clock::TokioClock;
use ratelayer_core::engine::{BucketKey, ConcurrencyConfig, Priority, Quota, ScopeHandle};
use ratelayer_core::{LimitState, Scope};
use tower::Service;
use tower::limit::ConcurrencyLimit;

/// Tokens per request.
const N: u64 = 16;
const RPM: BucketKey = BucketKey::REQUESTS_PER_MINUTE;
const TPM: BucketKey = BucketKey::TOKENS_PER_MINUTE;

/// Polls a future that is ready at once (the in-memory store never waits).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("not ready"),
    }
}

/// Rates high enough never to limit (1e9 units per second, a burst of u32::MAX, as for
/// governor below), so every operation takes the admit path.
fn engine(sliding_tokens: bool) -> ScopeHandle {
    let h = LimitState::new().handle(&Scope::new("bench").with_model("m"));
    let per_sec = 1_000_000_000u64;
    h.set_quota(
        RPM,
        Quota::gcra(per_sec * 60, Duration::from_secs(60)).with_burst(u64::from(u32::MAX)),
    )
    .unwrap();
    let tpm = if sliding_tokens {
        Quota::sliding_window(u64::MAX / 4, Duration::from_secs(60))
    } else {
        Quota::gcra(per_sec * 60, Duration::from_secs(60)).with_burst(u64::from(u32::MAX))
    };
    h.set_quota(TPM, tpm).unwrap();
    h.set_concurrency(ConcurrencyConfig::new(1 << 20)).unwrap();
    h
}

fn gquota() -> GQuota {
    GQuota::with_period(Duration::from_nanos(1))
        .unwrap()
        .allow_burst(NonZeroU32::new(u32::MAX).unwrap())
}

type Op = Box<dyn Fn() + Send + Sync>;

fn ops() -> Vec<(&'static str, Op)> {
    let n = NonZeroU32::new(N as u32).unwrap();
    let mut v: Vec<(&'static str, Op)> = Vec::new();

    let g = Arc::new(RateLimiter::direct(gquota()));
    v.push((
        "governor check_n (default clock)",
        Box::new(move || {
            black_box(g.check_n(n).unwrap().is_ok());
        }),
    ));
    let g = Arc::new(RateLimiter::direct_with_clock(gquota(), TokioClock));
    v.push((
        "governor check_n (TokioClock)",
        Box::new(move || {
            black_box(g.check_n(n).unwrap().is_ok());
        }),
    ));

    let h = engine(false);
    v.push((
        "engine reserve+commit tokens (GCRA)",
        Box::new(move || {
            let r = now(h.reserve(&[(TPM, N)], None)).unwrap();
            black_box(r.commit());
        }),
    ));
    let h = engine(true);
    v.push((
        "engine reserve+commit tokens (sliding window)",
        Box::new(move || {
            let r = now(h.reserve(&[(TPM, N)], None)).unwrap();
            black_box(r.commit());
        }),
    ));
    let h = engine(true);
    v.push((
        "engine reserve+commit 1 request (GCRA) + N tokens (sliding)",
        Box::new(move || {
            let r = now(h.reserve(&[(RPM, 1), (TPM, N)], None)).unwrap();
            black_box(r.commit());
        }),
    ));
    let h = engine(true);
    v.push((
        "engine reserve_at+commit_at (one clock read) 1 request + N tokens",
        Box::new(move || {
            let t = tokio::time::Instant::now();
            let r = now(h.reserve_at(&[(RPM, 1), (TPM, N)], None, t)).unwrap();
            black_box(r.commit_at(t));
        }),
    ));
    let h = engine(true);
    v.push((
        "engine lease acquire+release",
        Box::new(move || {
            black_box(now(h.lease(Priority::Normal)).unwrap());
        }),
    ));

    *TOWER.lock().unwrap() = Some(ConcurrencyLimit::new(
        tower::service_fn(ok as fn(()) -> std::future::Ready<Result<(), Infallible>>),
        1 << 20,
    ));
    v.push((
        "tower ConcurrencyLimit acquire+release",
        Box::new(|| {
            // One clone per thread (readiness is per instance), sharing the semaphore.
            thread_local! {
                static SVC: RefCell<Option<TowerSvc>> = const { RefCell::new(None) };
            }
            SVC.with_borrow_mut(|svc| {
                let s = svc.get_or_insert_with(|| TOWER.lock().unwrap().clone().unwrap());
                let mut cx = Context::from_waker(Waker::noop());
                assert!(s.poll_ready(&mut cx).is_ready());
                black_box(now(s.call(())).is_ok());
            });
        }),
    ));
    v
}

type TowerSvc =
    ConcurrencyLimit<tower::util::ServiceFn<fn(()) -> std::future::Ready<Result<(), Infallible>>>>;

static TOWER: Mutex<Option<TowerSvc>> = Mutex::new(None);

fn ok(_: ()) -> std::future::Ready<Result<(), Infallible>> {
    std::future::ready(Ok(()))
}

fn bench(c: &mut Criterion) {
    let mut one = c.benchmark_group("uncontended");
    for (name, op) in ops() {
        one.bench_function(name, |b| b.iter(&op));
    }
    one.finish();

    let mut two = c.benchmark_group("two threads");
    for (name, op) in ops() {
        let op = Arc::new(op);
        two.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = StdInstant::now();
                std::thread::scope(|s| {
                    for _ in 0..2 {
                        let op = Arc::clone(&op);
                        s.spawn(move || {
                            for _ in 0..iters {
                                op();
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    two.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
