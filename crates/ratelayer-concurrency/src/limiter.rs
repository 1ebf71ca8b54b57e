//! The limiter of one scope: concurrency permits handed out FIFO per priority class
//! through a bounded queue, plus the start-time booking of the [`Pacer`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ratelayer_core::{QueueFull, Scope};
use tokio::time::Instant;

use crate::config::{Limits, WhenFull};
use crate::pacer::{Pacer, Window};
use crate::priority::Priority;

#[derive(Debug)]
struct Entry {
    id: u64,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Inner {
    max: usize,
    in_flight: usize,
    queue_capacity: usize,
    when_full: WhenFull,
    streak_limit: u32,
    high_streak: u32,
    high: VecDeque<Entry>,
    normal: VecDeque<Entry>,
    /// Waiters that were handed a permit and have not collected it yet.
    granted: Vec<u64>,
    next_id: u64,
    pacer: Pacer,
}

impl Inner {
    fn queued(&self) -> usize {
        self.high.len() + self.normal.len()
    }

    /// Hands out permits while there is room: high priority first, but never more than
    /// `streak_limit` high ones in a row while normal requests wait.
    fn dispatch(&mut self) {
        while self.in_flight < self.max {
            let take_normal = !self.normal.is_empty()
                && (self.high.is_empty() || self.high_streak >= self.streak_limit);
            let entry = if take_normal {
                self.high_streak = 0;
                self.normal.pop_front()
            } else {
                let e = self.high.pop_front();
                if e.is_some() && !self.normal.is_empty() {
                    self.high_streak += 1;
                }
                e
            };
            let Some(entry) = entry else { return };
            self.in_flight += 1;
            self.granted.push(entry.id);
            if let Some(w) = entry.waker {
                w.wake();
            }
        }
    }

    fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.dispatch();
    }
}

/// What a scope's limiter and queue look like now.
///
/// ```
/// use ratelayer_concurrency::ScopeStats;
/// let s = ScopeStats::default();
/// assert_eq!((s.in_flight, s.queued), (0, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeStats {
    /// Requests holding a permit (in flight, or booked to start).
    pub in_flight: usize,
    /// Requests waiting for a permit.
    pub queued: usize,
    /// The maximum of concurrent requests (`None`: unlimited).
    pub max_concurrent: Option<usize>,
    /// How long a request would wait now for the reservoir and spacing (not counting the
    /// queue or a cooldown).
    pub pacing_wait: Duration,
}

/// The limiter of one scope, shared by every clone of the layer's services.
#[derive(Debug)]
pub(crate) struct ScopeLimiter {
    scope: Scope,
    inner: Mutex<Inner>,
}

pub(crate) enum Admit {
    Now(Permit),
    Queued(Waiter),
}

impl ScopeLimiter {
    pub(crate) fn new(scope: Scope, limits: &Limits) -> Self {
        let mut inner = Inner {
            max: usize::MAX,
            in_flight: 0,
            queue_capacity: usize::MAX,
            when_full: WhenFull::Wait,
            streak_limit: 1,
            high_streak: 0,
            high: VecDeque::new(),
            normal: VecDeque::new(),
            granted: Vec::new(),
            next_id: 0,
            pacer: Pacer::new(limits),
        };
        apply(&mut inner, limits);
        ScopeLimiter {
            scope,
            inner: Mutex::new(inner),
        }
    }

    pub(crate) fn scope(&self) -> &Scope {
        &self.scope
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the counters consistent before it can panic, so a
        // poisoned lock is still usable (and the request path must not panic).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies new limits: a raised maximum admits queued requests at once; a lowered one
    /// takes effect as in-flight requests finish.
    pub(crate) fn reconfigure(&self, limits: &Limits) {
        let mut g = self.lock();
        apply(&mut g, limits);
        g.pacer.configure(limits);
        g.dispatch();
    }

    pub(crate) fn set_learned(&self, learned: Option<Window>) {
        let mut g = self.lock();
        if g.pacer.set_learned(learned) {
            tracing::debug!(
                scope = %self.scope,
                limit = learned.map(|w| w.limit),
                interval_secs = learned.map(|w| w.interval.as_secs_f64()),
                "request limit learned from the provider"
            );
        }
    }

    pub(crate) fn stats(&self) -> ScopeStats {
        let g = self.lock();
        ScopeStats {
            in_flight: g.in_flight,
            queued: g.queued(),
            max_concurrent: (g.max != usize::MAX).then_some(g.max),
            pacing_wait: g.pacer.wait(Instant::now()),
        }
    }

    /// A permit at once if one is free and nobody waits; otherwise a place in the queue,
    /// or [`QueueFull`] when the queue is full and the scope is set to fail.
    pub(crate) fn acquire(self: &Arc<Self>, priority: Priority) -> Result<Admit, QueueFull> {
        let mut g = self.lock();
        if g.in_flight < g.max && g.queued() == 0 {
            g.in_flight += 1;
            drop(g);
            return Ok(Admit::Now(Permit {
                limiter: self.clone(),
            }));
        }
        let queued = g.queued();
        if queued >= g.queue_capacity {
            if g.when_full == WhenFull::Fail {
                let capacity = g.queue_capacity;
                drop(g);
                tracing::warn!(
                    scope = %self.scope,
                    capacity,
                    "queue full: request rejected"
                );
                return Err(QueueFull {
                    scope: self.scope.clone(),
                    capacity,
                });
            }
            tracing::debug!(
                scope = %self.scope,
                capacity = g.queue_capacity,
                queued,
                "queue full: request waits behind it"
            );
        }
        let id = g.next_id;
        g.next_id = g.next_id.wrapping_add(1);
        let entry = Entry { id, waker: None };
        match priority {
            Priority::High => g.high.push_back(entry),
            Priority::Normal => g.normal.push_back(entry),
        }
        let (in_flight, max) = (g.in_flight, g.max);
        drop(g);
        tracing::debug!(
            scope = %self.scope,
            priority = priority.as_str(),
            position = queued + 1,
            in_flight,
            max_concurrent = max,
            "request queued for a concurrency permit"
        );
        Ok(Admit::Queued(Waiter {
            limiter: self.clone(),
            id,
            done: false,
        }))
    }
}

fn apply(inner: &mut Inner, limits: &Limits) {
    inner.max = limits.max_concurrent.map_or(usize::MAX, |n| n as usize);
    inner.queue_capacity = limits.queue_capacity.unwrap_or(usize::MAX);
    inner.when_full = limits.when_full;
    inner.streak_limit = limits.high_priority_streak.max(1);
}

/// A place in a scope's queue. Dropping it leaves the queue (or gives back a permit that
/// was handed to it but not collected).
#[derive(Debug)]
pub(crate) struct Waiter {
    limiter: Arc<ScopeLimiter>,
    id: u64,
    done: bool,
}

impl Waiter {
    pub(crate) fn poll_acquire(&mut self, cx: &mut Context<'_>) -> Poll<Permit> {
        if self.done {
            // Never reached by the layer (it drops the waiter once it has its permit).
            return Poll::Pending;
        }
        let mut g = self.limiter.lock();
        if let Some(i) = g.granted.iter().position(|id| *id == self.id) {
            g.granted.swap_remove(i);
            drop(g);
            self.done = true;
            return Poll::Ready(Permit {
                limiter: self.limiter.clone(),
            });
        }
        let id = self.id;
        let inner = &mut *g;
        if let Some(e) = inner
            .high
            .iter_mut()
            .chain(inner.normal.iter_mut())
            .find(|e| e.id == id)
        {
            match &mut e.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut g = self.limiter.lock();
        let id = self.id;
        if let Some(i) = g.granted.iter().position(|x| *x == id) {
            g.granted.swap_remove(i);
            g.release();
            return;
        }
        if let Some(i) = g.high.iter().position(|e| e.id == id) {
            g.high.remove(i);
        } else if let Some(i) = g.normal.iter().position(|e| e.id == id) {
            g.normal.remove(i);
        }
        drop(g);
        tracing::debug!(scope = %self.limiter.scope, "queued request cancelled: left the queue");
    }
}

/// A concurrency permit of one scope, given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    limiter: Arc<ScopeLimiter>,
}

impl Permit {
    /// Books this request's start with the scope's pacer (at `now` if nothing paces).
    pub(crate) fn book(&self, now: Instant) -> Booking {
        let mut g = self.limiter.lock();
        if g.pacer.is_idle() {
            return Booking { at: now, used: true };
        }
        let at = g.pacer.book(now);
        Booking { at, used: false }
    }

    /// Gives back a booking that was not used.
    pub(crate) fn unbook(&self, booking: &mut Booking) {
        if !booking.used {
            booking.used = true;
            self.limiter.lock().pacer.unbook(booking.at);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.lock().release();
    }
}

/// A booked start instant. Not RAII by itself (the permit that made it gives it back, see
/// [`Permit::unbook`]), so it costs nothing when nothing paces.
#[derive(Debug)]
pub(crate) struct Booking {
    pub(crate) at: Instant,
    pub(crate) used: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn limiter(limits: Limits) -> Arc<ScopeLimiter> {
        Arc::new(ScopeLimiter::new(Scope::new("p"), &limits))
    }

    fn poll(w: &mut Waiter) -> Option<Permit> {
        let mut cx = Context::from_waker(Waker::noop());
        match w.poll_acquire(&mut cx) {
            Poll::Ready(p) => Some(p),
            Poll::Pending => None,
        }
    }

    fn queued(l: &Arc<ScopeLimiter>, p: Priority) -> Waiter {
        match l.acquire(p).unwrap() {
            Admit::Queued(w) => w,
            Admit::Now(_) => panic!("expected to queue"),
        }
    }

    #[test]
    fn fifo_and_priority_without_starvation() {
        let l = limiter(Limits::new().max_concurrent(1).high_priority_streak(2));
        let Admit::Now(first) = l.acquire(Priority::Normal).unwrap() else {
            panic!()
        };
        let mut n1 = queued(&l, Priority::Normal);
        let mut n2 = queued(&l, Priority::Normal);
        let mut hs: Vec<_> = (0..3).map(|_| queued(&l, Priority::High)).collect();
        drop(first);
        // high, high, then a normal one (streak of 2), then high again
        let p = poll(&mut hs[0]).unwrap();
        assert!(poll(&mut n1).is_none());
        drop(p);
        let p = poll(&mut hs[1]).unwrap();
        drop(p);
        assert!(poll(&mut hs[2]).is_none());
        let p = poll(&mut n1).unwrap();
        drop(p);
        let p = poll(&mut hs[2]).unwrap();
        drop(p);
        let p = poll(&mut n2).unwrap();
        assert_eq!(l.stats().in_flight, 1);
        drop(p);
        assert_eq!(
            l.stats(),
            ScopeStats {
                in_flight: 0,
                queued: 0,
                max_concurrent: Some(1),
                pacing_wait: Duration::ZERO,
            }
        );
    }

    #[test]
    fn dropped_waiters_leave_and_granted_permits_return() {
        let l = limiter(Limits::new().max_concurrent(1));
        let Admit::Now(first) = l.acquire(Priority::Normal).unwrap() else {
            panic!()
        };
        let a = queued(&l, Priority::Normal);
        let mut b = queued(&l, Priority::Normal);
        assert_eq!(l.stats().queued, 2);
        drop(first); // granted to `a`, which never collects it
        drop(a);
        assert_eq!(l.stats().in_flight, 1, "passed on to b");
        assert!(poll(&mut b).is_some());
        assert_eq!(l.stats().in_flight, 0);
    }

    #[test]
    fn queue_bound_fails_or_waits() {
        let l = limiter(
            Limits::new()
                .max_concurrent(1)
                .queue_capacity(1)
                .when_full(WhenFull::Fail),
        );
        let _p = l.acquire(Priority::Normal).unwrap();
        let _w = queued(&l, Priority::Normal);
        let err = l.acquire(Priority::High).err().unwrap();
        assert_eq!(err.capacity, 1);
        l.reconfigure(
            &Limits::new()
                .max_concurrent(1)
                .queue_capacity(1)
                .when_full(WhenFull::Wait),
        );
        let _w2 = queued(&l, Priority::Normal);
        assert_eq!(l.stats().queued, 2);
    }

    #[test]
    fn resize_up_admits_and_down_waits_for_holders() {
        let l = limiter(Limits::new().max_concurrent(1));
        let Admit::Now(p1) = l.acquire(Priority::Normal).unwrap() else {
            panic!()
        };
        let mut w: Vec<_> = (0..3).map(|_| queued(&l, Priority::Normal)).collect();
        l.reconfigure(&Limits::new().max_concurrent(3));
        let mut got: Vec<_> = w.iter_mut().filter_map(poll).collect();
        assert_eq!(got.len(), 2);
        l.reconfigure(&Limits::new().max_concurrent(1));
        assert_eq!(l.stats().in_flight, 3, "lowering cancels nothing");
        drop(p1);
        got.pop();
        assert!(poll(&mut w[2]).is_none(), "still 1 in flight of 1");
        got.pop();
        assert!(poll(&mut w[2]).is_some());
    }
}
