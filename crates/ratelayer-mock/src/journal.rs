//! The journal: every request the mock saw, and exact helpers over it for judging a stack.

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use crate::config::FaultKind;

/// One request as the mock saw it.
///
/// ```
/// use http::StatusCode;
/// use ratelayer_core::Dialect;
/// use ratelayer_mock::{ChatRequest, MockProvider};
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockProvider::builder().build().unwrap();
/// let chat = ChatRequest::new("gpt-4o-mini").key("sk-test").user("Hello").max_tokens(10);
/// drop(mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap()); // body dropped: finished
/// let entry = mock.journal().entries()[0].clone();
/// assert_eq!((entry.id, entry.key.as_str(), entry.model.as_str()), (0, "sk-test", "gpt-4o-mini"));
/// assert_eq!(entry.status, Some(StatusCode::OK));
/// assert!(entry.admitted() && entry.finish.is_some());
/// assert_eq!(entry.tokens_charged, chat.tokens(Dialect::OpenAi).charged());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// Arrival index, 0-based, in the order `call` was invoked.
    pub id: u64,
    /// The request's `x-request-id` header, if it had one (to follow a request in tests).
    pub request_id: Option<String>,
    /// The API key (from `authorization: Bearer`, `api-key`, `x-api-key`,
    /// `x-goog-api-key` or `?key=`); empty when none. Never logged.
    pub key: String,
    /// The model (from the body's `model`, or the URL path for Gemini and Azure).
    pub model: String,
    /// Whether the request asked for a stream.
    pub stream: bool,
    /// When `call` was invoked.
    pub arrival: Instant,
    /// When the request was admitted (counted against the limits); `None` if never.
    pub start: Option<Instant>,
    /// When the mock was done with it: the response body ended or was dropped (admitted
    /// requests), the refusal was answered, or the request was cancelled. `None` while in
    /// flight.
    pub finish: Option<Instant>,
    /// Input tokens under the mock's rule (see [`tokens`](crate::tokens)).
    pub input_tokens: u64,
    /// The output allowance (`max_tokens × n`).
    pub output_allowance: u64,
    /// Tokens charged at admission (input + allowance); 0 when not admitted.
    pub tokens_charged: u64,
    /// Completion tokens reported in `usage` (0 when not admitted).
    pub completion_tokens: u64,
    /// What the token window holds for this request now: the admission charge, lowered to
    /// input + completion tokens when the request finished; 0 when not admitted.
    pub tokens: u64,
    /// The status answered; `None` when the connection was closed, the request was
    /// cancelled before an answer, or reading its body failed.
    pub status: Option<StatusCode>,
    /// The fault that applied to this request, if any (recorded when it finished): a
    /// status or quota fault answered, the connection closed, the stream cut, or
    /// [`FaultKind::Latency`] with the total latency the faults added. A fault drawn for a
    /// request that was refused first, or a stream cut drawn for an unstreamed request,
    /// did not apply.
    pub fault: Option<FaultKind>,
}

impl JournalEntry {
    /// Whether the request was admitted (charged against the limits).
    ///
    /// ```
    /// # let j = ratelayer_mock::Journal::default();
    /// assert_eq!(j.entries().iter().filter(|e| e.admitted()).count(), 0);
    /// ```
    pub fn admitted(&self) -> bool {
        self.start.is_some()
    }
}

/// A snapshot of the journal (take one with
/// [`MockProvider::journal`](crate::MockProvider::journal)).
///
/// Windows are half-open like the mock's limits: a window of length `w` ending at `t` holds
/// the admissions in `(t - w, t]`.
///
/// ```
/// use std::time::Duration;
/// let journal = ratelayer_mock::Journal::default();
/// assert_eq!(journal.max_requests_in_window(Duration::from_secs(60)), 0);
/// assert_eq!(journal.rate_limited(), 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Journal {
    entries: Vec<JournalEntry>,
}

impl Journal {
    pub(crate) fn new(entries: Vec<JournalEntry>) -> Self {
        Journal { entries }
    }

    /// Every entry, in arrival order.
    ///
    /// ```
    /// assert!(ratelayer_mock::Journal::default().entries().is_empty());
    /// ```
    pub fn entries(&self) -> &[JournalEntry] {
        &self.entries
    }

    /// How many requests arrived.
    ///
    /// ```
    /// assert_eq!(ratelayer_mock::Journal::default().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no request arrived.
    ///
    /// ```
    /// assert!(ratelayer_mock::Journal::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries for which `keep` is true.
    ///
    /// ```
    /// let j = ratelayer_mock::Journal::default().filter(|e| e.model == "gpt-4o");
    /// assert!(j.is_empty());
    /// ```
    pub fn filter(&self, keep: impl Fn(&JournalEntry) -> bool) -> Journal {
        Journal::new(self.entries.iter().filter(|e| keep(e)).cloned().collect())
    }

    /// The entries of one API key and model (the scope the mock enforces).
    ///
    /// ```
    /// let j = ratelayer_mock::Journal::default().scope("sk-test", "gpt-4o-mini");
    /// assert!(j.is_empty());
    /// ```
    pub fn scope(&self, key: &str, model: &str) -> Journal {
        self.filter(|e| e.key == key && e.model == model)
    }

    /// The most admitted requests in any window of length `w`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(ratelayer_mock::Journal::default().max_requests_in_window(Duration::from_secs(1)), 0);
    /// ```
    pub fn max_requests_in_window(&self, w: Duration) -> u64 {
        self.max_sum_in_window(w, |_| 1)
    }

    /// The most tokens admitted in any window of length `w`, counting each request's
    /// [`tokens`](JournalEntry::tokens) (reconciled to real usage once finished) at its
    /// start: what the mock's tokens-per-minute log holds.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(ratelayer_mock::Journal::default().max_tokens_in_window(Duration::from_secs(60)), 0);
    /// ```
    pub fn max_tokens_in_window(&self, w: Duration) -> u64 {
        self.max_sum_in_window(w, |e| e.tokens)
    }

    /// The most input tokens admitted in any window of length `w` (what the input
    /// tokens-per-minute log holds).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let j = ratelayer_mock::Journal::default();
    /// assert_eq!(j.max_input_tokens_in_window(Duration::from_secs(60)), 0);
    /// ```
    pub fn max_input_tokens_in_window(&self, w: Duration) -> u64 {
        self.max_sum_in_window(w, |e| e.input_tokens)
    }

    /// The most output tokens admitted in any window of length `w`, counting the allowance
    /// of requests still in flight and the real completion tokens of finished ones (what
    /// the output tokens-per-minute log holds).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let j = ratelayer_mock::Journal::default();
    /// assert_eq!(j.max_output_tokens_in_window(Duration::from_secs(60)), 0);
    /// ```
    pub fn max_output_tokens_in_window(&self, w: Duration) -> u64 {
        self.max_sum_in_window(w, |e| {
            if e.finish.is_some() {
                e.completion_tokens
            } else {
                e.output_allowance
            }
        })
    }

    /// The most of `cost(entry)` admitted in any window of length `w`, each admitted
    /// request counted at its start (for input or output tokens, say).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let j = ratelayer_mock::Journal::default();
    /// assert_eq!(j.max_sum_in_window(Duration::from_secs(60), |e| e.input_tokens), 0);
    /// ```
    pub fn max_sum_in_window(&self, w: Duration, cost: impl Fn(&JournalEntry) -> u64) -> u64 {
        let mut starts: Vec<(Instant, u64)> = self
            .entries
            .iter()
            .filter_map(|e| Some((e.start?, cost(e))))
            .collect();
        starts.sort_by_key(|s| s.0);
        let (mut best, mut sum, mut lo) = (0, 0u64, 0);
        for hi in 0..starts.len() {
            sum += starts[hi].1;
            // The window ending at starts[hi] holds the starts after starts[hi] - w.
            while starts[lo].0 + w <= starts[hi].0 {
                sum -= starts[lo].1;
                lo += 1;
            }
            best = best.max(sum);
        }
        best
    }

    /// How many requests were answered with `status`.
    ///
    /// ```
    /// assert_eq!(ratelayer_mock::Journal::default().count_status(http::StatusCode::OK), 0);
    /// ```
    pub fn count_status(&self, status: StatusCode) -> usize {
        self.entries
            .iter()
            .filter(|e| e.status == Some(status))
            .count()
    }

    /// How many 429s were answered (rate limits, concurrency refusals and quota faults).
    ///
    /// ```
    /// assert_eq!(ratelayer_mock::Journal::default().rate_limited(), 0);
    /// ```
    pub fn rate_limited(&self) -> usize {
        self.count_status(StatusCode::TOO_MANY_REQUESTS)
    }

    /// How many requests got each status (requests without an answer are left out).
    ///
    /// ```
    /// assert!(ratelayer_mock::Journal::default().by_status().is_empty());
    /// ```
    pub fn by_status(&self) -> BTreeMap<u16, usize> {
        let mut m = BTreeMap::new();
        for s in self.entries.iter().filter_map(|e| e.status) {
            *m.entry(s.as_u16()).or_insert(0) += 1;
        }
        m
    }

    /// The most admitted requests in flight at once (from start to finish; a request that
    /// finishes at the instant another starts does not overlap it; unfinished requests are
    /// still in flight).
    ///
    /// ```
    /// assert_eq!(ratelayer_mock::Journal::default().max_in_flight(), 0);
    /// ```
    pub fn max_in_flight(&self) -> usize {
        // (time, +1 start / -1 finish); finishes sort before starts at the same instant.
        let mut events: Vec<(Instant, i8)> = Vec::new();
        for e in &self.entries {
            if let Some(s) = e.start {
                events.push((s, 1));
                if let Some(f) = e.finish {
                    events.push((f, -1));
                }
            }
        }
        events.sort();
        let (mut now, mut best) = (0i64, 0i64);
        for (_, d) in events {
            now += i64::from(d);
            best = best.max(now);
        }
        best as usize
    }

    /// The ids of the admitted requests in the order they started (ties by arrival).
    ///
    /// ```
    /// assert!(ratelayer_mock::Journal::default().starts().is_empty());
    /// ```
    pub fn starts(&self) -> Vec<u64> {
        let mut s: Vec<(Instant, u64)> = self
            .entries
            .iter()
            .filter_map(|e| Some((e.start?, e.id)))
            .collect();
        s.sort();
        s.into_iter().map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, start: Option<(u64, u64)>, tokens: u64, base: Instant) -> JournalEntry {
        let at = |ms| base + Duration::from_millis(ms);
        JournalEntry {
            id,
            request_id: None,
            key: "k".into(),
            model: "m".into(),
            stream: false,
            arrival: base,
            start: start.map(|s| at(s.0)),
            finish: start.map(|s| at(s.1)),
            input_tokens: 0,
            output_allowance: 0,
            tokens_charged: tokens,
            completion_tokens: 0,
            tokens,
            status: Some(if start.is_some() {
                StatusCode::OK
            } else {
                StatusCode::TOO_MANY_REQUESTS
            }),
            fault: None,
        }
    }

    #[test]
    fn windows_are_half_open_and_exact() {
        let b = Instant::now();
        let j = Journal::new(vec![
            entry(0, Some((0, 10)), 5, b),
            entry(1, Some((500, 510)), 7, b),
            entry(2, Some((1000, 2000)), 11, b),
            entry(3, None, 0, b),
            entry(4, Some((1000, 1001)), 1, b),
        ]);
        let s = Duration::from_secs(1);
        // (0, 1000] holds 500, 1000, 1000; [0] left at 1000.
        assert_eq!(j.max_requests_in_window(s), 3);
        assert_eq!(j.max_tokens_in_window(s), 7 + 11 + 1);
        assert_eq!(j.max_requests_in_window(Duration::from_millis(1001)), 4);
        assert_eq!(j.max_tokens_in_window(Duration::from_millis(1)), 12);
        assert_eq!(j.rate_limited(), 1);
        assert_eq!(j.by_status()[&200], 4);
        assert_eq!(j.starts(), vec![0, 1, 2, 4]);
    }

    #[test]
    fn in_flight_counts_overlaps_only() {
        let b = Instant::now();
        let j = Journal::new(vec![
            entry(0, Some((0, 100)), 0, b),
            entry(1, Some((100, 200)), 0, b),
            entry(2, Some((150, 160)), 0, b),
            entry(3, Some((160, 300)), 0, b),
        ]);
        assert_eq!(j.max_in_flight(), 2);
        let mut unfinished = entry(4, Some((0, 0)), 0, b);
        unfinished.finish = None;
        let mut all = j.entries().to_vec();
        all.push(unfinished);
        assert_eq!(Journal::new(all).max_in_flight(), 3);
    }

    proptest::proptest! {
        /// The helpers agree with brute force over every possible window end and instant.
        #[test]
        fn helpers_match_brute_force(
            spans in proptest::collection::vec(
                (proptest::option::of((0u64..5_000, 0u64..2_000)), 0u64..50),
                0..60,
            ),
            w_ms in 1u64..3_000,
        ) {
            let b = Instant::now();
            let entries: Vec<JournalEntry> = spans
                .iter()
                .enumerate()
                .map(|(i, (s, tokens))| {
                    entry(i as u64, s.map(|(st, len)| (st, st + len)), *tokens, b)
                })
                .collect();
            let j = Journal::new(entries.clone());
            let w = Duration::from_millis(w_ms);
            let admitted: Vec<&JournalEntry> = entries.iter().filter(|e| e.admitted()).collect();
            let mut best_n = 0;
            let mut best_t = 0;
            for end in admitted.iter().filter_map(|e| e.start) {
                let inside = admitted.iter().filter(|e| {
                    let s = e.start.unwrap_or(end);
                    s <= end && s + w > end
                });
                best_n = best_n.max(inside.clone().count() as u64);
                best_t = best_t.max(inside.map(|e| e.tokens).sum::<u64>());
            }
            proptest::prop_assert_eq!(j.max_requests_in_window(w), best_n);
            proptest::prop_assert_eq!(j.max_tokens_in_window(w), best_t);
            let mut best_f = 0;
            for t in admitted.iter().filter_map(|e| e.start) {
                let n = admitted
                    .iter()
                    .filter(|e| e.start.is_some_and(|s| s <= t) && e.finish.is_none_or(|f| f > t))
                    .count();
                best_f = best_f.max(n);
            }
            proptest::prop_assert_eq!(j.max_in_flight(), best_f);
        }
    }
}
