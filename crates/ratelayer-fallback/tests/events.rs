//! Every fallback is a `fallback` tracing event with `from`, `to` and `reason`.
//! (One test in its own binary: a subscriber set for one test cannot race others.)
#![allow(clippy::unwrap_used)]

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use http::Request;
use ratelayer_core::ReplayBody;
use ratelayer_fallback::{Fallback, ProviderSpec};
use ratelayer_mock::{Fault, MockProvider};
use tower::ServiceExt;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    message: String,
    from: String,
    to: String,
    reason: String,
    fields: Vec<String>,
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.push(format!("{}={value}", field.name()));
        let v = value.to_owned();
        match field.name() {
            "message" => self.message = v,
            "from" => self.from = v,
            "to" => self.to = v,
            "reason" => self.reason = v,
            _ => {}
        }
    }
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Seen>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collect {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() == "ratelayer::fallback" {
            let mut seen = Seen::default();
            event.record(&mut seen);
            self.0.lock().unwrap().push(seen);
        }
    }
}

#[test]
fn every_fallback_is_an_event_with_from_to_and_reason() {
    let collect = Collect::default();
    let subscriber = tracing_subscriber::registry().with(collect.clone());
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let down = MockProvider::builder()
                .fault(Fault::internal_error())
                .build()
                .unwrap();
            let broke = MockProvider::builder()
                .fault(Fault::quota_exhausted())
                .build()
                .unwrap();
            let up = MockProvider::builder().build().unwrap();
            let f = Fallback::builder()
                .provider(ProviderSpec::new("down").service(down))
                .provider(ProviderSpec::new("broke").service(broke))
                .provider(ProviderSpec::new("up").service(up))
                .build()
                .unwrap();
            let req = Request::post("http://127.0.0.1/v1/chat/completions")
                .header("authorization", "Bearer sk-secret-key")
                .body(ReplayBody::from(r#"{"model":"gpt-4o","messages":[]}"#))
                .unwrap();
            f.oneshot(req).await.unwrap();
        });
    });
    let seen = collect.0.lock().unwrap();
    let fallbacks: Vec<(&str, &str, &str)> = seen
        .iter()
        .filter(|s| s.message == "fallback")
        .map(|s| (s.from.as_str(), s.to.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        fallbacks,
        [
            ("down", "broke", "unexpected"),
            ("broke", "up", "quota_exhausted"),
        ]
    );
    assert!(
        seen.iter()
            .any(|s| s.message.contains("retrying the same provider once")),
        "{seen:?}"
    );
    for s in seen.iter() {
        assert!(
            s.fields.iter().all(|f| !f.contains("sk-secret-key")),
            "never logs a key: {s:?}"
        );
    }
}
