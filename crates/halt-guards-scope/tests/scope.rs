//! Scope guard: every rule in order, evasions, configuration errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use halt_core::{CallContext, DecisionKind, GuardRegistry};
use halt_engine::Engine;
use halt_guards_scope::{ScopeConfig, ScopeGuard, factory};
use serde_json::{Value, json};

fn engine(config: Value) -> Engine {
    let mut registry = GuardRegistry::new();
    registry.register(factory()).unwrap();
    Engine::builder().guard_arc(registry.build_json("scope", "scope", config).unwrap()).build().unwrap()
}

fn decide(e: &Engine, name: &str, agent: Option<&str>) -> (DecisionKind, String) {
    let mut ctx = CallContext::new(name);
    ctx.agent_id = agent.map(String::from);
    let o = e.evaluate_blocking(ctx);
    (o.decision(), o.decisions()[0].reason().to_owned())
}

fn kind(e: &Engine, name: &str, agent: Option<&str>) -> DecisionKind {
    decide(e, name, agent).0
}

#[test]
fn read_only_mode_allows_only_reads() {
    let e = engine(json!({"read_only_mode": true}));
    for f in ["get_users", "list_items", "describe_table", "show_tables", "search_web", "LOOKUP_x"] {
        assert_eq!(kind(&e, f, None), DecisionKind::Allow, "{f}");
    }
    let (k, reason) = decide(&e, "update_row", None);
    assert_eq!(k, DecisionKind::Deny);
    assert_eq!(reason, "Read-only mode: 'update_row' is not a read operation");
    let e = engine(json!({"read_only_mode": true, "read_only_patterns": ["peek_*"]}));
    assert_eq!(kind(&e, "peek_x", None), DecisionKind::Allow);
    assert_eq!(kind(&e, "get_x", None), DecisionKind::Deny);
}

#[test]
fn rules_apply_in_order() {
    let e = engine(json!({
        "allow_functions": ["get_*", "send_*", "post_*"],
        "deny_functions": ["get_secret*"],
        "allow_by_agent": {"reader": ["get_*"]},
        "deny_by_agent": {"untrusted": ["send_*"]},
        "require_approval_functions": ["send_email", "post_*"],
    }));
    // 2. the agent's deny list.
    let (k, r) = decide(&e, "send_email", Some("untrusted"));
    assert_eq!((k, r.as_str()), (DecisionKind::Deny, "Agent 'untrusted' may not call 'send_email' (matches 'send_*')"));
    // 3. the agent's allow list.
    assert_eq!(kind(&e, "send_email", Some("reader")), DecisionKind::Deny);
    assert_eq!(kind(&e, "get_user", Some("reader")), DecisionKind::Allow);
    // 4. the global deny list beats the agent's allow list.
    assert_eq!(kind(&e, "get_secret_key", Some("reader")), DecisionKind::Deny);
    // 5. the global allow list.
    let (k, r) = decide(&e, "delete_user", None);
    assert_eq!((k, r.as_str()), (DecisionKind::Deny, "Function 'delete_user' is not in the allow list"));
    // 6. approval.
    assert_eq!(kind(&e, "send_email", None), DecisionKind::RequireApproval);
    assert_eq!(kind(&e, "post_tweet", Some("someone")), DecisionKind::RequireApproval);
    // 7. allow.
    assert_eq!(kind(&e, "send_sms", None), DecisionKind::Allow);
}

#[test]
fn globs_follow_fnmatch() {
    let e = engine(json!({"deny_functions": ["drop_*", "delete_*", "format_disk"]}));
    assert_eq!(kind(&e, "drop_table", None), DecisionKind::Deny);
    assert_eq!(kind(&e, "format_disk", None), DecisionKind::Deny);
    assert_eq!(kind(&e, "format_disk_now", None), DecisionKind::Allow, "no implicit wildcard");
    assert_eq!(kind(&e, "undrop_table", None), DecisionKind::Allow, "anchored at the start");
    let e = engine(json!({"allow_functions": ["get_*", "list_*", "search_*"]}));
    assert_eq!(kind(&e, "search", None), DecisionKind::Deny);
    assert_eq!(kind(&e, "getusers", None), DecisionKind::Deny);
}

#[test]
fn evasions_do_not_work() {
    let e = engine(json!({"deny_functions": ["delete_*"], "deny_by_agent": {"Bot": ["send_*"]}}));
    for f in ["DELETE_user", "ｄｅｌｅｔｅ_user", "del\u{200b}ete_user", " delete_user ", "De\u{00AD}lete_user"] {
        assert_eq!(kind(&e, f, None), DecisionKind::Deny, "{f:?}");
    }
    assert_eq!(kind(&e, "send_x", Some("BOT")), DecisionKind::Deny, "agent ids are normalised too");
    assert_eq!(kind(&e, "send_x", Some("ｂｏｔ")), DecisionKind::Deny);
    // Look-alike letters of other scripts are not folded (docs/security.md): an allow list
    // refuses them, which is why a policy that must hold against a lying model allows.
    let e = engine(json!({"allow_functions": ["send_email"]}));
    assert_eq!(kind(&e, "send_email", None), DecisionKind::Allow);
    assert_eq!(kind(&e, "s\u{0435}nd_email", None), DecisionKind::Deny, "a Cyrillic e");
}

#[test]
fn configuration_errors_name_the_field() {
    let mut registry = GuardRegistry::new();
    registry.register(factory()).unwrap();
    let err = |v: Value| registry.build_json("scope", "scope", v).unwrap_err().to_string();
    assert!(
        err(json!({"deny_functions": ["[abc"]})).starts_with("invalid `deny_functions`: invalid glob pattern `[abc`")
    );
    assert!(err(json!({"allow_by_agent": {"a": ["[x"]}})).starts_with("invalid `allow_by_agent.a`"));
    assert!(err(json!({"deny_functionz": []})).contains("unknown field `deny_functionz`"));
    assert!(err(json!({"read_only_mode": "yes"})).contains("invalid type"));
    assert!(ScopeGuard::new(ScopeConfig::default()).is_ok());
}
