//! Goodput: how much of a provider's binding limit each strategy turns into completed
//! requests, in virtual time.
//!
//! `cargo run --release --example goodput`
//!
//! One in-process ratelayer-mock per strategy (same limits, same seed) enforces requests
//! per minute, tokens per minute and concurrency; the same seeded workload runs through
//! (a) the naive client (fixed 1-2-4-8 s backoff on 429), (b) tower's own `Retry` +
//! `ConcurrencyLimit` + `RateLimit` configured with the documented limits, and (c) the
//! ratelayer stack. Time is tokio's paused clock: a run of many virtual minutes takes a
//! second. For each strategy it prints the share of the binding limit used, 429s per
//! 1,000 requests (after the first response) and completion time divided by the
//! theoretical minimum; its last line is one JSON object with those figures.

use std::time::Duration;

use ratelayer::Preset;
use ratelayer::core::LimitState;
use ratelayer_mock::{Latency, MockProvider};
use ratelayer_suite::baseline::{Documented, tower_stack};
use ratelayer_suite::goodput::{Figures, ProviderLimits, figures, json_line, theoretical_minimum};
use ratelayer_suite::run::{NaiveClient, RunRecord, outcome, run_workload, send_once};
use ratelayer_suite::workload::Workload;
use tokio::time::Instant;
use tower::Layer;

const SEED: u64 = 7;
const REQUESTS: usize = 600;
const CALLERS: usize = 32;
const BASE: &str = "http://mock.invalid";
const KEY: &str = "sk-goodput";

/// The documented limits of the simulated account.
const LIMITS: ProviderLimits = ProviderLimits {
    rpm: 500,
    tpm: 60_000,
    concurrency: 8,
    latency: Duration::from_secs(2),
};

fn mock() -> MockProvider {
    match MockProvider::builder()
        .rpm(LIMITS.rpm)
        .tpm(LIMITS.tpm)
        .concurrency(LIMITS.concurrency as usize)
        .latency(Latency::fixed(LIMITS.latency))
        .seed(SEED)
        .build()
    {
        Ok(m) => m,
        Err(e) => panic!("mock configuration: {e}"),
    }
}

async fn naive(workload: &Workload) -> (MockProvider, Instant, RunRecord) {
    let mock = mock();
    let start = Instant::now();
    let client = NaiveClient::new(mock.clone());
    let record = run_workload(workload, CALLERS, None, move |job, start| {
        let mut client = client.clone();
        async move { client.call(&job, BASE, Some(KEY), start).await }
    })
    .await;
    (mock, start, record)
}

async fn tower_baseline(workload: &Workload) -> (MockProvider, Instant, RunRecord) {
    let mock = mock();
    let mean = workload.approx_tokens() / workload.jobs.len().max(1) as u64;
    let svc = tower_stack(
        mock.clone(),
        Documented {
            rpm: LIMITS.rpm,
            tpm: LIMITS.tpm,
            concurrency: LIMITS.concurrency as usize,
            mean_request_tokens: mean,
        },
    );
    let start = Instant::now();
    let record = run_workload(workload, CALLERS, None, move |job, start| {
        let mut svc = svc.clone();
        async move {
            let result = send_once(&mut svc, job.request(BASE, Some(KEY))).await;
            let seen = u32::from(matches!(result, Ok(http::StatusCode::TOO_MANY_REQUESTS)));
            outcome(&job, result, seen, start)
        }
    })
    .await;
    (mock, start, record)
}

async fn ratelayer_stack(workload: &Workload) -> (MockProvider, Instant, RunRecord) {
    let mock = mock();
    let layer = Preset::openai()
        .base_url(BASE)
        .api_key(KEY)
        .limits(
            ratelayer::ProviderLimits::default()
                .rpm(LIMITS.rpm)
                .tpm(LIMITS.tpm)
                .max_concurrent(LIMITS.concurrency as u32),
        )
        .max_wait(Duration::from_secs(3_600))
        .layer(&LimitState::new());
    let svc = match layer {
        Ok(l) => l.layer(mock.clone()),
        Err(e) => panic!("preset: {e}"),
    };
    let start = Instant::now();
    let record = run_workload(workload, CALLERS, None, move |job, start| {
        let mut svc = svc.clone();
        async move {
            let result = send_once(&mut svc, job.request(BASE, None)).await;
            outcome(&job, result, 0, start)
        }
    })
    .await;
    (mock, start, record)
}

fn report(name: &str, run: (MockProvider, Instant, RunRecord)) -> Figures {
    let (mock, start, record) = run;
    let f = figures(name, &LIMITS, &mock, start, &record);
    println!("{}", f.line());
    f
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let workload = Workload::generate_sized(SEED, REQUESTS, "gpt-4o-mini", 40, 1_600);
    println!(
        "workload: {REQUESTS} chat requests from {CALLERS} callers; limits: {} RPM, {} TPM, {} concurrent, {:?} per response",
        LIMITS.rpm, LIMITS.tpm, LIMITS.concurrency, LIMITS.latency
    );
    let all = vec![
        report("naive", naive(&workload).await),
        report("tower", tower_baseline(&workload).await),
        report("ratelayer", ratelayer_stack(&workload).await),
    ];
    let sizes: Vec<u64> = workload.jobs.iter().map(|j| j.approx_tokens()).collect();
    let (min, binding) = theoretical_minimum(&LIMITS, &sizes);
    println!(
        "binding limit: {} (theoretical minimum for the workload's approximate size: {:.0} s)",
        binding.name(),
        min.as_secs_f64()
    );
    println!("{}", json_line(&all));
}
