//! Tier tables: which tier a requests-per-minute limit means, per provider.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ratelayer_core::ConfigError;
use ratelayer_core::state::TierInfo;
use serde::{Deserialize, Serialize};

/// One tier of a provider: its name, the smallest requests-per-minute limit that means
/// it, its base backoff delay and its recommended pacing interval.
///
/// ```
/// use ratelayer_tier::TierSpec;
/// let t = TierSpec::new("tier-1", 200, 300, 300);
/// assert_eq!(t.base_delay().as_millis(), 300);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierSpec {
    /// The tier's name, such as `free` or `tier-1`.
    pub name: String,
    /// The smallest requests-per-minute limit of this tier (inclusive).
    pub min_rpm: u64,
    /// The base delay of backoff after a rate-limited response, in milliseconds.
    pub base_delay_ms: u64,
    /// The recommended minimum interval between request starts, in milliseconds, used
    /// when the provider's exact limit is unknown.
    pub pacing_ms: u64,
}

impl TierSpec {
    /// A tier: name, smallest RPM limit, base delay and pacing (milliseconds).
    ///
    /// ```
    /// use ratelayer_tier::TierSpec;
    /// let free = TierSpec::new("free", 0, 20_000, 20_000);
    /// assert_eq!(free.min_rpm, 0);
    /// ```
    pub fn new(name: impl Into<String>, min_rpm: u64, base_delay_ms: u64, pacing_ms: u64) -> Self {
        TierSpec {
            name: name.into(),
            min_rpm,
            base_delay_ms,
            pacing_ms,
        }
    }

    /// The base delay.
    ///
    /// ```
    /// use ratelayer_tier::TierTable;
    /// assert_eq!(TierTable::openai().lowest().base_delay().as_secs(), 20);
    /// ```
    pub fn base_delay(&self) -> Duration {
        Duration::from_millis(self.base_delay_ms)
    }

    /// The recommended pacing interval when the exact limit is unknown.
    ///
    /// ```
    /// use ratelayer_tier::TierTable;
    /// assert_eq!(TierTable::openai().lowest().pacing().as_secs(), 20);
    /// ```
    pub fn pacing(&self) -> Duration {
        Duration::from_millis(self.pacing_ms)
    }

    /// The [`TierInfo`] to publish for this tier. With a known requests limit over a
    /// window, the pacing is `window / limit`; otherwise this tier's own pacing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_tier::TierTable;
    /// let info = TierTable::openai().lowest().info(Some((3, Duration::from_secs(60))));
    /// assert_eq!(info.pacing, Duration::from_secs(20));
    /// assert_eq!(info.rpm, Some(3));
    /// ```
    pub fn info(&self, limit: Option<(u64, Duration)>) -> TierInfo {
        let mut info = TierInfo::new(Arc::<str>::from(self.name.as_str()), self.base_delay());
        info.pacing = match limit {
            Some((n, window)) if n > 0 => window / u32::try_from(n).unwrap_or(u32::MAX),
            _ => self.pacing(),
        };
        info.rpm = limit.map(|(n, window)| rpm_of(n, window));
        info
    }
}

/// Requests per minute of `limit` requests per `window`.
fn rpm_of(limit: u64, window: Duration) -> u64 {
    let ms = window.as_millis().max(1);
    u64::try_from(u128::from(limit) * 60_000 / ms).unwrap_or(u64::MAX)
}

/// The tiers of one provider, ordered by their smallest RPM limit.
///
/// Defaults ([`TierTable::openai`], used for every provider unless configured):
///
/// | Tier | RPM limit | Base delay | Pacing |
/// |---|---|---|---|
/// | `free` | under 200 | 20 s | 20 s |
/// | `tier-1` | 200 | 0.3 s | 0.3 s |
/// | `tier-2` | 500 | 0.12 s | 0.12 s |
/// | `tier-3/4` | 5,000 | 0.012 s | 0.012 s |
/// | `tier-5` | 10,000 | 0.006 s | 0.006 s |
///
/// Tiers 3 and 4 share a 5,000 RPM limit and cannot be told apart from headers, so they
/// are one row. A table loads from JSON (or any serde format):
///
/// ```
/// use ratelayer_tier::TierTable;
/// let t: TierTable = serde_json::from_str(r#"{"tiers": [
///     {"name": "trial", "min_rpm": 0, "base_delay_ms": 12000, "pacing_ms": 12000},
///     {"name": "paid", "min_rpm": 50, "base_delay_ms": 1200, "pacing_ms": 1200}
/// ]}"#).unwrap();
/// t.validate().unwrap();
/// assert_eq!(t.classify(60).name, "paid");
/// assert_eq!(t.classify(5).name, "trial");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierTable {
    /// The tiers, lowest first.
    pub tiers: Vec<TierSpec>,
}

impl Default for TierTable {
    fn default() -> Self {
        TierTable::openai()
    }
}

impl TierTable {
    /// The OpenAI-style table (see the [type docs](TierTable)).
    ///
    /// ```
    /// use ratelayer_tier::TierTable;
    /// let t = TierTable::openai();
    /// assert_eq!(t.classify(3).name, "free");
    /// assert_eq!(t.classify(200).name, "tier-1");
    /// assert_eq!(t.classify(10_000).name, "tier-5");
    /// ```
    pub fn openai() -> Self {
        TierTable {
            tiers: vec![
                TierSpec::new("free", 0, 20_000, 20_000),
                TierSpec::new("tier-1", 200, 300, 300),
                TierSpec::new("tier-2", 500, 120, 120),
                TierSpec::new("tier-3/4", 5_000, 12, 12),
                TierSpec::new("tier-5", 10_000, 6, 6),
            ],
        }
    }

    /// Checks the table: at least one tier, the first from 0 RPM, strictly ascending
    /// limits, non-empty names.
    ///
    /// ```
    /// use ratelayer_tier::{TierSpec, TierTable};
    /// let bad = TierTable { tiers: vec![TierSpec::new("a", 10, 1, 1)] };
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |p: String| Err(ConfigError::new("tier.table", p));
        let Some(first) = self.tiers.first() else {
            return err("a tier table needs at least one tier".into());
        };
        if first.min_rpm != 0 {
            return err(format!(
                "the lowest tier `{}` must start at min_rpm 0 (it is the conservative tier \
                 assumed before detection)",
                first.name
            ));
        }
        for t in &self.tiers {
            if t.name.is_empty() {
                return err("every tier needs a name".into());
            }
        }
        for w in self.tiers.windows(2) {
            if w[1].min_rpm <= w[0].min_rpm {
                return err(format!(
                    "tiers must be in strictly ascending min_rpm order: `{}` ({}) follows `{}` ({})",
                    w[1].name, w[1].min_rpm, w[0].name, w[0].min_rpm
                ));
            }
        }
        Ok(())
    }

    /// The most conservative tier: the one assumed before anything is detected.
    ///
    /// ```
    /// use ratelayer_tier::TierTable;
    /// assert_eq!(TierTable::openai().lowest().name, "free");
    /// ```
    pub fn lowest(&self) -> &TierSpec {
        static FALLBACK: std::sync::OnceLock<TierSpec> = std::sync::OnceLock::new();
        self.tiers
            .first()
            .unwrap_or_else(|| FALLBACK.get_or_init(|| TierTable::openai().tiers[0].clone()))
    }

    /// The tier of an account with this requests-per-minute limit: the highest tier whose
    /// `min_rpm` is at most `rpm`.
    ///
    /// ```
    /// use ratelayer_tier::TierTable;
    /// assert_eq!(TierTable::openai().classify(199).name, "free");
    /// assert_eq!(TierTable::openai().classify(4_999).name, "tier-2");
    /// assert_eq!(TierTable::openai().classify(5_000).name, "tier-3/4");
    /// ```
    pub fn classify(&self, rpm: u64) -> &TierSpec {
        self.tiers
            .iter()
            .rev()
            .find(|t| t.min_rpm <= rpm)
            .unwrap_or_else(|| self.lowest())
    }
}

/// Tier tables for every provider: a default table and per-provider overrides (keyed by
/// the provider name of the request's [`Scope`](ratelayer_core::Scope), lower case).
///
/// ```
/// use ratelayer_tier::{TierTable, TierTables};
/// let tables: TierTables = serde_json::from_str(r#"{
///   "providers": {"acme": {"tiers": [
///     {"name": "basic", "min_rpm": 0, "base_delay_ms": 6000, "pacing_ms": 6000}]}}
/// }"#).unwrap();
/// tables.validate().unwrap();
/// assert_eq!(tables.for_provider("acme").lowest().name, "basic");
/// assert_eq!(tables.for_provider("openai").lowest().name, "free");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierTables {
    /// The table of providers without their own.
    #[serde(default)]
    pub default: TierTable,
    /// Per-provider tables.
    #[serde(default)]
    pub providers: BTreeMap<String, TierTable>,
}

impl TierTables {
    /// The default tables: the OpenAI-style table for every provider.
    ///
    /// ```
    /// use ratelayer_tier::TierTables;
    /// assert!(TierTables::new().providers.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// These tables with `table` for `provider`.
    ///
    /// ```
    /// use ratelayer_tier::{TierSpec, TierTable, TierTables};
    /// let t = TierTables::new().with_provider("Kimi", TierTable { tiers: vec![TierSpec::new("free", 0, 20_000, 20_000)] });
    /// assert!(t.providers.contains_key("kimi"));
    /// ```
    pub fn with_provider(mut self, provider: &str, table: TierTable) -> Self {
        self.providers.insert(provider.to_ascii_lowercase(), table);
        self
    }

    /// The table for `provider`.
    ///
    /// ```
    /// use ratelayer_tier::TierTables;
    /// assert_eq!(TierTables::new().for_provider("groq").lowest().name, "free");
    /// ```
    pub fn for_provider(&self, provider: &str) -> &TierTable {
        self.providers
            .get(provider)
            .or_else(|| self.providers.get(&provider.to_ascii_lowercase()))
            .unwrap_or(&self.default)
    }

    /// Checks every table (see [`TierTable::validate`]).
    ///
    /// ```
    /// use ratelayer_tier::TierTables;
    /// assert!(TierTables::new().validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.default.validate()?;
        for (name, t) in &self.providers {
            t.validate().map_err(|e| {
                ConfigError::new(format!("tier.providers.{name}"), e.problem.clone())
            })?;
        }
        Ok(())
    }
}

/// Formats a duration as seconds without trailing zeros: `20s`, `0.3s`, `0.012s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_matches_the_documented_thresholds() {
        let t = TierTable::openai();
        t.validate().unwrap();
        let cases = [
            (0, "free", 20_000),
            (3, "free", 20_000),
            (199, "free", 20_000),
            (200, "tier-1", 300),
            (499, "tier-1", 300),
            (500, "tier-2", 120),
            (5_000, "tier-3/4", 12),
            (9_999, "tier-3/4", 12),
            (10_000, "tier-5", 6),
            (u64::MAX, "tier-5", 6),
        ];
        for (rpm, name, base) in cases {
            let s = t.classify(rpm);
            assert_eq!(
                (s.name.as_str(), s.base_delay_ms),
                (name, base),
                "rpm {rpm}"
            );
        }
    }

    #[test]
    fn info_paces_from_the_real_limit() {
        let t = TierTable::openai();
        let i = t.classify(3).info(Some((3, Duration::from_secs(60))));
        assert_eq!(i.pacing, Duration::from_secs(20));
        assert_eq!(i.base_delay, Duration::from_secs(20));
        let i = t.lowest().info(None);
        assert_eq!((i.pacing, i.rpm), (Duration::from_secs(20), None));
        assert_eq!(rpm_of(7200, Duration::from_secs(3600)), 120);
    }

    #[test]
    fn invalid_tables_are_rejected_with_the_setting() {
        let unordered = TierTable {
            tiers: vec![TierSpec::new("a", 0, 1, 1), TierSpec::new("b", 0, 1, 1)],
        };
        let e = unordered.validate().unwrap_err();
        assert!(e.problem.contains("ascending"), "{e}");
        let tables = TierTables::new().with_provider("x", TierTable { tiers: vec![] });
        assert_eq!(tables.validate().unwrap_err().setting, "tier.providers.x");
    }

    #[test]
    fn secs_formats_like_the_log_line() {
        assert_eq!(secs(Duration::from_secs(20)), "20s");
        assert_eq!(secs(Duration::from_millis(300)), "0.3s");
        assert_eq!(secs(Duration::from_millis(12)), "0.012s");
    }
}
