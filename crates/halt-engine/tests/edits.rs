//! An approver's edit: the edited call goes through every guard again, a new guard or another
//! tool asks again, a guard that denies the edit denies it, and the original's effects are gone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use halt_core::{Call, CallContext, Decision, Guard, GuardError, JsonObject, Timestamp, async_trait};
use halt_engine::{ApprovalError, ApprovalHandler, ApprovalRequest, ApprovalResponse, Engine, ResolveError};
use halt_testing::guards::ReservingGuard;
use serde_json::{Value, json};

const CENT: i64 = 10_000;
const ONE: i64 = 1_000_000;

/// Asks when `amount` is over 100, denies an `ssn` argument.
#[derive(Debug)]
struct Shop;

#[async_trait]
impl Guard for Shop {
    fn name(&self) -> &str {
        "shop"
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let args = &call.context().arguments;
        if args.contains_key("ssn") {
            return Ok(Decision::deny("an identity number in the call"));
        }
        match args.get("amount").and_then(Value::as_f64) {
            Some(a) if a > 100.0 => Ok(Decision::require_approval("large amount")),
            _ => Ok(Decision::allow("small")),
        }
    }
}

/// Asks about wire transfers only.
#[derive(Debug)]
struct Wire;

#[async_trait]
impl Guard for Wire {
    fn name(&self) -> &str {
        "wire"
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        Ok(match call.context().arguments.get("wire") {
            Some(Value::Bool(true)) => Decision::require_approval("wire transfer"),
            _ => Decision::allow("no wire"),
        })
    }
}

/// Answers from a script, and remembers what it was asked.
#[derive(Debug, Default)]
struct Script {
    answers: Mutex<VecDeque<ApprovalResponse>>,
    asked: Mutex<Vec<(String, JsonObject, Vec<String>)>>,
}

#[async_trait]
impl ApprovalHandler for Script {
    async fn request_approval(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        let reasons = request.outcome.approval_reasons().into_iter().map(str::to_owned).collect();
        let ctx = request.context;
        self.asked.lock().unwrap().push((ctx.function_name.clone(), ctx.arguments.clone(), reasons));
        Ok(self.answers.lock().unwrap().pop_front().unwrap_or_else(|| ApprovalResponse::refuse("script")))
    }
}

fn engine(script: &Arc<Script>, answers: Vec<ApprovalResponse>) -> Engine {
    *script.answers.lock().unwrap() = answers.into();
    Engine::builder()
        .guard(ReservingGuard::new("spend", "k", 40 * CENT, ONE))
        .guard(Shop)
        .guard(Wire)
        .approval_handler_arc(Arc::clone(script) as Arc<dyn ApprovalHandler>)
        .build()
        .unwrap()
}

fn object(v: Value) -> JsonObject {
    let Value::Object(map) = v else { panic!("not an object") };
    map
}

fn buy(args: Value) -> CallContext {
    CallContext::new("buy").with_arguments(args).unwrap()
}

async fn spent(engine: &Engine) -> i64 {
    engine.store().total("k", ReservingGuard::window(), engine.clock().now()).await.unwrap()
}

#[tokio::test]
async fn an_edit_the_guards_accept_runs_edited_and_counts_once() {
    let script = Arc::new(Script::default());
    let edited = object(json!({"amount": 150, "note": "capped"}));
    let engine = engine(&script, vec![ApprovalResponse::approve_edited("alice", edited.clone())]);
    let o = engine.evaluate(buy(json!({"amount": 900}))).await;
    assert!(o.is_allowed(), "{o:?}");
    assert_eq!(o.approved(), Some(true));
    assert_eq!(o.approver(), Some("alice"));
    assert_eq!(o.modified_arguments(), Some(&edited), "the call runs as edited");
    assert_eq!(script.asked.lock().unwrap().len(), 1, "the same guard asking again is covered by the edit");
    assert_eq!(spent(&engine).await, 40 * CENT, "the original's reservation was released, the edit's committed");
}

#[tokio::test]
async fn an_edit_that_a_guard_denies_is_denied() {
    let script = Arc::new(Script::default());
    let edited = object(json!({"amount": 50, "ssn": "123-45-6789"}));
    let engine = engine(&script, vec![ApprovalResponse::approve_edited("alice", edited)]);
    let o = engine.evaluate(buy(json!({"amount": 900}))).await;
    assert!(o.is_denied(), "{o:?}");
    assert_eq!(o.denial_reasons(), ["an identity number in the call"]);
    assert!(o.modified_arguments().is_none());
    assert_eq!(spent(&engine).await, 0, "nothing is spent for a denied call");
}

#[tokio::test]
async fn an_edit_a_new_guard_asks_about_asks_again() {
    for (second, allowed) in [(ApprovalResponse::approve("bob"), true), (ApprovalResponse::refuse("bob"), false)] {
        let script = Arc::new(Script::default());
        let edited = object(json!({"amount": 900, "wire": true}));
        let engine = engine(&script, vec![ApprovalResponse::approve_edited("alice", edited.clone()), second]);
        let o = engine.evaluate(buy(json!({"amount": 900}))).await;
        let asked = script.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 2, "the wire guard did not ask the first time: a human is asked again");
        assert_eq!(asked[1].1, edited, "about the edited call");
        assert!(asked[1].2.contains(&"wire transfer".to_owned()));
        assert_eq!(o.is_allowed(), allowed, "{o:?}");
        assert_eq!(o.approver(), Some("bob"));
        assert_eq!(spent(&engine).await, if allowed { 40 * CENT } else { 0 });
    }
}

#[tokio::test]
async fn an_edit_naming_another_tool_asks_again_even_when_every_guard_allows() {
    for (second, allowed) in [(ApprovalResponse::approve("bob"), true), (ApprovalResponse::refuse("bob"), false)] {
        let script = Arc::new(Script::default());
        let mut other = ApprovalResponse::approve_edited("alice", object(json!({"amount": 5})));
        other.function = Some("refund".into());
        let engine = engine(&script, vec![other, second]);
        let o = engine.evaluate(buy(json!({"amount": 900}))).await;
        let asked = script.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 2, "another tool is another approval");
        assert_eq!(asked[1].0, "refund");
        assert_eq!(o.is_allowed(), allowed, "{o:?}");
        assert_eq!(o.function_name(), "refund", "the outcome names the tool that was approved");
    }
}

#[tokio::test]
async fn the_same_tool_spelled_otherwise_is_not_another_tool() {
    let script = Arc::new(Script::default());
    let mut same = ApprovalResponse::approve_edited("alice", object(json!({"amount": 120})));
    same.function = Some("  BUY ".into());
    let engine = engine(&script, vec![same]);
    let o = engine.evaluate(buy(json!({"amount": 900}))).await;
    assert!(o.is_allowed(), "{o:?}");
    assert_eq!(script.asked.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn edits_without_end_are_refused() {
    let script = Arc::new(Script::default());
    let again = |n: i64| {
        let mut r = ApprovalResponse::approve_edited("alice", object(json!({"amount": 900 + n})));
        r.function = Some(format!("buy_{n}"));
        r
    };
    let engine = engine(&script, (0..10).map(again).collect());
    let o = engine.evaluate(buy(json!({"amount": 900}))).await;
    assert!(o.is_denied(), "{o:?}");
    assert!(o.denial_reasons()[0].contains("edited more than"), "{o:?}");
    assert_eq!(spent(&engine).await, 0);
}

#[tokio::test]
async fn a_held_call_cannot_be_approved_with_edits_and_stays_held() {
    let engine = Engine::builder()
        .guard(ReservingGuard::new("spend", "k", 40 * CENT, ONE))
        .guard(Shop)
        .clock(halt_core::ManualClock::new(Timestamp::from_secs(1_800_000_000)))
        .build()
        .unwrap();
    let o = engine.evaluate(buy(json!({"amount": 900})).with_call_id("held")).await;
    assert!(o.needs_approval());
    let edit = ApprovalResponse::approve_edited("alice", object(json!({"amount": 1})));
    assert_eq!(engine.resolve_approval("held", &edit).await, Err(ResolveError::Edited("held".into())));
    assert_eq!(spent(&engine).await, 40 * CENT, "still held");
    engine.resolve_approval("held", &ApprovalResponse::approve("alice")).await.unwrap();
    assert_eq!(spent(&engine).await, 40 * CENT);
}
