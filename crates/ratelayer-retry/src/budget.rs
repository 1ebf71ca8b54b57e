//! The retry budget: retries may be at most a share of the requests of a recent window,
//! plus a floor per second. tower's `TpsBudget` algorithm (ten slots over the window),
//! with the clock read passed in, so a deposit (every request) costs an atomic load and
//! an add when the current slot is still open, and no lock or clock read of its own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Slots per window.
const SLOTS: usize = 10;

pub(crate) struct RetryBudget {
    /// The instant nanosecond offsets count from.
    epoch: Instant,
    /// When the open slot began, in nanoseconds since `epoch`.
    opened: AtomicU64,
    /// The index of the open slot (the lock is taken only to close it).
    index: Mutex<usize>,
    /// The closed slots' balances.
    slots: [AtomicIsize; SLOTS],
    /// The open slot's balance.
    writer: AtomicIsize,
    /// One slot's length, in nanoseconds.
    slot_nanos: u64,
    reserve: isize,
    deposit_amount: isize,
    withdraw_amount: isize,
}

impl RetryBudget {
    /// Retries may be `percent` (0 to 1000) of the requests of the last `ttl` (1 to 60 s),
    /// plus `min_per_sec` per second (validated by the builder).
    pub(crate) fn new(ttl: Duration, min_per_sec: u32, percent: f32, now: Instant) -> Self {
        let (deposit_amount, withdraw_amount) = if percent <= 0.0 {
            (0, 1)
        } else if percent <= 1.0 {
            (1, (1.0 / percent) as isize)
        } else {
            (1000, (1000.0 / percent) as isize)
        };
        let reserve = (min_per_sec as isize)
            .saturating_mul(ttl.as_secs() as isize)
            .saturating_mul(withdraw_amount);
        RetryBudget {
            epoch: now,
            opened: AtomicU64::new(0),
            index: Mutex::new(0),
            slots: std::array::from_fn(|_| AtomicIsize::new(0)),
            writer: AtomicIsize::new(0),
            slot_nanos: u64::try_from((ttl / SLOTS as u32).as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            reserve,
            deposit_amount,
            withdraw_amount,
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Closes the open slot (and any wholly elapsed since) when its time is up.
    fn expire(&self, now: Instant) {
        let n = self.nanos(now);
        if n.saturating_sub(self.opened.load(Ordering::Acquire)) < self.slot_nanos {
            return;
        }
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let mut diff = n.saturating_sub(self.opened.load(Ordering::Acquire));
        if diff < self.slot_nanos {
            return; // another caller closed it meanwhile
        }
        let closed = self.writer.swap(0, Ordering::AcqRel);
        self.slots[*index].store(closed, Ordering::Release);
        let mut idx = (*index + 1) % SLOTS;
        let mut cleared = 0;
        while diff > self.slot_nanos && cleared < SLOTS {
            self.slots[idx].store(0, Ordering::Release);
            diff -= self.slot_nanos;
            idx = (idx + 1) % SLOTS;
            cleared += 1;
        }
        *index = idx;
        self.opened.store(n, Ordering::Release);
    }

    fn sum(&self) -> isize {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .fold(self.writer.load(Ordering::Acquire), isize::saturating_add)
            .saturating_add(self.reserve)
    }

    /// A request was made at `now`.
    #[inline]
    pub(crate) fn deposit(&self, now: Instant) {
        self.expire(now);
        self.writer.fetch_add(self.deposit_amount, Ordering::AcqRel);
    }

    /// Takes the cost of one retry at `now`, if the budget has it.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        self.expire(now);
        if self.sum() >= self.withdraw_amount {
            self.writer
                .fetch_sub(self.withdraw_amount, Ordering::AcqRel);
            true
        } else {
            false
        }
    }
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("deposit", &self.deposit_amount)
            .field("withdraw", &self.withdraw_amount)
            .field("balance", &self.sum())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_budget_without_a_floor_refuses() {
        let b = RetryBudget::new(Duration::from_secs(1), 0, 1.0, Instant::now());
        assert!(!b.withdraw(Instant::now()));
    }

    #[test]
    fn deposits_leave_the_window_after_ttl() {
        let t0 = Instant::now();
        let b = RetryBudget::new(Duration::from_secs(1), 0, 1.0, t0);
        b.deposit(t0);
        assert!(!b.withdraw(t0 + Duration::from_secs(3)));
        let b = RetryBudget::new(Duration::from_secs(1), 0, 1.0, t0);
        b.deposit(t0);
        assert!(b.withdraw(t0 + Duration::from_millis(500)));
        assert!(
            !b.withdraw(t0 + Duration::from_millis(500)),
            "one deposit, one retry"
        );
    }

    #[test]
    fn a_share_of_requests_may_be_retried() {
        let t0 = Instant::now();
        // 20 %: five requests earn one retry.
        let b = RetryBudget::new(Duration::from_secs(10), 0, 0.2, t0);
        for _ in 0..4 {
            b.deposit(t0);
        }
        assert!(!b.withdraw(t0));
        b.deposit(t0);
        assert!(b.withdraw(t0));
        assert!(!b.withdraw(t0));
    }

    #[test]
    fn the_floor_allows_retries_per_second_without_requests() {
        let t0 = Instant::now();
        let b = RetryBudget::new(Duration::from_secs(10), 1, 0.0, t0);
        // 1 per second over 10 s: ten retries, then none.
        for _ in 0..10 {
            assert!(b.withdraw(t0));
        }
        assert!(!b.withdraw(t0));
    }

    #[test]
    fn deposits_across_slots_add_up_within_the_window() {
        let t0 = Instant::now();
        let b = RetryBudget::new(Duration::from_secs(10), 0, 1.0, t0);
        for s in 0..5 {
            b.deposit(t0 + Duration::from_secs(s));
        }
        let later = t0 + Duration::from_millis(5_500);
        for _ in 0..5 {
            assert!(b.withdraw(later));
        }
        assert!(!b.withdraw(later));
    }
}
