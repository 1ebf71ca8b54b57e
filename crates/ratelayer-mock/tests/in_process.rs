//! The mock judged by its own tests: in-process, under paused time.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use ratelayer_core::Dialect;
use ratelayer_core::headers::DelaySource;
use ratelayer_core::headers::parse;
use ratelayer_mock::{
    ConcurrencyMode, Fault, FaultKind, Latency, MockBody, MockError, MockProvider, Tier,
};
use serde_json::{Value, json};
use tokio::time::{Instant, advance};
use tower::ServiceExt;

const SEC: Duration = Duration::from_secs(1);

fn chat(key: &str, model: &str, content: &str, max_tokens: u64) -> Request<Full<Bytes>> {
    let body = json!({"model": model, "max_tokens": max_tokens,
                      "messages": [{"role": "user", "content": content}]});
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn req(body: Value) -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header("x-api-key", "k")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn send(mock: &MockProvider, r: Request<Full<Bytes>>) -> Response<MockBody> {
    mock.clone().oneshot(r).await.unwrap()
}

async fn body_of(resp: Response<MockBody>) -> (http::response::Parts, Bytes) {
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

fn header<'a>(resp: &'a Response<MockBody>, name: &str) -> &'a str {
    resp.headers()[name].to_str().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_burst_over_rpm_gets_exactly_the_excess_as_429_with_exact_retry_after() {
    let mock = MockProvider::builder().rpm(3).build().unwrap();
    let t0 = Instant::now();
    let mut ok = 0;
    // t = 0, 5, 10 admitted; the rest of the burst at t = 12 refused.
    for t in [0, 5, 10] {
        tokio::time::sleep_until(t0 + SEC * t).await;
        let r = send(&mock, chat("k", "m", "hi", 10)).await;
        assert_eq!(r.status(), StatusCode::OK);
        ok += 1;
    }
    advance(SEC * 2).await;
    for _ in 0..7 {
        let r = send(&mock, chat("k", "m", "hi", 10)).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        // The oldest admission (t = 0) leaves the window at t = 60: 48 s from t = 12.
        assert_eq!(header(&r, "retry-after-ms"), "48000");
        assert_eq!(header(&r, "retry-after"), "48");
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
        let (_, body) = body_of(r).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    }
    assert_eq!(ok, 3);
    // One millisecond early is still too early, and says so exactly.
    advance(Duration::from_millis(47_999)).await;
    let r = send(&mock, chat("k", "m", "hi", 10)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after-ms"), "1");
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        send(&mock, chat("k", "m", "hi", 10)).await.status(),
        StatusCode::OK
    );
    // Other keys and models have their own windows.
    assert_eq!(
        send(&mock, chat("k2", "m", "hi", 10)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mock, chat("k", "m2", "hi", 10)).await.status(),
        StatusCode::OK
    );

    let j = mock.journal();
    assert_eq!(j.rate_limited(), 8);
    assert_eq!(j.scope("k", "m").max_requests_in_window(SEC * 60), 3);
    assert_eq!(j.by_status()[&200], 6);
    assert_eq!(j.starts().len(), 6);
}

#[tokio::test(start_paused = true)]
async fn tokens_per_minute_wait_is_exact_and_too_large_never_fits() {
    // DESIGN.md's example: 30k TPM, 12k used, a 22k request waits until the 12k leave.
    let mock = MockProvider::builder()
        .tpm(30_000)
        .completion_fraction(1.0)
        .build()
        .unwrap();
    // "x" * 4 chars = 1 token + 4 overhead = 5 input tokens.
    let r = send(&mock, chat("k", "m", "xxxx", 12_000 - 5)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-ratelimit-remaining-tokens"), "18000");
    drop(r);
    advance(SEC * 20).await;
    let r = send(&mock, chat("k", "m", "xxxx", 22_000 - 5)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after-ms"), "40000");
    let (_, body) = body_of(r).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "tokens");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Please try again in 40s")
    );

    let r = send(&mock, chat("k", "m", "xxxx", 40_000)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_none());
    advance(SEC * 40).await;
    assert_eq!(
        send(&mock, chat("k", "m", "xxxx", 22_000 - 5))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(mock.journal().max_tokens_in_window(SEC * 60), 22_000);
}

#[tokio::test(start_paused = true)]
async fn usage_is_real_and_the_charge_is_reconciled_when_the_body_ends() {
    let mock = MockProvider::builder()
        .tpm(1_000)
        .otpm(300)
        .completion_fraction(0.25)
        .build()
        .unwrap();
    let r = send(&mock, chat("k", "m", "abcdefgh", 200)).await;
    assert_eq!(
        header(&r, "x-ratelimit-remaining-tokens"),
        (1_000 - 206).to_string()
    );
    // In flight: the full allowance is held.
    let j = mock.journal();
    assert_eq!(j.entries()[0].tokens, 206);
    assert_eq!(j.entries()[0].finish, None);
    let (_, body) = body_of(r).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    assert_eq!(v["usage"]["completion_tokens"], 50);
    assert_eq!(v["usage"]["total_tokens"], 56);
    let e = mock.journal().entries()[0].clone();
    assert_eq!(
        (e.tokens_charged, e.tokens, e.completion_tokens),
        (206, 56, 50)
    );
    assert!(e.finish.is_some());
    // The window now holds the real usage: 250 output tokens fit beside 50.
    let r = send(&mock, chat("k", "m", "abcdefgh", 250)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "x-ratelimit-remaining-tokens"),
        (1_000 - 56 - 256).to_string()
    );
}

#[tokio::test(start_paused = true)]
async fn embeddings_are_charged_their_input_only_and_agree_with_core_s_estimate() {
    let mock = MockProvider::builder().tpm(1_000).build().unwrap();
    let body = json!({"model": "text-embedding-3-small", "input": "abcdefgh"});
    let r = Request::post("/v1/embeddings")
        .header("authorization", "Bearer k")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let mut probe = Request::post("/v1/embeddings")
        .body(body.to_string())
        .unwrap();
    let estimate = ratelayer_core::meta::ensure(&mut probe).total_tokens();
    let r = send(&mock, r).await;
    // ceil(8 / 4) + 4 input tokens and no output allowance.
    assert_eq!(header(&r, "x-ratelimit-remaining-tokens"), "994");
    assert_eq!(mock.journal().entries()[0].tokens_charged, 6);
    assert!(
        estimate >= 6,
        "core's estimate {estimate} under-counts the judge's 6"
    );
}

#[tokio::test(start_paused = true)]
async fn openai_headers_parse_back_to_what_the_mock_enforces() {
    let mock = MockProvider::builder().rpm(60).tpm(10_000).build().unwrap();
    let r = send(&mock, chat("k", "m", "xxxx", 95)).await; // 100 tokens
    advance(Duration::from_millis(1_500)).await;
    drop(r);
    let r = send(&mock, chat("k", "m", "xxxx", 95)).await;
    let snap = parse(
        r.status(),
        r.headers(),
        None,
        SystemTime::now(),
        Some(Dialect::OpenAi),
    );
    assert_eq!(snap.requests.limit, Some(60));
    assert_eq!(snap.requests.remaining, Some(58));
    assert_eq!(snap.requests.reset, Some(SEC * 60));
    assert_eq!(snap.requests.window, Some(SEC * 60));
    assert_eq!(snap.tokens.limit, Some(10_000));
    // The first request was reconciled to 5 + 47 when its body was dropped.
    assert_eq!(snap.tokens.remaining, Some(10_000 - 52 - 100));
    assert_eq!(snap.tokens.reset, Some(SEC * 60));
}

#[tokio::test(start_paused = true)]
async fn every_dialect_s_429_parses_back_to_the_exact_wait() {
    for dialect in [
        Dialect::OpenAi,
        Dialect::Azure,
        Dialect::Anthropic,
        Dialect::Groq,
        Dialect::Gemini,
    ] {
        let mock = MockProvider::builder()
            .dialect(dialect)
            .rpm(2)
            .rpd(100)
            .tpm(5_000)
            .itpm(4_000)
            .otpm(1_000)
            .wall_clock_origin(SystemTime::UNIX_EPOCH + SEC * 1_700_000_000)
            .build()
            .unwrap();
        let start = Instant::now();
        assert_eq!(
            send(&mock, chat("k", "m", "hi", 10)).await.status(),
            StatusCode::OK
        );
        advance(SEC * 15).await;
        assert_eq!(
            send(&mock, chat("k", "m", "hi", 10)).await.status(),
            StatusCode::OK
        );
        advance(Duration::from_millis(2_500)).await;
        let r = send(&mock, chat("k", "m", "hi", 10)).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{dialect:?}");
        let now = mock.wall_time(Instant::now());
        let (parts, body) = body_of(r).await;
        let snap = parse(
            parts.status,
            &parts.headers,
            Some(&body),
            now,
            Some(dialect),
        );
        let wait = (start + SEC * 60) - Instant::now(); // 42.5 s
        let expect = match dialect {
            // Whole seconds, rounded up.
            Dialect::Anthropic | Dialect::Groq => SEC * 43,
            _ => wait,
        };
        assert_eq!(wait, Duration::from_millis(42_500));
        assert_eq!(snap.retry_after, Some(expect), "{dialect:?}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        match dialect {
            Dialect::OpenAi | Dialect::Azure => {
                assert_eq!(snap.retry_after_source, Some(DelaySource::RetryAfterMs));
                assert_eq!(parts.headers["retry-after"], "43");
            }
            Dialect::Anthropic => {
                assert_eq!(v["error"]["type"], "rate_limit_error");
                assert_eq!(parts.headers["retry-after"], "43");
            }
            Dialect::Groq => assert_eq!(parts.headers["retry-after"], "43"),
            Dialect::Gemini => {
                assert_eq!(snap.retry_after_source, Some(DelaySource::Body));
                assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
            }
            _ => unreachable!(),
        }
        // Two requests of 5 input tokens, reconciled to 5 completion tokens each.
        let used_tokens = 2 * (5 + 5);
        match dialect {
            Dialect::OpenAi | Dialect::Azure => {
                assert_eq!(snap.requests.limit, Some(2));
                assert_eq!(snap.requests.remaining, Some(0));
                assert_eq!(snap.tokens.remaining, Some(5_000 - used_tokens));
                // Fully replenished when the t = 15 s admission leaves: 57.5 s away.
                let reset = Duration::from_millis(57_500);
                let expect = if dialect == Dialect::Azure {
                    SEC * 58
                } else {
                    reset
                };
                assert_eq!(snap.requests.reset, Some(expect));
            }
            Dialect::Groq => {
                assert_eq!(snap.requests.limit, Some(100));
                assert_eq!(snap.requests.remaining, Some(98));
                assert_eq!(snap.requests.window, Some(SEC * 86_400));
                assert_eq!(snap.tokens.limit, Some(5_000));
            }
            Dialect::Anthropic => {
                assert_eq!(snap.requests.remaining, Some(0));
                assert_eq!(snap.input_tokens.limit, Some(4_000));
                assert_eq!(snap.input_tokens.remaining, Some(4_000 - 2 * 5));
                assert_eq!(snap.output_tokens.limit, Some(1_000));
                assert_eq!(snap.output_tokens.remaining, Some(1_000 - 2 * 5));
                assert_eq!(snap.tokens.remaining, Some(5_000 - 2 * 10));
                // An RFC 3339 instant: the wall clock here is at 17.5 s past a whole second.
                assert_eq!(snap.requests.reset, Some(Duration::from_millis(57_500)));
            }
            Dialect::Gemini => assert!(snap.requests.is_empty() && snap.tokens.is_empty()),
            _ => unreachable!(),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn concurrency_above_the_limit_is_refused() {
    let mock = MockProvider::builder()
        .concurrency(2)
        .latency(Latency::fixed(SEC))
        .build()
        .unwrap();
    let a = tokio::spawn(mock.clone().oneshot(chat("k", "m", "a", 1)));
    let b = tokio::spawn(mock.clone().oneshot(chat("k", "m", "b", 1)));
    tokio::task::yield_now().await;
    let c = send(&mock, chat("k", "m", "c", 1)).await;
    assert_eq!(c.status(), StatusCode::TOO_MANY_REQUESTS);
    let (_, body) = body_of(c).await;
    assert!(String::from_utf8_lossy(&body).contains("concurrent"));
    // Another model is another scope.
    let d = tokio::spawn(mock.clone().oneshot(chat("k", "other", "d", 1)));
    let (a, b, d) = (
        a.await.unwrap().unwrap(),
        b.await.unwrap().unwrap(),
        d.await.unwrap().unwrap(),
    );
    assert_eq!(
        (a.status(), b.status(), d.status()),
        (StatusCode::OK, StatusCode::OK, StatusCode::OK)
    );
    // Still in flight until the bodies are done.
    assert_eq!(
        send(&mock, chat("k", "m", "e", 1)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    drop(a);
    let e = tokio::spawn(mock.clone().oneshot(chat("k", "m", "e", 1)));
    let _ = body_of(b).await;
    assert_eq!(e.await.unwrap().unwrap().status(), StatusCode::OK);
    let j = mock.journal();
    assert_eq!(j.scope("k", "m").max_in_flight(), 2);
    assert_eq!(j.max_in_flight(), 3);
    assert_eq!(j.rate_limited(), 2);
}

/// One request in flight at a time, the rest queued; each takes a second.
fn one_at_a_time_queued() -> MockProvider {
    MockProvider::builder()
        .concurrency(1)
        .concurrency_mode(ConcurrencyMode::Queue)
        .latency(Latency::fixed(SEC))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn concurrency_above_the_limit_queues_in_fifo_order() {
    let mock = one_at_a_time_queued();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let mock = mock.clone();
        tasks.push(tokio::spawn(async move {
            let r = mock
                .oneshot(chat("k", "m", &i.to_string(), 1))
                .await
                .unwrap();
            let status = r.status();
            drop(r);
            status
        }));
        tokio::task::yield_now().await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(Instant::now() - t0, SEC * 4);
    let j = mock.journal();
    assert_eq!(j.max_in_flight(), 1);
    assert_eq!(j.starts(), vec![0, 1, 2, 3]);
    let e = &j.entries()[3];
    assert_eq!(e.start.unwrap() - e.arrival, SEC * 3);
    assert_eq!(j.rate_limited(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_frees_its_slot_and_refunds_unused_tokens() {
    let mock = MockProvider::builder()
        .concurrency(1)
        .tpm(100)
        .completion_fraction(0.0)
        .latency(Latency::fixed(SEC))
        .build()
        .unwrap();
    let mut fut = Box::pin(mock.clone().oneshot(chat("k", "m", "xxxx", 50)));
    tokio_test::assert_pending!(futures_poll(&mut fut));
    drop(fut);
    let e = mock.journal().entries()[0].clone();
    assert!(e.admitted() && e.finish.is_some() && e.status.is_none());
    assert_eq!(e.tokens, 5);
    let r = send(&mock, chat("k", "m", "xxxx", 90)).await;
    assert_eq!(r.status(), StatusCode::OK);
}

fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    std::pin::Pin::new(f).poll(&mut cx)
}

#[tokio::test(start_paused = true)]
async fn faults_appear_at_their_configured_rates_and_are_deterministic() {
    let build = |seed| {
        MockProvider::builder()
            .fault(Fault::quota_exhausted().every(50))
            .fault(Fault::internal_error().on_requests([3, 4]))
            .fault(Fault::unavailable().probability(0.1))
            .fault(Fault::overloaded().probability(0.05))
            .fault(Fault::latency(SEC).probability(0.2))
            .seed(seed)
            .build()
            .unwrap()
    };
    let mock = build(7);
    let n = 2_000;
    for _ in 0..n {
        drop(send(&mock, chat("k", "m", "hi", 1)).await);
    }
    let j = mock.journal();
    let by = j.by_status();
    let rate = |s: u16| by.get(&s).copied().unwrap_or(0) as f64 / n as f64;
    // Scheduled faults are exact; probabilities come within a few standard deviations.
    assert_eq!(by[&429], 40);
    assert!(j.entries()[3].status == Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert!(j.entries()[4].status == Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert!((0.08..0.12).contains(&rate(503)), "{by:?}");
    // 529 only fires when 503 (earlier) did not: about 0.9 × 0.05.
    assert!((0.03..0.06).contains(&rate(529)), "{by:?}");
    let ok: Vec<_> = j
        .entries()
        .iter()
        .filter(|e| e.status == Some(StatusCode::OK))
        .collect();
    let slow: Vec<_> = ok
        .iter()
        .filter(|e| e.finish.unwrap() - e.arrival >= SEC)
        .collect();
    let share = slow.len() as f64 / ok.len() as f64;
    assert!((0.17..0.23).contains(&share), "{share}");
    assert!(
        slow.iter()
            .all(|e| e.fault == Some(FaultKind::Latency(Latency::Fixed(SEC)))),
        "{:?}",
        slow.iter()
            .find(|e| e.fault != Some(FaultKind::Latency(Latency::Fixed(SEC))))
    );
    assert!(
        j.entries()
            .iter()
            .filter(|e| e.fault == Some(FaultKind::Latency(Latency::Fixed(SEC))))
            .count()
            == slow.len()
    );
    let q = j
        .entries()
        .iter()
        .find(|e| e.fault == Some(FaultKind::QuotaExhausted))
        .unwrap();
    assert_eq!(q.id, 49);

    // Same seed, same arrivals: the same faults.
    let again = build(7);
    for _ in 0..200 {
        drop(send(&again, chat("k", "m", "hi", 1)).await);
    }
    let a: Vec<_> = again.journal().entries().iter().map(|e| e.status).collect();
    let b: Vec<_> = j.entries()[..200].iter().map(|e| e.status).collect();
    assert_eq!(a, b);
}

#[tokio::test(start_paused = true)]
async fn quota_exhausted_is_a_429_without_retry_hint() {
    let mock = MockProvider::builder()
        .fault(Fault::quota_exhausted())
        .rpm(10)
        .build()
        .unwrap();
    let r = send(&mock, chat("k", "m", "hi", 1)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "10");
    let (_, body) = body_of(r).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "insufficient_quota");
}

#[tokio::test(start_paused = true)]
async fn connection_close_fails_the_future_after_admission() {
    let mock = MockProvider::builder()
        .fault(Fault::connection_closed().on_requests([0]))
        .build()
        .unwrap();
    let err = mock
        .clone()
        .oneshot(chat("k", "m", "hi", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, MockError::ConnectionClosed), "{err}");
    let e = mock.journal().entries()[0].clone();
    assert!(e.admitted() && e.status.is_none() && e.finish.is_some());
    assert_eq!(
        send(&mock, chat("k", "m", "hi", 1)).await.status(),
        StatusCode::OK
    );
}

async fn sse_events(mock: &MockProvider, r: Request<Full<Bytes>>) -> Vec<String> {
    let resp = send(mock, r).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), "text/event-stream");
    let (_, body) = body_of(resp).await;
    String::from_utf8(body.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

fn data(event: &str) -> Value {
    let d = event
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    serde_json::from_str(d).unwrap()
}

#[tokio::test(start_paused = true)]
async fn streams_end_with_usage_in_every_dialect() {
    let body = json!({"model": "m", "stream": true, "max_tokens": 40,
                      "messages": [{"role": "user", "content": "hello"}]});
    let openai = MockProvider::builder().build().unwrap();
    let events = sse_events(&openai, req(body.clone())).await;
    assert_eq!(events.last().unwrap(), "data: [DONE]");
    let usage = data(&events[events.len() - 2]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 6);
    assert_eq!(usage["usage"]["completion_tokens"], 20);
    let text: String = events[..events.len() - 2]
        .iter()
        .filter_map(|e| {
            data(e)["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "tok ".repeat(20));

    let anthropic = MockProvider::builder()
        .dialect(Dialect::Anthropic)
        .build()
        .unwrap();
    let events = sse_events(&anthropic, req(body.clone())).await;
    assert!(events.last().unwrap().starts_with("event: message_stop"));
    let delta = events
        .iter()
        .find(|e| e.starts_with("event: message_delta"))
        .unwrap();
    assert_eq!(data(delta)["usage"]["output_tokens"], 20);
    assert_eq!(data(&events[0])["message"]["usage"]["input_tokens"], 6);

    let gemini = MockProvider::builder()
        .dialect(Dialect::Gemini)
        .build()
        .unwrap();
    let g = Request::post("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=g")
        .body(Full::new(Bytes::from(
            json!({"contents": [{"parts": [{"text": "hello"}]}],
                   "generationConfig": {"maxOutputTokens": 40}})
            .to_string(),
        )))
        .unwrap();
    let events = sse_events(&gemini, g).await;
    let last = data(events.last().unwrap());
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 20);
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    let e = gemini.journal().entries()[0].clone();
    assert_eq!(
        (e.key.as_str(), e.model.as_str(), e.stream),
        ("g", "gemini-2.0-flash", true)
    );
}

#[tokio::test(start_paused = true)]
async fn a_cut_stream_fails_before_its_usage_and_holds_the_slot_until_then() {
    let mock = MockProvider::builder()
        .fault(Fault::stream_cut())
        .concurrency(1)
        .stream_chunk_delay(Duration::from_millis(100))
        .build()
        .unwrap();
    let resp = send(
        &mock,
        req(json!({"model": "m", "stream": true, "max_tokens": 40,
                                      "messages": []})),
    )
    .await;
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let err = loop {
        match body.frame().await {
            Some(Ok(f)) => {
                got.push(f.into_data().unwrap());
                let r = send(&mock, req(json!({"model": "m", "messages": []}))).await;
                assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            }
            Some(Err(e)) => break e,
            None => panic!("the stream ended without being cut"),
        }
    };
    assert!(matches!(err, MockError::StreamCut));
    assert!(!got.is_empty());
    assert!(
        got.iter()
            .all(|c| !String::from_utf8_lossy(c).contains("usage"))
    );
    assert_eq!(
        send(&mock, req(json!({"model": "m", "messages": []})))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        mock.journal().entries()[0].fault,
        Some(FaultKind::StreamCut)
    );
}

#[tokio::test(start_paused = true)]
async fn a_prompt_over_the_context_window_gets_the_dialect_s_error() {
    for (dialect, needle) in [
        (Dialect::OpenAi, "context_length_exceeded"),
        (Dialect::Anthropic, "prompt is too long"),
        (Dialect::Gemini, "INVALID_ARGUMENT"),
    ] {
        let mock = MockProvider::builder()
            .dialect(dialect)
            .context_window(100)
            .rpm(5)
            .build()
            .unwrap();
        // 5 input + 95 output = 100 fits; 96 does not.
        assert_eq!(
            send(&mock, chat("k", "m", "xxxx", 95)).await.status(),
            StatusCode::OK
        );
        let r = send(&mock, chat("k", "m", "xxxx", 96)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let (_, body) = body_of(r).await;
        assert!(
            String::from_utf8_lossy(&body).contains(needle),
            "{dialect:?}"
        );
        // Not charged.
        assert_eq!(mock.journal().max_requests_in_window(SEC * 60), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn tier_presets_set_the_headers_the_client_sees() {
    let mock = MockProvider::builder().tier(Tier::Free).build().unwrap();
    let r = send(&mock, chat("k", "m", "hi", 1)).await;
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "3");
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "40000");
    let mock = MockProvider::builder().tier(Tier::Tier4).build().unwrap();
    let r = send(&mock, chat("k", "m", "hi", 1)).await;
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "10000");
}

#[tokio::test(start_paused = true)]
async fn the_judge_holds_under_random_load() {
    // Many clients hammering without any limiter: whatever they do, the admitted load
    // never exceeds a limit in any window.
    let mock = MockProvider::builder()
        .rpm(20)
        .tpm(2_000)
        .rpd(30)
        .latency(Latency::uniform(Duration::ZERO, Duration::from_millis(900)))
        .seed(3)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let mock = mock.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200u64 {
                let r = mock
                    .clone()
                    .oneshot(chat("k", "m", "x", (c * 37 + i * 11) % 150))
                    .await
                    .unwrap();
                drop(r);
                tokio::time::sleep(Duration::from_millis(100 + (c * 131 + i * 17) % 900)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let j = mock.journal();
    assert!(j.max_requests_in_window(SEC * 60) <= 20);
    assert!(j.max_tokens_in_window(SEC * 60) <= 2_000);
    assert_eq!(j.max_requests_in_window(SEC * 86_400), 30);
    assert!(j.rate_limited() > 0);
}

#[tokio::test(start_paused = true)]
async fn every_dialect_answers_in_its_own_shape() {
    use ratelayer_mock::ChatRequest;
    let chat = ChatRequest::new("model-x")
        .key("key-1")
        .system("abcd")
        .user("hello")
        .max_tokens(10)
        .request_id("r-1");
    for dialect in [
        Dialect::OpenAi,
        Dialect::Azure,
        Dialect::Anthropic,
        Dialect::Gemini,
        Dialect::Groq,
    ] {
        let mock = MockProvider::builder().dialect(dialect).build().unwrap();
        let r = send(&mock, chat.build(dialect)).await;
        assert_eq!(r.status(), StatusCode::OK, "{dialect:?}");
        assert_eq!(header(&r, "x-mock-request-id"), "0");
        let (_, body) = body_of(r).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        let input = chat.tokens(dialect).input;
        assert_eq!(input, (1 + 4) + (2 + 4));
        let (got_in, got_out) = match dialect {
            Dialect::Anthropic => (&v["usage"]["input_tokens"], &v["usage"]["output_tokens"]),
            Dialect::Gemini => (
                &v["usageMetadata"]["promptTokenCount"],
                &v["usageMetadata"]["candidatesTokenCount"],
            ),
            _ => (
                &v["usage"]["prompt_tokens"],
                &v["usage"]["completion_tokens"],
            ),
        };
        assert_eq!(
            (got_in.as_u64(), got_out.as_u64()),
            (Some(input), Some(5)),
            "{dialect:?}"
        );
        let e = mock.journal().entries()[0].clone();
        assert_eq!(
            (e.key.as_str(), e.model.as_str()),
            ("key-1", "model-x"),
            "{dialect:?}"
        );
        assert_eq!(e.request_id.as_deref(), Some("r-1"));
        assert_eq!((e.tokens_charged, e.tokens), (input + 10, input + 5));
    }
}

#[tokio::test(start_paused = true)]
async fn input_and_output_token_limits_are_separate() {
    use ratelayer_mock::ChatRequest;
    let mock = MockProvider::builder()
        .dialect(Dialect::Anthropic)
        .itpm(30)
        .otpm(100)
        .completion_fraction(1.0)
        .build()
        .unwrap();
    // 12 input tokens each ("x" * 32 = 8 + 4): two fit in 30, the third waits for the
    // first; output 40 each: two fit in 100, the third would need 120.
    let chat = ChatRequest::new("m").user("x".repeat(32)).max_tokens(40);
    assert_eq!(chat.tokens(Dialect::Anthropic).input, 12);
    for _ in 0..2 {
        let r = send(&mock, chat.build(Dialect::Anthropic)).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    advance(SEC * 10).await;
    let r = send(&mock, chat.build(Dialect::Anthropic)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after"), "50");
    assert_eq!(
        header(&r, "anthropic-ratelimit-input-tokens-remaining"),
        "6"
    );
    assert_eq!(
        header(&r, "anthropic-ratelimit-output-tokens-remaining"),
        "20"
    );
    // A small request still fits both.
    let small = ChatRequest::new("m").user("x").max_tokens(20);
    assert_eq!(
        send(&mock, small.build(Dialect::Anthropic)).await.status(),
        StatusCode::OK
    );
    let j = mock.journal();
    assert_eq!(j.max_input_tokens_in_window(SEC * 60), 12 + 12 + 5);
    assert_eq!(j.max_output_tokens_in_window(SEC * 60), 40 + 40 + 20);
}

#[tokio::test(start_paused = true)]
async fn absurd_requests_are_answered_not_panicked_on() {
    let mock = MockProvider::builder().build().unwrap();
    let huge = req(json!({"model": "m", "max_tokens": u64::MAX, "n": u64::MAX,
                          "messages": [{"role": "user", "content": "hi"}]}));
    let r = send(&mock, huge).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (_, body) = body_of(r).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"].as_array().unwrap().len(), 128);
    assert_eq!(v["usage"]["total_tokens"], u64::MAX);
    for body in [
        &b"\xff\xfe not json"[..],
        b"{\"messages\": 5}",
        b"[[[[[[[[[[[[[[[[[[[[",
    ] {
        let r = Request::post("/v1/chat/completions").body(Full::new(Bytes::from_static(body)));
        let r = send(&mock, r.unwrap()).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let windowed = MockProvider::builder().context_window(100).build().unwrap();
    let r = send(&windowed, chat("k", "m", "hi", u64::MAX)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn the_types_travel_across_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send_unpin<T: Send + Unpin + 'static>() {}
    send_sync::<MockProvider>();
    send_sync::<MockBody>();
    send_sync::<MockError>();
    send_unpin::<ratelayer_mock::ResponseFuture>();
    send_unpin::<MockBody>();
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_while_queued_leaves_the_queue() {
    let mock = one_at_a_time_queued();
    let first = tokio::spawn(mock.clone().oneshot(chat("k", "m", "a", 1)));
    tokio::task::yield_now().await;
    let mut queued = Box::pin(mock.clone().oneshot(chat("k", "m", "b", 1)));
    tokio_test::assert_pending!(futures_poll(&mut queued));
    let third = tokio::spawn(mock.clone().oneshot(chat("k", "m", "c", 1)));
    tokio::task::yield_now().await;
    drop(queued);
    drop(first.await.unwrap().unwrap());
    assert_eq!(third.await.unwrap().unwrap().status(), StatusCode::OK);
    let j = mock.journal();
    assert_eq!(j.starts(), vec![0, 2]);
    let dropped = &j.entries()[1];
    assert!(!dropped.admitted() && dropped.status.is_none() && dropped.finish.is_some());
    assert_eq!(j.entries()[2].start.unwrap() - j.entries()[2].arrival, SEC);
}
