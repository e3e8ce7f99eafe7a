//! Asking the client's user to approve a call, rather than the broker.
//!
//! - A 2025-11-25 client that can show forms is sent `elicitation/create`, and the proxy waits
//!   for the answer (up to the engine's approval timeout).
//! - A 2026-07-28 client cannot be sent requests: the call is answered with an `input_required`
//!   result asking the same question, and a `requestState` the client echoes when it calls again
//!   with its user's answer. That state is HMAC-signed with a key of this process and bound to
//!   the agent, the tool, a hash of the arguments and the digest of the tool's definition, and it
//!   expires with the approval. It names the held call, and the engine answers a held call once:
//!   a state used a second time finds nothing to approve.
//!
//! Either way the call was evaluated with [`Engine::evaluate_held`](halt_engine::Engine::evaluate_held),
//! so its reservations are held while the user decides, and the answer goes to
//! [`Engine::resolve_approval`](halt_engine::Engine::resolve_approval).

use std::time::Duration;

use halt_core::{CallContext, JsonObject, Outcome};
use halt_engine::ApprovalResponse;
use rmcp::model::{
    ClientResult, ElicitRequest, ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationSchema, InputRequest,
    InputRequests, InputRequiredResult, InputResponses, RequestStateCodec, RequestStateError, SealOptions,
    ServerRequest,
};
use rmcp::service::{RequestContext, RoleServer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the proxy's `requestState` values begin with: a state without it is the server's own
/// (its own `input_required` rounds) and goes to it with the call.
pub(crate) const STATE_PREFIX: &str = "agenthalt.";
/// The key of the one input request the proxy makes, in `inputRequests` and `inputResponses`.
pub(crate) const INPUT_KEY: &str = "agenthalt_approval";
/// The form's one field: the user ticks it to let the call run.
const FIELD: &str = "approve";
/// The most of the arguments shown to the user.
const SHOWN: usize = 2_000;

/// How a call that needs a human is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    /// The engine's approval handler (the broker).
    Handler,
    /// `elicitation/create` to a 2025-11-25 client.
    Elicit,
    /// An `input_required` result to a 2026-07-28 client.
    InputRequired,
}

/// Which channel asks about calls from this request's client.
pub(crate) fn channel(ask_client: bool, context: &RequestContext<RoleServer>) -> Channel {
    if !ask_client {
        return Channel::Handler;
    }
    if crate::modern(context) {
        // Every 2026-07-28 client takes `input_required`; one that cannot ask its user answers
        // with nothing, which refuses the call.
        return Channel::InputRequired;
    }
    let forms =
        context.client_capabilities().and_then(|c| c.elicitation).is_some_and(|e| e.form.is_some() || e.url.is_none());
    if forms { Channel::Elicit } else { Channel::Handler }
}

/// What a signed `requestState` carries (readable by the client, which knows all of it).
#[derive(Debug, Serialize, Deserialize)]
struct Held {
    /// The held call's id.
    call: String,
    /// The arguments the call runs with when they are not the client's (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    arguments: Option<JsonObject>,
}

/// Signs and checks the `requestState` of held calls.
pub(crate) struct States {
    codec: RequestStateCodec,
}

impl States {
    /// A codec with a fresh random key: states live no longer than this process.
    pub(crate) fn new() -> Result<Self, String> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no randomness for the request-state key: {e}"))?;
        let codec = RequestStateCodec::try_new(key.to_vec()).map_err(|e| e.to_string())?;
        Ok(Self { codec })
    }

    /// The `input_required` result for a held call, with its signed state.
    pub(crate) fn input_required(&self, ctx: &CallContext, outcome: &Outcome, ttl: Duration) -> InputRequiredResult {
        let held = Held { call: outcome.call_id().to_owned(), arguments: outcome.modified_arguments().cloned() };
        let bound = binding(ctx);
        let options = SealOptions::new().associated_data(&bound).ttl(ttl);
        let state = self.codec.seal_json_with(&held, &options);
        let mut requests = InputRequests::new();
        requests.insert(INPUT_KEY.to_owned(), InputRequest::Elicitation(ElicitRequest::new(question(ctx, outcome))));
        match state {
            Ok(state) => InputRequiredResult::new(Some(requests), Some(format!("{STATE_PREFIX}{state}"))),
            // Serialising a string and a JSON object does not fail; were it to, the client is
            // asked with no state to come back with, and its answer approves nothing.
            Err(_) => InputRequiredResult::from_input_requests(requests),
        }
    }

    /// Opens the state a client echoed (without its prefix) for the call `ctx` (as it comes now): the held call's id
    /// and the arguments it runs with. Fails for a state forged, altered, expired, or made for
    /// another agent, tool, arguments or tool definition.
    pub(crate) fn open(&self, state: &str, ctx: &CallContext) -> Result<(String, Option<JsonObject>), &'static str> {
        match self.codec.open_json_with::<Held>(state, &binding(ctx)) {
            Ok(held) => Ok((held.call, held.arguments)),
            Err(RequestStateError::Expired) => Err("the approval it answers has expired"),
            Err(_) => Err("its requestState is not one this proxy gave for this call"),
        }
    }
}

/// What a state is bound to: the agent, the tool, the arguments (hashed) and the tool's
/// definition digest, each length-prefixed so that no two calls run together the same way.
fn binding(ctx: &CallContext) -> Vec<u8> {
    let arguments = serde_json::to_vec(&ctx.arguments).unwrap_or_default();
    let digest = ctx.metadata.get(halt_hil::BINDING_KEY).and_then(|v| v.as_str()).unwrap_or_default();
    let agent = ctx.agent_id.as_deref().unwrap_or_default();
    let mut bound = Vec::with_capacity(160);
    for part in [agent.as_bytes(), ctx.function_name.as_bytes(), &Sha256::digest(&arguments), digest.as_bytes()] {
        bound.extend_from_slice(&(part.len() as u64).to_be_bytes());
        bound.extend_from_slice(part);
    }
    bound
}

/// The form that asks the user: the tool, why it needs a human, and the arguments it would run
/// with.
fn question(ctx: &CallContext, outcome: &Outcome) -> ElicitRequestParams {
    let arguments = outcome.modified_arguments().unwrap_or(&ctx.arguments);
    let mut shown = serde_json::to_string(arguments).unwrap_or_default();
    if shown.len() > SHOWN {
        let cut = (0..=SHOWN).rev().find(|&i| shown.is_char_boundary(i)).unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    let message = format!(
        "AgentHalt: the agent wants to run the tool `{}`, which needs your approval ({}). Arguments: {shown}",
        ctx.function_name,
        outcome.approval_reasons().join("; "),
    );
    let schema = ElicitationSchema::builder()
        .required_bool_with(FIELD, |b| b.title("Allow this call").with_default(false))
        .build_unchecked();
    ElicitRequestParams::FormElicitationParams { meta: None, message, requested_schema: schema }
}

/// The user's answer in an elicitation result: approved only when the form was accepted with
/// its box ticked; anything else (declined, cancelled, malformed, missing) refuses.
fn answer(result: Option<ElicitResult>, who: &str) -> ApprovalResponse {
    let approved = result.is_some_and(|r| {
        r.action == ElicitationAction::Accept
            && r.content.as_ref().and_then(|c| c.get(FIELD)).and_then(serde_json::Value::as_bool) == Some(true)
    });
    let who = format!("mcp-client:{who}");
    if approved { ApprovalResponse::approve(who) } else { ApprovalResponse::refuse(who) }
}

/// The answer a 2026-07-28 client sent back in `inputResponses`.
pub(crate) fn answered(responses: Option<&InputResponses>, who: &str) -> ApprovalResponse {
    let result = responses.and_then(|r| r.get(INPUT_KEY)).and_then(|v| serde_json::from_value(v.clone()).ok());
    answer(result, who)
}

/// Asks a 2025-11-25 client's user with `elicitation/create`, for at most `timeout`.
pub(crate) async fn elicit(
    context: &RequestContext<RoleServer>,
    ctx: &CallContext,
    outcome: &Outcome,
    timeout: Duration,
    who: &str,
) -> ApprovalResponse {
    let request = ServerRequest::ElicitRequest(ElicitRequest::new(question(ctx, outcome)));
    let reply = tokio::select! {
        reply = context.peer.send_request(request) => reply.ok(),
        () = tokio::time::sleep(timeout) => None,
        () = context.ct.cancelled() => None,
    };
    let result = match reply {
        Some(ClientResult::ElicitResult(r)) => Some(r),
        _ => None,
    };
    answer(result, who)
}
