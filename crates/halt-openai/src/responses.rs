//! The Responses API: `function_call` output items, and the `function_call_output` items that
//! answer them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A `function_call` output item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCallItem {
    /// The item's own id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The id its `function_call_output` answers.
    pub call_id: String,
    /// The function.
    pub name: String,
    /// Its arguments: JSON text, as the model wrote it.
    #[serde(default)]
    pub arguments: String,
}

impl FunctionCallItem {
    /// The `function_call` items of a response's `output`, in order (other items are skipped;
    /// a `function_call` item that is not well formed is kept with what could be read, so that
    /// it is refused and answered rather than forgotten).
    #[must_use]
    pub fn from_output(output: &[Value]) -> Vec<Self> {
        output
            .iter()
            .filter(|item| item.get("type").and_then(Value::as_str) == Some("function_call"))
            .map(|item| {
                serde_json::from_value(item.clone()).unwrap_or_else(|_| Self {
                    id: item.get("id").and_then(Value::as_str).map(str::to_owned),
                    call_id: item.get("call_id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    name: item.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    // Arguments that are not text are not arguments: refused as such.
                    arguments: "\u{0}".to_owned(),
                })
            })
            .collect()
    }
}

/// The answer to a function call: `{"type": "function_call_output", "call_id", "output"}`.
#[must_use]
pub fn function_call_output(call_id: &str, output: &str) -> Value {
    serde_json::json!({"type": "function_call_output", "call_id": call_id, "output": output})
}
