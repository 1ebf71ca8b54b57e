//! The tower baseline: what a careful tower user builds from tower's own layers with the
//! provider's documented limits.
//!
//! `Retry` (429s, honouring an integer `Retry-After`, else a fixed delay) over a
//! `Buffer` (so every caller shares one rate limiter: tower's `RateLimit` keeps its state
//! per clone) over `ConcurrencyLimit` over `RateLimit` (the documented requests per
//! minute, or fewer when the tokens-per-minute limit allows fewer requests of the
//! workload's mean size: tower has no notion of tokens).

use std::time::Duration;

use http::{Request, Response, StatusCode};
use ratelayer_core::{BoxError, ReplayBody};
use tower::retry::Policy;
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt};

/// tower's `Retry` policy of the baseline: retry a 429 up to `max_retries` times,
/// sleeping for its `Retry-After` seconds when present, else `delay`.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_suite::baseline::Retry429;
/// let p = Retry429::new(8, Duration::from_secs(1));
/// # let _ = p;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Retry429 {
    remaining: u32,
    delay: Duration,
}

impl Retry429 {
    /// At most `max_retries` retries per request, `delay` when the server names none.
    pub fn new(max_retries: u32, delay: Duration) -> Self {
        Retry429 {
            remaining: max_retries,
            delay,
        }
    }
}

impl<B, E> Policy<Request<ReplayBody>, Response<B>, E> for Retry429 {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<ReplayBody>,
        result: &mut Result<Response<B>, E>,
    ) -> Option<Self::Future> {
        let resp = result.as_ref().ok()?;
        if resp.status() != StatusCode::TOO_MANY_REQUESTS || self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let delay = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(self.delay, Duration::from_secs);
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Request<ReplayBody>) -> Option<Request<ReplayBody>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

/// The documented limits the baseline is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Documented {
    /// Requests per minute.
    pub rpm: u64,
    /// Tokens per minute.
    pub tpm: u64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The mean tokens of one request of the workload.
    pub mean_request_tokens: u64,
}

impl Documented {
    /// Requests per minute that respect both the request and the token limit.
    ///
    /// ```
    /// use ratelayer_suite::baseline::Documented;
    /// let d = Documented { rpm: 500, tpm: 60_000, concurrency: 4, mean_request_tokens: 1_000 };
    /// assert_eq!(d.requests_per_minute(), 60);
    /// ```
    pub fn requests_per_minute(&self) -> u64 {
        let by_tokens = self.tpm / self.mean_request_tokens.max(1);
        self.rpm.min(by_tokens).max(1)
    }
}

/// The baseline stack around `inner` (see the [module docs](self)).
pub fn tower_stack<S, B>(
    inner: S,
    limits: Documented,
) -> BoxCloneService<Request<ReplayBody>, Response<B>, BoxError>
where
    S: Service<Request<ReplayBody>, Response = Response<B>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    let svc = ServiceBuilder::new()
        .retry(Retry429::new(8, Duration::from_secs(1)))
        .buffer(4_096)
        .concurrency_limit(limits.concurrency.max(1))
        .rate_limit(limits.requests_per_minute(), Duration::from_secs(60))
        .service(inner.map_err(Into::into));
    BoxCloneService::new(svc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn retries_429_after_retry_after_and_paces_requests() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let inner = tower::service_fn(move |_req: Request<ReplayBody>| {
            let k = c.fetch_add(1, Ordering::Relaxed);
            let resp = if k == 0 {
                Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .header("retry-after", "3")
                    .body(())
            } else {
                Response::builder().body(())
            };
            std::future::ready(Ok::<_, Infallible>(resp.unwrap()))
        });
        let limits = Documented {
            rpm: 2,
            tpm: 1_000_000,
            concurrency: 1,
            mean_request_tokens: 1,
        };
        let svc = tower_stack(inner, limits);
        let start = tokio::time::Instant::now();
        let resp = svc
            .clone()
            .oneshot(Request::new(ReplayBody::from("x")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        // Two requests per minute were used (the 429 and its retry): the third waits for
        // the next window.
        let resp = svc
            .oneshot(Request::new(ReplayBody::from("x")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }
}
