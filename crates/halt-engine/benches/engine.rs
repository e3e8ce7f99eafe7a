//! Engine overhead: one evaluation with no guards and with six trivial guards.
//!
//! Run with `cargo bench -p halt-engine --bench engine`. The target is under 1 µs per evaluation
//! with six trivial guards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::{Call, CallContext, Decision, Guard, GuardError, async_trait};
use halt_engine::Engine;
use serde_json::json;

/// The cheapest possible guard: allows everything with a static reason.
#[derive(Debug)]
struct Trivial(&'static str);

#[async_trait]
impl Guard for Trivial {
    fn name(&self) -> &str {
        self.0
    }

    async fn evaluate(&self, _call: &Call<'_>) -> Result<Decision, GuardError> {
        Ok(Decision::allow("ok"))
    }
}

fn call() -> CallContext {
    CallContext::new("search_web")
        .with_call_id("c-1")
        .with_agent("agent-7")
        .with_session("s-42")
        .with_arguments(json!({"query": "rust guardrails", "limit": 10}))
        .unwrap()
}

fn engine(guards: usize) -> Engine {
    let names = ["g1", "g2", "g3", "g4", "g5", "g6"];
    let mut b = Engine::builder();
    for name in &names[..guards] {
        b = b.guard(Trivial(name));
    }
    b.build().unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let ctx = call();
    c.bench_function("clone_call_context", |b| b.iter(|| black_box(ctx.clone())));
    for guards in [0, 6] {
        let engine = engine(guards);
        c.bench_function(&format!("evaluate_{guards}_trivial_guards"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(engine.evaluate(ctx.clone()).await);
                    }
                    start.elapsed()
                })
            });
        });
    }
    let engine = engine(6);
    let mut events = engine.subscribe();
    c.bench_function("evaluate_6_trivial_guards_with_subscriber", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(engine.evaluate(ctx.clone()).await);
                    let _ = events.try_recv();
                }
                start.elapsed()
            })
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
