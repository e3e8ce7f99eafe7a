//! Human approval: the [`ApprovalHandler`] trait that `halt-hil` implements.

use async_trait::async_trait;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use halt_core::store::StoreError;
use halt_core::{CallContext, Decision, DecisionKind, Effect, JsonObject, Outcome, Timestamp, names};

use crate::effects::CommitError;
use crate::engine::Engine;
use crate::evaluate::engine_deny;
use crate::events::EngineEvent;
use crate::join::panic_message;
use crate::prepare::{Edited, Start};
use crate::record::Record;
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
    /// The id of the approval a broker keeps for this request, when one does: what a decision
    /// made later, elsewhere (a dashboard, a webhook's receiver), names.
    pub approval_id: Option<&'a str>,
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
    /// Arguments the approver edited, to run instead of the proposed ones. The edited call goes
    /// through every guard again: a guard that denies it denies it, and a guard that did not ask
    /// for this approval but asks now asks a human again.
    #[serde(default)]
    pub arguments: Option<JsonObject>,
    /// Another tool the approver would run instead. That is another call: it goes through every
    /// guard and always asks a human again.
    #[serde(default)]
    pub function: Option<String>,
}

impl ApprovalResponse {
    /// An approval by `approver`.
    #[must_use]
    pub fn approve(approver: impl Into<String>) -> Self {
        Self { approved: true, approver: Some(approver.into()), reason: None, arguments: None, function: None }
    }

    /// A refusal by `approver`.
    #[must_use]
    pub fn refuse(approver: impl Into<String>) -> Self {
        Self { approved: false, approver: Some(approver.into()), reason: None, arguments: None, function: None }
    }

    /// An approval by `approver` of the call with edited `arguments`.
    #[must_use]
    pub fn approve_edited(approver: impl Into<String>, arguments: JsonObject) -> Self {
        Self { arguments: Some(arguments), ..Self::approve(approver) }
    }

    /// Whether the approver changed the call.
    #[must_use]
    pub fn is_edit(&self) -> bool {
        self.approved && (self.arguments.is_some() || self.function.is_some())
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
    /// The handler passed the request on and its answer comes another way, later (a broker
    /// such as `halt_hil::Broker` keeps the approval open in its queue). The call does not run
    /// now: its reservations are released and its outcome stays unanswered
    /// ([`Outcome::needs_approval`](halt_core::Outcome::needs_approval)), so the caller can come
    /// back with the same call once somebody decided.
    #[error("the answer comes through another channel")]
    Deferred,
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
    /// An edit can only be approved while the call waits for its answer (through an
    /// [`ApprovalHandler`]): a held call is answered yes or no, and an edited call is proposed anew.
    #[error("an edited call cannot be approved for held call `{0}`: refuse it and propose the edited call")]
    Edited(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many edits may follow one another on one call before it is refused.
const MAX_EDITS: u8 = 3;

impl Engine {
    /// Holds the effects of a call that needs approval while a human decides (or, with no
    /// approval handler, or when not to `ask` it, until `Engine::resolve_approval`), then commits
    /// or releases them. A call an approver edited (`edited`) and that no new guard asks about is
    /// approved by that edit.
    pub(crate) async fn await_approval(
        &self,
        ctx: &mut CallContext,
        outcome: &mut Outcome,
        effects: Vec<Effect>,
        now: Timestamp,
        edited: Option<Box<Edited>>,
        ask: bool,
    ) {
        if let Some(edit) = &edited
            && !edit.other_tool
            && asking(outcome).all(|guard| edit.covered.iter().any(|c| c == guard))
        {
            if let Err(e) = self.commit(&ctx.call_id, &effects, now).await {
                self.fail_commit(ctx, outcome, &effects, &e, now).await;
                return;
            }
            outcome.set_approved(true, edit.approver.clone());
            return;
        }
        if let Some(recorder) = &self.inner.recorder {
            let _ = recorder.record(Record::ApprovalRequested { context: ctx, outcome });
        }
        let Some(handler) = self.inner.approvals.clone().filter(|_| ask) else {
            if let Err(e) = self.hold(&ctx.call_id, &effects, now).await {
                self.fail_commit(ctx, outcome, &effects, &e, now).await;
            }
            return;
        };
        let expires = now.saturating_add(self.inner.approval_timeout);
        // The outcome is shown before `finish_outcome` names it: name it now.
        outcome.set_call(ctx.call_id.clone(), ctx.function_name.clone());
        let request =
            ApprovalRequest { context: ctx, outcome: &*outcome, expires_at: expires.as_secs_f64(), approval_id: None };
        let answer = with_timeout(self.inner.approval_timeout, contained(handler.request_approval(&request))).await;
        let answer = match answer {
            Some(Ok(Ok(a))) => a,
            Some(Ok(Err(ApprovalError::Deferred))) => {
                self.release(&effects, self.inner.clock.now()).await;
                return;
            }
            Some(Ok(Err(e))) => ApprovalResponse::refuse("engine").with_reason(format!("approval failed: {e}")),
            Some(Err(panic)) => {
                ApprovalResponse::refuse("engine").with_reason(format!("the approval handler panicked: {panic}"))
            }
            None => ApprovalResponse::refuse("engine").with_reason("approval timed out"),
        };
        if let Some(recorder) = &self.inner.recorder {
            let _ = recorder.record(Record::ApprovalResolved {
                call_id: &ctx.call_id,
                context: Some(ctx),
                response: &answer,
            });
        }
        self.emit(|| EngineEvent::ApprovalResolved {
            call_id: ctx.call_id.clone(),
            approved: answer.approved,
            approver: answer.approver.clone(),
        });
        if answer.is_edit() {
            self.release(&effects, self.inner.clock.now()).await;
            let depth = edited.map_or(0, |e| e.depth) + 1;
            self.run_edit(ctx, outcome, answer, depth).await;
            return;
        }
        if answer.approved {
            let now = self.inner.clock.now();
            if let Err(e) = self.commit(&ctx.call_id, &effects, now).await {
                self.fail_commit(ctx, outcome, &effects, &e, now).await;
                return;
            }
        } else {
            self.release(&effects, self.inner.clock.now()).await;
        }
        outcome.set_approved(answer.approved, answer.approver);
    }

    /// Evaluates the call as an approver edited it, through every guard, in place of `ctx`.
    async fn run_edit(&self, ctx: &mut CallContext, outcome: &mut Outcome, answer: ApprovalResponse, depth: u8) {
        if depth > MAX_EDITS {
            let deny = engine_deny(&format!("the call was edited more than {MAX_EDITS} times"));
            *outcome = Outcome::new(String::new(), String::new(), vec![deny], &ctx.arguments);
            return;
        }
        let ApprovalResponse { approver, arguments, function, .. } = answer;
        let other_tool = function.as_deref().is_some_and(|f| {
            names::validate(f).map_or(true, |f| names::validate(&ctx.function_name).map_or(true, |g| f != g))
        });
        let covered = asking(outcome).map(str::to_owned).collect();
        if let Some(function) = function {
            ctx.function_name = function;
        }
        if let Some(arguments) = arguments {
            ctx.arguments = arguments;
        }
        ctx.timestamp = None;
        let edit = Edited { covered, other_tool, approver: approver.clone(), depth };
        *outcome = Box::pin(self.decide(ctx.clone(), Start::Edited(Box::new(edit)))).await;
        if outcome.is_allowed() {
            if outcome.approved().is_none() {
                outcome.set_approved(true, approver);
            }
            if outcome.modified_arguments().is_none() {
                outcome.set_modified_arguments(ctx.arguments.clone());
            }
        }
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
        if response.is_edit() {
            return Err(ResolveError::Edited(call_id.to_owned()));
        }
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
        if let Some(recorder) = &self.inner.recorder {
            let _ = recorder.record(Record::ApprovalResolved { call_id, context: None, response });
        }
        self.emit(|| EngineEvent::ApprovalResolved {
            call_id: call_id.to_owned(),
            approved: response.approved,
            approver: response.approver.clone(),
        });
        Ok(())
    }
}

/// The guards that ask for approval in `outcome`.
fn asking(outcome: &Outcome) -> impl Iterator<Item = &str> {
    outcome.decisions().iter().filter(|d| d.kind() == DecisionKind::RequireApproval).map(Decision::guard)
}

pub(crate) fn pending_key(call_id: &str) -> String {
    format!("halt/pending/{call_id}")
}

/// Awaits `fut`, a panic in it becoming an error with the panic's message: an approval handler
/// is the caller's code, and one that panics refuses the call rather than unwinding the engine.
async fn contained<F: Future>(fut: F) -> Result<F::Output, String> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
        Ok(std::task::Poll::Ready(out)) => std::task::Poll::Ready(Ok(out)),
        Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
        Err(payload) => std::task::Poll::Ready(Err(panic_message(payload.as_ref()))),
    })
    .await
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
