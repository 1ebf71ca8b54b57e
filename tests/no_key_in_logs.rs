//! No API key ever appears in tracing output: a whole preset stack, with a key set, over
//! real loopback HTTP to ratelayer-mock, with every tracing event captured at TRACE level
//! (tower-http's trace layer around the client prints the request headers too).
#![allow(clippy::unwrap_used)]

use std::io;
use std::sync::{Arc, Mutex};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ratelayer::core::{LimitState, ReplayBody};
use ratelayer::mock::MockProvider;
use ratelayer::{Preset, ProviderLimits};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_http::trace::{DefaultMakeSpan, DefaultOnRequest, TraceLayer};
use tracing::Level;

/// A `MakeWriter` appending everything to one shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

type MakePreset = fn() -> Preset;

const KEYS: [(&str, MakePreset); 3] = [
    ("sk-openai-SECRET-0123456789", Preset::openai),
    ("sk-ant-SECRET-9876543210", Preset::anthropic),
    ("azure-SECRET-5555555555", || {
        Preset::azure_openai("http://127.0.0.1:1")
    }),
];

#[tokio::test(flavor = "current_thread")]
async fn no_api_key_in_tracing_output() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = MockProvider::builder().rpm(1_000).build().unwrap();
    let server = ratelayer::mock::serve(mock.clone(), ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let client: Client<_, ReplayBody> = Client::builder(TokioExecutor::new()).build_http();
    let traced = ServiceBuilder::new()
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(
                    DefaultMakeSpan::new()
                        .level(Level::INFO)
                        .include_headers(true),
                )
                .on_request(DefaultOnRequest::new().level(Level::INFO)),
        )
        .service(client);

    let state = LimitState::new();
    for (key, preset) in KEYS {
        let layer = preset()
            .base_url(server.url())
            .api_key(key)
            .limits(ProviderLimits::default().tpm(100_000).max_concurrent(4))
            .layer(&state)
            .unwrap();
        tracing::info!(preset = ?layer, "built");
        let stack = layer.layer(traced.clone());
        let req = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(ReplayBody::from(
                r#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#,
            ))
            .unwrap();
        let resp = stack.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
    }
    server.shutdown().await;

    // The mock saw every key: they were really sent.
    let seen: Vec<String> = mock
        .journal()
        .entries()
        .iter()
        .map(|e| e.key.clone())
        .collect();
    for (key, _) in KEYS {
        assert!(
            seen.iter().any(|k| k == key),
            "{key} never reached the mock: {seen:?}"
        );
    }
    let out = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    // The capture works: the headers were printed, and the decisions were logged.
    assert!(
        out.contains("x-api-key") && out.contains("api-key"),
        "{out}"
    );
    assert!(out.contains("Sensitive"), "{out}");
    for (key, _) in KEYS {
        assert!(!out.contains(key), "key {key} leaked into the logs:\n{out}");
        assert!(
            !out.contains(&key[3..12]),
            "part of {key} leaked into the logs"
        );
    }
}
