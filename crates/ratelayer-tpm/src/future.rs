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
    #[project = StateProj]
    enum State<F> {
        Failed { error: Option<BoxError> },
        // In the queue; woken by refunds too, to go ahead when that delays the head not
        // at all.
        Queued { lock: Lock, #[pin] refunded: Option<OwnedNotified> },
        Trying { reserve: Reserve },
        Sleeping { #[pin] sleep: Sleep, #[pin] refunded: Option<OwnedNotified> },
        Readying,
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
    pub struct ResponseFuture<S, B, F> {
        #[pin]
        state: State<F>,
        pending: Option<Pending<S, B>>,
        charge: Option<Charge>,
    }
}

impl<S, B, F> std::fmt::Debug for ResponseFuture<S, B, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Failed { .. } => "failed",
            State::Queued { .. } => "queued",
            State::Trying { .. } => "trying",
            State::Sleeping { .. } => "sleeping",
            State::Readying => "readying",
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
            pending: None,
            charge,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            pending: None,
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
        ResponseFuture {
            state: State::Queued {
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
            charge: None,
        }
    }
}

fn gone() -> BoxError {
    "ResponseFuture polled after completion".into()
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
                StateProj::Queued { lock, mut refunded } => {
                    let Poll::Ready(guard) = lock.as_mut().poll(cx) else {
                        // Not at the head: when tokens come back, go ahead if that delays
                        // the head not at all (see `ScopeEntry::backfills`).
                        let Some(n) = refunded.as_mut().as_pin_mut() else {
                            return Poll::Pending;
                        };
                        ready!(n.poll(cx));
                        let Some(p) = this.pending.as_mut() else {
                            this.state.set(State::Done);
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
                                this.state.set(State::Readying);
                            }
                        }
                        // Queued still: wait for the lock or the next refund.
                        continue;
                    };
                    let Some(p) = this.pending.as_mut() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(gone()));
                    };
                    p.guard = Some(Head::new(guard, Arc::clone(&p.entry), &p.estimate.costs()));
                    let reserve = match &p.ticket {
                        Some(t) => t
                            .entry
                            .handle
                            .reserve(&p.estimate.costs(), Some(Duration::ZERO)),
                        None => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(gone()));
                        }
                    };
                    this.state.set(State::Trying { reserve });
                }
                StateProj::Trying { reserve } => {
                    let res = ready!(Pin::new(reserve).poll(cx));
                    let Some(p) = this.pending.as_mut() else {
                        this.state.set(State::Done);
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
                                this.state.set(State::Sleeping {
                                    sleep: sleep_until(ready_at),
                                    refunded: None,
                                });
                            } else {
                                this.state.set(State::Readying);
                            }
                        }
                        Err(ReserveError::WaitTooLong(e)) => {
                            let waited = p.since.elapsed();
                            if let Some(max) = p.shared.config.max_wait
                                && waited.saturating_add(e.wait) > max
                            {
                                *this.pending = None;
                                this.state.set(State::Done);
                                return Poll::Ready(Err(Box::new(WaitTooLong {
                                    wait: waited.saturating_add(e.wait),
                                    max_wait: max,
                                    ..e
                                })));
                            }
                            // Sleep until it fits, or until a request gives tokens back.
                            let refunded = Arc::clone(&p.entry.refunded).notified_owned();
                            this.state.set(State::Sleeping {
                                sleep: sleep_until(Instant::now() + e.wait),
                                refunded: Some(refunded),
                            });
                        }
                        Err(e) => {
                            *this.pending = None;
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into_box()));
                        }
                    }
                }
                StateProj::Sleeping { sleep, refunded } => {
                    let woken = refunded.as_pin_mut().is_some_and(|n| n.poll(cx).is_ready());
                    if !woken {
                        ready!(sleep.poll(cx));
                    }
                    let Some(p) = this.pending.as_mut() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(gone()));
                    };
                    match &p.ticket {
                        // Still at the head of the queue: try again.
                        Some(t) if p.reservation.is_none() => {
                            let reserve = t
                                .entry
                                .handle
                                .reserve(&p.estimate.costs(), Some(Duration::ZERO));
                            this.state.set(State::Trying { reserve });
                        }
                        _ => this.state.set(State::Readying),
                    }
                }
                StateProj::Readying => {
                    let Some(p) = this.pending.as_mut() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(gone()));
                    };
                    if let Err(e) = ready!(p.svc.poll_ready(cx)) {
                        // The reservation is given back when `pending` is dropped.
                        *this.pending = None;
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    if let Some(p) = this.pending.take() {
                        let Pending {
                            req,
                            mut svc,
                            shared,
                            estimate,
                            entry,
                            reservation,
                            ..
                        } = p;
                        if let Some(r) = reservation {
                            // Committed as it is sent: a late send is counted from now.
                            *this.charge = Some(Charge::new(r.commit(), entry, shared, estimate));
                        }
                        let fut = svc.call(req);
                        this.state.set(State::Calling { fut });
                    }
                }
                StateProj::Calling { fut } => {
                    let res = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    let charge = this.charge.take();
                    return Poll::Ready(match res {
                        Ok(resp) => {
                            let (parts, body) = resp.into_parts();
                            let watch = charge.and_then(|c| c.on_response(&parts)).map(Watch::new);
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
