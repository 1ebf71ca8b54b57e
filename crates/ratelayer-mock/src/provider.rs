//! The in-process provider: a `tower::Service<http::Request<B>>`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use ratelayer_core::{BoxError, Dialect, Dimension};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::config::{ConcurrencyMode, Config, FaultKind, Latency, MockBuilder};
use crate::dialect::{self, Completion, LimitView, Refusal, Views};
use crate::journal::{Journal, JournalEntry};
use crate::rng::Rng;
use crate::tokens::TokenCount;
use crate::window::{Fit, SlidingLog};

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// The largest request body the mock reads (32 MiB); a larger one fails the request
/// (over HTTP: the connection is closed).
///
/// ```
/// use bytes::Bytes;
/// use http::Request;
/// use http_body_util::Full;
/// use ratelayer_mock::{MAX_BODY, MockError, MockProvider};
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockProvider::builder().build().unwrap();
/// let huge = Full::new(Bytes::from(vec![b' '; MAX_BODY + 1]));
/// let err = mock.oneshot(Request::post("/v1/chat/completions").body(huge).unwrap()).await.unwrap_err();
/// assert!(matches!(err, MockError::Body(_)), "{err}");
/// # }
/// ```
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// The header carrying the mock's journal id of a request on every response.
///
/// ```
/// use ratelayer_core::Dialect;
/// use ratelayer_mock::{ChatRequest, MockProvider, REQUEST_ID_HEADER};
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockProvider::builder().build().unwrap();
/// let chat = ChatRequest::new("gpt-4o-mini").user("Hi");
/// for id in ["0", "1"] {
///     let resp = mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap();
///     assert_eq!(resp.headers()[REQUEST_ID_HEADER], id); // the journal entry's id
/// }
/// # }
/// ```
pub const REQUEST_ID_HEADER: &str = "x-mock-request-id";

/// An honest mock LLM provider; see the [crate docs](crate).
///
/// Clones share everything: limits, windows, journal, fault generator. It is always
/// ready (`poll_ready` returns `Ready(Ok(()))`).
///
/// ```
/// use ratelayer_core::Dialect;
/// use ratelayer_mock::{ChatRequest, MockProvider};
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockProvider::builder().rpm(1).build().unwrap();
/// let chat = ChatRequest::new("gpt-4o-mini").key("sk-test").user("Hi");
/// let first = mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap();
/// let second = mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap();
/// assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 429)); // shared limits
/// assert_eq!(mock.journal().len(), 2); // and the journal
/// # }
/// ```
#[derive(Clone)]
pub struct MockProvider {
    shared: Arc<Shared>,
}

impl fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockProvider")
            .field("dialect", &self.shared.config.dialect)
            .field("limits", &self.shared.config.limits)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: Config,
    origin: Instant,
    wall_origin: SystemTime,
    state: Mutex<State>,
}

struct State {
    rng: Rng,
    next_id: u64,
    accounts: HashMap<(String, String), Account>,
    journal: Vec<JournalEntry>,
}

struct Account {
    rpm: Option<SlidingLog>,
    tpm: Option<SlidingLog>,
    itpm: Option<SlidingLog>,
    otpm: Option<SlidingLog>,
    rpd: Option<SlidingLog>,
    slots: Option<Arc<Semaphore>>,
}

impl Account {
    fn new(config: &Config) -> Self {
        let l = &config.limits;
        let log = |limit: Option<u64>, window| limit.map(|n| SlidingLog::new(n, window));
        Account {
            rpm: log(l.rpm, MINUTE),
            tpm: log(l.tpm, MINUTE),
            itpm: log(l.itpm, MINUTE),
            otpm: log(l.otpm, MINUTE),
            rpd: log(l.rpd, DAY),
            slots: l.concurrency.map(|n| Arc::new(Semaphore::new(n))),
        }
    }

    fn views(&mut self, now: Instant) -> Views {
        let view = |log: &mut Option<SlidingLog>| {
            log.as_mut().map(|l| LimitView {
                limit: l.limit(),
                remaining: l.remaining(now),
                reset: l.reset(now),
            })
        };
        Views {
            rpm: view(&mut self.rpm),
            tpm: view(&mut self.tpm),
            itpm: view(&mut self.itpm),
            otpm: view(&mut self.otpm),
            rpd: view(&mut self.rpd),
        }
    }

    /// Admits `count` at `now` under `id` if every limit has room; otherwise the refusal
    /// of the limit that holds it back longest (a limit it can never fit wins).
    fn try_admit(&mut self, now: Instant, id: u64, count: &TokenCount) -> Result<(), Refusal> {
        let mut worst: Option<(Fit, Refusal)> = None;
        let checks = [
            (&mut self.rpm, 1, Dimension::Requests, false),
            (&mut self.tpm, count.charged(), Dimension::Tokens, false),
            (&mut self.itpm, count.input, Dimension::InputTokens, false),
            (
                &mut self.otpm,
                count.output_allowance,
                Dimension::OutputTokens,
                false,
            ),
            (&mut self.rpd, 1, Dimension::Requests, true),
        ];
        let mut logs = Vec::with_capacity(5);
        for (log, cost, dimension, daily) in checks {
            let Some(log) = log.as_mut() else { continue };
            let fit = log.fit(now, cost);
            let rank = |f: &Fit| match f {
                Fit::Now => (0, Duration::ZERO),
                Fit::After(d) => (1, *d),
                Fit::Never => (2, Duration::ZERO),
            };
            if fit != Fit::Now && worst.as_ref().is_none_or(|(w, _)| rank(&fit) > rank(w)) {
                let refusal = Refusal {
                    dimension,
                    daily,
                    limit: log.limit(),
                    used: log.used(now),
                    requested: cost,
                    wait: match fit {
                        Fit::After(d) => Some(d),
                        _ => None,
                    },
                };
                worst = Some((fit, refusal));
            }
            logs.push((log, cost));
        }
        if let Some((_, refusal)) = worst {
            return Err(refusal);
        }
        for (log, cost) in logs {
            log.admit(now, cost, id);
        }
        Ok(())
    }

    fn reconcile(&mut self, id: u64, input: u64, completion: u64) {
        if let Some(l) = self.tpm.as_mut() {
            l.reconcile(id, input.saturating_add(completion));
        }
        if let Some(l) = self.otpm.as_mut() {
            l.reconcile(id, completion);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.wall_origin + now.saturating_duration_since(self.origin)
    }
}

impl State {
    fn account(&mut self, config: &Config, key: &str, model: &str) -> &mut Account {
        self.accounts
            .entry((key.to_owned(), model.to_owned()))
            .or_insert_with(|| Account::new(config))
    }

    fn entry(&mut self, id: u64) -> Option<&mut JournalEntry> {
        self.journal.get_mut(usize::try_from(id).ok()?)
    }
}

/// Why an in-process request failed (responses, 429 and 5xx included, are `Ok`).
///
/// ```
/// use ratelayer_core::Dialect;
/// use ratelayer_mock::{ChatRequest, Fault, MockError, MockProvider};
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockProvider::builder().fault(Fault::connection_closed()).build().unwrap();
/// let req = ChatRequest::new("gpt-4o-mini").user("Hi").build(Dialect::OpenAi);
/// let err = mock.oneshot(req).await.unwrap_err();
/// assert!(matches!(err, MockError::ConnectionClosed));
/// assert!(err.to_string().contains("closed the connection"));
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum MockError {
    /// A [`FaultKind::ConnectionClosed`] fault: the connection was closed mid-request.
    ConnectionClosed,
    /// A [`FaultKind::StreamCut`] fault: the stream was cut before its end.
    StreamCut,
    /// Reading the request body failed.
    Body(BoxError),
}

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MockError::ConnectionClosed => {
                f.write_str("mock provider closed the connection mid-request (injected fault)")
            }
            MockError::StreamCut => {
                f.write_str("mock provider cut the stream before its end (injected fault)")
            }
            MockError::Body(e) => write!(f, "mock provider could not read the request body: {e}"),
        }
    }
}

impl std::error::Error for MockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MockError::Body(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl MockProvider {
    /// A builder with no limits, the OpenAI dialect and no faults.
    ///
    /// ```
    /// use ratelayer_mock::{Limits, MockProvider};
    /// let mock = MockProvider::builder().rpm(60).build().unwrap();
    /// assert_eq!(mock.limits(), Limits::new().rpm(60)); // nothing else limited
    /// assert_eq!(mock.dialect(), ratelayer_core::Dialect::OpenAi);
    /// ```
    pub fn builder() -> MockBuilder {
        MockBuilder::default()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        let wall_origin = config.wall_origin.unwrap_or_else(SystemTime::now);
        MockProvider {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    rng: Rng::new(config.seed),
                    next_id: 0,
                    accounts: HashMap::new(),
                    journal: Vec::new(),
                }),
                config,
                origin: Instant::now(),
                wall_origin,
            }),
        }
    }

    /// The dialect this mock speaks.
    ///
    /// ```
    /// let mock = ratelayer_mock::MockProvider::builder().build().unwrap();
    /// assert_eq!(mock.dialect(), ratelayer_core::Dialect::OpenAi);
    /// ```
    pub fn dialect(&self) -> Dialect {
        self.shared.config.dialect
    }

    /// The limits this mock enforces per key and model.
    ///
    /// ```
    /// let mock = ratelayer_mock::MockProvider::builder().tpm(9).build().unwrap();
    /// assert_eq!(mock.limits().tpm, Some(9));
    /// ```
    pub fn limits(&self) -> crate::Limits {
        self.shared.config.limits
    }

    /// A snapshot of the journal of every request so far.
    ///
    /// ```
    /// let mock = ratelayer_mock::MockProvider::builder().build().unwrap();
    /// assert!(mock.journal().is_empty());
    /// ```
    pub fn journal(&self) -> Journal {
        Journal::new(self.shared.lock().journal.clone())
    }

    /// The wall-clock time the mock puts in absolute-date headers for `instant` (pass it
    /// as `now` to `ratelayer_core::headers::parse`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mock = ratelayer_mock::MockProvider::builder()
    ///     .wall_clock_origin(std::time::UNIX_EPOCH).build().unwrap();
    /// assert!(mock.wall_time(tokio::time::Instant::now()) >= std::time::UNIX_EPOCH);
    /// # }
    /// ```
    pub fn wall_time(&self, instant: Instant) -> SystemTime {
        self.shared.wall(instant)
    }

    /// Draws a request's arrival: journal entry, fault rolls and latency, in arrival order.
    fn arrive(&self, headers: &HeaderMap, uri: &http::Uri) -> Ticket {
        let config = &self.shared.config;
        let now = Instant::now();
        let mut state = self.shared.lock();
        let id = state.next_id;
        state.next_id += 1;
        let mut fault = None;
        let mut extra = Duration::ZERO;
        for f in &config.faults {
            // Every fault rolls on every request (and every latency fault samples), so one
            // fault's rate does not depend on the others'.
            let roll = state.rng.unit();
            let sample = match f.kind {
                FaultKind::Latency(l) => l.sample(&mut state.rng),
                _ => Duration::ZERO,
            };
            if !f.fires(id, roll) {
                continue;
            }
            match f.kind {
                FaultKind::Latency(_) => extra = extra.saturating_add(sample),
                kind if fault.is_none() => fault = Some(kind),
                _ => {}
            }
        }
        let latency = config.latency.sample(&mut state.rng).saturating_add(extra);
        let key = api_key(headers, uri);
        state.journal.push(JournalEntry {
            id,
            request_id: headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            key: key.clone(),
            model: String::new(),
            stream: false,
            arrival: now,
            start: None,
            finish: None,
            input_tokens: 0,
            output_allowance: 0,
            tokens_charged: 0,
            completion_tokens: 0,
            tokens: 0,
            status: None,
            fault: None,
        });
        drop(state);
        Ticket {
            shared: self.shared.clone(),
            id,
            key,
            model: String::new(),
            fault,
            extra_latency: extra,
            applied: None,
            latency,
            admitted: None,
            permit: None,
            done: false,
        }
    }
}

/// The API key of a request, from any provider's header (or Gemini's `?key=`).
fn api_key(headers: &HeaderMap, uri: &http::Uri) -> String {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(b) = h("authorization") {
        return b.strip_prefix("Bearer ").unwrap_or(b).trim().to_owned();
    }
    if let Some(k) = h("api-key")
        .or_else(|| h("x-api-key"))
        .or_else(|| h("x-goog-api-key"))
    {
        return k.trim().to_owned();
    }
    uri.query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("key=")))
        .unwrap_or_default()
        .to_owned()
}

/// The model: the body's `model`, else the URL path's (`/models/{m}:...` for Gemini,
/// `/deployments/{d}/...` for Azure), else `unknown`.
fn model_of(body: Option<&Value>, path: &str) -> String {
    if let Some(m) = body.and_then(|b| b.get("model")).and_then(Value::as_str) {
        return m.to_owned();
    }
    for marker in ["/models/", "/deployments/"] {
        if let Some(i) = path.find(marker) {
            let rest = &path[i + marker.len()..];
            let end = rest.find([':', '/']).unwrap_or(rest.len());
            if end > 0 {
                return rest[..end].to_owned();
            }
        }
    }
    "unknown".to_owned()
}

#[derive(Debug, Clone, Copy)]
struct Admission {
    input: u64,
    completion: u64,
}

/// One request's hold on the mock: releases its concurrency slot, reconciles its token
/// charge and records its finish when done (finished, refused, or dropped).
struct Ticket {
    shared: Arc<Shared>,
    id: u64,
    key: String,
    model: String,
    /// The status, quota, connection or stream fault drawn for this request.
    fault: Option<FaultKind>,
    /// The latency added by latency faults.
    extra_latency: Duration,
    /// The fault that really applied (recorded in the journal).
    applied: Option<FaultKind>,
    /// Base latency plus fault latency.
    latency: Duration,
    admitted: Option<Admission>,
    permit: Option<OwnedSemaphorePermit>,
    done: bool,
}

impl Ticket {
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let now = Instant::now();
        let config = &self.shared.config;
        let mut state = self.shared.lock();
        if let Some(a) = self.admitted {
            state
                .account(config, &self.key, &self.model)
                .reconcile(self.id, a.input, a.completion);
        }
        if let Some(e) = state.entry(self.id) {
            e.finish = Some(now);
            e.fault = self.applied;
            if let Some(a) = self.admitted {
                e.tokens = a.input.saturating_add(a.completion);
            }
        }
        drop(state);
        self.permit = None;
    }

    /// A response with the dialect's headers for this request's account at `now`.
    fn response(
        &mut self,
        status: StatusCode,
        body: MockBody,
        content_type: &'static str,
    ) -> Response<MockBody> {
        let config = &self.shared.config;
        let now = Instant::now();
        let wall = self.shared.wall(now);
        let mut headers = HeaderMap::new();
        let mut state = self.shared.lock();
        let views = state.account(config, &self.key, &self.model).views(now);
        dialect::rate_headers(config.dialect, &views, wall, &mut headers);
        if let Some(e) = state.entry(self.id) {
            e.status = Some(status);
        }
        drop(state);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::try_from(self.id.to_string()) {
            headers.insert(REQUEST_ID_HEADER, v);
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }

    /// A refusal: answered and finished at once, nothing charged.
    fn refuse(
        mut self,
        status: StatusCode,
        body: Bytes,
        wait: Option<Duration>,
    ) -> Response<MockBody> {
        let mut resp = self.response(status, MockBody::full(body), JSON);
        if let Some(w) = wait {
            dialect::retry_headers(self.shared.config.dialect, w, resp.headers_mut());
        }
        self.finish();
        resp
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.finish();
    }
}

const JSON: &str = "application/json";

async fn handle<B>(mut ticket: Ticket, req: Request<B>) -> Result<Response<MockBody>, MockError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let shared = ticket.shared.clone();
    let config = &shared.config;
    let dialect = config.dialect;
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => return Err(MockError::Body(e)),
    };
    let json: Option<Value> = serde_json::from_slice(&bytes).ok();
    let count = TokenCount::for_request(parts.uri.path(), &bytes);
    let model = model_of(json.as_ref(), parts.uri.path());
    let stream = json
        .as_ref()
        .and_then(|j| j.get("stream"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || parts.uri.path().contains("streamGenerateContent");
    ticket.model = model.clone();
    {
        let mut state = shared.lock();
        if let Some(e) = state.entry(ticket.id) {
            e.model = model.clone();
            e.stream = stream;
            e.input_tokens = count.input;
            e.output_allowance = count.output_allowance;
        }
    }

    if let Some(window) = config.context_window
        && count.input.saturating_add(count.max_tokens) > window
    {
        tracing::debug!(id = ticket.id, %model, window, input = count.input, "mock: context length exceeded");
        let body = dialect::context_body(dialect, window, count.input, count.max_tokens);
        return Ok(ticket.refuse(StatusCode::BAD_REQUEST, body, None));
    }
    match ticket.fault {
        Some(FaultKind::Status(s)) => {
            ticket.applied = ticket.fault;
            tracing::debug!(
                id = ticket.id,
                status = s.as_u16(),
                "mock: injected status fault"
            );
            return Ok(ticket.refuse(s, dialect::status_body(dialect, s), None));
        }
        Some(FaultKind::QuotaExhausted) => {
            tracing::debug!(id = ticket.id, "mock: injected quota exhausted");
            ticket.applied = ticket.fault;
            let body = dialect::quota_body(dialect);
            return Ok(ticket.refuse(StatusCode::TOO_MANY_REQUESTS, body, None));
        }
        _ => {}
    }

    let slots = shared
        .lock()
        .account(config, &ticket.key, &model)
        .slots
        .clone();
    if let Some(slots) = slots {
        let permit = match config.concurrency_mode {
            ConcurrencyMode::Refuse => slots.try_acquire_owned().ok(),
            ConcurrencyMode::Queue => slots.acquire_owned().await.ok(),
        };
        match permit {
            Some(p) => ticket.permit = Some(p),
            None => {
                let limit = config.limits.concurrency.unwrap_or_default();
                tracing::debug!(id = ticket.id, %model, limit, "mock: concurrency limit, refused");
                let body = dialect::concurrency_body(dialect, limit);
                return Ok(ticket.refuse(StatusCode::TOO_MANY_REQUESTS, body, None));
            }
        }
    }

    let now = Instant::now();
    let admitted = shared
        .lock()
        .account(config, &ticket.key, &model)
        .try_admit(now, ticket.id, &count);
    if let Err(refusal) = admitted {
        tracing::debug!(
            id = ticket.id,
            %model,
            dimension = refusal.dimension.as_str(),
            wait_ms = refusal.wait.map(|w| w.as_millis() as u64),
            "mock: rate limited"
        );
        let body = dialect::rate_limit_body(dialect, &model, &refusal);
        return Ok(ticket.refuse(StatusCode::TOO_MANY_REQUESTS, body, refusal.wait));
    }
    let completion = count.completion_tokens(config.completion_fraction);
    ticket.admitted = Some(Admission {
        input: count.input,
        completion,
    });
    {
        let mut state = shared.lock();
        if let Some(e) = state.entry(ticket.id) {
            e.start = Some(now);
            e.tokens_charged = count.charged();
            e.tokens = count.charged();
            e.completion_tokens = completion;
        }
    }
    tracing::debug!(id = ticket.id, %model, charged = count.charged(), "mock: admitted");

    if !ticket.extra_latency.is_zero() {
        ticket.applied = Some(FaultKind::Latency(Latency::Fixed(ticket.extra_latency)));
    }
    if !ticket.latency.is_zero() {
        tokio::time::sleep(ticket.latency).await;
    }
    if ticket.fault == Some(FaultKind::ConnectionClosed) {
        tracing::debug!(id = ticket.id, "mock: injected connection close");
        ticket.applied = ticket.fault;
        ticket.finish();
        return Err(MockError::ConnectionClosed);
    }

    let c = Completion {
        id: ticket.id,
        model: &model,
        created: shared
            .wall(Instant::now())
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        input: count.input,
        output: completion,
        n: count.n,
    };
    let (body, content_type) = if stream {
        let events = dialect::stream_events(dialect, &c);
        let cut = (ticket.fault == Some(FaultKind::StreamCut)).then_some(events.len() / 2);
        if cut.is_some() {
            tracing::debug!(id = ticket.id, "mock: injected stream cut");
            ticket.applied = ticket.fault;
        }
        (
            MockBody::stream(events, config.stream_chunk_delay, cut),
            dialect::SSE,
        )
    } else {
        (MockBody::full(dialect::completion_body(dialect, &c)), JSON)
    };
    let mut resp = ticket.response(StatusCode::OK, body, content_type);
    let body = resp.body_mut();
    body.attach(ticket);
    Ok(resp)
}

impl<B> Service<Request<B>> for MockProvider
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<MockBody>;
    type Error = MockError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let ticket = self.arrive(req.headers(), req.uri());
        ResponseFuture {
            inner: Box::pin(handle(ticket, req)),
        }
    }
}

/// The response future of [`MockProvider`].
///
/// ```
/// use ratelayer_core::Dialect;
/// use ratelayer_mock::{ChatRequest, MockProvider, ResponseFuture};
/// use tower::Service;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut mock = MockProvider::builder().build().unwrap(); // always ready
/// let future: ResponseFuture = mock.call(ChatRequest::new("gpt-4o-mini").build(Dialect::OpenAi));
/// assert_eq!(mock.journal().len(), 1); // arrived at `call`
/// assert_eq!(future.await.unwrap().status(), 200);
/// # }
/// ```
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<MockBody>, MockError>> + Send>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<MockBody>, MockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// The response body of [`MockProvider`]: a JSON document or SSE events.
///
/// An admitted request stays in flight (holding its concurrency slot, its token charge
/// not yet reconciled) until this body yields its last frame or is dropped.
///
/// ```
/// use http_body_util::BodyExt;
/// use ratelayer_core::Dialect;
/// use ratelayer_mock::{ChatRequest, MockBody, MockProvider};
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mock = MockProvider::builder().concurrency(1).build().unwrap();
/// let chat = ChatRequest::new("gpt-4o-mini").user("Hi").stream(true);
/// let resp = mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap();
/// assert!(mock.journal().entries()[0].finish.is_none()); // in flight while the body is unread
/// let body: MockBody = resp.into_body();
/// let sse = body.collect().await.unwrap().to_bytes();
/// assert!(sse.ends_with(b"data: [DONE]\n\n"));
/// assert!(mock.journal().entries()[0].finish.is_some());
/// # }
/// ```
pub struct MockBody {
    chunks: VecDeque<Bytes>,
    streaming: bool,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    cut_after: Option<usize>,
    cut_paused: bool,
    sent: usize,
    ticket: Option<Ticket>,
}

impl fmt::Debug for MockBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockBody")
            .field("chunks_left", &self.chunks.len())
            .field("streaming", &self.streaming)
            .finish_non_exhaustive()
    }
}

impl MockBody {
    fn full(bytes: Bytes) -> Self {
        MockBody {
            chunks: VecDeque::from([bytes]),
            streaming: false,
            delay: Duration::ZERO,
            sleep: None,
            cut_after: None,
            cut_paused: false,
            sent: 0,
            ticket: None,
        }
    }

    fn stream(events: Vec<Bytes>, delay: Duration, cut_after: Option<usize>) -> Self {
        MockBody {
            chunks: events.into(),
            streaming: true,
            delay,
            sleep: None,
            cut_after,
            cut_paused: false,
            sent: 0,
            ticket: None,
        }
    }

    fn attach(&mut self, ticket: Ticket) {
        self.ticket = Some(ticket);
    }

    fn finish(&mut self) {
        if let Some(mut t) = self.ticket.take() {
            t.finish();
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = MockError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, MockError>>> {
        if self.cut_after == Some(self.sent) {
            if !self.cut_paused {
                // Pause once before the cut, so a server flushes what was sent: the client
                // sees a stream that breaks off, not a response that never began.
                self.cut_paused = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.chunks.clear();
            self.cut_after = None;
            self.finish();
            return Poll::Ready(Some(Err(MockError::StreamCut)));
        }
        if self.chunks.is_empty() {
            self.finish();
            return Poll::Ready(None);
        }
        if self.sent > 0 && !self.delay.is_zero() {
            let delay = self.delay;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        let Some(chunk) = self.chunks.pop_front() else {
            return Poll::Ready(None);
        };
        self.sent += 1;
        if self.chunks.is_empty() && self.cut_after.is_none() {
            self.finish();
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.cut_after.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.streaming {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
        }
    }
}
