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
//!   counts a third of a token per byte, exact for CJK text (three bytes, about one
//!   token per character) and a third too much for English prose (about four characters
//!   per token), the cheapest common text. Held for a request's whole response time,
//!   that third is budget nobody can use; after English traffic the factor sits near
//!   the highest ratio recently seen instead. The price: a request of denser text right
//!   after (CJK, after English) is reserved up to a quarter short on its input until its
//!   response comes back and raises the factor, which the safety margin, the
//!   reconciliation with the provider's usage and its remaining-tokens headers absorb (at
//!   worst one 429, retried after the provider's `Retry-After`). Set `min_factor` to 1.0
//!   to never reserve less than the estimator says.
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
#[derive(Debug, Clone)]
pub struct Calibration {
    config: CalibrationConfig,
    factors: Arc<Mutex<ScopeMap<f64>>>,
}

impl Calibration {
    /// An empty calibration (every factor starts at `max(1.0, min_factor)`).
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
    pub fn factor(&self, scope: &Scope) -> f64 {
        if !self.config.enabled {
            return 1.0;
        }
        self.lock()
            .get(scope)
            .copied()
            .unwrap_or_else(|| self.initial())
    }

    /// `estimate` corrected by the factor of `scope`, rounded up.
    pub fn correct(&self, scope: &Scope, estimate: u64) -> u64 {
        let f = self.factor(scope);
        if f == 1.0 || estimate == 0 {
            return estimate;
        }
        let v = (estimate as f64 * f).ceil();
        if v >= u64::MAX as f64 {
            u64::MAX
        } else {
            v as u64
        }
    }

    /// Learns from one response: we estimated `estimated` input tokens (before
    /// correction), the provider counted `actual`.
    pub fn observe(&self, scope: &Scope, estimated: u64, actual: u64) {
        if !self.config.enabled || estimated < MIN_SAMPLE {
            return;
        }
        let ratio = (actual as f64 / estimated as f64)
            .clamp(self.config.min_factor, self.config.max_factor);
        let initial = self.initial();
        let mut map = self.lock();
        let f = map.entry(scope.clone()).or_insert(initial);
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
