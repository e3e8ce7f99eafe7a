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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use halt_core::store::{
    CounterSpec, Refusal, ReservationId, ReserveOutcome, ReserveRequest, StateStore, StoreError, StoreFuture, Window,
    check_counters, check_record_key, recent_refusal, sliding_retry_at,
};
use halt_core::{Clock, Timestamp};
use sled::IVec;
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
    held: Option<Mutex<HashMap<u64, Pending>>>,
    /// Relaxed durability's write-behind cache, and the thread that writes it out.
    behind: Option<(Arc<WriteBehind>, std::thread::JoinHandle<()>)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code path panics while holding these locks; the data stays consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where an operation reads and writes: a sled transaction (strict durability), or the
/// write-behind cache in front of sled (relaxed). Operations read all they need before they
/// write, so a failed read (sled failing under the cache) leaves nothing half done.
trait Entries {
    fn get(&mut self, key: &[u8]) -> Result<Option<IVec>, TxError>;
    fn insert(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), TxError>;
    fn remove(&mut self, key: &[u8]) -> Result<Option<IVec>, TxError>;
    fn generate_id(&mut self) -> Result<u64, TxError>;
}

/// A sled transaction as [`Entries`].
struct TxEntries<'a>(&'a TransactionalTree);

impl Entries for TxEntries<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<IVec>, TxError> {
        Ok(self.0.get(key)?)
    }

    fn insert(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), TxError> {
        self.0.insert(key, value)?;
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<Option<IVec>, TxError> {
        Ok(self.0.remove(key)?)
    }

    fn generate_id(&mut self) -> Result<u64, TxError> {
        Ok(self.0.generate_id()?)
    }
}

/// Relaxed durability's cache: what operations read or wrote since the last write-behind.
#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<Vec<u8>, Cached>,
    /// Why the last write-behind failed, until one succeeds: meanwhile every operation fails
    /// (fail closed: nothing is counted that might never reach the disk).
    failure: Option<StoreError>,
}

#[derive(Debug)]
struct Cached {
    /// `None` once removed.
    value: Option<IVec>,
    /// Changed since sled last had it.
    dirty: bool,
}

/// The cache as [`Entries`], under its lock; a miss reads sled.
struct CacheEntries<'a> {
    db: &'a sled::Db,
    cache: &'a mut Cache,
}

impl Entries for CacheEntries<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<IVec>, TxError> {
        if let Some(c) = self.cache.entries.get(key) {
            return Ok(c.value.clone());
        }
        let value = self.db.get(key).map_err(|e| abort(unavailable(e)))?;
        self.cache.entries.insert(key.to_vec(), Cached { value: value.clone(), dirty: false });
        Ok(value)
    }

    fn insert(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), TxError> {
        let value = Some(IVec::from(value));
        match self.cache.entries.get_mut(key) {
            Some(c) => *c = Cached { value, dirty: true },
            None => {
                self.cache.entries.insert(key.to_vec(), Cached { value, dirty: true });
            }
        }
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<Option<IVec>, TxError> {
        let old = self.get(key)?;
        if old.is_some()
            && let Some(c) = self.cache.entries.get_mut(key)
        {
            *c = Cached { value: None, dirty: true };
        }
        Ok(old)
    }

    fn generate_id(&mut self) -> Result<u64, TxError> {
        self.db.generate_id().map_err(|e| abort(unavailable(e)))
    }
}

/// The write-behind of relaxed durability: the cache, and how its writer thread is stopped.
#[derive(Debug)]
struct WriteBehind {
    db: sled::Db,
    cache: Mutex<Cache>,
    /// One write-behind at a time.
    writing: Mutex<()>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Tests make the next write-behinds fail with this.
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicBool,
}

impl WriteBehind {
    /// Writes what changed to sled as one atomic batch and flushes it, then forgets what sled
    /// now holds. On failure, what was not written stays to be written next time.
    fn write(&self) -> Result<(), StoreError> {
        let _one = lock(&self.writing);
        let mut batch = sled::Batch::default();
        let mut written = Vec::new();
        for (k, c) in lock(&self.cache).entries.iter_mut().filter(|(_, c)| c.dirty) {
            match &c.value {
                Some(v) => batch.insert(k.as_slice(), v.clone()),
                None => batch.remove(k.as_slice()),
            }
            c.dirty = false;
            written.push(k.clone());
        }
        // Entries stay cached (so nobody reads sled's older value) until sled has the batch;
        // then what sled holds is forgotten, what was only read included (the cache stays small).
        #[cfg(test)]
        if self.fail_writes.load(Ordering::SeqCst) {
            return self.failed(&written, StoreError::Unavailable("sled: injected failure".into()));
        }
        if !written.is_empty()
            && let Err(e) = self.db.apply_batch(batch).and_then(|()| self.db.flush())
        {
            return self.failed(&written, unavailable(e));
        }
        let mut cache = lock(&self.cache);
        cache.entries.retain(|_, c| c.dirty);
        cache.failure = None;
        Ok(())
    }

    /// A write-behind failed: what it took is to be written again, and operations fail until
    /// one succeeds.
    fn failed(&self, written: &[Vec<u8>], error: StoreError) -> Result<(), StoreError> {
        let mut cache = lock(&self.cache);
        for k in written {
            if let Some(c) = cache.entries.get_mut(k) {
                c.dirty = true;
            }
        }
        cache.failure = Some(error.clone());
        Err(error)
    }

    /// Writes behind every `every` until told to stop, then once more.
    fn run(&self, every: Duration) {
        loop {
            let stop = {
                let stop = lock(&self.stop);
                if *stop {
                    true
                } else {
                    *self.wake.wait_timeout(stop, every).unwrap_or_else(PoisonError::into_inner).0
                }
            };
            // A failure is retried at the next turn; `SledStore::flush` reports it.
            let _ = self.write();
            if stop {
                return;
            }
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Some((behind, writer)) = self.behind.take() {
            *lock(&behind.stop) = true;
            behind.wake.notify_all();
            // The writer writes everything once more before it returns.
            let _ = writer.join();
        }
    }
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

/// An empty value for counters of `window`.
fn empty(window: Window) -> Value {
    match window {
        Window::Sliding { .. } => Value::Sliding(Vec::new(), None),
        Window::Streak { mark, .. } => Value::Streak { mark, total: 0 },
        Window::Bucket { .. } | Window::Idle { .. } => Value::Counter(0),
    }
}

/// Reads a live counter entry (expired ones read as absent), pruned to its window.
fn live(tx: &mut dyn Entries, key: &[u8], window: Window, now: Timestamp) -> Result<Option<Entry>, TxError> {
    let Some(raw) = tx.get(key)? else { return Ok(None) };
    let mut e = Entry::decode(&raw).map_err(|r| abort(corrupt(key, r)))?;
    if e.expires_at <= now {
        // Expired: a fresh value of the right kind, one generation on.
        e.generation += 1;
        e.value = empty(window);
        return Ok(Some(e));
    }
    let expected = empty(window).kind();
    if e.value.kind() != expected {
        return Err(abort(StoreError::WrongKind {
            key: String::from_utf8_lossy(&key[2..]).into_owned(),
            expected,
            found: e.value.kind(),
        }));
    }
    if let (Window::Sliding { width }, Value::Sliding(events, cooling)) = (window, &mut e.value) {
        let cutoff = now.as_micros().saturating_sub(micros(width));
        events.retain(|ev| ev.at.as_micros() >= cutoff);
        if cooling.is_some_and(|until| until <= now) {
            *cooling = None;
        }
    }
    Ok(Some(e))
}

/// An entry's total as read through `window` (a run read with another mark is empty).
fn total_of(e: Option<&Entry>, window: Window) -> i64 {
    match (e.map(|e| &e.value), window) {
        (Some(Value::Counter(t)), _) => (*t).max(0),
        (Some(Value::Sliding(events, _)), _) => events.iter().map(|ev| ev.amount).sum::<i64>().max(0),
        (Some(Value::Streak { mark, total }), Window::Streak { mark: m, .. }) if *mark == m => (*total).max(0),
        _ => 0,
    }
}

/// Adds `amount` to a (live) entry, creating it; returns the new total.
fn apply(e: Option<Entry>, spec: &CounterSpec, reservation: u64, now: Timestamp, cap: usize) -> Entry {
    let expiry = spec.window.key_expiry(now);
    let mut e = e.unwrap_or_else(|| Entry { expires_at: expiry, generation: 0, value: empty(spec.window) });
    e.expires_at = e.expires_at.max(expiry);
    match &mut e.value {
        Value::Counter(t) => *t = t.saturating_add(spec.amount).max(0),
        Value::Sliding(events, _) => {
            events.push(Event { at: now, amount: spec.amount, reservation });
            while events.len() > cap.max(2) {
                // The two oldest merge: the sum stays, and the merged event ages out later.
                let first = events.remove(0);
                events[0].amount = events[0].amount.saturating_add(first.amount);
                events[0].reservation = 0;
            }
        }
        Value::Streak { mark, total } => match spec.window {
            Window::Streak { mark: m, .. } if m != *mark => {
                // Another mark starts a new run: a new value, one generation on.
                (*mark, *total) = (m, spec.amount.max(0));
                e.generation += 1;
            }
            _ => *total = total.saturating_add(spec.amount).max(0),
        },
        Value::Record(_) => {}
    }
    e
}

/// Takes a reservation's amounts back (reading every entry before writing any).
fn undo(tx: &mut dyn Entries, id: u64, p: &Pending, now: Timestamp) -> Result<(), TxError> {
    let mut changed = Vec::with_capacity(p.parts.len());
    for (key, amount, generation) in &p.parts {
        let k = counter_key(key);
        let Some(raw) = tx.get(&k)? else { continue };
        let Ok(mut e) = Entry::decode(&raw) else { continue };
        if e.expires_at <= now || e.generation != *generation {
            continue;
        }
        match &mut e.value {
            Value::Counter(t) | Value::Streak { total: t, .. } => *t = t.saturating_sub(*amount).max(0),
            Value::Sliding(events, _) => {
                if let Some(pos) = events.iter().position(|ev| ev.reservation == id) {
                    events.remove(pos);
                }
            }
            Value::Record(_) => continue,
        }
        changed.push((k, e.encode()));
    }
    for (k, v) in changed {
        tx.insert(&k, v)?;
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

/// The operations, done at once; each says whether it wrote (and so must be made durable).
impl SledStore {
    /// Reserves (`hold`), or adds for good at once.
    fn reserve_now(&self, req: &ReserveRequest, hold: bool) -> Result<(ReserveOutcome, bool), StoreError> {
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

    fn commit_now(&self, id: ReservationId, now: Timestamp) -> Result<(bool, bool), StoreError> {
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
    }

    fn release_now(&self, id: ReservationId, now: Timestamp) -> Result<(bool, bool), StoreError> {
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
    }

    fn add_now(&self, counters: &[CounterSpec], now: Timestamp) -> Result<(Vec<i64>, bool), StoreError> {
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
    }

    fn total_now(&self, key: &str, window: Window, now: Timestamp) -> Result<(i64, bool), StoreError> {
        self.release_lapsed(now)?;
        let total = self.with_entries(|tx| Ok(total_of(live(tx, &counter_key(key), window, now)?.as_ref(), window)))?;
        Ok((total, false))
    }

    fn get_record_now(&self, key: &str, now: Timestamp) -> Result<(Option<Vec<u8>>, bool), StoreError> {
        Ok((self.with_entries(|tx| Self::record_of(tx, key, now))?, false))
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
        let swapped = self.with_entries(|tx| {
            if Self::record_of(tx, key, now)?.as_deref() != expected {
                return Ok(false);
            }
            Self::write_record(tx, key, new, expires_at)?;
            Ok(true)
        })?;
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
        self.with_entries(|tx| {
            Self::record_of(tx, key, now)?;
            Self::write_record(tx, key, value, expires_at)
        })?;
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
        self.answer(self.reserve_now(request, true))
    }

    fn add_within<'a>(&'a self, request: &'a ReserveRequest) -> StoreFuture<'a, ReserveOutcome> {
        self.answer(self.reserve_now(request, false))
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
