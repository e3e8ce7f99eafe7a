//! Deletion guard on a typical call on the memory store.
//! Target: under 300 ns per evaluation. Run with `cargo bench -p halt-guards-deletion`.

#![allow(clippy::unwrap_used, reason = "bench setup")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::CallContext;
use halt_store_memory::MemoryStore;
use serde_json::json;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let guard = halt_guards_deletion::DeletionGuard::new(halt_guards_deletion::DeletionConfig {
        allow_patterns: vec!["temp_*".into(), "draft_*".into(), "cache_*".into()],
        deny_patterns: vec!["*_production".into(), "*_backup".into()],
        protected_resources: vec!["inbox".into(), "sent".into(), "important".into()],
        max_deletions_per_day: Some(1_000_000_000),
        ..Default::default()
    })
    .unwrap();
    let ctx = CallContext::new("delete_file")
        .with_session("s-1")
        .with_arguments(json!({"resource_id": "temp_report_17.txt"}))
        .unwrap();
    let store = MemoryStore::new();
    c.bench_function("deletion_typical_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(halt_testing::bench::evaluate_and_commit(&guard, &store, &ctx, Duration::from_millis(1), iters))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
