//! [`TpmLimit`]: the service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use std::time::Duration;

use ratelayer_core::engine::{BucketKey, ReserveError, ScopeHandle};
use ratelayer_core::{BoxError, ReplayableBody, Scope, WaitTooLong};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::charge::{Charge, Estimate, KEYS, Shared, Ticket};
use crate::future::ResponseFuture;

/// A service that reserves each request's estimated tokens before sending it. Made by
/// [`TpmLimitLayer`](crate::TpmLimitLayer); see the [crate docs](crate).
///
/// Clones share the budgets; each clone drives its own inner service's readiness.
///
/// ```
/// # use std::{convert::Infallible, time::Duration};
/// # use http::{Request, Response};
/// # use ratelayer_core::{ReplayBody, RequestMeta, WaitTooLong, meta};
/// use ratelayer_tpm::{Budget, ModelLimits, TpmConfig, TpmLimit, TpmLimitLayer};
/// use tower::{Layer, ServiceExt, service_fn};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let request = |tokens: u64| {
/// #     let mut req = Request::new(ReplayBody::empty());
/// #     meta::set(&mut req, RequestMeta::new("openai", tokens, 0));
/// #     req
/// # };
/// let config = TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(1_000)))
///     .safety_margin(0.0).max_wait(Some(Duration::ZERO));
/// let inner = service_fn(|_: Request<ReplayBody>| async { Ok::<_, Infallible>(Response::new(String::new())) });
/// let svc: TpmLimit<_> = TpmLimitLayer::new(config).unwrap().layer(inner);
/// svc.clone().oneshot(request(600)).await.unwrap();
/// let err = svc.clone().oneshot(request(600)).await.unwrap_err(); // another clone, the same budget
/// assert!(err.downcast_ref::<WaitTooLong>().is_some());
/// # }
/// ```
#[derive(Debug)]
pub struct TpmLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for TpmLimit<S> {
    fn clone(&self) -> Self {
        TpmLimit {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> TpmLimit<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        TpmLimit { inner, shared }
    }

    /// The inner service.
    ///
    /// ```
    /// use ratelayer_tpm::{TpmConfig, TpmLimitLayer};
    /// use tower_layer::Layer;
    /// let svc = TpmLimitLayer::new(TpmConfig::new()).unwrap().layer(7u8);
    /// assert_eq!(*svc.get_ref(), 7);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for TpmLimit<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ReqB: ReplayableBody,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqB, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let m = self.shared.metadata(&mut req);
        let scope = m.scope();
        let Some(entry) = self.shared.entry(&scope) else {
            // No budget applies: pass through.
            return ResponseFuture::calling(self.inner.call(req), None);
        };
        let estimate = Estimate::of(&self.shared.calibration, &scope, m);
        let costs = estimate.costs();
        let max_wait = self.shared.config.max_wait;
        // Nobody waits: book now if it fits now. The in-memory store answers at once, so
        // the fast path needs no clone of the inner service and no allocation.
        const TOKENS: &str = "the token budget";
        let (wait, reason) = if entry.idle() || entry.backfills(&costs) {
            // Booked and committed at once if it fits now (one clock read), as a bare
            // receipt: the entry keeps the handle that adjusts it.
            match entry.handle.try_take(&costs) {
                Some(Ok(used)) => {
                    let charge =
                        Charge::new(used, Arc::clone(&entry), Arc::clone(&self.shared), estimate);
                    return ResponseFuture::calling(self.inner.call(req), Some(charge));
                }
                // The engine says what it waits for: a budget, or a cooldown after a 429.
                Some(Err(ReserveError::WaitTooLong(e))) => (e.wait, e.reason),
                Some(Err(ReserveError::NeverFits(e))) => {
                    return refuse(&scope, &estimate, Box::new(e));
                }
                // A networked store: the head of the queue asks again.
                None => (Duration::ZERO, TOKENS),
            }
        } else {
            match entry.queue_wait(&costs) {
                Ok(w) => (w, "the token budget, behind the requests queued for it"),
                Err(e) => return refuse(&scope, &estimate, Box::new(e)),
            }
        };
        if let Some(max) = max_wait
            && wait > max
        {
            let e = WaitTooLong {
                scope: scope.clone(),
                wait,
                max_wait: max,
                reason,
            };
            return refuse(&scope, &estimate, Box::new(e));
        }
        log_wait(&entry.handle, wait, &estimate);
        let svc = self.fresh_clone();
        let ticket = Ticket::new(entry, costs);
        ResponseFuture::queued(req, svc, ticket, Arc::clone(&self.shared), estimate)
    }
}

/// Fails a request at once (never sent).
fn refuse<S, B, F>(scope: &Scope, estimate: &Estimate, e: BoxError) -> ResponseFuture<S, B, F> {
    tracing::info!(scope = %scope, model = scope.model().unwrap_or("-"),
        request = estimate.total(), error = %e, "tpm: request refused");
    ResponseFuture::failed(e)
}

impl<S: Clone> TpmLimit<S> {
    /// An unready clone for a future that must wait, and an unready clone in place of the
    /// readied inner service (dropped: a permit it holds is released now, not after the
    /// wait).
    fn fresh_clone(&mut self) -> S {
        let svc = self.inner.clone();
        self.inner = svc.clone();
        svc
    }
}

/// The wait event: model, the binding limit and what it holds, the request's size and
/// the wait.
fn log_wait(handle: &ScopeHandle, wait: Duration, estimate: &Estimate) {
    let scope = handle.scope();
    let costs = estimate.costs();
    // The fullest configured bucket (relative to its capacity) is the binding one.
    let binding = KEYS
        .into_iter()
        .filter_map(|key| {
            let limit = handle.capacity(key)?;
            let cost = costs.iter().find(|(k, _)| *k == key).map_or(0, |c| c.1);
            let used = handle.used(key).unwrap_or(0);
            (cost > 0).then_some((key, limit, used, cost))
        })
        .max_by(|a, b| {
            let ra = (a.2 + a.3) as f64 / a.1.max(1) as f64;
            let rb = (b.2 + b.3) as f64 / b.1.max(1) as f64;
            ra.total_cmp(&rb)
        });
    let (key, limit, used, cost) =
        binding.unwrap_or((BucketKey::TOKENS_PER_MINUTE, 0, 0, estimate.total()));
    tracing::info!(
        scope = %scope,
        model = scope.model().unwrap_or("-"),
        budget = key.describe(),
        limit,
        used,
        request = cost,
        wait_ms = wait.as_millis() as u64,
        "tpm: waiting for the token budget"
    );
}
