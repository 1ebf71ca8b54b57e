//! Tests of the header parser: every dialect with the values its provider documents, the
//! delay precedence, adversarial values and properties.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;

use super::value::*;
use super::*;

const S429: StatusCode = StatusCode::TOO_MANY_REQUESTS;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// 2024-05-01T12:00:00Z
fn may_first() -> SystemTime {
    at(1_714_564_800)
}

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    m
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn lim(
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<Duration>,
    window: Option<Duration>,
) -> DimensionLimit {
    DimensionLimit {
        limit,
        remaining,
        reset,
        window,
    }
}

// ---------------------------------------------------------------- dialects

#[test]
fn openai_documented_headers() {
    // https://platform.openai.com/docs/guides/rate-limits (rate limits in headers)
    let h = map(&[
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-limit-tokens", "150000"),
        ("x-ratelimit-remaining-requests", "59"),
        ("x-ratelimit-remaining-tokens", "149984"),
        ("x-ratelimit-reset-requests", "1s"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ]);
    let s = parse(StatusCode::OK, &h, None, may_first(), Some(Dialect::OpenAi));
    assert_eq!(
        s.requests,
        lim(Some(60), Some(59), Some(secs(1)), Some(secs(60)))
    );
    assert_eq!(
        s.tokens,
        lim(
            Some(150_000),
            Some(149_984),
            Some(secs(360)),
            Some(secs(60))
        )
    );
    assert!(s.input_tokens.is_empty() && s.output_tokens.is_empty());
    assert_eq!(s.retry_after, None);
    // Without the hint the window is unknown (Groq uses the same names per day).
    let s = parse(StatusCode::OK, &h, None, may_first(), None);
    assert_eq!(s.requests.window, None);
    assert_eq!(s.requests.limit, Some(60));
}

/// More rate-limit family headers than the parser keeps in its short list: the lookups
/// go to the map, with the same result; a name's first value is the one read either way.
#[test]
fn many_family_headers_parse_as_few() {
    let openai = [
        ("x-ratelimit-limit-requests", "500"),
        ("x-ratelimit-remaining-requests", "499"),
        ("x-ratelimit-reset-requests", "120ms"),
        ("x-ratelimit-limit-tokens", "30000"),
    ];
    let few = map(&openai);
    let mut many = map(&openai);
    for i in 0..40 {
        let name: HeaderName = format!("x-ratelimit-unrelated-{i}").parse().unwrap();
        many.insert(name, HeaderValue::from_static("1"));
    }
    let now = at(1_000);
    let parse_of = |h: &HeaderMap| parse(StatusCode::OK, h, None, now, Some(Dialect::OpenAi));
    assert_eq!(parse_of(&many), parse_of(&few));
    assert_eq!(parse_of(&few).requests.limit, Some(500));
    // A second value of a name: the first is read, in the short list as in the map.
    many.append("x-ratelimit-limit-requests", HeaderValue::from_static("9"));
    assert_eq!(parse_of(&many).requests.limit, Some(500));
    let mut twice = map(&openai[1..]);
    twice.append("x-ratelimit-limit-requests", HeaderValue::from_static("9"));
    twice.append("x-ratelimit-limit-requests", HeaderValue::from_static("7"));
    assert_eq!(parse_of(&twice).requests.limit, Some(9));
}

#[test]
fn openai_go_durations() {
    for (v, d) in [
        ("1s", secs(1)),
        ("6m0s", secs(360)),
        ("20ms", ms(20)),
        ("1h2m3.5s", ms(3_723_500)),
        ("7.66s", ms(7_660)),
        ("2m59.56s", ms(179_560)),
        ("0s", Duration::ZERO),
        ("0", Duration::ZERO),
        ("1.5ms", ms(2)),
        ("250us", ms(1)),
        ("250µs", ms(1)),
        ("1ns", ms(1)),
        ("1h", secs(3600)),
    ] {
        assert_eq!(parse_go_duration(v), Some(d), "{v}");
    }
}

#[test]
fn openai_429_with_retry_after_ms_and_should_retry() {
    let h = map(&[
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "20ms"),
        ("retry-after-ms", "20"),
        ("retry-after", "1"),
        ("x-should-retry", "true"),
    ]);
    let s = parse(S429, &h, None, may_first(), Some(Dialect::OpenAi));
    assert_eq!(s.retry_after, Some(ms(20)));
    assert_eq!(s.retry_after_source, Some(DelaySource::RetryAfterMs));
    assert_eq!(s.should_retry, Some(true));
    assert_eq!(s.exhausted(), Some((Dimension::Requests, Some(ms(20)))));
    let s = parse(
        S429,
        &map(&[("x-should-retry", "FALSE")]),
        None,
        may_first(),
        None,
    );
    assert_eq!(s.should_retry, Some(false));
}

#[test]
fn openai_body_sentence_is_a_delay_hint() {
    let body = br#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2.184s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
    let s = parse(S429, &HeaderMap::new(), Some(body), may_first(), None);
    assert_eq!(s.retry_after, Some(ms(2_184)));
    assert_eq!(s.retry_after_source, Some(DelaySource::Body));
    // A success body is never read for hints (a completion may say "try again in 5s").
    let s = parse(
        StatusCode::OK,
        &HeaderMap::new(),
        Some(body),
        may_first(),
        None,
    );
    assert_eq!(s.retry_after, None);
}

#[test]
fn azure_bare_seconds_and_placeholders() {
    let h = map(&[
        ("x-ratelimit-limit-requests", "-1"),
        ("x-ratelimit-remaining-requests", "99"),
        ("x-ratelimit-reset-requests", "1"),
        ("x-ratelimit-limit-tokens", "-1"),
        ("x-ratelimit-remaining-tokens", "119000"),
        ("x-ratelimit-reset-tokens", "-1"),
        ("retry-after-ms", "6000"),
        ("retry-after", "6"),
    ]);
    let s = parse(S429, &h, None, may_first(), Some(Dialect::Azure));
    assert_eq!(s.requests, lim(None, Some(99), Some(secs(1)), None));
    assert_eq!(s.tokens, lim(None, Some(119_000), None, None));
    assert_eq!(s.retry_after, Some(secs(6)));
    assert_eq!(s.retry_after_source, Some(DelaySource::RetryAfterMs));
}

#[test]
fn azure_body_sentence() {
    let body = br#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-02-01 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}"#;
    let s = parse(
        S429,
        &HeaderMap::new(),
        Some(body),
        may_first(),
        Some(Dialect::Azure),
    );
    assert_eq!(s.retry_after, Some(secs(6)));
    assert_eq!(s.retry_after_source, Some(DelaySource::Body));
}

#[test]
fn anthropic_documented_headers() {
    // https://docs.anthropic.com/en/api/rate-limits#response-headers
    let h = map(&[
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", "2024-05-01T12:00:30Z"),
        ("anthropic-ratelimit-tokens-limit", "50000"),
        ("anthropic-ratelimit-tokens-remaining", "48000"),
        ("anthropic-ratelimit-tokens-reset", "2024-05-01T12:00:01.5Z"),
        ("anthropic-ratelimit-input-tokens-limit", "40000"),
        ("anthropic-ratelimit-input-tokens-remaining", "39000"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2024-05-01T14:00:02+02:00",
        ),
        ("anthropic-ratelimit-output-tokens-limit", "8000"),
        ("anthropic-ratelimit-output-tokens-remaining", "7000"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2024-05-01T07:00:00.000000001-05:00",
        ),
        ("retry-after", "30"),
    ]);
    let s = parse(S429, &h, None, may_first(), Some(Dialect::Anthropic));
    assert_eq!(
        s.requests,
        lim(Some(50), Some(0), Some(secs(30)), Some(secs(60)))
    );
    assert_eq!(
        s.tokens,
        lim(Some(50_000), Some(48_000), Some(ms(1_500)), Some(secs(60)))
    );
    assert_eq!(
        s.input_tokens,
        lim(Some(40_000), Some(39_000), Some(secs(2)), Some(secs(60)))
    );
    // One nanosecond in the future rounds up to a whole millisecond.
    assert_eq!(
        s.output_tokens,
        lim(Some(8_000), Some(7_000), Some(ms(1)), Some(secs(60)))
    );
    assert_eq!(s.retry_after, Some(secs(30)));
    assert_eq!(s.retry_after_source, Some(DelaySource::RetryAfter));
    assert_eq!(s.exhausted(), Some((Dimension::Requests, Some(secs(30)))));
}

#[test]
fn anthropic_past_reset_is_zero_and_bad_dates_are_absent() {
    let h = map(&[
        ("anthropic-ratelimit-requests-reset", "2024-05-01T11:59:59Z"),
        ("anthropic-ratelimit-tokens-reset", "2024-13-01T00:00:00Z"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2024-05-01 12:00:30",
        ),
    ]);
    let s = parse(StatusCode::OK, &h, None, may_first(), None);
    assert_eq!(s.requests.reset, Some(Duration::ZERO));
    assert!(s.tokens.is_empty());
    assert!(s.input_tokens.is_empty());
}

#[test]
fn groq_documented_headers_with_hint() {
    // https://console.groq.com/docs/rate-limits (rate limit headers)
    let h = map(&[
        ("retry-after", "2"),
        ("x-ratelimit-limit-requests", "14400"),
        ("x-ratelimit-limit-tokens", "18000"),
        ("x-ratelimit-remaining-requests", "14370"),
        ("x-ratelimit-remaining-tokens", "17997"),
        ("x-ratelimit-reset-requests", "2m59.56s"),
        ("x-ratelimit-reset-tokens", "7.66s"),
    ]);
    let s = parse(S429, &h, None, may_first(), Some(Dialect::Groq));
    assert_eq!(
        s.requests,
        lim(
            Some(14_400),
            Some(14_370),
            Some(ms(179_560)),
            Some(secs(86_400))
        )
    );
    assert_eq!(
        s.tokens,
        lim(Some(18_000), Some(17_997), Some(ms(7_660)), Some(secs(60)))
    );
    assert_eq!(s.retry_after, Some(secs(2)));
}

const GEMINI_429: &str = r#"[{
  "error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{
          "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
          "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
          "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"},
          "quotaValue": "15"
        }]
      },
      {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]
      },
      {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "45.837906927s"
      }
    ]
  }
}]"#;

#[test]
fn gemini_retry_info_in_an_array() {
    let s = parse(
        S429,
        &HeaderMap::new(),
        Some(GEMINI_429.as_bytes()),
        may_first(),
        Some(Dialect::Gemini),
    );
    assert_eq!(s.retry_after, Some(ms(45_838)));
    assert_eq!(s.retry_after_source, Some(DelaySource::Body));
    assert!(s.requests.is_empty());
}

#[test]
fn gemini_retry_info_unwrapped_and_object_form() {
    let body = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"17s"}]}}"#;
    let s = parse(
        S429,
        &HeaderMap::new(),
        Some(body.as_bytes()),
        may_first(),
        None,
    );
    assert_eq!(s.retry_after, Some(secs(17)));
    let body = r#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":{"seconds":3,"nanos":500000}}]}}"#;
    let s = parse(
        S429,
        &HeaderMap::new(),
        Some(body.as_bytes()),
        may_first(),
        None,
    );
    assert_eq!(s.retry_after, Some(ms(3_001)));
    for bad in [
        r#""-5s""#,
        r#""5""#,
        r#""NaNs""#,
        r#""5 s""#,
        r#""infs""#,
        "5",
        "null",
    ] {
        let body = format!(
            r#"{{"error":{{"details":[{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":{bad}}}]}}}}"#
        );
        let s = parse(
            S429,
            &HeaderMap::new(),
            Some(body.as_bytes()),
            may_first(),
            None,
        );
        assert_eq!(s.retry_after, None, "{bad}");
    }
}

#[test]
fn openrouter_epoch_millis() {
    let now = UNIX_EPOCH + ms(1_741_305_540_000);
    let h = map(&[
        ("x-ratelimit-limit", "20"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1741305600000"),
    ]);
    let expected = lim(Some(20), Some(0), Some(secs(60)), None);
    assert_eq!(
        parse(S429, &h, None, now, Some(Dialect::OpenRouter)).requests,
        expected
    );
    // Recognized by magnitude without a hint.
    assert_eq!(parse(S429, &h, None, now, None).requests, expected);
}

#[test]
fn github_epoch_seconds() {
    // https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
    let now = at(1_691_591_000);
    let h = map(&[
        ("x-ratelimit-limit", "5000"),
        ("x-ratelimit-remaining", "4999"),
        ("x-ratelimit-used", "1"),
        ("x-ratelimit-reset", "1691591363"),
        ("x-ratelimit-resource", "core"),
    ]);
    let expected = lim(Some(5_000), Some(4_999), Some(secs(363)), None);
    assert_eq!(
        parse(StatusCode::OK, &h, None, now, Some(Dialect::GitHub)).requests,
        expected
    );
    assert_eq!(
        parse(StatusCode::OK, &h, None, now, None).requests,
        expected
    );
    // A reset in the past is zero, not absent and not negative.
    let later = at(1_691_600_000);
    assert_eq!(
        parse(StatusCode::OK, &h, None, later, None).requests.reset,
        Some(Duration::ZERO)
    );
    // GitLab's delta-style small values without a hint are delta seconds.
    let h = map(&[("x-ratelimit-reset", "30")]);
    assert_eq!(
        parse(StatusCode::OK, &h, None, now, None).requests.reset,
        Some(secs(30))
    );
}

#[test]
fn mistral_kong_headers() {
    let h = map(&[
        ("ratelimitbysize-limit", "500000"),
        ("ratelimitbysize-remaining", "468000"),
        ("ratelimitbysize-reset", "19"),
        ("ratelimitbysize-query-cost", "32000"),
        ("x-ratelimitbysize-limit-minute", "500000"),
        ("x-ratelimitbysize-remaining-minute", "468000"),
        ("x-ratelimitbysize-limit-month", "1000000000"),
        ("x-ratelimitbysize-remaining-month", "999968000"),
    ]);
    let s = parse(
        StatusCode::OK,
        &h,
        None,
        may_first(),
        Some(Dialect::Mistral),
    );
    assert_eq!(
        s.tokens,
        lim(Some(500_000), Some(468_000), Some(secs(19)), Some(secs(60)))
    );
    assert!(s.requests.is_empty());
    // The per-period headers alone: the least remaining wins.
    let h = map(&[
        ("x-ratelimitbysize-limit-minute", "500000"),
        ("x-ratelimitbysize-remaining-minute", "468000"),
        ("x-ratelimitbysize-limit-month", "1000000000"),
        ("x-ratelimitbysize-remaining-month", "1000"),
    ]);
    let s = parse(StatusCode::OK, &h, None, may_first(), None);
    assert_eq!(
        s.tokens,
        lim(
            Some(1_000_000_000),
            Some(1_000),
            None,
            Some(secs(2_592_000))
        )
    );
}

#[test]
fn ietf_separate_fields() {
    let h = map(&[
        ("ratelimit-limit", "100"),
        ("ratelimit-remaining", "50"),
        ("ratelimit-reset", "30"),
    ]);
    let s = parse(StatusCode::OK, &h, None, may_first(), None);
    assert_eq!(s.requests, lim(Some(100), Some(50), Some(secs(30)), None));
    // Draft 03: the limit with its quota policies.
    let h = map(&[
        ("RateLimit-Limit", "10, 10;w=1, 50;w=60"),
        ("RateLimit-Remaining", "9"),
        ("RateLimit-Reset", "1"),
    ]);
    let s = parse(StatusCode::OK, &h, None, may_first(), Some(Dialect::Ietf));
    assert_eq!(
        s.requests,
        lim(Some(10), Some(9), Some(secs(1)), Some(secs(1)))
    );
}

#[test]
fn ietf_structured_fields() {
    let h = map(&[
        ("RateLimit-Policy", r#""default";q=100;w=60"#),
        ("RateLimit", r#""default";r=50;t=30"#),
    ]);
    let s = parse(StatusCode::OK, &h, None, may_first(), Some(Dialect::Ietf));
    assert_eq!(
        s.requests,
        lim(Some(100), Some(50), Some(secs(30)), Some(secs(60)))
    );
    // Several policies: the one with the least remaining, and a token policy.
    let h = map(&[
        (
            "RateLimit-Policy",
            r#""burst";q=100;w=60, "daily";q=1000;w=86400, "tok";q=30000;w=60;qu="tokens""#,
        ),
        (
            "RateLimit",
            r#""burst";r=80;t=10, "daily";r=5;t=3600, "tok";r=12000;t=20"#,
        ),
    ]);
    let s = parse(StatusCode::OK, &h, None, may_first(), None);
    assert_eq!(
        s.requests,
        lim(Some(1_000), Some(5), Some(secs(3_600)), Some(secs(86_400)))
    );
    assert_eq!(
        s.tokens,
        lim(Some(30_000), Some(12_000), Some(secs(20)), Some(secs(60)))
    );
    // A policy alone states the limit and window.
    let h = map(&[(
        "RateLimit-Policy",
        "\"100-in-1min\"; q=100; w=60; pk=:MGMzNGM3YmU2MTlj:",
    )]);
    let s = parse(StatusCode::OK, &h, None, may_first(), None);
    assert_eq!(s.requests, lim(Some(100), None, None, Some(secs(60))));
    // Draft 06 dictionary form.
    let h = map(&[("RateLimit", "limit=100, remaining=50, reset=30")]);
    let s = parse(StatusCode::OK, &h, None, may_first(), None);
    assert_eq!(s.requests, lim(Some(100), Some(50), Some(secs(30)), None));
}

#[test]
fn retry_after_all_forms() {
    // RFC 9110 section 5.6.7 example date: Sun, 06 Nov 1994 08:49:37 GMT.
    let now = at(784_111_757); // 20 s before it
    for (v, d) in [
        ("120", secs(120)),
        ("1.5", ms(1_500)),
        ("0", Duration::ZERO),
        ("Sun, 06 Nov 1994 08:49:37 GMT", secs(20)),
        ("Sunday, 06-Nov-94 08:49:37 GMT", secs(20)),
        ("Sun Nov  6 08:49:37 1994", secs(20)),
        ("Sun, 06 Nov 1994 08:00:00 GMT", Duration::ZERO),
    ] {
        let s = parse(S429, &map(&[("retry-after", v)]), None, now, None);
        assert_eq!(s.retry_after, Some(d), "{v}");
        assert_eq!(s.retry_after_source, Some(DelaySource::RetryAfter));
    }
}

// ---------------------------------------------------------------- precedence

/// retry-after-ms, then Retry-After, then the body; an unreadable value falls through.
#[test]
fn delay_precedence_and_fall_through() {
    let body: &[u8] = br#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"9s"}]}}"#;
    use DelaySource::*;
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        &'a [u8],
        Option<(Duration, DelaySource)>,
    );
    let cases: [Case<'_>; 6] = [
        (
            &[("retry-after-ms", "250"), ("retry-after", "7")],
            body,
            Some((ms(250), RetryAfterMs)),
        ),
        (&[("retry-after", "7")], body, Some((secs(7), RetryAfter))),
        (&[], body, Some((secs(9), Body))),
        (
            &[("retry-after-ms", "soon"), ("retry-after", "7")],
            body,
            Some((secs(7), RetryAfter)),
        ),
        (
            &[("retry-after-ms", "-1"), ("retry-after", "7s")],
            body,
            Some((secs(9), Body)),
        ),
        (
            &[("retry-after-ms", "NaN"), ("retry-after", "inf")],
            b"not json",
            None,
        ),
    ];
    for (headers, body, want) in cases {
        let s = parse(S429, &map(headers), Some(body), may_first(), None);
        let got = s.retry_after.zip(s.retry_after_source);
        assert_eq!(got, want, "{headers:?}");
    }
}

#[test]
fn the_first_family_that_speaks_wins_whole() {
    // Anthropic's headers and a stray generic one: never mixed.
    let h = map(&[
        ("anthropic-ratelimit-requests-limit", "50"),
        ("x-ratelimit-remaining-requests", "3"),
        ("ratelimit-reset", "9"),
    ]);
    let s = parse(StatusCode::OK, &h, None, may_first(), None);
    assert_eq!(s.requests, lim(Some(50), None, None, Some(secs(60))));
}

// ---------------------------------------------------------------- adversarial

/// Each case: a header, a value, and exactly what the snapshot must say about it.
#[test]
fn adversarial_values_give_the_exact_conservative_result() {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Want {
        Limit(Option<u64>),
        Remaining(Option<u64>),
        Reset(Option<Duration>),
        Delay(Option<Duration>),
    }
    use Want::*;
    let now = may_first();
    let cases: Vec<(&str, &str, Want)> = vec![
        ("x-ratelimit-limit-requests", "", Limit(None)),
        ("x-ratelimit-limit-requests", "   ", Limit(None)),
        ("x-ratelimit-limit-requests", "-1", Limit(None)),
        ("x-ratelimit-limit-requests", "+60", Limit(None)),
        ("x-ratelimit-limit-requests", "60.0", Limit(None)),
        ("x-ratelimit-limit-requests", "1e3", Limit(None)),
        ("x-ratelimit-limit-requests", "0x10", Limit(None)),
        ("x-ratelimit-limit-requests", "60 rpm", Limit(None)),
        (
            "x-ratelimit-limit-requests",
            "18446744073709551616",
            Limit(None),
        ),
        (
            "x-ratelimit-limit-requests",
            "18446744073709551615",
            Limit(Some(u64::MAX)),
        ),
        ("x-ratelimit-limit-requests", " 60 ", Limit(Some(60))),
        ("x-ratelimit-limit-requests", "00060", Limit(Some(60))),
        ("x-ratelimit-remaining-requests", "NaN", Remaining(None)),
        ("x-ratelimit-remaining-requests", "inf", Remaining(None)),
        ("x-ratelimit-remaining-requests", "5, 6", Remaining(None)),
        ("x-ratelimit-reset-requests", "-1s", Reset(None)),
        ("x-ratelimit-reset-requests", "1x", Reset(None)),
        ("x-ratelimit-reset-requests", "s", Reset(None)),
        ("x-ratelimit-reset-requests", "1s2", Reset(None)),
        ("x-ratelimit-reset-requests", "1..5s", Reset(None)),
        ("x-ratelimit-reset-requests", "1 s", Reset(None)),
        ("x-ratelimit-reset-requests", "1S", Reset(None)),
        ("x-ratelimit-reset-requests", "Infinity", Reset(None)),
        ("x-ratelimit-reset-requests", "0.0001s", Reset(Some(ms(1)))),
        (
            "x-ratelimit-reset-requests",
            "1.0000000000000000000000001s",
            Reset(Some(ms(1_001))),
        ),
        (
            "x-ratelimit-reset-requests",
            "99999999999999999999999h",
            Reset(Some(MAX_DELAY)),
        ),
        (
            "x-ratelimit-reset-requests",
            "5000000000",
            Reset(Some(MAX_DELAY)),
        ),
        (
            "anthropic-ratelimit-requests-reset",
            "2024-05-01T12:00:30",
            Reset(None),
        ),
        (
            "anthropic-ratelimit-requests-reset",
            "2024-05-01T24:00:00Z",
            Reset(None),
        ),
        (
            "anthropic-ratelimit-requests-reset",
            "2023-02-29T00:00:00Z",
            Reset(None),
        ),
        (
            "anthropic-ratelimit-requests-reset",
            "2024-05-01T12:00:30+25:00",
            Reset(None),
        ),
        (
            "anthropic-ratelimit-requests-reset",
            "2024-05-01T12:00:30.Z",
            Reset(None),
        ),
        (
            "anthropic-ratelimit-requests-reset",
            "1714564830",
            Reset(None),
        ),
        (
            "anthropic-ratelimit-requests-reset",
            "9999-12-31T23:59:59Z",
            Reset(Some(MAX_DELAY)),
        ),
        (
            "anthropic-ratelimit-requests-reset",
            "1970-01-01T00:00:00Z",
            Reset(Some(Duration::ZERO)),
        ),
        (
            "anthropic-ratelimit-requests-reset",
            "2024-05-01T12:00:00.0001Z",
            Reset(Some(ms(1))),
        ),
        ("retry-after", "-5", Delay(None)),
        ("retry-after", "5s", Delay(None)),
        ("retry-after", "NaN", Delay(None)),
        ("retry-after", "1e2", Delay(None)),
        ("retry-after", "5 5", Delay(None)),
        ("retry-after", "Sun, 32 Nov 1994 08:49:37 GMT", Delay(None)),
        ("retry-after", "Sun, 06 Nov 1994 08:49:37 PST", Delay(None)),
        (
            "retry-after",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            Delay(Some(Duration::ZERO)),
        ),
        ("retry-after", "1e400", Delay(None)),
        (
            "retry-after",
            "100000000000000000000000000000",
            Delay(Some(MAX_DELAY)),
        ),
        ("retry-after", "0.0000001", Delay(Some(ms(1)))),
        ("retry-after-ms", "1.5", Delay(Some(ms(2)))),
        ("retry-after-ms", "20ms", Delay(None)),
        ("retry-after-ms", "+20", Delay(None)),
    ];
    assert!(cases.len() >= 25);
    for (name, value, want) in cases {
        let h = map(&[(name, value)]);
        let s = parse(S429, &h, None, now, None);
        let got = match want {
            Limit(_) => Limit(s.requests.limit),
            Remaining(_) => Remaining(s.requests.remaining),
            Reset(_) => Reset(s.requests.reset),
            Delay(_) => Delay(s.retry_after),
        };
        assert_eq!(got, want, "{name}: {value:?}");
    }
}

#[test]
fn non_ascii_and_opaque_bytes_are_absent() {
    let mut h = HeaderMap::new();
    h.insert("retry-after", HeaderValue::from_bytes(b"\xc3\xa9").unwrap());
    h.insert(
        "x-ratelimit-limit-requests",
        HeaderValue::from_bytes(b"6\xff0").unwrap(),
    );
    h.insert(
        "x-ratelimit-reset-requests",
        HeaderValue::from_bytes("١s".as_bytes()).unwrap(),
    );
    let s = parse(S429, &h, Some(&[0xff, 0xfe, 0x00]), may_first(), None);
    assert!(s.is_empty(), "{s:?}");
}

#[test]
fn only_the_first_of_repeated_headers_counts() {
    let h = map(&[("retry-after", "3"), ("retry-after", "9")]);
    assert_eq!(
        parse(S429, &h, None, may_first(), None).retry_after,
        Some(secs(3))
    );
}

#[test]
fn huge_bodies_are_bounded() {
    let mut body = vec![b' '; 300 * 1024];
    body.extend_from_slice(b"Please try again in 5s");
    let s = parse(S429, &HeaderMap::new(), Some(&body), may_first(), None);
    assert_eq!(s.retry_after, None);
    let deep = "[".repeat(100_000);
    let s = parse(
        S429,
        &HeaderMap::new(),
        Some(deep.as_bytes()),
        may_first(),
        None,
    );
    assert_eq!(s.retry_after, None);
}

#[test]
fn rfc3339_round_numbers() {
    assert_eq!(
        parse_rfc3339("2000-02-29T00:00:00Z"),
        Some(951_782_400 * 1_000_000_000)
    );
    assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1_000_000_000));
    assert_eq!(
        parse_rfc3339("2024-05-01t12:00:00z"),
        Some(1_714_564_800 * 1_000_000_000)
    );
    assert_eq!(parse_rfc3339("1900-02-29T00:00:00Z"), None);
}

// ---------------------------------------------------------------- properties

const NAMES: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-output-tokens-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-limit",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-reset",
    "ratelimitbysize-reset",
    "x-ratelimitbysize-remaining-minute",
];

fn dialect() -> impl Strategy<Value = Option<Dialect>> {
    prop_oneof![
        Just(None),
        Just(Some(Dialect::OpenAi)),
        Just(Some(Dialect::Azure)),
        Just(Some(Dialect::Anthropic)),
        Just(Some(Dialect::Groq)),
        Just(Some(Dialect::Gemini)),
        Just(Some(Dialect::OpenRouter)),
        Just(Some(Dialect::GitHub)),
        Just(Some(Dialect::Mistral)),
        Just(Some(Dialect::Ietf)),
    ]
}

proptest! {
    #[test]
    fn arbitrary_headers_and_bodies_never_panic(
        pairs in proptest::collection::vec((0..NAMES.len(), proptest::collection::vec(any::<u8>(), 0..40)), 0..12),
        text in proptest::collection::vec(("[0-9a-zA-Z.:;=,\" +-]{0,30}", 0..NAMES.len()), 0..6),
        body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        status in 100u16..600,
        now in any::<u64>(),
        hint in dialect(),
    ) {
        let mut h = HeaderMap::new();
        for (i, bytes) in pairs {
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                h.append(NAMES[i], v);
            }
        }
        for (s, i) in text {
            if let Ok(v) = HeaderValue::from_str(&s) {
                h.append(NAMES[i], v);
            }
        }
        let status = StatusCode::from_u16(status).unwrap();
        let now = UNIX_EPOCH + Duration::from_millis(now >> 20);
        let s = parse(status, &h, body.as_deref(), now, hint);
        for d in Dimension::ALL {
            if let Some(r) = s.get(d).reset {
                prop_assert!(r <= MAX_DELAY);
                prop_assert_eq!(r.subsec_nanos() % 1_000_000, 0);
            }
        }
        if let Some(r) = s.retry_after {
            prop_assert!(r <= MAX_DELAY);
            prop_assert!(s.retry_after_source.is_some());
        }
    }

    #[test]
    fn arbitrary_strings_never_panic_the_value_parsers(s in "\\PC{0,40}", now in any::<u32>()) {
        let now = at(u64::from(now));
        let _ = parse_go_duration(&s);
        let _ = parse_seconds(&s);
        let _ = parse_millis(&s);
        let _ = parse_count(&s);
        let _ = parse_rfc3339(&s);
        let _ = parse_retry_after(&s, now);
        let _ = until_epoch_seconds(&s, now);
        let _ = until_epoch_millis(&s, now);
    }

    #[test]
    fn formatted_durations_round_trip(millis in 0u64..10_000_000_000_000) {
        let d = Duration::from_millis(millis);
        prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Some(d.min(MAX_DELAY)));
    }

    #[test]
    fn sub_millisecond_durations_round_up(nanos in 0u64..4_294_967_294_000_000_000) {
        let d = Duration::from_nanos(nanos);
        let parsed = parse_go_duration(&format_go_duration(d)).unwrap();
        prop_assert!(parsed >= d);
        prop_assert!(parsed - d < Duration::from_millis(1));
    }

    #[test]
    fn delta_seconds_round_trip(millis in 0u64..4_000_000_000_000) {
        let s = format!("{}.{:03}", millis / 1000, millis % 1000);
        prop_assert_eq!(parse_seconds(&s), Some(Duration::from_millis(millis)));
        prop_assert_eq!(parse_retry_after(&s, at(0)), Some(Duration::from_millis(millis)));
    }

    #[test]
    fn rfc3339_agrees_with_epoch_arithmetic(t in 0i64..253_402_300_799, frac in 0u32..1_000_000_000) {
        let days = t.div_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let sod = t.rem_euclid(86_400);
        let s = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z", sod / 3600, sod / 60 % 60, sod % 60);
        prop_assert_eq!(parse_rfc3339(&s), Some(i128::from(t) * 1_000_000_000 + i128::from(frac)));
    }
}

/// The inverse of days_from_civil (Howard Hinnant), for the property above.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}
