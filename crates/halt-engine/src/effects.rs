//! A call's effects: reservations committed when it runs, released when it does not, held
//! while a human decides; costs settled after the call ran.

use std::time::Duration;

use halt_core::store::{CounterSpec, StoreError, Window};
use halt_core::{CallContext, Effect, Money, Outcome, Timestamp};
use serde::{Deserialize, Serialize};

use crate::approval::pending_key;
use crate::engine::Engine;
use crate::evaluate::engine_deny;
use crate::events::EngineEvent;
use crate::record::Record;

/// Errors settling a call's cost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// No cost was charged for the call (or its receipt expired).
    #[error("no charged cost recorded for call `{0}`")]
    UnknownCall(String),
    /// Another settlement of the same call won the race repeatedly.
    #[error("settlement of call `{0}` kept conflicting with another; try again")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of [`Engine::settle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Settlement {
    /// The call.
    pub call_id: String,
    /// What had been charged to each counter (the estimate, or an earlier settlement).
    pub previous: Vec<Money>,
    /// The actual cost now charged.
    pub actual: Money,
    /// The counters corrected (windows that already ended are left alone).
    pub counters: usize,
}

impl Engine {
    /// The effects could not be committed or held: the call must not run.
    pub(crate) async fn fail_commit(
        &self,
        ctx: &CallContext,
        outcome: &mut Outcome,
        effects: &[Effect],
        e: &CommitError,
        now: Timestamp,
    ) {
        self.release(effects, now).await;
        let mut decisions = outcome.decisions().to_vec();
        decisions.push(engine_deny(&format!("fail-safe: the call's effects could not be recorded: {e}")));
        let enforced = outcome.enforced();
        *outcome = Outcome::new(String::new(), String::new(), decisions, &ctx.arguments);
        outcome.set_enforced(enforced);
        if let Some(recorder) = &self.inner.recorder {
            // The call was recorded as it was decided; this is what became of it.
            let _ = recorder.record(Record::Evaluated { context: ctx, outcome });
        }
    }

    pub(crate) async fn commit(&self, call_id: &str, effects: &[Effect], now: Timestamp) -> Result<(), CommitError> {
        let store = &self.inner.store;
        // A receipt only when costs may be settled later.
        let keep_receipt = !self.inner.settle_window.is_zero();
        let mut receipt: Vec<CounterSpec> = Vec::new();
        for effect in effects {
            match effect {
                Effect::Reservation { id, cost } => {
                    if !store.commit(*id, now).await? {
                        return Err(CommitError::Lapsed);
                    }
                    if keep_receipt {
                        receipt.extend(cost.iter().cloned());
                    }
                }
                Effect::Record { key, value, expires_at } => {
                    store.put_record(key, Some(value), *expires_at, now).await?;
                }
            }
        }
        if !receipt.is_empty() {
            let expires_at = receipt_expiry(&receipt, now, self.inner.settle_window);
            let receipt = Receipt { expires_at, charged: receipt };
            let bytes = serde_json::to_vec(&receipt).map_err(|e| CommitError::Encode(e.to_string()))?;
            store.put_record(&receipt_key(call_id), Some(&bytes), Some(expires_at), now).await?;
        }
        Ok(())
    }

    pub(crate) async fn release(&self, effects: &[Effect], now: Timestamp) {
        for effect in effects {
            if let Effect::Reservation { id, .. } = effect {
                // A failed release is not retried: the reservation lapses at its hold time.
                let _ = self.inner.store.release(*id, now).await;
            }
        }
    }

    pub(crate) async fn hold(&self, call_id: &str, effects: &[Effect], now: Timestamp) -> Result<(), CommitError> {
        let bytes = serde_json::to_vec(effects).map_err(|e| CommitError::Encode(e.to_string()))?;
        let until = now.saturating_add(self.inner.approval_timeout);
        self.inner.store.put_record(&pending_key(call_id), Some(&bytes), Some(until), now).await?;
        Ok(())
    }

    /// Replaces a call's charged cost (the estimate) with its actual cost, in every window it was
    /// charged to. May be called again to correct a settlement.
    ///
    /// # Errors
    /// [`SettleError::UnknownCall`] if nothing was charged for the call, or a store error.
    pub async fn settle(&self, call_id: &str, actual: Money) -> Result<Settlement, SettleError> {
        let store = &self.inner.store;
        let key = receipt_key(call_id);
        for _ in 0..8 {
            let now = self.inner.clock.now();
            let Some(bytes) = store.get_record(&key, now).await? else {
                return Err(SettleError::UnknownCall(call_id.to_owned()));
            };
            let receipt: Receipt = serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt { key: key.clone(), reason: e.to_string() })?;
            let charged = &receipt.charged;
            // A settlement corrects the receipt; it does not extend its life.
            let updated = Receipt {
                expires_at: receipt.expires_at,
                charged: charged.iter().map(|c| CounterSpec { amount: actual.micros(), ..c.clone() }).collect(),
            };
            let new_bytes = serde_json::to_vec(&updated)
                .map_err(|e| StoreError::Corrupt { key: key.clone(), reason: e.to_string() })?;
            if !store.swap_record(&key, Some(&bytes), Some(&new_bytes), Some(receipt.expires_at), now).await? {
                continue;
            }
            let deltas: Vec<CounterSpec> = charged
                .iter()
                .filter(|c| !matches!(c.window, Window::Bucket { expires_at } if expires_at <= now))
                .map(|c| CounterSpec { amount: actual.micros() - c.amount, limit: None, ..c.clone() })
                .collect();
            store.add(&deltas, now).await?;
            let settlement = Settlement {
                call_id: call_id.to_owned(),
                previous: charged.iter().map(|c| Money::from_micros(c.amount)).collect(),
                actual,
                counters: deltas.len(),
            };
            if let Some(recorder) = &self.inner.recorder {
                let _ = recorder.record(Record::Settled(&settlement));
            }
            self.emit(|| EngineEvent::Settled(settlement.clone()));
            return Ok(settlement);
        }
        Err(SettleError::Conflict(call_id.to_owned()))
    }
}

/// Why effects could not be committed or held.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a reservation lapsed before it was committed")]
    Lapsed,
    #[error("could not encode effects: {0}")]
    Encode(String),
}

pub(crate) fn receipt_key(call_id: &str) -> String {
    format!("halt/receipt/{call_id}")
}

/// What a call was charged, kept for `settle` until `expires_at`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Receipt {
    pub(crate) expires_at: Timestamp,
    pub(crate) charged: Vec<CounterSpec>,
}

/// A receipt lives for the settle window, and never longer than the longest window it charged
/// (settling a window that has ended changes nothing). Receipts are per call: keeping them longer
/// would fill a store with one per call.
pub(crate) fn receipt_expiry(counters: &[CounterSpec], now: Timestamp, settle_window: Duration) -> Timestamp {
    let longest = counters
        .iter()
        .map(|c| match c.window {
            Window::Bucket { expires_at } => expires_at,
            Window::Idle { idle } | Window::Streak { idle, .. } => now.saturating_add(idle),
            Window::Sliding { width } => now.saturating_add(width),
        })
        .fold(now, Timestamp::max);
    longest.min(now.saturating_add(settle_window))
}
