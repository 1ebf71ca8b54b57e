//! One pass over a JSON request body that finds the model and counts the estimate,
//! without building a `serde_json::Value` (no allocation for unescaped text).
//!
//! The rules are those documented on [`estimate_json`](super::estimate_json); this module
//! only reads the body once, as a stream of serde events.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

pub(crate) mod fast;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::estimate::{
    INPUT_KEYS, MEDIA_KEYS, MEDIA_TYPES, MESSAGE_KEYS, SINGLE_MESSAGE_KEYS, TokenEstimator,
    by_length,
};

/// The longest model name taken from a body or a path.
pub(crate) const MAX_MODEL_LEN: usize = 256;

/// What one pass over a top-level JSON object found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct BodyFacts {
    /// The top-level `model` string, when it is non-empty and at most
    /// [`MAX_MODEL_LEN`] bytes.
    pub(crate) model: Option<Arc<str>>,
    /// Tokens of the input keys, with the per-message charges.
    pub(crate) input_tokens: u64,
    /// Of `input_tokens`, those counted from strings that are not ASCII.
    pub(crate) dense_input_tokens: u64,
    /// Whether any input key held a non-null value.
    pub(crate) found_input: bool,
    /// The largest top-level maximum-output field.
    pub(crate) max_output: Option<u64>,
    /// The top-level `n`.
    pub(crate) n: Option<u64>,
    /// `generationConfig`'s largest maximum-output field and candidate count (`Some(None)`
    /// when it is present but not an object).
    pub(crate) generation_camel: Option<Option<(Option<u64>, Option<u64>)>>,
    /// `generation_config`'s, used when `generationConfig` is absent.
    pub(crate) generation_snake: Option<(Option<u64>, Option<u64>)>,
}

impl BodyFacts {
    /// Adds the value of the input key `INPUT_KEYS[key]`, with its per-message charges.
    fn add_input(&mut self, key: usize, c: Counted, per_message: u64) {
        if c.null {
            return;
        }
        self.found_input = true;
        let k = INPUT_KEYS[key];
        let messages = match c.items {
            Some(n) if MESSAGE_KEYS.contains(&k) => n,
            _ if MESSAGE_KEYS.contains(&k) || SINGLE_MESSAGE_KEYS.contains(&k) => 1,
            _ => 0,
        };
        self.input_tokens = self
            .input_tokens
            .saturating_add(c.tokens)
            .saturating_add(messages.saturating_mul(per_message));
        self.dense_input_tokens = self.dense_input_tokens.saturating_add(c.dense);
    }

    /// The output maximum and the choice count the body states (the generation config
    /// counts when the top level says nothing of the choices).
    pub(crate) fn output(&self) -> (Option<u64>, Option<u64>) {
        let generation = match self.generation_camel {
            Some(g) => g,
            None => self.generation_snake,
        };
        let max = match (self.max_output, generation.and_then(|g| g.0)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let n = self.n.or_else(|| generation.and_then(|g| g.1));
        (max, n)
    }
}

/// How the readers count the tokens of a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Texts {
    /// By the estimator's [`count_text`](TokenEstimator::count_text).
    Estimator,
    /// By its length alone, [`by_length`] (the estimator's `count_text` is
    /// [`DefaultEstimator`](super::DefaultEstimator)'s): the fast reader need not read
    /// ASCII text as `str`.
    Length,
}

/// Reads `body` as one JSON object into `facts`, which starts as `BodyFacts::default()`.
/// `false` when it is not valid JSON or not an object.
pub(crate) fn scan<E: TokenEstimator + ?Sized>(
    e: &E,
    body: &[u8],
    model: Option<&str>,
    texts: Texts,
    facts: &mut BodyFacts,
) -> bool {
    match fast::scan_into(e, body, model, texts, facts) {
        Ok(object) => object,
        Err(fast::Unsure) => match scan_serde(e, body, model, texts) {
            Some(read) => {
                *facts = read;
                true
            }
            None => false,
        },
    }
}

/// [`scan`] by serde_json: every valid JSON document, escapes included.
pub(crate) fn scan_serde<E: TokenEstimator + ?Sized>(
    e: &E,
    body: &[u8],
    model: Option<&str>,
    texts: Texts,
) -> Option<BodyFacts> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let facts = de.deserialize_any(TopLevel { e, model, texts }).ok()??;
    de.end().ok()?;
    Some(facts)
}

/// The model a JSON body names: its top-level `model` string, of 1 to
/// [`MAX_MODEL_LEN`] bytes.
pub(crate) fn model_in_body(body: &[u8]) -> Option<Arc<str>> {
    #[derive(serde::Deserialize)]
    struct WithModel<'a> {
        #[serde(borrow)]
        model: Option<Cow<'a, str>>,
    }
    model_name(
        serde_json::from_slice::<WithModel<'_>>(body)
            .ok()?
            .model?
            .as_bytes(),
    )
}

/// A model name as [`RequestMeta::model`](super::RequestMeta::model) holds it: `None`
/// when empty, longer than [`MAX_MODEL_LEN`] bytes or not UTF-8.
pub(crate) fn model_name(m: &[u8]) -> Option<Arc<str>> {
    if m.is_empty() || m.len() > MAX_MODEL_LEN {
        return None;
    }
    super::names::name(m)
}

pub(super) fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The `visit_*` methods of a visitor that answers `$none` for every kind of value not
/// written out (skipping arrays and objects whole).
macro_rules! none_for {
    ($none:expr; $($kind:ident),*) => {
        $(none_for!(@one $kind, $none);)*
    };
    (@one str, $none:expr) => {
        fn visit_str<Er: serde::de::Error>(self, _: &str) -> Result<Self::Value, Er> { Ok($none) }
    };
    (@one u64, $none:expr) => {
        fn visit_u64<Er: serde::de::Error>(self, _: u64) -> Result<Self::Value, Er> { Ok($none) }
    };
    (@one i64, $none:expr) => {
        fn visit_i64<Er: serde::de::Error>(self, _: i64) -> Result<Self::Value, Er> { Ok($none) }
    };
    (@one f64, $none:expr) => {
        fn visit_f64<Er: serde::de::Error>(self, _: f64) -> Result<Self::Value, Er> { Ok($none) }
    };
    (@one bool, $none:expr) => {
        fn visit_bool<Er: serde::de::Error>(self, _: bool) -> Result<Self::Value, Er> { Ok($none) }
    };
    (@one unit, $none:expr) => {
        fn visit_unit<Er: serde::de::Error>(self) -> Result<Self::Value, Er> { Ok($none) }
    };
    (@one seq, $none:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($none)
        }
    };
    (@one map, $none:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($none)
        }
    };
}

/// The keys that mean something somewhere in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    Model,
    /// An input key, by its index in [`INPUT_KEYS`].
    Input(usize),
    /// `max_completion_tokens`, `max_tokens`: a maximum at the top level.
    MaxOutput,
    /// `max_output_tokens`: a maximum at the top level and in a generation config.
    MaxOutputTokens,
    N,
    GenerationCamel,
    GenerationSnake,
    /// `maxOutputTokens`: a maximum in a generation config.
    GenerationMax,
    /// `candidateCount`, `candidate_count` (generation config).
    CandidateCount,
    Type,
    Media,
    Other,
}

impl Key {
    pub(super) fn of(k: &[u8]) -> Key {
        if let Some(i) = INPUT_KEYS.iter().position(|x| x.as_bytes() == k) {
            return Key::Input(i);
        }
        match k {
            b"model" => Key::Model,
            b"max_completion_tokens" | b"max_tokens" => Key::MaxOutput,
            b"max_output_tokens" => Key::MaxOutputTokens,
            b"n" => Key::N,
            b"generationConfig" => Key::GenerationCamel,
            b"generation_config" => Key::GenerationSnake,
            b"maxOutputTokens" => Key::GenerationMax,
            b"candidateCount" | b"candidate_count" => Key::CandidateCount,
            b"type" => Key::Type,
            _ if MEDIA_KEYS.iter().any(|m| m.as_bytes() == k) => Key::Media,
            _ => Key::Other,
        }
    }

    /// A maximum at the top level.
    pub(super) fn is_top_max(self) -> bool {
        matches!(self, Key::MaxOutput | Key::MaxOutputTokens)
    }

    /// A maximum in a generation config.
    pub(super) fn is_generation_max(self) -> bool {
        matches!(self, Key::GenerationMax | Key::MaxOutputTokens)
    }
}

/// Reads a map key without allocating when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<Er: serde::de::Error>(self, k: &str) -> Result<Self::Value, Er> {
        Ok(Key::of(k.as_bytes()))
    }
}

/// A non-negative integer, or `None` for any other value (which is skipped).
struct U64Seed;

impl<'de> DeserializeSeed<'de> for U64Seed {
    type Value = Option<u64>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for U64Seed {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_u64<Er: serde::de::Error>(self, v: u64) -> Result<Self::Value, Er> {
        Ok(Some(v))
    }
    fn visit_i64<Er: serde::de::Error>(self, v: i64) -> Result<Self::Value, Er> {
        Ok(u64::try_from(v).ok())
    }
    none_for!(None; f64, str, bool, unit, seq, map);
}

/// The top-level `model`: a string, or `None` for any other value.
struct ModelSeed;

impl<'de> DeserializeSeed<'de> for ModelSeed {
    type Value = Option<Arc<str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ModelSeed {
    type Value = Option<Arc<str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_str<Er: serde::de::Error>(self, v: &str) -> Result<Self::Value, Er> {
        Ok(model_name(v.as_bytes()))
    }
    none_for!(None; u64, i64, f64, bool, unit, seq, map);
}

/// A generation config object: its largest maximum-output field and its candidate count.
struct GenerationSeed;

impl<'de> DeserializeSeed<'de> for GenerationSeed {
    type Value = Option<(Option<u64>, Option<u64>)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for GenerationSeed {
    type Value = Option<(Option<u64>, Option<u64>)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut max, mut count) = (None, None);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if key.is_generation_max() {
                max = max_opt(max, map.next_value_seed(U64Seed)?);
            } else if key == Key::CandidateCount {
                count = max_opt(count, map.next_value_seed(U64Seed)?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Some((max, count)))
    }

    none_for!(None; str, u64, i64, f64, bool, unit, seq);
}

/// What counting one value found.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counted {
    pub(super) tokens: u64,
    /// Of `tokens`, those counted from strings that are not ASCII (dense text).
    pub(super) dense: u64,
    /// Elements, when the value is an array.
    pub(super) items: Option<u64>,
    /// Whether the value is a string naming a media part type.
    pub(super) media_type: bool,
    pub(super) null: bool,
}

impl Counted {
    /// A string of `tokens` (dense unless `ascii`), and whether it names a media part
    /// type.
    #[inline(always)]
    pub(super) fn text(tokens: u64, text: &[u8], ascii: bool) -> Self {
        Counted {
            tokens,
            dense: if ascii { 0 } else { tokens },
            media_type: MEDIA_TYPES.iter().any(|t| t.as_bytes() == text),
            ..Counted::default()
        }
    }

    /// A number (a token id): one token.
    pub(super) fn number() -> Self {
        Counted {
            tokens: 1,
            ..Counted::default()
        }
    }

    pub(super) fn null() -> Self {
        Counted {
            null: true,
            ..Counted::default()
        }
    }

    pub(super) fn array(tokens: u64, dense: u64, items: u64) -> Self {
        Counted {
            tokens,
            dense,
            items: Some(items),
            ..Counted::default()
        }
    }

    /// An object: a media part counts as one medium (not dense), else its values'
    /// tokens.
    pub(super) fn object<E: TokenEstimator + ?Sized>(
        e: &E,
        tokens: u64,
        dense: u64,
        media: bool,
    ) -> Self {
        Counted {
            tokens: if media { e.media_tokens() } else { tokens },
            dense: if media { 0 } else { dense },
            ..Counted::default()
        }
    }
}

/// Counts a value: strings as text, numbers as one token each, media parts as
/// [`media_tokens`](TokenEstimator::media_tokens), objects and arrays by their contents.
struct Count<'a, E: ?Sized> {
    e: &'a E,
    model: Option<&'a str>,
    texts: Texts,
}

impl<E: ?Sized> Clone for Count<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E: ?Sized> Copy for Count<'_, E> {}

impl<'de, E: TokenEstimator + ?Sized> DeserializeSeed<'de> for Count<'_, E> {
    type Value = Counted;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, E: TokenEstimator + ?Sized> Visitor<'de> for Count<'_, E> {
    type Value = Counted;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_str<Er: serde::de::Error>(self, v: &str) -> Result<Counted, Er> {
        let tokens = match self.texts {
            Texts::Length => by_length(v.len()),
            Texts::Estimator => self.e.count_text(v, self.model),
        };
        Ok(Counted::text(tokens, v.as_bytes(), v.is_ascii()))
    }
    fn visit_u64<Er: serde::de::Error>(self, _: u64) -> Result<Counted, Er> {
        Ok(Counted::number())
    }
    fn visit_i64<Er: serde::de::Error>(self, _: i64) -> Result<Counted, Er> {
        Ok(Counted::number())
    }
    fn visit_f64<Er: serde::de::Error>(self, _: f64) -> Result<Counted, Er> {
        Ok(Counted::number())
    }
    fn visit_bool<Er: serde::de::Error>(self, _: bool) -> Result<Counted, Er> {
        Ok(Counted::default())
    }
    fn visit_unit<Er: serde::de::Error>(self) -> Result<Counted, Er> {
        Ok(Counted::null())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counted, A::Error> {
        let (mut tokens, mut dense, mut items) = (0u64, 0u64, 0u64);
        while let Some(c) = seq.next_element_seed(self)? {
            tokens = tokens.saturating_add(c.tokens);
            dense = dense.saturating_add(c.dense);
            items += 1;
        }
        Ok(Counted::array(tokens, dense, items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counted, A::Error> {
        let (mut tokens, mut dense, mut media) = (0u64, 0u64, false);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let c = map.next_value_seed(self)?;
            tokens = tokens.saturating_add(c.tokens);
            dense = dense.saturating_add(c.dense);
            media |= key == Key::Media || (key == Key::Type && c.media_type);
        }
        Ok(Counted::object(self.e, tokens, dense, media))
    }
}

/// The top-level object.
struct TopLevel<'a, E: ?Sized> {
    e: &'a E,
    model: Option<&'a str>,
    texts: Texts,
}

impl<'de, E: TokenEstimator + ?Sized> Visitor<'de> for TopLevel<'_, E> {
    /// `None` when the body is JSON but not an object.
    type Value = Option<BodyFacts>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut facts = BodyFacts::default();
        let count = Count {
            e: self.e,
            model: self.model,
            texts: self.texts,
        };
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Model => facts.model = map.next_value_seed(ModelSeed)?,
                Key::Input(i) => {
                    let c = map.next_value_seed(count)?;
                    facts.add_input(i, c, self.e.per_message());
                }
                k if k.is_top_max() => {
                    facts.max_output = max_opt(facts.max_output, map.next_value_seed(U64Seed)?);
                }
                Key::N => facts.n = max_opt(facts.n, map.next_value_seed(U64Seed)?),
                Key::GenerationCamel => {
                    facts.generation_camel = Some(map.next_value_seed(GenerationSeed)?);
                }
                Key::GenerationSnake => {
                    facts.generation_snake = map.next_value_seed(GenerationSeed)?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(facts))
    }

    none_for!(None; str, u64, i64, f64, bool, unit, seq);
}
