//! The rate-limit guard: stops runaway agents, by calls per sliding minute (overall and per
//! function), per session, repeated identical calls (a stuck loop), and bursts (which start a
//! cooldown).
//!
//! Rate limits count *attempts*: every call this guard does not deny counts at once, whatever
//! other guards decide, because a looping agent is a behaviour, not an effect. The minute windows
//! are true sliding minutes (a call exactly 60 s old still counts), and all the windows of one
//! call are counted together, atomically, so concurrent calls never slip past a limit.
//!
//! ```
//! use halt_core::CallContext;
//! use halt_engine::Engine;
//! use halt_guards_rate_limit::{RateLimitConfig, RateLimitGuard};
//! use serde_json::json;
//!
//! let config = RateLimitConfig { max_identical_calls: Some(2), ..RateLimitConfig::default() };
//! let engine = Engine::builder().guard(RateLimitGuard::new(config)?).build()?;
//! let search = || CallContext::new("search").with_session("s").with_arguments(json!({"q": "same"}));
//! assert!(engine.evaluate_blocking(search()?).is_allowed());
//! assert!(engine.evaluate_blocking(search()?).is_allowed());
//! assert!(engine.evaluate_blocking(search()?).is_denied(), "a third identical call looks like a loop");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use arrayvec::ArrayVec;
use halt_core::factory::seconds;
use halt_core::partition::Partition;
use halt_core::store::{CounterSpec, Refusal, ReserveOutcome, ReserveRequest, StoreKey, Window, key, key_part};
use halt_core::{Call, Decision, FactoryError, Guard, GuardError, Timestamp, TypedFactory, async_trait};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The YAML name of this guard type.
pub const KIND: &str = "rate_limit";

const MINUTE: Duration = Duration::from_secs(60);
/// How long a session's call count is remembered after its last call.
const SESSION_IDLE: Duration = Duration::from_secs(86_400);
/// How long the run of identical calls of an (agent, session) is remembered for loop detection:
/// a runaway loop repeats within seconds, so two minutes is ample and keeps memory bounded by the
/// call rate.
const LOOP_MEMORY: Duration = Duration::from_secs(120);

/// Settings of a [`RateLimitGuard`]. A limit set to `null` is off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Calls per sliding minute, all functions together.
    pub max_calls_per_minute: Option<u32>,
    /// Calls per sliding minute of one function.
    pub max_calls_per_minute_per_function: Option<u32>,
    /// Calls per session.
    pub max_calls_per_session: Option<u32>,
    /// How many identical calls in a row (same agent and session, same function and arguments)
    /// are allowed before the next is treated as a loop.
    pub max_identical_calls: Option<u32>,
    /// The burst window, in seconds.
    pub burst_window_seconds: f64,
    /// Calls within the burst window that make a burst.
    pub burst_threshold: Option<u32>,
    /// Seconds during which every call is denied after a burst.
    pub cooldown_seconds: f64,
    /// Whose limits a call counts against: `global` (default), `agent` or `session`.
    pub partition_by: Partition,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            max_calls_per_minute: Some(60),
            max_calls_per_minute_per_function: Some(20),
            max_calls_per_session: None,
            max_identical_calls: Some(3),
            burst_window_seconds: 5.0,
            burst_threshold: Some(10),
            cooldown_seconds: 30.0,
            partition_by: Partition::Global,
        }
    }
}

/// Enforces a [`RateLimitConfig`].
#[derive(Debug, Clone)]
pub struct RateLimitGuard {
    name: String,
    config: RateLimitConfig,
    burst_window: Duration,
    cooldown: Duration,
    /// `rate/<name>`, the start of every key (made once: keys are made on every call).
    prefix: String,
    /// The partition's keys when there is only one partition (made once).
    global: Option<PartKeys>,
    /// `rate/<name>/last`, the start of the loop records' keys.
    last_prefix: String,
}

/// The keys of one partition's counters that do not depend on the function.
#[derive(Debug, Clone)]
struct PartKeys {
    minute: StoreKey,
    burst: StoreKey,
    /// The start of the per-function windows' keys (`…/<part>/fn`).
    functions: StoreKey,
}

/// Which limit a counter enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Cooldown,
    Minute,
    Function,
    Session,
    Loop,
    Burst,
}

impl RateLimitGuard {
    /// A guard named `rate_limit`.
    ///
    /// # Errors
    /// A negative or non-finite number of seconds, a zero burst window with a burst threshold,
    /// or a metadata partition (rate limits split by agent or session only).
    pub fn new(config: RateLimitConfig) -> Result<Self, FactoryError> {
        Self::named(KIND, config)
    }

    /// A guard with a name of its own.
    ///
    /// # Errors
    /// As [`RateLimitGuard::new`].
    pub fn named(name: &str, config: RateLimitConfig) -> Result<Self, FactoryError> {
        let burst_window = seconds("burst_window_seconds", config.burst_window_seconds)?;
        let cooldown = seconds("cooldown_seconds", config.cooldown_seconds)?;
        // Zero would make every call a loop or a burst: a policy that means "off" says `null`.
        for (field, value) in
            [("max_identical_calls", config.max_identical_calls), ("burst_threshold", config.burst_threshold)]
        {
            if value == Some(0) {
                return Err(FactoryError::invalid(field, "must be at least 1 (null turns it off)"));
            }
        }
        if config.burst_threshold.is_some() && burst_window.is_zero() {
            return Err(FactoryError::invalid("burst_window_seconds", "must be positive when burst_threshold is set"));
        }
        if matches!(config.partition_by, Partition::Metadata(_)) {
            return Err(FactoryError::invalid("partition_by", "rate limits split by global, agent or session"));
        }
        let prefix = key(&["rate", name]).to_string();
        let last_prefix = key(&[&prefix, "last"]).to_string();
        let mut guard =
            Self { name: name.to_owned(), config, burst_window, cooldown, prefix, global: None, last_prefix };
        if guard.config.partition_by == Partition::Global {
            guard.global = Some(guard.part_keys(Partition::GLOBAL_KEY));
        }
        Ok(guard)
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    fn part_keys(&self, part: &str) -> PartKeys {
        PartKeys {
            minute: key(&[&self.prefix, part, "minute"]),
            burst: key(&[&self.prefix, part, "burst"]),
            functions: key(&[&self.prefix, part, "fn"]),
        }
    }

    /// The denial while a cooldown runs, until `until`.
    fn cooling_down(call: &Call<'_>, until: Option<Timestamp>) -> Decision {
        let left = until.map_or(0.0, |t| t.since(call.now()).as_secs_f64());
        Decision::deny(format!("Cooling down after a burst: {left:.1}s left"))
            .with_retry_after(left)
            .with_details(json!({"rule": "cooldown", "seconds_left": left}))
    }

    /// The key of the run of identical calls of this call's agent and session.
    fn last_key(&self, call: &Call<'_>) -> StoreKey {
        let ctx = call.context();
        let agent = ctx.agent_id.as_deref().map_or("-".into(), key_part);
        let session = ctx.session_id.as_deref().map_or("-".into(), key_part);
        key(&[&self.last_prefix, &agent, &session])
    }

    /// The denial of a call that `kind` refuses.
    fn limit_denial(
        &self,
        call: &Call<'_>,
        kind: Limit,
        current: i64,
        limit: i64,
        retry_at: Option<Timestamp>,
    ) -> Decision {
        let (c, now) = (&self.config, call.now());
        let retry = retry_at.map(|t| t.since(now).as_secs_f64());
        let (d, rule) = match kind {
            Limit::Cooldown => return Self::cooling_down(call, retry_at),
            Limit::Loop => return loop_denial(current),
            Limit::Minute => (
                Decision::deny(format!("Rate limit exceeded: {current}/{limit} calls in the last minute")),
                "max_calls_per_minute",
            ),
            Limit::Function => (
                Decision::deny(format!(
                    "Function rate limit exceeded for '{}': {current}/{limit} calls/min",
                    call.function()
                )),
                "max_calls_per_minute_per_function",
            ),
            Limit::Session => (
                Decision::deny(format!("Session call limit reached: {current}/{limit} calls")),
                "max_calls_per_session",
            ),
            Limit::Burst => {
                let d = Decision::deny(format!(
                    "Burst detected: {current} calls in {}s; cooling down for {}s",
                    c.burst_window_seconds, c.cooldown_seconds
                ))
                .with_retry_after(c.cooldown_seconds);
                (d, "burst_threshold")
            }
        };
        let d = match (kind, retry) {
            (Limit::Minute | Limit::Function, Some(r)) => d.with_retry_after(r),
            _ => d,
        };
        d.with_details(json!({"rule": rule, "calls": current, "limit": limit}))
    }
}

/// A stable 64-bit fingerprint of the normalised function name and the arguments, the same in
/// every process and on every platform. The arguments are walked as a tree, object keys in
/// their sorted order (so key order does not matter), every value tagged with its type and every
/// text and list with its length (so different arguments never run together).
fn fingerprint(call: &Call<'_>) -> u64 {
    let mut h = Mix(0x243f_6a88_85a3_08d3);
    h.bytes(call.function().as_bytes());
    h.object(call.arguments(), 0);
    h.finish()
}

/// Deeper than this, values are not told apart (only a caller building its own value can nest
/// so deep: parsed JSON stops at 128 levels).
const MAX_DEPTH: usize = 256;

/// A 64-bit mix of words (multiply and rotate per word, `fmix64` of MurmurHash3 at the end).
struct Mix(u64);

impl Mix {
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.word(b.len() as u64);
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let mut w = [0; 8];
        w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.word(u64::from_le_bytes(w));
    }

    fn value(&mut self, v: &Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match v {
            Value::Null => self.word(1),
            Value::Bool(b) => self.word(2 + u64::from(*b)),
            Value::Number(n) => self.number(n),
            Value::String(s) => {
                self.word(7);
                self.bytes(s.as_bytes());
            }
            Value::Array(items) => {
                self.word(8);
                self.word(items.len() as u64);
                for item in items {
                    self.value(item, depth + 1);
                }
            }
            Value::Object(o) => self.object(o, depth + 1),
        }
    }

    /// A number by its value, not its spelling: `42`, `42.0` and `4.2e1` are one argument.
    fn number(&mut self, n: &serde_json::Number) {
        let whole = |f: f64| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "range and fraction checked")]
            (f.fract() == 0.0 && (0.0..1.8e19).contains(&f)).then_some(f as u64)
        };
        if let Some(u) = n.as_u64().or_else(|| n.as_f64().and_then(whole)) {
            self.word(4);
            self.word(u);
        } else if let Some(i) = n.as_i64() {
            self.word(5);
            self.word(i.cast_unsigned());
        } else {
            // -0.0 is 0 (above); other floats by their bits.
            self.word(6);
            self.word(n.as_f64().unwrap_or(f64::NAN).to_bits());
        }
    }

    fn object(&mut self, o: &serde_json::Map<String, Value>, depth: usize) {
        self.word(9);
        self.word(o.len() as u64);
        for (k, v) in o {
            self.bytes(k.as_bytes());
            self.value(v, depth);
        }
    }

    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

#[async_trait]
impl Guard for RateLimitGuard {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let c = &self.config;
        let ctx = call.context();
        // Boxed when made for this call, so they do not weigh on every call's future.
        let owned;
        let keys = match &self.global {
            Some(keys) => keys,
            None => {
                owned = Box::new(self.part_keys(&c.partition_by.key(ctx)));
                &*owned
            }
        };
        let now = call.now();
        let f = call.function();
        let sliding = |width| Window::Sliding { width };
        let mut counters = Vec::with_capacity(5);
        let mut limits = ArrayVec::<Limit, 5>::new();
        // A burst window within the minute is the recent part of the minute's window: one key
        // counts both (see `RecentLimit`), and the window keeps the cooldown a burst starts.
        let mut burst = c.burst_threshold.map(|max| (self.burst_window, i64::from(max)));
        if let Some(max) = c.max_calls_per_minute {
            let mut minute = CounterSpec::new(keys.minute.clone(), sliding(MINUTE), 1, Some(i64::from(max)));
            if let Some((width, max)) = burst.filter(|(width, _)| *width <= MINUTE) {
                minute = minute.with_recent(width, max, self.cooldown);
                burst = None;
            }
            counters.push(minute);
            limits.push(Limit::Minute);
        }
        if let Some(max) = c.max_calls_per_minute_per_function {
            counters.push(CounterSpec::new(
                key(&[&keys.functions, &key_part(f)]),
                sliding(MINUTE),
                1,
                Some(i64::from(max)),
            ));
            limits.push(Limit::Function);
        }
        if let (Some(max), Some(session)) = (c.max_calls_per_session, ctx.session_id.as_deref()) {
            let k = key(&[&self.prefix, &c.partition_by.key(ctx), "session", &key_part(session)]);
            counters.push(CounterSpec::new(k, Window::Idle { idle: SESSION_IDLE }, 1, Some(i64::from(max))));
            limits.push(Limit::Session);
        }
        if let Some(max) = c.max_identical_calls {
            // The run of identical calls of this agent and session: another call starts over.
            let run = Window::Streak { mark: fingerprint(call), idle: LOOP_MEMORY };
            counters.push(CounterSpec::new(self.last_key(call), run, 1, Some(i64::from(max))));
            limits.push(Limit::Loop);
        }
        if let Some((width, max)) = burst {
            // A burst window of its own: all of it is its recent part.
            counters.push(CounterSpec::new(keys.burst.clone(), sliding(width), 1, None).with_recent(
                width,
                max,
                self.cooldown,
            ));
            limits.push(Limit::Burst);
        }
        if counters.is_empty() {
            return Ok(Decision::allow("Within rate limits"));
        }
        // Every rule in one atomic step, ranked in the order of the rules: a cooldown, the plain
        // limits in the order above, then a burst (a recent limit). An attempt counts at once,
        // whatever the other guards decide; a call this guard denies counts nowhere (a burst
        // starts the cooldown).
        let request = ReserveRequest { counters, now, hold_until: now.saturating_add(MINUTE) };
        match call.store().add_within(&request).await? {
            ReserveOutcome::Reserved { .. } => Ok(Decision::allow("Within rate limits")),
            ReserveOutcome::Rejected { index, current, limit, retry_at, by } => {
                let kind = match by {
                    Refusal::Limit => limits[index],
                    Refusal::Recent => Limit::Burst,
                    Refusal::Cooldown => Limit::Cooldown,
                };
                Ok(self.limit_denial(call, kind, current, limit, retry_at))
            }
        }
    }

    fn describe(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or(Value::Null)
    }
}

fn loop_denial(n: i64) -> Decision {
    Decision::deny(format!("Possible loop: the same call was made {n} times in a row"))
        .with_details(json!({"rule": "max_identical_calls", "repeats": n}))
}

/// The factory that builds rate-limit guards from configuration (YAML type `rate_limit`).
#[must_use]
pub fn factory() -> impl halt_core::GuardFactory {
    TypedFactory::new(KIND, |name: &str, config: RateLimitConfig| RateLimitGuard::named(name, config))
}

#[cfg(test)]
mod tests {
    use halt_core::CallContext;
    use halt_store_memory::MemoryStore;

    use super::*;

    fn print(function: &str, args: Value) -> u64 {
        let ctx = CallContext::new(function).with_arguments(args).unwrap_or_else(|e| panic!("{e}"));
        let store = MemoryStore::new();
        let now = Timestamp::from_secs(1);
        fingerprint(&Call::new(&ctx, function, now, &store, now))
    }

    #[test]
    fn fingerprints_tell_arguments_apart_but_not_key_order() {
        assert_eq!(print("f", json!({"a": 1, "b": [true, null]})), print("f", json!({"b": [true, null], "a": 1})));
        let distinct = [
            print("f", json!({})),
            print("g", json!({})),
            print("f", json!({"a": "bc"})),
            print("f", json!({"ab": "c"})),
            print("f", json!({"a": [1, 2]})),
            print("f", json!({"a": [[1], 2]})),
            print("f", json!({"a": "1"})),
            print("f", json!({"a": 1})),
            print("f", json!({"a": 1.5})),
            print("f", json!({"a": 2})),
            print("f", json!({"a": -1})),
            print("f", json!({"a": null})),
            print("f", json!({"a": {}})),
            print("f", json!({"a": "x".repeat(8)})),
            print("f", json!({"a": "x".repeat(9)})),
        ];
        for (i, a) in distinct.iter().enumerate() {
            for b in &distinct[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // A number is its value, however it is written.
        assert_eq!(print("f", json!({"a": 42})), print("f", json!({"a": 42.0})));
        assert_eq!(print("f", json!({"a": 0})), print("f", json!({"a": -0.0})));
        assert_eq!(print("f", json!({"a": [1e2]})), print("f", json!({"a": [100]})));
        // Nesting past the walked depth is allowed (and not told apart).
        let mut deep = json!(0);
        for _ in 0..300 {
            deep = json!([deep]);
        }
        print("f", json!({ "deep": deep }));
    }
}
