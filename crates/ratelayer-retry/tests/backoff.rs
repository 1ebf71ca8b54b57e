//! BackoffRetryLayer decisions under paused time: schedules, server delays, caps,
//! deadlines, classes, budgets, bodies, events.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use http_body_util::BodyExt;
use ratelayer_core::state::TierInfo;
use ratelayer_core::{BoxError, LimitState, ReplayBody, ReplayableBody, Scope};
use ratelayer_retry::{
    Backoff, BackoffRetryLayer, BackoffRetryLayerBuilder, Deadline, Jitter, OverCap, RetryReport,
    StopReason,
};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

type Reply = Result<Response<String>, BoxError>;
type Maker = Box<dyn Fn() -> Reply + Send + Sync>;
type Case<'a> = (u16, Vec<(&'a str, &'a str)>, &'a str, StopReason);

/// An inner service answering from a script (the last entry repeats) and recording the
/// instant of every call (seconds since `start`, as f64).
#[derive(Clone)]
struct Script {
    replies: Arc<dyn Fn(usize) -> Reply + Send + Sync>,
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Script {
    fn new(f: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Script {
            replies: Arc::new(f),
            calls: Arc::default(),
        }
    }

    fn service<B: Send + 'static>(
        &self,
    ) -> impl tower::Service<
        Request<B>,
        Response = Response<String>,
        Error = BoxError,
        Future = std::future::Ready<Reply>,
    > + Clone
    + use<B> {
        let s = self.clone();
        service_fn(move |_req: Request<B>| {
            let mut calls = s.calls.lock().unwrap();
            let n = calls.len();
            calls.push(Instant::now());
            std::future::ready((s.replies)(n))
        })
    }

    /// Gaps between consecutive calls, in milliseconds.
    fn gaps_ms(&self) -> Vec<u128> {
        let c = self.calls.lock().unwrap();
        c.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect()
    }

    fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    Ok(b.body(body.to_string()).unwrap())
}

fn always(status: u16) -> Script {
    Script::new(move |_| resp(status, &[], ""))
}

fn builder() -> BackoffRetryLayerBuilder {
    BackoffRetryLayer::builder(LimitState::new())
}

async fn run(
    layer: BackoffRetryLayer,
    script: &Script,
) -> Response<ratelayer_retry::ResponseBody<String>> {
    layer
        .layer(script.service())
        .oneshot(Request::new(ReplayBody::from("{}")))
        .await
        .unwrap()
}

fn report<B>(r: &Response<B>) -> RetryReport {
    RetryReport::of(r)
}

/// The report is attached to every response but a first attempt that succeeded with no
/// wait (which `RetryReport::of` reads as `FIRST_ATTEMPT`): a retried success and a
/// first-attempt failure carry theirs.
#[tokio::test(start_paused = true)]
async fn the_report_is_attached_unless_the_first_attempt_succeeded() {
    let ok = run(builder().build().unwrap(), &always(200)).await;
    assert!(ok.extensions().get::<RetryReport>().is_none());
    assert_eq!(report(&ok), RetryReport::FIRST_ATTEMPT);

    let fatal = run(builder().build().unwrap(), &always(400)).await;
    let attached = *fatal.extensions().get::<RetryReport>().unwrap();
    assert_eq!(attached.attempts, 1);
    assert!(matches!(attached.reason, StopReason::NotRetryable(_)));

    let once = Script::new(|n| match n {
        0 => resp(429, &[("retry-after", "2")], ""),
        _ => resp(200, &[], ""),
    });
    let retried = run(builder().build().unwrap(), &once).await;
    let attached = *retried.extensions().get::<RetryReport>().unwrap();
    assert_eq!(
        (attached.attempts, attached.total_wait),
        (2, Duration::from_secs(2))
    );
    assert_eq!(attached.reason, StopReason::Success);
}

#[tokio::test(start_paused = true)]
async fn free_tier_schedule_without_server_hints() {
    let script = always(429);
    let start = Instant::now();
    let r = run(builder().build().unwrap(), &script).await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        script.gaps_ms(),
        [20_000, 40_000, 80_000, 160_000, 320_000, 640_000]
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1260));
    let rep = report(&r);
    assert_eq!(rep.attempts, 7);
    assert_eq!(rep.total_wait, Duration::from_secs(1260));
    assert_eq!(rep.reason, StopReason::RetriesExhausted);
}

#[tokio::test(start_paused = true)]
async fn tier_one_schedule_from_the_shared_state() {
    let state = LimitState::new();
    state.set_tier(
        &Scope::new("default"),
        TierInfo::new("tier-1", Duration::from_millis(300)),
    );
    let script = always(429);
    let layer = BackoffRetryLayer::builder(state).build().unwrap();
    let r = run(layer, &script).await;
    assert_eq!(script.gaps_ms(), [300, 600, 1200, 2400, 4800, 9600]);
    assert_eq!(report(&r).total_wait, Duration::from_millis(18_900));
}

#[tokio::test(start_paused = true)]
async fn server_delays_are_honoured_exactly() {
    let gemini = r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED",
        "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12s"}]}}"#;
    let cases: Vec<(&str, Maker, u128)> = vec![
        (
            "retry-after-ms",
            Box::new(|| resp(429, &[("retry-after-ms", "1500"), ("retry-after", "2")], "")),
            1500,
        ),
        (
            "retry-after seconds",
            Box::new(|| resp(429, &[("retry-after", "7")], "")),
            7000,
        ),
        (
            "gemini body",
            Box::new(move || resp(429, &[], gemini)),
            12_000,
        ),
        (
            "exhausted reset",
            Box::new(|| {
                resp(
                    429,
                    &[
                        ("x-ratelimit-remaining-requests", "0"),
                        ("x-ratelimit-reset-requests", "4s"),
                    ],
                    "",
                )
            }),
            4000,
        ),
    ];
    for (name, first, want) in cases {
        let first = Arc::new(first);
        let script = Script::new(move |n| {
            if n == 0 {
                first()
            } else {
                resp(200, &[], "ok")
            }
        });
        let r = run(builder().build().unwrap(), &script).await;
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(script.gaps_ms(), [want], "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn http_date_retry_after_uses_the_wall_clock() {
    let script = Script::new(|n| {
        if n == 0 {
            let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
            resp(429, &[("retry-after", &date)], "")
        } else {
            resp(200, &[], "")
        }
    });
    run(builder().build().unwrap(), &script).await;
    let gap = script.gaps_ms()[0];
    // An HTTP-date has whole seconds: the delay is within the second before 30 s.
    assert!((29_000..=30_000).contains(&gap), "{gap}");
}

#[tokio::test(start_paused = true)]
async fn cap_policies() {
    let over = || {
        Script::new(|n| {
            if n == 0 {
                resp(429, &[("retry-after", "120")], "")
            } else {
                resp(200, &[], "")
            }
        })
    };
    // Give up at once: the 429 is returned after one attempt, no wait.
    let script = over();
    let start = Instant::now();
    let r = run(
        builder()
            .max_delay(Duration::from_secs(60))
            .over_cap(OverCap::GiveUp)
            .build()
            .unwrap(),
        &script,
    )
    .await;
    assert_eq!((r.status().as_u16(), script.count()), (429, 1));
    assert_eq!(report(&r).reason, StopReason::DelayAboveCap);
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Wait anyway: the server's 120 s.
    let script = over();
    let r = run(
        builder()
            .max_delay(Duration::from_secs(60))
            .over_cap(OverCap::Wait)
            .build()
            .unwrap(),
        &script,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(script.gaps_ms(), [120_000]);
    // Computed delays are clamped to the cap.
    let script = always(429);
    run(
        builder()
            .max_delay(Duration::from_secs(100))
            .build()
            .unwrap(),
        &script,
    )
    .await;
    assert_eq!(
        script.gaps_ms(),
        [20_000, 40_000, 80_000, 100_000, 100_000, 100_000]
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_and_total_wait_budget_stop_early() {
    let script = always(429);
    let start = Instant::now();
    let mut req = Request::new(ReplayBody::empty());
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(100)));
    let r = builder()
        .build()
        .unwrap()
        .layer(script.service())
        .oneshot(req)
        .await
        .unwrap();
    // 20 s and 40 s fit; the third wait (80 s) would end at 140 s, past the deadline.
    assert_eq!(script.gaps_ms(), [20_000, 40_000]);
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    assert_eq!(report(&r).reason, StopReason::DeadlineExceeded);

    let script = always(429);
    let r = run(
        builder()
            .max_total_wait(Duration::from_secs(100))
            .build()
            .unwrap(),
        &script,
    )
    .await;
    assert_eq!(script.gaps_ms(), [20_000, 40_000]);
    assert_eq!(report(&r).reason, StopReason::WaitBudgetExhausted);
}

#[tokio::test(start_paused = true)]
async fn transient_overloaded_and_connection_errors_have_their_own_backoff() {
    // 503, 503, 529, connection reset, then 200: transient 0.5 s, 1 s; overloaded 1 s;
    // transient 2 s (the third transient retry).
    let script = Script::new(|n| match n {
        0 | 1 => resp(503, &[], "upstream connect error"),
        2 => resp(
            529,
            &[],
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
        3 => Err(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        ))),
        _ => resp(200, &[], "ok"),
    });
    let r = run(builder().build().unwrap(), &script).await;
    assert_eq!(r.status(), 200);
    assert_eq!(script.gaps_ms(), [500, 1000, 1000, 2000]);
    assert_eq!(report(&r).attempts, 5);

    // The transient count is its own: 3 retries, then the last 500 is returned.
    let script = always(500);
    let r = run(builder().build().unwrap(), &script).await;
    assert_eq!(script.gaps_ms(), [500, 1000, 2000]);
    assert_eq!(report(&r).reason, StopReason::RetriesExhausted);

    // A transport error that stays: the error itself is returned after the retries.
    let script = Script::new(|_| {
        Err(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    });
    let err = builder()
        .build()
        .unwrap()
        .layer(script.service())
        .oneshot(Request::new(ReplayBody::empty()))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some());
    assert_eq!(script.count(), 4);
}

#[tokio::test(start_paused = true)]
async fn never_retried_classes_and_should_retry_header() {
    let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
    let context = r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#;
    let cases: Vec<Case<'_>> = vec![
        (
            429,
            vec![],
            quota,
            StopReason::NotRetryable("quota_exhausted"),
        ),
        (
            400,
            vec![],
            context,
            StopReason::NotRetryable("context_overflow"),
        ),
        (401, vec![], "bad key", StopReason::NotRetryable("fatal")),
        (
            503,
            vec![("x-should-retry", "false")],
            "",
            StopReason::ServerSaidNoRetry,
        ),
        (
            429,
            vec![("x-should-retry", "false")],
            "",
            StopReason::ServerSaidNoRetry,
        ),
    ];
    for (status, headers, body, reason) in cases {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let body = body.to_string();
        let script = Script::new(move |_| {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            resp(status, &h, &body)
        });
        let r = run(builder().build().unwrap(), &script).await;
        assert_eq!(script.count(), 1, "{status} {reason}");
        assert_eq!(r.status(), status);
        assert_eq!(report(&r).reason, reason);
    }
    // x-should-retry: true forces a retry of a 400.
    let script = Script::new(|n| {
        if n == 0 {
            resp(400, &[("x-should-retry", "true")], "")
        } else {
            resp(200, &[], "")
        }
    });
    let r = run(builder().build().unwrap(), &script).await;
    assert_eq!((r.status().as_u16(), script.count()), (200, 2));
}

#[tokio::test(start_paused = true)]
async fn returned_error_bodies_are_whole_and_discarded_ones_dropped() {
    let big = "x".repeat(200_000);
    let b2 = big.clone();
    let script = Script::new(move |_| resp(400, &[], &format!("{{\"error\":\"bad\"}}{b2}")));
    let r = run(builder().max_error_body(1024).build().unwrap(), &script).await;
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes.len(), 15 + big.len());
    assert!(bytes.starts_with(b"{\"error\":\"bad\"}"));

    let script = always(429);
    let r = run(
        builder().max_rate_limit_retries(1).build().unwrap(),
        &script,
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.into_body().collect().await.unwrap().to_bytes().len(), 0);
}

/// A body that cannot be replayed.
#[derive(Default)]
struct OneShot;
impl ReplayableBody for OneShot {}

#[tokio::test(start_paused = true)]
async fn unreplayable_bodies_are_sent_once() {
    let script = always(429);
    let r = builder()
        .build()
        .unwrap()
        .layer(script.service())
        .oneshot(Request::new(OneShot))
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), script.count()), (429, 1));
    assert_eq!(report(&r).reason, StopReason::NotReplayable);
}

#[tokio::test(start_paused = true)]
async fn retry_budget_limits_retries() {
    let script = always(503);
    let r = run(
        builder()
            .retry_budget(Duration::from_secs(1), 0, 0.0)
            .build()
            .unwrap(),
        &script,
    )
    .await;
    assert_eq!(script.count(), 1);
    assert_eq!(report(&r).reason, StopReason::RetryBudgetExhausted);
}

#[tokio::test(start_paused = true)]
async fn jitter_is_seeded_and_bounded() {
    let schedule = |jitter, seed| async move {
        let script = always(429);
        run(
            builder().jitter(jitter).seed(seed).build().unwrap(),
            &script,
        )
        .await;
        script.gaps_ms()
    };
    let full = schedule(Jitter::Full, 1).await;
    assert_eq!(full, schedule(Jitter::Full, 1).await);
    assert_ne!(full, schedule(Jitter::Full, 2).await);
    let exact = [20_000u128, 40_000, 80_000, 160_000, 320_000, 640_000];
    for (j, e) in full.iter().zip(exact) {
        assert!(*j <= e);
    }
    for (j, e) in schedule(Jitter::Equal, 3).await.iter().zip(exact) {
        assert!(*j >= e / 2 && *j <= e, "{j} {e}");
    }
}

#[test]
fn config_is_validated_when_built() {
    let bad: Vec<(BackoffRetryLayerBuilder, &str)> = vec![
        (builder().factor(0.5), "retry.factor"),
        (builder().factor(f64::NAN), "retry.factor"),
        (
            builder().default_base_delay(Duration::ZERO),
            "retry.rate_limit.base",
        ),
        (
            builder().transient(Backoff::new(Duration::ZERO, 2.0, 1)),
            "retry.transient.base",
        ),
        (builder().max_delay(Duration::ZERO), "retry.max_delay"),
        (
            builder().retry_budget(Duration::from_secs(10), 1, -1.0),
            "retry.budget.percent",
        ),
        (builder().max_error_body(1 << 30), "retry.max_error_body"),
    ];
    for (b, setting) in bad {
        let e = b.build().unwrap_err();
        assert_eq!(e.setting, setting, "{e}");
        assert!(e.to_string().contains(setting));
    }
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One global subscriber per test binary (scoped subscribers and parallel tests make
/// tracing's callsite cache flaky); assertions look for lines only their test writes.
fn logs() -> &'static Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let w = logs.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(sub).unwrap();
        logs
    })
}

#[tokio::test(start_paused = true)]
async fn every_wait_and_the_outcome_are_events() {
    let logs = logs();
    let script = Script::new(|n| match n {
        0 => resp(429, &[], ""),
        1 => resp(429, &[("retry-after", "20")], ""),
        _ => resp(200, &[], ""),
    });
    run(builder().build().unwrap(), &script).await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("rate limited (429), waiting 20.0s before retry 1/6 (tier free, base 20s, source backoff)"),
        "{text}"
    );
    assert!(
        text.contains("rate limited (429), waiting 20.0s before retry 2/6 (tier free, base 20s, source retry-after)"),
        "{text}"
    );
    assert!(
        text.contains("delay_ms=20000") && text.contains("source=\"retry-after\""),
        "{text}"
    );
    assert!(
        text.contains("request finished after 3 attempt(s), waited 40.0s: success"),
        "{text}"
    );
}

/// An inner layer's own refusal (`WaitTooLong`, such as a TPM layer's for one large
/// request) is final: returned at once, not retried, and the scope is not put in
/// cooldown (so a fallback layer outside can go elsewhere without waiting).
#[tokio::test(start_paused = true)]
async fn inner_wait_too_long_is_returned_at_once_without_a_scope_cooldown() {
    let state = LimitState::new();
    let scope = Scope::new("default");
    let script = Script::new(move |n| {
        if n == 0 {
            Err(Box::new(ratelayer_core::WaitTooLong {
                scope: Scope::new("default"),
                wait: Duration::from_secs(5),
                max_wait: Duration::from_secs(1),
                reason: "tokens per minute",
            }))
        } else {
            resp(200, &[], "")
        }
    });
    let layer = BackoffRetryLayer::builder(state.clone()).build().unwrap();
    let start = Instant::now();
    let err = layer
        .layer(script.service())
        .oneshot(Request::new(ReplayBody::empty()))
        .await
        .unwrap_err();
    let w = err.downcast_ref::<ratelayer_core::WaitTooLong>().unwrap();
    assert_eq!(w.wait, Duration::from_secs(5));
    assert_eq!(script.count(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(state.cooldown_until(&scope), None);
}

/// A cooldown that outlasts the request's deadline fails at once with a typed
/// `WaitTooLong`, without sending anything.
#[tokio::test(start_paused = true)]
async fn cooldown_past_the_deadline_fails_at_once() {
    let state = LimitState::new();
    let scope = Scope::new("default");
    state.set_cooldown(&scope, Instant::now() + Duration::from_secs(60));
    let script = always(200);
    let mut req = Request::new(ReplayBody::empty());
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(10)));
    let start = Instant::now();
    let err = BackoffRetryLayer::new(state)
        .layer(script.service())
        .oneshot(req)
        .await
        .unwrap_err();
    let w = err.downcast_ref::<ratelayer_core::WaitTooLong>().unwrap();
    assert_eq!(
        (w.wait, w.max_wait),
        (Duration::from_secs(60), Duration::from_secs(10))
    );
    assert_eq!(script.count(), 0);
    assert_eq!(start.elapsed(), Duration::ZERO);
}
