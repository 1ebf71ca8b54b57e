//! Per-request overhead of TpmLimitLayer (estimation, reservation, reconciliation of the
//! response's usage included) for 1 KiB and 16 KiB chat bodies, beside the bare service in
//! the same run, and core's estimation alone for reference.
//!
//! `cargo bench -p ratelayer-tpm --bench overhead`
#![allow(missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use ratelayer_core::ReplayBody;
use ratelayer_core::meta::{self, DefaultEstimator, ProviderName};
use ratelayer_tpm::{Budget, ModelLimits, TpmConfig, TpmLimitLayer};
use tower::{Layer, Service, ServiceExt};

const RESPONSE: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini",
"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help?"},"finish_reason":"stop"}],
"usage":{"prompt_tokens":250,"completion_tokens":7,"total_tokens":257}}"#;

fn body_of(size: usize) -> Bytes {
    let filler = "The quick brown fox jumps over the lazy dog. ";
    let text: String = filler
        .chars()
        .cycle()
        .take(size.saturating_sub(120))
        .collect();
    let json = serde_json::json!({
        "model": "gpt-4o-mini",
        "max_tokens": 256,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
    });
    Bytes::from(serde_json::to_vec(&json).unwrap())
}

type Answer = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

fn inner() -> impl Service<
    Request<ReplayBody>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = Answer,
> + Clone {
    tower::service_fn(|_req: Request<ReplayBody>| {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(RESPONSE)))))
    })
}

fn request(body: &Bytes) -> Request<ReplayBody> {
    let mut req = Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-bench")
        .header("content-type", "application/json")
        .body(ReplayBody::new(body.clone()))
        .unwrap();
    req.extensions_mut().insert(ProviderName::new("openai"));
    req
}

async fn once<S, B>(svc: &mut S, req: Request<ReplayBody>)
where
    S: Service<Request<ReplayBody>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let resp = svc.ready().await.unwrap().call(req).await.unwrap();
    black_box(resp.into_body().collect().await.unwrap());
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("tpm_overhead");
    for (name, size) in [("1KiB", 1024), ("16KiB", 16 * 1024)] {
        let body = body_of(size);
        let mut bare = inner();
        group.bench_with_input(BenchmarkId::new("bare", name), &body, |b, body| {
            b.iter(|| rt.block_on(once(&mut bare, request(body))));
        });
        // The estimation alone (core's metadata: JSON body read, default estimator).
        let estimator = DefaultEstimator::new();
        group.bench_with_input(BenchmarkId::new("estimate_only", name), &body, |b, body| {
            b.iter(|| black_box(meta::compute(&request(body), &estimator)));
        });
        // A budget far above what the run uses: the layer never waits, every request
        // is estimated, booked and reconciled.
        let layer = TpmLimitLayer::new(
            TpmConfig::new()
                .budget(Budget::new("openai", ModelLimits::tpm(4_000_000_000_000)))
                .max_wait(None),
        )
        .unwrap();
        let mut tpm = layer.layer(inner());
        group.bench_with_input(BenchmarkId::new("tpm", name), &body, |b, body| {
            b.iter(|| rt.block_on(once(&mut tpm, request(body))));
        });
    }
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
