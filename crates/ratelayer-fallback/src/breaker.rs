//! A circuit breaker per provider.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ratelayer_core::ConfigError;
use tokio::time::Instant;

/// When a provider's circuit opens, and for how long.
///
/// The circuit opens after `consecutive_failures` failures in a row, or when at least
/// `min_calls` outcomes in the current `window` include a share of failures of at least
/// `failure_ratio`. An open circuit skips the provider without waiting for `open_for`;
/// then it is half-open: one request probes the provider (others skip it), and the
/// probe's outcome closes the circuit or opens it again.
///
/// Failures are unexpected ones (5xx, overloaded, transport errors); rate limits, quota
/// and context errors say nothing about the provider's health and are not counted.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_fallback::BreakerConfig;
/// let b = BreakerConfig::default()
///     .consecutive_failures(3)
///     .open_for(Duration::from_secs(10));
/// assert!(b.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    consecutive_failures: u32,
    failure_ratio: f64,
    min_calls: u32,
    window: Duration,
    open_for: Duration,
}

impl Default for BreakerConfig {
    /// 5 consecutive failures, or 50 % of at least 20 outcomes in 60 s; open for 30 s.
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_calls: 20,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(30),
        }
    }
}

impl BreakerConfig {
    /// Opens after this many failures in a row (at least 1).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// # /// The circuit of a provider failing (500) on the calls `fails` says, after `requests`
    /// # /// requests `gap` apart (a second provider takes what it fails).
    /// # async fn circuit_after(config: BreakerConfig, fails: fn(usize) -> bool, requests: usize, gap: Duration) -> CircuitState {
    /// #     let calls = Arc::new(AtomicUsize::new(0));
    /// #     let flaky = tower::service_fn(move |_r: Request<String>| {
    /// #         let n = calls.fetch_add(1, Ordering::SeqCst);
    /// #         let status = if fails(n) { 500 } else { 200 };
    /// #         async move { Ok::<_, Infallible>(Response::builder().status(status).body(String::new()).unwrap()) }
    /// #     });
    /// #     let up = tower::service_fn(|_r: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    /// #     let f = Fallback::builder().provider(Provider::new("flaky", flaky)).provider(Provider::new("up", up))
    /// #         .breaker(config).build().unwrap();
    /// #     for _ in 0..requests {
    /// #         f.clone().oneshot(Request::new(String::new())).await.unwrap();
    /// #         tokio::time::sleep(gap).await;
    /// #     }
    /// #     f.circuit("flaky").unwrap()
    /// # }
    /// # let always = |_: usize| true;
    /// # let every_other = |n: usize| n % 2 == 1;
    /// # let is_open = |c: CircuitState| matches!(c, CircuitState::Open { .. });
    /// // One request to a provider answering 500: it fails, and so does the retry.
    /// let two = BreakerConfig::default().consecutive_failures(2);
    /// assert!(is_open(circuit_after(two, always, 1, Duration::ZERO).await));
    /// // The default (5 in a row) is not reached yet.
    /// assert_eq!(circuit_after(BreakerConfig::default(), always, 1, Duration::ZERO).await, CircuitState::Closed);
    /// # }
    /// ```
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// Opens when the failure share of the window reaches `ratio` (in `(0, 1]`)...
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// # /// The circuit of a provider failing (500) on the calls `fails` says, after `requests`
    /// # /// requests `gap` apart (a second provider takes what it fails).
    /// # async fn circuit_after(config: BreakerConfig, fails: fn(usize) -> bool, requests: usize, gap: Duration) -> CircuitState {
    /// #     let calls = Arc::new(AtomicUsize::new(0));
    /// #     let flaky = tower::service_fn(move |_r: Request<String>| {
    /// #         let n = calls.fetch_add(1, Ordering::SeqCst);
    /// #         let status = if fails(n) { 500 } else { 200 };
    /// #         async move { Ok::<_, Infallible>(Response::builder().status(status).body(String::new()).unwrap()) }
    /// #     });
    /// #     let up = tower::service_fn(|_r: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    /// #     let f = Fallback::builder().provider(Provider::new("flaky", flaky)).provider(Provider::new("up", up))
    /// #         .breaker(config).build().unwrap();
    /// #     for _ in 0..requests {
    /// #         f.clone().oneshot(Request::new(String::new())).await.unwrap();
    /// #         tokio::time::sleep(gap).await;
    /// #     }
    /// #     f.circuit("flaky").unwrap()
    /// # }
    /// # let always = |_: usize| true;
    /// # let every_other = |n: usize| n % 2 == 1;
    /// # let is_open = |c: CircuitState| matches!(c, CircuitState::Open { .. });
    /// // Three requests: a success; a failure then a success on the retry; a failure:
    /// // 2 failures in 4 outcomes.
    /// let config = BreakerConfig::default().min_calls(4);
    /// assert!(is_open(circuit_after(config.failure_ratio(0.5), every_other, 3, Duration::ZERO).await));
    /// assert_eq!(circuit_after(config.failure_ratio(0.8), every_other, 3, Duration::ZERO).await, CircuitState::Closed);
    /// # }
    /// ```
    pub fn failure_ratio(mut self, ratio: f64) -> Self {
        self.failure_ratio = ratio;
        self
    }

    /// ...once the window holds at least this many outcomes (at least 1).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// # /// The circuit of a provider failing (500) on the calls `fails` says, after `requests`
    /// # /// requests `gap` apart (a second provider takes what it fails).
    /// # async fn circuit_after(config: BreakerConfig, fails: fn(usize) -> bool, requests: usize, gap: Duration) -> CircuitState {
    /// #     let calls = Arc::new(AtomicUsize::new(0));
    /// #     let flaky = tower::service_fn(move |_r: Request<String>| {
    /// #         let n = calls.fetch_add(1, Ordering::SeqCst);
    /// #         let status = if fails(n) { 500 } else { 200 };
    /// #         async move { Ok::<_, Infallible>(Response::builder().status(status).body(String::new()).unwrap()) }
    /// #     });
    /// #     let up = tower::service_fn(|_r: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    /// #     let f = Fallback::builder().provider(Provider::new("flaky", flaky)).provider(Provider::new("up", up))
    /// #         .breaker(config).build().unwrap();
    /// #     for _ in 0..requests {
    /// #         f.clone().oneshot(Request::new(String::new())).await.unwrap();
    /// #         tokio::time::sleep(gap).await;
    /// #     }
    /// #     f.circuit("flaky").unwrap()
    /// # }
    /// # let always = |_: usize| true;
    /// # let every_other = |n: usize| n % 2 == 1;
    /// # let is_open = |c: CircuitState| matches!(c, CircuitState::Open { .. });
    /// // Three requests: a success; a failure then a success on the retry; a failure:
    /// // 2 failures in 4 outcomes.
    /// let four = BreakerConfig::default().min_calls(4);
    /// assert!(is_open(circuit_after(four, every_other, 3, Duration::ZERO).await));
    /// // The default needs 20 outcomes before the ratio counts.
    /// assert_eq!(circuit_after(BreakerConfig::default(), every_other, 3, Duration::ZERO).await, CircuitState::Closed);
    /// # }
    /// ```
    pub fn min_calls(mut self, n: u32) -> Self {
        self.min_calls = n;
        self
    }

    /// The window over which the failure ratio is counted (a tumbling window; non-zero).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// # /// The circuit of a provider failing (500) on the calls `fails` says, after `requests`
    /// # /// requests `gap` apart (a second provider takes what it fails).
    /// # async fn circuit_after(config: BreakerConfig, fails: fn(usize) -> bool, requests: usize, gap: Duration) -> CircuitState {
    /// #     let calls = Arc::new(AtomicUsize::new(0));
    /// #     let flaky = tower::service_fn(move |_r: Request<String>| {
    /// #         let n = calls.fetch_add(1, Ordering::SeqCst);
    /// #         let status = if fails(n) { 500 } else { 200 };
    /// #         async move { Ok::<_, Infallible>(Response::builder().status(status).body(String::new()).unwrap()) }
    /// #     });
    /// #     let up = tower::service_fn(|_r: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    /// #     let f = Fallback::builder().provider(Provider::new("flaky", flaky)).provider(Provider::new("up", up))
    /// #         .breaker(config).build().unwrap();
    /// #     for _ in 0..requests {
    /// #         f.clone().oneshot(Request::new(String::new())).await.unwrap();
    /// #         tokio::time::sleep(gap).await;
    /// #     }
    /// #     f.circuit("flaky").unwrap()
    /// # }
    /// # let always = |_: usize| true;
    /// # let every_other = |n: usize| n % 2 == 1;
    /// # let is_open = |c: CircuitState| matches!(c, CircuitState::Open { .. });
    /// // 2 failures in 4 outcomes (see `min_calls`), from three requests 2 s apart.
    /// let config = BreakerConfig::default().min_calls(4);
    /// assert!(is_open(circuit_after(config, every_other, 3, Duration::from_secs(2)).await));
    /// // A 1 s window never holds the 4 outcomes together.
    /// let short = config.window(Duration::from_secs(1));
    /// assert_eq!(circuit_after(short, every_other, 3, Duration::from_secs(2)).await, CircuitState::Closed);
    /// # }
    /// ```
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How long an open circuit skips the provider before letting a probe through
    /// (non-zero).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{LimitState, NeverFits, RequestMeta};
    /// # use ratelayer_fallback::*;
    /// # use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let answer = |status: u16, body: &'static str| tower::service_fn(move |_r: Request<String>| async move {
    /// #     Ok::<_, Infallible>(Response::builder().status(status).body(body.to_string()).unwrap())
    /// # });
    /// # let reply = |status: u16| answer(status, "");
    /// # let req = || Request::new(String::new());
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// # /// The circuit of a provider failing (500) on the calls `fails` says, after `requests`
    /// # /// requests `gap` apart (a second provider takes what it fails).
    /// # async fn circuit_after(config: BreakerConfig, fails: fn(usize) -> bool, requests: usize, gap: Duration) -> CircuitState {
    /// #     let calls = Arc::new(AtomicUsize::new(0));
    /// #     let flaky = tower::service_fn(move |_r: Request<String>| {
    /// #         let n = calls.fetch_add(1, Ordering::SeqCst);
    /// #         let status = if fails(n) { 500 } else { 200 };
    /// #         async move { Ok::<_, Infallible>(Response::builder().status(status).body(String::new()).unwrap()) }
    /// #     });
    /// #     let up = tower::service_fn(|_r: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    /// #     let f = Fallback::builder().provider(Provider::new("flaky", flaky)).provider(Provider::new("up", up))
    /// #         .breaker(config).build().unwrap();
    /// #     for _ in 0..requests {
    /// #         f.clone().oneshot(Request::new(String::new())).await.unwrap();
    /// #         tokio::time::sleep(gap).await;
    /// #     }
    /// #     f.circuit("flaky").unwrap()
    /// # }
    /// # let always = |_: usize| true;
    /// # let every_other = |n: usize| n % 2 == 1;
    /// # let is_open = |c: CircuitState| matches!(c, CircuitState::Open { .. });
    /// let config = BreakerConfig::default().consecutive_failures(1).open_for(Duration::from_secs(5));
    /// let CircuitState::Open { until } = circuit_after(config, always, 1, Duration::ZERO).await else { panic!() };
    /// assert_eq!(until - tokio::time::Instant::now(), Duration::from_secs(5));
    /// // Then one probe may go through.
    /// assert_eq!(circuit_after(config, always, 1, Duration::from_secs(5)).await, CircuitState::HalfOpen);
    /// # }
    /// ```
    pub fn open_for(mut self, d: Duration) -> Self {
        self.open_for = d;
        self
    }

    /// Checks the settings.
    ///
    /// ```
    /// use ratelayer_fallback::BreakerConfig;
    /// assert!(BreakerConfig::default().consecutive_failures(0).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.consecutive_failures == 0 {
            return Err(ConfigError::new(
                "fallback.breaker.consecutive_failures",
                "must be at least 1",
            ));
        }
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err(ConfigError::new(
                "fallback.breaker.failure_ratio",
                format!("must be in (0, 1], got {}", self.failure_ratio),
            ));
        }
        if self.min_calls == 0 {
            return Err(ConfigError::new(
                "fallback.breaker.min_calls",
                "must be at least 1",
            ));
        }
        if self.window.is_zero() || self.open_for.is_zero() {
            return Err(ConfigError::new(
                "fallback.breaker.window/open_for",
                "must be non-zero durations",
            ));
        }
        Ok(())
    }
}

/// The state of a circuit, as reported by [`FallbackLayer::circuit`](crate::FallbackLayer::circuit).
///
/// ```
/// use ratelayer_fallback::CircuitState;
/// assert_ne!(CircuitState::Closed, CircuitState::HalfOpen);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests go through.
    Closed,
    /// The provider is skipped until the instant.
    Open {
        /// When a probe may go through.
        until: Instant,
    },
    /// One probe may go through (or is in flight).
    HalfOpen,
}

/// `now + d`, saturating at about thirty years ahead (an `Instant` sum can overflow).
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    now.checked_add(d.min(FAR)).unwrap_or(now)
}

#[derive(Debug)]
struct State {
    circuit: CircuitState,
    probing: bool,
    consecutive: u32,
    window_start: Instant,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    name: Arc<str>,
    config: BreakerConfig,
    state: Mutex<State>,
}

/// Permission to send one request; a half-open probe is released when dropped without an
/// outcome (cancellation).
#[derive(Debug)]
pub(crate) struct Permit {
    breaker: Option<Arc<Breaker>>,
    probe: bool,
}

impl Permit {
    /// A permit outside any breaker (a preferred provider bypasses it).
    pub(crate) fn none() -> Self {
        Permit {
            breaker: None,
            probe: false,
        }
    }

    pub(crate) fn record(mut self, outcome: Option<bool>) {
        if let Some(b) = self.breaker.take() {
            b.record(outcome, self.probe);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(b) = self.breaker.take() {
            b.record(None, self.probe);
        }
    }
}

impl Breaker {
    pub(crate) fn new(name: Arc<str>, config: BreakerConfig) -> Self {
        Breaker {
            name,
            config,
            state: Mutex::new(State {
                circuit: CircuitState::Closed,
                probing: false,
                consecutive: 0,
                window_start: Instant::now(),
                calls: 0,
                failures: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn state(&self) -> CircuitState {
        let mut s = self.lock();
        Self::refresh(&mut s);
        s.circuit
    }

    fn refresh(s: &mut State) {
        if let CircuitState::Open { until } = s.circuit
            && Instant::now() >= until
        {
            s.circuit = CircuitState::HalfOpen;
            s.probing = false;
        }
    }

    /// A permit to send, or `None` when the circuit is open (or its probe is in flight).
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut s = self.lock();
        Self::refresh(&mut s);
        let probe = match s.circuit {
            CircuitState::Closed => false,
            CircuitState::Open { .. } => return None,
            CircuitState::HalfOpen if s.probing => return None,
            CircuitState::HalfOpen => {
                s.probing = true;
                true
            }
        };
        Some(Permit {
            breaker: Some(Arc::clone(self)),
            probe,
        })
    }

    /// `Some(true)`: a success; `Some(false)`: a failure; `None`: no verdict.
    fn record(&self, outcome: Option<bool>, probe: bool) {
        let now = Instant::now();
        let mut s = self.lock();
        if probe {
            s.probing = false;
        }
        let Some(ok) = outcome else { return };
        if now.saturating_duration_since(s.window_start) >= self.config.window {
            s.window_start = now;
            s.calls = 0;
            s.failures = 0;
        }
        s.calls += 1;
        if ok {
            s.consecutive = 0;
            if probe || s.circuit == CircuitState::HalfOpen {
                s.circuit = CircuitState::Closed;
                s.calls = 0;
                s.failures = 0;
                s.window_start = now;
                tracing::info!(target: "ratelayer::fallback", provider = %self.name, "circuit closed after a successful probe");
            }
            return;
        }
        s.failures += 1;
        s.consecutive += 1;
        let ratio_trips = s.calls >= self.config.min_calls
            && f64::from(s.failures) / f64::from(s.calls) >= self.config.failure_ratio;
        let trips = probe
            || s.circuit == CircuitState::HalfOpen
            || s.consecutive >= self.config.consecutive_failures
            || ratio_trips;
        if trips && !matches!(s.circuit, CircuitState::Open { .. }) {
            let until = later(now, self.config.open_for);
            s.circuit = CircuitState::Open { until };
            s.probing = false;
            tracing::warn!(
                target: "ratelayer::fallback",
                provider = %self.name,
                consecutive = s.consecutive,
                failures = s.failures,
                calls = s.calls,
                open_for_ms = self.config.open_for.as_millis() as u64,
                "circuit opened"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(config: BreakerConfig) -> Arc<Breaker> {
        Arc::new(Breaker::new(Arc::from("p"), config))
    }

    fn outcome(b: &Arc<Breaker>, ok: bool) {
        b.try_acquire().expect("closed").record(Some(ok));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_ratio_over_the_window_opens_the_circuit() {
        let b = breaker(
            BreakerConfig::default()
                .consecutive_failures(10)
                .min_calls(4)
                .failure_ratio(0.5),
        );
        outcome(&b, true);
        outcome(&b, false);
        outcome(&b, true);
        assert_eq!(b.state(), CircuitState::Closed);
        outcome(&b, false); // 2 of 4
        assert!(matches!(b.state(), CircuitState::Open { .. }));
        assert!(b.try_acquire().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_forgets_old_outcomes() {
        let b = breaker(
            BreakerConfig::default()
                .consecutive_failures(10)
                .min_calls(4)
                .window(Duration::from_secs(10)),
        );
        outcome(&b, false);
        outcome(&b, false);
        outcome(&b, false);
        tokio::time::advance(Duration::from_secs(11)).await;
        outcome(&b, true);
        outcome(&b, true);
        outcome(&b, true);
        outcome(&b, false); // 1 of 4 in this window (4 of 7 over both)
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_probe_through() {
        let b = breaker(BreakerConfig::default().consecutive_failures(1));
        outcome(&b, false);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let probe = b.try_acquire().expect("one probe");
        assert!(b.try_acquire().is_none(), "only one");
        probe.record(None); // no verdict (say, a 429): the next request probes
        let probe = b.try_acquire().expect("probe again");
        probe.record(Some(false));
        assert!(matches!(b.state(), CircuitState::Open { .. }));
        tokio::time::advance(Duration::from_secs(30)).await;
        b.try_acquire().expect("probe").record(Some(true));
        assert_eq!(b.state(), CircuitState::Closed);
        outcome(&b, true);
    }
}
