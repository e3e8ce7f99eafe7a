//! AgentHalt for OpenAI-style tool calls: every tool call the model proposes goes through the
//! engine before the application runs it, in order, parallel and streamed calls included.
//! Arguments that are not a JSON object are refused, never read as `{}`; every call that does not
//! run gets its answer for the model (a `tool` message, or a `function_call_output` item).
//!
//! ```
//! use halt_core::{Call, Decision, Guard, GuardError, async_trait};
//! use halt_engine::Engine;
//! use halt_openai::{ChatCompletion, ToolGuard};
//!
//! #[derive(Debug)]
//! struct NoDeletes;
//! #[async_trait]
//! impl Guard for NoDeletes {
//!     fn name(&self) -> &str { "no_deletes" }
//!     async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
//!         Ok(if call.function().starts_with("delete_") { Decision::deny("deleting is not allowed") } else { Decision::allow("ok") })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let response: ChatCompletion = serde_json::from_str(r#"{"id": "chatcmpl-1", "choices": [{"index": 0,
//!   "message": {"role": "assistant", "content": null, "tool_calls": [
//!     {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
//!     {"id": "call_2", "type": "function", "function": {"name": "delete_file", "arguments": "{\"path\": \"/etc\"}"}}]},
//!   "finish_reason": "tool_calls"}]}"#)?;
//!
//! let guard = ToolGuard::new(Engine::builder().guard(NoDeletes).build()?).agent("assistant");
//! let decisions = guard.check_message(&response.choices[0].message).await;
//! assert!(decisions[0].runs());        // run get_weather with decisions[0].arguments()
//! assert!(!decisions[1].runs());
//! let answers = guard.tool_messages(&decisions); // one `tool` message for call_2
//! assert_eq!(answers[0].tool_call_id.as_deref(), Some("call_2"));
//! # Ok(()) }
//! ```

#[cfg(feature = "async-openai")]
mod async_openai_types;
mod chat;
mod guard;
mod responses;

pub use chat::{
    Assembled, ChatCompletion, ChatCompletionChunk, ChatMessage, Choice, ChunkChoice, Delta, FunctionCall,
    FunctionDelta, ToolCall, ToolCallAssembler, ToolCallDelta,
};
pub use guard::{Texts, ToolDecision, ToolGuard, Verdict};
pub use responses::{FunctionCallItem, function_call_output};
