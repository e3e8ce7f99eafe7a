//! Purchase guard on a typical call on the memory store.
//! Target: under 500 ns per evaluation. Run with `cargo bench -p halt-guards-purchase`.

#![allow(clippy::unwrap_used, reason = "bench setup")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::CallContext;
use halt_guards_purchase::{PurchaseConfig, PurchaseGuard};
use halt_store_memory::MemoryStore;
use serde_json::json;

fn bench(c: &mut Criterion) {
    // Limits no run of the bench can reach: it measures allowed calls, not denials.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let config = PurchaseConfig {
        max_single_purchase: Some("100".parse().unwrap()),
        max_daily_purchases: Some("1000000000000".parse().unwrap()),
        require_approval_above: Some("50".parse().unwrap()),
        blocked_categories: vec!["luxury".into(), "gambling".into()],
        ..PurchaseConfig::default()
    };
    let guard = PurchaseGuard::new(config).unwrap();
    let store = MemoryStore::new();
    let ctx = CallContext::new("purchase_item")
        .with_session("s-1")
        .with_arguments(json!({"item": "printer paper", "amount": 12.5, "category": "office", "currency": "USD"}))
        .unwrap();
    c.bench_function("purchase_typical_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(halt_testing::bench::evaluate_and_commit(&guard, &store, &ctx, Duration::from_millis(1), iters))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
