//! Rate-limit guard (default windows, identical-call detection) on a typical call on the memory store.
//! Target: under 300 ns per evaluation. Run with `cargo bench -p halt-guards-rate-limit`.

#![allow(clippy::unwrap_used, reason = "bench setup")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::{CallContext, MemoryStore};
use serde_json::json;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let guard = halt_guards_rate_limit::RateLimitGuard::new(halt_guards_rate_limit::RateLimitConfig {
        max_calls_per_minute: Some(1_000_000),
        max_calls_per_minute_per_function: Some(1_000_000),
        burst_threshold: Some(1_000_000),
        // High enough that the bench measures the common path, an allowed call (with the
        // loop-detection record read and swapped), not a loop denial.
        max_identical_calls: Some(1_000_000_000),
        ..Default::default()
    })
    .unwrap();
    let ctx = CallContext::new("search_web")
        .with_agent("agent-7")
        .with_session("s-1")
        .with_arguments(json!({"query": "rust"}))
        .unwrap();
    let store = MemoryStore::new();
    c.bench_function("rate_limit_typical_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(halt_testing::bench::evaluate_and_commit(&guard, &store, &ctx, Duration::from_millis(1), iters))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
