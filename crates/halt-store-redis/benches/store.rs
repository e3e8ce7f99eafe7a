//! Reserve + commit on Redis over loopback, with 1 and 64 concurrent callers.
//! Target: at least 10,000 reserves/s with 64 callers. Needs `redis-server` installed.
//! Run with `cargo bench -p halt-store-redis`.

#![allow(clippy::unwrap_used, reason = "bench setup")]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::StateStore;
use halt_store_redis::RedisStore;
use halt_testing::redis_server::RedisServer;

fn bench(c: &mut Criterion) {
    let Some(server) = RedisServer::start() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(rt.block_on(RedisStore::connect(&server.url(), "{bench}:")).unwrap());
    let mut group = c.benchmark_group("redis");
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    group.bench_function("reserve_commit_1_caller", |b| {
        b.iter_custom(|iters| rt.block_on(halt_testing::bench::reserve_commit_concurrently(&store, 1, iters)));
    });
    group.bench_function("reserve_commit_64_callers", |b| {
        b.iter_custom(|iters| rt.block_on(halt_testing::bench::reserve_commit_concurrently(&store, 64, iters)));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
