//! Sensitive field names: a key's words, and whether they name a field.

use arrayvec::ArrayVec;

/// The fields' first words, and which end with each byte (as bits), to tell at once whether a
/// key may hold one as a word (see `Redactor::first_words`): a word of the key must end where
/// the field's word ends, and most keys have one or two word ends.
pub(crate) struct FirstWords {
    pub(crate) ending: Box<[u64; 256]>,
    pub(crate) words: Vec<ArrayVec<u8, 32>>,
}

impl FirstWords {
    pub(crate) fn new(fields: &[Field]) -> Option<Self> {
        if fields.len() > 64 {
            return None;
        }
        let mut ending = Box::new([0; 256]);
        let mut words = Vec::with_capacity(fields.len());
        for (i, f) in fields.iter().enumerate() {
            let w = f.words[0].as_bytes();
            let &last = w.last()?;
            if !w.is_ascii() {
                return None;
            }
            ending[usize::from(last.to_ascii_lowercase())] |= 1 << i;
            ending[usize::from(last.to_ascii_uppercase())] |= 1 << i;
            words.push(ArrayVec::try_from(w).ok()?);
        }
        Some(Self { ending, words })
    }

    /// Whether an ASCII key may hold some field's first word as one of its words: one ends,
    /// ignoring case, where a word of the key may end (before anything but a small letter or a
    /// digit: a little more often than [`ascii_words`] splits).
    pub(crate) fn in_key(&self, key: &[u8]) -> bool {
        /// Bytes that continue a word: small letters and digits.
        const CONTINUES: [bool; 256] = {
            let mut t = [false; 256];
            let mut b = 0;
            while b < 256 {
                t[b] = (b >= b'a' as usize && b <= b'z' as usize) || (b >= b'0' as usize && b <= b'9' as usize);
                b += 1;
            }
            t
        };
        let Some((&last, _)) = key.split_last() else { return false };
        key.windows(2).enumerate().any(|(i, pair)| {
            let bits = self.ending[usize::from(pair[0])];
            bits != 0 && !CONTINUES[usize::from(pair[1])] && self.ends_at(key, i, bits)
        }) || self.ends_at(key, key.len() - 1, self.ending[usize::from(last)])
    }

    /// Whether one of the words in `bits` ends at `key[end]`, ignoring case.
    pub(crate) fn ends_at(&self, key: &[u8], end: usize, mut bits: u64) -> bool {
        while bits != 0 {
            let w = &self.words[bits.trailing_zeros() as usize];
            bits &= bits - 1;
            if end + 1 >= w.len() && key[end + 1 - w.len()..=end].eq_ignore_ascii_case(w) {
                return true;
            }
        }
        false
    }
}

/// A sensitive field name, as the sequence of its lower-case words.
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) words: Vec<String>,
}

/// The words of a key: split on `_`, `-`, `.`, spaces, lower-to-upper case changes, and
/// before the last capital of a run of capitals followed by a small letter (`AWSSecretKey` is
/// `aws`, `secret`, `key`).
pub(crate) fn words(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        let acronym_end = c.is_uppercase()
            && i > 0
            && chars[i - 1].is_uppercase()
            && chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        if c.is_uppercase() && (prev_lower || acronym_end) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The words of an ASCII key as [`words`] splits it, in their own case, borrowed.
pub(crate) fn ascii_words<'k>(key: &'k str, mut each: impl FnMut(&'k str)) {
    let mut start = None;
    let mut prev_lower = false;
    let bytes = key.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if let Some(s) = start.take() {
                each(&key[s..i]);
            }
            prev_lower = false;
            continue;
        }
        let acronym_end = c.is_ascii_uppercase()
            && i > 0
            && bytes[i - 1].is_ascii_uppercase()
            && bytes.get(i + 1).is_some_and(u8::is_ascii_lowercase);
        match start {
            Some(s) if c.is_ascii_uppercase() && (prev_lower || acronym_end) => {
                each(&key[s..i]);
                start = Some(i);
            }
            Some(_) => {}
            None => start = Some(i),
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    if let Some(s) = start {
        each(&key[s..]);
    }
}

/// Last words of a key that say it holds something *about* a secret, not the secret itself:
/// `token_count`, `password_policy`, `api_key_id`, `secret_name`, `private_key_path`.
pub(crate) const ABOUT_WORDS: [&str; 30] = [
    "count", "length", "len", "size", "type", "kind", "name", "id", "ids", "policy", "expiry", "expires", "ttl", "url",
    "uri", "enabled", "required", "min", "max", "hint", "format", "file", "path", "version", "status", "strength",
    "rotation", "created", "updated", "label",
];
