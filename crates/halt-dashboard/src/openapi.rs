//! The API's OpenAPI 3.1 document, made from the request and response types themselves.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::api::{
    ApprovalList, AuditResponse, DecisionRequest, EvaluateRequest, EvaluateResponse, GuardList, Health, Me,
    OutcomeRequest, OutcomeResponse, ReloadResponse, SettleRequest, StatsResponse,
};
use halt_hil::Approval;

/// One operation: its method, path, summary, who may call it, and its body and answer types.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    roles: &'static str,
    params: &'static [(&'static str, &'static str, &'static str)],
    request: Option<Value>,
    response: Value,
    /// Statuses it may answer besides 200 and the auth ones.
    errors: &'static [u16],
}

fn reference<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// The OpenAPI 3.1 document of the server's API.
#[must_use]
pub fn openapi() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "#/components/schemas/".into();
    });
    let mut g = settings.into_generator();
    let text = json!({"type": "string"});
    let ops = [
        Op {
            method: "post",
            path: "/v1/evaluate",
            summary: "Evaluate a proposed call; with `wait`, wait that long for a human when one is asked",
            roles: "agent, admin",
            params: &[("wait", "query", "Seconds to wait for an approval decision (default 0)")],
            request: Some(reference::<EvaluateRequest>(&mut g)),
            response: reference::<EvaluateResponse>(&mut g),
            errors: &[400, 403, 413, 415, 422],
        },
        Op {
            method: "post",
            path: "/v1/calls/{call_id}/settle",
            summary: "Replace a call's estimated cost with its actual cost",
            roles: "agent, admin",
            params: &[("call_id", "path", "The call")],
            request: Some(reference::<SettleRequest>(&mut g)),
            response: reference::<halt_engine::Settlement>(&mut g),
            errors: &[400, 404, 409, 415, 422],
        },
        Op {
            method: "post",
            path: "/v1/calls/{call_id}/outcome",
            summary: "Say whether an allowed call ran; one that did not gets its charges back",
            roles: "agent, admin",
            params: &[("call_id", "path", "The call")],
            request: Some(reference::<OutcomeRequest>(&mut g)),
            response: reference::<OutcomeResponse>(&mut g),
            errors: &[400, 404, 409, 415, 422],
        },
        Op {
            method: "get",
            path: "/v1/approvals",
            summary: "List approvals (an agent sees its own)",
            roles: "all",
            params: &[
                ("state", "query", "pending, approved, denied, expired or used"),
                ("agent_id", "query", "Only this agent's"),
                ("function", "query", "Only this function's"),
            ],
            request: None,
            response: reference::<ApprovalList>(&mut g),
            errors: &[400],
        },
        Op {
            method: "get",
            path: "/v1/approvals/{id}",
            summary: "One approval",
            roles: "all (an agent: its own)",
            params: &[("id", "path", "The approval")],
            request: None,
            response: reference::<Approval>(&mut g),
            errors: &[404],
        },
        Op {
            method: "post",
            path: "/v1/approvals/{id}/decision",
            summary: "Approve, deny, or approve with edited arguments",
            roles: "approver, admin",
            params: &[("id", "path", "The approval")],
            request: Some(reference::<DecisionRequest>(&mut g)),
            response: reference::<Approval>(&mut g),
            errors: &[400, 404, 409, 410, 415, 422],
        },
        Op {
            method: "get",
            path: "/v1/approvals/{id}/wait",
            summary: "Wait until the approval is decided (or the timeout passes) and return it",
            roles: "all (an agent: its own)",
            params: &[("id", "path", "The approval"), ("timeout", "query", "Seconds to wait (default 30)")],
            request: None,
            response: reference::<Approval>(&mut g),
            errors: &[400, 404],
        },
        Op {
            method: "get",
            path: "/v1/stats",
            summary: "Counts by decision and guard, average risk, pending approvals, and budget use",
            roles: "viewer, approver, admin",
            params: &[],
            request: None,
            response: reference::<StatsResponse>(&mut g),
            errors: &[],
        },
        Op {
            method: "get",
            path: "/v1/guards",
            summary: "The policy's guards, on or off, with their settings and counts",
            roles: "viewer, approver, admin",
            params: &[],
            request: None,
            response: reference::<GuardList>(&mut g),
            errors: &[],
        },
        Op {
            method: "get",
            path: "/v1/audit",
            summary: "Search the audit log",
            roles: "viewer, approver, admin",
            params: &[
                ("function", "query", "A function name or glob"),
                ("decision", "query", "allow, modify, require_approval or deny"),
                ("guard", "query", "Entries in which this guard decided"),
                ("agent_id", "query", "This agent's"),
                ("session_id", "query", "This session's"),
                ("since", "query", "From this time (seconds since the epoch)"),
                ("until", "query", "Before this time"),
                ("limit", "query", "At most this many, the latest (1 to 1000, default 100)"),
            ],
            request: None,
            response: reference::<AuditResponse>(&mut g),
            errors: &[400, 404],
        },
        Op {
            method: "post",
            path: "/v1/policy/reload",
            summary: "Reload the policy file (the old one stays if the new one is invalid)",
            roles: "admin",
            params: &[],
            request: None,
            response: reference::<ReloadResponse>(&mut g),
            errors: &[422],
        },
        Op {
            method: "get",
            path: "/metrics",
            summary: "Prometheus metrics",
            roles: "viewer, approver, admin",
            params: &[],
            request: None,
            response: text.clone(),
            errors: &[],
        },
        Op {
            method: "get",
            path: "/v1/me",
            summary: "Who the token belongs to, and its role",
            roles: "all",
            params: &[],
            request: None,
            response: reference::<Me>(&mut g),
            errors: &[],
        },
        Op {
            method: "get",
            path: "/healthz",
            summary: "The process is up",
            roles: "anyone",
            params: &[],
            request: None,
            response: reference::<Health>(&mut g),
            errors: &[],
        },
        Op {
            method: "get",
            path: "/readyz",
            summary: "The store is reachable",
            roles: "anyone",
            params: &[],
            request: None,
            response: reference::<Health>(&mut g),
            errors: &[503],
        },
    ];
    let error = json!({
        "description": "The request was refused",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    });
    let mut paths = Map::new();
    for op in ops {
        let mut responses = Map::new();
        let media = if op.path == "/metrics" { "text/plain" } else { "application/json" };
        responses.insert("200".into(), json!({"description": "OK", "content": {media: {"schema": op.response}}}));
        let open = op.roles == "anyone";
        let mut statuses: Vec<u16> = op.errors.to_vec();
        if !open {
            statuses.extend([401, 403]);
        }
        statuses.push(503);
        statuses.sort_unstable();
        statuses.dedup();
        for status in statuses {
            responses.insert(status.to_string(), error.clone());
        }
        let parameters: Vec<Value> = op
            .params
            .iter()
            .map(|(name, place, description)| {
                let schema = match *name {
                    "wait" | "timeout" | "since" | "until" => json!({"type": "number", "minimum": 0}),
                    "limit" => json!({"type": "integer", "minimum": 1, "maximum": 1000}),
                    "state" => json!({"type": "string", "enum": ["pending", "approved", "denied", "expired", "used"]}),
                    "decision" => json!({"type": "string", "enum": ["allow", "modify", "require_approval", "deny"]}),
                    _ => json!({"type": "string"}),
                };
                json!({"name": name, "in": place, "required": *place == "path", "description": description, "schema": schema})
            })
            .collect();
        let mut operation = json!({
            "summary": op.summary,
            "description": format!("Roles: {}.", op.roles),
            "parameters": parameters,
            "responses": responses,
        });
        if open {
            operation["security"] = json!([]);
        }
        if let Some(request) = op.request {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": request}}});
        }
        let item = paths.entry(op.path).or_insert_with(|| json!({}));
        item[op.method] = operation;
    }
    let mut schemas: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "AgentHalt decision server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Ask before an agent acts: evaluate proposed tool calls against a policy, and let people decide approvals. The live feed is a WebSocket at /v1/events (not described here)."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas
        },
        "paths": paths
    })
}
