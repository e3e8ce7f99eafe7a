//! Every guard sees one normalised call, whatever path the call takes: calls streamed through
//! `Engine::evaluate_stream` (prepared ahead of their turn on another thread, as `agenthalt eval`
//! does) and calls evaluated one by one (`Engine::evaluate`) get the same decisions, for random
//! calls whose names are padded, cased, full-width or hold invisible characters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use halt_config::PolicyLoader;
use std::ops::ControlFlow;

use halt_core::{CallContext, Outcome, ReplayClock, Timestamp};
use halt_engine::Engine;
use proptest::prelude::*;
use serde_json::json;

const POLICY: &str = r#"
guards:
  budget:
    max_daily_spend: 10.0
    warn_threshold: 0.9
    cost_estimator: {render_video: 6.0, web_search: 0.01}
  purchase:
    max_single_purchase: 100.0
    require_approval_above: 50.0
    blocked_categories: ["luxury"]
  deletion:
    allow_patterns: ["temp_*"]
    protected_resources: ["inbox"]
  rate_limit:
    max_calls_per_minute_per_function: 3
    max_identical_calls: 2
  scope:
    deny_functions: ["drop_*"]
    require_approval_functions: ["send_*"]
  sensitive_data:
    redact_on_modify: true
"#;

/// A name as an agent may write it: padded, cased, wide or with invisible characters.
fn disguise(name: &str, how: u8) -> String {
    match how % 8 {
        0 => name.to_owned(),
        1 => format!("{name} "),
        2 => format!("  {name}"),
        3 => name.to_uppercase(),
        4 => format!("\t{}\u{3000}", name.to_uppercase()),
        5 => name
            .chars()
            .map(|c| if c.is_ascii_lowercase() { char::from_u32(c as u32 + 0xFEE0).unwrap() } else { c })
            .collect(),
        6 => format!("\u{200b}{name}\u{feff}"),
        _ => format!("\u{00a0}{name}"),
    }
}

/// The `i`-th call, a second after the one before.
fn call(i: usize, name: &str, arg: u8) -> CallContext {
    let args = match arg % 6 {
        0 => json!({}),
        1 => json!({"amount": 60, "category": "books"}),
        2 => json!({"resource_id": "temp_1"}),
        3 => json!({"body": "SSN 123-45-6789"}),
        4 => json!({"q": "same"}),
        _ => json!({"resource_id": "inbox", "amount": 500}),
    };
    CallContext::new(name)
        .with_call_id(format!("c{i}"))
        .with_timestamp(Timestamp::from_secs(1_795_003_200 + i64::try_from(i).unwrap()))
        .with_session("s")
        .with_agent("a")
        .with_arguments(args)
        .unwrap()
}

fn engine() -> Engine {
    let policy = PolicyLoader::new().load_str(POLICY, "p.yaml").unwrap();
    let clock = ReplayClock::new(Timestamp::EPOCH);
    policy.engine_builder().clock(clock).build().and_then(|e| policy.apply_enabled(e)).unwrap()
}

/// The outcomes of `calls` streamed through `engine`.
fn streamed(engine: &Engine, calls: Vec<CallContext>) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    engine
        .evaluate_stream(calls.into_iter().map(Ok::<_, ()>), |o| {
            outcomes.push(o.unwrap());
            ControlFlow::Continue(())
        })
        .unwrap();
    outcomes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prepared_and_plain_evaluations_decide_alike(
        calls in prop::collection::vec((0usize..7, any::<u8>(), 0u8..6), 1..24),
    ) {
        const NAMES: [&str; 7] =
            ["render_video", "fetch", "buy_item", "delete_file", "drop_table", "send_email", "web_search"];
        let calls: Vec<CallContext> =
            calls.into_iter().enumerate().map(|(i, (name, how, arg))| call(i, &disguise(NAMES[name], how), arg)).collect();
        let (stream, plain) = (engine(), engine());
        let streamed = streamed(&stream, calls.clone());
        let summary = |o: &Outcome| -> Vec<(String, String, String)> {
            o.decisions().iter().map(|d| (d.guard().to_owned(), d.kind().to_string(), d.reason().to_owned())).collect()
        };
        for (a, c) in streamed.iter().zip(calls) {
            let name = c.function_name.clone();
            let b = plain.evaluate_blocking(c);
            prop_assert_eq!(summary(a), summary(&b), "{:?}", name);
            prop_assert_eq!(a.modified_arguments(), b.modified_arguments());
        }
    }
}

/// The bypass this test stands for: a padded name was charged the default cost instead of its
/// price, so three 6.00 renders passed a 10.00 budget.
#[test]
fn a_padded_name_is_priced_and_counted_as_the_plain_one() {
    let calls = ["render_video ", " render_video", "RENDER_VIDEO\u{3000}"].into_iter().enumerate();
    let outcomes = streamed(&engine(), calls.map(|(i, name)| call(i, name, 0)).collect());
    let decisions: Vec<String> = outcomes.iter().map(|o| o.decision().to_string()).collect();
    assert_eq!(decisions, ["allow", "deny", "deny"], "6.00 fits 10.00 once");
}
