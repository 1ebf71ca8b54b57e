//! [`Concurrency`], the service.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use ratelayer_core::{BoxError, LimitState, ReplayableBody, RequestMeta, Scope, meta};
use tokio::time::Instant;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::future::{ResponseFuture, Wait};
use crate::handle::Shared;
use crate::limiter::{Admit, Book, ScopeLimiter, Window};
use ratelayer_core::engine::Priority;

/// Applies per-scope concurrency limits, reservoirs and spacing to `S`. Built by
/// [`ConcurrencyLayer`](crate::ConcurrencyLayer).
///
/// `poll_ready` is the inner service's readiness. A request that can start at once (a free
/// permit, nobody queued, nothing to pace, no cooldown) calls the readied inner service
/// right in `call`. Any other request drops that readiness and waits in its response
/// future; once admitted, a fresh clone of the inner service is polled ready and called.
///
/// ```
/// use ratelayer_concurrency::{Concurrency, ConcurrencyConfig, ConcurrencyLayer, Limits};
/// use tower::{Layer, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use std::convert::Infallible;
/// # use http::{Request, Response};
/// # use ratelayer_core::{RequestMeta, meta};
/// # let request = || {
/// #     let mut req = Request::new(String::new());
/// #     meta::set(&mut req, RequestMeta::new("kimi", 10, 10));
/// #     req
/// # };
/// # let inner = tower::service_fn(|_: Request<String>| async { Ok::<_, Infallible>(Response::new(String::from("ok"))) });
/// let layer = ConcurrencyLayer::new(ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1))).unwrap();
/// let svc: Concurrency<_> = layer.layer(inner);
/// let first = svc.clone().oneshot(request()).await.unwrap(); // clones share the permit
/// let mut second = tokio_test::task::spawn(svc.clone().oneshot(request()));
/// tokio_test::assert_pending!(second.poll()); // queued
/// drop(first); // its body held the permit
/// assert!(tokio_test::assert_ready!(second.poll()).is_ok());
/// # }
/// ```
#[derive(Debug)]
pub struct Concurrency<S> {
    inner: S,
    shared: Arc<Shared>,
    state: Option<LimitState>,
}

impl<S: Clone> Clone for Concurrency<S> {
    fn clone(&self) -> Self {
        Concurrency {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            state: self.state.clone(),
        }
    }
}

impl<S> Concurrency<S> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, state: Option<LimitState>) -> Self {
        Concurrency {
            inner,
            shared,
            state,
        }
    }

    /// The inner service.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer};
    /// use tower::Layer;
    /// let svc = ConcurrencyLayer::new(ConcurrencyConfig::new()).unwrap().layer(7u8);
    /// assert_eq!(*svc.get_ref(), 7);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer};
    /// use tower::Layer;
    /// let mut svc = ConcurrencyLayer::new(ConcurrencyConfig::new()).unwrap().layer(7u8);
    /// *svc.get_mut() += 1;
    /// assert_eq!(*svc.get_ref(), 8);
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

/// The request limit the provider stated for `scope`: the tier's requests per minute, else
/// the last `limit-requests` header (per its window, or per minute).
fn learned_window(state: &LimitState, scope: &Scope) -> Option<Window> {
    // One lookup; only the tier's rate and the requests' line of the snapshot are read.
    let (limit, interval) = state.with_scope(scope, |tier, seen| {
        if let Some(rpm) = tier.and_then(|t| t.rpm) {
            return Some((rpm, Duration::from_secs(60)));
        }
        let r = &seen?.snapshot.requests;
        Some((r.limit?, r.window.unwrap_or(Duration::from_secs(60))))
    })?;
    Some(Window {
        limit: u32::try_from(limit).unwrap_or(u32::MAX).max(1),
        interval,
    })
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Concurrency<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ReqBody: ReplayableBody,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let limiter = match meta::get(&req) {
            Some(m) => self.shared.limiter_for(m),
            None => self.shared.limiter_for(meta::ensure(&mut req)),
        };
        // Most requests carry their metadata only: no priority to look up.
        let priority = if req.extensions().len() > 1 {
            req.extensions()
                .get::<Priority>()
                .copied()
                .unwrap_or_default()
        } else {
            Priority::default()
        };
        let mut cooling = false;
        if let Some(state) = &self.state
            && let Some(meta) = meta::get(&req)
        {
            // The learned limit is derived again only when a tier or a stated request
            // limit changed, or the configuration, or the model of a scope counted
            // across models: both counters are read before what they count, so a change
            // made meanwhile shows next time.
            let key = limiter.learn_key(
                state.generation() ^ self.shared.epoch().rotate_left(32),
                meta.model.as_deref(),
            );
            if !limiter.learned_from(key) {
                let full = meta.scope();
                let learn = self
                    .shared
                    .config()
                    .limits_for(full.provider(), full.model())
                    .learn_from_provider;
                let learned = learn.then(|| learned_window(state, &full));
                limiter.learned(key, learned);
            }
            if state.store().ever_cooled_down() {
                cooling = state.cooldown_until(&meta.scope()).is_some();
            }
        }
        if !cooling {
            if let Some(permit) = limiter.try_start_now() {
                // The fastest path: nothing to book and a free permit; the readied inner
                // service is called here.
                return ResponseFuture::called(self.inner.call(req), permit);
            }
            // A free permit with nobody queued needs no lease future.
            let admit = match limiter.try_permit() {
                Some(permit) => Ok(Admit::Now(permit)),
                None => limiter.acquire(priority),
            };
            match admit {
                Err(full) => return ResponseFuture::failed(full.into()),
                Ok(Admit::Now(permit)) => {
                    let book = match limiter.book() {
                        Ok(book) => book,
                        Err(e) => return ResponseFuture::failed(e),
                    };
                    let book = match book {
                        Book::Done(mut booking)
                            if booking.ready_at().is_none_or(|at| at <= Instant::now()) =>
                        {
                            // The fast path: admitted at once, the readied inner service
                            // is called here.
                            booking.use_now();
                            return ResponseFuture::called(self.inner.call(req), permit);
                        }
                        book => book,
                    };
                    return ResponseFuture::waiting(
                        Self::wait(
                            &mut self.inner,
                            &self.state,
                            req,
                            (*limiter).clone(),
                            priority,
                        )
                        .admitted(permit, book),
                    );
                }
                Ok(Admit::Queued(waiter)) => {
                    return ResponseFuture::waiting(
                        Self::wait(
                            &mut self.inner,
                            &self.state,
                            req,
                            (*limiter).clone(),
                            priority,
                        )
                        .queued(waiter),
                    );
                }
            }
        }
        ResponseFuture::waiting(Self::wait(
            &mut self.inner,
            &self.state,
            req,
            (*limiter).clone(),
            priority,
        ))
    }
}

impl<S: Clone> Concurrency<S> {
    /// The slow path: give up the inner readiness (the request will wait) and hand a fresh
    /// clone to the future.
    fn wait<B>(
        inner: &mut S,
        state: &Option<LimitState>,
        req: Request<B>,
        limiter: Arc<ScopeLimiter>,
        priority: Priority,
    ) -> Wait<S, B> {
        let fresh = inner.clone();
        drop(std::mem::replace(inner, fresh));
        let full = state
            .as_ref()
            .and_then(|_| meta::get(&req).map(RequestMeta::scope));
        Wait::new(
            inner.clone(),
            req,
            limiter,
            priority,
            state.clone().zip(full),
        )
    }
}
