//! The mock's token-charging rule, exposed so tests can compute exactly what the judge
//! charges.
//!
//! **Input tokens.** For a JSON object body, every *message* costs `ceil(chars / 4) + 4`,
//! where `chars` is the number of Unicode scalar values of all the message's text:
//!
//! - OpenAI, Azure, Groq, Anthropic: each item of `messages`; its `content` is a string,
//!   or an array of parts whose `text` strings are added up.
//! - Anthropic: `system` (a string or an array of blocks with `text`) is one more message.
//! - Gemini: each item of `contents`, the text being its `parts[].text`; `systemInstruction`
//!   (or `system_instruction`) is one more message.
//! - OpenAI completions/responses/embeddings: `prompt` and `input`, a string (one message)
//!   or an array (each string, or each object's `content` as above, is one message).
//!
//! A body that is not JSON, not an object, or has none of these fields costs
//! `ceil(bytes / 4)` input tokens (no per-message overhead).
//!
//! **Output allowance.** The first present of `max_tokens`, `max_completion_tokens`,
//! `max_output_tokens`, `generationConfig.maxOutputTokens` (16 when absent), times `n`
//! (or Gemini's `generationConfig.candidateCount`; 1 when absent or 0). An embeddings
//! request (a path ending in `/embeddings`, see [`TokenCount::for_request`]) has no output
//! allowance, as at the real providers.
//!
//! **Charged at admission** (tokens per minute): input tokens + output allowance. Input
//! tokens per minute are charged the input tokens, output tokens per minute the allowance.
//! When the response completes, the charges are lowered to the real usage: input tokens +
//! the completion tokens reported in `usage` (`floor(per-choice allowance × completion
//! fraction) × n`, never more than the allowance).
//!
//! ```
//! use ratelayer_mock::tokens::TokenCount;
//!
//! let body = br#"{"model":"gpt-4o-mini","max_tokens":100,
//!     "messages":[{"role":"user","content":"Hello, world!"}]}"#;
//! let count = TokenCount::of(body);
//! assert_eq!(count.input, 4 + 4); // ceil(13 / 4) + 4
//! assert_eq!(count.output_allowance, 100);
//! assert_eq!(count.charged(), 108);
//! ```

use serde_json::{Map, Value};

/// The output allowance when a request sets no maximum.
///
/// ```
/// use ratelayer_mock::tokens::{DEFAULT_MAX_TOKENS, TokenCount};
/// let count = TokenCount::of(br#"{"messages":[{"role":"user","content":"Hi"}]}"#);
/// assert_eq!(count.output_allowance, DEFAULT_MAX_TOKENS);
/// ```
pub const DEFAULT_MAX_TOKENS: u64 = 16;

/// Tokens added per message on top of its text.
///
/// ```
/// use ratelayer_mock::tokens::{PER_MESSAGE_OVERHEAD, TokenCount};
/// let body = br#"{"messages":[{"role":"system","content":""},{"role":"user","content":"abcd"}]}"#;
/// assert_eq!(TokenCount::of(body).input, 2 * PER_MESSAGE_OVERHEAD + 1); // "abcd": 1 token
/// ```
pub const PER_MESSAGE_OVERHEAD: u64 = 4;

/// What a request costs under the mock's rule (see the [module docs](self)).
///
/// ```
/// use ratelayer_mock::tokens::TokenCount;
/// let body = br#"{"max_tokens":50,"n":3,"messages":[{"role":"user","content":"Hello"}]}"#;
/// let count = TokenCount::of(body);
/// assert_eq!((count.max_tokens, count.n, count.output_allowance), (50, 3, 150));
/// assert_eq!(count.charged(), count.input + 150);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenCount {
    /// Input (prompt) tokens.
    pub input: u64,
    /// The output allowance per choice (`max_tokens` or its synonyms, or 16).
    pub max_tokens: u64,
    /// The number of choices (`n`).
    pub n: u64,
    /// `max_tokens × n`.
    pub output_allowance: u64,
}

impl TokenCount {
    /// Counts a request body.
    ///
    /// ```
    /// use ratelayer_mock::tokens::TokenCount;
    /// // Not JSON: ceil(bytes / 4), and the default allowance of 16.
    /// let c = TokenCount::of(b"hello");
    /// assert_eq!((c.input, c.output_allowance), (2, 16));
    /// ```
    pub fn of(body: &[u8]) -> TokenCount {
        let raw = || div_ceil(body.len() as u64, 4);
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
            return TokenCount::with_input(raw(), DEFAULT_MAX_TOKENS, 1);
        };
        let input = messages_tokens(&obj).unwrap_or_else(raw);
        let gen_config = obj.get("generationConfig").and_then(Value::as_object);
        let max_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_u64))
            .or_else(|| gen_config.and_then(|g| g.get("maxOutputTokens")?.as_u64()))
            .unwrap_or(DEFAULT_MAX_TOKENS);
        let n = obj
            .get("n")
            .and_then(Value::as_u64)
            .or_else(|| gen_config.and_then(|g| g.get("candidateCount")?.as_u64()))
            .unwrap_or(1)
            .max(1);
        TokenCount::with_input(input, max_tokens, n)
    }

    /// Counts a request body sent to `path`: as [`TokenCount::of`], except that an
    /// embeddings request (a path ending in `/embeddings`) has no output allowance.
    ///
    /// ```
    /// use ratelayer_mock::tokens::TokenCount;
    /// let body = br#"{"model":"text-embedding-3-small","input":"Hello, world!"}"#;
    /// assert_eq!(TokenCount::for_request("/v1/embeddings", body).charged(), 8);
    /// assert_eq!(TokenCount::for_request("/v1/responses", body).charged(), 8 + 16);
    /// ```
    pub fn for_request(path: &str, body: &[u8]) -> TokenCount {
        let count = TokenCount::of(body);
        if path.trim_end_matches('/').ends_with("/embeddings") {
            TokenCount::with_input(count.input, 0, count.n)
        } else {
            count
        }
    }

    fn with_input(input: u64, max_tokens: u64, n: u64) -> TokenCount {
        TokenCount {
            input,
            max_tokens,
            n,
            output_allowance: max_tokens.saturating_mul(n),
        }
    }

    /// Tokens charged at admission: input + output allowance.
    ///
    /// ```
    /// # use ratelayer_mock::tokens::TokenCount;
    /// assert_eq!(TokenCount::of(br#"{"messages":[],"max_tokens":5,"n":2}"#).charged(), 10);
    /// ```
    pub fn charged(&self) -> u64 {
        self.input.saturating_add(self.output_allowance)
    }

    /// The completion tokens the mock reports for a completion fraction:
    /// `floor(max_tokens × fraction) × n`.
    ///
    /// ```
    /// # use ratelayer_mock::tokens::TokenCount;
    /// let c = TokenCount::of(br#"{"messages":[],"max_tokens":15,"n":2}"#);
    /// assert_eq!(c.completion_tokens(0.5), 14);
    /// ```
    pub fn completion_tokens(&self, fraction: f64) -> u64 {
        let per_choice = (self.max_tokens as f64 * fraction.clamp(0.0, 1.0)).floor() as u64;
        per_choice.min(self.max_tokens).saturating_mul(self.n)
    }
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

fn message_cost(chars: u64) -> u64 {
    div_ceil(chars, 4) + PER_MESSAGE_OVERHEAD
}

/// Characters of a `content` value: a string, or parts with `text`.
fn content_chars(content: &Value) -> u64 {
    match content {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(parts) => parts.iter().map(part_chars).sum(),
        Value::Object(_) => part_chars(content),
        _ => 0,
    }
}

fn part_chars(part: &Value) -> u64 {
    match part {
        Value::String(s) => s.chars().count() as u64,
        Value::Object(o) => o
            .get("text")
            .and_then(Value::as_str)
            .map_or(0, |s| s.chars().count() as u64),
        _ => 0,
    }
}

/// A Gemini content: `parts[].text`.
fn gemini_chars(content: &Value) -> u64 {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map_or(0, |parts| parts.iter().map(part_chars).sum())
}

/// One message per item: a string, or an object's `content`.
fn items_tokens(v: &Value) -> u64 {
    match v {
        Value::String(s) => message_cost(s.chars().count() as u64),
        Value::Array(items) => items
            .iter()
            .map(|m| match m {
                Value::Object(o) => message_cost(o.get("content").map_or(0, content_chars)),
                other => message_cost(part_chars(other)),
            })
            .sum(),
        _ => 0,
    }
}

/// The message-based input count, or `None` when the body has no known message field.
fn messages_tokens(obj: &Map<String, Value>) -> Option<u64> {
    let mut found = false;
    let mut total = 0u64;
    if let Some(v) = obj.get("messages") {
        found = true;
        total += items_tokens(v);
    }
    if let Some(v) = obj.get("system") {
        found = true;
        total += message_cost(content_chars(v));
    }
    if let Some(Value::Array(contents)) = obj.get("contents") {
        found = true;
        total += contents
            .iter()
            .map(|c| message_cost(gemini_chars(c)))
            .sum::<u64>();
    }
    if let Some(v) = obj
        .get("systemInstruction")
        .or_else(|| obj.get("system_instruction"))
    {
        found = true;
        total += message_cost(gemini_chars(v));
    }
    for key in ["prompt", "input"] {
        if let Some(v) = obj.get(key) {
            found = true;
            total += items_tokens(v);
        }
    }
    found.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_messages_and_parts() {
        let c = TokenCount::of(
            br#"{"model":"m","messages":[
                {"role":"system","content":"12345678"},
                {"role":"user","content":[{"type":"text","text":"abc"},{"type":"text","text":"de"}]}
            ],"max_completion_tokens":7,"n":3}"#,
        );
        assert_eq!(c.input, (2 + 4) + (2 + 4));
        assert_eq!(c.output_allowance, 21);
        assert_eq!(c.charged(), 33);
    }

    #[test]
    fn anthropic_system_counts_as_a_message() {
        let c = TokenCount::of(
            br#"{"model":"claude","system":"You are terse.","max_tokens":50,
                "messages":[{"role":"user","content":"Hi"}]}"#,
        );
        assert_eq!(c.input, (4 + 4) + (1 + 4));
        assert_eq!(c.output_allowance, 50);
    }

    #[test]
    fn gemini_contents_and_generation_config() {
        let c = TokenCount::of(
            br#"{"contents":[{"role":"user","parts":[{"text":"abcd"},{"text":"e"}]}],
                "systemInstruction":{"parts":[{"text":"be brief"}]},
                "generationConfig":{"maxOutputTokens":64,"candidateCount":2}}"#,
        );
        assert_eq!(c.input, (2 + 4) + (2 + 4));
        assert_eq!(c.output_allowance, 128);
    }

    #[test]
    fn unicode_counts_chars_not_bytes() {
        let c = TokenCount::of(r#"{"messages":[{"role":"user","content":"ééééé"}]}"#.as_bytes());
        assert_eq!(c.input, 2 + 4);
    }

    #[test]
    fn unknown_shapes_count_bytes() {
        let body = br#"{"foo":"bar"}"#;
        assert_eq!(TokenCount::of(body).input, div_ceil(body.len() as u64, 4));
        assert_eq!(TokenCount::of(b"").input, 0);
        assert_eq!(TokenCount::of(b"[1,2]").input, 2);
        assert_eq!(TokenCount::of(b"[1,2]").output_allowance, 16);
    }

    #[test]
    fn prompt_and_input_fields() {
        assert_eq!(TokenCount::of(br#"{"prompt":"abcdefgh"}"#).input, 6);
        assert_eq!(TokenCount::of(br#"{"input":["a","b"]}"#).input, 10);
        let c = TokenCount::of(br#"{"input":"x","max_output_tokens":9,"n":0}"#);
        assert_eq!((c.input, c.output_allowance), (5, 9));
    }

    #[test]
    fn completion_never_exceeds_allowance() {
        let c = TokenCount::of(br#"{"messages":[],"max_tokens":9,"n":2}"#);
        assert_eq!(c.completion_tokens(1.0), 18);
        assert_eq!(c.completion_tokens(2.0), 18);
        assert_eq!(c.completion_tokens(0.0), 0);
        assert_eq!(c.completion_tokens(0.5), 8);
    }
}
