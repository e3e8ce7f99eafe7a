//! The proxy in front of the reference MCP servers from npm (`@modelcontextprotocol/server-filesystem`
//! and `server-everything`, run with the machine's Node.js), driven by an rmcp client speaking
//! either protocol version.
//!
//! The servers are found by [`halt_testing::mcp_servers`]: under `CI=true` a missing one fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test code fails loudly"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use halt_config::PolicyLoader;
use halt_core::{Clock, StateStore, SystemClock};
use halt_hil::{Broker, Filter, Verdict};
use halt_mcp::{Proxy, ProxyOptions};
use halt_testing::mcp_servers::McpServers;
use rmcp::ClientHandler;
use rmcp::model::CallToolResponse;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult,
    ElicitationAction, Implementation, InputResponses, ProtocolVersion,
};
use rmcp::service::RequestContext;
use rmcp::service::{ClientLifecycleMode, RoleClient, RunningService, serve_client_with_lifecycle};
use serde_json::{Value, json};

fn server_command(servers: &McpServers, package: &str, args: &[&Path]) -> tokio::process::Command {
    tokio::process::Command::from(servers.command(package, args))
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

/// How the proxy under test is set up.
#[derive(Clone, Copy, Default)]
struct Setup {
    /// The policy redacts secrets rather than denying them.
    redact: bool,
    /// Tools the scope guard denies are left out of `tools/list`.
    hide: bool,
    /// Approvals are asked of the client's user where the client can ask.
    ask_client: bool,
}

/// A proxy for the test policy in front of `command`, and `handler` as its client; with the
/// broker deciding the approvals the client's user is not asked about.
async fn connect<H: ClientHandler>(
    handler: H,
    setup: Setup,
    lifecycle: ClientLifecycleMode,
    command: tokio::process::Command,
) -> (RunningService<RoleClient, H>, Broker) {
    let text = POLICY.replace("REDACT", if setup.redact { "true" } else { "false" });
    let policy = PolicyLoader::new().load_str(&text, "test").unwrap();
    let store: Arc<dyn StateStore> = Arc::new(halt_store_memory::MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let broker = policy.broker(Arc::clone(&store), Arc::clone(&clock)).unwrap();
    let engine =
        policy.engine_builder().store_arc(store).clock_arc(clock).approval_handler(broker.clone()).build().unwrap();
    let options = ProxyOptions {
        agent_id: Some("assistant".into()),
        hide_denied_tools: setup.hide,
        visibility_guards: policy.guards.iter().filter(|g| g.kind == "scope").map(|g| Arc::clone(&g.guard)).collect(),
        ask_client: setup.ask_client,
        restart_server: false,
    };
    let proxy = Proxy::spawn(engine, options, command).await.unwrap();
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    tokio::spawn(proxy.serve(tokio::io::split(theirs)));
    let client = serve_client_with_lifecycle(handler, tokio::io::split(ours), lifecycle).await.unwrap();
    (client, broker)
}

fn legacy() -> ClientLifecycleMode {
    ClientLifecycleMode::Initialize
}

fn stateless() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] }
}

/// Calls `tool`, driving any `input_required` rounds through the client's handler.
async fn call<H: ClientHandler>(client: &RunningService<RoleClient, H>, tool: &str, args: Value) -> CallToolResult {
    client.call_tool(params(tool, args)).await.unwrap()
}

fn params(tool: &str, args: Value) -> CallToolRequestParams {
    let Value::Object(args) = args else { panic!("arguments must be an object") };
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args)
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
    let Some(servers) = McpServers::find() else { return };
    for lifecycle in [legacy(), stateless()] {
        let (_dir, root) = folder();
        let (client, _) = connect(
            (),
            Setup { hide: true, ..Setup::default() },
            lifecycle,
            server_command(&servers, "server-filesystem", &[&root]),
        )
        .await;

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
    let Some(servers) = McpServers::find() else { return };
    let (_dir, root) = folder();
    let (client, _) = connect(
        (),
        Setup { redact: true, ..Setup::default() },
        legacy(),
        server_command(&servers, "server-filesystem", &[&root]),
    )
    .await;
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
    let Some(servers) = McpServers::find() else { return };
    for lifecycle in [legacy(), stateless()] {
        let (client, broker) =
            connect((), Setup::default(), lifecycle, server_command(&servers, "server-everything", &[])).await;

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

/// A client whose user answers every approval question the same way.
struct User {
    approves: bool,
    asked: Arc<AtomicUsize>,
}

impl User {
    fn new(approves: bool) -> (Self, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        (Self { approves, asked: Arc::clone(&asked) }, asked)
    }
}

impl ClientHandler for User {
    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, rmcp::ErrorData> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let ElicitRequestParams::FormElicitationParams { message, .. } = request else { panic!("a form is asked for") };
        assert!(message.contains("`echo`") && message.contains("wire"), "the user sees the call: {message}");
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(json!({"approve": self.approves})))
    }

    fn get_info(&self) -> ClientConfig {
        let capabilities = ClientCapabilities::builder().enable_elicitation().build();
        ClientConfig::new(capabilities, Implementation::new("desk-app", "1"))
    }
}

async fn nothing_pending(broker: &Broker) -> bool {
    broker.list(&Filter::default()).await.unwrap().is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_user_is_asked_when_the_client_can_ask() {
    let Some(servers) = McpServers::find() else { return };
    let ask = Setup { ask_client: true, ..Setup::default() };
    for lifecycle in [legacy(), stateless()] {
        for approves in [true, false] {
            let (user, asked) = User::new(approves);
            let (client, broker) =
                connect(user, ask, lifecycle.clone(), server_command(&servers, "server-everything", &[])).await;
            let plain = call(&client, "echo", json!({"message": "hello"})).await;
            assert!(text(&plain).contains("hello"), "{}", text(&plain));
            assert_eq!(asked.load(Ordering::SeqCst), 0, "a call that needs nobody asks nobody");

            let answer = call(&client, "echo", json!({"message": "wire 100 to acme"})).await;
            assert_eq!(asked.load(Ordering::SeqCst), 1);
            if approves {
                assert_ne!(answer.is_error, Some(true), "{}", text(&answer));
                assert!(text(&answer).contains("wire 100 to acme"), "{}", text(&answer));
            } else {
                assert_eq!(answer.is_error, Some(true));
                assert!(text(&answer).contains("refused by the user"), "{}", text(&answer));
            }
            assert!(nothing_pending(&broker).await, "the broker was not asked");
            client.cancel().await.unwrap();
        }
    }
    // A 2025-11-25 client that cannot show a form leaves the question to the broker.
    let (client, broker) = connect((), ask, legacy(), server_command(&servers, "server-everything", &[])).await;
    let asked = call(&client, "echo", json!({"message": "wire 7 to acme"}));
    let (answer, _) = tokio::join!(asked, decide_first(&broker, Verdict::Approve));
    assert!(text(&answer).contains("wire 7 to acme"), "{}", text(&answer));
    client.cancel().await.unwrap();
}

/// A first `tools/call` of a 2026-07-28 client for `args`: the proxy's `requestState`.
async fn held<H: ClientHandler>(client: &RunningService<RoleClient, H>, args: &Value) -> String {
    match client.call_tool_once(params("echo", args.clone())).await.unwrap() {
        CallToolResponse::InputRequired(asked) => {
            let requests = asked.input_requests.expect("the user is asked");
            assert_eq!(requests.len(), 1);
            asked.request_state.expect("with a state to come back with")
        }
        other => panic!("expected input_required, got {other:?}"),
    }
}

/// The client's call again, with `state` and its user's `answer` (none: no answer).
async fn again<H: ClientHandler>(
    client: &RunningService<RoleClient, H>,
    args: &Value,
    state: &str,
    answer: Option<Value>,
) -> CallToolResult {
    let mut retry = params("echo", args.clone()).with_request_state(state.to_owned());
    if let Some(answer) = answer {
        let mut responses = InputResponses::new();
        responses.insert("agenthalt_approval".to_owned(), answer);
        retry = retry.with_input_responses(responses);
    }
    match client.call_tool_once(retry).await.unwrap() {
        CallToolResponse::Complete(result) => result,
        other => panic!("expected a result, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_state_is_signed_bound_to_the_call_and_used_once() {
    let Some(servers) = McpServers::find() else { return };
    let ask = Setup { ask_client: true, ..Setup::default() };
    let (user, _) = User::new(true);
    let (client, _) = connect(user, ask, stateless(), server_command(&servers, "server-everything", &[])).await;
    let yes = || Some(json!({"action": "accept", "content": {"approve": true}}));
    let args = json!({"message": "wire 100 to acme"});
    let state = held(&client, &args).await;

    // Forged: one character changed in the signed part, or a state made up whole.
    let mut forged = state.clone().into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for bad in [forged.as_str(), "agenthalt.rs1.e30.AAAA", "agenthalt.", "agenthalt.\u{0}\\"] {
        let r = again(&client, &args, bad, yes()).await;
        assert_eq!(r.is_error, Some(true), "{bad}: {}", text(&r));
        assert!(text(&r).contains("not one this proxy gave"), "{}", text(&r));
    }
    // Bound to the arguments: the same state for another amount runs nothing.
    let other = json!({"message": "wire 9000 to acme"});
    let r = again(&client, &other, &state, yes()).await;
    assert_eq!(r.is_error, Some(true));
    assert!(!text(&r).contains("9000"), "a reason never echoes a value: {}", text(&r));

    // The genuine answer runs the call, once.
    let r = again(&client, &args, &state, yes()).await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert!(text(&r).contains("wire 100 to acme"), "{}", text(&r));
    let r = again(&client, &args, &state, yes()).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("already used"), "{}", text(&r));

    // No answer, a malformed one, a declined form or an unticked box refuse.
    for answer in [
        None,
        Some(json!("yes")),
        Some(json!({"action": "accept", "content": {"approve": "true"}})),
        Some(json!({"action": "decline"})),
        Some(json!({"action": "accept", "content": {"approve": false}})),
    ] {
        let state = held(&client, &args).await;
        let r = again(&client, &args, &state, answer.clone()).await;
        assert_eq!(r.is_error, Some(true), "{answer:?}");
        assert!(text(&r).contains("refused"), "{answer:?}: {}", text(&r));
    }

    // Expired with the approval (3 s in the test policy).
    let state = held(&client, &args).await;
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let r = again(&client, &args, &state, yes()).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("expired"), "{}", text(&r));
    client.cancel().await.unwrap();
}

/// A client whose user fills any form the server sends with the name `Ada`.
struct Filler;

impl ClientHandler for Filler {
    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, rmcp::ErrorData> {
        let ElicitRequestParams::FormElicitationParams { message, .. } = request else { panic!("a form is asked for") };
        assert!(!message.starts_with("AgentHalt"), "the server's own question: {message}");
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(json!({"name": "Ada"})))
    }

    fn get_info(&self) -> ClientConfig {
        let capabilities = ClientCapabilities::builder().enable_elicitation().build();
        ClientConfig::new(capabilities, Implementation::new("desk-app", "1"))
    }
}

/// The server asks the user through the proxy: server-everything's own elicitation reaches the
/// client and the answer goes back, on stdio and over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_own_questions_reach_the_client_on_stdio_and_http() {
    let Some(servers) = McpServers::find() else { return };
    let ask = |client_text: &str| assert!(client_text.contains("Ada"), "{client_text}");

    let (client, _) =
        connect(Filler, Setup::default(), legacy(), server_command(&servers, "server-everything", &[])).await;
    let asked = call(&client, "trigger-elicitation-request", json!({})).await;
    ask(&text(&asked));
    client.cancel().await.unwrap();

    let policy = PolicyLoader::new().load_str(&POLICY.replace("REDACT", "false"), "test").unwrap();
    let engine = policy.engine_builder().build().unwrap();
    let command = server_command(&servers, "server-everything", &[]);
    let proxy = Proxy::spawn(engine, ProxyOptions::default(), command).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{}", listener.local_addr().unwrap(), halt_mcp::MCP_PATH);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(proxy.serve_http(listener, halt_mcp::HttpOptions::default(), async move {
        let _ = stopped.await;
    }));
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url);
    let client = serve_client_with_lifecycle(Filler, transport, legacy()).await.unwrap();
    let asked = call(&client, "trigger-elicitation-request", json!({})).await;
    ask(&text(&asked));
    client.cancel().await.unwrap();
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}
