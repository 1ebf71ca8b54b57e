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
///
/// ```
/// use ratelayer::config::Config;
/// let config: Config = Config::from_toml(r#"
///     [[provider]]
///     name = "kimi"
///     preset = "moonshot"
/// "#).unwrap();
/// assert_eq!(config.providers[0].name, "kimi");
/// assert!(config.fallback.is_none());
/// assert_eq!(config.defaults.max_retries, None);
/// ```
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
///
/// ```
/// use std::time::Duration;
/// use ratelayer::config::Config;
/// let config = Config::from_toml(r#"
///     defaults = { max_wait_secs = 30, max_retries = 2 }
///     provider = [{ name = "openai", preset = "openai" }]
/// "#).unwrap();
/// assert_eq!(config.defaults.max_wait_secs, Some(30.0));
/// assert_eq!(config.max_wait(&config.providers[0]), Some(Duration::from_secs(30)));
/// ```
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
///
/// ```
/// use ratelayer::{Provider, config::Config};
/// let config = Config::from_toml(r#"
///     [[provider]]
///     name = "claude"
///     preset = "anthropic"
///     tier = "2"
/// "#).unwrap();
/// let p = &config.providers[0];
/// assert_eq!((p.preset, p.tier.as_deref()), (Provider::Anthropic, Some("2")));
/// assert_eq!(p.model(), "claude-sonnet-4-5"); // the preset's default
/// ```
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
    ///
    /// ```
    /// use ratelayer::config::Config;
    /// let config = Config::from_toml(r#"
    ///     [[provider]]
    ///     name = "kimi"
    ///     preset = "moonshot"
    ///     [[provider]]
    ///     name = "work"
    ///     preset = "openai"
    ///     api_key_env = "WORK_OPENAI_KEY"
    /// "#).unwrap();
    /// assert_eq!(config.providers[0].key_env_vars(), ["MOONSHOT_API_KEY", "KIMI_API_KEY"]);
    /// assert_eq!(config.providers[1].key_env_vars(), ["WORK_OPENAI_KEY"]);
    /// ```
    pub fn key_env_vars(&self) -> Vec<&str> {
        match &self.api_key_env {
            Some(v) => v.iter().map(String::as_str).collect(),
            None => self.preset.key_env_vars().to_vec(),
        }
    }

    /// The key from the first of [`key_env_vars`](Self::key_env_vars) that `lookup`
    /// finds (pass `|v| std::env::var(v).ok()` for the process environment).
    ///
    /// ```
    /// use ratelayer::config::Config;
    /// let config = Config::from_toml("provider = [{ name = 'kimi', preset = 'moonshot' }]").unwrap();
    /// let kimi = &config.providers[0];
    /// let env = |var: &str| (var == "KIMI_API_KEY").then(|| " sk-kimi\n".to_owned());
    /// assert_eq!(kimi.api_key(env).unwrap().expose(), "sk-kimi"); // trimmed
    /// assert_eq!(kimi.api_key(|_| Some(" ".to_owned())), None); // blank: not a key
    /// ```
    pub fn api_key(&self, lookup: impl Fn(&str) -> Option<String>) -> Option<ApiKey> {
        self.key_env_vars()
            .into_iter()
            .find_map(|v| lookup(v).filter(|k| !k.trim().is_empty()))
            .map(|k| ApiKey(k.trim().to_owned()))
    }

    /// The base URL.
    ///
    /// ```
    /// use ratelayer::config::Config;
    /// let config = Config::from_toml(r#"provider = [
    ///     { name = "a", preset = "openai" },
    ///     { name = "b", preset = "openai", base_url = "http://127.0.0.1:8080" },
    /// ]"#).unwrap();
    /// assert_eq!(config.providers[0].base_url(), "https://api.openai.com");
    /// assert_eq!(config.providers[1].base_url(), "http://127.0.0.1:8080");
    /// ```
    pub fn base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or(self.preset.default_base_url())
    }

    /// The model.
    ///
    /// ```
    /// use ratelayer::config::Config;
    /// let config = Config::from_toml(r#"provider = [
    ///     { name = "a", preset = "openai" },
    ///     { name = "b", preset = "openai", model = "gpt-4.1" },
    /// ]"#).unwrap();
    /// assert_eq!(config.providers[0].model(), "gpt-4o-mini");
    /// assert_eq!(config.providers[1].model(), "gpt-4.1");
    /// ```
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or(self.preset.default_model())
    }

    /// The limits.
    ///
    /// ```
    /// use ratelayer::{Provider, config::Config};
    /// let config = Config::from_toml(r#"provider = [
    ///     { name = "a", preset = "moonshot" },
    ///     { name = "b", preset = "moonshot", limits = { rpm = 10 } },
    /// ]"#).unwrap();
    /// assert_eq!(config.providers[0].limits(), Provider::Moonshot.example_limits());
    /// assert_eq!(config.providers[1].limits().rpm, Some(10));
    /// assert_eq!(config.providers[1].limits().max_concurrent, None); // not merged
    /// ```
    pub fn limits(&self) -> ProviderLimits {
        self.limits.unwrap_or_else(|| self.preset.example_limits())
    }
}

/// The fallback chain.
///
/// ```
/// use ratelayer::config::Config;
/// let config = Config::from_toml(r#"
///     provider = [{ name = "a", preset = "openai" }, { name = "b", preset = "anthropic" }]
///     fallback = { chain = ["b", "a"], wait_budget_secs = 15 }
/// "#).unwrap();
/// let fallback = config.fallback.as_ref().unwrap();
/// assert_eq!(fallback.chain, ["b", "a"]);
/// assert_eq!(fallback.wait_budget_secs, Some(15.0));
/// ```
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
    ///
    /// ```
    /// use ratelayer::config::ApiKey;
    /// let key = ApiKey::new(String::from("sk-secret"));
    /// assert_eq!(key, ApiKey::new("sk-secret"));
    /// assert_eq!(key.to_string(), "***");
    /// ```
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, to put in a (sensitive) header.
    ///
    /// ```
    /// use ratelayer::config::ApiKey;
    /// let key = ApiKey::new("sk-secret");
    /// assert_eq!(format!("Bearer {}", key.expose()), "Bearer sk-secret");
    /// ```
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
    /// ```
    /// use ratelayer::config::Config;
    /// let config = Config::from_toml("provider = [{ name = 'kimi', preset = 'kimi' }]").unwrap();
    /// assert_eq!(config.providers.len(), 1);
    /// let err = Config::from_toml("provider = [{ name = 'kimi', preset = 'kimi', rpm = 4 }]");
    /// assert_eq!(err.unwrap_err().setting, "toml"); // rpm belongs in `limits`
    /// ```
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
    /// ```
    /// use ratelayer::config::Config;
    /// let mut config = Config::from_toml("provider = [{ name = 'a', preset = 'openai' }]").unwrap();
    /// assert!(config.validate().is_ok());
    /// config.providers.push(config.providers[0].clone());
    /// assert_eq!(config.validate().unwrap_err().setting, "provider[1].name");
    /// ```
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
    /// ```
    /// use ratelayer::config::Config;
    /// let mut config = Config::from_toml(r#"
    ///     provider = [{ name = "a", preset = "openai" }, { name = "b", preset = "anthropic" }]
    ///     fallback = { chain = ["b", "a"] }
    /// "#).unwrap();
    /// let names: Vec<_> = config.providers_in_order().unwrap().iter().map(|p| &p.name).collect();
    /// assert_eq!(names, ["b", "a"]);
    /// config.fallback = None; // without a chain: the first provider alone
    /// assert_eq!(config.providers_in_order().unwrap().len(), 1);
    /// ```
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
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer::config::Config;
    /// let config = Config::from_toml(r#"
    ///     defaults = { max_wait_secs = 60 }
    ///     provider = [{ name = "a", preset = "openai", max_wait_secs = 2.5 }, { name = "b", preset = "openai" }]
    /// "#).unwrap();
    /// assert_eq!(config.max_wait(&config.providers[0]), Some(Duration::from_millis(2500)));
    /// assert_eq!(config.max_wait(&config.providers[1]), Some(Duration::from_secs(60)));
    /// ```
    pub fn max_wait(&self, provider: &ProviderConfig) -> Option<Duration> {
        provider
            .max_wait_secs
            .or(self.defaults.max_wait_secs)
            .map(Duration::from_secs_f64)
    }

    /// The most retries for `provider` (its own setting, else the default).
    ///
    /// ```
    /// use ratelayer::config::Config;
    /// let config = Config::from_toml(r#"
    ///     defaults = { max_retries = 3 }
    ///     provider = [{ name = "a", preset = "openai", max_retries = 0 }, { name = "b", preset = "openai" }]
    /// "#).unwrap();
    /// assert_eq!(config.max_retries(&config.providers[0]), Some(0));
    /// assert_eq!(config.max_retries(&config.providers[1]), Some(3));
    /// ```
    pub fn max_retries(&self, provider: &ProviderConfig) -> Option<u32> {
        provider.max_retries.or(self.defaults.max_retries)
    }
}

impl Config {
    /// The presets of the providers in fallback order (see
    /// [`providers_in_order`](Self::providers_in_order)), each with its key from the
    /// first of its variables that `lookup` finds (pass `|v| std::env::var(v).ok()`).
    ///
    /// ```
    /// use ratelayer::{Provider, config::Config};
    /// let config = Config::from_toml(r#"
    ///     provider = [{ name = "a", preset = "openai" }, { name = "kimi", preset = "moonshot" }]
    ///     fallback = { chain = ["kimi", "a"] }
    /// "#).unwrap();
    /// let env = |var: &str| var.ends_with("_API_KEY").then(|| "sk-test".to_owned());
    /// let presets = config.presets(env).unwrap();
    /// assert_eq!(presets[0].provider(), Provider::Moonshot);
    /// assert_eq!(config.presets(|_| None).unwrap_err().setting, "kimi.api_key_env");
    /// ```
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
    /// ```
    /// use http::{Request, Response};
    /// use ratelayer::{config::Config, core::ReplayBody};
    /// use tower::ServiceExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # // A client that answers with the URI it was sent to.
    /// # let client = tower::service_fn(|req: Request<ReplayBody>| async move {
    /// #     let uri = req.uri().to_string();
    /// #     Ok::<_, std::convert::Infallible>(Response::builder().header("x-uri", uri).body(String::new()).unwrap())
    /// # });
    /// let config = Config::from_toml(r#"provider = [
    ///     { name = "local", preset = "openai", base_url = "http://127.0.0.1:9000" },
    /// ]"#).unwrap();
    /// let chain = config.to_chain(|_| Some("sk-test".to_owned())).unwrap();
    /// let (stack, stats) = chain.build(client).unwrap();
    /// let req = Request::post("/v1/chat/completions").body(ReplayBody::from("{}")).unwrap();
    /// let resp = stack.oneshot(req).await.unwrap();
    /// assert_eq!(resp.headers()["x-uri"], "http://127.0.0.1:9000/v1/chat/completions");
    /// assert_eq!(stats.snapshot().successes, 1);
    /// # }
    /// ```
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
    fn a_tier_sharing_a_row_is_accepted_by_either_number() {
        // OpenAI's table has one row for tiers 3 and 4 ("tier-3/4"); the documented
        // `1`..`5` must all be accepted.
        for tier in ["3", "4", "tier-3", "Tier-4"] {
            let c = Config::from_toml(&format!(
                "[[provider]]\nname='openai'\npreset='openai'\nmodel='gpt-4o'\ntier='{tier}'"
            ))
            .unwrap();
            let preset = c.presets(|_| Some("sk".into())).unwrap().remove(0);
            let state = ratelayer_core::LimitState::new();
            preset
                .layer(&state)
                .unwrap_or_else(|e| panic!("tier {tier:?}: {e}"));
            let fp = ratelayer_core::meta::fingerprint(b"Bearer sk");
            let scope = ratelayer_core::Scope::new("openai")
                .with_credential(fp)
                .with_model("gpt-4o");
            assert_eq!(&*state.tier(&scope).unwrap().name, "tier-3/4", "{tier}");
        }
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
