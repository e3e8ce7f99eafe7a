//! The rules guard: 20 rules against a typical call (an HTTP request the first covering rules
//! look at, every matcher kind compiled). Target: under 1 µs per evaluation.
//! Run with `cargo bench -p halt-guards-rules`.

#![allow(clippy::unwrap_used, reason = "bench setup")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::CallContext;
use halt_guards_rules::{RulesConfig, RulesGuard};
use halt_store_memory::MemoryStore;
use serde_json::json;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut rules = vec![
        json!({"functions": ["write_file", "delete_file"], "where": {"field": "path", "path": {"glob": ["/etc/**", "**/.env", "protected/**"]}}, "decision": "deny"}),
        json!({"functions": ["http_*"], "where": {"field": "url", "url": {"private_network": true}}, "decision": "deny"}),
        json!({"functions": ["send_email"], "where": {"field": "to.*", "email_domain": ["example.com"]}, "decision": "allow"}),
        json!({"functions": ["refund"], "where": {"field": "amount", ">": 500}, "decision": "deny"}),
        json!({"functions": ["run_sql"], "where": {"field": "query", "regex": "(?i)^\\s*(drop|truncate)\\b"}, "decision": "deny"}),
        json!({"functions": ["http_*"], "where": {"field": "method", "one_of": ["DELETE", "PUT"]}, "decision": "require_approval"}),
    ];
    for i in 0..12 {
        rules.push(
            json!({"functions": [format!("tool_{i}_*")], "where": {"field": "x", "exists": true}, "decision": "deny"}),
        );
    }
    rules.push(json!({"functions": ["http_*"], "where": {"field": "url", "url": {"scheme": ["https"], "host": ["*.partner.com"]}}, "decision": "allow"}));
    rules.push(json!({"functions": ["http_*"], "decision": "require_approval"}));
    assert_eq!(rules.len(), 20);
    let config: RulesConfig = serde_json::from_value(json!({"rules": rules})).unwrap();
    let guard = RulesGuard::new(config).unwrap();
    let ctx = CallContext::new("http_get")
        .with_agent("agent-7")
        .with_session("s-1")
        .with_arguments(json!({"url": "https://api.partner.com/v1/orders?limit=10", "method": "GET", "headers": {"accept": "application/json"}}))
        .unwrap();
    let store = MemoryStore::new();
    c.bench_function("rules_20_typical_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(halt_testing::bench::evaluate_and_commit(&guard, &store, &ctx, Duration::from_millis(1), iters))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
