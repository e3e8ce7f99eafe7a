//! The in-process [`StateStore`]: [`MemoryStore`], bounded in memory, and the default store of
//! an engine. Counters, windows and records live in one map under one lock; every operation is
//! atomic and answers at once.
//!
//! ```
//! use halt_core::store::{CounterSpec, ReserveOutcome, ReserveRequest, Window};
//! use halt_core::{StateStore, Timestamp};
//! use halt_store_memory::MemoryStore;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let now = Timestamp::from_secs(1);
//! let spend = CounterSpec::new("spend", Window::Bucket { expires_at: Timestamp::MAX }, 6, Some(10));
//! let request = ReserveRequest { counters: vec![spend], now, hold_until: Timestamp::from_secs(60) };
//! assert!(matches!(store.reserve(&request).await?, ReserveOutcome::Reserved { .. }));
//! assert!(matches!(store.reserve(&request).await?, ReserveOutcome::Rejected { .. }), "6 + 6 > 10");
//! # Ok::<(), halt_core::StoreError>(()) }).unwrap();
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use halt_core::Timestamp;
use halt_core::store::{
    CounterSpec, RecordUpdate, Refusal, ReservationId, ReserveOutcome, ReserveRequest, StateStore, StoreError,
    StoreFuture, StoreKey, Window, check_counters, check_record_key, sliding_retry_at,
};

/// Limits of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStoreConfig {
    /// The most keys (counters, windows, records) tracked at once. When full and nothing has
    /// expired, new keys are refused with [`StoreError::CapacityExceeded`], which guards turn
    /// into a fail-safe DENY: forgetting a counter would loosen a limit.
    pub max_keys: usize,
    /// The most events one sliding window keeps. A window with a limit never needs more than
    /// its limit; past this cap the two oldest events are merged, which can only make the
    /// window count longer, never shorter.
    pub max_events_per_window: usize,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self { max_keys: 1_000_000, max_events_per_window: 4_096 }
    }
}

/// A [`StateStore`] in process memory: fast, atomic (one lock), bounded, and gone on exit.
///
/// Expired buckets, idle counters, aged-out windows and expired records are dropped as time
/// passes; a reservation not committed by its `hold_until` is released.
///
/// ```
/// use halt_core::store::{CounterSpec, ReserveOutcome, ReserveRequest, StateStore, Window};
/// use halt_core::Timestamp;
/// use halt_store_memory::MemoryStore;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let now = Timestamp::from_secs(1_000);
/// let day = Window::Bucket { expires_at: Timestamp::from_secs(86_400) };
/// let req = ReserveRequest {
///     counters: vec![CounterSpec::new("spend/day", day, 600_000, Some(1_000_000))],
///     now,
///     hold_until: Timestamp::from_secs(1_060),
/// };
/// let ReserveOutcome::Reserved { id, totals } = store.reserve(&req).await? else { unreachable!() };
/// assert_eq!(totals, [600_000]);
/// assert!(matches!(store.reserve(&req).await?, ReserveOutcome::Rejected { current: 600_000, .. }));
/// store.release(id, now).await?;
/// assert_eq!(store.total("spend/day", day, now).await?, 0);
/// # Ok::<(), halt_core::store::StoreError>(()) }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    config: MemoryStoreConfig,
}

/// Keys include caller-chosen text (session ids): a seeded hasher keeps collisions unguessable.
type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// A key, shared by its entry, the expiry queue and pending reservations without copying.
type Key = Arc<str>;

/// A key in the expiry queue, ordered by when it is due only (many keys fall due at once, and
/// comparing their text would be wasted).
#[derive(Debug)]
struct Due(Timestamp, Key);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

#[derive(Debug, Default)]
struct State {
    entries: Map<Key, Entry>,
    /// When keys may expire; at most one item per key (re-queued lazily when a key's expiry
    /// moved later).
    expiry: BinaryHeap<Reverse<Due>>,
    pending: Map<u64, Pending>,
    /// No pending reservation lapses before this time (it may be earlier than the true
    /// earliest, never later), so most operations skip looking for lapsed holds.
    next_lapse: Timestamp,
    next_id: u64,
    /// The last generation handed out.
    last_generation: u64,
    /// Emptied `parts` of settled reservations, reused so a reservation seldom allocates.
    spare_parts: Vec<Parts>,
    /// The buffer [`StateStore::update_record`] writes a new value into, reused.
    scratch: Vec<u8>,
}

/// A reservation's parts: key, amount and the key's generation when reserved.
type Parts = Vec<(StoreKey, i64, u64)>;

/// How many emptied `parts` buffers a store keeps for reuse.
const SPARE_PARTS: usize = 64;

#[derive(Debug)]
struct Entry {
    value: Value,
    expires_at: Timestamp,
    /// Whether the key has its item in the expiry queue.
    queued: bool,
    /// A fresh number each time a value is created or reset after expiring (never reused, even
    /// across removals), so an old reservation never takes its amount back from a new value.
    generation: u64,
}

#[derive(Debug)]
enum Value {
    Counter(i64),
    Sliding(Sliding),
    Record(Vec<u8>),
    Streak { mark: u64, total: i64 },
}

#[derive(Debug, Default)]
struct Sliding {
    events: VecDeque<Event>,
    sum: i64,
    /// What a window with a recent limit keeps besides (boxed: most windows have none, and a
    /// store holds up to a million of them).
    recent: Option<Box<Recent>>,
}

/// The state of a window's [`RecentLimit`](super::RecentLimit).
#[derive(Debug, Default)]
struct Recent {
    /// The recent part last asked for, kept up to date as events come and go, so that asking
    /// again costs only the events that left it since.
    part: Option<RecentPart>,
    /// Until when the window refuses every reservation (a cooldown its recent limit started).
    cooling_until: Option<Timestamp>,
}

/// The events of a window within `width` of `at`: from index `start` on, summing to `sum`.
#[derive(Debug, Clone, Copy)]
struct RecentPart {
    width: Duration,
    at: Timestamp,
    start: usize,
    sum: i64,
}

#[derive(Debug, Clone, Copy)]
struct Event {
    at: Timestamp,
    amount: i64,
    /// The reservation that added it; 0 once merged or added unconditionally.
    reservation: u64,
}

#[derive(Debug)]
struct Pending {
    /// What it added.
    parts: Parts,
    /// When it lapses, releasing its amounts.
    hold_until: Timestamp,
}

impl Value {
    /// A counter's or window's total as read through `window` (a record counts nothing; a run
    /// read with another mark is empty).
    fn total(&self, window: Window) -> i64 {
        match self {
            Self::Counter(t) => (*t).max(0),
            Self::Sliding(s) => s.total(),
            Self::Streak { mark, total } => match window {
                Window::Streak { mark: m, .. } if m == *mark => (*total).max(0),
                _ => 0,
            },
            Self::Record(_) => 0,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Counter(_) => "counter",
            Self::Sliding(_) => "sliding window",
            Self::Record(_) => "record",
            Self::Streak { .. } => "streak",
        }
    }

    /// An empty value for counters of `window`.
    fn empty(window: Window) -> Self {
        match window {
            Window::Sliding { .. } => Self::Sliding(Sliding::default()),
            Window::Streak { mark, .. } => Self::Streak { mark, total: 0 },
            Window::Bucket { .. } | Window::Idle { .. } => Self::Counter(0),
        }
    }
}

/// Makes an existing entry live for a counter of `window`: an expired one starts over as an
/// empty value of the right kind (a new generation); a live one of another kind is an error; a
/// window drops the events that aged out.
fn refresh(
    e: &mut Entry,
    key: &str,
    window: Window,
    now: Timestamp,
    last_generation: &mut u64,
) -> Result<(), StoreError> {
    if e.expires_at <= now {
        e.value = Value::empty(window);
        *last_generation += 1;
        e.generation = *last_generation;
        return Ok(());
    }
    let fits = match window {
        Window::Sliding { .. } => matches!(e.value, Value::Sliding(_)),
        Window::Streak { .. } => matches!(e.value, Value::Streak { .. }),
        Window::Bucket { .. } | Window::Idle { .. } => matches!(e.value, Value::Counter(_)),
    };
    if !fits {
        let expected = Value::empty(window).kind();
        return Err(StoreError::WrongKind { key: key.to_owned(), expected, found: e.value.kind() });
    }
    if let (Window::Sliding { width }, Value::Sliding(s)) = (window, &mut e.value) {
        s.prune(now, width);
    }
    Ok(())
}

/// An amount being added to a live entry.
struct Added {
    /// Through which window.
    window: Window,
    /// When the key may expire after this addition.
    expiry: Timestamp,
    amount: i64,
    /// The reservation adding it (0: none).
    reservation: u64,
    now: Timestamp,
    /// The most events a window keeps.
    cap: usize,
}

impl Added {
    fn new(window: Window, amount: i64, reservation: u64, now: Timestamp, cap: usize) -> Self {
        Self { window, expiry: window.key_expiry(now), amount, reservation, now, cap }
    }

    /// Adds to `e`; returns its new total, its generation, and when to queue it for expiry if
    /// it was not queued.
    fn to(&self, e: &mut Entry, last_generation: &mut u64) -> (i64, u64, Option<Timestamp>) {
        e.expires_at = e.expires_at.max(self.expiry);
        let schedule = (!e.queued).then_some(e.expires_at);
        e.queued = true;
        match &mut e.value {
            Value::Counter(t) => *t = t.saturating_add(self.amount).max(0),
            Value::Sliding(s) => {
                s.push(Event { at: self.now, amount: self.amount, reservation: self.reservation }, self.cap);
            }
            Value::Streak { mark, total } => match self.window {
                Window::Streak { mark: m, .. } if m != *mark => {
                    // Another mark starts a new run: a new value, which no older reservation
                    // takes anything back from.
                    (*mark, *total) = (m, self.amount.max(0));
                    *last_generation += 1;
                    e.generation = *last_generation;
                }
                _ => *total = total.saturating_add(self.amount).max(0),
            },
            Value::Record(_) => {}
        }
        (e.value.total(self.window), e.generation, schedule)
    }
}

impl Entry {
    /// Makes this entry the record `bytes`, in place (the old buffer when it fits), expiring at
    /// `expires_at`; says whether to queue it for expiry.
    fn rewrite(&mut self, bytes: &[u8], expires_at: Timestamp) -> bool {
        match &mut self.value {
            Value::Record(v) => {
                v.clear();
                v.extend_from_slice(bytes);
            }
            other => *other = Value::Record(bytes.to_vec()),
        }
        self.expires_at = expires_at;
        let schedule = !self.queued && expires_at < Timestamp::MAX;
        self.queued |= schedule;
        schedule
    }

    /// The live record here, if any (expired: none); another kind of value is an error.
    fn record(&self, key: &str, now: Timestamp) -> Result<Option<&[u8]>, StoreError> {
        match &self.value {
            _ if self.expires_at <= now => Ok(None),
            Value::Record(v) => Ok(Some(v)),
            value => Err(StoreError::WrongKind { key: key.to_owned(), expected: "record", found: value.kind() }),
        }
    }

    /// When `c`'s amount could fit under `limit`: for a window, when enough of it ages out; for
    /// a bucket, when it ends.
    fn retry_at(&self, c: &CounterSpec, limit: i64) -> Option<Timestamp> {
        match (c.window, &self.value) {
            (Window::Sliding { width }, Value::Sliding(s)) => s.retry_at(width, c.amount, limit),
            (Window::Bucket { .. }, _) => Some(self.expires_at),
            _ => None,
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Sliding {
    /// Drops events older than `width` before `now` (an event exactly `width` old stays).
    fn prune(&mut self, now: Timestamp, width: Duration) {
        let cutoff = now.as_micros().saturating_sub(micros(width));
        while self.events.front().is_some_and(|e| e.at.as_micros() < cutoff) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) -> Option<Event> {
        let e = self.events.pop_front()?;
        self.sum -= e.amount;
        if let Some(r) = self.part_mut() {
            if r.start > 0 {
                r.start -= 1;
            } else {
                r.sum -= e.amount;
            }
        }
        Some(e)
    }

    fn total(&self) -> i64 {
        self.sum.max(0)
    }

    fn push(&mut self, event: Event, cap: usize) {
        self.sum = self.sum.saturating_add(event.amount);
        if let Some(recent) = &mut self.recent {
            match &mut recent.part {
                // A new event falls in the recent part unless time went back.
                Some(r) if event.at >= r.at => r.sum = r.sum.saturating_add(event.amount),
                part => *part = None,
            }
        }
        self.events.push_back(event);
        while self.events.len() > cap.max(2) {
            // Merge the two oldest: the sum is unchanged and the merged event ages out later
            // (into the recent part, when the second one is in it).
            if let Some(a) = self.pop_front()
                && let Some(b) = self.events.front_mut()
            {
                b.amount = b.amount.saturating_add(a.amount);
                b.reservation = 0;
                self.sum = self.sum.saturating_add(a.amount);
                if let Some(r) = self.part_mut()
                    && r.start == 0
                {
                    r.sum = r.sum.saturating_add(a.amount);
                }
            }
        }
    }

    /// Takes back the event a reservation added, if still here.
    fn remove_reservation(&mut self, id: u64) {
        let Some(pos) = self.events.iter().position(|ev| ev.reservation == id) else { return };
        let Some(ev) = self.events.remove(pos) else { return };
        self.sum -= ev.amount;
        if let Some(r) = self.part_mut() {
            if pos < r.start {
                r.start -= 1;
            } else {
                r.sum -= ev.amount;
            }
        }
    }

    /// When enough events age out for `amount` more to fit under `limit`.
    fn retry_at(&self, width: Duration, amount: i64, limit: i64) -> Option<Timestamp> {
        sliding_retry_at(self.events.iter().map(|e| (e.at, e.amount)), self.total(), width, amount, limit)
    }

    /// The part within `width` of `now`: brought up to date from the last one asked for when it
    /// has the same width and is not later, counted again otherwise.
    fn recent(&mut self, now: Timestamp, width: Duration) -> RecentPart {
        let cutoff = now.as_micros().saturating_sub(micros(width));
        let r = match self.recent.as_ref().and_then(|x| x.part) {
            Some(mut r) if r.width == width && r.at <= now => {
                while let Some(e) = self.events.get(r.start).filter(|e| e.at.as_micros() < cutoff) {
                    r.sum -= e.amount;
                    r.start += 1;
                }
                r.at = now;
                r
            }
            _ => {
                let inside = self.events.iter().rev().take_while(|e| e.at.as_micros() >= cutoff);
                let (n, sum) = inside.fold((0, 0_i64), |(n, t), e| (n + 1, t.saturating_add(e.amount)));
                RecentPart { width, at: now, start: self.events.len() - n, sum }
            }
        };
        self.recent.get_or_insert_default().part = Some(r);
        r
    }

    fn part_mut(&mut self) -> Option<&mut RecentPart> {
        self.recent.as_mut().and_then(|x| x.part.as_mut())
    }
}

/// How `c`'s recent limit refuses it, over the live entry `e` (`None`: an empty window): the
/// refusal to answer at `index`, or `None` when it fits. A refusal starts the limit's cooldown on
/// `e` (the caller makes a missing entry first when a cooldown is to start).
fn refused_recently(c: &CounterSpec, e: Option<&mut Entry>, index: usize, now: Timestamp) -> Option<ReserveOutcome> {
    let recent = c.recent?;
    let (current, retry_at) = match e {
        Some(Entry { value: Value::Sliding(s), expires_at, .. }) => {
            let part = s.recent(now, recent.width);
            let current = part.sum.max(0);
            if current.saturating_add(c.amount) <= recent.limit {
                return None;
            }
            let events = s.events.range(part.start..).map(|e| (e.at, e.amount));
            let retry_at = sliding_retry_at(events, current, recent.width, c.amount, recent.limit);
            if !recent.cooldown.is_zero() {
                let until = now.saturating_add(recent.cooldown);
                s.recent.get_or_insert_default().cooling_until = Some(until);
                // The window lives at least as long as its cooldown (its expiry item is re-queued
                // when due).
                *expires_at = (*expires_at).max(until);
            }
            (current, retry_at)
        }
        _ => (c.amount > recent.limit).then_some((0, None))?,
    };
    Some(ReserveOutcome::Rejected { index, current, limit: recent.limit, retry_at, by: Refusal::Recent })
}

/// The refusal of a reservation on a window in its cooldown (`e` live), if it is.
fn cooling(e: &Entry, index: usize, now: Timestamp) -> Option<ReserveOutcome> {
    let Value::Sliding(s) = &e.value else { return None };
    let until = s.recent.as_ref()?.cooling_until?;
    (now < until).then_some(ReserveOutcome::Rejected {
        index,
        current: 0,
        limit: 0,
        retry_at: Some(until),
        by: Refusal::Cooldown,
    })
}

/// Whether `c`'s recent limit refuses it on an empty window, and would start a cooldown there.
fn cools_when_absent(c: &CounterSpec) -> bool {
    c.recent.is_some_and(|r| !r.cooldown.is_zero() && c.amount > r.limit)
}

impl MemoryStore {
    /// A store with the default limits.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A store with the given limits.
    #[must_use]
    pub fn with_config(config: MemoryStoreConfig) -> Self {
        Self { state: Mutex::default(), config }
    }

    /// The number of keys tracked now (for tests and metrics).
    #[must_use]
    pub fn key_count(&self) -> usize {
        self.lock().entries.len()
    }

    /// The number of pending reservations.
    #[must_use]
    pub fn pending_count(&self) -> usize {
        self.lock().pending.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; if one ever did, the state is still
        // consistent enough to keep counting, and refusing all service would be worse.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Releases expired holds and drops up to `budget` expired keys.
    fn purge(&mut self, now: Timestamp, budget: usize) {
        if now >= self.next_lapse {
            // Pending reservations are few (calls in flight and held approvals): scan them.
            let lapsed: Vec<u64> =
                self.pending.iter().filter(|(_, p)| p.hold_until <= now).map(|(id, _)| *id).collect();
            for id in lapsed {
                if let Some(p) = self.pending.remove(&id) {
                    self.undo(id, &p.parts, now);
                    self.recycle(p.parts);
                }
            }
            self.next_lapse = self.pending.values().map(|p| p.hold_until).min().unwrap_or(Timestamp::MAX);
        }
        let mut n = 0;
        while n < budget {
            let Some(Reverse(Due(at, _))) = self.expiry.peek() else {
                break;
            };
            if *at > now {
                break;
            }
            let Some(Reverse(Due(_, key))) = self.expiry.pop() else {
                break;
            };
            n += 1;
            // One lookup, whatever comes of it.
            if let hashbrown::hash_map::EntryRef::Occupied(mut e) = self.entries.entry_ref(&*key) {
                let at = e.get().expires_at;
                if at <= now {
                    e.remove();
                } else if at < Timestamp::MAX {
                    self.expiry.push(Reverse(Due(at, key)));
                } else {
                    e.get_mut().queued = false;
                }
            }
        }
    }

    /// Keeps an emptied `parts` buffer for the next reservation.
    fn recycle(&mut self, mut parts: Parts) {
        if self.spare_parts.len() < SPARE_PARTS {
            parts.clear();
            self.spare_parts.push(parts);
        }
    }

    /// Takes a reservation's amounts back.
    fn undo(&mut self, id: u64, parts: &[(StoreKey, i64, u64)], now: Timestamp) {
        for (key, amount, generation) in parts {
            let Some(e) = self.entries.get_mut(&**key) else {
                continue;
            };
            if e.expires_at <= now || e.generation != *generation {
                continue;
            }
            match &mut e.value {
                Value::Counter(total) | Value::Streak { total, .. } => *total = total.saturating_sub(*amount).max(0),
                Value::Sliding(s) => s.remove_reservation(id),
                Value::Record(_) => {}
            }
        }
    }

    /// The live entry at `key` for a counter of `window`, or `None`. Expired entries read as
    /// absent.
    fn live(&mut self, key: &str, window: Window, now: Timestamp) -> Result<Option<&mut Entry>, StoreError> {
        let Some(e) = self.entries.get_mut(key) else {
            return Ok(None);
        };
        refresh(e, key, window, now, &mut self.last_generation)?;
        Ok(Some(e))
    }

    /// A counter's live total, and whether its key exists.
    fn current(&mut self, key: &str, window: Window, now: Timestamp) -> Result<(i64, bool), StoreError> {
        Ok(match self.live(key, window, now)? {
            None => (0, false),
            Some(e) => (e.value.total(window), true),
        })
    }

    /// Puts the empty value of `spec` at its (absent) key, queued for expiry.
    fn insert_empty(&mut self, spec: &CounterSpec, now: Timestamp) {
        let mut e = new_entry(spec, now, &mut self.last_generation);
        e.queued = true;
        let key: Key = Arc::from(spec.key.as_str());
        self.expiry.push(Reverse(Due(e.expires_at, Arc::clone(&key))));
        self.entries.insert(key, e);
    }

    /// Adds `amount` to a counter, creating it. Returns the new total and the key's generation.
    /// The caller has called [`State::live`] on the key during this operation.
    fn apply(&mut self, spec: &CounterSpec, amount: i64, reservation: u64, now: Timestamp, cap: usize) -> (i64, u64) {
        let added = Added::new(spec.window, amount, reservation, now, cap);
        // One lookup for a key that exists (the common case), two for a new one.
        let (total, generation, schedule) = match self.entries.get_key_value_mut(spec.key.as_str()) {
            Some((key, e)) => {
                let (total, generation, schedule) = added.to(e, &mut self.last_generation);
                (total, generation, schedule.map(|at| (at, Arc::clone(key))))
            }
            None => {
                return insert_new(&mut self.entries, &mut self.expiry, &mut self.last_generation, spec, &added);
            }
        };
        if let Some((at, key)) = schedule {
            self.expiry.push(Reverse(Due(at, key)));
        }
        (total, generation)
    }

    /// [`MemoryStore::reserve_now`] for `N` counters whose keys all exist (or only check), with
    /// one lookup per key; `None` when a key must be created (the general path does that).
    fn reserve_existing<const N: usize>(
        &mut self,
        req: &ReserveRequest,
        hold: bool,
        cap: usize,
        max_keys: usize,
    ) -> Option<Result<ReserveOutcome, StoreError>> {
        let now = req.now;
        let keys: [&str; N] = std::array::from_fn(|i| req.counters[i].key.as_str());
        let Self { entries, expiry, pending, next_lapse, next_id, last_generation, spare_parts, .. } = self;
        let len = entries.len();
        // Keys are distinct (checked before), as this lookup requires.
        let mut found = entries.get_disjoint_key_value_mut(keys);
        let mut totals = Vec::with_capacity(N);
        // Cooldowns rank first, then plain limits, then recent limits.
        let mut over = None;
        // Missing keys are made once every counter fits.
        let mut new_keys = 0;
        for (index, (c, f)) in req.counters.iter().zip(&mut found).enumerate() {
            let current = match f {
                None => {
                    // Without room for it, or when a refusal would start a cooldown on it, the
                    // general path decides.
                    if cools_when_absent(c) {
                        return None;
                    }
                    new_keys += usize::from(c.amount != 0);
                    0
                }
                Some((_, e)) => {
                    if let Err(error) = refresh(e, &c.key, c.window, now, last_generation) {
                        return Some(Err(error));
                    }
                    if let Some(refusal) = cooling(e, index, now) {
                        return Some(Ok(refusal));
                    }
                    e.value.total(c.window)
                }
            };
            totals.push(current);
            if over.is_none()
                && let Some(limit) = c.limit
                && current.saturating_add(c.amount) > limit
            {
                let retry_at = f.as_ref().and_then(|(_, e)| e.retry_at(c, limit));
                over = Some(ReserveOutcome::Rejected { index, current, limit, retry_at, by: Refusal::Limit });
            }
        }
        if len + new_keys > max_keys {
            return None;
        }
        if let Some(refusal) = over {
            return Some(Ok(refusal));
        }
        for (index, (c, f)) in req.counters.iter().zip(&mut found).enumerate().filter(|(_, (c, _))| c.recent.is_some())
        {
            if let Some(refusal) = refused_recently(c, f.as_mut().map(|(_, e)| &mut **e), index, now) {
                return Some(Ok(refusal));
            }
        }
        *next_id += 1;
        let id = *next_id;
        // Events of an amount added for good belong to no reservation.
        let reservation = if hold { id } else { 0 };
        let mut parts = if hold { spare_parts.pop().unwrap_or_default() } else { Vec::new() };
        let mut made = arrayvec::ArrayVec::<usize, N>::new();
        for (i, (c, f)) in req.counters.iter().zip(&mut found).enumerate() {
            // A check (amount 0) leaves a total as it was.
            if c.amount == 0 {
                continue;
            }
            let Some((key, e)) = f else {
                made.push(i);
                continue;
            };
            let added = Added::new(c.window, c.amount, reservation, now, cap);
            let (t, generation, schedule) = added.to(e, last_generation);
            totals[i] = t;
            if let Some(at) = schedule {
                expiry.push(Reverse(Due(at, Arc::clone(key))));
            }
            if hold {
                parts.push((c.key.clone(), c.amount, generation));
            }
        }
        for i in made {
            let c = &req.counters[i];
            let added = Added::new(c.window, c.amount, reservation, now, cap);
            let generation;
            (totals[i], generation) = insert_new(entries, expiry, last_generation, c, &added);
            if hold {
                parts.push((c.key.clone(), c.amount, generation));
            }
        }
        if hold {
            pending.insert(id, Pending { parts, hold_until: req.hold_until });
            *next_lapse = (*next_lapse).min(req.hold_until);
        }
        Some(Ok(ReserveOutcome::Reserved { id: ReservationId(id), totals }))
    }

    /// Makes room for `new_keys` more keys, or refuses.
    fn make_room(&mut self, new_keys: usize, max_keys: usize, now: Timestamp) -> Result<(), StoreError> {
        if self.entries.len() + new_keys <= max_keys {
            return Ok(());
        }
        self.purge(now, usize::MAX);
        if self.entries.len() + new_keys <= max_keys {
            Ok(())
        } else {
            Err(StoreError::CapacityExceeded(self.entries.len()))
        }
    }
}

impl State {
    fn write_record(
        &mut self,
        key: &str,
        new: Option<&[u8]>,
        expires_at: Option<Timestamp>,
        max_keys: usize,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let Some(bytes) = new else {
            self.entries.remove(key);
            return Ok(());
        };
        let expires_at = expires_at.unwrap_or(Timestamp::MAX);
        let (key, schedule) = match self.entries.get_key_value_mut(key) {
            Some((key, e)) => (Arc::clone(key), e.rewrite(bytes, expires_at)),
            None => {
                self.make_room(1, max_keys, now)?;
                let key: Key = Arc::from(key);
                let queued = expires_at < Timestamp::MAX;
                self.last_generation += 1;
                let generation = self.last_generation;
                let e = Entry { value: Value::Record(bytes.to_vec()), expires_at, queued, generation };
                self.entries.insert(Arc::clone(&key), e);
                (key, queued)
            }
        };
        if schedule {
            self.expiry.push(Reverse(Due(expires_at, key)));
        }
        Ok(())
    }
}

/// The live record at `key`, if any (expired ones read as absent); another kind of value there is
/// an error.
fn record<'a>(entries: &'a Map<Key, Entry>, key: &str, now: Timestamp) -> Result<Option<&'a [u8]>, StoreError> {
    entries.get(key).map_or(Ok(None), |e| e.record(key, now))
}

/// A new empty value for `spec`, not yet in the map nor queued for expiry.
fn new_entry(spec: &CounterSpec, now: Timestamp, last_generation: &mut u64) -> Entry {
    *last_generation += 1;
    Entry {
        value: Value::empty(spec.window),
        expires_at: spec.window.key_expiry(now),
        queued: false,
        generation: *last_generation,
    }
}

/// Puts the value of `spec` at its absent key with `added` in it; returns its total and
/// generation.
fn insert_new(
    entries: &mut Map<Key, Entry>,
    expiry: &mut BinaryHeap<Reverse<Due>>,
    last_generation: &mut u64,
    spec: &CounterSpec,
    added: &Added,
) -> (i64, u64) {
    let mut e = new_entry(spec, added.now, last_generation);
    let (total, generation, schedule) = added.to(&mut e, last_generation);
    let key: Key = Arc::from(spec.key.as_str());
    if let Some(at) = schedule {
        expiry.push(Reverse(Due(at, Arc::clone(&key))));
    }
    entries.insert(key, e);
    (total, generation)
}

/// How many expired keys one operation drops, so no single call pays for a large sweep.
const PURGE_PER_OP: usize = 64;

impl MemoryStore {
    /// Reserves (`hold`), or adds for good at once.
    fn reserve_now(&self, req: &ReserveRequest, hold: bool) -> Result<ReserveOutcome, StoreError> {
        check_counters(&req.counters, true)?;
        let mut st = self.lock();
        let now = req.now;
        st.purge(now, PURGE_PER_OP);
        let cap = self.config.max_events_per_window;
        let max_keys = self.config.max_keys;
        let existing = match req.counters.len() {
            1 => st.reserve_existing::<1>(req, hold, cap, max_keys),
            2 => st.reserve_existing::<2>(req, hold, cap, max_keys),
            3 => st.reserve_existing::<3>(req, hold, cap, max_keys),
            4 => st.reserve_existing::<4>(req, hold, cap, max_keys),
            _ => None,
        };
        match existing {
            Some(outcome) => outcome,
            None => self.reserve_general(&mut st, req, hold),
        }
    }

    /// [`MemoryStore::reserve_now`] for what the one-pass path leaves: more than four counters,
    /// no room for new keys, a cooldown to start on an empty window. Apart, so that the common
    /// path stays small.
    #[cold]
    #[inline(never)]
    fn reserve_general(&self, st: &mut State, req: &ReserveRequest, hold: bool) -> Result<ReserveOutcome, StoreError> {
        let now = req.now;
        let mut new_keys = 0;
        // Each counter's total now; then, once all fit, after the reservation. Cooldowns rank
        // first, then plain limits, then recent limits.
        let mut totals = Vec::with_capacity(req.counters.len());
        let mut over = None;
        for (index, c) in req.counters.iter().enumerate() {
            let (current, exists) = match st.live(&c.key, c.window, now)? {
                None => (0, false),
                Some(e) => {
                    if let Some(refusal) = cooling(e, index, now) {
                        return Ok(refusal);
                    }
                    (e.value.total(c.window), true)
                }
            };
            totals.push(current);
            if !exists && c.amount > 0 {
                new_keys += 1;
            }
            if over.is_none()
                && let Some(limit) = c.limit
                && current.saturating_add(c.amount) > limit
            {
                let retry_at = st.entries.get(c.key.as_str()).and_then(|e| e.retry_at(c, limit));
                over = Some(ReserveOutcome::Rejected { index, current, limit, retry_at, by: Refusal::Limit });
            }
        }
        if let Some(refusal) = over {
            return Ok(refusal);
        }
        for (index, c) in req.counters.iter().enumerate().filter(|(_, c)| c.recent.is_some()) {
            if cools_when_absent(c) && !st.entries.contains_key(c.key.as_str()) {
                // A cooldown to start on an empty window: make the window (without room for
                // it, the refusal stands without its cooldown).
                if st.make_room(1, self.config.max_keys, now).is_ok() {
                    st.insert_empty(c, now);
                }
            }
            if let Some(refusal) = refused_recently(c, st.entries.get_mut(c.key.as_str()), index, now) {
                return Ok(refusal);
            }
        }
        st.make_room(new_keys, self.config.max_keys, now)?;
        st.next_id += 1;
        let id = st.next_id;
        // Events of an amount added for good belong to no reservation.
        let owner = if hold { id } else { 0 };
        let mut parts = if hold { st.spare_parts.pop().unwrap_or_default() } else { Vec::new() };
        // A zero amount (a check) leaves its total as it was: keys are distinct, so no other
        // counter of the request changes it.
        for (c, total) in req.counters.iter().zip(&mut totals) {
            if c.amount != 0 {
                let generation;
                (*total, generation) = st.apply(c, c.amount, owner, now, self.config.max_events_per_window);
                if hold {
                    parts.push((c.key.clone(), c.amount, generation));
                }
            }
        }
        if hold {
            st.pending.insert(id, Pending { parts, hold_until: req.hold_until });
            st.next_lapse = st.next_lapse.min(req.hold_until);
        }
        Ok(ReserveOutcome::Reserved { id: ReservationId(id), totals })
    }

    fn commit_now(&self, id: ReservationId, now: Timestamp) -> Result<bool, StoreError> {
        let id = id.0;
        let mut st = self.lock();
        st.purge(now, PURGE_PER_OP);
        match st.pending.remove(&id) {
            Some(p) => {
                st.recycle(p.parts);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn release_now(&self, id: ReservationId, now: Timestamp) -> Result<bool, StoreError> {
        let id = id.0;
        let mut st = self.lock();
        st.purge(now, PURGE_PER_OP);
        match st.pending.remove(&id) {
            Some(p) => {
                st.undo(id, &p.parts, now);
                st.recycle(p.parts);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn add_now(&self, counters: &[CounterSpec], now: Timestamp) -> Result<Vec<i64>, StoreError> {
        check_counters(counters, false)?;
        let mut st = self.lock();
        st.purge(now, PURGE_PER_OP);
        for c in counters {
            st.live(&c.key, c.window, now)?;
        }
        let new_keys = counters.iter().filter(|c| !st.entries.contains_key(c.key.as_str())).count();
        st.make_room(new_keys, self.config.max_keys, now)?;
        counters.iter().map(|c| Ok(st.apply(c, c.amount, 0, now, self.config.max_events_per_window).0)).collect()
    }

    fn total_now(&self, key: &str, window: Window, now: Timestamp) -> Result<i64, StoreError> {
        let mut st = self.lock();
        st.purge(now, PURGE_PER_OP);
        Ok(st.current(key, window, now)?.0)
    }

    fn get_record_now(&self, key: &str, now: Timestamp) -> Result<Option<Vec<u8>>, StoreError> {
        let mut st = self.lock();
        st.purge(now, PURGE_PER_OP);
        Ok(record(&st.entries, key, now)?.map(<[u8]>::to_vec))
    }

    fn swap_record_now(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        check_record_key(key)?;
        let mut st = self.lock();
        st.purge(now, PURGE_PER_OP);
        if record(&st.entries, key, now)? != expected {
            return Ok(false);
        }
        st.write_record(key, new, expires_at, self.config.max_keys, now)?;
        Ok(true)
    }

    fn update_record_now(
        &self,
        key: &str,
        update: &mut RecordUpdate<'_>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        check_record_key(key)?;
        let mut st = self.lock();
        st.purge(now, PURGE_PER_OP);
        let State { entries, scratch, expiry, .. } = &mut *st;
        scratch.clear();
        // An existing key: read and rewritten in place, with one lookup.
        if let Some((k, e)) = entries.get_key_value_mut(key) {
            if update(e.record(key, now)?, scratch) {
                let at = expires_at.unwrap_or(Timestamp::MAX);
                if e.rewrite(scratch, at) {
                    expiry.push(Reverse(Due(at, Arc::clone(k))));
                }
            }
            return Ok(());
        }
        if !update(None, scratch) {
            return Ok(());
        }
        let next = std::mem::take(scratch);
        let written = st.write_record(key, Some(&next), expires_at, self.config.max_keys, now);
        st.scratch = next;
        written
    }

    fn put_record_now(
        &self,
        key: &str,
        value: Option<&[u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        check_record_key(key)?;
        let mut st = self.lock();
        st.purge(now, PURGE_PER_OP);
        // Only over a record (or nothing): another kind of value is an error.
        record(&st.entries, key, now)?;
        st.write_record(key, value, expires_at, self.config.max_keys, now)
    }
}

impl StateStore for MemoryStore {
    fn reserve<'a>(&'a self, request: &'a ReserveRequest) -> StoreFuture<'a, ReserveOutcome> {
        StoreFuture::ready(self.reserve_now(request, true))
    }

    fn add_within<'a>(&'a self, request: &'a ReserveRequest) -> StoreFuture<'a, ReserveOutcome> {
        StoreFuture::ready(self.reserve_now(request, false))
    }

    fn commit(&self, id: ReservationId, now: Timestamp) -> StoreFuture<'_, bool> {
        StoreFuture::ready(self.commit_now(id, now))
    }

    fn release(&self, id: ReservationId, now: Timestamp) -> StoreFuture<'_, bool> {
        StoreFuture::ready(self.release_now(id, now))
    }

    fn add<'a>(&'a self, counters: &'a [CounterSpec], now: Timestamp) -> StoreFuture<'a, Vec<i64>> {
        StoreFuture::ready(self.add_now(counters, now))
    }

    fn total<'a>(&'a self, key: &'a str, window: Window, now: Timestamp) -> StoreFuture<'a, i64> {
        StoreFuture::ready(self.total_now(key, window, now))
    }

    fn get_record<'a>(&'a self, key: &'a str, now: Timestamp) -> StoreFuture<'a, Option<Vec<u8>>> {
        StoreFuture::ready(self.get_record_now(key, now))
    }

    fn swap_record<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: Option<&'a [u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, bool> {
        StoreFuture::ready(self.swap_record_now(key, expected, new, expires_at, now))
    }

    fn put_record<'a>(
        &'a self,
        key: &'a str,
        value: Option<&'a [u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        StoreFuture::ready(self.put_record_now(key, value, expires_at, now))
    }

    fn update_record<'a>(
        &'a self,
        key: &'a str,
        update: &'a mut RecordUpdate<'_>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        StoreFuture::ready(self.update_record_now(key, update, expires_at, now))
    }
}
