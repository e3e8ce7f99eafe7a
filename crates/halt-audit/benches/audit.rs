//! The audit's two costs: taking a record on the evaluating thread (target: under 5 µs), and
//! the writer's throughput to a file (target: at least 100,000 entries a second).
//!
//! Run with `cargo bench -p halt-audit --bench audit`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "bench code fails loudly")]

use std::time::{Duration, Instant};

// The allocator the `agenthalt` binary ships with: the queue hands every entry from one thread
// to another, and glibc's malloc pays for that in lock contention (see docs/performance.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use halt_audit::{AuditConfig, AuditLog, FileSink, Rotation};
use halt_core::{CallContext, Decision, Outcome};
use halt_engine::{Record, Recorder};
use serde_json::json;

fn call() -> (CallContext, Outcome) {
    let mut ctx = CallContext::new("send_email")
        .with_call_id("c-1")
        .with_agent("agent-7")
        .with_session("s-42")
        .with_arguments(
            json!({"to": "ops@example.com", "subject": "weekly report", "body": "All green. 3 deploys, 0 incidents."}),
        )
        .unwrap();
    ctx.timestamp = Some(1_800_000_000.0);
    let decisions = vec![
        Decision::allow("within budget").with_guard("budget".into()),
        Decision::allow("in scope").with_guard("scope".into()),
        Decision::allow("nothing sensitive").with_guard("sensitive_data".into()),
    ];
    let outcome = Outcome::new(ctx.call_id.clone(), ctx.function_name.clone(), decisions, &ctx.arguments);
    (ctx, outcome)
}

fn log(dir: &std::path::Path, name: &str, queue: usize) -> AuditLog {
    let _ = std::fs::remove_file(dir.join(name));
    let sink = FileSink::open(dir.join(name), Rotation { max_bytes: Some(256 << 20), daily: false }).unwrap();
    AuditLog::new(vec![Box::new(sink)], AuditConfig { queue, ..AuditConfig::default() }).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("halt-audit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ctx, outcome) = call();

    // Only the record calls are timed; the queue holds a whole sample, written between samples.
    let audit = log(&dir, "record.jsonl", 1 << 20);
    c.bench_function("record_one_entry", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let _ = audit.record(Record::Evaluated { context: &ctx, outcome: &outcome });
            }
            let elapsed = start.elapsed();
            assert!(audit.flush(Duration::from_secs(600)));
            elapsed
        });
    });
    assert_eq!(audit.dropped(), 0, "nothing was dropped: every record was the queued path");

    let mut group = c.benchmark_group("writer");
    const BATCH: u64 = 10_000;
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    let audit = log(&dir, "writer.jsonl", 1 << 20);
    group.bench_function("entries_to_a_file", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for _ in 0..BATCH {
                    let _ = audit.record(Record::Evaluated { context: &ctx, outcome: &outcome });
                }
                assert!(audit.flush(Duration::from_secs(600)));
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
    drop(audit);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
