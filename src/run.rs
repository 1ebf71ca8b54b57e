//! Running a workload from concurrent callers, and the naive client it is compared with.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use indicatif::ProgressBar;
use ratelayer_core::{BoxError, ReplayBody};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::workload::{ChatJob, Workload};

/// What became of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    /// The job's id.
    pub job: usize,
    /// The final status, if a response was received.
    pub status: Option<StatusCode>,
    /// The error, if the call failed without a response.
    pub error: Option<String>,
    /// 429 responses this caller saw (the ratelayer stack absorbs its own; count those
    /// from the mock's journal).
    pub rate_limited_seen: u32,
    /// When the job finished, from the start of the run.
    pub finished: Duration,
}

impl CallOutcome {
    /// Whether the job completed with a 2xx response.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.is_success())
    }
}

/// Every outcome of a run and its wall time (tokio's clock: virtual under paused time).
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    /// One outcome per job, in completion order.
    pub outcomes: Vec<CallOutcome>,
    /// From the first call to the last completion.
    pub wall: Duration,
}

impl RunRecord {
    /// Jobs that completed with a 2xx response.
    pub fn completed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.ok()).count()
    }

    /// Jobs that did not.
    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.completed()
    }
}

/// Sends one request through `svc` (driving readiness first) and reads the whole
/// response body; returns the status.
///
/// # Errors
/// The service's error, or the body's.
pub async fn send_once<S, B>(svc: &mut S, req: Request<ReplayBody>) -> Result<StatusCode, BoxError>
where
    S: Service<Request<ReplayBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let resp = svc
        .ready()
        .await
        .map_err(Into::into)?
        .call(req)
        .await
        .map_err(Into::into)?;
    let status = resp.status();
    resp.into_body().collect().await.map_err(Into::into)?;
    Ok(status)
}

/// The naive client: on a 429 it sleeps 1, 2, 4, then 8 seconds (`tokio::time::sleep`)
/// and tries again; after the fourth retry it gives up and reports the last 429. Errors
/// and other statuses are returned at once. This is the hand-written retry loop that
/// ratelayer replaces.
#[derive(Debug, Clone)]
pub struct NaiveClient<S> {
    inner: S,
    backoff: Vec<Duration>,
}

impl<S> NaiveClient<S> {
    /// The naive client around `inner` with the fixed schedule 1-2-4-8 s.
    pub fn new(inner: S) -> Self {
        NaiveClient {
            inner,
            backoff: [1, 2, 4, 8].into_iter().map(Duration::from_secs).collect(),
        }
    }

    /// Sends `job`'s request to `base` (with `key`) and retries 429s on the fixed
    /// schedule; `start` is the start of the run.
    pub async fn call<B>(
        &mut self,
        job: &ChatJob,
        base: &str,
        key: Option<&str>,
        start: Instant,
    ) -> CallOutcome
    where
        S: Service<Request<ReplayBody>, Response = Response<B>>,
        S::Error: Into<BoxError>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut rate_limited_seen = 0;
        let mut attempt = 0;
        loop {
            let result = send_once(&mut self.inner, job.request(base, key)).await;
            match result {
                Ok(StatusCode::TOO_MANY_REQUESTS) if attempt < self.backoff.len() => {
                    rate_limited_seen += 1;
                    tokio::time::sleep(self.backoff[attempt]).await;
                    attempt += 1;
                }
                other => {
                    if matches!(other, Ok(StatusCode::TOO_MANY_REQUESTS)) {
                        rate_limited_seen += 1;
                    }
                    return outcome(job, other, rate_limited_seen, start);
                }
            }
        }
    }
}

/// The outcome of `job` from a call's result.
pub fn outcome(
    job: &ChatJob,
    result: Result<StatusCode, BoxError>,
    rate_limited_seen: u32,
    start: Instant,
) -> CallOutcome {
    let (status, error) = match result {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.to_string())),
    };
    CallOutcome {
        job: job.id,
        status,
        error,
        rate_limited_seen,
        finished: start.elapsed(),
    }
}

fn expired(job: &ChatJob, start: Instant) -> CallOutcome {
    CallOutcome {
        job: job.id,
        status: None,
        error: Some("deadline".to_owned()),
        rate_limited_seen: 0,
        finished: start.elapsed(),
    }
}

/// Runs `workload` from `callers` concurrent tokio tasks: each repeatedly takes the next
/// job and awaits `call(job, start)`. Ticks `progress` (if any) per finished job.
///
/// ```
/// use http::StatusCode;
/// use ratelayer_suite::run::{run_workload, CallOutcome};
/// use ratelayer_suite::workload::Workload;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let w = Workload::generate(1, 20, "m");
/// let record = run_workload(&w, 4, None, |job, start| async move {
///     tokio::time::sleep(std::time::Duration::from_secs(1)).await;
///     CallOutcome { job: job.id, status: Some(StatusCode::OK), error: None,
///                   rate_limited_seen: 0, finished: start.elapsed() }
/// }).await;
/// assert_eq!(record.completed(), 20);
/// assert_eq!(record.wall, std::time::Duration::from_secs(5));
/// # }
/// ```
pub async fn run_workload<F, Fut>(
    workload: &Workload,
    callers: usize,
    progress: Option<ProgressBar>,
    call: F,
) -> RunRecord
where
    F: Fn(ChatJob, Instant) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = CallOutcome> + Send + 'static,
{
    run_workload_until(workload, callers, progress, None, call).await
}

/// Like [`run_workload`], but stops at `deadline` (from the start of the run): calls
/// still in flight are dropped and, like the jobs never started, count as failed with
/// the error `deadline`.
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use ratelayer_suite::run::{run_workload_until, CallOutcome};
/// use ratelayer_suite::workload::Workload;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let w = Workload::generate(1, 10, "m");
/// let record = run_workload_until(&w, 1, None, Some(Duration::from_millis(3_500)), |job, start| async move {
///     tokio::time::sleep(Duration::from_secs(1)).await;
///     CallOutcome { job: job.id, status: Some(StatusCode::OK), error: None,
///                   rate_limited_seen: 0, finished: start.elapsed() }
/// }).await;
/// assert_eq!((record.completed(), record.failed()), (3, 7));
/// assert_eq!(record.wall, Duration::from_millis(3_500));
/// # }
/// ```
pub async fn run_workload_until<F, Fut>(
    workload: &Workload,
    callers: usize,
    progress: Option<ProgressBar>,
    deadline: Option<Duration>,
    call: F,
) -> RunRecord
where
    F: Fn(ChatJob, Instant) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = CallOutcome> + Send + 'static,
{
    let jobs: Arc<[ChatJob]> = workload.jobs.clone().into();
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers.max(1) {
        let (jobs, next, failed) = (jobs.clone(), next.clone(), failed.clone());
        let (call, progress) = (call.clone(), progress.clone());
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let outcome = match deadline {
                    None => call(job.clone(), start).await,
                    Some(d) if start.elapsed() >= d => expired(job, start),
                    Some(d) => tokio::time::timeout_at(start + d, call(job.clone(), start))
                        .await
                        .unwrap_or_else(|_| expired(job, start)),
                };
                if let Some(p) = &progress {
                    if !outcome.ok() {
                        let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
                        p.set_message(format!("{n} failed"));
                    }
                    p.inc(1);
                }
                done.push(outcome);
            }
            done
        });
    }
    let mut outcomes = Vec::with_capacity(jobs.len());
    while let Some(joined) = tasks.join_next().await {
        if let Ok(mut done) = joined {
            outcomes.append(&mut done);
        }
    }
    outcomes.sort_by_key(|o| o.finished);
    if let Some(p) = &progress {
        p.finish();
    }
    RunRecord {
        wall: start.elapsed(),
        outcomes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicU32;

    /// A service answering 429 to the first `n` calls, then 200.
    fn limited(
        n: u32,
    ) -> impl Service<
        Request<ReplayBody>,
        Response = Response<String>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        let calls = Arc::new(AtomicU32::new(0));
        tower::service_fn(move |_req: Request<ReplayBody>| {
            let k = calls.fetch_add(1, Ordering::Relaxed);
            let status = if k < n {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::OK
            };
            let mut resp = Response::new(String::new());
            *resp.status_mut() = status;
            std::future::ready(Ok::<_, Infallible>(resp))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn naive_client_backs_off_1_2_4_8_then_gives_up() {
        let job = Workload::generate(1, 1, "m").jobs.remove(0);
        let start = Instant::now();
        let out = NaiveClient::new(limited(3))
            .call(&job, "http://x", None, start)
            .await;
        assert_eq!(out.status, Some(StatusCode::OK));
        assert_eq!(out.rate_limited_seen, 3);
        assert_eq!(out.finished, Duration::from_secs(7));

        let start = Instant::now();
        let out = NaiveClient::new(limited(100))
            .call(&job, "http://x", None, start)
            .await;
        assert_eq!(out.status, Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(out.rate_limited_seen, 5);
        assert_eq!(out.finished, Duration::from_secs(15));
        assert!(!out.ok());
    }
}
