//! Classification of real provider responses and transport errors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::*;
use crate::error::{ConfigError, NeverFits, QueueFull, WaitTooLong};
use crate::headers;
use crate::scope::Scope;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_714_564_800)
}

/// Parses the response as a layer would, then classifies it.
fn classify(status: u16, pairs: &[(&str, &str)], body: &str) -> Classification {
    classify_with(&DefaultClassifier::new(), status, pairs, body)
}

fn classify_with(
    c: &dyn Classifier,
    status: u16,
    pairs: &[(&str, &str)],
    body: &str,
) -> Classification {
    let status = StatusCode::from_u16(status).unwrap();
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let body = (!body.is_empty()).then_some(body.as_bytes());
    let snapshot = headers::parse(status, &h, body, now(), None);
    c.classify_response(status, &h, body, &snapshot)
}

fn rate_limited(dimension: Option<Dimension>, retry_after: Option<Duration>) -> Classification {
    Classification::RateLimited {
        dimension,
        retry_after,
    }
}

fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

#[test]
fn success() {
    for s in [200, 201, 204, 304] {
        assert_eq!(classify(s, &[], ""), Classification::Success);
    }
    // Even a success body that talks about rate limits.
    assert_eq!(
        classify(200, &[], r#"{"text":"rate limit exceeded"}"#),
        Classification::Success
    );
}

#[test]
fn openai_rate_limits_name_the_dimension_and_delay() {
    let tpm = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2.184s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
    assert_eq!(
        classify(429, &[], tpm),
        rate_limited(Some(Dimension::Tokens), ms(2_184))
    );
    let rpm = r#"{"error":{"message":"Rate limit reached for gpt-3.5-turbo in organization org-abc on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    assert_eq!(
        classify(429, &[], rpm),
        rate_limited(Some(Dimension::Requests), ms(20_000))
    );
    // The headers' exhausted dimension and reset win over the wording.
    let headers = [
        ("x-ratelimit-remaining-requests", "5"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ];
    assert_eq!(
        classify(429, &headers, ""),
        rate_limited(Some(Dimension::Tokens), ms(360_000))
    );
    assert_eq!(
        classify(429, &[("retry-after-ms", "750")], ""),
        rate_limited(None, ms(750))
    );
}

#[test]
fn a_bare_429_is_rate_limited() {
    assert_eq!(classify(429, &[], ""), rate_limited(None, None));
    assert_eq!(
        classify(429, &[], "Too Many Requests"),
        rate_limited(None, None)
    );
}

#[test]
fn openai_insufficient_quota_is_not_a_transient_429() {
    let body = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    let c = classify(429, &[("retry-after", "1")], body);
    assert_eq!(
        c,
        Classification::QuotaExhausted {
            retry_after: ms(1_000)
        }
    );
    assert!(!c.is_retryable());
    let hard = r#"{"error":{"message":"Billing hard limit has been reached","type":"invalid_request_error","param":null,"code":"billing_hard_limit_reached"}}"#;
    assert_eq!(
        classify(400, &[], hard),
        Classification::QuotaExhausted { retry_after: None }
    );
}

#[test]
fn anthropic_spend_and_credit_limits() {
    let credit = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#;
    assert_eq!(
        classify(400, &[], credit),
        Classification::QuotaExhausted { retry_after: None }
    );
    let usage = r#"{"type":"error","error":{"type":"invalid_request_error","message":"You have reached your specified API usage limits. You will regain access on 2025-06-01 at 00:00 UTC."}}"#;
    assert_eq!(
        classify(400, &[], usage),
        Classification::QuotaExhausted { retry_after: None }
    );
    let spend = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Your organization has reached its monthly spend limit."}}"#;
    assert_eq!(
        classify(429, &[], spend),
        Classification::QuotaExhausted { retry_after: None }
    );
    // OpenRouter: 402 Payment Required.
    let credits = r#"{"error":{"code":402,"message":"Insufficient credits. Add more using https://openrouter.ai/credits"}}"#;
    assert_eq!(
        classify(402, &[], credits),
        Classification::QuotaExhausted { retry_after: None }
    );
}

#[test]
fn a_delay_above_the_threshold_is_quota_exhaustion() {
    let c = classify(429, &[("retry-after", "86400")], "");
    assert_eq!(
        c,
        Classification::QuotaExhausted {
            retry_after: ms(86_400_000)
        }
    );
    // Exactly at the threshold it is still a transient limit.
    let c = classify(429, &[("retry-after", "3600")], "");
    assert_eq!(c, rate_limited(None, ms(3_600_000)));
    let short = DefaultClassifier::new().quota_threshold(Duration::from_secs(60));
    let c = classify_with(&short, 429, &[("retry-after", "61")], "");
    assert_eq!(
        c,
        Classification::QuotaExhausted {
            retry_after: ms(61_000)
        }
    );
    // A Gemini per-day quota: RetryInfo of hours.
    let body = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"43200s"}]}}"#;
    assert_eq!(
        classify(429, &[], body),
        Classification::QuotaExhausted {
            retry_after: ms(43_200_000)
        }
    );
}

#[test]
fn anthropic_rate_limit_and_overload() {
    let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization (6b8c3d0e) of 50,000 input tokens per minute. For details, refer to: https://docs.anthropic.com/en/api/rate-limits."}}"#;
    let c = classify(429, &[("retry-after", "12")], body);
    assert_eq!(c, rate_limited(Some(Dimension::InputTokens), ms(12_000)));
    let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization of 8,000 output tokens per minute."}}"#;
    assert_eq!(
        classify(429, &[], body),
        rate_limited(Some(Dimension::OutputTokens), None)
    );
    let overloaded =
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    assert_eq!(
        classify(529, &[], overloaded),
        Classification::Overloaded { retry_after: None }
    );
    assert_eq!(
        classify(529, &[], ""),
        Classification::Overloaded { retry_after: None }
    );
    assert_eq!(
        classify(529, &[("retry-after", "3")], overloaded),
        Classification::Overloaded {
            retry_after: ms(3_000)
        }
    );
}

#[test]
fn overloaded_503s() {
    let openai = r#"{"error":{"message":"The engine is currently overloaded, please try again later.","type":"server_error","param":null,"code":null}}"#;
    assert_eq!(
        classify(503, &[], openai),
        Classification::Overloaded { retry_after: None }
    );
    let gemini = r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#;
    assert_eq!(
        classify(503, &[], gemini),
        Classification::Overloaded { retry_after: None }
    );
    // A 503 that does not say so is just transient.
    assert_eq!(
        classify(503, &[], "Service Unavailable"),
        Classification::Transient { retry_after: None }
    );
}

#[test]
fn context_overflow_shapes() {
    let openai = r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 8765 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
    let anthropic = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 215000 tokens > 200000 maximum"}}"#;
    let anthropic_413 = r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#;
    let gemini = r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#;
    let groq = r#"{"error":{"message":"Request too large for model `llama3-70b-8192` in organization `org_01` on tokens per minute (TPM): Limit 6000, Requested 7000, please reduce your message size and try again.","type":"tokens","code":"rate_limit_exceeded"}}"#;
    let mistral = r#"{"object":"error","message":"Prompt contains 40000 tokens and 0 draft tokens, too large for model with 32768 maximum context length","type":"invalid_request_error","param":null,"code":null}"#;
    for (status, body) in [
        (400, openai),
        (400, anthropic),
        (413, anthropic_413),
        (400, gemini),
        (413, groq),
        (429, groq),
        (400, mistral),
    ] {
        assert_eq!(
            classify(status, &[], body),
            Classification::ContextOverflow,
            "{body}"
        );
    }
    assert_eq!(classify(413, &[], ""), Classification::ContextOverflow);
    assert!(!Classification::ContextOverflow.is_retryable());
}

#[test]
fn rate_limit_keywords_in_other_4xx_bodies() {
    let github = r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.","documentation_url":"https://docs.github.com/rest/overview/resources-in-the-rest-api#secondary-rate-limits"}"#;
    assert_eq!(classify(403, &[], github), rate_limited(None, None));
    let google = r#"{"error":{"code":403,"message":"Quota exceeded for quota metric 'Generate Content API requests per minute'","status":"PERMISSION_DENIED"}}"#;
    assert_eq!(
        classify(403, &[], google),
        rate_limited(Some(Dimension::Requests), None)
    );
    let kimi = r#"{"error":{"message":"Your account org-1 request reached organization max concurrency: 1, please try again after 1 seconds","type":"engine_overloaded_error"}}"#;
    assert_eq!(classify(400, &[], kimi), rate_limited(None, None));
    for body in [
        "RATE LIMIT exceeded",
        "RateLimitExceeded",
        "Too Many Requests",
        "RESOURCE_EXHAUSTED",
    ] {
        assert_eq!(classify(400, &[], body), rate_limited(None, None), "{body}");
    }
    let azure = r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-02-01 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds."}}"#;
    assert_eq!(
        classify(429, &[], azure),
        rate_limited(Some(Dimension::Tokens), ms(6_000))
    );
}

#[test]
fn transient_and_fatal_statuses() {
    let transient = Classification::Transient { retry_after: None };
    for s in [408, 500, 502, 504, 520] {
        assert_eq!(classify(s, &[], ""), transient, "{s}");
    }
    let server_error = r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;
    assert_eq!(classify(500, &[], server_error), transient);
    assert_eq!(
        classify(502, &[("retry-after", "2")], ""),
        Classification::Transient {
            retry_after: ms(2_000)
        }
    );
    let bad_key = r#"{"error":{"message":"Incorrect API key provided: sk-abc***. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
    for (s, body) in [
        (400, "bad request"),
        (401, bad_key),
        (403, "forbidden"),
        (404, "not found"),
        (422, "{}"),
        (501, ""),
        (505, ""),
    ] {
        assert_eq!(classify(s, &[], body), Classification::Fatal, "{s}");
    }
}

#[test]
fn x_should_retry_overrides_transient_and_fatal() {
    assert_eq!(
        classify(500, &[("x-should-retry", "false")], ""),
        Classification::Fatal
    );
    assert_eq!(
        classify(409, &[("x-should-retry", "true")], ""),
        Classification::Transient { retry_after: None }
    );
    // It does not turn a rate limit into something else.
    assert_eq!(
        classify(429, &[("x-should-retry", "false")], ""),
        rate_limited(None, None)
    );
}

#[test]
fn huge_bodies_are_read_only_in_part() {
    let mut body = "x".repeat(2 * 1024 * 1024);
    body.push_str("rate limit");
    assert_eq!(classify(400, &[], &body), Classification::Fatal);
    let mut body = String::from("rate limit");
    body.push_str(&"x".repeat(2 * 1024 * 1024));
    assert_eq!(classify(400, &[], &body), rate_limited(None, None));
    // Bytes that are not UTF-8 do not hide a keyword.
    let bytes = [&[0xff, 0xfe][..], b"quota"].concat();
    let c = DefaultClassifier::new().classify_response(
        StatusCode::BAD_REQUEST,
        &HeaderMap::new(),
        Some(&bytes),
        &RateLimitSnapshot::default(),
    );
    assert_eq!(c, rate_limited(None, None));
}

// ---------------------------------------------------------------- errors

/// An error with a message and an optional source, like hyper-util's client error.
#[derive(Debug)]
struct Wrapped(
    &'static str,
    Option<Box<dyn std::error::Error + Send + Sync>>,
);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.as_deref().map(|e| e as _)
    }
}

fn classify_err(e: &(dyn std::error::Error + 'static)) -> Classification {
    DefaultClassifier::new().classify_error(e)
}

const TRANSIENT: Classification = Classification::Transient { retry_after: None };

#[test]
fn io_errors() {
    use std::io::{Error, ErrorKind};
    for kind in [
        ErrorKind::ConnectionRefused,
        ErrorKind::ConnectionReset,
        ErrorKind::TimedOut,
        ErrorKind::UnexpectedEof,
        ErrorKind::BrokenPipe,
    ] {
        assert_eq!(classify_err(&Error::from(kind)), TRANSIENT, "{kind:?}");
    }
    for kind in [
        ErrorKind::InvalidInput,
        ErrorKind::InvalidData,
        ErrorKind::PermissionDenied,
    ] {
        assert_eq!(
            classify_err(&Error::from(kind)),
            Classification::Fatal,
            "{kind:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn timeouts() {
    let elapsed = tokio::time::timeout(Duration::from_secs(1), std::future::pending::<()>())
        .await
        .unwrap_err();
    assert_eq!(classify_err(&elapsed), TRANSIENT);
    let tower_elapsed = tower::timeout::error::Elapsed::new();
    assert_eq!(classify_err(&tower_elapsed), TRANSIENT);
    let boxed: crate::BoxError = Box::new(tower::timeout::error::Elapsed::new());
    assert_eq!(classify_err(&*boxed), TRANSIENT);
}

#[test]
fn source_chains_like_hyper_util() {
    let connect = Wrapped(
        "client error (Connect)",
        Some(Box::new(Wrapped(
            "tcp connect error",
            Some(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))),
        ))),
    );
    assert_eq!(classify_err(&connect), TRANSIENT);
    let closed = Wrapped(
        "client error (SendRequest)",
        Some(Box::new(Wrapped(
            "connection closed before message completed",
            None,
        ))),
    );
    assert_eq!(classify_err(&closed), TRANSIENT);
    // The first recognized link decides: an io error deep in the chain.
    let deep = Wrapped(
        "a",
        Some(Box::new(Wrapped(
            "b",
            Some(Box::new(std::io::Error::other("x"))),
        ))),
    );
    assert_eq!(classify_err(&deep), TRANSIENT);
    // Nothing recognized: fatal, never retried blindly.
    assert_eq!(
        classify_err(&Wrapped("invalid uri character", None)),
        Classification::Fatal
    );
}

#[test]
fn ratelayer_errors() {
    let scope = Scope::new("openai");
    let never = NeverFits {
        scope: scope.clone(),
        what: "tokens per minute",
        requested: 40_000,
        capacity: 30_000,
    };
    assert_eq!(classify_err(&never), Classification::ContextOverflow);
    let wait = WaitTooLong {
        scope: scope.clone(),
        wait: Duration::from_secs(90),
        max_wait: Duration::from_secs(30),
        reason: "tokens per minute",
    };
    assert_eq!(
        classify_err(&wait),
        rate_limited(None, Some(Duration::from_secs(90)))
    );
    let full = QueueFull { scope, capacity: 8 };
    assert_eq!(
        classify_err(&full),
        Classification::Overloaded { retry_after: None }
    );
    let config = ConfigError::new("max_wait", "must be positive");
    assert_eq!(classify_err(&config), Classification::Fatal);
    // Boxed, as tower hands them over.
    let boxed: crate::BoxError = Box::new(NeverFits {
        scope: Scope::new("x"),
        what: "tokens",
        requested: 2,
        capacity: 1,
    });
    assert_eq!(classify_err(&*boxed), Classification::ContextOverflow);
}

#[test]
fn a_user_classifier_through_arc() {
    struct AlwaysFatal;
    impl Classifier for AlwaysFatal {
        fn classify_response(
            &self,
            _: StatusCode,
            _: &HeaderMap,
            _: Option<&[u8]>,
            _: &RateLimitSnapshot,
        ) -> Classification {
            Classification::Fatal
        }
        fn classify_error(&self, _: &(dyn std::error::Error + 'static)) -> Classification {
            Classification::Fatal
        }
        fn wants_body(&self, _: StatusCode) -> bool {
            false
        }
    }
    let shared: Arc<dyn Classifier> = Arc::new(AlwaysFatal);
    assert_eq!(classify_with(&shared, 429, &[], ""), Classification::Fatal);
    assert!(!shared.wants_body(StatusCode::TOO_MANY_REQUESTS));
}

proptest::proptest! {
    /// Any status, headers and body: no panic, success exactly below 400, and a result
    /// that only a 4xx can make a context overflow.
    #[test]
    fn arbitrary_responses_never_panic(
        status in 100u16..600,
        body in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
        text in "\\PC{0,80}",
        retry_after in proptest::option::of(0u64..10_000_000),
    ) {
        let status = StatusCode::from_u16(status).unwrap();
        let snapshot = RateLimitSnapshot {
            retry_after: retry_after.map(Duration::from_secs),
            ..RateLimitSnapshot::default()
        };
        let c = DefaultClassifier::new();
        for b in [body.as_deref(), Some(text.as_bytes())] {
            let got = c.classify_response(status, &HeaderMap::new(), b, &snapshot);
            proptest::prop_assert_eq!(got == Classification::Success, status.as_u16() < 400);
            if got == Classification::ContextOverflow {
                proptest::prop_assert!(status.is_client_error());
            }
        }
    }
}
