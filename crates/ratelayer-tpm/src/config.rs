//! Configuration of [`TpmLimitLayer`](crate::TpmLimitLayer): token budgets per scope, the
//! safety margin, the longest wait, and the calibration. Deserializable with serde.
//!
//! # Example model limits
//!
//! Illustrative per-minute limits of low paid tiers, to show which fields each provider
//! needs. Limits differ per account and change over time: copy yours from the provider's
//! limits page (or let the layer learn them from the rate-limit headers, which only ever
//! tighten a configured budget).
//!
//! | Provider | Model | `tokens_per_minute` | `input_tokens_per_minute` | `output_tokens_per_minute` |
//! |---|---|---|---|---|
//! | OpenAI (tier 1) | `gpt-4o` | 30,000 | | |
//! | OpenAI (tier 1) | `gpt-4o-mini` | 200,000 | | |
//! | OpenAI (tier 1) | `gpt-4.1` | 30,000 | | |
//! | Anthropic (tier 1) | `claude-sonnet-4*` | | 30,000 | 8,000 |
//! | Anthropic (tier 1) | `claude-3-5-haiku*` | | 50,000 | 10,000 |
//! | Gemini (free) | `gemini-2.5-flash` | 250,000 | | |
//! | Groq (free) | `llama-3.1-8b-instant` | 6,000 | | |
//!
//! Anthropic limits input and output tokens separately (ITPM, OTPM); OpenAI, Gemini and
//! most others limit their sum (TPM). A budget may set any combination: a request then
//! reserves its total in the TPM bucket, its input estimate in the ITPM bucket and its
//! output allowance in the OTPM bucket, all or nothing.
//!
//! # The safety margin
//!
//! Each budget is enforced at `floor(limit × (1 − safety_margin))`. The default,
//! [`DEFAULT_SAFETY_MARGIN`] = 1 %, absorbs small disagreements between our accounting and
//! the provider's (the network time between our send and the provider's arrival instant,
//! tokenizer differences that calibration has not learned yet) while keeping the
//! throughput ceiling at 99 % of the limit: the goodput goal is at least 97 % of the
//! binding limit, so the margin must stay small. The larger disagreements are handled
//! where they arise: a request held back by an inner layer (a concurrency queue) is
//! counted from when it was sent ([`SentAt`](ratelayer_core::SentAt)), each response's
//! usage replaces the estimate, and the remaining-tokens headers reveal usage we did not
//! book.
//!
//! ```
//! use std::time::Duration;
//! use ratelayer_tpm::TpmConfig;
//!
//! let config: TpmConfig = serde_json::from_str(r#"{
//!     "safety_margin": 0.02,
//!     "max_wait": "2m",
//!     "budgets": [
//!         { "provider": "openai", "model": "gpt-4o", "tokens_per_minute": 30000 },
//!         { "provider": "anthropic", "model": "claude-sonnet-4*",
//!           "input_tokens_per_minute": 30000, "output_tokens_per_minute": 8000 }
//!     ]
//! }"#).unwrap();
//! config.validate().unwrap();
//! assert_eq!(config.max_wait, Some(Duration::from_secs(120)));
//! let sonnet = ratelayer_core::Scope::new("anthropic").with_model("claude-sonnet-4-5");
//! let limits = config.limits_for(&sonnet).unwrap();
//! assert_eq!(limits.input_tokens_per_minute, Some(30_000));
//! assert_eq!(config.effective(30_000), 29_400);
//! ```

use std::time::Duration;

use ratelayer_core::error::ConfigError;
use ratelayer_core::headers::value::parse_go_duration;
use ratelayer_core::scope::Scope;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The default safety margin: 1 % of each limit is left unused.
///
/// ```
/// use ratelayer_tpm::{TpmConfig, config::DEFAULT_SAFETY_MARGIN};
/// let config = TpmConfig::new();
/// assert_eq!(config.safety_margin, DEFAULT_SAFETY_MARGIN);
/// assert_eq!(config.effective(30_000), 29_700);
/// ```
pub const DEFAULT_SAFETY_MARGIN: f64 = 0.01;

/// The default longest wait for admission: 5 minutes (five full token windows).
///
/// ```
/// use std::time::Duration;
/// use ratelayer_tpm::{TpmConfig, config::DEFAULT_MAX_WAIT};
/// assert_eq!(DEFAULT_MAX_WAIT, Duration::from_secs(300));
/// assert_eq!(TpmConfig::new().max_wait, Some(DEFAULT_MAX_WAIT));
/// ```
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);

/// The token limits of one scope, per minute. `None` leaves a dimension unlimited.
///
/// ```
/// use ratelayer_tpm::ModelLimits;
/// let l = ModelLimits::tpm(30_000);
/// assert_eq!(l.tokens_per_minute, Some(30_000));
/// assert!(!l.is_empty());
/// assert!(ModelLimits::default().is_empty());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelLimits {
    /// Tokens (input and output together) per minute.
    pub tokens_per_minute: Option<u64>,
    /// Input (prompt) tokens per minute, where limited separately (Anthropic).
    pub input_tokens_per_minute: Option<u64>,
    /// Output (completion) tokens per minute, where limited separately (Anthropic).
    pub output_tokens_per_minute: Option<u64>,
}

impl ModelLimits {
    /// A combined tokens-per-minute limit only.
    ///
    /// ```
    /// use ratelayer_tpm::ModelLimits;
    /// let l = ModelLimits::tpm(30_000);
    /// assert_eq!(l.tokens_per_minute, Some(30_000));
    /// assert_eq!((l.input_tokens_per_minute, l.output_tokens_per_minute), (None, None));
    /// ```
    pub fn tpm(limit: u64) -> Self {
        ModelLimits {
            tokens_per_minute: Some(limit),
            ..Self::default()
        }
    }

    /// Separate input and output limits (Anthropic's ITPM and OTPM).
    ///
    /// ```
    /// use ratelayer_tpm::ModelLimits;
    /// let l = ModelLimits::input_output(30_000, 8_000);
    /// assert_eq!((l.input_tokens_per_minute, l.output_tokens_per_minute), (Some(30_000), Some(8_000)));
    /// ```
    pub fn input_output(input: u64, output: u64) -> Self {
        ModelLimits {
            tokens_per_minute: None,
            input_tokens_per_minute: Some(input),
            output_tokens_per_minute: Some(output),
        }
    }

    /// Whether no dimension is limited.
    ///
    /// ```
    /// use ratelayer_tpm::ModelLimits;
    /// assert!(ModelLimits::default().is_empty());
    /// assert!(!ModelLimits::input_output(30_000, 8_000).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One configured budget: which scopes it applies to, and their limits.
///
/// `model` is an exact model name, a prefix pattern ending in `*` (`claude-sonnet-4*`), or
/// absent for every model of the provider. When several budgets match a request, the most
/// specific wins: an exact model, then the longest prefix, then the provider-wide budget;
/// a budget naming the credential beats one that does not. Each distinct scope (provider,
/// credential, model) gets its own buckets with the matched limits.
///
/// ```
/// use ratelayer_tpm::{Budget, ModelLimits};
/// let b = Budget::new("openai", ModelLimits::tpm(30_000)).model("gpt-4o");
/// assert_eq!(b.model.as_deref(), Some("gpt-4o"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// The provider's name, as in the request metadata (`openai`, `anthropic`, ...).
    pub provider: String,
    /// A credential fingerprint, to give one API key its own limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The model: exact, a `prefix*` pattern, or absent for all models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The limits.
    #[serde(flatten)]
    pub limits: ModelLimits,
}

impl Budget {
    /// A provider-wide budget.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// use ratelayer_tpm::{Budget, ModelLimits, TpmConfig};
    /// let config = TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(30_000)));
    /// let any_model = Scope::new("openai").with_model("gpt-4o-mini");
    /// assert_eq!(config.limits_for(&any_model), Some(ModelLimits::tpm(30_000)));
    /// ```
    pub fn new(provider: impl Into<String>, limits: ModelLimits) -> Self {
        Budget {
            provider: provider.into(),
            credential: None,
            model: None,
            limits,
        }
    }

    /// Narrows the budget to a model (exact, or a `prefix*` pattern).
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// use ratelayer_tpm::{Budget, ModelLimits, TpmConfig};
    /// let config = TpmConfig::new()
    ///     .budget(Budget::new("anthropic", ModelLimits::input_output(30_000, 8_000)).model("claude-sonnet-4*"));
    /// let scope = |model: &str| Scope::new("anthropic").with_model(model);
    /// assert!(config.limits_for(&scope("claude-sonnet-4-5")).is_some());
    /// assert!(config.limits_for(&scope("claude-3-5-haiku")).is_none());
    /// ```
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Narrows the budget to a credential fingerprint.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// use ratelayer_tpm::{Budget, ModelLimits, TpmConfig};
    /// let config = TpmConfig::new()
    ///     .budget(Budget::new("openai", ModelLimits::tpm(30_000)))
    ///     .budget(Budget::new("openai", ModelLimits::tpm(450_000)).credential("key-b"));
    /// let tpm = |s: Scope| config.limits_for(&s).and_then(|l| l.tokens_per_minute);
    /// assert_eq!(tpm(Scope::new("openai").with_credential("key-b")), Some(450_000));
    /// assert_eq!(tpm(Scope::new("openai").with_credential("key-a")), Some(30_000));
    /// ```
    pub fn credential(mut self, credential: impl Into<String>) -> Self {
        self.credential = Some(credential.into());
        self
    }

    /// How specifically this budget matches `scope` (higher is more specific), or `None`
    /// if it does not apply.
    fn specificity(&self, scope: &Scope) -> Option<u64> {
        if !self.provider.eq_ignore_ascii_case(scope.provider()) {
            return None;
        }
        let cred = match (&self.credential, scope.credential()) {
            (None, _) => 0,
            (Some(c), Some(s)) if c == s => 1,
            (Some(_), _) => return None,
        };
        let model = match (&self.model, scope.model()) {
            (None, _) => 0,
            (Some(p), Some(m)) => match p.strip_suffix('*') {
                Some(prefix) if m.starts_with(prefix) => 1 + prefix.len() as u64,
                Some(_) => return None,
                None if p == m => u64::from(u32::MAX),
                None => return None,
            },
            (Some(_), None) => return None,
        };
        Some(model * 2 + cred)
    }
}

/// How calibration corrects input estimates (see [`Calibration`](crate::Calibration)).
///
/// ```
/// use ratelayer_tpm::CalibrationConfig;
/// let c = CalibrationConfig::default();
/// assert_eq!((c.min_factor, c.max_factor), (0.75, 4.0));
/// assert!(c.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalibrationConfig {
    /// Whether calibration is on.
    pub enabled: bool,
    /// The lowest correction factor (default 0.75: estimates shrink at most by the third
    /// that core's default estimator over-counts English; 1.0 never shrinks them). It
    /// applies to the ASCII part of an estimate only: the dense part (text that is not
    /// ASCII, such as CJK) is never shrunk. See
    /// [`Calibration`](crate::Calibration) for why. Values down to 0.5 are accepted.
    pub min_factor: f64,
    /// The highest correction factor.
    pub max_factor: f64,
    /// How fast the factor moves down toward lower observed ratios (0 < decay ≤ 1); it
    /// moves up to a higher ratio at once.
    pub decay: f64,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        CalibrationConfig {
            enabled: true,
            min_factor: 0.75,
            max_factor: 4.0,
            decay: 0.05,
        }
    }
}

impl CalibrationConfig {
    /// Checks the bounds: `0.5 ≤ min_factor ≤ max_factor ≤ 16`, `0 < decay ≤ 1`.
    ///
    /// ```
    /// use ratelayer_tpm::CalibrationConfig;
    /// assert!(CalibrationConfig::default().validate().is_ok());
    /// let err = CalibrationConfig { decay: 0.0, ..Default::default() }.validate().unwrap_err();
    /// assert_eq!(err.setting, "tpm.calibration.decay");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let finite = self.min_factor.is_finite() && self.max_factor.is_finite();
        if !finite || self.min_factor < 0.5 || self.min_factor > self.max_factor {
            return Err(ConfigError::new(
                "tpm.calibration.min_factor",
                "must be at least 0.5 and at most max_factor (the default is 0.75; 1.0 \
                 never shrinks an estimate)",
            ));
        }
        if self.max_factor > 16.0 {
            return Err(ConfigError::new(
                "tpm.calibration.max_factor",
                "must be at most 16; an estimator that is off by more needs fixing, not \
                 calibrating",
            ));
        }
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return Err(ConfigError::new(
                "tpm.calibration.decay",
                "must be in (0, 1], such as 0.05",
            ));
        }
        Ok(())
    }
}

/// The configuration of a [`TpmLimitLayer`](crate::TpmLimitLayer). See the
/// [module docs](self) for an example and a table of model limits.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_tpm::{Budget, ModelLimits, TpmConfig};
///
/// let config = TpmConfig::new()
///     .budget(Budget::new("openai", ModelLimits::tpm(30_000)).model("gpt-4o"))
///     .safety_margin(0.01)
///     .max_wait(Some(Duration::from_secs(90)));
/// assert!(config.validate().is_ok());
/// assert!(TpmConfig::new().safety_margin(0.9).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TpmConfig {
    /// The budgets. A request matching none is sent without a token reservation (its
    /// scope is still limited by what the provider's headers taught the engine).
    pub budgets: Vec<Budget>,
    /// The fraction of every limit left unused, in `[0, 0.5)`.
    pub safety_margin: f64,
    /// The longest a request may wait for admission; `None` waits as long as needed.
    /// Serialized as a duration string (`"90s"`, `"2m"`, `"1m30s"`, `"500ms"`), a number
    /// of seconds, or `null`.
    #[serde(with = "duration_opt")]
    pub max_wait: Option<Duration>,
    /// Whether to reconcile each reservation with the provider's reported usage (JSON
    /// `usage`, the final usage of a stream) and rate-limit headers.
    pub reconcile: bool,
    /// Calibration of input estimates.
    pub calibration: CalibrationConfig,
}

impl Default for TpmConfig {
    fn default() -> Self {
        TpmConfig {
            budgets: Vec::new(),
            safety_margin: DEFAULT_SAFETY_MARGIN,
            max_wait: Some(DEFAULT_MAX_WAIT),
            reconcile: true,
            calibration: CalibrationConfig::default(),
        }
    }
}

impl TpmConfig {
    /// The defaults: no budgets, a 1 % margin, a 5-minute maximum wait, reconciliation and
    /// calibration on.
    ///
    /// ```
    /// use ratelayer_tpm::TpmConfig;
    /// let config = TpmConfig::new();
    /// assert!(config.budgets.is_empty());
    /// assert!(config.reconcile && config.calibration.enabled);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a budget.
    ///
    /// ```
    /// use ratelayer_tpm::{Budget, ModelLimits, TpmConfig};
    /// let config = TpmConfig::new()
    ///     .budget(Budget::new("openai", ModelLimits::tpm(30_000)).model("gpt-4o"))
    ///     .budget(Budget::new("groq", ModelLimits::tpm(6_000)));
    /// assert_eq!(config.budgets.len(), 2);
    /// ```
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budgets.push(budget);
        self
    }

    /// Sets the safety margin (a fraction of each limit, in `[0, 0.5)`).
    ///
    /// ```
    /// use ratelayer_tpm::TpmConfig;
    /// assert_eq!(TpmConfig::new().safety_margin(0.02).effective(30_000), 29_400);
    /// let err = TpmConfig::new().safety_margin(0.5).validate().unwrap_err();
    /// assert_eq!(err.setting, "tpm.safety_margin");
    /// ```
    pub fn safety_margin(mut self, margin: f64) -> Self {
        self.safety_margin = margin;
        self
    }

    /// Sets the longest wait (`None`: wait as long as needed).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_tpm::TpmConfig;
    /// let config = TpmConfig::new().max_wait(Some(Duration::from_secs(90)));
    /// assert_eq!(config.max_wait, Some(Duration::from_secs(90)));
    /// assert_eq!(TpmConfig::new().max_wait(None).max_wait, None);
    /// ```
    pub fn max_wait(mut self, max_wait: Option<Duration>) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Turns reconciliation with the provider's reported usage on or off.
    ///
    /// ```
    /// use ratelayer_tpm::TpmConfig;
    /// assert!(TpmConfig::new().reconcile);
    /// assert!(!TpmConfig::new().reconcile(false).reconcile);
    /// ```
    pub fn reconcile(mut self, on: bool) -> Self {
        self.reconcile = on;
        self
    }

    /// Sets the calibration.
    ///
    /// ```
    /// use ratelayer_tpm::{CalibrationConfig, TpmConfig};
    /// let config = TpmConfig::new().calibration(CalibrationConfig { min_factor: 1.0, ..Default::default() });
    /// assert_eq!(config.calibration.min_factor, 1.0);
    /// let bad = TpmConfig::new().calibration(CalibrationConfig { max_factor: 32.0, ..Default::default() });
    /// assert_eq!(bad.validate().unwrap_err().setting, "tpm.calibration.max_factor");
    /// ```
    pub fn calibration(mut self, calibration: CalibrationConfig) -> Self {
        self.calibration = calibration;
        self
    }

    /// Checks every setting; the layer calls it when it is built.
    ///
    /// ```
    /// use ratelayer_tpm::{Budget, ModelLimits, TpmConfig};
    /// let ok = TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(30_000)));
    /// assert!(ok.validate().is_ok());
    /// let empty = TpmConfig::new().budget(Budget::new("openai", ModelLimits::default()));
    /// assert_eq!(empty.validate().unwrap_err().setting, "tpm.budgets[0].tokens_per_minute");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.safety_margin.is_finite() && (0.0..0.5).contains(&self.safety_margin)) {
            return Err(ConfigError::new(
                "tpm.safety_margin",
                "must be a fraction in [0, 0.5), such as 0.02 for 2 %",
            ));
        }
        for (i, b) in self.budgets.iter().enumerate() {
            let at = |field: &str| format!("tpm.budgets[{i}].{field}");
            if b.provider.trim().is_empty() {
                return Err(ConfigError::new(at("provider"), "must name a provider"));
            }
            if b.limits.is_empty() {
                return Err(ConfigError::new(
                    at("tokens_per_minute"),
                    "set at least one of tokens_per_minute, input_tokens_per_minute, \
                     output_tokens_per_minute (or remove the budget)",
                ));
            }
            for (field, v) in [
                ("tokens_per_minute", b.limits.tokens_per_minute),
                ("input_tokens_per_minute", b.limits.input_tokens_per_minute),
                (
                    "output_tokens_per_minute",
                    b.limits.output_tokens_per_minute,
                ),
            ] {
                if let Some(v) = v
                    && (self.effective(v) == 0 || v > u64::from(u32::MAX) * 1000)
                {
                    return Err(ConfigError::new(
                        at(field),
                        format!(
                            "{v} is out of range: the limit after the safety margin must \
                             be at least 1 token"
                        ),
                    ));
                }
            }
            if let Some(m) = &b.model
                && (m.is_empty() || m[..m.len() - 1].contains('*'))
            {
                return Err(ConfigError::new(
                    at("model"),
                    "must be a model name or a prefix ending in a single '*'",
                ));
            }
            let dup = self.budgets[..i].iter().any(|o| {
                o.provider.eq_ignore_ascii_case(&b.provider)
                    && o.model == b.model
                    && o.credential == b.credential
            });
            if dup {
                return Err(ConfigError::new(
                    at("model"),
                    "another budget has the same provider, credential and model; merge them",
                ));
            }
        }
        self.calibration.validate()
    }

    /// The limits of the most specific budget matching `scope`.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// use ratelayer_tpm::{Budget, ModelLimits, TpmConfig};
    /// let config = TpmConfig::new()
    ///     .budget(Budget::new("openai", ModelLimits::tpm(30_000)))
    ///     .budget(Budget::new("openai", ModelLimits::tpm(200_000)).model("gpt-4o-mini"));
    /// let tpm = |model: &str| config.limits_for(&Scope::new("openai").with_model(model)).and_then(|l| l.tokens_per_minute);
    /// assert_eq!((tpm("gpt-4o-mini"), tpm("gpt-4o")), (Some(200_000), Some(30_000)));
    /// assert_eq!(config.limits_for(&Scope::new("anthropic")), None);
    /// ```
    pub fn limits_for(&self, scope: &Scope) -> Option<ModelLimits> {
        self.budgets
            .iter()
            .filter_map(|b| b.specificity(scope).map(|s| (s, b)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, b)| b.limits)
    }

    /// A limit after the safety margin: `floor(limit × (1 − margin))`.
    ///
    /// ```
    /// use ratelayer_tpm::TpmConfig;
    /// assert_eq!(TpmConfig::new().effective(30_000), 29_700);
    /// assert_eq!(TpmConfig::new().safety_margin(0.0).effective(30_000), 30_000);
    /// ```
    pub fn effective(&self, limit: u64) -> u64 {
        let keep = 1.0 - self.safety_margin.clamp(0.0, 1.0);
        // Exact for every limit below 2^53; the margin only ever lowers the limit.
        ((limit as f64) * keep).floor().min(limit as f64) as u64
    }
}

/// Serde for `Option<Duration>` as a Go-style duration string or a number of seconds.
mod duration_opt {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&ratelayer_core::headers::value::format_go_duration(*d)),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(f64),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        use serde::de::Error;
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Secs(s)) if (0.0..1e12).contains(&s) => Ok(Some(Duration::from_secs_f64(s))),
            Some(Raw::Secs(s)) => Err(D::Error::custom(format!(
                "max_wait: {s} is not a number of seconds between 0 and 10^12"
            ))),
            Some(Raw::Text(t)) => parse_go_duration(t.trim()).map(Some).ok_or_else(|| {
                D::Error::custom(format!(
                    "max_wait: {t:?} is not a duration such as \"90s\", \"2m\" or \"500ms\""
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_budget_wins() {
        let c = TpmConfig::new()
            .budget(Budget::new("anthropic", ModelLimits::tpm(100)))
            .budget(Budget::new("anthropic", ModelLimits::tpm(200)).model("claude-*"))
            .budget(Budget::new("anthropic", ModelLimits::tpm(300)).model("claude-sonnet-*"))
            .budget(Budget::new("anthropic", ModelLimits::tpm(400)).model("claude-sonnet-4-5"))
            .budget(
                Budget::new("anthropic", ModelLimits::tpm(500))
                    .model("claude-sonnet-4-5")
                    .credential("k1"),
            );
        c.validate().unwrap();
        let tpm = |s: Scope| c.limits_for(&s).and_then(|l| l.tokens_per_minute);
        let a = Scope::new("anthropic");
        assert_eq!(tpm(a.clone()), Some(100));
        assert_eq!(tpm(a.clone().with_model("claude-3-5-haiku")), Some(200));
        assert_eq!(tpm(a.clone().with_model("claude-sonnet-4")), Some(300));
        assert_eq!(tpm(a.clone().with_model("claude-sonnet-4-5")), Some(400));
        assert_eq!(
            tpm(a
                .clone()
                .with_credential("k1")
                .with_model("claude-sonnet-4-5")),
            Some(500)
        );
        assert_eq!(
            tpm(a.with_credential("k2").with_model("claude-sonnet-4-5")),
            Some(400)
        );
        assert_eq!(tpm(Scope::new("openai").with_model("gpt-4o")), None);
    }

    #[test]
    fn validation_names_the_setting() {
        let bad = [
            (TpmConfig::new().safety_margin(0.5), "tpm.safety_margin"),
            (
                TpmConfig::new().safety_margin(f64::NAN),
                "tpm.safety_margin",
            ),
            (
                TpmConfig::new().budget(Budget::new("openai", ModelLimits::default())),
                "tpm.budgets[0].tokens_per_minute",
            ),
            (
                TpmConfig::new().budget(Budget::new("openai", ModelLimits::tpm(0))),
                "tpm.budgets[0].tokens_per_minute",
            ),
            (
                TpmConfig::new().budget(Budget::new(" ", ModelLimits::tpm(10))),
                "tpm.budgets[0].provider",
            ),
            (
                TpmConfig::new().budget(Budget::new("x", ModelLimits::tpm(10)).model("a*b*")),
                "tpm.budgets[0].model",
            ),
            (
                TpmConfig::new()
                    .budget(Budget::new("x", ModelLimits::tpm(10)))
                    .budget(Budget::new("X", ModelLimits::tpm(20))),
                "tpm.budgets[1].model",
            ),
            (
                TpmConfig::new().calibration(CalibrationConfig {
                    min_factor: 0.1,
                    ..Default::default()
                }),
                "tpm.calibration.min_factor",
            ),
            (
                TpmConfig::new().calibration(CalibrationConfig {
                    decay: 0.0,
                    ..Default::default()
                }),
                "tpm.calibration.decay",
            ),
        ];
        for (c, setting) in bad {
            assert_eq!(c.validate().unwrap_err().setting, setting, "{c:?}");
        }
    }

    #[test]
    fn margin_floors_and_never_raises() {
        let c = TpmConfig::new();
        assert_eq!(c.effective(30_000), 29_700);
        assert_eq!(c.effective(1), 0);
        assert_eq!(TpmConfig::new().safety_margin(0.0).effective(7), 7);
        assert_eq!(c.effective(1_000_000_000_000), 990_000_000_000);
    }

    #[test]
    fn serde_round_trip_and_durations() {
        let c: TpmConfig = serde_json::from_str(r#"{"max_wait": 90}"#).unwrap();
        assert_eq!(c.max_wait, Some(Duration::from_secs(90)));
        let c: TpmConfig = serde_json::from_str(r#"{"max_wait": null}"#).unwrap();
        assert_eq!(c.max_wait, None);
        let c: TpmConfig = serde_json::from_str(r#"{"max_wait": "1m30s"}"#).unwrap();
        assert_eq!(c.max_wait, Some(Duration::from_secs(90)));
        assert!(serde_json::from_str::<TpmConfig>(r#"{"max_wait": "soon"}"#).is_err());
        assert!(serde_json::from_str::<TpmConfig>(r#"{"max_wait": -1}"#).is_err());
        assert!(serde_json::from_str::<TpmConfig>(r#"{"tpm": 5}"#).is_err());
        let c = TpmConfig::new().budget(Budget::new(
            "anthropic",
            ModelLimits::input_output(30_000, 8_000),
        ));
        let back: TpmConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(TpmConfig::default().max_wait, Some(DEFAULT_MAX_WAIT));
    }
}
