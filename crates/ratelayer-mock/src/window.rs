//! The judge's accounting: a plain sliding-window log of (instant, cost) per limit.
//!
//! A limit of `limit` per `window` holds when, for every instant `t`, the costs admitted
//! in `(t - window, t]` sum to at most `limit`. The log keeps every admission still inside
//! the window; nothing is approximated.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// When a cost fits into a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    /// It fits now.
    Now,
    /// It fits after this long (and not before).
    After(Duration),
    /// It can never fit: the cost alone exceeds the limit.
    Never,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Instant,
    cost: u64,
    id: u64,
}

/// A sliding-window log for one limit.
#[derive(Debug, Clone)]
pub(crate) struct SlidingLog {
    window: Duration,
    limit: u64,
    entries: VecDeque<Entry>,
    used: u64,
}

impl SlidingLog {
    pub(crate) fn new(limit: u64, window: Duration) -> Self {
        SlidingLog {
            window,
            limit,
            entries: VecDeque::new(),
            used: 0,
        }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Drops the admissions that are out of every window ending at `now` or later: an
    /// admission at `a` counts in the window ending at `t` iff `a > t - window`.
    fn prune(&mut self, now: Instant) {
        while let Some(e) = self.entries.front() {
            if e.at + self.window <= now {
                self.used -= e.cost;
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }

    /// The sum of the costs admitted in `(now - window, now]`.
    pub(crate) fn used(&mut self, now: Instant) -> u64 {
        self.prune(now);
        self.used
    }

    /// What is left of the limit at `now`.
    pub(crate) fn remaining(&mut self, now: Instant) -> u64 {
        self.limit.saturating_sub(self.used(now))
    }

    /// Time from `now` until the log is empty again (the limit fully replenished).
    pub(crate) fn reset(&mut self, now: Instant) -> Duration {
        self.prune(now);
        self.entries
            .back()
            .map_or(Duration::ZERO, |e| (e.at + self.window) - now)
    }

    /// When `cost` fits. Admissions are never in the future, so the sum inside a window
    /// ending at `s >= now` only falls as `s` grows: admitting at `now` keeps every window
    /// within the limit iff `used(now) + cost <= limit`, and the earliest later instant is
    /// when enough of the oldest admissions have left the window.
    pub(crate) fn fit(&mut self, now: Instant, cost: u64) -> Fit {
        if cost > self.limit {
            return Fit::Never;
        }
        self.prune(now);
        if self.used + cost <= self.limit {
            return Fit::Now;
        }
        let mut left = self.used;
        for e in &self.entries {
            left -= e.cost;
            if left + cost <= self.limit {
                return Fit::After((e.at + self.window) - now);
            }
        }
        // Unreachable in practice: an empty log admits any cost <= limit.
        Fit::Never
    }

    /// Records an admission of `cost` at `now` under `id`.
    pub(crate) fn admit(&mut self, now: Instant, cost: u64, id: u64) {
        self.prune(now);
        self.entries.push_back(Entry { at: now, cost, id });
        self.used += cost;
    }

    /// Lowers the recorded cost of admission `id` to `cost` (the real usage). Raising is
    /// refused: it could break a window that later admissions relied on.
    pub(crate) fn reconcile(&mut self, id: u64, cost: u64) {
        if let Some(e) = self.entries.iter_mut().rev().find(|e| e.id == id)
            && cost < e.cost
        {
            self.used -= e.cost - cost;
            e.cost = cost;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn window_edges_are_half_open() {
        let t0 = Instant::now();
        let mut log = SlidingLog::new(2, Duration::from_secs(60));
        log.admit(t0, 1, 0);
        tokio::time::advance(Duration::from_secs(10)).await;
        log.admit(Instant::now(), 1, 1);
        assert_eq!(
            log.fit(Instant::now(), 1),
            Fit::After(Duration::from_secs(50))
        );
        assert_eq!(
            log.fit(Instant::now(), 2),
            Fit::After(Duration::from_secs(60))
        );
        assert_eq!(log.fit(Instant::now(), 3), Fit::Never);
        assert_eq!(log.reset(Instant::now()), Duration::from_secs(60));
        tokio::time::advance(Duration::from_millis(49_999)).await;
        assert_eq!(
            log.fit(Instant::now(), 1),
            Fit::After(Duration::from_millis(1))
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(log.fit(Instant::now(), 1), Fit::Now);
        assert_eq!(log.remaining(Instant::now()), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn reconcile_only_lowers() {
        let now = Instant::now();
        let mut log = SlidingLog::new(100, Duration::from_secs(60));
        log.admit(now, 80, 7);
        log.reconcile(7, 90);
        assert_eq!(log.used(now), 80);
        log.reconcile(7, 30);
        assert_eq!(log.used(now), 30);
        assert_eq!(log.fit(now, 70), Fit::Now);
        assert_eq!(log.fit(now, 71), Fit::After(Duration::from_secs(60)));
    }

    proptest::proptest! {
        /// Random admissions at random times: every window stays within the limit (checked
        /// by brute force over the log), and a refusal's wait is exact to the nanosecond.
        #[test]
        fn never_over_the_limit_and_waits_are_exact(
            ops in proptest::collection::vec((0u64..30_000, 1u64..40), 1..120),
        ) {
            let window = Duration::from_secs(10);
            let limit = 100;
            let base = Instant::now();
            let mut log = SlidingLog::new(limit, window);
            let mut admitted: Vec<(Instant, u64)> = Vec::new();
            let mut now = base;
            for (i, (gap_ms, cost)) in ops.into_iter().enumerate() {
                now += Duration::from_millis(gap_ms % 700);
                match log.fit(now, cost) {
                    Fit::Now => {
                        log.admit(now, cost, i as u64);
                        admitted.push((now, cost));
                    }
                    Fit::After(wait) => {
                        proptest::prop_assert!(!wait.is_zero());
                        let mut later = log.clone();
                        proptest::prop_assert_eq!(later.fit(now + wait, cost), Fit::Now);
                        let mut early = log.clone();
                        let just_before = now + wait - Duration::from_nanos(1);
                        proptest::prop_assert!(early.fit(just_before, cost) != Fit::Now);
                    }
                    Fit::Never => proptest::prop_assert!(cost > limit),
                }
                // Brute force: the window ending at any admission holds at most `limit`.
                for &(t, _) in &admitted {
                    let sum: u64 = admitted
                        .iter()
                        .filter(|(a, _)| *a <= t && *a + window > t)
                        .map(|(_, c)| c)
                        .sum();
                    proptest::prop_assert!(sum <= limit);
                }
                let in_window: u64 = admitted
                    .iter()
                    .filter(|(a, _)| *a + window > now)
                    .map(|(_, c)| c)
                    .sum();
                proptest::prop_assert_eq!(log.used(now), in_window);
            }
        }
    }
}
