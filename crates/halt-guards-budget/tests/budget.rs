//! Budget guard: every rule and boundary, fixed-point sums, calendar windows, effects, settle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::time::Duration;

use halt_core::{CallContext, Clock, Decision, DecisionKind, GuardRegistry, ManualClock, Money, Outcome, Timestamp};
use halt_engine::{ApprovalResponse, Engine};
use halt_guards_budget::{BudgetConfig, BudgetGuard, factory};
use halt_testing::guards::{StaticGuard, count_allowed_concurrently};
use serde_json::{Value, json};

/// 2026-11-24T12:00:00Z.
const NOON: i64 = 1_795_521_600;

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_secs(NOON))
}

fn engine(config: BudgetConfig, clock: &ManualClock) -> Engine {
    Engine::builder().guard(BudgetGuard::new(config).unwrap()).clock(clock.clone()).build().unwrap()
}

fn cost_call(cost: Value) -> CallContext {
    CallContext::new("llm").with_arguments(json!({"estimated_cost": cost})).unwrap()
}

async fn run(engine: &Engine, ctx: CallContext) -> Outcome {
    engine.evaluate(ctx).await
}

fn daily(limit: &str) -> BudgetConfig {
    BudgetConfig { max_daily_spend: Some(m(limit)), warn_threshold: 1.0, ..BudgetConfig::default() }
}

#[tokio::test]
async fn cost_comes_from_arguments_metadata_estimator_then_default() {
    let clock = clock();
    // A per-call limit of zero denies every call and shows its cost and where it came from.
    let mut config = BudgetConfig { max_call_cost: Some(Money::ZERO), ..BudgetConfig::default() };
    config.cost_estimator.insert("GPT4_Call".into(), m("0.5"));
    config.default_cost = m("0.25");
    let e = engine(config, &clock);
    // A cost the call states itself is never repeated back (a reason never echoes a value).
    let cost = |o: &Outcome| {
        let d = o.decisions()[0].details();
        (d["cost"].as_f64().unwrap_or(-1.0), d["source"].as_str().unwrap().to_owned())
    };
    assert_eq!(cost(&run(&e, cost_call(json!(2))).await), (-1.0, "arguments".into()));
    let ctx = CallContext::new("llm").with_metadata(json!({"estimated_cost": "3"})).unwrap();
    assert_eq!(cost(&run(&e, ctx).await), (3.0, "metadata".into()));
    assert_eq!(cost(&run(&e, CallContext::new("gpt4_call")).await), (0.5, "cost_estimator".into()));
    assert_eq!(cost(&run(&e, CallContext::new("other")).await), (0.25, "default_cost".into()));
    // The model cannot state a price below the known one.
    let cheap = CallContext::new("gpt4_call").with_arguments(json!({"estimated_cost": 0.0001})).unwrap();
    assert_eq!(cost(&run(&e, cheap).await), (0.5, "cost_estimator".into()));
    let dear = CallContext::new("gpt4_call").with_arguments(json!({"estimated_cost": 0.9})).unwrap();
    assert_eq!(cost(&run(&e, dear).await), (-1.0, "arguments".into()));
}

#[tokio::test]
async fn bad_costs_are_denied_naming_the_field_not_the_value() {
    let clock = clock();
    let e = engine(daily("10000"), &clock);
    for (value, words) in [
        (json!(-5), "is negative"),
        (json!("NaN"), "not a finite number"),
        (json!("Infinity"), "not a finite number"),
        (json!("1e400"), "too large"),
        (json!(true), "Cannot determine call cost"),
        (json!({}), "Cannot determine call cost"),
        (json!([]), "Cannot determine call cost"),
        (json!("abc"), "is not a number"),
        (json!("$5"), "is not a number"),
        (json!("SSN 123-45-6789"), "is not a number"),
    ] {
        let o = run(&e, cost_call(value.clone())).await;
        assert!(o.is_denied(), "{value}");
        let r = o.denial_reasons()[0];
        assert!(r.contains("`arguments.estimated_cost`") && r.contains(words), "{value}: {r}");
        assert!(["abc", "$5", "123-45", "NaN", "1e400"].iter().all(|v| !r.contains(v)), "{value}: {r}");
    }
    let o = run(&e, cost_call(json!("1e3"))).await;
    assert!(o.is_allowed(), "1e3 is a thousand");
    assert_eq!(e.store().total(&day_key("2026-11-24"), day_window(), clock.now()).await.unwrap(), 1_000_000_000);
}

fn day_key(label: &str) -> String {
    format!("budget/budget/global/daily/{label}")
}

fn day_window() -> halt_core::store::Window {
    halt_core::store::Window::Bucket { expires_at: Timestamp::MAX }
}

#[tokio::test]
async fn per_call_limit_boundary() {
    let clock = clock();
    let e = engine(BudgetConfig { max_call_cost: Some(m("1")), ..BudgetConfig::default() }, &clock);
    assert!(run(&e, cost_call(json!(1.0))).await.is_allowed(), "at the limit");
    let o = run(&e, cost_call(json!(1.000001))).await;
    assert!(o.is_denied());
    assert_eq!(o.denial_reasons(), ["The call's stated cost exceeds the per-call limit of 1"]);
}

#[tokio::test]
async fn session_limit_counts_per_session_and_skips_calls_without_one() {
    let clock = clock();
    let config = BudgetConfig {
        max_session_spend: Some(m("0.5")),
        default_cost: m("0.2"),
        warn_threshold: 1.0,
        ..BudgetConfig::default()
    };
    let e = engine(config, &clock);
    let s = |id: &str| CallContext::new("x").with_session(id);
    assert!(run(&e, s("s1")).await.is_allowed());
    assert!(run(&e, s("s1")).await.is_allowed());
    let o = run(&e, s("s1")).await;
    assert!(o.is_denied());
    assert_eq!(o.denial_reasons(), ["Session budget exceeded: 0.4 spent + 0.2 would pass the limit of 0.5"]);
    assert_eq!(o.decisions()[0].details()["spent"], json!(0.4));
    assert!(run(&e, s("s2")).await.is_allowed());
    assert!(run(&e, CallContext::new("x")).await.is_allowed());
}

#[tokio::test]
async fn warn_threshold_asks_for_approval_in_every_window() {
    for (config, ctx_session) in [
        (BudgetConfig { max_session_spend: Some(m("1")), ..BudgetConfig::default() }, true),
        (BudgetConfig { max_daily_spend: Some(m("1")), ..BudgetConfig::default() }, false),
        (BudgetConfig { max_monthly_spend: Some(m("1")), ..BudgetConfig::default() }, false),
    ] {
        let clock = clock();
        let config = BudgetConfig { default_cost: m("0.3"), warn_threshold: 0.7, ..config };
        let e = engine(config, &clock);
        let ctx = || {
            if ctx_session { CallContext::new("x").with_session("s") } else { CallContext::new("x") }
        };
        assert!(run(&e, ctx()).await.is_allowed());
        assert!(run(&e, ctx()).await.is_allowed(), "0.6 is under 70%");
        let o = run(&e, ctx()).await;
        assert!(o.needs_approval(), "0.9 is past 70%");
        assert!((o.max_risk_score() - 0.9).abs() < 1e-9, "risk = total / limit");
        // While a human decides, the 0.3 is held: another call would pass the limit.
        assert!(run(&e, ctx()).await.is_denied());
        // Refused: released, so the next call sees 0.6 again.
        e.resolve_approval(o.call_id(), &ApprovalResponse::refuse("bob")).await.unwrap();
        assert!(run(&e, ctx()).await.needs_approval());
    }
}

#[tokio::test]
async fn exactly_at_the_warning_threshold_is_allowed() {
    let clock = clock();
    let config = BudgetConfig { max_daily_spend: Some(m("1")), default_cost: m("0.4"), ..BudgetConfig::default() };
    let e = engine(config, &clock);
    assert!(run(&e, CallContext::new("x")).await.is_allowed());
    assert!(run(&e, CallContext::new("x")).await.is_allowed(), "0.8 is not past 80%");
    assert!(run(&e, CallContext::new("x")).await.is_denied(), "1.2 passes the limit");
}

#[tokio::test]
async fn fixed_point_sums_are_exact() {
    let clock = clock();
    let e = engine(daily("0.3"), &clock);
    for i in 0..3 {
        assert!(run(&e, cost_call(json!(0.1))).await.is_allowed(), "charge {i}");
    }
    assert!(run(&e, cost_call(json!(0.000001))).await.is_denied());

    let e = engine(daily("1.0"), &clock);
    for _ in 0..10 {
        assert!(run(&e, cost_call(json!(0.1))).await.is_allowed());
    }
    assert!(run(&e, cost_call(json!(0.1))).await.is_denied(), "ten charges of 0.1 fill 1.0 exactly");
}

#[tokio::test]
async fn days_and_months_roll_at_midnight_utc() {
    // 2026-11-30T23:59:59Z: the last second of the day and of the month.
    let clock = ManualClock::new(Timestamp::from_secs(1_796_083_199));
    let config = BudgetConfig {
        max_daily_spend: Some(m("1")),
        max_monthly_spend: Some(m("1.5")),
        default_cost: m("1"),
        warn_threshold: 1.0,
        ..BudgetConfig::default()
    };
    let e = engine(config, &clock);
    assert!(run(&e, CallContext::new("x")).await.is_allowed());
    let o = run(&e, CallContext::new("x")).await;
    assert!(o.denial_reasons()[0].starts_with("Daily budget exceeded"), "{:?}", o.denial_reasons());
    clock.advance(Duration::from_secs(1)); // 2026-12-01T00:00:00Z
    assert!(run(&e, CallContext::new("x")).await.is_allowed(), "a new day and a new month");

    // Within one month, the day rolls but the month does not.
    let clock = ManualClock::new(Timestamp::from_secs(NOON));
    let config = BudgetConfig {
        max_daily_spend: Some(m("1")),
        max_monthly_spend: Some(m("1.5")),
        default_cost: m("1"),
        warn_threshold: 1.0,
        ..BudgetConfig::default()
    };
    let e = engine(config, &clock);
    assert!(run(&e, CallContext::new("x")).await.is_allowed());
    clock.advance(Duration::from_secs(86_400));
    let o = run(&e, CallContext::new("x")).await;
    assert!(o.denial_reasons()[0].starts_with("Monthly budget exceeded"), "{:?}", o.denial_reasons());
}

#[tokio::test]
async fn partitions_keep_separate_day_budgets() {
    let clock = clock();
    let config = BudgetConfig { partition_by: "metadata:tenant".parse().unwrap(), default_cost: m("1"), ..daily("1") };
    let e = engine(config, &clock);
    let t = |tenant: &str| CallContext::new("x").with_metadata(json!({"tenant": tenant})).unwrap();
    assert!(run(&e, t("acme")).await.is_allowed());
    assert!(run(&e, t("acme")).await.is_denied());
    assert!(run(&e, t("globex")).await.is_allowed());

    let config = BudgetConfig { partition_by: "agent".parse().unwrap(), default_cost: m("1"), ..daily("1") };
    let e = engine(config, &clock);
    assert!(run(&e, CallContext::new("x").with_agent("a")).await.is_allowed());
    assert!(run(&e, CallContext::new("x").with_agent("a")).await.is_denied());
    assert!(run(&e, CallContext::new("x").with_agent("b")).await.is_allowed());
}

#[tokio::test]
async fn effects_follow_the_outcome() {
    let clock = clock();
    let total = |e: &Engine| {
        let e = e.clone();
        let now = clock.now();
        async move { e.store().total(&day_key("2026-11-24"), day_window(), now).await.unwrap() }
    };
    // Denied by another guard: nothing spent.
    let e = Engine::builder()
        .guard(BudgetGuard::new(daily("1")).unwrap())
        .guard(StaticGuard::new("no", Decision::deny("no")).only_for("blocked"))
        .guard(StaticGuard::new("ask", Decision::require_approval("ask")).only_for("ask"))
        .clock(clock.clone())
        .approval_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let call = |name: &str, id: &str| {
        CallContext::new(name).with_call_id(id).with_arguments(json!({"estimated_cost": 0.25})).unwrap()
    };
    assert!(run(&e, call("blocked", "d")).await.is_denied());
    assert_eq!(total(&e).await, 0);
    // Pending: held; approved: counted.
    assert!(run(&e, call("ask", "a1")).await.needs_approval());
    assert_eq!(total(&e).await, 250_000);
    e.resolve_approval("a1", &ApprovalResponse::approve("alice")).await.unwrap();
    assert_eq!(total(&e).await, 250_000);
    // Refused: released.
    assert!(run(&e, call("ask", "a2")).await.needs_approval());
    assert_eq!(total(&e).await, 500_000);
    e.resolve_approval("a2", &ApprovalResponse::refuse("bob")).await.unwrap();
    assert_eq!(total(&e).await, 250_000);
    // Expired: released.
    assert!(run(&e, call("ask", "a3")).await.needs_approval());
    clock.advance(Duration::from_secs(61));
    assert_eq!(total(&e).await, 250_000);
}

#[tokio::test]
async fn settle_replaces_the_estimate_in_every_window() {
    let clock = clock();
    let config = BudgetConfig {
        max_session_spend: Some(m("10")),
        max_daily_spend: Some(m("10")),
        max_monthly_spend: Some(m("10")),
        warn_threshold: 1.0,
        ..BudgetConfig::default()
    };
    let e = engine(config, &clock);
    let ctx = cost_call(json!(2)).with_session("s").with_call_id("c1");
    assert!(run(&e, ctx).await.is_allowed());
    let s = e.settle("c1", m("0.5")).await.unwrap();
    assert_eq!(s.counters, 3);
    assert_eq!(s.previous, [m("2"), m("2"), m("2")]);
    let now = clock.now();
    let idle = halt_core::store::Window::Idle { idle: Duration::from_secs(3600) };
    assert_eq!(e.store().total("budget/budget/session/s", idle, now).await.unwrap(), 500_000);
    assert_eq!(e.store().total(&day_key("2026-11-24"), day_window(), now).await.unwrap(), 500_000);
    assert_eq!(e.store().total("budget/budget/global/monthly/2026-11", day_window(), now).await.unwrap(), 500_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_allow_exactly_one_hundred() {
    let e = Engine::builder().guard(BudgetGuard::new(daily("1.0")).unwrap()).build().unwrap();
    assert_eq!(count_allowed_concurrently(&e, 1_000, |_| cost_call(json!(0.01))).await, 100);
}

#[test]
fn configuration_errors_are_clear() {
    let mut registry = GuardRegistry::new();
    registry.register(factory()).unwrap();
    let err = |v: Value| registry.build_json("budget", "budget", v).unwrap_err().to_string();
    assert_eq!(err(json!({"warn_threshold": 0})), "invalid `warn_threshold`: 0 is not in (0, 1]");
    assert_eq!(err(json!({"warn_threshold": 1.5})), "invalid `warn_threshold`: 1.5 is not in (0, 1]");
    assert!(err(json!({"max_daily_spend": -1})).contains("is negative"));
    assert!(err(json!({"max_daily_spnd": 1})).contains("unknown field `max_daily_spnd`"));
    assert!(err(json!({"partition_by": "tenant"})).contains("unknown partition"));
    assert!(err(json!({"cost_field": " "})).contains("cost_field"));
    let g =
        registry.build_json("budget", "llm_budget", json!({"max_daily_spend": "10", "partition_by": "agent"})).unwrap();
    assert_eq!(g.name(), "llm_budget");
    assert_eq!(g.describe()["max_daily_spend"], json!(10.0));
}

#[tokio::test]
async fn the_decision_kinds_are_as_documented() {
    let clock = clock();
    let e = engine(BudgetConfig::default(), &clock);
    let o = run(&e, CallContext::new("x")).await;
    assert_eq!(o.decision(), DecisionKind::Allow);
    assert_eq!(o.decisions()[0].reason(), "No spend limit applies");
}

#[tokio::test]
async fn usage_reports_the_day_and_the_month_against_their_limits() {
    let clock = clock();
    let config = BudgetConfig {
        max_daily_spend: Some(m("10")),
        max_monthly_spend: Some(m("100")),
        warn_threshold: 0.8,
        ..BudgetConfig::default()
    };
    let e = engine(config, &clock);
    assert!(run(&e, cost_call(json!("2.5"))).await.is_allowed());
    let guard = e.guard("budget").unwrap();
    let usage = guard.usage(e.store().as_ref(), clock.now()).await.unwrap();
    let seen: Vec<_> = usage.iter().map(|u| (u.limit_name.as_str(), u.window.as_str(), u.used, u.limit)).collect();
    assert_eq!(seen, [("daily", "2026-11-24", 2.5, 10.0), ("monthly", "2026-11", 2.5, 100.0)]);
    assert!(usage.iter().all(|u| u.guard == "budget" && u.unit == "money" && u.warn_at == Some(0.8)));
    // The next day starts at zero; a partitioned budget has no single gauge.
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(guard.usage(e.store().as_ref(), clock.now()).await.unwrap()[0].used, 0.0);
    let per_agent = BudgetConfig { partition_by: "agent".parse().unwrap(), ..daily("10") };
    let e = engine(per_agent, &clock);
    assert!(e.guard("budget").unwrap().usage(e.store().as_ref(), clock.now()).await.unwrap().is_empty());
}
