//! Reading and writing entries inside a transaction or through the write-behind cache, and the
//! thread that flushes it.

use codec::{Entry, Event, Pending, Value};
use halt_core::Timestamp;
use halt_core::store::{CounterSpec, StoreError, Window};
use sled::IVec;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::*;

/// Where an operation reads and writes: a sled transaction (strict durability), or the
/// write-behind cache in front of sled (relaxed). Operations read all they need before they
/// write, so a failed read (sled failing under the cache) leaves nothing half done.
pub(crate) trait Entries {
    fn get(&mut self, key: &[u8]) -> Result<Option<IVec>, TxError>;
    fn insert(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), TxError>;
    fn remove(&mut self, key: &[u8]) -> Result<Option<IVec>, TxError>;
    fn generate_id(&mut self) -> Result<u64, TxError>;
}

/// A sled transaction as [`Entries`].
pub(crate) struct TxEntries<'a>(pub(crate) &'a TransactionalTree);

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
pub(crate) struct Cache {
    pub(crate) entries: HashMap<Vec<u8>, Cached>,
    /// Why the last write-behind failed, until one succeeds: meanwhile every operation fails
    /// (fail closed: nothing is counted that might never reach the disk).
    pub(crate) failure: Option<StoreError>,
}

#[derive(Debug)]
pub(crate) struct Cached {
    /// `None` once removed.
    pub(crate) value: Option<IVec>,
    /// Changed since sled last had it.
    pub(crate) dirty: bool,
}

/// The cache as [`Entries`], under its lock; a miss reads sled.
pub(crate) struct CacheEntries<'a> {
    pub(crate) db: &'a sled::Db,
    pub(crate) cache: &'a mut Cache,
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
pub(crate) struct WriteBehind {
    pub(crate) db: sled::Db,
    pub(crate) cache: Mutex<Cache>,
    /// One write-behind at a time.
    pub(crate) writing: Mutex<()>,
    pub(crate) stop: Mutex<bool>,
    pub(crate) wake: Condvar,
    /// Tests make the next write-behinds fail with this.
    #[cfg(test)]
    pub(crate) fail_writes: std::sync::atomic::AtomicBool,
}

impl WriteBehind {
    /// Writes what changed to sled as one atomic batch and flushes it, then forgets what sled
    /// now holds. On failure, what was not written stays to be written next time.
    pub(crate) fn write(&self) -> Result<(), StoreError> {
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
    pub(crate) fn failed(&self, written: &[Vec<u8>], error: StoreError) -> Result<(), StoreError> {
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
    pub(crate) fn run(&self, every: Duration) {
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
pub(crate) struct Flusher {
    pub(crate) db: sled::Db,
    pub(crate) requested: AtomicU64,
    pub(crate) done: tokio::sync::watch::Sender<u64>,
    pub(crate) running: tokio::sync::Mutex<()>,
}

impl Flusher {
    pub(crate) fn new(db: sled::Db) -> Self {
        let (done, _) = tokio::sync::watch::channel(0);
        Self { db, requested: AtomicU64::new(0), done, running: tokio::sync::Mutex::new(()) }
    }

    /// Returns once everything written before the call is on disk.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
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
pub(crate) fn is_locked(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

pub(crate) fn unavailable(e: sled::Error) -> StoreError {
    StoreError::Unavailable(format!("sled: {e}"))
}

pub(crate) fn corrupt(key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: reason.to_owned() }
}

/// A transaction body's error.
pub(crate) type TxError = ConflictableTransactionError<StoreError>;

pub(crate) fn abort(e: StoreError) -> TxError {
    ConflictableTransactionError::Abort(e)
}

pub(crate) fn tx_result<T>(r: Result<T, TransactionError<StoreError>>) -> Result<T, StoreError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => unavailable(e),
    })
}

pub(crate) fn counter_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.extend_from_slice(b"c:");
    k.extend_from_slice(key.as_bytes());
    k
}

pub(crate) fn pending_key(id: u64) -> Vec<u8> {
    let mut k = b"p:".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// An empty value for counters of `window`.
pub(crate) fn empty(window: Window) -> Value {
    match window {
        Window::Sliding { .. } => Value::Sliding(Vec::new(), None),
        Window::Streak { mark, .. } => Value::Streak { mark, total: 0 },
        Window::Bucket { .. } | Window::Idle { .. } => Value::Counter(0),
    }
}

/// Reads a live counter entry (expired ones read as absent), pruned to its window.
pub(crate) fn live(tx: &mut dyn Entries, key: &[u8], window: Window, now: Timestamp) -> Result<Option<Entry>, TxError> {
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
pub(crate) fn total_of(e: Option<&Entry>, window: Window) -> i64 {
    match (e.map(|e| &e.value), window) {
        (Some(Value::Counter(t)), _) => (*t).max(0),
        (Some(Value::Sliding(events, _)), _) => events.iter().map(|ev| ev.amount).sum::<i64>().max(0),
        (Some(Value::Streak { mark, total }), Window::Streak { mark: m, .. }) if *mark == m => (*total).max(0),
        _ => 0,
    }
}

/// Adds `amount` to a (live) entry, creating it; returns the new total.
pub(crate) fn apply(e: Option<Entry>, spec: &CounterSpec, reservation: u64, now: Timestamp, cap: usize) -> Entry {
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
pub(crate) fn undo(tx: &mut dyn Entries, id: u64, p: &Pending, now: Timestamp) -> Result<(), TxError> {
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
