//! Preparing a call ahead of its turn (what `Engine::evaluate_stream` does): the same outcomes as `evaluate`, with the pure guards'
//! decisions made during `prepare`, and every way that can go otherwise.

use std::sync::atomic::Ordering;

use crate::{Engine, HookError};
use halt_core::{Call, CallContext, Decision, DecisionKind, Guard, GuardError, async_trait};
use halt_store_memory::MemoryStore;
use halt_testing::guards::{ReservingGuard, StaticGuard};

const ONE: i64 = 1_000_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn prepared_calls_decide_as_evaluated_ones_with_pure_guards_deciding_ahead() {
    let pure = StaticGuard::new("scope", Decision::deny("not in scope")).only_for("drop_db").pure();
    let decided = pure.evaluations();
    let build = |pure: StaticGuard| {
        Engine::builder()
            .guard(pure)
            .guard(ReservingGuard::new("budget", "spend", ONE, 2 * ONE))
            .store(MemoryStore::new())
            .build()
            .unwrap()
    };
    let (prepared_engine, plain) =
        (build(pure), build(StaticGuard::new("scope", Decision::deny("not in scope")).only_for("drop_db")));
    let rt = runtime();
    for name in ["search", "drop_db", "search", "search", "DROP_DB"] {
        let before = decided.load(Ordering::SeqCst);
        let prepared = prepared_engine.preparer().prepare(CallContext::new(name).with_call_id("c"));
        let after_prepare = decided.load(Ordering::SeqCst);
        let a = rt.block_on(prepared_engine.evaluate_prepared(prepared));
        let b = rt.block_on(plain.evaluate(CallContext::new(name).with_call_id("c")));
        assert_eq!(a.decision(), b.decision(), "{name}");
        assert_eq!(a.decisions(), b.decisions(), "{name}");
        let drops = usize::from(name.eq_ignore_ascii_case("drop_db"));
        assert_eq!(after_prepare - before, drops, "the pure guard decided while preparing");
        assert_eq!(decided.load(Ordering::SeqCst), after_prepare, "and not again");
    }
    // Effects settle as usual: the denied drop released its reservation, two searches fit.
    let spent =
        rt.block_on(prepared_engine.store().total("spend", ReservingGuard::window(), prepared_engine.clock().now()));
    assert_eq!(spent.unwrap(), 2 * ONE);
}

#[test]
fn a_call_prepared_on_one_thread_is_evaluated_on_another() {
    let engine = Engine::builder().guard(StaticGuard::new("pure", Decision::allow("fine")).pure()).build().unwrap();
    let prepared = std::thread::scope(|s| s.spawn(|| engine.preparer().prepare(CallContext::new("f"))).join().unwrap());
    assert!(runtime().block_on(engine.evaluate_prepared(prepared)).is_allowed());
}

#[test]
fn guards_changed_since_preparing_decide_again_in_turn() {
    let pure = StaticGuard::new("pure", Decision::require_approval("ask")).pure();
    let decided = pure.evaluations();
    let engine = Engine::builder().guard(pure).build().unwrap();
    let rt = runtime();
    let prepared = engine.preparer().prepare(CallContext::new("f"));
    engine.add_guard(StaticGuard::new("late", Decision::deny("added since"))).unwrap();
    let o = rt.block_on(engine.evaluate_prepared(prepared));
    assert_eq!(o.decision(), DecisionKind::Deny, "the guard added since is heard");
    assert_eq!(decided.load(Ordering::SeqCst), 2, "the pure one decided again");
    let prepared = engine.preparer().prepare(CallContext::new("f"));
    engine.set_enabled("pure", false).unwrap();
    let o = rt.block_on(engine.evaluate_prepared(prepared));
    assert!(o.decisions().iter().all(|d| d.guard() != "pure"), "a guard disabled since is not");
}

#[test]
fn refusals_found_while_preparing_are_answered_in_turn() {
    let engine = Engine::builder()
        .guard(StaticGuard::new("pure", Decision::allow("fine")).pure())
        .pre_hook(|ctx| if ctx.function_name == "secret" { Err(HookError("no secrets".into())) } else { Ok(()) })
        .build()
        .unwrap();
    let rt = runtime();
    let o = rt.block_on(engine.evaluate_prepared(engine.preparer().prepare(CallContext::new("secret"))));
    assert!(o.is_denied() && o.denial_reasons()[0].contains("no secrets"), "{:?}", o.denial_reasons());
    let o = rt.block_on(engine.evaluate_prepared(engine.preparer().prepare(CallContext::new("bad\u{7}name"))));
    assert!(o.is_denied() && o.denial_reasons()[0].starts_with("invalid call"), "{:?}", o.denial_reasons());
}

/// Calls itself pure but waits once before deciding.
#[derive(Debug)]
struct Slow;

#[async_trait]
impl Guard for Slow {
    fn name(&self) -> &str {
        "slow"
    }

    async fn evaluate(&self, _call: &Call<'_>) -> Result<Decision, GuardError> {
        tokio::task::yield_now().await;
        Ok(Decision::deny("decided after waiting"))
    }

    fn is_pure(&self) -> bool {
        true
    }
}

/// Calls itself pure but reserves.
#[derive(Debug)]
struct Liar(ReservingGuard);

#[async_trait]
impl Guard for Liar {
    fn name(&self) -> &str {
        "liar"
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        self.0.evaluate(call).await
    }

    fn is_pure(&self) -> bool {
        true
    }
}

#[test]
fn pure_guards_that_wait_or_reserve_decide_in_turn() {
    let engine =
        Engine::builder().guard(Slow).guard(Liar(ReservingGuard::new("x", "spend", ONE, 10 * ONE))).build().unwrap();
    let rt = runtime();
    let o = rt.block_on(engine.evaluate_prepared(engine.preparer().prepare(CallContext::new("f"))));
    assert_eq!(o.denial_reasons(), ["decided after waiting"]);
    // The reservation made while preparing was released; the one made in turn was released
    // with the denial: nothing is left counted.
    let spent = rt.block_on(engine.store().total("spend", ReservingGuard::window(), engine.clock().now())).unwrap();
    assert_eq!(spent, 0);
}

/// How often a guard is asked whether it applies, and to decide.
#[derive(Debug, Default)]
struct Counts {
    asked: std::sync::atomic::AtomicUsize,
    decided: std::sync::atomic::AtomicUsize,
}

#[derive(Debug)]
struct Counted(std::sync::Arc<Counts>);

#[async_trait]
impl Guard for Counted {
    fn name(&self) -> &str {
        "counted"
    }

    fn applies(&self, call: &Call<'_>) -> bool {
        self.0.asked.fetch_add(1, Ordering::SeqCst);
        call.function().starts_with("delete")
    }

    async fn evaluate(&self, _: &Call<'_>) -> Result<Decision, GuardError> {
        self.0.decided.fetch_add(1, Ordering::SeqCst);
        Ok(Decision::require_approval("deleting"))
    }
}

#[test]
fn every_guard_is_asked_ahead_whether_it_applies_and_not_again_in_turn() {
    let counted = std::sync::Arc::new(Counts::default());
    let engine = Engine::builder().guard(Counted(std::sync::Arc::clone(&counted))).build().unwrap();
    let rt = runtime();
    let counts = || (counted.asked.load(Ordering::SeqCst), counted.decided.load(Ordering::SeqCst));
    let prepared = engine.preparer().prepare(CallContext::new("delete_file"));
    assert_eq!(counts(), (1, 0), "asked while preparing; not pure, so it decides in turn");
    let o = rt.block_on(engine.evaluate_prepared(prepared));
    assert_eq!(o.decision(), DecisionKind::RequireApproval);
    assert_eq!(counts(), (1, 1));
    let prepared = engine.preparer().prepare(CallContext::new("search"));
    assert_eq!(counts(), (2, 1));
    let o = rt.block_on(engine.evaluate_prepared(prepared));
    assert!(o.is_allowed() && o.decisions().is_empty(), "it does not apply: skipped");
    assert_eq!(counts(), (2, 1));
    // Evaluated without preparing, it is asked in turn.
    assert_eq!(rt.block_on(engine.evaluate(CallContext::new("delete_x"))).decision(), DecisionKind::RequireApproval);
    assert_eq!(counts(), (3, 2));
}

#[test]
fn a_preparer_sees_the_guards_change() {
    let pure = StaticGuard::new("pure", Decision::allow("fine")).pure();
    let decided = pure.evaluations();
    let engine = Engine::builder().guard(pure).build().unwrap();
    let rt = runtime();
    let mut preparer = engine.preparer();
    let before = preparer.prepare(CallContext::new("f"));
    engine.add_guard(StaticGuard::new("late", Decision::deny("added since")).pure()).unwrap();
    let after = preparer.prepare(CallContext::new("f"));
    assert_eq!(decided.load(Ordering::SeqCst), 2, "each call's pure guard decided while preparing");
    let o = rt.block_on(engine.evaluate_prepared(before));
    assert_eq!(o.decision(), DecisionKind::Deny, "the guard added since is heard");
    assert_eq!(decided.load(Ordering::SeqCst), 3, "the call prepared before the change was decided again");
    let o = rt.block_on(engine.evaluate_prepared(after));
    assert_eq!(o.decision(), DecisionKind::Deny, "the preparer saw the new guard");
    assert_eq!(decided.load(Ordering::SeqCst), 3, "and its decision ahead stands");
}

#[test]
fn a_call_prepared_for_another_engine_is_decided_in_turn() {
    // Two engines with guards at the same places and the same version: what one decided ahead
    // must not stand for the other's guards.
    let a = Engine::builder().guard(StaticGuard::new("scope", Decision::allow("fine")).pure()).build().unwrap();
    let b = Engine::builder().guard(StaticGuard::new("scope", Decision::deny("not here")).pure()).build().unwrap();
    let o = runtime().block_on(b.evaluate_prepared(a.preparer().prepare(CallContext::new("f"))));
    assert_eq!(o.decision(), DecisionKind::Deny);
    assert_eq!(o.decisions()[0].reason(), "not here");
}
