//! Approvals asked by calls that come over HTTP: kept by the broker, and waited for only as long
//! as the request asked (`?wait=`). A request that stops waiting leaves its approval open in the
//! queue; the agent comes back with the same call once somebody decided, and the broker hands it
//! the decision.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use halt_core::async_trait;
use halt_engine::{ApprovalError, ApprovalHandler, ApprovalRequest, ApprovalResponse};
use halt_hil::Broker;
use tokio::sync::Notify;

use crate::events::Events;

/// What one evaluation request knows of its approval: how long it waits, and the approval's
/// id once the broker recorded one.
#[derive(Debug, Default)]
pub(crate) struct Asked {
    wait: Duration,
    id: Mutex<Option<(String, f64)>>,
    recorded: Notify,
}

impl Asked {
    pub(crate) fn new(wait: Duration) -> Arc<Self> {
        Arc::new(Self { wait, ..Self::default() })
    }

    /// The approval recorded for the request, and when it expires.
    pub(crate) fn approval(&self) -> Option<(String, f64)> {
        self.id.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

tokio::task_local! {
    /// The request being evaluated on this task.
    pub(crate) static ASKED: Arc<Asked>;
}

/// The engine's approval handler in the server: the broker, waited for as long as the request
/// asked once the approval is recorded.
#[derive(Debug)]
pub(crate) struct ServerApprovals {
    pub(crate) broker: Broker,
}

#[async_trait]
impl ApprovalHandler for ServerApprovals {
    async fn request_approval(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        let Ok(asked) = ASKED.try_with(Arc::clone) else {
            // Not from a request (nothing else evaluates here): wait as the broker does.
            return self.broker.request_approval(request).await;
        };
        let decided = self.broker.request_approval(request);
        let give_up = async {
            asked.recorded.notified().await;
            tokio::time::sleep(asked.wait).await;
        };
        tokio::select! {
            answer = decided => answer,
            () = give_up => Err(ApprovalError::Deferred),
        }
    }
}

/// Told by the broker of each approval it records: notes its id for the request, tells the feed,
/// and passes it on to the policy's own handler (a webhook, ...) if it has one. Without one, the
/// answer comes through the API.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub(crate) then: Option<Arc<dyn ApprovalHandler>>,
    pub(crate) events: Events,
}

#[async_trait]
impl ApprovalHandler for Recorded {
    async fn request_approval(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        if let Some(id) = request.approval_id {
            if let Ok(asked) = ASKED.try_with(Arc::clone) {
                *asked.id.lock().unwrap_or_else(PoisonError::into_inner) = Some((id.to_owned(), request.expires_at));
                asked.recorded.notify_one();
            }
            self.events.approval_requested(id, request);
        }
        match &self.then {
            Some(handler) => handler.request_approval(request).await,
            None => Err(ApprovalError::Deferred),
        }
    }
}
