//! [`Blocked`]: the error a guarded function returns when its call may not run.

use halt_core::{JsonObject, Outcome};

use crate::evaluate::engine_deny;

/// A call that may not run: denied, its approval refused, or no answer in time. It carries the
/// engine's outcome, whose reasons say why (never a value of the call).
///
/// A `#[guarded]` function returns `Err(E::from(blocked))`, so its error type implements
/// `From<Blocked>`.
#[derive(Debug, Clone)]
pub struct Blocked {
    // Boxed: an error travels in every `Result` of a guarded fn, and should stay small.
    outcome: Box<Outcome>,
}

impl Blocked {
    /// A blocked call with this outcome.
    #[must_use]
    pub fn new(outcome: Outcome) -> Self {
        Self { outcome: Box::new(outcome) }
    }

    /// A call refused before the guards saw it (its arguments could not be read or written
    /// back), for `function`, with `reason`.
    #[must_use]
    pub fn refused(function: &str, reason: &str) -> Self {
        let outcome = Outcome::new(String::new(), function.to_owned(), vec![engine_deny(reason)], &JsonObject::new());
        Self::new(outcome)
    }

    /// The engine's outcome.
    #[must_use]
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// Whether a human refused it (or did not answer in time).
    #[must_use]
    pub fn approval_refused(&self) -> bool {
        self.outcome.approved() == Some(false)
    }
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let function = self.outcome.function_name();
        let reasons = self.outcome.denial_reasons();
        if !reasons.is_empty() {
            write!(f, "`{function}` was blocked: {}", reasons.join("; "))
        } else if self.approval_refused() {
            write!(f, "`{function}` was not approved")
        } else {
            // Held for a person who has not answered (no approval handler).
            let asking = self.outcome.approval_reasons().join("; ");
            write!(f, "`{function}` waits for a person's approval (call `{}`): {asking}", self.outcome.call_id())
        }
    }
}

impl std::error::Error for Blocked {}
