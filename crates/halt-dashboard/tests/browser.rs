//! The dashboard in a real headless Chromium, driven over the DevTools protocol: the live feed,
//! approving, denying and editing from the page, a viewer's page, the phone width, and that the
//! page talks to no host but the server. Screenshots land in the folder the test prints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(clippy::print_stderr, reason = "the test says where its screenshots are, or that it skipped")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use halt_dashboard::Server;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

const AGENT: &str = "agent-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const APPROVER: &str = "approver-token-0123456789";

const POLICY: &str = "
store: memory
guards:
  budget:
    max_daily_spend: 10
    warn_threshold: 0.8
  purchase:
    max_single_purchase: 100
    require_approval_above: 50
  scope:
    deny_functions: [\"drop_*\"]
approvals:
  require_approvers:
    \"wire_*\": 2
audit:
  memory: 1000
server:
  tokens:
    - {name: bot, role: agent, token: agent-token-0123456789}
    - {name: vera, role: viewer, token: viewer-token-0123456789}
    - {name: alice, role: approver, token: approver-token-0123456789}
";

// ---------------------------------------------------------------------------------------------
// A small client of the Chrome DevTools protocol.

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Browser {
    child: Child,
    _profile: PathBuf,
    sink: tokio::sync::Mutex<SplitSink<Socket, Message>>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    events: Arc<Mutex<Vec<Value>>>,
    next: AtomicU64,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> Option<&'static str> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(name);
        }
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "chromium is not installed, and CI=true: the browser tests must run"
    );
    eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
    None
}

impl Browser {
    async fn launch(program: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let profile = std::env::temp_dir().join(format!(
            "halt-chromium-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let text = loop {
            if let Ok(t) = std::fs::read_to_string(&port_file)
                && t.lines().count() >= 2
            {
                break t;
            }
            assert!(Instant::now() < deadline, "chromium did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut lines = text.lines();
        let (port, path) = (lines.next().unwrap().trim(), lines.next().unwrap().trim());
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}")).await.unwrap();
        let (sink, mut stream) = socket.split();
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        {
            let (pending, events) = (Arc::clone(&pending), Arc::clone(&events));
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let Message::Text(text) = message else { continue };
                    let v: Value = serde_json::from_str(&text).unwrap();
                    match v["id"].as_u64() {
                        Some(id) => {
                            if let Some(tx) = pending.lock().unwrap().remove(&id) {
                                let _ = tx.send(v);
                            }
                        }
                        None => events.lock().unwrap().push(v),
                    }
                }
            });
        }
        let mut browser = Self {
            child,
            _profile: profile,
            sink: tokio::sync::Mutex::new(sink),
            pending,
            events,
            next: AtomicU64::new(1),
            session: String::new(),
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"})).await;
        let attached =
            browser.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true})).await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in ["Page.enable", "Network.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    /// Sends a command (to the page once attached) and returns its result.
    async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.sink.lock().await.send(Message::Text(message.to_string().into())).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(30), rx).await.expect("chromium answers").unwrap();
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    async fn eval(&self, expression: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expression, "awaitPromise": true, "returnByValue": true}))
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    async fn until(&self, expression: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.eval(&format!("Boolean({expression})")).await == json!(true) {
                return started.elapsed();
            }
            assert!(started.elapsed() < within, "not within {within:?}: {expression}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn open(&self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.until("document.readyState === 'complete'", Duration::from_secs(10)).await;
    }

    async fn screenshot(&self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true})).await;
        std::fs::write(path, base64_decode(shot["data"].as_str().unwrap())).unwrap();
    }

    async fn sign_in(&self, base: &str, token: &str) {
        self.open(&format!("{base}/")).await;
        self.eval("sessionStorage.clear()").await;
        self.open(&format!("{base}/")).await;
        self.until("!document.getElementById('signin').hidden", Duration::from_secs(5)).await;
        self.eval(&format!(
            "document.getElementById('token').value = {}; document.getElementById('signin-form').requestSubmit(); true",
            json!(token)
        ))
        .await;
        self.until("document.getElementById('connection').dataset.state === 'live'", Duration::from_secs(10)).await;
    }

    /// Every URL the page requested.
    fn requested(&self) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent" || e["method"] == "Network.webSocketCreated")
            .filter_map(|e| e["params"]["request"]["url"].as_str().or(e["params"]["url"].as_str()).map(str::to_owned))
            .collect()
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).map(value).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, v)| n | (u32::from(*v) << (18 - 6 * i)));
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..chunk.len() - 1]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The server and an agent.

struct Running {
    base: String,
    http: reqwest::Client,
}

async fn start() -> Running {
    let (running, stop) = start_at("127.0.0.1:0").await;
    // Serves until the test ends.
    std::mem::forget(stop);
    running
}

/// A server on `addr`, and what stops it.
async fn start_at(addr: &str) -> (Running, oneshot::Sender<()>) {
    let dir = std::env::temp_dir().join(format!("halt-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let server = Server::open(&policy).await.unwrap();
    let listener = server.listen(addr.parse().unwrap()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (Running { base, http: reqwest::Client::new() }, stop)
}

impl Running {
    async fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null))
    }

    async fn evaluate(&self, call: Value) -> Value {
        let (status, body) = self.post("/v1/evaluate", AGENT, &call).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// An agent waiting on approval `id`: resolves with the approval and when it was released.
    fn wait(&self, id: &str) -> tokio::task::JoinHandle<(Value, Instant)> {
        let url = format!("{}/v1/approvals/{id}/wait?timeout=20", self.base);
        let http = self.http.clone();
        tokio::spawn(async move {
            let r = http.get(url).bearer_auth(AGENT).send().await.unwrap();
            let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            (v, Instant::now())
        })
    }
}

fn buy(amount: f64, item: &str) -> Value {
    json!({"function_name": "purchase_item", "arguments": {"amount": amount, "category": "office", "item": item}})
}

/// Clicks `selector` inside the approval card of `id`, and returns when.
async fn click(browser: &Browser, id: &str, selector: &str) -> Instant {
    let card = format!("document.querySelector('.approval[data-id=\"{id}\"]')");
    browser.until(&format!("{card} && {card}.querySelector('{selector}')"), Duration::from_secs(5)).await;
    browser.eval(&format!("{card}.querySelector('{selector}').click(); true")).await;
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_feed_and_decides_approvals_in_a_real_browser() {
    let Some(program) = chromium() else { return };
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    eprintln!("screenshots: {}", shots.display());
    let s = start().await;
    let browser = Browser::launch(program).await;
    browser.sign_in(&s.base, APPROVER).await;
    assert_eq!(browser.eval("document.getElementById('who').textContent").await, "alice (approver)");

    // An evaluation posted to the API shows in the feed within a second.
    let posted = Instant::now();
    let answer =
        s.evaluate(json!({"function_name": "drop_table", "call_id": "feed-1", "arguments": {"table": "users"}})).await;
    assert_eq!(answer["decision"], "deny");
    browser.until("document.querySelector('#feed li[data-call=\"feed-1\"]')", Duration::from_secs(1)).await;
    assert!(posted.elapsed() < Duration::from_secs(1));
    for i in 0..4 {
        s.evaluate(json!({"function_name": "render_video", "arguments": {"estimated_cost": 2, "take": i}})).await;
    }

    // Approve: the waiting agent is released within a second of the click.
    let asked = s.evaluate(buy(75.0, "chair")).await;
    let id = asked["approval"]["id"].as_str().unwrap().to_owned();
    let waiter = s.wait(&id);
    let clicked = click(&browser, &id, ".approve").await;
    let (approval, released) = waiter.await.unwrap();
    assert_eq!((approval["state"].as_str(), approval["decided_by"].as_str()), (Some("approved"), Some("alice")));
    assert!(released.saturating_duration_since(clicked) < Duration::from_secs(1));
    assert_eq!(s.evaluate(buy(75.0, "chair")).await["allowed"], true);

    // Deny, with a reason typed in the page.
    let asked = s.evaluate(buy(80.0, "desk")).await;
    let id = asked["approval"]["id"].as_str().unwrap().to_owned();
    let waiter = s.wait(&id);
    let card = format!("document.querySelector('.approval[data-id=\"{id}\"]')");
    browser.until(&card, Duration::from_secs(5)).await;
    browser.eval(&format!("{card}.querySelector('.reason').value = 'not this quarter'; true")).await;
    let clicked = click(&browser, &id, ".deny").await;
    let (approval, released) = waiter.await.unwrap();
    assert_eq!((approval["state"].as_str(), approval["reason"].as_str()), (Some("denied"), Some("not this quarter")));
    assert!(released.saturating_duration_since(clicked) < Duration::from_secs(1));

    // Edit: invalid JSON is refused in the page and nothing is sent; valid JSON approves.
    let asked = s.evaluate(buy(95.0, "monitor")).await;
    let id = asked["approval"]["id"].as_str().unwrap().to_owned();
    let waiter = s.wait(&id);
    click(&browser, &id, ".edit").await;
    let editor = format!("document.querySelector('.approval[data-id=\"{id}\"] .editor')");
    browser.eval(&format!("{editor}.value = '{{\"amount\": 40,'; true")).await;
    click(&browser, &id, ".approve-edited").await;
    let error_of = format!("document.querySelector('.approval[data-id=\"{id}\"] .edit-error').textContent");
    browser.until(&format!("{error_of}.includes('invalid JSON')"), Duration::from_secs(2)).await;
    let r = s.http.get(format!("{}/v1/approvals/{id}", s.base)).bearer_auth(APPROVER).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("\"state\":\"pending\""), "nothing was sent");
    let edited = json!({"amount": 40, "category": "office", "item": "monitor"}).to_string();
    browser.eval(&format!("{editor}.value = {}; true", json!(edited))).await;
    let clicked = click(&browser, &id, ".approve-edited").await;
    let (approval, released) = waiter.await.unwrap();
    assert_eq!(approval["state"], "approved");
    assert_eq!(approval["edit"]["arguments"]["amount"], 40);
    assert!(released.saturating_duration_since(clicked) < Duration::from_secs(1));
    let again = s.evaluate(buy(95.0, "monitor")).await;
    assert_eq!((again["allowed"].as_bool(), again["modified_arguments"]["amount"].as_i64()), (Some(true), Some(40)));

    // A two-person approval shows "1 of 2" after the first approver.
    let asked = s.evaluate(json!({"function_name": "wire_transfer", "arguments": {"amount": 70, "to": "ACME"}})).await;
    let id = asked["approval"]["id"].as_str().unwrap().to_owned();
    click(&browser, &id, ".approve").await;
    browser
        .until(
            &format!("document.querySelector('.approval[data-id=\"{id}\"] .votes')?.textContent.includes('1 of 2')"),
            Duration::from_secs(5),
        )
        .await;
    s.evaluate(buy(60.0, "lamp")).await;
    browser.until("document.querySelectorAll('.approval').length >= 2", Duration::from_secs(5)).await;
    browser.until("document.querySelector('.gauge.warn, .gauge.danger')", Duration::from_secs(5)).await;
    // The fill is as wide as the share used (the CSP refuses style attributes: set through CSSOM).
    let share = browser
        .eval("(() => { const g = document.querySelector('.gauge'); return g.querySelector('.fill').getBoundingClientRect().width / g.querySelector('.bar').getBoundingClientRect().width; })()")
        .await;
    let share = share.as_f64().unwrap();
    assert!((0.79..0.82).contains(&share), "the gauge shows {share} of its width for 8.02 of 10");
    // The audit search finds the denial.
    browser.eval("document.querySelector('#audit-form [name=decision]').value = 'deny'; document.getElementById('audit-form').requestSubmit(); true").await;
    browser.until("document.querySelector('#audit td')?.textContent", Duration::from_secs(5)).await;
    browser.screenshot(&shots.join("approver-1280.png")).await;
    // This picture is the README's: the dashboard in use, taken here.
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
    std::fs::copy(shots.join("approver-1280.png"), docs).unwrap();

    // Light theme on request.
    browser.eval("document.getElementById('theme').click(); true").await;
    assert_eq!(browser.eval("document.documentElement.dataset.theme").await, "light");
    browser.screenshot(&shots.join("approver-light.png")).await;
    browser.eval("document.getElementById('theme').click(); true").await;

    // A viewer sees the queue without a single action button; a forged decision is refused.
    browser.sign_in(&s.base, VIEWER).await;
    browser.until("document.querySelectorAll('.approval').length >= 2", Duration::from_secs(5)).await;
    assert_eq!(browser.eval("document.querySelectorAll('.approval button, .approval textarea').length").await, 0);
    let (status, _) = s.post(&format!("/v1/approvals/{id}/decision"), VIEWER, &json!({"decision": "approve"})).await;
    assert_eq!(status, 403);
    browser.screenshot(&shots.join("viewer-1280.png")).await;

    // At phone width nothing scrolls sideways.
    browser
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": true}),
        )
        .await;
    browser.sign_in(&s.base, APPROVER).await;
    browser.until("document.querySelectorAll('.approval').length >= 2", Duration::from_secs(5)).await;
    let widths =
        browser.eval("[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]").await;
    assert!(widths[0].as_u64().unwrap() <= 375 && widths[1].as_u64().unwrap() <= 375, "{widths}");
    browser.screenshot(&shots.join("approver-375.png")).await;

    // A wrong token is refused in the page, which asks again.
    browser.open(&format!("{}/", s.base)).await;
    browser.eval("sessionStorage.setItem('agenthalt-token', 'wrong-token-0123456789'); location.reload(); true").await;
    browser
        .until(
            "document.readyState === 'complete' && !document.getElementById('signin').hidden",
            Duration::from_secs(5),
        )
        .await;
    assert!(browser.eval("document.getElementById('error').textContent").await.as_str().unwrap().contains("refused"));

    // The page broke none of its own content security policy.
    let refused: Vec<String> = browser
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["method"] == "Log.entryAdded" || e["method"] == "Runtime.consoleAPICalled")
        .map(Value::to_string)
        .filter(|t| t.contains("Content Security Policy") || t.contains("Content-Security-Policy"))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");

    // The page asked no host but the server.
    let host = s.base.trim_start_matches("http://").to_owned();
    let requested = browser.requested();
    assert!(requested.len() > 10, "{requested:?}");
    for url in &requested {
        let same = url.starts_with(&format!("http://{host}/"))
            || url.starts_with(&format!("ws://{host}/"))
            || url.starts_with("data:")
            || url == "about:blank";
        assert!(same, "the page asked another host: {url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_when_the_server_is_gone_and_reconnects_by_itself() {
    let Some(program) = chromium() else { return };
    let (s, stop) = start_at("127.0.0.1:0").await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let browser = Browser::launch(program).await;
    browser.sign_in(&s.base, APPROVER).await;
    // The server goes away: the page says so.
    stop.send(()).unwrap();
    browser.until("document.getElementById('connection').dataset.state === 'down'", Duration::from_secs(10)).await;
    browser
        .until("document.getElementById('error').textContent.includes('reconnecting')", Duration::from_secs(5))
        .await;
    // It comes back on the same address: the page is live again, with no click.
    let mut again = None;
    for _ in 0..100 {
        if tokio::net::TcpListener::bind(&addr).await.is_ok() {
            again = Some(start_at(&addr).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, _stop) = again.expect("the address is free again");
    browser.until("document.getElementById('connection').dataset.state === 'live'", Duration::from_secs(20)).await;
    // And the feed works on the new connection.
    s.evaluate(json!({"function_name": "drop_table", "call_id": "after-restart"})).await;
    browser.until("document.querySelector('#feed li[data-call=\"after-restart\"]')", Duration::from_secs(2)).await;
    assert_eq!(browser.eval("document.getElementById('error').hidden").await, true);
}
