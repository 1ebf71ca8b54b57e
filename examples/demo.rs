//! The ratelayer demo: the same workload through a naive client and through the
//! ratelayer stack, against honest mock providers on loopback. No API key needed.
//!
//! `cargo run --release --example demo`
//!
//! Two mock OpenAI-style providers run on 127.0.0.1: a primary that is tight on tokens per
//! minute (30,000) and on concurrency (4 at once), and a roomier fallback. The same
//! seeded workload (240 chat requests of varied sizes from 24 concurrent callers) runs
//! twice, side by side, each run against its own fresh mocks:
//!
//! - **naive**: the hand-written loop most clients start with: on a 429, sleep 1, 2, 4,
//!   then 8 seconds and try again, then give up; primary provider only.
//! - **ratelayer**: hyper-util's client inside the ratelayer stack (wait first, fall back
//!   second; tier-aware backoff; token and concurrency admission per provider).
//!
//! Each run stops at a 45 s deadline (whatever has not finished by then counts as failed).
//! At the end: a table from the mocks' journals and an SVG chart of the tokens per second
//! used against the limits, written to `target/ratelayer-demo.svg` (or the path given as
//! the first argument).

use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::MultiProgress;
use ratelayer::core::{BoxError, ReplayBody};
use ratelayer_suite::demo::{self, FALLBACK, PRIMARY};
use ratelayer_suite::report::{progress_bar, table};
use ratelayer_suite::run::{NaiveClient, outcome, run_workload_until, send_once};
use ratelayer_suite::workload::Workload;
use tokio::time::Instant;

const SEED: u64 = 2026;
const REQUESTS: usize = 240;
const CALLERS: usize = 24;
const DEADLINE: Duration = Duration::from_secs(45);
const MODEL: &str = "gpt-4o-mini";
const KEY: &str = "sk-demo-not-a-real-key";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/ratelayer-demo.svg".to_owned());
    let workload = Workload::generate_sized(SEED, REQUESTS, MODEL, 40, 1_200);

    // Fresh mocks for each run, so neither run eats the other's budget.
    let naive_primary = demo::mock(PRIMARY, SEED)?;
    let rl_primary = demo::mock(PRIMARY, SEED)?;
    let rl_fallback = demo::mock(FALLBACK, SEED + 1)?;
    let naive_server = demo::serve(&naive_primary).await?;
    let rl_primary_server = demo::serve(&rl_primary).await?;
    let rl_fallback_server = demo::serve(&rl_fallback).await?;
    println!(
        "mock providers on loopback: primary {} RPM / {} TPM / {} concurrent, fallback {} TPM / {} concurrent",
        PRIMARY.rpm, PRIMARY.tpm, PRIMARY.concurrency, FALLBACK.tpm, FALLBACK.concurrency
    );
    println!(
        "workload: {REQUESTS} chat requests (about {} tokens) from {CALLERS} concurrent callers, {}s deadline per run\n",
        workload.approx_tokens(),
        DEADLINE.as_secs()
    );

    let client: Client<_, ReplayBody> = Client::builder(TokioExecutor::new()).build_http();
    let bars = MultiProgress::new();
    let naive_bar = bars.add(progress_bar(REQUESTS as u64, "naive"));
    let rl_bar = bars.add(progress_bar(REQUESTS as u64, "ratelayer"));

    let start = Instant::now();
    let naive_run = {
        let naive = NaiveClient::new(client.clone());
        let base = naive_server.url();
        run_workload_until(
            &workload,
            CALLERS,
            Some(naive_bar),
            Some(DEADLINE),
            move |job, start| {
                let (mut naive, base) = (naive.clone(), base.clone());
                async move { naive.call(&job, &base, Some(KEY), start).await }
            },
        )
    };
    let rl_run = {
        let (stack, _stats) = stack::build(
            client.clone(),
            &rl_primary_server.url(),
            &rl_fallback_server.url(),
            KEY,
        )?;
        let base = rl_primary_server.url();
        run_workload_until(
            &workload,
            CALLERS,
            Some(rl_bar),
            Some(DEADLINE),
            move |job, start| {
                let (mut stack, base) = (stack.clone(), base.clone());
                async move {
                    let result = send_once(&mut stack, job.request(&base, None)).await;
                    outcome(&job, result, 0, start)
                }
            },
        )
    };
    let (naive_record, rl_record) = tokio::join!(naive_run, rl_run);
    let _ = bars.clear();

    let naive_journal = naive_primary.journal();
    let (rl_primary_journal, rl_fallback_journal) = (rl_primary.journal(), rl_fallback.journal());
    let rows = [
        demo::summary("naive", &naive_record, &naive_journal, &[]),
        demo::summary(
            "ratelayer",
            &rl_record,
            &rl_primary_journal,
            &[&rl_fallback_journal],
        ),
    ];
    println!("{}", table(&rows));
    for (name, record) in [("naive", &naive_record), ("ratelayer", &rl_record)] {
        let cut = record
            .outcomes
            .iter()
            .filter(|o| o.error.as_deref() == Some("deadline"))
            .count();
        if cut > 0 {
            println!(
                "{name}: {cut} requests still waiting or retrying at the {}s deadline (counted as failed)",
                DEADLINE.as_secs()
            );
        }
    }
    println!(
        "429s received: from the mocks' journals (ratelayer absorbs its own); fallbacks: answers from the fallback provider; token budget used: the primary's tokens-per-minute budget over the run (at least one minute's worth)."
    );

    let end = naive_record.wall.max(rl_record.wall) + Duration::from_secs(1);
    let svg = demo::chart(
        vec![
            demo::rate_line("naive (primary)", "#ff7f0e", &naive_journal, start, end),
            demo::rate_line(
                "ratelayer (primary)",
                "#2ca02c",
                &rl_primary_journal,
                start,
                end,
            ),
            demo::rate_line(
                "ratelayer (fallback)",
                "#17becf",
                &rl_fallback_journal,
                start,
                end,
            ),
        ],
        end,
    );
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, svg)?;
    println!("chart written to {out}");
    println!("total wall time: {:.1} s", start.elapsed().as_secs_f64());

    naive_server.shutdown().await;
    rl_primary_server.shutdown().await;
    rl_fallback_server.shutdown().await;
    Ok(())
}

mod stack {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::BodyExt;
    use http_body_util::combinators::UnsyncBoxBody;
    use ratelayer::core::{BoxError, ReplayBody};
    use ratelayer::fallback::FallbackStats;
    use ratelayer::{Chain, Preset, ProviderLimits, ProviderService};
    use ratelayer_suite::demo::{DemoLimits, FALLBACK, PRIMARY};
    use tower::util::BoxCloneService;
    use tower::{Service, ServiceExt};

    /// The response body of the stack.
    pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

    /// The stack, boxed.
    pub(crate) type Stack = BoxCloneService<Request<ReplayBody>, Response<Body>, BoxError>;

    fn limits(l: DemoLimits) -> ProviderLimits {
        ProviderLimits::default()
            .rpm(l.rpm)
            .tpm(l.tpm)
            .max_concurrent(l.concurrency as u32)
    }

    /// The ratelayer stack around `client`: a chain of the primary and the fallback,
    /// waiting up to 5 s on the primary before falling back.
    pub(crate) fn build<C, B>(
        client: C,
        primary: &str,
        fallback: &str,
        key: &str,
    ) -> Result<(Stack, FallbackStats), BoxError>
    where
        C: Clone,
        ProviderService<C>:
            Service<Request<ReplayBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
        <ProviderService<C> as Service<Request<ReplayBody>>>::Error: Into<BoxError>,
        <ProviderService<C> as Service<Request<ReplayBody>>>::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError> + Send,
    {
        let (chain, stats) = Chain::new()
            .provider(
                Preset::openai()
                    .name("primary")
                    .base_url(primary)
                    .api_key(key)
                    .limits(limits(PRIMARY)),
            )
            .provider(
                Preset::openai()
                    .name("fallback")
                    .base_url(fallback)
                    .api_key(key)
                    .limits(limits(FALLBACK)),
            )
            .wait_budget(Duration::from_secs(5))
            .build(client)?;
        let svc = chain
            .map_response(|r| r.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into);
        Ok((BoxCloneService::new(svc), stats))
    }
}
