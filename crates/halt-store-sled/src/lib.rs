//! The embedded persistent state store of AgentHalt, on sled: counters, windows, cooldown stamps,
//! pending approvals and receipts survive a restart.
//!
//! Every operation is one sled transaction, so a conditional reservation across several
//! counters is atomic and all or nothing. Durability is a choice:
//!
//! - [`Durability::Strict`] (the server's default): an operation that makes something permanent
//!   (a commit, an add, a record write) returns only once its data is flushed to disk. Concurrent
//!   callers share one flush (group commit), so throughput grows with concurrency.
//! - [`Durability::Relaxed`]: sled flushes every N milliseconds in the background. Much faster;
//!   a crash may lose the last N milliseconds of commits (so a budget may be overspent by what
//!   was committed in that window).
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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use halt_core::store::{
    CounterSpec, ReservationId, ReserveOutcome, ReserveRequest, StateStore, StoreError, StoreFuture, Window,
    check_counters, check_record_key, sliding_retry_at,
};
use halt_core::{Clock, Timestamp};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use codec::{Entry, Event, Pending, Value};

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
    held: Option<std::sync::Mutex<std::collections::HashMap<u64, Pending>>>,
}

/// Group commit: a caller takes a ticket after its write, and returns once a flush that began
/// after the ticket was taken has finished. Whoever finds no flush running starts one, for
/// everyone who asked so far.
#[derive(Debug)]
struct Flusher {
    db: sled::Db,
    requested: AtomicU64,
    done: tokio::sync::watch::Sender<u64>,
    running: tokio::sync::Mutex<()>,
}

impl Flusher {
    fn new(db: sled::Db) -> Self {
        let (done, _) = tokio::sync::watch::channel(0);
        Self { db, requested: AtomicU64::new(0), done, running: tokio::sync::Mutex::new(()) }
    }

    /// Returns once everything written before the call is on disk.
    async fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut done = self.done.subscribe();
        loop {
            if *done.borrow_and_update() >= ticket {
                return Ok(());
            }
            if let Ok(_running) = self.running.try_lock() {
                let covered = self.requested.load(Ordering::SeqCst);
                self.db.flush_async().await.map_err(unavailable)?;
                self.done.send_modify(|d| *d = (*d).max(covered));
                continue;
            }
            // A flush is running; wait for it (and re-check now and then, in case it failed).
            let _ = tokio::time::timeout(Duration::from_millis(20), done.changed()).await;
        }
    }
}

/// Whether opening failed because another handle still holds the directory's lock (sled says
/// so with an error of kind `Other` whose text names the lock, wrapping the `WouldBlock`).
fn is_locked(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

fn unavailable(e: sled::Error) -> StoreError {
    StoreError::Unavailable(format!("sled: {e}"))
}

fn corrupt(key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: reason.to_owned() }
}

/// A transaction body's error.
type TxError = ConflictableTransactionError<StoreError>;

fn abort(e: StoreError) -> TxError {
    ConflictableTransactionError::Abort(e)
}

fn tx_result<T>(r: Result<T, TransactionError<StoreError>>) -> Result<T, StoreError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => unavailable(e),
    })
}

fn counter_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.extend_from_slice(b"c:");
    k.extend_from_slice(key.as_bytes());
    k
}

fn pending_key(id: u64) -> Vec<u8> {
    let mut k = b"p:".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Reads a live counter entry (expired ones read as absent), pruned to its window.
fn live(tx: &TransactionalTree, key: &[u8], window: Window, now: Timestamp) -> Result<Option<Entry>, TxError> {
    let Some(raw) = tx.get(key)? else { return Ok(None) };
    let mut e = Entry::decode(&raw).map_err(|r| abort(corrupt(key, r)))?;
    let sliding = matches!(window, Window::Sliding { .. });
    if e.expires_at <= now {
        // Expired: a fresh value of the right kind, one generation on.
        e.generation += 1;
        e.value = if sliding { Value::Sliding(Vec::new()) } else { Value::Counter(0) };
        return Ok(Some(e));
    }
    let expected = if sliding { "sliding window" } else { "counter" };
    if e.value.kind() != expected {
        return Err(abort(StoreError::WrongKind {
            key: String::from_utf8_lossy(&key[2..]).into_owned(),
            expected,
            found: e.value.kind(),
        }));
    }
    if let (Window::Sliding { width }, Value::Sliding(events)) = (window, &mut e.value) {
        let cutoff = now.as_micros().saturating_sub(micros(width));
        events.retain(|ev| ev.at.as_micros() >= cutoff);
    }
    Ok(Some(e))
}

fn total_of(e: Option<&Entry>) -> i64 {
    match e.map(|e| &e.value) {
        Some(Value::Counter(t)) => (*t).max(0),
        Some(Value::Sliding(events)) => events.iter().map(|ev| ev.amount).sum::<i64>().max(0),
        _ => 0,
    }
}

/// Adds `amount` to a (live) entry, creating it; returns the new total.
fn apply(e: Option<Entry>, spec: &CounterSpec, reservation: u64, now: Timestamp, cap: usize) -> Entry {
    let expiry = spec.window.key_expiry(now);
    let mut e = e.unwrap_or_else(|| Entry {
        expires_at: expiry,
        generation: 0,
        value: if matches!(spec.window, Window::Sliding { .. }) {
            Value::Sliding(Vec::new())
        } else {
            Value::Counter(0)
        },
    });
    e.expires_at = e.expires_at.max(expiry);
    match &mut e.value {
        Value::Counter(t) => *t = t.saturating_add(spec.amount).max(0),
        Value::Sliding(events) => {
            events.push(Event { at: now, amount: spec.amount, reservation });
            while events.len() > cap.max(2) {
                // The two oldest merge: the sum stays, and the merged event ages out later.
                let first = events.remove(0);
                events[0].amount = events[0].amount.saturating_add(first.amount);
                events[0].reservation = 0;
            }
        }
        Value::Record(_) => {}
    }
    e
}

/// Takes a reservation's amounts back.
fn undo(tx: &TransactionalTree, id: u64, p: &Pending, now: Timestamp) -> Result<(), TxError> {
    for (key, amount, generation) in &p.parts {
        let k = counter_key(key);
        let Some(raw) = tx.get(&k)? else { continue };
        let Ok(mut e) = Entry::decode(&raw) else { continue };
        if e.expires_at <= now || e.generation != *generation {
            continue;
        }
        match &mut e.value {
            Value::Counter(t) => *t = t.saturating_sub(*amount).max(0),
            Value::Sliding(events) => {
                if let Some(pos) = events.iter().position(|ev| ev.reservation == id) {
                    events.remove(pos);
                }
            }
            Value::Record(_) => continue,
        }
        tx.insert(k, e.encode())?;
    }
    Ok(())
}

impl SledStore {
    /// Opens (or creates) the database.
    ///
    /// # Errors
    /// The directory cannot be opened (permissions, another process holds it, corruption).
    pub fn open(config: &SledStoreConfig) -> Result<Self, StoreError> {
        // Counters are rewritten on every call: favour write throughput over compact files.
        let mut c = sled::Config::new().path(&config.path).mode(sled::Mode::HighThroughput);
        c = match config.durability {
            Durability::Strict => c.flush_every_ms(None),
            Durability::Relaxed { flush_every_ms } => c.flush_every_ms(Some(flush_every_ms.max(1))),
        };
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
        let held = (!strict).then(std::sync::Mutex::default);
        Ok(Self { db, strict, max_events: config.max_events_per_window, next_lapse: AtomicI64::new(0), flusher, held })
    }

    /// Flushes everything to disk now.
    ///
    /// # Errors
    /// The flush failed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map(|_| ()).map_err(unavailable)
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
                let mut held = held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
                tx_result(self.db.transaction(|tx| undo(tx, id, &p, now)))?;
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
            tx_result(self.db.transaction(|tx| {
                if tx.remove(k.as_ref())?.is_some() {
                    undo(tx, id, &p, now)?;
                }
                Ok(())
            }))?;
        }
        Ok(earliest)
    }

    /// How many counters, windows and records are stored (expired ones included until purged).
    #[must_use]
    pub fn key_count(&self) -> usize {
        self.db.scan_prefix(b"c:").count()
    }

    /// Drops expired counters and records; returns how many. Also releases lapsed reservations.
    ///
    /// # Errors
    /// The database failed.
    pub fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.next_lapse.store(0, Ordering::SeqCst);
        self.release_lapsed(now)?;
        let mut dropped = 0;
        for item in self.db.scan_prefix(b"c:") {
            let (k, raw) = item.map_err(unavailable)?;
            let Ok(e) = Entry::decode(&raw) else { continue };
            if e.expires_at <= now {
                // Only if unchanged since it was read.
                if self.db.compare_and_swap(&k, Some(raw), None as Option<&[u8]>).map_err(unavailable)?.is_ok() {
                    dropped += 1;
                }
            }
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

    fn record_of(&self, tx: &TransactionalTree, key: &str, now: Timestamp) -> Result<Option<Vec<u8>>, TxError> {
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
        tx: &TransactionalTree,
        key: &str,
        value: Option<&[u8]>,
        expires_at: Option<Timestamp>,
    ) -> Result<(), TxError> {
        let k = counter_key(key);
        match value {
            None => {
                tx.remove(k)?;
            }
            Some(bytes) => {
                let e = Entry {
                    expires_at: expires_at.unwrap_or(Timestamp::MAX),
                    generation: 0,
                    value: Value::Record(bytes.to_vec()),
                };
                tx.insert(k, e.encode())?;
            }
        }
        Ok(())
    }
}

/// The operations, done at once; each says whether it wrote (and so must be made durable).
impl SledStore {
    fn reserve_now(&self, req: &ReserveRequest) -> Result<(ReserveOutcome, bool), StoreError> {
        check_counters(&req.counters, true)?;
        self.release_lapsed(req.now)?;
        let now = req.now;
        let outcome = tx_result(self.db.transaction(|tx| {
            let mut live_entries = Vec::with_capacity(req.counters.len());
            for (index, c) in req.counters.iter().enumerate() {
                let e = live(tx, &counter_key(&c.key), c.window, now)?;
                let current = total_of(e.as_ref());
                if let Some(limit) = c.limit
                    && current.saturating_add(c.amount) > limit
                {
                    let retry_at = match (c.window, e.as_ref()) {
                        (Window::Sliding { width }, Some(Entry { value: Value::Sliding(events), .. })) => {
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
                    return Ok((ReserveOutcome::Rejected { index, current, limit, retry_at }, None));
                }
                live_entries.push(e);
            }
            let id = tx.generate_id()?;
            let mut totals = Vec::with_capacity(req.counters.len());
            let mut parts = Vec::with_capacity(req.counters.len());
            for (c, e) in req.counters.iter().zip(live_entries) {
                if c.amount == 0 {
                    totals.push(total_of(e.as_ref()));
                    continue;
                }
                let e = apply(e, c, id, now, self.max_events);
                totals.push(total_of(Some(&e)));
                parts.push((c.key.to_string(), c.amount, e.generation));
                tx.insert(counter_key(&c.key), e.encode())?;
            }
            let pending = Pending { hold_until: req.hold_until, parts };
            if self.held.is_some() {
                return Ok((ReserveOutcome::Reserved { id: ReservationId(id), totals }, Some(pending)));
            }
            tx.insert(pending_key(id), pending.encode())?;
            Ok((ReserveOutcome::Reserved { id: ReservationId(id), totals }, None))
        }))?;
        let (outcome, pending) = outcome;
        if let (Some(held), Some(pending), ReserveOutcome::Reserved { id, .. }) = (&self.held, pending, &outcome) {
            held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.0, pending);
        }
        if matches!(outcome, ReserveOutcome::Reserved { .. }) {
            self.next_lapse.fetch_min(req.hold_until.as_micros(), Ordering::SeqCst);
        }
        // A pending reservation lost in a crash would have been released anyway.
        Ok((outcome, false))
    }

    /// Takes a reservation held in memory (relaxed durability).
    fn take_held(&self, id: ReservationId) -> Option<Pending> {
        self.held.as_ref()?.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id.0)
    }

    fn commit_now(&self, id: ReservationId, now: Timestamp) -> Result<(bool, bool), StoreError> {
        self.release_lapsed(now)?;
        if let Some(p) = self.take_held(id) {
            if p.hold_until <= now {
                tx_result(self.db.transaction(|tx| undo(tx, id.0, &p, now)))?;
                return Ok((false, false));
            }
            return Ok((true, false));
        }
        let key = pending_key(id.0);
        // Committing only forgets the pending record: one atomic remove, no transaction.
        let Some(raw) = self.db.remove(&key).map_err(unavailable)? else { return Ok((false, false)) };
        let p = Pending::decode(&raw).map_err(|r| corrupt(&key, r))?;
        if p.hold_until <= now {
            // It lapsed before anyone noticed: take its amounts back instead.
            tx_result(self.db.transaction(|tx| undo(tx, id.0, &p, now)))?;
            return Ok((false, false));
        }
        Ok((true, true))
    }

    fn release_now(&self, id: ReservationId, now: Timestamp) -> Result<(bool, bool), StoreError> {
        self.release_lapsed(now)?;
        if let Some(p) = self.take_held(id) {
            tx_result(self.db.transaction(|tx| undo(tx, id.0, &p, now)))?;
            return Ok((true, false));
        }
        let key = pending_key(id.0);
        let released = tx_result(self.db.transaction(|tx| {
            let Some(raw) = tx.remove(key.as_slice())? else { return Ok(false) };
            let p = Pending::decode(&raw).map_err(|r| abort(corrupt(&key, r)))?;
            undo(tx, id.0, &p, now)?;
            Ok(true)
        }))?;
        Ok((released, false))
    }

    fn add_now(&self, counters: &[CounterSpec], now: Timestamp) -> Result<(Vec<i64>, bool), StoreError> {
        check_counters(counters, false)?;
        self.release_lapsed(now)?;
        let totals = tx_result(self.db.transaction(|tx| {
            let mut totals = Vec::with_capacity(counters.len());
            for c in counters {
                let k = counter_key(&c.key);
                let e = apply(live(tx, &k, c.window, now)?, c, 0, now, self.max_events);
                totals.push(total_of(Some(&e)));
                tx.insert(k, e.encode())?;
            }
            Ok(totals)
        }))?;
        Ok((totals, true))
    }

    fn total_now(&self, key: &str, window: Window, now: Timestamp) -> Result<(i64, bool), StoreError> {
        self.release_lapsed(now)?;
        let total =
            tx_result(self.db.transaction(|tx| Ok(total_of(live(tx, &counter_key(key), window, now)?.as_ref()))))?;
        Ok((total, false))
    }

    fn get_record_now(&self, key: &str, now: Timestamp) -> Result<(Option<Vec<u8>>, bool), StoreError> {
        Ok((tx_result(self.db.transaction(|tx| self.record_of(tx, key, now)))?, false))
    }

    fn swap_record_now(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(bool, bool), StoreError> {
        check_record_key(key)?;
        let swapped = tx_result(self.db.transaction(|tx| {
            if self.record_of(tx, key, now)?.as_deref() != expected {
                return Ok(false);
            }
            Self::write_record(tx, key, new, expires_at)?;
            Ok(true)
        }))?;
        Ok((swapped, swapped))
    }

    fn put_record_now(
        &self,
        key: &str,
        value: Option<&[u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<((), bool), StoreError> {
        check_record_key(key)?;
        tx_result(self.db.transaction(|tx| {
            self.record_of(tx, key, now)?;
            Self::write_record(tx, key, value, expires_at)
        }))?;
        Ok(((), true))
    }
}

impl SledStore {
    /// Answers at once, unless the answer wrote and must wait for the disk (strict durability).
    fn answer<T: Send + 'static>(&self, result: Result<(T, bool), StoreError>) -> StoreFuture<'_, T> {
        match result {
            Ok((value, true)) if self.strict && self.flusher.is_some() => {
                StoreFuture::new(async move { self.durable().await.map(|()| value) })
            }
            other => StoreFuture::ready(other.map(|(value, _)| value)),
        }
    }
}

impl StateStore for SledStore {
    fn reserve<'a>(&'a self, request: &'a ReserveRequest) -> StoreFuture<'a, ReserveOutcome> {
        self.answer(self.reserve_now(request))
    }

    fn commit(&self, id: ReservationId, now: Timestamp) -> StoreFuture<'_, bool> {
        self.answer(self.commit_now(id, now))
    }

    fn release(&self, id: ReservationId, now: Timestamp) -> StoreFuture<'_, bool> {
        self.answer(self.release_now(id, now))
    }

    fn add<'a>(&'a self, counters: &'a [CounterSpec], now: Timestamp) -> StoreFuture<'a, Vec<i64>> {
        self.answer(self.add_now(counters, now))
    }

    fn total<'a>(&'a self, key: &'a str, window: Window, now: Timestamp) -> StoreFuture<'a, i64> {
        self.answer(self.total_now(key, window, now))
    }

    fn get_record<'a>(&'a self, key: &'a str, now: Timestamp) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.answer(self.get_record_now(key, now))
    }

    fn swap_record<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: Option<&'a [u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, bool> {
        self.answer(self.swap_record_now(key, expected, new, expires_at, now))
    }

    fn put_record<'a>(
        &'a self,
        key: &'a str,
        value: Option<&'a [u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        self.answer(self.put_record_now(key, value, expires_at, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
