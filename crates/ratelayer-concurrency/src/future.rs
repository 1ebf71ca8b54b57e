//! [`ResponseFuture`] and the admission steps of a request that has to wait.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use ratelayer_core::{BoxError, LimitState, Scope};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::limiter::{Admit, Book, Booking, Permit, ScopeLimiter, Waiter, priority_str};
use ratelayer_core::engine::{Priority, Reserve};
use std::sync::Arc;

pin_project! {
    /// The response future of [`Concurrency`](crate::Concurrency).
    ///
    /// Dropping it at any point leaves nothing behind: it leaves the queue, gives back an
    /// unused reservoir booking and releases its permit.
    ///
    /// ```
    /// use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits, ResponseFuture};
    /// use ratelayer_core::Scope;
    /// use tower::{Layer, Service, ServiceExt};
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
    /// let (layer, handle) = ConcurrencyLayer::pair(ConcurrencyConfig::new().provider("kimi", Limits::new().max_concurrent(1))).unwrap();
    /// let mut svc = layer.layer(inner);
    /// let _first = svc.ready().await.unwrap().call(request()).await.unwrap();
    /// let queued: ResponseFuture<_, _> = svc.ready().await.unwrap().call(request());
    /// let mut queued = tokio_test::task::spawn(queued);
    /// tokio_test::assert_pending!(queued.poll());
    /// assert_eq!(handle.stats(&Scope::new("kimi")).unwrap().queued, 1);
    /// drop(queued); // leaves the queue
    /// assert_eq!(handle.stats(&Scope::new("kimi")).unwrap().queued, 0);
    /// # }
    /// ```
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        inner: Option<S::Future>,
        permit: Option<Permit>,
        wait: Option<Box<Wait<S, B>>>,
        error: Option<BoxError>,
        // When a request that waited was sent: stamped on its response (`SentAt`).
        sent_at: Option<Instant>,
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("called", &self.inner.is_some())
            .field("waiting", &self.wait.is_some())
            .finish()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn called(fut: S::Future, permit: Permit) -> Self {
        ResponseFuture {
            inner: Some(fut),
            permit: Some(permit),
            wait: None,
            error: None,
            sent_at: None,
        }
    }

    pub(crate) fn waiting(wait: Wait<S, B>) -> Self {
        ResponseFuture {
            inner: None,
            permit: None,
            wait: Some(Box::new(wait)),
            error: None,
            sent_at: None,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            inner: None,
            permit: None,
            wait: None,
            error: Some(error),
            sent_at: None,
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        if let Some(wait) = this.wait.as_mut() {
            let (fut, permit) = ready!(wait.poll_admit(cx))?;
            *this.wait = None;
            *this.permit = Some(permit);
            *this.sent_at = Some(Instant::now());
            this.inner.set(Some(fut));
        }
        let Some(fut) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Err("ResponseFuture polled after completion".into()));
        };
        let out = ready!(fut.poll(cx));
        this.inner.set(None);
        let permit = this.permit.take();
        Poll::Ready(match out {
            Ok(mut res) => {
                if let Some(at) = this.sent_at.take() {
                    ratelayer_core::SentAt(at).stamp(res.extensions_mut());
                }
                Ok(res.map(|body| ResponseBody::new(body, permit)))
            }
            Err(e) => Err(e.into()),
        })
    }
}

enum Stage {
    /// Waiting for the scope's cooldown to pass, before queueing.
    Cooldown,
    /// In the queue.
    Queued(Waiter),
    /// Holding a permit, about to book a start (after any cooldown).
    Admitted(Permit),
    /// Holding a permit; a store that really waits is booking the start.
    Reserving(Permit, Reserve),
    /// Holding a permit and a booked start; sleeping until it, then readying the inner
    /// service.
    Booked(Permit, Booking),
    /// Between states (only while a step runs).
    Moving,
}

impl Stage {
    fn booked(permit: Permit, book: Book) -> Stage {
        match book {
            Book::Done(b) => Stage::Booked(permit, b),
            Book::Pending(r) => Stage::Reserving(permit, r),
        }
    }
}

/// The admission steps of a request that cannot start at once: cooldown, queue, booked
/// start, inner readiness.
///
/// Why a permit is held while sleeping for the reservoir, spacing or a cooldown that began
/// while the request was queued: the start is booked only once the permit is held, so the
/// request starts at its booked instant. Booking first and queueing for the permit
/// afterwards would start requests later than booked, and late starts bunch up (four
/// bookings delayed behind a long request, started back to back next to the following
/// window's bookings, put eight starts in one window). Reservoir, spacing and cooldown
/// are per scope, so while this request sleeps no other request of the scope could start
/// either: the permit costs no throughput. No inner readiness is held: the inner service
/// (a fresh clone) is polled ready only after the sleep.
pub(crate) struct Wait<S, B> {
    svc: S,
    req: Option<Request<B>>,
    limiter: Arc<ScopeLimiter>,
    priority: Priority,
    state: Option<(LimitState, Scope)>,
    stage: Stage,
    sleep: Option<Pin<Box<Sleep>>>,
    since: Instant,
}

impl<S, B> Wait<S, B> {
    pub(crate) fn new(
        svc: S,
        req: Request<B>,
        limiter: Arc<ScopeLimiter>,
        priority: Priority,
        state: Option<(LimitState, Scope)>,
    ) -> Self {
        Wait {
            svc,
            req: Some(req),
            limiter,
            priority,
            state,
            stage: Stage::Cooldown,
            sleep: None,
            since: Instant::now(),
        }
    }

    pub(crate) fn queued(mut self, waiter: Waiter) -> Self {
        self.stage = Stage::Queued(waiter);
        self
    }

    pub(crate) fn admitted(mut self, permit: Permit, book: Book) -> Self {
        self.stage = Stage::booked(permit, book);
        self
    }

    fn cooldown_until(&self, now: Instant) -> Option<Instant> {
        let (state, scope) = self.state.as_ref()?;
        state.cooldown_until_at(scope, now).filter(|u| *u > now)
    }

    /// Sleeps until `until`; `Ready` once it has passed.
    fn poll_sleep(&mut self, until: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = match &mut self.sleep {
            Some(s) => {
                if s.deadline() != until {
                    s.as_mut().reset(until);
                }
                s
            }
            slot @ None => slot.insert(Box::pin(tokio::time::sleep_until(until))),
        };
        sleep.as_mut().poll(cx)
    }

    fn waited_ms(&self) -> f64 {
        self.since.elapsed().as_secs_f64() * 1000.0
    }
}

impl<S, B> Wait<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    pub(crate) fn poll_admit(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(S::Future, Permit), BoxError>> {
        loop {
            let now = Instant::now();
            match std::mem::replace(&mut self.stage, Stage::Moving) {
                Stage::Cooldown => {
                    if let Some(until) = self.cooldown_until(now) {
                        self.stage = Stage::Cooldown;
                        tracing::debug!(
                            scope = %self.limiter.scope(),
                            wait_ms = until.duration_since(now).as_millis() as u64,
                            "waiting for the scope's cooldown before queueing"
                        );
                        ready!(self.poll_sleep(until, cx));
                        continue;
                    }
                    match self.limiter.acquire(self.priority)? {
                        Admit::Now(p) => self.stage = Stage::Admitted(p),
                        Admit::Queued(w) => self.stage = Stage::Queued(w),
                    }
                }
                Stage::Queued(mut w) => match w.poll_acquire(cx) {
                    Poll::Ready(p) => {
                        let p = p?;
                        tracing::debug!(
                            scope = %self.limiter.scope(),
                            priority = priority_str(self.priority),
                            waited_ms = self.waited_ms(),
                            "concurrency permit granted after queueing"
                        );
                        self.stage = Stage::Admitted(p);
                    }
                    Poll::Pending => {
                        self.stage = Stage::Queued(w);
                        return Poll::Pending;
                    }
                },
                Stage::Admitted(p) => {
                    if let Some(until) = self.cooldown_until(now) {
                        // A cooldown began while queued: nothing of the scope starts
                        // before it ends.
                        tracing::debug!(
                            scope = %self.limiter.scope(),
                            wait_ms = until.duration_since(now).as_millis() as u64,
                            "waiting for the scope's cooldown"
                        );
                        self.stage = Stage::Admitted(p);
                        ready!(self.poll_sleep(until, cx));
                        continue;
                    }
                    let book = self.limiter.book()?;
                    self.stage = Stage::booked(p, book);
                }
                Stage::Reserving(p, mut r) => match Pin::new(&mut r).poll(cx) {
                    Poll::Ready(res) => self.stage = Stage::Booked(p, Booking::from_reserved(res)?),
                    Poll::Pending => {
                        self.stage = Stage::Reserving(p, r);
                        return Poll::Pending;
                    }
                },
                Stage::Booked(p, mut booking) => {
                    if let Some(at) = booking.ready_at().filter(|at| *at > now) {
                        tracing::debug!(
                            scope = %self.limiter.scope(),
                            wait_ms = at.duration_since(now).as_millis() as u64,
                            "waiting for the reservoir or spacing"
                        );
                        self.stage = Stage::Booked(p, booking);
                        ready!(self.poll_sleep(at, cx));
                        continue;
                    }
                    if self.cooldown_until(now).is_some() {
                        // A cooldown began during the sleep: give the booking back and
                        // book again after it.
                        drop(booking);
                        self.stage = Stage::Admitted(p);
                        continue;
                    }
                    match self.svc.poll_ready(cx) {
                        Poll::Pending => {
                            self.stage = Stage::Booked(p, booking);
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                        Poll::Ready(Ok(())) => {}
                    }
                    let Some(req) = self.req.take() else {
                        return Poll::Ready(Err("request already sent".into()));
                    };
                    booking.use_now();
                    tracing::trace!(
                        scope = %self.limiter.scope(),
                        waited_ms = self.waited_ms(),
                        "request admitted"
                    );
                    return Poll::Ready(Ok((self.svc.call(req), p)));
                }
                Stage::Moving => {
                    return Poll::Ready(Err("admission polled after completion".into()));
                }
            }
        }
    }
}
