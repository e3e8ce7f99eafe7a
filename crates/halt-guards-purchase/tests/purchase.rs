//! Purchase guard: every rule and boundary, bad amounts, effects, concurrency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::time::Duration;

use halt_core::{CallContext, Clock, Decision, DecisionKind, GuardRegistry, ManualClock, Money, Timestamp};
use halt_engine::{ApprovalResponse, Engine};
use halt_guards_purchase::{PurchaseConfig, PurchaseGuard, factory};
use halt_testing::guards::{StaticGuard, count_allowed_concurrently};
use serde_json::{Value, json};

/// 2026-11-24T12:00:00Z.
const NOON: i64 = 1_795_521_600;

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

fn engine(config: PurchaseConfig) -> (Engine, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_secs(NOON));
    let e = Engine::builder().guard(PurchaseGuard::new(config).unwrap()).clock(clock.clone()).build().unwrap();
    (e, clock)
}

fn buy(args: Value) -> CallContext {
    CallContext::new("purchase_item").with_arguments(args).unwrap()
}

async fn decide(e: &Engine, args: Value) -> (DecisionKind, String) {
    let o = e.evaluate(buy(args)).await;
    (o.decision(), o.decisions().first().map(|d| d.reason().to_owned()).unwrap_or_default())
}

fn basic() -> PurchaseConfig {
    PurchaseConfig {
        max_single_purchase: Some(m("100")),
        max_daily_purchases: Some(m("500")),
        max_purchase_count_per_day: Some(5),
        require_approval_above: Some(m("50")),
        blocked_categories: vec!["luxury".into(), "gambling".into()],
        ..PurchaseConfig::default()
    }
}

#[tokio::test]
async fn applies_only_to_purchase_functions() {
    let (e, _) = engine(basic());
    for name in [
        "purchase_item",
        "BUY_now",
        "place_order",
        "checkout",
        "ｐａｙ_invoice",
        "transfer_funds",
        "send_money",
        "wire_transfer",
        "charge_card",
    ] {
        let o = e.evaluate(CallContext::new(name).with_arguments(json!({"amount": 500})).unwrap()).await;
        assert!(o.is_denied(), "{name} is a purchase");
    }
    for name in ["get_price", "list_items", "send_email"] {
        let o = e.evaluate(CallContext::new(name).with_arguments(json!({"amount": 500})).unwrap()).await;
        assert!(o.decisions().is_empty(), "{name} is not a purchase");
    }
}

#[tokio::test]
async fn amounts_are_read_from_the_field_then_fallbacks() {
    let (e, _) = engine(basic());
    assert_eq!(decide(&e, json!({"price": 200})).await.0, DecisionKind::Deny);
    assert_eq!(decide(&e, json!({"total": "75"})).await.0, DecisionKind::RequireApproval);
    assert_eq!(decide(&e, json!({"cost": 10, "value": 999})).await.0, DecisionKind::Deny, "the largest counts");
    let (kind, reason) = decide(&e, json!({"item": "pen"})).await;
    assert_eq!(kind, DecisionKind::RequireApproval);
    assert!(reason.starts_with("Cannot determine purchase amount"), "{reason}");
    // A present amount field that is not a number makes the amount unknown, even with a price.
    let (kind, reason) = decide(&e, json!({"amount": "ten", "price": 5})).await;
    assert_eq!(kind, DecisionKind::RequireApproval, "{reason}");
}

#[tokio::test]
async fn bad_amounts_table() {
    let (e, _) = engine(basic());
    for (value, want) in [
        (json!(-5), DecisionKind::Deny),
        (json!("NaN"), DecisionKind::Deny),
        (json!("Infinity"), DecisionKind::Deny),
        (json!("1e400"), DecisionKind::Deny),
        (json!(true), DecisionKind::RequireApproval),
        (json!({}), DecisionKind::RequireApproval),
        (json!([]), DecisionKind::RequireApproval),
        (json!("abc"), DecisionKind::RequireApproval),
        (json!("$5"), DecisionKind::RequireApproval),
        (json!("1e3"), DecisionKind::Deny), // 1000 > max_single_purchase
        (json!("1e1"), DecisionKind::Allow),
    ] {
        let (kind, reason) = decide(&e, json!({"amount": value})).await;
        assert_eq!(kind, want, "{value}: {reason}");
    }
}

#[tokio::test]
async fn currency_must_match() {
    let (e, _) = engine(basic());
    assert_eq!(decide(&e, json!({"amount": 5, "currency": "usd"})).await.0, DecisionKind::Allow);
    let (kind, reason) = decide(&e, json!({"amount": 5, "currency": "EUR"})).await;
    assert_eq!(kind, DecisionKind::Deny);
    assert_eq!(reason, "Currency in `currency` is not the configured currency USD");
    assert_eq!(decide(&e, json!({"amount": 5, "currency": 840})).await.0, DecisionKind::Deny);
    // Every currency field counts, whatever its case or spelling, at the top or in an item.
    for args in [
        json!({"amount": 5, "currency_code": "EUR"}),
        json!({"amount": 5, "Currency": "EUR"}),
        json!({"amount": 5, "currency": "USD", "CurrencyCode": "GBP"}),
        json!({"amount": 5, "item": {"currency": "EUR"}}),
    ] {
        assert_eq!(decide(&e, args.clone()).await.0, DecisionKind::Deny, "{args}");
    }
}

#[tokio::test]
async fn categories_block_by_containment_and_allow_lists_restrict() {
    let (e, _) = engine(basic());
    assert_eq!(decide(&e, json!({"amount": 10, "category": "Luxury_Goods"})).await.0, DecisionKind::Deny);
    assert_eq!(decide(&e, json!({"amount": 10, "item": {"category": "online gambling"}})).await.0, DecisionKind::Deny);
    assert_eq!(decide(&e, json!({"amount": 10, "category": "office"})).await.0, DecisionKind::Allow);
    let (e, _) = engine(PurchaseConfig { allowed_categories: vec!["office".into(), "books".into()], ..basic() });
    assert_eq!(decide(&e, json!({"amount": 10, "category": "Office_Supplies"})).await.0, DecisionKind::Allow);
    assert_eq!(decide(&e, json!({"amount": 10, "category": "toys"})).await.0, DecisionKind::Deny);
    let (kind, reason) = decide(&e, json!({"amount": 10})).await;
    assert_eq!(kind, DecisionKind::Deny, "no category is not an allowed one");
    assert!(reason.starts_with("No category is given"), "{reason}");
    // Every category counts: a null one hides nothing, and lists and items are read too.
    let (e, _) = engine(basic());
    for args in [
        json!({"amount": 10, "category": null, "item": {"category": "luxury"}}),
        json!({"amount": 10, "category": "office", "item": {"category": "Luxury"}}),
        json!({"amount": 10, "categories": ["office", "gambling"]}),
        json!({"amount": 10, "product_category": "luxury watches"}),
        json!({"amount": 10, "items": [{"price": 1, "category": "office"}, {"price": 1, "category": "luxury"}]}),
    ] {
        assert_eq!(decide(&e, args.clone()).await.0, DecisionKind::Deny, "{args}");
    }
}

#[tokio::test]
async fn the_amount_is_the_real_total() {
    let (e, _) = engine(basic());
    for args in [
        json!({"price": 40, "quantity": 100}),
        json!({"amount": 1, "total": 5000}),
        json!({"amount": 1, "Total_Amount": 5000}),
        json!({"unit_price": "40", "qty": "3"}),
        json!({"amount": 1, "items": [{"price": 60, "quantity": 1}, {"price": 60, "quantity": 1}]}),
        json!({"amount": 1, "item": {"price": 25, "quantity": 5}}),
    ] {
        assert_eq!(decide(&e, args.clone()).await.0, DecisionKind::Deny, "{args} is over 100");
    }
    assert_eq!(decide(&e, json!({"price": 10, "quantity": 3})).await.0, DecisionKind::Allow);
    let (kind, reason) = decide(&e, json!({"price": 10, "quantity": "many"})).await;
    assert_eq!(kind, DecisionKind::RequireApproval, "{reason}");
    assert_eq!(decide(&e, json!({"price": 10, "quantity": -2})).await.0, DecisionKind::Deny);
    assert_eq!(decide(&e, json!({"price": 1e9, "quantity": 1e9})).await.0, DecisionKind::Deny, "overflow");
}

#[tokio::test]
async fn reasons_never_repeat_the_values_of_the_call() {
    let (e, _) = engine(PurchaseConfig { allowed_categories: vec!["office".into()], ..basic() });
    let secret = "SSN 123-45-6789 sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    for args in [
        json!({"amount": 5, "currency": secret, "category": "office"}),
        json!({"amount": 5, "category": secret}),
        json!({"amount": secret}),
        json!({"amount": 5, "category": "luxury 123-45-6789"}),
        json!({"amount": 1234.5678, "category": "office"}),
        json!({"amount": 75.4321, "category": "office"}),
    ] {
        let o = e.evaluate(buy(args.clone())).await;
        let text = serde_json::to_string(&o).unwrap();
        for value in ["123-45-6789", "sk_live", "1234.5678", "75.4321"] {
            assert!(!text.contains(value), "{text}");
        }
    }
}

#[tokio::test]
async fn single_purchase_and_approval_thresholds() {
    let (e, _) = engine(basic());
    assert_eq!(decide(&e, json!({"amount": 100})).await.0, DecisionKind::RequireApproval, "at the limit, above 50");
    assert_eq!(decide(&e, json!({"amount": 100.000001})).await.0, DecisionKind::Deny);
    assert_eq!(decide(&e, json!({"amount": 50})).await.0, DecisionKind::Allow, "at the threshold");
    let o = e.evaluate(buy(json!({"amount": 75}))).await;
    assert!(o.needs_approval());
    assert!((o.max_risk_score() - 0.75).abs() < 1e-9, "risk = amount / max_single_purchase");
}

#[tokio::test]
async fn daily_count_and_total() {
    let (e, clock) = engine(PurchaseConfig { max_purchase_count_per_day: Some(3), ..PurchaseConfig::default() });
    for _ in 0..3 {
        assert_eq!(decide(&e, json!({"amount": 1})).await.0, DecisionKind::Allow);
    }
    let (kind, reason) = decide(&e, json!({"amount": 1})).await;
    assert_eq!((kind, reason.as_str()), (DecisionKind::Deny, "Daily purchase count limit reached: 3/3"));
    clock.advance(Duration::from_secs(12 * 3600)); // 2026-11-25T00:00:00Z
    assert_eq!(decide(&e, json!({"amount": 1})).await.0, DecisionKind::Allow, "a new day");

    let (e, _) = engine(PurchaseConfig { max_daily_purchases: Some(m("100")), ..PurchaseConfig::default() });
    for (amount, want) in [
        (40.0, DecisionKind::Allow),
        (40.0, DecisionKind::Allow),
        (30.0, DecisionKind::Deny),
        (20.0, DecisionKind::Allow),
        (0.5, DecisionKind::Deny),
    ] {
        assert_eq!(decide(&e, json!({"amount": amount})).await.0, want, "{amount}");
    }
}

#[tokio::test]
async fn purchases_count_only_when_they_run() {
    let clock = ManualClock::new(Timestamp::from_secs(NOON));
    let e = Engine::builder()
        .guard(
            PurchaseGuard::new(PurchaseConfig {
                max_daily_purchases: Some(m("100")),
                require_approval_above: Some(m("50")),
                ..PurchaseConfig::default()
            })
            .unwrap(),
        )
        .guard(StaticGuard::new("no", Decision::deny("no")).only_for("buy_blocked"))
        .clock(clock)
        .build()
        .unwrap();
    let call = |name: &str, id: &str, amount: f64| {
        CallContext::new(name).with_call_id(id).with_arguments(json!({"amount": amount})).unwrap()
    };
    assert!(e.evaluate(call("buy_blocked", "x", 90.0)).await.is_denied());
    assert!(e.evaluate(call("buy", "a", 60.0)).await.needs_approval());
    assert!(e.evaluate(call("buy", "b", 45.0)).await.is_denied(), "the pending 60 is held");
    e.resolve_approval("a", &ApprovalResponse::approve("alice")).await.unwrap();
    assert!(e.evaluate(call("buy", "c", 40.0)).await.is_allowed(), "60 + 40 = 100");
    assert!(e.evaluate(call("buy", "d", 0.01)).await.is_denied(), "the approved purchase counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_purchases_allow_exactly_one_hundred() {
    let (e, _) = engine(PurchaseConfig { max_daily_purchases: Some(m("1.0")), ..PurchaseConfig::default() });
    assert_eq!(count_allowed_concurrently(&e, 1_000, |_| buy(json!({"amount": 0.01}))).await, 100);
}

#[test]
fn configuration_errors_are_clear() {
    let mut registry = GuardRegistry::new();
    registry.register(factory()).unwrap();
    let err = |v: Value| registry.build_json("purchase", "purchase", v).unwrap_err().to_string();
    assert!(err(json!({"max_single_purchase": -1})).contains("is negative"));
    assert!(err(json!({"max_purchase_count_per_day": -1})).contains("invalid value"));
    assert!(err(json!({"blocked_categorys": []})).contains("unknown field `blocked_categorys`"));
    assert_eq!(err(json!({"currency": ""})), "invalid `currency`: must not be empty");
    assert_eq!(
        err(json!({"purchase_functions": ["buy", " "]})),
        "invalid `purchase_functions`: entries must not be empty"
    );
}

#[tokio::test]
async fn usage_reports_the_days_purchases_and_their_count() {
    let (e, clock) = engine(basic());
    assert_eq!(decide(&e, json!({"amount": 12.5})).await.0, DecisionKind::Allow);
    assert_eq!(decide(&e, json!({"amount": 20})).await.0, DecisionKind::Allow);
    let usage = e.guard("purchase").unwrap().usage(e.store().as_ref(), clock.now()).await.unwrap();
    let seen: Vec<_> = usage.iter().map(|u| (u.limit_name.as_str(), u.unit, u.used, u.limit)).collect();
    assert_eq!(seen, [("daily_purchases", "money", 32.5, 500.0), ("daily_purchase_count", "calls", 2.0, 5.0)]);
    assert!(usage.iter().all(|u| u.window == "2026-11-24"));
}
