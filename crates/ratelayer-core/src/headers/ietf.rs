//! The IETF `RateLimit` header drafts: structured `RateLimit-Policy` / `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers-08 and later), their dictionary form of draft 06
//! (`RateLimit: limit=100, remaining=50, reset=30`), and the separate
//! `RateLimit-Limit/-Remaining/-Reset` fields of earlier drafts (with an optional
//! `10, 10;w=1, 50;w=60` quota-policy list in `RateLimit-Limit`).
//!
//! The parser is a small, tolerant reader of RFC 8941 lists: it takes what it can read
//! exactly and ignores the rest.

use std::time::Duration;

use super::value::{parse_count, parse_seconds};
use super::{Dimension, DimensionLimit};

/// One list member: its bare item (a string, token or integer, unquoted) and parameters.
#[derive(Debug, Default)]
pub(super) struct Member<'a> {
    pub(super) item: &'a str,
    pub(super) params: Vec<(&'a str, &'a str)>,
}

impl<'a> Member<'a> {
    pub(super) fn param(&self, key: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }
}

/// Splits at `sep` outside double quotes (a backslash escapes inside quotes).
fn split_outside_quotes(s: &str, sep: u8) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// Reads a structured-field list, at most 16 members with at most 16 parameters each.
pub(super) fn members(value: &str) -> Vec<Member<'_>> {
    split_outside_quotes(value, b',')
        .into_iter()
        .take(16)
        .filter_map(|m| {
            let mut parts = split_outside_quotes(m, b';').into_iter();
            let item = unquote(parts.next()?);
            if item.is_empty() {
                return None;
            }
            let params = parts
                .take(16)
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim(), unquote(v)))
                })
                .collect();
            Some(Member { item, params })
        })
        .collect()
}

/// The dimension a policy counts, from its `qu` parameter (absent means requests).
fn dimension_of(policy: Option<&Member<'_>>) -> Option<Dimension> {
    match policy.and_then(|p| p.param("qu")) {
        None => Some(Dimension::Requests),
        Some(u) if u.eq_ignore_ascii_case("requests") => Some(Dimension::Requests),
        Some(u) if u.eq_ignore_ascii_case("tokens") => Some(Dimension::Tokens),
        Some(_) => None,
    }
}

fn policy_limit(p: &Member<'_>) -> DimensionLimit {
    DimensionLimit {
        // draft 07 wrote the quota as the bare item: `RateLimit-Policy: 100;w=60`.
        limit: p
            .param("q")
            .and_then(parse_count)
            .or_else(|| parse_count(p.item)),
        window: p.param("w").and_then(parse_seconds),
        ..DimensionLimit::default()
    }
}

/// The most restrictive candidate: least remaining, then the longest reset, then the
/// lowest rate (limit per window).
fn most_restrictive(mut candidates: Vec<DimensionLimit>) -> Option<DimensionLimit> {
    candidates.retain(|c| !c.is_empty());
    candidates.into_iter().min_by(|a, b| {
        let remaining = |c: &DimensionLimit| c.remaining.unwrap_or(u64::MAX);
        let rate = |c: &DimensionLimit, other: &DimensionLimit| {
            let w = other.window.map_or(1, |w| w.as_millis().max(1));
            u128::from(c.limit.unwrap_or(u64::MAX)) * w
        };
        remaining(a)
            .cmp(&remaining(b))
            .then_with(|| b.reset.cmp(&a.reset))
            .then_with(|| rate(a, b).cmp(&rate(b, a)))
    })
}

/// The limit the structured `RateLimit-Policy` and `RateLimit` fields state for
/// `dimension`, if any.
pub(super) fn structured(
    policy: Option<&str>,
    ratelimit: Option<&str>,
    dimension: Dimension,
) -> Option<DimensionLimit> {
    let policies = policy.map(members).unwrap_or_default();
    let limits = ratelimit.map(members).unwrap_or_default();
    let mut candidates = Vec::new();
    // Draft 06 dictionary form: `RateLimit: limit=100, remaining=50, reset=30`.
    let dict = |key: &str| {
        limits.iter().find_map(|m| {
            let (k, v) = m.item.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then(|| unquote(v))
        })
    };
    if dimension == Dimension::Requests && dict("remaining").is_some() {
        candidates.push(DimensionLimit {
            limit: dict("limit").and_then(parse_count),
            remaining: dict("remaining").and_then(parse_count),
            reset: dict("reset").and_then(parse_seconds),
            window: None,
        });
    }
    for l in limits.iter().filter(|m| !m.item.contains('=')) {
        let policy = match policies.iter().find(|p| p.item == l.item) {
            Some(p) => Some(p),
            None if policies.len() == 1 => policies.first(),
            None => None,
        };
        if dimension_of(policy) != Some(dimension) {
            continue;
        }
        let mut c = policy.map(policy_limit).unwrap_or_default();
        c.remaining = l.param("r").and_then(parse_count);
        c.reset = l.param("t").and_then(parse_seconds);
        candidates.push(c);
    }
    if candidates.is_empty() {
        candidates = policies
            .iter()
            .filter(|p| dimension_of(Some(p)) == Some(dimension))
            .map(policy_limit)
            .collect();
    }
    most_restrictive(candidates)
}

/// The window of the quota policy a separate `RateLimit-Limit` field states
/// (`10, 10;w=1, 50;w=60`): the `w` of the first policy whose quota equals the limit, or
/// of the first member if it carries one.
pub(super) fn limit_field_window(value: &str) -> Option<Duration> {
    let ms = members(value);
    let first = ms.first()?;
    if let Some(w) = first.param("w") {
        return parse_seconds(w);
    }
    let limit = parse_count(first.item)?;
    ms.iter()
        .skip(1)
        .find(|m| parse_count(m.item) == Some(limit))
        .and_then(|m| m.param("w"))
        .and_then(parse_seconds)
}

/// The first member's item of a separate `RateLimit-Limit` field (`10, 10;w=1` → `10`).
pub(super) fn first_item(value: &str) -> &str {
    split_outside_quotes(value, b',')
        .into_iter()
        .next()
        .and_then(|m| split_outside_quotes(m, b';').into_iter().next())
        .map_or("", str::trim)
}
