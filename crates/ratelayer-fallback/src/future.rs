//! The response future of [`Fallback`](crate::Fallback) and the decision procedure it
//! runs.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body::Body;
use ratelayer_core::body::try_clone_request;
use ratelayer_core::error::{AllProvidersFailed, ProviderAttempt};
use ratelayer_core::meta::{self, DefaultEstimator, EstimateSource, ProviderName};
use ratelayer_core::{
    BoxError, Classification, NeverFits, RateLimitSnapshot, ReplayableBody, RequestMeta, headers,
};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::body::ResponseBody;
use crate::breaker::{Permit, later};
use crate::layer::{BoxSvc, Chain, OnFatal};
use crate::stats::{FallbackReason, FallbackStats};
use crate::wait::{Deadline, PreferredProvider, WaitBudget};

type Output<ResB> = Result<Response<ResponseBody<ResB>>, BoxError>;

/// The response future of [`Fallback`](crate::Fallback).
///
/// The decision procedure (choose a provider, drive its readiness, call it, classify,
/// wait, retry or fall back) is one `async` state machine boxed once per logical request:
/// each attempt already goes through a boxed provider service, and an LLM request costs
/// far more than one allocation. Dropping the future at any point cancels the request:
/// the attempt in flight is dropped, a half-open circuit's probe is released, and the
/// request is counted as cancelled in the stats.
///
/// ```
/// # use std::convert::Infallible;
/// # use http::{Request, Response};
/// use ratelayer_fallback::{Fallback, Provider, ResponseFuture};
/// use tower::{Service, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hangs = tower::service_fn(|_r: Request<String>| std::future::pending::<Result<Response<String>, Infallible>>());
/// let mut fallback = Fallback::builder().provider(Provider::new("slow", hangs)).build().unwrap();
/// let fut: ResponseFuture<String> = fallback.ready().await.unwrap().call(Request::new(String::new()));
/// let mut fut = tokio_test::task::spawn(fut);
/// tokio_test::assert_pending!(fut.poll());
/// drop(fut); // cancels the request
/// assert_eq!(fallback.stats().snapshot().cancelled, 1);
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<ResB: Body> {
    inner: Pin<Box<dyn Future<Output = Output<ResB>> + Send>>,
}

impl<ResB: Body> ResponseFuture<ResB> {
    pub(crate) fn new(fut: impl Future<Output = Output<ResB>> + Send + 'static) -> Self {
        ResponseFuture {
            inner: Box::pin(fut),
        }
    }
}

impl<ResB: Body> fmt::Debug for ResponseFuture<ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<ResB: Body> Future for ResponseFuture<ResB> {
    type Output = Output<ResB>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// Counts the request; counts it cancelled if dropped before an outcome.
struct RequestGuard {
    stats: FallbackStats,
    done: bool,
}

impl RequestGuard {
    fn new(stats: FallbackStats) -> Self {
        stats.request();
        RequestGuard { stats, done: false }
    }

    fn success(mut self, provider: usize, primary: bool) {
        self.done = true;
        self.stats.success(provider, primary);
    }

    fn failure(mut self) {
        self.done = true;
        self.stats.failure();
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if !self.done {
            self.stats.cancelled();
            tracing::debug!(target: "ratelayer::fallback", "request cancelled");
        }
    }
}

/// What one attempt came to.
struct Verdict<ResB: Body> {
    class: Classification,
    status: Option<StatusCode>,
    /// The response, rebuilt with the body bytes read (when it can be returned).
    response: Option<Response<ResponseBody<ResB>>>,
    error: Option<BoxError>,
    never_fits: bool,
    wait_too_long: bool,
}

/// The most this request may wait now: the budget, capped by the deadline.
fn allowed(budget: Duration, deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(d) => budget.min(d.saturating_duration_since(Instant::now())),
        None => budget,
    }
}

/// A copy of the original for an attempt; the original itself (once) when its body
/// cannot be replayed.
fn attempt_request<B: ReplayableBody>(original: &mut Option<Request<B>>) -> Option<Request<B>> {
    if let Some(copy) = original.as_ref().and_then(try_clone_request) {
        return Some(copy);
    }
    original.take()
}

/// Rewrites `req` for provider `idx` and refreshes its cached metadata.
fn prepare<B: ReplayableBody + 'static>(
    chain: &Chain<B>,
    idx: usize,
    req: &mut Request<B>,
    original: &RequestMeta,
) -> RequestMeta {
    let spec = &chain.specs[idx];
    // What the estimate depends on, to tell whether the rewrites changed it.
    let body_before = req.body().bytes().map(|b| (b.as_ptr(), b.len()));
    let path_before = req.uri().path_and_query().cloned();
    spec.apply(req);
    let provider = spec
        .scope_provider
        .clone()
        .unwrap_or_else(|| spec.name.clone());
    req.extensions_mut()
        .insert(ProviderName::new(provider.clone()));
    req.extensions_mut().remove::<RequestMeta>();
    if spec.rewrites.is_empty() {
        // Same body, same headers: only the provider (scope) changes.
        let m = RequestMeta {
            provider,
            ..original.clone()
        };
        meta::set(req, m.clone());
        return m;
    }
    let same_body =
        body_before.is_some() && req.body().bytes().map(|b| (b.as_ptr(), b.len())) == body_before;
    if same_body
        && req.uri().path_and_query() == path_before.as_ref()
        && original.source != EstimateSource::Explicit
    {
        // The rewrites touched only headers or the authority: the estimate and the model
        // read from the same body and path stand (no second read of the body); the
        // provider and the credential are this provider's.
        let m = RequestMeta {
            provider,
            credential: meta::credential_of(req),
            ..original.clone()
        };
        meta::set(req, m.clone());
        return m;
    }
    let fresh = meta::compute(req, &DefaultEstimator::new());
    let m = if original.source == EstimateSource::Explicit {
        RequestMeta {
            provider: fresh.provider,
            credential: fresh.credential.or_else(|| original.credential.clone()),
            model: fresh.model.or_else(|| original.model.clone()),
            ..original.clone()
        }
    } else {
        fresh
    };
    meta::set(req, m.clone());
    m
}

/// Reads at most `limit` bytes of `body`: the bytes, and whether the body ended.
/// What reading the start of a body found: the bytes, trailers met, and whether the body
/// ended.
type Prefix = (Bytes, Option<http::HeaderMap>, bool);

async fn read_prefix<ResB>(body: &mut ResB, limit: usize) -> Result<Prefix, ResB::Error>
where
    ResB: Body<Data = Bytes> + Unpin,
{
    let mut buf = BytesMut::new();
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            None => return Ok((buf.freeze(), None, true)),
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    buf.extend_from_slice(&data);
                    if buf.len() >= limit {
                        return Ok((buf.freeze(), None, false));
                    }
                }
                // Trailers end the body: keep them for the caller.
                Err(frame) => {
                    let trailers = frame.into_trailers().ok();
                    return Ok((buf.freeze(), trailers, true));
                }
            },
        }
    }
}

fn error_chain_has<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut link = Some(e);
    for _ in 0..32 {
        match link {
            Some(l) if l.is::<T>() => return true,
            Some(l) => link = l.source(),
            None => return false,
        }
    }
    false
}

async fn judge<B, ResB>(
    chain: &Chain<B>,
    dialect: Option<ratelayer_core::Dialect>,
    result: Result<Response<ResB>, BoxError>,
) -> Verdict<ResB>
where
    ResB: Body<Data = Bytes> + Unpin,
    ResB::Error: Into<BoxError> + Send,
{
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            let class = chain.classifier.classify_error(e.as_ref());
            return Verdict {
                class,
                status: None,
                response: None,
                never_fits: error_chain_has::<NeverFits>(e.as_ref()),
                wait_too_long: error_chain_has::<ratelayer_core::WaitTooLong>(e.as_ref()),
                error: Some(e),
            };
        }
    };
    let status = resp.status();
    let (parts, mut body) = resp.into_parts();
    let (bytes, response, error) = if chain.classifier.wants_body(status) {
        match read_prefix(&mut body, chain.policy.max_error_body).await {
            Ok((bytes, trailers, ended)) => {
                let rest = (!ended).then(|| Box::pin(body));
                let body = ResponseBody::buffered(bytes.clone(), None, trailers, rest);
                (Some(bytes), Some(Response::from_parts(parts, body)), None)
            }
            Err(e) => (None, None, Some(e.into())),
        }
    } else {
        (
            None,
            Some(Response::from_parts(parts, ResponseBody::new(body))),
            None,
        )
    };
    let response_headers = response.as_ref().map(|r| r.headers());
    let empty = http::HeaderMap::new();
    let hdrs = response_headers.unwrap_or(&empty);
    // The headers alone, when no body was read: a layer inside (tier, TPM) has parsed
    // them already and attached the snapshot.
    let attached = response
        .as_ref()
        .filter(|_| bytes.is_none())
        .and_then(|r| r.extensions().get::<RateLimitSnapshot>());
    let snapshot = match attached {
        Some(snap) => snap.clone(),
        None => headers::parse(status, hdrs, bytes.as_deref(), SystemTime::now(), dialect),
    };
    let class = chain
        .classifier
        .classify_response(status, hdrs, bytes.as_deref(), &snapshot);
    Verdict {
        class,
        status: Some(status),
        response,
        error,
        never_fits: false,
        wait_too_long: false,
    }
}

/// Where the chain goes after a context overflow on `pos`: the first later provider whose
/// known context window fits the estimate (and is larger than the one that overflowed),
/// else the first later one whose window is unknown.
fn context_target<B>(chain: &Chain<B>, order: &[usize], pos: usize, estimate: u64) -> usize {
    let current = chain.specs[order[pos]].context_window;
    let need = current.map_or(estimate, |c| estimate.max(c.saturating_add(1)));
    let later = pos + 1..order.len();
    later
        .clone()
        .find(|&p| {
            chain.specs[order[p]]
                .context_window
                .is_some_and(|w| w >= need)
        })
        .or_else(|| {
            later
                .clone()
                .find(|&p| chain.specs[order[p]].context_window.is_none())
        })
        .unwrap_or(order.len())
}

/// Why the walk leaves a provider, and where it goes next.
struct Leave {
    reason: FallbackReason,
    detail: String,
    status: Option<StatusCode>,
    next: usize,
}

impl Leave {
    fn new(
        reason: FallbackReason,
        detail: String,
        status: Option<StatusCode>,
        next: usize,
    ) -> Self {
        Leave {
            reason,
            detail,
            status,
            next,
        }
    }
}

/// What to do after an attempt.
// `Done` carries the response (large); a `Step` lives for one decision, never in a
// collection, so boxing it would only add an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Step<ResB: Body> {
    /// Try the same provider again, after this wait.
    Again(Option<Duration>),
    /// Leave the provider.
    Leave(Leave),
    /// The request is done: the outcome and whether it is a success.
    Done(Output<ResB>, bool),
}

fn leave<B>(
    chain: &Chain<B>,
    order: &[usize],
    attempts: &mut Vec<ProviderAttempt>,
    pos: usize,
    l: Leave,
) -> usize {
    let from = &chain.specs[order[pos]].name;
    let to = order.get(l.next).map_or("none", |&i| &*chain.specs[i].name);
    tracing::info!(
        target: "ratelayer::fallback",
        from = %from,
        to = %to,
        reason = l.reason.as_str(),
        status = l.status.map(|s| s.as_u16()),
        detail = %l.detail,
        "fallback"
    );
    chain.stats.fallback(l.reason);
    attempts.push(ProviderAttempt {
        provider: from.to_string(),
        reason: if l.detail.is_empty() {
            l.reason.as_str().to_owned()
        } else {
            format!("{}: {}", l.reason.as_str(), l.detail)
        },
        status: l.status,
    });
    l.next
}

fn outcome<ResB: Body>(verdict: Verdict<ResB>) -> Output<ResB> {
    match (verdict.response, verdict.error) {
        (Some(r), _) => Ok(r),
        (None, Some(e)) => Err(e),
        (None, None) => Err("the provider's response was lost".into()),
    }
}

/// Where a request stands on one provider.
struct Walk<'a, B> {
    chain: &'a Chain<B>,
    name: &'a str,
    pos: usize,
    order: &'a [usize],
    estimate: u64,
    budget: Duration,
    deadline: Option<Instant>,
    bypass: bool,
    unexpected: u32,
    rate_limit_waits: u32,
}

impl<B> Walk<'_, B> {
    fn leave(&self, reason: FallbackReason, detail: String, status: Option<StatusCode>) -> Leave {
        Leave::new(reason, detail, status, self.pos + 1)
    }

    fn error_detail<ResB: Body>(verdict: &Verdict<ResB>) -> String {
        verdict
            .error
            .as_ref()
            .map_or_else(String::new, |e| e.to_string())
    }

    /// Decides what an attempt's verdict means. `permit` records the breaker outcome.
    fn decide<ResB: Body>(
        &mut self,
        verdict: Verdict<ResB>,
        m: &RequestMeta,
        permit: Permit,
    ) -> Step<ResB> {
        let chain = self.chain;
        let status = verdict.status;
        let allowed_now = allowed(self.budget, self.deadline);
        match verdict.class {
            Classification::Success => {
                permit.record(Some(true));
                Step::Done(outcome(verdict), true)
            }
            Classification::RateLimited { retry_after, .. } => {
                permit.record(None);
                if verdict.wait_too_long {
                    let detail = Self::error_detail(&verdict);
                    return Step::Leave(self.leave(FallbackReason::WaitTooLong, detail, status));
                }
                // Without a delay to wait for, a retry now would meet the same limit.
                let delay = retry_after
                    .or_else(|| chain.estimator.wait(self.name, m).ok())
                    .filter(|d| !d.is_zero());
                let fits = delay.filter(|d| self.bypass || *d <= allowed_now);
                if fits.is_some() && self.rate_limit_waits < chain.policy.rate_limit_retries {
                    self.rate_limit_waits += 1;
                    tracing::info!(
                        target: "ratelayer::fallback",
                        provider = %self.name,
                        wait_ms = fits.map(|d| d.as_millis() as u64),
                        "waiting out a rate limit on the same provider"
                    );
                    return Step::Again(fits);
                }
                let detail = delay.map_or_else(String::new, |d| {
                    format!("retry after {:.3}s", d.as_secs_f64())
                });
                Step::Leave(self.leave(FallbackReason::RateLimited, detail, status))
            }
            Classification::QuotaExhausted { retry_after } => {
                permit.record(None);
                let skip = retry_after.unwrap_or(chain.policy.quota_skip);
                *chain.quota_until[self.order[self.pos]]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(later(Instant::now(), skip));
                let detail = format!("skipped for {:.3}s", skip.as_secs_f64());
                Step::Leave(self.leave(FallbackReason::QuotaExhausted, detail, status))
            }
            Classification::ContextOverflow => {
                permit.record(None);
                if verdict.never_fits {
                    let detail = Self::error_detail(&verdict);
                    return Step::Leave(self.leave(FallbackReason::NeverFits, detail, status));
                }
                let next = context_target(chain, self.order, self.pos, self.estimate);
                let detail = format!("about {} tokens", self.estimate);
                Step::Leave(Leave::new(
                    FallbackReason::ContextOverflow,
                    detail,
                    status,
                    next,
                ))
            }
            Classification::Transient { retry_after }
            | Classification::Overloaded { retry_after } => {
                permit.record(Some(false));
                self.unexpected += 1;
                let mut detail = Self::error_detail(&verdict);
                if detail.is_empty() {
                    detail = verdict.class.as_str().to_owned();
                }
                if self.unexpected >= 2 {
                    return Step::Leave(self.leave(FallbackReason::Unexpected, detail, status));
                }
                tracing::info!(
                    target: "ratelayer::fallback",
                    provider = %self.name,
                    status = status.map(|s| s.as_u16()),
                    detail = %detail,
                    "unexpected failure: retrying the same provider once"
                );
                Step::Again(retry_after.filter(|d| *d <= allowed_now))
            }
            Classification::Fatal => {
                permit.record(None);
                if chain.policy.on_fatal == OnFatal::FallBack && !self.bypass {
                    let detail = Self::error_detail(&verdict);
                    return Step::Leave(self.leave(FallbackReason::Fatal, detail, status));
                }
                tracing::info!(
                    target: "ratelayer::fallback",
                    provider = %self.name,
                    status = status.map(|s| s.as_u16()),
                    "fatal failure: returned to the caller"
                );
                Step::Done(outcome(verdict), false)
            }
        }
    }

    /// The checks before the first attempt on a provider: quota skip and wait first.
    fn admit(&self, m: &RequestMeta) -> Result<Duration, Leave> {
        if self.bypass {
            return Ok(Duration::ZERO);
        }
        let idx = self.order[self.pos];
        let skip_until = *self.chain.quota_until[idx]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(until) = skip_until.filter(|u| *u > Instant::now()) {
            let left = until.saturating_duration_since(Instant::now());
            let detail = format!("skipped for {:.3}s more", left.as_secs_f64());
            return Err(self.leave(FallbackReason::QuotaExhausted, detail, None));
        }
        let allowed_now = allowed(self.budget, self.deadline);
        match self.chain.estimator.wait(self.name, m) {
            Err(nf) => Err(self.leave(FallbackReason::NeverFits, nf.to_string(), None)),
            Ok(w) if w > allowed_now => {
                let detail = format!(
                    "would wait {:.3}s, allowed {:.3}s",
                    w.as_secs_f64(),
                    allowed_now.as_secs_f64()
                );
                Err(self.leave(FallbackReason::WaitTooLong, detail, None))
            }
            Ok(w) => Ok(w),
        }
    }
}

pub(crate) async fn run<B, ResB>(
    chain: Arc<Chain<B>>,
    services: Arc<[BoxSvc<B, ResB>]>,
    mut req: Request<B>,
) -> Output<ResB>
where
    B: ReplayableBody + Send + 'static,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    let guard = RequestGuard::new(chain.stats.clone());
    let original_meta = meta::ensure(&mut req).clone();
    let estimate = original_meta.total_tokens();
    let budget = req
        .extensions()
        .get::<WaitBudget>()
        .map_or(chain.policy.wait_budget, |b| b.0);
    let deadline = req.extensions().get::<Deadline>().map(|d| d.0);
    let preferred = req.extensions().get::<PreferredProvider>().cloned();
    let mut attempts: Vec<ProviderAttempt> = Vec::new();

    let order: Vec<usize> = match &preferred {
        None => (0..chain.specs.len()).collect(),
        Some(p) => match chain.specs.iter().position(|s| s.name == p.0) {
            Some(i) => vec![i],
            None => {
                guard.failure();
                return Err(Box::new(AllProvidersFailed {
                    attempts: vec![ProviderAttempt {
                        provider: p.0.to_string(),
                        reason: "no provider of the chain has this name (preferred provider)"
                            .to_owned(),
                        status: None,
                    }],
                }));
            }
        },
    };
    let bypass = preferred.is_some();
    let mut original = Some(req);
    let mut pos = 0;

    while pos < order.len() {
        let idx = order[pos];
        let name = chain.specs[idx].name.clone();
        let mut walk = Walk {
            chain: &chain,
            name: &name,
            pos,
            order: &order,
            estimate,
            budget,
            deadline,
            bypass,
            unexpected: 0,
            rate_limit_waits: 0,
        };
        let mut first = true;
        let left = loop {
            let permit = if bypass {
                Permit::none()
            } else {
                match chain.breakers[idx].try_acquire() {
                    Some(p) => p,
                    None => break walk.leave(FallbackReason::CircuitOpen, String::new(), None),
                }
            };
            let Some(mut attempt) = attempt_request(&mut original) else {
                let detail = "the request body cannot be replayed (use ReplayBody)".to_owned();
                break Leave::new(FallbackReason::NotReplayable, detail, None, order.len());
            };
            let m = prepare(&chain, idx, &mut attempt, &original_meta);

            // Wait first: how long would this provider make the request wait now?
            if first {
                first = false;
                match walk.admit(&m) {
                    Err(l) => break l,
                    Ok(w) => {
                        if !w.is_zero() {
                            tracing::debug!(
                                target: "ratelayer::fallback",
                                provider = %name,
                                wait_ms = w.as_millis() as u64,
                                "the provider's wait fits the budget: its stack waits"
                            );
                        }
                        chain.stats.waited(w);
                    }
                }
            }

            // Drive a fresh clone's readiness for this attempt (never a service readied
            // earlier, and none is held while waiting), then call it.
            chain.stats.sent(idx);
            let result = services[idx].clone().oneshot(attempt).await;
            let verdict = judge(&chain, m.dialect(), result).await;
            match walk.decide(verdict, &m, permit) {
                Step::Done(out, success) => {
                    if success {
                        guard.success(idx, idx == 0);
                    } else {
                        guard.failure();
                    }
                    return out;
                }
                Step::Leave(l) => break l,
                Step::Again(wait) => {
                    if let Some(d) = wait.filter(|d| !d.is_zero()) {
                        chain.stats.waited(d);
                        tokio::time::sleep(d).await;
                    }
                }
            }
        };
        pos = leave(&chain, &order, &mut attempts, pos, left);
    }
    guard.failure();
    Err(Box::new(AllProvidersFailed { attempts }))
}
