//! Reserve + commit on the sled store, with 1 and 64 concurrent callers, in both durabilities.
//! Targets: relaxed under 10 µs per operation; strict at least 5,000 commits/s with 64 callers.
//! Run with `cargo bench -p halt-store-sled`.

#![allow(clippy::unwrap_used, reason = "bench setup")]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use halt_core::StateStore;
use halt_store_sled::{Durability, SledStore, SledStoreConfig};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for (label, durability) in
        [("relaxed", Durability::Relaxed { flush_every_ms: 100 }), ("strict", Durability::Strict)]
    {
        let dir = std::env::temp_dir().join(format!("halt-sled-bench-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn StateStore> =
            Arc::new(SledStore::open(&SledStoreConfig::new(&dir).durability(durability)).unwrap());
        let mut group = c.benchmark_group(format!("sled_{label}"));
        group.sample_size(10).measurement_time(Duration::from_secs(3));
        group.bench_function("reserve_commit_1_caller", |b| {
            b.iter_custom(|iters| rt.block_on(halt_testing::bench::reserve_commit_concurrently(&store, 1, iters)));
        });
        group.bench_function("reserve_commit_64_callers", |b| {
            b.iter_custom(|iters| rt.block_on(halt_testing::bench::reserve_commit_concurrently(&store, 64, iters)));
        });
        group.finish();
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
