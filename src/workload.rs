//! A seeded workload of chat requests of varied sizes.
//!
//! The same seed gives the same requests, so the naive client, tower's layers and the
//! ratelayer stack are compared on exactly the same work.

use std::sync::Arc;

use http::{Method, Request, Uri, header};
use ratelayer_core::ReplayBody;

/// A small deterministic pseudo-random generator (SplitMix64): enough for a workload, no
/// dependency, same numbers on every platform.
///
/// ```
/// use ratelayer_suite::workload::SplitMix64;
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(10) < 10);
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One chat request of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatJob {
    /// Position in the workload (0-based).
    pub id: usize,
    /// The model asked for.
    pub model: Arc<str>,
    /// Words in the prompt (each word is a few characters: about one token).
    pub prompt_words: u32,
    /// The output allowance, `max_tokens`.
    pub max_tokens: u32,
}

impl ChatJob {
    /// The OpenAI chat-completions JSON body of this job.
    ///
    /// ```
    /// use ratelayer_suite::workload::Workload;
    /// let w = Workload::generate(1, 3, "gpt-4o-mini");
    /// let body = w.jobs[0].body();
    /// let v: serde_json::Value = serde_json::from_slice(body.as_bytes()).unwrap();
    /// assert_eq!(v["model"], "gpt-4o-mini");
    /// assert_eq!(v["max_tokens"], w.jobs[0].max_tokens);
    /// ```
    pub fn body(&self) -> ReplayBody {
        const WORDS: [&str; 8] = [
            "rate", "limit", "token", "queue", "wait", "tier", "back", "off",
        ];
        let mut prompt = String::with_capacity(self.prompt_words as usize * 6);
        for i in 0..self.prompt_words as usize {
            if i > 0 {
                prompt.push(' ');
            }
            prompt.push_str(WORDS[(i + self.id) % WORDS.len()]);
        }
        ReplayBody::json(&serde_json::json!({
            "model": &*self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
        }))
    }

    /// A `POST {base}/v1/chat/completions` request carrying this job's body and, if given,
    /// a bearer key.
    ///
    /// ```
    /// use ratelayer_suite::workload::Workload;
    /// let w = Workload::generate(1, 1, "gpt-4o-mini");
    /// let req = w.jobs[0].request("http://127.0.0.1:9/", Some("sk-test"));
    /// assert_eq!(req.uri().path(), "/v1/chat/completions");
    /// assert!(req.headers().contains_key("authorization"));
    /// ```
    pub fn request(&self, base: &str, key: Option<&str>) -> Request<ReplayBody> {
        let base = base.trim_end_matches('/');
        let uri: Uri = format!("{base}/v1/chat/completions")
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/v1/chat/completions"));
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let body = self.body();
        builder
            .body(body)
            .unwrap_or_else(|_| Request::new(ReplayBody::empty()))
    }

    /// A rough token size of this job (prompt words plus output allowance), used only to
    /// describe the workload; the mock counts with its own rule.
    pub fn approx_tokens(&self) -> u64 {
        u64::from(self.prompt_words) + u64::from(self.max_tokens)
    }
}

/// A list of chat jobs generated from a seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The seed the jobs were generated from.
    pub seed: u64,
    /// The jobs, in the order callers pick them up.
    pub jobs: Vec<ChatJob>,
}

impl Workload {
    /// `n` chat jobs for `model`: prompt sizes spread log-uniformly from 40 to 2,400 words,
    /// output allowances of 64 to 512 tokens.
    ///
    /// ```
    /// use ratelayer_suite::workload::Workload;
    /// let a = Workload::generate(42, 300, "gpt-4o-mini");
    /// assert_eq!(a, Workload::generate(42, 300, "gpt-4o-mini"));
    /// assert_ne!(a, Workload::generate(43, 300, "gpt-4o-mini"));
    /// assert_eq!(a.jobs.len(), 300);
    /// ```
    pub fn generate(seed: u64, n: usize, model: &str) -> Self {
        Self::generate_sized(seed, n, model, 40, 2_400)
    }

    /// Like [`generate`](Self::generate) with prompt sizes between `min_words` and
    /// `max_words` (log-uniform).
    pub fn generate_sized(
        seed: u64,
        n: usize,
        model: &str,
        min_words: u32,
        max_words: u32,
    ) -> Self {
        const ALLOWANCES: [u32; 4] = [64, 128, 256, 512];
        let mut rng = SplitMix64::new(seed);
        let model: Arc<str> = Arc::from(model);
        let (lo, hi) = (
            f64::from(min_words.max(1)).ln(),
            f64::from(max_words.max(min_words.max(1))).ln(),
        );
        let jobs = (0..n)
            .map(|id| {
                let words = (lo + (hi - lo) * rng.unit()).exp().round() as u32;
                let max_tokens = ALLOWANCES[rng.below(ALLOWANCES.len() as u64) as usize];
                ChatJob {
                    id,
                    model: model.clone(),
                    prompt_words: words,
                    max_tokens,
                }
            })
            .collect();
        Workload { seed, jobs }
    }

    /// The sum of [`ChatJob::approx_tokens`] over all jobs.
    pub fn approx_tokens(&self) -> u64 {
        self.jobs.iter().map(ChatJob::approx_tokens).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_varied_and_in_range() {
        let w = Workload::generate(9, 400, "m");
        let min = w.jobs.iter().map(|j| j.prompt_words).min().unwrap();
        let max = w.jobs.iter().map(|j| j.prompt_words).max().unwrap();
        assert!((40..100).contains(&min), "{min}");
        assert!((1_500..=2_400).contains(&max), "{max}");
        let body = w.jobs[5].body();
        let v: serde_json::Value = serde_json::from_slice(body.as_bytes()).unwrap();
        let content = v["messages"][0]["content"].as_str().unwrap();
        assert_eq!(content.split(' ').count(), w.jobs[5].prompt_words as usize);
    }
}
