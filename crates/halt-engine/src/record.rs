//! [`Recorder`]: where the engine reports each decision as it makes it (the audit log).

use halt_core::{CallContext, Outcome};

use crate::approval::ApprovalResponse;
use crate::effects::Settlement;

/// What the engine reports to its [`Recorder`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Record<'a> {
    /// A call was evaluated; reported before its effects are committed or released, so that a
    /// call the recorder could not record can still be refused.
    Evaluated {
        /// The call, after pre-hooks, with the engine's timestamp.
        context: &'a CallContext,
        /// The outcome (a call refused because its effects could not be recorded in the store is
        /// reported again with its fail-safe denial).
        outcome: &'a Outcome,
    },
    /// A human is asked about a call.
    ApprovalRequested {
        /// The call.
        context: &'a CallContext,
        /// Its outcome, which asks for approval.
        outcome: &'a Outcome,
    },
    /// A human answered (or nobody did in time: a refusal by `engine`).
    ApprovalResolved {
        /// The call's id.
        call_id: &'a str,
        /// The call, when the engine still has it (not for a held approval answered later).
        context: Option<&'a CallContext>,
        /// The answer.
        response: &'a ApprovalResponse,
    },
    /// A call's cost was settled.
    Settled(&'a Settlement),
}

/// Why a record was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

/// Receives every decision the engine makes, on the evaluating task: it must not block (queue the
/// work and return). A recorder that is [`Recorder::required`] refuses the calls it cannot
/// record: the engine denies them with "audit unavailable (fail-safe)".
pub trait Recorder: Send + Sync + std::fmt::Debug + 'static {
    /// Takes one record.
    ///
    /// # Errors
    /// The record could not be taken (a full queue, a failed sink).
    fn record(&self, record: Record<'_>) -> Result<(), RecordError>;

    /// Whether a call the recorder cannot record must be refused. Default: no.
    fn required(&self) -> bool {
        false
    }
}
