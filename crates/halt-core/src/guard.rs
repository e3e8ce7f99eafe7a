//! The [`Guard`] trait and the [`Call`] a guard sees while it evaluates.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::context::CallContext;
use crate::decision::Decision;
use crate::store::{CounterSpec, ReservationId, ReserveOutcome, ReserveRequest, StateStore, StoreError};

/// A policy that decides about proposed calls.
///
/// Guards are registered with an engine (`halt-engine`'s `Engine`) in order. For each call, the engine
/// asks [`Guard::applies`], then evaluates every applicable guard concurrently on the calling
/// task. An error, a panic or a timeout becomes a fail-safe DENY.
///
/// ```
/// use halt_core::{async_trait, Call, Decision, Guard, GuardError};
///
/// /// Asks a human before any email leaves.
/// #[derive(Debug)]
/// struct EmailApproval;
///
/// #[async_trait]
/// impl Guard for EmailApproval {
///     fn name(&self) -> &str {
///         "email_approval"
///     }
///     fn applies(&self, call: &Call<'_>) -> bool {
///         call.function().starts_with("send_email")
///     }
///     async fn evaluate(&self, _call: &Call<'_>) -> Result<Decision, GuardError> {
///         Ok(Decision::require_approval("outgoing email"))
///     }
/// }
/// ```
#[async_trait]
pub trait Guard: Send + Sync + std::fmt::Debug + 'static {
    /// The guard's name, unique within an engine.
    fn name(&self) -> &str;

    /// Whether the guard has anything to say about this call, from the call alone: its context
    /// and normalised function name, not the store or the clock. The engine may ask ahead of the
    /// call's turn, on another thread (`Engine::evaluate_stream` in `halt-engine`). Defaults to
    /// every call.
    fn applies(&self, call: &Call<'_>) -> bool {
        let _ = call;
        true
    }

    /// Decides about the call. Counting guards reserve through [`Call::reserve`].
    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError>;

    /// Whether the guard decides from the call alone: its context and normalised function name,
    /// without the store, the clock ([`Call::now`] is then only roughly the time) or effects,
    /// and without waiting. Such a guard may decide ahead of the call's turn, on another thread
    /// (`Engine::evaluate_stream` in `halt-engine`). Defaults to false.
    fn is_pure(&self) -> bool {
        false
    }

    /// A short JSON summary of the guard's settings (its key limits), for `agenthalt check` and
    /// the dashboard.
    fn describe(&self) -> Value {
        Value::Null
    }

    /// How much of each of its limits the guard has used now (today's spend against the daily
    /// budget), for a dashboard's gauges and the server's `/v1/stats`. Defaults to none.
    ///
    /// # Errors
    /// A store error.
    async fn usage(&self, store: &dyn StateStore, now: Timestamp) -> Result<Vec<Usage>, StoreError> {
        let _ = (store, now);
        Ok(Vec::new())
    }
}

/// One limit of a guard and how much of it is used: a gauge on a dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Usage {
    /// The guard's name.
    pub guard: String,
    /// Which limit: `daily`, `monthly`, ...
    pub limit_name: String,
    /// The window it counts now, such as `2026-12-07`.
    pub window: String,
    /// What it counts: `money` (amounts as in the policy) or `calls`.
    pub unit: &'static str,
    /// What is used of it.
    pub used: f64,
    /// The limit.
    pub limit: f64,
    /// The share of the limit past which the guard asks a human, if it does.
    pub warn_at: Option<f64>,
}

/// A guard's name as decisions carry it: made once when the guard is registered, and shared
/// by every decision of that guard (cloning it counts a reference; it copies no text).
///
/// ```
/// use halt_core::GuardName;
///
/// let a = GuardName::new("budget");
/// assert_eq!(a, "budget");
/// assert_eq!(a.clone().as_str().as_ptr(), a.as_str().as_ptr());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuardName(Arc<str>);

impl GuardName {
    /// The name `name`.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for GuardName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for GuardName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GuardName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for GuardName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for GuardName {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl PartialEq<str> for GuardName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for GuardName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for GuardName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Why a guard could not decide. The engine turns it into a fail-safe DENY.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// One effect of a call, registered while guards evaluate and settled by the engine once the
/// outcome is known: committed if the call runs, released if it does not, held while a human
/// decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "effect")]
pub enum Effect {
    /// A pending reservation in the engine's store.
    Reservation {
        /// The store's id for it.
        id: ReservationId,
        /// For a cost: the counters charged, so `Engine::settle` can correct them later.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cost: Vec<CounterSpec>,
    },
    /// A record written only if the call runs (a cooldown stamp).
    Record {
        /// The record's key.
        key: String,
        /// Its value.
        value: Vec<u8>,
        /// When it expires.
        expires_at: Option<Timestamp>,
    },
}

/// What a guard sees of one call: the context, the normalised function name, the engine's
/// time and store, and a place to register effects.
#[derive(Debug)]
pub struct Call<'a> {
    pub(crate) ctx: &'a CallContext,
    pub(crate) function: &'a str,
    pub(crate) now: Timestamp,
    pub(crate) store: &'a dyn StateStore,
    pub(crate) hold_until: Timestamp,
    pub(crate) effects: Mutex<Vec<Effect>>,
}

impl<'a> Call<'a> {
    /// A call for evaluating guards outside an engine (tests, tools). `function` must already be
    /// normalised.
    #[must_use]
    pub fn new(
        ctx: &'a CallContext,
        function: &'a str,
        now: Timestamp,
        store: &'a dyn StateStore,
        hold_until: Timestamp,
    ) -> Self {
        Self { ctx, function, now, store, hold_until, effects: Mutex::new(Vec::new()) }
    }

    /// The call as proposed.
    #[must_use]
    pub fn context(&self) -> &'a CallContext {
        self.ctx
    }

    /// The normalised function name: compare this, never the raw name.
    #[must_use]
    pub fn function(&self) -> &'a str {
        self.function
    }

    /// The arguments.
    #[must_use]
    pub fn arguments(&self) -> &'a serde_json::Map<String, Value> {
        &self.ctx.arguments
    }

    /// The engine's current time (never the caller's).
    #[must_use]
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The engine's state store, for reads and for counts that are not effects (rate limits
    /// count attempts).
    #[must_use]
    pub fn store(&self) -> &'a dyn StateStore {
        self.store
    }

    /// Reserves amounts across counters, all or nothing, as an effect of this call: the engine
    /// commits it if the call runs and releases it otherwise.
    ///
    /// # Errors
    /// The store's error.
    pub async fn reserve(&self, counters: Vec<CounterSpec>) -> Result<ReserveOutcome, StoreError> {
        self.reserve_inner(counters, false).await
    }

    /// As [`Call::reserve`], for a cost that `Engine::settle` may later replace with the actual
    /// cost.
    ///
    /// # Errors
    /// The store's error.
    pub async fn reserve_cost(&self, counters: Vec<CounterSpec>) -> Result<ReserveOutcome, StoreError> {
        self.reserve_inner(counters, true).await
    }

    async fn reserve_inner(&self, counters: Vec<CounterSpec>, settleable: bool) -> Result<ReserveOutcome, StoreError> {
        let request = ReserveRequest { counters, now: self.now, hold_until: self.hold_until };
        let outcome = self.store.reserve(&request).await?;
        if let ReserveOutcome::Reserved { id, .. } = &outcome {
            let cost = if settleable { request.counters } else { Vec::new() };
            self.push(Effect::Reservation { id: *id, cost });
        }
        Ok(outcome)
    }

    /// Writes a record if, and only if, the call runs (a cooldown stamp, a last-run time).
    pub fn record_on_commit(&self, key: impl Into<String>, value: Vec<u8>, expires_at: Option<Timestamp>) {
        self.push(Effect::Record { key: key.into(), value, expires_at });
    }

    fn push(&self, effect: Effect) {
        self.effects.lock().unwrap_or_else(PoisonError::into_inner).push(effect);
    }

    /// The effects registered so far (the engine settles them; tests inspect them).
    #[must_use]
    pub fn into_effects(self) -> Vec<Effect> {
        self.effects.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}
