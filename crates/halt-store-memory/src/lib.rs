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
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use halt_core::Timestamp;
use halt_core::store::{
    CounterSpec, RecordUpdate, Refusal, ReservationId, ReserveOutcome, ReserveRequest, StateStore, StoreError,
    StoreFuture, StoreKey, Window, check_counters, check_record_key,
};

mod window;

use window::*;

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
pub(crate) type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// A key, shared by its entry, the expiry queue and pending reservations without copying.
pub(crate) type Key = Arc<str>;

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
pub(crate) type Parts = Vec<(StoreKey, i64, u64)>;

/// How many emptied `parts` buffers a store keeps for reuse.
pub(crate) const SPARE_PARTS: usize = 64;

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
    /// Forgets a pending reservation, taking its amounts back first when `undo`; whether it was
    /// pending.
    fn settle(&mut self, id: u64, undo: bool, now: Timestamp) -> bool {
        let Some(p) = self.pending.remove(&id) else { return false };
        if undo {
            self.undo(id, &p.parts, now);
        }
        self.recycle(p.parts);
        true
    }

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

    /// [`MemoryStore::reserve_or_add`] for `N` counters whose keys all exist (or only check), with
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
    /// Runs `op` on the state under the lock, after releasing expired holds and dropping a few
    /// expired keys, unless the request was refused before (`valid`); the answer is ready at once.
    fn run<T>(
        &self,
        valid: Result<(), StoreError>,
        now: Timestamp,
        op: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> StoreFuture<'_, T> {
        if let Err(e) = valid {
            return StoreFuture::ready(Err(e));
        }
        let mut st = self.lock();
        st.purge(now, PURGE_PER_OP);
        StoreFuture::ready(op(&mut st))
    }

    /// Reserves (`hold`), or adds for good at once.
    fn reserve_or_add(&self, req: &ReserveRequest, hold: bool) -> Result<ReserveOutcome, StoreError> {
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

    /// [`MemoryStore::reserve_or_add`] for what the one-pass path leaves: more than four counters,
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
}

impl StateStore for MemoryStore {
    fn reserve<'a>(&'a self, request: &'a ReserveRequest) -> StoreFuture<'a, ReserveOutcome> {
        StoreFuture::ready(self.reserve_or_add(request, true))
    }

    fn add_within<'a>(&'a self, request: &'a ReserveRequest) -> StoreFuture<'a, ReserveOutcome> {
        StoreFuture::ready(self.reserve_or_add(request, false))
    }

    fn commit(&self, id: ReservationId, now: Timestamp) -> StoreFuture<'_, bool> {
        self.run(Ok(()), now, |st| Ok(st.settle(id.0, false, now)))
    }

    fn release(&self, id: ReservationId, now: Timestamp) -> StoreFuture<'_, bool> {
        self.run(Ok(()), now, |st| Ok(st.settle(id.0, true, now)))
    }

    fn add<'a>(&'a self, counters: &'a [CounterSpec], now: Timestamp) -> StoreFuture<'a, Vec<i64>> {
        let (cap, max_keys) = (self.config.max_events_per_window, self.config.max_keys);
        self.run(check_counters(counters, false), now, |st| {
            for c in counters {
                st.live(&c.key, c.window, now)?;
            }
            let new_keys = counters.iter().filter(|c| !st.entries.contains_key(c.key.as_str())).count();
            st.make_room(new_keys, max_keys, now)?;
            Ok(counters.iter().map(|c| st.apply(c, c.amount, 0, now, cap).0).collect())
        })
    }

    fn total<'a>(&'a self, key: &'a str, window: Window, now: Timestamp) -> StoreFuture<'a, i64> {
        self.run(Ok(()), now, |st| Ok(st.current(key, window, now)?.0))
    }

    fn get_record<'a>(&'a self, key: &'a str, now: Timestamp) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.run(Ok(()), now, |st| Ok(record(&st.entries, key, now)?.map(<[u8]>::to_vec)))
    }

    fn swap_record<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: Option<&'a [u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, bool> {
        self.run(check_record_key(key), now, |st| {
            if record(&st.entries, key, now)? != expected {
                return Ok(false);
            }
            st.write_record(key, new, expires_at, self.config.max_keys, now)?;
            Ok(true)
        })
    }

    fn put_record<'a>(
        &'a self,
        key: &'a str,
        value: Option<&'a [u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        self.run(check_record_key(key), now, |st| {
            // Only over a record (or nothing): another kind of value is an error.
            record(&st.entries, key, now)?;
            st.write_record(key, value, expires_at, self.config.max_keys, now)
        })
    }

    fn update_record<'a>(
        &'a self,
        key: &'a str,
        update: &'a mut RecordUpdate<'_>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        self.run(check_record_key(key), now, |st| {
            let State { entries, scratch, expiry, .. } = st;
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
        })
    }
}
