//! The embedded persistent state store of AgentHalt, on sled: counters, windows, cooldown stamps,
//! pending approvals and receipts survive a restart.
//!
//! Every operation is atomic, so a conditional reservation across several counters is all or
//! nothing. Durability is a choice:
//!
//! - [`Durability::Strict`] (the server's default): each operation is one sled transaction, and
//!   one that makes something permanent (a commit, an add, a record write) returns only once its
//!   data is flushed to disk. Concurrent callers share one flush (group commit), so throughput
//!   grows with concurrency.
//! - [`Durability::Relaxed`]: operations work on an in-memory write-behind cache in front of
//!   sled, each under one lock; every N milliseconds a background thread writes what changed to
//!   sled as one atomic batch and flushes it. Much faster (a counter rewritten a thousand times
//!   in that interval is written once); a crash may lose the last N milliseconds of changes (so a
//!   budget may be overspent by what was committed in that window), and what is on disk is
//!   always the state as of one write-behind, never half of one. Closing the store (dropping it)
//!   writes everything. If a write-behind fails, every operation fails until one succeeds.
//!
//! Reservations that were pending when the process stopped lapse at their hold time, as in
//! memory. Expired counters are dropped by [`SledStore::purge_expired`], which
//! [`SledStore::spawn_purger`] runs in the background.
//!
//! ```
//! use halt_core::store::{CounterSpec, ReserveOutcome, ReserveRequest, StateStore, Window};
//! use halt_core::Timestamp;
//! use halt_store_sled::{Durability, SledStore, SledStoreConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = std::env::temp_dir().join(format!("halt-sled-doc-{}", std::process::id()));
//! let store = SledStore::open(&SledStoreConfig::new(&dir).durability(Durability::Strict))?;
//! let now = Timestamp::from_secs(1_000);
//! let day = Window::Bucket { expires_at: Timestamp::from_secs(86_400) };
//! let req = ReserveRequest {
//!     counters: vec![CounterSpec::new("spend/day", day, 250_000, Some(1_000_000))],
//!     now,
//!     hold_until: Timestamp::from_secs(1_060),
//! };
//! let ReserveOutcome::Reserved { id, .. } = store.reserve(&req).await? else { unreachable!() };
//! assert!(store.commit(id, now).await?);
//! drop(store);
//! let reopened = SledStore::open(&SledStoreConfig::new(&dir))?;
//! assert_eq!(reopened.total("spend/day", day, now).await?, 250_000);
//! # drop(reopened);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), halt_core::StoreError>(()) }).unwrap();
//! ```

mod codec;
mod tx;

use tx::*;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use halt_core::store::{
    CounterSpec, Refusal, ReservationId, ReserveOutcome, ReserveRequest, StateStore, StoreError, StoreFuture, Window,
    check_counters, check_record_key, recent_refusal, sliding_retry_at,
};
use halt_core::{Clock, Timestamp};
use sled::transaction::ConflictableTransactionError;

use codec::{Entry, Pending, Value};

/// When data reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Permanent changes are flushed before the operation returns; concurrent ones share a flush.
    Strict,
    /// sled flushes in the background every this many milliseconds.
    Relaxed {
        /// The flush interval, in milliseconds.
        flush_every_ms: u64,
    },
}

/// How to open a [`SledStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SledStoreConfig {
    /// The directory of the database (created if missing).
    pub path: PathBuf,
    /// When data reaches the disk (default: strict).
    pub durability: Durability,
    /// The most events one sliding window keeps (the two oldest merge past it).
    pub max_events_per_window: usize,
}

impl SledStoreConfig {
    /// Strict durability in `path`.
    #[must_use]
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self { path: path.as_ref().to_owned(), durability: Durability::Strict, max_events_per_window: 4_096 }
    }

    /// Sets the durability.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}

/// A [`StateStore`] in a sled database.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    strict: bool,
    max_events: usize,
    /// No pending reservation lapses before this (it may be earlier, never later).
    next_lapse: AtomicI64,
    flusher: Option<Flusher>,
    /// Relaxed durability keeps pending reservations in memory, not on disk: a crash already
    /// may lose the last commits, and a reservation in flight at a crash then stays counted
    /// (stricter, never looser) until its window ends. Strict keeps them on disk.
    held: Option<Mutex<HashMap<u64, Pending>>>,
    /// Relaxed durability's write-behind cache, and the thread that writes it out.
    behind: Option<(Arc<WriteBehind>, std::thread::JoinHandle<()>)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code path panics while holding these locks; the data stays consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SledStore {
    /// Opens (or creates) the database.
    ///
    /// # Errors
    /// The directory cannot be opened (permissions, another process holds it, corruption).
    pub fn open(config: &SledStoreConfig) -> Result<Self, StoreError> {
        // Counters are rewritten on every call: favour write throughput over compact files.
        // Both durabilities flush sled themselves: strict after each write, relaxed after each
        // write-behind.
        let c = sled::Config::new().path(&config.path).mode(sled::Mode::HighThroughput).flush_every_ms(None);
        // sled releases its file lock from a background thread a moment after the last handle is
        // dropped: a quick reopen (a restart, a test) waits for it, briefly.
        let mut attempts = 0;
        let db = loop {
            match c.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if is_locked(&e) && attempts < 500 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(unavailable(e)),
            }
        };
        let strict = config.durability == Durability::Strict;
        let flusher = strict.then(|| Flusher::new(db.clone()));
        let held = (!strict).then(Mutex::default);
        let behind = match config.durability {
            Durability::Strict => None,
            Durability::Relaxed { flush_every_ms } => {
                let behind = Arc::new(WriteBehind {
                    db: db.clone(),
                    cache: Mutex::default(),
                    writing: Mutex::new(()),
                    stop: Mutex::new(false),
                    wake: Condvar::new(),
                    #[cfg(test)]
                    fail_writes: std::sync::atomic::AtomicBool::new(false),
                });
                let every = Duration::from_millis(flush_every_ms.max(1));
                let writer = Arc::clone(&behind);
                let thread = std::thread::Builder::new()
                    .name("halt-sled-writer".into())
                    .spawn(move || writer.run(every))
                    .map_err(|e| StoreError::Unavailable(format!("cannot start the sled writer: {e}")))?;
                Some((behind, thread))
            }
        };
        let next_lapse = AtomicI64::new(0);
        Ok(Self { db, strict, max_events: config.max_events_per_window, next_lapse, flusher, held, behind })
    }

    /// Writes everything to disk now (in relaxed durability, what the cache holds too).
    ///
    /// # Errors
    /// The write or the flush failed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if let Some((behind, _)) = &self.behind {
            behind.write()?;
        }
        self.db.flush_async().await.map(|_| ()).map_err(unavailable)
    }

    /// Runs `f` atomically: in a sled transaction (strict), or on the cache under its lock
    /// (relaxed).
    fn with_entries<T>(&self, f: impl Fn(&mut dyn Entries) -> Result<T, TxError>) -> Result<T, StoreError> {
        match &self.behind {
            Some((behind, _)) => {
                let mut cache = lock(&behind.cache);
                if let Some(e) = &cache.failure {
                    return Err(StoreError::Unavailable(format!("the last write to disk failed: {e}")));
                }
                f(&mut CacheEntries { db: &self.db, cache: &mut cache }).map_err(|e| match e {
                    ConflictableTransactionError::Abort(e) => e,
                    ConflictableTransactionError::Storage(e) => unavailable(e),
                    ConflictableTransactionError::Conflict => StoreError::Unavailable("sled: conflict".into()),
                })
            }
            None => tx_result(self.db.transaction(|tx| f(&mut TxEntries(tx)))),
        }
    }

    async fn durable(&self) -> Result<(), StoreError> {
        match (&self.flusher, self.strict) {
            (Some(f), true) => f.flush().await,
            _ => Ok(()),
        }
    }

    /// Releases every reservation whose hold has lapsed (cheap when none can have).
    fn release_lapsed(&self, now: Timestamp) -> Result<(), StoreError> {
        if now.as_micros() < self.next_lapse.load(Ordering::SeqCst) {
            return Ok(());
        }
        // While this scan runs, other calls need not scan. A reservation made meanwhile lowers
        // the mark again (after storing its hold), and the scan's result only ever lowers it, so
        // no hold is forgotten. After a failure, the next operation scans again.
        self.next_lapse.store(i64::MAX, Ordering::SeqCst);
        let scanned = self.scan_lapsed(now);
        let next = scanned.as_ref().map_or(now.as_micros(), |earliest| *earliest);
        self.next_lapse.fetch_min(next, Ordering::SeqCst);
        scanned.map(|_| ())
    }

    /// Releases the lapsed reservations; returns when the next one lapses.
    fn scan_lapsed(&self, now: Timestamp) -> Result<i64, StoreError> {
        let mut earliest = i64::MAX;
        if let Some(held) = &self.held {
            let lapsed: Vec<(u64, Pending)> = {
                let mut held = lock(held);
                let ids: Vec<u64> = held.iter().filter(|(_, p)| p.hold_until <= now).map(|(id, _)| *id).collect();
                earliest = held
                    .values()
                    .map(|p| p.hold_until.as_micros())
                    .filter(|&t| t > now.as_micros())
                    .min()
                    .unwrap_or(i64::MAX);
                ids.into_iter().filter_map(|id| held.remove(&id).map(|p| (id, p))).collect()
            };
            for (id, p) in lapsed {
                self.with_entries(|tx| undo(tx, id, &p, now))?;
            }
        }
        // Reservations on disk: strict ones, or left by a strict run before this one.
        for item in self.db.scan_prefix(b"p:") {
            let (k, raw) = item.map_err(unavailable)?;
            let p = Pending::decode(&raw).map_err(|r| corrupt(&k, r))?;
            if p.hold_until > now {
                earliest = earliest.min(p.hold_until.as_micros());
                continue;
            }
            let id = u64::from_be_bytes(k[2..].try_into().map_err(|_| corrupt(&k, "bad pending key"))?);
            self.with_entries(|tx| {
                if tx.get(&k)?.is_some() {
                    undo(tx, id, &p, now)?;
                    tx.remove(&k)?;
                }
                Ok(())
            })?;
        }
        Ok(earliest)
    }

    /// How many counters, windows and records are stored (expired ones included until purged).
    #[must_use]
    pub fn key_count(&self) -> usize {
        self.write_behind();
        self.db.scan_prefix(b"c:").count()
    }

    /// In relaxed durability, writes the cache to sled (so a scan of sled sees everything).
    fn write_behind(&self) {
        if let Some((behind, _)) = &self.behind {
            // On failure the cache keeps the changes; a scan then misses only what it holds.
            let _ = behind.write();
        }
    }

    /// Drops expired counters and records; returns how many. Also releases lapsed reservations.
    ///
    /// # Errors
    /// The database failed.
    pub fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.next_lapse.store(0, Ordering::SeqCst);
        self.release_lapsed(now)?;
        self.write_behind();
        let mut dropped = 0;
        for item in self.db.scan_prefix(b"c:") {
            let (k, _) = item.map_err(unavailable)?;
            // Read again in the operation: it may have changed since the scan.
            let expired = |tx: &mut dyn Entries| {
                let expired = tx.get(&k)?.is_some_and(|raw| Entry::decode(&raw).is_ok_and(|e| e.expires_at <= now));
                if expired {
                    tx.remove(&k)?;
                }
                Ok(expired)
            };
            dropped += usize::from(self.with_entries(expired)?);
        }
        Ok(dropped)
    }

    /// Runs [`SledStore::purge_expired`] every `every` on the current Tokio runtime, with time
    /// from `clock`, until the store is dropped.
    pub fn spawn_purger(self: &Arc<Self>, clock: Arc<dyn Clock>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                let _ = store.purge_expired(clock.now());
            }
        })
    }

    fn record_of(tx: &mut dyn Entries, key: &str, now: Timestamp) -> Result<Option<Vec<u8>>, TxError> {
        let k = counter_key(key);
        let Some(raw) = tx.get(&k)? else { return Ok(None) };
        let e = Entry::decode(&raw).map_err(|r| abort(corrupt(&k, r)))?;
        if e.expires_at <= now {
            return Ok(None);
        }
        match e.value {
            Value::Record(bytes) => Ok(Some(bytes)),
            other => Err(abort(StoreError::WrongKind { key: key.to_owned(), expected: "record", found: other.kind() })),
        }
    }

    fn write_record(
        tx: &mut dyn Entries,
        key: &str,
        value: Option<&[u8]>,
        expires_at: Option<Timestamp>,
    ) -> Result<(), TxError> {
        let k = counter_key(key);
        match value {
            None => {
                tx.remove(&k)?;
            }
            Some(bytes) => {
                let e = Entry {
                    expires_at: expires_at.unwrap_or(Timestamp::MAX),
                    generation: 0,
                    value: Value::Record(bytes.to_vec()),
                };
                tx.insert(&k, e.encode())?;
            }
        }
        Ok(())
    }
}

impl SledStore {
    /// Reserves (`hold`), or adds for good at once; says whether it wrote for good.
    fn reserve_or_add(&self, req: &ReserveRequest, hold: bool) -> Result<(ReserveOutcome, bool), StoreError> {
        check_counters(&req.counters, true)?;
        self.release_lapsed(req.now)?;
        let now = req.now;
        let outcome = self.with_entries(|tx| {
            // Cooldowns rank first, then plain limits, then recent limits.
            let mut live_entries = Vec::with_capacity(req.counters.len());
            let mut over = None;
            for (index, c) in req.counters.iter().enumerate() {
                let e = live(tx, &counter_key(&c.key), c.window, now)?;
                if let Some(Entry { value: Value::Sliding(_, Some(until)), .. }) = e
                    && now < until
                {
                    let by = Refusal::Cooldown;
                    let refusal = ReserveOutcome::Rejected { index, current: 0, limit: 0, retry_at: Some(until), by };
                    return Ok((refusal, None));
                }
                let current = total_of(e.as_ref(), c.window);
                if over.is_none()
                    && let Some(limit) = c.limit
                    && current.saturating_add(c.amount) > limit
                {
                    let retry_at = match (c.window, e.as_ref()) {
                        (Window::Sliding { width }, Some(Entry { value: Value::Sliding(events, _), .. })) => {
                            sliding_retry_at(
                                events.iter().map(|ev| (ev.at, ev.amount)),
                                current,
                                width,
                                c.amount,
                                limit,
                            )
                        }
                        // A bucket frees up when it ends.
                        (Window::Bucket { .. }, Some(e)) => Some(e.expires_at),
                        _ => None,
                    };
                    over = Some(ReserveOutcome::Rejected { index, current, limit, retry_at, by: Refusal::Limit });
                }
                live_entries.push(e);
            }
            if let Some(refusal) = over {
                return Ok((refusal, None));
            }
            for (index, (c, e)) in req.counters.iter().zip(&mut live_entries).enumerate() {
                let Some(recent) = c.recent else { continue };
                let refusal = match e {
                    Some(Entry { value: Value::Sliding(events, _), .. }) => {
                        recent_refusal(events.iter().map(|ev| (ev.at, ev.amount)), now, recent, c.amount)
                    }
                    _ => (c.amount > recent.limit).then_some((0, None)),
                };
                let Some((current, retry_at)) = refusal else { continue };
                if !recent.cooldown.is_zero() {
                    // The one change a refusal makes: the window's cooldown starts (the window
                    // lives at least as long).
                    let until = now.saturating_add(recent.cooldown);
                    let mut cooled = e.take().unwrap_or_else(|| Entry {
                        expires_at: c.window.key_expiry(now),
                        generation: 0,
                        value: empty(c.window),
                    });
                    if let Value::Sliding(_, cooling) = &mut cooled.value {
                        *cooling = Some(until);
                    }
                    cooled.expires_at = cooled.expires_at.max(until);
                    tx.insert(&counter_key(&c.key), cooled.encode())?;
                }
                let limit = recent.limit;
                return Ok((ReserveOutcome::Rejected { index, current, limit, retry_at, by: Refusal::Recent }, None));
            }
            let id = tx.generate_id()?;
            // Events of an amount added for good belong to no reservation.
            let owner = if hold { id } else { 0 };
            let mut totals = Vec::with_capacity(req.counters.len());
            let mut parts = Vec::with_capacity(req.counters.len());
            for (c, e) in req.counters.iter().zip(live_entries) {
                if c.amount == 0 {
                    totals.push(total_of(e.as_ref(), c.window));
                    continue;
                }
                let e = apply(e, c, owner, now, self.max_events);
                totals.push(total_of(Some(&e), c.window));
                if hold {
                    parts.push((c.key.to_string(), c.amount, e.generation));
                }
                tx.insert(&counter_key(&c.key), e.encode())?;
            }
            if !hold {
                return Ok((ReserveOutcome::Reserved { id: ReservationId(id), totals }, None));
            }
            let pending = Pending { hold_until: req.hold_until, parts };
            if self.held.is_some() {
                return Ok((ReserveOutcome::Reserved { id: ReservationId(id), totals }, Some(pending)));
            }
            tx.insert(&pending_key(id), pending.encode())?;
            Ok((ReserveOutcome::Reserved { id: ReservationId(id), totals }, None))
        })?;
        let (outcome, pending) = outcome;
        if let (Some(held), Some(pending), ReserveOutcome::Reserved { id, .. }) = (&self.held, pending, &outcome) {
            lock(held).insert(id.0, pending);
        }
        let added = matches!(outcome, ReserveOutcome::Reserved { .. });
        if added && hold {
            self.next_lapse.fetch_min(req.hold_until.as_micros(), Ordering::SeqCst);
        }
        let cooled = match outcome {
            ReserveOutcome::Rejected { index, by: Refusal::Recent, .. } => {
                req.counters[index].recent.is_some_and(|r| !r.cooldown.is_zero())
            }
            _ => false,
        };
        // A pending reservation lost in a crash would have been released anyway; what is added
        // for good, and a cooldown started, must reach the disk (strict durability).
        Ok((outcome, (added && !hold) || cooled))
    }

    /// Takes a reservation held in memory (relaxed durability).
    fn take_held(&self, id: ReservationId) -> Option<Pending> {
        lock(self.held.as_ref()?).remove(&id.0)
    }

    /// Runs `op`, which says whether it wrote for good; answers at once, unless that write must
    /// first reach the disk (strict durability).
    fn answer<T: Send + 'static>(&self, op: impl FnOnce() -> Result<(T, bool), StoreError>) -> StoreFuture<'_, T> {
        match op() {
            Ok((value, true)) if self.strict && self.flusher.is_some() => {
                StoreFuture::new(async move { self.durable().await.map(|()| value) })
            }
            other => StoreFuture::ready(other.map(|(value, _)| value)),
        }
    }
}

impl StateStore for SledStore {
    fn reserve<'a>(&'a self, request: &'a ReserveRequest) -> StoreFuture<'a, ReserveOutcome> {
        self.answer(|| self.reserve_or_add(request, true))
    }

    fn add_within<'a>(&'a self, request: &'a ReserveRequest) -> StoreFuture<'a, ReserveOutcome> {
        self.answer(|| self.reserve_or_add(request, false))
    }

    fn commit(&self, id: ReservationId, now: Timestamp) -> StoreFuture<'_, bool> {
        self.answer(|| {
            self.release_lapsed(now)?;
            if let Some(p) = self.take_held(id) {
                if p.hold_until <= now {
                    self.with_entries(|tx| undo(tx, id.0, &p, now))?;
                    return Ok((false, false));
                }
                return Ok((true, false));
            }
            let key = pending_key(id.0);
            // Committing only forgets the pending record: on disk, one atomic remove (no transaction).
            let removed = match self.behind {
                Some(_) => self.with_entries(|tx| tx.remove(&key))?,
                None => self.db.remove(&key).map_err(unavailable)?,
            };
            let Some(raw) = removed else { return Ok((false, false)) };
            let p = Pending::decode(&raw).map_err(|r| corrupt(&key, r))?;
            if p.hold_until <= now {
                // It lapsed before anyone noticed: take its amounts back instead.
                self.with_entries(|tx| undo(tx, id.0, &p, now))?;
                return Ok((false, false));
            }
            Ok((true, true))
        })
    }

    fn release(&self, id: ReservationId, now: Timestamp) -> StoreFuture<'_, bool> {
        self.answer(|| {
            self.release_lapsed(now)?;
            if let Some(p) = self.take_held(id) {
                self.with_entries(|tx| undo(tx, id.0, &p, now))?;
                return Ok((true, false));
            }
            let key = pending_key(id.0);
            let released = self.with_entries(|tx| {
                let Some(raw) = tx.get(&key)? else { return Ok(false) };
                let p = Pending::decode(&raw).map_err(|r| abort(corrupt(&key, r)))?;
                undo(tx, id.0, &p, now)?;
                tx.remove(&key)?;
                Ok(true)
            })?;
            Ok((released, false))
        })
    }

    fn add<'a>(&'a self, counters: &'a [CounterSpec], now: Timestamp) -> StoreFuture<'a, Vec<i64>> {
        self.answer(|| {
            check_counters(counters, false)?;
            self.release_lapsed(now)?;
            let totals = self.with_entries(|tx| {
                let mut entries = Vec::with_capacity(counters.len());
                for c in counters {
                    let k = counter_key(&c.key);
                    let e = live(tx, &k, c.window, now)?;
                    entries.push((k, e));
                }
                let mut totals = Vec::with_capacity(counters.len());
                for (c, (k, e)) in counters.iter().zip(entries) {
                    let e = apply(e, c, 0, now, self.max_events);
                    totals.push(total_of(Some(&e), c.window));
                    tx.insert(&k, e.encode())?;
                }
                Ok(totals)
            })?;
            Ok((totals, true))
        })
    }

    fn total<'a>(&'a self, key: &'a str, window: Window, now: Timestamp) -> StoreFuture<'a, i64> {
        self.answer(|| {
            self.release_lapsed(now)?;
            let total =
                self.with_entries(|tx| Ok(total_of(live(tx, &counter_key(key), window, now)?.as_ref(), window)))?;
            Ok((total, false))
        })
    }

    fn get_record<'a>(&'a self, key: &'a str, now: Timestamp) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.answer(|| Ok((self.with_entries(|tx| Self::record_of(tx, key, now))?, false)))
    }

    fn swap_record<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: Option<&'a [u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, bool> {
        self.answer(|| {
            check_record_key(key)?;
            let swapped = self.with_entries(|tx| {
                if Self::record_of(tx, key, now)?.as_deref() != expected {
                    return Ok(false);
                }
                Self::write_record(tx, key, new, expires_at)?;
                Ok(true)
            })?;
            Ok((swapped, swapped))
        })
    }

    fn put_record<'a>(
        &'a self,
        key: &'a str,
        value: Option<&'a [u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        self.answer(|| {
            check_record_key(key)?;
            self.with_entries(|tx| {
                Self::record_of(tx, key, now)?;
                Self::write_record(tx, key, value, expires_at)
            })?;
            Ok(((), true))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_write_behind_fails_operations_until_one_succeeds() {
        let dir = std::env::temp_dir().join(format!("halt-sled-unit-failure-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = SledStoreConfig::new(&dir).durability(Durability::Relaxed { flush_every_ms: 600_000 });
        let day = Window::Bucket { expires_at: Timestamp::from_secs(86_400) };
        let now = Timestamp::from_secs(1);
        {
            let store = SledStore::open(&config).unwrap_or_else(|e| panic!("{e}"));
            store.add(&[CounterSpec::new("k", day, 5, None)], now).await.unwrap_or_else(|e| panic!("{e}"));
            let Some((behind, _)) = &store.behind else { panic!("relaxed has a write-behind") };
            behind.fail_writes.store(true, Ordering::SeqCst);
            assert!(store.flush().await.is_err());
            let refused = store.total("k", day, now).await;
            assert!(matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("write to disk")), "{refused:?}");
            behind.fail_writes.store(false, Ordering::SeqCst);
            store.flush().await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(store.total("k", day, now).await.ok(), Some(5), "recovered, nothing lost");
        }
        let store = SledStore::open(&config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.total("k", day, now).await.ok(), Some(5), "written once the disk took it");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_held_lock_is_recognised_as_sled_reports_it() {
        let held = std::io::Error::other(format!(
            "could not acquire lock on {:?}: {:?}",
            "/tmp/x/db",
            std::io::Error::from(std::io::ErrorKind::WouldBlock)
        ));
        assert!(is_locked(&held));
        assert!(is_locked(&std::io::Error::from(std::io::ErrorKind::WouldBlock)));
        assert!(!is_locked(&std::io::Error::from(std::io::ErrorKind::PermissionDenied)));
    }
}
