//! The decision server over real HTTP on loopback: every endpoint and role, bad input,
//! concurrency, approvals that wait, reloads under load, the event feed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use halt_dashboard::Server;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const AGENT: &str = "agent-token-0123456789";
const OTHER_AGENT: &str = "other-agent-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const APPROVER: &str = "approver-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn tokens() -> String {
    format!(
        "server:\n  tokens:\n    - {{name: bot, role: agent, token: {AGENT}}}\n    - {{name: other, role: agent, token: {OTHER_AGENT}}}\n    - {{name: vera, role: viewer, token: {VIEWER}}}\n    - {{name: alice, role: approver, token: {APPROVER}}}\n    - {{name: root, role: admin, token: {ADMIN}}}\n"
    )
}

const GUARDS: &str = "
store: memory
guards:
  budget:
    max_daily_spend: 1.00
    warn_threshold: 1.0
  purchase:
    max_single_purchase: 100
    require_approval_above: 50
  scope:
    deny_functions: [\"drop_*\"]
";

fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "halt-dashboard-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server on a free loopback port, for the policy `yaml`.
struct Running {
    base: String,
    server: Server,
    policy: PathBuf,
    http: Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn start(yaml: &str) -> Self {
        let policy = temp_dir().join("policy.yaml");
        std::fs::write(&policy, yaml).unwrap();
        let server = Server::open(&policy).await.unwrap();
        let listener = server.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = server.clone();
        let task = tokio::spawn(async move {
            s.serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let http = Client::builder().pool_max_idle_per_host(64).build().unwrap();
        Self { base, server, policy, http, stop: Some(stop), task: Some(task) }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }

    async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(url),
            "POST" => self.http.post(url),
            other => self.http.request(other.parse().unwrap(), url),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn evaluate(&self, token: &str, call: Value) -> Value {
        let (status, body) = self.send("POST", "/v1/evaluate", Some(token), Some(call)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

fn purchase(amount: f64) -> Value {
    json!({"function_name": "buy_item", "arguments": {"amount": amount, "category": "office"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_checks_the_role_of_its_caller() {
    let s = Running::start(&format!("{GUARDS}{}", tokens())).await;
    // No token, a wrong one, a malformed header: 401.
    for token in [None, Some("wrong-token-0123456789")] {
        let (status, body) = s.send("POST", "/v1/evaluate", token, Some(json!({"function_name": "f"}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body["error"].is_string());
    }
    let r = s
        .http
        .get(format!("{}/v1/stats", s.base))
        .header("authorization", format!("Basic {VIEWER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");

    // A viewer cannot propose; an approver neither.
    for token in [VIEWER, APPROVER] {
        let (status, _) = s.send("POST", "/v1/evaluate", Some(token), Some(json!({"function_name": "f"}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = s.send("POST", "/v1/calls/c/settle", Some(token), Some(json!({"actual_cost": 0}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    // An agent proposes, for itself only.
    let ok = s.evaluate(AGENT, json!({"function_name": "web_search", "call_id": "c1"})).await;
    assert_eq!(ok["allowed"], true);
    let (status, body) =
        s.send("POST", "/v1/evaluate", Some(AGENT), Some(json!({"function_name": "f", "agent_id": "someone"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // An agent's call that needs approval: the agent cannot decide it, nor can a viewer.
    let asked = s.evaluate(AGENT, purchase(75.0)).await;
    assert_eq!((asked["decision"].as_str(), asked["allowed"].as_bool()), (Some("require_approval"), Some(false)));
    let id = asked["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(asked["approval"]["state"], "pending");
    for token in [AGENT, VIEWER, OTHER_AGENT] {
        let (status, body) = s
            .send("POST", &format!("/v1/approvals/{id}/decision"), Some(token), Some(json!({"decision": "approve"})))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{token}: {body}");
    }
    // Each agent sees its own approvals only; readers see all.
    let (_, mine) = s.send("GET", "/v1/approvals", Some(AGENT), None).await;
    assert_eq!(mine["approvals"].as_array().unwrap().len(), 1);
    let (_, theirs) = s.send("GET", "/v1/approvals", Some(OTHER_AGENT), None).await;
    assert!(theirs["approvals"].as_array().unwrap().is_empty());
    let (status, _) = s.send("GET", &format!("/v1/approvals/{id}"), Some(OTHER_AGENT), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another agent's approval is not shown");
    for token in [VIEWER, APPROVER, ADMIN] {
        let (status, all) = s.send("GET", "/v1/approvals?state=pending", Some(token), None).await;
        assert_eq!((status, all["approvals"].as_array().unwrap().len()), (StatusCode::OK, 1));
    }
    // The approver decides; their name is recorded.
    let (status, decided) = s
        .send(
            "POST",
            &format!("/v1/approvals/{id}/decision"),
            Some(APPROVER),
            Some(json!({"decision": "approve", "reason": "ok"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!((decided["state"].as_str(), decided["decided_by"].as_str()), (Some("approved"), Some("alice")));
    let (status, _) = s
        .send("POST", &format!("/v1/approvals/{id}/decision"), Some(APPROVER), Some(json!({"decision": "deny"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "decided once");
    // The agent proposes the same call again: it runs, once.
    let again = s.evaluate(AGENT, purchase(75.0)).await;
    assert_eq!((again["allowed"].as_bool(), again["approver"].as_str()), (Some(true), Some("alice")));
    assert_eq!(s.evaluate(AGENT, purchase(75.0)).await["allowed"], false, "single use");

    // Reading: viewers and up; not agents.
    for path in ["/v1/stats", "/v1/guards", "/metrics"] {
        for token in [VIEWER, APPROVER, ADMIN] {
            let (status, body) = s.send("GET", path, Some(token), None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
        let (status, _) = s.send("GET", path, Some(AGENT), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        let (status, _) = s.send("GET", path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(s.send("GET", "/v1/audit", Some(AGENT), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(s.send("GET", "/v1/audit", Some(VIEWER), None).await.0, StatusCode::NOT_FOUND, "no audit log kept");
    // Reload: admin only.
    for token in [AGENT, VIEWER, APPROVER] {
        assert_eq!(s.send("POST", "/v1/policy/reload", Some(token), None).await.0, StatusCode::FORBIDDEN);
    }
    let (status, body) = s.send("POST", "/v1/policy/reload", Some(ADMIN), None).await;
    assert_eq!((status, body["guards"].as_u64()), (StatusCode::OK, Some(3)), "{body}");
    // Health, readiness and the API's description need no token.
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(s.send("GET", path, None, None).await.0, StatusCode::OK, "{path}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tokens_listens_on_loopback_only() {
    let dir = temp_dir();
    let open = dir.join("open.yaml");
    std::fs::write(&open, GUARDS).unwrap();
    let server = Server::open(&open).await.unwrap();
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let e = server.listen(addr.parse().unwrap()).await.unwrap_err();
        assert!(e.to_string().contains("without tokens"), "{e}");
    }
    assert!(server.listen("127.0.0.1:0".parse().unwrap()).await.is_ok());
    let locked = dir.join("locked.yaml");
    std::fs::write(&locked, format!("{GUARDS}{}", tokens())).unwrap();
    let server = Server::open(&locked).await.unwrap();
    assert!(server.listen("0.0.0.0:0".parse().unwrap()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_json_error_naming_the_problem() {
    let s = Running::start(GUARDS).await;
    let post = |body: &'static str, content_type: &'static str| {
        let req = s.http.post(format!("{}/v1/evaluate", s.base)).header("content-type", content_type).body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            let v: Value = r.json().await.unwrap();
            (status, v["error"].as_str().unwrap().to_owned())
        }
    };
    let cases: [(&str, &str, StatusCode, &str); 10] = [
        (r#"{"function_name": "f"}"#, "text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type"),
        (r#"{"function_name": "f""#, "application/json", StatusCode::UNPROCESSABLE_ENTITY, "invalid JSON"),
        ("[1, 2]", "application/json", StatusCode::UNPROCESSABLE_ENTITY, "must be a JSON object"),
        (r#"{"arguments": {}}"#, "application/json", StatusCode::UNPROCESSABLE_ENTITY, "`function_name` is missing"),
        (r#"{"function_name": 5}"#, "application/json", StatusCode::UNPROCESSABLE_ENTITY, "`function_name` must be"),
        (
            r#"{"function_name": "f", "arguments": "rm -rf"}"#,
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "`arguments` must be",
        ),
        (
            r#"{"function_name": "f", "argumnets": {}}"#,
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `argumnets`",
        ),
        (
            r#"{"function_name": "f", "arguments": {"to": "a", "to": "b"}}"#,
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "repeats a key",
        ),
        (
            r#"{"function_name": "f", "timestamp": -1}"#,
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "timestamp",
        ),
        ("\u{0}\u{1}", "application/json; charset=utf-8", StatusCode::UNPROCESSABLE_ENTITY, "invalid JSON"),
    ];
    for (body, content_type, status, wanted) in cases {
        let (got, error) = post(body, content_type).await;
        assert_eq!(got, status, "{body}: {error}");
        assert!(error.contains(wanted), "{body}: {error}");
    }
    // Too large a body, a bad wait, unknown parameters, unknown paths and methods.
    let huge = format!(r#"{{"function_name": "f", "arguments": {{"x": "{}"}}}}"#, "a".repeat(2 << 20));
    let r = s
        .http
        .post(format!("{}/v1/evaluate", s.base))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    for (method, path, status) in [
        ("POST", "/v1/evaluate?wait=-1", StatusCode::BAD_REQUEST),
        ("POST", "/v1/evaluate?wait=nan", StatusCode::BAD_REQUEST),
        ("POST", "/v1/evaluate?wait=100000", StatusCode::BAD_REQUEST),
        ("POST", "/v1/evaluate?wiat=1", StatusCode::BAD_REQUEST),
        ("POST", "/v1/evaluate?wait=1&wait=2", StatusCode::BAD_REQUEST),
        ("GET", "/v1/approvals?state=maybe", StatusCode::BAD_REQUEST),
        ("GET", "/v1/approvals/nope", StatusCode::NOT_FOUND),
        ("GET", "/v1/approvals/%ff%00", StatusCode::BAD_REQUEST),
        ("POST", "/v1/calls/%ff/outcome", StatusCode::BAD_REQUEST),
        ("GET", "/v1/approvals/nope/wait?timeout=0", StatusCode::NOT_FOUND),
        ("GET", "/v1/audit", StatusCode::NOT_FOUND),
        ("GET", "/v1/nothing", StatusCode::NOT_FOUND),
        ("DELETE", "/v1/stats", StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/v1/events", StatusCode::BAD_REQUEST),
    ] {
        let (got, body) = s.send(method, path, None, Some(json!({"function_name": "f"}))).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    // Settle, outcome and decisions check their bodies too.
    for (path, body, status) in [
        ("/v1/calls/x/settle", json!({"actual_cost": "abc"}), StatusCode::BAD_REQUEST),
        ("/v1/calls/x/settle", json!({"actual_cost": -1}), StatusCode::BAD_REQUEST),
        ("/v1/calls/x/outcome", json!({"executed": true, "actual_cost": "NaN"}), StatusCode::BAD_REQUEST),
        ("/v1/calls/x/settle", json!({"actual_cost": 1, "extra": 1}), StatusCode::BAD_REQUEST),
        ("/v1/calls/x/settle", json!({"actual_cost": 1}), StatusCode::NOT_FOUND),
        ("/v1/calls/x/outcome", json!({"executed": "yes"}), StatusCode::BAD_REQUEST),
        ("/v1/calls/x/outcome", json!({"executed": false, "actual_cost": 1}), StatusCode::UNPROCESSABLE_ENTITY),
        ("/v1/approvals/x/decision", json!({"decision": "maybe"}), StatusCode::BAD_REQUEST),
        ("/v1/approvals/x/decision", json!({"decision": "edit"}), StatusCode::UNPROCESSABLE_ENTITY),
        ("/v1/approvals/x/decision", json!({"decision": "approve", "arguments": {}}), StatusCode::UNPROCESSABLE_ENTITY),
        ("/v1/approvals/x/decision", json!({"decision": "approve"}), StatusCode::NOT_FOUND),
    ] {
        let (got, error) = s.send("POST", path, None, Some(body.clone())).await;
        assert_eq!(got, status, "{path} {body}: {error}");
    }
    // The server is still fine, and counted the refusals.
    let (_, metrics) = s.send("GET", "/metrics", None, None).await;
    let refused: u64 = metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("agenthalt_requests_refused_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused >= 30, "every refusal above is counted: {refused}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_evaluations_allow_exactly_one_hundred() {
    let s = Running::start(&format!("{GUARDS}{}", tokens())).await;
    let mut tasks = Vec::new();
    for i in 0..500 {
        let (http, base) = (s.http.clone(), s.base.clone());
        tasks.push(tokio::spawn(async move {
            let call =
                json!({"function_name": "llm", "call_id": format!("c{i}"), "arguments": {"estimated_cost": 0.01}});
            let r = http
                .post(format!("{base}/v1/evaluate"))
                .bearer_auth(AGENT)
                .header("content-type", "application/json")
                .body(call.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()["allowed"].as_bool().unwrap()
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(allowed, 100);
    let (_, stats) = s.send("GET", "/v1/stats", Some(VIEWER), None).await;
    assert_eq!(stats["evaluations"], 500);
    assert_eq!((stats["by_decision"]["allow"].as_u64(), stats["by_decision"]["deny"].as_u64()), (Some(100), Some(400)));
    let daily = &stats["usage"][0];
    assert_eq!(
        (daily["guard"].as_str(), daily["used"].as_f64(), daily["limit"].as_f64()),
        (Some("budget"), Some(1.0), Some(1.0))
    );

    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_and_outcome_correct_what_a_call_was_charged() {
    let s = Running::start(&format!("{GUARDS}{}", tokens())).await;
    let call = |id: &str| json!({"function_name": "llm", "call_id": id, "arguments": {"estimated_cost": 0.30}});
    assert_eq!(s.evaluate(AGENT, call("a")).await["allowed"], true);
    assert_eq!(s.evaluate(AGENT, call("b")).await["allowed"], true);
    assert!((used(&s).await - 0.60).abs() < 1e-9);
    let (status, settled) =
        s.send("POST", "/v1/calls/a/settle", Some(AGENT), Some(json!({"actual_cost": "0.05"}))).await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    assert_eq!((settled["previous"][0].as_f64(), settled["actual"].as_f64()), (Some(0.3), Some(0.05)));
    assert!((used(&s).await - 0.35).abs() < 1e-9);
    let (status, out) = s.send("POST", "/v1/calls/b/outcome", Some(AGENT), Some(json!({"executed": false}))).await;
    assert_eq!((status, out["released"].as_bool()), (StatusCode::OK, Some(true)), "{out}");
    assert!((used(&s).await - 0.05).abs() < 1e-9);
    let (status, out) = s.send("POST", "/v1/calls/never/outcome", Some(AGENT), Some(json!({"executed": false}))).await;
    assert_eq!((status, out["released"].as_bool()), (StatusCode::OK, Some(false)), "nothing was charged: {out}");
    let (status, _) =
        s.send("POST", "/v1/calls/never/outcome", Some(AGENT), Some(json!({"executed": true, "actual_cost": 1}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.shutdown().await;
}

async fn used(s: &Running) -> f64 {
    s.send("GET", "/v1/stats", Some(VIEWER), None).await.1["usage"][0]["used"].as_f64().unwrap()
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_event(socket: &mut Socket) -> Value {
    use futures_util::StreamExt;
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap().unwrap().unwrap() {
        tokio_tungstenite::tungstenite::Message::Text(t) => serde_json::from_str::<Value>(&t).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Posts a decision after `delay`, and returns when it was posted.
fn decide_later(s: &Running, id: String, body: Value, delay: Duration) -> tokio::task::JoinHandle<Instant> {
    let (http, base) = (s.http.clone(), s.base.clone());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let r = http
            .post(format!("{base}/v1/approvals/{id}/decision"))
            .bearer_auth(APPROVER)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        Instant::now()
    })
}

async fn first_pending(s: &Running) -> String {
    for _ in 0..200 {
        let (_, list) = s.send("GET", "/v1/approvals?state=pending", Some(VIEWER), None).await;
        if let Some(a) = list["approvals"].as_array().unwrap().first() {
            return a["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no approval became pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_is_released_within_a_second_of_the_decision() {
    let s = Running::start(&format!("{GUARDS}{}", tokens())).await;
    // An evaluation that waits: approved by another client while it waits.
    let waiting = {
        let (http, base) = (s.http.clone(), s.base.clone());
        tokio::spawn(async move {
            let r = http
                .post(format!("{base}/v1/evaluate?wait=20"))
                .bearer_auth(AGENT)
                .header("content-type", "application/json")
                .body(purchase(80.0).to_string())
                .send()
                .await
                .unwrap();
            (r.json::<Value>().await.unwrap(), Instant::now())
        })
    };
    let id = first_pending(&s).await;
    let posted =
        decide_later(&s, id.clone(), json!({"decision": "approve"}), Duration::from_millis(300)).await.unwrap();
    let (answer, released) = waiting.await.unwrap();
    assert!(released.duration_since(posted) < Duration::from_secs(1));
    assert_eq!((answer["allowed"].as_bool(), answer["approver"].as_str()), (Some(true), Some("alice")), "{answer}");
    assert_eq!(answer["approval"]["id"], id.as_str());
    assert_eq!(answer["approval"]["state"], "approved");

    // An agent waiting on the approval itself, denied by another client.
    let asked = s.evaluate(AGENT, purchase(90.0)).await;
    let id = asked["approval"]["id"].as_str().unwrap().to_owned();
    let waiter = {
        let (http, base, id) = (s.http.clone(), s.base.clone(), id.clone());
        tokio::spawn(async move {
            let r =
                http.get(format!("{base}/v1/approvals/{id}/wait?timeout=20")).bearer_auth(AGENT).send().await.unwrap();
            (r.json::<Value>().await.unwrap(), Instant::now())
        })
    };
    let posted =
        decide_later(&s, id, json!({"decision": "deny", "reason": "no"}), Duration::from_millis(300)).await.unwrap();
    let (approval, released) = waiter.await.unwrap();
    assert!(released.duration_since(posted) < Duration::from_secs(1));
    assert_eq!(approval["state"], "denied");
    assert_eq!(s.evaluate(AGENT, purchase(90.0)).await["allowed"], false, "denied: the call asks anew");

    // Approved with edits: the agent proposing the call again gets the edited arguments, checked.
    let asked = s.evaluate(AGENT, purchase(95.0)).await;
    let id = asked["approval"]["id"].as_str().unwrap().to_owned();
    let edit = json!({"decision": "edit", "arguments": {"amount": 40, "category": "office"}});
    decide_later(&s, id, edit, Duration::ZERO).await.unwrap();
    let again = s.evaluate(AGENT, purchase(95.0)).await;
    assert_eq!(again["allowed"], true, "{again}");
    assert_eq!(again["modified_arguments"]["amount"], 40);
    // A wait that times out returns the approval still pending.
    let asked = s.evaluate(AGENT, purchase(60.0)).await;
    let id = asked["approval"]["id"].as_str().unwrap();
    let (status, a) = s.send("GET", &format!("/v1/approvals/{id}/wait?timeout=0.2"), Some(AGENT), None).await;
    assert_eq!((status, a["state"].as_str()), (StatusCode::OK, Some("pending")));
    let (status, _) = s.send("GET", &format!("/v1/approvals/{id}/wait?timeout=0.2"), Some(OTHER_AGENT), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not another agent's to wait on");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_no_request_and_keep_the_old_policy_when_the_new_one_is_bad() {
    let s = Running::start(&format!("{GUARDS}{}", tokens())).await;
    let load = {
        let (http, base) = (s.http.clone(), s.base.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..2000 {
                let (http, base) = (http.clone(), base.clone());
                tasks.spawn(async move {
                    let call = json!({"function_name": if i % 2 == 0 { "drop_table" } else { "web_search" }, "arguments": {"estimated_cost": 0}});
                    http.post(format!("{base}/v1/evaluate")).bearer_auth(AGENT).header("content-type", "application/json").body(call.to_string()).send().await.map(|r| r.status())
                });
                if tasks.len() >= 64 {
                    statuses.push(tasks.join_next().await.unwrap().unwrap());
                }
            }
            while let Some(r) = tasks.join_next().await {
                statuses.push(r.unwrap());
            }
            statuses
        })
    };
    let original = s.server.policy_version();
    let stricter = format!("{GUARDS}  deletion:\n    protected_resources: [inbox]\n{}", tokens());
    for i in 0..10 {
        let text = if i % 2 == 0 { stricter.clone() } else { format!("{GUARDS}{}", tokens()) };
        std::fs::write(&s.policy, text).unwrap();
        let (status, body) = s.send("POST", "/v1/policy/reload", Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let statuses = load.await.unwrap();
    assert_eq!(statuses.len(), 2000);
    assert!(statuses.iter().all(|s| matches!(s, Ok(StatusCode::OK))), "every request answered 200");
    assert_eq!(s.server.policy_version(), original, "back to the first text, the same version");

    // A bad policy is refused and the old one goes on; so is a change of store.
    std::fs::write(&s.policy, "guards:\n  budget:\n    max_daily_spnd: 1\n").unwrap();
    let (status, body) = s.send("POST", "/v1/policy/reload", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"].as_str().unwrap().contains("max_daily_spend"), "{body}");
    let sled = GUARDS.replace("store: memory", "store:\n  sled:\n    path: /tmp/x");
    std::fs::write(&s.policy, format!("{sled}{}", tokens())).unwrap();
    let (status, body) = s.send("POST", "/v1/policy/reload", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"].as_str().unwrap().contains("restart"), "{body}");
    assert_eq!(s.server.policy_version(), original);
    assert_eq!(s.evaluate(AGENT, json!({"function_name": "drop_table"})).await["allowed"], false);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_asked_under_an_old_policy_need_a_new_decision() {
    let s = Running::start(&format!("{GUARDS}{}", tokens())).await;
    let asked = s.evaluate(AGENT, purchase(70.0)).await;
    let id = asked["approval"]["id"].as_str().unwrap().to_owned();
    std::fs::write(&s.policy, format!("{GUARDS}  rate_limit:\n    max_calls_per_minute: 1000\n{}", tokens())).unwrap();
    assert_eq!(s.send("POST", "/v1/policy/reload", Some(ADMIN), None).await.0, StatusCode::OK);
    // Still listed and decidable, but it covers only calls of the version it was asked under.
    decide_later(&s, id.clone(), json!({"decision": "approve"}), Duration::ZERO).await.unwrap();
    let again = s.evaluate(AGENT, purchase(70.0)).await;
    assert_eq!(again["allowed"], false);
    assert_ne!(again["approval"]["id"], id.as_str(), "asked anew under the new version");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_feed_signs_in_checks_origin_and_streams_evaluations() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};

    let s = Running::start(&format!("{GUARDS}{}", tokens())).await;
    let ws_url = s.base.replace("http://", "ws://") + "/v1/events";
    // A page of another origin is refused.
    let mut request = ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("origin", HeaderValue::from_static("http://evil.example"));
    let refused = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    // The server's own origin signs in with its first message.
    let mut request = ws_url.as_str().into_client_request().unwrap();
    let own = s.base.clone();
    request.headers_mut().insert("origin", HeaderValue::from_str(&own).unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket.send(Message::Text(json!({"token": VIEWER}).to_string().into())).await.unwrap();
    let hello = next_event(&mut socket).await;
    assert_eq!((hello["type"].as_str(), hello["role"].as_str()), (Some("hello"), Some("viewer")));
    let posted = Instant::now();
    s.evaluate(AGENT, json!({"function_name": "drop_table", "arguments": {"secret": "s3cr3t-value"}})).await;
    let event = next_event(&mut socket).await;
    assert!(posted.elapsed() < Duration::from_secs(1));
    assert_eq!((event["type"].as_str(), event["decision"].as_str()), (Some("evaluation"), Some("deny")));
    assert_eq!(event["agent_id"], "bot");
    assert!(!event.to_string().contains("s3cr3t-value"), "no argument reaches the feed");
    // An agent's token may not read the feed; a wrong token is closed at once.
    for token in [AGENT, "nope"] {
        let (mut socket, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.unwrap();
        socket.send(Message::Text(json!({"token": token}).to_string().into())).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => assert!(u16::from(frame.code) >= 4401, "{frame:?}"),
            other => panic!("{other:?}"),
        }
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_endpoint_searches_the_log_and_shutdown_flushes_it() {
    let dir = temp_dir();
    let audit = dir.join("audit.jsonl");
    let yaml = format!("{GUARDS}audit:\n  file:\n    path: {}\n", audit.display());
    let s = Running::start(&yaml).await;
    s.evaluate(ADMIN, json!({"function_name": "drop_table"})).await;
    s.evaluate(ADMIN, json!({"function_name": "web_search", "agent_id": "a1"})).await;
    let mut found = Value::Null;
    for _ in 0..100 {
        let (status, body) = s.send("GET", "/v1/audit?decision=deny&limit=10", None, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["entries"].as_array().unwrap().len() == 1 {
            found = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found["entries"][0]["function"], "drop_table", "{found}");
    for bad in ["limit=0", "limit=5000", "since=abc", "decision=maybe", "color=red"] {
        assert_eq!(s.send("GET", &format!("/v1/audit?{bad}"), None, None).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    s.shutdown().await;
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(text.lines().count() >= 3, "policy load and both calls are on disk: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_names_every_route_and_its_types() {
    let s = Running::start(GUARDS).await;
    let (_, doc) = s.send("GET", "/openapi.json", None, None).await;
    for path in [
        "/v1/evaluate",
        "/v1/calls/{call_id}/settle",
        "/v1/calls/{call_id}/outcome",
        "/v1/approvals",
        "/v1/approvals/{id}",
        "/v1/approvals/{id}/decision",
        "/v1/approvals/{id}/wait",
        "/v1/stats",
        "/v1/guards",
        "/v1/audit",
        "/v1/policy/reload",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for t in ["EvaluateRequest", "EvaluateResponse", "Approval", "DecisionRequest", "StatsResponse", "Usage"] {
        assert!(schemas.contains_key(t), "{t}");
    }
    // Every reference resolves.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(schemas.contains_key(name), "{name}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_stalls_is_dropped_with_a_json_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Running::start(&format!("{GUARDS}server:\n  request_timeout_seconds: 0.5\n")).await;
    let mut socket = tokio::net::TcpStream::connect(s.base.trim_start_matches("http://")).await.unwrap();
    // Promises a body of 100 bytes and sends one.
    let head = "POST /v1/calls/x/settle HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/json") && answer.contains("\"error\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    s.shutdown().await;
}
