//! An approval as it is kept in the store, and the fingerprint that binds it to one call.

use std::fmt::Write as _;

use halt_core::{CallContext, JsonObject, names};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for a human (or, under a two-person rule, for more of them).
    Pending,
    /// Approved and not yet used: the call it was made for may run, once.
    Approved,
    /// Approved and used by the call: it cannot be used again.
    Used,
    /// Refused by a human.
    Denied,
    /// Nobody decided in time: refused.
    Expired,
}

impl ApprovalState {
    /// The state's name, as in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Used => "used",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }
}

impl std::fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One approver's yes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Vote {
    /// Who approved.
    pub approver: String,
    /// When, in seconds since the Unix epoch.
    pub at: f64,
    /// Why, if they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The call an approver would run instead of the one proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Edit {
    /// The edited arguments.
    pub arguments: JsonObject,
    /// Another tool, if the approver named one (it asks again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

/// A request for a human decision about one call, as the broker keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Approval {
    /// The approval's id (random, 32 hex digits).
    pub id: String,
    /// The call's id.
    pub call_id: String,
    /// The function, as proposed.
    pub function: String,
    /// The arguments as shown to approvers: with every guard's redaction applied.
    pub arguments: JsonObject,
    /// The agent that proposed the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The session it was proposed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// What binds the approval to its call: a SHA-256 (hex) of the normalised function, the
    /// canonical arguments, the agent, the session and the policy version.
    pub fingerprint: String,
    /// The policy version the call was evaluated under.
    pub policy_version: String,
    /// Why approval is needed: the asking guards' reasons.
    pub reasons: Vec<String>,
    /// The guards that asked.
    pub guards: Vec<String>,
    /// The highest risk score among the guards' decisions.
    pub risk: f64,
    /// When it was asked, in seconds since the Unix epoch.
    pub created_at: f64,
    /// When it lapses (refused) unless decided.
    pub expires_at: f64,
    /// Where it stands.
    pub state: ApprovalState,
    /// How many distinct approvers must approve.
    pub required: u32,
    /// The approvals given so far.
    #[serde(default)]
    pub votes: Vec<Vote>,
    /// Who decided: the approver whose decision ended it (or `broker` when it expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// When it was decided, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<f64>,
    /// Why, as the decider said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The edited call, when approved with edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<Edit>,
    /// When the call used the approval, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<f64>,
}

impl Approval {
    /// The state as seen at `now`: a pending approval past its time reads as expired.
    #[must_use]
    pub fn state_at(&self, now: f64) -> ApprovalState {
        match self.state {
            ApprovalState::Pending | ApprovalState::Approved if now >= self.expires_at => ApprovalState::Expired,
            state => state,
        }
    }
}

/// The metadata key of what else an approval is bound to, besides the call: a text such as the
/// digest of the tool's definition that an MCP proxy sees (`mcp-tool:<sha256>`). A call whose
/// binding differs from the one an approval was asked under is asked again.
pub const BINDING_KEY: &str = "approval_binding";

/// The fingerprint of `ctx` under `policy_version`: equal for exactly the same call (the function
/// compared as the guards compare it, arguments whatever their key order) with the same
/// [`BINDING_KEY`] in its metadata.
#[must_use]
pub fn fingerprint(ctx: &CallContext, policy_version: &str) -> String {
    let function = names::normalize(&ctx.function_name);
    let binding = ctx.metadata.get(BINDING_KEY).map(Value::to_string);
    let mut canon = String::new();
    // Each part with its length first, so no two different calls can run together the same way.
    for part in [Some(function.as_ref()), ctx.agent_id.as_deref(), ctx.session_id.as_deref(), Some(policy_version)] {
        match part {
            Some(p) => {
                let _ = write!(canon, "{}:{p};", p.len());
            }
            None => canon.push_str("-;"),
        }
    }
    // Only a call with a binding has this part, so that other calls keep the fingerprints they had.
    if let Some(b) = binding {
        let _ = write!(canon, "binding{}:{b};", b.len());
    }
    canonical_object(&ctx.arguments, &mut canon);
    format!("{:x}", Sha256::digest(canon.as_bytes()))
}

/// An object as JSON with its keys sorted, whatever order the map keeps them in.
fn canonical_object(map: &halt_core::JsonObject, out: &mut String) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        canonical(&map[k], out);
    }
    out.push('}');
}

/// `value` as JSON with object keys sorted.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => canonical_object(map, out),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(f: &str, args: Value) -> CallContext {
        CallContext::new(f).with_arguments(args).unwrap().with_agent("bot").with_session("s1")
    }

    #[test]
    fn the_fingerprint_is_the_call_and_nothing_else() {
        let a = fingerprint(&ctx("buy", json!({"item": "x", "qty": 1})), "v1");
        assert_eq!(a, fingerprint(&ctx(" BUY ", json!({"qty": 1, "item": "x"})), "v1"), "spelling and key order");
        assert_ne!(a, fingerprint(&ctx("buy", json!({"item": "x", "qty": 2})), "v1"), "arguments");
        assert_ne!(a, fingerprint(&ctx("sell", json!({"item": "x", "qty": 1})), "v1"), "function");
        assert_ne!(a, fingerprint(&ctx("buy", json!({"item": "x", "qty": 1})).with_agent("other"), "v1"), "agent");
        assert_ne!(a, fingerprint(&ctx("buy", json!({"item": "x", "qty": 1})).with_session("s2"), "v1"), "session");
        assert_ne!(a, fingerprint(&ctx("buy", json!({"item": "x", "qty": 1})), "v2"), "policy version");
        let mut no_session = ctx("buy", json!({"item": "x", "qty": 1}));
        no_session.session_id = None;
        assert_ne!(a, fingerprint(&no_session, "v1"), "a session against none");
        // Parts cannot slide into each other.
        let x = CallContext::new("f").with_agent("ab").with_session("c");
        let y = CallContext::new("f").with_agent("a").with_session("bc");
        assert_ne!(fingerprint(&x, ""), fingerprint(&y, ""));
        // What the approval is bound to besides the call counts; other metadata does not.
        let bound = |b: &str| {
            ctx("buy", json!({"item": "x", "qty": 1})).with_metadata(json!({BINDING_KEY: b, "trace": b})).unwrap()
        };
        assert_ne!(a, fingerprint(&bound("mcp-tool:1"), "v1"), "a binding against none");
        assert_ne!(fingerprint(&bound("mcp-tool:1"), "v1"), fingerprint(&bound("mcp-tool:2"), "v1"), "binding");
        let traced = ctx("buy", json!({"item": "x", "qty": 1})).with_metadata(json!({"trace": "t"})).unwrap();
        assert_eq!(a, fingerprint(&traced, "v1"), "other metadata");
    }
}
