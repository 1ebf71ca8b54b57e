//! Typed errors for the failures that ratelayer itself decides.
//!
//! Upstream responses (429 and 5xx included) are never errors: they pass through as
//! `Ok(Response)` so outer layers can classify them. The types here are returned when a
//! layer decides on its own that a request must not be sent or must not wait. Each is a
//! separate type so callers can `downcast_ref` a [`BoxError`](crate::BoxError) to exactly
//! the case they handle:
//!
//! ```
//! use std::time::Duration;
//! use ratelayer_core::{BoxError, Scope, WaitTooLong};
//!
//! let err: BoxError = Box::new(WaitTooLong {
//!     scope: Scope::new("openai").with_model("gpt-4o"),
//!     wait: Duration::from_secs(90),
//!     max_wait: Duration::from_secs(30),
//!     reason: "tokens per minute",
//! });
//! let wait = err.downcast_ref::<WaitTooLong>().map(|e| e.wait);
//! assert_eq!(wait, Some(Duration::from_secs(90)));
//! ```

use std::fmt;
use std::time::Duration;

use crate::scope::Scope;

/// A request that can never be admitted: its cost exceeds what a budget can ever hold.
///
/// Returned at once, without waiting and without sending the request.
///
/// ```
/// use ratelayer_core::{NeverFits, Scope};
/// let e = NeverFits {
///     scope: Scope::new("openai").with_model("gpt-4o"),
///     what: "tokens per minute",
///     requested: 40_000,
///     capacity: 30_000,
/// };
/// assert!(e.to_string().starts_with("request needs 40000 but the tokens per minute budget"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeverFits {
    /// The scope whose budget is too small.
    pub scope: Scope,
    /// What is limited, such as `"tokens per minute"`.
    pub what: &'static str,
    /// The cost of the request in that budget's unit.
    pub requested: u64,
    /// The most the budget can ever admit at once.
    pub capacity: u64,
}

impl fmt::Display for NeverFits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request needs {} but the {} budget of {} holds at most {}; \
             shorten the request (or its max_tokens) or raise the limit",
            self.requested, self.what, self.scope, self.capacity
        )
    }
}

impl std::error::Error for NeverFits {}

/// Admitting the request would take longer than the caller allows.
///
/// Returned at once, without waiting and without changing any limiter state, so a
/// fallback layer can try another provider.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::{Scope, WaitTooLong};
/// let e = WaitTooLong {
///     scope: Scope::new("openai"),
///     wait: Duration::from_millis(61_500),
///     max_wait: Duration::from_secs(30),
///     reason: "tokens per minute",
/// };
/// assert!(e.to_string().starts_with("openai would have to wait 61.500s for tokens per minute"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitTooLong {
    /// The scope that would have to wait.
    pub scope: Scope,
    /// How long the request would have to wait.
    pub wait: Duration,
    /// The longest wait allowed.
    pub max_wait: Duration,
    /// What the wait is for, such as `"tokens per minute"` or `"retry-after"`.
    pub reason: &'static str,
}

impl fmt::Display for WaitTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} would have to wait {:.3}s for {}, longer than the allowed {:.3}s; \
             raise the maximum wait or add a fallback provider",
            self.scope,
            self.wait.as_secs_f64(),
            self.reason,
            self.max_wait.as_secs_f64()
        )
    }
}

impl std::error::Error for WaitTooLong {}

/// The queue of a scope is full and the layer is configured to fail rather than wait.
///
/// ```
/// use ratelayer_core::{QueueFull, Scope};
/// let e = QueueFull { scope: Scope::new("kimi"), capacity: 16 };
/// assert!(e.to_string().starts_with("the queue of kimi is full (16 waiting)"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFull {
    /// The scope whose queue is full.
    pub scope: Scope,
    /// How many requests the queue holds.
    pub capacity: usize,
}

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the queue of {} is full ({} waiting); retry later, raise the queue bound, \
             or configure the layer to wait when the queue is full",
            self.scope, self.capacity
        )
    }
}

impl std::error::Error for QueueFull {}

/// One provider's attempt, as listed by [`AllProvidersFailed`].
///
/// ```
/// use ratelayer_core::error::ProviderAttempt;
/// let a = ProviderAttempt {
///     provider: "openai".into(),
///     reason: "rate limited".into(),
///     status: Some(http::StatusCode::TOO_MANY_REQUESTS),
/// };
/// assert_eq!(a.status.map(|s| s.as_u16()), Some(429));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAttempt {
    /// The provider's configured name.
    pub provider: String,
    /// Why the attempt did not succeed (or was skipped).
    pub reason: String,
    /// The HTTP status returned, if a response was received.
    pub status: Option<http::StatusCode>,
}

/// Every provider of a fallback chain failed or was skipped.
///
/// ```
/// use ratelayer_core::error::{AllProvidersFailed, ProviderAttempt};
/// let e = AllProvidersFailed {
///     attempts: vec![ProviderAttempt {
///         provider: "openai".into(),
///         reason: "wait too long".into(),
///         status: None,
///     }],
/// };
/// assert_eq!(e.to_string(), "every provider failed: openai (wait too long)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllProvidersFailed {
    /// Every attempt, in order.
    pub attempts: Vec<ProviderAttempt>,
}

impl fmt::Display for AllProvidersFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "every provider failed")?;
        for (i, a) in self.attempts.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(f, "{sep}{} ({}", a.provider, a.reason)?;
            if let Some(s) = a.status {
                write!(f, ", status {}", s.as_u16())?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

impl std::error::Error for AllProvidersFailed {}

/// A layer's configuration is invalid. Returned when the layer is built, never on the
/// request path.
///
/// ```
/// use ratelayer_core::ConfigError;
/// let e = ConfigError::new("tpm.limit", "must be above zero");
/// assert_eq!(e.setting, "tpm.limit");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting at fault, such as `"tpm.limit"`.
    pub setting: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl ConfigError {
    /// A configuration error for `setting`.
    ///
    /// ```
    /// use ratelayer_core::ConfigError;
    /// let e = ConfigError::new("concurrency.limit", "must be at least 1; got 0");
    /// assert_eq!(
    ///     e.to_string(),
    ///     "invalid ratelayer configuration: concurrency.limit: must be at least 1; got 0"
    /// );
    /// ```
    pub fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid ratelayer configuration: {}: {}",
            self.setting, self.problem
        )
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_numbers_and_the_remedy() {
        let e = NeverFits {
            scope: Scope::new("openai").with_model("gpt-4o"),
            what: "tokens per minute",
            requested: 40_666,
            capacity: 30_000,
        };
        let s = e.to_string();
        assert!(
            s.contains("40666") && s.contains("30000") && s.contains("openai/gpt-4o"),
            "{s}"
        );
        let all = AllProvidersFailed {
            attempts: vec![
                ProviderAttempt {
                    provider: "openai".into(),
                    reason: "rate limited".into(),
                    status: Some(http::StatusCode::TOO_MANY_REQUESTS),
                },
                ProviderAttempt {
                    provider: "anthropic".into(),
                    reason: "circuit open".into(),
                    status: None,
                },
            ],
        };
        assert_eq!(
            all.to_string(),
            "every provider failed: openai (rate limited, status 429); anthropic (circuit open)"
        );
    }
}
