//! Deletion guard: every rule and boundary, targets, evasions, effects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::time::Duration;

use halt_core::{CallContext, Decision, DecisionKind, GuardRegistry, ManualClock, Timestamp};
use halt_engine::{ApprovalResponse, Engine};
use halt_guards_deletion::factory;
use halt_testing::guards::StaticGuard;
use serde_json::{Value, json};

/// 2026-11-24T12:00:00Z.
const NOON: i64 = 1_795_521_600;

fn setup(config: Value) -> (Engine, ManualClock) {
    let mut registry = GuardRegistry::new();
    registry.register(factory()).unwrap();
    let clock = ManualClock::new(Timestamp::from_secs(NOON));
    let guard = registry.build_json("deletion", "deletion", config).unwrap();
    let e = Engine::builder()
        .guard_arc(guard)
        .guard(StaticGuard::new("no", Decision::deny("no")).only_for("delete_blocked"))
        .guard(StaticGuard::new("ask", Decision::require_approval("ask")).only_for("delete_ask"))
        .clock(clock.clone())
        .build()
        .unwrap();
    (e, clock)
}

fn del(name: &str, args: Value) -> CallContext {
    CallContext::new(name).with_session("s1").with_arguments(args).unwrap()
}

fn decide(e: &Engine, name: &str, args: Value) -> (DecisionKind, String) {
    let o = e.evaluate_blocking(del(name, args));
    (o.decision(), o.final_decision().map(|d| d.reason().to_owned()).unwrap_or_default())
}

#[test]
fn applies_to_deletion_words_only() {
    let (e, _) = setup(json!({"protected_resources": ["x"]}));
    for f in [
        "delete_file",
        "Remove_User",
        "drop_table",
        "purge_cache",
        "trash_item",
        "CLEAR_inbox",
        "truncate_log",
        "erase",
        "wipe_disk",
        // Evasions: full-width, zero-width and soft-hyphen characters in the name.
        "ｄｅｌｅｔｅ_ｆｉｌｅ",
        "del\u{200b}ete_file",
        "re\u{00AD}move_user",
    ] {
        assert_eq!(decide(&e, f, json!({"resource_id": "x"})).0, DecisionKind::Deny, "{f}");
    }
    let o = e.evaluate_blocking(del("read_file", json!({"resource_id": "x"})));
    assert!(o.decisions().is_empty());
}

#[test]
fn soft_delete_only_refuses_hard_deletions() {
    let (e, _) = setup(json!({"soft_delete_only": true}));
    assert_eq!(decide(&e, "delete_file", json!({"resource_id": "f1"})).0, DecisionKind::Allow);
    assert_eq!(decide(&e, "trash_item", json!({"resource_id": "f1"})).0, DecisionKind::Allow);
    for (f, args) in [
        ("hard_delete", json!({"resource_id": "f1"})),
        ("purge_cache", json!({"resource_id": "c"})),
        ("delete_permanently", json!({"resource_id": "c"})),
        ("destroy_vm", json!({"resource_id": "c"})),
        ("delete_file", json!({"resource_id": "f2", "permanent": true})),
        ("delete_file", json!({"resource_id": "f3", "hard_delete": "yes"})),
    ] {
        let (k, r) = decide(&e, f, args);
        assert_eq!(k, DecisionKind::Deny, "{f}");
        assert!(r.contains("soft"), "{r}");
    }
    assert_eq!(decide(&e, "delete_file", json!({"resource_id": "f1", "permanent": false})).0, DecisionKind::Allow);
}

#[test]
fn cooldown_counts_only_deletions_that_ran() {
    let (e, clock) = setup(json!({"cooldown_seconds": 5.0}));
    let at = |secs: f64| clock.set(Timestamp::from_secs_f64(NOON as f64 + secs).unwrap());
    at(0.0);
    assert_eq!(decide(&e, "delete_x", json!({"resource_id": "a"})).0, DecisionKind::Allow);
    at(2.0);
    let (k, r) = decide(&e, "delete_x", json!({"resource_id": "b"}));
    assert_eq!(k, DecisionKind::Deny);
    assert!(r.starts_with("Deletion cooldown active: 3.0s left"), "{r}");
    at(5.0);
    assert_eq!(
        decide(&e, "delete_x", json!({"resource_id": "c"})).0,
        DecisionKind::Deny,
        "exactly 5 s is still within"
    );
    at(5.1);
    // Denied by another guard: no cooldown starts.
    assert_eq!(decide(&e, "delete_blocked", json!({"resource_id": "d"})).0, DecisionKind::Deny);
    at(5.2);
    assert_eq!(decide(&e, "delete_x", json!({"resource_id": "e"})).0, DecisionKind::Allow);
    at(10.3);
    assert_eq!(decide(&e, "delete_x", json!({"resource_id": "f"})).0, DecisionKind::Allow);
}

#[test]
fn bulk_session_and_daily_limits_count_every_target() {
    let (e, clock) = setup(json!({"max_bulk_delete": 3, "max_deletions_per_session": 5, "max_deletions_per_day": 7}));
    assert_eq!(decide(&e, "delete_many", json!({"ids": ["a", "b", "c"]})).0, DecisionKind::Allow, "at the bulk limit");
    let (k, r) = decide(&e, "delete_many", json!({"ids": ["a", "b", "c", "d"]}));
    assert_eq!((k, r.as_str()), (DecisionKind::Deny, "Bulk deletion of 4 resources exceeds the limit of 3"));
    assert_eq!(
        decide(&e, "delete_many", json!({"resource_id": "x", "targets": ["y"]})).0,
        DecisionKind::Allow,
        "5 in session"
    );
    let (k, r) = decide(&e, "delete_one", json!({"id": "z"}));
    assert_eq!((k, r.as_str()), (DecisionKind::Deny, "Session deletion limit reached: 5 deleted + 1 would pass 5"));
    let other =
        |ids: Value| CallContext::new("delete_x").with_session("s2").with_arguments(json!({"ids": ids})).unwrap();
    assert!(e.evaluate_blocking(other(json!(["1", "2"]))).is_allowed(), "7 today");
    let o = e.evaluate_blocking(other(json!(["3"])));
    assert_eq!(o.denial_reasons(), ["Daily deletion limit reached: 7 deleted + 1 would pass 7"]);
    clock.advance(Duration::from_secs(12 * 3600));
    assert!(e.evaluate_blocking(other(json!(["3"]))).is_allowed(), "a new day");
}

#[test]
fn counts_change_only_when_the_deletion_runs() {
    let (e, _) = setup(json!({"max_deletions_per_session": 2}));
    assert_eq!(decide(&e, "delete_blocked", json!({"ids": ["a", "b"]})).0, DecisionKind::Deny);
    let o = e.evaluate_blocking(del("delete_ask", json!({"ids": ["a", "b"]})).with_call_id("ask1"));
    assert!(o.needs_approval());
    assert_eq!(decide(&e, "delete_x", json!({"id": "c"})).0, DecisionKind::Deny, "the pending two are held");
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(e.resolve_approval("ask1", &ApprovalResponse::refuse("bob"))).unwrap();
    assert_eq!(decide(&e, "delete_x", json!({"ids": ["c", "d"]})).0, DecisionKind::Allow);
    assert_eq!(decide(&e, "delete_x", json!({"id": "e"})).0, DecisionKind::Deny);
}

#[test]
fn no_target_needs_approval() {
    let (e, _) = setup(json!({}));
    let (k, r) = decide(&e, "delete_everything", json!({}));
    assert_eq!((k, r.as_str()), (DecisionKind::RequireApproval, "Deletion with no identifiable target needs approval"));
    assert_eq!(decide(&e, "delete_x", json!({"ids": []})).0, DecisionKind::RequireApproval);
}

#[test]
fn every_argument_naming_a_target_is_checked() {
    let (e, _) = setup(json!({"protected_resources": ["a", "b", "c", "z"], "require_approval_always": true}));
    let t = |args: Value| decide(&e, "delete_x", args);
    let denied = |args: Value| {
        let (k, r) = t(args.clone());
        assert_eq!(k, DecisionKind::Deny, "{args}: {r}");
        r
    };
    assert_eq!(denied(json!({"resource_id": "x", "ids": ["b"]})), "A target in `ids` is protected ('b')");
    assert_eq!(denied(json!({"targets": ["c"], "ids": ["x", "y"]})), "A target in `targets` is protected ('c')");
    assert_eq!(denied(json!({"resource_ids": [null, "x"], "items": "c"})), "A target in `items` is protected ('c')");
    // Not the first field only: every one, whatever its case or spelling.
    for args in [
        json!({"name": "temp_1", "path": "a"}),
        json!({"id": "x", "email_id": "z"}),
        json!({"resource_id": "x", "id": "z"}),
        json!({"ids": ["x"], "File_Path": "z"}),
        json!({"Path": "z"}),
        json!({"resourceId": "z"}),
        json!({"ids": [{"name": "x", "path": "b"}]}),
        json!({"id": {"id": "x", "path": "a"}}),
        json!({"ids": null, "id": "z"}),
        json!({"ids": [true]}),
    ] {
        denied(args);
    }
    let (k, r) = t(json!({"resource_id": null, "id": null}));
    assert_eq!((k, r.as_str()), (DecisionKind::RequireApproval, "Deletion with no identifiable target needs approval"));
    assert_eq!(t(json!({"ids": ["x"], "name": "x"})).1, "Deletion of 1 resource(s) needs approval", "one name twice");
    // Many arguments: the same targets.
    let mut many: serde_json::Map<String, Value> = (0..40).map(|i| (format!("x{i}"), json!(i))).collect();
    many.insert("targets".into(), json!(["x", "c"]));
    assert_eq!(denied(Value::Object(many)), "A target in `targets` is protected ('c')");
    // A configured resource field is read too.
    let (e, _) = setup(json!({"protected_resources": ["a"], "resource_field": "victim"}));
    assert_eq!(decide(&e, "delete_x", json!({"victim": "a"})).0, DecisionKind::Deny);
}

#[test]
fn encoded_and_wildcard_targets_are_judged_decoded_or_sent_to_a_human() {
    let (e, _) = setup(json!({"allow_patterns": ["temp_*"], "protected_resources": ["inbox"]}));
    let t = |id: &str| decide(&e, "delete_file", json!({"resource_id": id}));
    assert_eq!(t("temp_%2f..%2finbox").0, DecisionKind::Deny, "decoded, it is the inbox");
    assert_eq!(t("temp_%252f..%252finbox").0, DecisionKind::Deny, "decoded twice");
    assert_eq!(t("%69nbox").0, DecisionKind::Deny);
    assert_eq!(t("temp_%41").0, DecisionKind::RequireApproval, "encoded: a human decides");
    let (k, r) = t("temp_*");
    assert_eq!(k, DecisionKind::RequireApproval, "a shell would expand it");
    assert_eq!(r, "A target in `resource_id` needs approval: it holds wildcard characters");
    assert_eq!(t("temp_[0-9]").0, DecisionKind::RequireApproval);
    assert_eq!(t("temp_1").0, DecisionKind::Allow);
    assert_eq!(decide(&e, "delete_file", json!({"resource_id": 42.0, "id": 42})).0, DecisionKind::Deny, "no allow");
}

#[test]
fn reasons_never_repeat_the_targets() {
    let (e, _) = setup(json!({"allow_patterns": ["temp_*"], "protected_resources": ["inbox"]}));
    let secret = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    for args in [
        json!({"resource_id": secret}),
        json!({"path": format!("../{secret}")}),
        json!({"id": format!("{secret}\u{7}")}),
        json!({"ids": [{"size": secret}]}),
    ] {
        let o = e.evaluate_blocking(CallContext::new("delete_file").with_arguments(args.clone()).unwrap());
        assert!(o.is_denied(), "{args}");
        let text = serde_json::to_string(&o).unwrap();
        assert!(!text.contains("sk_live"), "{text}");
    }
}

#[test]
fn patterns_protection_and_evasions() {
    let (e, _) = setup(json!({
        "allow_patterns": ["temp_*", "draft_*", "cache_*"],
        "deny_patterns": ["*_production", "*_backup"],
        "protected_resources": ["inbox", "sent", "important"],
    }));
    let t = |id: &str| decide(&e, "delete_file", json!({"resource_id": id}));
    assert_eq!(t("temp_file_001").0, DecisionKind::Allow);
    assert_eq!(t("draft_7").0, DecisionKind::Allow);
    assert_eq!(t("inbox"), (DecisionKind::Deny, "A target in `resource_id` is protected ('inbox')".into()));
    assert_eq!(t("INBOX").0, DecisionKind::Deny);
    assert_eq!(t("ｉｎｂｏｘ").0, DecisionKind::Deny);
    assert_eq!(t("in\u{200b}box").0, DecisionKind::Deny);
    assert_eq!(t("temp_/../inbox"), (DecisionKind::Deny, "A target in `resource_id` is protected ('inbox')".into()));
    assert_eq!(t("temp_backup").0, DecisionKind::Deny);
    assert_eq!(t("db_production").0, DecisionKind::Deny);
    assert_eq!(t("important_document").0, DecisionKind::Deny, "matches no allow pattern");
    let (k, r) = t("../etc/passwd");
    assert_eq!(k, DecisionKind::Deny);
    assert!(r.contains("climbs above its root"), "{r}");
    assert!(t("temp_\u{7}x").1.contains("control character"));
    // Every target is checked, from every list.
    let (k, r) = decide(&e, "delete_files", json!({"resource_ids": ["temp_1", "sent"]}));
    assert_eq!((k, r.as_str()), (DecisionKind::Deny, "A target in `resource_ids` is protected ('sent')"));
    assert_eq!(
        decide(&e, "delete_files", json!({"items": [{"id": "temp_1"}, {"name": "cache_2"}]})).0,
        DecisionKind::Allow
    );
    assert_eq!(decide(&e, "delete_files", json!({"items": [{"size": 1}]})).0, DecisionKind::Deny);
    assert_eq!(decide(&e, "delete_files", json!({"targets": [true]})).0, DecisionKind::Deny);
    assert_eq!(decide(&e, "delete_file", json!({"path": "/tmp/../inbox"})).0, DecisionKind::Deny);
}

#[test]
fn approval_always() {
    let (e, _) = setup(json!({"require_approval_always": true, "protected_resources": ["inbox"]}));
    assert_eq!(decide(&e, "delete_file", json!({"resource_id": "x"})).0, DecisionKind::RequireApproval);
    assert_eq!(decide(&e, "delete_file", json!({"resource_id": "inbox"})).0, DecisionKind::Deny);
}

#[test]
fn configuration_errors() {
    let mut registry = GuardRegistry::new();
    registry.register(factory()).unwrap();
    let err = |v: Value| registry.build_json("deletion", "deletion", v).unwrap_err().to_string();
    assert!(err(json!({"cooldown_seconds": -1})).contains("cooldown_seconds"));
    assert!(err(json!({"cooldown_seconds": 1e20})).contains("1e20 seconds is longer than a duration can be"));
    assert!(err(json!({"max_bulk_delete": -1})).contains("invalid value"));
    assert!(err(json!({"allow_patterns": ["[x"]})).starts_with("invalid `allow_patterns`"));
    assert!(err(json!({"protected": []})).contains("unknown field `protected`"));
    assert!(err(json!({"deletion_functions": [""]})).contains("deletion_functions"));
}
