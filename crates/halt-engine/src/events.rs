//! What the engine streams to subscribers: [`EngineEvent`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use halt_core::{CallContext, Outcome};
use tokio::sync::broadcast;

use crate::effects::Settlement;
use crate::engine::Engine;

/// What the engine streams to subscribers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EngineEvent {
    /// A call was evaluated.
    Evaluated {
        /// The call, after pre-hooks, with the engine's timestamp.
        context: Arc<CallContext>,
        /// The outcome.
        outcome: Arc<Outcome>,
    },
    /// A held approval was answered (or found expired).
    ApprovalResolved {
        /// The call.
        call_id: String,
        /// The answer.
        approved: bool,
        /// Who answered.
        approver: Option<String>,
    },
    /// A call's cost was settled.
    Settled(Settlement),
}

impl Engine {
    /// Subscribes to the event stream. A subscriber that falls behind loses the oldest events
    /// (and is told how many); it never slows evaluation.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.watched.store(true, Ordering::Relaxed);
        self.inner.events.subscribe()
    }

    pub(crate) fn emit(&self, event: impl FnOnce() -> EngineEvent) {
        if self.watched() {
            let _ = self.inner.events.send(event());
        }
    }

    /// Whether anyone listens to events now.
    pub(crate) fn watched(&self) -> bool {
        self.inner.watched.load(Ordering::Relaxed) && self.inner.events.receiver_count() > 0
    }
}
