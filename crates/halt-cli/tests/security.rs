//! The bypasses found by attacking `agenthalt eval` as an adversary would, one test per family
//! (each failed before its fix): the model chooses every argument, so every field is hostile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use serde_json::{Value, json};

mod common;

use common::eval;

/// Runs `calls` through `policy` with the replay clock; one answer per call.
fn run(policy: &str, calls: &[Value], extra: &[&str]) -> Vec<Value> {
    let input: String = calls.iter().map(|c| format!("{c}\n")).collect();
    let mut args = vec!["--clock", "replay"];
    args.extend_from_slice(extra);
    let (out, lines) = eval(policy, &input, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines.len(), calls.len(), "{lines:?}");
    lines
}

fn decisions(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["decision"].as_str().unwrap_or("error")).collect()
}

fn at(i: u64) -> f64 {
    1_795_003_200.0 + i as f64
}

/// Family 2: a call that another guard sends to approval still runs with its redactions.
#[test]
fn an_approved_call_runs_with_every_redaction() {
    let policy = "guards:\n  scope:\n    require_approval_functions: [\"send_*\"]\n  sensitive_data:\n    redact_on_modify: true\n";
    let call = json!({"function_name": "send_email", "arguments": {"to": "a@b.test", "body": "SSN 123-45-6789"}, "timestamp": at(0)});
    let lines = run(policy, &[call], &["--approve-all"]);
    assert_eq!(lines[0]["decision"], "require_approval");
    assert_eq!(lines[0]["executed"], true);
    let args = lines[0]["modified_arguments"].to_string();
    assert!(args.contains("[REDACTED:ssn]") && !args.contains("6789"), "{args}");
}

/// Family 4: only well-formed decimal and exponent forms are numbers; the rest is "not a
/// number", with the guard's documented decision (purchase: approval; budget: deny).
#[test]
fn malformed_numbers_are_not_zero() {
    let policy = "guards:\n  purchase:\n    max_single_purchase: 100\n  budget:\n    max_daily_spend: 10\n";
    let mut calls = Vec::new();
    for amount in ["5000e--1", "1e-+3", "5e-+-+-", "1e--5", "2e+-1"] {
        calls.push(json!({"function_name": "buy_item", "arguments": {"amount": amount}, "timestamp": at(0)}));
    }
    for cost in ["9e--9", "1e-+3", "0x10", "1e"] {
        calls.push(json!({"function_name": "render", "arguments": {"estimated_cost": cost}, "timestamp": at(0)}));
    }
    let lines = run(policy, &calls, &[]);
    let got = decisions(&lines);
    assert_eq!(got[..5], ["require_approval"; 5], "{lines:?}");
    assert_eq!(got[5..], ["deny"; 4], "{lines:?}");
    // A policy value of that shape is refused too.
    let (out, _) = eval("guards:\n  budget:\n    max_daily_spend: \"1e--5\"\n", "", &[]);
    assert_eq!(out.status.code(), Some(2));
}

/// Family 9: smaller holes, each closed.
#[test]
fn loops_partitions_numbers_names_and_output() {
    // Loop keys: agent "a/b" + session "c" is not agent "a" + session "b/c".
    let policy = "guards:\n  rate_limit:\n    max_identical_calls: 1\n    max_calls_per_minute: null\n    max_calls_per_minute_per_function: null\n    burst_threshold: null\n";
    let call = |agent: &str, session: &str, q: Value| json!({"function_name": "fetch", "agent_id": agent, "session_id": session, "arguments": {"q": q}, "timestamp": at(0)});
    let lines = run(policy, &[call("a/b", "c", json!(1)), call("a", "b/c", json!(1))], &[]);
    assert_eq!(decisions(&lines), ["allow", "allow"], "two agents, two runs");
    // 42 and 42.0 are the same argument: the second call repeats the first.
    let lines = run(policy, &[call("a", "s", json!(42)), call("a", "s", json!(42.0))], &[]);
    assert_eq!(decisions(&lines), ["allow", "deny"]);
    // A padded or cased name is the same function.
    let lines = run(
        policy,
        &[
            json!({"function_name": "fetch", "arguments": {}, "timestamp": at(0)}),
            json!({"function_name": " fetch", "arguments": {}, "timestamp": at(1)}),
            json!({"function_name": "FETCH ", "arguments": {}, "timestamp": at(2)}),
        ],
        &[],
    );
    assert_eq!(decisions(&lines), ["allow", "deny", "deny"]);
}

#[test]
fn an_absurd_timestamp_does_not_pin_the_replay_clock() {
    let policy = "guards:\n  budget:\n    max_daily_spend: 1\n    default_cost: 0.6\n";
    let day = 86_400.0;
    let calls = [
        json!({"function_name": "x", "timestamp": at(0)}),
        json!({"function_name": "x", "timestamp": 1.0e12}),
        json!({"function_name": "x", "timestamp": at(0) + 3000.0 * day}),
        json!({"function_name": "x", "timestamp": at(0) + 10.0}),
        json!({"function_name": "x", "timestamp": at(0) + day}),
    ];
    let lines = run(policy, &calls, &[]);
    // The far-future calls are evaluated at the clock's time (the same day: over the limit),
    // and the next day's call is a new day again.
    assert_eq!(decisions(&lines), ["allow", "deny", "deny", "deny", "allow"], "{lines:?}");
}

#[test]
fn names_are_capped_lines_may_open_with_a_bom_and_line_breaks_are_escaped() {
    let policy = "guards:\n  scope:\n    deny_functions: [\"drop_*\"]\n";
    let long = "a".repeat(2_000_000);
    let input = format!(
        "\u{feff}{}\n{}\n{}\n",
        json!({"function_name": "drop_table"}),
        json!({"function_name": long}),
        json!({"function_name": "drop_\u{2028}x\u{85}y\u{2029}"}),
    );
    let (out, lines) = eval(policy, &input, &[]);
    assert!(out.status.success());
    assert_eq!(lines[0]["decision"], "deny", "the BOM is not part of the call");
    assert!(lines[1]["error"].as_str().unwrap().contains("longer than 256 bytes"), "{:?}", lines[1]);
    let text = String::from_utf8(out.stdout).unwrap();
    for raw in ['\u{2028}', '\u{2029}', '\u{85}'] {
        assert!(!text.contains(raw), "raw {raw:?} in the output");
    }
    assert!(text.contains("\\u2028") && text.contains("\\u0085"));
    assert_eq!(lines[2]["function_name"], "drop_\u{2028}x\u{85}y\u{2029}", "escaped, the same text");
}

#[test]
fn repeated_keys_are_refused() {
    let policy = "guards:\n  scope:\n    deny_functions: [\"drop_*\"]\n";
    let input = concat!(
        r#"{"function_name": "send_email", "arguments": {"to": "a@corp.test", "to": "eve@evil.test"}}"#,
        "\n",
        r#"{"function_name": "drop_table", "function_name": "read_table"}"#,
        "\n",
    );
    let (_, lines) = eval(policy, input, &[]);
    for line in &lines {
        let error = line["error"].as_str().unwrap_or_default();
        assert!(error.contains("repeats a key") && !error.contains("eve@"), "{line}");
    }
}

#[test]
fn read_only_mode_refuses_reads_that_write() {
    let policy = "guards:\n  scope:\n    read_only_mode: true\n";
    let calls: Vec<Value> =
        ["get_user", "get_and_delete_user", "fetch_then_send_money", "list_payments", "view_report"]
            .iter()
            .map(|f| json!({"function_name": f, "timestamp": at(0)}))
            .collect();
    assert_eq!(decisions(&run(policy, &calls, &[])), ["allow", "deny", "deny", "allow", "allow"]);
}

/// Family 8: policies that would misbehave are refused, and `check` judges as `eval` loads.
#[test]
fn policies_that_should_be_errors_are_errors() {
    let refused = [
        "guards:\n  scope:\n    deny_by_agent: {Bot: [\"*\"], bot: []}\n",
        "guards:\n  scope:\n    allow_by_agent: {\"ｂｏｔ\": [\"a\"], bot: [\"b\"]}\n",
        "guards:\n  budget:\n    cost_estimator: {Render: 6, \"render \": 0.01}\n",
        "guards:\n  rate_limit:\n    max_identical_calls: 0\n",
        "guards:\n  rate_limit:\n    burst_threshold: 0\n",
        "guards:\n  sensitive_data:\n    custom_patterns: {nothing: \"x*\"}\n",
        "guards:\n  sensitive_data:\n    custom_patterns: {nothing: \"(?:)\"}\n",
        "guards:\n  - type: scope\n    name: \"\"\n",
        "guards:\n  - type: scope\n    name: \"a\\nb\"\n",
    ];
    for policy in refused {
        let path = common::temp_file(&format!("refused-{}.yaml", policy.len()), policy);
        let out = common::bin().args(["check", path.to_str().unwrap()]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "check accepts {policy:?}");
        let (out, _) = eval(policy, "", &[]);
        assert_eq!(out.status.code(), Some(2), "eval accepts {policy:?}");
    }
    // A glob among the blocked categories is a glob.
    let policy = "guards:\n  purchase:\n    blocked_categories: [\"*\"]\n";
    let lines = run(
        policy,
        &[json!({"function_name": "buy", "arguments": {"amount": 1, "category": "office"}, "timestamp": at(0)})],
        &[],
    );
    assert_eq!(decisions(&lines), ["deny"]);
    // No guards: valid, with a warning.
    let path = common::temp_file("empty.yaml", "guards: {}\n");
    let out = common::bin().args(["check", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no guards"));
}

const ALL_GUARDS: &str = r#"guards:
  budget:
    max_daily_spend: 10
    max_call_cost: 5
  purchase:
    max_single_purchase: 100
    require_approval_above: 50
    blocked_categories: ["luxury"]
    allowed_categories: ["office", "luxury"]
  deletion:
    allow_patterns: ["temp_*"]
    protected_resources: ["inbox"]
  scope:
    deny_functions: ["drop_*"]
  sensitive_data:
    blocked_patterns: ["ssn", "credit_card", "api_key"]
"#;

/// Family 3: no reason repeats a value of the call, whatever field carries it.
#[test]
fn reasons_never_repeat_the_calls_values() {
    let secret = "SSN 123-45-6789 sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let calls = [
        json!({"function_name": "buy_item", "arguments": {"amount": 5, "currency": secret, "category": "office"}}),
        json!({"function_name": "buy_item", "arguments": {"amount": 5, "category": secret}}),
        json!({"function_name": "buy_item", "arguments": {"amount": secret}}),
        json!({"function_name": "buy_item", "arguments": {"amount": 123_456_789, "category": "office"}}),
        json!({"function_name": "render", "arguments": {"estimated_cost": secret}}),
        json!({"function_name": "render", "arguments": {"estimated_cost": 123_456_789}}),
        json!({"function_name": "delete_file", "arguments": {"resource_id": secret}}),
        json!({"function_name": "delete_file", "arguments": {"path": format!("../{secret}")}}),
        json!({"function_name": "delete_file", "arguments": {"ids": [{"size": secret}]}}),
        json!({"function_name": "send", "arguments": {"nested": {"a": {"b": {"c": {"d": {"e": {secret: 1}}}}}}}}),
    ];
    let (out, lines) = eval(ALL_GUARDS, &calls.iter().map(|c| format!("{c}\n")).collect::<String>(), &[]);
    assert!(out.status.success());
    assert_eq!(lines.len(), calls.len());
    let text = String::from_utf8(out.stdout).unwrap();
    for value in ["123-45-6789", "sk_live", "123456789", "4eC39"] {
        assert!(!text.contains(value), "{value} in {text}");
    }
}

/// Families 5 and 6: deletion checks every target; purchase reads the real total, every
/// category and currency.
#[test]
fn every_target_category_currency_and_amount_counts() {
    let calls = [
        json!({"function_name": "delete_file", "arguments": {"name": "temp_1", "path": "/etc/passwd"}}),
        json!({"function_name": "delete_email", "arguments": {"id": "temp_1", "email_id": "inbox"}}),
        json!({"function_name": "delete_file", "arguments": {"resource_id": {"id": "temp_1", "path": "inbox"}}}),
        json!({"function_name": "delete_file", "arguments": {"resource_id": "temp_%2f..%2finbox"}}),
        json!({"function_name": "delete_file", "arguments": {"resource_id": "temp_*"}}),
        json!({"function_name": "buy_item", "arguments": {"price": 40, "quantity": 100, "category": "office"}}),
        json!({"function_name": "buy_item", "arguments": {"amount": 1, "total": 5000, "category": "office"}}),
        json!({"function_name": "buy_item", "arguments": {"amount": 1, "category": null, "item": {"category": "luxury"}}}),
        json!({"function_name": "buy_item", "arguments": {"amount": 1, "category": "office", "currency_code": "EUR"}}),
        json!({"function_name": "buy_item", "arguments": {"amount": 1, "category": "office", "Currency": "EUR"}}),
    ];
    let lines = run(ALL_GUARDS, &calls, &[]);
    let got = decisions(&lines);
    assert_eq!(got[..4], ["deny"; 4], "{lines:?}");
    assert_eq!(got[4], "require_approval", "a wildcard target: {lines:?}");
    assert_eq!(got[5..], ["deny"; 5], "{lines:?}");
}

/// Family 7: the sensitive-data evasions.
#[test]
fn sensitive_data_evasions_are_caught() {
    let calls: Vec<Value> = [
        json!({"note": "ssn_123-45-6789"}),
        json!({"note": "id_4111111111111111_x"}),
        json!({"note": "４１１１１１１１１１１１１１１１"}),
        json!({"note": "4111\u{200b}1111\u{200b}1111\u{200b}1111"}),
        json!({"note": "4111.1111.1111.1111"}),
        json!({"sk_live_4eC39HqLyjWDarjtT1zdp7dc": "key as a key"}),
        json!({"password": ["hunter2"]}),
        json!({"password": 12345678}),
        json!({"aws_secret_access_key": "abc"}),
    ]
    .into_iter()
    .map(|args| json!({"function_name": "send", "arguments": args}))
    .collect();
    let policy = "guards:\n  sensitive_data:\n    blocked_patterns: [\"ssn\", \"credit_card\", \"api_key\"]\n";
    let lines = run(policy, &calls, &[]);
    assert_eq!(decisions(&lines), vec!["deny"; calls.len()], "{lines:?}");
}
