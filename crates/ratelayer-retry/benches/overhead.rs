//! Per-request overhead on the success path: BackoffRetry (with and without pacing),
//! TierDetect + BackoffRetry, against tower's own `Retry` with a never-retry policy and
//! against the bare service.
#![allow(missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use ratelayer_core::{LimitState, ReplayBody};
use ratelayer_retry::BackoffRetryLayer;
use ratelayer_tier::TierDetectLayer;
use tower::retry::{Policy, RetryLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

#[derive(Clone)]
struct Never;

impl<Req: Clone, Res, E> Policy<Req, Res, E> for Never {
    type Future = std::future::Ready<()>;
    fn retry(&mut self, _req: &mut Req, _result: &mut Result<Res, E>) -> Option<Self::Future> {
        None
    }
    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn inner() -> impl Service<
    Request<ReplayBody>,
    Response = Response<String>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<String>, Infallible>>,
> + Clone {
    service_fn(|_req: Request<ReplayBody>| {
        std::future::ready(Ok(Response::builder()
            .header("x-ratelimit-limit-requests", "10000")
            .header("x-ratelimit-remaining-requests", "9999")
            .body(String::new())
            .unwrap()))
    })
}

fn req() -> Request<ReplayBody> {
    Request::post("http://localhost/v1/chat/completions")
        .header("content-type", "application/json")
        .body(ReplayBody::from(r#"{"model":"gpt-4o-mini","messages":[]}"#))
        .unwrap()
}

/// tower's `Retry` needs `Clone` requests: a wrapper cloning through `try_clone_request`.
struct Cloneable(Request<ReplayBody>);
impl Clone for Cloneable {
    fn clone(&self) -> Self {
        Cloneable(ratelayer_core::body::try_clone_request(&self.0).unwrap())
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("success_path");

    let bare = inner();
    g.bench_function("bare", |b| {
        b.iter(|| rt.block_on(bare.clone().oneshot(black_box(req()))).unwrap())
    });

    let tower_retry = RetryLayer::new(Never).layer(service_fn({
        let s = inner();
        move |r: Cloneable| s.clone().oneshot(r.0)
    }));
    g.bench_function("tower_retry", |b| {
        b.iter(|| {
            rt.block_on(tower_retry.clone().oneshot(black_box(Cloneable(req()))))
                .unwrap()
        })
    });

    let state = LimitState::new();
    let retry = BackoffRetryLayer::builder(state.clone())
        .pacing(false)
        .build()
        .unwrap()
        .layer(inner());
    g.bench_function("backoff_retry", |b| {
        b.iter(|| {
            rt.block_on(retry.clone().oneshot(black_box(req())))
                .unwrap()
        })
    });

    // The same with the request's metadata already estimated (as in a full stack, where
    // the first layer caches it): the layer's own cost without the JSON estimate.
    let with_meta = || {
        let mut r = req();
        ratelayer_core::meta::ensure(&mut r);
        r
    };
    g.bench_function("backoff_retry_meta_cached", |b| {
        b.iter_batched(
            with_meta,
            |r| rt.block_on(retry.clone().oneshot(black_box(r))).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });

    let paced = BackoffRetryLayer::new(state.clone()).layer(inner());
    g.bench_function("backoff_retry_paced", |b| {
        b.iter(|| {
            rt.block_on(paced.clone().oneshot(black_box(req())))
                .unwrap()
        })
    });

    let both = BackoffRetryLayer::new(state.clone())
        .layer(TierDetectLayer::new(state.clone()).layer(inner()));
    g.bench_function("backoff_retry_paced_and_tier_detect", |b| {
        b.iter(|| rt.block_on(both.clone().oneshot(black_box(req()))).unwrap())
    });

    let tier = TierDetectLayer::new(state).layer(inner());
    g.bench_function("tier_detect", |b| {
        b.iter(|| rt.block_on(tier.clone().oneshot(black_box(req()))).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
