//! The wait event, in a test binary of its own: tracing caches each callsite's interest
//! process-wide, so a test running in parallel without the subscriber could hide the
//! event from it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{answering, layer_30k, request};
use tokio::time::advance;
use tower::{Layer, ServiceExt};

/// A writer collecting formatted events, for asserting on them.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_wait_is_announced_with_model_limit_used_size_and_wait() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let svc = layer_30k().layer(answering("{}"));
    svc.clone()
        .oneshot(request("openai", "gpt-4o", 12_071, 0))
        .await
        .unwrap();
    advance(Duration::from_secs(10)).await;
    svc.oneshot(request("openai", "gpt-4o", 22_117, 0))
        .await
        .unwrap();
    let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = out
        .lines()
        .find(|l| l.contains("waiting for the token budget"))
        .unwrap_or_else(|| panic!("no wait event in {out}"));
    for field in [
        "model=\"gpt-4o\"",
        "limit=30000",
        "used=12071",
        "request=22117",
        "wait_ms=50000",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}
