//! Human approval: the [`ApprovalHandler`] trait that `halt-hil` implements.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use halt_core::{CallContext, JsonObject, Outcome};

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
