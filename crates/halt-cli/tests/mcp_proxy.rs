//! `agenthalt mcp-proxy` as an MCP client starts it, in front of the reference
//! `@modelcontextprotocol/server-everything` (npm, run with Node.js), spoken to line by line:
//! hostile input never crashes it or passes a call through, and a server that dies mid-call
//! gives the client an error and ends the proxy.
//!
//! The servers are found by [`halt_testing::mcp_servers`]: under `CI=true` a missing one fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use halt_testing::mcp_servers::McpServers;
use serde_json::{Value, json};

fn everything() -> Option<PathBuf> {
    McpServers::find().map(|s| s.script("server-everything"))
}

struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// What the proxy (and its server) said on standard error.
    said: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: PathBuf,
}

impl Session {
    fn start(script: &PathBuf) -> Self {
        Self::with_policy(script, "")
    }

    /// Started with the test policy and `more` (YAML sections) after it.
    fn with_policy(script: &PathBuf, more: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("agenthalt-mcp-cli-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("policy.yaml");
        std::fs::write(
            &policy,
            format!("guards:\n  scope:\n    deny_functions: [get-env]\n  sensitive_data:\n    blocked_patterns: [api_key]\n{more}"),
        )
        .unwrap();
        let mut child = common::bin()
            .args(["mcp-proxy", "--config"])
            .arg(&policy)
            .args(["--", "node"])
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let said: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let stderr = child.stderr.take().unwrap();
        let keep = std::sync::Arc::clone(&said);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
            }
        });
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Self { child, stdin, lines, said, _dir: dir };
        let init = s.request(
            1,
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "line-client", "version": "1"}}),
        );
        assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
        s.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
        s
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The answer to request `id`, skipping notifications.
    fn answer(&self, id: i64) -> Value {
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(20)).expect("no answer in time");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    }

    fn request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string());
        self.answer(id)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

#[test]
fn hostile_input_is_refused_and_the_proxy_lives_on() {
    let Some(script) = everything() else { return };
    let mut s = Session::start(&script);

    // Not JSON; not JSON-RPC; an unknown method: none of them ends the proxy.
    s.send("{this is not json");
    s.send(r#"{"jsonrpc": "2.0", "id": 2}"#);
    let unknown = s.request(3, "tools/explode", json!({}));
    assert!(unknown["error"].is_object(), "{unknown}");

    // Arguments that are not an object: an error, and the server never runs the tool.
    for (id, args) in [(4, json!("rm -rf /")), (5, json!([1, 2])), (6, json!(7))] {
        let answer = s.request(id, "tools/call", json!({"name": "echo", "arguments": args}));
        let refused = answer["error"].is_object() || answer["result"]["isError"] == true;
        assert!(refused, "{answer}");
    }

    // A denied tool is an error result naming the guard, never the arguments.
    let denied = s.request(7, "tools/call", json!({"name": "get-env", "arguments": {"note": "AKIAZ7Q3KJ2LMN4PRS5T"}}));
    assert_eq!(denied["result"]["isError"], true, "{denied}");
    assert!(!denied.to_string().contains("AKIAZ7Q3"), "{denied}");
    // A secret in the arguments: refused (the policy does not redact).
    let secret = s.request(8, "tools/call", json!({"name": "echo", "arguments": {"message": "AKIAZ7Q3KJ2LMN4PRS5T"}}));
    assert_eq!(secret["result"]["isError"], true, "{secret}");
    assert!(!secret.to_string().contains("AKIAZ7Q3"), "{secret}");

    // And it still answers.
    let echo = s.request(9, "tools/call", json!({"name": "echo", "arguments": {"message": "still here"}}));
    assert!(echo.to_string().contains("still here"), "{echo}");
    assert!(s.child.try_wait().unwrap().is_none(), "the proxy is running");
}

/// The pids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

#[test]
fn a_server_dying_mid_call_is_an_error_and_ends_the_proxy() {
    let Some(script) = everything() else { return };
    let mut s = Session::start(&script);
    let call = json!({"jsonrpc": "2.0", "id": 20, "method": "tools/call",
        "params": {"name": "trigger-long-running-operation", "arguments": {"duration": 30, "steps": 30}}});
    s.send(&call.to_string());
    std::thread::sleep(Duration::from_millis(500));
    let server = children(s.child.id());
    assert_eq!(server.len(), 1, "one server process: {server:?}");
    Command::new("kill").args(["-9", &server[0].to_string()]).status().unwrap();
    let answer = s.answer(20);
    assert!(answer["error"].is_object() || answer["result"]["isError"] == true, "{answer}");
    let mut status = None;
    for _ in 0..100 {
        status = s.child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status.and_then(|s| s.code()), Some(1), "the proxy exits 1 when its server does");
}

/// Waits for the proxy to have a server process other than `not`.
fn server_of(s: &Session, not: Option<u32>) -> u32 {
    for _ in 0..200 {
        if let [pid] = children(s.child.id())[..]
            && Some(pid) != not
        {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no server process");
}

fn exit_code(s: &mut Session, within: Duration) -> Option<i32> {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if let Some(status) = s.child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn with_restart_server_a_dead_server_is_started_again_within_limits() {
    let Some(script) = everything() else { return };
    let mut s = Session::with_policy(&script, "mcp:\n  restart_server: true\n");
    let first = server_of(&s, None);
    let call = json!({"jsonrpc": "2.0", "id": 30, "method": "tools/call",
        "params": {"name": "trigger-long-running-operation", "arguments": {"duration": 30, "steps": 30}}});
    s.send(&call.to_string());
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill").args(["-9", &first.to_string()]).status().unwrap();
    let answer = s.answer(30);
    assert!(answer["error"].is_object() || answer["result"]["isError"] == true, "{answer}");

    // A new server answers the next calls, under the same policy.
    let second = server_of(&s, Some(first));
    let echo = s.request(31, "tools/call", json!({"name": "echo", "arguments": {"message": "again"}}));
    assert!(echo.to_string().contains("again"), "{echo}");
    let denied = s.request(32, "tools/call", json!({"name": "get-env", "arguments": {}}));
    assert_eq!(denied["result"]["isError"], true, "{denied}");
    assert!(s.child.try_wait().unwrap().is_none(), "the proxy is running");
    let said = s.said.lock().unwrap().join("\n");
    assert!(said.contains("agenthalt: info: the MCP server exited and was started again"), "{said}");

    // A server that keeps dying is given up on: the proxy exits 1.
    let mut pid = second;
    // One restart is spent; the others go now.
    for _ in 1..halt_mcp::MAX_RESTARTS {
        Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        match exit_code(&mut s, Duration::from_millis(200)) {
            Some(code) => return assert_eq!(code, 1),
            None => pid = server_of(&s, Some(pid)),
        }
    }
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert_eq!(exit_code(&mut s, Duration::from_secs(20)), Some(1), "the proxy gave up on its server");
}

#[test]
fn a_stdio_connection_is_one_session() {
    let Some(script) = everything() else { return };
    let budget = "  budget:\n    max_session_spend: 2.5\n    warn_threshold: 0.99\n    cost_estimator: {echo: 1.0}\n";
    let mut s = Session::with_policy(&script, budget);
    for id in [40, 41] {
        let echo = s.request(id, "tools/call", json!({"name": "echo", "arguments": {"message": "spend"}}));
        assert!(echo.to_string().contains("Echo: spend"), "{echo}");
    }
    let spent = s.request(42, "tools/call", json!({"name": "echo", "arguments": {"message": "spend"}}));
    assert_eq!(spent["result"]["isError"], true, "{spent}");
    assert!(spent.to_string().contains("Session budget"), "{spent}");
}
