//! Delay hints in error bodies: Gemini's `google.rpc.RetryInfo.retryDelay` (possibly in a
//! JSON array), and the "Please try again in 20s" / "retry after 6 seconds" sentences of
//! OpenAI, Groq and Azure error messages.

use std::time::Duration;

use serde_json::Value;

use super::value::{parse_go_duration, parse_seconds};

/// Bodies larger than this are not parsed as JSON (error bodies are small).
const MAX_JSON: usize = 256 * 1024;
/// Only this much of a body is scanned for sentences.
const MAX_SCAN: usize = 64 * 1024;

/// The delay an error body asks for, if it states one exactly.
pub(super) fn delay(body: &[u8]) -> Option<Duration> {
    retry_info(body).or_else(|| sentence(&body[..body.len().min(MAX_SCAN)]))
}

fn retry_info(body: &[u8]) -> Option<Duration> {
    if body.len() > MAX_JSON {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let errors: Vec<&Value> = match &value {
        Value::Array(items) => items.iter().take(8).collect(),
        v => vec![v],
    };
    errors.into_iter().find_map(|e| {
        let details = e.get("error")?.get("details")?.as_array()?;
        details.iter().take(32).find_map(|d| {
            let is_retry_info = d
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"));
            if !is_retry_info {
                return None;
            }
            match d.get("retryDelay")? {
                // The JSON form of google.protobuf.Duration: "45.837906927s".
                Value::String(s) => {
                    let secs = s.strip_suffix('s')?;
                    if !secs.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                        return None;
                    }
                    parse_seconds(secs)
                }
                // Some clients render it as {"seconds": 45, "nanos": 837906927}.
                Value::Object(o) => {
                    let seconds = match o.get("seconds") {
                        Some(Value::Number(n)) => n.as_u64()?,
                        Some(Value::String(s)) => super::value::parse_count(s)?,
                        None => 0,
                        Some(_) => return None,
                    };
                    let nanos = match o.get("nanos") {
                        Some(n) => n.as_u64().filter(|n| *n < 1_000_000_000)?,
                        None => 0,
                    };
                    parse_seconds(&format!("{seconds}.{nanos:09}"))
                }
                _ => None,
            }
        })
    })
}

/// Finds `needle` (lower-case ASCII) in `hay`, ignoring ASCII case.
fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// "try again in 7.66s" (OpenAI, Groq) or "retry after 6 seconds" (Azure).
fn sentence(body: &[u8]) -> Option<Duration> {
    let token = |from: usize| {
        let rest = &body[from..];
        let end = rest
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'.'))
            .unwrap_or(rest.len());
        // A sentence may end right after the value: "in 20s."
        let t = std::str::from_utf8(&rest[..end]).ok()?;
        Some((t.strip_suffix('.').unwrap_or(t), &rest[end..]))
    };
    if let Some(i) = find_ci(body, b"try again in ")
        && let Some(d) = token(i + 13).and_then(|(t, _)| parse_go_duration(t))
    {
        return Some(d);
    }
    if let Some(i) = find_ci(body, b"retry after ") {
        let (t, rest) = token(i + 12)?;
        let unit_follows = rest.first() == Some(&b' ')
            && rest
                .get(1..7)
                .is_some_and(|u| u.eq_ignore_ascii_case(b"second"));
        if unit_follows {
            return parse_seconds(t);
        }
    }
    None
}
