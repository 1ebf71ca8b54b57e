//! Per-request overhead of ratelayer's layers against a bare no-op service and tower's
//! own `ConcurrencyLimit` + `RateLimit` + `Retry`, with a 1 KiB chat request, in one run.
//!
//! `cargo bench -p ratelayer --bench stack`
//!
//! Every variant builds the same request per iteration (inside the timed loop, so the
//! bare service's figure includes it); the differences are the layers' own cost. Limits
//! are set far above the load, so nothing ever waits: this is the fast path.

use std::convert::Infallible;
use std::future::Ready;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use ratelayer::concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
use ratelayer::core::{LimitState, ReplayBody};
use ratelayer::tpm::{Budget, ModelLimits, TpmConfig, TpmLimitLayer};
use ratelayer::{Chain, Preset};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// A 1 KiB OpenAI chat request body.
fn body_1k() -> bytes::Bytes {
    let head = r#"{"model":"gpt-4o-mini","max_tokens":256,"messages":[{"role":"user","content":""#;
    let tail = r#""}]}"#;
    let words = "rate limit token queue wait tier back off ";
    let mut content = String::new();
    while head.len() + content.len() + tail.len() < 1024 {
        content.push_str(words);
    }
    content.truncate(1024 - head.len() - tail.len());
    bytes::Bytes::from(format!("{head}{content}{tail}"))
}

fn request(body: &bytes::Bytes) -> Request<ReplayBody> {
    let mut req = Request::post("http://127.0.0.1:8080/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .body(ReplayBody::new(body.clone()))
        .unwrap_or_default();
    req.extensions_mut()
        .insert(ratelayer::core::meta::ProviderName::new("openai"));
    req
}

/// The no-op inner service: answers 200 at once.
#[derive(Clone, Copy)]
struct Noop;

impl Service<Request<ReplayBody>> for Noop {
    type Response = Response<ReplayBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<ReplayBody>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<ReplayBody>) -> Self::Future {
        std::future::ready(Ok(Response::new(ReplayBody::empty())))
    }
}

/// Times `iters` sequential requests through `svc` on a current-thread runtime.
fn drive<S>(rt: &tokio::runtime::Runtime, svc: &mut S, body: &bytes::Bytes, iters: u64) -> Duration
where
    S: Service<Request<ReplayBody>>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let req = request(body);
            let svc = match svc.ready().await {
                Ok(s) => s,
                Err(e) => panic!("not ready: {e:?}"),
            };
            let _ = black_box(svc.call(req).await);
        }
        start.elapsed()
    })
}

/// tower's retry policy for the comparison: never retries a success, clones the request.
#[derive(Clone, Copy)]
struct RetryNever;

impl<Res, E> tower::retry::Policy<Request<ReplayBody>, Res, E> for RetryNever {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<ReplayBody>,
        _: &mut Result<Res, E>,
    ) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, req: &Request<ReplayBody>) -> Option<Request<ReplayBody>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

fn stack(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let body = body_1k();
    let mut group = c.benchmark_group("1KiB request");

    group.bench_function("bare no-op service", |b| {
        let mut svc = Noop;
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    // ratelayer's layers, each alone, then the whole per-provider stack and a chain of one
    // provider. Limits far above the load: the fast path.
    let huge = ratelayer::ProviderLimits::default()
        .rpm(1_000_000_000)
        .tpm(1_000_000_000_000)
        .max_concurrent(1_000_000);

    group.bench_function("TierDetectLayer", |b| {
        let mut svc = ratelayer::tier::TierDetectLayer::new(LimitState::new()).layer(Noop);
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("BackoffRetryLayer", |b| {
        let mut svc = ratelayer::retry::BackoffRetryLayer::new(LimitState::new()).layer(Noop);
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("TpmLimitLayer", |b| {
        let config =
            TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(1_000_000_000_000)));
        let layer = match TpmLimitLayer::with_state(config, LimitState::new()) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let mut svc = layer.layer(Noop);
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("ConcurrencyLayer", |b| {
        let config =
            ConcurrencyConfig::new().provider("openai", Limits::new().max_concurrent(1_000_000));
        let layer = match ConcurrencyLayer::new(config) {
            Ok(l) => l.with_state(LimitState::new()),
            Err(e) => panic!("{e}"),
        };
        let mut svc = layer.layer(Noop);
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("full stack (Preset::openai)", |b| {
        let layer = Preset::openai()
            .base_url("http://127.0.0.1:8080")
            .api_key("sk-bench")
            .limits(huge)
            .layer(&LimitState::new());
        let mut svc = match layer {
            Ok(l) => l.layer(Noop),
            Err(e) => panic!("{e}"),
        };
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("full chain (Chain of one Preset::openai)", |b| {
        let chain = Chain::new()
            .provider(
                Preset::openai()
                    .base_url("http://127.0.0.1:8080")
                    .api_key("sk-bench")
                    .limits(huge),
            )
            .build::<_, ReplayBody, _>(Noop);
        let mut svc = match chain {
            Ok((svc, _stats)) => svc,
            Err(e) => panic!("{e}"),
        };
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("tower ConcurrencyLimit+RateLimit+Retry", |b| {
        let mut svc = rt.block_on(async {
            // tower's RateLimit is not Clone, so Retry (which clones its inner service)
            // goes innermost.
            ServiceBuilder::new()
                .rate_limit(u64::MAX / 4, Duration::from_secs(60))
                .concurrency_limit(1_000_000)
                .retry(RetryNever)
                .service(Noop)
        });
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.finish();
}

criterion_group!(benches, stack);
criterion_main!(benches);
