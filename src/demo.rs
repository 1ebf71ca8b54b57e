//! The demo's scenario: mock providers on loopback with realistic limits, and the
//! summaries and chart drawn from their journals.

use std::time::Duration;

use ratelayer_mock::{Journal, Latency, MockProvider, MockServer};
use tokio::time::Instant;

use crate::chart::{Series, svg_chart, trailing_rate};
use crate::report::{RunSummary, budget_share};
use crate::run::RunRecord;

/// The limits of one demo provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoLimits {
    /// Requests per minute.
    pub rpm: u64,
    /// Tokens per minute.
    pub tpm: u64,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// The primary provider: tight on tokens per minute and on concurrency.
pub const PRIMARY: DemoLimits = DemoLimits {
    rpm: 1_000,
    tpm: 30_000,
    concurrency: 4,
};

/// The fallback provider: roomier.
pub const FALLBACK: DemoLimits = DemoLimits {
    rpm: 1_000,
    tpm: 150_000,
    concurrency: 16,
};

/// A mock enforcing `limits`, answering after 200-800 ms, seeded.
///
/// # Errors
/// The mock's configuration error (none for the demo's limits).
pub fn mock(limits: DemoLimits, seed: u64) -> Result<MockProvider, ratelayer_core::ConfigError> {
    MockProvider::builder()
        .rpm(limits.rpm)
        .tpm(limits.tpm)
        .concurrency(limits.concurrency)
        .latency(Latency::uniform(
            Duration::from_millis(200),
            Duration::from_millis(800),
        ))
        .seed(seed)
        .build()
}

/// Serves `mock` on an ephemeral port of 127.0.0.1.
///
/// # Errors
/// When the port cannot be bound.
pub async fn serve(mock: &MockProvider) -> std::io::Result<MockServer> {
    ratelayer_mock::serve(mock.clone(), ([127, 0, 0, 1], 0).into()).await
}

/// `(admitted at, tokens)` of a journal, timed from `origin`.
pub fn token_events(journal: &Journal, origin: Instant) -> Vec<(Duration, u64)> {
    journal
        .entries()
        .iter()
        .filter_map(|e| Some((e.start?.saturating_duration_since(origin), e.tokens)))
        .collect()
}

/// Tokens the provider admitted in the end (its final charges).
pub fn tokens_admitted(journal: &Journal) -> u64 {
    journal.entries().iter().map(|e| e.tokens).sum()
}

/// Successful answers of a journal.
pub fn successes(journal: &Journal) -> u64 {
    journal
        .entries()
        .iter()
        .filter(|e| e.status.is_some_and(|s| s.is_success()))
        .count() as u64
}

/// A results-table row from a run and its providers' journals (`primary` first).
pub fn summary(
    name: &str,
    record: &RunRecord,
    primary: &Journal,
    fallbacks: &[&Journal],
) -> RunSummary {
    let rate_limited = std::iter::once(primary)
        .chain(fallbacks.iter().copied())
        .map(|j| j.rate_limited() as u64)
        .sum();
    RunSummary {
        name: name.to_owned(),
        completed: record.completed(),
        failed: record.failed(),
        rate_limited,
        fallbacks: fallbacks.iter().map(|j| successes(j)).sum(),
        wall: record.wall,
        budget_share: budget_share(tokens_admitted(primary), PRIMARY.tpm, record.wall),
    }
}

/// One line of the chart: a journal's tokens per second, averaged over the trailing
/// minute.
pub fn rate_line(
    label: &str,
    color: &str,
    journal: &Journal,
    origin: Instant,
    end: Duration,
) -> Series {
    let events = token_events(journal, origin);
    Series::line(
        label,
        color,
        trailing_rate(
            &events,
            Duration::from_secs(60),
            Duration::from_millis(500),
            end,
        ),
    )
}

/// The demo's chart: the given lines, with the providers' limits as dashed lines.
pub fn chart(lines: Vec<Series>, end: Duration) -> String {
    let end_s = end.as_secs_f64();
    let mut series = lines;
    series.push(Series::limit(
        format!("primary limit ({} TPM)", PRIMARY.tpm),
        "#d62728",
        PRIMARY.tpm as f64 / 60.0,
        0.0,
        end_s,
    ));
    series.push(Series::limit(
        format!("fallback limit ({} TPM)", FALLBACK.tpm),
        "#1f77b4",
        FALLBACK.tpm as f64 / 60.0,
        0.0,
        end_s,
    ));
    svg_chart(
        "Tokens per second used (trailing-minute average) against the limits",
        "time since start (s)",
        "tokens per second",
        &series,
    )
}
