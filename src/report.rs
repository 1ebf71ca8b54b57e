//! Progress bars and the results table.

use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar of `len` jobs labelled `label`, drawn on stderr (hidden when stderr
/// is not a terminal).
///
/// ```
/// let bar = ratelayer_suite::report::progress_bar(10, "naive");
/// bar.inc(10);
/// assert_eq!(bar.position(), 10);
/// ```
pub fn progress_bar(len: u64, label: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:>10} [{bar:40.cyan/blue}] {pos:>4}/{len} {elapsed_precise} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
        .with_style(style)
        .with_prefix(label.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One row of the results table: what a strategy achieved on the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The strategy's name.
    pub name: String,
    /// Jobs completed with a 2xx response.
    pub completed: usize,
    /// Jobs that failed (error or final non-2xx).
    pub failed: usize,
    /// 429 responses the providers sent (from their journals).
    pub rate_limited: u64,
    /// Jobs answered by a fallback provider.
    pub fallbacks: u64,
    /// Wall time of the run.
    pub wall: Duration,
    /// Share of the primary provider's token budget used, see [`budget_share`].
    pub budget_share: f64,
}

/// The share of a tokens-per-minute budget that `tokens` used over a run of `wall`: the
/// budget available is `tpm` per minute of the run, and at least one minute's worth (a
/// sliding one-minute window admits a whole minute's budget at once).
///
/// ```
/// use std::time::Duration;
/// use ratelayer_suite::report::budget_share;
/// assert_eq!(budget_share(30_000, 60_000, Duration::from_secs(20)), 0.5);
/// assert_eq!(budget_share(60_000, 60_000, Duration::from_secs(120)), 0.5);
/// ```
pub fn budget_share(tokens: u64, tpm: u64, wall: Duration) -> f64 {
    let minutes = (wall.as_secs_f64() / 60.0).max(1.0);
    if tpm == 0 {
        return 0.0;
    }
    tokens as f64 / (tpm as f64 * minutes)
}

/// The results table, one row per run, as fixed-width text.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_suite::report::{table, RunSummary};
/// let t = table(&[RunSummary { name: "naive".into(), completed: 90, failed: 10,
///     rate_limited: 412, fallbacks: 0, wall: Duration::from_secs(41), budget_share: 0.62 }]);
/// assert!(t.contains("naive") && t.contains("412") && t.contains("62.0%"));
/// ```
pub fn table(rows: &[RunSummary]) -> String {
    let head = [
        "strategy",
        "completed",
        "failed",
        "429s received",
        "fallbacks",
        "wall time",
        "token budget used",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.completed.to_string(),
                r.failed.to_string(),
                r.rate_limited.to_string(),
                r.fallbacks.to_string(),
                format!("{:.1} s", r.wall.as_secs_f64()),
                format!("{:.1}%", r.budget_share * 100.0),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        for (i, (c, w)) in row.iter().zip(width).enumerate() {
            let sep = if i == 0 { "" } else { " | " };
            if i == 0 {
                let _ = write!(out, "{sep}{c:<w$}");
            } else {
                let _ = write!(out, "{sep}{c:>w$}");
            }
        }
        out.push('\n');
    };
    line(&mut out, &head.map(String::from));
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("-+-"));
    out.push('\n');
    for row in &cells {
        line(&mut out, row);
    }
    out
}
