//! The memory store passes the store conformance suite, and stays bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;
use std::time::Duration;

use halt_core::store::{CounterSpec, ReserveOutcome, ReserveRequest, Window};
use halt_core::{StateStore, StoreError, Timestamp};
use halt_store_memory::MemoryStore;
use halt_store_memory::MemoryStoreConfig;

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

mod model {
    //! Random sequences of operations: limits always hold, a refusal changes nothing, a
    //! zero-amount check changes nothing, and `add_within` counts exactly as `reserve` then
    //! `commit` (two stores in lockstep).

    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use halt_core::store::{CounterSpec, ReservationId, ReserveOutcome, ReserveRequest, StoreFuture, Window};
    use halt_core::{StateStore, StoreError, Timestamp};
    use halt_store_memory::MemoryStore;
    use proptest::prelude::*;

    const T0: i64 = 1_800_000_000;

    /// The memory store answers at once.
    fn ready<T: Unpin>(f: StoreFuture<'_, T>) -> Result<T, StoreError> {
        match std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("the memory store never waits"),
        }
    }

    /// Three counters of the three kinds, each with its limit.
    fn counter(i: usize, amount: i64) -> CounterSpec {
        let (key, window, limit) = match i {
            0 => ("sliding", Window::Sliding { width: Duration::from_secs(10) }, 5),
            1 => ("bucket", Window::Bucket { expires_at: Timestamp::from_secs(T0 + 30) }, 8),
            _ => ("idle", Window::Idle { idle: Duration::from_secs(20) }, 6),
        };
        CounterSpec::new(key, window, amount, Some(limit))
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Amounts for a subset of the counters; held, or added at once.
        Count {
            amounts: Vec<(usize, i64)>,
            hold: bool,
        },
        Commit(usize),
        Release(usize),
        /// Milliseconds.
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (prop::collection::btree_map(0usize..3, 0i64..4, 1..=3), any::<bool>())
                .prop_map(|(m, hold)| Op::Count { amounts: m.into_iter().collect(), hold }),
            2 => (0usize..8).prop_map(Op::Commit),
            2 => (0usize..8).prop_map(Op::Release),
            2 => (0u64..6_000).prop_map(Op::Wait),
        ]
    }

    fn totals(store: &MemoryStore, now: Timestamp) -> Vec<i64> {
        (0..3).map(|i| ready(store.total(&counter(i, 0).key, counter(i, 0).window, now)).unwrap()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn limits_hold_and_add_within_is_reserve_then_commit(ops in prop::collection::vec(op(), 1..60)) {
            // `a` adds at once with add_within; `b` reserves and commits the same amounts.
            let (a, b) = (MemoryStore::new(), MemoryStore::new());
            let mut now = Timestamp::from_secs(T0);
            let mut held: Vec<(ReservationId, ReservationId)> = Vec::new();
            for op in ops {
                let before = totals(&a, now);
                match op {
                    Op::Count { amounts, hold } => {
                        let counters: Vec<CounterSpec> = amounts.iter().map(|&(i, n)| counter(i, n)).collect();
                        let request = ReserveRequest { counters, now, hold_until: now.saturating_add(Duration::from_secs(2)) };
                        let (x, y) = if hold {
                            (ready(a.reserve(&request)).unwrap(), ready(b.reserve(&request)).unwrap())
                        } else {
                            let y = ready(b.reserve(&request)).unwrap();
                            if let ReserveOutcome::Reserved { id, .. } = &y {
                                prop_assert!(ready(b.commit(*id, now)).unwrap());
                            }
                            (ready(a.add_within(&request)).unwrap(), y)
                        };
                        match (x, y) {
                            (ReserveOutcome::Reserved { id: ia, totals: ta }, ReserveOutcome::Reserved { id: ib, totals: tb }) => {
                                prop_assert_eq!(ta, tb);
                                if hold {
                                    held.push((ia, ib));
                                }
                                if amounts.iter().all(|&(_, n)| n == 0) {
                                    prop_assert_eq!(totals(&a, now), before.clone(), "a check changes nothing");
                                }
                            }
                            (ReserveOutcome::Rejected { index: xa, current: ca, .. }, ReserveOutcome::Rejected { index: xb, current: cb, .. }) => {
                                prop_assert_eq!((xa, ca), (xb, cb));
                                prop_assert_eq!(totals(&a, now), before.clone(), "a refusal changes nothing");
                            }
                            (x, y) => prop_assert!(false, "the stores disagree: {:?} / {:?}", x, y),
                        }
                    }
                    Op::Commit(i) | Op::Release(i) if i < held.len() => {
                        let (ia, ib) = held.remove(i);
                        let commit = matches!(op, Op::Commit(_));
                        let (x, y) = if commit {
                            (ready(a.commit(ia, now)).unwrap(), ready(b.commit(ib, now)).unwrap())
                        } else {
                            (ready(a.release(ia, now)).unwrap(), ready(b.release(ib, now)).unwrap())
                        };
                        prop_assert_eq!(x, y);
                    }
                    Op::Commit(_) | Op::Release(_) => {}
                    Op::Wait(ms) => now = now.saturating_add(Duration::from_millis(ms)),
                }
                let (ta, tb) = (totals(&a, now), totals(&b, now));
                prop_assert_eq!(&ta, &tb, "add_within counts as reserve then commit");
                for (i, t) in ta.iter().enumerate() {
                    prop_assert!(*t <= counter(i, 0).limit.unwrap_or(i64::MAX), "counter {} at {} passed its limit", i, t);
                }
            }
        }
    }
}

mod recent_model {
    //! A window with a recent limit against a plain model that counts the recent part again on
    //! every call: the store's running count of the recent part stays exact through additions,
    //! events aging out, merges past the cap, releases and lapsed holds.

    use std::collections::VecDeque;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use halt_core::store::{CounterSpec, Refusal, ReserveOutcome, ReserveRequest, StoreFuture, Window};
    use halt_core::{StateStore, StoreError, Timestamp};
    use halt_store_memory::{MemoryStore, MemoryStoreConfig};
    use proptest::prelude::*;

    const WIDTH: i64 = 10_000_000;
    const RECENT: i64 = 3_000_000;
    const HOLD: i64 = 2_000_000;
    /// Fewer than the recent limit, so that merges happen inside the recent part too.
    const CAP: usize = 3;
    const LIMIT: i64 = 8;
    const RECENT_LIMIT: i64 = 5;

    fn ready<T: Unpin>(f: StoreFuture<'_, T>) -> Result<T, StoreError> {
        match std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("the memory store never waits"),
        }
    }

    fn window() -> Window {
        Window::Sliding { width: Duration::from_micros(WIDTH.cast_unsigned()) }
    }

    fn spec(amount: i64) -> CounterSpec {
        CounterSpec::new("w", window(), amount, Some(LIMIT)).with_recent(
            Duration::from_micros(RECENT.cast_unsigned()),
            RECENT_LIMIT,
            Duration::ZERO,
        )
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add {
            amount: i64,
            hold: bool,
        },
        Release(usize),
        Commit(usize),
        /// Microseconds.
        Wait(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0i64..3, any::<bool>()).prop_map(|(amount, hold)| Op::Add { amount, hold }),
            1 => (0usize..4).prop_map(Op::Release),
            1 => (0usize..4).prop_map(Op::Commit),
            3 => prop_oneof![Just(0i64), Just(1), Just(RECENT), 0i64..4_000_000].prop_map(Op::Wait),
        ]
    }

    /// The window as a list of (time, amount, reservation), and the holds.
    #[derive(Default)]
    struct Model {
        events: VecDeque<(i64, i64, u64)>,
        holds: Vec<(u64, i64)>,
    }

    impl Model {
        fn lapse(&mut self, now: i64) {
            let lapsed: Vec<u64> = self.holds.iter().filter(|(_, until)| *until <= now).map(|(id, _)| *id).collect();
            for id in lapsed {
                self.release(id);
            }
        }

        fn release(&mut self, id: u64) -> bool {
            let Some(i) = self.holds.iter().position(|(h, _)| *h == id) else { return false };
            self.holds.remove(i);
            if let Some(pos) = self.events.iter().position(|e| e.2 == id) {
                self.events.remove(pos);
            }
            true
        }

        fn prune(&mut self, now: i64) {
            while self.events.front().is_some_and(|e| e.0 < now - WIDTH) {
                self.events.pop_front();
            }
        }

        fn total(&self) -> i64 {
            self.events.iter().map(|e| e.1).sum::<i64>().max(0)
        }

        /// (refused, by the recent limit, current) or `None` when added.
        fn add(&mut self, now: i64, amount: i64, id: u64, hold: bool) -> Option<(bool, i64)> {
            self.prune(now);
            let total = self.total();
            if total + amount > LIMIT {
                return Some((false, total));
            }
            let recent: i64 = self.events.iter().rev().take_while(|e| e.0 >= now - RECENT).map(|e| e.1).sum();
            if recent + amount > RECENT_LIMIT {
                return Some((true, recent));
            }
            if amount != 0 {
                self.events.push_back((now, amount, if hold { id } else { 0 }));
                while self.events.len() > CAP {
                    let (_, a, _) = self.events.pop_front().unwrap_or_default();
                    if let Some(b) = self.events.front_mut() {
                        b.1 += a;
                        b.2 = 0;
                    }
                }
            }
            if hold {
                self.holds.push((id, now + HOLD));
            }
            None
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn the_recent_part_is_counted_exactly(ops in prop::collection::vec(op(), 1..80)) {
            let store = MemoryStore::with_config(MemoryStoreConfig { max_events_per_window: CAP, ..MemoryStoreConfig::default() });
            let mut model = Model::default();
            let mut now = 1_800_000_000_000_000_i64;
            let mut held = Vec::new();
            for op in ops {
                model.lapse(now);
                let t = Timestamp::from_micros(now);
                match op {
                    Op::Add { amount, hold } => {
                        let request = ReserveRequest {
                            counters: vec![spec(amount)],
                            now: t,
                            hold_until: Timestamp::from_micros(now + HOLD),
                        };
                        let outcome = if hold { ready(store.reserve(&request)) } else { ready(store.add_within(&request)) };
                        match outcome.unwrap() {
                            ReserveOutcome::Reserved { id, .. } => {
                                prop_assert_eq!(model.add(now, amount, id.0, hold), None);
                                if hold {
                                    held.push(id);
                                }
                            }
                            ReserveOutcome::Rejected { current, by, .. } => {
                                prop_assert_eq!(model.add(now, amount, 0, false), Some((by == Refusal::Recent, current)));
                            }
                        }
                    }
                    Op::Release(i) | Op::Commit(i) if i < held.len() => {
                        let id = held.remove(i);
                        if matches!(op, Op::Release(_)) {
                            prop_assert_eq!(ready(store.release(id, t)).unwrap(), model.release(id.0));
                        } else {
                            let known = model.holds.iter().position(|(h, _)| *h == id.0).map(|i| model.holds.remove(i));
                            prop_assert_eq!(ready(store.commit(id, t)).unwrap(), known.is_some());
                        }
                    }
                    Op::Release(_) | Op::Commit(_) => {}
                    Op::Wait(us) => now += us,
                }
                model.lapse(now);
                model.prune(now);
                prop_assert_eq!(ready(store.total("w", window(), Timestamp::from_micros(now))).unwrap(), model.total());
            }
        }
    }
}
