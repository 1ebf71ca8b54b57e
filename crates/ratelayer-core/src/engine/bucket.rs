//! The state of one bucket and its two algorithms, on integer nanoseconds since the
//! store's epoch. Constant memory: GCRA keeps one timestamp, the sliding window a ring of
//! a fixed number of slots allocated when the quota is set.

use super::quota::{Algorithm, BucketKey, Quota};
use super::store::ReceiptItem;

/// Usage a provider counted beyond what this bucket had booked (another client sharing
/// the key, or costs we under-estimated): it counts as used until `until`, the provider's
/// reset (when the provider's window is fully replenished, so this usage has left it).
#[derive(Debug, Clone, Copy)]
struct Phantom {
    amount: u64,
    until: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// First admission time of the slot (also the slot's identity).
    start: u64,
    /// Latest admission time of the slot: its sum counts until `latest + window`.
    latest: u64,
    sum: u64,
}

#[derive(Debug)]
struct Ring {
    entries: Box<[Entry]>,
    head: usize,
    len: usize,
    /// The latest booked admission time: bookings are in non-decreasing time order (FIFO).
    last: u64,
    /// The sum of every entry's `sum`.
    total: u64,
}

impl Ring {
    fn new(slots: u32) -> Self {
        Ring {
            entries: vec![Entry::default(); slots as usize].into_boxed_slice(),
            head: 0,
            len: 0,
            last: 0,
            total: 0,
        }
    }

    /// Takes up to `amount` from entry `j` (an index into `entries`).
    fn take(&mut self, j: usize, amount: u64) {
        let e = &mut self.entries[j];
        let taken = amount.min(e.sum);
        e.sum -= taken;
        self.total = self.total.saturating_sub(taken);
    }

    #[inline]
    fn cap(&self) -> usize {
        self.entries.len()
    }

    #[inline]
    fn idx(&self, i: usize) -> usize {
        // `head < cap` and `i <= cap`: one conditional subtraction, no division.
        let j = self.head + i;
        if j >= self.cap() { j - self.cap() } else { j }
    }

    #[inline]
    fn get(&self, i: usize) -> &Entry {
        &self.entries[self.idx(i)]
    }

    #[inline]
    fn tail_mut(&mut self) -> Option<&mut Entry> {
        if self.len == 0 {
            return None;
        }
        let i = self.idx(self.len - 1);
        Some(&mut self.entries[i])
    }

    /// Drops entries that no admission at or after `t` can see.
    #[inline]
    fn expire(&mut self, t: u64, window: u64) {
        while self.len > 0 && self.entries[self.head].latest.saturating_add(window) <= t {
            self.total = self.total.saturating_sub(self.entries[self.head].sum);
            self.head = self.idx(1);
            self.len -= 1;
        }
    }

    /// What counts at `t`: the total less the expired entries at the head (an expired
    /// entry behind a live one still counts: conservative). Amortized O(1).
    #[inline]
    fn live_sum(&self, t: u64, window: u64) -> u64 {
        let mut sum = self.total;
        for i in 0..self.len {
            let e = self.get(i);
            if e.latest.saturating_add(window) > t {
                break;
            }
            sum = sum.saturating_sub(e.sum);
        }
        sum
    }

    /// What was admitted at or before `t` and is still in the window: bookings queued for
    /// later are left out, except those merged into a slot that started by `t` (at most
    /// one slot's width ahead).
    fn admitted_sum(&self, t: u64, window: u64) -> u64 {
        let mut sum = 0u64;
        for i in 0..self.len {
            let e = self.get(i);
            if e.start > t {
                break;
            }
            if e.latest.saturating_add(window) > t {
                sum = sum.saturating_add(e.sum);
            }
        }
        sum
    }

    /// The earliest time at or after `t0` (`t0 >= last`) when `need` more fits under
    /// `limit`, or `None` if it never does. Conservative at slot granularity.
    fn earliest(&self, t0: u64, window: u64, limit: u64, need: u64) -> Option<u64> {
        if need > limit {
            return None;
        }
        let used = self.live_sum(t0, window);
        if used.saturating_add(need) <= limit {
            return Some(t0);
        }
        let mut left = used;
        let mut at = t0;
        for i in 0..self.len {
            let e = self.get(i);
            let end = e.latest.saturating_add(window);
            if end <= t0 {
                continue;
            }
            left = left.saturating_sub(e.sum);
            at = at.max(end);
            if left.saturating_add(need) <= limit {
                break;
            }
        }
        Some(at)
    }

    /// Records `amount` admitted at `at` (`at >= last`): merged into the newest slot if
    /// `at` falls within its width (or the ring is full: conservative), else in a new
    /// slot. Returns the slot's identity (start), its previous latest time, and whether
    /// the slot is new.
    #[inline]
    fn record(
        &mut self,
        at: u64,
        amount: u64,
        now: u64,
        window: u64,
        width: u64,
    ) -> (u64, u64, bool) {
        self.expire(now, window);
        self.last = self.last.max(at);
        let full = self.len == self.cap();
        self.total = self.total.saturating_add(amount);
        match self.tail_mut() {
            Some(e) if at < e.start.saturating_add(width) || full => {
                let prev = (e.start, e.latest, false);
                e.latest = e.latest.max(at);
                e.sum = e.sum.saturating_add(amount);
                prev
            }
            _ => {
                let j = self.idx(self.len);
                self.entries[j] = Entry {
                    start: at,
                    latest: at,
                    sum: amount,
                };
                self.len += 1;
                (at, at, true)
            }
        }
    }

    /// Moves `amount` booked in the slot identified by `from` (its start) to the instant
    /// `at` (later than `from`, possibly before later bookings): into the slot covering
    /// `at`, else into the first slot starting after `at` (it counts a little longer:
    /// conservative), else into a new slot at the tail. Returns the identity of the slot
    /// that holds it now (`from` when the slot is gone: nothing to move).
    fn move_to(&mut self, from: u64, amount: u64, at: u64, window: u64) -> u64 {
        let width = (window / self.cap() as u64).max(1);
        let Some(i) = (0..self.len).find(|&i| self.get(i).start == from) else {
            return from;
        };
        let j = self.idx(i);
        let taken = amount.min(self.entries[j].sum);
        self.entries[j].sum -= taken;
        let (len, full) = (self.len, self.len == self.cap());
        for k in i..len {
            let j = self.idx(k);
            let e = &mut self.entries[j];
            let covers = at < e.start.saturating_add(width);
            // The tail takes it when the ring is full or `at` is not after its latest.
            if covers || k + 1 == len && (full || at <= e.latest) {
                e.latest = e.latest.max(at);
                e.sum = e.sum.saturating_add(taken);
                let start = e.start;
                self.last = self.last.max(at);
                return start;
            }
        }
        // After every slot: a new one at the tail.
        let j = self.idx(self.len);
        self.entries[j] = Entry {
            start: at,
            latest: at,
            sum: taken,
        };
        self.len += 1;
        self.last = self.last.max(at);
        at
    }

    /// Rebuilds the ring with `slots` entries, merging the oldest ones if it shrinks
    /// (merging only makes sums count longer: conservative).
    fn resize(&mut self, slots: u32) {
        let mut next = Ring::new(slots);
        next.last = self.last;
        let keep = next.cap();
        let skip = self.len.saturating_sub(keep);
        if skip > 0 {
            // Fold the oldest `skip + 1` entries into one.
            let mut m = *self.get(0);
            for i in 1..=skip {
                let e = self.get(i);
                m.latest = m.latest.max(e.latest);
                m.sum = m.sum.saturating_add(e.sum);
            }
            next.entries[0] = m;
            next.len = 1;
        }
        let from = if skip > 0 { skip + 1 } else { 0 };
        for i in from..self.len {
            let j = next.len;
            next.entries[j] = *self.get(i);
            next.len += 1;
        }
        next.total = self.total;
        *self = next;
    }
}

#[derive(Debug)]
enum State {
    /// Theoretical arrival time, scaled: nanoseconds times the effective limit, so that
    /// a cost of `c` advances it by exactly `c * window_nanos`.
    Gcra {
        tat: u128,
        /// `seq` of the latest booking (or debit): a refund of that one constrains nothing
        /// booked after it. 0 when unknown.
        last_book: u64,
        /// A lower bound of the slack (`tat` before it minus its admission time, scaled)
        /// of every booking since the bucket was last full, except the first: a refund of
        /// a booking that others were booked after may not exceed it, or those later
        /// bookings (whose instants are fixed) would have been admitted on refill that a
        /// full bucket could not hold.
        min_slack: u128,
    },
    Sliding(Ring),
}

/// One bucket of a scope. What a booking writes (`seq`, `undo`, `state`) comes first, in
/// one cache line of its own; the configuration after it is only read on the hot path.
/// Under contention, a booking then moves one line of each bucket between cores, not
/// every line the bucket spans.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Bucket {
    /// Bumped on every change; a receipt whose `seq` equals it is the last change and
    /// can be undone exactly.
    seq: u64,
    /// How to undo the latest booking exactly, while it is the bucket's last change
    /// (`seq` unchanged): GCRA, how far it moved the start past the previous `tat`;
    /// sliding window, the slot's previous latest time, or [`CREATED`].
    undo: u64,
    state: State,
    pub(crate) key: BucketKey,
    /// Identifies the bucket in receipts (a re-created bucket gets a new id).
    pub(crate) id: u16,
    quota: Quota,
    /// The window in nanoseconds (cached from `quota`).
    win: u64,
    /// The width of a sliding window's slot in nanoseconds (cached; 0 for GCRA).
    width: u64,
    /// The effective limit (cached [`limit`](Self::limit)).
    lim: u64,
    /// The effective capacity (cached [`capacity`](Self::capacity)).
    cap: u64,
    /// GCRA: the window divided by the limit when that is a whole number of nanoseconds
    /// (one unit's refill time), else 0; a booking then needs no division.
    unit_ns: u64,
    /// GCRA: the capacity times the window (cached for the fit test).
    cap_w: u128,
    /// The first word of this bucket's receipt items (its id and dimension; cached).
    head: u64,
    learned_limit: Option<u64>,
    /// The latest statement's usage beyond ours (replaced by each statement).
    phantom: Option<Phantom>,
}

fn window_ns(q: &Quota) -> u64 {
    u64::try_from(q.window.as_nanos()).unwrap_or(u64::MAX)
}

fn div_ceil(a: u128, b: u128) -> u128 {
    a.div_ceil(b.max(1))
}

fn sat64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Tracks the least slack of the bookings since the bucket was last full (the first one
/// excluded: nothing before it can be refunded into the past).
#[inline]
fn note_booking(tat_before: u128, at_l: u128, now_l: u128, min_slack: &mut u128) {
    if tat_before <= now_l {
        *min_slack = u128::MAX;
    } else {
        *min_slack = (*min_slack).min(tat_before.saturating_sub(at_l));
    }
}

/// Marks a sliding-window receipt whose booking opened a new slot.
const CREATED: u64 = u64::MAX;

impl Bucket {
    pub(crate) fn new(key: BucketKey, id: u16, quota: Quota, now: u64) -> Self {
        let state = match quota.algorithm {
            Algorithm::Gcra { .. } => State::Gcra {
                tat: u128::from(now) * u128::from(quota.limit),
                last_book: 0,
                min_slack: 0,
            },
            Algorithm::SlidingWindow { slots } => State::Sliding(Ring::new(slots)),
        };
        let mut b = Bucket {
            key,
            id,
            quota,
            win: 0,
            width: 0,
            lim: 1,
            cap: 1,
            unit_ns: 0,
            cap_w: 0,
            head: ReceiptItem::head_of(id, key.dimension),
            learned_limit: None,
            phantom: None,
            seq: 0,
            undo: 0,
            state,
        };
        b.refresh();
        b
    }

    /// Recomputes what is cached from the quota, the learned limit and the ring's size.
    fn refresh(&mut self) {
        self.win = window_ns(&self.quota);
        self.width = match &self.state {
            State::Gcra { .. } => 0,
            State::Sliding(ring) => (self.win / ring.cap() as u64).max(1),
        };
        self.lim = self
            .learned_limit
            .map_or(self.quota.limit, |l| l.min(self.quota.limit))
            .max(1);
        self.cap = match self.quota.algorithm {
            Algorithm::Gcra { burst } => self.learned_limit.map_or(burst, |l| burst.min(l.max(1))),
            Algorithm::SlidingWindow { .. } => self.lim,
        };
        self.cap_w = u128::from(self.cap) * u128::from(self.win);
        self.unit_ns = if self.win.is_multiple_of(self.lim) {
            self.win / self.lim
        } else {
            0
        };
    }

    pub(crate) fn quota(&self) -> Quota {
        self.quota
    }

    /// The configured limit, tightened by what the provider said.
    #[inline]
    pub(crate) fn limit(&self) -> u64 {
        self.lim
    }

    #[inline]
    fn window(&self) -> u64 {
        self.win
    }

    /// The most one reservation can ever take.
    #[inline]
    pub(crate) fn capacity(&self) -> u64 {
        self.cap
    }

    /// How many units of memory the state uses (for tests of constant memory).
    pub(crate) fn approx_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + match &self.state {
                State::Gcra { .. } => 0,
                State::Sliding(r) => r.cap() * std::mem::size_of::<Entry>(),
            }
    }

    /// The earliest time at or after `now` when `cost` fits (requires
    /// `cost <= capacity()`). Side-effect free.
    /// What the bucket holds at `now`: booked and not yet refilled (GCRA) or still in
    /// the window (sliding window), bookings queued for later included.
    pub(crate) fn used(&self, now: u64) -> u64 {
        match &self.state {
            State::Gcra { tat, .. } => sat64(div_ceil(
                tat.saturating_sub(u128::from(now) * u128::from(self.limit())),
                u128::from(self.window()),
            )),
            State::Sliding(ring) => ring.live_sum(now, self.window()),
        }
    }

    pub(crate) fn earliest(&self, now: u64, cost: u64) -> u64 {
        let own = self.own_earliest(now, cost).unwrap_or(u64::MAX);
        match self.phantom {
            // The phantom counts until its `until`: fit `cost` beside it before then, or
            // `cost` alone from then on, whichever comes first.
            Some(p) if own < p.until => self
                .own_earliest(now, cost.saturating_add(p.amount))
                .map_or(p.until, |t| t.min(p.until)),
            _ => own,
        }
    }

    /// Whether `cost` fits at `now` (`earliest(now, cost) == now`, and `cost` within the
    /// capacity): the fast path of a reservation, with no division.
    #[inline]
    pub(crate) fn fits_now(&self, now: u64, cost: u64) -> bool {
        let need = match self.phantom {
            // Before its `until` the phantom counts beside `cost` (see `earliest`).
            Some(p) if p.until > now => cost.saturating_add(p.amount),
            _ => cost,
        };
        match &self.state {
            State::Gcra { tat, .. } => {
                let burst = self.capacity();
                if need > burst {
                    return false;
                }
                let w = u128::from(self.window());
                // As in `own_earliest`: `tat + need * w - burst * w <= now * limit`.
                *tat + u128::from(need) * w
                    <= self.cap_w + u128::from(now) * u128::from(self.limit())
            }
            State::Sliding(ring) => {
                let limit = self.limit();
                need <= limit
                    && now >= ring.last
                    && ring.live_sum(now, self.window()).saturating_add(need) <= limit
            }
        }
    }

    /// The earliest time at or after `now` when `need` fits beside our own bookings, or
    /// `None` if it exceeds the capacity.
    fn own_earliest(&self, now: u64, need: u64) -> Option<u64> {
        match &self.state {
            State::Gcra { tat, .. } => {
                let burst = u128::from(self.capacity());
                if u128::from(need) > burst {
                    return None;
                }
                let w = u128::from(self.window());
                let l = u128::from(self.limit());
                let need = (*tat + u128::from(need) * w).saturating_sub(burst * w);
                Some(if need <= u128::from(now) * l {
                    // Fits now: no division on the hot path.
                    now
                } else {
                    sat64(div_ceil(need, l)).max(now)
                })
            }
            State::Sliding(ring) => {
                ring.earliest(now.max(ring.last), self.window(), self.limit(), need)
            }
        }
    }

    /// What was admitted at or before `now` and still counts: what a provider's statement
    /// at `now` can have seen of ours. GCRA cannot tell queued bookings apart and counts
    /// its whole level.
    fn admitted(&self, now: u64) -> u64 {
        match &self.state {
            State::Gcra { .. } => self.used(now),
            State::Sliding(ring) => ring.admitted_sum(now, self.window()),
        }
    }

    /// Books `cost` for admission at `at` (`at >= now`, `at >= earliest(now, cost)`).
    #[inline]
    pub(crate) fn book(&mut self, at: u64, cost: u64, now: u64, out: &mut ReceiptItem) {
        self.seq += 1;
        let data: u64;
        let w = u128::from(self.window());
        let l = u128::from(self.limit());
        let win = self.window();
        let width = self.width;
        let seq = self.seq;
        let unit_ns = self.unit_ns;
        match &mut self.state {
            State::Gcra {
                tat,
                last_book,
                min_slack,
            } => {
                let prev = *tat;
                let at_l = u128::from(at) * l;
                note_booking(prev, at_l, u128::from(now) * l, min_slack);
                *last_book = seq;
                *tat = prev.max(at_l) + u128::from(cost) * w;
                // The booking's end in whole nanoseconds (rounded down: refunds computed
                // from it are never too large), and how far the booking moved the start
                // past the previous `tat` (below one nanosecond when it waited; saturated
                // when the bucket was idle, where any value up to `now` restores the same
                // state). A booking that starts at `at` in a bucket whose unit refills in
                // whole nanoseconds ends at `at + cost * unit` exactly: no division.
                let moved = sat64(*tat - u128::from(cost) * w - prev);
                data = if prev <= at_l && unit_ns != 0 {
                    at.saturating_add(cost.saturating_mul(unit_ns))
                } else {
                    sat64(*tat / l)
                };
                self.undo = moved;
            }
            State::Sliding(ring) => {
                let (start, prev_latest, created) = ring.record(at, cost, now, win, width);
                data = start;
                self.undo = if created { CREATED } else { prev_latest };
            }
        }
        out.set(self.head, cost, seq, data);
    }

    /// Gives back an unused booking. Exact (the bucket is as if the booking never
    /// happened) when nothing else changed the bucket since; otherwise refunds only what
    /// is still outstanding (never creating capacity beyond the limit).
    pub(crate) fn cancel(&mut self, item: &ReceiptItem, now: u64) {
        if item.seq() == self.seq {
            // The booking was the bucket's last change: `undo` is its own.
            self.seq += 1;
            match &mut self.state {
                State::Gcra { tat, last_book, .. } => {
                    let w = u128::from(self.win);
                    *tat -= u128::from(item.cost()) * w + u128::from(self.undo);
                    *last_book = 0;
                }
                State::Sliding(ring) => {
                    let created = self.undo == CREATED;
                    if ring.len > 0 && ring.get(ring.len - 1).start == item.data() {
                        let j = ring.idx(ring.len - 1);
                        ring.take(j, item.cost());
                        if created {
                            ring.entries[j] = Entry::default();
                            ring.len -= 1;
                        } else {
                            ring.entries[j].latest = self.undo;
                        }
                        // The latest booking before this one is now the newest slot's.
                        ring.last = if ring.len > 0 {
                            ring.get(ring.len - 1).latest
                        } else {
                            0
                        };
                    }
                }
            }
        } else {
            self.refund(item, item.cost(), now);
        }
    }

    /// Refunds `amount` of a booking (after the fact): never below an empty bucket.
    fn refund(&mut self, item: &ReceiptItem, amount: u64, now: u64) {
        self.seq += 1;
        let w = u128::from(self.window());
        let l = u128::from(self.limit());
        match &mut self.state {
            State::Gcra {
                tat,
                last_book,
                min_slack,
            } => {
                let floor = u128::from(now) * l;
                let end = (u128::from(item.data()) * l).min(*tat);
                let mut back = (u128::from(amount) * w).min(end.saturating_sub(floor));
                if item.seq() != *last_book {
                    back = back.min(*min_slack);
                    *min_slack -= back;
                }
                *tat -= back;
            }
            State::Sliding(ring) => {
                for i in 0..ring.len {
                    let j = ring.idx(i);
                    if ring.entries[j].start == item.data() {
                        ring.take(j, amount);
                        break;
                    }
                }
            }
        }
    }

    /// Debits `amount` more for a booking already admitted: counted from now (or the
    /// latest booking, whichever is later).
    fn debit(&mut self, amount: u64, now: u64) {
        self.seq += 1;
        let w = u128::from(self.window());
        let l = u128::from(self.limit());
        let win = self.window();
        let width = self.width;
        match &mut self.state {
            State::Gcra {
                tat,
                last_book,
                min_slack,
            } => {
                let now_l = u128::from(now) * l;
                note_booking(*tat, now_l, now_l, min_slack);
                *last_book = 0;
                *tat = (*tat).max(now_l) + u128::from(amount) * w;
            }
            State::Sliding(ring) => {
                let at = now.max(ring.last);
                ring.record(at, amount, now, win, width);
            }
        }
    }

    /// A booking made for `ready` was used at `used` (later): count it from then.
    pub(crate) fn commit_late(&mut self, item: &ReceiptItem, ready: u64, used: u64) {
        if used <= ready {
            return;
        }
        self.seq += 1;
        let l = u128::from(self.limit());
        match &mut self.state {
            State::Gcra { tat, last_book, .. } => {
                let end = u128::from(item.data()) * l;
                *tat = (*tat).max(end + u128::from(used - ready) * l);
                *last_book = 0;
            }
            State::Sliding(ring) => {
                ring.last = ring.last.max(used);
                for i in 0..ring.len {
                    let j = ring.idx(i);
                    if ring.entries[j].start == item.data() {
                        let e = &mut ring.entries[j];
                        e.latest = e.latest.max(used);
                        break;
                    }
                }
            }
        }
    }

    /// A committed booking made for `ready` reached the provider at `sent` (later: it was
    /// held back by an inner layer): count its cost from then, as the provider does. A
    /// sliding window moves the cost to the slot of `sent` (only this booking's, not the
    /// whole slot's it shared); GCRA counts it as [`commit_late`](Self::commit_late).
    pub(crate) fn redate(&mut self, item: &mut ReceiptItem, ready: u64, sent: u64) {
        if sent <= ready {
            return;
        }
        let win = self.window();
        match &mut self.state {
            State::Gcra { .. } => self.commit_late(item, ready, sent),
            State::Sliding(ring) => {
                self.seq += 1;
                // (The bumped `seq` also makes an exact undo impossible: a cancel would
                // refund from the new slot.)
                let slot = ring.move_to(item.data(), item.cost(), sent, win);
                item.set_data(slot);
            }
        }
    }

    /// Changes the booked cost of `item` to `actual`: debits the difference or refunds it.
    pub(crate) fn adjust(&mut self, item: &mut ReceiptItem, actual: u64, now: u64) {
        let cost = item.cost();
        if actual > cost {
            self.debit(actual - cost, now);
        } else if actual < cost {
            self.refund(item, cost - actual, now);
        }
        item.set_cost(actual);
    }

    /// Applies a new quota (hot reload) keeping the state: the outstanding load carries
    /// over, and a larger burst is not granted at once (it refills at the new rate).
    pub(crate) fn reconfigure(&mut self, quota: Quota, now: u64) {
        let old_limit = u128::from(self.limit());
        let old_w = u128::from(self.window());
        let old_cap = u128::from(self.capacity());
        let old = self.quota;
        self.quota = quota;
        self.refresh();
        self.retune(now, old_limit, old_w, old_cap, old);
        self.refresh();
    }

    /// Records what a provider said at `now`. A lower limit tightens the bucket (never
    /// above the configured limit). `remaining` says what the provider counted as used
    /// (its limit, or ours when not stated, less `remaining`): whatever exceeds what we
    /// had admitted by `now` is usage we did not book (another client of the key, or
    /// under-estimated costs) and counts as used until `reset_at` (a window from now when
    /// not stated). Usage we booked ourselves already counts, and leaves our window as it
    /// leaves the provider's, so a statement consistent with our bookings changes
    /// nothing. Each statement replaces the previous one (it states the provider's whole
    /// usage), so repeated statements never stack.
    pub(crate) fn learn(
        &mut self,
        limit: Option<u64>,
        remaining: Option<u64>,
        reset_at: Option<u64>,
        now: u64,
    ) {
        let limit = limit.filter(|l| *l > 0);
        if let Some(l) = limit {
            let old_limit = u128::from(self.limit());
            let old_w = u128::from(self.window());
            let old_cap = u128::from(self.capacity());
            let old = self.quota;
            if self.learned_limit != Some(l) {
                self.learned_limit = Some(l);
                self.refresh();
                self.retune(now, old_limit, old_w, old_cap, old);
            }
        }
        if let Some(r) = remaining {
            let theirs = limit.unwrap_or_else(|| self.limit()).saturating_sub(r);
            let ours = self.admitted(now);
            let until = reset_at.unwrap_or_else(|| now.saturating_add(self.window()));
            self.phantom = match theirs.checked_sub(ours) {
                Some(amount) if amount > 0 && until > now => Some(Phantom { amount, until }),
                _ => None,
            };
        }
    }

    fn retune(&mut self, now: u64, old_limit: u128, old_w: u128, old_cap: u128, old: Quota) {
        self.seq += 1;
        let new_limit = u128::from(self.limit());
        let new_w = u128::from(self.window());
        let new_cap = u128::from(self.capacity());
        let now128 = u128::from(now);
        // Outstanding load in units (what is booked and not yet refilled / expired).
        let load: u128 = match &self.state {
            State::Gcra { tat, .. } => div_ceil(tat.saturating_sub(now128 * old_limit), old_w),
            State::Sliding(ring) => u128::from(ring.live_sum(now, sat64(old_w))),
        };
        match (&mut self.state, self.quota.algorithm) {
            (
                State::Gcra {
                    tat,
                    last_book,
                    min_slack,
                },
                Algorithm::Gcra { .. },
            ) => {
                let extra = new_cap.saturating_sub(old_cap);
                *tat = now128 * new_limit + (load + extra) * new_w;
                // Receipts from before are in the old units: refund them conservatively.
                *last_book = 0;
                *min_slack = 0;
            }
            (State::Sliding(ring), Algorithm::SlidingWindow { slots }) => {
                if !matches!(old.algorithm, Algorithm::SlidingWindow { slots: s } if s == slots) {
                    ring.resize(slots);
                }
            }
            (State::Sliding(_), Algorithm::Gcra { .. }) => {
                self.state = State::Gcra {
                    tat: now128 * new_limit + load * new_w,
                    last_book: 0,
                    min_slack: 0,
                };
            }
            (State::Gcra { .. }, Algorithm::SlidingWindow { slots }) => {
                let mut ring = Ring::new(slots);
                if load > 0 {
                    ring.entries[0] = Entry {
                        start: now,
                        latest: now,
                        sum: sat64(load),
                    };
                    ring.len = 1;
                    ring.last = now;
                    ring.total = sat64(load);
                }
                self.state = State::Sliding(ring);
            }
        }
    }
}

/// The bytes a booking writes at the start of a [`Bucket`] (`seq`, `undo`, `state`).
#[cfg(test)]
pub(crate) fn hot_bytes() -> usize {
    2 * std::mem::size_of::<u64>() + std::mem::size_of::<State>()
}

#[cfg(test)]
mod unit_tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::quota::BucketKey;

    /// The end a booking records, computed without division when a unit refills in whole
    /// nanoseconds, is the end computed by dividing: on an idle bucket and on one booked
    /// ahead, for limits that divide the window and limits that do not.
    #[test]
    fn a_booking_records_its_exact_end_with_or_without_division() {
        for limit in [500u64, 30_000, 7, 60_000_000_000, 1] {
            let q = Quota::gcra(limit, Duration::from_secs(60)).with_burst(limit.max(3));
            let mut b = Bucket::new(BucketKey::REQUESTS_PER_MINUTE, 0, q, 1_000);
            let l = u128::from(b.limit());
            let mut item = ReceiptItem::new(0, crate::Dimension::Requests, 0, 0, 0);
            for (at, cost) in [
                (5_000u64, 1u64),
                (5_000, 2),
                (9_000_000_000, 1),
                (9_000_000_001, 3),
            ] {
                if !b.fits_now(at, cost) {
                    continue;
                }
                b.book(at, cost, at, &mut item);
                let State::Gcra { tat, .. } = &b.state else {
                    unreachable!()
                };
                assert_eq!(item.data(), sat64(*tat / l), "limit {limit}, at {at}");
            }
        }
    }
}
