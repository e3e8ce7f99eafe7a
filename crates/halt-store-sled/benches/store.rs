//! Reserve + commit on the sled store, with 1 and 64 concurrent callers, in both durabilities.
//! Targets: relaxed under 10 µs per operation; strict at least 5,000 commits/s with 64 callers.
//! Run with `cargo bench -p halt-store-sled`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_precision_loss, reason = "bench setup")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::store::{CounterSpec, ReserveOutcome, ReserveRequest, Window};
use halt_core::{StateStore, Timestamp};
use halt_store_sled::{Durability, SledStore, SledStoreConfig};

async fn reserve_commit(store: &SledStore, key: &str, now: Timestamp) {
    let req = ReserveRequest {
        counters: vec![CounterSpec::new(
            key,
            Window::Idle { idle: Duration::from_secs(86_400) },
            1,
            Some(i64::MAX / 2),
        )],
        now,
        hold_until: now.saturating_add(Duration::from_secs(60)),
    };
    let ReserveOutcome::Reserved { id, .. } = store.reserve(&req).await.unwrap() else { panic!("rejected") };
    assert!(store.commit(&id, now).await.unwrap());
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let now = Timestamp::from_secs(1_800_000_000);
    for (label, durability) in
        [("relaxed", Durability::Relaxed { flush_every_ms: 100 }), ("strict", Durability::Strict)]
    {
        let dir = std::env::temp_dir().join(format!("halt-sled-bench-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(SledStore::open(&SledStoreConfig::new(&dir).durability(durability)).unwrap());
        let mut group = c.benchmark_group(format!("sled_{label}"));
        group.sample_size(10).measurement_time(Duration::from_secs(3));
        group.bench_function("reserve_commit_1_caller", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        reserve_commit(&store, "k", now).await;
                    }
                    start.elapsed()
                })
            });
        });
        group.bench_function("reserve_commit_64_callers", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let per = iters.div_ceil(64);
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..64)
                        .map(|t| {
                            let store = Arc::clone(&store);
                            tokio::spawn(async move {
                                let key = format!("k{}", t % 8);
                                for _ in 0..per {
                                    reserve_commit(&store, &key, now).await;
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    start.elapsed().mul_f64(iters as f64 / (per * 64) as f64)
                })
            });
        });
        group.finish();
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
