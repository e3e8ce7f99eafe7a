//! The live feed: evaluations and approvals as JSON text, to every `/v1/events` WebSocket.
//!
//! An event never carries a call's arguments: only names, decisions, reasons (which never echo a
//! value) and risk.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use halt_core::{CallContext, Outcome};
use halt_engine::ApprovalRequest;
use halt_hil::Approval;
use serde_json::json;
use tokio::sync::broadcast;

use crate::auth::{Action, Caller, Tokens};

/// How many events a slow subscriber may fall behind before it loses the oldest.
const CAPACITY: usize = 4096;

/// The sending side of the feed.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    tx: broadcast::Sender<Utf8Bytes>,
}

impl Default for Events {
    fn default() -> Self {
        Self { tx: broadcast::channel(CAPACITY).0 }
    }
}

impl Events {
    fn send(&self, event: impl FnOnce() -> serde_json::Value) {
        // Nothing is written while nobody listens.
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Utf8Bytes::from(event().to_string()));
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Utf8Bytes> {
        self.tx.subscribe()
    }

    /// Whether anybody listens (so that what an event needs is kept only then).
    pub(crate) fn listened(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// An evaluation of the call `seen` (its agent and session).
    pub(crate) fn evaluated(&self, seen: &Seen, outcome: &Outcome, approval: Option<&str>, at: f64) {
        self.send(|| {
            let guards: Vec<_> = outcome
                .decisions()
                .iter()
                .map(|d| json!({"guard": d.guard(), "decision": d.kind().as_str(), "reason": d.reason(), "risk_score": d.risk_score()}))
                .collect();
            json!({
                "type": "evaluation",
                "at": at,
                "call_id": outcome.call_id(),
                "function_name": outcome.function_name(),
                "agent_id": seen.agent_id,
                "session_id": seen.session_id,
                "decision": outcome.decision().as_str(),
                "allowed": outcome.is_allowed(),
                "risk_score": outcome.max_risk_score(),
                "guards": guards,
                "approval_id": approval,
            })
        });
    }

    pub(crate) fn approval_requested(&self, id: &str, request: &ApprovalRequest<'_>) {
        self.send(|| {
            json!({
                "type": "approval",
                "id": id,
                "state": "pending",
                "call_id": request.context.call_id,
                "function_name": request.context.function_name,
                "agent_id": request.context.agent_id,
                "reasons": request.outcome.approval_reasons(),
                "risk_score": request.outcome.max_risk_score(),
                "expires_at": request.expires_at,
            })
        });
    }

    pub(crate) fn approval_decided(&self, a: &Approval) {
        self.send(|| {
            json!({
                "type": "approval",
                "id": a.id,
                "state": a.state.as_str(),
                "call_id": a.call_id,
                "function_name": a.function,
                "agent_id": a.agent_id,
                "approvals": a.votes.len(),
                "required": a.required,
                "decided_by": a.decided_by,
            })
        });
    }

    pub(crate) fn policy_reloaded(&self, version: &str) {
        self.send(|| json!({"type": "policy", "version": version}));
    }
}

/// What an evaluation event says of its call besides the outcome.
#[derive(Debug)]
pub(crate) struct Seen {
    agent_id: Option<String>,
    session_id: Option<String>,
}

impl Seen {
    pub(crate) fn of(ctx: &CallContext) -> Self {
        Self { agent_id: ctx.agent_id.clone(), session_id: ctx.session_id.clone() }
    }
}

/// How long a client has to send its token as its first message.
const SIGN_IN: Duration = Duration::from_secs(10);

/// Serves one WebSocket: signs the client in (unless it already is, by its header, or the server
/// has no tokens), then forwards every event until either side closes.
pub(crate) async fn feed(
    mut socket: WebSocket,
    caller: Option<Caller>,
    tokens: Arc<Tokens>,
    events: Events,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let mut rx = events.subscribe();
    let caller = match caller {
        Some(c) => c,
        None => match tokio::time::timeout(SIGN_IN, socket.recv()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let token = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_owned));
                match token.and_then(|t| tokens.caller(&t)) {
                    Some(c) => c,
                    None => return close(socket, 4401, "unknown token").await,
                }
            }
            _ => return close(socket, 4401, "send {\"token\": \"...\"} first").await,
        },
    };
    if caller.may(Action::Read).is_err() {
        return close(socket, 4403, "this token may not read the feed").await;
    }
    let hello = json!({"type": "hello", "role": caller.role.as_str(), "name": caller.name}).to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = closing.changed() => return close(socket, 1001, "the server is shutting down").await,
            event = rx.recv() => match event {
                Ok(text) => {
                    if socket.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let lost = json!({"type": "lagged", "lost": n}).to_string();
                    if socket.send(Message::Text(lost.into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                // Pings are answered by the library; anything else is ignored.
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = axum::extract::ws::CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
