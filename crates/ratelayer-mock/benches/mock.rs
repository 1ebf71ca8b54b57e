//! What one in-process request to the mock costs (count, judge, render, journal), next to a
//! bare `service_fn` answering a fixed JSON body: the mock's overhead in stack benchmarks.
#![allow(missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use ratelayer_core::Dialect;
use ratelayer_mock::{ChatRequest, MockProvider};
use tower::{ServiceExt, service_fn};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let chat = ChatRequest::new("gpt-4o-mini")
        .system("You are terse.")
        .user("Summarize the plot of a long novel in one line.")
        .max_tokens(64);
    let mut g = c.benchmark_group("request");
    let fixed = Bytes::from_static(br#"{"choices":[],"usage":{"total_tokens":1}}"#);
    g.bench_function("service_fn (baseline)", |b| {
        let svc = service_fn(|_req: Request<Full<Bytes>>| {
            let body = Full::new(fixed.clone());
            async move { Ok::<_, Infallible>(Response::new(body)) }
        });
        b.iter(|| {
            rt.block_on(async {
                let r = svc.oneshot(chat.build(Dialect::OpenAi)).await.unwrap();
                black_box(r.into_body().collect().await.unwrap().to_bytes())
            })
        });
    });
    for (name, dialect, stream) in [
        ("mock openai", Dialect::OpenAi, false),
        ("mock anthropic", Dialect::Anthropic, false),
        ("mock openai stream", Dialect::OpenAi, true),
    ] {
        let chat = chat.clone().stream(stream);
        g.bench_function(name, |b| {
            // Limits high enough never to refuse: the full admission path every time.
            let mock = MockProvider::builder()
                .dialect(dialect)
                .rpm(u64::MAX / 4)
                .tpm(u64::MAX / 4)
                .concurrency(1 << 20)
                .build()
                .unwrap();
            b.iter(|| {
                rt.block_on(async {
                    let r = mock.clone().oneshot(chat.build(dialect)).await.unwrap();
                    black_box(r.into_body().collect().await.unwrap().to_bytes())
                })
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
