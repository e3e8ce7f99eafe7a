//! `agenthalt audit verify`, `agenthalt audit query` and `agenthalt eval --audit`, end to end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{bin, eval, temp_file};

const POLICY: &str = "
guards:
  scope:
    deny_functions: [\"delete_*\"]
";

fn audited(name: &str, input: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("agenthalt-cli-audit-{}-{name}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (out, _) = eval(POLICY, input, &["--audit", path.to_str().unwrap(), "--clock", "replay"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    path
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

const CALLS: &str = "{\"call_id\":\"a\",\"function_name\":\"read_file\",\"agent_id\":\"bot\",\"timestamp\":1800000000}
{\"call_id\":\"b\",\"function_name\":\"delete_file\",\"agent_id\":\"bot\",\"timestamp\":1800000010,\"arguments\":{\"path\":\"/tmp/x\",\"note\":\"ssn 123-45-6789\"}}
{\"call_id\":\"c\",\"function_name\":\"DELETE_user\",\"agent_id\":\"eve\",\"timestamp\":1800000020}
{\"call_id\":\"d\",\"function_name\":\"read_file\",\"agent_id\":\"eve\",\"timestamp\":1800000030}
";

#[test]
fn eval_writes_an_audit_that_verifies_and_redacts() {
    let path = audited("ok", CALLS);
    let out = run(&["audit", "verify", path.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("OK: 5 entries in 1 file(s), chain "), "a policy load and four evaluations: {text}");
    let raw = std::fs::read_to_string(&path).unwrap();
    assert!(!raw.contains("123-45-6789"));
    assert!(raw.contains("\"kind\":\"policy_load\""));
}

#[test]
fn verify_reports_where_and_how_a_chain_broke_with_exit_1() {
    let path = audited("broken", CALLS);
    let lines: Vec<String> = std::fs::read_to_string(&path).unwrap().lines().map(str::to_owned).collect();
    let write = |ls: &[String]| std::fs::write(&path, ls.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let p = path.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            {
                let mut l = lines.clone();
                l[2] = l[2].replace("\"deny\"", "\"allow\"");
                l
            },
            format!("{p}:3: edited"),
        ),
        (
            {
                let mut l = lines.clone();
                l.remove(2);
                l
            },
            format!("{p}:3: dropped: 1 entry missing"),
        ),
        (
            {
                let mut l = lines.clone();
                l.swap(2, 3);
                l
            },
            format!("{p}:3: reordered"),
        ),
        (
            {
                let mut l = lines.clone();
                l[1] = "not json".into();
                l
            },
            format!("{p}:2: not an audit entry"),
        ),
    ];
    for (tampered, expected) in cases {
        write(&tampered);
        let out = run(&["audit", "verify", &p]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with(&format!("agenthalt: {expected}")), "{err}");
    }
    let mut text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    text.truncate(text.len() - 10);
    std::fs::write(&path, text).unwrap();
    let out = run(&["audit", "verify", &p]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains(":5: truncated"));

    std::fs::write(&path, "").unwrap();
    let out = run(&["audit", "verify", &p]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains(":0: the file is empty"));

    // Another run's file after this one's first line: another chain.
    let other = audited("other", CALLS);
    let mine = audited("mine", CALLS);
    let mine_lines: Vec<String> = std::fs::read_to_string(&mine).unwrap().lines().map(str::to_owned).collect();
    let other_lines: Vec<String> = std::fs::read_to_string(&other).unwrap().lines().map(str::to_owned).collect();
    let mut mixed = vec![mine_lines[0].clone()];
    mixed.extend(other_lines[1..].iter().cloned());
    std::fs::write(&mine, mixed.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let out = run(&["audit", "verify", mine.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains(":2: from another chain"));

    let out = run(&["audit", "verify", "/nonexistent/audit.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains("cannot be read"));
}

#[test]
fn query_selects_and_prints_jsonl_or_a_table() {
    let path = audited("query", CALLS);
    let p = path.to_str().unwrap();
    let out = run(&["audit", "query", p, "--decision", "deny", "--function", "delete_*"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["call_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["b", "c"]);
    let out = run(&["audit", "query", p, "--agent", "eve", "--since", "1800000015", "--until", "1800000025"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    let out = run(&["audit", "query", p, "--limit", "1", "--table"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().next().unwrap().contains("function"));
    assert!(table.contains("read_file") && table.contains("2027-01-15 08:00:30"), "{table}");
    let out = run(&["audit", "query", p, "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--since: `yesterday` is neither"));
    let out = run(&["audit", "query", p, "--decision", "maybe"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_shows_the_audit_section() {
    let policy = temp_file(
        "audit-check.yaml",
        "audit:\n  file: {path: /tmp/agenthalt-audit-check.jsonl, rotate_bytes: 1048576}\n  required: true\n",
    );
    let out = run(&["check", policy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8(out.stdout).unwrap().contains("  audit: file /tmp/agenthalt-audit-check.jsonl, required\n")
    );
    let bad = temp_file("audit-bad.yaml", "audit:\n  tracing: false\n");
    let out = run(&["check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("names no sink"));
}
