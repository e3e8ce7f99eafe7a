//! The shared state store of AgentHalt, on Redis: many processes and hosts, one budget.
//!
//! Every operation is one Lua script, so a conditional reservation across several counters is
//! atomic and all or nothing, whoever runs it. Keys carry a prefix (use a hash tag such as
//! `{agenthalt}:` on a Redis Cluster, so all keys share a slot); every key carries a TTL (an hour
//! past its engine-time expiry), and sliding windows keep at most their limit of events.
//!
//! When Redis cannot be reached, operations fail with [`StoreError::Unavailable`], which guards
//! turn into a fail-safe DENY; the connection manager reconnects by itself once Redis is back.
//!
//! Amounts, limits and totals must stay below 2^53 micro-units (nine billion units of money):
//! Redis scripts count in doubles.
//!
//! ```no_run
//! use halt_store_redis::RedisStore;
//!
//! # async fn demo() -> Result<(), halt_core::StoreError> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379/", "{agenthalt}:").await?;
//! let engine = halt_engine::Engine::builder().store(store).build().expect("no guards, no conflict");
//! # let _ = engine; Ok(()) }
//! ```

use std::time::Duration;

use halt_core::Timestamp;
use halt_core::store::{
    CounterSpec, Refusal, ReservationId, ReserveOutcome, ReserveRequest, StateStore, StoreError, StoreFuture, Window,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, Value as RedisValue};

/// The largest amount, limit or total a Lua double counts exactly.
const MAX_EXACT: i64 = 1 << 53;
/// The most events one sliding window keeps (the two oldest merge past it).
const MAX_EVENTS: usize = 4_096;

/// A [`StateStore`] in Redis.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    script: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn unavailable(e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Turns a script's error reply into the store's error.
fn script_error(e: &RedisError, prefix: &str) -> StoreError {
    let text = e.to_string();
    let strip = |k: &str| k.strip_prefix(prefix).and_then(|k| k.strip_prefix("c:")).unwrap_or(k).to_owned();
    // The script's replies end their fields with `|` (Redis appends its own text after them).
    if let Some(rest) = text.split("WRONGKIND").nth(1) {
        let mut parts = rest.trim_start_matches([':', ' ']).split('|');
        let name = |n: Option<&str>| -> &'static str {
            match n {
                Some("counter") => "counter",
                Some("sliding window") => "sliding window",
                Some("streak") => "streak",
                _ => "record",
            }
        };
        let expected = name(parts.next());
        let found = name(parts.next());
        let key = strip(parts.next().unwrap_or(""));
        return StoreError::WrongKind { key, expected, found };
    }
    if let Some(rest) = text.split("CORRUPT").nth(1) {
        let key = rest.trim_start_matches([':', ' ']).split('|').next().unwrap_or("");
        return StoreError::Corrupt { key: strip(key), reason: "malformed entry".into() };
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        return unavailable(e);
    }
    StoreError::Unavailable(format!("redis script failed: {text}"))
}

fn check(counters: &[CounterSpec], reserve: bool) -> Result<(), StoreError> {
    halt_core::store::check_counters(counters, reserve)?;
    for c in counters {
        // The script joins keys with these separators.
        if c.key.contains(['\u{1e}', '\u{1f}']) {
            return Err(StoreError::InvalidRequest(format!("unusable key `{}`", c.key.escape_debug())));
        }
        let limits = [c.limit, c.recent.map(|r| r.limit)];
        if c.amount.abs() >= MAX_EXACT || limits.iter().flatten().any(|l| l.abs() >= MAX_EXACT) {
            return Err(StoreError::InvalidRequest(format!(
                "amounts and limits must stay below 2^53 on Redis (`{}`)",
                c.key
            )));
        }
    }
    Ok(())
}

fn push_counters(inv: &mut redis::ScriptInvocation<'_>, counters: &[CounterSpec]) {
    for c in counters {
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let (w, p, mark) = match c.window {
            Window::Bucket { expires_at } => ("b", expires_at.as_micros(), None),
            Window::Idle { idle } => ("i", micros(idle), None),
            Window::Sliding { width } => ("s", micros(width), None),
            // A mark is text to the script: a Lua number would round it.
            Window::Streak { mark, idle } => ("m", micros(idle), Some(mark)),
        };
        let text = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        let recent_width = c.recent.map(|r| i64::try_from(r.width.as_micros()).unwrap_or(i64::MAX));
        inv.arg(c.key.as_str()).arg(w).arg(p).arg(c.amount).arg(text(c.limit));
        let recent_cooldown = c.recent.map(|r| i64::try_from(r.cooldown.as_micros()).unwrap_or(i64::MAX));
        inv.arg(text(recent_width)).arg(text(c.recent.map(|r| r.limit))).arg(text(recent_cooldown));
        inv.arg(mark.map(|m| m.to_string()).unwrap_or_default());
    }
}

fn int(v: &RedisValue) -> Option<i64> {
    match v {
        RedisValue::Int(i) => Some(*i),
        _ => None,
    }
}

impl RedisStore {
    /// Connects to Redis at `url` (for example `redis://127.0.0.1:6379/0`), with keys under
    /// `prefix`. Reconnects by itself after an outage.
    ///
    /// # Errors
    /// The URL is invalid or Redis cannot be reached now.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(format!("invalid redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(|e| unavailable(&e))?;
        Ok(Self { conn, prefix: prefix.to_owned(), script: Script::new(include_str!("script.lua")) })
    }

    async fn run(
        &self,
        op: &str,
        now: Timestamp,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<RedisValue, StoreError> {
        let mut inv = self.script.prepare_invoke();
        inv.arg(&self.prefix).arg(now.as_micros()).arg(op);
        args(&mut inv);
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(|e| script_error(&e, &self.prefix))
    }
}

fn bad_reply(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis: unexpected reply to {what}"))
}

impl RedisStore {
    /// `reserve`, or `add_within` (the same, added for good: no hold).
    async fn reserve_or_add(&self, req: &ReserveRequest, op: &str) -> Result<ReserveOutcome, StoreError> {
        check(&req.counters, true)?;
        let reply = self
            .run(op, req.now, |inv| {
                inv.arg(req.hold_until.as_micros()).arg(MAX_EVENTS).arg(req.counters.len());
                push_counters(inv, &req.counters);
            })
            .await?;
        let RedisValue::Array(items) = reply else { return Err(bad_reply(op)) };
        let nums: Vec<i64> = items.iter().map(int).collect::<Option<_>>().ok_or_else(|| bad_reply(op))?;
        match nums.as_slice() {
            [1, id, totals @ ..] => Ok(ReserveOutcome::Reserved {
                id: ReservationId(u64::try_from(*id).unwrap_or(0)),
                totals: totals.to_vec(),
            }),
            [0, index, current, limit, retry, by] => Ok(ReserveOutcome::Rejected {
                index: usize::try_from(*index).unwrap_or(0),
                current: *current,
                limit: *limit,
                retry_at: (*retry >= 0).then(|| Timestamp::from_micros(*retry)),
                by: match by {
                    0 => Refusal::Limit,
                    1 => Refusal::Recent,
                    2 => Refusal::Cooldown,
                    _ => return Err(bad_reply(op)),
                },
            }),
            _ => Err(bad_reply(op)),
        }
    }
}

impl StateStore for RedisStore {
    fn reserve<'a>(&'a self, request: &'a ReserveRequest) -> StoreFuture<'a, ReserveOutcome> {
        StoreFuture::new(self.reserve_or_add(request, "reserve"))
    }

    fn add_within<'a>(&'a self, request: &'a ReserveRequest) -> StoreFuture<'a, ReserveOutcome> {
        StoreFuture::new(self.reserve_or_add(request, "add_within"))
    }

    fn commit(&self, id: ReservationId, now: Timestamp) -> StoreFuture<'_, bool> {
        StoreFuture::new(async move {
            let reply = self.run("commit", now, |inv| {
                inv.arg(id.0);
            });
            Ok(int(&reply.await?) == Some(1))
        })
    }

    fn release(&self, id: ReservationId, now: Timestamp) -> StoreFuture<'_, bool> {
        StoreFuture::new(async move {
            let reply = self.run("release", now, |inv| {
                inv.arg(id.0);
            });
            Ok(int(&reply.await?) == Some(1))
        })
    }

    fn add<'a>(&'a self, counters: &'a [CounterSpec], now: Timestamp) -> StoreFuture<'a, Vec<i64>> {
        StoreFuture::new(async move {
            check(counters, false)?;
            let reply = self
                .run("add", now, |inv| {
                    inv.arg(MAX_EVENTS).arg(counters.len());
                    push_counters(inv, counters);
                })
                .await?;
            let RedisValue::Array(items) = reply else { return Err(bad_reply("add")) };
            items.iter().map(int).collect::<Option<_>>().ok_or_else(|| bad_reply("add"))
        })
    }

    fn total<'a>(&'a self, key: &'a str, window: Window, now: Timestamp) -> StoreFuture<'a, i64> {
        StoreFuture::new(async move {
            let spec = [CounterSpec::new(key, window, 0, None)];
            check(&spec, false)?;
            let reply = self.run("total", now, |inv| push_counters(inv, &spec)).await?;
            int(&reply).ok_or_else(|| bad_reply("total"))
        })
    }

    fn get_record<'a>(&'a self, key: &'a str, now: Timestamp) -> StoreFuture<'a, Option<Vec<u8>>> {
        StoreFuture::new(async move {
            halt_core::store::check_record_key(key)?;
            match self
                .run("get", now, |inv| {
                    inv.arg(key);
                })
                .await?
            {
                RedisValue::Nil => Ok(None),
                RedisValue::BulkString(b) => Ok(Some(b)),
                _ => Err(bad_reply("get")),
            }
        })
    }

    fn swap_record<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: Option<&'a [u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, bool> {
        StoreFuture::new(async move {
            halt_core::store::check_record_key(key)?;
            let reply = self.run("swap", now, |inv| {
                inv.arg(key)
                    .arg(if expected.is_some() { "1" } else { "0" })
                    .arg(expected.unwrap_or_default())
                    .arg(if new.is_some() { "1" } else { "0" })
                    .arg(new.unwrap_or_default())
                    .arg(expires_at.map(|t| t.as_micros().to_string()).unwrap_or_default());
            });
            Ok(int(&reply.await?) == Some(1))
        })
    }

    fn put_record<'a>(
        &'a self,
        key: &'a str,
        value: Option<&'a [u8]>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        StoreFuture::new(async move {
            halt_core::store::check_record_key(key)?;
            self.run("put", now, |inv| {
                inv.arg(key)
                    .arg("0")
                    .arg("")
                    .arg(if value.is_some() { "1" } else { "0" })
                    .arg(value.unwrap_or_default())
                    .arg(expires_at.map(|t| t.as_micros().to_string()).unwrap_or_default());
            })
            .await?;
            Ok(())
        })
    }
}
