//! The providers the presets know: their dialect, endpoint, credential header and
//! environment variables, and documented example limits.

use std::fmt;
use std::str::FromStr;

use http::HeaderName;
use ratelayer_core::{ConfigError, Dialect};

/// A provider family with a preset.
///
/// ```
/// use ratelayer::Provider;
/// let p: Provider = "kimi".parse().unwrap();
/// assert_eq!(p, Provider::Moonshot);
/// assert_eq!(p.key_env_vars(), &["MOONSHOT_API_KEY", "KIMI_API_KEY"]);
/// assert_eq!(Provider::Anthropic.credential_header(), "x-api-key");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI (`Authorization: Bearer`).
    OpenAi,
    /// Anthropic (`x-api-key`).
    Anthropic,
    /// Azure OpenAI (`api-key`).
    AzureOpenAi,
    /// Moonshot AI / Kimi, OpenAI-compatible (`Authorization: Bearer`).
    Moonshot,
}

impl Provider {
    /// Every provider with a preset.
    ///
    /// ```
    /// use ratelayer::Provider;
    /// assert_eq!(Provider::ALL.len(), 4);
    /// assert!(Provider::ALL.iter().all(|p| p.name().parse::<Provider>().unwrap() == *p));
    /// ```
    pub const ALL: [Provider; 4] = [
        Provider::OpenAi,
        Provider::Anthropic,
        Provider::AzureOpenAi,
        Provider::Moonshot,
    ];

    /// The name used for scopes and in logs: `openai`, `anthropic`, `azure`,
    /// `moonshot`.
    ///
    /// ```
    /// use ratelayer::Provider;
    /// assert_eq!(Provider::AzureOpenAi.name(), "azure");
    /// assert_eq!(Provider::Moonshot.to_string(), "moonshot");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::AzureOpenAi => "azure",
            Provider::Moonshot => "moonshot",
        }
    }

    /// The rate-limit header dialect the provider answers in.
    ///
    /// ```
    /// use ratelayer::{Provider, core::Dialect};
    /// assert_eq!(Provider::Moonshot.dialect(), Dialect::OpenAi);
    /// assert_eq!(Provider::Anthropic.dialect(), Dialect::Anthropic);
    /// ```
    pub fn dialect(self) -> Dialect {
        match self {
            Provider::OpenAi | Provider::Moonshot => Dialect::OpenAi,
            Provider::Anthropic => Dialect::Anthropic,
            Provider::AzureOpenAi => Dialect::Azure,
        }
    }

    /// The default base URL (Azure's is per resource: configure it).
    ///
    /// ```
    /// use ratelayer::Provider;
    /// assert_eq!(Provider::OpenAi.default_base_url(), "https://api.openai.com");
    /// assert!(Provider::AzureOpenAi.default_base_url().contains("YOUR-RESOURCE")); // configure it
    /// ```
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com",
            Provider::Anthropic => "https://api.anthropic.com",
            Provider::AzureOpenAi => "https://YOUR-RESOURCE.openai.azure.com",
            Provider::Moonshot => "https://api.moonshot.ai",
        }
    }

    /// The header that carries the credential.
    ///
    /// ```
    /// use ratelayer::Provider;
    /// assert_eq!(Provider::OpenAi.credential_header(), http::header::AUTHORIZATION);
    /// assert_eq!(Provider::AzureOpenAi.credential_header(), "api-key");
    /// ```
    pub fn credential_header(self) -> HeaderName {
        match self {
            Provider::OpenAi | Provider::Moonshot => http::header::AUTHORIZATION,
            Provider::Anthropic => HeaderName::from_static("x-api-key"),
            Provider::AzureOpenAi => HeaderName::from_static("api-key"),
        }
    }

    /// The credential header's value for `key` (`Bearer {key}` where the provider uses
    /// the `Authorization` header).
    ///
    /// ```
    /// use ratelayer::Provider;
    /// assert_eq!(Provider::Moonshot.credential_value("sk-1"), "Bearer sk-1");
    /// assert_eq!(Provider::Anthropic.credential_value("sk-ant-1"), "sk-ant-1");
    /// ```
    pub fn credential_value(self, key: &str) -> String {
        match self {
            Provider::OpenAi | Provider::Moonshot => format!("Bearer {key}"),
            Provider::Anthropic | Provider::AzureOpenAi => key.to_owned(),
        }
    }

    /// The environment variables that hold the key, in the order they are tried.
    ///
    /// ```
    /// use ratelayer::Provider;
    /// assert_eq!(Provider::OpenAi.key_env_vars(), &["OPENAI_API_KEY"]);
    /// assert_eq!(Provider::Moonshot.key_env_vars()[1], "KIMI_API_KEY");
    /// ```
    pub fn key_env_vars(self) -> &'static [&'static str] {
        match self {
            Provider::OpenAi => &["OPENAI_API_KEY"],
            Provider::Anthropic => &["ANTHROPIC_API_KEY"],
            Provider::AzureOpenAi => &["AZURE_OPENAI_API_KEY"],
            Provider::Moonshot => &["MOONSHOT_API_KEY", "KIMI_API_KEY"],
        }
    }

    /// A default model.
    ///
    /// ```
    /// use ratelayer::Provider;
    /// assert_eq!(Provider::OpenAi.default_model(), "gpt-4o-mini");
    /// assert!(Provider::Anthropic.default_model().starts_with("claude"));
    /// ```
    pub fn default_model(self) -> &'static str {
        match self {
            Provider::OpenAi | Provider::AzureOpenAi => "gpt-4o-mini",
            Provider::Anthropic => "claude-sonnet-4-5",
            Provider::Moonshot => "kimi-k2-0905-preview",
        }
    }

    /// Documented example limits (a new account's first paid tier; yours are in your
    /// provider's console, and the tier layer learns them from the headers anyway).
    ///
    /// ```
    /// use ratelayer::Provider;
    /// let kimi = Provider::Moonshot.example_limits();
    /// assert_eq!((kimi.rpm, kimi.max_concurrent), (Some(4), Some(1)));
    /// assert_eq!(Provider::Anthropic.example_limits().input_tpm, Some(30_000));
    /// assert!(Provider::ALL.iter().all(|p| p.example_limits().validate(p.name()).is_ok()));
    /// ```
    pub fn example_limits(self) -> crate::ProviderLimits {
        let l = crate::ProviderLimits::default();
        match self {
            // OpenAI tier 1, gpt-4o-mini.
            Provider::OpenAi => l.rpm(500).tpm(200_000).max_concurrent(50),
            // Anthropic tier 1: 50 RPM, 30k input and 8k output tokens per minute.
            Provider::Anthropic => l
                .rpm(50)
                .input_tpm(30_000)
                .output_tpm(8_000)
                .max_concurrent(10),
            // Azure OpenAI: a 30k TPM deployment (6 RPM per 1k TPM).
            Provider::AzureOpenAi => l.rpm(180).tpm(30_000).max_concurrent(20),
            // Kimi K2 on the original system's account: 1 concurrent, 4 per minute.
            Provider::Moonshot => l.rpm(4).tpm(32_000).max_concurrent(1),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Provider {
    type Err = ConfigError;

    /// `openai`, `anthropic`, `azure`/`azure-openai`, `moonshot`/`kimi` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            "azure" | "azure-openai" | "azureopenai" => Provider::AzureOpenAi,
            "moonshot" | "kimi" => Provider::Moonshot,
            _ => {
                return Err(ConfigError::new(
                    "preset",
                    format!(
                        "unknown provider preset {s:?}: use openai, anthropic, azure-openai or moonshot"
                    ),
                ));
            }
        })
    }
}
