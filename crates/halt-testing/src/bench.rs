//! Measuring one guard's evaluation the way the engine runs it: evaluate on a memory store (its
//! reservations included), then, outside the timed part, commit what it reserved, as the engine
//! would, so the store does not fill with pending reservations.

use std::hint::black_box;
use std::time::{Duration, Instant};

use halt_core::names::normalize;
use halt_core::{Call, CallContext, Effect, Guard, MemoryStore, StateStore, Timestamp};

/// Evaluates `guard` on `ctx` `iters` times, each at a time `step` after the last, committing
/// its effects; returns the time the evaluations took.
pub async fn evaluate_and_commit(
    guard: &dyn Guard,
    store: &MemoryStore,
    ctx: &CallContext,
    step: Duration,
    iters: u64,
) -> Duration {
    let name = normalize(&ctx.function_name).into_owned();
    let mut now = Timestamp::from_secs(1_800_000_000);
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        now = now.saturating_add(step);
        let start = Instant::now();
        let call = Call::new(ctx, &name, now, store, now.saturating_add(Duration::from_secs(60)));
        let decision = guard.evaluate(&call).await.expect("guard failed");
        spent += start.elapsed();
        for effect in call.into_effects() {
            match effect {
                Effect::Reservation { id, .. } => {
                    store.commit(&id, now).await.expect("commit failed");
                }
                Effect::Record { key, value, expires_at } => {
                    store.put_record(&key, Some(&value), expires_at, now).await.expect("record failed");
                }
            }
        }
        black_box(decision);
    }
    spent
}
