//! A fast reader for the JSON that requests are made of: strings without escapes,
//! integers and plain decimals, moderate nesting. It reads a body the way the serde
//! reader of the parent module does, and answers [`Unsure`] at the first thing it does
//! not handle (an escape, an exponent, a very long number, deep nesting, anything
//! invalid), so the serde reader decides those. Whatever it accepts is valid JSON.

use super::{BodyFacts, Counted, Key, Texts, max_opt, model_name};
use crate::meta::estimate::{TokenEstimator, by_length};

/// The fast reader cannot tell: let serde_json read the body.
#[derive(Debug)]
pub(crate) struct Unsure;

type Fast<T> = Result<T, Unsure>;

/// Nesting beyond this is left to serde_json (whose own limit is 128).
const MAX_DEPTH: u32 = 64;

/// Reads `body` into `facts`, which starts as `BodyFacts::default()` (filled in place:
/// the facts are not moved around): `Ok(false)` when it is not a JSON object (valid or
/// not, as the serde reader answers), `Ok(true)` when read, or [`Unsure`] (`facts` then
/// holds part of what the body says).
pub(crate) fn scan_into<E: TokenEstimator + ?Sized>(
    e: &E,
    body: &[u8],
    model: Option<&str>,
    texts: Texts,
    facts: &mut BodyFacts,
) -> Fast<bool> {
    let mut r = Reader {
        b: body,
        i: 0,
        depth: 0,
        e,
        model,
        texts,
    };
    r.ws();
    if r.peek() != Some(b'{') {
        // Not an object: the serde reader gives `None` for it too, valid or not.
        return Ok(false);
    }
    r.top(facts)?;
    r.ws();
    if r.i != r.b.len() {
        return Err(Unsure);
    }
    Ok(true)
}

/// [`scan_into`] fresh facts: `Ok(None)` when `body` is not a JSON object.
#[cfg(test)]
pub(crate) fn scan<E: TokenEstimator + ?Sized>(
    e: &E,
    body: &[u8],
    model: Option<&str>,
    texts: Texts,
) -> Fast<Option<BodyFacts>> {
    let mut facts = BodyFacts::default();
    Ok(scan_into(e, body, model, texts, &mut facts)?.then_some(facts))
}

/// Eight copies of a byte in a word.
const ONES: u64 = u64::MAX / 255;
/// The high bit of each byte of a word.
const HIGH: u64 = ONES << 7;
/// Bytes examined per step of the wide loop of [`string_end`].
const WIDE: usize = 32;

/// Where the string starting at `rest[0]` ends (its closing quote) and whether it is all
/// ASCII; `None` at an escape, a raw control character (invalid JSON) or the end.
///
/// While the text is ASCII it goes, after a first word, [`WIDE`] bytes a step (vector
/// compares), then eight bytes a step to find the exact byte that stopped it; at the
/// first non-ASCII byte, [`string_end_utf8`] goes on.
#[inline]
fn string_end(rest: &[u8]) -> Option<(usize, bool)> {
    let mut at = 0;
    // A short string (a key, a role, a model) ends in its first word.
    if let Some(first) = rest.first_chunk::<8>() {
        let x = u64::from_le_bytes(*first);
        let found = (stop_flags(x) | x) & HIGH;
        if found != 0 {
            return ended(rest, found.trailing_zeros() as usize / 8);
        }
        at = 8;
    }
    while let Some(chunk) = rest[at..].first_chunk::<WIDE>() {
        if stops_in(chunk) != 0 {
            break;
        }
        at += WIDE;
    }
    let mut words = rest[at..].chunks_exact(8);
    for chunk in &mut words {
        let x = word(chunk);
        let found = (stop_flags(x) | x) & HIGH;
        if found != 0 {
            // The lowest flagged byte is exact.
            let i = at + found.trailing_zeros() as usize / 8;
            return ended(rest, i);
        }
        at += 8;
    }
    let i = at + words.remainder().iter().position(|c| stops(*c))?;
    ended(rest, i)
}

/// A byte that ends an ASCII run: a quote, a backslash, a control or a non-ASCII byte.
#[inline(always)]
fn stops(c: u8) -> bool {
    (c == b'"') | (c == b'\\') | (c.wrapping_sub(0x20) >= 0x60)
}

/// Zero when no byte of `chunk` [`stops`] an ASCII run (a loop the compiler turns into
/// vector compares).
#[inline(always)]
fn stops_in(chunk: &[u8; WIDE]) -> u128 {
    let mut flags = [0u8; WIDE];
    for (f, c) in flags.iter_mut().zip(chunk) {
        *f = u8::from(stops(*c));
    }
    let mut any = [0u8; 16];
    for (j, f) in flags.iter().enumerate() {
        any[j % 16] |= f;
    }
    u128::from_le_bytes(any)
}

/// What the byte `rest[i]` that stopped the ASCII run means: the closing quote of ASCII
/// text, non-ASCII text going on, or the end of what the fast reader reads.
#[inline]
fn ended(rest: &[u8], i: usize) -> Option<(usize, bool)> {
    match rest[i] {
        b'"' => Some((i, true)),
        c if c >= 0x80 => {
            let end = string_end_utf8(&rest[i..])?;
            Some((i + end, false))
        }
        _ => None,
    }
}

/// [`string_end`] for text that may be non-ASCII, eight bytes at a time.
fn string_end_utf8(rest: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut words = rest.chunks_exact(8);
    for chunk in &mut words {
        let found = stop_flags(word(chunk)) & HIGH;
        if found != 0 {
            // The lowest flagged byte is exact.
            let i = at + found.trailing_zeros() as usize / 8;
            return (rest[i] == b'"').then_some(i);
        }
        at += 8;
    }
    let tail = words.remainder();
    let i = tail
        .iter()
        .position(|c| *c == b'"' || *c == b'\\' || *c < 0x20)?;
    (tail[i] == b'"').then_some(at + i)
}

/// Eight bytes as a little-endian word.
#[inline(always)]
fn word(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    u64::from_le_bytes(word)
}

/// The high bit set in each byte of `x` that is a quote, a backslash or a control, and
/// maybe in bytes above such a byte (the lowest flagged byte is exact).
#[inline(always)]
fn stop_flags(x: u64) -> u64 {
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    (quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash)
        | (x.wrapping_sub(ONES * 0x20) & !x)
}

/// Checks that text which is not ASCII is UTF-8.
#[cold]
fn utf8(raw: &[u8]) -> Fast<()> {
    std::str::from_utf8(raw).map(|_| ()).map_err(|_| Unsure)
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
    texts: Texts,
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

    /// A string without escapes, the opening quote next: its bytes and whether they are
    /// all ASCII. Text that is not ASCII is not yet checked to be UTF-8 (see [`utf8`]).
    #[inline]
    fn text(&mut self) -> Fast<(&'a [u8], bool)> {
        self.eat(b'"')?;
        let rest = &self.b[self.i..];
        let (end, ascii) = string_end(rest).ok_or(Unsure)?;
        self.i += end + 1;
        Ok((&rest[..end], ascii))
    }

    /// A key, the opening quote next.
    #[inline]
    fn key(&mut self) -> Fast<Key> {
        let (raw, ascii) = self.text()?;
        if !ascii {
            utf8(raw)?;
        }
        Ok(Key::of(raw))
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
                let (raw, ascii) = self.text()?;
                let tokens = match self.texts {
                    Texts::Length => {
                        if !ascii {
                            utf8(raw)?;
                        }
                        by_length(raw.len())
                    }
                    Texts::Estimator => {
                        let s = std::str::from_utf8(raw).map_err(|_| Unsure)?;
                        self.e.count_text(s, self.model)
                    }
                };
                Ok(Counted::text(tokens, raw, ascii))
            }
            b'{' => {
                self.enter()?;
                let (mut tokens, mut dense, mut media) = (0u64, 0u64, false);
                self.members(|r, key| {
                    let c = r.count()?;
                    tokens = tokens.saturating_add(c.tokens);
                    dense = dense.saturating_add(c.dense);
                    media |= key == Key::Media || (key == Key::Type && c.media_type);
                    Ok(())
                })?;
                self.depth -= 1;
                Ok(Counted::object(self.e, tokens, dense, media))
            }
            b'[' => {
                self.enter()?;
                let (mut tokens, mut dense, mut items) = (0u64, 0u64, 0u64);
                self.elements(|r| {
                    let c = r.count()?;
                    tokens = tokens.saturating_add(c.tokens);
                    dense = dense.saturating_add(c.dense);
                    items += 1;
                    Ok(())
                })?;
                self.depth -= 1;
                Ok(Counted::array(tokens, dense, items))
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
            let key = self.key()?;
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
    fn top(&mut self, facts: &mut BodyFacts) -> Fast<()> {
        self.enter()?;
        self.members(|r, key| {
            match key {
                Key::Model => {
                    r.ws();
                    facts.model = if r.peek() == Some(b'"') {
                        let (m, ascii) = r.text()?;
                        if !ascii {
                            utf8(m)?;
                        }
                        model_name(m)
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
        Ok(())
    }
}
