//! A fast reader for the JSON that requests are made of: strings without escapes,
//! integers and plain decimals, moderate nesting. It reads a body the way the serde
//! reader of the parent module does, and answers [`Unsure`] at the first thing it does
//! not handle (an escape, an exponent, a very long number, deep nesting, anything
//! invalid), so the serde reader decides those. Whatever it accepts is valid JSON.

use super::{BodyFacts, Counted, Key, MAX_MODEL_LEN, max_opt};
use crate::meta::estimate::TokenEstimator;

/// The fast reader cannot tell: let serde_json read the body.
#[derive(Debug)]
pub(crate) struct Unsure;

type Fast<T> = Result<T, Unsure>;

/// Nesting beyond this is left to serde_json (whose own limit is 128).
const MAX_DEPTH: u32 = 64;

/// Reads `body`: `Ok(None)` when it is not a JSON object (valid or not, as the serde
/// reader answers), `Ok(Some)` with what it found, or [`Unsure`].
pub(crate) fn scan<E: TokenEstimator + ?Sized>(
    e: &E,
    body: &[u8],
    model: Option<&str>,
) -> Fast<Option<BodyFacts>> {
    let mut r = Reader {
        b: body,
        i: 0,
        depth: 0,
        e,
        model,
    };
    r.ws();
    if r.peek() != Some(b'{') {
        // Not an object: the serde reader gives `None` for it too, valid or not.
        return Ok(None);
    }
    let facts = r.top()?;
    r.ws();
    if r.i != r.b.len() {
        return Err(Unsure);
    }
    Ok(Some(facts))
}

/// Where the string starting at `rest[0]` ends (its closing quote), eight bytes at a
/// time; `None` at an escape, a raw control character (invalid JSON) or the end.
#[inline]
fn string_end(rest: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let stop = |c: u8| c == b'"' || c == b'\\' || c < 0x20;
    let mut at = 0;
    let mut chunks = rest.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let found = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        if found & HIGH != 0 {
            // The lowest flagged byte is exact.
            let i = at + (found & HIGH).trailing_zeros() as usize / 8;
            return (rest[i] == b'"').then_some(i);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    let i = tail.iter().position(|c| stop(*c))?;
    (tail[i] == b'"').then_some(at + i)
}

/// A number: a non-negative integer that fits a `u64`, or another valid number.
enum Number {
    U64(u64),
    Other,
}

struct Reader<'a, 'e, E: ?Sized> {
    b: &'a [u8],
    i: usize,
    depth: u32,
    e: &'e E,
    model: Option<&'e str>,
}

impl<'a, E: TokenEstimator + ?Sized> Reader<'a, '_, E> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Fast<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// A string without escapes, the opening quote next.
    #[inline]
    fn string(&mut self) -> Fast<&'a str> {
        self.eat(b'"')?;
        let rest = &self.b[self.i..];
        let end = string_end(rest).ok_or(Unsure)?;
        let raw = &rest[..end];
        let s = std::str::from_utf8(raw).map_err(|_| Unsure)?;
        self.i += end + 1;
        Ok(s)
    }

    fn literal(&mut self, word: &[u8]) -> Fast<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// A number, its first byte next. Exponents, `-0` and integers of more than 18
    /// digits are left to serde_json (range and sign rules).
    fn number(&mut self) -> Fast<Number> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let start = self.i;
        let int = match self.peek() {
            Some(b'0') => {
                self.i += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Unsure),
        };
        if int > 18 {
            return Err(Unsure);
        }
        let digits = &self.b[start..self.i];
        let mut fraction = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Unsure);
            }
            fraction = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            return Err(Unsure);
        }
        if fraction {
            return Ok(Number::Other);
        }
        if negative {
            return if digits == b"0" {
                Err(Unsure)
            } else {
                Ok(Number::Other)
            };
        }
        let v = digits
            .iter()
            .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
        Ok(Number::U64(v))
    }

    /// Counts any value, as the serde reader's `Count` does.
    fn count(&mut self) -> Fast<Counted> {
        self.ws();
        match self.peek().ok_or(Unsure)? {
            b'"' => {
                let s = self.string()?;
                Ok(Counted::text(self.e, s, self.model))
            }
            b'{' => {
                self.enter()?;
                let (mut tokens, mut media) = (0u64, false);
                self.members(|r, key| {
                    let c = r.count()?;
                    tokens = tokens.saturating_add(c.tokens);
                    media |= key == Key::Media || (key == Key::Type && c.media_type);
                    Ok(())
                })?;
                self.depth -= 1;
                Ok(Counted::object(self.e, tokens, media))
            }
            b'[' => {
                self.enter()?;
                let (mut tokens, mut items) = (0u64, 0u64);
                self.elements(|r| {
                    tokens = tokens.saturating_add(r.count()?.tokens);
                    items += 1;
                    Ok(())
                })?;
                self.depth -= 1;
                Ok(Counted::array(tokens, items))
            }
            b't' => self.literal(b"true").map(|()| Counted::default()),
            b'f' => self.literal(b"false").map(|()| Counted::default()),
            b'n' => self.literal(b"null").map(|()| Counted::null()),
            _ => self.number().map(|_| Counted::number()),
        }
    }

    /// Skips any value.
    fn skip(&mut self) -> Fast<()> {
        self.count().map(|_| ())
    }

    /// A non-negative integer, or `None` for any other value (skipped).
    fn u64(&mut self) -> Fast<Option<u64>> {
        self.ws();
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => Ok(match self.number()? {
                Number::U64(v) => Some(v),
                Number::Other => None,
            }),
            _ => self.skip().map(|()| None),
        }
    }

    fn enter(&mut self) -> Fast<()> {
        self.depth += 1;
        self.i += 1;
        if self.depth > MAX_DEPTH {
            return Err(Unsure);
        }
        Ok(())
    }

    /// The members of an object whose `{` was read, each handed to `f` with its key
    /// (which `f` must read the value of); reads the closing `}`.
    fn members(&mut self, mut f: impl FnMut(&mut Self, Key) -> Fast<()>) -> Fast<()> {
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = Key::of(self.string()?);
            self.eat(b':')?;
            f(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// The elements of an array whose `[` was read; reads the closing `]`.
    fn elements(&mut self, mut f: impl FnMut(&mut Self) -> Fast<()>) -> Fast<()> {
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            f(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// A generation config: its largest maximum and its candidate count, or `None` when
    /// the value is not an object.
    fn generation(&mut self) -> Fast<Option<(Option<u64>, Option<u64>)>> {
        self.ws();
        if self.peek() != Some(b'{') {
            return self.skip().map(|()| None);
        }
        self.enter()?;
        let (mut max, mut count) = (None, None);
        self.members(|r, key| {
            if key.is_generation_max() {
                max = max_opt(max, r.u64()?);
            } else if key == Key::CandidateCount {
                count = max_opt(count, r.u64()?);
            } else {
                r.skip()?;
            }
            Ok(())
        })?;
        self.depth -= 1;
        Ok(Some((max, count)))
    }

    /// The top-level object, its `{` next.
    fn top(&mut self) -> Fast<BodyFacts> {
        self.enter()?;
        let mut facts = BodyFacts::default();
        self.members(|r, key| {
            match key {
                Key::Model => {
                    r.ws();
                    facts.model = if r.peek() == Some(b'"') {
                        let m = r.string()?;
                        (!m.is_empty() && m.len() <= MAX_MODEL_LEN).then(|| m.to_owned())
                    } else {
                        r.skip()?;
                        None
                    };
                }
                Key::Input(i) => {
                    let c = r.count()?;
                    facts.add_input(i, c, r.e.per_message());
                }
                k if k.is_top_max() => facts.max_output = max_opt(facts.max_output, r.u64()?),
                Key::N => facts.n = max_opt(facts.n, r.u64()?),
                Key::GenerationCamel => facts.generation_camel = Some(r.generation()?),
                Key::GenerationSnake => facts.generation_snake = r.generation()?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        self.depth -= 1;
        Ok(facts)
    }
}
