//! `agenthalt demo`: the decision server on the embedded store with the example policy, and a
//! scripted agent whose story trips every guard, while a person watches and decides at the
//! dashboard (or, `--headless`, a scripted approver decides and a summary is printed).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use halt_config::{Role, TokenSettings};
use halt_dashboard::Server;
use serde_json::{Value, json};

use crate::{DemoArgs, report};

/// The policy the story runs under: the example policy of the repository.
const POLICY: &str = include_str!("../../../examples/policy.yaml");

/// Every guard of the example policy: the story must make each deny or ask at least once.
const GUARDS: [&str; 6] = ["budget", "purchase", "deletion", "scope", "rate_limit", "sensitive_data"];

#[allow(clippy::print_stdout, reason = "the demo talks to the person running it")]
fn say(text: &str) {
    println!("{text}");
}

pub(crate) fn run(args: &DemoArgs) -> ExitCode {
    let Some(runtime) = crate::runtime() else { return ExitCode::FAILURE };
    match runtime.block_on(demo(args)) {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// A random token: 32 hex digits.
fn token() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

fn digest(name: &str, role: Role, token: &str) -> String {
    TokenSettings { name: name.into(), role, sha256: None, token: Some(token.into()), agent_id: None }.digest()
}

/// Writes the demo's policy (the example policy, its store and audit under `dir`, and two
/// tokens given as digests) and starts the story afresh: yesterday's state is removed.
fn prepare(dir: &Path, agent: &str, approver: &str) -> Result<PathBuf, String> {
    let store = dir.join("store");
    let audit = dir.join("audit.jsonl");
    let _ = std::fs::remove_dir_all(&store);
    let _ = std::fs::remove_file(&audit);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let quoted = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap_or_default();
    let policy = format!(
        "{POLICY}
store:
  sled:
    path: {store}
audit:
  file:
    path: {audit}
server:
  tokens:
    - {{name: demo-agent, role: agent, sha256: {agent}}}
    - {{name: you, role: approver, sha256: {approver}}}
",
        store = quoted(&store),
        audit = quoted(&audit),
        agent = digest("demo-agent", Role::Agent, agent),
        approver = digest("you", Role::Approver, approver),
    );
    let path = dir.join("policy.yaml");
    std::fs::write(&path, policy).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

async fn demo(args: &DemoArgs) -> Result<ExitCode, String> {
    let agent_token = token()?;
    let approver_token = token()?;
    let policy = prepare(&args.dir, &agent_token, &approver_token)?;
    let server = Server::open(&policy).await.map_err(|e| e.to_string())?;
    let bind = args.bind.unwrap_or_else(|| {
        let port = if args.headless { 0 } else { 8550 };
        SocketAddr::from(([127, 0, 0, 1], port))
    });
    let listener = server.listen(bind).await.map_err(|e| format!("{e} (choose another address with --bind)"))?;
    let base = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
        })
    };
    let agent = Client::new(&base, &agent_token);
    let code = if args.headless {
        let approver = Client::new(&base, &approver_token);
        headless(&agent, &approver).await
    } else {
        say(&format!(
            "AgentHalt demo: the dashboard is at {base}/\n\
             Sign in there with this one-time approver token:\n\n    {approver_token}\n\n\
             (the story's state and audit log are in {}; Ctrl-C stops)\n",
            args.dir.display()
        ));
        interactive(&agent).await
    };
    let _ = stop.send(());
    let _ = serving.await;
    code
}

/// The scripted agent's side of the API.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(base: &str, token: &str) -> Self {
        Self { http: reqwest::Client::new(), base: base.to_owned(), token: token.to_owned() }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            request = request.header("content-type", "application/json").body(b.to_string());
        }
        let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("{path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{path}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
    }

    async fn evaluate(&self, call: &Value) -> Result<Value, String> {
        self.send(reqwest::Method::POST, "/v1/evaluate", Some(call)).await
    }
}

/// One step of the story: what the agent means to do, and the call.
struct Step {
    says: &'static str,
    call: Value,
}

fn story() -> Vec<Step> {
    let call = |function: &str, arguments: Value| json!({"function_name": function, "arguments": arguments, "session_id": "demo"});
    let mut steps = vec![
        Step { says: "searches the web", call: call("web_search", json!({"query": "quarterly report"})) },
        Step { says: "asks a model to summarise", call: call("gpt4_call", json!({"prompt": "summarise the report"})) },
        Step {
            says: "renders a video for 7.50",
            call: call("render_video", json!({"estimated_cost": 7.5, "title": "q3"})),
        },
        Step {
            says: "renders another for 1.50 (to 90% of 10.00)",
            call: call("render_video", json!({"estimated_cost": 1.5, "title": "q3-short"})),
        },
        Step {
            says: "buys 12.50 of paper",
            call: call("purchase_item", json!({"item": "paper", "amount": 12.5, "category": "office"})),
        },
        Step {
            says: "buys a 75.00 chair",
            call: call("purchase_item", json!({"item": "chair", "amount": 75, "category": "office"})),
        },
        Step { says: "buys a 1,200 laptop", call: call("purchase_item", json!({"item": "laptop", "amount": 1200})) },
        Step {
            says: "buys a watch (Luxury_Goods)",
            call: call("buy", json!({"item": "watch", "amount": 30, "category": "Luxury_Goods"})),
        },
        Step { says: "deletes the inbox", call: call("delete_email", json!({"resource_id": "inbox"})) },
        Step { says: "deletes a temp file", call: call("delete_file", json!({"resource_id": "temp_draft.txt"})) },
        Step { says: "drops a table", call: call("drop_table", json!({"table": "users"})) },
    ];
    for n in 1..=4 {
        let says = if n < 4 { "checks a job's status" } else { "checks the same status a 4th time (a loop)" };
        steps.push(Step { says, call: call("check_status", json!({"job": 42})) });
    }
    steps.push(Step {
        says: "emails HR an SSN",
        call: call("send_email", json!({"to": "hr@example.com", "body": "My SSN is 123-45-6789"})),
    });
    steps.push(Step {
        says: "writes an API key into a config",
        call: call("update_config", json!({"stripe_key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc"})),
    });
    steps
}

/// How an answer reads: the decision and, unless allowed, its reasons.
fn verdict(answer: &Value) -> String {
    let decision = answer["decision"].as_str().unwrap_or("?");
    let reasons: Vec<&str> =
        answer["reasons"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    match decision {
        "allow" => "allowed".to_owned(),
        other => format!("{}: {}", other.replace('_', " "), reasons.join("; ")),
    }
}

/// The time between two steps of the story.
const PACE: Duration = Duration::from_millis(600);

/// An approval the story waits for.
struct Asked {
    says: &'static str,
    call: Value,
    id: String,
}

/// Runs the story; returns the approvals it asked for.
async fn tell(agent: &Client) -> Result<Vec<Asked>, String> {
    let mut asked = Vec::new();
    for step in story() {
        let answer = agent.evaluate(&step.call).await?;
        say(&format!("agent {:<48} -> {}", step.says, verdict(&answer)));
        if let Some(id) = answer["approval"]["id"].as_str() {
            asked.push(Asked { says: step.says, call: step.call, id: id.to_owned() });
        }
        // An agent's pace: quicker would trip the rate limit's burst rule (10 calls in 5 s).
        tokio::time::sleep(PACE).await;
    }
    Ok(asked)
}

/// Waits for a person to decide `asked`, then carries on with the call if approved.
async fn follow(agent: &Client, asked: &Asked) -> Result<String, String> {
    loop {
        let a = agent.send(reqwest::Method::GET, &format!("/v1/approvals/{}/wait?timeout=60", asked.id), None).await?;
        match a["state"].as_str() {
            Some("pending") => continue,
            Some("approved") => {
                let answer = agent.evaluate(&asked.call).await?;
                let ran = if answer["allowed"] == true {
                    "ran it".to_owned()
                } else {
                    format!("was stopped ({})", verdict(&answer))
                };
                let edited = if answer.get("modified_arguments").is_some() { " with the edited arguments" } else { "" };
                return Ok(format!(
                    "agent {:<48} -> approved by {}: {ran}{edited}",
                    asked.says,
                    a["decided_by"].as_str().unwrap_or("?")
                ));
            }
            Some(state) => return Ok(format!("agent {:<48} -> {state}: did not run it", asked.says)),
            None => return Err("an approval without a state".into()),
        }
    }
}

async fn interactive(agent: &Client) -> Result<ExitCode, String> {
    let asked = tell(agent).await?;
    say(&format!("\n{} call(s) wait for you in the approval queue.", asked.len()));
    let mut waits = tokio::task::JoinSet::new();
    for a in asked {
        let agent = agent.clone();
        waits.spawn(async move { follow(&agent, &a).await });
    }
    let all_decided = async {
        while let Some(done) = waits.join_next().await {
            match done {
                Ok(Ok(line)) => say(&line),
                Ok(Err(e)) => report(&e),
                Err(_) => {}
            }
        }
        say("\nEvery approval is decided. The dashboard keeps running; Ctrl-C stops.");
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = all_decided => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    say("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The scripted approver's decision for each approval, in the order the story asks.
fn scripted(says: &str) -> Value {
    if says.contains("chair") {
        json!({"decision": "approve", "reason": "the office needs it"})
    } else if says.contains("temp file") {
        json!({"decision": "edit", "arguments": {"resource_id": "temp_draft_old.txt"}, "reason": "the older draft"})
    } else {
        json!({"decision": "deny", "reason": "not today"})
    }
}

async fn headless(agent: &Client, approver: &Client) -> Result<ExitCode, String> {
    let asked = tell(agent).await?;
    for a in &asked {
        approver
            .send(reqwest::Method::POST, &format!("/v1/approvals/{}/decision", a.id), Some(&scripted(a.says)))
            .await?;
        say(&follow(agent, a).await?);
    }
    let stats = approver.send(reqwest::Method::GET, "/v1/stats", None).await?;
    say("\nSummary: what each guard said");
    let mut missing = Vec::new();
    let by_guard: BTreeMap<String, Value> =
        stats["by_guard"].as_object().map(|m| m.clone().into_iter().collect()).unwrap_or_default();
    for guard in GUARDS {
        let counts = &by_guard.get(guard).cloned().unwrap_or(Value::Null);
        let n = |k: &str| counts[k].as_u64().unwrap_or(0);
        say(&format!(
            "  {guard:<15} allow {:>3}  modify {:>3}  ask {:>3}  deny {:>3}",
            n("allow"),
            n("modify"),
            n("require_approval"),
            n("deny")
        ));
        if n("deny") + n("require_approval") == 0 {
            missing.push(guard);
        }
    }
    say(&format!(
        "  {} evaluations: {} allowed, {} asked a human, {} denied",
        stats["evaluations"],
        stats["by_decision"]["allow"],
        stats["by_decision"]["require_approval"],
        stats["by_decision"]["deny"]
    ));
    if missing.is_empty() {
        say("Every guard denied or asked at least once.");
        Ok(ExitCode::SUCCESS)
    } else {
        report(&format!("these guards never denied nor asked: {}", missing.join(", ")));
        Ok(ExitCode::FAILURE)
    }
}
