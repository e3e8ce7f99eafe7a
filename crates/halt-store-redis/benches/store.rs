//! Reserve + commit on Redis over loopback, with 1 and 64 concurrent callers.
//! Target: at least 10,000 reserves/s with 64 callers. Needs `redis-server` installed.
//! Run with `cargo bench -p halt-store-redis`.

#![allow(clippy::unwrap_used, clippy::panic, clippy::cast_precision_loss, reason = "bench setup")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::store::{CounterSpec, ReserveOutcome, ReserveRequest, Window};
use halt_core::{StateStore, Timestamp};
use halt_store_redis::RedisStore;
use halt_testing::redis_server::RedisServer;

async fn reserve_commit(store: &RedisStore, key: &str, now: Timestamp) {
    let req = ReserveRequest {
        counters: vec![CounterSpec::new(key, Window::Idle { idle: Duration::from_secs(86_400) }, 1, Some(1 << 50))],
        now,
        hold_until: now.saturating_add(Duration::from_secs(60)),
    };
    let ReserveOutcome::Reserved { id, .. } = store.reserve(&req).await.unwrap() else { panic!("rejected") };
    assert!(store.commit(&id, now).await.unwrap());
}

fn bench(c: &mut Criterion) {
    let Some(server) = RedisServer::start() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = Arc::new(rt.block_on(RedisStore::connect(&server.url(), "{bench}:")).unwrap());
    let now = Timestamp::from_secs(1_800_000_000);
    let mut group = c.benchmark_group("redis");
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
