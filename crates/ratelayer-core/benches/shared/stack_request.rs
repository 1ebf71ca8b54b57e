//! The 1 KiB chat request of the facade's stack bench (`crates/ratelayer/benches/stack.rs`),
//! also timed by the parse bench (`meta::compute stack`): one definition, so both benches
//! measure the same request.

use http::Request;
use ratelayer_core::ReplayBody;
use ratelayer_core::meta::ProviderName;

/// A 1 KiB OpenAI chat request body.
pub(crate) fn body_1k() -> bytes::Bytes {
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

/// The request around `body`: its headers and its provider's name.
pub(crate) fn request_1k(body: bytes::Bytes) -> Request<ReplayBody> {
    let mut req = Request::post("http://127.0.0.1:8080/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .body(ReplayBody::new(body))
        .unwrap_or_default();
    req.extensions_mut().insert(ProviderName::new("openai"));
    req
}
