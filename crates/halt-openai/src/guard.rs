//! [`ToolGuard`]: evaluates the model's tool calls, in order, and writes the answers for the
//! calls that do not run.

use std::collections::BTreeMap;

use halt_core::context::parse_arguments;
use halt_core::{CallContext, JsonObject, Outcome, ParseCallError};
use halt_engine::Engine;
use serde_json::Value;

use crate::chat::{Assembled, ChatMessage, ToolCall};
use crate::responses::{FunctionCallItem, function_call_output};

/// What to do with one tool call.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Run it, with these arguments (a guard's changes, such as redactions, applied).
    Run {
        /// The arguments to run it with.
        arguments: JsonObject,
    },
    /// A guard denied it.
    Blocked {
        /// The guards' reasons (never a value of the call).
        reasons: Vec<String>,
    },
    /// A human must approve it first: answer the model that it waits, and decide with
    /// `Engine::resolve_approval(approval_id, ..)`.
    AwaitingApproval {
        /// The approval's id (the call's id).
        approval_id: String,
    },
    /// A human refused it (or nobody answered in time).
    ApprovalRefused,
    /// It was not evaluated: its arguments are not a JSON object, were cut short, or its id is
    /// missing or shared.
    Invalid {
        /// Why.
        reason: String,
    },
}

/// One tool call's decision.
#[derive(Debug, Clone)]
pub struct ToolDecision {
    /// The call's id (what its answer must name).
    pub call_id: String,
    /// The function.
    pub name: String,
    /// What to do.
    pub verdict: Verdict,
    /// The engine's outcome (none for an invalid call).
    pub outcome: Option<Outcome>,
}

impl ToolDecision {
    /// Whether the call runs.
    #[must_use]
    pub fn runs(&self) -> bool {
        matches!(self.verdict, Verdict::Run { .. })
    }

    /// The arguments to run it with, if it runs.
    #[must_use]
    pub fn arguments(&self) -> Option<&JsonObject> {
        match &self.verdict {
            Verdict::Run { arguments } => Some(arguments),
            _ => None,
        }
    }
}

/// The texts the model is told about calls that did not run. `{reasons}`, `{reason}` and
/// `{approval_id}` are replaced; nothing else of the call is ever put in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texts {
    /// A guard denied the call.
    pub blocked: String,
    /// The call waits for a human.
    pub awaiting_approval: String,
    /// A human refused it.
    pub approval_refused: String,
    /// It was not evaluated.
    pub invalid: String,
}

impl Default for Texts {
    fn default() -> Self {
        Self {
            blocked: "This tool call was blocked by policy and did not run: {reasons}".into(),
            awaiting_approval: "This tool call needs a person's approval and has not run (approval {approval_id}). Do not retry it; it runs once approved.".into(),
            approval_refused: "A person did not approve this tool call; it did not run.".into(),
            invalid: "This tool call was not run: {reason}.".into(),
        }
    }
}

/// Evaluates OpenAI-style tool calls through an engine.
#[derive(Debug, Clone)]
pub struct ToolGuard {
    engine: Engine,
    agent_id: Option<String>,
    session_id: Option<String>,
    texts: Texts,
}

impl ToolGuard {
    /// A guard evaluating through `engine`.
    #[must_use]
    pub fn new(engine: Engine) -> Self {
        Self { engine, agent_id: None, session_id: None, texts: Texts::default() }
    }

    /// The agent the calls come from.
    #[must_use]
    pub fn agent(mut self, agent_id: impl Into<String>) -> Self {
        self.agent_id = Some(agent_id.into());
        self
    }

    /// The session (conversation) the calls belong to.
    #[must_use]
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// The texts told to the model.
    #[must_use]
    pub fn texts(mut self, texts: Texts) -> Self {
        self.texts = texts;
        self
    }

    /// Evaluates one call: `arguments` is the JSON text the model wrote.
    pub async fn check(&self, call_id: &str, name: &str, arguments: &str) -> ToolDecision {
        let invalid = |reason: String| ToolDecision {
            call_id: call_id.to_owned(),
            name: name.to_owned(),
            verdict: Verdict::Invalid { reason },
            outcome: None,
        };
        if call_id.is_empty() {
            return invalid("the call has no id".into());
        }
        let args = match read_arguments(arguments) {
            Ok(args) => args,
            Err(reason) => return invalid(reason),
        };
        let mut ctx = CallContext::new(name).with_call_id(call_id);
        ctx.arguments = args;
        ctx.agent_id.clone_from(&self.agent_id);
        ctx.session_id.clone_from(&self.session_id);
        let outcome = self.engine.evaluate(ctx.clone()).await;
        let verdict = if outcome.is_allowed() {
            Verdict::Run { arguments: outcome.modified_arguments().cloned().unwrap_or(ctx.arguments) }
        } else if outcome.needs_approval() {
            Verdict::AwaitingApproval { approval_id: call_id.to_owned() }
        } else if outcome.approved() == Some(false) {
            Verdict::ApprovalRefused
        } else {
            Verdict::Blocked { reasons: outcome.denial_reasons().into_iter().map(str::to_owned).collect() }
        };
        ToolDecision { call_id: call_id.to_owned(), name: name.to_owned(), verdict, outcome: Some(outcome) }
    }

    /// Evaluates a message's tool calls in order (parallel calls each get their own decision; the
    /// effects of one, such as spend, count for the next). Calls that share an id are refused.
    pub async fn check_tool_calls(&self, calls: &[ToolCall]) -> Vec<ToolDecision> {
        let items: Vec<(&str, &str, &str, bool)> = calls
            .iter()
            .map(|c| (c.id.as_str(), c.function.name.as_str(), c.function.arguments.as_str(), true))
            .collect();
        self.check_all(&items).await
    }

    /// Evaluates an assistant message's tool calls.
    pub async fn check_message(&self, message: &ChatMessage) -> Vec<ToolDecision> {
        self.check_tool_calls(&message.tool_calls).await
    }

    /// Evaluates tool calls assembled from a stream; a call the stream did not finish is refused.
    pub async fn check_assembled(&self, calls: &[Assembled]) -> Vec<ToolDecision> {
        let items: Vec<(&str, &str, &str, bool)> = calls
            .iter()
            .map(|a| {
                (a.call.id.as_str(), a.call.function.name.as_str(), a.call.function.arguments.as_str(), a.complete)
            })
            .collect();
        self.check_all(&items).await
    }

    /// Evaluates the `function_call` items of a Responses API `output`, in order.
    pub async fn check_response_output(&self, output: &[Value]) -> Vec<ToolDecision> {
        let items = FunctionCallItem::from_output(output);
        let refs: Vec<(&str, &str, &str, bool)> =
            items.iter().map(|i| (i.call_id.as_str(), i.name.as_str(), i.arguments.as_str(), true)).collect();
        self.check_all(&refs).await
    }

    async fn check_all(&self, calls: &[(&str, &str, &str, bool)]) -> Vec<ToolDecision> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, ..) in calls {
            *seen.entry(id).or_default() += 1;
        }
        let mut out = Vec::with_capacity(calls.len());
        for &(id, name, arguments, complete) in calls {
            let refused = |reason: &str| ToolDecision {
                call_id: id.to_owned(),
                name: name.to_owned(),
                verdict: Verdict::Invalid { reason: reason.to_owned() },
                outcome: None,
            };
            if seen.get(id).is_some_and(|n| *n > 1) {
                out.push(refused("another tool call of the message has the same id"));
            } else if !complete {
                out.push(refused("the stream ended before the call was complete"));
            } else {
                out.push(self.check(id, name, arguments).await);
            }
        }
        out
    }

    /// The text the model is told about a call that does not run (`None` for one that runs: its
    /// answer is the tool's result).
    #[must_use]
    pub fn answer(&self, decision: &ToolDecision) -> Option<String> {
        let t = &self.texts;
        Some(match &decision.verdict {
            Verdict::Run { .. } => return None,
            Verdict::Blocked { reasons } => t.blocked.replace("{reasons}", &reasons.join("; ")),
            Verdict::AwaitingApproval { approval_id } => t.awaiting_approval.replace("{approval_id}", approval_id),
            Verdict::ApprovalRefused => t.approval_refused.clone(),
            Verdict::Invalid { reason } => t.invalid.replace("{reason}", reason),
        })
    }

    /// The `tool` messages for the calls that do not run, in order, one per call id.
    #[must_use]
    pub fn tool_messages(&self, decisions: &[ToolDecision]) -> Vec<ChatMessage> {
        self.answers(decisions).map(|(id, text)| ChatMessage::tool(id, text)).collect()
    }

    /// The `function_call_output` items for the calls that do not run, in order, one per call id.
    #[must_use]
    pub fn function_call_outputs(&self, decisions: &[ToolDecision]) -> Vec<Value> {
        self.answers(decisions).map(|(id, text)| function_call_output(id, &text)).collect()
    }

    /// The call id and answer of each call that does not run, in order, once per id.
    fn answers<'d>(&'d self, decisions: &'d [ToolDecision]) -> impl Iterator<Item = (&'d str, String)> + 'd {
        let mut answered = std::collections::BTreeSet::new();
        decisions
            .iter()
            .filter(move |d| answered.insert(d.call_id.as_str()))
            .filter_map(|d| Some((d.call_id.as_str(), self.answer(d)?)))
    }
}

/// A tool call's arguments from the model's text: a JSON object, or (for a function with no
/// parameters) nothing at all. Anything else is refused, never read as `{}`.
fn read_arguments(text: &str) -> Result<JsonObject, String> {
    if text.trim().is_empty() {
        return Ok(JsonObject::new());
    }
    parse_arguments(text).map_err(|e| match e {
        ParseCallError::Json(e) if e.is_eof() => "its arguments are cut short: not complete JSON".to_owned(),
        ParseCallError::Json(e) if e.to_string().contains("repeats a key") => "its arguments repeat a key".to_owned(),
        ParseCallError::Json(e) => {
            format!("its arguments are not valid JSON (line {}, column {})", e.line(), e.column())
        }
        ParseCallError::Call(_) => {
            let kind = match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(_)) => "an array",
                Ok(Value::String(_)) => "a string",
                Ok(Value::Number(_)) => "a number",
                Ok(Value::Bool(_)) => "a boolean",
                Ok(Value::Null) => "null",
                _ => "not an object",
            };
            format!("its arguments must be a JSON object, not {kind}")
        }
        _ => "its arguments cannot be read".to_owned(),
    })
}
