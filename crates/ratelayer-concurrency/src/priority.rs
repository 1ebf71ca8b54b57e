//! Request priority: an optional extension on the request.

/// The priority class of a request, set as a request extension. Requests without one are
/// [`Priority::Normal`].
///
/// High-priority requests are admitted first, FIFO within each class; but with requests
/// waiting in both classes, at most
/// [`high_priority_streak`](crate::Limits::high_priority_streak) high-priority requests
/// pass in a row before a normal one, so normal requests are never starved.
///
/// ```
/// use ratelayer_concurrency::Priority;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(Priority::High);
/// assert_eq!(Priority::of(&req), Priority::High);
/// assert_eq!(Priority::of(&http::Request::new(())), Priority::Normal);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Goes first.
    High,
    /// The default class.
    #[default]
    Normal,
}

impl Priority {
    /// The priority of `req` (its extension, or `Normal`).
    pub fn of<B>(req: &http::Request<B>) -> Priority {
        req.extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or_default()
    }

    /// `"high"` or `"normal"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
        }
    }
}
