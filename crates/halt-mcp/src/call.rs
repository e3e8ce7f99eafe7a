//! `tools/call`: evaluated, then passed on, changed, or answered with an error result.

use halt_core::{CallContext, Money};
use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, ContentBlock, ServerResult};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Map, Value};

use crate::{Shared, tools, upstream};

/// The agent a request is from: the configured one, else the client's name (from its
/// `initialize`, or from the request itself on 2026-07-28).
pub(crate) fn agent(shared: &Shared, context: &RequestContext<RoleServer>) -> Option<String> {
    shared
        .options
        .agent_id
        .clone()
        .or_else(|| context.meta.client_info().map(|i| i.name))
        .or_else(|| context.peer.peer_info().map(|i| i.client_info.name.clone()))
}

/// An error result for the client (the model reads it): the call did not run.
fn refused(text: String) -> ServerResult {
    ServerResult::CallToolResult(CallToolResult::error(vec![ContentBlock::text(text)]))
}

/// Evaluates a `tools/call` and answers it.
pub(crate) async fn call_tool(
    shared: &Shared,
    params: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> Result<ServerResult, McpError> {
    let name = params.name.to_string();
    let arguments = params.arguments.clone().unwrap_or_default();
    let Some(digest) = tools::digest_of(shared, &name).await else {
        // The server does not offer it: nothing to run, and nothing to approve.
        return Ok(refused("AgentHalt: the server offers no tool of that name".to_owned()));
    };
    let mut metadata = Map::new();
    metadata.insert(halt_hil::BINDING_KEY.to_owned(), Value::String(digest));
    let mut ctx = CallContext::new(name.clone());
    ctx.arguments = arguments;
    ctx.metadata = metadata;
    ctx.agent_id = agent(shared, &context);
    let outcome = shared.engine.evaluate(ctx).await;
    if !outcome.is_allowed() {
        let mut reasons = outcome.denial_reasons();
        if reasons.is_empty() {
            reasons = outcome.approval_reasons();
        }
        let why = if outcome.needs_approval() {
            "needs a human's approval, which was not given in time"
        } else if outcome.approved() == Some(false) {
            "was refused by a human"
        } else {
            "was denied"
        };
        return Ok(refused(format!("AgentHalt: this call {why}: {}", reasons.join("; "))));
    }
    let mut params = params;
    if let Some(changed) = outcome.modified_arguments() {
        params.arguments = Some(changed.clone());
    }
    let mut request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
    upstream::restore_meta(&mut request, context.meta);
    let answer = upstream::send(shared, request, &context.ct).await;
    if answer.is_err() {
        // It did not run (or nobody can tell that it did): its charges are given back.
        let _ = shared.engine.settle(outcome.call_id(), Money::ZERO).await;
    }
    answer
}
