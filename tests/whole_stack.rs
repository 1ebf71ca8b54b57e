//! The whole preset stack around hyper-util's client, against ratelayer-mock over real
//! loopback HTTP (127.0.0.1). Nothing here sleeps: every scenario is decided by
//! admission (queues, budgets, typed errors), and the mock's journal is the judge.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ratelayer::core::{LimitState, NeverFits, ReplayBody, WaitTooLong};
use ratelayer::mock::{MockProvider, MockServer};
use ratelayer::{Preset, ProviderLimits, ProviderService};
use ratelayer_suite::run::{outcome, run_workload, send_once};
use ratelayer_suite::workload::{ChatJob, Workload};
use tower::{Layer, ServiceExt};

type Stack = ProviderService<Client<HttpConnector, ReplayBody>>;

async fn start(mock: &MockProvider) -> MockServer {
    ratelayer::mock::serve(mock.clone(), ([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
}

fn stack(server: &MockServer, limits: ProviderLimits, max_wait: Duration) -> Stack {
    let client = Client::builder(TokioExecutor::new()).build_http();
    Preset::openai()
        .base_url(server.url())
        .api_key("sk-whole-stack")
        .limits(limits)
        .max_wait(max_wait)
        .layer(&LimitState::new())
        .unwrap()
        .layer(client)
}

fn job(prompt_words: u32, max_tokens: u32) -> ChatJob {
    ChatJob {
        id: 0,
        model: "gpt-4o-mini".into(),
        prompt_words,
        max_tokens,
    }
}

#[tokio::test]
async fn concurrent_callers_queue_instead_of_collecting_429s() {
    let mock = MockProvider::builder()
        .concurrency(2)
        .tpm(200_000)
        .build()
        .unwrap();
    let server = start(&mock).await;
    let svc = stack(
        &server,
        ProviderLimits::default().max_concurrent(2).tpm(200_000),
        Duration::from_secs(1),
    );
    let workload = Workload::generate_sized(3, 40, "gpt-4o-mini", 10, 60);
    let record = run_workload(&workload, 8, None, move |job, start| {
        let mut svc = svc.clone();
        async move {
            let result = send_once(&mut svc, job.request("http://unused.invalid", None)).await;
            outcome(&job, result, 0, start)
        }
    })
    .await;
    server.shutdown().await;
    let journal = mock.journal();
    assert_eq!(record.completed(), 40, "{:?}", record.outcomes);
    assert_eq!(journal.rate_limited(), 0);
    assert!(journal.max_in_flight() <= 2, "{}", journal.max_in_flight());
    assert_eq!(journal.len(), 40);
}

#[tokio::test]
async fn a_request_that_can_never_fit_fails_at_once_and_is_never_sent() {
    let mock = MockProvider::builder().tpm(2_000).build().unwrap();
    let server = start(&mock).await;
    let svc = stack(
        &server,
        ProviderLimits::default().tpm(2_000),
        Duration::from_secs(1),
    );
    let err = svc
        .oneshot(job(3_000, 512).request("http://unused.invalid", None))
        .await
        .unwrap_err();
    let never = err.downcast_ref::<NeverFits>().unwrap();
    assert!(never.requested > never.capacity, "{never}");
    server.shutdown().await;
    assert!(mock.journal().is_empty());
}

#[tokio::test]
async fn a_wait_longer_than_allowed_fails_at_once_without_a_429() {
    let mock = MockProvider::builder().tpm(3_000).build().unwrap();
    let server = start(&mock).await;
    let svc = stack(
        &server,
        ProviderLimits::default().tpm(3_000),
        Duration::from_secs(5),
    );
    let first = svc
        .clone()
        .oneshot(job(1_200, 256).request("http://unused.invalid", None))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    drop(first);
    let started = std::time::Instant::now();
    let err = svc
        .oneshot(job(1_200, 256).request("http://unused.invalid", None))
        .await
        .unwrap_err();
    let wait = err.downcast_ref::<WaitTooLong>().unwrap();
    assert!(wait.wait > Duration::from_secs(5), "{wait}");
    assert!(started.elapsed() < Duration::from_secs(2), "it waited");
    server.shutdown().await;
    let journal = mock.journal();
    assert_eq!((journal.len(), journal.rate_limited()), (1, 0));
}

#[tokio::test]
async fn a_chain_falls_back_when_the_primary_would_wait_too_long() {
    let primary = MockProvider::builder().tpm(3_000).build().unwrap();
    let backup = MockProvider::builder().tpm(100_000).build().unwrap();
    let (p_server, b_server) = (start(&primary).await, start(&backup).await);
    let client: Client<HttpConnector, ReplayBody> =
        Client::builder(TokioExecutor::new()).build_http();
    let (chain, stats) = ratelayer::Chain::new()
        .provider(
            Preset::openai()
                .name("primary")
                .base_url(p_server.url())
                .api_key("sk-primary")
                .limits(ProviderLimits::default().tpm(3_000)),
        )
        .provider(
            Preset::openai()
                .name("backup")
                .base_url(b_server.url())
                .api_key("sk-backup")
                .model("gpt-4o")
                .limits(ProviderLimits::default().tpm(100_000)),
        )
        .wait_budget(Duration::from_secs(30))
        .build(client)
        .unwrap();
    let started = std::time::Instant::now();
    for _ in 0..2 {
        let resp = chain
            .clone()
            .oneshot(job(1_200, 256).request("http://unused.invalid", None))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "it waited");
    p_server.shutdown().await;
    b_server.shutdown().await;
    let (p, b) = (primary.journal(), backup.journal());
    assert_eq!((p.len(), b.len()), (1, 1));
    assert_eq!(p.rate_limited() + b.rate_limited(), 0);
    assert_eq!(p.entries()[0].key, "sk-primary");
    assert_eq!(
        (b.entries()[0].key.as_str(), b.entries()[0].model.as_str()),
        ("sk-backup", "gpt-4o")
    );
    let snap = stats.snapshot();
    assert_eq!(snap.provider("backup").unwrap().successes, 1);
    assert_eq!(snap.provider("primary").unwrap().successes, 1);
}
