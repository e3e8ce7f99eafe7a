//! Measuring one guard's evaluation the way the engine runs it: evaluate on a memory store (its
//! reservations included), then commit what it reserved, as the engine does for a call that
//! runs. The loop is timed as a whole (no clock read per call), so the figure includes the
//! commit: it is what one call through this guard costs.

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use halt_core::names::normalize;
use halt_core::{Call, CallContext, Effect, Guard, StateStore, Timestamp};
use halt_store_memory::MemoryStore;

/// Evaluates `guard` on `ctx` `iters` times, each at a time `step` after the last, committing
/// its effects; returns the time taken.
///
/// # Panics
/// When the guard fails, or decides differently from one call to the next: a bench measures one
/// path, and a limit that fills up mid-run would have it measure another.
pub async fn evaluate_and_commit(
    guard: &dyn Guard,
    store: &MemoryStore,
    ctx: &CallContext,
    step: Duration,
    iters: u64,
) -> Duration {
    let name = normalize(&ctx.function_name).into_owned();
    let mut now = Timestamp::from_micros(BENCH_TIME.load(Ordering::Relaxed));
    let mut kind = None;
    let start = Instant::now();
    for _ in 0..iters {
        now = now.saturating_add(step);
        let call = Call::new(ctx, &name, now, store, now.saturating_add(Duration::from_secs(60)));
        let decision = guard.evaluate(&call).await.expect("guard failed");
        for effect in call.into_effects() {
            match effect {
                Effect::Reservation { id, .. } => {
                    store.commit(id, now).await.expect("commit failed");
                }
                Effect::Record { key, value, expires_at } => {
                    store.put_record(&key, Some(&value), expires_at, now).await.expect("record failed");
                }
            }
        }
        let first = *kind.get_or_insert(decision.kind());
        assert_eq!(decision.kind(), first, "the decision changed mid-run: {}", decision.reason());
        black_box(decision);
    }
    let elapsed = start.elapsed();
    BENCH_TIME.fetch_max(now.as_micros(), Ordering::Relaxed);
    elapsed
}

/// Where the benches' clock stands, in microseconds: each run goes on from where the last one
/// stopped. Criterion runs a bench many times on one store; were time to start over each time,
/// sliding windows would hold calls "from the future" that never age out, and fill up until the
/// bench measured denials instead of the typical call.
static BENCH_TIME: AtomicI64 = AtomicI64::new(1_800_000_000_000_000);

/// One reserve of 1 on counter `key` followed by its commit: the unit of the store benches.
pub async fn reserve_commit(store: &dyn StateStore, key: &str, now: Timestamp) {
    use halt_core::store::{CounterSpec, ReserveOutcome, ReserveRequest, Window};
    let req = ReserveRequest {
        counters: vec![CounterSpec::new(key, Window::Idle { idle: Duration::from_secs(86_400) }, 1, Some(1 << 50))],
        now,
        hold_until: now.saturating_add(Duration::from_secs(60)),
    };
    let ReserveOutcome::Reserved { id, .. } = store.reserve(&req).await.expect("reserve failed") else {
        panic!("the bench counter is full")
    };
    assert!(store.commit(id, now).await.expect("commit failed"), "commit refused");
}

/// Runs about `iters` reserve + commit pairs from `callers` concurrent tasks (spread over eight
/// counters); returns the time, scaled to exactly `iters` pairs.
pub async fn reserve_commit_concurrently(store: &std::sync::Arc<dyn StateStore>, callers: u64, iters: u64) -> Duration {
    let now = Timestamp::from_secs(1_800_000_000);
    let per = iters.div_ceil(callers.max(1));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers.max(1))
        .map(|t| {
            let store = std::sync::Arc::clone(store);
            tokio::spawn(async move {
                let key = format!("bench{}", t % 8);
                for _ in 0..per {
                    reserve_commit(&*store, &key, now).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a bench task panicked");
    }
    #[allow(clippy::cast_precision_loss, reason = "a ratio of counts")]
    let scale = iters as f64 / (per * callers.max(1)) as f64;
    start.elapsed().mul_f64(scale)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use halt_core::{Decision, GuardError, async_trait};

    use super::*;

    /// Allows everything and notes when it was asked.
    #[derive(Debug, Default)]
    struct Times(Mutex<Vec<Timestamp>>);

    #[async_trait]
    impl Guard for Times {
        fn name(&self) -> &str {
            "times"
        }

        async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(call.now());
            Ok(Decision::allow("noted"))
        }
    }

    #[tokio::test]
    async fn runs_on_one_store_go_on_in_time() {
        let (guard, store, ctx) = (Times::default(), MemoryStore::new(), CallContext::new("f"));
        let step = Duration::from_millis(1);
        evaluate_and_commit(&guard, &store, &ctx, step, 3).await;
        evaluate_and_commit(&guard, &store, &ctx, step, 3).await;
        let times = guard.0.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        assert_eq!(times.len(), 6);
        assert!(times.windows(2).all(|w| w[0] < w[1]), "time never goes back: {times:?}");
    }

    /// Allows its first call, denies the others (a limit of one).
    #[derive(Debug, Default)]
    struct Once(std::sync::atomic::AtomicBool);

    #[async_trait]
    impl Guard for Once {
        fn name(&self) -> &str {
            "once"
        }

        async fn evaluate(&self, _call: &Call<'_>) -> Result<Decision, GuardError> {
            Ok(if self.0.swap(true, Ordering::Relaxed) { Decision::deny("again") } else { Decision::allow("first") })
        }
    }

    #[tokio::test]
    #[should_panic(expected = "the decision changed mid-run: again")]
    async fn a_decision_that_changes_mid_run_fails_the_bench() {
        let (guard, store, ctx) = (Once::default(), MemoryStore::new(), CallContext::new("f"));
        evaluate_and_commit(&guard, &store, &ctx, Duration::from_millis(1), 2).await;
    }
}
