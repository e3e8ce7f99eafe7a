//! The memory store passes the store conformance suite, and stays bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;
use std::time::Duration;

use halt_core::store::{CounterSpec, MemoryStoreConfig, ReserveOutcome, ReserveRequest, Window};
use halt_core::{MemoryStore, StateStore, StoreError, Timestamp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    halt_testing::store_conformance::run(|| async { Arc::new(MemoryStore::new()) as Arc<dyn StateStore> }).await;
}

fn window() -> Window {
    Window::Sliding { width: Duration::from_secs(60) }
}

#[tokio::test]
async fn idle_keys_expire_and_the_key_cap_holds() {
    let store = MemoryStore::with_config(MemoryStoreConfig { max_keys: 100, ..Default::default() });
    let t0 = Timestamp::from_secs(1_000);
    for i in 0..100 {
        store.add(&[CounterSpec::new(format!("k{i}"), window(), 1, None)], t0).await.unwrap();
    }
    assert_eq!(store.key_count(), 100);
    let err = store.add(&[CounterSpec::new("one-more", window(), 1, None)], t0).await.unwrap_err();
    assert_eq!(err, StoreError::CapacityExceeded(100));
    // A minute later every window has aged out: room again, and the old keys are gone.
    let later = Timestamp::from_secs(1_061);
    store.add(&[CounterSpec::new("one-more", window(), 1, None)], later).await.unwrap();
    // Each operation drops a bounded number of expired keys, so the rest go on the next one.
    assert!(store.key_count() <= 101 - 64, "{}", store.key_count());
    store.total("one-more", window(), later).await.unwrap();
    assert_eq!(store.key_count(), 1);
}

#[tokio::test]
async fn a_window_keeps_no_more_events_than_its_cap_and_never_undercounts() {
    let store = MemoryStore::with_config(MemoryStoreConfig { max_events_per_window: 8, ..Default::default() });
    let t0 = Timestamp::from_secs(1_000);
    for i in 0..100 {
        let now = Timestamp::from_micros(t0.as_micros() + i * 100_000);
        store.add(&[CounterSpec::new("w", window(), 1, None)], now).await.unwrap();
    }
    let end = Timestamp::from_micros(t0.as_micros() + 99 * 100_000);
    assert_eq!(store.total("w", window(), end).await.unwrap(), 100, "merging keeps the sum");
}

#[tokio::test]
async fn holds_and_pending_reservations_are_cleaned_up() {
    let store = MemoryStore::new();
    let t0 = Timestamp::from_secs(1_000);
    for _ in 0..10 {
        let req = ReserveRequest {
            counters: vec![CounterSpec::new("c", Window::Idle { idle: Duration::from_secs(3600) }, 1, None)],
            now: t0,
            hold_until: Timestamp::from_secs(1_010),
        };
        assert!(matches!(store.reserve(&req).await.unwrap(), ReserveOutcome::Reserved { .. }));
    }
    assert_eq!(store.pending_count(), 10);
    store.total("c", Window::Idle { idle: Duration::from_secs(3600) }, Timestamp::from_secs(1_010)).await.unwrap();
    assert_eq!(store.pending_count(), 0);
}
