//! The proxy in front of the reference MCP servers from npm (`@modelcontextprotocol/server-filesystem`
//! and `server-everything`, run with the machine's Node.js), driven by an rmcp client speaking
//! either protocol version.
//!
//! The servers are looked for under `$AGENTHALT_MCP_SERVERS` (default `~/.cache/agenthalt-mcp`,
//! where `.ci/run` installs them). Without them a test says so and passes, but under `CI=true`
//! it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test code fails loudly"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use halt_config::PolicyLoader;
use halt_core::{Clock, StateStore, SystemClock};
use halt_hil::{Broker, Filter, Verdict};
use halt_mcp::{Proxy, ProxyOptions};
use rmcp::model::{CallToolRequestParams, CallToolResult, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, RoleClient, RunningService, serve_client_with_lifecycle};
use serde_json::{Value, json};

/// The folder the npm packages are installed in, or `None` (outside CI) when they are not.
fn servers() -> Option<PathBuf> {
    let dir = std::env::var_os("AGENTHALT_MCP_SERVERS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/agenthalt-mcp"),
        PathBuf::from,
    );
    let present = ["server-filesystem", "server-everything"]
        .iter()
        .all(|s| dir.join("node_modules/@modelcontextprotocol").join(s).join("package.json").exists());
    if present {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the reference MCP servers are missing from {}: `npm install --prefix {0} @modelcontextprotocol/server-filesystem @modelcontextprotocol/server-everything`",
        dir.display()
    );
    eprintln!("skipped: the reference MCP servers are not installed in {}", dir.display());
    None
}

fn server_command(servers: &Path, package: &str, args: &[&Path]) -> tokio::process::Command {
    let script = servers.join("node_modules/@modelcontextprotocol").join(package).join("dist/index.js");
    let mut command = tokio::process::Command::new("node");
    command.arg(script).args(args).stderr(std::process::Stdio::null());
    command
}

const POLICY: &str = r#"
guards:
  scope:
    deny_functions: [create_directory, move_file]
  rules:
    rules:
      - functions: [write_file, edit_file]
        where: {field: path, path: {glob: ["**/protected/**"]}}
        decision: deny
        reason: "{rule}: the folder is protected"
      - functions: [echo]
        where: {field: message, regex: "^wire "}
        decision: require_approval
  sensitive_data:
    blocked_patterns: [api_key]
    redact_on_modify: REDACT
engine:
  approval_timeout_seconds: 3
approvals:
  timeout_seconds: 3
"#;

/// A proxy for `policy` in front of `command`, and a client of it; with the broker deciding
/// the proxy's approvals.
async fn connect(
    redact: bool,
    hide: bool,
    lifecycle: ClientLifecycleMode,
    command: tokio::process::Command,
) -> (RunningService<RoleClient, ()>, Broker) {
    let text = POLICY.replace("REDACT", if redact { "true" } else { "false" });
    let policy = PolicyLoader::new().load_str(&text, "test").unwrap();
    let store: Arc<dyn StateStore> = Arc::new(halt_store_memory::MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let broker = policy.broker(Arc::clone(&store), Arc::clone(&clock)).unwrap();
    let engine =
        policy.engine_builder().store_arc(store).clock_arc(clock).approval_handler(broker.clone()).build().unwrap();
    let options = ProxyOptions {
        agent_id: Some("assistant".into()),
        hide_denied_tools: hide,
        visibility_guards: policy.guards.iter().filter(|g| g.kind == "scope").map(|g| Arc::clone(&g.guard)).collect(),
    };
    let proxy = Proxy::spawn(engine, options, command).await.unwrap();
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    tokio::spawn(proxy.serve(tokio::io::split(theirs)));
    let client = serve_client_with_lifecycle((), tokio::io::split(ours), lifecycle).await.unwrap();
    (client, broker)
}

fn legacy() -> ClientLifecycleMode {
    ClientLifecycleMode::Initialize
}

fn stateless() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] }
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else { panic!("arguments must be an object") };
    client.peer().call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args)).await.unwrap()
}

fn text(result: &CallToolResult) -> String {
    let json = serde_json::to_value(result).unwrap();
    let texts = json["content"].as_array().cloned().unwrap_or_default();
    texts.iter().filter_map(|c| c["text"].as_str()).collect::<Vec<_>>().join("\n")
}

fn folder() -> (tempfile_dir::Dir, PathBuf) {
    let dir = tempfile_dir::Dir::new();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("protected")).unwrap();
    std::fs::write(root.join("notes.txt"), "the quarterly notes").unwrap();
    std::fs::write(root.join("protected/keep.txt"), "original").unwrap();
    (dir, root)
}

/// A temporary folder, removed when dropped (no dependency for one type).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub(crate) struct Dir(PathBuf);

    impl Dir {
        pub(crate) fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("agenthalt-mcp-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filesystem_server_reads_and_refuses_as_the_policy_says() {
    let Some(servers) = servers() else { return };
    for lifecycle in [legacy(), stateless()] {
        let (_dir, root) = folder();
        let (client, _) =
            connect(false, true, lifecycle, server_command(&servers, "server-filesystem", &[&root])).await;

        // Reading in an allowed folder works.
        let path = root.join("notes.txt");
        let read = call(&client, "read_text_file", json!({"path": path})).await;
        assert_ne!(read.is_error, Some(true), "{}", text(&read));
        assert!(text(&read).contains("quarterly notes"), "{}", text(&read));

        // A write into the protected folder is refused, and the file is unchanged on disk.
        let kept = root.join("protected/keep.txt");
        let write = call(&client, "write_file", json!({"path": kept, "content": "overwritten"})).await;
        assert_eq!(write.is_error, Some(true));
        assert!(text(&write).contains("protected"), "{}", text(&write));
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "original");
        // Spelled another way, the path is the same folder.
        let sneaky = format!("{}/./notes/../protected//keep.txt", root.display());
        let write = call(&client, "write_file", json!({"path": sneaky, "content": "overwritten"})).await;
        assert_eq!(write.is_error, Some(true), "{}", text(&write));
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "original");

        // A write carrying an AWS key is denied (the policy does not redact), and not written.
        let leaked = root.join("leak.txt");
        let content = "aws_access_key_id = AKIAZ7Q3KJ2LMN4PRS5T";
        let write = call(&client, "write_file", json!({"path": leaked, "content": content})).await;
        assert_eq!(write.is_error, Some(true));
        assert!(!text(&write).contains("AKIA"), "a reason never echoes the value: {}", text(&write));
        assert!(!leaked.exists());

        // The tools the scope guard denies are not listed; the others are.
        let listed = client.peer().list_all_tools().await.unwrap();
        let names: Vec<&str> = listed.iter().map(|t| t.name.as_ref()).collect();
        assert!(names.contains(&"read_text_file") && names.contains(&"write_file"), "{names:?}");
        assert!(!names.contains(&"create_directory") && !names.contains(&"move_file"), "{names:?}");
        // Called anyway, a hidden tool is refused.
        let made = call(&client, "create_directory", json!({"path": root.join("new")})).await;
        assert_eq!(made.is_error, Some(true));
        assert!(!root.join("new").exists());
        client.cancel().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_written_redacted_when_the_policy_redacts() {
    let Some(servers) = servers() else { return };
    let (_dir, root) = folder();
    let (client, _) = connect(true, false, legacy(), server_command(&servers, "server-filesystem", &[&root])).await;
    let path = root.join("config.txt");
    let write =
        call(&client, "write_file", json!({"path": path, "content": "key AKIAZ7Q3KJ2LMN4PRS5T for the backups"})).await;
    assert_ne!(write.is_error, Some(true), "{}", text(&write));
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert_eq!(on_disk, "key [REDACTED:aws_key] for the backups");
    // Without hiding, every tool is listed.
    let names: Vec<String> = client.peer().list_all_tools().await.unwrap().iter().map(|t| t.name.to_string()).collect();
    assert!(names.iter().any(|n| n == "create_directory"), "{names:?}");
    client.cancel().await.unwrap();
}

/// Decides the first pending approval, once there is one.
async fn decide_first(broker: &Broker, verdict: Verdict) -> halt_hil::Approval {
    for _ in 0..100 {
        let pending = Filter { state: Some(halt_hil::ApprovalState::Pending), ..Filter::default() };
        if let Some(a) = broker.list(&pending).await.unwrap().into_iter().next() {
            broker.decide(&a.id, verdict, "ops-lead", None).await.unwrap();
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no approval was asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_through_the_broker_bind_to_the_call() {
    let Some(servers) = servers() else { return };
    for lifecycle in [legacy(), stateless()] {
        let (client, broker) =
            connect(false, false, lifecycle, server_command(&servers, "server-everything", &[])).await;

        // An ordinary echo runs.
        let plain = call(&client, "echo", json!({"message": "hello"})).await;
        assert!(text(&plain).contains("hello"), "{}", text(&plain));

        // One that needs approval runs once approved through the broker.
        let asked = call(&client, "echo", json!({"message": "wire 100 to acme"}));
        let (answer, approval) = tokio::join!(asked, decide_first(&broker, Verdict::Approve));
        assert_ne!(answer.is_error, Some(true), "{}", text(&answer));
        assert!(text(&answer).contains("wire 100 to acme"), "{}", text(&answer));
        assert_eq!(approval.function, "echo");

        // The approval was for that call: other arguments ask again, and time out unanswered.
        let other = call(&client, "echo", json!({"message": "wire 9000 to acme"})).await;
        assert_eq!(other.is_error, Some(true));
        assert!(text(&other).contains("approval"), "{}", text(&other));

        // A refusal is an error result.
        let asked = call(&client, "echo", json!({"message": "wire 5 to acme"}));
        let (answer, _) = tokio::join!(asked, decide_first(&broker, Verdict::Deny));
        assert_eq!(answer.is_error, Some(true));
        assert!(text(&answer).contains("refused"), "{}", text(&answer));
        client.cancel().await.unwrap();
    }
}
