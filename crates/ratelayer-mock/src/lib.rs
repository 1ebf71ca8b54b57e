//! An honest mock LLM provider for testing tower stacks: it enforces rate limits with its
//! own plain sliding-window log, answers in real provider dialects (OpenAI, Azure OpenAI,
//! Anthropic, Gemini, Groq), injects faults on a seeded schedule and keeps a journal of
//! every request to judge the client by.
//!
//! Put it in your `[dev-dependencies]`:
//!
//! ```toml
//! [dev-dependencies]
//! ratelayer-mock = "0.1"
//! ```
//!
//! - [`MockProvider`]: a `tower::Service<http::Request<B>>` for any `http_body::Body`,
//!   in-process (no sockets), on `tokio::time` so paused-time tests work. Clones share all
//!   state.
//! - [`serve`]: the same provider over HTTP on a loopback address, with a shutdown handle.
//! - The `ratelayer-mock` binary: `cargo run -p ratelayer-mock -- --dialect openai --rpm 60
//!   --tpm 10000` (see `--help`).
//! - [`ChatRequest`]: a chat request rendered in any dialect (path, key header, body).
//! - [`Journal`]: arrival, start, finish, key, model, tokens and status of every request,
//!   with exact helpers ("most requests admitted in any minute", "how many 429s", "most in
//!   flight at once").
//!
//! # Example: a test of a client against the mock
//!
//! (Paused time needs tokio's `test-util` feature; `oneshot` is tower's `util`.)
//!
//! ```
//! use std::time::Duration;
//! use http::StatusCode;
//! use ratelayer_core::Dialect;
//! use ratelayer_mock::{ChatRequest, MockProvider};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // (in your tests: #[tokio::test(start_paused = true)])
//! let mock = MockProvider::builder().rpm(3).tpm(10_000).build().unwrap();
//! let chat = ChatRequest::new("gpt-4o-mini").key("sk-test").user("Hello").max_tokens(50);
//!
//! let mut statuses = Vec::new();
//! for _ in 0..4 {
//!     let response = mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap();
//!     statuses.push(response.status());
//! }
//! assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
//!
//! // A client that waits out the minute gets in again.
//! tokio::time::advance(Duration::from_secs(60)).await;
//! let response = mock.clone().oneshot(chat.build(Dialect::OpenAi)).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "2");
//! drop(response);
//!
//! // The judge: never more than 3 requests admitted in any minute, one 429.
//! let journal = mock.journal();
//! assert!(journal.max_requests_in_window(Duration::from_secs(60)) <= 3);
//! assert_eq!(journal.rate_limited(), 1);
//! assert_eq!(journal.entries()[0].tokens_charged, chat.tokens(Dialect::OpenAi).charged());
//! # }
//! ```
//!
//! Over HTTP, the same mock: `let server = mock.serve(([127, 0, 0, 1], 0).into()).await?;`
//! then send `ChatRequest::new(..).base_url(server.url()).build(dialect)` with any client.
//!
//! # What the mock enforces
//!
//! Per API key and model (the key from `authorization: Bearer`, `api-key`, `x-api-key`,
//! `x-goog-api-key` or `?key=`; the model from the body's `model` or the URL path): requests
//! per minute, tokens per minute, input and output tokens per minute, requests per day and
//! requests in flight. A limit of `L` per window `W` holds when, for every instant `t`, the
//! costs admitted in `(t - W, t]` sum to at most `L`; the log keeps every admission, so a
//! 429's `Retry-After` is exactly the time until the request fits.
//!
//! A request is admitted only when every limit has room at once; then it is charged on all
//! of them. Refused requests (429, context-length errors, injected status and quota faults)
//! are not charged.
//!
//! **The token-charging rule** (detailed in [`tokens`], computable with
//! [`tokens::TokenCount`]):
//!
//! - charged at admission = input tokens + output allowance;
//! - input tokens = the sum over messages of `ceil(chars / 4) + 4` (Anthropic's `system` and
//!   Gemini's `systemInstruction` count as messages; Gemini's text is
//!   `contents[].parts[].text`); a body that is not JSON or has no known message field costs
//!   `ceil(bytes / 4)`;
//! - output allowance = `max_tokens` / `max_completion_tokens` / `max_output_tokens` /
//!   `generationConfig.maxOutputTokens` (16 when absent) × `n`;
//! - input tokens per minute are charged the input tokens, output tokens per minute the
//!   allowance;
//! - the `usage` reported has the real completion tokens, `floor(max_tokens × completion
//!   fraction) × n` (fraction 0.5 unless set with
//!   [`MockBuilder::completion_fraction`]), and when the response finishes (its body ended or
//!   was dropped) the charges are lowered to input + real completion tokens (output: the real
//!   completion tokens), as real providers do.
//!
//! Above the concurrency limit a request is refused with 429 (no retry hint: the mock
//! cannot know when a request in flight will finish) or, with
//! [`ConcurrencyMode::Queue`], waits in a FIFO queue. An admitted request is in flight
//! until its response body ends or is dropped.
//!
//! # Dialects
//!
//! | dialect | rate-limit headers | 429 retry hint |
//! |---|---|---|
//! | OpenAI | `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets as Go durations (`6m0s`, `1.5s`, `20ms`) | `retry-after` (seconds, rounded up) and `retry-after-ms` |
//! | Azure | the same names, resets in whole seconds (rounded up) | `retry-after` and `retry-after-ms` |
//! | Anthropic | `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`, resets as RFC 3339 instants | `retry-after` |
//! | Groq | OpenAI's names; `requests` are per day (RPD), `tokens` per minute | `retry-after` |
//! | Gemini | none | `google.rpc.RetryInfo` `retryDelay` in the JSON error body |
//!
//! A reset is the time until the limit is fully replenished (the newest admission leaves
//! the window). Responses and errors use each provider's JSON shapes; streamed responses
//! (`"stream": true`, or Gemini's `streamGenerateContent`) are SSE and end with the usage
//! (an OpenAI `stream_options.include_usage` chunk then `[DONE]`, Anthropic's
//! `message_delta` usage, Gemini's final `usageMetadata`). Every response carries
//! [`REQUEST_ID_HEADER`] with the request's journal id.
//!
//! # Faults
//!
//! [`Fault`]s fire with a probability (seeded), on listed arrival indices or on every
//! n-th request: status errors (500, 502, 503, 529), quota exhaustion (429
//! `insufficient_quota`, no retry hint), added latency, a connection closed mid-request
//! (over HTTP the connection drops; in-process the future fails with
//! [`MockError::ConnectionClosed`]) and a stream cut before its usage chunk.
//!
//! [`contract`] has tower-contract checks ([`contract::StrictService`]) for any stack.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
pub mod contract;
mod dialect;
mod journal;
mod provider;
mod request;
mod rng;
mod server;
pub mod tokens;
mod window;

pub use config::{ConcurrencyMode, Fault, FaultKind, Latency, Limits, MockBuilder, Tier, Trigger};
pub use journal::{Journal, JournalEntry};
pub use provider::{
    MAX_BODY, MockBody, MockError, MockProvider, REQUEST_ID_HEADER, ResponseFuture,
};
pub use request::ChatRequest;
pub use server::{MockServer, serve};
