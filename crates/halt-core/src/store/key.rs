//! [`StoreKey`]: the text of a store key, kept inline when short.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use arrayvec::ArrayString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::clock::{CalendarWindow, Timestamp};

/// The longest key kept inline (the whole type is 64 bytes).
const INLINE: usize = 56;

/// The key of a counter or record: text, compared and hashed as a `str`.
///
/// Keys are built on every call (`budget/daily/2026-11-24`), so a key up to 56 bytes long is
/// kept inline and costs no allocation; a longer one lives on the heap.
///
/// ```
/// use halt_core::store::StoreKey;
///
/// let k = StoreKey::join(&["rate", "calls", "minute"]);
/// assert_eq!(k, "rate/calls/minute");
/// assert_eq!(StoreKey::from("x".repeat(100)).len(), 100);
/// ```
#[derive(Clone)]
pub struct StoreKey(Repr);

#[derive(Clone)]
enum Repr {
    Inline(ArrayString<INLINE>),
    Heap(Box<str>),
}

impl StoreKey {
    /// A key holding `text`.
    #[must_use]
    pub fn new(text: &str) -> Self {
        Self::join(&[text])
    }

    /// Joins key parts with `/` (without the formatting machinery: this is on every call's path).
    #[must_use]
    pub fn join(parts: &[&str]) -> Self {
        let len = parts.iter().map(|p| p.len()).sum::<usize>() + parts.len().saturating_sub(1);
        if len > INLINE {
            return Self(Repr::Heap(parts.join("/").into_boxed_str()));
        }
        let mut text = ArrayString::new();
        // Cannot fail: the length was checked above.
        if let Some((first, rest)) = parts.split_first() {
            let _ = text.try_push_str(first);
            for p in rest {
                let _ = text.try_push_str("/");
                let _ = text.try_push_str(p);
            }
        }
        Self(Repr::Inline(text))
    }

    /// The key's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(text) => text,
            Repr::Heap(text) => text,
        }
    }
}

impl Deref for StoreKey {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for StoreKey {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for StoreKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for StoreKey {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for StoreKey {
    fn from(text: String) -> Self {
        if text.len() > INLINE { Self(Repr::Heap(text.into_boxed_str())) } else { Self::new(&text) }
    }
}

impl From<&String> for StoreKey {
    fn from(text: &String) -> Self {
        Self::new(text)
    }
}

impl PartialEq for StoreKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for StoreKey {}

impl PartialEq<str> for StoreKey {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for StoreKey {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Hash for StoreKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for StoreKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StoreKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

/// The key of a calendar window under a fixed prefix (`<prefix>/<label>`), made once per window:
/// a guard counting per day asks for the same day's key on every call of that day.
///
/// ```
/// use halt_core::Timestamp;
/// use halt_core::store::CalendarKey;
///
/// let daily = CalendarKey::new("deletion/deletion/day");
/// let now = Timestamp::from_secs(1_795_521_600);
/// assert_eq!(daily.key(&now.utc_day()), "deletion/deletion/day/2026-11-24");
/// let (key, day) = daily.at(now, Timestamp::utc_day);
/// assert_eq!((key.as_str(), day.end), ("deletion/deletion/day/2026-11-24", Timestamp::from_secs(1_795_564_800)));
/// ```
#[derive(Debug)]
pub struct CalendarKey {
    prefix: String,
    last: std::sync::Mutex<Option<(CalendarWindow, StoreKey)>>,
}

impl CalendarKey {
    /// Keys under `prefix`.
    #[must_use]
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into(), last: std::sync::Mutex::default() }
    }

    /// The key of `window`.
    #[must_use]
    pub fn key(&self, window: &CalendarWindow) -> StoreKey {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*last {
            Some((w, key)) if w.label == window.label => key.clone(),
            _ => {
                let key = StoreKey::join(&[&self.prefix, &window.label]);
                *last = Some((*window, key.clone()));
                key
            }
        }
    }

    /// The key of the window of `span` (such as [`Timestamp::utc_day`]) holding `now`, and that
    /// window. Within the window last asked for, without working out the calendar again.
    #[must_use]
    pub fn at(&self, now: Timestamp, span: fn(Timestamp) -> CalendarWindow) -> (StoreKey, CalendarWindow) {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((w, key)) = &*last
            && w.start <= now
            && now < w.end
        {
            return (key.clone(), *w);
        }
        let window = span(now);
        let key = StoreKey::join(&[&self.prefix, &window.label]);
        *last = Some((window, key.clone()));
        (key, window)
    }
}

impl Clone for CalendarKey {
    fn clone(&self) -> Self {
        Self::new(self.prefix.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_keys_read_back() {
        for len in [0, 1, 55, 56, 57, 200] {
            let text = "k".repeat(len);
            assert_eq!(StoreKey::new(&text).as_str(), text);
            assert_eq!(StoreKey::from(text.clone()).as_str(), text);
        }
        let long = ["a".repeat(40), "b".repeat(40)];
        assert_eq!(StoreKey::join(&[&long[0], &long[1]]).as_str(), format!("{}/{}", long[0], long[1]));
        assert_eq!(StoreKey::join(&["é", "日本"]).as_str(), "é/日本");
        assert_eq!(StoreKey::join(&[]).as_str(), "");
    }

    #[test]
    fn inline_and_heap_keys_of_the_same_text_are_equal() {
        let text = "x".repeat(INLINE);
        let inline = StoreKey::new(&text);
        let heap = StoreKey(Repr::Heap(text.clone().into_boxed_str()));
        assert_eq!(inline, heap);
        let hash = |k: &StoreKey| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            k.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&inline), hash(&heap));
        assert!(matches!(inline.0, Repr::Inline(_)));
        assert_eq!(std::mem::size_of::<StoreKey>(), 64);
    }

    #[test]
    fn serializes_as_text() {
        let k = StoreKey::join(&["a", "b"]);
        let json = serde_json::to_string(&k).unwrap_or_default();
        assert_eq!(json, "\"a/b\"");
        assert_eq!(serde_json::from_str::<StoreKey>(&json).ok(), Some(k));
    }

    #[test]
    fn calendar_keys_follow_the_window_asked_for() {
        use crate::clock::Timestamp;
        let daily = CalendarKey::new("p/day");
        let monday = Timestamp::from_secs(1_795_521_600);
        let tuesday = Timestamp::from_secs(1_795_521_600 + 86_400);
        assert_eq!(daily.key(&monday.utc_day()), "p/day/2026-11-24");
        assert_eq!(daily.key(&tuesday.utc_day()), "p/day/2026-11-25");
        // Back to a day asked for before (a replayed or skewed clock): its own key, not the last.
        assert_eq!(daily.key(&monday.utc_day()), "p/day/2026-11-24");
        assert_eq!(daily.clone().key(&monday.utc_month()), "p/day/2026-11");
        // By time: the window holding it, at its first and last instants, and across a change.
        let at = |t: Timestamp| {
            let (key, window) = daily.at(t, Timestamp::utc_day);
            assert_eq!(window, t.utc_day());
            key.to_string()
        };
        let midnight = monday.utc_day().end;
        let last_instant = Timestamp::from_micros(midnight.as_micros() - 1);
        assert_eq!(at(monday), "p/day/2026-11-24");
        assert_eq!(at(last_instant), "p/day/2026-11-24");
        assert_eq!(at(midnight), "p/day/2026-11-25");
        assert_eq!(at(tuesday), "p/day/2026-11-25");
        assert_eq!(at(last_instant), "p/day/2026-11-24");
        let monthly = CalendarKey::new("p/month");
        assert_eq!(monthly.at(tuesday, Timestamp::utc_month).0, "p/month/2026-11");
    }
}
