//! The `async-openai` conversions: its response message, its stream chunks and its Responses
//! output items are guarded like our own types.

#![cfg(feature = "async-openai")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use async_openai::types::chat::{
    ChatCompletionRequestMessage, CreateChatCompletionResponse, CreateChatCompletionStreamResponse,
};
use async_openai::types::responses::OutputItem;
use halt_core::{Call, Decision, Guard, GuardError, async_trait};
use halt_engine::Engine;
use halt_openai::{ToolCallAssembler, ToolGuard, Verdict};
use serde_json::Value;

#[derive(Debug)]
struct NoDeletes;

#[async_trait]
impl Guard for NoDeletes {
    fn name(&self) -> &str {
        "no_deletes"
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        Ok(if call.function().starts_with("delete_") { Decision::deny("no deletes") } else { Decision::allow("ok") })
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn guard() -> ToolGuard {
    ToolGuard::new(Engine::builder().guard(NoDeletes).build().unwrap())
}

#[tokio::test]
async fn their_types_are_guarded_like_ours() {
    let response: CreateChatCompletionResponse = serde_json::from_str(&fixture("chat_parallel.json")).unwrap();
    let g = guard();
    let decisions = g.check_async_openai(&response.choices[0].message).await;
    assert_eq!(decisions.len(), 5);
    assert!(decisions[0].runs());
    assert!(matches!(decisions[1].verdict, Verdict::Blocked { .. }));
    let messages = g.async_openai_tool_messages(&decisions);
    assert_eq!(messages.len(), 1);
    let ChatCompletionRequestMessage::Tool(tool) = &messages[0] else { panic!("{messages:?}") };
    assert_eq!(tool.tool_call_id, "call_9fWm2pQr7T");

    let mut assembler = ToolCallAssembler::new();
    for line in fixture("chat_stream.sse").lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]") {
        let chunk: CreateChatCompletionStreamResponse = serde_json::from_str(line).unwrap();
        assembler.push_async_openai(&chunk);
    }
    let calls = assembler.finish();
    assert!(calls.iter().all(|c| c.complete));
    assert_eq!(calls[0].call.function.arguments, r#"{"query":"caf\u00e9 \"best\" list","limit":3}"#);

    let response: Value = serde_json::from_str(&fixture("responses_output.json")).unwrap();
    let items: Vec<OutputItem> =
        response["output"].as_array().unwrap().iter().filter_map(|i| serde_json::from_value(i.clone()).ok()).collect();
    let decisions = g.check_async_openai_output(&items).await;
    assert!(decisions.len() >= 2, "{decisions:?}");
    assert!(decisions[0].runs());
    assert!(matches!(decisions[1].verdict, Verdict::Blocked { .. }));
}
