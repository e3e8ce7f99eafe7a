//! The conformance suite for [`StateStore`] implementations.
//!
//! [`run`] checks every behaviour of the contract, each on a fresh store from `make`. It panics
//! with the name of the first check that fails. Needs a multi-threaded Tokio runtime.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use halt_core::Timestamp;
use halt_core::store::{
    CounterSpec, Refusal, ReservationId, ReserveOutcome, ReserveRequest, StateStore, StoreError, Window,
};

const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

fn at(secs: i64) -> Timestamp {
    Timestamp::from_micros(T0.as_micros() + secs * 1_000_000)
}

fn day() -> Window {
    Window::Bucket { expires_at: at(86_400) }
}

fn req(counters: Vec<CounterSpec>, now: Timestamp) -> ReserveRequest {
    ReserveRequest { counters, now, hold_until: now.saturating_add(Duration::from_secs(600)) }
}

async fn reserved(store: &dyn StateStore, r: &ReserveRequest) -> (ReservationId, Vec<i64>) {
    match store.reserve(r).await.expect("reserve failed") {
        ReserveOutcome::Reserved { id, totals } => (id, totals),
        other => panic!("expected a reservation, got {other:?}"),
    }
}

/// Runs every check, each against a fresh store from `make`.
pub async fn run<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    limits_are_all_or_nothing(&*make().await).await;
    commit_and_release(&*make().await).await;
    holds_lapse(&*make().await).await;
    buckets_and_idle_counters_expire(&*make().await).await;
    sliding_windows_slide(&*make().await).await;
    recent_limits_rank_last(&*make().await).await;
    recent_limits_start_cooldowns(&*make().await).await;
    streaks_count_repeats(&*make().await).await;
    add_is_unconditional(&*make().await).await;
    add_within_is_conditional_and_final(make().await).await;
    records_compare_and_swap(&*make().await).await;
    records_update_atomically(make().await).await;
    kinds_do_not_mix(&*make().await).await;
    bad_requests_are_errors(&*make().await).await;
    concurrent_reserves_never_pass_the_limit(make().await).await;
}

/// A request that would pass any one limit is refused as a whole, and the refusal names the
/// counter.
pub async fn limits_are_all_or_nothing(store: &dyn StateStore) {
    let a = CounterSpec::new("t/a", day(), 600_000, Some(1_000_000));
    let (_, totals) = reserved(store, &req(vec![a.clone()], T0)).await;
    assert_eq!(totals, [600_000], "limits_are_all_or_nothing: first total");
    let both = vec![CounterSpec::new("t/b", day(), 100, Some(1_000)), a.clone()];
    match store.reserve(&req(both, T0)).await.unwrap() {
        ReserveOutcome::Rejected { index, current, limit, .. } => {
            assert_eq!((index, current, limit), (1, 600_000, 1_000_000), "limits_are_all_or_nothing: rejection");
        }
        other => panic!("limits_are_all_or_nothing: expected rejection, got {other:?}"),
    }
    assert_eq!(store.total("t/b", day(), T0).await.unwrap(), 0, "limits_are_all_or_nothing: nothing added");
    // Exactly at the limit fits.
    let rest = CounterSpec::new("t/a", day(), 400_000, Some(1_000_000));
    let (_, totals) = reserved(store, &req(vec![rest], T0)).await;
    assert_eq!(totals, [1_000_000], "limits_are_all_or_nothing: at the limit");
    // A zero amount checks without adding.
    let check = CounterSpec::new("t/a", day(), 0, Some(1_000_000));
    let (_, totals) = reserved(store, &req(vec![check], T0)).await;
    assert_eq!(totals, [1_000_000], "limits_are_all_or_nothing: zero amount");
}

/// Commit keeps amounts, release takes them back, each works once.
pub async fn commit_and_release(store: &dyn StateStore) {
    let spec = CounterSpec::new("t/c", day(), 5, None);
    let (kept, _) = reserved(store, &req(vec![spec.clone()], T0)).await;
    let (dropped, totals) = reserved(store, &req(vec![spec.clone()], T0)).await;
    assert_eq!(totals, [10], "commit_and_release: pending amounts count");
    assert!(store.commit(kept, T0).await.unwrap(), "commit_and_release: commit");
    assert!(!store.commit(kept, T0).await.unwrap(), "commit_and_release: second commit");
    assert!(!store.release(kept, T0).await.unwrap(), "commit_and_release: release after commit");
    assert!(store.release(dropped, T0).await.unwrap(), "commit_and_release: release");
    assert!(!store.release(dropped, T0).await.unwrap(), "commit_and_release: second release");
    assert!(!store.commit(dropped, T0).await.unwrap(), "commit_and_release: commit after release");
    assert_eq!(store.total("t/c", day(), T0).await.unwrap(), 5, "commit_and_release: total");
    assert!(!store.commit(ReservationId(u64::MAX), T0).await.unwrap(), "commit_and_release: unknown id");
}

/// A reservation not committed by its hold time is released, and can no longer be committed.
pub async fn holds_lapse(store: &dyn StateStore) {
    let spec = CounterSpec::new("t/h", day(), 7, Some(10));
    let r = ReserveRequest { counters: vec![spec.clone()], now: T0, hold_until: at(60) };
    let (id, _) = reserved(store, &r).await;
    assert_eq!(store.total("t/h", day(), at(59)).await.unwrap(), 7, "holds_lapse: held before the deadline");
    assert_eq!(store.total("t/h", day(), at(60)).await.unwrap(), 0, "holds_lapse: released at the deadline");
    assert!(!store.commit(id, at(61)).await.unwrap(), "holds_lapse: commit after the deadline");
    let (_, totals) = reserved(store, &req(vec![CounterSpec::new("t/h", day(), 10, Some(10))], at(61))).await;
    assert_eq!(totals, [10], "holds_lapse: room again");
}

/// Buckets expire at their end; idle counters after their idle time.
pub async fn buckets_and_idle_counters_expire(store: &dyn StateStore) {
    let bucket = Window::Bucket { expires_at: at(100) };
    let (id, _) = reserved(store, &req(vec![CounterSpec::new("t/day", bucket, 3, None)], T0)).await;
    store.commit(id, T0).await.unwrap();
    assert_eq!(store.total("t/day", bucket, at(99)).await.unwrap(), 3, "bucket alive");
    let full = req(vec![CounterSpec::new("t/day", bucket, 1, Some(3))], at(50));
    match store.reserve(&full).await.unwrap() {
        ReserveOutcome::Rejected { retry_at, .. } => {
            assert_eq!(retry_at, Some(at(100)), "a full bucket frees up when it ends");
        }
        other => panic!("bucket: expected a rejection, got {other:?}"),
    }
    assert_eq!(store.total("t/day", bucket, at(100)).await.unwrap(), 0, "bucket expired at its end");
    let idle = Window::Idle { idle: Duration::from_secs(30) };
    store.add(&[CounterSpec::new("t/idle", idle, 2, None)], T0).await.unwrap();
    store.add(&[CounterSpec::new("t/idle", idle, 2, None)], at(20)).await.unwrap();
    assert_eq!(store.total("t/idle", idle, at(49)).await.unwrap(), 4, "idle counter kept alive by use");
    assert_eq!(store.total("t/idle", idle, at(51)).await.unwrap(), 0, "idle counter expired");
}

/// Sliding windows: an event exactly `width` old counts, one a microsecond older does not, and
/// a rejection says when to retry.
pub async fn sliding_windows_slide(store: &dyn StateStore) {
    let w = Window::Sliding { width: Duration::from_secs(60) };
    let hit = |now| req(vec![CounterSpec::new("t/w", w, 1, Some(2))], now);
    let (a, _) = reserved(store, &hit(T0)).await;
    store.commit(a, T0).await.unwrap();
    let (b, _) = reserved(store, &hit(at(30))).await;
    store.commit(b, at(30)).await.unwrap();
    match store.reserve(&hit(at(60))).await.unwrap() {
        ReserveOutcome::Rejected { current: 2, limit: 2, retry_at, .. } => {
            assert_eq!(retry_at, Some(Timestamp::from_micros(at(60).as_micros() + 1)), "sliding: retry time");
        }
        other => panic!("sliding: an event exactly 60 s old still counts, got {other:?}"),
    }
    let at_edge = Timestamp::from_micros(at(60).as_micros() + 1);
    let (_, totals) = reserved(store, &hit(at_edge)).await;
    assert_eq!(totals, [2], "sliding: oldest event aged out");
    // A lone event exactly `width` old still counts; a microsecond later it is gone.
    store.add(&[CounterSpec::new("t/w3", w, 1, None)], T0).await.unwrap();
    assert_eq!(store.total("t/w3", w, at(60)).await.unwrap(), 1, "sliding: lone event at the edge");
    let past = Timestamp::from_micros(at(60).as_micros() + 1);
    assert_eq!(store.total("t/w3", w, past).await.unwrap(), 0, "sliding: lone event past the edge");
    // A released window event stops counting.
    let (c, _) = reserved(store, &req(vec![CounterSpec::new("t/w2", w, 1, None)], T0)).await;
    store.release(c, T0).await.unwrap();
    assert_eq!(store.total("t/w2", w, T0).await.unwrap(), 0, "sliding: released event");
}

/// A window's recent limit: its edge, its retry time, its rank after every plain limit, and a
/// refusal that changes nothing.
pub async fn recent_limits_rank_last(store: &dyn StateStore) {
    let w = Window::Sliding { width: Duration::from_secs(60) };
    // At most 5 a minute, and 2 within any 10 s.
    let hit = |key: &str| CounterSpec::new(key, w, 1, Some(5)).with_recent(Duration::from_secs(10), 2, Duration::ZERO);
    for s in [0, 5] {
        let outcome = store.add_within(&req(vec![hit("t/r")], at(s))).await.unwrap();
        assert!(matches!(outcome, ReserveOutcome::Reserved { .. }), "recent: call at {s} s: {outcome:?}");
    }
    let edge = Timestamp::from_micros(at(10).as_micros() + 1);
    match store.add_within(&req(vec![hit("t/r")], at(10))).await.unwrap() {
        ReserveOutcome::Rejected { index: 0, current: 2, limit: 2, retry_at, by: Refusal::Recent } => {
            assert_eq!(retry_at, Some(edge), "recent: retry once the oldest recent event leaves");
        }
        other => panic!("recent: an event exactly 10 s old still counts, got {other:?}"),
    }
    assert_eq!(store.total("t/r", w, at(10)).await.unwrap(), 2, "recent: a refusal adds nothing");
    let outcome = store.add_within(&req(vec![hit("t/r")], edge)).await.unwrap();
    assert!(matches!(outcome, ReserveOutcome::Reserved { .. }), "recent: past the edge: {outcome:?}");
    // Every plain limit ranks first, wherever it is in the request.
    let full_day = CounterSpec::new("t/rd", day(), 1, Some(0));
    match store.add_within(&req(vec![hit("t/r"), full_day], at(11))).await.unwrap() {
        ReserveOutcome::Rejected { index: 1, by: Refusal::Limit, .. } => {}
        other => panic!("recent: the plain limit of a later counter ranks first, got {other:?}"),
    }
    // A window at its plain limit says so, even when its recent part is full too.
    for s in [20, 40] {
        store.add(&[hit("t/r")], at(s)).await.unwrap();
    }
    store.add(&[hit("t/r")], at(41)).await.unwrap();
    match store.add_within(&req(vec![hit("t/r")], at(42))).await.unwrap() {
        ReserveOutcome::Rejected { current: 6, limit: 5, by: Refusal::Limit, .. } => {}
        other => panic!("recent: the window's own limit ranks first, got {other:?}"),
    }
    // A held amount counts in the recent part until released; an absent window is empty.
    let (id, _) = reserved(store, &req(vec![hit("t/r2")], T0)).await;
    match store
        .reserve(&req(
            vec![CounterSpec::new("t/r2", w, 2, None).with_recent(Duration::from_secs(10), 2, Duration::ZERO)],
            T0,
        ))
        .await
        .unwrap()
    {
        ReserveOutcome::Rejected { current: 1, limit: 2, by: Refusal::Recent, .. } => {}
        other => panic!("recent: a held amount counts, got {other:?}"),
    }
    store.release(id, T0).await.unwrap();
    let two = CounterSpec::new("t/r2", w, 2, None).with_recent(Duration::from_secs(10), 2, Duration::ZERO);
    assert!(matches!(store.reserve(&req(vec![two.clone()], T0)).await.unwrap(), ReserveOutcome::Reserved { .. }));
    let three = CounterSpec::new("t/r3", w, 3, None).with_recent(Duration::from_secs(10), 2, Duration::ZERO);
    match store.reserve(&req(vec![three], T0)).await.unwrap() {
        ReserveOutcome::Rejected { current: 0, limit: 2, by: Refusal::Recent, .. } => {}
        other => panic!("recent: more than the recent limit at once, got {other:?}"),
    }
    // Only a sliding window at least as wide has a recent part.
    let bad = [
        CounterSpec::new("t/rb", day(), 1, None).with_recent(Duration::from_secs(10), 2, Duration::ZERO),
        CounterSpec::new("t/rb", w, 1, None).with_recent(Duration::from_secs(61), 2, Duration::ZERO),
        CounterSpec::new("t/rb", w, 1, None).with_recent(Duration::ZERO, 2, Duration::ZERO),
    ];
    for c in bad {
        let outcome = store.reserve(&req(vec![c.clone()], T0)).await;
        assert!(matches!(outcome, Err(StoreError::InvalidRequest(_))), "recent: {c:?} must be refused: {outcome:?}");
    }
}

/// A recent limit's refusal starts its cooldown, which refuses first, outlives the window's own
/// life, and ends on time.
pub async fn recent_limits_start_cooldowns(store: &dyn StateStore) {
    let w = Window::Sliding { width: Duration::from_secs(60) };
    let cooldown = Duration::from_secs(30);
    let hit = |amount| CounterSpec::new("t/c", w, amount, None).with_recent(Duration::from_secs(10), 2, cooldown);
    for s in [0, 1] {
        let outcome = store.add_within(&req(vec![hit(1)], at(s))).await.unwrap();
        assert!(matches!(outcome, ReserveOutcome::Reserved { .. }), "cooldown: call at {s} s: {outcome:?}");
    }
    match store.add_within(&req(vec![hit(1)], at(2))).await.unwrap() {
        ReserveOutcome::Rejected { current: 2, by: Refusal::Recent, .. } => {}
        other => panic!("cooldown: the burst, got {other:?}"),
    }
    // A cooldown ranks before a plain limit, even one earlier in the request.
    let full_day = CounterSpec::new("t/cd", day(), 1, Some(0));
    match store.add_within(&req(vec![full_day, hit(1)], at(20))).await.unwrap() {
        ReserveOutcome::Rejected { index: 1, retry_at, by: Refusal::Cooldown, .. } => {
            assert_eq!(retry_at, Some(at(32)), "cooldown: its end");
        }
        other => panic!("cooldown: expected the cooldown, got {other:?}"),
    }
    assert_eq!(store.total("t/c", w, at(20)).await.unwrap(), 2, "cooldown: refusals add nothing");
    let before_end = Timestamp::from_micros(at(32).as_micros() - 1);
    let outcome = store.add_within(&req(vec![hit(1)], before_end)).await.unwrap();
    assert!(matches!(outcome, ReserveOutcome::Rejected { by: Refusal::Cooldown, .. }), "cooldown: {outcome:?}");
    let outcome = store.add_within(&req(vec![hit(1)], at(32))).await.unwrap();
    assert!(matches!(outcome, ReserveOutcome::Reserved { .. }), "cooldown: over at its end: {outcome:?}");
    // A cooldown longer than the window's life, started on an empty window.
    let short = Window::Sliding { width: Duration::from_secs(5) };
    let burst = |amount| {
        CounterSpec::new("t/c2", short, amount, None).with_recent(Duration::from_secs(5), 2, Duration::from_secs(120))
    };
    match store.add_within(&req(vec![burst(3)], T0)).await.unwrap() {
        ReserveOutcome::Rejected { current: 0, by: Refusal::Recent, .. } => {}
        other => panic!("cooldown: more than the recent limit at once, got {other:?}"),
    }
    let outcome = store.add_within(&req(vec![burst(1)], at(100))).await.unwrap();
    assert!(
        matches!(outcome, ReserveOutcome::Rejected { by: Refusal::Cooldown, .. }),
        "cooldown: outlives: {outcome:?}"
    );
    let outcome = store.add_within(&req(vec![burst(1)], at(120))).await.unwrap();
    assert!(matches!(outcome, ReserveOutcome::Reserved { .. }), "cooldown: over: {outcome:?}");
}

/// A streak counts the additions of one mark in a row; another mark starts over; a check
/// changes nothing; a run is forgotten when idle; a released addition is taken back.
pub async fn streaks_count_repeats(store: &dyn StateStore) {
    let run = |mark| Window::Streak { mark, idle: Duration::from_secs(30) };
    // Marks that differ only past 2^53: a store that rounded them to a float would mix them up.
    let (a, b) = (u64::MAX, u64::MAX - 1);
    let hit = |mark, now| req(vec![CounterSpec::new("t/s", run(mark), 1, Some(3))], now);
    for n in 1..=3 {
        match store.add_within(&hit(a, at(n))).await.unwrap() {
            ReserveOutcome::Reserved { totals, .. } => assert_eq!(totals, [n], "streak: repeat {n}"),
            other => panic!("streak: repeat {n} refused: {other:?}"),
        }
    }
    match store.add_within(&hit(a, at(4))).await.unwrap() {
        ReserveOutcome::Rejected { index: 0, current: 3, limit: 3, .. } => {}
        other => panic!("streak: a fourth repeat passes the limit, got {other:?}"),
    }
    assert_eq!(store.total("t/s", run(a), at(4)).await.unwrap(), 3, "streak: the run");
    assert_eq!(store.total("t/s", run(b), at(4)).await.unwrap(), 0, "streak: read with another mark");
    let check = req(vec![CounterSpec::new("t/s", run(b), 0, Some(3))], at(5));
    assert!(matches!(store.add_within(&check).await.unwrap(), ReserveOutcome::Reserved { .. }), "streak: check");
    assert_eq!(store.total("t/s", run(a), at(5)).await.unwrap(), 3, "streak: a check starts no run");
    match store.add_within(&hit(b, at(6))).await.unwrap() {
        ReserveOutcome::Reserved { totals, .. } => assert_eq!(totals, [1], "streak: another mark starts over"),
        other => panic!("streak: another mark refused: {other:?}"),
    }
    assert_eq!(store.total("t/s", run(a), at(6)).await.unwrap(), 0, "streak: the old run ended");
    assert_eq!(store.total("t/s", run(b), at(35)).await.unwrap(), 1, "streak: alive until idle");
    assert_eq!(store.total("t/s", run(b), at(37)).await.unwrap(), 0, "streak: forgotten when idle");
    // A held addition counts until released.
    let (id, totals) = reserved(store, &hit(a, at(40))).await;
    assert_eq!(totals, [1], "streak: held");
    store.release(id, at(40)).await.unwrap();
    assert_eq!(store.total("t/s", run(a), at(40)).await.unwrap(), 0, "streak: released");
    store.add(&[CounterSpec::new("t/s", run(a), 2, None)], at(41)).await.unwrap();
    assert_eq!(store.total("t/s", run(a), at(41)).await.unwrap(), 2, "streak: add");
    let err = store.add(&[CounterSpec::new("t/s", day(), 1, None)], at(41)).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongKind { found: "streak", .. }), "streak: a counter over it: {err:?}");
}

/// `add` ignores limits, subtracts with negative amounts, and never goes below zero.
pub async fn add_is_unconditional(store: &dyn StateStore) {
    let c = |amount| CounterSpec::new("t/add", day(), amount, Some(1));
    assert_eq!(store.add(&[c(5)], T0).await.unwrap(), [5], "add: over the limit");
    assert_eq!(store.add(&[c(-3)], T0).await.unwrap(), [2], "add: negative");
    assert_eq!(store.add(&[c(-10)], T0).await.unwrap(), [0], "add: floor at zero");
}

/// `add_within`: all or nothing like a reservation, final like an add, exact under concurrency.
pub async fn add_within_is_conditional_and_final(store: Arc<dyn StateStore>) {
    let window = Window::Sliding { width: Duration::from_secs(60) };
    let two = req(vec![CounterSpec::new("t/aw", window, 1, Some(2)), CounterSpec::new("t/aw2", day(), 5, Some(5))], T0);
    let id = match store.add_within(&two).await.unwrap() {
        ReserveOutcome::Reserved { id, totals } => {
            assert_eq!(totals, [1, 5], "add_within: totals");
            id
        }
        other => panic!("add_within: expected success, got {other:?}"),
    };
    assert!(!store.release(id, T0).await.unwrap(), "add_within: nothing left to release");
    assert!(!store.commit(id, T0).await.unwrap(), "add_within: nothing left to commit");
    match store.add_within(&two).await.unwrap() {
        ReserveOutcome::Rejected { index: 1, current: 5, limit: 5, .. } => {}
        other => panic!("add_within: expected the second counter to refuse, got {other:?}"),
    }
    assert_eq!(store.total("t/aw", window, T0).await.unwrap(), 1, "add_within: all or nothing");
    assert_eq!(store.total("t/aw", window, at(60)).await.unwrap(), 1, "add_within: a window's edge");
    assert_eq!(store.total("t/aw", window, at(61)).await.unwrap(), 0, "add_within: slides out");
    let mut tasks = Vec::new();
    for _ in 0..1_000 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let r = req(vec![CounterSpec::new("t/awc", day(), 1, Some(100))], T0);
            matches!(store.add_within(&r).await.unwrap(), ReserveOutcome::Reserved { .. })
        }));
    }
    let mut added = 0;
    for t in tasks {
        added += usize::from(t.await.unwrap());
    }
    assert_eq!(added, 100, "add_within: exactly 100 fit");
    // Past every hold: nothing was left pending to lapse.
    assert_eq!(store.total("t/awc", day(), at(3_600)).await.unwrap(), 100, "add_within: final");
}

/// Records: get, put, compare-and-swap, expiry.
pub async fn records_compare_and_swap(store: &dyn StateStore) {
    assert_eq!(store.get_record("t/r", T0).await.unwrap(), None, "records: absent");
    assert!(store.swap_record("t/r", None, Some(b"one"), Some(at(10)), T0).await.unwrap(), "records: create");
    assert!(!store.swap_record("t/r", None, Some(b"two"), None, T0).await.unwrap(), "records: create twice");
    assert!(!store.swap_record("t/r", Some(b"zzz"), Some(b"two"), None, T0).await.unwrap(), "records: wrong expected");
    assert_eq!(store.get_record("t/r", at(9)).await.unwrap().as_deref(), Some(&b"one"[..]), "records: read");
    assert_eq!(store.get_record("t/r", at(10)).await.unwrap(), None, "records: expired");
    assert!(
        store.swap_record("t/r", None, Some(b"new"), None, at(10)).await.unwrap(),
        "records: expired counts as absent"
    );
    assert!(store.swap_record("t/r", Some(b"new"), None, None, at(10)).await.unwrap(), "records: delete");
    assert_eq!(store.get_record("t/r", at(10)).await.unwrap(), None, "records: deleted");
    store.put_record("t/p", Some(b"x"), None, T0).await.unwrap();
    store.put_record("t/p", Some(b"y"), Some(at(5)), T0).await.unwrap();
    assert_eq!(store.get_record("t/p", T0).await.unwrap().as_deref(), Some(&b"y"[..]), "records: put overwrites");
    assert_eq!(store.get_record("t/p", at(5)).await.unwrap(), None, "records: put expiry");
    store.put_record("t/p", None, None, T0).await.unwrap();
}

/// Records: read-and-rewrite in one step, even under concurrent updates.
pub async fn records_update_atomically(store: Arc<dyn StateStore>) {
    let mut seen = Vec::new();
    let mut set = |current: Option<&[u8]>, next: &mut Vec<u8>| {
        seen.push(current.map(<[u8]>::to_vec));
        next.extend_from_slice(b"one");
        true
    };
    store.update_record("t/u", &mut set, Some(at(10)), T0).await.unwrap();
    assert_eq!(seen.last(), Some(&None), "update: absent reads as None");
    let mut keep = |current: Option<&[u8]>, _: &mut Vec<u8>| {
        assert_eq!(current, Some(&b"one"[..]), "update: reads the current value");
        false
    };
    store.update_record("t/u", &mut keep, None, T0).await.unwrap();
    assert_eq!(store.get_record("t/u", at(9)).await.unwrap().as_deref(), Some(&b"one"[..]), "update: kept");
    assert_eq!(store.get_record("t/u", at(10)).await.unwrap(), None, "update: the new value's expiry");
    store.add(&[CounterSpec::new("t/uc", day(), 1, None)], T0).await.unwrap();
    let mut any = |_: Option<&[u8]>, next: &mut Vec<u8>| {
        next.push(1);
        true
    };
    let err = store.update_record("t/uc", &mut any, None, T0).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongKind { .. }), "update: a counter is not a record: {err:?}");
    // 32 callers: a compare-and-swap fails only when another caller's succeeds, so none needs
    // more tries than a store's default allows.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut increment = |current: Option<&[u8]>, next: &mut Vec<u8>| {
                let n = current.and_then(|c| c.try_into().ok()).map_or(0, u32::from_le_bytes);
                next.extend_from_slice(&(n + 1).to_le_bytes());
                true
            };
            store.update_record("t/count", &mut increment, None, T0).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let count = store.get_record("t/count", T0).await.unwrap().unwrap();
    assert_eq!(count, 32_u32.to_le_bytes(), "update: no concurrent update is lost");
}

/// A key holds one kind of value.
pub async fn kinds_do_not_mix(store: &dyn StateStore) {
    store.put_record("t/k", Some(b"x"), None, T0).await.unwrap();
    let err = store.reserve(&req(vec![CounterSpec::new("t/k", day(), 1, None)], T0)).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongKind { .. }), "kinds: counter on a record: {err:?}");
    store.add(&[CounterSpec::new("t/k2", day(), 1, None)], T0).await.unwrap();
    let err = store.get_record("t/k2", T0).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongKind { .. }), "kinds: record on a counter: {err:?}");
}

/// Malformed requests are errors, never silent successes.
pub async fn bad_requests_are_errors(store: &dyn StateStore) {
    let neg = req(vec![CounterSpec::new("t/n", day(), -1, None)], T0);
    assert!(matches!(store.reserve(&neg).await, Err(StoreError::InvalidRequest(_))), "bad: negative reserve");
    let dup = req(vec![CounterSpec::new("t/d", day(), 1, None), CounterSpec::new("t/d", day(), 1, None)], T0);
    assert!(matches!(store.reserve(&dup).await, Err(StoreError::InvalidRequest(_))), "bad: duplicate key");
    let empty = req(vec![CounterSpec::new("", day(), 1, None)], T0);
    assert!(matches!(store.reserve(&empty).await, Err(StoreError::InvalidRequest(_))), "bad: empty key");
}

/// 1,000 concurrent reserves of 1 against a limit of 100 succeed exactly 100 times.
pub async fn concurrent_reserves_never_pass_the_limit(store: Arc<dyn StateStore>) {
    let mut tasks = Vec::new();
    for _ in 0..1_000 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let r = req(vec![CounterSpec::new("t/conc", day(), 10_000, Some(1_000_000))], T0);
            match store.reserve(&r).await.unwrap() {
                ReserveOutcome::Reserved { id, .. } => store.commit(id, T0).await.unwrap(),
                ReserveOutcome::Rejected { .. } => false,
            }
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(allowed, 100, "concurrent: exactly 100 reserves fit");
    assert_eq!(store.total("t/conc", day(), T0).await.unwrap(), 1_000_000, "concurrent: total at the limit");
}
