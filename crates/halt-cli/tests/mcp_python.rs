//! `agenthalt mcp-proxy` driven by a client nobody here wrote: the Python `mcp` SDK (PyPI), in
//! front of the reference `@modelcontextprotocol/server-filesystem`, on both protocol versions,
//! over stdio and over Streamable HTTP (`--listen`).
//! With `mcp.ask_client`, the SDK's elicitation callback is the user: on 2025-11-25 it answers
//! `elicitation/create`, on 2026-07-28 the SDK drives the `input_required` round and sends the
//! proxy's signed `requestState` back.
//!
//! The SDK and the servers are found by [`halt_testing::mcp_servers`]: under `CI=true` a missing
//! one fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use halt_testing::mcp_servers::McpServers;
use serde_json::Value;

const POLICY: &str = r#"
mcp:
  ask_client: true
  hide_denied_tools: true
guards:
  scope:
    deny_functions: [move_file]
  rules:
    rules:
      - functions: [write_file]
        where: {field: path, path: {glob: ["**/protected/**"]}}
        decision: deny
        reason: "{rule}: the folder is protected"
      - functions: [write_file]
        where: {field: path, path: {glob: ["**/outbox/**"]}}
        decision: require_approval
        reason: "{rule}: writing to the outbox sends it"
"#;

fn run(servers: &McpServers, sdk: &Path, mode: &str, http: bool) {
    let dir = std::env::temp_dir().join(format!("agenthalt-mcp-python-{}-{mode}-{http}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["protected", "outbox"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let root = dir.canonicalize().unwrap();
    std::fs::write(root.join("notes.txt"), "the quarterly notes").unwrap();
    std::fs::write(root.join("protected/keep.txt"), "original").unwrap();
    let policy = root.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();

    let server = servers.script("server-filesystem");
    let proxy: Vec<&OsStr> = vec![
        "--config".as_ref(),
        policy.as_os_str(),
        "--".as_ref(),
        "node".as_ref(),
        server.as_os_str(),
        root.as_os_str(),
    ];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_client.py");
    let mut python = Command::new("python3");
    python.env("PYTHONPATH", sdk).arg(script).arg(mode).arg(&root);
    let listening = http.then(|| common::Listening::start(&proxy));
    match &listening {
        Some(l) => python.arg(&l.url),
        None => python.arg(env!("CARGO_BIN_EXE_agenthalt")).arg("mcp-proxy").args(&proxy),
    };
    let out = python.output().unwrap();
    drop(listening);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{mode}, http {http}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();

    let wanted = if mode == "legacy" { "2025-11-25" } else { "2026-07-28" };
    assert_eq!(report["protocol"], wanted, "{report}");
    let tools: Vec<&str> = report["tools"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(tools.contains(&"write_file") && !tools.contains(&"move_file"), "{mode}: {tools:?}");
    assert_eq!(report["read"]["error"], false, "{report}");
    assert!(report["read"]["text"].as_str().unwrap().contains("quarterly notes"));
    assert_eq!(report["protected"]["error"], true);
    assert!(report["protected"]["text"].as_str().unwrap().contains("protected"));
    assert_eq!(std::fs::read_to_string(root.join("protected/keep.txt")).unwrap(), "original");
    // The user (the SDK's elicitation callback) was asked twice: it approved one write and
    // refused the other.
    assert_eq!(report["asked"], 2, "{report}");
    assert_eq!(report["approved"]["error"], false, "{report}");
    assert_eq!(std::fs::read_to_string(root.join("outbox/approved.txt")).unwrap(), "sent");
    assert_eq!(report["refused"]["error"], true);
    assert!(report["refused"]["text"].as_str().unwrap().contains("refused by the user"), "{report}");
    assert!(!root.join("outbox/other.txt").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_python_sdk_works_through_the_proxy_on_both_protocol_versions_and_transports() {
    let Some(servers) = McpServers::find() else { return };
    let Some(sdk) = servers.python_sdk() else { return };
    for http in [false, true] {
        for mode in ["legacy", "auto"] {
            run(&servers, &sdk, mode, http);
        }
    }
}
