//! Token estimation from request bodies.

use std::sync::Arc;

use super::scan::Texts;

/// The estimate of one request: input tokens and the output allowance.
///
/// ```
/// use ratelayer_core::meta::{EstimateSource, TokenEstimate};
/// let e = TokenEstimate {
///     input_tokens: 12,
///     dense_input_tokens: 0,
///     output_tokens: 100,
///     source: EstimateSource::Body,
/// };
/// assert_eq!(e.total(), 112);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEstimate {
    /// Estimated input (prompt) tokens.
    pub input_tokens: u64,
    /// Of `input_tokens`, the part counted from text that is not ASCII (CJK and other
    /// dense scripts), at most `input_tokens`. A by-length count is about exact for such
    /// text, so calibration never shrinks this part (see [`estimate_json`]).
    ///
    /// ```
    /// use ratelayer_core::meta::{DefaultEstimator, EstimateInput, TokenEstimator};
    /// let body = r#"{"messages":[{"role":"user","content":"你好"},{"role":"user","content":"Hi"}]}"#;
    /// let e = DefaultEstimator::new()
    ///     .estimate(&EstimateInput::new("/v1/chat/completions", Some(body.as_bytes())));
    /// assert_eq!(e.dense_input_tokens, 2); // "你好": 6 bytes, 2 tokens
    /// ```
    pub dense_input_tokens: u64,
    /// Output allowance: the requested maximum output times the number of choices.
    pub output_tokens: u64,
    /// How the estimate was obtained.
    pub source: super::EstimateSource,
}

impl TokenEstimate {
    /// Input plus output.
    ///
    /// ```
    /// use ratelayer_core::meta::{EstimateSource, TokenEstimate};
    /// let e = TokenEstimate {
    ///     input_tokens: u64::MAX,
    ///     dense_input_tokens: 0,
    ///     output_tokens: 1,
    ///     source: EstimateSource::Body,
    /// };
    /// assert_eq!(e.total(), u64::MAX); // saturates
    /// ```
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// What an estimator sees of a request.
///
/// ```
/// use ratelayer_core::meta::EstimateInput;
/// let body = br#"{"model":"gpt-4o","messages":[]}"#;
/// let input = EstimateInput::new("/v1/chat/completions", Some(body)).model(Some("gpt-4o"));
/// assert_eq!(input.path, "/v1/chat/completions");
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct EstimateInput<'a> {
    /// The request path, such as `/v1/chat/completions` (tells embeddings apart).
    pub path: &'a str,
    /// The whole body, if it is in memory.
    pub body: Option<&'a [u8]>,
    /// The `content-length` of a body that is not in memory.
    pub content_length: Option<u64>,
    /// The model, if known (from the body or the path).
    pub model: Option<&'a str>,
}

impl<'a> EstimateInput<'a> {
    /// The input for a request to `path` with `body`.
    ///
    /// ```
    /// use ratelayer_core::meta::EstimateInput;
    /// let input = EstimateInput::new("/v1/embeddings", None);
    /// assert!(input.body.is_none());
    /// ```
    pub fn new(path: &'a str, body: Option<&'a [u8]>) -> Self {
        EstimateInput {
            path,
            body,
            content_length: None,
            model: None,
        }
    }

    /// With the `content-length` of a body that is not in memory.
    ///
    /// ```
    /// use ratelayer_core::meta::EstimateInput;
    /// let input = EstimateInput::new("/v1/chat/completions", None).content_length(Some(3000));
    /// assert_eq!(input.content_length, Some(3000));
    /// ```
    pub fn content_length(mut self, length: Option<u64>) -> Self {
        self.content_length = length;
        self
    }

    /// With the model.
    ///
    /// ```
    /// use ratelayer_core::meta::EstimateInput;
    /// let input = EstimateInput::new("/v1/messages", None).model(Some("claude-sonnet-4-5"));
    /// assert_eq!(input.model, Some("claude-sonnet-4-5"));
    /// ```
    pub fn model(mut self, model: Option<&'a str>) -> Self {
        self.model = model;
        self
    }
}

/// Estimates the tokens of a request. The layers call [`estimate`](Self::estimate); an
/// implementation usually only provides [`count_text`](Self::count_text) (an exact
/// tokenizer, say) and inherits the reading of the request shapes.
///
/// ```
/// use ratelayer_core::meta::{EstimateInput, TokenEstimator};
///
/// /// One token per whitespace-separated word.
/// struct Words;
/// impl TokenEstimator for Words {
///     fn count_text(&self, text: &str, _model: Option<&str>) -> u64 {
///         text.split_whitespace().count() as u64
///     }
/// }
///
/// let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello there world"}],"max_tokens":10}"#;
/// let e = Words.estimate(&EstimateInput::new("/v1/chat/completions", Some(body)));
/// // 3 words + "user" + 4 per message + 3 for the reply's priming.
/// assert_eq!(e.input_tokens, 3 + 1 + 4 + 3);
/// assert_eq!(e.output_tokens, 10);
/// ```
pub trait TokenEstimator: Send + Sync + 'static {
    /// Tokens of one piece of text.
    fn count_text(&self, text: &str, model: Option<&str>) -> u64;

    /// Tokens added per message or content item (role, separators). Default 4.
    fn per_message(&self) -> u64 {
        4
    }

    /// Tokens charged for an image, audio or file part (its bytes are not counted as
    /// text). Default 1,600: above OpenAI's 1,105 for a high-detail 1024×1024 image and
    /// Anthropic's ~1,600 for 1.15 megapixels.
    fn media_tokens(&self) -> u64 {
        1_600
    }

    /// The output allowance of a request that states no maximum: 0 for embeddings, else
    /// 1,024.
    fn default_output(&self, path: &str) -> u64 {
        if is_embeddings(path) { 0 } else { 1_024 }
    }

    /// The estimate of a whole request. By default: the body read as JSON by
    /// [`estimate_json`]; a body that is not a JSON object, or is not in memory, by its
    /// length (see [`estimate_json`]).
    fn estimate(&self, input: &EstimateInput<'_>) -> TokenEstimate {
        estimate_json(self, input)
    }

    /// The estimate of a request together with the model its JSON body names (a
    /// top-level `model` string of 1 to 256 bytes, shared as
    /// [`RequestMeta::model`](super::RequestMeta::model) holds it). The layers call this
    /// once per request ([`meta::compute`](super::compute)).
    ///
    /// By default it reads the model first and then calls [`estimate`](Self::estimate)
    /// with it, so [`count_text`](Self::count_text) always sees the body's model. An
    /// estimator whose counts do not depend on the model may override it to read the body
    /// once, as [`DefaultEstimator`] does.
    ///
    /// ```
    /// use ratelayer_core::meta::{DefaultEstimator, EstimateInput, TokenEstimator};
    /// let body = br#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o","max_tokens":5}"#;
    /// let (e, model) = DefaultEstimator::new()
    ///     .estimate_and_model(&EstimateInput::new("/v1/chat/completions", Some(body)));
    /// assert_eq!(model.as_deref(), Some("gpt-4o"));
    /// assert_eq!(e.output_tokens, 5);
    /// ```
    fn estimate_and_model(&self, input: &EstimateInput<'_>) -> (TokenEstimate, Option<Arc<str>>) {
        let model = input.body.and_then(super::scan::model_in_body);
        let input = input.model(model.as_deref().or(input.model));
        (self.estimate(&input), model)
    }

    /// Whether this estimator counts exactly as `DefaultEstimator::new()` does. Layers
    /// outside the TPM layer (retry, tier) estimate a request with the default estimator
    /// when they read its metadata first; a TPM layer whose estimator says `false` here
    /// counts the request again with its own. Default `false`.
    ///
    /// ```
    /// use ratelayer_core::meta::{DefaultEstimator, TokenEstimator};
    /// assert!(DefaultEstimator::new().same_as_default());
    /// assert!(!DefaultEstimator::new().output_allowance(4_096).same_as_default());
    /// ```
    fn same_as_default(&self) -> bool {
        false
    }
}

impl<E: TokenEstimator + ?Sized> TokenEstimator for Arc<E> {
    fn count_text(&self, text: &str, model: Option<&str>) -> u64 {
        (**self).count_text(text, model)
    }
    fn per_message(&self) -> u64 {
        (**self).per_message()
    }
    fn media_tokens(&self) -> u64 {
        (**self).media_tokens()
    }
    fn default_output(&self, path: &str) -> u64 {
        (**self).default_output(path)
    }
    fn estimate(&self, input: &EstimateInput<'_>) -> TokenEstimate {
        (**self).estimate(input)
    }
    fn estimate_and_model(&self, input: &EstimateInput<'_>) -> (TokenEstimate, Option<Arc<str>>) {
        (**self).estimate_and_model(input)
    }
    fn same_as_default(&self) -> bool {
        (**self).same_as_default()
    }
}

/// The default estimator: a conservative character count, no tokenizer.
///
/// A text of `b` UTF-8 bytes counts `ceil(b / 3)` tokens. Real tokenizers average about
/// four characters per token on English text and about one token per CJK character
/// (three UTF-8 bytes), so this over-counts English by about a third and never
/// under-counts the rule "`ceil(chars / 4)` of message text + 4 per message" that
/// ratelayer-mock charges. See [`estimate_json`] for what is counted.
///
/// ```
/// use ratelayer_core::meta::{DefaultEstimator, EstimateInput, TokenEstimator};
/// let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":50,"n":2}"#;
/// let e = DefaultEstimator::new().estimate(&EstimateInput::new("/v1/chat/completions", Some(body)));
/// // "user" 2 + "Say hello." 4 + 4 per message + 3 priming
/// assert_eq!(e.input_tokens, 13);
/// assert_eq!(e.output_tokens, 100); // max_tokens × n
/// ```
#[derive(Debug, Clone)]
pub struct DefaultEstimator {
    default_output: Option<u64>,
}

impl Default for DefaultEstimator {
    fn default() -> Self {
        Self::new()
    }
}

impl DefaultEstimator {
    /// The default estimator.
    ///
    /// ```
    /// use ratelayer_core::meta::{DefaultEstimator, TokenEstimator};
    /// assert_eq!(DefaultEstimator::new().count_text("abcdef", None), 2);
    /// ```
    pub fn new() -> Self {
        DefaultEstimator {
            default_output: None,
        }
    }

    /// The output allowance of a generation request that states no maximum (default
    /// 1,024; embeddings stay 0).
    ///
    /// ```
    /// use ratelayer_core::meta::{DefaultEstimator, TokenEstimator};
    /// let e = DefaultEstimator::new().output_allowance(4_096);
    /// assert_eq!(e.default_output("/v1/chat/completions"), 4_096);
    /// assert_eq!(e.default_output("/v1/embeddings"), 0);
    /// ```
    pub fn output_allowance(mut self, tokens: u64) -> Self {
        self.default_output = Some(tokens);
        self
    }
}

/// [`DefaultEstimator`]'s count of a text of `bytes` UTF-8 bytes.
pub(crate) fn by_length(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(3)
}

impl TokenEstimator for DefaultEstimator {
    fn count_text(&self, text: &str, _model: Option<&str>) -> u64 {
        by_length(text.len())
    }

    fn default_output(&self, path: &str) -> u64 {
        if is_embeddings(path) {
            0
        } else {
            self.default_output.unwrap_or(1_024)
        }
    }

    /// [`estimate_json`], counting text by its length alone.
    fn estimate(&self, input: &EstimateInput<'_>) -> TokenEstimate {
        scan_estimate(self, input, Texts::Length).0
    }

    /// One pass over the body: the default count does not depend on the model.
    fn estimate_and_model(&self, input: &EstimateInput<'_>) -> (TokenEstimate, Option<Arc<str>>) {
        scan_estimate(self, input, Texts::Length)
    }

    fn same_as_default(&self) -> bool {
        self.default_output.is_none()
    }
}

/// Whether `path` is an embeddings endpoint (OpenAI `/embeddings`, Gemini
/// `:embedContent` / `:batchEmbedContents`).
fn is_embeddings(path: &str) -> bool {
    path.ends_with("/embeddings")
        || path.ends_with("embedContent")
        || path.ends_with("EmbedContents")
}

/// Tokens charged for one priming of the reply.
const REPLY_PRIMING: u64 = 3;

/// Keys whose values are the request's input.
pub(crate) const INPUT_KEYS: &[&str] = &[
    "messages",
    "system",
    "prompt",
    "input",
    "instructions",
    "contents",
    "systemInstruction",
    "system_instruction",
    "tools",
    "functions",
    "tool_choice",
];

/// Keys whose array elements are messages, or whose value is one message when it is not
/// an array (each charged [`per_message`](TokenEstimator::per_message)).
pub(crate) const MESSAGE_KEYS: &[&str] = &["messages", "contents", "input", "prompt"];

/// Keys whose value is one message (each charged
/// [`per_message`](TokenEstimator::per_message) once).
pub(crate) const SINGLE_MESSAGE_KEYS: &[&str] = &[
    "system",
    "systemInstruction",
    "system_instruction",
    "instructions",
];

/// Types and keys of media parts.
pub(crate) const MEDIA_TYPES: &[&str] = &[
    "image",
    "image_url",
    "input_image",
    "input_audio",
    "input_file",
    "document",
    "file",
    "audio",
];
pub(crate) const MEDIA_KEYS: &[&str] = &[
    "image_url",
    "input_audio",
    "inline_data",
    "inlineData",
    "file_data",
    "fileData",
];

/// The estimate of a request, read from its JSON body. This is what
/// [`TokenEstimator::estimate`] does by default.
///
/// **Input**: the text of every string under the input keys of the common shapes
/// (`messages`, `system`, `prompt`, `input`, `instructions`, `contents`,
/// `systemInstruction`, `tools`, `functions`, `tool_choice`), counted by
/// [`count_text`](TokenEstimator::count_text), including roles and tool arguments; a
/// number in those (a token id) as one token; an image, audio or file part as
/// [`media_tokens`](TokenEstimator::media_tokens). Plus
/// [`per_message`](TokenEstimator::per_message) per message: each element of a
/// `messages`, `contents`, `input` or `prompt` array, a string `input` or `prompt`, and a
/// `system`, `systemInstruction` or `instructions`. Plus 3 for the priming of the reply
/// (except embeddings). A JSON object with none of the input keys counts by its length,
/// as an unreadable body does.
///
/// **Output allowance**: the largest of `max_completion_tokens`, `max_tokens`,
/// `max_output_tokens` and Gemini's `generationConfig.maxOutputTokens` present, else
/// [`default_output`](TokenEstimator::default_output); times `n` (or Gemini's
/// `candidateCount`), default 1.
///
/// **Dense text**: [`TokenEstimate::dense_input_tokens`] is the part of the input counted
/// from strings that are not all ASCII (CJK and other scripts of about one token per
/// character), the per-message charges and the priming excluded.
///
/// **Unreadable bodies**: a body that is not a JSON object counts as text of its length
/// (`ceil(bytes / 3)`, never zero when non-empty) plus the default output allowance; a
/// body that is not in memory is estimated from its `content-length` the same way, or as
/// the default output allowance alone. Counted by length, such a body is dense when it is
/// not all ASCII, and a body not in memory (its text unknown) always is.
///
/// ```
/// use ratelayer_core::meta::{estimate_json, DefaultEstimator, EstimateInput, EstimateSource};
/// let e = estimate_json(&DefaultEstimator::new(), &EstimateInput::new("/v1/chat/completions", Some(b"{oops")));
/// assert_eq!(e.source, EstimateSource::Conservative);
/// assert_eq!((e.input_tokens, e.output_tokens), (2, 1_024));
/// ```
pub fn estimate_json<E: TokenEstimator + ?Sized>(
    e: &E,
    input: &EstimateInput<'_>,
) -> TokenEstimate {
    scan_estimate(e, input, Texts::Estimator).0
}

/// [`estimate_json`], and the model the body names, from one pass over the body.
fn scan_estimate<E: TokenEstimator + ?Sized>(
    e: &E,
    input: &EstimateInput<'_>,
    texts: Texts,
) -> (TokenEstimate, Option<Arc<str>>) {
    let by_length = |bytes: u64| bytes.div_ceil(3);
    let Some(body) = input.body else {
        // Text not seen: as dense as it may be.
        let tokens = by_length(input.content_length.unwrap_or(0));
        let e = TokenEstimate {
            input_tokens: tokens,
            dense_input_tokens: tokens,
            output_tokens: e.default_output(input.path),
            source: super::EstimateSource::Conservative,
        };
        return (e, None);
    };
    // The whole body counted as one text, dense unless all ASCII.
    let whole = |output_tokens| {
        let tokens = by_length(body.len() as u64);
        TokenEstimate {
            input_tokens: tokens,
            dense_input_tokens: if body.is_ascii() { 0 } else { tokens },
            output_tokens,
            source: super::EstimateSource::Conservative,
        }
    };
    let mut facts = super::scan::BodyFacts::default();
    if !super::scan::scan(e, body, input.model, texts, &mut facts) {
        return (whole(e.default_output(input.path)), None);
    }
    let (max, n) = facts.output();
    let output_tokens = max
        .unwrap_or_else(|| e.default_output(input.path))
        .saturating_mul(n.unwrap_or(1).max(1));
    if !facts.found_input {
        return (whole(output_tokens), facts.model);
    }
    let mut tokens = facts.input_tokens;
    if !is_embeddings(input.path) {
        tokens = tokens.saturating_add(REPLY_PRIMING);
    }
    let e = TokenEstimate {
        input_tokens: tokens,
        dense_input_tokens: facts.dense_input_tokens,
        output_tokens,
        source: super::EstimateSource::Body,
    };
    (e, facts.model)
}
