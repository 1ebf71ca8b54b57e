//! [`ResponseFuture`]: reserve, wait, drive the inner service ready, call, and hand the
//! reservation to the response body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use ratelayer_core::BoxError;
use std::time::Duration;

use ratelayer_core::WaitTooLong;
use ratelayer_core::engine::{Reservation, Reserve, ReserveError};
use tokio::sync::{OwnedMutexGuard, futures::OwnedNotified};
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::body::{ResponseBody, Watch};
use crate::charge::{Charge, Estimate, Head, ScopeEntry, Shared, Ticket};

type Lock = Pin<Box<dyn Future<Output = OwnedMutexGuard<()>> + Send>>;

/// A request waiting for its turn and its budget.
struct Pending<S, B> {
    req: Request<B>,
    svc: S,
    shared: Arc<Shared>,
    estimate: Estimate,
    entry: Arc<ScopeEntry>,
    since: Instant,
    /// Its place among the scope's waiters (until it has booked).
    ticket: Option<Ticket>,
    /// The head of the queue's lock (while it waits for the budget).
    guard: Option<Head>,
    /// The booking, until the request is sent.
    reservation: Option<Reservation>,
}

pin_project! {
    #[project = WaitProj]
    enum Wait {
        // In the queue; woken by refunds too, to go ahead when that delays the head not
        // at all.
        Queued { lock: Lock, #[pin] refunded: Option<OwnedNotified> },
        Trying { reserve: Reserve },
        Sleeping { #[pin] sleep: Sleep, #[pin] refunded: Option<OwnedNotified> },
        Readying,
    }
}

pin_project! {
    /// The slow path of a request that must wait: boxed, so the future of a request that
    /// goes at once stays small (it is moved by every layer around it).
    struct Waiting<S, B> {
        #[pin]
        wait: Wait,
        pending: Option<Pending<S, B>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, F> {
        Failed { error: Option<BoxError> },
        Waiting { waiting: Pin<Box<Waiting<S, B>>> },
        Calling { #[pin] fut: F },
        Done,
    }
}

pin_project! {
    /// The response future of [`TpmLimit`](crate::TpmLimit).
    ///
    /// A request that must wait joins its scope's FIFO queue (one that delays the head
    /// not at all may go first, when it arrives or when tokens come back: see the
    /// [crate docs](crate)); the request at the head
    /// sleeps until its tokens fit, books them, and leaves the queue; the inner service is
    /// then driven ready and called. Dropped before the request was sent (queued, waiting
    /// or driving the inner service ready), it gives its reservation back and leaves the
    /// queue. Dropped after, the tokens stay charged: the provider counted them.
    ///
    /// ```
    /// # use std::{convert::Infallible, time::Duration};
    /// # use http::{Request, Response};
    /// # use ratelayer_core::{ReplayBody, RequestMeta, meta};
    /// use ratelayer_tpm::{Budget, ModelLimits, ResponseFuture, TpmConfig, TpmLimitLayer};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let meta = |tokens: u64| RequestMeta::new("openai", tokens, 0);
    /// # let request = |tokens: u64| {
    /// #     let mut req = Request::new(ReplayBody::empty());
    /// #     meta::set(&mut req, meta(tokens));
    /// #     req
    /// # };
    /// # let inner = service_fn(|_: Request<ReplayBody>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    /// let layer = TpmLimitLayer::new(TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(1_000))).safety_margin(0.0)).unwrap();
    /// let mut svc = layer.layer(inner);
    /// svc.ready().await.unwrap().call(request(500)).await.unwrap();
    /// let queued: ResponseFuture<_, _, _> = svc.ready().await.unwrap().call(request(600));
    /// assert!(tokio::time::timeout(Duration::from_secs(1), queued).await.is_err()); // waits, then dropped
    /// // It left the queue: 500 tokens fit now, as they would not while it waited first.
    /// assert_eq!(layer.wait_time(&meta(500)).unwrap(), Duration::ZERO);
    /// # }
    /// ```
    pub struct ResponseFuture<S, B, F> {
        #[pin]
        state: State<S, B, F>,
        charge: Option<Charge>,
    }
}

impl<S, B, F> std::fmt::Debug for ResponseFuture<S, B, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Failed { .. } => "failed",
            State::Waiting { waiting } => match waiting.wait {
                Wait::Queued { .. } => "queued",
                Wait::Trying { .. } => "trying",
                Wait::Sleeping { .. } => "sleeping",
                Wait::Readying => "readying",
            },
            State::Calling { .. } => "calling",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("charge", &self.charge)
            .finish_non_exhaustive()
    }
}

impl<S, B, F> ResponseFuture<S, B, F> {
    pub(crate) fn calling(fut: F, charge: Option<Charge>) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            charge,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            charge: None,
        }
    }

    pub(crate) fn queued(
        req: Request<B>,
        svc: S,
        ticket: Ticket,
        shared: Arc<Shared>,
        estimate: Estimate,
    ) -> Self {
        let lock: Lock = Box::pin(Arc::clone(&ticket.entry.queue).lock_owned());
        let waiting = Waiting {
            wait: Wait::Queued {
                lock,
                refunded: Some(Arc::clone(&ticket.entry.refunded).notified_owned()),
            },
            pending: Some(Pending {
                req,
                svc,
                shared,
                estimate,
                entry: Arc::clone(&ticket.entry),
                since: Instant::now(),
                ticket: Some(ticket),
                guard: None,
                reservation: None,
            }),
        };
        ResponseFuture {
            state: State::Waiting {
                waiting: Box::pin(waiting),
            },
            charge: None,
        }
    }
}

fn gone() -> BoxError {
    "ResponseFuture polled after completion".into()
}

/// What the slow path ends with: the readied service, the request, and its charge.
type ToSend<S, B> = (S, Request<B>, Option<Charge>);

impl<S, B> Waiting<S, B> {
    /// Drives the wait (queue, budget, inner readiness) to the point of sending.
    fn poll_wait<ResB>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<ToSend<S, B>, BoxError>>
    where
        S: Service<Request<B>, Response = Response<ResB>>,
        S::Error: Into<BoxError>,
    {
        let mut this = self.project();
        loop {
            match this.wait.as_mut().project() {
                WaitProj::Queued { lock, mut refunded } => {
                    let Poll::Ready(guard) = lock.as_mut().poll(cx) else {
                        // Not at the head: when tokens come back, go ahead if that delays
                        // the head not at all (see `ScopeEntry::backfills`).
                        let Some(n) = refunded.as_mut().as_pin_mut() else {
                            return Poll::Pending;
                        };
                        ready!(n.poll(cx));
                        let Some(p) = this.pending.as_mut() else {
                            return Poll::Ready(Err(gone()));
                        };
                        let entry = Arc::clone(&p.entry);
                        refunded.set(Some(Arc::clone(&entry.refunded).notified_owned()));
                        let costs = p.estimate.costs();
                        if entry.backfills(&costs) {
                            let mut reserve = entry.handle.reserve(&costs, Some(Duration::ZERO));
                            let mut now_cx = Context::from_waker(Waker::noop());
                            if let Poll::Ready(Ok(r)) = Pin::new(&mut reserve).poll(&mut now_cx)
                                && r.ready_at() <= Instant::now()
                            {
                                // Booked: leave the queue (the lock future is dropped).
                                p.reservation = Some(r);
                                p.ticket = None;
                                this.wait.set(Wait::Readying);
                            }
                        }
                        // Queued still: wait for the lock or the next refund.
                        continue;
                    };
                    let Some(p) = this.pending.as_mut() else {
                        return Poll::Ready(Err(gone()));
                    };
                    p.guard = Some(Head::new(guard, Arc::clone(&p.entry), &p.estimate.costs()));
                    let reserve = match &p.ticket {
                        Some(t) => t
                            .entry
                            .handle
                            .reserve(&p.estimate.costs(), Some(Duration::ZERO)),
                        None => return Poll::Ready(Err(gone())),
                    };
                    this.wait.set(Wait::Trying { reserve });
                }
                WaitProj::Trying { reserve } => {
                    let res = ready!(Pin::new(reserve).poll(cx));
                    let Some(p) = this.pending.as_mut() else {
                        return Poll::Ready(Err(gone()));
                    };
                    match res {
                        Ok(reservation) => {
                            // Booked: leave the queue so the next request can plan.
                            let ready_at = reservation.ready_at();
                            p.reservation = Some(reservation);
                            p.guard = None;
                            p.ticket = None;
                            if ready_at > Instant::now() {
                                this.wait.set(Wait::Sleeping {
                                    sleep: sleep_until(ready_at),
                                    refunded: None,
                                });
                            } else {
                                this.wait.set(Wait::Readying);
                            }
                        }
                        Err(ReserveError::WaitTooLong(e)) => {
                            let waited = p.since.elapsed();
                            if let Some(max) = p.shared.config.max_wait
                                && waited.saturating_add(e.wait) > max
                            {
                                *this.pending = None;
                                return Poll::Ready(Err(Box::new(WaitTooLong {
                                    wait: waited.saturating_add(e.wait),
                                    max_wait: max,
                                    ..e
                                })));
                            }
                            // Sleep until it fits, or until a request gives tokens back.
                            let refunded = Arc::clone(&p.entry.refunded).notified_owned();
                            this.wait.set(Wait::Sleeping {
                                sleep: sleep_until(Instant::now() + e.wait),
                                refunded: Some(refunded),
                            });
                        }
                        Err(e) => {
                            *this.pending = None;
                            return Poll::Ready(Err(e.into_box()));
                        }
                    }
                }
                WaitProj::Sleeping { sleep, refunded } => {
                    let woken = refunded.as_pin_mut().is_some_and(|n| n.poll(cx).is_ready());
                    if !woken {
                        ready!(sleep.poll(cx));
                    }
                    let Some(p) = this.pending.as_mut() else {
                        return Poll::Ready(Err(gone()));
                    };
                    match &p.ticket {
                        // Still at the head of the queue: try again.
                        Some(t) if p.reservation.is_none() => {
                            let reserve = t
                                .entry
                                .handle
                                .reserve(&p.estimate.costs(), Some(Duration::ZERO));
                            this.wait.set(Wait::Trying { reserve });
                        }
                        _ => this.wait.set(Wait::Readying),
                    }
                }
                WaitProj::Readying => {
                    let Some(p) = this.pending.as_mut() else {
                        return Poll::Ready(Err(gone()));
                    };
                    if let Err(e) = ready!(p.svc.poll_ready(cx)) {
                        // The reservation is given back when `pending` is dropped.
                        *this.pending = None;
                        return Poll::Ready(Err(e.into()));
                    }
                    let Some(p) = this.pending.take() else {
                        return Poll::Ready(Err(gone()));
                    };
                    let Pending {
                        req,
                        svc,
                        shared,
                        estimate,
                        entry,
                        reservation,
                        ..
                    } = p;
                    // Committed as it is sent: a late send is counted from now.
                    let charge = reservation
                        .map(|r| Charge::new(r.commit().into_taken(), entry, shared, estimate));
                    return Poll::Ready(Ok((svc, req, charge)));
                }
            }
        }
    }
}

impl<S, B, F, ResB, E> Future for ResponseFuture<S, B, F>
where
    S: Service<Request<B>, Response = Response<ResB>, Future = F>,
    S::Error: Into<BoxError>,
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Failed { error } => {
                    let e = error.take().unwrap_or_else(gone);
                    this.state.set(State::Done);
                    return Poll::Ready(Err(e));
                }
                StateProj::Waiting { waiting } => {
                    let res = ready!(waiting.as_mut().poll_wait(cx));
                    match res {
                        Ok((mut svc, req, charge)) => {
                            *this.charge = charge;
                            let fut = svc.call(req);
                            this.state.set(State::Calling { fut });
                        }
                        Err(e) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                StateProj::Calling { fut } => {
                    let res = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    let charge = this.charge.take();
                    return Poll::Ready(match res {
                        Ok(resp) => {
                            let (mut parts, body) = resp.into_parts();
                            let watch = charge
                                .and_then(|c| c.on_response(&mut parts))
                                .map(Watch::new);
                            Ok(Response::from_parts(
                                parts,
                                ResponseBody::watched(body, watch),
                            ))
                        }
                        // A transport error: the request may have reached the provider, so
                        // its estimate stays charged (`charge` is dropped).
                        Err(e) => Err(e.into()),
                    });
                }
                StateProj::Done => {
                    return Poll::Ready(Err("ResponseFuture polled after completion".into()));
                }
            }
        }
    }
}
