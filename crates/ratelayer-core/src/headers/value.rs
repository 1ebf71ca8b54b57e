//! Strict parsers for the values found in rate-limit headers: Go-style durations, decimal
//! seconds, RFC 3339 instants, epoch timestamps, `Retry-After` and plain counts.
//!
//! Every parser returns `None` for anything it cannot read exactly (signs, `NaN`, `inf`,
//! unit suffixes where none belong, non-ASCII, empty): it never guesses. Durations are
//! rounded *up* to whole milliseconds, so a client that sleeps for one never wakes early,
//! and saturate at [`MAX_DELAY`] instead of wrapping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest duration the parser reports: 2³² − 1 seconds (about 136 years).
///
/// A value above it (a reset a thousand years away, a delay of 10³⁰ seconds) saturates to
/// `MAX_DELAY`: a huge wait stays huge, and it can still be added to a
/// `tokio::time::Instant` without overflowing.
///
/// ```
/// use ratelayer_core::headers::value::{parse_seconds, MAX_DELAY};
/// assert_eq!(parse_seconds("99999999999999999999999999999"), Some(MAX_DELAY));
/// ```
pub const MAX_DELAY: Duration = Duration::from_secs(u32::MAX as u64);

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Nanoseconds (possibly huge) as a duration: rounded up to whole milliseconds, saturated
/// at [`MAX_DELAY`].
pub(crate) fn nanos_to_delay(nanos: u128) -> Duration {
    let max_ms = MAX_DELAY.as_millis();
    let ms = nanos.div_ceil(NANOS_PER_MS).min(max_ms);
    // `ms` is at most `max_ms`, which fits a u64.
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// `digits[.digits]` (at least one digit overall, ASCII only) times `unit` nanoseconds,
/// rounding any fraction of a nanosecond up and saturating instead of overflowing.
fn decimal_nanos(s: &[u8], unit: u128) -> Option<u128> {
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[][..]),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.iter().all(u8::is_ascii_digit) || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut whole: u128 = 0;
    for &d in int {
        whole = whole
            .saturating_mul(10)
            .saturating_add(u128::from(d - b'0'));
    }
    let mut total = whole.saturating_mul(unit);
    if !frac.is_empty() {
        // The fraction is num / den, plus a little more if digits beyond 18 are non-zero
        // (then num + 1 is an upper bound).
        let (mut num, mut den, mut more) = (0u128, 1u128, false);
        for (i, &d) in frac.iter().enumerate() {
            if i < 18 {
                num = num * 10 + u128::from(d - b'0');
                den *= 10;
            } else if d != b'0' {
                more = true;
            }
        }
        if more {
            num += 1;
        }
        // num < 10^18 and unit <= 3.6e12: the product fits easily.
        total = total.saturating_add((num * unit).div_ceil(den));
    }
    Some(total)
}

fn trim(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// A non-negative decimal number of seconds, such as `30`, `1.5` or Azure's bare-second
/// resets. No sign, no unit, no exponent.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::headers::value::parse_seconds;
/// assert_eq!(parse_seconds("30"), Some(Duration::from_secs(30)));
/// assert_eq!(parse_seconds("0.0004"), Some(Duration::from_millis(1))); // rounded up
/// assert_eq!(parse_seconds("-1"), None);
/// assert_eq!(parse_seconds("30s"), None);
/// ```
pub fn parse_seconds(s: &str) -> Option<Duration> {
    decimal_nanos(trim(s).as_bytes(), NANOS_PER_SEC).map(nanos_to_delay)
}

/// A non-negative decimal number of milliseconds (the `retry-after-ms` header).
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::headers::value::parse_millis;
/// assert_eq!(parse_millis("1500"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_millis("0.2"), Some(Duration::from_millis(1)));
/// assert_eq!(parse_millis("NaN"), None);
/// ```
pub fn parse_millis(s: &str) -> Option<Duration> {
    decimal_nanos(trim(s).as_bytes(), NANOS_PER_MS).map(nanos_to_delay)
}

/// A non-negative integer count (a limit or a remaining amount): ASCII digits only, no
/// sign, fitting a `u64`. Anything else, including a value too large, is `None`.
///
/// ```
/// use ratelayer_core::headers::value::parse_count;
/// assert_eq!(parse_count("10000"), Some(10_000));
/// assert_eq!(parse_count("-1"), None); // Azure's "unknown"
/// assert_eq!(parse_count("+5"), None);
/// assert_eq!(parse_count("1e3"), None);
/// ```
pub fn parse_count(s: &str) -> Option<u64> {
    let s = trim(s);
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A Go-style duration as OpenAI and Groq send in `x-ratelimit-reset-*`: a sequence of
/// decimal numbers, each with a unit (`h`, `m`, `s`, `ms`, `us`/`µs`/`μs`, `ns`), such as
/// `1s`, `6m0s`, `20ms`, `1h2m3.5s`, `7.66s`; or a bare `0`. Unlike Go, a sign is refused.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::headers::value::parse_go_duration;
/// assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
/// assert_eq!(parse_go_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
/// assert_eq!(parse_go_duration("7.66s"), Some(Duration::from_millis(7_660)));
/// assert_eq!(parse_go_duration("1x"), None);
/// assert_eq!(parse_go_duration("-1s"), None);
/// ```
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = trim(s).as_bytes();
    if s == b"0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b'.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(n);
        let u = after
            .iter()
            .position(|b| b.is_ascii_digit() || *b == b'.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(u);
        let unit_nanos: u128 = match unit {
            b"h" => 3_600 * NANOS_PER_SEC,
            b"m" => 60 * NANOS_PER_SEC,
            b"s" => NANOS_PER_SEC,
            b"ms" => NANOS_PER_MS,
            // `us`, `µs` (U+00B5) and `μs` (U+03BC).
            b"us" | [0xC2, 0xB5, b's'] | [0xCE, 0xBC, b's'] => 1_000,
            b"ns" => 1,
            _ => return None,
        };
        total = total.saturating_add(decimal_nanos(number, unit_nanos)?);
        rest = after;
    }
    Some(nanos_to_delay(total))
}

/// Formats a duration the way Go (and OpenAI's headers) do: `0s`, `20ms`, `1.5s`, `6m0s`,
/// `1h2m3.5s`. [`parse_go_duration`] reads it back (rounded up to a millisecond).
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::headers::value::{format_go_duration, parse_go_duration};
/// assert_eq!(format_go_duration(Duration::from_secs(360)), "6m0s");
/// assert_eq!(format_go_duration(Duration::from_millis(20)), "20ms");
/// assert_eq!(format_go_duration(Duration::from_millis(3_723_500)), "1h2m3.5s");
/// let d = Duration::from_millis(7_660);
/// assert_eq!(parse_go_duration(&format_go_duration(d)), Some(d));
/// ```
pub fn format_go_duration(d: Duration) -> String {
    fn with_fraction(whole: u128, frac: u128, frac_digits: usize) -> String {
        if frac == 0 {
            return whole.to_string();
        }
        let f = format!("{frac:0frac_digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    }
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < NANOS_PER_MS {
        return format!("{}µs", with_fraction(nanos / 1_000, nanos % 1_000, 3));
    }
    if nanos < NANOS_PER_SEC {
        let ms = nanos / NANOS_PER_MS;
        return format!("{}ms", with_fraction(ms, nanos % NANOS_PER_MS, 6));
    }
    let secs = nanos / NANOS_PER_SEC;
    let (h, m, s) = (secs / 3_600, (secs / 60) % 60, secs % 60);
    let s = format!("{}s", with_fraction(s, nanos % NANOS_PER_SEC, 9));
    if h > 0 {
        format!("{h}h{m}m{s}")
    } else if m > 0 {
        format!("{m}m{s}")
    } else {
        s
    }
}

/// Nanoseconds since the Unix epoch of `now` (zero before the epoch).
fn epoch_nanos(now: SystemTime) -> i128 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
        .unwrap_or(0)
}

/// The time from `now` until an instant `target_nanos` after the epoch: zero if it is
/// past, rounded up and saturated otherwise.
fn until(target_nanos: i128, now: SystemTime) -> Duration {
    let delta = target_nanos.saturating_sub(epoch_nanos(now));
    if delta <= 0 {
        Duration::ZERO
    } else {
        nanos_to_delay(delta.unsigned_abs())
    }
}

/// The time from `now` until a Unix timestamp in seconds (GitHub, GitLab:
/// `x-ratelimit-reset: 1372700873`); zero if it is past.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use ratelayer_core::headers::value::until_epoch_seconds;
/// let now = UNIX_EPOCH + Duration::from_secs(1_372_700_000);
/// assert_eq!(until_epoch_seconds("1372700873", now), Some(Duration::from_secs(873)));
/// assert_eq!(until_epoch_seconds("1000", now), Some(Duration::ZERO));
/// ```
pub fn until_epoch_seconds(s: &str, now: SystemTime) -> Option<Duration> {
    let target = decimal_nanos(trim(s).as_bytes(), NANOS_PER_SEC)?;
    Some(until(i128::try_from(target).unwrap_or(i128::MAX), now))
}

/// The time from `now` until a Unix timestamp in milliseconds (OpenRouter); zero if past.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use ratelayer_core::headers::value::until_epoch_millis;
/// let now = UNIX_EPOCH + Duration::from_millis(1_741_305_600_000);
/// assert_eq!(until_epoch_millis("1741305660000", now), Some(Duration::from_secs(60)));
/// ```
pub fn until_epoch_millis(s: &str, now: SystemTime) -> Option<Duration> {
    let target = decimal_nanos(trim(s).as_bytes(), NANOS_PER_MS)?;
    Some(until(i128::try_from(target).unwrap_or(i128::MAX), now))
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        s.iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0')),
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian), after Howard Hinnant.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An RFC 3339 date-time (`2024-05-01T12:00:30Z`, `2024-05-01T12:00:30.5+02:00`) as
/// nanoseconds since the Unix epoch (negative before 1970). Strict: four-digit year,
/// two-digit fields in range, `T` (or `t`) separator, a `Z` or `±HH:MM` offset, an
/// optional fraction of any length (rounded up to the nanosecond).
///
/// ```
/// use ratelayer_core::headers::value::parse_rfc3339;
/// assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1_000_000_000));
/// assert_eq!(parse_rfc3339("1970-01-01T01:00:01+01:00"), Some(1_000_000_000));
/// assert_eq!(parse_rfc3339("2024-02-30T00:00:00Z"), None);
/// ```
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = trim(s).as_bytes();
    if b.len() < 20 {
        return None;
    }
    let sep = |i: usize, c: &[u8]| c.contains(&b[i]);
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let year = i64::from(digits(&b[0..4])?);
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    let dim = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > dim || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut frac_nanos: i128 = 0;
    if rest.first() == Some(&b'.') {
        let n = rest[1..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(rest.len() - 1);
        if n == 0 {
            return None;
        }
        let nanos = decimal_nanos(&[b"0.", &rest[1..=n]].concat(), NANOS_PER_SEC)?;
        frac_nanos = i128::try_from(nanos).ok()?;
        rest = &rest[n + 1..];
    }
    let offset_secs: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = digits(&[*h1, *h2])?;
            let om = digits(&[*m1, *m2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = i64::from(oh * 3_600 + om * 60);
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, i64::from(month), i64::from(day));
    let secs = days * 86_400 + i64::from(hour * 3_600 + minute * 60 + second) - offset_secs;
    Some(i128::from(secs) * NANOS_PER_SEC as i128 + frac_nanos)
}

/// The time from `now` until an RFC 3339 instant (Anthropic's resets); zero if past.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use ratelayer_core::headers::value::until_rfc3339;
/// let now = UNIX_EPOCH + Duration::from_secs(1_714_564_800); // 2024-05-01T12:00:00Z
/// assert_eq!(until_rfc3339("2024-05-01T12:00:30Z", now), Some(Duration::from_secs(30)));
/// assert_eq!(until_rfc3339("2024-05-01T11:00:00Z", now), Some(Duration::ZERO));
/// ```
pub fn until_rfc3339(s: &str, now: SystemTime) -> Option<Duration> {
    parse_rfc3339(s).map(|t| until(t, now))
}

/// A `Retry-After` value per RFC 9110: delta-seconds (a fraction is accepted) or an
/// HTTP-date in any of its three formats (IMF-fixdate, RFC 850, asctime). A date in the
/// past gives zero.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use ratelayer_core::headers::value::parse_retry_after;
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_757); // Sun, 06 Nov 1994 08:49:17 GMT
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after("1.5", now), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(20)));
/// assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now), Some(Duration::from_secs(20)));
/// assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), Some(Duration::from_secs(20)));
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(s: &str, now: SystemTime) -> Option<Duration> {
    let s = trim(s);
    match s.as_bytes().first() {
        Some(b) if b.is_ascii_digit() || *b == b'.' => parse_seconds(s),
        Some(_) => {
            let at = httpdate::parse_http_date(s).ok()?;
            Some(match at.duration_since(now) {
                Ok(d) => nanos_to_delay(d.as_nanos()),
                Err(_) => Duration::ZERO,
            })
        }
        None => None,
    }
}
