//! Pacing before every attempt, learned from what the provider said.
//!
//! Three rules, per scope, checked before every attempt (the first included):
//!
//! 1. **Probe first.** Until a response for the scope has been seen, one attempt goes
//!    out alone and the others wait for its response (or its failure): nothing is known
//!    about the account yet, so the scope is treated as the most conservative tier. A
//!    snapshot already in the shared [`LimitState`] (published by a layer sharing it)
//!    counts as seen: no probe, and rules 2 and 3 apply from the first attempt.
//! 2. **Remaining 0 → wait for the reset.** If the last snapshot the tier layer
//!    published says no requests remain, wait until that reset.
//! 3. **Learned limit.** With a learned requests limit `L` per window `W` (a minute when
//!    the dialect does not say), at most `L` attempts start in any window of `W` plus a
//!    small margin (the server counts a request a little later than the client starts
//!    it).
//!
//! The cooldown (rule 0, in the future) comes first: after a 429 every queued request of
//! the scope waits for it instead of collecting its own 429.

use std::collections::VecDeque;

use ratelayer_core::ScopeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ratelayer_core::{LimitState, Scope};
use tokio::sync::watch;
use tokio::time::Instant;

/// The most starts remembered per scope; a learned limit above this is not paced here.
const MAX_LOG: u64 = 4096;

#[derive(Debug)]
struct ScopeGate {
    seen: bool,
    probing: bool,
    wake: watch::Sender<u64>,
    starts: VecDeque<Instant>,
}

impl ScopeGate {
    /// Records a start, keeping at most `keep` starts.
    fn record(&mut self, now: Instant, keep: u64) {
        self.starts.push_back(now);
        while self.starts.len() as u64 > keep {
            self.starts.pop_front();
        }
    }

    fn new() -> Self {
        ScopeGate {
            seen: false,
            probing: false,
            wake: watch::Sender::new(0),
            starts: VecDeque::new(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Gate {
    scopes: Mutex<ScopeMap<ScopeGate>>,
}

/// What an attempt may do now.
pub(crate) enum Admit {
    /// Go; with a probe guard when this attempt is the scope's probe.
    Go(Option<ProbeGuard>),
    /// Wait until then, for this reason.
    Until(Instant, &'static str),
    /// Wait for the probe's response.
    Probe(watch::Receiver<u64>),
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, ScopeMap<ScopeGate>> {
        self.scopes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn admit(
        self: &Arc<Self>,
        scope: &Scope,
        state: &LimitState,
        margin: Duration,
        probe: bool,
        now: Instant,
    ) -> Admit {
        // Read the shared state before taking our own lock (no nested locks).
        let observed = state.with_observed(scope, |o| (o.snapshot.requests, o.at));
        let mut map = self.lock();
        // Look up before inserting: no copy of the scope once it is known.
        let g = match map.get_mut(scope) {
            Some(g) => g,
            None => map.entry(scope.clone()).or_insert_with(ScopeGate::new),
        };
        if probe && !g.seen && observed.is_some() {
            // The shared state already holds what a response said (another layer or
            // clone sharing it saw one): the account is known, nothing to probe, and the
            // snapshot's rules below apply to this very first attempt.
            g.seen = true;
        }
        if probe && !g.seen {
            if g.probing {
                return Admit::Probe(g.wake.subscribe());
            }
            g.probing = true;
            g.record(now, MAX_LOG);
            return Admit::Go(Some(ProbeGuard {
                gate: Arc::clone(self),
                scope: scope.clone(),
            }));
        }
        let Some((req, at)) = observed else {
            g.record(now, MAX_LOG);
            return Admit::Go(None);
        };
        if let (Some(0), Some(reset)) = (req.remaining, req.reset) {
            let until = at + reset;
            if until > now {
                return Admit::Until(until, "remaining 0 until reset");
            }
        }
        let Some(limit) = req.limit.filter(|l| (1..=MAX_LOG).contains(l)) else {
            g.record(now, MAX_LOG);
            return Admit::Go(None);
        };
        let window = req.window.unwrap_or(Duration::from_secs(60));
        // Only the `limit` most recent starts matter.
        while g.starts.len() as u64 > limit {
            g.starts.pop_front();
        }
        if g.starts.len() as u64 == limit
            && let Some(oldest) = g.starts.front()
        {
            let free_at = *oldest + window + margin;
            if free_at > now {
                return Admit::Until(free_at, "learned limit");
            }
        }
        g.record(now, limit);
        Admit::Go(None)
    }

    /// A response for `scope` was seen: the scope is known now.
    pub(crate) fn seen(&self, scope: &Scope) {
        let mut map = self.lock();
        if let Some(g) = map.get_mut(scope)
            && !g.seen
        {
            g.seen = true;
            g.wake.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    fn probe_done(&self, scope: &Scope) {
        let mut map = self.lock();
        if let Some(g) = map.get_mut(scope) {
            g.probing = false;
            g.wake.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
}

/// Held by the scope's probe attempt; dropping it (response, error or cancellation) lets
/// the waiters go on.
#[derive(Debug)]
pub(crate) struct ProbeGuard {
    gate: Arc<Gate>,
    scope: Scope,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.gate.probe_done(&self.scope);
    }
}
