//! The `approvals:` section: checked with errors that point at the mistake, turned into a broker
//! with its rules, and a policy version that changes with the policy and only with it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;
use std::time::Duration;

use halt_config::{HandlerSetting, PolicyLoader};
use halt_core::{CallContext, Clock, ManualClock, StateStore, Timestamp};
use halt_hil::{ApprovalState, Broker, Filter, Verdict};
use halt_store_memory::MemoryStore;
use serde_json::json;

fn load(yaml: &str) -> Result<halt_config::Policy, String> {
    PolicyLoader::new().load_str(yaml, "p.yaml").map_err(|e| e.to_string())
}

#[test]
fn mistakes_in_the_section_are_pointed_at() {
    for (yaml, expected) in [
        ("approvals:\n  handler: consol\n", "p.yaml:2:3: unknown variant `consol`"),
        (
            "approvals:\n  expires_afer_seconds: 5\n",
            "unknown field `expires_afer_seconds` at approvals; did you mean `expires_after_seconds`?",
        ),
        ("approvals:\n  timeout_seconds: -1\n", "must be a positive number of seconds at approvals.timeout_seconds"),
        (
            "engine:\n  approval_timeout_seconds: 60\napprovals:\n  expires_after_seconds: 61\n",
            "must not exceed engine.approval_timeout_seconds (60)",
        ),
        ("approvals:\n  require_approvers:\n    \"purchase_*\": 0\n", "`purchase_*`: must be from 1 to 10 approvers"),
        ("approvals:\n  require_approvers:\n    \"[a\": 2\n", "approvals.require_approvers"),
        ("approvals:\n  handler: webhook\n", "the webhook handler needs `webhook: {url, secret}`"),
        ("approvals:\n  webhook: {url: ftp://x, secret: 0123456789abcdef}\n", "must start with http:// or https://"),
        ("approvals:\n  webhook: {url: https://x, secret: short}\n", "must be at least 16 bytes"),
        ("approval:\n  handler: console\n", "unknown section `approval` at approval; did you mean `approvals`?"),
    ] {
        let err = load(yaml).unwrap_err();
        assert!(err.contains(expected), "{yaml:?}: {err}");
    }
    let p = load("approvals:\n  handler: auto_deny\n  require_approvers: {\"purchase_*\": 2}\n").unwrap();
    assert_eq!(p.approvals.handler, HandlerSetting::AutoDeny);
    let hook = "approvals:\n  handler: webhook\n  webhook: {url: \"https://hooks.example.com/a\", secret: \"${HOOK_SECRET}\"}\n";
    let env = |name: &str| (name == "HOOK_SECRET").then(|| "0123456789abcdef0123".to_owned());
    let p = PolicyLoader::new().load_with_env(hook, "p.yaml", &env).unwrap();
    assert_eq!(
        p.approvals.webhook.as_ref().unwrap().secret,
        "0123456789abcdef0123",
        "the secret comes from the environment"
    );
    assert!(p.approval_handler().unwrap().is_some());
}

#[test]
fn the_policy_version_follows_the_policy_not_its_layout() {
    let a = load("guards:\n  purchase:\n    require_approval_above: 10\n    max_single_purchase: 100\n").unwrap();
    let b = load("# a comment\nguards:\n  purchase: {max_single_purchase: 100, require_approval_above: 10}\n").unwrap();
    let c = load("guards:\n  purchase:\n    require_approval_above: 11\n    max_single_purchase: 100\n").unwrap();
    assert_eq!(a.version.len(), 64);
    assert_eq!(a.version, b.version, "comments, spacing and key order are not the policy");
    assert_ne!(a.version, c.version, "a changed limit is another policy");
}

const POLICY: &str = "
guards:
  purchase:
    require_approval_above: 10
  sensitive_data:
    blocked_patterns: [ssn]
approvals:
  expires_after_seconds: 120
  require_approvers:
    \"wire_*\": 2
";

fn setup() -> (halt_config::Policy, Broker, halt_engine::Engine) {
    let policy = load(POLICY).unwrap();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_secs(1_800_000_000)));
    let broker = policy.broker(Arc::clone(&store), Arc::clone(&clock)).unwrap();
    let engine = policy
        .engine_builder()
        .store_arc(store)
        .clock_arc(clock)
        .approval_handler(broker.clone())
        .build()
        .and_then(|e| policy.apply_enabled(e))
        .unwrap();
    (policy, broker, engine)
}

async fn first_pending(broker: &Broker) -> halt_hil::Approval {
    for _ in 0..5_000 {
        let filter = Filter { state: Some(ApprovalState::Pending), ..Filter::default() };
        if let Some(a) = broker.list(&filter).await.unwrap().pop() {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("nothing was asked");
}

#[tokio::test]
async fn a_broker_from_the_policy_binds_to_its_version_and_counts_approvers() {
    let (policy, broker, engine) = setup();
    assert_eq!(broker.config().policy_version, policy.version);
    assert_eq!(broker.config().expires_after, Duration::from_secs(120));
    let call = CallContext::new("wire_transfer").with_arguments(json!({"amount": 500})).unwrap().with_agent("bot");
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { engine.evaluate(call).await }
    });
    let a = first_pending(&broker).await;
    assert_eq!(a.required, 2);
    assert_eq!(a.policy_version, policy.version);
    broker.decide(&a.id, Verdict::Approve, "alice", None).await.unwrap();
    broker.decide(&a.id, Verdict::Approve, "alice", None).await.unwrap();
    assert_eq!(broker.get(&a.id).await.unwrap().state, ApprovalState::Pending, "one person, twice, is one");
    broker.decide(&a.id, Verdict::Approve, "bob", None).await.unwrap();
    let o = running.await.unwrap();
    assert!(o.is_allowed(), "{o:?}");
    assert_eq!(o.approver(), Some("bob"));
}

#[tokio::test]
async fn an_edit_that_adds_an_ssn_is_still_denied() {
    let (_, broker, engine) = setup();
    let call = CallContext::new("buy_item").with_arguments(json!({"amount": 50, "item": "desk"})).unwrap();
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { engine.evaluate(call).await }
    });
    let a = first_pending(&broker).await;
    let edit =
        Verdict::Edit { arguments: json!({"amount": 20, "item": "desk", "note": "ssn 123-45-6789"}), function: None };
    broker.decide(&a.id, edit, "alice", None).await.unwrap();
    let o = running.await.unwrap();
    assert!(o.is_denied(), "{o:?}");
    assert!(o.decisions().iter().any(|d| d.guard() == "sensitive_data" && d.kind() == halt_core::DecisionKind::Deny));
    assert!(o.modified_arguments().is_none(), "nothing of the edit runs");
}

#[tokio::test]
async fn an_edit_naming_another_tool_or_asked_about_by_a_new_guard_asks_again() {
    let (_, broker, engine) = setup();
    let call = CallContext::new("buy_item").with_arguments(json!({"amount": 50, "item": "desk"})).unwrap();
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { engine.evaluate(call).await }
    });
    let first = first_pending(&broker).await;
    let edit = Verdict::Edit { arguments: json!({"amount": 5}), function: Some("wire_funds".into()) };
    broker.decide(&first.id, edit, "alice", None).await.unwrap();
    // The other tool is a new approval, under its own rules (two approvers for wire_*).
    let mut second = first_pending(&broker).await;
    for _ in 0..100 {
        if second.id != first.id {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        second = first_pending(&broker).await;
    }
    assert_ne!(second.id, first.id);
    assert_eq!(second.function, "wire_funds");
    assert_eq!(second.required, 2);
    assert_eq!(second.reasons, ["an approver's edit names another tool"]);
    broker.decide(&second.id, Verdict::Deny, "bob", Some("not what was asked")).await.unwrap();
    let o = running.await.unwrap();
    assert!(o.is_denied(), "{o:?}");
    assert_eq!(o.function_name(), "wire_funds");
}
