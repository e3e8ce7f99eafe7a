//! Handlers that answer by themselves: always no, always yes (tests only), or a closure of yours.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use halt_core::async_trait;
use halt_engine::{ApprovalError, ApprovalHandler, ApprovalRequest, ApprovalResponse};

/// Refuses every request: for CI, and for agents that must never wait for a human.
#[derive(Debug, Clone, Copy, Default)]
pub struct AutoDeny;

#[async_trait]
impl ApprovalHandler for AutoDeny {
    async fn request_approval(&self, _: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        Ok(ApprovalResponse::refuse("auto-deny").with_reason("every approval is refused here"))
    }
}

/// Approves every request, warning each time. For tests: it removes the human from the loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct AutoApprove;

#[async_trait]
impl ApprovalHandler for AutoApprove {
    async fn request_approval(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        tracing::warn!(
            call_id = %request.context.call_id,
            function = %request.context.function_name,
            "auto-approve: approving without a human (meant for tests only)"
        );
        Ok(ApprovalResponse::approve("auto-approve"))
    }
}

/// What a [`Callback`] returns.
pub type CallbackFuture = Pin<Box<dyn Future<Output = Result<ApprovalResponse, ApprovalError>> + Send>>;

type CallbackFn = dyn Fn(OwnedRequest) -> CallbackFuture + Send + Sync;

/// A request as a callback receives it: owned, so that it may be sent elsewhere (a chat, a queue).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OwnedRequest {
    /// The call.
    pub context: halt_core::CallContext,
    /// The guards' outcome.
    pub outcome: halt_core::Outcome,
    /// Seconds since the epoch after which the request lapses.
    pub expires_at: f64,
}

/// Asks an async closure of yours (a chat message and its reply, a ticket).
///
/// ```
/// use halt_hil::{Callback, OwnedRequest};
/// use halt_engine::ApprovalResponse;
///
/// let handler = Callback::new(|request: OwnedRequest| async move {
///     let small = request.context.arguments.get("amount").and_then(|a| a.as_f64()).is_some_and(|a| a < 10.0);
///     Ok(if small { ApprovalResponse::approve("policy-bot") } else { ApprovalResponse::refuse("policy-bot") })
/// });
/// # let _ = handler;
/// ```
#[derive(Clone)]
pub struct Callback {
    f: Arc<CallbackFn>,
}

impl Callback {
    /// A handler that calls `f` for each request.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(OwnedRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ApprovalResponse, ApprovalError>> + Send + 'static,
    {
        Self { f: Arc::new(move |request| Box::pin(f(request))) }
    }
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback")
    }
}

#[async_trait]
impl ApprovalHandler for Callback {
    async fn request_approval(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        let owned = OwnedRequest {
            context: request.context.clone(),
            outcome: request.outcome.clone(),
            expires_at: request.expires_at,
        };
        (self.f)(owned).await
    }
}
