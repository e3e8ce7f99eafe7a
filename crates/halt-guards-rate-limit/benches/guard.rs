//! Rate-limit guard on a typical call on the memory store: the default limits (60 calls a minute,
//! 20 per function, bursts of 10 in 5 s, a cooldown) and a pace they allow for ever (one call
//! every 3.1 s), so that the windows hold what they hold in use; the identical-call limit is
//! raised because the bench repeats one call. Target: under 300 ns per evaluation. Run with
//! `cargo bench -p halt-guards-rate-limit`.

#![allow(clippy::unwrap_used, reason = "bench setup")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::CallContext;
use halt_store_memory::MemoryStore;
use serde_json::json;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let guard = halt_guards_rate_limit::RateLimitGuard::new(halt_guards_rate_limit::RateLimitConfig {
        max_identical_calls: Some(u32::MAX),
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
            rt.block_on(halt_testing::bench::evaluate_and_commit(
                &guard,
                &store,
                &ctx,
                Duration::from_millis(3_100),
                iters,
            ))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
