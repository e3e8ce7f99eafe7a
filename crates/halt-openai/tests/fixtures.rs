//! Recorded responses of both APIs through a real engine: parallel calls, streamed deltas split
//! at awkward places, a refusal, calls with no arguments, each kind of invalid arguments; every
//! call id answered exactly once, and no sensitive value of a call in any answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::collections::BTreeMap;

use halt_core::{Call, Decision, Guard, GuardError, async_trait};
use halt_engine::{ApprovalResponse, Engine};
use halt_guards_sensitive::{SensitiveConfig, SensitiveGuard};
use halt_openai::{ChatCompletion, ChatCompletionChunk, ToolCallAssembler, ToolDecision, ToolGuard, Verdict};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Denies deletes; asks about purchases over 1,000.
#[derive(Debug)]
struct Policy;

#[async_trait]
impl Guard for Policy {
    fn name(&self) -> &str {
        "policy"
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let amount = call.arguments().get("amount").and_then(Value::as_f64).unwrap_or(0.0);
        Ok(if call.function().starts_with("delete_") {
            Decision::deny("deleting files is not allowed")
        } else if call.function().starts_with("purchase_") && amount > 1_000.0 {
            Decision::require_approval("a purchase over 1,000")
        } else {
            Decision::allow("ok")
        })
    }
}

fn guard() -> ToolGuard {
    let engine = Engine::builder()
        .guard(Policy)
        .guard(SensitiveGuard::new(SensitiveConfig::default()).unwrap())
        .build()
        .unwrap();
    ToolGuard::new(engine).agent("assistant").session("conv-42")
}

fn verdicts(decisions: &[ToolDecision]) -> Vec<(&str, &Verdict)> {
    decisions.iter().map(|d| (d.call_id.as_str(), &d.verdict)).collect()
}

/// Every call that does not run is answered exactly once, in order; no answer repeats a value of
/// the calls.
fn check_answers(guard: &ToolGuard, decisions: &[ToolDecision], secrets: &[&str]) {
    let messages = guard.tool_messages(decisions);
    let outputs = guard.function_call_outputs(decisions);
    let not_run: Vec<&str> = decisions.iter().filter(|d| !d.runs()).map(|d| d.call_id.as_str()).collect();
    let mut distinct = not_run.clone();
    distinct.dedup();
    let answered: Vec<&str> = messages.iter().map(|m| m.tool_call_id.as_deref().unwrap()).collect();
    assert_eq!(answered, distinct, "each call that did not run, answered once, in order");
    assert_eq!(outputs.len(), messages.len());
    for (m, o) in messages.iter().zip(&outputs) {
        assert_eq!(m.role, "tool");
        let text = m.content.as_ref().unwrap().as_str().unwrap();
        assert_eq!(o["output"], text);
        assert_eq!(o["type"], "function_call_output");
        for secret in secrets {
            assert!(!text.contains(secret), "an answer repeats {secret:?}: {text}");
        }
    }
}

#[tokio::test]
async fn parallel_calls_each_get_their_decision_in_order() {
    let response: ChatCompletion = serde_json::from_str(&fixture("chat_parallel.json")).unwrap();
    let g = guard();
    let decisions = g.check_message(&response.choices[0].message).await;
    let v = verdicts(&decisions);
    assert_eq!(v.len(), 5);
    assert!(matches!(v[0], ("call_lQ8vXxB2k1", Verdict::Run { .. })));
    assert_eq!(v[1], ("call_9fWm2pQr7T", &Verdict::Blocked { reasons: vec!["deleting files is not allowed".into()] }));
    assert!(matches!(v[2], ("call_Zp3nH6yUc0", Verdict::Blocked { .. })), "the SSN and card are denied");
    assert_eq!(decisions[3].arguments(), Some(&serde_json::Map::new()), "no arguments: an empty object");
    assert_eq!(v[4], ("call_R7t1nP0qXa", &Verdict::AwaitingApproval { approval_id: "call_R7t1nP0qXa".into() }));
    assert_eq!(decisions[0].arguments().unwrap()["location"], "Paris, France");
    check_answers(&g, &decisions, &["4111 1111 1111 1111", "123-45-6789", "cfo@example.com", "report.csv"]);
    let waiting = &g.tool_messages(&decisions)[2];
    assert!(waiting.content.as_ref().unwrap().as_str().unwrap().contains("approval call_R7t1nP0qXa"));
}

#[tokio::test]
async fn invalid_arguments_are_refused_each_with_its_reason_never_read_as_empty() {
    let response: ChatCompletion = serde_json::from_str(&fixture("chat_invalid.json")).unwrap();
    let g = guard();
    let decisions = g.check_message(&response.choices[0].message).await;
    let reasons: BTreeMap<&str, String> = decisions
        .iter()
        .map(|d| {
            let r = match &d.verdict {
                Verdict::Invalid { reason } => reason.clone(),
                Verdict::Run { arguments } => format!("RUN {}", Value::Object(arguments.clone())),
                other => format!("{other:?}"),
            };
            (d.call_id.as_str(), r)
        })
        .collect();
    assert_eq!(reasons["call_notjson"], "its arguments are not valid JSON (line 1, column 1)");
    assert_eq!(reasons["call_array"], "its arguments must be a JSON object, not an array");
    assert_eq!(reasons["call_cut"], "its arguments are cut short: not complete JSON");
    assert_eq!(reasons["call_dupkey"], "its arguments repeat a key");
    assert_eq!(reasons["call_string"], "its arguments must be a JSON object, not a string");
    assert!(reasons["call_trailing"].starts_with("its arguments are not valid JSON"), "{}", reasons["call_trailing"]);
    assert_eq!(reasons["call_noargs"], "RUN {}", "an empty text is a call with no arguments");
    assert_eq!(reasons[""], "the call has no id");
    for d in decisions.iter().filter(|d| !d.runs()) {
        assert!(d.outcome.is_none(), "an invalid call never reaches the guards as `{{}}`");
    }
    check_answers(&g, &decisions, &["mallory", "Paris", "Par"]);
}

#[tokio::test]
async fn a_refusal_has_no_calls_and_needs_no_answer() {
    let response: ChatCompletion = serde_json::from_str(&fixture("chat_refusal.json")).unwrap();
    let message = &response.choices[0].message;
    assert!(message.refusal.as_deref().unwrap().starts_with("I'm sorry"));
    let g = guard();
    let decisions = g.check_message(message).await;
    assert!(decisions.is_empty());
    assert!(g.tool_messages(&decisions).is_empty());
}

fn chunks(name: &str) -> Vec<ChatCompletionChunk> {
    fixture(name)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn streamed_calls_are_assembled_across_awkward_splits_and_guarded() {
    let mut assembler = ToolCallAssembler::new();
    for c in chunks("chat_stream.sse") {
        assembler.push(&c);
    }
    let calls = assembler.finish();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.complete));
    assert_eq!(calls[0].call.function.arguments, r#"{"query":"caf\u00e9 \"best\" list","limit":3}"#);
    let g = guard();
    let decisions = g.check_assembled(&calls).await;
    assert_eq!(decisions[0].arguments().unwrap()["query"], "café \"best\" list");
    assert!(matches!(decisions[1].verdict, Verdict::Blocked { .. }));
    check_answers(&g, &decisions, &["/tmp/old.log"]);
}

#[tokio::test]
async fn a_stream_cut_short_refuses_its_calls() {
    let mut assembler = ToolCallAssembler::new();
    for c in chunks("chat_stream_cut.sse") {
        assembler.push(&c);
    }
    let calls = assembler.finish();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| !c.complete));
    let g = guard();
    let decisions = g.check_assembled(&calls).await;
    for d in &decisions {
        assert_eq!(d.verdict, Verdict::Invalid { reason: "the stream ended before the call was complete".into() });
    }
    check_answers(&g, &decisions, &[]);
}

#[tokio::test]
async fn responses_function_calls_are_matched_to_their_call_ids() {
    let response: Value = serde_json::from_str(&fixture("responses_output.json")).unwrap();
    let output = response["output"].as_array().unwrap();
    let g = guard();
    let decisions = g.check_response_output(output).await;
    let ids: Vec<&str> = decisions.iter().map(|d| d.call_id.as_str()).collect();
    assert_eq!(ids, ["call_unLAR8MvFNptuiZK6K6HCy5k", "call_O7KPZfRdcNpEXgWh3xqkkv2A", "call_badargs"]);
    assert!(decisions[0].runs());
    assert!(matches!(decisions[1].verdict, Verdict::Blocked { .. }));
    assert!(matches!(decisions[2].verdict, Verdict::Invalid { .. }));
    let outputs = g.function_call_outputs(&decisions);
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[0]["call_id"], "call_O7KPZfRdcNpEXgWh3xqkkv2A");
    check_answers(&g, &decisions, &["/home/user/notes.txt"]);

    // An item that is not even well formed is refused and answered, not forgotten.
    let odd = [json!({"type": "function_call", "call_id": "call_x", "name": "f", "arguments": {"a": 1}})];
    let d = g.check_response_output(&odd).await;
    assert_eq!(d.len(), 1);
    assert!(matches!(d[0].verdict, Verdict::Invalid { .. }));
}

#[tokio::test]
async fn calls_sharing_an_id_are_refused_and_answered_once() {
    let message = json!({"role": "assistant", "tool_calls": [
        {"id": "call_same", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
        {"id": "call_same", "type": "function", "function": {"name": "delete_file", "arguments": "{}"}}
    ]});
    let g = guard();
    let decisions = g.check_message(&serde_json::from_value(message).unwrap()).await;
    assert!(decisions.iter().all(|d| !d.runs()));
    assert_eq!(g.tool_messages(&decisions).len(), 1);
}

#[tokio::test]
async fn a_redaction_is_what_runs_and_held_approvals_resolve_by_their_id() {
    let redact = SensitiveConfig { redact_on_modify: true, ..SensitiveConfig::default() };
    let engine = Engine::builder().guard(Policy).guard(SensitiveGuard::new(redact).unwrap()).build().unwrap();
    let g = ToolGuard::new(engine.clone());
    let d = g.check("call_1", "send_email", r#"{"to": "a@b.c", "body": "ssn 123-45-6789"}"#).await;
    let args = d.arguments().unwrap();
    assert!(!args["body"].as_str().unwrap().contains("123-45-6789"), "the redacted arguments run");
    let d = g.check("call_2", "purchase_item", r#"{"amount": 5000}"#).await;
    let Verdict::AwaitingApproval { approval_id } = &d.verdict else { panic!("{d:?}") };
    engine.resolve_approval(approval_id, &ApprovalResponse::refuse("cfo")).await.unwrap();
}
