//! Cost of the per-response and per-request work in core: header parsing, classification
//! and token estimation.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "shared/stack_request.rs"]
mod stack_request;

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use ratelayer_core::body::{ReplayBody, ReplayableBody};
use ratelayer_core::classify::{Classifier, DefaultClassifier};
use ratelayer_core::headers::{self, Dialect};
use ratelayer_core::meta::{self, DefaultEstimator, EstimateInput, TokenEstimator};

fn openai_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("x-ratelimit-limit-requests", "500"),
        ("x-ratelimit-remaining-requests", "499"),
        ("x-ratelimit-reset-requests", "120ms"),
        ("x-ratelimit-limit-tokens", "30000"),
        ("x-ratelimit-remaining-tokens", "29000"),
        ("x-ratelimit-reset-tokens", "2s"),
        ("openai-processing-ms", "321"),
        ("x-request-id", "req_abc"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn anthropic_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for d in ["requests", "tokens", "input-tokens", "output-tokens"] {
        for (f, v) in [
            ("limit", "50000"),
            ("remaining", "42000"),
            ("reset", "2024-05-01T12:00:30.123Z"),
        ] {
            let name: http::HeaderName = format!("anthropic-ratelimit-{d}-{f}").parse().unwrap();
            h.insert(name, HeaderValue::from_static(v));
        }
    }
    h.insert("retry-after", HeaderValue::from_static("12"));
    h
}

fn chat_body(bytes: usize) -> String {
    let sentence = "The quick brown fox jumps over the lazy dog. ";
    let mut messages = Vec::new();
    let mut len = 0;
    while len < bytes {
        messages.push(serde_json::json!({"role": "user", "content": sentence.repeat(4)}));
        len += sentence.len() * 4 + 30;
    }
    serde_json::json!({"model": "gpt-4o-mini", "messages": messages, "max_tokens": 256}).to_string()
}

/// A chat request with a body of about `bytes` ([`chat_body`]).
fn chat_request(bytes: usize) -> Request<ReplayBody> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-test")
        .body(ReplayBody::new(chat_body(bytes)))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800);
    let openai = openai_headers();
    c.bench_function("headers::parse openai 200", |b| {
        b.iter(|| {
            headers::parse(
                StatusCode::OK,
                black_box(&openai),
                None,
                now,
                Some(Dialect::OpenAi),
            )
        })
    });
    let anthropic = anthropic_headers();
    c.bench_function("headers::parse anthropic 429", |b| {
        b.iter(|| {
            headers::parse(
                StatusCode::TOO_MANY_REQUESTS,
                black_box(&anthropic),
                None,
                now,
                None,
            )
        })
    });
    let empty = HeaderMap::new();
    c.bench_function("headers::parse no rate-limit headers", |b| {
        b.iter(|| headers::parse(StatusCode::OK, black_box(&empty), None, now, None))
    });

    let body = br#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2.184s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
    let classifier = DefaultClassifier::new();
    c.bench_function("parse + classify openai 429 body", |b| {
        b.iter(|| {
            let s = headers::parse(
                StatusCode::TOO_MANY_REQUESTS,
                &openai,
                Some(body),
                now,
                None,
            );
            classifier.classify_response(
                StatusCode::TOO_MANY_REQUESTS,
                &openai,
                Some(black_box(body)),
                &s,
            )
        })
    });

    let req = stack_request::request_1k(stack_request::body_1k());
    assert_eq!(req.body().bytes().map(<[u8]>::len), Some(1024));
    c.bench_function("meta::compute stack bench 1 KiB request", |b| {
        b.iter(|| meta::compute(black_box(&req), &DefaultEstimator::new()))
    });

    for size in [1024, 16 * 1024] {
        let body = chat_body(size);
        c.bench_function(&format!("estimate chat body {} KiB", size / 1024), |b| {
            b.iter(|| {
                DefaultEstimator::new().estimate(&EstimateInput::new(
                    "/v1/chat/completions",
                    Some(black_box(body.as_bytes())),
                ))
            })
        });
        let req = chat_request(size);
        c.bench_function(
            &format!("meta::compute chat body {} KiB", size / 1024),
            |b| b.iter(|| meta::compute(black_box(&req), &DefaultEstimator::new())),
        );
    }
}

criterion_group!(benches, bench);

/// `PARSE_COUNT=<n>` runs `meta::compute` on the stack bench's 1 KiB request exactly n
/// times and nothing else (`PARSE_ROW=chat1k` or `chat16k`: on the "chat body" request
/// of that size), for an instruction count under `valgrind --tool=callgrind`: two
/// counts, subtracted, give the instructions per request whatever the machine's load.
fn main() {
    if let Some(n) = std::env::var("PARSE_COUNT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let req = match std::env::var("PARSE_ROW").as_deref() {
            Ok("chat1k") => chat_request(1024),
            Ok("chat16k") => chat_request(16 * 1024),
            _ => stack_request::request_1k(stack_request::body_1k()),
        };
        for _ in 0..n {
            black_box(meta::compute(black_box(&req), &DefaultEstimator::new()));
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
