//! What the log writes and how it behaves under load: redaction of every secret wherever it
//! hides, a valid chain from concurrent evaluations, a slow sink that never slows evaluation
//! (its drops counted and recorded), a required audit that refuses calls it cannot write, and
//! queries over the ring and files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use halt_audit::{
    AuditConfig, AuditLog, CallbackSink, EntryKind, FileSink, OnFull, Problem, Query, Ring, Rotation, Sink, verify,
};
use halt_core::names::NamePatterns;
use halt_core::{CallContext, Decision};
use halt_engine::{ApprovalResponse, Engine};
use halt_testing::guards::StaticGuard;
use serde_json::json;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("halt-audit-log-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn file_log(path: &std::path::Path, config: AuditConfig) -> AuditLog {
    let sink = FileSink::open(path, Rotation::default()).unwrap();
    AuditLog::new(vec![Box::new(sink)], config).unwrap()
}

const SSN: &str = "123-45-6789";
const CARD: &str = "4111 1111 1111 1111";
const AWS: &str = "AKIAZ7Q3N5LK2XJ4WB6P";
const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7Vn3lq1m9fV0Xr7YJtU2p8sQ1kL5aBcDeFgHiJkLmNoPqRsT\n-----END RSA PRIVATE KEY-----";

#[test]
fn no_secret_reaches_the_file_wherever_it_hides() {
    let d = dir("redact");
    let path = d.join("audit.jsonl");
    let audit = file_log(&path, AuditConfig::default());
    // No sensitive-data guard at all: the audit redacts whatever the policy enables.
    let engine = Engine::builder()
        .guard(StaticGuard::new("ask", Decision::require_approval("check")).only_for("wire"))
        .recorder(Arc::new(audit.clone()))
        .build()
        .unwrap();
    let calls = [
        json!({"note": format!("my ssn is {SSN}")}),
        json!({"card": CARD, "items": [[{"deep": [format!("card {CARD} ok")]}]]}),
        json!({"config": {"aws": [AWS], "nested": {"list": [[[AWS]]]}}}),
        json!({"headers": [{"authorization": format!("Bearer {JWT}")}], "token": JWT}),
        json!({"files": [{"name": "id_rsa", "content": KEY}]}),
    ];
    for (i, args) in calls.iter().enumerate() {
        let call = CallContext::new("send").with_arguments(args.clone()).unwrap().with_call_id(format!("c{i}"));
        engine.evaluate_blocking(call);
    }
    // An approver who pastes a secret in their reason, and an edit that carries one.
    let held = Engine::builder()
        .guard(StaticGuard::new("ask", Decision::require_approval("check")))
        .recorder(Arc::new(audit.clone()))
        .build()
        .unwrap();
    held.evaluate_blocking(CallContext::new("wire").with_call_id("w1"));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let answer = ApprovalResponse::refuse("alice").with_reason(format!("his SSN {SSN} is on file"));
    rt.block_on(held.resolve_approval("w1", &answer)).unwrap();
    assert!(audit.flush(Duration::from_secs(10)));

    let raw = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&raw);
    for (secret, name) in
        [(SSN, "ssn"), (CARD, "card"), (AWS, "aws key"), (JWT, "jwt"), ("MIIEowIBAAKCAQEA7Vn3", "private key")]
    {
        assert!(!text.contains(secret), "the {name} reached the file");
        // Nor escaped in some other spelling of JSON.
        assert!(!text.contains(&serde_json::to_string(secret).unwrap()[1..secret.len()]), "the {name}, escaped");
    }
    assert!(text.contains("[REDACTED"), "redactions are marked");
    assert_eq!(verify(&[&path]).unwrap().entries, 8, "5 evaluations; the held call, its request and its decision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_tasks_make_one_valid_chain() {
    let d = dir("concurrent");
    let path = d.join("audit.jsonl");
    let audit = file_log(&path, AuditConfig { queue: 20_000, ..AuditConfig::default() });
    let engine = Engine::builder()
        .guard(StaticGuard::new("scope", Decision::allow("ok")))
        .recorder(Arc::new(audit.clone()))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for i in 0..1_250 {
                    let call = CallContext::new("read").with_call_id(format!("t{t}-{i}"));
                    engine.evaluate(call).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(audit.flush(Duration::from_secs(30)));
    assert_eq!(audit.dropped(), 0);
    let v = verify(&[&path]).unwrap();
    assert_eq!(v.entries, 10_000);
    let (entries, skipped) = Query::default().over_files(&[&path]).unwrap();
    assert_eq!(skipped, 0);
    assert_eq!(entries.iter().filter(|e| e.kind == Some(EntryKind::Evaluation)).count(), 10_000);
    let ids: std::collections::BTreeSet<_> = entries.iter().map(|e| e.call_id.clone()).collect();
    assert_eq!(ids.len(), 10_000, "every call once");
}

#[test]
fn a_sink_that_blocks_does_not_slow_evaluation_and_its_drops_are_recorded() {
    let d = dir("slow");
    let path = d.join("audit.jsonl");
    let written = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&written);
    let slow = CallbackSink::new(move |_| {
        std::thread::sleep(Duration::from_millis(20));
        seen.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    let file = FileSink::open(&path, Rotation::default()).unwrap();
    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(file), Box::new(slow)];
    let audit = AuditLog::new(sinks, AuditConfig { queue: 8, ..AuditConfig::default() }).unwrap();
    let engine = Engine::builder().recorder(Arc::new(audit.clone())).build().unwrap();
    for i in 0..500 {
        // Every call is answered although the sink takes 20 ms an entry: 500 calls would take
        // 10 s if evaluation waited for it.
        assert!(engine.evaluate_blocking(CallContext::new("read").with_call_id(format!("c{i}"))).is_allowed());
    }
    let dropped = audit.dropped();
    assert!(dropped > 400, "most entries were dropped, and counted: {dropped}");
    // One more entry after the drops carries the gap into the chain.
    engine.evaluate_blocking(CallContext::new("read").with_call_id("last"));
    assert!(audit.flush(Duration::from_secs(30)));
    let e = verify(&[&path]).unwrap_err();
    let Problem::Gap { lost } = e.problem else { panic!("{e}") };
    assert!(lost > 0 && lost <= audit.dropped(), "{lost} of {}", audit.dropped());
    assert!(written.load(Ordering::SeqCst) < 100);
}

#[test]
fn a_required_audit_that_cannot_write_refuses_calls() {
    let failing = CallbackSink::new(|_| Err(std::io::Error::other("the disk is full")));
    let audit =
        AuditLog::new(vec![Box::new(failing)], AuditConfig { required: true, ..AuditConfig::default() }).unwrap();
    let engine = Engine::builder().recorder(Arc::new(audit.clone())).build().unwrap();
    // The first entry is queued before anyone knows the sink fails; once it has failed, every
    // call is refused.
    engine.evaluate_blocking(CallContext::new("read"));
    assert!(audit.flush(Duration::from_secs(5)));
    for _ in 0..3 {
        let o = engine.evaluate_blocking(CallContext::new("read"));
        assert!(o.is_denied(), "{o:?}");
        assert_eq!(o.denial_reasons(), ["audit unavailable (fail-safe)"]);
    }
    // Not required: the same failure lets calls run.
    let failing = CallbackSink::new(|_| Err(std::io::Error::other("the disk is full")));
    let audit = AuditLog::new(vec![Box::new(failing)], AuditConfig::default()).unwrap();
    let engine = Engine::builder().recorder(Arc::new(audit.clone())).build().unwrap();
    engine.evaluate_blocking(CallContext::new("read"));
    assert!(audit.flush(Duration::from_secs(5)));
    assert!(engine.evaluate_blocking(CallContext::new("read")).is_allowed());

    // A full queue with `on_full: deny` refuses too.
    let slow = CallbackSink::new(|_| {
        std::thread::sleep(Duration::from_millis(50));
        Ok(())
    });
    let config = AuditConfig { queue: 1, on_full: OnFull::Deny, ..AuditConfig::default() };
    let audit = AuditLog::new(vec![Box::new(slow)], config).unwrap();
    let engine = Engine::builder().recorder(Arc::new(audit)).build().unwrap();
    let refused = (0..20).filter(|_| engine.evaluate_blocking(CallContext::new("read")).is_denied()).count();
    assert!(refused > 0);
}

#[test]
fn queries_select_over_the_ring_and_files() {
    let d = dir("query");
    let path = d.join("audit.jsonl");
    let ring = Ring::new(100);
    let file = FileSink::open(&path, Rotation::default()).unwrap();
    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(file), Box::new(ring.clone())];
    let audit = AuditLog::new(sinks, AuditConfig::default()).unwrap();
    let engine = Engine::builder()
        .guard(StaticGuard::new("scope", Decision::deny("no deletes")).only_for("delete_file"))
        .recorder(Arc::new(audit.clone()))
        .build()
        .unwrap();
    for (f, agent) in [("delete_file", "a"), ("read_file", "a"), ("delete_file", "b"), ("DELETE_FILE", "b")] {
        engine.evaluate_blocking(CallContext::new(f).with_agent(agent));
    }
    assert!(audit.flush(Duration::from_secs(5)));
    let q = Query {
        decision: Some("deny".into()),
        function: Some(NamePatterns::new(["delete_*"]).unwrap()),
        ..Query::default()
    };
    assert_eq!(ring.query(&q).len(), 3);
    assert_eq!(q.over_files(&[&path]).unwrap().0.len(), 3);
    let by_agent = Query { agent_id: Some("b".into()), limit: Some(1), ..q.clone() };
    let last = ring.query(&by_agent);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].function.as_deref(), Some("DELETE_FILE"), "the limit keeps the latest");
    let by_guard = Query { guard: Some("scope".into()), ..Query::default() };
    assert_eq!(ring.query(&by_guard).len(), 3);
    let future = Query { since: Some(4e9), ..Query::default() };
    assert!(ring.query(&future).is_empty());
}

#[test]
fn dropping_the_last_handle_writes_what_is_queued_and_stops_the_writer() {
    let d = dir("drop");
    let path = d.join("audit.jsonl");
    let audit = file_log(&path, AuditConfig::default());
    let engine = Engine::builder().recorder(Arc::new(audit)).build().unwrap();
    for i in 0..200 {
        engine.evaluate_blocking(CallContext::new("read").with_call_id(format!("c{i}")));
    }
    drop(engine);
    assert_eq!(verify(&[&path]).unwrap().entries, 200, "every queued entry was written before the writer stopped");
    // The file is free to be carried on by a new log.
    let again = file_log(&path, AuditConfig::default());
    again.close();
    assert_eq!(verify(&[&path]).unwrap().entries, 200);
}
