//! Engine behaviour: priority, hooks, events, fail-safe paths, modifications, effects, settle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use halt_core::{
    CallContext, Clock, Decision, DecisionKind, ManualClock, Money, Outcome, ReplayClock, Timestamp, async_trait,
};
use halt_engine::{
    ApprovalError, ApprovalHandler, ApprovalRequest, ApprovalResponse, Engine, EngineError, EngineEvent, HookError,
    Mode, ResolveError, SettleError,
};
use halt_store_memory::MemoryStore;
use halt_testing::guards::{
    FailingGuard, Failure, ReservingGuard, SettingGuard, StaticGuard, count_allowed_concurrently,
};
use serde_json::json;

const CENT: i64 = 10_000; // 0.01 in micro-units
const ONE: i64 = 1_000_000;

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_secs(1_800_000_000))
}

fn call(name: &str) -> CallContext {
    CallContext::new(name)
}

async fn spent(engine: &Engine, key: &str) -> i64 {
    engine.store().total(key, ReservingGuard::window(), engine.clock().now()).await.unwrap()
}

#[tokio::test]
async fn no_guards_allow() {
    let outcome = Engine::new().evaluate(call("anything")).await;
    assert!(outcome.is_allowed());
    assert!(outcome.decisions().is_empty());
    assert_eq!(outcome.decision(), DecisionKind::Allow);
}

#[tokio::test]
async fn most_restrictive_wins_and_ties_go_to_the_first_registered() {
    let engine = Engine::builder()
        .guard(StaticGuard::new("a", Decision::allow("a ok")))
        .guard(StaticGuard::new("b", Decision::require_approval("b asks")))
        .guard(StaticGuard::new("c", Decision::deny("c no")))
        .guard(StaticGuard::new("d", Decision::deny("d no")))
        .build()
        .unwrap();
    let o = engine.evaluate(call("f")).await;
    assert!(o.is_denied());
    assert_eq!(o.final_decision().unwrap().guard(), "c");
    assert_eq!(o.denial_reasons(), ["c no", "d no"]);
    assert_eq!(o.approval_reasons(), ["b asks"]);
    assert_eq!(o.decisions().iter().map(|d| d.guard()).collect::<Vec<_>>(), ["a", "b", "c", "d"]);
    assert_eq!(o.max_risk_score(), 1.0);

    engine.set_enabled("c", false).unwrap();
    engine.set_enabled("d", false).unwrap();
    let o = engine.evaluate(call("f")).await;
    assert!(o.needs_approval());
    assert_eq!(o.final_decision().unwrap().guard(), "b");
}

#[tokio::test]
async fn disabled_and_inapplicable_guards_are_not_evaluated() {
    let a = StaticGuard::new("a", Decision::deny("no"));
    let count = a.evaluations();
    let only = StaticGuard::new("only", Decision::deny("only for g")).only_for("g");
    let engine = Engine::builder().guard(a).guard(only).build().unwrap();
    engine.set_enabled("a", false).unwrap();
    let o = engine.evaluate(call("f")).await;
    assert!(o.is_allowed());
    assert_eq!(count.load(Ordering::SeqCst), 0);
    assert!(engine.evaluate(call("G")).await.is_denied(), "applies sees the normalised name");
    engine.set_enabled("a", true).unwrap();
    assert!(engine.evaluate(call("f")).await.is_denied());
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(engine.set_enabled("zzz", true), Err(EngineError::UnknownGuard("zzz".into())));
}

#[tokio::test]
async fn guards_can_be_added_removed_and_looked_up() {
    let engine = Engine::new();
    engine.add_guard(StaticGuard::new("x", Decision::deny("no"))).unwrap();
    assert_eq!(
        engine.add_guard(StaticGuard::new("x", Decision::allow("dup"))),
        Err(EngineError::DuplicateGuard("x".into()))
    );
    assert!(matches!(
        engine.add_guard(StaticGuard::new("bad\u{7}", Decision::allow("x"))),
        Err(EngineError::InvalidGuardName { .. })
    ));
    assert_eq!(engine.guard("x").unwrap().name(), "x");
    assert_eq!(engine.guards().len(), 1);
    assert!(engine.evaluate(call("f")).await.is_denied());
    assert!(engine.remove_guard("x").is_some());
    assert!(engine.remove_guard("x").is_none());
    assert!(engine.evaluate(call("f")).await.is_allowed());
}

#[tokio::test]
async fn each_failure_denies_fail_safe_naming_the_guard() {
    for (failure, words) in [
        (Failure::Error, "returned an error: backend said no"),
        (Failure::Panic, "panicked: guard blew up"),
        (Failure::PanicInApplies, "panicked: applies blew up"),
    ] {
        let engine = Engine::builder()
            .guard(StaticGuard::new("ok", Decision::allow("fine")))
            .guard(FailingGuard::new("broken", failure))
            .build()
            .unwrap();
        let o = engine.evaluate(call("f")).await;
        assert!(o.is_denied(), "{failure:?}");
        let d = o.final_decision().unwrap();
        assert_eq!(d.guard(), "broken");
        assert!(d.reason().contains("fail-safe"), "{}", d.reason());
        assert!(d.reason().contains("broken"), "{}", d.reason());
        assert!(d.reason().contains(words), "{}", d.reason());
    }
}

#[tokio::test(start_paused = true)]
async fn a_guard_past_the_timeout_denies_fail_safe() {
    let engine = Engine::builder()
        .guard(StaticGuard::new("ok", Decision::allow("fine")))
        .guard(FailingGuard::new("slow", Failure::Hang))
        .guard_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let o = engine.evaluate(call("f")).await;
    assert!(o.is_denied());
    let d = o.final_decision().unwrap();
    assert_eq!(d.guard(), "slow");
    assert!(d.reason().contains("fail-safe") && d.reason().contains("250 ms"), "{}", d.reason());
    assert_eq!(o.decisions()[0].kind(), DecisionKind::Allow, "the fast guard still decided");
}

#[test]
fn a_pending_guard_without_a_timer_denies_fail_safe() {
    // Polled by a bare executor, outside any Tokio runtime: no timer can bound the guard.
    let engine = Engine::builder().guard(FailingGuard::new("slow", Failure::Hang)).build().unwrap();
    let o = futures_lite_block_on(engine.evaluate(call("f")));
    assert!(o.is_denied());
    assert!(o.final_decision().unwrap().reason().contains("fail-safe"));
}

/// A minimal executor with no Tokio context.
fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

#[tokio::test]
async fn modifications_compose_in_registration_order() {
    let engine = Engine::builder()
        .guard(SettingGuard::new("first", "a", json!(1)))
        .guard(SettingGuard::new("second", "b", json!(2)))
        .guard(SettingGuard::new("third", "a", json!(3)))
        .build()
        .unwrap();
    let ctx = call("f").with_arguments(json!({"a": 0, "keep": true})).unwrap();
    let o = engine.evaluate(ctx).await;
    assert!(o.is_allowed());
    assert_eq!(o.decision(), DecisionKind::Modify);
    assert_eq!(json!(o.modified_arguments().unwrap()), json!({"a": 3, "b": 2, "keep": true}));
}

#[tokio::test]
async fn pre_hooks_rewrite_and_refuse_post_hooks_observe() {
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = Arc::clone(&seen);
    let engine = Engine::builder()
        .guard(StaticGuard::new("no_drop", Decision::deny("no")).only_for("drop_table"))
        .pre_hook(|ctx| {
            if ctx.function_name == "alias" {
                ctx.function_name = "drop_table".into();
            }
            Ok(())
        })
        .pre_hook(|ctx| {
            if ctx.agent_id.as_deref() == Some("banned") { Err(HookError("agent banned".into())) } else { Ok(()) }
        })
        .post_hook(move |_, o| {
            if o.is_denied() {
                seen2.fetch_add(1, Ordering::SeqCst);
            }
        })
        .post_hook(|_, _| panic!("a broken post-hook changes nothing"))
        .build()
        .unwrap();
    assert!(engine.evaluate(call("alias")).await.is_denied(), "the rewritten name was evaluated");
    let o = engine.evaluate(call("read").with_agent("banned")).await;
    assert!(o.is_denied());
    assert!(o.denial_reasons()[0].contains("agent banned"));
    assert!(engine.evaluate(call("read")).await.is_allowed());
    assert_eq!(seen.load(Ordering::SeqCst), 2);

    engine.add_pre_hook(|_| panic!("hook blew up"));
    let o = engine.evaluate(call("read")).await;
    assert!(o.is_denied());
    assert!(o.denial_reasons()[0].contains("fail-safe"));
}

#[tokio::test]
async fn events_stream_and_lagging_subscribers_lose_events_without_blocking() {
    let engine =
        Engine::builder().guard(StaticGuard::new("a", Decision::allow("ok"))).event_capacity(4).build().unwrap();
    let mut rx = engine.subscribe();
    let mut slow = engine.subscribe();
    for i in 0..10 {
        engine.evaluate(call("f").with_call_id(format!("c{i}"))).await;
        match rx.recv().await.unwrap() {
            EngineEvent::Evaluated { context, outcome } => {
                assert_eq!(context.call_id, format!("c{i}"));
                assert!(context.timestamp.is_some());
                assert!(outcome.is_allowed());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The slow subscriber never read: it lost the oldest events and is told so.
    assert!(matches!(slow.recv().await, Err(tokio::sync::broadcast::error::RecvError::Lagged(6))));
    match slow.recv().await.unwrap() {
        EngineEvent::Evaluated { context, .. } => assert_eq!(context.call_id, "c6"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn monitor_mode_records_but_does_not_enforce() {
    let engine = Engine::builder()
        .guard(ReservingGuard::new("spend", "k", 60 * CENT, ONE))
        .guard(StaticGuard::new("no", Decision::deny("would deny")))
        .mode(Mode::Monitor)
        .build()
        .unwrap();
    let mut rx = engine.subscribe();
    let o = engine.evaluate(call("f")).await;
    assert!(!o.enforced());
    assert!(o.is_allowed() && !o.is_denied() && !o.needs_approval());
    assert_eq!(o.decision(), DecisionKind::Deny, "the would-be decision is kept");
    assert_eq!(o.denial_reasons(), ["would deny"]);
    assert!(matches!(rx.recv().await.unwrap(), EngineEvent::Evaluated { .. }));
    assert_eq!(spent(&engine, "k").await, 60 * CENT, "the call runs, so its effects count");
    engine.set_mode(Mode::Enforce);
    assert!(engine.evaluate(call("f")).await.is_denied());
}

#[tokio::test]
async fn effects_are_released_when_another_guard_denies() {
    let engine = Engine::builder()
        .guard(ReservingGuard::new("spend", "k", 50 * CENT, ONE))
        .guard(StaticGuard::new("no", Decision::deny("no")).only_for("bad"))
        .build()
        .unwrap();
    assert!(engine.evaluate(call("bad")).await.is_denied());
    assert_eq!(spent(&engine, "k").await, 0);
    assert!(engine.evaluate(call("good")).await.is_allowed());
    assert_eq!(spent(&engine, "k").await, 50 * CENT);
    assert!(engine.evaluate(call("good")).await.is_allowed());
    assert!(engine.evaluate(call("good")).await.is_denied(), "the limit is reached");
    assert_eq!(spent(&engine, "k").await, ONE);
}

fn approval_engine(clock: &ManualClock) -> Engine {
    Engine::builder()
        .guard(ReservingGuard::new("spend", "k", 40 * CENT, ONE))
        .guard(StaticGuard::new("ask", Decision::require_approval("big purchase")))
        .clock(clock.clone())
        .approval_timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

#[tokio::test]
async fn held_approvals_hold_then_commit_or_release() {
    let clock = clock();
    let engine = approval_engine(&clock);
    let a = engine.evaluate(call("buy").with_call_id("a")).await;
    let b = engine.evaluate(call("buy").with_call_id("b")).await;
    assert!(a.needs_approval() && b.needs_approval());
    assert_eq!(spent(&engine, "k").await, 80 * CENT, "pending approvals hold their reservations");
    let c = engine.evaluate(call("buy").with_call_id("c")).await;
    assert!(c.is_denied(), "held amounts count against the limit");

    engine.resolve_approval("a", &ApprovalResponse::approve("alice")).await.unwrap();
    assert_eq!(spent(&engine, "k").await, 80 * CENT);
    engine.resolve_approval("b", &ApprovalResponse::refuse("bob")).await.unwrap();
    assert_eq!(spent(&engine, "k").await, 40 * CENT, "refused: released");
    assert_eq!(
        engine.resolve_approval("a", &ApprovalResponse::approve("alice")).await,
        Err(ResolveError::NotPending("a".into())),
        "single use"
    );
    assert_eq!(
        engine.resolve_approval("zzz", &ApprovalResponse::approve("x")).await,
        Err(ResolveError::NotPending("zzz".into()))
    );
}

#[tokio::test]
async fn expired_approvals_release_and_cannot_be_granted() {
    let clock = clock();
    let engine = approval_engine(&clock);
    assert!(engine.evaluate(call("buy").with_call_id("late")).await.needs_approval());
    assert_eq!(spent(&engine, "k").await, 40 * CENT);
    clock.advance(Duration::from_secs(301));
    assert_eq!(spent(&engine, "k").await, 0, "expired: released");
    assert_eq!(
        engine.resolve_approval("late", &ApprovalResponse::approve("alice")).await,
        Err(ResolveError::NotPending("late".into()))
    );
}

#[derive(Debug)]
struct Scripted {
    answer: Result<bool, ApprovalError>,
    asked: Arc<AtomicUsize>,
}

#[async_trait]
impl ApprovalHandler for Scripted {
    async fn request_approval(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        assert_eq!(request.outcome.approval_reasons(), ["big purchase"]);
        // The human sees which call it is, in the outcome as in the call.
        assert_eq!(request.outcome.call_id(), request.context.call_id);
        assert_eq!(request.outcome.function_name(), "buy");
        match &self.answer {
            Ok(true) => Ok(ApprovalResponse::approve("carol")),
            Ok(false) => Ok(ApprovalResponse::refuse("carol").with_reason("too much")),
            Err(e) => Err(e.clone()),
        }
    }
}

#[tokio::test]
async fn an_approval_handler_decides_and_effects_follow() {
    for (answer, approved, spent_after) in
        [(Ok(true), true, 40 * CENT), (Ok(false), false, 0), (Err(ApprovalError::Channel("down".into())), false, 0)]
    {
        let asked = Arc::new(AtomicUsize::new(0));
        let engine = Engine::builder()
            .guard(ReservingGuard::new("spend", "k", 40 * CENT, ONE))
            .guard(StaticGuard::new("ask", Decision::require_approval("big purchase")))
            .approval_handler(Scripted { answer, asked: Arc::clone(&asked) })
            .build()
            .unwrap();
        let o = engine.evaluate(call("buy")).await;
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(o.approved(), Some(approved));
        assert_eq!(o.is_allowed(), approved);
        assert_eq!(o.is_denied(), !approved);
        assert!(!o.needs_approval());
        assert_eq!(spent(&engine, "k").await, spent_after);
    }
}

#[tokio::test]
async fn a_deferred_approval_leaves_the_call_unanswered_and_charges_nothing() {
    let asked = Arc::new(AtomicUsize::new(0));
    let engine = Engine::builder()
        .guard(ReservingGuard::new("spend", "k", 40 * CENT, ONE))
        .guard(StaticGuard::new("ask", Decision::require_approval("big purchase")))
        .approval_handler(Scripted { answer: Err(ApprovalError::Deferred), asked: Arc::clone(&asked) })
        .build()
        .unwrap();
    let o = engine.evaluate(call("buy").with_call_id("later")).await;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(o.approved(), None, "nobody answered yet");
    assert!(o.needs_approval() && !o.is_allowed() && !o.is_denied());
    assert_eq!(spent(&engine, "k").await, 0, "released: the same call comes back once decided");
    assert_eq!(
        engine.resolve_approval("later", &ApprovalResponse::approve("alice")).await,
        Err(ResolveError::NotPending("later".into())),
        "nothing is held for it"
    );
}

#[tokio::test]
async fn evaluate_held_holds_the_call_for_its_caller_instead_of_asking_the_handler() {
    let asked = Arc::new(AtomicUsize::new(0));
    let engine = Engine::builder()
        .guard(ReservingGuard::new("spend", "k", 40 * CENT, ONE))
        .guard(StaticGuard::new("ask", Decision::require_approval("big purchase")))
        .approval_handler(Scripted { answer: Ok(true), asked: Arc::clone(&asked) })
        .approval_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    assert_eq!(engine.approval_timeout(), Duration::from_secs(120));
    let o = engine.evaluate_held(call("buy").with_call_id("mine")).await;
    assert_eq!(asked.load(Ordering::SeqCst), 0, "the handler is not asked");
    assert!(o.needs_approval() && o.approved().is_none());
    assert_eq!(spent(&engine, "k").await, 40 * CENT, "held while the caller asks");
    engine.resolve_approval("mine", &ApprovalResponse::approve("the user")).await.unwrap();
    assert_eq!(spent(&engine, "k").await, 40 * CENT, "approved: committed");
    assert_eq!(
        engine.resolve_approval("mine", &ApprovalResponse::approve("the user")).await,
        Err(ResolveError::NotPending("mine".into())),
        "answered once"
    );
    // A call that needs nobody runs as it would through `evaluate`, and the handler still
    // answers the calls evaluated the usual way.
    assert!(engine.evaluate(call("buy")).await.is_allowed());
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[derive(Debug)]
struct Panicking;

#[async_trait]
impl ApprovalHandler for Panicking {
    async fn request_approval(&self, _: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        panic!("the approval service fell over")
    }
}

#[tokio::test]
async fn a_panicking_approval_handler_refuses_the_call_and_releases_it() {
    let engine = Engine::builder()
        .guard(ReservingGuard::new("spend", "k", 40 * CENT, ONE))
        .guard(StaticGuard::new("ask", Decision::require_approval("big purchase")))
        .approval_handler(Panicking)
        .build()
        .unwrap();
    let o = engine.evaluate(call("buy")).await;
    assert_eq!(o.approved(), Some(false));
    assert!(o.is_denied());
    assert_eq!(spent(&engine, "k").await, 0, "released");
    // The engine goes on deciding.
    assert!(engine.evaluate(call("buy")).await.is_denied());
}

#[derive(Debug)]
struct Never;

#[async_trait]
impl ApprovalHandler for Never {
    async fn request_approval(&self, _: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn an_approval_that_never_comes_is_refused_and_released() {
    let engine = Engine::builder()
        .guard(ReservingGuard::new("spend", "k", 40 * CENT, ONE))
        .guard(StaticGuard::new("ask", Decision::require_approval("big purchase")))
        .approval_handler(Never)
        .approval_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let o = engine.evaluate(call("buy")).await;
    assert_eq!(o.approved(), Some(false));
    assert!(o.is_denied());
    assert_eq!(spent(&engine, "k").await, 0);
}

#[tokio::test]
async fn settle_replaces_the_estimate_with_the_actual_cost() {
    let engine = Engine::builder().guard(ReservingGuard::new("spend", "k", 30 * CENT, ONE)).build().unwrap();
    let o = engine.evaluate(call("llm").with_call_id("c1")).await;
    assert!(o.is_allowed());
    assert_eq!(spent(&engine, "k").await, 30 * CENT);
    let s = engine.settle("c1", Money::from_micros(5 * CENT)).await.unwrap();
    assert_eq!(s.previous, [Money::from_micros(30 * CENT)]);
    assert_eq!(spent(&engine, "k").await, 5 * CENT);
    // Settling again corrects the settlement, not the original estimate.
    engine.settle("c1", Money::from_micros(2 * ONE)).await.unwrap();
    assert_eq!(spent(&engine, "k").await, 2 * ONE, "the actual cost may exceed the limit");
    assert!(matches!(engine.settle("nope", Money::ZERO).await, Err(SettleError::UnknownCall(_))));
    // A denied call charged nothing, so there is nothing to settle.
    let o = engine.evaluate(call("llm").with_call_id("c2")).await;
    assert!(o.is_denied());
    assert!(matches!(engine.settle("c2", Money::ZERO).await, Err(SettleError::UnknownCall(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_evaluations_allow_exactly_one_hundred() {
    let engine = Engine::builder().guard(ReservingGuard::new("spend", "daily", CENT, ONE)).build().unwrap();
    let allowed = count_allowed_concurrently(&engine, 1_000, |i| call("llm").with_call_id(format!("c{i}"))).await;
    assert_eq!(allowed, 100);
    assert_eq!(spent(&engine, "daily").await, ONE);
}

#[tokio::test]
async fn invalid_calls_are_denied_with_a_clear_reason() {
    let engine = Engine::builder().guard(StaticGuard::new("a", Decision::allow("ok"))).build().unwrap();
    for (ctx, words) in [
        (call(""), "function_name: name is empty"),
        (call("  \u{200b} "), "function_name: name is empty"),
        (call("delete\nfile"), "control character U+000A"),
        (call("f").with_agent("a\u{1b}"), "agent_id"),
        (call("f").with_session("s\u{0}"), "session_id"),
        (call("f").with_session("s\u{7f}"), "session_id: name contains the control character U+007F"),
        (call("f").with_agent("\u{e9}\u{85}"), "agent_id: name contains the control character U+0085"),
    ] {
        let o = engine.evaluate(ctx).await;
        assert!(o.is_denied());
        let reason = o.denial_reasons()[0];
        assert!(reason.starts_with("invalid call:") && reason.contains(words), "{reason}");
        assert_eq!(o.final_decision().unwrap().guard(), "engine");
    }
}

#[tokio::test]
async fn the_engine_clock_stamps_calls_and_replay_follows_the_input() {
    let engine = Engine::builder().clock(ReplayClock::default()).build().unwrap();
    let mut rx = engine.subscribe();
    let t = Timestamp::from_secs(1_000);
    engine.evaluate(call("f").with_timestamp(t)).await;
    engine.evaluate(call("f").with_timestamp(Timestamp::from_secs(10))).await;
    assert_eq!(engine.clock().now(), t, "never moves backwards");
    let EngineEvent::Evaluated { context, .. } = rx.recv().await.unwrap() else { panic!() };
    assert_eq!(context.timestamp, Some(1_000.0));

    // Any other clock ignores the caller's time.
    let clock = clock();
    let engine = Engine::builder().clock(clock.clone()).build().unwrap();
    let mut rx = engine.subscribe();
    engine.evaluate(call("f").with_timestamp(Timestamp::from_secs(5))).await;
    let EngineEvent::Evaluated { context, .. } = rx.recv().await.unwrap() else { panic!() };
    assert_eq!(context.timestamp, Some(clock.now().as_secs_f64()));
}

#[test]
fn the_blocking_wrapper_works_outside_a_runtime() {
    let engine = Engine::builder().guard(StaticGuard::new("a", Decision::deny("no"))).build().unwrap();
    assert!(engine.evaluate_blocking(call("f")).is_denied());
}

#[tokio::test]
async fn the_blocking_wrapper_works_inside_a_current_thread_runtime() {
    let engine = Engine::builder().guard(ReservingGuard::new("spend", "k", CENT, ONE)).build().unwrap();
    assert!(engine.evaluate_blocking(call("f")).is_allowed());
    assert_eq!(spent(&engine, "k").await, CENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_wrapper_works_inside_a_multi_thread_runtime() {
    let engine = Engine::builder().guard(StaticGuard::new("a", Decision::require_approval("ask"))).build().unwrap();
    assert!(engine.evaluate_blocking(call("f")).needs_approval());
}

#[tokio::test]
async fn a_failing_store_denies_fail_safe() {
    let store = MemoryStore::with_config(halt_store_memory::MemoryStoreConfig { max_keys: 1, ..Default::default() });
    let engine = Engine::builder()
        .guard(ReservingGuard::new("a", "k1", CENT, ONE))
        .guard(ReservingGuard::new("b", "k2", CENT, ONE))
        .store(store)
        .build()
        .unwrap();
    let o = engine.evaluate(call("f")).await;
    assert!(o.is_denied());
    let reason = o.denial_reasons()[0];
    assert!(reason.contains("fail-safe") && reason.contains("full"), "{reason}");
    // Nothing was kept for the denied call.
    assert_eq!(spent(&engine, "k1").await + spent(&engine, "k2").await, 0);
}

#[tokio::test]
async fn receipts_expire_after_the_settle_window() {
    let clock = clock();
    let engine = Engine::builder()
        .guard(ReservingGuard::new("spend", "k", 30 * CENT, ONE))
        .clock(clock.clone())
        .settle_window(Duration::from_secs(60))
        .build()
        .unwrap();
    assert!(engine.evaluate(call("llm").with_call_id("c1")).await.is_allowed());
    clock.advance(Duration::from_secs(59));
    engine.settle("c1", Money::from_micros(CENT)).await.unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(
        matches!(engine.settle("c1", Money::ZERO).await, Err(SettleError::UnknownCall(_))),
        "receipts do not pile up"
    );
}

#[tokio::test]
async fn a_zero_settle_window_keeps_no_receipts() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::builder()
        .guard(ReservingGuard::new("spend", "k", 30 * CENT, ONE))
        .clock(clock())
        .store_arc(store.clone())
        .settle_window(Duration::ZERO)
        .build()
        .unwrap();
    assert!(engine.evaluate(call("llm").with_call_id("c1")).await.is_allowed());
    assert_eq!(spent(&engine, "k").await, 30 * CENT, "the charge itself is kept");
    assert_eq!(store.key_count(), 1, "only the counter, no receipt");
    assert!(matches!(engine.settle("c1", Money::ZERO).await, Err(SettleError::UnknownCall(_))));
}

#[tokio::test]
async fn an_outcome_is_named_with_or_without_hooks_and_subscribers() {
    let engine = Engine::builder().guard(StaticGuard::new("a", Decision::allow("ok"))).build().unwrap();
    let named = |o: &Outcome, id: &str| o.call_id() == id && o.function_name() == "f";
    // Neither hooks nor subscribers: the names move into the outcome.
    let outcome = engine.evaluate(call("f").with_call_id("c0")).await;
    assert!(outcome.is_allowed() && named(&outcome, "c0"));
    // A post-hook looks at the call, with its names, and at the outcome, named.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    engine.add_post_hook(move |ctx, outcome| {
        assert!(ctx.call_id == "c1" && ctx.function_name == "f" && outcome.call_id() == "c1");
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let outcome = engine.evaluate(call("f").with_call_id("c1")).await;
    assert!(outcome.is_allowed() && named(&outcome, "c1"));
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // A subscriber gets the call and its outcome in an event.
    let mut rx = engine.subscribe();
    let outcome = engine.evaluate(call("f").with_call_id("c2")).await;
    assert!(outcome.is_allowed() && named(&outcome, "c2"));
    match rx.recv().await.unwrap() {
        EngineEvent::Evaluated { context, outcome } => {
            assert_eq!(context.call_id, "c2");
            assert!(named(&outcome, "c2"));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Refused by a pre-hook, the outcome is named too.
    drop(rx);
    engine.add_pre_hook(|_| Err(HookError("no".into())));
    let outcome = engine.evaluate(call("f").with_call_id("c3")).await;
    assert!(outcome.is_denied());
    assert_eq!(outcome.call_id(), "c3");
}

#[tokio::test]
async fn an_evaluation_runs_nothing_until_awaited_and_stays_small() {
    let engine = Engine::builder().guard(StaticGuard::new("a", Decision::allow("ok"))).build().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    engine.add_pre_hook(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    let evaluation = engine.evaluate(call("f"));
    assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing ran yet");
    // The future is moved on every call: it holds the call once (an `async fn` held it twice,
    // 1.5 KB in all).
    assert!(std::mem::size_of_val(&evaluation) < 1_200, "{} bytes", std::mem::size_of_val(&evaluation));
    assert!(evaluation.await.is_allowed());
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}
