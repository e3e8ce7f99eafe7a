//! Rate-limit guard: every rule and boundary, attempts counting, partitions, concurrency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use halt_core::{CallContext, Decision, DecisionKind, GuardRegistry, ManualClock, Timestamp};
use halt_engine::Engine;
use halt_guards_rate_limit::factory;
use halt_testing::guards::{StaticGuard, count_allowed_concurrently};
use serde_json::{Value, json};

const T0: i64 = 1_795_521_600;

fn setup(config: Value) -> (Engine, ManualClock) {
    let mut registry = GuardRegistry::new();
    registry.register(factory()).unwrap();
    let clock = ManualClock::new(Timestamp::from_secs(T0));
    let e = Engine::builder()
        .guard_arc(registry.build_json("rate_limit", "rate_limit", config).unwrap())
        .guard(StaticGuard::new("no", Decision::deny("no")).only_for("blocked"))
        .clock(clock.clone())
        .build()
        .unwrap();
    (e, clock)
}

fn at(clock: &ManualClock, secs: f64) {
    clock.set(Timestamp::from_secs_f64(T0 as f64 + secs).unwrap());
}

fn call(name: &str, args: Value) -> CallContext {
    CallContext::new(name).with_session("s1").with_agent("a1").with_arguments(args).unwrap()
}

fn decide(e: &Engine, ctx: CallContext) -> (DecisionKind, String) {
    let o = e.evaluate_blocking(ctx);
    let reason =
        o.decisions().iter().find(|d| d.guard() == "rate_limit").map(|d| d.reason().to_owned()).unwrap_or_default();
    (o.decision(), reason)
}

/// Only one limit on at a time, the others off.
fn only(field: &str, value: Value) -> Value {
    let mut v = json!({
        "max_calls_per_minute": null, "max_calls_per_minute_per_function": null,
        "max_identical_calls": null, "burst_threshold": null,
    });
    v[field] = value;
    v
}

#[test]
fn minute_window_slides_and_its_edge_counts() {
    let (e, clock) = setup(only("max_calls_per_minute", json!(3)));
    for (i, t) in [0.0, 10.0, 20.0].into_iter().enumerate() {
        at(&clock, t);
        assert_eq!(decide(&e, call("f", json!({"i": i}))).0, DecisionKind::Allow);
    }
    at(&clock, 60.0);
    let (k, r) = decide(&e, call("g", json!({})));
    assert_eq!((k, r.as_str()), (DecisionKind::Deny, "Rate limit exceeded: 3/3 calls in the last minute"));
    let o = e.evaluate_blocking(call("g", json!({})));
    assert!((o.decisions()[0].retry_after().unwrap() - 0.000_001).abs() < 1e-9, "retry as soon as the oldest leaves");
    at(&clock, 60.000_001);
    assert_eq!(decide(&e, call("g", json!({}))).0, DecisionKind::Allow, "the call at 0 s has left the window");
    assert_eq!(decide(&e, call("g", json!({"x": 1}))).0, DecisionKind::Deny);
}

#[test]
fn per_function_limit_names_the_function() {
    let (e, _) = setup(only("max_calls_per_minute_per_function", json!(3)));
    for i in 0..3 {
        assert_eq!(decide(&e, call("f", json!({"i": i}))).0, DecisionKind::Allow);
    }
    let (k, r) = decide(&e, call("F", json!({"i": 9})));
    assert_eq!(
        (k, r.as_str()),
        (DecisionKind::Deny, "Function rate limit exceeded for 'f': 3/3 calls/min"),
        "the normalised name"
    );
    assert_eq!(decide(&e, call("g", json!({}))).0, DecisionKind::Allow);
    // Evasions count as the same function.
    assert_eq!(decide(&e, call("ｆ", json!({"i": 10}))).0, DecisionKind::Deny);
    assert_eq!(decide(&e, call("f\u{200b}", json!({"i": 11}))).0, DecisionKind::Deny);
}

#[test]
fn session_limit() {
    let (e, _) = setup(only("max_calls_per_session", json!(2)));
    assert_eq!(decide(&e, call("f", json!({"i": 1}))).0, DecisionKind::Allow);
    assert_eq!(decide(&e, call("f", json!({"i": 2}))).0, DecisionKind::Allow);
    let (k, r) = decide(&e, call("f", json!({"i": 3})));
    assert_eq!((k, r.as_str()), (DecisionKind::Deny, "Session call limit reached: 2/2 calls"));
    let other = CallContext::new("f").with_session("s2");
    assert_eq!(decide(&e, other).0, DecisionKind::Allow);
    assert_eq!(decide(&e, CallContext::new("f")).0, DecisionKind::Allow, "no session: no session limit");
}

#[test]
fn identical_calls_are_a_loop_per_agent_and_session() {
    let (e, _) = setup(only("max_identical_calls", json!(3)));
    let q = |v: &str| call("q", json!({"query": v, "opts": {"b": 1, "a": 2}}));
    for _ in 0..3 {
        assert_eq!(decide(&e, q("same")).0, DecisionKind::Allow);
    }
    let (k, r) = decide(&e, q("same"));
    assert_eq!((k, r.as_str()), (DecisionKind::Deny, "Possible loop: the same call was made 3 times in a row"));
    // Argument order does not matter; the denied call did not count.
    let reordered = call("Q", json!({"opts": {"a": 2, "b": 1}, "query": "same"}));
    assert_eq!(decide(&e, reordered).0, DecisionKind::Deny);
    assert_eq!(decide(&e, q("other")).0, DecisionKind::Allow);
    assert_eq!(decide(&e, q("same")).0, DecisionKind::Allow);
    // Another session of the same agent is not in the loop.
    let mut elsewhere = q("same");
    elsewhere.session_id = Some("s2".into());
    for _ in 0..3 {
        assert_eq!(decide(&e, elsewhere.clone().with_call_id("x")).0, DecisionKind::Allow);
    }
}

#[test]
fn a_call_a_limit_denies_does_not_join_the_loop() {
    let (e, clock) = setup(json!({
        "max_calls_per_minute": 2, "max_calls_per_minute_per_function": null, "max_identical_calls": 2,
        "burst_threshold": null,
    }));
    let q = |v: &str| call("q", json!({"v": v}));
    at(&clock, 0.0);
    assert_eq!(decide(&e, q("x")).0, DecisionKind::Allow);
    assert_eq!(decide(&e, q("y")).0, DecisionKind::Allow);
    at(&clock, 1.0);
    assert_eq!(decide(&e, q("y")).1, "Rate limit exceeded: 2/2 calls in the last minute");
    at(&clock, 61.0);
    // Had the denied call counted, `y` would now be its third in a row.
    assert_eq!(decide(&e, q("y")).0, DecisionKind::Allow);
    assert!(decide(&e, q("y")).1.starts_with("Possible loop"));
}

#[test]
fn a_limit_ranks_before_a_loop() {
    let (e, _) = setup(json!({
        "max_calls_per_minute": 1, "max_calls_per_minute_per_function": null, "max_identical_calls": 1,
        "burst_threshold": null,
    }));
    assert_eq!(decide(&e, call("a", json!({}))).0, DecisionKind::Allow);
    assert_eq!(decide(&e, call("a", json!({}))).1, "Rate limit exceeded: 1/1 calls in the last minute");
    assert_eq!(decide(&e, call("b", json!({}))).1, "Rate limit exceeded: 1/1 calls in the last minute");
}

#[test]
fn bursts_start_a_cooldown_that_ends() {
    let (e, clock) = setup(json!({
        "max_calls_per_minute": 1000, "max_calls_per_minute_per_function": null, "max_identical_calls": 100,
        "burst_threshold": 3, "burst_window_seconds": 5.0, "cooldown_seconds": 10.0,
    }));
    let mut results = Vec::new();
    for (i, t) in [0.0, 1.0, 2.0, 3.0, 8.0, 12.9, 13.0].into_iter().enumerate() {
        at(&clock, t);
        results.push(decide(&e, call("a", json!({"i": i}))));
    }
    let kinds: Vec<DecisionKind> = results.iter().map(|r| r.0).collect();
    use DecisionKind::{Allow, Deny};
    assert_eq!(kinds, [Allow, Allow, Allow, Deny, Deny, Deny, Allow]);
    assert_eq!(results[3].1, "Burst detected: 3 calls in 5s; cooling down for 10s");
    assert_eq!(results[4].1, "Cooling down after a burst: 5.0s left");
    assert_eq!(results[5].1, "Cooling down after a burst: 0.1s left");
}

/// A burst window within the minute shares the minute's window (as its recent part); a wider one,
/// or one without a minute limit, has its own: the rules are the same either way.
#[test]
fn a_burst_ranks_after_the_function_limit_and_its_window_edge_counts() {
    for (minute, window) in [(json!(1000), 5.0), (json!(null), 5.0), (json!(1000), 90.0)] {
        let config = |per_function: Value| {
            json!({
                "max_calls_per_minute": minute, "max_calls_per_minute_per_function": per_function,
                "max_identical_calls": 100, "burst_threshold": 2, "burst_window_seconds": window,
                "cooldown_seconds": 10.0,
            })
        };
        let case = format!("minute {minute}, burst window {window}");
        let (e, clock) = setup(config(json!(2)));
        at(&clock, 0.0);
        assert_eq!(decide(&e, call("a", json!({"i": 0}))).0, DecisionKind::Allow, "{case}");
        assert_eq!(decide(&e, call("a", json!({"i": 1}))).0, DecisionKind::Allow, "{case}");
        at(&clock, 1.0);
        let (_, r) = decide(&e, call("a", json!({"i": 2})));
        assert_eq!(r, "Function rate limit exceeded for 'a': 2/2 calls/min", "{case}");
        let (_, r) = decide(&e, call("b", json!({})));
        assert_eq!(r, format!("Burst detected: 2 calls in {window}s; cooling down for 10s"), "{case}");
        at(&clock, 2.0);
        assert!(decide(&e, call("c", json!({}))).1.starts_with("Cooling down"), "{case}");

        let (e, clock) = setup(config(json!(null)));
        at(&clock, 0.0);
        decide(&e, call("a", json!({})));
        decide(&e, call("b", json!({})));
        at(&clock, window);
        let (_, r) = decide(&e, call("c", json!({})));
        assert!(r.starts_with("Burst detected: 2 calls"), "{case}: a call exactly {window}s old counts: {r}");
        let (e, clock) = setup(config(json!(null)));
        at(&clock, 0.0);
        decide(&e, call("a", json!({})));
        decide(&e, call("b", json!({})));
        at(&clock, window + 0.000_001);
        assert_eq!(decide(&e, call("c", json!({}))).0, DecisionKind::Allow, "{case}: past the edge");
    }
}

#[test]
fn a_loop_is_reported_before_a_burst_and_starts_no_cooldown() {
    // The burst as the minute's recent part, and as a window of its own.
    for minute in [json!(60), json!(null)] {
        let (e, clock) = setup(json!({
            "max_calls_per_minute": minute, "max_identical_calls": 2, "burst_threshold": 2,
            "burst_window_seconds": 5.0,
        }));
        at(&clock, 0.0);
        assert_eq!(decide(&e, call("a", json!({}))).0, DecisionKind::Allow);
        assert_eq!(decide(&e, call("a", json!({}))).0, DecisionKind::Allow);
        let (_, r) = decide(&e, call("a", json!({})));
        assert_eq!(r, "Possible loop: the same call was made 2 times in a row", "minute {minute}");
        at(&clock, 5.000_001);
        assert_eq!(decide(&e, call("b", json!({}))).0, DecisionKind::Allow, "minute {minute}: no cooldown");
    }
}

#[test]
fn attempts_count_whatever_other_guards_decide_but_own_denials_do_not() {
    let (e, clock) = setup(only("max_calls_per_minute", json!(2)));
    at(&clock, 0.0);
    assert_eq!(decide(&e, call("blocked", json!({}))).0, DecisionKind::Deny, "denied by another guard");
    assert_eq!(decide(&e, call("f", json!({}))).0, DecisionKind::Allow);
    assert_eq!(decide(&e, call("f", json!({"x": 1}))).1, "Rate limit exceeded: 2/2 calls in the last minute");
    at(&clock, 30.0);
    assert_eq!(decide(&e, call("f", json!({"x": 2}))).0, DecisionKind::Deny);
    at(&clock, 60.000_001);
    // The calls at 0 s left; the denials at 0 s and 30 s never counted.
    assert_eq!(decide(&e, call("f", json!({"x": 3}))).0, DecisionKind::Allow);
    assert_eq!(decide(&e, call("f", json!({"x": 4}))).0, DecisionKind::Allow);
}

#[test]
fn partitions_split_every_limit() {
    let mut config = only("max_calls_per_minute", json!(1));
    config["partition_by"] = json!("agent");
    let (e, _) = setup(config);
    let by = |agent: &str| CallContext::new("f").with_agent(agent);
    assert_eq!(decide(&e, by("a")).0, DecisionKind::Allow);
    assert_eq!(decide(&e, by("a")).0, DecisionKind::Deny);
    assert_eq!(decide(&e, by("b")).0, DecisionKind::Allow);
    let mut config = only("burst_threshold", json!(1));
    config["partition_by"] = json!("session");
    let (e, _) = setup(config);
    let s = |id: &str| CallContext::new("f").with_session(id);
    assert_eq!(decide(&e, s("s1")).0, DecisionKind::Allow);
    assert_eq!(decide(&e, s("s1")).0, DecisionKind::Deny);
    assert_eq!(decide(&e, s("s1")).0, DecisionKind::Deny, "s1 cools down");
    assert_eq!(decide(&e, s("s2")).0, DecisionKind::Allow, "s2 does not");
}

#[test]
fn concurrent_calls_never_pass_the_minute_limit() {
    let (e, _) = setup(only("max_calls_per_minute", json!(100)));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let allowed = rt.block_on(count_allowed_concurrently(&e, 1_000, |i| call("f", json!({"i": i}))));
    assert_eq!(allowed, 100);
}

#[test]
fn configuration_errors() {
    let mut registry = GuardRegistry::new();
    registry.register(factory()).unwrap();
    let err = |v: Value| registry.build_json("rate_limit", "rate_limit", v).unwrap_err().to_string();
    assert!(err(json!({"cooldown_seconds": -1})).contains("cooldown_seconds"));
    // More seconds than a duration holds: an error, not a panic.
    assert!(err(json!({"cooldown_seconds": 1e20})).contains("1e20 seconds is longer than a duration can be"));
    assert!(err(json!({"burst_window_seconds": 1e300})).contains("burst_window_seconds"));
    assert!(err(json!({"burst_window_seconds": 0})).contains("must be positive"));
    assert!(err(json!({"max_calls_per_minute": -5})).contains("invalid value"));
    assert!(err(json!({"partition_by": "metadata:tenant"})).contains("partition_by"));
    assert!(err(json!({"max_calls_per_minuet": 5})).contains("unknown field `max_calls_per_minuet`"));
    assert!(
        registry.build_json("rate_limit", "r", json!({"burst_window_seconds": 0, "burst_threshold": null})).is_ok()
    );
}

#[test]
fn retry_after_is_set_on_cooldown() {
    let (e, _) = setup(only("burst_threshold", json!(1)));
    e.evaluate_blocking(call("f", json!({})));
    let o = e.evaluate_blocking(call("f", json!({"x": 1})));
    assert_eq!(o.decisions()[0].retry_after(), Some(30.0));
}
