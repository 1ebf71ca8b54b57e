//! Exact token counts for OpenAI model families, offline (feature `tiktoken`).
//!
//! [`TiktokenEstimator`] counts text with the model's own BPE encoding (`o200k_base` for
//! GPT-4o, GPT-4.1, GPT-5, o1/o3/o4; `cl100k_base` for GPT-4, GPT-3.5 and the embedding
//! models), from encoder data that ships inside the `tiktoken-rs` crate: no download, no
//! network. Models tiktoken does not know (Claude, Gemini, Llama, ...) are counted by
//! core's conservative [`DefaultEstimator`], so a mixed stack never under-counts a model
//! whose tokenizer it lacks. Per-message overheads and the output allowance are core's
//! ([`TokenEstimator`]'s defaults: 4 tokens per message, 3 for the reply's priming, which
//! OpenAI's own counting (3 per message) stays under).
//!
//! ```
//! use ratelayer_core::meta::{EstimateInput, TokenEstimator};
//! use ratelayer_tpm::tiktoken::TiktokenEstimator;
//!
//! let est = TiktokenEstimator::new();
//! assert_eq!(est.count_text("Hello, world!", Some("gpt-4o")), 4);
//! // Unknown to tiktoken: the conservative default (a third of the UTF-8 bytes).
//! assert_eq!(est.count_text("Hello, world!", Some("claude-sonnet-4-5")), 5);
//!
//! let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, world!"}],"max_tokens":50}"#;
//! let e = est.estimate(&EstimateInput::new("/v1/chat/completions", Some(body)).model(Some("gpt-4o-mini")));
//! assert_eq!(e.output_tokens, 50);
//! ```
//!
//! Use it with [`TpmLimitLayer::with_estimator`](crate::TpmLimitLayer::with_estimator).

use ratelayer_core::meta::{DefaultEstimator, TokenEstimator};

/// A [`TokenEstimator`] with exact counts for OpenAI models. See the
/// [module docs](self).
///
/// ```
/// use ratelayer_core::meta::{DefaultEstimator, TokenEstimator};
/// use ratelayer_core::LimitState;
/// use ratelayer_tpm::tiktoken::TiktokenEstimator;
/// use ratelayer_tpm::{TpmConfig, TpmLimitLayer};
/// let text = "The quick brown fox jumps over the lazy dog.";
/// assert_eq!(TiktokenEstimator::new().count_text(text, Some("gpt-4o")), 10); // exact
/// assert_eq!(DefaultEstimator::new().count_text(text, Some("gpt-4o")), 15); // conservative
/// let layer = TpmLimitLayer::with_estimator(TpmConfig::new(), LimitState::new(), TiktokenEstimator::new());
/// assert!(layer.is_ok());
/// ```
#[derive(Debug, Clone, Default)]
pub struct TiktokenEstimator {
    fallback: DefaultEstimator,
}

impl TiktokenEstimator {
    /// The estimator (encodings are loaded once per process, on first use).
    ///
    /// ```
    /// use ratelayer_core::meta::TokenEstimator;
    /// use ratelayer_tpm::tiktoken::TiktokenEstimator;
    /// let est = TiktokenEstimator::new();
    /// assert_eq!(est.count_text("Hello, world!", Some("gpt-4o")), 4);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }
}

impl TokenEstimator for TiktokenEstimator {
    fn count_text(&self, text: &str, model: Option<&str>) -> u64 {
        match model.and_then(|m| tiktoken_rs::bpe_for_model(m).ok()) {
            Some(bpe) => bpe.count_ordinary(text) as u64,
            None => self.fallback.count_text(text, model),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_model_family_and_falls_back() {
        let e = TiktokenEstimator::new();
        let text = "Tokens per minute limits bite before request limits.";
        let o200k = e.count_text(text, Some("gpt-4o"));
        let cl100k = e.count_text(text, Some("gpt-4"));
        assert!(o200k > 5 && o200k < 20, "{o200k}");
        assert!(cl100k > 5 && cl100k < 20, "{cl100k}");
        assert_eq!(
            e.count_text(text, Some("claude-sonnet-4-5")),
            DefaultEstimator::new().count_text(text, None)
        );
        assert_eq!(
            e.count_text(text, None),
            DefaultEstimator::new().count_text(text, None)
        );
        // Exact counts are below the default estimator's conservative ones for English.
        assert!(o200k < DefaultEstimator::new().count_text(text, None));
    }
}
