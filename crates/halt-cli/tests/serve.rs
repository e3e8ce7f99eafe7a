//! `agenthalt serve` as a process: where it may listen, two servers sharing one Redis, a
//! graceful stop, the HTTP examples and schemathesis against it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(clippy::print_stderr, reason = "a skipped test says so")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{bin, temp_file};
use halt_testing::redis_server::RedisServer;
use serde_json::{Value, json};

/// A running `agenthalt serve`, killed when dropped.
struct Serving {
    child: Child,
    base: String,
}

impl Serving {
    fn start(policy: &std::path::Path) -> Self {
        Self::start_in(policy, &std::env::temp_dir())
    }

    /// Starts it with `dir` as its working directory.
    fn start_in(policy: &std::path::Path, dir: &std::path::Path) -> Self {
        let mut child = bin()
            .current_dir(dir)
            .args(["serve", "--config", policy.to_str().unwrap(), "--bind", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let base = first.split("on ").last().unwrap().trim().to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "{first}");
        // Keep reading so that the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, base }
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BUDGET: &str = "guards:\n  budget:\n    max_daily_spend: 1.00\n    warn_threshold: 1.0\n";

#[test]
fn a_non_loopback_bind_without_tokens_refuses_to_start() {
    let policy = temp_file("open-bind.yaml", &format!("{BUDGET}store: memory\n"));
    let out = bin().args(["serve", "--config", policy.to_str().unwrap(), "--bind", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without tokens"), "{stderr}");
    // An invalid policy does not start either.
    let bad = temp_file("bad-serve.yaml", "guards:\n  budget:\n    max_daily_spnd: 1\n");
    let out = bin().args(["serve", "--config", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_daily_spend"));
}

async fn evaluate(http: &reqwest::Client, base: &str, call: &Value) -> Value {
    let r = http
        .post(format!("{base}/v1/evaluate"))
        .header("content-type", "application/json")
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_sharing_one_redis_allow_exactly_one_hundred_of_a_thousand() {
    let Some(redis) = RedisServer::start() else { return };
    let policy = temp_file("redis-serve.yaml", &format!("{BUDGET}store:\n  redis:\n    url: {}\n", redis.url()));
    let servers = [Serving::start(&policy), Serving::start(&policy)];
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let (http, base) = (http.clone(), servers[i % 2].base.clone());
        tasks.spawn(async move {
            let call =
                json!({"function_name": "llm", "call_id": format!("c{i}"), "arguments": {"estimated_cost": 0.01}});
            evaluate(&http, &base, &call).await["allowed"].as_bool().unwrap()
        });
    }
    let mut allowed = 0;
    while let Some(r) = tasks.join_next().await {
        allowed += usize::from(r.unwrap());
    }
    assert_eq!(allowed, 100);

    // An approval asked through one server is decided through the other, and waited on there.
    let approvals = temp_file(
        "redis-approvals.yaml",
        &format!("guards:\n  purchase:\n    require_approval_above: 50\nstore:\n  redis:\n    url: {}\n", redis.url()),
    );
    let servers = [Serving::start(&approvals), Serving::start(&approvals)];
    let buy = json!({"function_name": "buy_item", "arguments": {"amount": 70}, "agent_id": "bot"});
    let asked = evaluate(&http, &servers[0].base, &buy).await;
    let id = asked["approval"]["id"].as_str().unwrap().to_owned();
    let waiter = {
        let (http, base, id) = (http.clone(), servers[0].base.clone(), id.clone());
        tokio::spawn(async move {
            let r = http.get(format!("{base}/v1/approvals/{id}/wait?timeout=10")).send().await.unwrap();
            (serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap(), std::time::Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = http
        .post(format!("{}/v1/approvals/{id}/decision", servers[1].base))
        .header("content-type", "application/json")
        .body(json!({"decision": "approve", "approver": "alice"}).to_string())
        .send()
        .await
        .unwrap();
    let posted = std::time::Instant::now();
    assert_eq!(r.status(), 200);
    let (approval, released) = waiter.await.unwrap();
    assert_eq!(approval["state"], "approved");
    assert!(released.saturating_duration_since(posted) < Duration::from_secs(1));
    let again = evaluate(&http, &servers[1].base, &buy).await;
    assert_eq!(again["allowed"], true, "the other server uses the approval: {again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_then_stops() {
    let policy =
        temp_file("graceful.yaml", "guards:\n  purchase:\n    require_approval_above: 50\naudit:\n  memory: 100\n");
    let server = Serving::start(&policy);
    let http = reqwest::Client::new();
    // A request waiting two seconds for a human is in flight when the signal comes.
    let in_flight = {
        let (http, base) = (http.clone(), server.base.clone());
        tokio::spawn(async move {
            let call = json!({"function_name": "buy_item", "arguments": {"amount": 70}});
            let r = http
                .post(format!("{base}/v1/evaluate?wait=2"))
                .header("content-type", "application/json")
                .body(call.to_string())
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    assert!(status.success(), "{status:?}");
    let (code, body) = in_flight.await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"require_approval\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_section_state_is_kept_in_sled_under_dot_agenthalt_across_restarts() {
    let dir = std::env::temp_dir().join(format!("agenthalt-serve-sled-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = temp_file("sled-default.yaml", BUDGET);
    let http = reqwest::Client::new();
    let call = json!({"function_name": "llm", "arguments": {"estimated_cost": 0.6}});
    let server = Serving::start_in(&policy, &dir);
    assert_eq!(evaluate(&http, &server.base, &call).await["allowed"], true);
    assert!(tokio::task::spawn_blocking(move || server.terminate()).await.unwrap().success());
    assert!(dir.join(".agenthalt/store").is_dir());
    // The day's spend survived the restart: 0.6 + 0.6 would pass 1.00.
    let server = Serving::start_in(&policy, &dir);
    assert_eq!(evaluate(&http, &server.base, &call).await["allowed"], false);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy_and_a_bad_one_is_kept_out() {
    let policy = temp_file("sighup.yaml", &format!("{BUDGET}store: memory\n"));
    let server = Serving::start(&policy);
    let http = reqwest::Client::new();
    let version = |http: reqwest::Client, base: String| async move {
        let text = http.get(format!("{base}/healthz")).send().await.unwrap().text().await.unwrap();
        serde_json::from_str::<Value>(&text).unwrap()["policy_version"].as_str().unwrap().to_owned()
    };
    let before = version(http.clone(), server.base.clone()).await;
    let hangup =
        || assert!(Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap().success());
    std::fs::write(&policy, "guards:\n  scope:\n    deny_functions: [\"drop_*\"]\nstore: memory\n").unwrap();
    hangup();
    let mut after = before.clone();
    for _ in 0..100 {
        after = version(http.clone(), server.base.clone()).await;
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(after, before, "SIGHUP reloaded the policy");
    assert_eq!(evaluate(&http, &server.base, &json!({"function_name": "drop_table"})).await["allowed"], false);
    // An invalid file is refused; the server goes on with the policy it has.
    std::fs::write(&policy, "guards: [").unwrap();
    hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(version(http.clone(), server.base.clone()).await, after);
}

/// Whether a tool the test needs is installed; under `CI=true` a missing one fails.
fn installed(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{program} is not installed, and CI=true: install it");
        eprintln!("SKIPPED: {program} is not installed");
    }
    ok
}

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)
}

/// The example policy, with its state in memory (a test leaves nothing behind).
fn example_policy() -> std::path::PathBuf {
    let text = std::fs::read_to_string(example("policy.yaml")).unwrap();
    temp_file("example-policy.yaml", &format!("{text}\nstore: memory\n"))
}

#[test]
fn the_http_examples_run_against_a_real_server() {
    if !installed("curl", &["--version"]) || !installed("python3", &["--version"]) {
        return;
    }
    let policy = example_policy();
    let server = Serving::start(&policy);
    let out = Command::new("bash").arg(example("http/curl.sh")).env("BASE", &server.base).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"decision\":\"deny\"") && stdout.contains("\"state\":\"approved\""), "{stdout}");
    assert!(stdout.contains("agenthalt_evaluations_total"), "{stdout}");

    // The Python agent, with a person approving what it asks for.
    drop(server);
    let server = Serving::start(&policy);
    let agent = Command::new("python3")
        .arg(example("http/agent.py"))
        .arg(&server.base)
        .env("AGENTHALT_APPROVAL_WAIT", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        for _ in 0..400 {
            let text = http
                .get(format!("{}/v1/approvals?state=pending", server.base))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let list: Value = serde_json::from_str(&text).unwrap();
            if let Some(a) = list["approvals"].as_array().unwrap().first() {
                let r = http
                    .post(format!("{}/v1/approvals/{}/decision", server.base, a["id"].as_str().unwrap()))
                    .header("content-type", "application/json")
                    .body(json!({"decision": "approve", "approver": "alice"}).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the agent asked for no approval");
    });
    let out = agent.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
}

#[test]
fn schemathesis_finds_no_server_error() {
    if !installed("schemathesis", &["--version"]) {
        return;
    }
    let policy = temp_file(
        "schemathesis.yaml",
        "guards:\n  budget:\n    max_daily_spend: 5\n  purchase:\n    require_approval_above: 50\n  scope:\n    deny_functions: [\"drop_*\"]\naudit:\n  memory: 1000\nstore: memory\n",
    );
    let server = Serving::start(&policy);
    // The document itself is valid OpenAPI.
    let validate = Command::new("python3")
        .args(["-c", "import json, sys, urllib.request; from openapi_spec_validator import validate; validate(json.load(urllib.request.urlopen(sys.argv[1])))"])
        .arg(format!("{}/openapi.json", server.base))
        .output()
        .unwrap();
    assert!(validate.status.success(), "{}", String::from_utf8_lossy(&validate.stderr));
    // Run where its cache (`.schemathesis/`) lands out of the tree.
    let out = Command::new("schemathesis")
        .current_dir(std::env::temp_dir())
        .args([
            "run",
            &format!("{}/openapi.json", server.base),
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--no-color",
            "--seed",
            "1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("passed"), "{stdout}");
}

#[test]
fn the_headless_demo_trips_every_guard_and_exits_zero() {
    let dir = std::env::temp_dir().join(format!("agenthalt-demo-{}", std::process::id()));
    let out = bin().args(["demo", "--headless", "--dir", dir.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Every guard denied or asked at least once."), "{stdout}");
    for guard in ["budget", "purchase", "deletion", "scope", "rate_limit", "sensitive_data"] {
        let line =
            stdout.lines().find(|l| l.trim_start().starts_with(guard)).unwrap_or_else(|| panic!("{guard}: {stdout}"));
        let n = |label: &str| -> u64 {
            let rest = &line[line.find(label).unwrap() + label.len()..];
            rest.split_whitespace().next().unwrap().parse().unwrap()
        };
        assert!(n(" ask ") + n(" deny ") > 0, "{line}");
    }
    // The approvals were decided by script, and the approved ones ran.
    assert!(stdout.contains("approved by you: ran it") && stdout.contains("with the edited arguments"), "{stdout}");
    // Its state is its own, under --dir.
    assert!(dir.join("store").is_dir() && dir.join("audit.jsonl").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}
