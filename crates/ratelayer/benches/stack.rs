//! Per-request overhead of ratelayer's layers against a bare no-op service and tower's
//! own `ConcurrencyLimit` + `RateLimit` + `Retry`, with a 1 KiB chat request, in one run.
//!
//! `cargo bench -p ratelayer --bench stack`
//!
//! It ends with a paired section: the full stack alternated with the bare service and
//! tower's stack in short rounds (load drift on a shared machine hits all alike), with
//! the median overhead over the bare service and the median ratio to tower's stack.
//! `cargo bench -p ratelayer --bench stack -- zzz` runs that section alone;
//! `STACK_PAIRED=<substring>` picks its rows, `STACK_META=given` gives every request
//! its metadata up front (no body estimate) and `STACK_HEADERS=openai` gives every
//! response OpenAI's six rate-limit headers (every variant, the bare one included). `STACK_COUNT=<n> STACK_PAIRED=<bare|tower|
//! stack|chain|floor|tier|retry|tpm|concurrency>` sends exactly n requests through one variant and nothing else, for an
//! instruction count under `valgrind --tool=callgrind` (two counts, subtracted, give
//! the instructions per request whatever the machine's load).
//!
//! Every variant builds the same request per iteration (inside the timed loop, so the
//! bare service's figure includes it); the differences are the layers' own cost. Limits
//! are set far above the load, so nothing ever waits: this is the fast path.

use std::convert::Infallible;
use std::future::Ready;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use ratelayer::concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
use ratelayer::core::{LimitState, ReplayBody, RequestMeta};
use ratelayer::tpm::{Budget, ModelLimits, TpmConfig, TpmLimitLayer};
use ratelayer::{Chain, Preset};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// The 1 KiB request, shared with the parse bench (which times its metadata).
#[path = "../../ratelayer-core/benches/shared/stack_request.rs"]
mod stack_request;

/// `STACK_META=given`: every request carries its metadata (as a caller may set it), so
/// no layer reads the body: the figures then show the layers' own cost without the token
/// estimate.
fn given_meta() -> bool {
    static GIVEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GIVEN.get_or_init(|| std::env::var("STACK_META").is_ok_and(|v| v == "given"))
}

fn request(body: &bytes::Bytes) -> Request<ReplayBody> {
    let mut req = stack_request::request_1k(body.clone());
    if given_meta() {
        ratelayer::core::meta::set(
            &mut req,
            RequestMeta::new("openai", 300, 256)
                .with_model("gpt-4o-mini")
                .with_credential(ratelayer::core::meta::fingerprint(b"Bearer sk-bench")),
        );
    }
    req
}

/// `STACK_HEADERS=openai`: every response carries OpenAI's six rate-limit headers (as a
/// real one does), so the figures include reading them (tier detection, TPM).
fn headers_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("STACK_HEADERS").is_ok_and(|v| v == "openai"))
}

/// The rate-limit headers of an OpenAI 200.
const OPENAI_HEADERS: [(&str, &str); 6] = [
    ("x-ratelimit-limit-requests", "1000000000"),
    ("x-ratelimit-remaining-requests", "999999999"),
    ("x-ratelimit-reset-requests", "6ms"),
    ("x-ratelimit-limit-tokens", "1000000000000"),
    ("x-ratelimit-remaining-tokens", "999999990000"),
    ("x-ratelimit-reset-tokens", "1ms"),
];

/// The no-op inner service: answers 200 at once (with `STACK_HEADERS=openai`, with
/// OpenAI's rate-limit headers).
#[derive(Clone, Copy)]
struct Noop;

impl Service<Request<ReplayBody>> for Noop {
    type Response = Response<ReplayBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<ReplayBody>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<ReplayBody>) -> Self::Future {
        let mut resp = Response::new(ReplayBody::empty());
        if headers_on() {
            for (name, value) in OPENAI_HEADERS {
                resp.headers_mut()
                    .insert(name, http::HeaderValue::from_static(value));
            }
        }
        std::future::ready(Ok(resp))
    }
}

/// Times `iters` sequential requests through `svc` on a current-thread runtime.
fn drive<S>(rt: &tokio::runtime::Runtime, svc: &mut S, body: &bytes::Bytes, iters: u64) -> Duration
where
    S: Service<Request<ReplayBody>>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let req = request(body);
            let svc = match svc.ready().await {
                Ok(s) => s,
                Err(e) => panic!("not ready: {e:?}"),
            };
            let fut = svc.call(req);
            static SZ: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            if *SZ.get_or_init(|| std::env::var("SIZES").is_ok()) {
                eprintln!("future size {}", std::mem::size_of_val(&fut));
            }
            let _ = black_box(fut.await);
        }
        start.elapsed()
    })
}

/// tower's retry policy for the comparison: never retries a success, clones the request.
#[derive(Clone, Copy)]
struct RetryNever;

impl<Res, E> tower::retry::Policy<Request<ReplayBody>, Res, E> for RetryNever {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<ReplayBody>,
        _: &mut Result<Res, E>,
    ) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, req: &Request<ReplayBody>) -> Option<Request<ReplayBody>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

/// Limits far above the load: the fast path.
fn huge() -> ratelayer::ProviderLimits {
    ratelayer::ProviderLimits::default()
        .rpm(1_000_000_000)
        .tpm(1_000_000_000_000)
        .max_concurrent(1_000_000)
}

/// `TierDetectLayer` alone.
fn tier_alone() -> impl Service<Request<ReplayBody>, Error = impl std::fmt::Debug> {
    ratelayer::tier::TierDetectLayer::new(LimitState::new()).layer(Noop)
}

/// `BackoffRetryLayer` alone, with its defaults.
fn retry_alone() -> impl Service<Request<ReplayBody>, Error = impl std::fmt::Debug> {
    ratelayer::retry::BackoffRetryLayer::new(LimitState::new()).layer(Noop)
}

/// `TpmLimitLayer` alone, with a budget far above the load.
fn tpm_alone() -> impl Service<Request<ReplayBody>, Error = impl std::fmt::Debug> {
    let config =
        TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(1_000_000_000_000)));
    match TpmLimitLayer::with_state(config, LimitState::new()) {
        Ok(l) => l.layer(Noop),
        Err(e) => panic!("{e}"),
    }
}

/// `ConcurrencyLayer` alone, with a concurrency limit and a request rate far above the
/// load (as a preset given limits sets them).
fn concurrency_alone() -> impl Service<Request<ReplayBody>, Error = impl std::fmt::Debug> {
    let limits =
        Limits::new()
            .max_concurrent(1_000_000)
            .reservoir(ratelayer::concurrency::Reservoir::new(
                1_000_000_000,
                Duration::from_secs(60),
            ));
    let config = ConcurrencyConfig::new().provider("openai", limits);
    match ConcurrencyLayer::new(config) {
        Ok(l) => l.with_state(LimitState::new()).layer(Noop),
        Err(e) => panic!("{e}"),
    }
}

/// The per-provider stack a preset builds, around the no-op service.
fn full_stack() -> impl Service<Request<ReplayBody>, Error = impl std::fmt::Debug> {
    let layer = Preset::openai()
        .base_url("http://127.0.0.1:8080")
        .api_key("sk-bench")
        .limits(huge())
        .layer(&LimitState::new());
    match layer {
        Ok(l) => l.layer(Noop),
        Err(e) => panic!("{e}"),
    }
}

/// A fallback chain of one preset, around the no-op service.
fn full_chain() -> impl Service<Request<ReplayBody>, Error = impl std::fmt::Debug> {
    let chain = Chain::new()
        .provider(
            Preset::openai()
                .base_url("http://127.0.0.1:8080")
                .api_key("sk-bench")
                .limits(huge()),
        )
        .build::<_, ReplayBody, _>(Noop);
    match chain {
        Ok((svc, _stats)) => svc,
        Err(e) => panic!("{e}"),
    }
}

/// The work a preset's stack cannot skip, and nothing else: the credential headers
/// marked sensitive and the key set (the preset's own two outer layers), the request's
/// token estimate read from its body (the TPM layer books it), and the copy of the
/// request the retry layer keeps for a re-attempt, dropped at the end. No limiting, no
/// retry decision, no tier: what is left of the full stack's overhead over this row is
/// the limiting itself.
fn floor() -> impl Service<Request<ReplayBody>, Error = impl std::fmt::Debug> {
    let target =
        match ratelayer::TargetLayer::new(ratelayer::Provider::OpenAi, "http://127.0.0.1:8080") {
            Ok(t) => t.api_key("sk-bench"),
            Err(e) => panic!("{e}"),
        };
    ServiceBuilder::new()
        .layer(ratelayer::sensitive_credentials())
        .layer(target)
        .service(Floor(Noop))
}

/// The estimate and the retry copy of [`floor`] around `S`.
#[derive(Clone, Copy)]
struct Floor<S>(S);

impl<S> Service<Request<ReplayBody>> for Floor<S>
where
    S: Service<Request<ReplayBody>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = FloorFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReplayBody>) -> Self::Future {
        let _ = ratelayer::core::meta::ensure(&mut req);
        let copy = ratelayer::core::body::try_clone_request(&req);
        FloorFuture {
            inner: self.0.call(req),
            copy,
        }
    }
}

/// The inner future, with the retry copy kept until it completes.
struct FloorFuture<F> {
    inner: F,
    copy: Option<Request<ReplayBody>>,
}

impl<F: std::future::Future + Unpin> std::future::Future for FloorFuture<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let out = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll(cx));
        drop(self.copy.take());
        std::task::Poll::Ready(out)
    }
}

/// tower's own three layers with the documented limits far above the load. Built inside
/// a runtime (tower's `RateLimit` makes a timer).
fn tower_stack() -> impl Service<Request<ReplayBody>, Error = impl std::fmt::Debug> {
    // tower's RateLimit is not Clone, so Retry (which clones its inner service) goes
    // innermost.
    ServiceBuilder::new()
        .rate_limit(u64::MAX / 4, Duration::from_secs(60))
        .concurrency_limit(1_000_000)
        .retry(RetryNever)
        .service(Noop)
}

/// The current-thread runtime every variant runs on.
fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    }
}

fn stack(c: &mut Criterion) {
    let rt = runtime();
    let body = stack_request::body_1k();
    let mut group = c.benchmark_group("1KiB request");

    group.bench_function("bare no-op service", |b| {
        let mut svc = Noop;
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    // ratelayer's layers, each alone, then the whole per-provider stack and a chain of one
    // provider. Limits far above the load: the fast path.
    group.bench_function("TierDetectLayer", |b| {
        let mut svc = tier_alone();
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("BackoffRetryLayer", |b| {
        let mut svc = retry_alone();
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("TpmLimitLayer", |b| {
        let mut svc = tpm_alone();
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("ConcurrencyLayer", |b| {
        let mut svc = concurrency_alone();
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("full stack (Preset::openai)", |b| {
        let mut svc = full_stack();
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("full chain (Chain of one Preset::openai)", |b| {
        let mut svc = full_chain();
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("floor: estimate + retry copy + key, no limiting", |b| {
        let mut svc = floor();
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.bench_function("tower ConcurrencyLimit+RateLimit+Retry", |b| {
        let mut svc = rt.block_on(async { tower_stack() });
        b.iter_custom(|n| drive(&rt, &mut svc, &body, n));
    });

    group.finish();
}

/// The median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Each ratelayer variant alternated with the bare service and tower's three layers in
/// short rounds, so load drift on a shared machine hits all three alike: the median
/// per-request time of each, the median per-round overhead over the bare service, and
/// the median per-round ratio to tower's stack. Set `STACK_PAIRED=<substring>` to run
/// only the matching rows; skipped under `--profile-time`.
fn paired(c: &mut Criterion) {
    let _ = c;
    if std::env::args().any(|a| a == "--profile-time") {
        return;
    }
    let rt = runtime();
    let body = stack_request::body_1k();
    let (rounds, iters) = (200, 2_000);
    let mut bare = Noop;
    let mut tower = rt.block_on(async { tower_stack() });
    let only = std::env::var("STACK_PAIRED").unwrap_or_default();
    if let Some(n) = std::env::var("STACK_COUNT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        // A fixed number of requests through one variant, nothing else: for counting
        // instructions (`valgrind --tool=callgrind`) on a machine too busy to time.
        match only.as_str() {
            "bare" => drive(&rt, &mut bare, &body, n),
            "tower" => drive(&rt, &mut tower, &body, n),
            "chain" => drive(&rt, &mut full_chain(), &body, n),
            "tier" => drive(&rt, &mut tier_alone(), &body, n),
            "retry" => drive(&rt, &mut retry_alone(), &body, n),
            "tpm" => drive(&rt, &mut tpm_alone(), &body, n),
            "concurrency" => drive(&rt, &mut concurrency_alone(), &body, n),
            "floor" => drive(&rt, &mut floor(), &body, n),
            _ => drive(&rt, &mut full_stack(), &body, n),
        };
        return;
    }
    println!(
        "paired, {rounds} alternated rounds of {iters} requests: overhead over the bare service, ratio to tower's ConcurrencyLimit+RateLimit+Retry"
    );
    let mut run = |name: &str, op: &mut dyn FnMut(u64) -> Duration| {
        if !name.contains(only.as_str()) {
            return;
        }
        let (mut ours, mut b, mut t, mut over, mut ratio) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let per = |d: Duration| d.as_secs_f64() * 1e9 / iters as f64;
        for _ in 0..rounds {
            let tb = per(drive(&rt, &mut bare, &body, iters));
            let to = per(op(iters));
            let tt = per(drive(&rt, &mut tower, &body, iters));
            b.push(tb);
            ours.push(to);
            t.push(tt);
            over.push(to - tb);
            ratio.push(to / tt);
        }
        println!(
            "  {name:<44} {:>7.0} ns (bare {:>5.0} ns, tower {:>5.0} ns): +{:>5.0} ns over bare, {:>4.2}x tower",
            median(ours),
            median(b),
            median(t),
            median(over),
            median(ratio)
        );
    };
    let mut full = full_stack();
    run("full stack (Preset::openai)", &mut |n| {
        drive(&rt, &mut full, &body, n)
    });
    let mut fl = floor();
    run(
        "floor: estimate + retry copy + key, no limiting",
        &mut |n| drive(&rt, &mut fl, &body, n),
    );
    let mut chain = full_chain();
    run("full chain (Chain of one Preset::openai)", &mut |n| {
        drive(&rt, &mut chain, &body, n)
    });
}

criterion_group!(benches, stack, paired);
criterion_main!(benches);
