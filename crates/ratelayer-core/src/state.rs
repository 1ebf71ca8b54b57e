//! The shared limit state through which the layers cooperate. Being built.

/// A shared handle to what ratelayer knows about every scope. Being built.
#[derive(Debug, Clone, Default)]
pub struct LimitState {}
