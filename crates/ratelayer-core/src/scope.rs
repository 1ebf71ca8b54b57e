//! Scopes: the key under which limits, tiers and cooldowns are kept.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

/// The hasher of maps keyed by [`Scope`]: every layer looks a request's scope up in
/// such a map, and a scope is three short strings, which SipHash (the standard map's
/// default) hashes several times slower than foldhash does. Seeded at random per map,
/// like the standard one.
///
/// ```
/// use ratelayer_core::{Scope, ScopeMap};
/// let mut m: ScopeMap<u32> = ScopeMap::default();
/// m.insert(Scope::new("openai"), 1);
/// assert_eq!(m.get(&Scope::new("openai")), Some(&1));
/// ```
#[derive(Clone, Default, Debug)]
pub struct ScopeHasher(foldhash::fast::RandomState);

impl BuildHasher for ScopeHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// A map keyed by [`Scope`], with [`ScopeHasher`].
///
/// ```
/// use ratelayer_core::{Scope, ScopeMap};
/// let mut tiers: ScopeMap<&str> = ScopeMap::default();
/// tiers.insert(Scope::new("openai").with_model("gpt-4o"), "tier-1");
/// assert_eq!(tiers[&Scope::new("openai").with_model("gpt-4o")], "tier-1");
/// ```
pub type ScopeMap<V> = HashMap<Scope, V, ScopeHasher>;

/// The key of everything ratelayer learns and enforces: a provider, a credential and a
/// model.
///
/// A provider's limits are per account (credential) and usually per model. A layer can
/// widen a scope by dropping parts of it (for example, concurrency is usually counted per
/// provider and credential across models): see [`Scope::without_model`].
///
/// The credential part is a short fingerprint of the API key (see
/// [`meta`](crate::meta)), never the key itself, so a scope can be logged safely.
///
/// ```
/// use ratelayer_core::Scope;
/// let scope = Scope::new("openai").with_model("gpt-4o-mini");
/// assert_eq!(scope.to_string(), "openai/gpt-4o-mini");
/// assert_eq!(scope.without_model().to_string(), "openai");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    provider: Arc<str>,
    credential: Option<Arc<str>>,
    model: Option<Arc<str>>,
}

impl Scope {
    /// A scope for a whole provider (no credential, no model).
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// let scope = Scope::new("anthropic");
    /// assert_eq!(scope.provider(), "anthropic");
    /// assert_eq!((scope.credential(), scope.model()), (None, None));
    /// ```
    pub fn new(provider: impl Into<Arc<str>>) -> Self {
        Scope {
            provider: provider.into(),
            credential: None,
            model: None,
        }
    }

    /// This scope, narrowed to a credential fingerprint.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// let scope = Scope::new("openai").with_credential("k-3f9a");
    /// assert_eq!(scope.credential(), Some("k-3f9a"));
    /// assert_eq!(scope.to_string(), "openai@k-3f9a");
    /// ```
    pub fn with_credential(mut self, credential: impl Into<Arc<str>>) -> Self {
        self.credential = Some(credential.into());
        self
    }

    /// This scope, narrowed to a model.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// let scope = Scope::new("openai").with_credential("k-3f9a").with_model("gpt-4o");
    /// assert_eq!(scope.model(), Some("gpt-4o"));
    /// assert_eq!(scope.to_string(), "openai@k-3f9a/gpt-4o");
    /// ```
    pub fn with_model(mut self, model: impl Into<Arc<str>>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// This scope without its model: the provider and credential only.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// let scope = Scope::new("openai").with_credential("k-3f9a").with_model("gpt-4o");
    /// assert_eq!(scope.without_model(), Scope::new("openai").with_credential("k-3f9a"));
    /// ```
    pub fn without_model(&self) -> Self {
        Scope {
            provider: self.provider.clone(),
            credential: self.credential.clone(),
            model: None,
        }
    }

    /// The provider's name, such as `openai`.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// assert_eq!(Scope::new("openai").with_model("gpt-4o").provider(), "openai");
    /// ```
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The credential fingerprint, if the scope is narrowed to one.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// assert_eq!(Scope::new("groq").credential(), None);
    /// assert_eq!(Scope::new("groq").with_credential("k-1").credential(), Some("k-1"));
    /// ```
    pub fn credential(&self) -> Option<&str> {
        self.credential.as_deref()
    }

    /// The model, if the scope is narrowed to one.
    ///
    /// ```
    /// use ratelayer_core::Scope;
    /// assert_eq!(Scope::new("groq").model(), None);
    /// assert_eq!(Scope::new("groq").with_model("llama-3.1-8b").model(), Some("llama-3.1-8b"));
    /// ```
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

impl fmt::Display for Scope {
    /// `provider[@credential][/model]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.provider)?;
        if let Some(c) = &self.credential {
            write!(f, "@{c}")?;
        }
        if let Some(m) = &self.model {
            write!(f, "/{m}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({self})")
    }
}
