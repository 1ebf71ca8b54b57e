//! Request metadata: provider, credential, model and the estimate of every request shape.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::Request;
use proptest::prelude::*;
use serde_json::json;

use super::*;

/// The default estimator's count of a text: ceil(bytes / 3).
fn c(s: &str) -> u64 {
    (s.len() as u64).div_ceil(3)
}

fn post(uri: &str, body: serde_json::Value) -> Request<String> {
    Request::post(uri).body(body.to_string()).unwrap()
}

fn meta_of(mut req: Request<String>) -> RequestMeta {
    ensure(&mut req).clone()
}

// ---------------------------------------------------------------- provider

#[test]
fn provider_from_well_known_hosts() {
    for (uri, provider) in [
        ("https://api.openai.com/v1/chat/completions", "openai"),
        (
            "https://myres.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-06-01",
            "azure",
        ),
        ("https://API.ANTHROPIC.COM/v1/messages", "anthropic"),
        ("https://api.groq.com/openai/v1/chat/completions", "groq"),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
            "gemini",
        ),
        (
            "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent",
            "gemini",
        ),
        ("https://api.moonshot.ai/v1/chat/completions", "moonshot"),
        ("https://api.moonshot.cn/v1/chat/completions", "moonshot"),
        ("https://api.mistral.ai/v1/chat/completions", "mistral"),
        (
            "https://openrouter.ai/api/v1/chat/completions",
            "openrouter",
        ),
        ("http://127.0.0.1:8080/v1/chat/completions", "127.0.0.1"),
        (
            "http://llm.internal.example:9000/v1/chat/completions",
            "llm.internal.example",
        ),
        ("/v1/chat/completions", "default"),
        ("https://api.openai.com./v1/chat/completions", "openai"),
        (
            "https://MyRes.OpenAI.Azure.com/openai/deployments/d",
            "azure",
        ),
        ("https://X.Cognitiveservices.Azure.COM/openai", "azure"),
        ("https://EU-AIplatform.googleapis.com/v1", "gemini"),
        (
            "http://LLM.Example.COM./v1/chat/completions",
            "llm.example.com",
        ),
        ("http://azure.com/v1", "azure.com"),
    ] {
        let m = meta_of(post(uri, json!({})));
        assert_eq!(&*m.provider, provider, "{uri}");
        assert_eq!(provider_for_uri(&uri.parse().unwrap()), provider, "{uri}");
        // The same again (a name this thread already holds).
        assert_eq!(&*meta_of(post(uri, json!({}))).provider, provider, "{uri}");
    }
}

#[test]
fn provider_name_extension_wins_over_the_host_and_cached_meta_wins_over_both() {
    let mut req = post("http://127.0.0.1:1/v1/chat/completions", json!({}));
    req.extensions_mut().insert(ProviderName::new("groq"));
    assert_eq!(&*ensure(&mut req).provider, "groq");
    assert_eq!(ensure(&mut req).dialect(), Some(crate::Dialect::Groq));

    let mut req = post(
        "https://api.openai.com/v1/chat/completions",
        json!({"model": "gpt-4o"}),
    );
    req.extensions_mut().insert(ProviderName::new("groq"));
    set(&mut req, RequestMeta::new("azure", 7, 8));
    let m = ensure(&mut req);
    assert_eq!(
        (&*m.provider, m.input_tokens, m.output_tokens),
        ("azure", 7, 8)
    );
    assert_eq!(m.source, EstimateSource::Explicit);
    assert_eq!(m.model, None);
}

// ---------------------------------------------------------------- credential

#[test]
fn credential_is_a_stable_fingerprint_never_the_key() {
    // FNV-1a 64 of the empty input is its offset basis 0xcbf29ce484222325, folded.
    assert_eq!(
        fingerprint(b""),
        format!("{:08x}", 0xcbf2_9ce4_u32 ^ 0x8422_2325)
    );
    // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
    assert_eq!(
        fingerprint(b"a"),
        format!("{:08x}", 0xaf63_dc4c_u32 ^ 0x8601_ec8c)
    );

    let key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";
    for header in ["authorization", "x-api-key", "api-key", "x-goog-api-key"] {
        let value = if header == "authorization" {
            format!("Bearer {key}")
        } else {
            key.to_owned()
        };
        let req = Request::post("https://api.openai.com/v1/chat/completions")
            .header(header, &value)
            .body(String::from("{}"))
            .unwrap();
        let m = meta_of(req);
        let fp = m.credential.clone().unwrap();
        assert_eq!(&*fp, fingerprint(value.as_bytes()), "{header}");
        assert_eq!(fp.len(), 8);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!format!("{m:?}").contains(key), "{header}");
        assert!(!m.scope().to_string().contains(key));
    }
    let a = meta_of(
        Request::post("https://api.openai.com/")
            .header("authorization", "Bearer k1")
            .body(String::new())
            .unwrap(),
    );
    let b = meta_of(
        Request::post("https://api.openai.com/")
            .header("authorization", "Bearer k2")
            .body(String::new())
            .unwrap(),
    );
    assert_ne!(a.credential, b.credential);
    // The first credential header counts.
    let both = meta_of(
        Request::post("https://api.openai.com/")
            .header("x-goog-api-key", "k3")
            .header("api-key", "k2")
            .header("authorization", "Bearer k1")
            .body(String::new())
            .unwrap(),
    );
    assert_eq!(both.credential, a.credential);
    let both = meta_of(
        Request::post("https://api.openai.com/")
            .header("x-goog-api-key", "k3")
            .header("api-key", "k2")
            .body(String::new())
            .unwrap(),
    );
    assert_eq!(
        both.credential.as_deref(),
        Some(fingerprint(b"k2").as_str())
    );
    // Gemini's key in the query string.
    let q = meta_of(post(
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent?alt=sse&key=AIzaSECRET",
        json!({}),
    ));
    assert_eq!(
        q.credential.as_deref(),
        Some(fingerprint(b"AIzaSECRET").as_str())
    );
    let none = meta_of(post(
        "https://api.openai.com/v1/chat/completions",
        json!({}),
    ));
    assert_eq!(none.credential, None);
}

// ---------------------------------------------------------------- model

#[test]
fn model_from_body_then_path() {
    let cases = [
        (
            "https://api.openai.com/v1/chat/completions",
            json!({"model": "gpt-4o-mini"}),
            Some("gpt-4o-mini"),
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
            json!({}),
            Some("gemini-2.0-flash"),
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            json!({}),
            Some("gemini-2.0-flash"),
        ),
        (
            "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/l/publishers/google/models/gemini-1.5-pro:generateContent",
            json!({}),
            Some("gemini-1.5-pro"),
        ),
        (
            "https://r.openai.azure.com/openai/deployments/my-gpt4o/chat/completions?api-version=2024-06-01",
            json!({"messages": []}),
            Some("my-gpt4o"),
        ),
        (
            "https://api.openai.com/v1/chat/completions",
            json!({"model": 5}),
            None,
        ),
        (
            "https://api.openai.com/v1/chat/completions",
            json!({"model": ""}),
            None,
        ),
        (
            "https://api.openai.com/v1/chat/completions",
            json!({"model": "x".repeat(300)}),
            None,
        ),
        (
            "https://api.openai.com/v1/chat/completions",
            json!({}),
            None,
        ),
    ];
    for (uri, body, model) in cases {
        assert_eq!(meta_of(post(uri, body)).model.as_deref(), model, "{uri}");
    }
}

// ---------------------------------------------------------------- estimates

fn estimate(path: &str, body: serde_json::Value) -> TokenEstimate {
    let bytes = body.to_string();
    DefaultEstimator::new().estimate(&EstimateInput::new(path, Some(bytes.as_bytes())))
}

#[test]
fn openai_chat() {
    let e = estimate(
        "/v1/chat/completions",
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}
                ]}
            ],
            "max_tokens": 300,
            "n": 3,
            "temperature": 0.2
        }),
    );
    let input = c("system")
        + c("You are terse.")
        + c("user")
        + c("text")
        + c("What is in this image?")
        + 1_600
        + c("assistant")
        + c("call_1")
        + c("function")
        + c("look")
        + c("{\"x\":1}")
        + 3 * 4
        + 3;
    assert_eq!(e.input_tokens, input);
    assert_eq!(e.output_tokens, 900);
    assert_eq!(e.source, EstimateSource::Body);
    // max_completion_tokens wins; no max at all gives the default allowance.
    let e = estimate(
        "/v1/chat/completions",
        json!({"messages": [], "max_completion_tokens": 50, "max_tokens": 10}),
    );
    assert_eq!((e.input_tokens, e.output_tokens), (3, 50));
    let e = estimate(
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hey"}]}),
    );
    assert_eq!(
        (e.input_tokens, e.output_tokens),
        (c("user") + c("hey") + 4 + 3, 1_024)
    );
    // Tools are input too.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let e = estimate(
        "/v1/chat/completions",
        json!({"messages": [], "tools": tools, "max_tokens": 1}),
    );
    assert_eq!(
        e.input_tokens,
        c("function") + c("get_weather") + c("object") + 3
    );
}

#[test]
fn openai_completions_responses_and_embeddings() {
    let e = estimate(
        "/v1/completions",
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7, "n": 2}),
    );
    assert_eq!(
        (e.input_tokens, e.output_tokens),
        (c("Say this is a test") + 4 + 3, 14)
    );
    let e = estimate(
        "/v1/completions",
        json!({"prompt": ["one", "two"], "max_tokens": 1}),
    );
    assert_eq!(e.input_tokens, 2 + 2 * 4 + 3);
    let e = estimate(
        "/v1/completions",
        json!({"prompt": [1212, 318, 257], "max_tokens": 1}),
    );
    assert_eq!(e.input_tokens, 3 + 3 * 4 + 3);

    let e = estimate(
        "/v1/responses",
        json!({"model": "gpt-4.1", "instructions": "Be brief.", "input": "Tell me a joke.", "max_output_tokens": 200}),
    );
    assert_eq!(
        (e.input_tokens, e.output_tokens),
        (c("Be brief.") + c("Tell me a joke.") + 2 * 4 + 3, 200)
    );
    let e = estimate(
        "/v1/responses",
        json!({"input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hello"}, {"type": "input_image", "image_url": "https://x/y.png"}]}
        ]}),
    );
    assert_eq!(
        e.input_tokens,
        c("user") + c("input_text") + c("hello") + 1_600 + 4 + 3
    );
    assert_eq!(e.output_tokens, 1_024);

    let e = estimate(
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": ["The food was delicious", "and the waiter"]}),
    );
    // Each string of an embeddings input array counts as an item, no reply priming.
    assert_eq!(
        e.input_tokens,
        c("The food was delicious") + c("and the waiter") + 2 * 4
    );
    assert_eq!(e.output_tokens, 0);
    let e = estimate("/v1/embeddings", json!({"input": "hello", "n": 4}));
    assert_eq!((e.input_tokens, e.output_tokens), (c("hello") + 4, 0));
}

#[test]
fn anthropic_messages() {
    let e = estimate(
        "/v1/messages",
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "You are a poet.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Write a haiku."},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "rhyme", "input": {"word": "moon"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "spoon"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
                ]}
            ]
        }),
    );
    let system = c("text") + c("You are a poet.") + c("ephemeral");
    let m1 = c("user") + c("Write a haiku.");
    let m2 = c("assistant") + c("tool_use") + c("t1") + c("rhyme") + c("moon");
    let m3 = c("user") + c("tool_result") + c("t1") + c("spoon") + 1_600;
    assert_eq!(e.input_tokens, system + m1 + m2 + m3 + 4 * 4 + 3);
    assert_eq!(e.output_tokens, 1_024);
    let e = estimate(
        "/v1/messages",
        json!({"system": "Be kind.", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}),
    );
    assert_eq!(
        (e.input_tokens, e.output_tokens),
        (c("Be kind.") + 4 + c("user") + c("Hi") + 4 + 3, 10)
    );
}

#[test]
fn gemini_generate_content() {
    let e = estimate(
        "/v1beta/models/gemini-2.0-flash:generateContent",
        json!({
            "systemInstruction": {"parts": [{"text": "You are a cat."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Hello"}, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}}]},
                {"role": "model", "parts": [{"text": "Meow"}]}
            ],
            "generationConfig": {"maxOutputTokens": 800, "candidateCount": 2, "temperature": 1.0}
        }),
    );
    let input =
        c("You are a cat.") + c("user") + c("Hello") + 1_600 + c("model") + c("Meow") + 3 * 4 + 3;
    assert_eq!((e.input_tokens, e.output_tokens), (input, 1_600));
    let e = estimate(
        "/v1beta/models/gemini-2.0-flash:generateContent",
        json!({
            "contents": [{"parts": [{"text": "Hi"}]}],
            "generation_config": {"max_output_tokens": 5}
        }),
    );
    assert_eq!((e.input_tokens, e.output_tokens), (c("Hi") + 4 + 3, 5));
    let e = estimate(
        "/v1beta/models/text-embedding-004:embedContent",
        json!({"content": {"parts": [{"text": "Hi"}]}}),
    );
    assert_eq!(e.output_tokens, 0);
}

#[test]
fn dense_input_is_the_count_of_the_text_that_is_not_ascii() {
    let english = "Summarise the following report in three sentences.";
    let chinese = "请用三句话总结以下报告。";
    let korean = "안녕하세요";
    let body = json!({
        "model": "kimi-k2",
        "messages": [
            {"role": "system", "content": english},
            {"role": "user", "content": chinese},
            {"role": "user", "content": [{"type": "text", "text": korean}, {"type": "text", "text": "ok"}]},
        ],
        "max_tokens": 100,
    });
    let e = estimate("/v1/chat/completions", body.clone());
    assert_eq!(e.dense_input_tokens, c(chinese) + c(korean));
    assert_eq!(
        e.input_tokens,
        c("system")
            + 2 * c("user")
            + c(english)
            + c(chinese)
            + 2 * c("text")
            + c(korean)
            + c("ok")
            + 3 * 4
            + 3
    );
    // The same on the metadata, by both readers and by an estimator's own count.
    let m = meta_of(post(
        "https://api.moonshot.ai/v1/chat/completions",
        body.clone(),
    ));
    assert_eq!(m.dense_input_tokens, c(chinese) + c(korean));
    let e = estimate_json(
        &DefaultEstimator::new(),
        &EstimateInput::new("/v1/chat/completions", Some(body.to_string().as_bytes())),
    );
    assert_eq!(e.dense_input_tokens, c(chinese) + c(korean));
    // All ASCII: nothing dense.
    let e = estimate(
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": english}], "system": "Be brief."}),
    );
    assert_eq!(e.dense_input_tokens, 0);
    assert!(e.input_tokens > 0);
    // Explicit metadata: nothing dense.
    assert_eq!(
        RequestMeta::new("moonshot", 1_000, 10).dense_input_tokens,
        0
    );
    // A media part counts as media, whatever text it holds.
    let e = estimate(
        "/v1/messages",
        json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"data": chinese}}]}]}),
    );
    assert_eq!(e.dense_input_tokens, 0);
}

/// Escaped text is read by serde (the fast reader leaves it): counted dense by what it
/// decodes to, as the same text written raw is by the fast reader.
#[test]
fn escaped_dense_text_counts_as_the_raw_text_does() {
    use super::scan::{Texts, fast, scan_serde};
    let raw = r#"{"messages":[{"role":"user","content":"你好，世界 hello"}],"max_tokens":5}"#;
    let escaped = r#"{"messages":[{"role":"user","content":"\u4f60\u597d\uff0c\u4e16\u754c hello"}],"max_tokens":5}"#;
    let ascii_escape = r#"{"messages":[{"role":"user","content":"line\nbreak"}],"max_tokens":5}"#;
    let e = DefaultEstimator::new();
    for texts in [Texts::Length, Texts::Estimator] {
        let fast_raw = fast::scan(&e, raw.as_bytes(), None, texts)
            .unwrap()
            .unwrap();
        assert!(fast::scan(&e, escaped.as_bytes(), None, texts).is_err());
        let serde_escaped = scan_serde(&e, escaped.as_bytes(), None, texts).unwrap();
        assert_eq!(fast_raw, serde_escaped);
        assert_eq!(
            fast_raw,
            scan_serde(&e, raw.as_bytes(), None, texts).unwrap()
        );
        assert_eq!(fast_raw.dense_input_tokens, c("你好，世界 hello"));
        let serde_ascii = scan_serde(&e, ascii_escape.as_bytes(), None, texts).unwrap();
        assert_eq!(serde_ascii.dense_input_tokens, 0);
        assert!(serde_ascii.input_tokens > 0);
    }
    // The whole path (fast reader, then serde) gives the same estimate.
    let path = "/v1/chat/completions";
    let a = e.estimate(&EstimateInput::new(path, Some(raw.as_bytes())));
    let b = e.estimate(&EstimateInput::new(path, Some(escaped.as_bytes())));
    assert_eq!(a, b);
    assert_eq!(a.dense_input_tokens, c("你好，世界 hello"));
}

#[test]
fn malformed_and_unreadable_bodies_are_conservative() {
    let est = DefaultEstimator::new();
    for (body, input, dense) in [
        (&b"{oops"[..], 2, 0),
        (b"[1, 2, 3]", 3, 0),
        (b"\"just a string\"", 5, 0),
        (b"\xff\xfe\xfd\xfc", 2, 2),
        (b"x", 1, 0),
        (b"", 0, 0),
    ] {
        let e = est.estimate(&EstimateInput::new("/v1/chat/completions", Some(body)));
        assert_eq!(
            e,
            TokenEstimate {
                input_tokens: input,
                dense_input_tokens: dense,
                output_tokens: 1_024,
                source: EstimateSource::Conservative
            },
            "{body:?}"
        );
    }
    // Wrong types are ignored, not trusted: a negative or fractional max is absent.
    let e = estimate(
        "/v1/chat/completions",
        json!({"messages": "hi", "max_tokens": -5, "n": 0.5}),
    );
    assert_eq!((e.input_tokens, e.output_tokens), (c("hi") + 4 + 3, 1_024));
    // A huge n saturates instead of wrapping.
    let e = estimate(
        "/v1/chat/completions",
        json!({"max_tokens": u64::MAX, "n": 2}),
    );
    assert_eq!(e.output_tokens, u64::MAX);
    // Deeply nested JSON is rejected by the parser's depth limit, not a stack overflow.
    let deep = format!(
        "{{\"messages\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let e = est.estimate(&EstimateInput::new(
        "/v1/chat/completions",
        Some(deep.as_bytes()),
    ));
    assert_eq!(e.source, EstimateSource::Conservative);
}

#[test]
fn a_body_that_is_not_in_memory_is_estimated_from_its_length() {
    let req = Request::post("https://api.openai.com/v1/chat/completions")
        .header("content-length", "3000")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    let m = compute(&req, &DefaultEstimator::new());
    assert_eq!(
        (m.input_tokens, m.output_tokens, m.source),
        (1_000, 1_024, EstimateSource::Conservative)
    );
    // Its text unknown, it may be dense: calibration never shrinks it.
    assert_eq!(m.dense_input_tokens, 1_000);
    let req = Request::post("https://api.openai.com/v1/chat/completions")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    let m = compute(&req, &DefaultEstimator::new());
    assert_eq!((m.input_tokens, m.output_tokens), (0, 1_024));
}

#[test]
fn computed_once_and_carried_to_copies() {
    struct Counting(AtomicUsize);
    impl TokenEstimator for Counting {
        fn count_text(&self, text: &str, _: Option<&str>) -> u64 {
            self.0.fetch_add(1, Ordering::SeqCst);
            text.len() as u64
        }
    }
    let counting = Counting(AtomicUsize::new(0));
    let mut req = post(
        "https://api.openai.com/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "abc"}]}),
    );
    let first = ensure_with(&mut req, &counting).clone();
    let calls = counting.0.load(Ordering::SeqCst);
    assert_eq!(calls, 2);
    assert_eq!(first.input_tokens, 4 + 3 + 4 + 3);
    assert_eq!(ensure_with(&mut req, &counting), &first);
    assert_eq!(ensure(&mut req), &first);
    assert_eq!(counting.0.load(Ordering::SeqCst), calls);
    let mut copy = crate::body::try_clone_request(&req).unwrap();
    assert_eq!(get(&copy), Some(&first));
    assert_eq!(ensure_with(&mut copy, &counting), &first);
    assert_eq!(counting.0.load(Ordering::SeqCst), calls);
}

#[test]
fn an_arc_estimator_is_an_estimator() {
    let shared: std::sync::Arc<dyn TokenEstimator> =
        std::sync::Arc::new(DefaultEstimator::new().output_allowance(10));
    let mut req = post(
        "https://api.openai.com/v1/chat/completions",
        json!({"messages": []}),
    );
    assert_eq!(ensure_with(&mut req, &shared).output_tokens, 10);
}

#[test]
fn unknown_shapes_and_conflicting_maxima_are_conservative() {
    let body = json!({"query": "x".repeat(300), "max_tokens": 7});
    let e = estimate("/v1/custom", body.clone());
    let len = body.to_string().len() as u64;
    assert_eq!(
        e,
        TokenEstimate {
            input_tokens: len.div_ceil(3),
            dense_input_tokens: 0,
            output_tokens: 7,
            source: EstimateSource::Conservative
        }
    );
    // The largest of the output fields present.
    let e = estimate(
        "/v1/chat/completions",
        json!({"messages": [], "max_tokens": 900, "max_completion_tokens": 50}),
    );
    assert_eq!(e.output_tokens, 900);
    let e = estimate(
        "/v1/x:generateContent",
        json!({"contents": [], "max_tokens": 5, "generationConfig": {"maxOutputTokens": 70}}),
    );
    assert_eq!(e.output_tokens, 70);
}

/// ratelayer-mock's documented charging rule (its `tokens` module), restated: each
/// message costs ceil(chars / 4) + 4 (messages[], system, contents[], systemInstruction,
/// prompt / input as a string or each element); no such field: ceil(bytes / 4); output
/// allowance max_tokens (or synonyms, 16 when absent) × n.
fn mock_rule(body: &serde_json::Value) -> (u64, u64) {
    use serde_json::Value;
    let msg = |chars: usize| (chars as u64).div_ceil(4) + 4;
    let text = |v: &Value| -> usize {
        match v {
            Value::String(s) => s.chars().count(),
            Value::Array(parts) => parts
                .iter()
                .map(|p| {
                    p.get("text")
                        .and_then(Value::as_str)
                        .or(p.as_str())
                        .map_or(0, |t| t.chars().count())
                })
                .sum(),
            Value::Object(o) => o
                .get("text")
                .and_then(Value::as_str)
                .map_or(0, |t| t.chars().count()),
            _ => 0,
        }
    };
    let gemini = |c: &Value| c.get("parts").map_or(0, text);
    let items = |v: &Value| -> u64 {
        match v {
            Value::String(s) => msg(s.chars().count()),
            Value::Array(xs) => xs
                .iter()
                .map(|m| match m {
                    Value::Object(o) => msg(o.get("content").map_or(0, text)),
                    other => msg(text(other)),
                })
                .sum(),
            _ => 0,
        }
    };
    let mut input = None::<u64>;
    let mut add = |n: u64| input = Some(input.unwrap_or(0) + n);
    if let Some(v) = body.get("messages") {
        add(items(v));
    }
    if let Some(v) = body.get("system") {
        add(msg(text(v)));
    }
    if let Some(Value::Array(cs)) = body.get("contents") {
        add(cs.iter().map(|c| msg(gemini(c))).sum());
    }
    if let Some(v) = body.get("systemInstruction") {
        add(msg(gemini(v)));
    }
    for k in ["prompt", "input"] {
        if let Some(v) = body.get(k) {
            add(items(v));
        }
    }
    let input = input.unwrap_or_else(|| (body.to_string().len() as u64).div_ceil(4));
    let max = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .unwrap_or(16);
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
    (input, max * n)
}

fn shape() -> impl Strategy<Value = serde_json::Value> {
    let texts = || proptest::collection::vec("\\PC{0,120}", 0..6);
    prop_oneof![
        (texts(), proptest::option::of("\\PC{0,60}")).prop_map(|(ts, system)| {
            let mut b = json!({"model": "m", "messages": ts.iter().map(|t| json!({"role": "user", "content": t})).collect::<Vec<_>>()});
            if let Some(s) = system { b["system"] = json!(s); }
            b
        }),
        texts().prop_map(|ts| json!({"system": [{"type": "text", "text": ts.concat()}], "messages": ts.iter().map(|t| json!({"role": "user", "content": [{"type": "text", "text": t}]})).collect::<Vec<_>>()})),
        texts().prop_map(|ts| json!({"systemInstruction": {"parts": [{"text": ts.concat()}]}, "contents": ts.iter().map(|t| json!({"role": "user", "parts": [{"text": t}]})).collect::<Vec<_>>()})),
        texts().prop_map(|ts| json!({"prompt": ts})),
        "\\PC{0,200}".prop_map(|t| json!({"prompt": t})),
        "\\PC{0,200}".prop_map(|t| json!({"input": t, "instructions": "x"})),
        texts().prop_map(|ts| json!({"input": ts})),
        "\\PC{0,200}".prop_map(|t| json!({"unknown": t})),
    ]
}

proptest! {
    /// The default estimate never under-counts what ratelayer-mock charges, whatever the
    /// shape.
    #[test]
    fn never_below_the_mocks_rule(
        mut body in shape(),
        max_tokens in proptest::option::of(0u64..100_000),
        n in proptest::option::of(0u64..4),
    ) {
        if let Some(m) = max_tokens { body["max_tokens"] = json!(m); }
        if let Some(n) = n { body["n"] = json!(n); }
        let (mock_input, mock_output) = mock_rule(&body);
        let e = estimate("/v1/chat/completions", body.clone());
        prop_assert!(e.input_tokens >= mock_input, "input {} < {} for {}", e.input_tokens, mock_input, body);
        prop_assert!(e.output_tokens >= mock_output, "output {} < {}", e.output_tokens, mock_output);
    }

    /// Arbitrary bytes never panic and a non-empty body never estimates to zero.
    #[test]
    fn arbitrary_bodies(body in proptest::collection::vec(any::<u8>(), 0..400), path in "/[a-z/:]{0,30}") {
        let e = DefaultEstimator::new().estimate(&EstimateInput::new(&path, Some(&body)));
        if !body.is_empty() {
            prop_assert!(e.total() > 0 || path.ends_with("/embeddings") || path.ends_with("embedContent") || path.ends_with("EmbedContents"));
        }
    }
}

proptest! {
    /// The model a path names is the segment after the first `models` or `deployments`
    /// segment, up to a `:`, as `str::split` finds it.
    #[test]
    fn model_in_path_is_the_segment_after_models_or_deployments(
        segments in proptest::collection::vec(
            prop_oneof![
                Just("models"), Just("deployments"), Just("v1"), Just(""), Just("gpt-4o"),
                Just("gemini-2.0-flash:generateContent"), Just(":x"), Just("amodels"),
                Just("modelsb"), Just("deployment"), Just("\u{e9}"),
            ],
            0..7,
        ),
        lead in any::<bool>(),
    ) {
        let path = format!("{}{}", if lead { "/" } else { "" }, segments.join("/"));
        let by_split = || {
            let mut segments = path.split('/');
            while let Some(s) = segments.next() {
                if s == "models" || s == "deployments" {
                    let next = segments.next()?;
                    let name = next.split(':').next().unwrap_or(next);
                    return (!name.is_empty() && name.len() <= 256).then_some(name);
                }
            }
            None
        };
        prop_assert_eq!(super::model_in_path(&path), by_split(), "{}", path);
    }
}

// ------------------------------------------------- one pass == the tree model

/// The estimate as a tree walk over a parsed `serde_json::Value`: the documented rules
/// written the obvious way, the model that the one-pass reader must match.
fn tree_model(path: &str, body: &[u8]) -> (TokenEstimate, Option<std::sync::Arc<str>>) {
    use super::estimate::{INPUT_KEYS, MEDIA_KEYS, MEDIA_TYPES, MESSAGE_KEYS, SINGLE_MESSAGE_KEYS};
    use serde_json::{Map, Value};
    let e = DefaultEstimator::new();
    let conservative = |output| TokenEstimate {
        input_tokens: (body.len() as u64).div_ceil(3),
        dense_input_tokens: if body.is_ascii() {
            0
        } else {
            (body.len() as u64).div_ceil(3)
        },
        output_tokens: output,
        source: EstimateSource::Conservative,
    };
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) else {
        return (conservative(e.default_output(path)), None);
    };
    fn is_media(o: &Map<String, Value>) -> bool {
        o.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| MEDIA_TYPES.contains(&t))
            || MEDIA_KEYS.iter().any(|k| o.contains_key(*k))
    }
    /// Tokens of a value, and the part of them from strings that are not ASCII.
    fn count(e: &DefaultEstimator, v: &Value) -> (u64, u64) {
        let sum = |items: &mut dyn Iterator<Item = &Value>| {
            items
                .map(|i| count(e, i))
                .fold((0, 0), |(t, d), (ti, di)| (t + ti, d + di))
        };
        match v {
            Value::String(s) if s.is_ascii() => (e.count_text(s, None), 0),
            Value::String(s) => (e.count_text(s, None), e.count_text(s, None)),
            Value::Number(_) => (1, 0),
            Value::Array(items) => sum(&mut items.iter()),
            Value::Object(o) if is_media(o) => (e.media_tokens(), 0),
            Value::Object(o) => sum(&mut o.values()),
            Value::Bool(_) | Value::Null => (0, 0),
        }
    }
    fn largest(o: &Map<String, Value>, keys: &[&str]) -> Option<u64> {
        keys.iter()
            .filter_map(|k| o.get(*k).and_then(Value::as_u64))
            .max()
    }
    let model = o
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty() && m.len() <= 256)
        .map(std::sync::Arc::from);
    let generation = o
        .get("generationConfig")
        .or_else(|| o.get("generation_config"))
        .and_then(Value::as_object);
    let max = [
        largest(
            &o,
            &["max_completion_tokens", "max_tokens", "max_output_tokens"],
        ),
        generation.and_then(|g| largest(g, &["maxOutputTokens", "max_output_tokens"])),
    ]
    .into_iter()
    .flatten()
    .max();
    let n = largest(&o, &["n"])
        .or_else(|| generation.and_then(|g| largest(g, &["candidateCount", "candidate_count"])))
        .unwrap_or(1)
        .max(1);
    let output = max
        .unwrap_or_else(|| e.default_output(path))
        .saturating_mul(n);
    let (mut tokens, mut dense, mut found) = (0u64, 0u64, false);
    for key in INPUT_KEYS {
        let Some(v) = o.get(*key).filter(|v| !v.is_null()) else {
            continue;
        };
        found = true;
        let (t, d) = count(&e, v);
        tokens += t;
        dense += d;
        tokens += 4 * match v {
            Value::Array(items) if MESSAGE_KEYS.contains(key) => items.len() as u64,
            _ if MESSAGE_KEYS.contains(key) || SINGLE_MESSAGE_KEYS.contains(key) => 1,
            _ => 0,
        };
    }
    if !found {
        return (conservative(output), model);
    }
    if !path.ends_with("/embeddings") {
        tokens += 3;
    }
    let est = TokenEstimate {
        input_tokens: tokens,
        dense_input_tokens: dense,
        output_tokens: output,
        source: EstimateSource::Body,
    };
    (est, model)
}

/// Any JSON value built from the keys that mean something, and others.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let key = prop_oneof![
        Just("model"),
        Just("messages"),
        Just("system"),
        Just("prompt"),
        Just("input"),
        Just("instructions"),
        Just("contents"),
        Just("systemInstruction"),
        Just("tools"),
        Just("tool_choice"),
        Just("max_tokens"),
        Just("max_completion_tokens"),
        Just("max_output_tokens"),
        Just("maxOutputTokens"),
        Just("n"),
        Just("candidateCount"),
        Just("candidate_count"),
        Just("generationConfig"),
        Just("generation_config"),
        Just("type"),
        Just("image_url"),
        Just("inline_data"),
        Just("content"),
        Just("role"),
        Just("text"),
        Just("x\u{e9}\"\\"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u32>().prop_map(|n| serde_json::json!(n)),
        any::<i32>().prop_map(|n| serde_json::json!(n)),
        (-1e6f64..1e6).prop_map(|f| serde_json::json!(f)),
        prop_oneof![
            Just("image".to_owned()),
            Just("text".to_owned()),
            Just("gpt-4o".to_owned()),
            Just("\u{4f60}\u{597d}\u{ff0c}world".to_owned()),
            "\\PC{0,40}",
            Just("a\"b\\c\n".to_owned())
        ]
        .prop_map(Value::String),
    ];
    let object = |key: BoxedStrategy<&'static str>, inner: BoxedStrategy<Value>| {
        proptest::collection::vec((key, inner), 0..8)
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    };
    let key = key.boxed();
    let k2 = key.clone();
    let value = leaf
        .prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                object(k2.clone(), inner.boxed()),
            ]
        })
        .boxed();
    // Mostly top-level objects, as requests are.
    prop_oneof![4 => object(key, value.clone()), 1 => value]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// The one-pass reader gives exactly what the tree walk gives, model included, on any
    /// JSON built from the meaningful keys.
    #[test]
    fn one_pass_equals_the_tree_model(body in any_json(), embeddings in any::<bool>()) {
        let path = if embeddings { "/v1/embeddings" } else { "/v1/chat/completions" };
        let bytes = body.to_string().into_bytes();
        let (e, model) = DefaultEstimator::new().estimate_and_model(&EstimateInput::new(path, Some(&bytes)));
        prop_assert!(e.dense_input_tokens <= e.input_tokens);
        prop_assert_eq!((e, model), tree_model(path, &bytes), "body {}", body);
    }

    /// Arbitrary bytes: the same as the tree walk (not JSON, or not an object: by length).
    #[test]
    fn one_pass_equals_the_tree_model_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let path = "/v1/chat/completions";
        let got = DefaultEstimator::new().estimate_and_model(&EstimateInput::new(path, Some(&body)));
        prop_assert_eq!(got, tree_model(path, &body));
    }
}

/// Byte-level edits of a valid body: one byte replaced, inserted or removed.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        any_json(),
        any::<bool>(),
        any::<prop::sample::Index>(),
        any::<u8>(),
        0u8..3,
    )
        .prop_map(|(v, pretty, at, byte, op)| {
            let mut b = if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            };
            if !b.is_empty() {
                let i = at.index(b.len());
                match op {
                    0 => b[i] = byte,
                    1 => b.insert(i, byte),
                    _ => {
                        b.remove(i);
                    }
                }
            }
            b
        })
}

/// Texts that stress the fast reader: numbers of every form, escapes, whitespace.
fn tricky_text() -> impl Strategy<Value = Vec<u8>> {
    let number = prop_oneof![
        Just("0"),
        Just("-0"),
        Just("1.5"),
        Just("-1"),
        Just("1e3"),
        Just("1E-2"),
        Just("01"),
        Just("1."),
        Just(".5"),
        Just("-"),
        Just("18446744073709551615"),
        Just("18446744073709551616"),
        Just("123456789012345678"),
        Just("1234567890123456789"),
        Just("-9223372036854775808"),
        Just("1e400"),
        Just("2.0"),
    ];
    let text = prop_oneof![
        Just("\"hi\""),
        Just("\"a\\nb\""),
        Just("\"\\u00e9\""),
        Just("\"\\u4f60\\u597d\""),
        Just("\"\u{4f60}\u{597d}\""),
        Just("\"\\ud800\""),
        Just("\"tab\there\""),
        Just("\"image\""),
        Just("\"\u{e9}t\u{e9}\""),
    ];
    let key = prop_oneof![
        Just("max_tokens"),
        Just("n"),
        Just("messages"),
        Just("model"),
        Just("type"),
        Just("maxOutputTokens")
    ];
    let value = prop_oneof![
        number.clone().prop_map(str::to_owned),
        text.prop_map(str::to_owned),
        Just("[1, 2 ,3]".to_owned()),
        Just("{\"type\" : \"image\"}".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned())
    ];
    let ws = prop_oneof![Just(""), Just(" "), Just("\n\t"), Just("\r\n ")];
    proptest::collection::vec((ws.clone(), key, ws.clone(), value, ws), 0..6).prop_map(|members| {
        let inner: Vec<String> = members
            .into_iter()
            .map(|(a, k, b, v, c)| format!("{a}\"{k}\"{b}:{c}{v}"))
            .collect();
        format!("{{{}}}", inner.join(",")).into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Whatever the fast reader accepts, it reads exactly as serde_json does (and it
    /// accepts the ordinary bodies).
    #[test]
    fn the_fast_reader_agrees_with_serde(body in prop_oneof![mutated(), tricky_text(), string_edges(), any_json().prop_map(|v| v.to_string().into_bytes())]) {
        agree_with_serde(&body)?;
    }

    /// Strings of every length around the reader's 8- and 32-byte steps, with non-ASCII
    /// text, escapes, controls and invalid UTF-8 anywhere in them: the fast reader agrees
    /// with serde_json, and accepts every string that has no escape or control.
    #[test]
    fn the_fast_reader_agrees_with_serde_on_string_edges(body in string_edges()) {
        agree_with_serde(&body)?;
        let e = DefaultEstimator::new();
        let plain = !body.iter().any(|b| *b == b'\\' || *b < 0x20);
        for texts in [super::scan::Texts::Length, super::scan::Texts::Estimator] {
            let valid = super::scan::scan_serde(&e, &body, None, texts).is_some();
            let fast = super::scan::fast::scan(&e, &body, None, texts);
            prop_assert!(
                !(plain && valid) || matches!(fast, Ok(Some(_))),
                "a plain valid body was left to serde: {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}

/// Counts characters, and one more for every `m` of the model: unlike the default
/// count, it needs the text and the model.
struct Chars;

impl TokenEstimator for Chars {
    fn count_text(&self, text: &str, model: Option<&str>) -> u64 {
        text.chars().count() as u64 + model.map_or(0, |m| m.matches('m').count() as u64)
    }
}

/// The fast reader, where it answers, reads `body` as serde_json does: with the default
/// estimator counting by length or by its `count_text`, and with [`Chars`].
fn agree_with_serde(body: &[u8]) -> Result<(), TestCaseError> {
    use super::scan::{Texts, fast, scan_serde};
    let cases: [(&dyn TokenEstimator, Texts, Option<&str>); 4] = [
        (&DefaultEstimator::new(), Texts::Length, None),
        (&DefaultEstimator::new(), Texts::Estimator, None),
        (&Chars, Texts::Estimator, Some("mmm")),
        (&Chars, Texts::Estimator, None),
    ];
    for (e, texts, model) in cases {
        // A body that is not an object is `None` either way, valid or not.
        if let Ok(fast) = fast::scan(e, body, model, texts) {
            let slow = scan_serde(e, body, model, texts);
            prop_assert_eq!(
                fast,
                slow,
                "{:?} body {:?}",
                texts,
                String::from_utf8_lossy(body)
            );
        }
    }
    Ok(())
}

/// A request body whose message text and model are strings of 0 to 80 bytes: ASCII with,
/// maybe, a few pieces of non-ASCII text (2, 3 and 4 bytes), escapes, controls, quotes or
/// invalid UTF-8 (a lone continuation byte, a truncated sequence, 0xFF) at any place.
fn string_edges() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        12 => Just(b"a".to_vec()),
        1 => Just("\u{e9}".as_bytes().to_vec()),
        1 => Just("\u{20ac}".as_bytes().to_vec()),
        1 => Just("\u{1f600}".as_bytes().to_vec()),
        1 => Just(b"\\n".to_vec()),
        1 => Just(b"\\\"".to_vec()),
        1 => Just(b"\t".to_vec()),
        1 => Just(b"\x7f".to_vec()),
        1 => Just(vec![0x80]),
        1 => Just(vec![0xc3]),
        1 => Just(vec![0xff]),
    ];
    let ascii = "[ -!#-\\[\\]-~]{0,80}";
    let text = prop_oneof![
        3 => ascii.prop_map(String::into_bytes),
        2 => (ascii, any::<prop::sample::Index>(), proptest::collection::vec(piece, 1..4)).prop_map(
            |(a, at, pieces)| {
                let mut b = a.into_bytes();
                let mut i = at.index(b.len() + 1);
                for p in pieces {
                    b.splice(i..i, p.iter().copied());
                    i += p.len();
                }
                b
            }
        ),
    ];
    (text.clone(), text, 0usize..40).prop_map(|(content, model, pad)| {
        let mut b = br#"{"model":""#.to_vec();
        b.extend_from_slice(&model);
        b.extend_from_slice(br#"","messages":[{"role":"user","content":""#);
        b.extend_from_slice(&content);
        b.extend_from_slice(br#""}],"max_tokens":"#);
        b.extend_from_slice(" ".repeat(pad).as_bytes());
        b.extend_from_slice(b"7}");
        b
    })
}

/// The ordinary request shapes go the fast way.
#[test]
fn ordinary_bodies_take_the_fast_reader() {
    let e = DefaultEstimator::new();
    for body in [
        json!({"model": "gpt-4o", "max_tokens": 256, "messages": [{"role": "user", "content": "Hello there"}]}),
        json!({"model": "claude-sonnet-4-5", "system": "Be brief.", "max_tokens": 1024, "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image", "source": {"data": "AAAA"}}]}]}),
        json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}], "generationConfig": {"maxOutputTokens": 100, "temperature": 0.7}}),
        json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 256}),
    ] {
        let bytes = serde_json::to_vec_pretty(&body).unwrap();
        for texts in [super::scan::Texts::Length, super::scan::Texts::Estimator] {
            let fast = super::scan::fast::scan(&e, &bytes, None, texts);
            assert!(matches!(fast, Ok(Some(_))), "{body}");
            assert_eq!(
                fast.unwrap(),
                super::scan::scan_serde(&e, &bytes, None, texts)
            );
        }
    }
}
