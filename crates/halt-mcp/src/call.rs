//! `tools/call`: evaluated, then passed on, changed, or answered with an error result.

use halt_core::{CallContext, JsonObject, Money, Outcome};
use halt_engine::{ApprovalResponse, ResolveError};
use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, ContentBlock, ServerResult};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Map, Value};

use crate::ask::{self, Channel};
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

/// The MCP session a request belongs to: over HTTP, the client's 2025-11-25 session (its
/// `Mcp-Session-Id`, which rmcp checks names a session it opened); on stdio, the connection. A
/// 2026-07-28 request has none, whatever header it sends: nothing checks it there, and a client
/// naming another's session would spend that session's budget.
pub(crate) fn session(shared: &Shared, context: &RequestContext<RoleServer>) -> Option<String> {
    let Some(parts) = context.extensions.get::<axum::http::request::Parts>() else {
        return shared.connection.clone();
    };
    if crate::modern(context) {
        return None;
    }
    parts.headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(|s| format!("mcp:{s}"))
}

/// An error result for the client (the model reads it): the call did not run.
fn refused(text: String) -> ServerResult {
    ServerResult::CallToolResult(CallToolResult::error(vec![ContentBlock::text(text)]))
}

/// Evaluates a `tools/call` and answers it.
pub(crate) async fn call_tool(
    shared: &Shared,
    mut params: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> Result<ServerResult, McpError> {
    let name = params.name.to_string();
    let Some(digest) = tools::digest_of(shared, &name).await else {
        // The server does not offer it: nothing to run, and nothing to approve.
        return Ok(refused("AgentHalt: the server offers no tool of that name".to_owned()));
    };
    let mut metadata = Map::new();
    metadata.insert(halt_hil::BINDING_KEY.to_owned(), Value::String(digest));
    let mut ctx = CallContext::new(name);
    ctx.arguments = params.arguments.clone().unwrap_or_default();
    ctx.metadata = metadata;
    ctx.agent_id = agent(shared, &context);
    ctx.session_id = session(shared, &context);
    let who = ctx.agent_id.clone().unwrap_or_default();
    if let Some(state) = params.request_state.as_deref().and_then(|s| s.strip_prefix(ask::STATE_PREFIX)) {
        // The client is back with its user's answer about a call held for it.
        let (call_id, arguments) = match shared.states.open(state, &ctx) {
            Ok(held) => held,
            Err(why) => return Ok(refused(format!("AgentHalt: this call was not run: {why}"))),
        };
        let response = ask::answered(params.input_responses.as_ref(), &who);
        params.request_state = None;
        params.input_responses = None;
        return resolve(shared, &call_id, &response, arguments, params, context).await;
    }
    let channel = ask::channel(shared.options.ask_client, &context);
    if channel != Channel::Handler {
        let outcome = shared.engine.evaluate_held(ctx.clone()).await;
        if outcome.needs_approval() {
            let timeout = shared.engine.approval_timeout();
            let arguments = outcome.modified_arguments().cloned();
            let response = match channel {
                Channel::InputRequired => {
                    let asked = shared.states.input_required(&ctx, &outcome, timeout);
                    return Ok(ServerResult::InputRequiredResult(asked));
                }
                _ => ask::elicit(&context, &ctx, &outcome, timeout, &who).await,
            };
            return resolve(shared, outcome.call_id(), &response, arguments, params, context).await;
        }
        return answer(shared, &outcome, params, context).await;
    }
    let outcome = shared.engine.evaluate(ctx).await;
    answer(shared, &outcome, params, context).await
}

/// Answers a call the engine decided: an error result unless it may run, else the server's
/// answer (to the redacted arguments where they were changed).
async fn answer(
    shared: &Shared,
    outcome: &Outcome,
    mut params: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> Result<ServerResult, McpError> {
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
    if let Some(changed) = outcome.modified_arguments() {
        params.arguments = Some(changed.clone());
    }
    run(shared, outcome.call_id(), params, context).await
}

/// Answers a held call with the user's `response`, and runs it (with `arguments` where they
/// are not the client's) when approved.
async fn resolve(
    shared: &Shared,
    call_id: &str,
    response: &ApprovalResponse,
    arguments: Option<JsonObject>,
    mut params: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> Result<ServerResult, McpError> {
    match shared.engine.resolve_approval(call_id, response).await {
        Ok(()) if response.approved => {}
        Ok(()) => return Ok(refused("AgentHalt: this call was refused by the user".to_owned())),
        Err(ResolveError::NotPending(_) | ResolveError::Expired(_)) => {
            return Ok(refused(
                "AgentHalt: this call was not run: its approval was already used or has expired".into(),
            ));
        }
        Err(_) => return Ok(refused("AgentHalt: this call was not run: its approval could not be recorded".into())),
    }
    if arguments.is_some() {
        params.arguments = arguments;
    }
    run(shared, call_id, params, context).await
}

/// Passes a call that may run on to the server.
async fn run(
    shared: &Shared,
    call_id: &str,
    params: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> Result<ServerResult, McpError> {
    let mut request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
    upstream::restore_meta(&mut request, context.meta);
    let answer = upstream::send(shared, request, &context.ct, &context.peer).await;
    if answer.is_err() {
        // It did not run (or nobody can tell that it did): its charges are given back.
        let _ = shared.engine.settle(call_id, Money::ZERO).await;
    }
    answer
}
