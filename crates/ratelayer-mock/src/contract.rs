//! Tower-contract checks for services you compose.
//!
//! [`StrictService`] wraps any service and enforces the parts of the
//! [`Service`] contract that middleware most often gets wrong:
//!
//! - calling without a successful `poll_ready` first panics;
//! - a clone starts *unready*, whatever the state of the original (so middleware that
//!   clones a readied service and calls the clone is caught);
//! - it counts calls and the response futures still alive, so a test can show that a
//!   cancelled request leaves nothing behind.
//!
//! ```
//! use std::convert::Infallible;
//! use ratelayer_mock::contract::StrictService;
//! use tower::{service_fn, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = StrictService::new(service_fn(|x: u32| async move { Ok::<_, Infallible>(x + 1) }));
//! let probe = svc.probe();
//! assert_eq!(svc.clone().oneshot(41).await.unwrap(), 42);
//! assert_eq!(probe.calls(), 1);
//! assert_eq!(probe.in_flight(), 0);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    ready_polls: AtomicUsize,
}

/// A read-only view of a [`StrictService`]'s counters, shared by all its clones.
///
/// ```
/// use std::convert::Infallible;
/// use ratelayer_mock::contract::StrictService;
/// use tower::{service_fn, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = StrictService::new(service_fn(|x: u8| async move { Ok::<_, Infallible>(x) }));
/// let probe = svc.probe();
/// svc.clone().oneshot(1).await.unwrap();
/// svc.clone().oneshot(2).await.unwrap(); // every clone counts in the same probe
/// assert_eq!((probe.calls(), probe.ready_polls(), probe.in_flight()), (2, 2, 0));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Probe {
    counters: Arc<Counters>,
}

impl Probe {
    /// How many times `call` was invoked, across all clones.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use ratelayer_mock::contract::StrictService;
    /// use tower::{service_fn, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let svc = StrictService::new(service_fn(|x: u8| async move { Ok::<_, Infallible>(x) }));
    /// let probe = svc.probe();
    /// assert_eq!(probe.calls(), 0);
    /// svc.oneshot(1).await.unwrap();
    /// assert_eq!(probe.calls(), 1);
    /// # }
    /// ```
    pub fn calls(&self) -> usize {
        self.counters.calls.load(Ordering::SeqCst)
    }

    /// How many response futures are alive now (created and neither finished nor dropped).
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use ratelayer_mock::contract::StrictService;
    /// use tower::{service_fn, Service, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut svc = StrictService::new(service_fn(|x: u8| async move { Ok::<_, Infallible>(x) }));
    /// let probe = svc.probe();
    /// let future = svc.ready().await.unwrap().call(1);
    /// assert_eq!(probe.in_flight(), 1);
    /// drop(future); // a cancelled request leaves flight too
    /// assert_eq!(probe.in_flight(), 0);
    /// # }
    /// ```
    pub fn in_flight(&self) -> usize {
        self.counters.in_flight.load(Ordering::SeqCst)
    }

    /// The most response futures alive at once so far.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use ratelayer_mock::contract::StrictService;
    /// use tower::{service_fn, Service, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut svc = StrictService::new(service_fn(|x: u8| async move { Ok::<_, Infallible>(x) }));
    /// let probe = svc.probe();
    /// let a = svc.ready().await.unwrap().call(1);
    /// let b = svc.ready().await.unwrap().call(2);
    /// assert_eq!((a.await.unwrap(), b.await.unwrap()), (1, 2));
    /// assert_eq!((probe.max_in_flight(), probe.in_flight()), (2, 0));
    /// # }
    /// ```
    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// How many times `poll_ready` returned `Ready(Ok(()))`.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use ratelayer_mock::contract::StrictService;
    /// use tower::{service_fn, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut svc = StrictService::new(service_fn(|x: u8| async move { Ok::<_, Infallible>(x) }));
    /// let probe = svc.probe();
    /// svc.ready().await.unwrap();
    /// svc.ready().await.unwrap(); // readiness polled twice, never used
    /// assert_eq!((probe.ready_polls(), probe.calls()), (2, 0));
    /// # }
    /// ```
    pub fn ready_polls(&self) -> usize {
        self.counters.ready_polls.load(Ordering::SeqCst)
    }
}

/// A service wrapper that panics when called without readiness and whose clones start
/// unready. See the [module docs](self).
///
/// ```
/// use std::convert::Infallible;
/// use std::panic::{catch_unwind, AssertUnwindSafe};
/// use ratelayer_mock::contract::StrictService;
/// use tower::{service_fn, Service, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut svc = StrictService::new(service_fn(|x: u8| async move { Ok::<_, Infallible>(x) }));
/// assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
/// // A clone of a readied service is unready: calling it breaks the tower contract.
/// svc.ready().await.unwrap();
/// let mut clone = svc.clone();
/// assert!(catch_unwind(AssertUnwindSafe(|| drop(clone.call(8)))).is_err());
/// # }
/// ```
#[derive(Debug)]
pub struct StrictService<S> {
    inner: S,
    ready: bool,
    counters: Arc<Counters>,
}

impl<S> StrictService<S> {
    /// Wraps `inner`.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use ratelayer_mock::contract::StrictService;
    /// use tower::{service_fn, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let svc = StrictService::new(service_fn(|s: &'static str| async move { Ok::<_, Infallible>(s.len()) }));
    /// assert_eq!(svc.oneshot("four").await.unwrap(), 4);
    /// # }
    /// ```
    pub fn new(inner: S) -> Self {
        StrictService {
            inner,
            ready: false,
            counters: Arc::default(),
        }
    }

    /// A handle to the counters shared by this service and all its clones.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use ratelayer_mock::contract::StrictService;
    /// use tower::{service_fn, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let svc = StrictService::new(service_fn(|x: u8| async move { Ok::<_, Infallible>(x) }));
    /// let (probe, clone) = (svc.probe(), svc.clone());
    /// clone.oneshot(1).await.unwrap(); // counted in the original's probe
    /// assert_eq!(probe.calls(), 1);
    /// # }
    /// ```
    pub fn probe(&self) -> Probe {
        Probe {
            counters: self.counters.clone(),
        }
    }
}

impl<S: Clone> Clone for StrictService<S> {
    /// The clone is unready: it must be polled ready before it may be called.
    fn clone(&self) -> Self {
        StrictService {
            inner: self.inner.clone(),
            ready: false,
            counters: self.counters.clone(),
        }
    }
}

impl<S, R> Service<R> for StrictService<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = StrictFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let r = self.inner.poll_ready(cx);
        if let Poll::Ready(Ok(())) = r {
            self.ready = true;
            self.counters.ready_polls.fetch_add(1, Ordering::SeqCst);
        }
        r
    }

    fn call(&mut self, req: R) -> Self::Future {
        assert!(
            self.ready,
            "tower contract violated: call() without a successful poll_ready() on this \
             instance (a clone starts unready)"
        );
        self.ready = false;
        self.counters.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
        StrictFuture {
            inner: self.inner.call(req),
            guard: InFlight {
                counters: Some(self.counters.clone()),
            },
        }
    }
}

#[derive(Debug)]
struct InFlight {
    counters: Option<Arc<Counters>>,
}

impl InFlight {
    fn finish(&mut self) {
        if let Some(c) = self.counters.take() {
            c.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.finish();
    }
}

pin_project! {
    /// The response future of [`StrictService`]: counted in flight until it completes or
    /// is dropped.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use ratelayer_mock::contract::{StrictFuture, StrictService};
    /// use tower::{service_fn, Service, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut svc = StrictService::new(service_fn(|x: u8| async move { Ok::<_, Infallible>(x) }));
    /// let probe = svc.probe();
    /// let future: StrictFuture<_> = svc.ready().await.unwrap().call(7);
    /// assert_eq!(probe.in_flight(), 1);
    /// assert_eq!(future.await.unwrap(), 7);
    /// assert_eq!(probe.in_flight(), 0);
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct StrictFuture<F> {
        #[pin]
        inner: F,
        guard: InFlight,
    }
}

impl<F: Future> Future for StrictFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.guard.finish();
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    type Echo = tower::util::ServiceFn<fn(u8) -> std::future::Ready<Result<u8, Infallible>>>;

    fn echo() -> StrictService<Echo> {
        StrictService::new(tower::service_fn(|x| std::future::ready(Ok(x))))
    }

    #[test]
    #[should_panic(expected = "without a successful poll_ready")]
    fn call_without_ready_panics() {
        let mut s = echo();
        drop(s.call(1));
    }

    #[tokio::test]
    #[should_panic(expected = "a clone starts unready")]
    async fn clone_of_a_ready_service_is_unready() {
        let mut s = echo();
        s.ready().await.unwrap();
        let mut c = s.clone();
        drop(c.call(1));
    }

    #[tokio::test]
    async fn dropped_futures_leave_flight() {
        let mut s = echo();
        let p = s.probe();
        s.ready().await.unwrap();
        let f = s.call(1);
        assert_eq!(p.in_flight(), 1);
        drop(f);
        assert_eq!(p.in_flight(), 0);
        assert_eq!(p.max_in_flight(), 1);
        assert_eq!(s.ready().await.unwrap().call(2).await.unwrap(), 2);
        assert_eq!(p.calls(), 2);
        assert_eq!(p.in_flight(), 0);
    }
}
