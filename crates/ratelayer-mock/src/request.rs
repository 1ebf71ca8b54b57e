//! Requests in each dialect's shape, for tests: the right path, key header and body.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use ratelayer_core::Dialect;
use serde_json::{Value, json};

use crate::tokens::TokenCount;

/// A chat request that renders in any dialect the mock speaks.
///
/// ```
/// use ratelayer_core::Dialect;
/// use ratelayer_mock::ChatRequest;
///
/// let chat = ChatRequest::new("claude-3-5-haiku").key("sk-ant").user("Hello").max_tokens(64);
/// let req = chat.build(Dialect::Anthropic);
/// assert_eq!(req.uri(), "/v1/messages");
/// assert_eq!(req.headers()["x-api-key"], "sk-ant");
/// assert_eq!(chat.tokens(Dialect::Anthropic).charged(), (2 + 4) + 64);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    model: String,
    key: String,
    system: Option<String>,
    messages: Vec<(String, String)>,
    max_tokens: Option<u64>,
    n: Option<u64>,
    stream: bool,
    base_url: String,
    request_id: Option<String>,
}

impl ChatRequest {
    /// A request for `model` with the key `sk-test`, no messages, no `max_tokens`.
    ///
    /// ```
    /// use ratelayer_core::Dialect;
    /// let chat = ratelayer_mock::ChatRequest::new("gpt-4o-mini");
    /// let req = chat.build(Dialect::OpenAi);
    /// assert_eq!(req.headers()["authorization"], "Bearer sk-test");
    /// assert_eq!(chat.body(Dialect::OpenAi)["model"], "gpt-4o-mini");
    /// assert_eq!(chat.tokens(Dialect::OpenAi).output_allowance, 16); // the default max_tokens
    /// ```
    pub fn new(model: impl Into<String>) -> Self {
        ChatRequest {
            model: model.into(),
            key: "sk-test".to_owned(),
            system: None,
            messages: Vec::new(),
            max_tokens: None,
            n: None,
            stream: false,
            base_url: String::new(),
            request_id: None,
        }
    }

    /// The API key, sent in the dialect's header.
    ///
    /// ```
    /// let r = ratelayer_mock::ChatRequest::new("m").key("sk-a").build(ratelayer_core::Dialect::Azure);
    /// assert_eq!(r.headers()["api-key"], "sk-a");
    /// ```
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// A system prompt (Anthropic `system`, Gemini `systemInstruction`, otherwise a
    /// `system` message first).
    ///
    /// ```
    /// use ratelayer_core::Dialect;
    /// let r = ratelayer_mock::ChatRequest::new("m").system("Be brief.").user("Hi");
    /// assert_eq!(r.body(Dialect::Anthropic)["system"], "Be brief.");
    /// let openai = r.body(Dialect::OpenAi);
    /// assert_eq!(openai["messages"][0]["role"], "system");
    /// assert_eq!(openai["messages"][0]["content"], "Be brief.");
    /// ```
    pub fn system(mut self, text: impl Into<String>) -> Self {
        self.system = Some(text.into());
        self
    }

    /// Adds a user message.
    ///
    /// ```
    /// let r = ratelayer_mock::ChatRequest::new("m").user("Hi").user("Again");
    /// let body = r.body(ratelayer_core::Dialect::OpenAi);
    /// assert_eq!(body["messages"][1]["role"], "user");
    /// assert_eq!(body["messages"][1]["content"], "Again");
    /// ```
    pub fn user(mut self, text: impl Into<String>) -> Self {
        self.messages.push(("user".to_owned(), text.into()));
        self
    }

    /// Adds an assistant message.
    ///
    /// ```
    /// let r = ratelayer_mock::ChatRequest::new("m").user("Hi").assistant("Hello!");
    /// let body = r.body(ratelayer_core::Dialect::Gemini);
    /// assert_eq!(body["contents"][1]["role"], "model"); // Gemini's name for the assistant
    /// assert_eq!(body["contents"][1]["parts"][0]["text"], "Hello!");
    /// ```
    pub fn assistant(mut self, text: impl Into<String>) -> Self {
        self.messages.push(("assistant".to_owned(), text.into()));
        self
    }

    /// The output allowance per choice (`max_tokens`, or Gemini's `maxOutputTokens`).
    ///
    /// ```
    /// let r = ratelayer_mock::ChatRequest::new("m").max_tokens(100);
    /// assert_eq!(r.tokens(ratelayer_core::Dialect::OpenAi).output_allowance, 100);
    /// ```
    pub fn max_tokens(mut self, n: u64) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// The number of choices (`n`, or Gemini's `candidateCount`).
    ///
    /// ```
    /// let r = ratelayer_mock::ChatRequest::new("m").max_tokens(10).n(3);
    /// assert_eq!(r.tokens(ratelayer_core::Dialect::Gemini).output_allowance, 30);
    /// ```
    pub fn n(mut self, n: u64) -> Self {
        self.n = Some(n);
        self
    }

    /// Ask for a streamed (SSE) answer.
    ///
    /// ```
    /// let r = ratelayer_mock::ChatRequest::new("m").stream(true).build(ratelayer_core::Dialect::Gemini);
    /// assert!(r.uri().path().ends_with(":streamGenerateContent"));
    /// ```
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Prefix the path with a base URL (such as [`MockServer::url`](crate::MockServer::url))
    /// to send the request over HTTP.
    ///
    /// ```
    /// let r = ratelayer_mock::ChatRequest::new("m")
    ///     .base_url("http://127.0.0.1:8080")
    ///     .build(ratelayer_core::Dialect::OpenAi);
    /// assert_eq!(r.uri(), "http://127.0.0.1:8080/v1/chat/completions");
    /// ```
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// An `x-request-id` header, recorded in the journal.
    ///
    /// ```
    /// let r = ratelayer_mock::ChatRequest::new("m").request_id("job-7");
    /// assert_eq!(r.build(ratelayer_core::Dialect::OpenAi).headers()["x-request-id"], "job-7");
    /// ```
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// The JSON body in `dialect`'s shape.
    ///
    /// ```
    /// let body = ratelayer_mock::ChatRequest::new("m").user("Hi").body(ratelayer_core::Dialect::OpenAi);
    /// assert_eq!(body["messages"][0]["content"], "Hi");
    /// ```
    pub fn body(&self, dialect: Dialect) -> Value {
        let text_parts = |t: &str| json!({"parts": [{"text": t}]});
        match dialect {
            Dialect::Gemini => {
                let contents: Vec<Value> = self
                    .messages
                    .iter()
                    .map(|(role, text)| {
                        let role = if role == "assistant" { "model" } else { "user" };
                        json!({"role": role, "parts": [{"text": text}]})
                    })
                    .collect();
                let mut body = json!({"contents": contents});
                if let Some(s) = &self.system {
                    body["systemInstruction"] = text_parts(s);
                }
                let mut config = serde_json::Map::new();
                if let Some(m) = self.max_tokens {
                    config.insert("maxOutputTokens".into(), m.into());
                }
                if let Some(n) = self.n {
                    config.insert("candidateCount".into(), n.into());
                }
                if !config.is_empty() {
                    body["generationConfig"] = Value::Object(config);
                }
                body
            }
            _ => {
                let mut messages: Vec<Value> = Vec::new();
                if dialect != Dialect::Anthropic
                    && let Some(s) = &self.system
                {
                    messages.push(json!({"role": "system", "content": s}));
                }
                messages.extend(
                    self.messages
                        .iter()
                        .map(|(role, text)| json!({"role": role, "content": text})),
                );
                let mut body = json!({"model": self.model, "messages": messages});
                if dialect == Dialect::Anthropic {
                    if let Some(s) = &self.system {
                        body["system"] = json!(s);
                    }
                    // Anthropic requires max_tokens; 16 is the mock's default anyway.
                    body["max_tokens"] = json!(self.max_tokens.unwrap_or(16));
                } else if let Some(m) = self.max_tokens {
                    body["max_tokens"] = json!(m);
                }
                if let Some(n) = self.n {
                    body["n"] = json!(n);
                }
                if self.stream {
                    body["stream"] = json!(true);
                    if dialect != Dialect::Anthropic {
                        body["stream_options"] = json!({"include_usage": true});
                    }
                }
                body
            }
        }
    }

    /// What the mock charges for this request in `dialect` (see [`tokens`](crate::tokens)).
    ///
    /// ```
    /// let r = ratelayer_mock::ChatRequest::new("m").user("12345678");
    /// assert_eq!(r.tokens(ratelayer_core::Dialect::OpenAi).charged(), 2 + 4 + 16);
    /// ```
    pub fn tokens(&self, dialect: Dialect) -> TokenCount {
        TokenCount::of(self.body(dialect).to_string().as_bytes())
    }

    /// The path (and query) for `dialect`.
    fn path(&self, dialect: Dialect) -> String {
        match dialect {
            Dialect::Anthropic => "/v1/messages".to_owned(),
            Dialect::Azure => format!(
                "/openai/deployments/{}/chat/completions?api-version=2024-10-21",
                self.model
            ),
            Dialect::Gemini if self.stream => {
                format!(
                    "/v1beta/models/{}:streamGenerateContent?alt=sse",
                    self.model
                )
            }
            Dialect::Gemini => format!("/v1beta/models/{}:generateContent", self.model),
            Dialect::Groq => "/openai/v1/chat/completions".to_owned(),
            _ => "/v1/chat/completions".to_owned(),
        }
    }

    /// The HTTP request in `dialect`'s shape (path, key header, JSON body).
    ///
    /// # Panics
    ///
    /// If the key is not a valid header value or the base URL not a valid URI (a test
    /// setup error).
    ///
    /// ```
    /// let r = ratelayer_mock::ChatRequest::new("gemini-2.0-flash").build(ratelayer_core::Dialect::Gemini);
    /// assert_eq!(r.uri(), "/v1beta/models/gemini-2.0-flash:generateContent");
    /// assert_eq!(r.headers()["x-goog-api-key"], "sk-test");
    /// ```
    pub fn build(&self, dialect: Dialect) -> Request<Full<Bytes>> {
        let (name, value) = match dialect {
            Dialect::Anthropic => ("x-api-key", self.key.clone()),
            Dialect::Azure => ("api-key", self.key.clone()),
            Dialect::Gemini => ("x-goog-api-key", self.key.clone()),
            _ => ("authorization", format!("Bearer {}", self.key)),
        };
        let mut b = Request::post(format!("{}{}", self.base_url, self.path(dialect)))
            .header("content-type", "application/json")
            .header(name, value);
        if dialect == Dialect::Anthropic {
            b = b.header("anthropic-version", "2023-06-01");
        }
        if let Some(id) = &self.request_id {
            b = b.header("x-request-id", id.as_str());
        }
        b.body(Full::new(Bytes::from(self.body(dialect).to_string())))
            .expect("ChatRequest: the key must be a valid header value and the base URL a URI")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dialect_counts_the_same() {
        let chat = ChatRequest::new("m")
            .system("abcd")
            .user("hello")
            .assistant("hi")
            .max_tokens(20)
            .n(2);
        for d in [
            Dialect::OpenAi,
            Dialect::Azure,
            Dialect::Anthropic,
            Dialect::Gemini,
            Dialect::Groq,
        ] {
            let c = chat.tokens(d);
            assert_eq!(c.input, (1 + 4) + (2 + 4) + (1 + 4), "{d:?}");
            assert_eq!(c.output_allowance, 40, "{d:?}");
        }
    }
}
