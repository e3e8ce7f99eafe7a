//! Sensitive-data guard with every detector on.
//! Targets: a 2 KiB nested argument object under 5 µs; a 1 MiB string under 5 ms.
//! Run with `cargo bench -p halt-guards-sensitive`.

#![allow(clippy::unwrap_used, reason = "bench setup")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::CallContext;
use halt_guards_sensitive::{SensitiveConfig, SensitiveGuard, detector_names};
use halt_store_memory::MemoryStore;
use serde_json::{Value, json};

/// About 2 KiB of nested, realistic arguments with nothing sensitive in them, or with one email
/// address (a finding, so the call is denied with its details).
fn two_kib(to: &str) -> Value {
    let item = |i: u32| {
        json!({
            "sku": format!("SKU-{i:05}"),
            "title": "Recycled printer paper, 500 sheets, A4, 80 gsm",
            "quantity": i % 7 + 1,
            "unit_price": 12.49,
            "tags": ["office", "paper", "supplies"],
        })
    };
    json!({
        "to": to,
        "subject": "Weekly order summary for the Lisbon office",
        "body": "Hello team, please find below the items ordered this week. Delivery is expected on Thursday \
                 between 9 and 11. Contact the front desk on arrival. Regards, the assistant.",
        "order": {"id": "ORD-2026-11-24-0042", "items": (0..11).map(item).collect::<Vec<_>>()},
        "max_tokens": 512,
        "temperature": 0.2,
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let all: Vec<String> = detector_names().into_iter().map(String::from).collect();
    let guard = std::sync::Arc::new(
        SensitiveGuard::new(SensitiveConfig { blocked_patterns: all, ..SensitiveConfig::default() }).unwrap(),
    );
    let store = MemoryStore::new();
    for (name, to, denied) in [
        ("sensitive_2kib_nested_all_detectors", "the procurement team", false),
        ("sensitive_2kib_nested_all_detectors_one_finding", "procurement@example.com", true),
    ] {
        let args = two_kib(to);
        assert!((1800..2600).contains(&args.to_string().len()), "{}", args.to_string().len());
        let ctx = CallContext::new("send_email").with_arguments(args).unwrap();
        let engine = halt_engine::Engine::builder().guard_arc(guard.clone()).build().unwrap();
        assert_eq!(engine.evaluate_blocking(ctx.clone()).is_denied(), denied, "{name}");
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(halt_testing::bench::evaluate_and_commit(
                    &*guard,
                    &store,
                    &ctx,
                    Duration::from_millis(1),
                    iters,
                ))
            });
        });
    }
    let text: String =
        "The quarterly figures were reviewed by the committee on Tuesday; totals rose 4.5% year on year. "
            .repeat(11_000)
            .chars()
            .take((1 << 20) - 64)
            .collect();
    let big = CallContext::new("summarise").with_arguments(json!({"document": text})).unwrap();
    let outcome = halt_engine::Engine::builder()
        .guard(SensitiveGuard::new(SensitiveConfig::default()).unwrap())
        .build()
        .unwrap()
        .evaluate_blocking(big.clone());
    assert!(outcome.is_allowed(), "the 1 MiB document is scanned, not refused: {:?}", outcome.denial_reasons());
    c.bench_function("sensitive_1mib_string_all_detectors", |b| {
        b.iter_custom(|iters| {
            rt.block_on(halt_testing::bench::evaluate_and_commit(
                &*guard,
                &store,
                &big,
                Duration::from_millis(1),
                iters,
            ))
        });
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
