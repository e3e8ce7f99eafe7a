//! Chat Completions: the assistant message's `tool_calls`, and the assembler that builds them
//! from streamed chunks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A list that may come as `null` (as some clients and servers write an empty one).
fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A tool call the model proposes (`message.tool_calls[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, which its `tool` message answers.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".to_owned()
}

/// The function of a [`ToolCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Its name.
    pub name: String,
    /// Its arguments: JSON text, as the model wrote it (possibly not JSON at all).
    #[serde(default)]
    pub arguments: String,
}

/// A chat message, as much of it as tool calls concern.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `assistant`, `tool`, `user`, `system`, …
    pub role: String,
    /// Its content (text, or parts), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// The tool calls the assistant proposes.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The model's refusal, when it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

impl ChatMessage {
    /// A `tool` message answering `call_id` with `text`.
    #[must_use]
    pub fn tool(call_id: &str, text: String) -> Self {
        Self {
            role: "tool".to_owned(),
            content: Some(Value::String(text)),
            tool_call_id: Some(call_id.to_owned()),
            ..Self::default()
        }
    }
}

/// One choice of a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Its index.
    #[serde(default)]
    pub index: u32,
    /// The message.
    pub message: ChatMessage,
    /// Why the model stopped (`tool_calls`, `stop`, `length`, …).
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// A Chat Completions response, as much of it as tool calls concern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// Its id.
    #[serde(default)]
    pub id: String,
    /// The choices.
    pub choices: Vec<Choice>,
}

/// A streamed chunk (`chat.completion.chunk`), as much of it as tool calls concern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The choices' deltas.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
}

/// One choice's delta in a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// The choice.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: Delta,
    /// Set on the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// What a chunk adds to a message.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Delta {
    /// Text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Pieces of tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
    /// A piece of a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// A piece of a tool call: the first piece of each carries its id and name, the others pieces of
/// its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which tool call of the message.
    pub index: u32,
    /// Its id (first piece).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function` (first piece).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name and argument pieces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDelta>,
}

/// A piece of a tool call's function.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FunctionDelta {
    /// The name (first piece).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A piece of the arguments' text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// A tool call put together from a stream, and whether the stream finished it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// The call.
    pub call: ToolCall,
    /// False when the stream ended before the model finished the message (its arguments may be
    /// cut short): such a call is refused, whatever its arguments look like.
    pub complete: bool,
}

/// Builds complete tool calls from streamed chunks (`delta.tool_calls` pieces, by index), so that
/// streamed calls are guarded like any other. Feed it every chunk of one choice, then take the
/// calls.
#[derive(Debug, Clone, Default)]
pub struct ToolCallAssembler {
    calls: BTreeMap<u32, ToolCall>,
    finished: bool,
    /// A chunk could not be read: what was built may miss pieces, so no call is complete.
    pub(crate) broken: bool,
    refusal: String,
}

/// The most bytes of arguments one streamed call may have.
const MAX_ARGUMENT_BYTES: usize = 1 << 24;

impl ToolCallAssembler {
    /// A new, empty assembler.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk (of choice 0: other choices are another conversation).
    pub fn push(&mut self, chunk: &ChatCompletionChunk) {
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            self.push_delta(&choice.delta);
            if choice.finish_reason.is_some() {
                self.finished = true;
            }
        }
    }

    /// Adds one delta.
    pub fn push_delta(&mut self, delta: &Delta) {
        if let Some(r) = &delta.refusal {
            self.refusal.push_str(r);
        }
        for piece in &delta.tool_calls {
            let call = self.calls.entry(piece.index).or_insert_with(|| ToolCall {
                id: String::new(),
                kind: function_kind(),
                function: FunctionCall { name: String::new(), arguments: String::new() },
            });
            if let Some(id) = &piece.id {
                call.id.clone_from(id);
            }
            if let Some(f) = &piece.function {
                if let Some(name) = &f.name {
                    call.function.name.push_str(name);
                }
                if let Some(args) = &f.arguments {
                    if call.function.arguments.len() + args.len() <= MAX_ARGUMENT_BYTES {
                        call.function.arguments.push_str(args);
                    } else {
                        self.broken = true;
                    }
                }
            }
        }
    }

    /// The model's refusal, if it refused.
    #[must_use]
    pub fn refusal(&self) -> Option<&str> {
        (!self.refusal.is_empty()).then_some(self.refusal.as_str())
    }

    /// The tool calls, in index order; each marked complete only if the stream finished.
    #[must_use]
    pub fn finish(self) -> Vec<Assembled> {
        let complete = self.finished && !self.broken;
        self.calls.into_values().map(|call| Assembled { call, complete }).collect()
    }
}
