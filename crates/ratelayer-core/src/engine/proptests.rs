//! Property tests over random arrival sequences, costs, cancellations and refunds.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::LimitState;

const KEY: BucketKey = BucketKey::TOKENS_PER_MINUTE;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
enum Then {
    /// Sleep until ready, commit, and report `actual` = cost * pct / 100 (a refund).
    Use(u8),
    /// Drop before use.
    Cancel,
    /// Keep it pending; it is used at its ready time (or cancelled by a later `Drop`).
    Hold,
    /// Cancel the oldest pending reservation.
    DropOldest,
}

fn then() -> impl Strategy<Value = Then> {
    prop_oneof![
        4 => (1u8..=100).prop_map(Then::Use),
        2 => Just(Then::Cancel),
        2 => Just(Then::Hold),
        1 => Just(Then::DropOldest),
    ]
}

fn ops(max_cost: u64) -> impl Strategy<Value = Vec<(u64, u64, Then)>> {
    prop::collection::vec((0u64..20_000, 1..=max_cost, then()), 1..60)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

struct Sim {
    h: ScopeHandle,
    t0: Instant,
    pending: Vec<(Reservation, u8)>,
    /// (admission time in ms since t0, cost actually used)
    admitted: Vec<(u64, u64)>,
}

impl Sim {
    fn new(quota: Quota) -> Self {
        let h = LimitState::new().handle(&Scope::new("p"));
        h.set_quota(KEY, quota).unwrap();
        Sim {
            h,
            t0: Instant::now(),
            pending: Vec::new(),
            admitted: Vec::new(),
        }
    }

    /// A sliding window (or GCRA) of `limit` after the steps `ops` (those that fit).
    async fn after(sliding: bool, limit: u64, ops: Vec<(u64, u64, Then)>) -> Self {
        let quota = if sliding {
            Quota::sliding_window(limit, WINDOW)
        } else {
            Quota::gcra(limit, WINDOW)
        };
        let mut sim = Sim::new(quota);
        for (dt, c, then) in ops {
            if c <= limit {
                sim.step(dt, c, then).await;
            }
        }
        sim
    }

    fn use_it(&mut self, r: Reservation, pct: u8) {
        let cost = r.receipt().cost(KEY.dimension);
        let mut c = r.commit();
        let actual = cost * u64::from(pct) / 100;
        c.adjust(KEY, actual);
        let at = Instant::now().duration_since(self.t0).as_nanos() as u64;
        self.admitted.push((at, actual));
    }

    /// Advances by `dt`, using pending reservations at their ready instants on the way.
    async fn advance(&mut self, dt: Duration) {
        self.advance_to(Instant::now() + dt).await;
    }

    async fn advance_to(&mut self, until: Instant) {
        loop {
            self.pending.sort_by_key(|(r, _)| r.ready_at());
            match self.pending.first() {
                Some((r, _)) if r.ready_at() <= until => {
                    tokio::time::sleep_until(r.ready_at()).await;
                    let (r, pct) = self.pending.remove(0);
                    self.use_it(r, pct);
                }
                _ => break,
            }
        }
        tokio::time::sleep_until(until).await;
    }

    async fn step(&mut self, dt_ms: u64, cost: u64, then: Then) {
        self.advance(Duration::from_millis(dt_ms)).await;
        let r = self.h.reserve(&[(KEY, cost)], None).await.unwrap();
        match then {
            Then::Use(pct) => {
                // Others pending before it are used first, at their own ready instants.
                self.advance_to(r.ready_at()).await;
                self.use_it(r, pct);
            }
            Then::Cancel => drop(r),
            Then::Hold => self.pending.push((r, 100)),
            Then::DropOldest => {
                self.pending.push((r, 100));
                drop(self.pending.remove(0));
            }
        }
    }

    async fn finish(&mut self) {
        self.advance(Duration::from_secs(3600)).await;
    }

    /// The most admitted in any closed interval of `window` length.
    fn max_in_window(&self, window: Duration, closed: bool) -> u64 {
        let w = window.as_nanos() as u64;
        let mut best = 0;
        for (start, _) in &self.admitted {
            let sum: u64 = self
                .admitted
                .iter()
                .filter(|(t, _)| *t >= *start && (*t < start + w || (closed && *t == start + w)))
                .map(|(_, c)| *c)
                .sum();
            best = best.max(sum);
        }
        best
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Sliding window: any window admits at most the limit, whatever the arrivals,
    /// cancellations, holds and refunds.
    #[test]
    fn sliding_window_never_exceeds_the_limit(limit in 1u64..5_000, slots in 1u32..80, ops in ops(5_000)) {
        runtime().block_on(async {
            let mut sim = Sim::new(Quota::sliding_window(limit, WINDOW).with_slots(slots));
            for (dt, cost, then) in ops {
                if cost > limit { continue; }
                sim.step(dt, cost, then).await;
            }
            sim.finish().await;
            let max = sim.max_in_window(WINDOW, false);
            prop_assert!(max <= limit, "admitted {max} in a window, limit {limit}: {:?}", sim.admitted);
            Ok(())
        })?;
    }

    /// GCRA: any window admits at most limit + burst.
    #[test]
    fn gcra_never_exceeds_limit_plus_burst(limit in 1u64..5_000, burst in 1u64..5_000, ops in ops(5_000)) {
        runtime().block_on(async {
            let mut sim = Sim::new(Quota::gcra(limit, WINDOW).with_burst(burst));
            for (dt, cost, then) in ops {
                if cost > burst { continue; }
                sim.step(dt, cost, then).await;
            }
            sim.finish().await;
            let max = sim.max_in_window(WINDOW, true);
            prop_assert!(max <= limit + burst, "admitted {max} in a window, limit {limit} + burst {burst}");
            Ok(())
        })?;
    }

    /// Work-conserving and exact: with nothing pending, a cost that fits the exact
    /// sliding log now waits zero; otherwise it waits exactly until enough leaves the
    /// window (every admission in its own slot: the ring is exact).
    #[test]
    fn sliding_window_is_work_conserving_and_exact(limit in 1u64..5_000, ops in prop::collection::vec((1u64..200, 1u64..5_000), 1..40)) {
        runtime().block_on(async {
            // 4,096 slots of 14.6 ms; arrivals at least 100 ms apart.
            let mut sim = Sim::new(Quota::sliding_window(limit, WINDOW).with_slots(4096));
            for (dt, cost) in ops {
                if cost > limit { continue; }
                sim.advance(Duration::from_millis(dt * 100)).await;
                let now = Instant::now().duration_since(sim.t0).as_nanos() as u64;
                let w = WINDOW.as_nanos() as u64;
                let mut live: Vec<(u64, u64)> = sim.admitted.iter().copied()
                    .filter(|(t, _)| t + w > now).collect();
                live.sort();
                let used: u64 = live.iter().map(|(_, c)| c).sum();
                let expected = if used + cost <= limit {
                    0
                } else {
                    let mut left = used;
                    let mut at = now;
                    for (t, c) in &live {
                        left -= c;
                        at = t + w;
                        if left + cost <= limit { break; }
                    }
                    at - now
                };
                let wait = sim.h.wait_time(&[(KEY, cost)]).await.unwrap();
                prop_assert_eq!(wait, Duration::from_nanos(expected));
                sim.step(0, cost, Then::Use(100)).await;
            }
            Ok(())
        })?;
    }

    /// GCRA is work-conserving and exact against a token-bucket model.
    #[test]
    fn gcra_is_work_conserving_and_exact(limit in 1u64..1_000, burst in 1u64..1_000, ops in prop::collection::vec((0u64..20_000, 1u64..1_000), 1..40)) {
        runtime().block_on(async {
            let mut sim = Sim::new(Quota::gcra(limit, WINDOW).with_burst(burst));
            let rate = limit as f64 / WINDOW.as_secs_f64(); // units per second
            let mut tokens = burst as f64;
            let mut last = Instant::now();
            for (dt, cost) in ops {
                if cost > burst { continue; }
                sim.advance(Duration::from_millis(dt)).await;
                // Actual elapsed time (paused-time sleeps end on whole milliseconds).
                let now = Instant::now();
                tokens = (tokens + rate * (now - last).as_secs_f64()).min(burst as f64);
                let wait_d = sim.h.wait_time(&[(KEY, cost)]).await.unwrap();
                let wait = wait_d.as_secs_f64();
                let expected = ((cost as f64 - tokens) / rate).max(0.0);
                prop_assert!((wait - expected).abs() < 1e-6, "wait {wait} expected {expected}");
                if tokens >= cost as f64 + 1e-9 { prop_assert_eq!(wait, 0.0); }
                sim.step(0, cost, Then::Use(100)).await;
                // Booked at its ready instant (the use, under a millisecond later, counts
                // as on time).
                tokens = (tokens + rate * wait).min(burst as f64) - cost as f64;
                last = now + wait_d;
            }
            Ok(())
        })?;
    }

    /// A reservation dropped before use leaves the state as if it never happened (when
    /// nothing else happened in between): every probe waits exactly as before.
    #[test]
    fn cancelled_reservation_leaves_no_trace(
        sliding in any::<bool>(),
        limit in 1u64..5_000,
        ops in ops(5_000),
        cost in 1u64..5_000,
    ) {
        runtime().block_on(async {
            let sim = Sim::after(sliding, limit, ops).await;
            let cost = cost.min(limit);
            let probes: Vec<u64> = [1, limit / 3, limit / 2, limit].into_iter().filter(|p| *p > 0).collect();
            let mut before = Vec::new();
            for p in &probes { before.push(sim.h.wait_time(&[(KEY, *p)]).await.unwrap()); }
            let r = sim.h.reserve(&[(KEY, cost)], None).await.unwrap();
            drop(r);
            for (p, b) in probes.iter().zip(&before) {
                prop_assert_eq!(sim.h.wait_time(&[(KEY, *p)]).await.unwrap(), *b);
            }
            Ok(())
        })?;
    }

    /// The fast path (everything fits now) and the planned path agree: `take` books
    /// exactly when `wait_time` says zero, and otherwise declines naming the same wait
    /// and changing nothing; with or without a learned statement (a phantom usage).
    #[test]
    fn take_agrees_with_the_planned_wait(
        sliding in any::<bool>(),
        limit in 1u64..5_000,
        ops in ops(5_000),
        costs in prop::collection::vec(1u64..5_000, 1..8),
        learned in prop::option::of((0u64..5_000, 1u64..120)),
    ) {
        runtime().block_on(async {
            let sim = Sim::after(sliding, limit, ops).await;
            if let Some((used, reset)) = learned {
                sim.h.learn(KEY.dimension, &crate::headers::DimensionLimit {
                    limit: None,
                    remaining: Some(limit.saturating_sub(used)),
                    reset: Some(Duration::from_secs(reset)),
                    window: None,
                });
            }
            for cost in costs {
                let cost = cost.min(limit);
                let wait = sim.h.wait_time(&[(KEY, cost)]).await.unwrap();
                match sim.h.take(&[(KEY, cost)]).await {
                    Ok(c) => {
                        prop_assert_eq!(wait, Duration::ZERO);
                        prop_assert_eq!(c.receipt().cost(KEY.dimension), cost);
                    }
                    Err(ReserveError::WaitTooLong(e)) => {
                        prop_assert!(wait > Duration::ZERO);
                        prop_assert_eq!(e.wait, wait);
                        prop_assert_eq!(sim.h.wait_time(&[(KEY, cost)]).await.unwrap(), wait);
                    }
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
            Ok(())
        })?;
    }

    /// A bare receipt ([`ScopeHandle::try_take`], adjusted and redated through the
    /// handle) does exactly what a [`Committed`] does ([`ScopeHandle::take`]): two scopes
    /// given the same steps hold the same state and receipts after every step. And its
    /// refunds never create capacity beyond the limit: without debits or redates, any
    /// window admits at most the limit (sliding window) or limit + burst (GCRA) of what
    /// was really used.
    #[test]
    fn a_bare_receipt_adjusts_exactly_like_a_committed_one(
        sliding in any::<bool>(),
        limit in 1u64..5_000,
        steps in prop::collection::vec((0u64..20_000, 0u8..4, 1u64..5_000, 0usize..8, 0u64..150), 1..40),
    ) {
        const RPM: BucketKey = BucketKey::REQUESTS_PER_MINUTE;
        runtime().block_on(async {
            let quota = if sliding {
                Quota::sliding_window(limit, WINDOW)
            } else {
                Quota::gcra(limit, WINDOW)
            };
            // The same quotas set in the same order (receipts name buckets and changes).
            let a = LimitState::new().handle(&Scope::new("p"));
            a.set_quota(KEY, quota).unwrap();
            let mut b = Sim::new(quota);
            for h in [&a, &b.h] {
                h.set_quota(RPM, Quota::gcra(20, WINDOW)).unwrap();
            }
            let (mut committed, mut taken) = (Vec::new(), Vec::new());
            // Per take: where its admission is in `b.admitted`.
            let mut at = Vec::new();
            let mut plain = true;
            for (dt, kind, cost, i, pct) in steps {
                tokio::time::advance(Duration::from_millis(dt)).await;
                let i = i % committed.len().max(1);
                let costs = [(RPM, 1), (KEY, cost.min(limit))];
                match kind {
                    0 => match (a.take(&costs).await, b.h.try_take(&costs)) {
                        (Ok(c), Some(Ok(t))) => {
                            prop_assert_eq!(c.receipt(), t.receipt());
                            let now = Instant::now().duration_since(b.t0).as_nanos() as u64;
                            at.push(b.admitted.len());
                            b.admitted.push((now, cost.min(limit)));
                            committed.push(c);
                            taken.push(t);
                        }
                        (Err(x), Some(Err(y))) => prop_assert_eq!(x, y),
                        (x, y) => prop_assert!(false, "{x:?} / {y:?}"),
                    },
                    _ if committed.is_empty() => {}
                    1 | 3 => {
                        let before = committed[i].receipt().cost(KEY.dimension);
                        let actual = before * pct / 100;
                        plain &= actual <= before;
                        if kind == 1 {
                            committed[i].adjust(KEY, actual);
                            b.h.adjust(&mut taken[i], KEY, actual);
                        } else {
                            committed[i].adjust_dimension(KEY.dimension, actual);
                            b.h.adjust_dimension(&mut taken[i], KEY.dimension, actual);
                        }
                        b.admitted[at[i]].1 = actual;
                    }
                    _ => {
                        plain = false;
                        let now = Instant::now();
                        committed[i].sent_at(now);
                        b.h.sent_at(&mut taken[i], now);
                    }
                }
                for (c, t) in committed.iter().zip(&taken) {
                    prop_assert_eq!(c.receipt(), t.receipt());
                }
                for (key, most) in [(KEY, limit), (RPM, 20)] {
                    prop_assert_eq!(a.used(key), b.h.used(key));
                    for probe in [1, most / 2 + 1, most] {
                        let probe = [(key, probe)];
                        prop_assert_eq!(
                            a.wait_time(&probe).await.unwrap(),
                            b.h.wait_time(&probe).await.unwrap()
                        );
                    }
                }
            }
            if plain {
                let max = b.max_in_window(WINDOW, !sliding);
                let most = if sliding { limit } else { 2 * limit };
                prop_assert!(max <= most, "admitted {max} in a window, at most {most}");
            }
            Ok(())
        })?;
    }
}
