//! Goodput figures: how much of a provider's binding limit a strategy used, how many 429s
//! it collected, and how its completion time compares with the theoretical minimum.
//!
//! The judge (ratelayer-mock) enforces its limits with a sliding one-minute window: in
//! any 60 s window it admits at most `rpm` requests and `tpm` tokens, and at most
//! `concurrency` requests are in flight. Cut the time from the first admission into
//! consecutive 60 s intervals `[first + 60 k, first + 60 (k + 1))`: each lies inside one
//! of the judge's windows, so each admits at most the limit (a request's final charge is
//! never more than what it was charged when admitted). Hence:
//!
//! - **Minimum time.** `n` units (tokens or requests) at `limit` per minute need
//!   `m = ceil(n / limit)` intervals, so the last admission comes at least
//!   `60 s × (m − 1)` after the first. The continuous `60 s × (n / limit − 1)` is no
//!   bound at all (it claims a fraction of a window's budget can be had in that fraction
//!   of a minute, which a sliding window never gives back). Moreover, at least
//!   `tail = n − (m − 1) × limit` units are admitted in the last interval, by at least
//!   `k` requests (the fewest whose sizes add up to `tail`, largest first), and with at
//!   most `concurrency` in flight, each for at least one latency, the `i + concurrency`-th
//!   of them is admitted at least one latency after the `i`-th: the last response comes
//!   at least `60 s × (m − 1) + latency × ceil(k / concurrency)` after the start.
//!   Concurrency alone needs `ceil(requests / concurrency)` latencies. The largest bound
//!   is binding (concurrency on a tie).
//! - **Share of the binding limit used.** What was admitted in the complete intervals
//!   from the first admission, divided by the limit times their number: the mean fill of
//!   the judge's window while the strategy had work. Each interval holds at most the
//!   limit, so 100 % is the most any strategy can reach; the last, partial interval is
//!   left out (a strategy that has run out of work cannot fill it). A run shorter than a
//!   minute is measured against one window.

use std::fmt::Write as _;
use std::time::Duration;

/// The limits of the judged provider, as documented to the client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderLimits {
    /// Requests per minute.
    pub rpm: u64,
    /// Tokens per minute.
    pub tpm: u64,
    /// Requests in flight at once.
    pub concurrency: u64,
    /// The latency of one response.
    pub latency: Duration,
}

/// One admitted request, as the judge's journal records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// When it was admitted, from the start of the run.
    pub at: Duration,
    /// The tokens the judge charged for it in the end.
    pub tokens: u64,
}

/// Which limit binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Requests per minute.
    Rpm,
    /// Tokens per minute.
    Tpm,
    /// Concurrency.
    Concurrency,
}

impl Binding {
    /// `rpm`, `tpm` or `concurrency`.
    pub fn name(self) -> &'static str {
        match self {
            Binding::Rpm => "rpm",
            Binding::Tpm => "tpm",
            Binding::Concurrency => "concurrency",
        }
    }
}

/// The theoretical minimum time to serve requests of the given token `sizes`, and which
/// limit makes it so (see the [module docs](self)).
///
/// ```
/// use std::time::Duration;
/// use ratelayer_suite::goodput::{theoretical_minimum, Binding, ProviderLimits};
/// let limits = ProviderLimits { rpm: 1_000, tpm: 60_000, concurrency: 10,
///                               latency: Duration::from_secs(1) };
/// // 600,000 tokens at 60,000 per minute: ten minutes' worth, the first at once; the
/// // last 60,000 take 50 requests of 1,200, five rounds of 10.
/// let (min, binding) = theoretical_minimum(&limits, &[1_200; 500]);
/// assert_eq!(binding, Binding::Tpm);
/// assert_eq!(min, Duration::from_secs(9 * 60 + 5));
/// ```
pub fn theoretical_minimum(limits: &ProviderLimits, sizes: &[u64]) -> (Duration, Binding) {
    let lat = limits.latency.as_secs_f64();
    let c = limits.concurrency.max(1);
    let rounds = |k: u64| k.div_ceil(c) as f64 * lat;
    // Full minutes before the last interval, and the units left for it.
    let windows = |total: u64, per_minute: u64| -> Option<(f64, u64)> {
        if per_minute == 0 || total == 0 {
            return None;
        }
        let m = total.div_ceil(per_minute);
        Some(((m - 1) as f64 * 60.0, total - (m - 1) * per_minute))
    };
    let requests = sizes.len() as u64;
    let rpm = windows(requests, limits.rpm).map_or(lat, |(span, tail)| span + rounds(tail));
    let tokens: u64 = sizes.iter().sum();
    let tpm = windows(tokens, limits.tpm).map_or(lat, |(span, tail)| {
        let mut desc = sizes.to_vec();
        desc.sort_unstable_by(|a, b| b.cmp(a));
        let mut k = 0u64;
        let mut sum = 0u64;
        for size in desc {
            if sum >= tail {
                break;
            }
            sum += size;
            k += 1;
        }
        span + rounds(k.max(1))
    });
    let candidates = [
        (rounds(requests), Binding::Concurrency),
        (rpm, Binding::Rpm),
        (tpm, Binding::Tpm),
    ];
    let (secs, binding) = candidates
        .into_iter()
        .fold((0.0, Binding::Concurrency), |best, c| {
            if c.0 > best.0 { c } else { best }
        });
    (Duration::from_secs_f64(secs), binding)
}

/// The share of the binding limit used by `admissions`: what was admitted in the
/// complete minutes from the first admission, divided by what the judge admits in them at
/// most (see the [module docs](self)). For concurrency: the mean number in flight over
/// the run divided by the limit.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_suite::goodput::{binding_share, Admission, Binding, ProviderLimits};
/// let limits = ProviderLimits { rpm: 60, tpm: 1_000, concurrency: 4,
///                               latency: Duration::from_secs(1) };
/// // The whole budget at 0, 60 and 120 s, then the little work left at 130 s: every
/// // complete minute was full.
/// let at = |s| Duration::from_secs(s);
/// let a = [Admission { at: at(0), tokens: 1_000 }, Admission { at: at(60), tokens: 1_000 },
///          Admission { at: at(120), tokens: 1_000 }, Admission { at: at(130), tokens: 10 }];
/// let share = binding_share(&limits, Binding::Tpm, &a, at(131));
/// assert!((share - 1.0).abs() < 1e-9);
/// ```
pub fn binding_share(
    limits: &ProviderLimits,
    binding: Binding,
    admissions: &[Admission],
    wall: Duration,
) -> f64 {
    let (Some(first), Some(last)) = (
        admissions.iter().map(|a| a.at).min(),
        admissions.iter().map(|a| a.at).max(),
    ) else {
        return 0.0;
    };
    const MINUTE: Duration = Duration::from_secs(60);
    let complete = ((last - first).as_secs() / 60).max(1);
    // The complete minutes (or the one minute of a shorter run).
    let end = first + MINUTE * u32::try_from(complete).unwrap_or(u32::MAX);
    let inside = admissions.iter().filter(|a| a.at < end);
    let of_limit = |used: u64, limit: u64| used as f64 / (limit.max(1) * complete) as f64;
    match binding {
        Binding::Tpm => of_limit(inside.map(|a| a.tokens).sum(), limits.tpm),
        Binding::Rpm => of_limit(inside.count() as u64, limits.rpm),
        Binding::Concurrency => {
            let busy = admissions.len() as f64 * limits.latency.as_secs_f64();
            busy / (limits.concurrency.max(1) as f64 * wall.as_secs_f64().max(1e-9))
        }
    }
}

/// The figures of one strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// The strategy's name.
    pub strategy: String,
    /// Requests completed with a 2xx response.
    pub completed: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Requests the provider received (all attempts).
    pub sent: u64,
    /// 429s the provider sent.
    pub rate_limited: u64,
    /// 429s per 1,000 requests received, not counting those answered before the first
    /// response reached the client (no client can know the limits before it).
    pub rate_limited_per_1000: f64,
    /// Share of the binding limit used, see [`binding_share`].
    pub binding_share: f64,
    /// Completion time.
    pub wall: Duration,
    /// Completion time divided by the theoretical minimum.
    pub vs_minimum: f64,
}

impl Figures {
    /// One human-readable line.
    pub fn line(&self) -> String {
        format!(
            "{:<10} completed {:>4}  failed {:>4}  binding limit used {:>5.1}%  429s/1000 {:>7.1}  time {:>7.1} s = {:.3}x minimum",
            self.strategy,
            self.completed,
            self.failed,
            self.binding_share * 100.0,
            self.rate_limited_per_1000,
            self.wall.as_secs_f64(),
            self.vs_minimum
        )
    }
}

/// One JSON object with every strategy's figures, keyed by strategy name.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_suite::goodput::{json_line, Figures};
/// let f = Figures { strategy: "naive".into(), completed: 1, failed: 0, sent: 2,
///     rate_limited: 1, rate_limited_per_1000: 500.0, binding_share: 0.5,
///     wall: Duration::from_secs(2), vs_minimum: 2.0 };
/// let v: serde_json::Value = serde_json::from_str(&json_line(&[f])).unwrap();
/// assert_eq!(v["naive"]["vs_minimum"], 2.0);
/// ```
pub fn json_line(figures: &[Figures]) -> String {
    let mut map = serde_json::Map::new();
    for f in figures {
        map.insert(
            f.strategy.clone(),
            serde_json::json!({
                "completed": f.completed,
                "failed": f.failed,
                "requests_sent": f.sent,
                "rate_limited": f.rate_limited,
                "rate_limited_per_1000": round3(f.rate_limited_per_1000),
                "binding_limit_share": round3(f.binding_share),
                "wall_seconds": round3(f.wall.as_secs_f64()),
                "vs_minimum": round3(f.vs_minimum),
            }),
        );
    }
    let mut s = String::new();
    let _ = write!(s, "{}", serde_json::Value::Object(map));
    s
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Admissions of a journal, timed from `origin`.
pub fn admissions(
    journal: &ratelayer_mock::Journal,
    origin: tokio::time::Instant,
) -> Vec<Admission> {
    journal
        .entries()
        .iter()
        .filter_map(|e| {
            Some(Admission {
                at: e.start?.saturating_duration_since(origin),
                tokens: e.tokens,
            })
        })
        .collect()
}

/// 429s answered to requests that arrived after the first response of any kind was
/// finished (before it, no client can know the limits), per 1,000 requests received.
pub fn rate_limited_per_1000_after_first(journal: &ratelayer_mock::Journal) -> f64 {
    let entries = journal.entries();
    let Some(first) = entries
        .iter()
        .filter(|e| e.status.is_some())
        .filter_map(|e| e.finish)
        .min()
    else {
        return 0.0;
    };
    let late = entries
        .iter()
        .filter(|e| e.arrival > first && e.status == Some(http::StatusCode::TOO_MANY_REQUESTS))
        .count();
    late as f64 * 1000.0 / entries.len().max(1) as f64
}

/// The figures of one strategy's run against `mock` (run from `origin`, with the
/// callers' outcomes in `record`).
pub fn figures(
    strategy: &str,
    limits: &ProviderLimits,
    mock: &ratelayer_mock::MockProvider,
    origin: tokio::time::Instant,
    record: &crate::run::RunRecord,
) -> Figures {
    let journal = mock.journal();
    let admitted = admissions(&journal, origin);
    let sizes: Vec<u64> = admitted.iter().map(|a| a.tokens).collect();
    let (min, binding) = theoretical_minimum(limits, &sizes);
    Figures {
        strategy: strategy.to_owned(),
        completed: record.completed() as u64,
        failed: record.failed() as u64,
        sent: journal.len() as u64,
        rate_limited: journal.rate_limited() as u64,
        rate_limited_per_1000: rate_limited_per_1000_after_first(&journal),
        binding_share: binding_share(limits, binding, &admitted, record.wall),
        wall: record.wall,
        vs_minimum: record.wall.as_secs_f64() / min.as_secs_f64().max(1e-9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_minimum_binds() {
        let limits = ProviderLimits {
            rpm: 60,
            tpm: 1_000_000,
            concurrency: 2,
            latency: Duration::from_secs(2),
        };
        // 120 requests: concurrency needs 60 rounds of 2 s = 120 s; 60 rpm needs a minute
        // and the last 60 in 30 rounds: 120 s too (a tie goes to concurrency).
        let (min, binding) = theoretical_minimum(&limits, &[8; 120]);
        assert_eq!(binding, Binding::Concurrency);
        assert_eq!(min, Duration::from_secs(120));
        let wide = ProviderLimits {
            concurrency: 100,
            ..limits
        };
        let (min, binding) = theoretical_minimum(&wide, &[8; 120]);
        assert_eq!(binding, Binding::Rpm);
        assert_eq!(min, Duration::from_secs(62));
        // One request more needs a third minute of the window: 120 s + 2 s, not 63 s.
        assert_eq!(
            theoretical_minimum(&wide, &[8; 121]).0,
            Duration::from_secs(122)
        );
        // Tokens: 2,500 at 1,000 per minute need two minutes, then the last 500 are
        // at least two requests of 300 (the largest), one round at concurrency 100 and
        // two at concurrency 1.
        let tight = ProviderLimits { tpm: 1_000, ..wide };
        let sizes = [
            300, 300, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100,
            100, 100, 100, 100,
        ];
        assert_eq!(sizes.iter().sum::<u64>(), 2_500);
        let (min, binding) = theoretical_minimum(&tight, &sizes);
        assert_eq!((min, binding), (Duration::from_secs(122), Binding::Tpm));
        let one = ProviderLimits {
            concurrency: 1,
            rpm: 1_000,
            ..tight
        };
        assert_eq!(
            theoretical_minimum(&one, &sizes),
            (Duration::from_secs(124), Binding::Tpm)
        );
    }

    #[test]
    fn half_the_budget_is_half_the_share() {
        let limits = ProviderLimits {
            rpm: 60,
            tpm: 1_000,
            concurrency: 4,
            latency: Duration::from_secs(1),
        };
        let a: Vec<Admission> = (0..=60)
            .map(|s| Admission {
                at: Duration::from_secs(s * 2),
                tokens: 500 / 30,
            })
            .collect();
        // Two complete minutes (the admission at 120 s is in the partial third).
        let share = binding_share(&limits, Binding::Tpm, &a, Duration::from_secs(121));
        assert!((share - 60.0 * 16.0 / 2_000.0).abs() < 1e-9, "{share}");
        let share = binding_share(&limits, Binding::Rpm, &a, Duration::from_secs(121));
        assert!((share - 60.0 / 120.0).abs() < 1e-9, "{share}");
        // Shorter than a minute: against one window.
        let share = binding_share(&limits, Binding::Tpm, &a[..10], Duration::from_secs(19));
        assert!((share - 160.0 / 1_000.0).abs() < 1e-9, "{share}");
        assert_eq!(
            binding_share(&limits, Binding::Rpm, &[], Duration::ZERO),
            0.0
        );
    }
}
