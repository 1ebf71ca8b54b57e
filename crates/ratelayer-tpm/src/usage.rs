//! What the provider counted: the `usage` of a response, read as the body streams through.
//!
//! [`UsageScanner`] is fed the response body chunk by chunk, in constant memory. It finds
//! every `"usage"` (OpenAI, Anthropic), `"usageMetadata"` / `"usage_metadata"` (Gemini)
//! object in a JSON body or in the events of a server-sent-events stream, wherever it is
//! nested, and keeps the latest value of each count:
//!
//! | Shape | Input | Output | Total |
//! |---|---|---|---|
//! | OpenAI chat/completions | `prompt_tokens` | `completion_tokens` | `total_tokens` |
//! | OpenAI responses, Anthropic | `input_tokens` (+ Anthropic's `cache_creation_input_tokens`) | `output_tokens` | `total_tokens` |
//! | Gemini | `promptTokenCount` (+ `toolUsePromptTokenCount`) | `candidatesTokenCount` + `thoughtsTokenCount` | `totalTokenCount` |
//!
//! A stream reports usage in its last chunk (OpenAI with `stream_options.include_usage`),
//! spread over events (Anthropic: input in `message_start`, the cumulative output in
//! `message_delta`) or cumulatively in every chunk (Gemini): keeping the latest value of
//! each count covers all three.
//!
//! Only the bytes of a usage object are held (at most [`MAX_USAGE_BYTES`]); text inside
//! JSON strings never matches (a key must be a real key followed by `:` and `{`).
//!
//! ```
//! use ratelayer_tpm::usage::UsageScanner;
//!
//! let mut s = UsageScanner::new();
//! s.feed(br#"{"id":"c1","choices":[{"message":{"content":"\"usage\": {\"prompt_tokens\": 9}"}}],"us"#);
//! s.feed(br#"age":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#);
//! let u = s.usage().unwrap();
//! assert_eq!((u.input, u.output, u.total_tokens()), (Some(12), Some(30), Some(42)));
//! ```

use serde_json::Value;

/// The most bytes of one usage object the scanner holds; a larger object is skipped.
///
/// ```
/// use ratelayer_tpm::usage::{MAX_USAGE_BYTES, UsageScanner};
/// let big = format!(r#"{{"usage":{{"pad":"{}","total_tokens":9}}}}"#, "x".repeat(MAX_USAGE_BYTES));
/// let mut s = UsageScanner::new();
/// s.feed(format!("data: {big}\n\n").as_bytes());
/// assert_eq!(s.usage(), None); // too large: skipped
/// s.feed(b"data: {\"usage\":{\"total_tokens\":42}}\n\n");
/// assert_eq!(s.usage().unwrap().total, Some(42));
/// ```
pub const MAX_USAGE_BYTES: usize = 4096;

/// Token counts reported by a provider. Each is `None` when the response did not say it.
///
/// ```
/// use ratelayer_tpm::usage::Usage;
/// let u = Usage { input: Some(10), output: Some(5), total: None };
/// assert_eq!(u.total_tokens(), Some(15));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input (prompt) tokens, as counted for rate limits.
    pub input: Option<u64>,
    /// Output (completion) tokens, reasoning included.
    pub output: Option<u64>,
    /// The total, if reported.
    pub total: Option<u64>,
}

impl Usage {
    /// The reported total, or input plus output when both are known.
    ///
    /// ```
    /// use ratelayer_tpm::usage::Usage;
    /// assert_eq!(Usage { input: Some(10), output: Some(5), total: None }.total_tokens(), Some(15));
    /// assert_eq!(Usage { input: Some(10), output: Some(5), total: Some(16) }.total_tokens(), Some(16));
    /// assert_eq!(Usage { input: Some(10), ..Usage::default() }.total_tokens(), None);
    /// ```
    pub fn total_tokens(&self) -> Option<u64> {
        self.total.or_else(|| match (self.input, self.output) {
            (Some(i), Some(o)) => Some(i.saturating_add(o)),
            _ => None,
        })
    }

    /// Whether nothing was reported.
    ///
    /// ```
    /// use ratelayer_tpm::usage::Usage;
    /// assert!(Usage::default().is_empty());
    /// assert!(!Usage { output: Some(1), ..Usage::default() }.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    /// Reads one usage object (any of the shapes in the [module docs](self)).
    ///
    /// ```
    /// use ratelayer_tpm::usage::Usage;
    /// let u = Usage::from_object(br#"{"input_tokens":7,"cache_creation_input_tokens":3,"output_tokens":2}"#);
    /// assert_eq!((u.input, u.output), (Some(10), Some(2)));
    /// assert!(Usage::from_object(b"not json").is_empty());
    /// ```
    pub fn from_object(bytes: &[u8]) -> Usage {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(o)) => {
                let get = |k: &str| o.get(k).and_then(Value::as_u64);
                let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
                    (None, None) => None,
                    (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
                };
                let input = get("prompt_tokens")
                    .or_else(|| sum(get("input_tokens"), get("cache_creation_input_tokens")))
                    .or_else(|| sum(get("promptTokenCount"), get("toolUsePromptTokenCount")));
                let output = get("completion_tokens")
                    .or_else(|| get("output_tokens"))
                    .or_else(|| sum(get("candidatesTokenCount"), get("thoughtsTokenCount")));
                let total = get("total_tokens").or_else(|| get("totalTokenCount"));
                Usage {
                    input,
                    output,
                    total,
                }
            }
            _ => Usage::default(),
        }
    }

    /// Takes every count `newer` reports, keeping ours where it says nothing.
    ///
    /// ```
    /// use ratelayer_tpm::usage::Usage;
    /// // Anthropic streams: input in `message_start`, the cumulative output in `message_delta`.
    /// let mut u = Usage { input: Some(25), output: Some(1), total: None };
    /// u.merge(Usage { output: Some(40), ..Usage::default() });
    /// assert_eq!(u, Usage { input: Some(25), output: Some(40), total: None });
    /// assert_eq!(u.total_tokens(), Some(65));
    /// ```
    pub fn merge(&mut self, newer: Usage) {
        self.input = newer.input.or(self.input);
        self.output = newer.output.or(self.output);
        self.total = newer.total.or(self.total);
        // A total from an older object no longer matches newer parts.
        if newer.total.is_none() && (newer.input.is_some() || newer.output.is_some()) {
            self.total = None;
        }
    }
}

const KEYS: [&[u8]; 3] = [b"usage", b"usageMetadata", b"usage_metadata"];
const MAX_KEY: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside any string, not after a usage key.
    Scan,
    /// Inside a string (`key_len` bytes of it kept while it could still be a usage key).
    Str,
    /// After a usage key's closing quote: expecting `:`.
    AfterKey,
    /// After `usage:`: expecting `{`.
    AfterColon,
    /// Inside the usage object, holding its bytes.
    Capture,
}

/// Finds usage objects in a JSON or SSE body fed chunk by chunk. See the
/// [module docs](self).
///
/// ```
/// use ratelayer_tpm::usage::UsageScanner;
/// let mut s = UsageScanner::new();
/// s.feed(b"data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":8,\"candidatesTokenCount\":3}}\n\n");
/// s.feed(b"data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":8,\"candidatesTokenCount\":9}}\n\n");
/// let u = s.usage().unwrap();
/// assert_eq!((u.input, u.output), (Some(8), Some(9))); // Gemini: the latest counts win
/// ```
#[derive(Debug, Clone)]
pub struct UsageScanner {
    state: State,
    escape: bool,
    key: [u8; MAX_KEY],
    key_len: usize,
    key_overflow: bool,
    // Capture state.
    buf: Vec<u8>,
    depth: u32,
    cap_in_str: bool,
    // The object being captured outgrew MAX_USAGE_BYTES: follow it to its end, unheld.
    skipping: bool,
    usage: Usage,
}

impl Default for UsageScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageScanner {
    /// A scanner that has seen nothing.
    ///
    /// ```
    /// use ratelayer_tpm::usage::UsageScanner;
    /// assert_eq!(UsageScanner::new().usage(), None);
    /// ```
    pub fn new() -> Self {
        UsageScanner {
            state: State::Scan,
            escape: false,
            key: [0; MAX_KEY],
            key_len: 0,
            key_overflow: false,
            buf: Vec::new(),
            depth: 0,
            cap_in_str: false,
            skipping: false,
            usage: Usage::default(),
        }
    }

    /// What was found so far (`None` if no usage object was read).
    ///
    /// ```
    /// use ratelayer_tpm::usage::UsageScanner;
    /// let mut s = UsageScanner::new();
    /// s.feed(br#"{"id":"c1","object":"chat.completion"}"#);
    /// assert_eq!(s.usage(), None);
    /// s.feed(br#"{"usage":{"prompt_tokens":12,"completion_tokens":30}}"#);
    /// assert_eq!(s.usage().unwrap().total_tokens(), Some(42));
    /// ```
    pub fn usage(&self) -> Option<Usage> {
        (!self.usage.is_empty()).then_some(self.usage)
    }

    /// Feeds the next bytes of the body.
    ///
    /// ```
    /// use ratelayer_tpm::usage::UsageScanner;
    /// let mut s = UsageScanner::new();
    /// for byte in br#"{"usage":{"input_tokens":7,"output_tokens":2}}"#.chunks(1) {
    ///     s.feed(byte); // chunk boundaries anywhere
    /// }
    /// assert_eq!(s.usage().unwrap().total_tokens(), Some(9));
    /// ```
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.step(b);
        }
    }

    fn reset(&mut self) {
        self.state = State::Scan;
        self.escape = false;
        self.buf.clear();
        self.depth = 0;
        self.cap_in_str = false;
        self.skipping = false;
    }

    #[inline]
    fn step(&mut self, b: u8) {
        match self.state {
            State::Scan => {
                if b == b'"' {
                    self.state = State::Str;
                    self.escape = false;
                    self.key_len = 0;
                    self.key_overflow = false;
                }
            }
            State::Str => {
                if b == b'\n' || b == b'\r' {
                    // A raw line break never occurs inside a JSON string: we are out of
                    // sync (an SSE comment or a non-JSON line). Start over on this line.
                    self.reset();
                } else if self.escape {
                    self.escape = false;
                    self.key_overflow = true;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    let key = &self.key[..self.key_len];
                    self.state = if !self.key_overflow && KEYS.contains(&key) {
                        State::AfterKey
                    } else {
                        State::Scan
                    };
                } else if self.key_len < MAX_KEY {
                    self.key[self.key_len] = b;
                    self.key_len += 1;
                } else {
                    self.key_overflow = true;
                }
            }
            State::AfterKey => match b {
                b':' => self.state = State::AfterColon,
                b' ' | b'\t' | b'\n' | b'\r' => {}
                _ => {
                    self.state = State::Scan;
                    self.step(b);
                }
            },
            State::AfterColon => match b {
                b'{' => {
                    self.state = State::Capture;
                    self.buf.clear();
                    self.buf.push(b);
                    self.depth = 1;
                    self.cap_in_str = false;
                    self.escape = false;
                }
                b' ' | b'\t' | b'\n' | b'\r' => {}
                _ => {
                    self.state = State::Scan;
                    self.step(b);
                }
            },
            State::Capture => {
                if !self.skipping && self.buf.len() >= MAX_USAGE_BYTES {
                    // Too large to be a usage object: skip it, to its end (its strings
                    // and nesting still followed, so the scan stays in step).
                    self.skipping = true;
                    self.buf.clear();
                }
                if !self.skipping {
                    self.buf.push(b);
                }
                if self.cap_in_str {
                    if b == b'\n' || b == b'\r' {
                        self.reset();
                    } else if self.escape {
                        self.escape = false;
                    } else if b == b'\\' {
                        self.escape = true;
                    } else if b == b'"' {
                        self.cap_in_str = false;
                    }
                    return;
                }
                match b {
                    b'"' => self.cap_in_str = true,
                    b'{' => self.depth += 1,
                    b'}' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            if !self.skipping {
                                let found = Usage::from_object(&self.buf);
                                self.usage.merge(found);
                            }
                            self.reset();
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Reads the usage of a whole JSON or SSE body at once.
///
/// ```
/// use ratelayer_tpm::usage::parse_usage;
/// let body = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12}}"#;
/// assert_eq!(parse_usage(body).and_then(|u| u.total_tokens()), Some(12));
/// ```
pub fn parse_usage(body: &[u8]) -> Option<Usage> {
    let mut s = UsageScanner::new();
    s.feed(body);
    s.usage()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPENAI: &str = r#"{
  "id": "chatcmpl-1", "object": "chat.completion",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "usage: {\"a\": 1}"}}],
  "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0}},
  "system_fingerprint": "fp"
}"#;

    const ANTHROPIC: &str = r#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],
"usage":{"input_tokens":2095,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":503}}"#;

    const ANTHROPIC_SSE: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"He said \\\"usage\\\": {\"}}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

    const OPENAI_SSE: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":3,\"total_tokens\":11}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn json_shapes() {
        let u = parse_usage(OPENAI.as_bytes()).unwrap();
        assert_eq!((u.input, u.output, u.total), (Some(19), Some(10), Some(29)));
        let u = parse_usage(ANTHROPIC.as_bytes()).unwrap();
        assert_eq!((u.input, u.output), (Some(2100), Some(503)));
        assert_eq!(u.total_tokens(), Some(2603));
        let gem = br#"{"candidates":[{"content":{"parts":[{"text":"x"}]}}],
            "usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6,"thoughtsTokenCount":2,"totalTokenCount":12}}"#;
        let u = parse_usage(gem).unwrap();
        assert_eq!((u.input, u.output, u.total), (Some(4), Some(8), Some(12)));
    }

    #[test]
    fn streams_keep_the_latest_counts() {
        let u = parse_usage(ANTHROPIC_SSE.as_bytes()).unwrap();
        assert_eq!(
            (u.input, u.output, u.total_tokens()),
            (Some(25), Some(15), Some(40))
        );
        let u = parse_usage(OPENAI_SSE.as_bytes()).unwrap();
        assert_eq!(u.total_tokens(), Some(11));
        let gem = "data: {\"usageMetadata\":{\"promptTokenCount\":4,\"totalTokenCount\":5}}\r\n\r\n\
                   data: {\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":9,\"totalTokenCount\":13}}\r\n\r\n";
        assert_eq!(
            parse_usage(gem.as_bytes()).unwrap().total_tokens(),
            Some(13)
        );
    }

    #[test]
    fn no_usage_and_garbage() {
        assert_eq!(parse_usage(br#"{"usage": null, "x": "usage"}"#), None);
        assert_eq!(parse_usage(b"usage: {prompt_tokens: 5}"), None);
        assert_eq!(parse_usage(b"\"usage\":{\"prompt_tokens\":-5}"), None);
        let big = format!(
            "{{\"usage\":{{\"pad\":\"{}\"}}}}",
            "x".repeat(MAX_USAGE_BYTES)
        );
        assert_eq!(parse_usage(big.as_bytes()), None);
        // An unterminated string on one SSE line does not hide the next line's usage.
        let s = "data: {\"broken\n\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n";
        assert_eq!(parse_usage(s.as_bytes()).unwrap().total_tokens(), Some(3));
    }

    #[test]
    fn an_oversized_object_is_skipped_whole() {
        // A large "usage" object (a tool's arguments, say) is skipped to its end: the
        // scanner stays in step with the JSON and still finds the real usage after it
        // in the same body (before, it lost track of strings and missed it).
        let body = format!(
            "{{\"args\":{{\"usage\":{{\"pad\":\"{}\",\"n\":{{\"a\":\"}}\"}}}}}},\
             \"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":30}}}}",
            "x".repeat(MAX_USAGE_BYTES)
        );
        assert_eq!(
            parse_usage(body.as_bytes()).unwrap().total_tokens(),
            Some(42)
        );
    }

    proptest! {
        /// However the body is split into chunks, the scanner finds the same usage.
        #[test]
        fn chunking_does_not_matter(cuts in proptest::collection::vec(0usize..400, 0..8)) {
            for body in [OPENAI, ANTHROPIC, ANTHROPIC_SSE, OPENAI_SSE] {
                let bytes = body.as_bytes();
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
                cuts.sort_unstable();
                let mut s = UsageScanner::new();
                let mut at = 0;
                for c in cuts.into_iter().chain([bytes.len()]) {
                    s.feed(&bytes[at..c]);
                    at = c;
                }
                prop_assert_eq!(s.usage(), parse_usage(bytes));
            }
        }

        /// Arbitrary bytes never panic.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_usage(&bytes);
        }
    }
}
