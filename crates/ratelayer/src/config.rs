//! A TOML configuration describing providers, their credentials (by environment variable
//! name, never the key itself), tiers, limits and the fallback chain.
//!
//! ```
//! use ratelayer::config::Config;
//!
//! let config = Config::from_toml(r#"
//!     [defaults]
//!     max_wait_secs = 60
//!
//!     [[provider]]
//!     name = "openai"
//!     preset = "openai"
//!     model = "gpt-4o-mini"
//!     tier = "1"
//!     limits = { rpm = 500, tpm = 200000, max_concurrent = 16 }
//!
//!     [[provider]]
//!     name = "kimi"
//!     preset = "moonshot"
//!     api_key_env = ["MOONSHOT_API_KEY", "KIMI_API_KEY"]
//!     limits = { rpm = 4, max_concurrent = 1 }
//!
//!     [fallback]
//!     chain = ["openai", "kimi"]
//!     wait_budget_secs = 30
//! "#).unwrap();
//! assert_eq!(config.providers.len(), 2);
//! assert_eq!(config.providers[1].key_env_vars(), vec!["MOONSHOT_API_KEY", "KIMI_API_KEY"]);
//! assert_eq!(config.providers_in_order().unwrap()[1].name, "kimi");
//!
//! // The same stacks as the presets: keys are looked up by variable name.
//! let env = |name: &str| (name == "KIMI_API_KEY" || name == "OPENAI_API_KEY").then(|| "sk-test".to_owned());
//! let presets = config.presets(env).unwrap();
//! assert_eq!(presets.len(), 2);
//! let chain = config.to_chain(env).unwrap();
//! # let _ = chain;
//! ```

use std::fmt;
use std::time::Duration;

use ratelayer_core::ConfigError;
use serde::{Deserialize, Deserializer};

use crate::limits::ProviderLimits;
use crate::preset::Preset;
use crate::provider::Provider;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Settings every provider inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// The providers, as `[[provider]]` tables.
    #[serde(rename = "provider", default)]
    pub providers: Vec<ProviderConfig>,
    /// The fallback chain; without it, the first provider alone.
    pub fallback: Option<FallbackConfig>,
}

/// Settings every provider inherits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The longest a request may wait for token budget before failing (and falling
    /// back), in seconds.
    pub max_wait_secs: Option<f64>,
    /// The most retries of one request on one provider.
    pub max_retries: Option<u32>,
}

/// One provider: a preset, where to reach it, how to authenticate, its limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The name used in the chain, in scopes and logs.
    pub name: String,
    /// The provider family (`openai`, `anthropic`, `azure-openai`, `moonshot`).
    #[serde(deserialize_with = "de_provider")]
    pub preset: Provider,
    /// The base URL; the preset's default when unset.
    pub base_url: Option<String>,
    /// The environment variable(s) holding the key, tried in order; the preset's when
    /// unset.
    #[serde(default, deserialize_with = "de_one_or_many")]
    pub api_key_env: Option<Vec<String>>,
    /// The model; the preset's default when unset.
    pub model: Option<String>,
    /// The account's tier if known (`free`, `1`..`5`); detected from headers otherwise.
    pub tier: Option<String>,
    /// The model's context window in tokens (for fallback on context overflow).
    pub context_window: Option<u64>,
    /// The limits; the preset's documented examples when unset.
    pub limits: Option<ProviderLimits>,
    /// Overrides [`Defaults::max_wait_secs`].
    pub max_wait_secs: Option<f64>,
    /// Overrides [`Defaults::max_retries`].
    pub max_retries: Option<u32>,
}

impl ProviderConfig {
    /// The environment variables tried for the key.
    pub fn key_env_vars(&self) -> Vec<&str> {
        match &self.api_key_env {
            Some(v) => v.iter().map(String::as_str).collect(),
            None => self.preset.key_env_vars().to_vec(),
        }
    }

    /// The key from the first of [`key_env_vars`](Self::key_env_vars) that `lookup`
    /// finds (pass `|v| std::env::var(v).ok()` for the process environment).
    pub fn api_key(&self, lookup: impl Fn(&str) -> Option<String>) -> Option<ApiKey> {
        self.key_env_vars()
            .into_iter()
            .find_map(|v| lookup(v).filter(|k| !k.trim().is_empty()))
            .map(|k| ApiKey(k.trim().to_owned()))
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or(self.preset.default_base_url())
    }

    /// The model.
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or(self.preset.default_model())
    }

    /// The limits.
    pub fn limits(&self) -> ProviderLimits {
        self.limits.unwrap_or_else(|| self.preset.example_limits())
    }
}

/// The fallback chain.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Provider names, most preferred first.
    pub chain: Vec<String>,
    /// How long a request may wait on a provider before going to the next, in seconds.
    pub wait_budget_secs: Option<f64>,
}

/// An API key. Its `Debug` and `Display` never show it.
///
/// ```
/// use ratelayer::config::ApiKey;
/// let k = ApiKey::new("sk-secret");
/// assert_eq!(format!("{k:?} {k}"), "ApiKey(***) ***");
/// assert_eq!(k.expose(), "sk-secret");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, to put in a (sensitive) header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Config {
    /// Parses and validates a TOML document.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting at fault (TOML syntax errors name `toml`).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::new("toml", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks names, limits, waits and the chain.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.providers.is_empty() {
            return Err(ConfigError::new(
                "provider",
                "no provider configured: add at least one [[provider]] table",
            ));
        }
        secs("defaults.max_wait_secs", self.defaults.max_wait_secs)?;
        for (i, p) in self.providers.iter().enumerate() {
            if p.name.trim().is_empty() {
                return Err(ConfigError::new(format!("provider[{i}].name"), "is empty"));
            }
            if self.providers[..i].iter().any(|q| q.name == p.name) {
                return Err(ConfigError::new(
                    format!("provider[{i}].name"),
                    format!("{:?} is used twice: names must be unique", p.name),
                ));
            }
            p.limits().validate(&p.name)?;
            secs(&format!("{}.max_wait_secs", p.name), p.max_wait_secs)?;
            if let Some(url) = &p.base_url {
                url.parse::<http::Uri>().map_err(|e| {
                    ConfigError::new(format!("{}.base_url", p.name), format!("{url:?}: {e}"))
                })?;
            }
        }
        if let Some(f) = &self.fallback {
            secs("fallback.wait_budget_secs", f.wait_budget_secs)?;
            self.providers_in_order()?;
        }
        Ok(())
    }

    /// The providers in fallback order: the chain if configured, else the first
    /// provider alone.
    ///
    /// # Errors
    /// A [`ConfigError`] when the chain names an unknown provider or is empty.
    pub fn providers_in_order(&self) -> Result<Vec<&ProviderConfig>, ConfigError> {
        let Some(f) = &self.fallback else {
            return Ok(self.providers.iter().take(1).collect());
        };
        if f.chain.is_empty() {
            return Err(ConfigError::new(
                "fallback.chain",
                "is empty: list provider names, most preferred first",
            ));
        }
        f.chain
            .iter()
            .map(|n| {
                self.providers.iter().find(|p| &p.name == n).ok_or_else(|| {
                    ConfigError::new(
                        "fallback.chain",
                        format!("{n:?} is not a configured provider name"),
                    )
                })
            })
            .collect()
    }

    /// The longest wait for `provider` (its own setting, else the default).
    pub fn max_wait(&self, provider: &ProviderConfig) -> Option<Duration> {
        provider
            .max_wait_secs
            .or(self.defaults.max_wait_secs)
            .map(Duration::from_secs_f64)
    }

    /// The most retries for `provider` (its own setting, else the default).
    pub fn max_retries(&self, provider: &ProviderConfig) -> Option<u32> {
        provider.max_retries.or(self.defaults.max_retries)
    }
}

impl Config {
    /// The presets of the providers in fallback order (see
    /// [`providers_in_order`](Self::providers_in_order)), each with its key from the
    /// first of its variables that `lookup` finds (pass `|v| std::env::var(v).ok()`).
    ///
    /// # Errors
    /// A [`ConfigError`] when a provider's key variable is not set, or the chain is
    /// invalid.
    pub fn presets(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<Preset>, ConfigError> {
        self.providers_in_order()?
            .into_iter()
            .map(|p| {
                let key = p.api_key(&lookup).ok_or_else(|| {
                    ConfigError::new(
                        format!("{}.api_key_env", p.name),
                        format!(
                            "none of {:?} is set: export the key, or change api_key_env",
                            p.key_env_vars()
                        ),
                    )
                })?;
                let mut preset = Preset::new(p.preset)
                    .name(p.name.clone())
                    .base_url(p.base_url())
                    .api_key(key.expose())
                    .limits(p.limits());
                if let Some(m) = &p.model {
                    preset = preset.model(m.clone());
                }
                if let Some(t) = &p.tier {
                    preset = preset.tier(t.clone());
                }
                if let Some(c) = p.context_window {
                    preset = preset.context_window(c);
                }
                if let Some(w) = self.max_wait(p) {
                    preset = preset.max_wait(w);
                }
                if let Some(n) = self.max_retries(p) {
                    preset = preset.max_retries(n);
                }
                Ok(preset)
            })
            .collect()
    }

    /// The fallback [`Chain`](crate::Chain) of the configured providers (build it around your client
    /// with [`Chain::build`](crate::Chain::build)).
    ///
    /// # Errors
    /// As [`presets`](Self::presets).
    #[cfg(feature = "fallback")]
    pub fn to_chain(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<crate::Chain, ConfigError> {
        let mut chain = crate::Chain::new();
        for preset in self.presets(lookup)? {
            chain = chain.provider(preset);
        }
        if let Some(b) = self.fallback.as_ref().and_then(|f| f.wait_budget_secs) {
            chain = chain.wait_budget(Duration::from_secs_f64(b));
        }
        Ok(chain)
    }
}

fn secs(setting: &str, value: Option<f64>) -> Result<(), ConfigError> {
    match value {
        Some(v) if !(0.0..1e9).contains(&v) => Err(ConfigError::new(
            setting,
            format!("{v} is not a number of seconds between 0 and 1e9"),
        )),
        _ => Ok(()),
    }
}

fn de_provider<'de, D: Deserializer<'de>>(d: D) -> Result<Provider, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn de_one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_setting() {
        let err = |t: &str| Config::from_toml(t).unwrap_err().setting;
        assert_eq!(err(""), "provider");
        assert_eq!(
            err("[[provider]]\nname='a'\npreset='nope'"),
            "toml",
            "unknown preset"
        );
        assert_eq!(
            err("[[provider]]\nname='a'\npreset='openai'\nlimits={tpm=0}"),
            "a.limits.tpm"
        );
        assert_eq!(
            err(
                "[[provider]]\nname='a'\npreset='openai'\n[[provider]]\nname='a'\npreset='anthropic'"
            ),
            "provider[1].name"
        );
        assert_eq!(
            err("[[provider]]\nname='a'\npreset='openai'\n[fallback]\nchain=['a','b']"),
            "fallback.chain"
        );
        assert_eq!(
            err("[defaults]\nmax_wait_secs=-1\n[[provider]]\nname='a'\npreset='openai'"),
            "defaults.max_wait_secs"
        );
        assert_eq!(
            err("[[provider]]\nname='a'\npreset='openai'\nmodle='x'"),
            "toml"
        );
    }

    #[test]
    fn keys_come_from_the_first_set_variable_and_never_print() {
        let c = Config::from_toml("[[provider]]\nname='k'\npreset='kimi'").unwrap();
        let p = &c.providers[0];
        let env = |v: &str| (v == "KIMI_API_KEY").then(|| "sk-kimi ".to_owned());
        let key = p.api_key(env).unwrap();
        assert_eq!(key.expose(), "sk-kimi");
        assert!(!format!("{c:?}{key:?}").contains("sk-kimi"));
        assert_eq!(p.api_key(|_| None), None);
        assert_eq!(p.limits(), Provider::Moonshot.example_limits());
        assert_eq!(p.base_url(), "https://api.moonshot.ai");
        let err = c.presets(|_| None).unwrap_err();
        assert_eq!(err.setting, "k.api_key_env");
        assert!(err.problem.contains("MOONSHOT_API_KEY"), "{err}");
    }

    #[test]
    fn an_unknown_tier_is_refused_when_the_stack_is_built() {
        let c = Config::from_toml("[[provider]]\nname='o'\npreset='openai'\ntier='gold'").unwrap();
        let preset = c.presets(|_| Some("sk".into())).unwrap().remove(0);
        let err = preset
            .layer(&ratelayer_core::LimitState::new())
            .unwrap_err();
        assert_eq!(err.setting, "o.tier");
    }
}
