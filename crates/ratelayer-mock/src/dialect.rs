//! What each provider's responses look like: rate-limit headers, JSON bodies, SSE events,
//! error bodies.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use ratelayer_core::{Dialect, Dimension};
use serde_json::{Value, json};

/// What a response says about one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitView {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Until the limit is fully replenished.
    pub(crate) reset: Duration,
}

/// What a response says about every limit, as the dialect reports them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Views {
    pub(crate) rpm: Option<LimitView>,
    pub(crate) tpm: Option<LimitView>,
    pub(crate) itpm: Option<LimitView>,
    pub(crate) otpm: Option<LimitView>,
    pub(crate) rpd: Option<LimitView>,
}

fn ceil_millis(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000) as u64
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000_000) as u64
}

/// A duration the way Go's `time.Duration.String` prints it, rounded up to whole
/// milliseconds: `0s`, `20ms`, `1.5s`, `6m0s`, `1h0m0s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = ceil_millis(d);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}");
    if frac > 0 {
        let f = format!("{frac:03}");
        let _ = write!(out, ".{}", f.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// A `google.protobuf.Duration` in JSON form, rounded up to milliseconds: `13s`, `1.5s`.
pub(crate) fn proto_duration(d: Duration) -> String {
    let ms = ceil_millis(d);
    let (s, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        format!("{s}s")
    } else {
        format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0'))
    }
}

/// RFC 3339 in UTC with whole seconds, rounded up: `2025-01-15T12:00:30Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = ceil_secs(d);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, mo, da) = civil_from_days(days as i64);
    format!(
        "{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn put(headers: &mut HeaderMap, name: &str, value: impl AsRef<str>) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::try_from(name),
        HeaderValue::try_from(value.as_ref()),
    ) {
        headers.insert(n, v);
    }
}

/// Adds the dialect's rate-limit headers.
pub(crate) fn rate_headers(
    dialect: Dialect,
    views: &Views,
    wall_now: SystemTime,
    headers: &mut HeaderMap,
) {
    match dialect {
        Dialect::OpenAi | Dialect::Groq | Dialect::Azure => {
            let requests = if dialect == Dialect::Groq {
                views.rpd
            } else {
                views.rpm
            };
            for (name, view) in [("requests", requests), ("tokens", views.tpm)] {
                let Some(v) = view else { continue };
                put(
                    headers,
                    &format!("x-ratelimit-limit-{name}"),
                    v.limit.to_string(),
                );
                put(
                    headers,
                    &format!("x-ratelimit-remaining-{name}"),
                    v.remaining.to_string(),
                );
                let reset = if dialect == Dialect::Azure {
                    ceil_secs(v.reset).to_string()
                } else {
                    go_duration(v.reset)
                };
                put(headers, &format!("x-ratelimit-reset-{name}"), reset);
            }
        }
        Dialect::Anthropic => {
            for (name, view) in [
                ("requests", views.rpm),
                ("tokens", views.tpm),
                ("input-tokens", views.itpm),
                ("output-tokens", views.otpm),
            ] {
                let Some(v) = view else { continue };
                let p = format!("anthropic-ratelimit-{name}");
                put(headers, &format!("{p}-limit"), v.limit.to_string());
                put(headers, &format!("{p}-remaining"), v.remaining.to_string());
                put(headers, &format!("{p}-reset"), rfc3339(wall_now + v.reset));
            }
        }
        _ => {}
    }
}

/// Adds the dialect's retry hint headers for a 429 that fits after `wait`.
pub(crate) fn retry_headers(dialect: Dialect, wait: Duration, headers: &mut HeaderMap) {
    match dialect {
        Dialect::OpenAi | Dialect::Azure => {
            put(headers, "retry-after", ceil_secs(wait).to_string());
            put(headers, "retry-after-ms", ceil_millis(wait).to_string());
        }
        Dialect::Anthropic | Dialect::Groq => {
            put(headers, "retry-after", ceil_secs(wait).to_string());
        }
        _ => {}
    }
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(v.to_string())
}

fn openai_error(message: &str, kind: &str, param: Value, code: Value) -> Bytes {
    to_bytes(&json!({
        "error": {"message": message, "type": kind, "param": param, "code": code}
    }))
}

fn anthropic_error(kind: &str, message: &str) -> Bytes {
    to_bytes(&json!({"type": "error", "error": {"type": kind, "message": message}}))
}

fn gemini_error(code: u16, status: &str, message: &str, details: Value) -> Bytes {
    to_bytes(&json!({
        "error": {"code": code, "message": message, "status": status, "details": details}
    }))
}

fn dimension_words(d: Dimension, groq: bool) -> (&'static str, &'static str) {
    match d {
        Dimension::Requests if groq => ("requests", "requests per day (RPD)"),
        Dimension::Requests => ("requests", "requests per min (RPM)"),
        Dimension::Tokens => ("tokens", "tokens per min (TPM)"),
        Dimension::InputTokens => ("input_tokens", "input tokens per min (ITPM)"),
        Dimension::OutputTokens => ("output_tokens", "output tokens per min (OTPM)"),
    }
}

/// Which limit refused a request, and how.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    pub(crate) dimension: Dimension,
    /// Whether the window was a day (RPD).
    pub(crate) daily: bool,
    pub(crate) limit: u64,
    pub(crate) used: u64,
    pub(crate) requested: u64,
    /// `None`: it can never fit.
    pub(crate) wait: Option<Duration>,
}

/// The body of a rate-limit 429.
pub(crate) fn rate_limit_body(dialect: Dialect, model: &str, r: &Refusal) -> Bytes {
    let (kind, words) = dimension_words(r.dimension, r.daily);
    let words = if r.daily && r.dimension == Dimension::Requests {
        "requests per day (RPD)"
    } else {
        words
    };
    let message = match r.wait {
        Some(wait) => format!(
            "Rate limit reached for {model} on {words}: Limit {}, Used {}, Requested {}. \
             Please try again in {}.",
            r.limit,
            r.used,
            r.requested,
            go_duration(wait)
        ),
        None => format!(
            "Request too large for {model} on {words}: Limit {}, Requested {}. \
             The input or output tokens must be reduced in order to run successfully.",
            r.limit, r.requested
        ),
    };
    match dialect {
        Dialect::Anthropic => anthropic_error(
            "rate_limit_error",
            &format!(
                "This request would exceed the rate limit for your organization of {} {} \
                 for {model}.",
                r.limit, words
            ),
        ),
        Dialect::Gemini => {
            let details = match r.wait {
                Some(wait) => json!([{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": proto_duration(wait),
                }]),
                None => json!([]),
            };
            gemini_error(
                429,
                "RESOURCE_EXHAUSTED",
                &format!("Resource has been exhausted (e.g. check quota). {message}"),
                details,
            )
        }
        Dialect::Azure => {
            let secs = r.wait.map_or(0, ceil_secs);
            to_bytes(&json!({"error": {
                "code": "429",
                "message": format!(
                    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API \
                     have exceeded the {kind} rate limit of your current pricing tier. \
                     Please retry after {secs} seconds."
                ),
            }}))
        }
        _ => openai_error(&message, kind, Value::Null, json!("rate_limit_exceeded")),
    }
}

/// The body of a concurrency 429.
pub(crate) fn concurrency_body(dialect: Dialect, limit: usize) -> Bytes {
    let message = format!(
        "Too many concurrent requests: at most {limit} may be in flight at once for this key \
         and model."
    );
    match dialect {
        Dialect::Anthropic => anthropic_error("rate_limit_error", &message),
        Dialect::Gemini => gemini_error(429, "RESOURCE_EXHAUSTED", &message, json!([])),
        _ => openai_error(
            &message,
            "requests",
            Value::Null,
            json!("concurrency_limit_exceeded"),
        ),
    }
}

/// The body of a quota-exhausted 429.
pub(crate) fn quota_body(dialect: Dialect) -> Bytes {
    let message = "You exceeded your current quota, please check your plan and billing details.";
    match dialect {
        Dialect::Anthropic => anthropic_error(
            "rate_limit_error",
            "Your credit balance is too low to access the API (insufficient_quota).",
        ),
        Dialect::Gemini => gemini_error(
            429,
            "RESOURCE_EXHAUSTED",
            message,
            json!([{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"subject": "insufficient_quota"}]}]),
        ),
        _ => openai_error(
            message,
            "insufficient_quota",
            Value::Null,
            json!("insufficient_quota"),
        ),
    }
}

/// The body of a server error.
pub(crate) fn status_body(dialect: Dialect, status: StatusCode) -> Bytes {
    let overloaded = status.as_u16() == 529 || status == StatusCode::SERVICE_UNAVAILABLE;
    match dialect {
        Dialect::Anthropic => {
            if overloaded {
                anthropic_error("overloaded_error", "Overloaded")
            } else {
                anthropic_error("api_error", "Internal server error")
            }
        }
        Dialect::Gemini => {
            let (s, m) = if overloaded {
                (
                    "UNAVAILABLE",
                    "The model is overloaded. Please try again later.",
                )
            } else {
                ("INTERNAL", "An internal error has occurred.")
            };
            gemini_error(status.as_u16(), s, m, json!([]))
        }
        _ => {
            let m = if overloaded {
                "The engine is currently overloaded, please try again later."
            } else {
                "The server had an error while processing your request. Sorry about that!"
            };
            openai_error(m, "server_error", Value::Null, Value::Null)
        }
    }
}

/// The body of a context-length error (status 400).
pub(crate) fn context_body(dialect: Dialect, window: u64, input: u64, max_tokens: u64) -> Bytes {
    let total = input.saturating_add(max_tokens);
    match dialect {
        Dialect::Anthropic => anthropic_error(
            "invalid_request_error",
            &format!("prompt is too long: {total} tokens > {window} maximum"),
        ),
        Dialect::Gemini => gemini_error(
            400,
            "INVALID_ARGUMENT",
            &format!(
                "The input token count ({total}) exceeds the maximum number of tokens allowed \
                 ({window})."
            ),
            json!([]),
        ),
        _ => openai_error(
            &format!(
                "This model's maximum context length is {window} tokens. However, you requested \
                 {total} tokens ({input} in the messages, {max_tokens} in the completion). \
                 Please reduce the length of the messages or completion."
            ),
            "invalid_request_error",
            json!("messages"),
            json!("context_length_exceeded"),
        ),
    }
}

/// What a completed request produced.
#[derive(Debug, Clone)]
pub(crate) struct Completion<'a> {
    pub(crate) id: u64,
    pub(crate) model: &'a str,
    pub(crate) created: u64,
    pub(crate) input: u64,
    /// Completion tokens over all choices.
    pub(crate) output: u64,
    pub(crate) n: u64,
}

/// The longest text the mock writes per choice (the `usage` still reports every token).
pub(crate) const MAX_TEXT_TOKENS: u64 = 16_384;

/// The most choices the mock writes out (OpenAI's own maximum of `n`).
pub(crate) const MAX_CHOICES: u64 = 128;

impl Completion<'_> {
    fn choices(&self) -> u64 {
        self.n.clamp(1, MAX_CHOICES)
    }

    /// The text of one choice: `output / n` tokens of `tok ` (4 characters each, so the
    /// text counts back to its tokens under the mock's rule), at most
    /// [`MAX_TEXT_TOKENS`].
    fn text(&self) -> String {
        let tokens = (self.output / self.n.max(1)).min(MAX_TEXT_TOKENS);
        "tok ".repeat(tokens as usize)
    }

    fn openai_usage(&self) -> Value {
        json!({"prompt_tokens": self.input, "completion_tokens": self.output,
               "total_tokens": self.input.saturating_add(self.output)})
    }

    fn gemini_usage(&self) -> Value {
        json!({"promptTokenCount": self.input, "candidatesTokenCount": self.output,
               "totalTokenCount": self.input.saturating_add(self.output)})
    }
}

/// The JSON body of a non-streamed answer.
pub(crate) fn completion_body(dialect: Dialect, c: &Completion<'_>) -> Bytes {
    let text = c.text();
    match dialect {
        Dialect::Anthropic => to_bytes(&json!({
            "id": format!("msg_mock_{}", c.id), "type": "message", "role": "assistant",
            "model": c.model, "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": c.input, "output_tokens": c.output},
        })),
        Dialect::Gemini => {
            let candidates: Vec<Value> = (0..c.choices())
                .map(|i| {
                    json!({"content": {"parts": [{"text": text}], "role": "model"},
                                "finishReason": "STOP", "index": i})
                })
                .collect();
            to_bytes(
                &json!({"candidates": candidates, "usageMetadata": c.gemini_usage(),
                             "modelVersion": c.model}),
            )
        }
        _ => {
            let choices: Vec<Value> = (0..c.choices())
                .map(|i| {
                    json!({"index": i, "message": {"role": "assistant", "content": text},
                                "logprobs": null, "finish_reason": "stop"})
                })
                .collect();
            to_bytes(&json!({
                "id": format!("chatcmpl-mock-{}", c.id), "object": "chat.completion",
                "created": c.created, "model": c.model, "choices": choices,
                "usage": c.openai_usage(),
            }))
        }
    }
}

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    let mut s = String::new();
    if let Some(e) = event {
        let _ = writeln!(s, "event: {e}");
    }
    let _ = write!(s, "data: {data}\n\n");
    Bytes::from(s)
}

/// Splits one choice's text into up to four pieces.
fn pieces(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    if words.is_empty() {
        return Vec::new();
    }
    let per = words.len().div_ceil(4);
    words.chunks(per).map(|w| w.concat()).collect()
}

/// The SSE events of a streamed answer; the last events carry the usage.
pub(crate) fn stream_events(dialect: Dialect, c: &Completion<'_>) -> Vec<Bytes> {
    let text = c.text();
    let mut out = Vec::new();
    match dialect {
        Dialect::Anthropic => {
            let id = format!("msg_mock_{}", c.id);
            out.push(sse(
                Some("message_start"),
                &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": c.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": c.input, "output_tokens": 1}}}),
            ));
            out.push(sse(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}),
            ));
            for p in pieces(&text) {
                out.push(sse(
                    Some("content_block_delta"),
                    &json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": p}}),
                ));
            }
            out.push(sse(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}),
            ));
            out.push(sse(
                Some("message_delta"),
                &json!({"type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                        "usage": {"output_tokens": c.output}}),
            ));
            out.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
        }
        Dialect::Gemini => {
            for p in pieces(&text) {
                out.push(sse(
                    None,
                    &json!({"candidates": [{"content": {"parts": [{"text": p}],
                    "role": "model"}, "index": 0}], "modelVersion": c.model}),
                ));
            }
            out.push(sse(
                None,
                &json!({"candidates": [{"content": {"parts": [{"text": ""}],
                "role": "model"}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": c.gemini_usage(), "modelVersion": c.model}),
            ));
        }
        _ => {
            let id = format!("chatcmpl-mock-{}", c.id);
            let chunk = |choices: Value| {
                json!({"id": id, "object": "chat.completion.chunk", "created": c.created,
                       "model": c.model, "choices": choices})
            };
            for i in 0..c.choices() {
                out.push(sse(
                    None,
                    &chunk(
                        json!([{"index": i, "delta": {"role": "assistant", "content": ""},
                                   "finish_reason": null}]),
                    ),
                ));
                for p in pieces(&text) {
                    out.push(sse(
                        None,
                        &chunk(json!([{"index": i, "delta": {"content": p},
                                       "finish_reason": null}])),
                    ));
                }
                out.push(sse(
                    None,
                    &chunk(json!([{"index": i, "delta": {}, "finish_reason": "stop"}])),
                ));
            }
            let mut usage = chunk(json!([]));
            usage["usage"] = c.openai_usage();
            out.push(sse(None, &usage));
            out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        }
    }
    out
}

/// The content type of a streamed answer.
pub(crate) const SSE: &str = "text/event-stream";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_look_like_openai_s() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(ms(20)), "20ms");
        assert_eq!(go_duration(Duration::from_micros(19_001)), "20ms");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
        assert_eq!(go_duration(ms(61_250)), "1m1.25s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
        assert_eq!(go_duration(ms(86_399_999)), "23h59m59.999s");
    }

    #[test]
    fn proto_and_rfc3339() {
        assert_eq!(proto_duration(Duration::from_secs(13)), "13s");
        assert_eq!(proto_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_736_942_430);
        assert_eq!(rfc3339(t), "2025-01-15T12:00:30Z");
        assert_eq!(
            rfc3339(t + Duration::from_millis(1)),
            "2025-01-15T12:00:31Z"
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn pieces_keep_all_text() {
        let t = "tok ".repeat(10);
        assert_eq!(pieces(&t).concat(), t);
        assert!(pieces(&t).len() <= 4);
        assert!(pieces("").is_empty());
    }
}
