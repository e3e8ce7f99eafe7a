//! `agenthalt mcp-proxy --listen … --upstream …`: Streamable HTTP on both sides, in front of the
//! reference server-everything serving HTTP, spoken to with raw HTTP requests. Requests whose
//! `Origin` or `Host` is not allowed, or whose MCP headers contradict their body, are refused
//! before any tool runs; the calls that pass are decided by the policy, each in its MCP session.
//!
//! The servers are found by [`halt_testing::mcp_servers`]: under `CI=true` a missing one fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod common;

use std::ffi::OsStr;

use halt_testing::mcp_servers::McpServers;
use serde_json::{Value, json};

const POLICY: &str = r#"
mcp:
  allowed_origins: ["http://localhost:*"]
guards:
  budget:
    max_session_spend: 2.5
    warn_threshold: 0.99
    cost_estimator: {echo: 1.0}
  scope:
    deny_functions: [get-env]
  rules:
    rules:
      - functions: [echo]
        where: {field: message, regex: "^wire "}
        decision: deny
        reason: "{rule}: no wires"
"#;

/// The JSON-RPC message in a response, whether sent as JSON or as one SSE event.
async fn message(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    let json = text.lines().filter_map(|l| l.strip_prefix("data: ")).find(|d| !d.trim().is_empty()).unwrap_or(&text);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn post(http: &reqwest::Client, url: &str, body: &Value) -> reqwest::RequestBuilder {
    http.post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string())
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
}

/// A 2026-07-28 `tools/call`, with the metadata that version puts in every request.
fn modern_call(id: u64, tool: &str, arguments: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
    "name": tool, "arguments": arguments,
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    }}})
}

fn text(message: &Value) -> String {
    message["result"]["content"].as_array().into_iter().flatten().filter_map(|c| c["text"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_on_both_sides_checks_the_headers_and_decides_the_calls() {
    let Some(servers) = McpServers::find() else { return };
    let everything = common::EverythingHttp::start(&servers);
    let dir = std::env::temp_dir().join(format!("agenthalt-mcp-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let proxy = common::Listening::start(&[
        "--config".as_ref(),
        policy.as_os_str(),
        "--upstream".as_ref(),
        OsStr::new(&everything.url),
    ]);
    let (http, url) = (reqwest::Client::new(), proxy.url.as_str());

    // A page on another site, or a name rebound to this address, is refused.
    let evil = post(&http, url, &initialize()).header("origin", "http://evil.example").send().await.unwrap();
    assert_eq!(evil.status(), 403);
    let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
    let rebound = post(&http, url, &initialize()).header("host", format!("evil.example:{port}")).send().await.unwrap();
    assert_eq!(rebound.status(), 403);

    // An allowed page, or a program (no Origin), opens a 2025-11-25 session.
    let opened = post(&http, url, &initialize()).header("origin", "http://localhost:5173").send().await.unwrap();
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let init = message(opened).await;
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-servers/everything", "{init}");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let sent = post(&http, url, &initialized).header("mcp-session-id", &session).send().await.unwrap();
    assert!(sent.status().is_success());
    let call = |id: u64, tool: &str, args: Value| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}});
    let legacy = |body: Value| {
        post(&http, url, &body).header("mcp-session-id", &session).header("mcp-protocol-version", "2025-11-25").send()
    };
    let echoed = message(legacy(call(2, "echo", json!({"message": "hello"}))).await.unwrap()).await;
    assert_eq!(text(&echoed), "Echo: hello", "{echoed}");
    let wired = message(legacy(call(3, "echo", json!({"message": "wire 100"}))).await.unwrap()).await;
    assert_eq!(wired["result"]["isError"], true, "{wired}");
    assert!(text(&wired).contains("no wires") && !text(&wired).contains("100"), "{wired}");
    let env = message(legacy(call(4, "get-env", json!({}))).await.unwrap()).await;
    assert_eq!(env["result"]["isError"], true, "{env}");
    assert!(!text(&env).contains("PATH"), "the server never ran: {env}");

    // 2026-07-28, stateless: the routing headers must say what the body says.
    let modern = |body: &Value, method: &str, name: &str| {
        post(&http, url, body)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method.to_owned())
            .header("mcp-name", name.to_owned())
            .send()
    };
    let ok = modern(&modern_call(5, "echo", &json!({"message": "hi"})), "tools/call", "echo").await.unwrap();
    assert_eq!(ok.status(), 200);
    let ok = message(ok).await;
    assert_eq!(text(&ok), "Echo: hi", "{ok}");
    assert_eq!(ok["result"]["resultType"], "complete", "{ok}");
    // The headers name a harmless tool, the body the one the policy denies: refused unrun.
    let get_env = modern_call(6, "get-env", &json!({}));
    for (method, name) in [("tools/call", "echo"), ("tools/list", "get-env")] {
        let refused = modern(&get_env, method, name).await.unwrap();
        assert_eq!(refused.status(), 400, "{method} {name}");
        let refused = message(refused).await;
        assert!(refused["error"]["message"].as_str().unwrap().contains("does not match"), "{refused}");
    }
    let bare = post(&http, url, &get_env).header("mcp-protocol-version", "2026-07-28").send().await.unwrap();
    assert_eq!(bare.status(), 400, "the headers are required");
    // Matching headers: the policy decides, and denies.
    let denied = message(modern(&get_env, "tools/call", "get-env").await.unwrap()).await;
    assert_eq!(denied["result"]["isError"], true, "{denied}");

    // Malformed bodies are answered, never crash the proxy.
    for body in [
        "{",
        "[]",
        "null",
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":[1]}}"#,
    ] {
        let r = http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error() || r.status().is_success(), "{body}: {}", r.status());
    }
    let still = message(legacy(call(10, "echo", json!({"message": "still here"}))).await.unwrap()).await;
    assert_eq!(text(&still), "Echo: still here", "{still}");

    // The MCP session is the call's session: two echoes spent this one's budget, another
    // session has its own.
    let spent = message(legacy(call(11, "echo", json!({"message": "one more"}))).await.unwrap()).await;
    assert_eq!(spent["result"]["isError"], true, "{spent}");
    assert!(text(&spent).contains("Session budget"), "{spent}");
    // A 2026-07-28 request is in no session, whatever session it names.
    let named = post(&http, url, &modern_call(13, "echo", &json!({"message": "not yours"})))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    let named = message(named).await;
    assert_ne!(named["result"]["isError"], true, "{named}");
    let other = post(&http, url, &initialize()).send().await.unwrap();
    let other_session = other.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    assert_ne!(other_session, session);
    let sent = post(&http, url, &initialized).header("mcp-session-id", &other_session).send().await.unwrap();
    assert!(sent.status().is_success());
    let fresh = post(&http, url, &call(12, "echo", json!({"message": "fresh"})))
        .header("mcp-session-id", &other_session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    let fresh = message(fresh).await;
    assert_eq!(text(&fresh), "Echo: fresh", "{fresh}");
    let _ = std::fs::remove_dir_all(&dir);
}
