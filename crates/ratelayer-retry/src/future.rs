//! The response future of [`BackoffRetry`](crate::BackoffRetry): the attempt state
//! machine.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use ratelayer_core::body::try_clone_request;
use ratelayer_core::headers::{self, Dialect};
use ratelayer_core::{
    BoxError, Classification, RateLimitSnapshot, ReplayableBody, Scope, WaitTooLong,
};
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::gate::{Admit, ProbeGuard};
use crate::layer::{Attempt, Counters, Decision, Shared};
use crate::policy::{RetryReport, StopReason};

type ProbeWait = Pin<Box<dyn Future<Output = ()> + Send>>;

pin_project! {
    #[project = StateProj]
    enum State<F, B: Body> {
        // Before an attempt: cooldown, pacing, probe.
        Gate,
        // Waiting on `sleep`, then back to `Gate`.
        Sleeping,
        // Waiting for the scope's probe to answer.
        Probe { wait: ProbeWait },
        // Driving the inner service's readiness, then calling it.
        Ready,
        // Waiting for the inner service's response.
        Calling { #[pin] fut: F },
        // Reading an error body (up to the bound) to classify it.
        // Boxed: rare, and large next to the future of a request that succeeds (which
        // every layer around this one moves).
        Reading { read: Box<Read<B>> },
        Done,
    }
}

/// An error body being read.
struct Read<B: Body> {
    parts: Option<http::response::Parts>,
    body: Option<Pin<Box<B>>>,
    buf: BytesMut,
    trailers: Option<HeaderMap>,
    error: Option<B::Error>,
}

pin_project! {
    /// The response future of [`BackoffRetry`](crate::BackoffRetry).
    ///
    /// A state machine over attempts (modelled on tower's `retry::future`): wait for the
    /// scope's cooldown and pacing, drive the inner service's readiness, call it, read an
    /// error body up to the bound, classify, then return or sleep and go again. Nothing is
    /// held while sleeping: no readied service (a readied one is swapped for a fresh
    /// clone before any wait), no response (its body is dropped).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// use ratelayer_core::{LimitState, ReplayBody};
    /// use ratelayer_retry::{BackoffRetryLayer, ResponseFuture};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let calls = Arc::new(AtomicU32::new(0));
    /// # let c = calls.clone();
    /// # let inner = service_fn(move |_req: Request<ReplayBody>| {
    /// #     let status = if c.fetch_add(1, Ordering::SeqCst) == 0 { 429 } else { 200 };
    /// #     async move { Ok::<_, Infallible>(Response::builder().status(status).header("retry-after", "7").body(String::new()).unwrap()) }
    /// # });
    /// let mut svc = BackoffRetryLayer::new(LimitState::new()).layer(inner); // first a 429 asking for 7 s, then 200
    /// let fut: ResponseFuture<_, _, _> = svc.ready().await.unwrap().call(Request::new(ReplayBody::from("{}")));
    /// let mut fut = tokio_test::task::spawn(fut);
    /// tokio_test::assert_pending!(fut.poll()); // sleeping 7 s after the 429
    /// assert_eq!(calls.load(Ordering::SeqCst), 1);
    /// tokio::time::advance(Duration::from_secs(7)).await;
    /// let resp = tokio_test::assert_ready!(fut.poll()).unwrap();
    /// assert_eq!((resp.status().as_u16(), calls.load(Ordering::SeqCst)), (200, 2));
    /// # }
    /// ```
    #[project = FutProj]
    pub struct ResponseFuture<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
        ResB: Body,
    {
        #[pin]
        state: State<S::Future, ResB>,
        sleep: Option<Pin<Box<Sleep>>>,
        service: S,
        ready: bool,
        template: Option<Request<ReqB>>,
        replayable: bool,
        shared: Arc<Shared>,
        scope: Scope,
        deadline: Option<Instant>,
        attempts: u32,
        counters: Counters,
        total_wait: Duration,
        probe: Option<ProbeGuard>,
        // The request was counted in the retry budget.
        deposited: bool,
    }
}

impl<S, ReqB, ResB> std::fmt::Debug for ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("scope", &self.scope)
            .field("attempts", &self.attempts)
            .field("total_wait", &self.total_wait)
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    pub(crate) fn new(
        service: S,
        req: Request<ReqB>,
        scope: Scope,
        deadline: Option<Instant>,
        shared: Arc<Shared>,
    ) -> Self {
        ResponseFuture {
            state: State::Gate,
            sleep: None,
            service,
            ready: true,
            template: Some(req),
            replayable: true,
            shared,
            scope,
            deadline,
            attempts: 0,
            counters: Counters::default(),
            total_wait: Duration::ZERO,
            probe: None,
            deposited: false,
        }
    }
}

/// Arms the timer for `until`. The timer is made at the first wait, so a request that
/// never waits builds none.
fn arm(slot: &mut Option<Pin<Box<Sleep>>>, until: Instant) {
    match slot {
        Some(s) => s.as_mut().reset(until),
        None => *slot = Some(Box::pin(sleep_until(until))),
    }
}

/// Polls the armed timer (one never armed has nothing to wait for).
fn poll_timer(slot: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> Poll<()> {
    match slot {
        Some(s) => s.as_mut().poll(cx),
        None => Poll::Ready(()),
    }
}

fn outcome(scope: &Scope, report: &RetryReport, status: Option<u16>) {
    let msg = format_args!(
        "request finished after {} attempt(s), waited {:.1}s: {}",
        report.attempts,
        report.total_wait.as_secs_f64(),
        report.reason
    );
    if report.attempts > 1 || report.reason != StopReason::Success {
        tracing::info!(scope = %scope, attempts = report.attempts,
            total_wait_ms = report.total_wait.as_millis() as u64,
            reason = %report.reason, status, "{msg}");
    } else {
        tracing::debug!(scope = %scope, attempts = report.attempts,
            total_wait_ms = 0u64, reason = %report.reason, status, "{msg}");
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ReqB: ReplayableBody,
    ResB: Body,
{
    type Output = Result<Response<ResponseBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Gate => {
                    let now = Instant::now();
                    let shared = &**this.shared;
                    if !*this.deposited {
                        *this.deposited = true;
                        shared.budget_deposit(now);
                    }
                    let wait = match shared.state.cooldown_until_at(this.scope, now) {
                        Some(until) => Some((until, "cooldown")),
                        None if shared.cfg.pacing => {
                            match shared.gate.admit(
                                this.scope,
                                &shared.state,
                                shared.cfg.pacing_margin,
                                shared.cfg.probe,
                                now,
                            ) {
                                Admit::Go(guard) => {
                                    *this.probe = guard;
                                    None
                                }
                                Admit::Until(t, why) => Some((t, why)),
                                Admit::Probe(mut rx) => {
                                    drop_readiness(this.service, this.ready);
                                    if let Some(d) = *this.deadline {
                                        arm(this.sleep, d);
                                    }
                                    this.state.set(State::Probe {
                                        wait: Box::pin(async move {
                                            let _ = rx.changed().await;
                                        }),
                                    });
                                    continue;
                                }
                            }
                        }
                        None => None,
                    };
                    if let Some((until, why)) = wait {
                        if let Some(d) = *this.deadline
                            && until > d
                        {
                            return Poll::Ready(Err(too_long(this.scope, until - now, d, now)));
                        }
                        drop_readiness(this.service, this.ready);
                        tracing::debug!(scope = %this.scope,
                            wait_ms = (until - now).as_millis() as u64, reason = why,
                            "waiting before attempt");
                        *this.total_wait += until - now;
                        arm(this.sleep, until);
                        this.state.set(State::Sleeping);
                        continue;
                    }
                    this.state.set(State::Ready);
                }
                StateProj::Sleeping => {
                    ready!(poll_timer(this.sleep, cx));
                    this.state.set(State::Gate);
                }
                StateProj::Probe { wait } => {
                    if wait.as_mut().poll(cx).is_ready() {
                        this.state.set(State::Gate);
                        continue;
                    }
                    if let Some(d) = *this.deadline {
                        ready!(poll_timer(this.sleep, cx));
                        let now = Instant::now();
                        return Poll::Ready(Err(too_long(this.scope, Duration::ZERO, d, now)));
                    }
                    return Poll::Pending;
                }
                StateProj::Ready => {
                    if !*this.ready
                        && let Err(e) = ready!(this.service.poll_ready(cx))
                    {
                        return Poll::Ready(Err(e.into()));
                    }
                    *this.ready = false;
                    let req = if *this.replayable {
                        this.template.as_ref().and_then(try_clone_request)
                    } else {
                        None
                    };
                    let req = match req {
                        Some(r) => r,
                        None => {
                            if *this.replayable {
                                *this.replayable = false;
                                tracing::warn!(scope = %this.scope,
                                    "request body cannot be replayed: sent once, not retried");
                            }
                            match this.template.take() {
                                Some(r) => r,
                                None => {
                                    return Poll::Ready(Err(
                                        "ratelayer-retry: the request was already sent".into(),
                                    ));
                                }
                            }
                        }
                    };
                    *this.attempts += 1;
                    let fut = this.service.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    let result = ready!(fut.poll(cx));
                    // Only the probe of a scope not yet seen has anything to report.
                    let probing = this.probe.take().is_some();
                    let shared = &**this.shared;
                    match result {
                        Ok(resp) => {
                            if probing {
                                shared.gate.seen(this.scope);
                            }
                            let (parts, body) = resp.into_parts();
                            if shared.classifier.wants_body(parts.status) {
                                this.state.set(State::Reading {
                                    read: Box::new(Read {
                                        parts: Some(parts),
                                        body: Some(Box::pin(body)),
                                        buf: BytesMut::new(),
                                        trailers: None,
                                        error: None,
                                    }),
                                });
                                continue;
                            }
                            if let Some(out) =
                                conclude(&mut this, parts, None, ResponseBody::new(body))
                            {
                                return Poll::Ready(Ok(out));
                            }
                            continue;
                        }
                        Err(e) => {
                            let e: BoxError = e.into();
                            if declined_to_wait(&*e) {
                                // An inner layer (TPM, concurrency) decided the wait is
                                // longer than its caller allows: that decision is final
                                // here too, so a fallback can go elsewhere at once.
                                tracing::info!(scope = %this.scope, attempts = *this.attempts,
                                    error = %e,
                                    "request not retried: an inner layer declined to wait: {e}");
                                this.state.set(State::Done);
                                return Poll::Ready(Err(e));
                            }
                            let class = shared.classifier.classify_error(&*e);
                            let d = shared.decide(
                                Attempt {
                                    class,
                                    snapshot: None,
                                    status: None,
                                    scope: this.scope,
                                    total_wait: *this.total_wait,
                                    deadline: *this.deadline,
                                    replayable: *this.replayable && this.template.is_some(),
                                },
                                this.counters,
                            );
                            match d {
                                Decision::Stop(reason) => {
                                    tracing::info!(scope = %this.scope, attempts = *this.attempts,
                                        total_wait_ms = this.total_wait.as_millis() as u64,
                                        reason = %reason, error = %e,
                                        "request failed after {} attempt(s): {reason}: {e}",
                                        *this.attempts);
                                    this.state.set(State::Done);
                                    return Poll::Ready(Err(e));
                                }
                                Decision::Retry(delay) => {
                                    *this.total_wait += delay;
                                    arm(this.sleep, Instant::now() + delay);
                                    this.state.set(State::Sleeping);
                                    continue;
                                }
                            }
                        }
                    }
                }
                StateProj::Reading { read } => {
                    let Read {
                        parts,
                        body,
                        buf,
                        trailers,
                        error,
                    } = &mut **read;
                    let max = this.shared.cfg.max_body;
                    while buf.len() < max {
                        let Some(b) = body.as_mut() else { break };
                        match ready!(b.as_mut().poll_frame(cx)) {
                            None => *body = None,
                            Some(Ok(frame)) => match frame.into_data() {
                                Ok(mut data) => {
                                    while data.has_remaining() {
                                        let chunk = data.chunk();
                                        let n = chunk.len();
                                        buf.extend_from_slice(chunk);
                                        data.advance(n);
                                    }
                                }
                                Err(frame) => {
                                    if let Ok(t) = frame.into_trailers() {
                                        *trailers = Some(t);
                                    }
                                }
                            },
                            Some(Err(e)) => {
                                *error = Some(e);
                                *body = None;
                            }
                        }
                    }
                    let Some(parts) = parts.take() else {
                        return Poll::Ready(Err("ratelayer-retry: polled after completion".into()));
                    };
                    let bytes = std::mem::take(buf).freeze();
                    let body = ResponseBody::buffered(
                        bytes.clone(),
                        error.take(),
                        trailers.take(),
                        body.take(),
                    );
                    if let Some(out) = conclude(&mut this, parts, Some(&bytes), body) {
                        return Poll::Ready(Ok(out));
                    }
                }
                StateProj::Done => {
                    return Poll::Ready(Err("ratelayer-retry: polled after completion".into()));
                }
            }
        }
    }
}

/// Where a logical request stands, for [`finish`].
struct Progress<'a> {
    counters: &'a mut Counters,
    total_wait: &'a mut Duration,
    attempts: u32,
    deadline: Option<Instant>,
    replayable: bool,
}

/// Decides on a response: `Ok` to return it (with its [`RetryReport`] unless it is
/// [`RetryReport::FIRST_ATTEMPT`]), `Err(delay)` to
/// drop it and retry after `delay`.
fn finish<B: Body>(
    shared: &Shared,
    scope: &Scope,
    class: Classification,
    snap: &RateLimitSnapshot,
    mut parts: http::response::Parts,
    body: ResponseBody<B>,
    p: Progress<'_>,
) -> Result<Response<ResponseBody<B>>, Duration> {
    let decision = shared.decide(
        Attempt {
            class,
            snapshot: Some(snap),
            status: Some(parts.status),
            scope,
            total_wait: *p.total_wait,
            deadline: p.deadline,
            replayable: p.replayable,
        },
        p.counters,
    );
    match decision {
        Decision::Retry(delay) => {
            *p.total_wait += delay;
            Err(delay)
        }
        Decision::Stop(reason) => {
            let report = RetryReport {
                attempts: p.attempts,
                total_wait: *p.total_wait,
                reason,
            };
            outcome(scope, &report, Some(parts.status.as_u16()));
            // A first attempt that succeeded without a wait needs no report (see
            // `RetryReport::of`): no extensions map to allocate on the common path.
            if report != RetryReport::FIRST_ATTEMPT {
                parts.extensions.insert(report);
            }
            Ok(Response::from_parts(parts, body))
        }
    }
}

fn parse(scope: &Scope, parts: &http::response::Parts, body: Option<&[u8]>) -> RateLimitSnapshot {
    if body.is_none() {
        if !headers::states_limits(&parts.headers) {
            return RateLimitSnapshot::default();
        }
        // The headers alone: a layer inside (tier, TPM) has parsed them already.
        if let Some(snap) = parts.extensions.get::<RateLimitSnapshot>() {
            return snap.clone();
        }
    }
    // The wall clock is read here, at the edge, for absolute-date headers.
    headers::parse(
        parts.status,
        &parts.headers,
        body,
        SystemTime::now(),
        Dialect::for_provider(scope.provider()),
    )
}

/// Swaps a readied service for a fresh clone, so no readiness (permit, slot) is held
/// while waiting.
fn drop_readiness<S: Clone>(service: &mut S, ready: &mut bool) {
    if *ready {
        let fresh = service.clone();
        drop(std::mem::replace(service, fresh));
        *ready = false;
    }
}

fn too_long(scope: &Scope, wait: Duration, deadline: Instant, now: Instant) -> BoxError {
    Box::new(WaitTooLong {
        scope: scope.clone(),
        wait,
        max_wait: deadline.saturating_duration_since(now),
        reason: "the scope's cooldown or pacing before the request's deadline",
    })
}

/// Classifies a response and decides: `Some` to return it (the future is done), `None`
/// to drop it (its body with it) and sleep before the next attempt.
fn conclude<S, ReqB, ResB>(
    this: &mut FutProj<'_, S, ReqB, ResB>,
    parts: http::response::Parts,
    bytes: Option<&[u8]>,
    body: ResponseBody<ResB>,
) -> Option<Response<ResponseBody<ResB>>>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    let shared = &**this.shared;
    let snap = if bytes.is_some() || parts.status.as_u16() >= 400 {
        parse(this.scope, &parts, bytes)
    } else {
        RateLimitSnapshot::default()
    };
    let class = shared
        .classifier
        .classify_response(parts.status, &parts.headers, bytes, &snap);
    let progress = Progress {
        counters: this.counters,
        total_wait: this.total_wait,
        attempts: *this.attempts,
        deadline: *this.deadline,
        replayable: *this.replayable && this.template.is_some(),
    };
    match finish(shared, this.scope, class, &snap, parts, body, progress) {
        Ok(out) => {
            this.state.set(State::Done);
            Some(out)
        }
        Err(delay) => {
            arm(this.sleep, Instant::now() + delay);
            this.state.set(State::Sleeping);
            None
        }
    }
}

/// Whether `error` (or an error it wraps) is an inner layer's [`WaitTooLong`] refusal.
fn declined_to_wait(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut link = Some(error);
    // Bounded: a cyclic `source()` chain must not hang the request.
    for _ in 0..32 {
        match link {
            Some(e) if e.is::<WaitTooLong>() => return true,
            Some(e) => link = e.source(),
            None => return false,
        }
    }
    false
}
