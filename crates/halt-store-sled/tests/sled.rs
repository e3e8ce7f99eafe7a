//! The sled store: the conformance suite, restarts, a crash in strict mode, corrupted data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use halt_core::store::{CounterSpec, ReserveOutcome, ReserveRequest, Window};
use halt_core::{CallContext, Clock, Decision, ManualClock, StateStore, StoreError, SystemClock, Timestamp};
use halt_engine::{ApprovalResponse, Engine};
use halt_store_sled::{Durability, SledStore, SledStoreConfig};
use halt_testing::guards::{ReservingGuard, StaticGuard};

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "halt-sled-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_conforms_in_both_durabilities() {
    for durability in [Durability::Strict, Durability::Relaxed { flush_every_ms: 50 }] {
        let root = TempDir::new("conformance");
        let n = AtomicU32::new(0);
        let make = || {
            let path = root.0.join(n.fetch_add(1, Ordering::SeqCst).to_string());
            async move {
                Arc::new(SledStore::open(&SledStoreConfig::new(path).durability(durability)).unwrap())
                    as Arc<dyn StateStore>
            }
        };
        halt_testing::store_conformance::run(make).await;
    }
}

const CENT: i64 = 10_000;

fn day() -> Window {
    Window::Idle { idle: Duration::from_secs(86_400) }
}

#[tokio::test]
async fn counters_and_pending_approvals_survive_a_restart() {
    let dir = TempDir::new("restart");
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let build = || {
        let store = SledStore::open(&SledStoreConfig::new(&dir.0)).unwrap();
        Engine::builder()
            .guard(ReservingGuard::new("spend", "k", 30 * CENT, 100 * CENT))
            .guard(StaticGuard::new("ask", Decision::require_approval("ask")).only_for("buy"))
            .store(store)
            .clock(clock.clone())
            .approval_timeout(Duration::from_secs(600))
            .build()
            .unwrap()
    };
    {
        let engine = build();
        assert!(engine.evaluate(CallContext::new("llm").with_call_id("a")).await.is_allowed());
        assert!(engine.evaluate(CallContext::new("buy").with_call_id("pending")).await.needs_approval());
    }
    // Reopened: the committed 0.30 and the held 0.30 are both there, and the approval still works.
    let engine = build();
    let now = clock.now();
    assert_eq!(engine.store().total("k", day(), now).await.unwrap(), 60 * CENT);
    engine.resolve_approval("pending", &ApprovalResponse::approve("alice")).await.unwrap();
    assert_eq!(engine.store().total("k", day(), now).await.unwrap(), 60 * CENT);
    // Settling works across the restart too.
    engine.settle("a", halt_core::Money::from_micros(5 * CENT)).await.unwrap();
    assert_eq!(engine.store().total("k", day(), now).await.unwrap(), 35 * CENT);
}

#[tokio::test]
async fn held_reservations_lapse_after_a_restart() {
    let dir = TempDir::new("lapse");
    let t0 = Timestamp::from_secs(1_800_000_000);
    {
        let store = SledStore::open(&SledStoreConfig::new(&dir.0)).unwrap();
        let req = ReserveRequest {
            counters: vec![CounterSpec::new("k", day(), 7, None)],
            now: t0,
            hold_until: t0.saturating_add(Duration::from_secs(60)),
        };
        assert!(matches!(store.reserve(&req).await.unwrap(), ReserveOutcome::Reserved { .. }));
        store.flush().await.unwrap();
    }
    let store = SledStore::open(&SledStoreConfig::new(&dir.0)).unwrap();
    assert_eq!(store.total("k", day(), t0).await.unwrap(), 7, "still held");
    assert_eq!(store.total("k", day(), t0.saturating_add(Duration::from_secs(61))).await.unwrap(), 0, "lapsed");
}

#[tokio::test]
async fn relaxed_reservations_in_flight_at_a_restart_stay_counted() {
    // Relaxed durability holds pending reservations in memory: after a restart, an amount that
    // was reserved and never settled still counts (stricter, never looser) until its window ends.
    let dir = TempDir::new("relaxed-held");
    let relaxed = || SledStoreConfig::new(&dir.0).durability(Durability::Relaxed { flush_every_ms: 10 });
    let t0 = Timestamp::from_secs(1_800_000_000);
    let req = ReserveRequest {
        counters: vec![CounterSpec::new("k", day(), 7, None)],
        now: t0,
        hold_until: t0.saturating_add(Duration::from_secs(60)),
    };
    let id = {
        let store = SledStore::open(&relaxed()).unwrap();
        let ReserveOutcome::Reserved { id, .. } = store.reserve(&req).await.unwrap() else { panic!() };
        // Settled before the restart, a reservation behaves as in strict mode.
        let ReserveOutcome::Reserved { id: released, .. } = store.reserve(&req).await.unwrap() else { panic!() };
        assert!(store.release(released, t0).await.unwrap());
        assert!(!store.release(released, t0).await.unwrap(), "released once");
        store.flush().await.unwrap();
        id
    };
    let store = SledStore::open(&relaxed()).unwrap();
    let later = t0.saturating_add(Duration::from_secs(61));
    assert_eq!(store.total("k", day(), later).await.unwrap(), 7, "still counted after its hold");
    assert!(!store.commit(id, t0).await.unwrap(), "unknown after the restart");
    let next_day = t0.saturating_add(Duration::from_secs(86_401));
    assert_eq!(store.total("k", day(), next_day).await.unwrap(), 0, "gone with its window");
}

#[tokio::test]
async fn a_corrupted_value_is_an_error_not_a_panic() {
    let dir = TempDir::new("corrupt");
    {
        let db = sled::open(&dir.0).unwrap();
        db.insert(b"c:broken", &[2u8, 0, 0, 0][..]).unwrap();
        db.insert(b"c:unknown", &[9u8; 30][..]).unwrap();
        db.flush().unwrap();
    }
    let now = Timestamp::from_secs(1);
    for durability in [Durability::Relaxed { flush_every_ms: 10 }, Durability::Strict] {
        let store = SledStore::open(&SledStoreConfig::new(&dir.0).durability(durability)).unwrap();
        for key in ["broken", "unknown"] {
            let err = store.total(key, day(), now).await.unwrap_err();
            assert!(matches!(&err, StoreError::Corrupt { key: k, .. } if k == &format!("c:{key}")), "{err:?}");
            let req = ReserveRequest { counters: vec![CounterSpec::new(key, day(), 1, Some(5))], now, hold_until: now };
            assert!(matches!(store.reserve(&req).await, Err(StoreError::Corrupt { .. })), "{durability:?}");
        }
    }
    let store = SledStore::open(&SledStoreConfig::new(&dir.0)).unwrap();
    // An engine denies fail-safe rather than loosening.
    let engine = Engine::builder().guard(ReservingGuard::new("spend", "broken", 1, 100)).store(store).build().unwrap();
    let o = engine.evaluate(CallContext::new("f")).await;
    assert!(o.is_denied() && o.denial_reasons()[0].contains("fail-safe"), "{:?}", o.denial_reasons());
}

/// The child side of the crash tests: spends in a loop, printing each allowed call once
/// `evaluate` has returned (in strict mode, once its commit is on disk). With
/// `HALT_SLED_CRASH_CALLS`, relaxed durability, and after that many calls it prints `idle` and
/// waits to be killed. Runs only when spawned.
#[tokio::test]
#[ignore = "spawned by the crash tests"]
async fn crash_child() {
    let Ok(dir) = std::env::var("HALT_SLED_CRASH_DIR") else { return };
    let calls: Option<u64> = std::env::var("HALT_SLED_CRASH_CALLS").ok().map(|n| n.parse().unwrap());
    let durability = if calls.is_some() { Durability::Relaxed { flush_every_ms: 20 } } else { Durability::Strict };
    let store = SledStore::open(&SledStoreConfig::new(dir).durability(durability)).unwrap();
    let engine = Engine::builder()
        .guard(ReservingGuard::new("spend", "crash", CENT, i64::MAX / 2))
        .store(store)
        .build()
        .unwrap();
    for i in 0..calls.unwrap_or(u64::MAX) {
        if engine.evaluate(CallContext::new("llm").with_call_id(format!("c{i}"))).await.is_allowed() {
            println!("allowed {i}");
        }
    }
    println!("idle");
    std::future::pending::<()>().await;
}

/// Spawns [`crash_child`] on `dir`.
fn spawn_child(dir: &TempDir, relaxed_calls: Option<u64>) -> (std::process::Child, impl Iterator<Item = String>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("HALT_SLED_CRASH_DIR", &dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(n) = relaxed_calls {
        cmd.env("HALT_SLED_CRASH_CALLS", n.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    (child, lines)
}

/// The spend committed in `dir`, past the hold of any reservation in flight at a kill (the
/// engine's default 900 s) and within the counter's idle day, in calls.
fn committed_calls(dir: &TempDir) -> u64 {
    let store = SledStore::open(&SledStoreConfig::new(&dir.0)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let later = SystemClock.now().saturating_add(Duration::from_secs(901));
    u64::try_from(rt.block_on(store.total("crash", day(), later)).unwrap() / CENT).unwrap()
}

#[test]
fn crash_in_strict_mode_loses_no_committed_spend() {
    let dir = TempDir::new("crash");
    let (mut child, mut lines) = spawn_child(&dir, None);
    let mut reported = 0u64;
    while reported < 300 {
        match lines.next() {
            // The test harness may print its own text before ours on the same line.
            Some(line) if line.contains("allowed ") => reported += 1,
            Some(_) => {}
            None => panic!("the child stopped early after {reported} calls"),
        }
    }
    // SIGKILL in the middle of the load.
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines the child printed before it died may still be in the pipe.
    reported += u64::try_from(lines.filter(|l| l.contains("allowed ")).count()).unwrap();
    let committed = committed_calls(&dir);
    // The child prints after `evaluate` returns, so one call may have committed and not printed.
    assert!(
        committed == reported || committed == reported + 1,
        "committed {committed} calls, the child reported {reported}"
    );
}

#[test]
fn relaxed_mode_writes_behind_by_itself() {
    // Relaxed durability keeps changes in memory and writes them behind every 20 ms: killed a
    // while after its last call, with nobody flushing or closing it, the child lost nothing.
    let dir = TempDir::new("behind");
    let (mut child, lines) = spawn_child(&dir, Some(200));
    let mut reported = 0u64;
    for line in lines {
        if line.contains("allowed ") {
            reported += 1;
        }
        if line.contains("idle") {
            break;
        }
    }
    assert_eq!(reported, 200, "the child stopped early");
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(committed_calls(&dir), 200);
}

#[tokio::test]
async fn relaxed_changes_are_written_when_the_store_is_closed() {
    let dir = TempDir::new("relaxed-close");
    // A write-behind interval far longer than the test: only closing writes.
    let relaxed = || SledStoreConfig::new(&dir.0).durability(Durability::Relaxed { flush_every_ms: 600_000 });
    let t0 = Timestamp::from_secs(1_800_000_000);
    {
        let store = SledStore::open(&relaxed()).unwrap();
        store.add(&[CounterSpec::new("k", day(), 5, None)], t0).await.unwrap();
        store.put_record("r", Some(b"kept"), None, t0).await.unwrap();
        store.put_record("gone", Some(b"x"), None, t0).await.unwrap();
        store.put_record("gone", None, None, t0).await.unwrap();
    }
    let store = SledStore::open(&relaxed()).unwrap();
    assert_eq!(store.total("k", day(), t0).await.unwrap(), 5);
    assert_eq!(store.get_record("r", t0).await.unwrap().as_deref(), Some(&b"kept"[..]));
    assert_eq!(store.get_record("gone", t0).await.unwrap(), None);
    assert_eq!(store.key_count(), 2, "the removed record is not on disk");
}

#[tokio::test]
async fn expired_keys_are_purged_and_the_purger_runs_in_the_background() {
    let dir = TempDir::new("purge");
    let store = Arc::new(SledStore::open(&SledStoreConfig::new(&dir.0)).unwrap());
    let t0 = Timestamp::from_secs(1_800_000_000);
    let bucket = Window::Bucket { expires_at: t0.saturating_add(Duration::from_secs(10)) };
    store.add(&[CounterSpec::new("old", bucket, 1, None)], t0).await.unwrap();
    store.add(&[CounterSpec::new("young", day(), 1, None)], t0).await.unwrap();
    store.put_record("stamp", Some(b"x"), Some(t0.saturating_add(Duration::from_secs(5))), t0).await.unwrap();
    let later = t0.saturating_add(Duration::from_secs(11));
    assert_eq!(store.purge_expired(later).unwrap(), 2, "the bucket and the record expired");
    assert_eq!(store.purge_expired(later).unwrap(), 0);
    assert_eq!(store.total("young", day(), later).await.unwrap(), 1);
    // The background purger does the same on its own clock.
    store.add(&[CounterSpec::new("old2", bucket, 1, None)], t0).await.unwrap();
    let clock = ManualClock::new(later);
    let task = store.spawn_purger(Arc::new(clock), Duration::from_millis(10));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.key_count() > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.key_count(), 1, "only `young` is left");
    task.abort();
}
