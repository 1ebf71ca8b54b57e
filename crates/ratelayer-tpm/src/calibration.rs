//! Calibration: per scope, the ratio between the input tokens the provider counted and the
//! input tokens we estimated, applied to later estimates.
//!
//! # Why it moves estimates up at once and down slowly (by default to 0.75 at most)
//!
//! A provider charges a request *when it admits it*, with its own count of the prompt plus
//! the output allowance. If our reservation is smaller than that charge, the budget we
//! track runs ahead of the provider's and a later request is sent into a full window: a
//! 429. An estimate that is too large costs only the difference, for as long as the
//! request is in flight: reconciliation refunds it when the response reports its usage.
//! Under-estimating is therefore the expensive error, and calibration is asymmetric:
//!
//! - a ratio above the current factor raises the factor **at once** (the next request is
//!   already corrected);
//! - a lower ratio lowers the factor slowly (by `decay` of the gap per response), so the
//!   factor follows the upper envelope of recent ratios, not their mean;
//! - the factor stays in `[min_factor, max_factor]` and starts at 1.0 (an estimate is
//!   shrunk only on evidence). The default `min_factor` is 0.75: core's default estimator
//!   counts a third of a token per byte, a third too much for English prose (about four
//!   characters per token), the cheapest common text. Held for a request's whole
//!   response time, that third is budget nobody can use; after English traffic the
//!   factor sits near the highest ratio recently seen instead. Set `min_factor` to 1.0
//!   to never reserve less than the estimator says.
//!
//! # Dense text is never shrunk
//!
//! The same count is about exact for CJK and other dense scripts (three UTF-8 bytes,
//! about one token per character): a factor learned from English would reserve a
//! Chinese prompt up to a quarter short. So an estimate is corrected in two parts, by
//! the [`dense_input_tokens`](ratelayer_core::RequestMeta::dense_input_tokens) core
//! counts (the tokens of strings that are not ASCII):
//!
//! - [`correct_split`](Calibration::correct_split) applies the factor to the ASCII part
//!   and `max(factor, 1.0)` to the dense part: a factor below 1 shrinks only the ASCII
//!   part, a factor above 1 (a tokenizer counting more than we do) raises both;
//! - [`observe_split`](Calibration::observe_split) learns the factor from the ASCII part
//!   only: the ratio of what the provider counted beyond the dense part to the estimate
//!   beyond it. A response to a request of mostly dense text (less than 32 ASCII tokens)
//!   only ever raises it: when the provider counted more than the whole estimate (a
//!   tokenizer denser than one token per character), the factor rises to that ratio at
//!   once, as under-reserving is the expensive error, and the dense part takes it;
//!   counted at or below the estimate, it teaches nothing.
//!
//! English traffic keeps its gain, and a CJK request right after it is reserved at no
//! less than its estimate.
//!
//! The state is one factor per scope: constant memory, no per-request history.
//!
//! ```
//! use ratelayer_core::Scope;
//! use ratelayer_tpm::{Calibration, CalibrationConfig};
//!
//! let cal = Calibration::new(CalibrationConfig::default());
//! let scope = Scope::new("openai").with_model("gpt-4o");
//! assert_eq!(cal.correct(&scope, 1000), 1000);
//! cal.observe(&scope, 1000, 1300); // the provider counted 30 % more
//! assert_eq!(cal.correct(&scope, 1000), 1300);
//! cal.observe(&scope, 1000, 700); // fewer: the factor drifts down slowly
//! assert!(cal.correct(&scope, 1000) > 1200);
//!
//! // After much English text the factor reaches 0.75 ...
//! let kimi = Scope::new("moonshot").with_model("kimi-k2");
//! for _ in 0..200 {
//!     cal.observe(&kimi, 1000, 700);
//! }
//! assert_eq!(cal.factor(&kimi), 0.75);
//! assert_eq!(cal.correct(&kimi, 1000), 750);
//! // ... but a Chinese prompt (all 1,000 tokens dense) is reserved in full.
//! assert_eq!(cal.correct_split(&kimi, 1000, 1000), 1000);
//! // A mixed one: 600 ASCII tokens shrink to 450, the 400 dense ones stay.
//! assert_eq!(cal.correct_split(&kimi, 1000, 400), 850);
//! ```

use ratelayer_core::ScopeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ratelayer_core::Scope;

use crate::config::CalibrationConfig;

/// Estimates below this many input tokens are not used to learn (their ratio is noise:
/// per-message overheads dominate).
const MIN_SAMPLE: u64 = 32;

/// Per-scope correction factors for input estimates, shared by clones. See the
/// [module docs](self).
///
/// ```
/// use ratelayer_core::Scope;
/// use ratelayer_tpm::{Calibration, CalibrationConfig};
/// let cal = Calibration::new(CalibrationConfig::default());
/// let clone = cal.clone();
/// clone.observe(&Scope::new("openai"), 1000, 1200);
/// assert_eq!(cal.correct(&Scope::new("openai"), 1000), 1200); // clones share the factors
/// ```
#[derive(Debug, Clone)]
pub struct Calibration {
    config: CalibrationConfig,
    factors: Arc<Mutex<ScopeMap<f64>>>,
}

impl Calibration {
    /// An empty calibration (every factor starts at `max(1.0, min_factor)`).
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// use ratelayer_tpm::{Calibration, CalibrationConfig};
    /// let cal = Calibration::new(CalibrationConfig::default());
    /// assert_eq!(cal.factor(&Scope::new("openai")), 1.0);
    /// ```
    pub fn new(config: CalibrationConfig) -> Self {
        Calibration {
            config,
            factors: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ScopeMap<f64>> {
        // Each critical section is one read or one insert: a poisoned map is consistent.
        self.factors.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn initial(&self) -> f64 {
        1.0_f64.clamp(self.config.min_factor, self.config.max_factor)
    }

    /// The current factor of `scope`.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// use ratelayer_tpm::{Calibration, CalibrationConfig};
    /// let cal = Calibration::new(CalibrationConfig::default());
    /// let scope = Scope::new("openai");
    /// cal.observe(&scope, 100, 150);
    /// assert_eq!(cal.factor(&scope), 1.5);
    /// ```
    pub fn factor(&self, scope: &Scope) -> f64 {
        if !self.config.enabled {
            return 1.0;
        }
        self.lock()
            .get(scope)
            .copied()
            .unwrap_or_else(|| self.initial())
    }

    /// `estimate` corrected by the factor of `scope`, rounded up, all of it treated as
    /// ASCII text: [`correct_split`](Self::correct_split) with no dense part.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// use ratelayer_tpm::{Calibration, CalibrationConfig};
    /// let cal = Calibration::new(CalibrationConfig::default());
    /// let scope = Scope::new("openai");
    /// cal.observe(&scope, 100, 120);
    /// assert_eq!(cal.correct(&scope, 1000), 1200);
    /// ```
    pub fn correct(&self, scope: &Scope, estimate: u64) -> u64 {
        self.correct_split(scope, estimate, 0)
    }

    /// `estimate` corrected by the factor of `scope`, rounded up, of which `dense`
    /// tokens (at most `estimate`) were counted from text that is not ASCII
    /// ([`RequestMeta::dense_input_tokens`](ratelayer_core::RequestMeta::dense_input_tokens)):
    /// the factor applies to the rest, `max(factor, 1.0)` to the dense part, which is
    /// therefore never shrunk.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// use ratelayer_tpm::{Calibration, CalibrationConfig};
    /// let cal = Calibration::new(CalibrationConfig { decay: 1.0, ..Default::default() });
    /// let scope = Scope::new("moonshot");
    /// cal.observe(&scope, 1000, 500); // English counted at half: the factor goes to 0.75
    /// assert_eq!(cal.correct_split(&scope, 1000, 0), 750);
    /// assert_eq!(cal.correct_split(&scope, 1000, 1000), 1000); // all CJK: unchanged
    /// assert_eq!(cal.correct_split(&scope, 1000, 200), 800); // 800 × 0.75 + 200
    /// cal.observe(&scope, 1000, 2000); // a factor above 1 raises both parts
    /// assert_eq!(cal.correct_split(&scope, 1000, 200), 2000);
    /// ```
    pub fn correct_split(&self, scope: &Scope, estimate: u64, dense: u64) -> u64 {
        let f = self.factor(scope);
        if f == 1.0 || estimate == 0 {
            return estimate;
        }
        let scale = |v: u64| {
            let v = (v as f64 * f).ceil();
            if v >= u64::MAX as f64 {
                u64::MAX
            } else {
                v as u64
            }
        };
        if f > 1.0 {
            return scale(estimate);
        }
        let dense = dense.min(estimate);
        scale(estimate - dense).saturating_add(dense)
    }

    /// Learns from one response: we estimated `estimated` input tokens (before
    /// correction), the provider counted `actual`. All of the estimate is treated as
    /// ASCII text: [`observe_split`](Self::observe_split) with no dense part.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// use ratelayer_tpm::{Calibration, CalibrationConfig};
    /// let cal = Calibration::new(CalibrationConfig::default());
    /// let scope = Scope::new("openai");
    /// cal.observe(&scope, 1000, 1300);
    /// assert!((cal.factor(&scope) - 1.3).abs() < 1e-12);
    /// ```
    pub fn observe(&self, scope: &Scope, estimated: u64, actual: u64) {
        self.observe_split(scope, estimated, 0, actual);
    }

    /// Learns from one response: we estimated `estimated` input tokens (before
    /// correction), `dense` of them (at most `estimated`) from text that is not ASCII,
    /// and the provider counted `actual`. The factor is learned from the rest only: the
    /// ratio `(actual − dense) / (estimated − dense)` (what the provider counted beyond
    /// the dense part, 0 if it counted less than that), when the rest is at least 32
    /// tokens (below, per-message overheads make the ratio noise). A response of mostly
    /// dense text (less than 32 other tokens) only ever raises the factor: to
    /// `actual / estimated` at once when that is above both the factor and 1 (the dense
    /// part is then reserved by it too); else it teaches nothing.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// use ratelayer_tpm::{Calibration, CalibrationConfig};
    /// let cal = Calibration::new(CalibrationConfig { decay: 1.0, ..Default::default() });
    /// let scope = Scope::new("moonshot");
    /// // 1,000 estimated, 600 of them CJK; the provider counted 900: the ASCII part
    /// // (400 estimated) counted 300, a ratio of 0.75.
    /// cal.observe_split(&scope, 1000, 600, 900);
    /// assert_eq!(cal.factor(&scope), 0.75);
    /// // An all-CJK response counted at or below its estimate teaches nothing...
    /// cal.observe_split(&scope, 1000, 1000, 900);
    /// assert_eq!(cal.factor(&scope), 0.75);
    /// // ...and one counted above it raises the factor at once.
    /// cal.observe_split(&scope, 1000, 1000, 1200);
    /// assert_eq!(cal.factor(&scope), 1.2);
    /// ```
    pub fn observe_split(&self, scope: &Scope, estimated: u64, dense: u64, actual: u64) {
        if !self.config.enabled {
            return;
        }
        let dense = dense.min(estimated);
        let rest = estimated - dense;
        let (ratio, raise_only) = if rest >= MIN_SAMPLE {
            (actual.saturating_sub(dense) as f64 / rest as f64, false)
        } else if estimated >= MIN_SAMPLE && actual > estimated {
            // Mostly dense text the provider counted above our estimate.
            (actual as f64 / estimated as f64, true)
        } else {
            return;
        };
        let ratio = ratio.clamp(self.config.min_factor, self.config.max_factor);
        let initial = self.initial();
        let mut map = self.lock();
        let f = map.entry(scope.clone()).or_insert(initial);
        if raise_only && ratio <= *f {
            return;
        }
        let next = if ratio >= *f || *f - ratio < 1e-3 {
            ratio
        } else {
            *f - self.config.decay * (*f - ratio)
        };
        *f = next.clamp(self.config.min_factor, self.config.max_factor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::new("openai").with_model("gpt-4o")
    }

    #[test]
    fn rises_at_once_and_decays_slowly_within_bounds() {
        let cal = Calibration::new(CalibrationConfig::default());
        let s = scope();
        cal.observe(&s, 100, 250);
        assert_eq!(cal.factor(&s), 2.5);
        cal.observe(&s, 100, 100);
        assert!((cal.factor(&s) - (2.5 - 0.05 * 1.5)).abs() < 1e-12);
        for _ in 0..1000 {
            cal.observe(&s, 100, 10);
        }
        assert_eq!(cal.factor(&s), 0.75, "never below min_factor");
        cal.observe(&s, 100, 10_000);
        assert_eq!(cal.factor(&s), 4.0, "never above max_factor");
        assert_eq!(cal.correct(&s, 3), 12);
        // Other scopes are untouched.
        assert_eq!(cal.factor(&Scope::new("openai")), 1.0);
    }

    #[test]
    fn small_samples_and_disabled_learn_nothing() {
        let cal = Calibration::new(CalibrationConfig::default());
        cal.observe(&scope(), MIN_SAMPLE - 1, 1000);
        assert_eq!(cal.factor(&scope()), 1.0);
        let off = Calibration::new(CalibrationConfig {
            enabled: false,
            ..Default::default()
        });
        off.observe(&scope(), 1000, 3000);
        assert_eq!(off.correct(&scope(), 1000), 1000);
    }

    /// A calibration whose factor English responses (counted at 0.7 of the estimate)
    /// drove to the floor, and its scope.
    fn after_english() -> (Calibration, Scope) {
        let cal = Calibration::new(CalibrationConfig::default());
        let s = scope();
        for _ in 0..1000 {
            cal.observe_split(&s, 1000, 0, 700);
        }
        assert_eq!(cal.factor(&s), 0.75);
        (cal, s)
    }

    /// After English traffic (factor at the floor), dense text is reserved in full and
    /// a mixed estimate shrinks only its ASCII part; dense responses never lower the
    /// factor.
    #[test]
    fn dense_text_is_never_shrunk() {
        let (cal, s) = after_english();
        // The old single-figure calls see everything as ASCII.
        assert_eq!(cal.correct(&s, 1000), 750);
        // All dense: unchanged, at least the estimator's count.
        for e in [1, 2, 31, 32, 1000, 123_457] {
            assert_eq!(cal.correct_split(&s, e, e), e);
        }
        // Mixed: 600 ASCII tokens shrink to 450, the 400 dense stay.
        assert_eq!(cal.correct_split(&s, 1000, 400), 450 + 400);
        // Rounded up on the ASCII part: 3 × 0.75 = 2.25 -> 3.
        assert_eq!(cal.correct_split(&s, 10, 7), 3 + 7);
        // A dense figure above the estimate is capped to it.
        assert_eq!(cal.correct_split(&s, 100, 500), 100);
        // All-dense observations at or below the estimate do not move the factor.
        cal.observe_split(&s, 5000, 5000, 5000);
        cal.observe_split(&s, 5000, 5000, 10);
        cal.observe_split(&s, 5000, 4990, 4000); // 10 ASCII tokens: below MIN_SAMPLE
        cal.observe_split(&s, 31, 31, 100); // too small to learn from
        assert_eq!(cal.factor(&s), 0.75);
        // The ASCII part of a mixed response is what the factor learns from: 400 ASCII
        // estimated, the provider counted 600 dense + 600 -> ratio 1.5.
        cal.observe_split(&s, 1000, 600, 1200);
        assert_eq!(cal.factor(&s), 1.5);
        // Above 1, the dense part is raised too.
        assert_eq!(cal.correct_split(&s, 1000, 1000), 1500);
        // Counted below the dense part: the ASCII actual is 0 and the ratio clamps to
        // the floor (the factor decays toward it).
        cal.observe_split(&s, 1000, 600, 300);
        assert!((cal.factor(&s) - (1.5 - 0.05 * 0.75)).abs() < 1e-12);
    }

    /// A provider that counts dense text above our estimate: under-reserving is the
    /// expensive error, so its responses raise the factor at once (the dense part then
    /// takes it), and never lower it.
    #[test]
    fn dense_text_counted_above_the_estimate_raises_the_factor() {
        let (cal, s) = after_english();
        // 10 ASCII tokens (below MIN_SAMPLE), counted 30% above the whole estimate.
        cal.observe_split(&s, 1000, 990, 1300);
        assert!((cal.factor(&s) - 1.3).abs() < 1e-12);
        assert_eq!(cal.correct_split(&s, 1000, 1000), 1300);
        // A dense response counted lower (or higher, but below the factor) does not
        // lower it.
        cal.observe_split(&s, 1000, 1000, 1100);
        cal.observe_split(&s, 1000, 1000, 1000);
        assert!((cal.factor(&s) - 1.3).abs() < 1e-12);
    }

    #[test]
    fn a_lower_floor_can_shrink_estimates() {
        let cal = Calibration::new(CalibrationConfig {
            min_factor: 0.8,
            decay: 1.0,
            ..Default::default()
        });
        cal.observe(&scope(), 1000, 500);
        assert_eq!(cal.factor(&scope()), 0.8);
        assert_eq!(cal.correct(&scope(), 1000), 800);
    }
}
