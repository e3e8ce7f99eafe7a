//! [`Redactor`]: finds sensitive data in a JSON value, in one pass, and redacts it in place.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use arrayvec::ArrayVec;
use regex::{Regex, RegexBuilder};
use regex_automata::{Input, MatchKind, PatternSet, meta};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::detectors::{self, Edges, GROUPS};
use crate::fold::fold;
use crate::keys::{ABOUT_WORDS, Field, FirstWords, ascii_words, words};
use crate::walk::{Walk, holds_data};

/// One piece of sensitive data found. It never carries the value itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The detector (`ssn`, `credit_card`, a custom pattern's name) or `field:<name>` for a
    /// sensitive field.
    pub pattern: String,
    /// Where it is, as a JSON path (`$.user.ssn`, `$.items[2]`).
    pub path: String,
    /// A masked preview: at most the last four characters, the rest as `*`.
    pub preview: String,
}

impl Finding {
    /// The finding as JSON, as it serialises, its texts moved rather than copied.
    #[must_use]
    pub fn into_json(self) -> Value {
        let mut o = Map::new();
        o.insert("pattern".to_owned(), Value::String(self.pattern));
        o.insert("path".to_owned(), Value::String(self.path));
        o.insert("preview".to_owned(), Value::String(self.preview));
        Value::Object(o)
    }
}

/// Why a value was not scanned. A guard denies in either case: what cannot be scanned is not
/// allowed through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// Nested deeper than the scan depth.
    TooDeep {
        /// Where the limit was passed.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// More text than the scan limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The path is not shown: its keys are the caller's text.
            Self::TooDeep { limit, .. } => write!(f, "too deep to scan: nested more than {limit} levels"),
            Self::TooLarge { limit } => write!(f, "too large to scan: more than {limit} bytes of text"),
        }
    }
}

impl std::error::Error for ScanError {}

/// Why a redactor could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactorError {
    /// The setting at fault.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for RedactorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for RedactorError {}

/// What to look for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedactorConfig {
    /// Detector names (built-in, groups such as `api_key`, or custom).
    pub patterns: Vec<String>,
    /// Extra patterns: name -> regular expression.
    pub custom_patterns: BTreeMap<String, String>,
    /// Field names whose (non-empty string) values are sensitive, matched as whole words.
    pub sensitive_fields: Vec<String>,
    /// The deepest nesting scanned; deeper is an error.
    pub max_depth: usize,
    /// The most text scanned, in bytes; more is an error.
    pub max_bytes: usize,
}

pub(crate) struct Compiled {
    pub(crate) name: String,
    pub(crate) source: String,
    /// Compiled when first needed: the set tells which patterns match a text, and most
    /// patterns of a policy never match at all.
    pub(crate) regex: OnceLock<Option<Regex>>,
    pub(crate) group: usize,
    pub(crate) check: fn(&str) -> bool,
    pub(crate) edges: Edges,
}

impl Compiled {
    /// The pattern alone; `None` only if it failed to compile, which it cannot once the set
    /// holding it compiled within the same size limit (its callers then fail closed).
    pub(crate) fn regex(&self) -> Option<&Regex> {
        self.regex.get_or_init(|| RegexBuilder::new(&self.source).size_limit(SIZE_LIMIT).build().ok()).as_ref()
    }
}

/// The most memory a compiled pattern, set or alternation may take.
pub(crate) const SIZE_LIMIT: usize = 1 << 24;

/// What the pre-pass over an object learned, in walk order: which texts may hold a match, each
/// array or object below the root (how many texts and containers it holds, whether a sensitive
/// field is inside), and whether there is any sensitive field at all. The walk then visits only
/// what may hold a finding.
pub(crate) struct Prescan {
    pub(crate) suspects: Vec<bool>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) fields: bool,
}

impl Prescan {
    /// Gives the buffers back for the next scan on this thread.
    pub(crate) fn recycle(mut self) {
        self.suspects.clear();
        self.nodes.clear();
        SPARE.with(|spare| {
            if let Ok(mut joined) = spare.try_borrow_mut() {
                joined.suspects = self.suspects;
                joined.nodes = self.nodes;
            }
        });
    }
}

thread_local! {
    /// A finished scan's buffers, emptied, so that a scan seldom allocates (borrowed in place:
    /// the buffers are not moved in and out on every scan).
    static SPARE: std::cell::RefCell<Joined> = std::cell::RefCell::default();
}

#[derive(Clone, Copy, Default)]
pub(crate) struct Node {
    pub(crate) texts: usize,
    pub(crate) nodes: usize,
    pub(crate) fields: bool,
}

/// The texts of an object joined by newlines (but for those too short to hold a match alone),
/// where each starts (a short one where the next starts), and the bytes of its keys and texts
/// (and, between scans, the other buffers of a [`Prescan`]).
#[derive(Default)]
pub(crate) struct Joined {
    pub(crate) text: String,
    pub(crate) starts: Vec<usize>,
    /// Texts not joined as they repeat an earlier one: (its number, the earlier one's).
    pub(crate) copies: Vec<(usize, usize)>,
    pub(crate) numbers: NumberText,
    pub(crate) bytes: usize,
    pub(crate) suspects: Vec<bool>,
    pub(crate) nodes: Vec<Node>,
}

impl Joined {
    /// Adds a text: counts it, and joins it (as it is scanned: see [`fold`]) when it may hold
    /// a match alone (see [`Redactor::may_match`]).
    pub(crate) fn push(&mut self, s: &str, redactor: &Redactor) {
        self.starts.push(self.text.len());
        self.bytes += s.len();
        if redactor.may_match(s) {
            match fold(s) {
                None => self.text.push_str(s),
                Some((folded, _)) => self.text.push_str(&folded),
            }
            self.text.push('\n');
        }
    }
}

/// The longest [`plain`] word.
pub(crate) const PLAIN_WORD: usize = 23;
/// The longest [`plain`] number.
pub(crate) const PLAIN_NUMBER: usize = 6;

/// Whether no built-in pattern can match anything in `text` alone: a word of at most
/// [`PLAIN_WORD`] small ASCII letters and underscores (`unit_price`, `office`), or at most
/// [`PLAIN_NUMBER`] characters of a number (`12.49`, `-1e-7`). Most keys and many values are
/// such texts, and the pre-pass leaves them out. (A test proves it for every built-in pattern,
/// by walking its automaton over all such texts.)
pub(crate) fn plain(text: &str) -> bool {
    /// Bit 0: a byte of a plain word; bit 1: of a plain number.
    const CLASS: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut b: u8 = 0;
        loop {
            let word = b.is_ascii_lowercase() || b == b'_';
            let number = b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E');
            t[b as usize] = word as u8 | (number as u8) << 1;
            if b == u8::MAX {
                break;
            }
            b += 1;
        }
        t
    };
    let b = text.as_bytes();
    if b.len() > PLAIN_WORD {
        return false;
    }
    // Every byte is looked at: no branch per byte.
    let class = b.iter().fold(3u8, |class, &c| class & CLASS[usize::from(c)]);
    class & 1 != 0 || (class & 2 != 0 && b.len() <= PLAIN_NUMBER)
}

/// Whether a key may hold a word [`Redactor::context`] looks for (`ssn`, `social`, `phone`,
/// `mobile`, `cell`, `tel`, `secret`, `token`, `pass`, `pwd`, `key`, `cred`, `auth`,
/// `version`): one of their first two letters, in one pass, before any word is compared.
fn key_hint(key: &[u8]) -> bool {
    const HINTS: [&[u8]; 14] = [
        b"ssn", b"social", b"phone", b"mobile", b"cell", b"tel", b"secret", b"token", b"pass", b"pwd", b"key", b"cred",
        b"auth", b"version",
    ];
    /// Bit `b` of entry `a`: some hint starts with the letters `a`, `b`.
    const PAIRS: [u32; 26] = {
        let mut t = [0u32; 26];
        let mut i = 0;
        while i < HINTS.len() {
            let (a, b) = (HINTS[i][0] - b'a', HINTS[i][1] - b'a');
            t[a as usize] |= 1 << b;
            i += 1;
        }
        t
    };
    /// Each byte's letter index (`a`/`A` is 0), or 32 for anything but an ASCII letter.
    const LETTER: [u8; 256] = {
        let mut t = [32u8; 256];
        let mut b: u8 = 0;
        while b < 26 {
            t[(b'a' + b) as usize] = b;
            t[(b'A' + b) as usize] = b;
            b += 1;
        }
        t
    };
    let mut prev = 32u8;
    for (i, &byte) in key.iter().enumerate() {
        let cur = LETTER[usize::from(byte)];
        if prev < 32
            && cur < 32
            && PAIRS[usize::from(prev)] & (1 << cur) != 0
            && HINTS.iter().any(|h| key.get(i - 1..i - 1 + h.len()).is_some_and(|w| w.eq_ignore_ascii_case(h)))
        {
            return true;
        }
        prev = cur;
    }
    false
}

/// What a key says of its value: see [`Redactor::context`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    /// The value is a finding of this pattern.
    Detector(usize),
    /// The value is a version, not an address.
    NotAddress,
}

pub(crate) struct Gather<'a, 'v> {
    pub(crate) redactor: &'a Redactor,
    pub(crate) out: &'a mut Joined,
    pub(crate) nodes: Vec<Node>,
    pub(crate) fields: bool,
    /// Keys met so far that say nothing of their values, by a digest of their text: the
    /// objects of an array mostly share their keys.
    pub(crate) mute: [Option<&'v str>; SLOTS],
    /// Long texts joined so far, with their numbers, by a digest of their text: a text met
    /// again is not joined twice (an array's objects often repeat a title or a note).
    pub(crate) seen: [Option<(&'v str, usize)>; SLOTS],
}

/// How many slots [`Gather`]'s tables have.
const SLOTS: usize = 64;

/// Where a text goes in a table of [`SLOTS`]: a digest of its length and three of its bytes.
fn slot(text: &str) -> usize {
    let b = text.as_bytes();
    let byte = |i: usize| u32::from(b.get(i).copied().unwrap_or(0));
    #[allow(clippy::cast_possible_truncation, reason = "only the length's low byte is mixed in")]
    let digest = (b.len() as u32 & 0xff) | byte(0) << 8 | byte(b.len() / 2) << 16 | byte(b.len().wrapping_sub(1)) << 24;
    // The top bits of a multiplicative hash.
    (digest.wrapping_mul(0x9E37_79B1) >> (32 - SLOTS.trailing_zeros())) as usize
}

impl<'a, 'v> Gather<'a, 'v> {
    pub(crate) fn new(redactor: &'a Redactor, out: &'a mut Joined, nodes: Vec<Node>) -> Self {
        Gather { redactor, out, nodes, fields: false, mute: [None; SLOTS], seen: [None; SLOTS] }
    }

    /// Adds a text, but joins a long one met before only once: it is suspect when its first
    /// copy is (see [`Joined::copies`]).
    fn text(&mut self, text: &'v str) {
        if text.len() >= 16 && self.redactor.may_match(text) {
            let slot = slot(text);
            match self.seen[slot] {
                Some((first, at)) if first == text => {
                    self.out.copies.push((self.out.starts.len(), at));
                    self.out.starts.push(self.out.text.len());
                    self.out.bytes += text.len();
                    return;
                }
                _ => self.seen[slot] = Some((text, self.out.starts.len())),
            }
        }
        self.out.push(text, self.redactor);
    }

    /// Whether a key names no sensitive field and gives no value context, remembered.
    fn mute(&mut self, key: &'v str) -> bool {
        let slot = slot(key);
        if self.mute[slot] == Some(key) {
            return true;
        }
        let mute = self.redactor.field(key).is_none() && !self.redactor.may_give_context(key);
        if mute {
            self.mute[slot] = Some(key);
        }
        mute
    }

    /// Within the limits so far?
    pub(crate) fn within(&self) -> bool {
        self.out.bytes <= self.redactor.max_bytes
    }

    /// An object's entries, `depth` levels below the root; whether a sensitive field is among
    /// them is recorded. False when a limit is passed.
    pub(crate) fn entries(&mut self, map: &'v Map<String, Value>, depth: usize) -> bool {
        map.iter().all(|(k, v)| {
            // A key is a text like any other: a secret may be used as one.
            self.text(k);
            // A key that gives its value context keeps its container from being skipped.
            if holds_data(v)
                && !self.mute(k)
                && (self.redactor.field(k).is_some() || self.redactor.context(k, v).is_some())
            {
                self.fields = true;
            }
            self.value(v, depth + 1) && self.within()
        })
    }

    pub(crate) fn value(&mut self, v: &'v Value, depth: usize) -> bool {
        if depth > self.redactor.max_depth {
            return false;
        }
        match v {
            Value::String(s) => self.text(s),
            Value::Number(n) => {
                let mut numbers = std::mem::take(&mut self.out.numbers);
                self.out.push(number_text(n, &mut numbers), self.redactor);
                self.out.numbers = numbers;
            }
            Value::Array(_) | Value::Object(_) => {
                let (node, texts) = (self.nodes.len(), self.out.starts.len());
                self.nodes.push(Node::default());
                let fields_before = std::mem::take(&mut self.fields);
                let within = match v {
                    Value::Array(items) => items.iter().all(|i| self.value(i, depth + 1)),
                    Value::Object(map) => self.entries(map, depth),
                    _ => true,
                };
                self.nodes[node] = Node {
                    texts: self.out.starts.len() - texts,
                    nodes: self.nodes.len() - node - 1,
                    fields: self.fields,
                };
                self.fields |= fields_before;
                return within;
            }
            Value::Null | Value::Bool(_) => {}
        }
        true
    }
}

/// Built-in detectors that assert the end of the text (`\z`), reviewed to find the same
/// matches in a text joined with others by newlines: `private_key` runs on to the end of the
/// joined text instead, `google_api_key` ends at the newline (a non-key character).
pub(crate) const JOINABLE_AT_END: [&str; 2] = ["private_key", "google_api_key"];

/// Whether a pattern asserts the start or end of the whole text, so that it may match a text
/// alone and not the same text among others.
pub(crate) fn anchored(pattern: &str) -> bool {
    use regex_syntax::hir::Look;
    regex_syntax::parse(pattern).map_or(true, |hir| {
        let looks = hir.properties().look_set();
        looks.contains(Look::Start) || looks.contains(Look::End)
    })
}

/// Finds and redacts sensitive data: every active pattern matched in one pass per string
/// (a `RegexSet`), then validated; field names matched as words.
///
/// ```
/// use halt_guards_sensitive::{Redactor, RedactorConfig};
/// use serde_json::json;
///
/// let redactor = Redactor::new(&RedactorConfig {
///     patterns: vec!["ssn".into(), "credit_card".into()],
///     sensitive_fields: vec!["password".into()],
///     max_depth: 5,
///     max_bytes: 1 << 20,
///     ..Default::default()
/// })?;
/// let (clean, findings) = redactor.redact(&json!({
///     "note": "SSN 123-45-6789, thanks",
///     "login": {"userPassword": "hunter2"},
///     "card": 4111111111111111u64,
/// }))?;
/// assert_eq!(clean["note"], "SSN [REDACTED:ssn], thanks");
/// assert_eq!(clean["login"]["userPassword"], "[REDACTED:password]");
/// assert_eq!(clean["card"], "[REDACTED:credit_card]");
/// assert_eq!(findings.len(), 3);
/// assert!(findings.iter().all(|f| !f.preview.contains("123-45")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Redactor {
    /// Every pattern, to learn which match one text (all of them, overlapping).
    pub(crate) set: meta::Regex,
    /// Every pattern as alternatives of one, to find where any matches in a long text.
    pub(crate) any: meta::Regex,
    pub(crate) patterns: Vec<Compiled>,
    pub(crate) fields: Vec<Field>,
    /// The fields' first words, to tell whether a key may name a field before splitting it into
    /// words. `None` when they do not fit it (not ASCII, too long, too many): then every key is
    /// split.
    pub(crate) first_words: Option<FirstWords>,
    /// Whether a pattern can tell the start or end of the whole text (`^`, `$`, `\A`, `\z`
    /// outside multi-line mode): then texts are never joined for the pre-pass.
    pub(crate) anchored: bool,
    /// The fewest bytes any pattern matches: the pre-pass leaves shorter texts out.
    pub(crate) shortest_match: usize,
    /// Whether every pattern is a built-in one, so that [`plain`] texts cannot match.
    pub(crate) built_in_only: bool,
    pub(crate) max_depth: usize,
    pub(crate) max_bytes: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.patterns.iter().map(|p| p.name.as_str()).collect();
        f.debug_struct("Redactor").field("patterns", &names).field("max_depth", &self.max_depth).finish_non_exhaustive()
    }
}

/// The text of a number as it is scanned (the same as its JSON form), in `buf`.
pub(crate) fn number_text<'b>(n: &serde_json::Number, buf: &'b mut NumberText) -> &'b str {
    if let Some(u) = n.as_u64() {
        buf.int.format(u)
    } else if let Some(i) = n.as_i64() {
        buf.int.format(i)
    } else {
        use std::fmt::Write;
        buf.float.clear();
        let _ = write!(buf.float, "{n}");
        &buf.float
    }
}

/// Room to write numbers' text without allocating each time.
#[derive(Default)]
pub(crate) struct NumberText {
    pub(crate) int: itoa::Buffer,
    pub(crate) float: String,
}

/// The path of the root, with room for a deep path.
pub(crate) fn path_root() -> String {
    let mut path = String::with_capacity(128);
    path.push('$');
    path
}

/// Appends `[i]` to a path.
pub(crate) fn push_index(path: &mut String, i: usize) {
    path.push('[');
    path.push_str(itoa::Buffer::new().format(i));
    path.push(']');
}

/// The shape of a finding, never its characters: digits as `#`, letters as `x`, ASCII
/// punctuation and spaces as themselves, anything else as `*`; at most 24 characters
/// (`123-45-6789` is `###-##-####`).
pub(crate) fn preview(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(24)
        .map(|c| match c {
            '0'..='9' => '#',
            c if c.is_ascii_alphabetic() => 'x',
            c if c.is_ascii_punctuation() || c == ' ' => c,
            _ => '*',
        })
        .collect();
    if value.chars().nth(24).is_some() {
        out.push('…');
    }
    out
}

impl Redactor {
    /// Builds a redactor.
    ///
    /// # Errors
    /// An unknown detector name, an invalid custom pattern, a custom name that shadows a
    /// built-in one, or an empty field name.
    pub fn new(config: &RedactorConfig) -> Result<Self, RedactorError> {
        let err = |field: &str, reason: String| RedactorError { field: field.to_owned(), reason };
        let mut names: Vec<String> = Vec::new();
        for name in &config.patterns {
            if let Some((_, members)) = GROUPS.iter().find(|(g, _)| *g == name) {
                names.extend(members.iter().map(|m| (*m).to_owned()));
            } else if detectors::find(name).is_some() || config.custom_patterns.contains_key(name) {
                names.push(name.clone());
            } else {
                let known: Vec<&str> =
                    detectors::DETECTORS.iter().map(|d| d.name).chain(GROUPS.iter().map(|g| g.0)).collect();
                return Err(err("blocked_patterns", format!("unknown pattern `{name}` (known: {})", known.join(", "))));
            }
        }
        for name in config.custom_patterns.keys() {
            if detectors::find(name).is_some() || GROUPS.iter().any(|g| g.0 == name) {
                return Err(err("custom_patterns", format!("`{name}` is the name of a built-in pattern")));
            }
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        names.retain(|n| seen.insert(n.clone()));
        let mut patterns = Vec::with_capacity(names.len());
        for name in names {
            let (source, group, check, edges): (String, usize, fn(&str) -> bool, Edges) = match detectors::find(&name) {
                Some(d) => (d.pattern.to_owned(), d.group, d.check, d.edges),
                None => (config.custom_patterns.get(&name).cloned().unwrap_or_default(), 0, |_| true, Edges::Pattern),
            };
            // Checked now, compiled when first needed.
            let hir =
                regex_syntax::parse(&source).map_err(|e| err(&format!("custom_patterns.{name}"), e.to_string()))?;
            // A pattern that matches nothing at all would find "findings" between every two
            // characters and mangle every text it redacts.
            if hir.properties().minimum_len() == Some(0) {
                return Err(err(&format!("custom_patterns.{name}"), "the pattern matches the empty string".into()));
            }
            patterns.push(Compiled { name, source, regex: OnceLock::new(), group, check, edges });
        }
        // Neither the set nor the alternation gains from a literal pre-filter here (the set runs
        // only on texts known to hold a match; the alternation starts with character classes),
        // and building one for the case-insensitive secrets took most of a policy's load time.
        let unfiltered = meta::Config::new().auto_prefilter(false).nfa_size_limit(Some(SIZE_LIMIT));
        let set = meta::Regex::builder()
            .configure(unfiltered.clone().match_kind(MatchKind::All))
            .build_many(&patterns.iter().map(|p| p.source.as_str()).collect::<Vec<_>>())
            .map_err(|e| err("custom_patterns", e.to_string()))?;
        let alternatives: Vec<String> = patterns.iter().map(|p| format!("(?:{})", p.source)).collect();
        let any = if alternatives.is_empty() { "[^\\s\\S]".to_owned() } else { alternatives.join("|") };
        // A text shorter than every match cannot hold one alone (no match: nothing is short).
        let shortest_match =
            regex_syntax::parse(&any).map_or(0, |hir| hir.properties().minimum_len().unwrap_or(usize::MAX));
        let any = meta::Regex::builder()
            .configure(unfiltered)
            .build(&any)
            .map_err(|e| err("custom_patterns", e.to_string()))?;
        let built_in_only = config.custom_patterns.is_empty();
        let mut fields = Vec::new();
        for f in &config.sensitive_fields {
            let w = words(f);
            if w.is_empty() {
                return Err(err("sensitive_fields", "field names must not be empty".into()));
            }
            fields.push(Field { name: f.clone(), words: w });
        }
        let first_words = FirstWords::new(&fields);
        let anchored = patterns.iter().any(|p| {
            let reviewed = detectors::find(&p.name).is_some() && JOINABLE_AT_END.contains(&p.name.as_str());
            !reviewed && anchored(&p.source)
        });
        Ok(Self {
            set,
            any,
            patterns,
            fields,
            first_words,
            anchored,
            shortest_match,
            built_in_only,
            max_depth: config.max_depth,
            max_bytes: config.max_bytes,
        })
    }

    /// Whether a text may hold a match of some pattern when scanned alone: it is not shorter
    /// than every match, and not [`plain`] when only built-in patterns are on.
    pub(crate) fn may_match(&self, text: &str) -> bool {
        text.len() >= self.shortest_match && !(self.built_in_only && plain(text))
    }

    /// Finds sensitive data in `value` (paths start at `$`).
    ///
    /// # Errors
    /// The value is deeper or larger than the limits.
    pub fn scan(&self, value: &Value) -> Result<Vec<Finding>, ScanError> {
        let mut walk = Walk::new(self, false);
        walk.value_ref(value, &mut path_root(), 0)?;
        Ok(walk.findings)
    }

    /// A copy of `value` with every finding redacted (`[REDACTED:<pattern>]` in place of the
    /// matched text; the whole value of a sensitive field), and the findings.
    ///
    /// # Errors
    /// The value is deeper or larger than the limits.
    pub fn redact(&self, value: &Value) -> Result<(Value, Vec<Finding>), ScanError> {
        let mut copy = value.clone();
        let findings = self.redact_in_place(&mut copy)?;
        Ok((copy, findings))
    }

    /// Redacts `value` in place and returns the findings.
    ///
    /// # Errors
    /// The value is deeper or larger than the limits (then `value` may be partly redacted).
    pub fn redact_in_place(&self, value: &mut Value) -> Result<Vec<Finding>, ScanError> {
        let mut walk = Walk::new(self, true);
        walk.value(value, &mut path_root(), 0)?;
        Ok(walk.findings)
    }

    /// Finds sensitive data in an object's entries without copying it (paths start at `$`).
    ///
    /// # Errors
    /// The value is deeper or larger than the limits.
    pub fn scan_object(&self, object: &Map<String, Value>) -> Result<Vec<Finding>, ScanError> {
        if object.is_empty() {
            return Ok(Vec::new());
        }
        let mut walk = Walk::new(self, false);
        if !self.anchored {
            walk.prescan = self.prescan(object);
        }
        if walk.prescan.as_ref().is_none_or(|p| p.fields || p.suspects.contains(&true)) {
            walk.object_ref(object, &mut path_root(), 0)?;
        }
        if let Some(p) = walk.prescan.take() {
            p.recycle();
        }
        Ok(walk.findings)
    }

    /// The sensitive field a key names: one whose words stand together anywhere among the
    /// key's (`secret_key`, `aws_secret_access_key`, `X-Auth-Token`, `userPassword`), unless
    /// the key ends with a word saying it is about the secret rather than the secret
    /// ([`ABOUT_WORDS`]: `token_count`). `max_tokens` names no field: `tokens` is not `token`.
    pub(crate) fn field(&self, key: &str) -> Option<&Field> {
        if self.fields.is_empty() {
            return None;
        }
        let found = |w: &[&str], same: fn(&str, &str) -> bool| {
            let about = w.last().is_some_and(|last| ABOUT_WORDS.iter().any(|a| same(last, a)));
            self.fields.iter().find(|f| {
                let n = f.words.len();
                (0..=w.len().saturating_sub(n)).any(|at| {
                    w.len() >= n
                        && w[at..at + n].iter().zip(&f.words).all(|(a, b)| same(a, b))
                        && (!about || at + n == w.len())
                })
            })
        };
        if key.is_ascii() {
            // Most keys hold none of the fields' first words: they are never split.
            if self.first_words.as_ref().is_some_and(|t| !t.in_key(key.as_bytes())) {
                return None;
            }
            // Split in place (field words are lower case: compared without lower-case copies).
            let mut w = ArrayVec::<&str, 16>::new();
            let mut all = true;
            ascii_words(key, |word| all &= w.try_push(word).is_ok());
            if all {
                return found(&w, |a, b| a.eq_ignore_ascii_case(b));
            }
        }
        let w = words(key);
        let w: Vec<&str> = w.iter().map(String::as_str).collect();
        found(&w, |a, b| a == b)
    }

    /// What a key says of the text or number under it, when the value has the shape to match:
    /// nine bare digits under `ssn`, ten under `phone`/`mobile`, a random-looking value under a
    /// secret-like key (`client_secret`, `auth.token`, `passphrase`), or a four-part number under
    /// `version` (no address). The key only raises (or, for versions, lowers) confidence in a
    /// value of the right shape: it never makes a random value an SSN.
    pub(crate) fn context(&self, key: &str, value: &Value) -> Option<Context> {
        if !matches!(value, Value::String(_) | Value::Number(_)) || !self.may_give_context(key) {
            return None;
        }
        let mut numbers = NumberText::default();
        let text = match value {
            Value::String(s) => s.trim(),
            Value::Number(n) => number_text(n, &mut numbers),
            _ => return None,
        };
        let digits = text.len() <= 12 && text.bytes().all(|b| b.is_ascii_digit());
        let long = text.len() >= 8;
        let dotted = text.len() <= 20
            && text.contains('.')
            && text.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'v');
        if !(digits || long || dotted) {
            return None;
        }
        let w = words(key);
        let has = |word: &str| w.iter().any(|x| x == word);
        let pattern = |name: &str| self.patterns.iter().position(|p| p.name == name).map(Context::Detector);
        if digits && text.len() == 9 && (has("ssn") || (has("social") && has("security"))) {
            return pattern("ssn").filter(|_| detectors::valid_ssn_digits(text));
        }
        if digits
            && (text.len() == 10 || (text.len() == 11 && text.starts_with('1')))
            && ["phone", "mobile", "cell", "tel", "telephone", "cellphone"].iter().any(|p| has(p))
        {
            return pattern("phone_us").filter(|_| detectors::valid_nanp_digits(text));
        }
        if dotted && w.iter().any(|x| x.ends_with("version")) {
            return Some(Context::NotAddress);
        }
        if long && detectors::secret_like_key(&w) {
            return pattern("generic_secret").filter(|_| detectors::secret_value(text));
        }
        None
    }

    /// Whether [`Redactor::context`] may find anything under `key` (most keys say nothing: a
    /// glance at the key before anything else).
    pub(crate) fn may_give_context(&self, key: &str) -> bool {
        key.len() <= 64 && key_hint(key.as_bytes())
    }

    /// Which texts of `object` (numbered in walk order) may hold a match: one pass of every
    /// pattern, as alternatives of one expression, over all of its text joined by newlines,
    /// marking each text a match touches; also where the sensitive field names and containers
    /// are. `None` when a limit is passed, so that the full walk reports where.
    ///
    /// Exact because no pattern is anchored to the start or end of the text (the caller checks)
    /// and a newline is a non-word character, as the edges of a lone text are: a match inside a
    /// text alone is found in the joined text starting in that text, or is overlapped by an
    /// earlier (leftmost) match, which then touches that text too.
    pub(crate) fn prescan(&self, object: &Map<String, Value>) -> Option<Prescan> {
        // A scan never starts another on its thread; were it ever to, it would work on buffers
        // of its own.
        SPARE.with(|spare| match spare.try_borrow_mut() {
            Ok(mut joined) => self.prescan_with(object, &mut joined),
            Err(_) => self.prescan_with(object, &mut Joined::default()),
        })
    }

    pub(crate) fn prescan_with(&self, object: &Map<String, Value>, joined: &mut Joined) -> Option<Prescan> {
        joined.bytes = 0;
        let nodes = std::mem::take(&mut joined.nodes);
        let mut gather = Gather::new(self, joined, nodes);
        // The same limits as the walk counts: keys and texts, below the depth limit.
        let within_limits = gather.entries(object, 0);
        let (nodes, fields) = (gather.nodes, gather.fields);
        let mut suspects = std::mem::take(&mut joined.suspects);
        let prescan = within_limits.then(|| {
            let (text, starts) = (&joined.text, &joined.starts);
            suspects.resize(starts.len(), false);
            for m in self.any.find_iter(text.as_bytes()) {
                let first = starts.partition_point(|&s| s <= m.start()).saturating_sub(1);
                let last = starts.partition_point(|&s| s < m.end().max(m.start() + 1));
                for s in &mut suspects[first..last.max(first + 1).min(starts.len())] {
                    *s = true;
                }
            }
            for &(copy, first) in &joined.copies {
                suspects[copy] |= suspects[first];
            }
            Prescan { suspects, nodes, fields }
        });
        // Keep the buffers for the next scan on this thread, unless a huge value grew them.
        if joined.text.capacity() <= 1 << 16 {
            joined.text.clear();
            joined.starts.clear();
            joined.copies.clear();
        } else {
            *joined = Joined::default();
        }
        prescan
    }

    /// The sensitive spans of a text: (start, end, pattern index), validated; found in the text
    /// as [`fold`] makes it, and given in `text`'s own offsets.
    pub(crate) fn spans(&self, text: &str) -> Vec<(usize, usize, usize)> {
        match fold(text) {
            None => self.spans_of(text),
            Some((folded, map)) => self.spans_of(&folded).into_iter().map(|(s, e, i)| (map[s], map[e], i)).collect(),
        }
    }

    pub(crate) fn spans_of(&self, text: &str) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        if text.len() < 3 {
            return out;
        }
        let mut matched = PatternSet::new(self.patterns.len());
        self.set.which_overlapping_matches(&Input::new(text), &mut matched);
        for i in matched.iter().map(|id| id.as_usize()) {
            let p = &self.patterns[i];
            let Some(regex) = p.regex() else {
                // The set says it matches but the match cannot be located: all of it counts.
                out.push((0, text.len(), i));
                continue;
            };
            let mut keep = |m: regex::Match<'_>| {
                if p.edges.allow(text, m.start(), m.end()) && (p.check)(m.as_str()) {
                    out.push((m.start(), m.end(), i));
                }
            };
            if p.group == 0 {
                regex.find_iter(text).for_each(&mut keep);
            } else {
                // Of a pattern's alternatives, the one that matched has its own group.
                regex.captures_iter(text).filter_map(|c| c.iter().skip(p.group).flatten().next()).for_each(&mut keep);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile_when_first_needed_and_fail_closed() {
        let config = RedactorConfig {
            patterns: vec!["ssn".into(), "aws_key".into()],
            max_depth: 5,
            max_bytes: 1 << 20,
            ..Default::default()
        };
        let r = Redactor::new(&config).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.patterns.iter().all(|p| p.regex.get().is_none()), "nothing compiled up front");
        let found = r.scan(&serde_json::json!("SSN 123-45-6789")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found.len(), 1);
        let compiled: Vec<bool> = r.patterns.iter().map(|p| p.regex.get().is_some()).collect();
        assert_eq!(compiled, [true, false], "only the pattern that matched");

        // Were a pattern ever unable to compile alone, the text the set says it matches would
        // count as a match whole.
        let mut r = Redactor::new(&config).unwrap_or_else(|e| panic!("{e}"));
        r.patterns[0].regex = OnceLock::from(None);
        let (clean, found) = r.redact(&serde_json::json!("SSN 123-45-6789")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(clean, "[REDACTED:ssn]");
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn ascii_keys_split_as_any_key() {
        for key in [
            "api_key",
            "apiKey",
            "X-Api-Key",
            "HTTPServer",
            "a1B2c",
            "__x__",
            "",
            "ABC",
            "userPassword2Hash",
            "a b.c-d",
        ] {
            let mut fast: Vec<String> = Vec::new();
            ascii_words(key, |w| fast.push(w.to_ascii_lowercase()));
            assert_eq!(fast, words(key), "{key}");
        }
    }

    #[test]
    fn words_split_every_case_style() {
        assert_eq!(words("api_key"), ["api", "key"]);
        assert_eq!(words("apiKey"), ["api", "key"]);
        assert_eq!(words("X-Api-Key"), ["x", "api", "key"]);
        assert_eq!(words("max_tokens"), ["max", "tokens"]);
        assert_eq!(words("userPassword2"), ["user", "password2"]);
    }

    #[test]
    fn built_in_patterns_can_be_joined() {
        for d in detectors::DETECTORS {
            assert!(!anchored(d.pattern) || JOINABLE_AT_END.contains(&d.name), "{} needs a review", d.name);
        }
        assert!(anchored("^x") && anchored("x$") && anchored(r"\Ax") && !anchored("(?m)^x$") && !anchored("[^x]"));
    }

    /// Walks a pattern's lazy DFA over every text of at most `longest` bytes from `alphabet`,
    /// scanned alone (an unanchored search from the text's start to its end); returns one that
    /// it matches, if any.
    fn matches_some(pattern: &str, alphabet: &[u8], longest: usize) -> Option<String> {
        use regex_automata::hybrid::dfa::DFA;
        let dfa = DFA::builder()
            .configure(DFA::config().cache_capacity(256 << 20).minimum_cache_clear_count(Some(0)))
            .build(pattern)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut cache = dfa.create_cache();
        let start = dfa.start_state_forward(&mut cache, &Input::new("")).unwrap_or_else(|e| panic!("{e}"));
        // Each state reached, with a text that reaches it.
        let mut frontier = std::collections::HashMap::from([(start, Vec::new())]);
        for len in 0..=longest {
            let mut next = std::collections::HashMap::new();
            for (sid, text) in frontier {
                let end = dfa.next_eoi_state(&mut cache, sid).unwrap_or_else(|e| panic!("{e}"));
                assert!(!end.is_quit() && !sid.is_quit(), "{pattern}: the DFA gave up");
                if sid.is_match() || end.is_match() {
                    return Some(String::from_utf8_lossy(&text).into_owned());
                }
                if len == longest || sid.is_dead() {
                    continue;
                }
                for &b in alphabet {
                    let to = dfa.next_state(&mut cache, sid, b).unwrap_or_else(|e| panic!("{e}"));
                    next.entry(to).or_insert_with(|| [text.as_slice(), &[b]].concat());
                }
            }
            frontier = next;
        }
        assert_eq!(cache.clear_count(), 0, "{pattern}: state ids stayed valid");
        None
    }

    #[test]
    fn no_built_in_pattern_matches_a_plain_text() {
        let word: Vec<u8> = (b'a'..=b'z').chain([b'_']).collect();
        let number: Vec<u8> = (b'0'..=b'9').chain(*b".-+eE").collect();
        for d in detectors::DETECTORS {
            assert_eq!(matches_some(d.pattern, &word, PLAIN_WORD), None, "{}", d.name);
            assert_eq!(matches_some(d.pattern, &number, PLAIN_NUMBER), None, "{}", d.name);
        }
        // One more byte, and some pattern matches (the limits are as high as they can be).
        let first = |alphabet: &[u8], longest| {
            detectors::DETECTORS.iter().find_map(|d| matches_some(d.pattern, alphabet, longest))
        };
        assert!(first(&word, PLAIN_WORD + 1).is_some());
        assert!(first(&number, PLAIN_NUMBER + 1).is_some());
        assert!(plain("unit_price") && plain("12.49") && !plain("unitPrice") && !plain("1.2.3.4"));
    }

    #[test]
    fn a_custom_pattern_finds_plain_texts_too() {
        let config = RedactorConfig {
            custom_patterns: BTreeMap::from([("codename".to_owned(), "blue_[a-z]+".to_owned())]),
            max_depth: 5,
            max_bytes: 1 << 20,
            ..Default::default()
        };
        let r = Redactor::new(&config).unwrap_or_else(|e| panic!("{e}"));
        let args = serde_json::json!({"project": "blue_falcon", "blue_heron": 1});
        let Value::Object(map) = &args else { unreachable!() };
        let found = r.scan_object(map).unwrap_or_else(|e| panic!("{e}"));
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths.len(), 2, "{paths:?}");
    }

    #[test]
    fn a_finding_moves_into_the_json_it_serialises_to() {
        let f = Finding { pattern: "ssn".into(), path: "$.a[1]".into(), preview: "***9".into() };
        assert_eq!(f.clone().into_json(), serde_json::to_value(&f).unwrap());
    }

    #[test]
    fn previews_show_the_shape_never_a_character() {
        assert_eq!(preview("123-45-6789"), "###-##-####");
        assert_eq!(preview("4111 1111 1111 1111"), "#### #### #### ####");
        assert_eq!(preview("sk_live_4eC3"), "xx_xxxx_#xx#");
        assert_eq!(preview("\u{e9}t\u{e9}"), "*x*");
        assert_eq!(preview(""), "");
        assert_eq!(preview(&"9".repeat(40)), format!("{}…", "#".repeat(24)));
    }
}
