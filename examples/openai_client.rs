//! The ratelayer stack around hyper-util's client, against a real OpenAI-compatible API
//! when a key is set, else against ratelayer-mock on loopback.
//!
//! `cargo run --example openai_client`
//!
//! Keys are read from the environment, or from a `.env.local` file in the current
//! directory (`NAME=value` lines; the environment wins):
//!
//! - `OPENAI_API_KEY`: OpenAI (`OPENAI_BASE_URL` and `OPENAI_MODEL` optional);
//! - else `MOONSHOT_API_KEY`, falling back to `KIMI_API_KEY`: Moonshot/Kimi
//!   (`MOONSHOT_BASE_URL` and `MOONSHOT_MODEL` optional);
//! - else no key: a mock provider on 127.0.0.1 with a free-tier-like limit, so the run
//!   shows a rate-limited request waited out instead of failed.
//!
//! It sends three small chat requests at once and prints what came back and what the
//! tier layer learned. The key is sent in a header marked sensitive and never printed.

use std::collections::HashMap;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ratelayer::core::{BoxError, LimitState, ReplayBody};
use ratelayer::{Preset, Provider, ProviderLimits};
use tower::{Layer, ServiceExt};

/// The `NAME=value` lines of `.env.local`, if the file exists.
fn env_local() -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(".env.local") else {
        return HashMap::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.trim().trim_matches(['"', '\'']).to_owned(),
            )
        })
        .collect()
}

/// A setting from the environment, else from `.env.local`.
fn var(file: &HashMap<String, String>, name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .or_else(|| file.get(name).cloned())
        .filter(|v| !v.trim().is_empty())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let file = env_local();
    let var = |name: &str| var(&file, name);
    let (preset, model, _mock) = if let Some(key) = var("OPENAI_API_KEY") {
        let base = var("OPENAI_BASE_URL")
            .unwrap_or_else(|| Provider::OpenAi.default_base_url().to_owned());
        let model =
            var("OPENAI_MODEL").unwrap_or_else(|| Provider::OpenAi.default_model().to_owned());
        println!("OpenAI at {base} (key from OPENAI_API_KEY)");
        (Preset::openai().base_url(base).api_key(key), model, None)
    } else if let Some(key) = var("MOONSHOT_API_KEY").or_else(|| var("KIMI_API_KEY")) {
        let base = var("MOONSHOT_BASE_URL")
            .unwrap_or_else(|| Provider::Moonshot.default_base_url().to_owned());
        let model =
            var("MOONSHOT_MODEL").unwrap_or_else(|| Provider::Moonshot.default_model().to_owned());
        println!("Moonshot/Kimi at {base} (key from MOONSHOT_API_KEY or KIMI_API_KEY)");
        (Preset::moonshot().base_url(base).api_key(key), model, None)
    } else {
        // No key: a mock allowing 2 requests per minute, answering like OpenAI.
        let mock = ratelayer::mock::MockProvider::builder()
            .rpm(2)
            .tpm(40_000)
            .build()?;
        let server = ratelayer::mock::serve(mock, ([127, 0, 0, 1], 0).into()).await?;
        println!(
            "no OPENAI_API_KEY, MOONSHOT_API_KEY or KIMI_API_KEY: using ratelayer-mock at {} (2 requests per minute)",
            server.url()
        );
        let preset = Preset::openai()
            .base_url(server.url())
            .api_key("sk-mock")
            .limits(ProviderLimits::default().max_concurrent(4));
        (
            preset,
            Provider::OpenAi.default_model().to_owned(),
            Some(server),
        )
    };

    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, ReplayBody> = Client::builder(TokioExecutor::new()).build(https);
    let state = LimitState::new();
    let layer = preset.max_wait(Duration::from_secs(120)).layer(&state)?;
    let tiers = layer.tier_handle().clone();
    let name = layer.name().to_owned();
    let stack = layer.layer(client);

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..3 {
        let stack = stack.clone();
        let body = serde_json::json!({
            "model": model,
            "max_tokens": 20,
            "messages": [{"role": "user", "content": format!("Say hello number {i} in five words.")}],
        });
        calls.spawn(async move {
            let started = tokio::time::Instant::now();
            let req = Request::post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(ReplayBody::json(&body))?;
            let resp = stack.oneshot(req).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let text: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let answer = text["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            Ok::<_, BoxError>((i, status, started.elapsed(), answer, text["usage"].clone()))
        });
    }
    while let Some(done) = calls.join_next().await {
        match done? {
            Ok((i, status, took, answer, usage)) => {
                println!(
                    "request {i}: {status} after {:.1}s, usage {usage}: {answer:?}",
                    took.as_secs_f64()
                );
            }
            Err(e) => println!("request failed: {e}"),
        }
    }
    for scope in state.scopes() {
        if scope.provider() == name {
            let rec = tiers.recommendation(&scope);
            println!(
                "{scope}: tier {} (rpm {:?}), base delay {:?}",
                rec.tier, rec.rpm, rec.base_delay
            );
        }
    }
    Ok(())
}
