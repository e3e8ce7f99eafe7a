//! The `agenthalt` binary: check, schema, eval (streaming, malformed lines, clocks, approvals).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::io::Write;
use std::process::Stdio;

use serde_json::{Value, json};

mod common;

use common::{bin, eval, temp_file};

#[test]
fn check_summarises_a_valid_policy_and_refuses_an_invalid_one() {
    let good =
        temp_file("good.yaml", "guards:\n  budget:\n    max_daily_spend: 10\n  scope:\n    deny_functions: [drop_*]\n");
    let out = bin().args(["check", good.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("valid, 2 guard(s), mode enforce, store not set (eval: memory; serve: sled"), "{text}");
    assert!(text.contains("budget [budget]") && text.contains("max_daily_spend: 10.0"), "{text}");
    assert!(text.contains("  approvals: handler none, expire after 900 s\n"), "{text}");
    assert!(text.contains("  serve: 127.0.0.1:8550, no tokens (loopback only)\n"), "{text}");
    let served = temp_file(
        "served.yaml",
        "server:\n  bind: 0.0.0.0:9000\n  tokens:\n    - {name: a, role: agent, token: aaaaaaaaaaaaaaaa1}\n    - {name: v, role: viewer, token: bbbbbbbbbbbbbbbb2}\n",
    );
    let out = bin().args(["check", served.to_str().unwrap()]).output().unwrap();
    let served = String::from_utf8(out.stdout).unwrap();
    assert!(served.contains("  serve: 0.0.0.0:9000, 2 token(s): agent 1, viewer 1\n"), "{served}");
    assert!(!served.contains("aaaaaaaa"), "no token is shown: {served}");
    let two = temp_file(
        "two.yaml",
        "approvals:\n  handler: console\n  expires_after_seconds: 60\n  require_approvers: {\"wire_*\": 2}\n",
    );
    let out = bin().args(["check", two.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("  approvals: handler console, expire after 60 s, wire_* needs 2 approvers\n"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("  policy version ") && l.len() == 17 + 64), "{text}");
    let bad = temp_file("bad.yaml", "guards:\n  budget:\n    max_daily_spnd: 10\n");
    let out = bin().args(["check", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.yaml:3:5: unknown field `max_daily_spnd` at guards.budget; did you mean `max_daily_spend`?"),
        "{err}"
    );
}

#[test]
fn schema_prints_json_schema() {
    let out = bin().arg("schema").output().unwrap();
    assert!(out.status.success());
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["title"], "AgentHalt policy");
    let approvals = &schema["properties"]["approvals"]["properties"];
    for key in ["handler", "timeout_seconds", "expires_after_seconds", "webhook", "require_approvers"] {
        assert!(approvals.get(key).is_some(), "approvals.{key} is in the schema: {approvals}");
    }
    let condition = &schema["$defs"]["Condition"]["properties"];
    for key in
        ["all", "any", "not", "field", "path", "url", "email_domain", ">", ">=", "<", "<=", "one_of", "regex", "exists"]
    {
        assert!(condition.get(key).is_some(), "rules conditions' {key} is in the schema: {condition}");
    }
    let audit = &schema["properties"]["audit"]["properties"];
    for key in ["file", "tracing", "memory", "queue", "on_full", "required"] {
        assert!(audit.get(key).is_some(), "audit.{key} is in the schema: {audit}");
    }
}

#[test]
fn help_has_examples() {
    let out = bin().args(["eval", "--help"]).output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("Examples:"));
    assert!(bin().arg("--version").output().unwrap().status.success());
}

#[test]
fn malformed_lines_are_answered_and_the_run_goes_on() {
    let input = [
        r#"{"function_name": "ok_1"}"#,
        "not json",
        "[1, 2]",
        r#"{"arguments": {}}"#,
        r#"{"function_name": 7}"#,
        r#"{"function_name": "f", "arguments": [1]}"#,
        r#"{"function_name": "f", "timestamp": "yesterday"}"#,
        "",
        r#"{"function_name": "ok_2", "call_id": "last"}"#,
    ]
    .join("\n");
    let (out, lines) = eval("guards: {}\n", &input, &[]);
    assert!(out.status.success());
    assert_eq!(lines.len(), 8, "a blank line gets no answer");
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[1]["line"], 2);
    assert!(lines[1]["error"].as_str().unwrap().starts_with("invalid JSON"));
    assert_eq!(lines[2], json!({"line": 3, "error": "a call must be a JSON object, got an array"}));
    assert_eq!(lines[3], json!({"line": 4, "error": "`function_name` is missing"}));
    assert_eq!(lines[4], json!({"line": 5, "error": "`function_name` must be a string, got a number"}));
    assert_eq!(lines[5], json!({"line": 6, "error": "`arguments` must be a JSON object, got an array"}));
    assert_eq!(lines[6], json!({"line": 7, "error": "`timestamp` must be a number, got a string"}));
    assert_eq!(lines[7]["call_id"], "last");
}

#[test]
fn a_line_that_is_not_utf8_is_answered_and_the_run_goes_on() {
    let config = temp_file("utf8-policy.yaml", "guards: {}\n");
    let mut child = bin()
        .args(["eval", "--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"function_name\": \"a\"}\n\xff\xfe{}\n{\"function_name\": \"b\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["function_name"], "a");
    assert_eq!(lines[1]["line"], 2);
    assert!(lines[1]["error"].as_str().unwrap().starts_with("the line is not UTF-8"), "{}", lines[1]);
    assert_eq!(lines[2]["function_name"], "b");
}

#[test]
fn output_lines_carry_the_contract_fields() {
    let policy = "guards:\n  scope:\n    require_approval_functions: [send_*]\n    deny_functions: [drop_*]\n";
    let input =
        [r#"{"function_name": "send_mail", "call_id": "a"}"#, r#"{"function_name": "drop_db", "call_id": "b"}"#]
            .join("\n");
    let (_, lines) = eval(policy, &input, &[]);
    assert_eq!(lines[0]["decision"], "require_approval");
    assert_eq!(lines[0]["executed"], false);
    assert_eq!(lines[0]["risk_score"], 0.7);
    assert_eq!(lines[0]["reasons"], json!(["Function 'send_mail' needs approval (matches 'send_*')"]));
    assert_eq!(lines[0]["guards"][0]["guard"], "scope");
    assert_eq!(lines[1]["decision"], "deny");
    let (_, lines) = eval(policy, &input, &["--approve-all"]);
    assert_eq!(lines[0]["executed"], true);
    assert_eq!(lines[1]["executed"], false);
}

#[test]
fn text_that_needs_escaping_comes_back_unchanged() {
    // The output line is written by hand: quotes, backslashes, control characters and
    // non-ASCII text in ids, names and reasons must come back exactly.
    let policy = "guards:\n  scope:\n    require_approval_functions: [\"send_*\"]\n  sensitive_data:\n    redact_on_modify: true\n";
    let odd_id = "a\"b\\c\u{1}\n\t\u{2028}é";
    let odd_name = "send_\u{e9}mail\"x\\";
    let input = [
        json!({"call_id": odd_id, "function_name": odd_name}).to_string(),
        json!({"call_id": "r", "function_name": "save", "arguments": {"note": "a\"b", "ssn": "123-45-6789"}})
            .to_string(),
    ]
    .join("\n");
    let (out, lines) = eval(policy, &input, &[]);
    assert!(out.status.success());
    assert_eq!(lines[0]["call_id"], odd_id);
    assert_eq!(lines[0]["function_name"], odd_name);
    assert_eq!(lines[0]["risk_score"], 0.7);
    assert_eq!(lines[0]["reasons"], json!([format!("Function '{odd_name}' needs approval (matches 'send_*')")]));
    let scope = lines[0]["guards"].as_array().unwrap().iter().find(|g| g["guard"] == "scope").unwrap();
    assert_eq!(scope["reason"], lines[0]["reasons"][0]);
    assert!(lines[0].get("modified_arguments").is_none());
    assert_eq!(lines[1]["decision"], "modify");
    assert_eq!(lines[1]["modified_arguments"]["note"], "a\"b");
    assert_ne!(lines[1]["modified_arguments"]["ssn"], "123-45-6789");
    assert_eq!(lines[1]["guards"].as_array().unwrap().len(), 2);
}

#[test]
fn effects_commit_before_the_next_line_and_only_for_calls_that_run() {
    let policy = "guards:\n  budget:\n    max_daily_spend: 1\n    warn_threshold: 0.5\n    default_cost: 0.4\n";
    let calls = (0..3)
        .map(|i| format!(r#"{{"function_name": "x", "call_id": "c{i}", "timestamp": 1795003200}}"#))
        .collect::<Vec<_>>()
        .join("\n");
    let decisions =
        |lines: &[Value]| lines.iter().map(|l| l["decision"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let (_, lines) = eval(policy, &calls, &["--clock", "replay"]);
    // 0.4 allowed; 0.8 passes 50%: approval refused, released; again 0.8: approval.
    assert_eq!(decisions(&lines), ["allow", "require_approval", "require_approval"]);
    let (_, lines) = eval(policy, &calls, &["--clock", "replay", "--approve-all"]);
    // The approved 0.4 counts: the third would reach 1.2.
    assert_eq!(decisions(&lines), ["allow", "require_approval", "deny"]);
}

#[test]
fn the_replay_clock_follows_timestamps() {
    let policy = "guards:\n  rate_limit:\n    max_calls_per_minute: 1\n    burst_threshold: null\n";
    let input = [
        r#"{"function_name": "a", "timestamp": 1795003200}"#,
        r#"{"function_name": "b", "timestamp": 1795003259}"#,
        r#"{"function_name": "c", "timestamp": 1795003261}"#,
    ]
    .join("\n");
    let (_, lines) = eval(policy, &input, &["--clock", "replay"]);
    let d: Vec<&str> = lines.iter().map(|l| l["decision"].as_str().unwrap()).collect();
    assert_eq!(d, ["allow", "deny", "allow"]);
}

#[test]
fn a_bad_policy_exits_2_and_a_missing_input_exits_1() {
    let (out, lines) = eval("guards:\n  nope: {}\n", r#"{"function_name": "x"}"#, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(lines.is_empty(), "no input is read");
    assert!(String::from_utf8(out.stderr).unwrap().contains("unknown guard type `nope`"));
    let (out, _) = eval("guards: {}\n", "", &["--input", "/nonexistent/calls.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn summary_goes_to_stderr() {
    let (out, lines) = eval(
        "guards:\n  scope:\n    deny_functions: [x]\n",
        "{\"function_name\": \"x\"}\n{\"function_name\": \"y\"}\n",
        &["--summary"],
    );
    assert_eq!(lines.len(), 2);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("calls: 2, executed: 1, invalid lines: 0") && err.contains("guard scope: allow 1, deny 1"),
        "{err}"
    );
}

#[test]
fn a_long_run_is_answered_in_order_across_batches() {
    // Many batches of lines pass between the reading, evaluating and writing threads: every
    // answer must still come in input order, and the counts follow that order.
    let policy = "guards:\n  budget:\n    max_daily_spend: 10\n    warn_threshold: 1.0\n    default_cost: 0.01\n";
    let input: String = (1..=2000u32)
        .map(|i| {
            if i % 7 == 0 {
                "{not json\n".to_owned()
            } else {
                format!("{{\"function_name\": \"x\", \"call_id\": \"c{i}\", \"timestamp\": 1795003200}}\n")
            }
        })
        .collect();
    let config = temp_file("long-run.yaml", policy);
    let mut child = bin()
        .args(["eval", "--config", config.to_str().unwrap(), "--clock", "replay"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Feed while the output is read, or both pipes fill up.
    let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2000);
    let mut allowed = 0;
    for (n, line) in (1..=2000u32).zip(&lines) {
        if n % 7 == 0 {
            assert_eq!(line["line"], n, "{line}");
        } else {
            assert_eq!(line["call_id"], format!("c{n}"), "{line}");
            if line["decision"] == "allow" {
                allowed += 1;
                assert!(allowed <= 1000, "{line}");
            } else {
                assert_eq!(allowed, 1000, "denied before the budget ran out: {line}");
            }
        }
    }
    assert_eq!(allowed, 1000);
}
