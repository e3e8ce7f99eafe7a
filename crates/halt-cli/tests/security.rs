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
