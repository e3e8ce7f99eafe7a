//! Argument-rule scenarios through `agenthalt eval`: the example policy and trace decide as
//! expected, call by call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod common;

use common::bin;

#[test]
fn the_rules_example_decides_each_call_as_expected() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = bin()
        .args(["eval", "--clock", "replay", "--config"])
        .arg(format!("{root}/examples/rules-policy.yaml"))
        .arg("--input")
        .arg(format!("{root}/examples/rules-calls.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<(String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["call_id"].as_str().unwrap().to_owned(), v["decision"].as_str().unwrap().to_owned())
        })
        .collect();
    let expected = [
        ("w1", "allow"),
        ("w2", "deny"),
        ("w3", "deny"),
        ("h1", "allow"),
        ("h2", "deny"),
        ("h3", "deny"),
        ("e1", "allow"),
        ("e2", "require_approval"),
        ("r1", "allow"),
        ("r2", "deny"),
        ("r3", "deny"),
        ("s1", "allow"),
        ("s2", "deny"),
        ("c1", "deny"),
        ("c2", "allow"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
    assert_eq!(got, expected);
}
