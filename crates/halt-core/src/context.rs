//! The call an agent proposes: [`CallContext`].

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::Timestamp;

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
    /// A name or id is longer than [`MAX_NAME_BYTES`].
    #[error("`{0}` is longer than {MAX_NAME_BYTES} bytes")]
    TooLong(&'static str),
}

/// The longest function name, agent, session or call id accepted, in bytes: names are
/// normalised and compared on every call, so a name of megabytes is refused at once.
pub const MAX_NAME_BYTES: usize = 256;

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
    /// from a parsed value. An object anywhere in the text that repeats a key is refused: the
    /// tool's own parser might keep the other value than the one the guards saw.
    ///
    /// ```
    /// use halt_core::CallContext;
    ///
    /// let ctx = CallContext::from_json_str(r#"{"function_name": "search", "arguments": {"q": "x"}, "ui": [1]}"#)?;
    /// assert_eq!(ctx.arguments["q"], "x");
    /// assert!(CallContext::from_json_str("[]").is_err());
    /// assert!(CallContext::from_json_str(r#"{"function_name": "f", "arguments": {"to": "a", "to": "b"}}"#).is_err());
    /// # Ok::<(), halt_core::ParseCallError>(())
    /// ```
    ///
    /// # Errors
    /// [`ParseCallError::Json`] for text that is not JSON, [`ParseCallError::Call`] for JSON
    /// that is not a valid call.
    pub fn from_json_str(text: &str) -> Result<Self, ParseCallError> {
        if !text.trim_start().starts_with('{') {
            // Not an object: the same message as `from_json` gives.
            let UniqueKeys(value) = serde_json::from_str(text)?;
            return Ok(Self::from_json(value)?);
        }
        let fields: Fields = serde_json::from_str(text)?;
        Ok(fields.build()?)
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

/// Reads a call's arguments from their JSON text, as a model or a client sends them (an OpenAI
/// tool call's `arguments`, an MCP `tools/call`'s): exactly one JSON object, with no key
/// repeated anywhere in it. Text that is not JSON, JSON that is not an object, and a repeated key
/// are each an error: never an empty object in their place.
///
/// ```
/// use halt_core::context::parse_arguments;
///
/// assert_eq!(parse_arguments(r#"{"to": "a@b.c"}"#)?["to"], "a@b.c");
/// assert!(parse_arguments(r#"{"to": "a@b.c""#).is_err());
/// assert!(parse_arguments("[1, 2]").is_err());
/// assert!(parse_arguments(r#"{"to": "x", "to": "y"}"#).is_err());
/// # Ok::<(), halt_core::ParseCallError>(())
/// ```
///
/// # Errors
/// [`ParseCallError::Json`] for text that is not JSON (or repeats a key), and
/// [`ParseCallError::Call`] for JSON that is not an object.
pub fn parse_arguments(text: &str) -> Result<JsonObject, ParseCallError> {
    let UniqueKeys(value) = serde_json::from_str(text)?;
    Ok(into_object("arguments", value)?)
}

/// One field of a call's wire form as read.
#[derive(Default)]
enum Given<T> {
    /// Absent, or `null`.
    #[default]
    Absent,
    /// A value of the type wanted.
    Got(T),
    /// A value of another type, named for the message.
    Wrong(&'static str),
}

impl<T> Given<T> {
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

/// The fields of a call's wire form, typed as read.
#[derive(Default)]
struct Fields {
    function_name: Given<String>,
    call_id: Given<String>,
    agent_id: Given<String>,
    session_id: Given<String>,
    timestamp: Given<serde_json::Number>,
    arguments: Given<JsonObject>,
    metadata: Given<JsonObject>,
}

impl<'de> Deserialize<'de> for Fields {
    /// The fields of a call's JSON object, read straight from the text (no value of the whole
    /// call): each known field as a value whose objects repeat no key, the others skipped. A
    /// known field given twice is refused.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;

        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Fields;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a call object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Fields::default();
                let mut seen = 0u8;
                while let Some(FieldKey(field)) = map.next_key()? {
                    let Some(field) = field else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        continue;
                    };
                    let bit = 1 << field as u8;
                    if seen & bit != 0 {
                        return Err(serde::de::Error::custom("an object repeats a key"));
                    }
                    seen |= bit;
                    let UniqueKeys(value) = map.next_value()?;
                    fields.set_field(field, value);
                }
                Ok(fields)
            }
        }

        d.deserialize_map(Visit)
    }
}

/// A key of a call's object: the field it names, if any (read without copying it).
struct FieldKey(Option<Field>);

impl<'de> Deserialize<'de> for FieldKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;

        impl serde::de::Visitor<'_> for Visit {
            type Value = FieldKey;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E>(self, v: &str) -> Result<FieldKey, E> {
                Ok(FieldKey(Field::of(v)))
            }
        }

        d.deserialize_str(Visit)
    }
}

impl Fields {
    /// Keeps `value` as the field `name`, if it is one (`null` counts as absent).
    fn set(&mut self, name: &str, value: Value) {
        if let Some(field) = Field::of(name) {
            self.set_field(field, value);
        }
    }

    fn set_field(&mut self, field: Field, value: Value) {
        fn slot<T>(value: Value, want: impl FnOnce(Value) -> Result<T, Value>) -> Given<T> {
            match value {
                Value::Null => Given::Absent,
                v => want(v).map_or_else(|other| Given::Wrong(json_type(&other)), Given::Got),
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
        for (field, value) in [
            ("function_name", Some(&function_name)),
            ("call_id", Some(&call_id)),
            ("agent_id", agent_id.as_ref()),
            ("session_id", session_id.as_ref()),
        ] {
            if value.is_some_and(|v| v.len() > MAX_NAME_BYTES) {
                return Err(ContextError::TooLong(field));
            }
        }
        let arguments = self.arguments.take("arguments", "a JSON object")?.unwrap_or_default();
        let metadata = self.metadata.take("metadata", "a JSON object")?.unwrap_or_default();
        Ok(CallContext { call_id, function_name, arguments, agent_id, session_id, timestamp, metadata })
    }
}

/// A JSON value in which no object repeats a key: serde_json keeps the last of two silently,
/// while another parser may keep the first.
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        UniqueKeys::deserialize(d).map(|UniqueKeys(v)| v)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(UniqueKeys(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = JsonObject::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueKeys(value) = map.next_value()?;
            if object.insert(key, value).is_some() {
                // The key itself is not shown: it is the caller's text, and may be a secret.
                return Err(serde::de::Error::custom("an object repeats a key"));
            }
        }
        Ok(Value::Object(object))
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
    fn a_repeated_key_anywhere_is_refused() {
        for text in [
            r#"{"function_name": 1, "function_name": "last wins"}"#,
            r#"{"function_name": "first", "function_name": null}"#,
            r#"{"function_name": "f", "arguments": {"a": 1}, "arguments": {"b": 2}}"#,
            r#"{"function_name": "f", "arguments": {"to": "a@corp.test", "to": "eve@evil.test"}}"#,
            r#"{"function_name": "f", "arguments": {"x": [{"k": 1, "k": 2}]}}"#,
            r#"{"function_name": "f", "metadata": {"tenant": "a", "tenant": "b"}}"#,
        ] {
            let e = CallContext::from_json_str(text).unwrap_err().to_string();
            assert!(e.contains("an object repeats a key"), "{text}: {e}");
            assert!(!e.contains("eve@"), "{e}");
        }
    }

    #[test]
    fn names_longer_than_the_limit_are_refused_before_any_work() {
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        for field in ["function_name", "agent_id", "session_id", "call_id"] {
            let mut call = json!({"function_name": "f"});
            call[field] = json!(long);
            let e = CallContext::from_json(call).unwrap_err().to_string();
            assert_eq!(e, format!("`{field}` is longer than {MAX_NAME_BYTES} bytes"));
        }
        let fits = json!({"function_name": "a".repeat(MAX_NAME_BYTES)});
        assert!(CallContext::from_json(fits).is_ok());
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
        let escaped = CallContext::from_json_str(texts[13]).unwrap();
        assert_eq!(escaped.arguments["escaped"], "key");
    }
}
