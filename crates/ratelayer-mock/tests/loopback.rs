//! The mock over real loopback HTTP (127.0.0.1), with hyper-util's client.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ratelayer_core::Dialect;
use ratelayer_core::headers::parse;
use ratelayer_mock::{Fault, MockProvider, MockServer, serve};
use serde_json::{Value, json};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn start(mock: &MockProvider) -> MockServer {
    serve(mock.clone(), ([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
}

fn chat(server: &MockServer, body: Value) -> Request<Full<Bytes>> {
    Request::post(format!("{}/v1/chat/completions", server.url()))
        .header("authorization", "Bearer sk-loop")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// What the client's parser reads from a response, body included.
async fn snapshot(
    r: http::Response<hyper::body::Incoming>,
    dialect: Dialect,
) -> ratelayer_core::RateLimitSnapshot {
    let (parts, body) = r.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    parse(
        parts.status,
        &parts.headers,
        Some(&body),
        SystemTime::now(),
        Some(dialect),
    )
}

fn simple() -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 20,
           "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test]
async fn limits_headers_and_retry_after_over_http() {
    let mock = MockProvider::builder().rpm(2).tpm(10_000).build().unwrap();
    let server = start(&mock).await;
    let c = client();
    for remaining in ["1", "0"] {
        let r = c.request(chat(&server, simple())).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-ratelimit-remaining-requests"], remaining);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["usage"]["prompt_tokens"], 6);
        assert_eq!(v["usage"]["completion_tokens"], 10);
    }
    let r = c.request(chat(&server, simple())).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let snap = snapshot(r, Dialect::OpenAi).await;
    let wait = snap.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    assert_eq!(snap.requests.limit, Some(2));
    assert_eq!(snap.requests.remaining, Some(0));
    assert_eq!(snap.tokens.remaining, Some(10_000 - 2 * (6 + 10)));

    let j = mock.journal();
    assert_eq!(j.len(), 3);
    assert_eq!(j.rate_limited(), 1);
    assert_eq!(j.entries()[0].key, "sk-loop");
    assert!(j.entries().iter().take(2).all(|e| e.finish.is_some()));
    server.shutdown().await;
}

#[tokio::test]
async fn sse_over_http_ends_with_usage() {
    let mock = MockProvider::builder().build().unwrap();
    let server = start(&mock).await;
    let mut body = simple();
    body["stream"] = json!(true);
    let r = client().request(chat(&server, body)).await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text =
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        text.contains(r#""usage":{"completion_tokens":10,"prompt_tokens":6,"total_tokens":16}"#)
    );
}

#[tokio::test]
async fn a_closed_connection_and_a_cut_stream_are_errors_at_the_client() {
    let mock = MockProvider::builder()
        .fault(Fault::connection_closed().on_requests([0]))
        .fault(Fault::stream_cut().on_requests([1]))
        .build()
        .unwrap();
    let server = start(&mock).await;
    let c = client();
    let err = c.request(chat(&server, simple())).await.unwrap_err();
    assert!(!err.is_connect(), "{err:?}");

    let mut body = simple();
    body["stream"] = json!(true);
    let r = c.request(chat(&server, body)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body();
    let mut got = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(f)) => got.extend_from_slice(&f.into_data().unwrap()),
            Some(Err(_)) => break,
            None => panic!("the stream ended without being cut"),
        }
    }
    let got = String::from_utf8(got).unwrap();
    assert!(got.starts_with("data: "), "{got}");
    assert!(!got.contains("usage"), "{got}");

    // The mock itself is fine afterwards.
    let r = c.request(chat(&server, simple())).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let j = mock.journal();
    assert_eq!(j.entries()[0].status, None);
    assert_eq!(j.entries()[1].status, Some(StatusCode::OK));
    assert!(j.entries().iter().all(|e| e.finish.is_some() || e.id == 2));
}

#[tokio::test]
async fn anthropic_and_gemini_over_http2() {
    let c: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let anthropic = MockProvider::builder()
        .dialect(Dialect::Anthropic)
        .rpm(50)
        .build()
        .unwrap();
    let server = start(&anthropic).await;
    let r = c
        .request(
            Request::post(format!("{}/v1/messages", server.url()))
                .header("x-api-key", "sk-ant")
                .body(Full::new(Bytes::from(
                    json!({"model": "claude-3-5-haiku", "max_tokens": 8, "system": "be brief",
                           "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.headers()["anthropic-ratelimit-requests-remaining"], "49");
    let v: Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["usage"]["input_tokens"], (2 + 4) + (1 + 4));
    assert_eq!(anthropic.journal().entries()[0].key, "sk-ant");

    let gemini = MockProvider::builder()
        .dialect(Dialect::Gemini)
        .rpm(1)
        .build()
        .unwrap();
    let server = start(&gemini).await;
    let g = || {
        Request::post(format!(
            "{}/v1beta/models/gemini-2.0-flash:generateContent",
            server.url()
        ))
        .header("x-goog-api-key", "g")
        .body(Full::new(Bytes::from(
            json!({"contents": [{"parts": [{"text": "hi"}]}]}).to_string(),
        )))
        .unwrap()
    };
    let r = c.request(g()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()
            .keys()
            .all(|k| !k.as_str().contains("ratelimit"))
    );
    let r = c.request(g()).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let snap = snapshot(r, Dialect::Gemini).await;
    assert!(snap.retry_after.unwrap() > Duration::from_secs(55));
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let mock = MockProvider::builder().build().unwrap();
    let server = start(&mock).await;
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
