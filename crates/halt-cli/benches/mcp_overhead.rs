//! What `agenthalt mcp-proxy` adds to a `tools/call` round trip over stdio: an rmcp client calls
//! the reference server-everything's `echo` tool directly and through the proxy (the release
//! binary, a policy with scope, rules and sensitive-data guards), in interleaved blocks, and
//! prints the percentiles of each.
//!
//! `cargo bench -p halt-cli --bench mcp_overhead` (the reference servers installed as `.ci/run`
//! installs them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr, reason = "a bench")]

use std::time::{Duration, Instant};

use halt_testing::mcp_servers::McpServers;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use serde_json::{Map, Value};

const CALLS: usize = 1_000;
const BLOCK: usize = 100;

const POLICY: &str = r#"
guards:
  scope:
    deny_functions: [get-env]
  rules:
    rules:
      - functions: [echo]
        where: {field: message, regex: "^wire "}
        decision: require_approval
  sensitive_data:
    blocked_patterns: [api_key]
"#;

async fn client(command: std::process::Command) -> RunningService<RoleClient, ()> {
    let transport = TokioChildProcess::new(tokio::process::Command::from(command)).unwrap();
    ().serve(transport).await.unwrap()
}

/// Times `n` echo calls, each with a message of its own (`from` on).
async fn block(client: &RunningService<RoleClient, ()>, from: usize, n: usize, times: &mut Vec<Duration>) {
    for i in from..from + n {
        let mut args = Map::new();
        args.insert("message".into(), Value::String(format!("hello number {i}")));
        let params = CallToolRequestParams::new("echo").with_arguments(args);
        let start = Instant::now();
        let result = client.peer().call_tool(params).await.unwrap();
        times.push(start.elapsed());
        assert_ne!(result.is_error, Some(true), "{result:?}");
    }
}

/// The `per`-th percentile of sorted times.
fn percentile(sorted: &[Duration], per: usize) -> Duration {
    sorted[(sorted.len() - 1) * per / 100]
}

fn report(name: &str, times: &mut [Duration]) -> Duration {
    times.sort();
    let (p50, p90, p99) = (percentile(times, 50), percentile(times, 90), percentile(times, 99));
    println!("{name:>8}: {} calls, p50 {p50:?}, p90 {p90:?}, p99 {p99:?}", times.len());
    p50
}

fn main() {
    let Some(servers) = McpServers::find() else {
        eprintln!("the reference MCP servers are not installed: nothing measured");
        return;
    };
    let dir = std::env::temp_dir().join(format!("agenthalt-mcp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let direct = client(servers.command("server-everything", &[])).await;
        let mut proxied = std::process::Command::new(env!("CARGO_BIN_EXE_agenthalt"));
        proxied.args(["mcp-proxy", "--config"]).arg(&policy).args(["--", "node"]);
        proxied.arg(servers.script("server-everything")).stderr(std::process::Stdio::null());
        let proxied = client(proxied).await;
        let (mut plain, mut through) = (Vec::with_capacity(CALLS), Vec::with_capacity(CALLS));
        // Warm both up (JIT, allocator, first listing), then alternate blocks so that a slow
        // spell of the machine falls on both alike.
        block(&direct, 0, 50, &mut Vec::new()).await;
        block(&proxied, 0, 50, &mut Vec::new()).await;
        for b in 0..CALLS / BLOCK {
            block(&direct, b * BLOCK, BLOCK, &mut plain).await;
            block(&proxied, b * BLOCK, BLOCK, &mut through).await;
        }
        let a = report("direct", &mut plain);
        let b = report("proxied", &mut through);
        println!("the proxy adds {:?} at p50", b.saturating_sub(a));
        direct.cancel().await.unwrap();
        proxied.cancel().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
