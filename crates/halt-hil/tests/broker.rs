//! The broker's rules, each enforced by the broker itself: binding, single use, expiry with the
//! held reservations released, one winner among concurrent decisions, the two-person rule, bad
//! input, and approvals that outlive the process that asked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;
use std::time::Duration;

use halt_core::names::NamePatterns;
use halt_core::{CallContext, Clock, Decision, JsonObject, ManualClock, Outcome, StateStore, Timestamp};
use halt_engine::{ApprovalRequest, Engine};
use halt_hil::{Approval, ApprovalState, AutoDeny, Broker, BrokerConfig, BrokerError, Filter, Verdict};
use halt_store_memory::MemoryStore;
use halt_testing::guards::{ReservingGuard, StaticGuard};
use serde_json::{Value, json};

const CENT: i64 = 10_000;
const ONE: i64 = 1_000_000;

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_secs(1_800_000_000))
}

fn config(version: &str) -> BrokerConfig {
    BrokerConfig {
        expires_after: Duration::from_secs(60),
        policy_version: version.into(),
        poll_interval: Duration::from_millis(5),
        ..BrokerConfig::default()
    }
}

fn call(function: &str, args: Value) -> CallContext {
    CallContext::new(function).with_arguments(args).unwrap().with_agent("bot-1").with_session("s-1")
}

/// Records an approval for `ctx` as the engine would ask it.
async fn ask(broker: &Broker, ctx: &CallContext) -> Approval {
    let outcome = Outcome::new(
        ctx.call_id.clone(),
        ctx.function_name.clone(),
        vec![Decision::require_approval("a person decides").with_guard("ask".into())],
        &ctx.arguments,
    );
    broker.ask(&ApprovalRequest { context: ctx, outcome: &outcome, expires_at: 0.0, approval_id: None }).await.unwrap()
}

fn engine_for(store: &Arc<dyn StateStore>, clock: &ManualClock, broker: Broker) -> Engine {
    Engine::builder()
        .store_arc(Arc::clone(store))
        .clock(clock.clone())
        .guard(ReservingGuard::new("spend", "k", 40 * CENT, ONE))
        .guard(StaticGuard::new("ask", Decision::require_approval("a person decides")))
        .approval_handler(broker)
        .approval_timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

async fn spent(engine: &Engine) -> i64 {
    engine.store().total("k", ReservingGuard::window(), engine.clock().now()).await.unwrap()
}

fn memory() -> Arc<dyn StateStore> {
    Arc::new(MemoryStore::new())
}

fn broker(store: &Arc<dyn StateStore>, clock: &ManualClock, version: &str) -> Broker {
    Broker::new(Arc::clone(store), Arc::new(clock.clone()), config(version))
}

async fn count(broker: &Broker) -> usize {
    broker.list(&Filter::default()).await.unwrap().len()
}

#[tokio::test]
async fn an_approval_covers_exactly_its_call_once() {
    let (store, clock) = (memory(), clock());
    let b = broker(&store, &clock, "v1");
    // Nobody is there to decide: a call that needs a new approval is refused at once.
    let engine = engine_for(&store, &clock, b.clone().with_handler(Arc::new(AutoDeny)));
    let approved = call("buy", json!({"item": "laptop", "qty": 1}));
    let a = ask(&b, &approved).await;
    b.decide(&a.id, Verdict::Approve, "alice", None).await.unwrap();
    assert_eq!(count(&b).await, 1);

    for (other, what) in [
        (call("buy", json!({"item": "laptop", "qty": 2})), "other arguments"),
        (call("buy", json!({"item": "laptop", "qty": 1})).with_agent("bot-2"), "another agent"),
        (call("buy", json!({"item": "laptop", "qty": 1})).with_session("s-2"), "another session"),
        (call("sell", json!({"item": "laptop", "qty": 1})), "another function"),
    ] {
        let before = count(&b).await;
        let o = engine.evaluate(other).await;
        assert!(o.is_denied(), "{what}: {o:?}");
        assert_eq!(count(&b).await, before + 1, "{what} asks again");
        assert_eq!(b.get(&a.id).await.unwrap().state, ApprovalState::Approved, "{what} left it unused");
    }
    // Under another policy version, the same call asks again.
    let v2 = engine_for(&store, &clock, broker(&store, &clock, "v2").with_handler(Arc::new(AutoDeny)));
    assert!(v2.evaluate(approved.clone()).await.is_denied());
    assert_eq!(b.get(&a.id).await.unwrap().state, ApprovalState::Approved);

    // The call itself, spelled with its keys in another order, runs: once.
    let same = call(" Buy", json!({"qty": 1, "item": "laptop"}));
    let o = engine.evaluate(same.clone()).await;
    assert!(o.is_allowed(), "{o:?}");
    assert_eq!(o.approver(), Some("alice"));
    let used = b.get(&a.id).await.unwrap();
    assert_eq!(used.state, ApprovalState::Used);
    assert!(used.used_at.is_some());
    assert_eq!(spent(&engine).await, 40 * CENT);
    let before = count(&b).await;
    assert!(engine.evaluate(same).await.is_denied(), "single use");
    assert_eq!(count(&b).await, before + 1, "the second time asks again");
    assert_eq!(spent(&engine).await, 40 * CENT);
}

async fn pending(broker: &Broker) -> Approval {
    for _ in 0..2_000 {
        let mut list = broker.list(&Filter { state: Some(ApprovalState::Pending), ..Filter::default() }).await.unwrap();
        if let Some(a) = list.pop() {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("no approval was asked");
}

#[tokio::test]
async fn an_expired_approval_is_refused_and_its_reservations_released() {
    let (store, clock) = (memory(), clock());
    let b = broker(&store, &clock, "v1");
    let engine = engine_for(&store, &clock, b.clone());
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { engine.evaluate(call("buy", json!({"qty": 1}))).await }
    });
    let a = pending(&b).await;
    assert_eq!(spent(&engine).await, 40 * CENT, "held while pending");
    clock.advance(Duration::from_secs(61));
    let o = running.await.unwrap();
    assert!(o.is_denied(), "{o:?}");
    assert_eq!(o.approved(), Some(false));
    assert_eq!(spent(&engine).await, 0, "released on expiry");
    let expired = b.get(&a.id).await.unwrap();
    assert_eq!(expired.state, ApprovalState::Expired);
    assert_eq!(expired.decided_by.as_deref(), Some("broker"));
    let late = b.decide(&a.id, Verdict::Approve, "alice", None).await;
    assert_eq!(late, Err(BrokerError::AlreadyDecided { id: a.id.clone(), state: ApprovalState::Expired }));
}

#[tokio::test]
async fn a_decision_wakes_the_waiting_call_which_commits() {
    let (store, clock) = (memory(), clock());
    let b = broker(&store, &clock, "v1");
    let engine = engine_for(&store, &clock, b.clone());
    for (verdict, allowed, spent_after) in [(Verdict::Deny, false, 0), (Verdict::Approve, true, 40 * CENT)] {
        let running = tokio::spawn({
            let engine = engine.clone();
            async move { engine.evaluate(call("buy", json!({"qty": 1}))).await }
        });
        let a = pending(&b).await;
        assert_eq!(a.reasons, ["a person decides"]);
        assert_eq!(a.guards, ["ask"]);
        assert_eq!(a.agent_id.as_deref(), Some("bot-1"));
        b.decide(&a.id, verdict.clone(), "alice", Some("checked")).await.unwrap();
        let o = running.await.unwrap();
        assert_eq!(o.is_allowed(), allowed);
        assert_eq!(o.approver(), Some("alice"));
        assert_eq!(spent(&engine).await, spent_after);
        let done = b.get(&a.id).await.unwrap();
        assert_eq!(done.state, if allowed { ApprovalState::Used } else { ApprovalState::Denied });
        assert_eq!(done.reason.as_deref(), Some("checked"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_a_hundred_concurrent_decisions_exactly_one_wins() {
    for store in [memory(), sled_store(&temp_dir("race"))] {
        let clock = clock();
        let b = broker(&store, &clock, "v1");
        let a = ask(&b, &call("buy", json!({"qty": 1}))).await;
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let b = b.clone();
                let id = a.id.clone();
                tokio::spawn(async move {
                    let verdict = if i % 2 == 0 { Verdict::Approve } else { Verdict::Deny };
                    b.decide(&id, verdict, &format!("approver-{i}"), None).await
                })
            })
            .collect();
        let mut won = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(a) => won.push(a),
                Err(BrokerError::AlreadyDecided { .. }) => {}
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert_eq!(won.len(), 1, "exactly one decision wins");
        let stored = b.get(&a.id).await.unwrap();
        assert_eq!(stored.decided_by, won[0].decided_by, "and it is the one kept");
        assert_eq!(stored.votes.len(), usize::from(stored.state == ApprovalState::Approved));
    }
}

#[tokio::test]
async fn two_person_rule_needs_two_distinct_approvers_and_any_denial_ends_it() {
    let (store, clock) = (memory(), clock());
    let mut cfg = config("v1");
    cfg.require_approvers = vec![
        (NamePatterns::new(["purchase_*"]).unwrap(), 2),
        (NamePatterns::new(["*_item"]).unwrap(), 1),
        (NamePatterns::new(["purchase_fleet"]).unwrap(), 3),
    ];
    let b = Broker::new(Arc::clone(&store), Arc::new(clock.clone()), cfg);

    let a = ask(&b, &call("purchase_item", json!({"qty": 1}))).await;
    assert_eq!(a.required, 2);
    let once = b.decide(&a.id, Verdict::Approve, "alice", None).await.unwrap();
    assert_eq!((once.state, once.votes.len()), (ApprovalState::Pending, 1));
    let twice = b.decide(&a.id, Verdict::Approve, "alice", Some("again")).await.unwrap();
    assert_eq!((twice.state, twice.votes.len()), (ApprovalState::Pending, 1), "the same approver counts once");
    let edit = Verdict::Edit { arguments: json!({"qty": 0}), function: None };
    assert!(matches!(b.decide(&a.id, edit, "carol", None).await, Err(BrokerError::InvalidEdit(_))));
    let done = b.decide(&a.id, Verdict::Approve, "bob", None).await.unwrap();
    assert_eq!((done.state, done.votes.len()), (ApprovalState::Approved, 2));
    assert_eq!(done.decided_by.as_deref(), Some("bob"));

    let d = ask(&b, &call("purchase_item", json!({"qty": 2}))).await;
    b.decide(&d.id, Verdict::Approve, "alice", None).await.unwrap();
    let denied = b.decide(&d.id, Verdict::Deny, "bob", None).await.unwrap();
    assert_eq!(denied.state, ApprovalState::Denied, "one denial ends it");

    let single = ask(&b, &call("refund", json!({}))).await;
    assert_eq!(single.required, 1, "other functions need one approver");
    let strictest = ask(&b, &call("purchase_fleet", json!({}))).await;
    assert_eq!(strictest.required, 3, "the largest number among the matching patterns counts");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let (store, clock) = (memory(), clock());
    let b = broker(&store, &clock, "v1");
    let a = ask(&b, &call("buy", json!({"qty": 1}))).await;
    let unchanged = || async { b.get(&a.id).await.unwrap() };
    let before = unchanged().await;

    assert_eq!(b.get("nope").await, Err(BrokerError::Unknown("nope".into())));
    assert_eq!(b.decide("nope", Verdict::Approve, "alice", None).await, Err(BrokerError::Unknown("nope".into())));
    assert_eq!(b.wait("nope", Duration::from_millis(1)).await, Err(BrokerError::Unknown("nope".into())));
    for bad in [json!([1, 2]), json!("qty=0"), json!(null), json!(3)] {
        let edit = Verdict::Edit { arguments: bad, function: None };
        let e = b.decide(&a.id, edit, "alice", None).await.unwrap_err();
        assert_eq!(e.to_string(), "invalid edit: the edited arguments must be a JSON object");
    }
    let bad_tool = Verdict::Edit { arguments: json!({}), function: Some("\u{0}".into()) };
    assert!(matches!(b.decide(&a.id, bad_tool, "alice", None).await, Err(BrokerError::InvalidEdit(_))));
    for approver in ["", "   ", "al\nice", &"x".repeat(300)] {
        let e = b.decide(&a.id, Verdict::Approve, approver, None).await.unwrap_err();
        assert!(matches!(e, BrokerError::InvalidApprover(_)), "{approver:?}: {e}");
    }
    let own = b.decide(&a.id, Verdict::Approve, " BOT-1", None).await.unwrap_err();
    assert_eq!(own.to_string(), "invalid approver: the agent that asked cannot decide its own call");
    assert_eq!(unchanged().await, before);

    clock.advance(Duration::from_secs(61));
    assert_eq!(b.decide(&a.id, Verdict::Approve, "alice", None).await, Err(BrokerError::Expired(a.id.clone())));
    let seen = unchanged().await;
    assert_eq!(seen.state, ApprovalState::Expired, "read as expired");
    assert_eq!(seen.votes, before.votes);
}

#[tokio::test]
async fn list_filters_by_state_agent_and_function() {
    let (store, clock) = (memory(), clock());
    let b = broker(&store, &clock, "v1");
    let x = ask(&b, &call("buy", json!({}))).await;
    let y = ask(&b, &call("sell", json!({})).with_agent("bot-2")).await;
    b.decide(&y.id, Verdict::Deny, "alice", None).await.unwrap();
    let ids = |list: Vec<Approval>| list.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(ids(b.list(&Filter::default()).await.unwrap()), [x.id.as_str(), y.id.as_str()]);
    let by_state = Filter { state: Some(ApprovalState::Denied), ..Filter::default() };
    assert_eq!(ids(b.list(&by_state).await.unwrap()), [y.id.as_str()]);
    let by_agent = Filter { agent_id: Some("bot-1".into()), ..Filter::default() };
    assert_eq!(ids(b.list(&by_agent).await.unwrap()), [x.id.as_str()]);
    let by_function = Filter { function: Some(" SELL".into()), ..Filter::default() };
    assert_eq!(ids(b.list(&by_function).await.unwrap()), [y.id.as_str()]);
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("halt-hil-{name}-{}-{}", std::process::id(), rand_suffix()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

fn sled_store(dir: &std::path::Path) -> Arc<dyn StateStore> {
    Arc::new(halt_store_sled::SledStore::open(&halt_store_sled::SledStoreConfig::new(dir)).unwrap())
}

#[tokio::test]
async fn approvals_survive_reopening_a_sled_store() {
    let dir = temp_dir("reopen");
    let clock = clock();
    let (pending_id, approved_id) = {
        let store = sled_store(&dir);
        let b = broker(&store, &clock, "v1");
        let p = ask(&b, &call("buy", json!({"qty": 1}))).await;
        let a = ask(&b, &call("buy", json!({"qty": 2}))).await;
        b.decide(&a.id, Verdict::Approve, "alice", Some("ok")).await.unwrap();
        (p.id, a.id)
    };
    let mut reopened = None;
    for _ in 0..200 {
        // sled lets go of its lock a moment after the last handle is dropped.
        match halt_store_sled::SledStore::open(&halt_store_sled::SledStoreConfig::new(&dir)) {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let store: Arc<dyn StateStore> = Arc::new(reopened.expect("reopen"));
    let b = broker(&store, &clock, "v1");
    assert_eq!(count(&b).await, 2);
    assert_eq!(b.get(&pending_id).await.unwrap().state, ApprovalState::Pending);
    let approved = b.get(&approved_id).await.unwrap();
    assert_eq!((approved.state, approved.decided_by.as_deref()), (ApprovalState::Approved, Some("alice")));
    // The approved call, proposed again after the restart, runs once on its approval.
    let engine = engine_for(&store, &clock, b.clone().with_handler(Arc::new(AutoDeny)));
    assert!(engine.evaluate(call("buy", json!({"qty": 2}))).await.is_allowed());
    assert_eq!(b.get(&approved_id).await.unwrap().state, ApprovalState::Used);
    // And the pending one can still be decided.
    b.decide(&pending_id, Verdict::Deny, "bob", None).await.unwrap();
    drop((engine, b, store));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unreadable_list_of_approvals_is_an_error_not_a_fresh_start() {
    let (store, clock) = (memory(), clock());
    let b = broker(&store, &clock, "v1");
    let first = ask(&b, &call("buy", json!({}))).await;
    store.put_record("halt/approvals", Some(b"not json"), None, clock.now()).await.unwrap();
    let outcome = Outcome::new(String::new(), "buy".into(), Vec::new(), &JsonObject::new());
    let ctx = call("buy", json!({"n": 2}));
    let e = b.ask(&ApprovalRequest { context: &ctx, outcome: &outcome, expires_at: 0.0, approval_id: None }).await;
    assert!(matches!(e, Err(BrokerError::Store(halt_core::StoreError::Corrupt { .. }))), "{e:?}");
    assert!(b.list(&Filter::default()).await.is_err());
    assert_eq!(b.get(&first.id).await.unwrap().state, ApprovalState::Pending, "the approval itself is intact");
}
