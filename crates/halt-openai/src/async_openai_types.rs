//! Conversions from and to the `async-openai` crate's types (feature `async-openai`), so that
//! its users guard their calls without touching JSON.

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls, ChatCompletionRequestMessage,
    ChatCompletionRequestToolMessage, ChatCompletionRequestToolMessageContent, ChatCompletionResponseMessage,
    CreateChatCompletionStreamResponse,
};
use async_openai::types::responses::OutputItem;
use serde_json::Value;

use crate::chat::{ChatCompletionChunk, FunctionCall, ToolCall, ToolCallAssembler};
use crate::guard::{ToolDecision, ToolGuard};

impl From<&ChatCompletionMessageToolCall> for ToolCall {
    fn from(c: &ChatCompletionMessageToolCall) -> Self {
        Self {
            id: c.id.clone(),
            kind: "function".to_owned(),
            function: FunctionCall { name: c.function.name.clone(), arguments: c.function.arguments.clone() },
        }
    }
}

impl From<&ChatCompletionMessageToolCalls> for ToolCall {
    /// A custom tool's free-text input is guarded as its one argument, `input`.
    fn from(c: &ChatCompletionMessageToolCalls) -> Self {
        match c {
            ChatCompletionMessageToolCalls::Function(f) => f.into(),
            ChatCompletionMessageToolCalls::Custom(c) => Self {
                id: c.id.clone(),
                kind: "custom".to_owned(),
                function: FunctionCall {
                    name: c.custom_tool.name.clone(),
                    arguments: serde_json::json!({"input": c.custom_tool.input}).to_string(),
                },
            },
        }
    }
}

impl ToolGuard {
    /// Evaluates the tool calls of an `async-openai` response message, in order.
    pub async fn check_async_openai(&self, message: &ChatCompletionResponseMessage) -> Vec<ToolDecision> {
        let calls: Vec<ToolCall> = message.tool_calls.iter().flatten().map(ToolCall::from).collect();
        self.check_tool_calls(&calls).await
    }

    /// Evaluates the `function_call` items of an `async-openai` Responses output, in order.
    pub async fn check_async_openai_output(&self, output: &[OutputItem]) -> Vec<ToolDecision> {
        let items: Vec<Value> = output.iter().filter_map(|item| serde_json::to_value(item).ok()).collect();
        self.check_response_output(&items).await
    }

    /// The `tool` messages for the calls that do not run, as `async-openai` request messages.
    #[must_use]
    pub fn async_openai_tool_messages(&self, decisions: &[ToolDecision]) -> Vec<ChatCompletionRequestMessage> {
        self.tool_messages(decisions)
            .into_iter()
            .map(|m| {
                let text = m.content.and_then(|c| c.as_str().map(str::to_owned)).unwrap_or_default();
                ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
                    content: ChatCompletionRequestToolMessageContent::Text(text),
                    tool_call_id: m.tool_call_id.unwrap_or_default(),
                })
            })
            .collect()
    }
}

impl ToolCallAssembler {
    /// Adds one `async-openai` stream chunk.
    pub fn push_async_openai(&mut self, chunk: &CreateChatCompletionStreamResponse) {
        // The same wire format: through its JSON, every field the assembler reads is kept.
        match serde_json::to_value(chunk).and_then(serde_json::from_value::<ChatCompletionChunk>) {
            Ok(ours) => self.push(&ours),
            Err(_) => self.broken = true,
        }
    }
}
