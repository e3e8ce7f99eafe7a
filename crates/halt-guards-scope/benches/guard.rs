//! Scope guard on a typical call on the memory store.
//! Target: under 300 ns per evaluation. Run with `cargo bench -p halt-guards-scope`.

#![allow(clippy::unwrap_used, reason = "bench setup")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::CallContext;
use halt_store_memory::MemoryStore;
use serde_json::json;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let guard = halt_guards_scope::ScopeGuard::new(halt_guards_scope::ScopeConfig {
        allow_functions: vec!["get_*".into(), "list_*".into(), "search_*".into(), "send_*".into()],
        deny_functions: vec!["drop_*".into(), "format_*".into(), "shutdown_*".into()],
        deny_by_agent: [("untrusted_agent".to_owned(), vec!["send_*".to_owned(), "delete_*".to_owned()])].into(),
        require_approval_functions: vec!["send_email".into(), "post_*".into()],
        ..Default::default()
    })
    .unwrap();
    let ctx = CallContext::new("search_web")
        .with_agent("agent-7")
        .with_session("s-1")
        .with_arguments(json!({"query": "rust"}))
        .unwrap();
    let store = MemoryStore::new();
    c.bench_function("scope_typical_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(halt_testing::bench::evaluate_and_commit(&guard, &store, &ctx, Duration::from_millis(1), iters))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
