//! Human approval: the [`ApprovalHandler`] trait that `halt-hil` implements.

use async_trait::async_trait;
use std::future::Future;
use std::panic::catch_unwind;
use std::time::Duration;

use halt_core::store::StoreError;
use halt_core::{CallContext, Effect, JsonObject, Outcome, Timestamp};

use crate::effects::CommitError;
use crate::engine::Engine;
use crate::events::EngineEvent;
use serde::{Deserialize, Serialize};

/// What a human is asked to decide. It borrows the call and its outcome for as long as the
/// handler is asked: a handler that keeps them longer (a queue for a console) clones what it keeps.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ApprovalRequest<'a> {
    /// The call, as the guards saw it.
    pub context: &'a CallContext,
    /// The guards' outcome (its `approval_reasons` say why a human is asked).
    pub outcome: &'a Outcome,
    /// Seconds since the epoch after which the request lapses and the call is refused.
    pub expires_at: f64,
}

/// A human's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalResponse {
    /// Whether the call may run.
    pub approved: bool,
    /// Who decided.
    #[serde(default)]
    pub approver: Option<String>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// Arguments the approver edited, to run instead of the proposed ones.
    #[serde(default)]
    pub arguments: Option<JsonObject>,
}

impl ApprovalResponse {
    /// An approval by `approver`.
    #[must_use]
    pub fn approve(approver: impl Into<String>) -> Self {
        Self { approved: true, approver: Some(approver.into()), reason: None, arguments: None }
    }

    /// A refusal by `approver`.
    #[must_use]
    pub fn refuse(approver: impl Into<String>) -> Self {
        Self { approved: false, approver: Some(approver.into()), reason: None, arguments: None }
    }

    /// Adds the approver's reason.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Why an approval could not be obtained. The engine treats every error as a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// No answer in time.
    #[error("approval timed out")]
    TimedOut,
    /// The approval channel failed.
    #[error("approval channel failed: {0}")]
    Channel(String),
}

/// Asks a human (or a policy standing in for one) whether a call may run.
///
/// While the handler waits, the call's reservations are held; an approval commits them, and a
/// refusal, an error or the engine's approval timeout releases them.
#[async_trait]
pub trait ApprovalHandler: Send + Sync + std::fmt::Debug + 'static {
    /// Asks, and waits for the answer.
    async fn request_approval(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError>;
}

/// Errors answering a held approval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No approval is pending for the call: never asked, already answered, or expired.
    #[error("no pending approval for call `{0}` (never asked, already answered, or expired)")]
    NotPending(String),
    /// The approval was given after the call's reservations lapsed; the call must not run.
    #[error("approval for call `{0}` came after its hold expired")]
    Expired(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Engine {
    /// Holds the effects of a call that needs approval while a human decides (or, with no
    /// approval handler, until `Engine::resolve_approval`), then commits or releases them.
    pub(crate) async fn await_approval(
        &self,
        ctx: &CallContext,
        outcome: &mut Outcome,
        effects: Vec<Effect>,
        now: Timestamp,
    ) {
        let Some(handler) = self.inner.approvals.clone() else {
            if let Err(e) = self.hold(&ctx.call_id, &effects, now).await {
                self.fail_commit(ctx, outcome, &effects, &e, now).await;
            }
            return;
        };
        let expires = now.saturating_add(self.inner.approval_timeout);
        // The outcome is shown before `finish_outcome` names it: name it now.
        outcome.set_call(ctx.call_id.clone(), ctx.function_name.clone());
        let request = ApprovalRequest { context: ctx, outcome: &*outcome, expires_at: expires.as_secs_f64() };
        let answer = with_timeout(self.inner.approval_timeout, handler.request_approval(&request)).await;
        let answer = match answer {
            Some(Ok(a)) => a,
            Some(Err(e)) => ApprovalResponse::refuse("engine").with_reason(format!("approval failed: {e}")),
            None => ApprovalResponse::refuse("engine").with_reason("approval timed out"),
        };
        if answer.approved {
            let now = self.inner.clock.now();
            if let Err(e) = self.commit(&ctx.call_id, &effects, now).await {
                self.fail_commit(ctx, outcome, &effects, &e, now).await;
                return;
            }
            if let Some(args) = answer.arguments.clone() {
                outcome.set_modified_arguments(args);
            }
        } else {
            self.release(&effects, self.inner.clock.now()).await;
        }
        outcome.set_approved(answer.approved, answer.approver.clone());
        self.emit(|| EngineEvent::ApprovalResolved {
            call_id: ctx.call_id.clone(),
            approved: answer.approved,
            approver: answer.approver.clone(),
        });
    }

    /// Answers a held approval (one asked with no approval handler configured). Approval commits
    /// the call's reservations; refusal releases them. Single use: a second answer, or one after
    /// the approval timeout, is refused.
    ///
    /// # Errors
    /// [`ResolveError::NotPending`], [`ResolveError::Expired`], or a store error.
    pub async fn resolve_approval(&self, call_id: &str, response: &ApprovalResponse) -> Result<(), ResolveError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now();
        let key = pending_key(call_id);
        let Some(bytes) = store.get_record(&key, now).await? else {
            return Err(ResolveError::NotPending(call_id.to_owned()));
        };
        // Claim it: whoever deletes the record decides.
        if !store.swap_record(&key, Some(&bytes), None, None, now).await? {
            return Err(ResolveError::NotPending(call_id.to_owned()));
        }
        let effects: Vec<Effect> = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt { key: key.clone(), reason: e.to_string() })?;
        if response.approved {
            match self.commit(call_id, &effects, now).await {
                Ok(()) => {}
                Err(CommitError::Store(e)) => {
                    self.release(&effects, now).await;
                    return Err(e.into());
                }
                Err(_) => {
                    self.release(&effects, now).await;
                    return Err(ResolveError::Expired(call_id.to_owned()));
                }
            }
        } else {
            self.release(&effects, now).await;
        }
        self.emit(|| EngineEvent::ApprovalResolved {
            call_id: call_id.to_owned(),
            approved: response.approved,
            approver: response.approver.clone(),
        });
        Ok(())
    }
}

pub(crate) fn pending_key(call_id: &str) -> String {
    format!("halt/pending/{call_id}")
}

/// Awaits `fut` for at most `timeout`; `None` on timeout. Without a Tokio timer, waits unbounded
/// (approval handlers are the caller's own code).
pub(crate) async fn with_timeout<F: Future>(timeout: Duration, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    // A handler that answers at once (a policy, a test, `eval`) needs no timer.
    if let std::task::Poll::Ready(out) = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await
    {
        return Some(out);
    }
    let timer_available = tokio::runtime::Handle::try_current().is_ok();
    let sleep = if timer_available { catch_unwind(|| tokio::time::sleep(timeout)).ok() } else { None };
    let Some(sleep) = sleep else {
        return Some(fut.await);
    };
    let mut sleep = std::pin::pin!(sleep);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(out));
        }
        sleep.as_mut().poll(cx).map(|()| None)
    })
    .await
}
