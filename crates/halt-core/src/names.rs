//! Name normalisation and glob matching, so `Delete_File`, `ｄｅｌｅｔｅ_file` and
//! `dele\u{200b}te_file` are the same function to every guard.
//!
//! Normalising means: default-ignorable characters (zero-width and friends) removed, Unicode
//! NFKC, lower case, surrounding whitespace trimmed, repeated until nothing changes.
//! Patterns are fnmatch-like: `*` (which crosses `/`), `?`, `[abc]`, `[!abc]`.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Nothing is left after normalisation.
    #[error("name is empty")]
    Empty,
    /// The name holds a control character (shown as its code point).
    #[error("name contains the control character U+{0:04X}")]
    ControlCharacter(u32),
    /// A path climbs above its root with `..`.
    #[error("path `{0}` climbs above its root")]
    EscapesRoot(String),
}

/// Why a glob pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob pattern `{pattern}`: {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Normalises a name for comparison (see the module documentation). Idempotent.
///
/// ```
/// use halt_core::names::normalize;
///
/// assert_eq!(normalize("  Delete_File "), "delete_file");
/// assert_eq!(normalize("ｄｅｌｅｔｅ\u{200b}_ＦＩＬＥ"), "delete_file");
/// ```
#[must_use]
pub fn normalize(name: &str) -> Cow<'_, str> {
    if name.is_ascii() {
        let trimmed = name.trim();
        return if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(trimmed.to_ascii_lowercase())
        } else {
            Cow::Borrowed(trimmed)
        };
    }
    let mut current = normalize_once(name);
    // NFKC and lower-casing can each undo the other's work on rare characters: repeat until stable.
    for _ in 0..4 {
        let next = normalize_once(&current);
        if next == current {
            break;
        }
        current = next;
    }
    Cow::Owned(current)
}

fn normalize_once(name: &str) -> String {
    let stripped: String = name.chars().filter(|c| !is_default_ignorable(*c)).collect();
    let folded: String = stripped.nfkc().flat_map(char::to_lowercase).collect();
    let cleaned: String = folded.nfkc().filter(|c| !is_default_ignorable(*c)).collect();
    cleaned.trim().to_owned()
}

/// Normalises a name and checks that it is usable: not empty, no control characters.
///
/// # Errors
/// [`NameError::Empty`] or [`NameError::ControlCharacter`].
pub fn validate(name: &str) -> Result<Cow<'_, str>, NameError> {
    if name.is_ascii() {
        return validate_ascii(name).map(|(n, _)| n);
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(NameError::ControlCharacter(u32::from(c)));
    }
    let n = normalize(name);
    if n.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(c) = n.chars().find(|c| c.is_control()) {
        return Err(NameError::ControlCharacter(u32::from(c)));
    }
    Ok(n)
}

/// [`validate`] for an ASCII name (the common case), in one pass over it; also says whether it
/// holds a path separator.
fn validate_ascii(name: &str) -> Result<(Cow<'_, str>, bool), NameError> {
    const CONTROL: u8 = 1;
    const UPPER: u8 = 2;
    const SEPARATOR: u8 = 4;
    /// What each ASCII byte is, looked up rather than tested (this runs on every target).
    const CLASS: [u8; 128] = {
        let mut class = [0; 128];
        let mut b = 0;
        while b < 128 {
            class[b] = if b < 0x20 || b == 0x7f {
                CONTROL
            } else if b >= b'A' as usize && b <= b'Z' as usize {
                UPPER
            } else if b == b'/' as usize || b == b'\\' as usize {
                SEPARATOR
            } else {
                0
            };
            b += 1;
        }
        class
    };
    let seen = name.bytes().fold(0, |seen, b| seen | CLASS[usize::from(b & 0x7f)]);
    if seen & CONTROL != 0 {
        let b = name.bytes().find(u8::is_ascii_control).unwrap_or_default();
        return Err(NameError::ControlCharacter(u32::from(b)));
    }
    let (upper, separator) = (seen & UPPER != 0, seen & SEPARATOR != 0);
    let trimmed = name.trim_ascii();
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    let n = if upper { Cow::Owned(trimmed.to_ascii_lowercase()) } else { Cow::Borrowed(trimmed) };
    Ok((n, separator))
}

/// Normalises a resource id and, if it is a path (it holds `/`), resolves `.`, `..` and repeated
/// separators, so `temp_/../inbox` is `inbox`.
///
/// # Errors
/// As [`validate`], and [`NameError::EscapesRoot`] for a path that climbs above its root.
pub fn resolve_resource(id: &str) -> Result<Cow<'_, str>, NameError> {
    let (n, separator) = if id.is_ascii() {
        validate_ascii(id)?
    } else {
        let n = validate(id)?;
        let separator = n.contains(['/', '\\']);
        (n, separator)
    };
    // `.` and `..` alone are paths too: the current directory, and its parent.
    if !separator && n != "." && n != ".." {
        return Ok(n);
    }
    let unified = n.replace('\\', "/");
    let absolute = unified.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in unified.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(NameError::EscapesRoot(n.into_owned()));
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    if joined.is_empty() && !absolute {
        return Err(NameError::Empty);
    }
    Ok(Cow::Owned(if absolute { format!("/{joined}") } else { joined }))
}

/// A map keyed by names (an agent's rules, a function's price), keyed by the normalised names
/// instead. Two keys that normalise to one name are an error, never settled by their order:
/// `{Bot: [...], bot: []}` would otherwise leave one of them unread.
///
/// ```
/// use std::collections::BTreeMap;
/// use halt_core::names::normalize_keys;
///
/// let prices = BTreeMap::from([("Render_Video".to_owned(), 6)]);
/// assert_eq!(normalize_keys(&prices)?["render_video"], 6);
/// let clash = BTreeMap::from([("Bot".to_owned(), 1), ("bot ".to_owned(), 2)]);
/// assert!(normalize_keys(&clash).is_err());
/// # Ok::<(), halt_core::names::PatternError>(())
/// ```
///
/// # Errors
/// A key that is empty once normalised, or two keys that normalise to one name.
pub fn normalize_keys<V: Clone>(
    map: &std::collections::BTreeMap<String, V>,
) -> Result<std::collections::BTreeMap<String, V>, PatternError> {
    let mut out = std::collections::BTreeMap::new();
    let mut first: std::collections::BTreeMap<String, &str> = std::collections::BTreeMap::new();
    for (key, value) in map {
        let name = normalize(key).into_owned();
        if name.is_empty() {
            return Err(PatternError { pattern: key.clone(), reason: "the name is empty".into() });
        }
        if let Some(other) = first.insert(name.clone(), key) {
            return Err(PatternError {
                pattern: key.clone(),
                reason: format!("`{other}` and `{key}` are the same name once normalised"),
            });
        }
        out.insert(name, value.clone());
    }
    Ok(out)
}

/// True for Unicode's Default_Ignorable_Code_Point characters: invisible, and so a way to make
/// two names (or two numbers) look alike. Normalising removes them.
///
/// ```
/// assert!(halt_core::names::is_default_ignorable('\u{200b}'));
/// assert!(!halt_core::names::is_default_ignorable('a'));
/// ```
#[must_use]
pub fn is_default_ignorable(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// A compiled set of glob patterns matched against normalised names.
///
/// ```
/// use halt_core::names::NamePatterns;
///
/// let p = NamePatterns::new(["get_*", "list_[!x]*"])?;
/// assert!(p.is_match("GET_user"));
/// assert!(p.is_match("list_users"));
/// assert!(!p.is_match("list_xs"));
/// assert!(!p.is_match("delete_user"));
/// # Ok::<(), halt_core::names::PatternError>(())
/// ```
#[derive(Debug, Clone)]
pub struct NamePatterns {
    /// Patterns made of a literal and stars at its ends, matched with plain string tests.
    simple: Vec<(usize, Simple)>,
    /// The others, and the index each has in `patterns`.
    set: globset::GlobSet,
    set_index: Vec<usize>,
    patterns: Vec<String>,
}

/// A pattern that needs no glob engine.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Simple {
    /// `abc`
    Exact(String),
    /// `abc*`
    Prefix(String),
    /// `*abc`
    Suffix(String),
    /// `*abc*`
    Contains(String),
    /// `*`
    Any,
}

impl Simple {
    /// The simple form of a normalised pattern, if it has one: no `?`, classes, braces or
    /// escapes, and stars only at its ends.
    fn of(p: &str) -> Option<Self> {
        if p.contains(['?', '[', ']', '{', '}', '\\']) {
            return None;
        }
        let lead = p.starts_with('*');
        let trail = p.len() > 1 && p.ends_with('*');
        let core = p.trim_start_matches('*').trim_end_matches('*');
        if core.contains('*') {
            return None;
        }
        let core = core.to_owned();
        Some(match (lead, trail) {
            _ if core.is_empty() => Self::Any,
            (false, false) => Self::Exact(core),
            (false, true) => Self::Prefix(core),
            (true, false) => Self::Suffix(core),
            (true, true) => Self::Contains(core),
        })
    }

    fn is_match(&self, name: &str) -> bool {
        match self {
            Self::Exact(c) => name == c,
            Self::Prefix(c) => name.starts_with(c.as_str()),
            Self::Suffix(c) => name.ends_with(c.as_str()),
            Self::Contains(c) => name.contains(c.as_str()),
            Self::Any => true,
        }
    }
}

impl NamePatterns {
    /// Compiles patterns (each normalised first).
    ///
    /// # Errors
    /// A pattern that is empty after normalisation or is not a valid glob.
    pub fn new<I, S>(patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut builder = globset::GlobSetBuilder::new();
        let mut kept = Vec::new();
        let mut simple = Vec::new();
        let mut set_index = Vec::new();
        for raw in patterns {
            let raw = raw.as_ref();
            let p = normalize(raw).into_owned();
            if p.is_empty() {
                return Err(PatternError { pattern: raw.to_owned(), reason: "pattern is empty".into() });
            }
            // Every pattern is checked by the glob compiler, even one matched without it.
            let glob = globset::GlobBuilder::new(&fnmatch_to_globset(&p))
                .literal_separator(false)
                .backslash_escape(true)
                .empty_alternates(false)
                .build()
                .map_err(|e| PatternError { pattern: raw.to_owned(), reason: e.kind().to_string() })?;
            match Simple::of(&p) {
                Some(s) => simple.push((kept.len(), s)),
                None => {
                    builder.add(glob);
                    set_index.push(kept.len());
                }
            }
            kept.push(p);
        }
        let set = builder.build().map_err(|e| PatternError { pattern: kept.join(", "), reason: e.to_string() })?;
        Ok(Self { simple, set, set_index, patterns: kept })
    }

    /// An empty set, which matches nothing.
    #[must_use]
    pub fn empty() -> Self {
        Self { simple: Vec::new(), set: globset::GlobSet::empty(), set_index: Vec::new(), patterns: Vec::new() }
    }

    /// True when no pattern was given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The normalised patterns, in order.
    #[must_use]
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether an already-normalised name matches any pattern.
    #[must_use]
    pub fn is_match_normalized(&self, name: &str) -> bool {
        self.simple.iter().any(|(_, s)| s.is_match(name)) || (!self.set_index.is_empty() && self.set.is_match(name))
    }

    /// Whether a name matches any pattern, normalising it first.
    #[must_use]
    pub fn is_match(&self, name: &str) -> bool {
        self.is_match_normalized(&normalize(name))
    }

    /// The first pattern (in the order given) that matches an already-normalised name.
    #[must_use]
    pub fn first_match_normalized(&self, name: &str) -> Option<&str> {
        let simple = self.simple.iter().find(|(_, s)| s.is_match(name)).map(|(i, _)| *i);
        let globbed = if self.set_index.is_empty() || !self.set.is_match(name) {
            None
        } else {
            self.set.matches(name).into_iter().map(|j| self.set_index[j]).min()
        };
        let first = match (simple, globbed) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(self.patterns[first].as_str())
    }
}

/// Name fragments, normalised, that a name may contain: `delete` is in `bulk_delete_files`,
/// `luxury` is in `luxury_goods`. An entry with glob characters (`*`, `?`, `[`) is a pattern the
/// whole name must match instead: `*` matches every name, never only a name holding a star.
///
/// ```
/// use halt_core::names::NameFragments;
///
/// let f = NameFragments::new(["Delete", "purge"])?;
/// assert_eq!(f.first_in("bulk_delete_files"), Some("delete"));
/// assert!(!f.is_in("read_file"));
/// let every = NameFragments::new(["*"])?;
/// assert_eq!(every.first_in("office"), Some("*"));
/// # Ok::<(), halt_core::names::PatternError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct NameFragments {
    fragments: Vec<String>,
    /// The entries with glob characters, matched against the whole name.
    globs: Option<NamePatterns>,
    /// For each fragment, the pairs of adjacent bytes it holds, as bits ([`pairs`]): a name holds
    /// the fragment only if it holds them all, which most names on every call's path do not.
    pairs: Vec<u64>,
}

/// The pairs of adjacent bytes of `text`, each hashed to one of 64 bits.
fn pairs(text: &[u8]) -> u64 {
    text.windows(2).fold(0, |bits, w| {
        let pair = u32::from(w[0]) << 8 | u32::from(w[1]);
        bits | 1 << (pair.wrapping_mul(0x9E37_79B9) >> 26)
    })
}

impl PartialEq for NameFragments {
    fn eq(&self, other: &Self) -> bool {
        self.fragments == other.fragments
            && self.globs.as_ref().map(NamePatterns::patterns) == other.globs.as_ref().map(NamePatterns::patterns)
    }
}

impl Eq for NameFragments {}

impl NameFragments {
    /// Normalises the fragments.
    ///
    /// # Errors
    /// A fragment that is empty after normalisation.
    pub fn new<I, S>(fragments: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        fragments
            .into_iter()
            .map(|f| {
                let n = normalize(f.as_ref()).into_owned();
                if n.is_empty() {
                    Err(PatternError { pattern: f.as_ref().to_owned(), reason: "fragment is empty".into() })
                } else {
                    Ok(n)
                }
            })
            .collect::<Result<Vec<String>, _>>()
            .and_then(|entries| {
                let (globs, fragments): (Vec<String>, Vec<String>) =
                    entries.into_iter().partition(|e| e.contains(['*', '?', '[']));
                let globs = if globs.is_empty() { None } else { Some(NamePatterns::new(&globs)?) };
                let pairs = fragments.iter().map(|f| self::pairs(f.as_bytes())).collect();
                Ok(Self { fragments, globs, pairs })
            })
    }

    /// True when no fragment was given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fragments.is_empty() && self.globs.is_none()
    }

    /// The normalised fragments without glob characters, in order.
    #[must_use]
    pub fn fragments(&self) -> &[String] {
        &self.fragments
    }

    /// The first fragment (in the order given) that an already-normalised name contains, else
    /// the first glob entry it matches.
    #[must_use]
    pub fn first_in(&self, name: &str) -> Option<&str> {
        self.fragments
            .iter()
            .find(|f| name.contains(f.as_str()))
            .map(String::as_str)
            .or_else(|| self.globs.as_ref().and_then(|g| g.first_match_normalized(name)))
    }

    /// Whether an already-normalised name contains any fragment or matches a glob entry.
    #[must_use]
    pub fn is_in(&self, name: &str) -> bool {
        if self.globs.as_ref().is_some_and(|g| g.is_match_normalized(name)) {
            return true;
        }
        if self.fragments.is_empty() {
            return false;
        }
        let held = pairs(name.as_bytes());
        self.pairs.iter().zip(&self.fragments).any(|(&p, f)| held & p == p && name.contains(f.as_str()))
    }
}

/// Rewrites fnmatch syntax into globset syntax: `[!x]` becomes `[^x]`, the braces globset would
/// read as alternation are taken literally, and `**` is one `*`, as fnmatch has them.
fn fnmatch_to_globset(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 4);
    let mut chars = p.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'!') {
                    chars.next();
                    out.push('!');
                }
                // A `]` first in a class is a literal.
                if chars.peek() == Some(&']') {
                    chars.next();
                    out.push(']');
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '{' | '}' if !in_class => {
                out.push('\\');
                out.push(c);
            }
            // In fnmatch `**` is just `*`; globset would read it as "any directories".
            '*' if !in_class && out.ends_with('*') && !out.ends_with("\\*") => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evasions_normalise_to_the_plain_name() {
        assert_eq!(normalize("DELETE_FILE"), "delete_file");
        assert_eq!(normalize("ｄｅｌｅｔｅ_ｆｉｌｅ"), "delete_file");
        assert_eq!(normalize("del\u{200b}ete_\u{feff}file"), "delete_file");
        assert_eq!(normalize("\u{3000}delete_file\u{00a0}"), "delete_file");
        assert_eq!(normalize("ǅ"), "dž");
        assert_eq!(normalize("Ω"), "ω");
    }

    #[test]
    fn validate_refuses_empty_and_control() {
        assert_eq!(validate("   "), Err(NameError::Empty));
        assert_eq!(validate("\u{200b}"), Err(NameError::Empty));
        assert_eq!(validate("a\nb"), Err(NameError::ControlCharacter(0x0a)));
        assert_eq!(validate("a\u{0}"), Err(NameError::ControlCharacter(0)));
        assert_eq!(validate("a\u{85}b"), Err(NameError::ControlCharacter(0x85)));
        assert_eq!(validate("Ok").unwrap(), "ok");
    }

    #[test]
    fn resources_resolve_paths() {
        assert_eq!(resolve_resource("temp_/../inbox").unwrap(), "inbox");
        assert_eq!(resolve_resource("a//b/./c").unwrap(), "a/b/c");
        assert_eq!(resolve_resource("/var/../etc").unwrap(), "/etc");
        assert_eq!(resolve_resource("INBOX").unwrap(), "inbox");
        assert_eq!(resolve_resource("a\\..\\b").unwrap(), "b");
        assert!(matches!(resolve_resource("../etc"), Err(NameError::EscapesRoot(_))));
        assert!(matches!(resolve_resource("a/../../b"), Err(NameError::EscapesRoot(_))));
        assert_eq!(resolve_resource("a/.."), Err(NameError::Empty));
        // Found by the generated tests: alone, they are paths too.
        assert!(matches!(resolve_resource(".."), Err(NameError::EscapesRoot(_))));
        assert!(matches!(resolve_resource(" .. "), Err(NameError::EscapesRoot(_))));
        assert_eq!(resolve_resource("."), Err(NameError::Empty));
    }

    #[test]
    fn fnmatch_semantics() {
        let p = NamePatterns::new(["temp_*"]).unwrap();
        assert!(p.is_match("temp_a/b/c"), "* crosses /");
        assert!(p.is_match("TEMP_x"));
        let q = NamePatterns::new(["file?.txt", "[abc]x", "[!abc]y", "{a,b}"]).unwrap();
        assert!(q.is_match("file1.txt"));
        assert!(!q.is_match("file12.txt"));
        assert!(q.is_match("bx"));
        assert!(!q.is_match("dx"));
        assert!(q.is_match("dy"));
        assert!(!q.is_match("ay"));
        assert!(q.is_match("{a,b}"), "braces are literal");
        assert!(!q.is_match("a"));
        assert_eq!(q.first_match_normalized("bx"), Some("[abc]x"));
    }

    #[test]
    fn simple_patterns_match_like_globs() {
        let names = ["drop_table", "table_drop", "x/drop_y", "drop", "undrop", "", "a*b", "get_user_by_id"];
        for p in ["drop_*", "*_drop", "*drop*", "drop", "*", "get_*_id", "d?op", "[d]rop*"] {
            let fast = NamePatterns::new([p]).unwrap();
            let glob = globset::GlobBuilder::new(&fnmatch_to_globset(p))
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .unwrap()
                .compile_matcher();
            for n in names {
                assert_eq!(fast.is_match_normalized(n), glob.is_match(n), "pattern {p:?} on {n:?}");
            }
        }
        let mixed = NamePatterns::new(["[x]*", "drop_*", "*"]).unwrap();
        assert_eq!(mixed.first_match_normalized("drop_table"), Some("drop_*"));
        assert_eq!(mixed.first_match_normalized("xy"), Some("[x]*"));
        assert_eq!(mixed.first_match_normalized("zz"), Some("*"));
    }

    proptest::proptest! {
        #[test]
        fn fragments_are_found_wherever_they_are(
            fragments in proptest::collection::vec("[a-e_]{1,4}|[a-z]{5,9}", 1..6),
            name in "[a-e_]{0,12}|[a-z_]{0,24}|[a-eé_]{0,10}",
        ) {
            let f = NameFragments::new(&fragments).unwrap();
            let plain = f.fragments().iter().any(|x| name.contains(x.as_str()));
            proptest::prop_assert_eq!(f.is_in(&name), plain, "{:?} in {:?}", fragments, name);
            let inside = format!("{name}{}{name}", f.fragments()[0]);
            proptest::prop_assert!(f.is_in(&inside), "{:?} in {:?}", fragments, inside);
        }

        #[test]
        fn simple_patterns_agree_with_globset(p in "[ab*_/]{1,6}", n in "[ab_/]{0,8}") {
            let fast = NamePatterns::new([p.as_str()]).unwrap();
            let glob = globset::GlobBuilder::new(&fnmatch_to_globset(&p))
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .unwrap()
                .compile_matcher();
            proptest::prop_assert_eq!(fast.is_match_normalized(&n), glob.is_match(n.as_str()), "pattern {:?} on {:?}", p, n);
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(NamePatterns::new(["[abc"]).is_err());
        assert!(NamePatterns::new(["  "]).is_err());
        assert!(NamePatterns::empty().first_match_normalized("x").is_none());
        assert!(!NamePatterns::empty().is_match("x"));
    }
}
