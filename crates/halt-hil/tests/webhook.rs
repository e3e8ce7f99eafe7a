//! The webhook handler against a real HTTP server on loopback that verifies every request's
//! signature and refuses replays: an answer in the response, an answer later through the broker,
//! and each failure (wrong secret, replayed or stale timestamp, 500, slow server, malformed
//! body) refusing the call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use halt_core::{CallContext, Clock, Decision, ManualClock, StateStore, SystemClock, Timestamp};
use halt_engine::Engine;
use halt_hil::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
use halt_hil::{ApprovalState, Broker, BrokerConfig, Filter, Verdict, Webhook};
use halt_store_memory::MemoryStore;
use halt_testing::guards::{ReservingGuard, StaticGuard};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &[u8] = b"the-receivers-shared-secret";

/// How the receiver answers a request whose signature it accepted.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Approve,
    Deny,
    Later,
    Fail500,
    Slow,
    Malformed,
}

/// Every request as received (head and body), and the status it was answered with.
type Log = Mutex<Vec<(Vec<u8>, u16)>>;

/// A real HTTP/1.1 server on loopback: it checks each request with [`verify`], remembers the
/// signatures it accepted (a second use is a replay), and answers as its mode says.
struct Receiver {
    url: String,
    seen: Arc<Log>,
}

impl Receiver {
    async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/approvals", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(HashSet::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (log, accepted) = (Arc::clone(&log), Arc::clone(&accepted));
                tokio::spawn(async move { serve(stream, mode, &log, &accepted).await });
            }
        });
        Self { url, seen }
    }

    fn statuses(&self) -> Vec<u16> {
        self.seen.lock().unwrap().iter().map(|(_, s)| *s).collect()
    }

    fn first_body(&self) -> Value {
        let seen = self.seen.lock().unwrap();
        let raw = &seen[0].0;
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        serde_json::from_slice(&raw[at..]).unwrap()
    }
}

async fn serve(mut stream: TcpStream, mode: Mode, log: &Log, accepted: &Mutex<HashSet<String>>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let (head_end, length) = loop {
        let Ok(n) = stream.read(&mut buf).await else { return };
        if n == 0 {
            return;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..at]).to_lowercase();
            let length = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            break (at + 4, length);
        }
    };
    while raw.len() < head_end + length {
        let Ok(n) = stream.read(&mut buf).await else { return };
        if n == 0 {
            return;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
    let body = &raw[head_end..head_end + length];
    let (ts, sig) = (header(&head, TIMESTAMP_HEADER), header(&head, SIGNATURE_HEADER));
    let now = SystemClock.now().as_micros() / 1_000_000;
    let checked = verify(SECRET, ts.as_deref(), sig.as_deref(), body, now, Duration::from_secs(300));
    let fresh = checked.is_ok() && accepted.lock().unwrap().insert(sig.clone().unwrap_or_default());
    let (status, answer) = if !fresh {
        (401, String::new())
    } else {
        match mode {
            Mode::Approve => (200, json!({"approved": true, "approver": "alice", "reason": "ok"}).to_string()),
            Mode::Deny => (200, json!({"approved": false, "approver": "bob"}).to_string()),
            Mode::Later => (202, String::new()),
            Mode::Fail500 => (500, "oops".into()),
            Mode::Slow => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                (200, json!({"approved": true}).to_string())
            }
            Mode::Malformed => (200, "{\"approved\": maybe}".into()),
        }
    };
    log.lock().unwrap().push((raw.clone(), status));
    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}", answer.len());
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_owned()))
}

struct Setup {
    engine: Engine,
    broker: Broker,
}

fn setup(webhook: Webhook, clock: Arc<dyn Clock>) -> Setup {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let config = BrokerConfig { poll_interval: Duration::from_millis(5), ..BrokerConfig::default() };
    let broker = Broker::new(Arc::clone(&store), Arc::clone(&clock), config).with_handler(Arc::new(webhook));
    let engine = Engine::builder()
        .store_arc(store)
        .clock_arc(clock)
        .guard(ReservingGuard::new("spend", "k", 300_000, 1_000_000))
        .guard(StaticGuard::new("ask", Decision::require_approval("a person decides")))
        .approval_handler(broker.clone())
        .build()
        .unwrap();
    Setup { engine, broker }
}

fn call() -> CallContext {
    CallContext::new("pay_invoice")
        .with_arguments(json!({"invoice": "INV-7", "amount": 120}))
        .unwrap()
        .with_agent("bot")
}

async fn spent(engine: &Engine) -> i64 {
    engine.store().total("k", ReservingGuard::window(), engine.clock().now()).await.unwrap()
}

fn hook(url: &str, secret: &[u8], timeout_ms: u64) -> Webhook {
    Webhook::new(url, secret, Duration::from_millis(timeout_ms)).unwrap()
}

#[tokio::test]
async fn the_receiver_approves_or_denies_in_its_response() {
    for (mode, allowed, approver) in [(Mode::Approve, true, "alice"), (Mode::Deny, false, "bob")] {
        let receiver = Receiver::start(mode).await;
        let s = setup(hook(&receiver.url, SECRET, 5_000), Arc::new(SystemClock));
        let o = s.engine.evaluate(call()).await;
        assert_eq!(o.is_allowed(), allowed, "{mode:?}: {o:?}");
        assert_eq!(o.approver(), Some(approver));
        assert_eq!(spent(&s.engine).await, if allowed { 300_000 } else { 0 });
        assert_eq!(receiver.statuses(), [200]);
        let body = receiver.first_body();
        let approval = s.broker.list(&Filter::default()).await.unwrap().pop().unwrap();
        assert_eq!(body["approval_id"], approval.id.as_str());
        assert_eq!(body["function"], "pay_invoice");
        assert_eq!(body["arguments"], json!({"invoice": "INV-7", "amount": 120}));
        assert_eq!(body["reasons"], json!(["a person decides"]));
        assert_eq!(approval.decided_by.as_deref(), Some(approver));
    }
}

#[tokio::test]
async fn the_receiver_may_answer_later_through_the_broker() {
    let receiver = Receiver::start(Mode::Later).await;
    let s = setup(hook(&receiver.url, SECRET, 5_000), Arc::new(SystemClock));
    let running = tokio::spawn({
        let engine = s.engine.clone();
        async move { engine.evaluate(call()).await }
    });
    let mut id = None;
    for _ in 0..2_000 {
        if receiver.statuses() == [202] {
            id = receiver.first_body()["approval_id"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let id = id.expect("the receiver was asked");
    assert_eq!(s.broker.get(&id).await.unwrap().state, ApprovalState::Pending, "still waiting");
    s.broker.decide(&id, Verdict::Approve, "carol", None).await.unwrap();
    let o = running.await.unwrap();
    assert!(o.is_allowed(), "{o:?}");
    assert_eq!(o.approver(), Some("carol"));
}

/// Runs one call against `receiver` through `webhook`; it must be refused and release.
async fn refused(webhook: Webhook, clock: Arc<dyn Clock>, why: &str) -> Setup {
    let s = setup(webhook, clock);
    let o = s.engine.evaluate(call()).await;
    assert!(o.is_denied(), "{why}: {o:?}");
    assert_eq!(o.approved(), Some(false), "{why}");
    assert_eq!(spent(&s.engine).await, 0, "{why}: released");
    let approval = s.broker.list(&Filter::default()).await.unwrap().pop().unwrap();
    assert_eq!(approval.state, ApprovalState::Denied, "{why}");
    let reason = approval.reason.unwrap_or_default();
    assert!(reason.starts_with("the approval handler failed: approval channel failed: webhook:"), "{why}: {reason}");
    s
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_receiver_and_denied() {
    let receiver = Receiver::start(Mode::Approve).await;
    refused(hook(&receiver.url, b"not-the-shared-secret", 5_000), Arc::new(SystemClock), "wrong secret").await;
    assert_eq!(receiver.statuses(), [401]);
}

#[tokio::test]
async fn a_stale_or_replayed_timestamp_is_refused() {
    let receiver = Receiver::start(Mode::Approve).await;
    // A sender whose timestamp is an hour old.
    let stale: Arc<dyn Clock> =
        Arc::new(ManualClock::new(Timestamp::from_secs(SystemClock.now().as_micros() / 1_000_000 - 3_600)));
    refused(hook(&receiver.url, SECRET, 5_000).with_clock(Arc::clone(&stale)), stale, "stale").await;
    assert_eq!(receiver.statuses(), [401]);

    // A request the receiver accepted, captured and sent again as it was: refused.
    let fresh = Receiver::start(Mode::Approve).await;
    let s = setup(hook(&fresh.url, SECRET, 5_000), Arc::new(SystemClock));
    assert!(s.engine.evaluate(call()).await.is_allowed());
    let captured = fresh.seen.lock().unwrap()[0].0.clone();
    let mut replay =
        TcpStream::connect(fresh.url.trim_start_matches("http://").trim_end_matches("/approvals")).await.unwrap();
    replay.write_all(&captured).await.unwrap();
    let mut status = vec![0u8; 12];
    replay.read_exact(&mut status).await.unwrap();
    assert_eq!(&status, b"HTTP/1.1 401", "a replayed request is refused");
}

#[tokio::test]
async fn a_500_a_slow_server_and_a_malformed_body_are_each_denied() {
    let receiver = Receiver::start(Mode::Fail500).await;
    refused(hook(&receiver.url, SECRET, 5_000), Arc::new(SystemClock), "500").await;
    assert_eq!(receiver.statuses(), [500]);

    let receiver = Receiver::start(Mode::Slow).await;
    refused(hook(&receiver.url, SECRET, 300), Arc::new(SystemClock), "slow").await;

    let receiver = Receiver::start(Mode::Malformed).await;
    refused(hook(&receiver.url, SECRET, 5_000), Arc::new(SystemClock), "malformed").await;
    assert_eq!(receiver.statuses(), [200]);

    // Nobody listening at all.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/x", closed.local_addr().unwrap());
    drop(closed);
    refused(hook(&url, SECRET, 5_000), Arc::new(SystemClock), "refused connection").await;
}
