//! Throughput of a shared, non-binding `ConcurrencyLayer` beside tower's `ConcurrencyLimit`,
//! in the same run: a multi-thread runtime with 2 workers, 64 concurrent tasks, each
//! sending requests one after another through a clone of the shared service.
//!
//! `cargo bench -p ratelayer-concurrency --bench throughput`
#![allow(missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
use ratelayer_core::RequestMeta;
use ratelayer_core::meta::{self, EstimateSource};
use tower::{Layer, Service, ServiceExt};

const TASKS: usize = 64;
const PER_TASK: usize = 64;
const LIMIT: u32 = 1024;

fn request() -> Request<String> {
    let mut req = Request::new(String::new());
    meta::set(
        &mut req,
        RequestMeta {
            provider: "openai".into(),
            credential: Some("fp".into()),
            model: Some("gpt-4o-mini".into()),
            input_tokens: 10,
            dense_input_tokens: 0,
            output_tokens: 10,
            source: EstimateSource::Explicit,
        },
    );
    req
}

fn inner()
-> impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future = impl Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(|_req: Request<String>| async {
        // One scheduling point, as a real exchange would have.
        tokio::task::yield_now().await;
        Ok::<_, Infallible>(Response::new(String::new()))
    })
}

/// 64 tasks × 64 requests through clones of `svc`; returns the time taken.
async fn round<S>(svc: S) -> Duration
where
    S: Service<Request<String>> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    let res = svc.clone().oneshot(request()).await.unwrap();
                    drop(res);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn measure<S>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: S,
) where
    S: Service<Request<String>> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: std::fmt::Debug,
{
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += round(svc.clone()).await;
                }
                total
            })
        })
    });
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("64 tasks, 2 workers");
    g.throughput(Throughput::Elements((TASKS * PER_TASK) as u64));
    let tower_svc = tower::limit::ConcurrencyLimitLayer::new(LIMIT as usize).layer(inner());
    measure(&mut g, &rt, "tower ConcurrencyLimit", tower_svc.clone());
    let layer = ConcurrencyLayer::new(
        ConcurrencyConfig::new().default_limits(Limits::new().max_concurrent(LIMIT)),
    )
    .unwrap();
    let ours = layer.layer(inner());
    measure(&mut g, &rt, "ratelayer ConcurrencyLayer", ours.clone());
    g.finish();

    // The same rounds, alternated, so load drift on a shared machine hits both alike.
    const PAIRS: u32 = 400;
    let (mut t_tower, mut t_ours) = (Duration::ZERO, Duration::ZERO);
    rt.block_on(async {
        for _ in 0..PAIRS {
            t_tower += round(tower_svc.clone()).await;
            t_ours += round(ours.clone()).await;
        }
    });
    println!(
        "paired ({PAIRS} alternated rounds): tower {:.3} ms/round, ratelayer {:.3} ms/round, \
         speed ratio ratelayer/tower = {:.2}",
        t_tower.as_secs_f64() * 1e3 / f64::from(PAIRS),
        t_ours.as_secs_f64() * 1e3 / f64::from(PAIRS),
        t_tower.as_secs_f64() / t_ours.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
