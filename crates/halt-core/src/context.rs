//! The call an agent proposes: [`CallContext`].

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::Timestamp;

mod scan;

/// JSON object type used for arguments, metadata and details.
pub type JsonObject = Map<String, Value>;

/// One proposed tool call: what the agent wants to run, with what, on whose behalf.
///
/// `arguments` and `metadata` are JSON objects by construction; anything else is refused with a
/// [`ContextError`] when the context is built.
///
/// ```
/// use halt_core::CallContext;
/// use serde_json::json;
///
/// let ctx = CallContext::new("send_email")
///     .with_arguments(json!({"to": "a@example.com"}))?
///     .with_agent("mailer")
///     .with_session("s-1");
/// assert_eq!(ctx.arguments["to"], "a@example.com");
/// # Ok::<(), halt_core::ContextError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallContext {
    /// Identifies this call; generated when absent.
    #[serde(default = "generate_call_id")]
    pub call_id: String,
    /// The tool's name as the agent gave it.
    pub function_name: String,
    /// The tool's arguments.
    #[serde(default)]
    pub arguments: JsonObject,
    /// The agent proposing the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The conversation or run the call belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Seconds since the Unix epoch; the engine's clock fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    /// Facts set by the host application (never by the model), such as a tenant.
    #[serde(default)]
    pub metadata: JsonObject,
}

/// Why a call could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The input is not a JSON object.
    #[error("a call must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// A field has the wrong JSON type.
    #[error("`{field}` must be {expected}, got {got}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// The JSON type wanted.
        expected: &'static str,
        /// The JSON type found.
        got: &'static str,
    },
    /// A required field is missing.
    #[error("`{0}` is missing")]
    Missing(&'static str),
    /// The timestamp is negative, NaN or infinite.
    #[error("`timestamp` must be a non-negative finite number of seconds")]
    BadTimestamp,
}

impl CallContext {
    /// A call of `function_name` with no arguments and a fresh call id.
    #[must_use]
    pub fn new(function_name: impl Into<String>) -> Self {
        Self {
            call_id: generate_call_id(),
            function_name: function_name.into(),
            arguments: JsonObject::new(),
            agent_id: None,
            session_id: None,
            timestamp: None,
            metadata: JsonObject::new(),
        }
    }

    /// Sets the arguments.
    ///
    /// # Errors
    /// [`ContextError::WrongType`] when `arguments` is not a JSON object.
    pub fn with_arguments(mut self, arguments: Value) -> Result<Self, ContextError> {
        self.arguments = into_object("arguments", arguments)?;
        Ok(self)
    }

    /// Sets the metadata.
    ///
    /// # Errors
    /// [`ContextError::WrongType`] when `metadata` is not a JSON object.
    pub fn with_metadata(mut self, metadata: Value) -> Result<Self, ContextError> {
        self.metadata = into_object("metadata", metadata)?;
        Ok(self)
    }

    /// Sets the agent id.
    #[must_use]
    pub fn with_agent(mut self, agent_id: impl Into<String>) -> Self {
        self.agent_id = Some(agent_id.into());
        self
    }

    /// Sets the session id.
    #[must_use]
    pub fn with_session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Sets the call id.
    #[must_use]
    pub fn with_call_id(mut self, call_id: impl Into<String>) -> Self {
        self.call_id = call_id.into();
        self
    }

    /// Sets the timestamp the caller observed (used only by a replay clock).
    #[must_use]
    pub fn with_timestamp(mut self, t: Timestamp) -> Self {
        self.timestamp = Some(t.as_secs_f64());
        self
    }

    /// Builds a call from its JSON wire form (as read by `agenthalt eval` and the server):
    /// `{"call_id"?, "function_name", "arguments"?, "agent_id"?, "session_id"?, "timestamp"?, "metadata"?}`.
    ///
    /// `null` counts as absent. Unknown fields are ignored.
    ///
    /// # Errors
    /// A clear [`ContextError`] for every malformed field.
    pub fn from_json(value: Value) -> Result<Self, ContextError> {
        let Value::Object(obj) = value else {
            return Err(ContextError::NotAnObject(json_type(&value)));
        };
        let mut fields = Fields::default();
        for (name, value) in obj {
            fields.set(&name, value);
        }
        fields.build()
    }

    /// Builds a call from the text of its JSON wire form, as [`CallContext::from_json`] does
    /// from a parsed value, in one pass over the text (no intermediate value of the whole call).
    ///
    /// ```
    /// use halt_core::CallContext;
    ///
    /// let ctx = CallContext::from_json_str(r#"{"function_name": "search", "arguments": {"q": "x"}, "ui": [1]}"#)?;
    /// assert_eq!(ctx.arguments["q"], "x");
    /// assert!(CallContext::from_json_str("[]").is_err());
    /// # Ok::<(), halt_core::ParseCallError>(())
    /// ```
    ///
    /// # Errors
    /// [`ParseCallError::Json`] for text that is not JSON, [`ParseCallError::Call`] for JSON
    /// that is not a valid call.
    pub fn from_json_str(text: &str) -> Result<Self, ParseCallError> {
        match scan::fields(text) {
            Some(fields) => Ok(fields.build()?),
            // Not JSON, not an object, or nested too deep for the scan: the general path finds
            // the call, or what is wrong, with its message.
            None => Ok(Self::from_json(serde_json::from_str(text)?)?),
        }
    }

    /// The timestamp the caller supplied, if it is a valid time.
    #[must_use]
    pub fn caller_time(&self) -> Option<Timestamp> {
        self.timestamp.and_then(Timestamp::from_secs_f64)
    }
}

/// Why the text of a call could not be read: see [`CallContext::from_json_str`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseCallError {
    /// The text is not JSON.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is not a valid call.
    #[error(transparent)]
    Call(#[from] ContextError),
}

/// One field of a call's wire form as read.
#[derive(Default)]
enum Slot<T> {
    /// Absent, or `null`.
    #[default]
    Absent,
    /// A value of the type wanted.
    Got(T),
    /// A value of another type, named for the message.
    Wrong(&'static str),
}

impl<T> Slot<T> {
    /// The value, absent as `None`, or the error saying the field is `expected`.
    fn take(self, field: &'static str, expected: &'static str) -> Result<Option<T>, ContextError> {
        match self {
            Self::Absent => Ok(None),
            Self::Got(v) => Ok(Some(v)),
            Self::Wrong(got) => Err(ContextError::WrongType { field, expected, got }),
        }
    }
}

/// Which field of a call a key of its wire form names.
#[derive(Clone, Copy)]
enum Field {
    FunctionName,
    CallId,
    AgentId,
    SessionId,
    Timestamp,
    Arguments,
    Metadata,
}

impl Field {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "function_name" => Self::FunctionName,
            "call_id" => Self::CallId,
            "agent_id" => Self::AgentId,
            "session_id" => Self::SessionId,
            "timestamp" => Self::Timestamp,
            "arguments" => Self::Arguments,
            "metadata" => Self::Metadata,
            _ => return None,
        })
    }
}

/// The fields of a call's wire form, typed as read (the text scan sets the usual ones directly;
/// the rest, and the general path, go through [`Fields::set`]).
#[derive(Default)]
struct Fields {
    function_name: Slot<String>,
    call_id: Slot<String>,
    agent_id: Slot<String>,
    session_id: Slot<String>,
    timestamp: Slot<serde_json::Number>,
    arguments: Slot<JsonObject>,
    metadata: Slot<JsonObject>,
}

impl Fields {
    /// Keeps `value` as the field `name`, if it is one (`null` counts as absent).
    fn set(&mut self, name: &str, value: Value) {
        if let Some(field) = Field::of(name) {
            self.set_field(field, value);
        }
    }

    fn set_field(&mut self, field: Field, value: Value) {
        fn slot<T>(value: Value, want: impl FnOnce(Value) -> Result<T, Value>) -> Slot<T> {
            match value {
                Value::Null => Slot::Absent,
                v => want(v).map_or_else(|other| Slot::Wrong(json_type(&other)), Slot::Got),
            }
        }
        let string = |v| match v {
            Value::String(s) => Ok(s),
            other => Err(other),
        };
        let object = |v| match v {
            Value::Object(o) => Ok(o),
            other => Err(other),
        };
        match field {
            Field::FunctionName => self.function_name = slot(value, string),
            Field::CallId => {
                self.call_id = slot(value, |v| match v {
                    Value::Number(n) => Ok(n.to_string()),
                    other => string(other),
                });
            }
            Field::AgentId => self.agent_id = slot(value, string),
            Field::SessionId => self.session_id = slot(value, string),
            Field::Timestamp => {
                self.timestamp = slot(value, |v| match v {
                    Value::Number(n) => Ok(n),
                    other => Err(other),
                });
            }
            Field::Arguments => self.arguments = slot(value, object),
            Field::Metadata => self.metadata = slot(value, object),
        }
    }

    fn build(self) -> Result<CallContext, ContextError> {
        let function_name =
            self.function_name.take("function_name", "a string")?.ok_or(ContextError::Missing("function_name"))?;
        let call_id = self.call_id.take("call_id", "a string")?.unwrap_or_else(generate_call_id);
        let agent_id = self.agent_id.take("agent_id", "a string")?;
        let session_id = self.session_id.take("session_id", "a string")?;
        let timestamp = match self.timestamp.take("timestamp", "a number")? {
            Some(n) => {
                let t = n.as_f64().ok_or(ContextError::BadTimestamp)?;
                Timestamp::from_secs_f64(t).ok_or(ContextError::BadTimestamp)?;
                Some(t)
            }
            None => None,
        };
        let arguments = self.arguments.take("arguments", "a JSON object")?.unwrap_or_default();
        let metadata = self.metadata.take("metadata", "a JSON object")?.unwrap_or_default();
        Ok(CallContext { call_id, function_name, arguments, agent_id, session_id, timestamp, metadata })
    }
}

fn into_object(field: &'static str, v: Value) -> Result<JsonObject, ContextError> {
    match v {
        Value::Object(o) => Ok(o),
        other => Err(wrong(field, "a JSON object", &other)),
    }
}

fn wrong(field: &'static str, expected: &'static str, got: &Value) -> ContextError {
    ContextError::WrongType { field, expected, got: json_type(got) }
}

/// The JSON type of a value, for messages.
#[must_use]
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A process-unique call id: `call-` + a random-looking prefix + a counter.
fn generate_call_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("call-{:08x}-{n}", prefix & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn from_json_reads_every_field() {
        let c = CallContext::from_json(json!({
            "call_id": "c1", "function_name": "f", "arguments": {"a": 1},
            "agent_id": "ag", "session_id": "s", "timestamp": 12.5, "metadata": {"tenant": "t"}
        }))
        .unwrap();
        assert_eq!(c.call_id, "c1");
        assert_eq!(c.arguments["a"], 1);
        assert_eq!(c.agent_id.as_deref(), Some("ag"));
        assert_eq!(c.caller_time(), Some(Timestamp::from_micros(12_500_000)));
        assert_eq!(c.metadata["tenant"], "t");
    }

    #[test]
    fn from_json_refuses_malformed_calls() {
        let cases = [
            (json!([1]), "a call must be a JSON object, got an array"),
            (json!({}), "`function_name` is missing"),
            (json!({"function_name": 3}), "`function_name` must be a string, got a number"),
            (json!({"function_name": "f", "arguments": [1]}), "`arguments` must be a JSON object, got an array"),
            (json!({"function_name": "f", "arguments": "x"}), "`arguments` must be a JSON object, got a string"),
            (json!({"function_name": "f", "metadata": 1}), "`metadata` must be a JSON object, got a number"),
            (json!({"function_name": "f", "timestamp": "now"}), "`timestamp` must be a number, got a string"),
            (
                json!({"function_name": "f", "timestamp": -1}),
                "`timestamp` must be a non-negative finite number of seconds",
            ),
            (json!({"function_name": "f", "agent_id": {}}), "`agent_id` must be a string, got an object"),
        ];
        for (input, msg) in cases {
            assert_eq!(CallContext::from_json(input.clone()).unwrap_err().to_string(), msg, "{input}");
        }
    }

    #[test]
    fn builder_refuses_non_object_arguments() {
        let err = CallContext::new("f").with_arguments(json!("x")).unwrap_err();
        assert_eq!(err.to_string(), "`arguments` must be a JSON object, got a string");
    }

    #[test]
    fn call_ids_are_unique() {
        let a = CallContext::new("f");
        let b = CallContext::new("f");
        assert_ne!(a.call_id, b.call_id);
    }

    #[test]
    fn from_json_str_reads_what_from_json_reads() {
        // Every text: the same call or the same message either way (generated ids aside).
        let texts = [
            r#"{"function_name": "f", "call_id": "c", "arguments": {"a": [1, {"b": null}]}, "metadata": {"t": 1}}"#,
            r#"{"function_name": "f", "agent_id": "a", "session_id": "s", "timestamp": 12.5, "ui": {"x": [1, 2]}}"#,
            r#"{"function_name": "f", "call_id": 42, "timestamp": 3}"#,
            r#"{"function_name": "f", "arguments": null, "metadata": null, "agent_id": null, "call_id": null}"#,
            r#"{"function_name": 1, "function_name": "last wins"}"#,
            r#"{"function_name": "first", "function_name": null}"#,
            r#"{"function_name": "f", "arguments": {"a": 1}, "arguments": {"b": 2}}"#,
            r#"{"function_name": "f", "arguments": [1]}"#,
            r#"{"function_name": "f", "metadata": "m"}"#,
            r#"{"function_name": "f", "timestamp": -1}"#,
            r#"{"function_name": "f", "timestamp": "now"}"#,
            r#"{"function_name": "f", "session_id": 7}"#,
            r#"{"function_name": "f", "call_id": true}"#,
            r#"{"arguments": {}}"#,
            r#"{"function_name": "f", "x": [1, 2"#,
            r#"{"function_name": "f"} trailing"#,
            r#"{"function_name": "f", "arguments": {"escaped": "key"}}"#,
            "[1, 2]",
            "\"text\"",
            "12",
            "null",
            "not json",
            "",
        ];
        for text in texts {
            let slow = serde_json::from_str::<Value>(text)
                .map_err(|e| format!("invalid JSON: {e}"))
                .and_then(|v| CallContext::from_json(v).map_err(|e| e.to_string()));
            let fast = CallContext::from_json_str(text).map_err(|e| e.to_string());
            match (slow, fast) {
                (Ok(mut slow), Ok(fast)) => {
                    if slow.call_id.starts_with("call-") {
                        slow.call_id.clone_from(&fast.call_id);
                    }
                    assert_eq!(slow, fast, "{text}");
                }
                (slow, fast) => assert_eq!(slow.err(), fast.err(), "{text}"),
            }
        }
        let escaped = CallContext::from_json_str(texts[16]).unwrap();
        assert_eq!(escaped.arguments["escaped"], "key");
    }
}
