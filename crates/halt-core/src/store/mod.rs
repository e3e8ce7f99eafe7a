//! The state store: the narrow atomic primitives guards count with.
//!
//! A store knows counters, windows and records, never budgets or categories: policy stays in the
//! guards. Every operation is atomic, and the conditional multi-counter [`StateStore::reserve`]
//! is all or nothing, so N concurrent calls can never push a counter past its limit.
//!
//! Time is passed in (`now`), never read by the store, so windows follow the engine's clock.

mod key;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

pub use key::{CalendarKey, StoreKey};

/// Joins key parts with `/` into a [`StoreKey`] (inline, without an allocation, when short).
///
/// ```
/// assert_eq!(halt_core::store::key(&["budget", "daily", "2026-11-24"]), "budget/daily/2026-11-24");
/// ```
#[must_use]
pub fn key(parts: &[&str]) -> StoreKey {
    StoreKey::join(parts)
}

/// A value from a call (an agent, a session, a function name) made safe to be one part of a
/// [`key`]: `%` and `/` are escaped, and `-` alone (which keys use for "none") is too, so that
/// two different values never make the same key (`a/b` + `c` and `a` + `b/c`).
///
/// ```
/// use halt_core::store::{key, key_part};
///
/// assert_eq!(key_part("s-1"), "s-1");
/// assert_ne!(key(&["x", &key_part("a/b"), "c"]), key(&["x", "a", &key_part("b/c")]));
/// assert_eq!(key_part("-"), "%2D");
/// ```
#[must_use]
pub fn key_part(value: &str) -> std::borrow::Cow<'_, str> {
    if value == "-" {
        return "%2D".into();
    }
    if !value.contains(['/', '%']) {
        return value.into();
    }
    value.replace('%', "%25").replace('/', "%2F").into()
}

/// Checks what every store refuses: an empty key, a key named twice, (for a reservation,
/// `reserving`) a negative amount, and a [`RecentLimit`] on anything but a sliding window at
/// least as wide as it. Stores call it first; an error is [`StoreError::InvalidRequest`].
///
/// # Errors
/// The first problem found.
pub fn check_counters(counters: &[CounterSpec], reserving: bool) -> Result<(), StoreError> {
    for (i, c) in counters.iter().enumerate() {
        if c.key.is_empty() {
            return Err(StoreError::InvalidRequest("empty key".into()));
        }
        if counters[..i].iter().any(|o| o.key == c.key) {
            return Err(StoreError::InvalidRequest(format!("key `{}` appears twice", c.key)));
        }
        if reserving && c.amount < 0 {
            return Err(StoreError::InvalidRequest(format!("negative amount {} for `{}`", c.amount, c.key)));
        }
        if let Some(recent) = c.recent {
            match c.window {
                Window::Sliding { width } if !recent.width.is_zero() && recent.width <= width => {}
                _ => {
                    return Err(StoreError::InvalidRequest(format!(
                        "the recent limit of `{}` needs a sliding window at least as wide as it",
                        c.key
                    )));
                }
            }
        }
    }
    Ok(())
}

/// How a counter's value ages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Window {
    /// A fixed bucket (a UTC day, a month): the counter is dropped at `expires_at`.
    Bucket {
        /// When the bucket ends.
        expires_at: Timestamp,
    },
    /// A running total that is dropped once nothing touched it for `idle`.
    Idle {
        /// Idle time after which the counter expires.
        #[serde(with = "duration_micros")]
        idle: Duration,
    },
    /// A true sliding window: the sum of the amounts recorded in `[now - width, now]` (an event
    /// exactly `width` old still counts).
    Sliding {
        /// The window's width.
        #[serde(with = "duration_micros")]
        width: Duration,
    },
    /// A run of like additions: the total added with this `mark` since the last addition with
    /// another mark (which starts a new run; a check, of amount zero, starts none). Read with
    /// another mark, the total is zero. Dropped once nothing touched it for `idle`. It counts
    /// repeats: the same call made N times in a row.
    ///
    /// Releasing a reserved addition takes its amount back from its run, but cannot bring back
    /// the run it ended.
    Streak {
        /// What the additions of a run have in common (a fingerprint of the call).
        mark: u64,
        /// Idle time after which the run is forgotten.
        #[serde(with = "duration_micros")]
        idle: Duration,
    },
}

impl Window {
    /// When a key last written at `now` through this window expires: a bucket at its end, an
    /// idle counter `idle` later, a sliding window a microsecond after its last event leaves it
    /// (an event exactly `width` old still counts).
    #[must_use]
    pub fn key_expiry(self, now: Timestamp) -> Timestamp {
        match self {
            Self::Bucket { expires_at } => expires_at,
            Self::Idle { idle } | Self::Streak { idle, .. } => now.saturating_add(idle),
            Self::Sliding { width } => now.saturating_add(width).saturating_add(Duration::from_micros(1)),
        }
    }
}

/// For a full sliding window holding `events` (time, amount; oldest first) that total
/// `current`: when enough of them age out for `amount` more to fit under `limit`.
#[must_use]
pub fn sliding_retry_at(
    events: impl IntoIterator<Item = (Timestamp, i64)>,
    current: i64,
    width: Duration,
    amount: i64,
    limit: i64,
) -> Option<Timestamp> {
    let mut total = current;
    events.into_iter().find_map(|(at, n)| {
        total -= n;
        (total.saturating_add(amount) <= limit).then(|| Window::Sliding { width }.key_expiry(at))
    })
}

/// The recent part of a sliding window holding `events` (time, amount; oldest first, as a
/// double-ended iterator): when `amount` more passes `recent`'s limit, its total now and when
/// enough of it ages out; `None` when it fits. Walks only the recent events, newest first, so
/// its cost follows the recent limit, not the window.
#[must_use]
pub fn recent_refusal<I>(
    events: I,
    now: Timestamp,
    recent: RecentLimit,
    amount: i64,
) -> Option<(i64, Option<Timestamp>)>
where
    I: DoubleEndedIterator<Item = (Timestamp, i64)> + ExactSizeIterator + Clone,
{
    let cutoff = now.as_micros().saturating_sub(i64::try_from(recent.width.as_micros()).unwrap_or(i64::MAX));
    let inside = events.clone().rev().take_while(|(at, _)| at.as_micros() >= cutoff);
    let (count, current) = inside.fold((0, 0_i64), |(n, t), (_, a)| (n + 1, t.saturating_add(a)));
    let current = current.max(0);
    if current.saturating_add(amount) <= recent.limit {
        return None;
    }
    let skip = events.len() - count;
    let retry_at = sliding_retry_at(events.skip(skip), current, recent.width, amount, recent.limit);
    Some((current, retry_at))
}

/// Checks a record's key: it must not be empty.
///
/// # Errors
/// [`StoreError::InvalidRequest`].
pub fn check_record_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() { Err(StoreError::InvalidRequest("empty key".into())) } else { Ok(()) }
}

/// One counter in a request: add `amount` to `key`, provided the total stays within `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSpec {
    /// The counter's key; the caller namespaces it (`budget/day/2026-11-24`).
    pub key: StoreKey,
    /// How the counter ages.
    pub window: Window,
    /// What to add: micro-units of money, or a count. Negative only in [`StateStore::add`].
    pub amount: i64,
    /// The largest total allowed after adding; `None` for no limit.
    pub limit: Option<i64>,
    /// A second limit, on the most recent part of a sliding window (see [`RecentLimit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<RecentLimit>,
}

impl CounterSpec {
    /// A counter spec.
    #[must_use]
    pub fn new(key: impl Into<StoreKey>, window: Window, amount: i64, limit: Option<i64>) -> Self {
        Self { key: key.into(), window, amount, limit, recent: None }
    }

    /// The same spec, with a limit on the window's most recent `width` too, and the `cooldown`
    /// that limit starts when it refuses (zero: none).
    #[must_use]
    pub fn with_recent(self, width: Duration, limit: i64, cooldown: Duration) -> Self {
        Self { recent: Some(RecentLimit { width, limit, cooldown }), ..self }
    }
}

/// A second, narrower limit on a sliding window: the amounts of its most recent `width` (an
/// event exactly `width` old included), plus the amount being added, must stay within `limit`.
/// One window then enforces two rates with one key, such as calls per minute and calls per
/// five-second burst. When it refuses, it may start a `cooldown`: for that long the window
/// refuses every reservation (a burst is followed by a pause).
///
/// In a request, a window in its cooldown refuses first, then the first counter over its plain
/// limit, and only when none is, the first one over its recent limit ([`Refusal`] says which).
/// Starting a cooldown is the one change a refusal makes. A store that merges old events to
/// bound a window may count its recent part high, never low. Only [`StateStore::reserve`] and
/// [`StateStore::add_within`] enforce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentLimit {
    /// How far back the recent part reaches; at most the window's width.
    #[serde(with = "duration_micros")]
    pub width: Duration,
    /// The largest recent total allowed after adding.
    pub limit: i64,
    /// How long the window refuses every reservation after this limit refused one.
    #[serde(default, with = "duration_micros")]
    pub cooldown: Duration,
}

/// A conditional reservation across several counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest {
    /// The counters, all of which must stay within their limits.
    pub counters: Vec<CounterSpec>,
    /// The current time.
    pub now: Timestamp,
    /// When an uncommitted reservation is released by itself (an approval that never came, a
    /// process that died between reserve and commit).
    pub hold_until: Timestamp,
}

/// Identifies a pending reservation in its store (unique within the store, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservationId(pub u64);

/// The answer to [`StateStore::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Every counter took its amount; the totals (pending reservations included) are in request
    /// order.
    Reserved {
        /// The reservation to commit or release.
        id: ReservationId,
        /// Each counter's total after the reservation.
        totals: Vec<i64>,
    },
    /// A counter would pass its limit; nothing changed.
    Rejected {
        /// Which counter (its index in the request).
        index: usize,
        /// Its total now, pending reservations included.
        current: i64,
        /// Its limit.
        limit: i64,
        /// When the amount could fit: for a sliding window, when enough of it ages out; for a
        /// bucket, when it ends.
        retry_at: Option<Timestamp>,
        /// Which rule of the counter refused.
        by: Refusal,
    },
}

/// Which rule of a counter refused a reservation (see [`RecentLimit`] for how they rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its limit.
    Limit,
    /// Its [`RecentLimit`]; `current` and `limit` are those of the recent part.
    Recent,
    /// The cooldown its recent limit started, until `retry_at`; `current` and `limit` are zero.
    Cooldown,
}

/// A state store failure. The engine turns any of these into a fail-safe DENY.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or used.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The store tracks as many keys as it may.
    #[error("state store is full: {0} keys tracked")]
    CapacityExceeded(usize),
    /// A key holds another kind of value than asked for.
    #[error("key `{key}` holds a {found}, not a {expected}")]
    WrongKind {
        /// The key.
        key: String,
        /// The kind asked for.
        expected: &'static str,
        /// The kind found.
        found: &'static str,
    },
    /// A stored value cannot be read.
    #[error("corrupt value at `{key}`: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The request itself is malformed (a negative amount to reserve, an empty key).
    #[error("invalid store request: {0}")]
    InvalidRequest(String),
    /// A record kept changing under concurrent updates, past every retry.
    #[error("record `{0}` kept changing under concurrent updates")]
    Contended(String),
}

/// How [`StateStore::update_record`] changes a record: given its current value (absent or
/// expired: `None`), either writes the new value into the buffer (empty when called) and returns
/// `true`, or returns `false` to leave the record as it is.
pub type RecordUpdate<'a> = dyn FnMut(Option<&[u8]>, &mut Vec<u8>) -> bool + Send + 'a;

/// How often the default [`StateStore::update_record`] retries when the record changes between
/// its read and its swap.
const UPDATE_RETRIES: usize = 64;

/// What a store operation returns: the answer at hand, or a future for it.
///
/// A store that answers without waiting (the `MemoryStore`, a relaxed sled store) returns
/// [`StoreFuture::ready`], which costs no allocation; one that waits on a disk or a network
/// returns [`StoreFuture::new`] around its `async` block.
#[must_use = "a store operation does nothing unless awaited"]
pub struct StoreFuture<'a, T>(FutureState<'a, T>);

/// A boxed store future.
type BoxedStoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

enum FutureState<'a, T> {
    Ready(Option<Result<T, StoreError>>),
    Waiting(BoxedStoreFuture<'a, T>),
}

impl<'a, T> StoreFuture<'a, T> {
    /// An answer already known.
    pub fn ready(result: Result<T, StoreError>) -> Self {
        Self(FutureState::Ready(Some(result)))
    }

    /// An answer still to come.
    pub fn new(future: impl Future<Output = Result<T, StoreError>> + Send + 'a) -> Self {
        Self(FutureState::Waiting(Box::pin(future)))
    }
}

impl<T: Unpin> Future for StoreFuture<'_, T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            FutureState::Ready(answer) => Poll::Ready(
                answer.take().unwrap_or_else(|| Err(StoreError::Unavailable("store future polled twice".into()))),
            ),
            FutureState::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for StoreFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            FutureState::Ready(_) => "StoreFuture::Ready",
            FutureState::Waiting(_) => "StoreFuture::Waiting",
        })
    }
}

/// What every state store offers, atomically.
///
/// Implementations: `MemoryStore` here, `halt-store-sled` and `halt-store-redis`. The
/// conformance suite in `halt-testing` checks any implementation against this contract.
///
/// Each operation returns a [`StoreFuture`]: a store that waits wraps an `async` block in
/// [`StoreFuture::new`]; one that answers at once returns [`StoreFuture::ready`] and costs
/// nothing more than the work itself.
pub trait StateStore: Send + Sync + std::fmt::Debug + 'static {
    /// Adds each counter's amount if every counter stays within its limit, all or nothing. The
    /// amounts count at once (so concurrent callers see them) and stay pending until
    /// [`StateStore::commit`], [`StateStore::release`], or `hold_until` (which releases them).
    ///
    /// Amounts must be non-negative. A zero amount checks the limit without adding.
    fn reserve<'a>(&'a self, request: &'a ReserveRequest) -> StoreFuture<'a, ReserveOutcome>;

    /// Makes a pending reservation permanent. Returns false if it is unknown, already settled, or
    /// expired (in which case it was released).
    fn commit(&self, id: ReservationId, now: Timestamp) -> StoreFuture<'_, bool>;

    /// Takes a pending reservation's amounts back. Returns false if it is unknown or settled.
    fn release(&self, id: ReservationId, now: Timestamp) -> StoreFuture<'_, bool>;

    /// Adds each counter's amount if every counter stays within its limit, all or nothing, and
    /// for good at once: a [`StateStore::reserve`] that needs no commit (the returned id is
    /// already settled). For what counts whatever happens next, such as a rate limit's
    /// attempts. The default reserves, then commits; the request's `hold_until` must be later
    /// than its `now`.
    fn add_within<'a>(&'a self, request: &'a ReserveRequest) -> StoreFuture<'a, ReserveOutcome> {
        StoreFuture::new(async move {
            let outcome = self.reserve(request).await?;
            if let ReserveOutcome::Reserved { id, .. } = &outcome
                && !self.commit(*id, request.now).await?
            {
                return Err(StoreError::Unavailable(format!("reservation {} lapsed at once", id.0)));
            }
            Ok(outcome)
        })
    }

    /// Adds amounts unconditionally and at once (limits are ignored; a negative amount
    /// subtracts, and a total never drops below zero). Returns the new totals.
    fn add<'a>(&'a self, counters: &'a [CounterSpec], now: Timestamp) -> StoreFuture<'a, Vec<i64>>;

    /// A counter's total now (pending reservations included); zero if absent.
    fn total<'a>(&'a self, key: &'a str, window: Window, now: Timestamp) -> StoreFuture<'a, i64>;

    /// A small record, if present and not expired.
    fn get_record<'a>(&'a self, key: &'a str, now: Timestamp) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Compare and swap a record: if its current value (absent or expired counts as `None`)
    /// equals `expected`, replace it with `new` (`None` deletes) expiring at `expires_at`.
    /// Returns whether it swapped.
    fn swap_record<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: Option<&'a [u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, bool>;

    /// Writes (or, with `None`, deletes) a record unconditionally.
    fn put_record<'a>(
        &'a self,
        key: &'a str,
        value: Option<&'a [u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, ()>;

    /// Reads and rewrites a record atomically, as one step: `update` decides from the current
    /// value (see [`RecordUpdate`]); a new value expires at `expires_at`.
    ///
    /// `update` may run more than once: a store that retries a compare-and-swap runs it again on
    /// the value that won, and only the last run counts. The default reads with
    /// [`StateStore::get_record`] and writes with [`StateStore::swap_record`], retrying on
    /// conflict ([`StoreError::Contended`] when it never settles); a store that can do it in one
    /// step (the `MemoryStore` under its lock) overrides it.
    fn update_record<'a>(
        &'a self,
        key: &'a str,
        update: &'a mut RecordUpdate<'_>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        StoreFuture::new(async move {
            let mut next = Vec::new();
            for _ in 0..UPDATE_RETRIES {
                let current = self.get_record(key, now).await?;
                next.clear();
                if !update(current.as_deref(), &mut next)
                    || self.swap_record(key, current.as_deref(), Some(&next), expires_at, now).await?
                {
                    return Ok(());
                }
            }
            Err(StoreError::Contended(key.to_owned()))
        })
    }
}

mod duration_micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.as_micros())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from_micros(i64::deserialize(d)?))
    }
}
