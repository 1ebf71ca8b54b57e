//! The limits of one provider account, as the presets and the configuration file state
//! them.

use std::time::Duration;

use ratelayer_core::ConfigError;
use serde::Deserialize;

/// A provider account's limits. Every field is optional: what is not set is not limited
/// by configuration (the tier layer still learns limits from the provider's headers).
///
/// ```
/// use ratelayer::ProviderLimits;
/// let l = ProviderLimits::default().rpm(500).tpm(200_000).max_concurrent(8);
/// assert_eq!(l.tpm, Some(200_000));
/// assert!(l.validate("openai").is_ok());
/// assert!(ProviderLimits::default().tpm(0).validate("openai").is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderLimits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (input + output) per minute.
    pub tpm: Option<u64>,
    /// Input tokens per minute (Anthropic).
    pub input_tpm: Option<u64>,
    /// Output tokens per minute (Anthropic).
    pub output_tpm: Option<u64>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u32>,
    /// Minimum time between request starts, in milliseconds.
    pub min_spacing_ms: Option<u64>,
}

impl ProviderLimits {
    /// Sets requests per minute.
    ///
    /// ```
    /// use ratelayer::ProviderLimits;
    /// let l = ProviderLimits::default().rpm(60);
    /// assert_eq!(l.rpm, Some(60));
    /// assert!(l.validate("openai").is_ok());
    /// ```
    pub fn rpm(mut self, n: u64) -> Self {
        self.rpm = Some(n);
        self
    }

    /// Sets tokens per minute.
    ///
    /// ```
    /// use ratelayer::ProviderLimits;
    /// let l = ProviderLimits::default().tpm(30_000);
    /// assert_eq!(l.tpm, Some(30_000));
    /// assert_eq!(l.rpm, None); // unset: not limited by configuration
    /// ```
    pub fn tpm(mut self, n: u64) -> Self {
        self.tpm = Some(n);
        self
    }

    /// Sets input tokens per minute.
    ///
    /// ```
    /// use ratelayer::ProviderLimits;
    /// let l = ProviderLimits::default().input_tpm(30_000).output_tpm(8_000);
    /// assert_eq!((l.input_tpm, l.tpm), (Some(30_000), None));
    /// ```
    pub fn input_tpm(mut self, n: u64) -> Self {
        self.input_tpm = Some(n);
        self
    }

    /// Sets output tokens per minute.
    ///
    /// ```
    /// use ratelayer::ProviderLimits;
    /// let l = ProviderLimits::default().output_tpm(8_000);
    /// assert_eq!(l.output_tpm, Some(8_000));
    /// let err = ProviderLimits::default().output_tpm(0).validate("anthropic").unwrap_err();
    /// assert_eq!(err.setting, "anthropic.limits.output_tpm");
    /// ```
    pub fn output_tpm(mut self, n: u64) -> Self {
        self.output_tpm = Some(n);
        self
    }

    /// Sets the number of requests in flight at once.
    ///
    /// ```
    /// use ratelayer::ProviderLimits;
    /// let l = ProviderLimits::default().max_concurrent(1);
    /// assert_eq!(l.max_concurrent, Some(1));
    /// assert!(ProviderLimits::default().max_concurrent(0).validate("kimi").is_err());
    /// ```
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// Sets the minimum time between request starts.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer::ProviderLimits;
    /// let l = ProviderLimits::default().min_spacing(Duration::from_millis(250));
    /// assert_eq!(l.min_spacing_ms, Some(250));
    /// ```
    pub fn min_spacing(mut self, spacing: Duration) -> Self {
        self.min_spacing_ms = Some(u64::try_from(spacing.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Checks that no limit is zero (a zero limit would admit nothing: leave it unset
    /// instead). `at` names the provider in the error.
    ///
    /// ```
    /// use ratelayer::ProviderLimits;
    /// assert!(ProviderLimits::default().rpm(4).validate("kimi").is_ok());
    /// let err = ProviderLimits::default().rpm(0).validate("kimi").unwrap_err();
    /// assert_eq!(err.setting, "kimi.limits.rpm");
    /// assert!(err.to_string().contains("remove the setting"));
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let fields = [
            ("rpm", self.rpm),
            ("tpm", self.tpm),
            ("input_tpm", self.input_tpm),
            ("output_tpm", self.output_tpm),
            ("max_concurrent", self.max_concurrent.map(u64::from)),
        ];
        for (name, value) in fields {
            if value == Some(0) {
                return Err(ConfigError::new(
                    format!("{at}.limits.{name}"),
                    "a limit of 0 admits nothing; remove the setting to leave it unlimited",
                ));
            }
        }
        Ok(())
    }
}
