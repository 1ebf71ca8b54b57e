//! Per-request overhead of the fallback on the success path (the primary answers at
//! once), against the bare service and against the same service boxed as the fallback
//! boxes its providers (tower has no fallback of its own to compare with).
#![allow(missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use ratelayer_core::{LimitState, ReplayBody};
use ratelayer_fallback::{Fallback, ProviderSpec};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt, service_fn};

fn inner() -> impl Service<
    Request<ReplayBody>,
    Response = Response<String>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<String>, Infallible>>,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(|_req: Request<ReplayBody>| std::future::ready(Ok(Response::new(String::new()))))
}

fn req() -> Request<ReplayBody> {
    Request::post("http://localhost/v1/chat/completions")
        .header("authorization", "Bearer sk-test")
        .header("content-type", "application/json")
        .body(ReplayBody::from(
            r#"{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}"#,
        ))
        .unwrap()
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

    let boxed = BoxCloneSyncService::new(inner());
    g.bench_function("boxed", |b| {
        b.iter(|| {
            rt.block_on(boxed.clone().oneshot(black_box(req())))
                .unwrap()
        })
    });

    let one = Fallback::builder()
        .provider(ProviderSpec::new("openai").service(inner()))
        .build()
        .unwrap();
    g.bench_function("fallback_one_provider", |b| {
        b.iter(|| rt.block_on(one.clone().oneshot(black_box(req()))).unwrap())
    });

    let two = Fallback::builder()
        .provider(ProviderSpec::new("openai").service(inner()))
        .provider(
            ProviderSpec::new("kimi")
                .model("kimi-k2")
                .header("authorization", "Bearer sk-kimi")
                .service(inner()),
        )
        .limit_state(LimitState::new())
        .build()
        .unwrap();
    g.bench_function("fallback_two_providers_wait_estimate", |b| {
        b.iter(|| rt.block_on(two.clone().oneshot(black_box(req()))).unwrap())
    });

    // With the metadata already cached (as when an outer layer estimated it).
    let with_meta = || {
        let mut r = req();
        ratelayer_core::meta::ensure(&mut r);
        r
    };
    g.bench_function("fallback_two_providers_meta_cached", |b| {
        b.iter_batched(
            with_meta,
            |r| rt.block_on(two.clone().oneshot(black_box(r))).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
