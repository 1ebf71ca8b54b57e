//! The limiter engine's hot path, side by side with governor's `check_n` and tower's
//! `ConcurrencyLimit` in the same run: uncontended, then from two threads (each thread
//! runs the operation; the time is per operation and thread, wall clock).
//!
//! `cargo bench -p ratelayer-core --bench engine -- --warm-up-time 1 --measurement-time 2`
//!
//! Rows (N = 16 tokens; quotas high enough never to limit, so every operation takes the
//! admit path; the in-memory store behind `LimitState`):
//!
//! - `governor check_n`: one `check_n(N)` on a direct limiter, with governor's default
//!   clock and with `TokioClock` (what ratelayer uses for paused-time tests).
//! - `two tokio clock reads`: `tokio::time::Instant::now()` twice, what `reserve` and
//!   `commit` read (the booking's instant and the use's): the floor of the reserve+commit
//!   rows, which no engine work can go below.
//! - `engine reserve+commit tokens (GCRA | sliding window)`: `reserve(&[(TPM, N)], None)`,
//!   polled once, then `commit()` (two clock reads: booking and use), the `Committed`
//!   dropped.
//! - `engine reserve+commit 1 request (GCRA) + N tokens (sliding)`: the same booking one
//!   request in a GCRA reservoir and N tokens in a sliding window: what a request that
//!   may have to wait books (the TPM layer's queued path, the concurrency layer's paced
//!   start), with the use read from the clock when it is sent.
//! - `engine reserve_at+commit_at (one clock read)`: the same with one instant read by
//!   the caller for both.
//! - `engine take (reserve+commit at once) 1 request + N tokens`: `take`, which books and
//!   commits at once if everything fits now (one clock read): what the TPM layer does for
//!   a request that nobody waits before, its fast path.
//! - `engine try_take (no guard: a bare receipt) 1 request + N tokens`: `try_take`, the
//!   same booking returned as a bare receipt (no reference to the store, no future),
//!   adjusted later through the handle: what the TPM layer does. `engine try_take, no
//!   quota set` is its fixed cost.
//! - `engine try_take N tokens (GCRA) alone`: one bucket, the same shape as governor's
//!   `check_n`.
//! - `engine try_take, each thread its own scope`: the `try_take` row with nothing shared
//!   between the threads (each books in a scope of its own): set beside the shared row,
//!   what two threads booking in one scope at once pay for moving its lock and buckets
//!   between cores (governor's limiter moves one atomic word).
//! - `engine take, no quota set (the fixed cost)`: the same call on a scope without
//!   buckets: the clock read, the scope's lock, the guard's reference and the future,
//!   without any bucket's work.
//! - `engine lease acquire+release` and `tower ConcurrencyLimit acquire+release`: a
//!   concurrency lease taken and given back; tower's layer readied, called, completed.
//!
//! After criterion's rows, a paired measurement: each row alternated with governor's
//! `check_n` in short rounds (load drift on a shared machine hits both alike), with the
//! median ratio. Skip criterion's rows with a filter that matches none (such as
//! `-- paired`).
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

/// Polls a future that is ready at once (the in-memory store never waits), in place (as
/// the TPM layer does: `Pin::new(&mut fut).poll(..)` where it made it).
#[inline(always)]
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

    v.push((
        "two tokio clock reads (reserve+commit's: the floor of that row)",
        Box::new(|| {
            black_box(tokio::time::Instant::now());
            black_box(tokio::time::Instant::now());
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
        "engine take (reserve+commit at once) 1 request + N tokens",
        Box::new(move || {
            black_box(now(h.take(&[(RPM, 1), (TPM, N)])).unwrap());
        }),
    ));
    let h = engine(true);
    v.push((
        "engine try_take (no guard: a bare receipt) 1 request + N tokens",
        Box::new(move || {
            black_box(h.try_take(&[(RPM, 1), (TPM, N)]).unwrap().unwrap());
        }),
    ));
    let h = engine(false);
    v.push((
        "engine try_take N tokens (GCRA) alone",
        Box::new(move || {
            black_box(h.try_take(&[(TPM, N)]).unwrap().unwrap());
        }),
    ));
    v.push((
        "engine try_take, each thread its own scope (nothing shared)",
        Box::new(|| {
            thread_local! {
                static OWN: ScopeHandle = engine(true);
            }
            OWN.with(|h| black_box(h.try_take(&[(RPM, 1), (TPM, N)]).unwrap().unwrap()));
        }),
    ));
    let h = LimitState::new().handle(&Scope::new("bench").with_model("m"));
    v.push((
        "engine try_take, no quota set (the fixed cost)",
        Box::new(move || {
            black_box(h.try_take(&[(RPM, 1), (TPM, N)]).unwrap().unwrap());
        }),
    ));
    let h = LimitState::new().handle(&Scope::new("bench").with_model("m"));
    v.push((
        "engine take, no quota set (the fixed cost)",
        Box::new(move || {
            black_box(now(h.take(&[(RPM, 1), (TPM, N)])).unwrap());
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

/// Runs `op` `iters` times on each of `threads` threads; the wall time per iteration.
fn per_iter(op: &Op, iters: u32, threads: u32) -> f64 {
    let start = StdInstant::now();
    if threads == 1 {
        for _ in 0..iters {
            op();
        }
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..iters {
                        op();
                    }
                });
            }
        });
    }
    start.elapsed().as_secs_f64() * 1e9 / f64::from(iters)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Each row alternated with governor's `check_n` (default clock) in short rounds, so load
/// drift on a shared machine hits both alike: the median time per operation of each, and
/// the median of the per-round ratios.
fn paired(c: &mut Criterion) {
    let _ = c;
    if std::env::args().any(|a| a == "--profile-time") {
        return;
    }
    for (threads, rounds, iters) in [(1, 300, 2_000), (2, 100, 20_000)] {
        let ops = ops();
        let (gname, g) = &ops[0];
        println!("paired, {threads} thread(s), {rounds} alternated rounds, reference: {gname}");
        // `ENGINE_PAIRED=take` measures only the rows whose name contains `take`.
        let only = std::env::var("ENGINE_PAIRED").unwrap_or_default();
        for (name, op) in ops[1..].iter().filter(|(n, _)| n.contains(only.as_str())) {
            let (mut ours, mut theirs, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                let t = per_iter(g, iters, threads);
                let o = per_iter(op, iters, threads);
                theirs.push(t);
                ours.push(o);
                ratio.push(o / t);
            }
            println!(
                "  {name:<68} {:>8.1} ns vs {:>6.1} ns: {:>5.2}x",
                median(ours),
                median(theirs),
                median(ratio)
            );
        }
    }
}

criterion_group!(benches, bench, paired);
criterion_main!(benches);
