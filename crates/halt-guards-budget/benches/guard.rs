//! Budget guard on a typical call: session, daily and monthly windows on the memory store.
//! Target: under 500 ns per evaluation. Run with `cargo bench -p halt-guards-budget`.

#![allow(clippy::unwrap_used, reason = "bench setup")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::CallContext;
use halt_guards_budget::{BudgetConfig, BudgetGuard};
use halt_store_memory::MemoryStore;
use serde_json::json;

fn bench(c: &mut Criterion) {
    // Limits no run of the bench can reach: it measures allowed calls, not denials.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let config = BudgetConfig {
        max_call_cost: Some("5".parse().unwrap()),
        max_session_spend: Some("1000000000000".parse().unwrap()),
        max_daily_spend: Some("1000000000000".parse().unwrap()),
        max_monthly_spend: Some("1000000000000".parse().unwrap()),
        ..BudgetConfig::default()
    };
    let guard = BudgetGuard::new(config).unwrap();
    let store = MemoryStore::new();
    let ctx = CallContext::new("gpt4_call")
        .with_session("s-1")
        .with_agent("a-1")
        .with_arguments(json!({"prompt": "summarise the report", "estimated_cost": 0.03}))
        .unwrap();
    c.bench_function("budget_typical_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(halt_testing::bench::evaluate_and_commit(&guard, &store, &ctx, Duration::from_millis(1), iters))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
