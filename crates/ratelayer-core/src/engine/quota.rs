//! Quotas: what a bucket admits, and how.

use std::time::Duration;

use crate::error::ConfigError;
use crate::headers::Dimension;

/// The most buckets one scope can hold (and so the most buckets one reservation books).
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{BucketKey, MAX_BUCKETS, Quota};
/// use ratelayer_core::{Dimension, LimitState, Scope};
///
/// let h = LimitState::new().handle(&Scope::new("openai"));
/// let quota = Quota::gcra(100, Duration::from_secs(60));
/// for secs in 1..=MAX_BUCKETS as u64 {
///     h.set_quota(BucketKey::new(Dimension::Requests, Duration::from_secs(secs)), quota).unwrap();
/// }
/// let one_more = BucketKey::new(Dimension::Tokens, Duration::from_secs(60));
/// assert!(h.set_quota(one_more, quota).is_err());
/// ```
pub const MAX_BUCKETS: usize = 8;

/// The most slots a sliding-window bucket can have.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{MAX_SLOTS, Quota};
///
/// let tpd = Quota::sliding_window(1_000_000, Duration::from_secs(86_400));
/// assert!(tpd.with_slots(MAX_SLOTS).validate("tpd").is_ok());
/// assert!(tpd.with_slots(MAX_SLOTS + 1).validate("tpd").is_err());
/// ```
pub const MAX_SLOTS: u32 = 4096;

/// The key of a bucket within a scope: what it counts and over which window.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::BucketKey;
/// use ratelayer_core::Dimension;
///
/// let tpm = BucketKey::new(Dimension::Tokens, Duration::from_secs(60));
/// assert_eq!(tpm, BucketKey::TOKENS_PER_MINUTE);
/// assert_eq!(tpm.describe(), "tokens per minute");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    /// What the bucket counts.
    pub dimension: Dimension,
    /// The window the limit applies to.
    pub window: Duration,
}

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

impl BucketKey {
    /// A bucket counting `dimension` over `window`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::BucketKey;
    /// use ratelayer_core::Dimension;
    ///
    /// let rph = BucketKey::new(Dimension::Requests, Duration::from_secs(3600));
    /// assert_eq!(rph.window, Duration::from_secs(3600));
    /// assert_eq!(rph.describe(), "requests per hour");
    /// ```
    pub const fn new(dimension: Dimension, window: Duration) -> Self {
        BucketKey { dimension, window }
    }

    /// Requests per minute (a request reservoir).
    ///
    /// ```
    /// use ratelayer_core::engine::BucketKey;
    /// assert_eq!(BucketKey::REQUESTS_PER_MINUTE.window.as_secs(), 60);
    /// ```
    pub const REQUESTS_PER_MINUTE: BucketKey = BucketKey::new(Dimension::Requests, MINUTE);
    /// Requests per day.
    ///
    /// ```
    /// use ratelayer_core::engine::BucketKey;
    /// assert_eq!(BucketKey::REQUESTS_PER_DAY.describe(), "requests per day");
    /// ```
    pub const REQUESTS_PER_DAY: BucketKey = BucketKey::new(Dimension::Requests, DAY);
    /// Tokens (input and output) per minute.
    ///
    /// ```
    /// use ratelayer_core::engine::BucketKey;
    /// use ratelayer_core::Dimension;
    /// assert_eq!(BucketKey::TOKENS_PER_MINUTE.dimension, Dimension::Tokens);
    /// ```
    pub const TOKENS_PER_MINUTE: BucketKey = BucketKey::new(Dimension::Tokens, MINUTE);
    /// Tokens per day.
    ///
    /// ```
    /// use ratelayer_core::engine::BucketKey;
    /// assert_eq!(BucketKey::TOKENS_PER_DAY.window.as_secs(), 86_400);
    /// ```
    pub const TOKENS_PER_DAY: BucketKey = BucketKey::new(Dimension::Tokens, DAY);
    /// Input tokens per minute.
    ///
    /// ```
    /// use ratelayer_core::engine::BucketKey;
    /// assert_eq!(BucketKey::INPUT_TOKENS_PER_MINUTE.describe(), "input tokens per minute");
    /// ```
    pub const INPUT_TOKENS_PER_MINUTE: BucketKey = BucketKey::new(Dimension::InputTokens, MINUTE);
    /// Output tokens per minute.
    ///
    /// ```
    /// use ratelayer_core::engine::BucketKey;
    /// assert_eq!(BucketKey::OUTPUT_TOKENS_PER_MINUTE.describe(), "output tokens per minute");
    /// ```
    pub const OUTPUT_TOKENS_PER_MINUTE: BucketKey = BucketKey::new(Dimension::OutputTokens, MINUTE);

    /// A short description for errors and logs, such as `"tokens per minute"`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::BucketKey;
    /// use ratelayer_core::Dimension;
    ///
    /// assert_eq!(BucketKey::TOKENS_PER_MINUTE.describe(), "tokens per minute");
    /// let odd = BucketKey::new(Dimension::Tokens, Duration::from_secs(90));
    /// assert_eq!(odd.describe(), "tokens"); // no name for a 90 s window
    /// ```
    pub fn describe(&self) -> &'static str {
        use Dimension::*;
        let per = match self.window.as_secs() {
            _ if self.window.subsec_nanos() != 0 => 0,
            1 => 1,
            60 => 2,
            3600 => 3,
            86_400 => 4,
            _ => 0,
        };
        match (self.dimension, per) {
            (Requests, 1) => "requests per second",
            (Requests, 2) => "requests per minute",
            (Requests, 3) => "requests per hour",
            (Requests, 4) => "requests per day",
            (Requests, _) => "requests",
            (Tokens, 1) => "tokens per second",
            (Tokens, 2) => "tokens per minute",
            (Tokens, 3) => "tokens per hour",
            (Tokens, 4) => "tokens per day",
            (Tokens, _) => "tokens",
            (InputTokens, 2) => "input tokens per minute",
            (InputTokens, 4) => "input tokens per day",
            (InputTokens, _) => "input tokens",
            (OutputTokens, 2) => "output tokens per minute",
            (OutputTokens, 4) => "output tokens per day",
            (OutputTokens, _) => "output tokens",
        }
    }
}

/// How a bucket admits.
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::{Algorithm, Quota};
///
/// let paced = Quota::gcra(4, Duration::from_secs(60)).with_burst(1);
/// assert_eq!(paced.algorithm, Algorithm::Gcra { burst: 1 });
/// let tpm = Quota::sliding_window(30_000, Duration::from_secs(60));
/// assert_eq!(tpm.algorithm, Algorithm::SlidingWindow { slots: Quota::DEFAULT_SLOTS });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// GCRA (token-bucket semantics with one timestamp of state): a bucket of capacity
    /// `burst`, refilled continuously at `limit / window`. Any window admits at most
    /// `limit + burst`; with `burst = 1` it is exact pacing (one unit every
    /// `window / limit`).
    Gcra {
        /// The capacity: the most the bucket admits at once after being idle.
        burst: u64,
    },
    /// A window-safe sliding window: any interval of length `window` admits at most
    /// `limit`. The state is a fixed ring of `slots` entries, each recording the sum
    /// admitted and the latest admission time within a slot (`window / slots` wide);
    /// a slot's sum counts until its latest admission plus `window`, so waits are exact
    /// for admissions that share a slot's latest time and conservative (never early)
    /// otherwise.
    SlidingWindow {
        /// Number of slots of the ring.
        slots: u32,
    },
}

/// A configured limit: `limit` units per `window`, admitted by an [`Algorithm`].
///
/// ```
/// use std::time::Duration;
/// use ratelayer_core::engine::Quota;
///
/// // 30,000 tokens per minute, window-safe (matches a provider's sliding accounting).
/// let tpm = Quota::sliding_window(30_000, Duration::from_secs(60));
/// assert!(tpm.validate("tpm").is_ok());
/// assert_eq!(tpm.capacity(), 30_000);
///
/// // A reservoir of 4 requests per minute, paced: one every 15 s.
/// let paced = Quota::gcra(4, Duration::from_secs(60)).with_burst(1);
/// assert_eq!(paced.capacity(), 1);
///
/// assert!(Quota::gcra(0, Duration::from_secs(60)).validate("rpm").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Units admitted per window.
    pub limit: u64,
    /// The window.
    pub window: Duration,
    /// How the bucket admits.
    pub algorithm: Algorithm,
}

impl Quota {
    /// The default number of slots of a sliding window.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{Algorithm, Quota};
    ///
    /// assert_eq!(Quota::DEFAULT_SLOTS, 60); // one-second slots in a one-minute window
    /// let tpm = Quota::sliding_window(30_000, Duration::from_secs(60));
    /// assert_eq!(tpm.algorithm, Algorithm::SlidingWindow { slots: 60 });
    /// ```
    pub const DEFAULT_SLOTS: u32 = 60;

    /// A GCRA quota of `limit` per `window` with a burst of `limit` (a full bucket
    /// admits one window's worth at once). Tune it with [`with_burst`](Self::with_burst).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{Algorithm, Quota};
    ///
    /// let rpm = Quota::gcra(500, Duration::from_secs(60));
    /// assert_eq!(rpm.algorithm, Algorithm::Gcra { burst: 500 });
    /// assert_eq!(rpm.capacity(), 500);
    /// ```
    pub fn gcra(limit: u64, window: Duration) -> Self {
        Quota {
            limit,
            window,
            algorithm: Algorithm::Gcra { burst: limit },
        }
    }

    /// A window-safe sliding-window quota of `limit` per `window`, with
    /// [`DEFAULT_SLOTS`](Self::DEFAULT_SLOTS) slots.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::Quota;
    ///
    /// let tpm = Quota::sliding_window(30_000, Duration::from_secs(60));
    /// assert_eq!((tpm.limit, tpm.window), (30_000, Duration::from_secs(60)));
    /// assert_eq!(tpm.capacity(), 30_000);
    /// ```
    pub fn sliding_window(limit: u64, window: Duration) -> Self {
        Quota {
            limit,
            window,
            algorithm: Algorithm::SlidingWindow {
                slots: Self::DEFAULT_SLOTS,
            },
        }
    }

    /// Sets the burst of a GCRA quota (no effect on a sliding window).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::Quota;
    ///
    /// let rpm = Quota::gcra(60, Duration::from_secs(60)).with_burst(5);
    /// assert_eq!(rpm.capacity(), 5);
    /// let tpm = Quota::sliding_window(1_000, Duration::from_secs(60)).with_burst(5);
    /// assert_eq!(tpm.capacity(), 1_000); // unchanged
    /// ```
    pub fn with_burst(mut self, burst: u64) -> Self {
        if let Algorithm::Gcra { burst: b } = &mut self.algorithm {
            *b = burst;
        }
        self
    }

    /// Sets the number of slots of a sliding window (no effect on GCRA).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::{Algorithm, Quota};
    ///
    /// let tpd = Quota::sliding_window(1_000_000, Duration::from_secs(86_400)).with_slots(1_440);
    /// assert_eq!(tpd.algorithm, Algorithm::SlidingWindow { slots: 1_440 });
    /// let rpm = Quota::gcra(60, Duration::from_secs(60)).with_slots(1_440);
    /// assert_eq!(rpm.algorithm, Algorithm::Gcra { burst: 60 }); // unchanged
    /// ```
    pub fn with_slots(mut self, slots: u32) -> Self {
        if let Algorithm::SlidingWindow { slots: s } = &mut self.algorithm {
            *s = slots;
        }
        self
    }

    /// The most one reservation can take from this bucket: the burst of GCRA, the limit
    /// of a sliding window.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::Quota;
    ///
    /// assert_eq!(Quota::gcra(4, Duration::from_secs(60)).with_burst(2).capacity(), 2);
    /// assert_eq!(Quota::sliding_window(4, Duration::from_secs(60)).capacity(), 4);
    /// ```
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra { burst } => burst,
            Algorithm::SlidingWindow { .. } => self.limit,
        }
    }

    /// Checks that `limit > 0`, `window > 0`, `burst >= 1` and `1 <= slots <=`
    /// [`MAX_SLOTS`]. `setting` names the quota in the error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelayer_core::engine::Quota;
    ///
    /// assert!(Quota::gcra(500, Duration::from_secs(60)).validate("rpm").is_ok());
    /// let err = Quota::gcra(500, Duration::ZERO).validate("rpm").unwrap_err();
    /// assert_eq!(err.setting, "rpm.window");
    /// let no_burst = Quota::gcra(500, Duration::from_secs(60)).with_burst(0);
    /// let err = no_burst.validate("rpm").unwrap_err();
    /// assert_eq!(err.setting, "rpm.burst");
    /// ```
    pub fn validate(&self, setting: &str) -> Result<(), ConfigError> {
        if self.limit == 0 {
            return Err(ConfigError::new(
                format!("{setting}.limit"),
                "the limit must be at least 1; remove the quota to leave the dimension unlimited",
            ));
        }
        if self.window.is_zero() {
            return Err(ConfigError::new(
                format!("{setting}.window"),
                "the window must be longer than zero, such as 60 s for a per-minute limit",
            ));
        }
        if self.window > Duration::from_secs(366 * 86_400) {
            return Err(ConfigError::new(
                format!("{setting}.window"),
                "the window must be at most a year",
            ));
        }
        match self.algorithm {
            Algorithm::Gcra { burst: 0 } => Err(ConfigError::new(
                format!("{setting}.burst"),
                "the burst must be at least 1 (1 means strict pacing)",
            )),
            Algorithm::SlidingWindow { slots } if slots == 0 || slots > MAX_SLOTS => {
                Err(ConfigError::new(
                    format!("{setting}.slots"),
                    format!("the number of slots must be between 1 and {MAX_SLOTS}"),
                ))
            }
            _ => Ok(()),
        }
    }
}
