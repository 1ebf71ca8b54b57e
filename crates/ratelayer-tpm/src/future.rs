//! [`ResponseFuture`]: reserve, wait, drive the inner service ready, call, and hand the
//! reservation to the response body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use ratelayer_core::BoxError;
use ratelayer_core::engine::{Reservation, Reserve, ScopeHandle};
use tokio::time::{Sleep, sleep_until};
use tower_service::Service;

use crate::body::{ResponseBody, Watch};
use crate::charge::{Charge, Estimate, Shared};

/// A request waiting for its reservation to be usable.
struct Pending<S, B> {
    req: Request<B>,
    svc: S,
    handle: ScopeHandle,
    shared: Arc<Shared>,
    estimate: Estimate,
    reservation: Option<Reservation>,
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Failed { error: Option<BoxError> },
        Reserving { reserve: Reserve },
        Sleeping { #[pin] sleep: Sleep },
        Readying,
        Calling { #[pin] fut: F },
        Done,
    }
}

pin_project! {
    /// The response future of [`TpmLimit`](crate::TpmLimit).
    ///
    /// Dropped before the request was sent (while reserving, waiting or driving the inner
    /// service ready), it gives its reservation back. Dropped after, the tokens stay
    /// charged: the provider counted them.
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
            State::Reserving { .. } => "reserving",
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

    pub(crate) fn sleeping(
        req: Request<B>,
        svc: S,
        reservation: Reservation,
        handle: ScopeHandle,
        shared: Arc<Shared>,
        estimate: Estimate,
    ) -> Self {
        let sleep = sleep_until(reservation.ready_at());
        ResponseFuture {
            state: State::Sleeping { sleep },
            pending: Some(Pending {
                req,
                svc,
                handle,
                shared,
                estimate,
                reservation: Some(reservation),
            }),
            charge: None,
        }
    }

    pub(crate) fn reserving(
        req: Request<B>,
        svc: S,
        reserve: Reserve,
        handle: ScopeHandle,
        shared: Arc<Shared>,
        estimate: Estimate,
    ) -> Self {
        ResponseFuture {
            state: State::Reserving { reserve },
            pending: Some(Pending {
                req,
                svc,
                handle,
                shared,
                estimate,
                reservation: None,
            }),
            charge: None,
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
                    let e = error
                        .take()
                        .unwrap_or_else(|| "polled after completion".into());
                    this.state.set(State::Done);
                    return Poll::Ready(Err(e));
                }
                StateProj::Reserving { reserve } => {
                    let res = ready!(Pin::new(reserve).poll(cx));
                    match res {
                        Ok(reservation) => {
                            let ready_at = reservation.ready_at();
                            if let Some(p) = this.pending.as_mut() {
                                p.reservation = Some(reservation);
                            }
                            this.state.set(State::Sleeping {
                                sleep: sleep_until(ready_at),
                            });
                        }
                        Err(e) => {
                            *this.pending = None;
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into_box()));
                        }
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    let Some(p) = this.pending.as_mut() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err("polled after completion".into()));
                    };
                    if let Err(e) = ready!(p.svc.poll_ready(cx)) {
                        // The reservation is given back when `pending` is dropped.
                        *this.pending = None;
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    if let Some(mut p) = this.pending.take() {
                        if let Some(r) = p.reservation.take() {
                            let committed = r.commit();
                            *this.charge =
                                Some(Charge::new(committed, p.handle, p.shared, p.estimate));
                        }
                        let fut = p.svc.call(p.req);
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
