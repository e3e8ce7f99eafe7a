//! The scope guard: which tools an agent may call at all.
//!
//! Rules, in order: read-only mode refuses anything that is not a read; an agent's own deny list,
//! then its own allow list; the global deny list, then the global allow list; functions that
//! need a human; everything else is allowed. Names and patterns are normalised first, so case,
//! full-width and zero-width tricks do not get around a list.
//!
//! ```
//! use halt_core::CallContext;
//! use halt_engine::Engine;
//! use halt_guards_scope::{ScopeConfig, ScopeGuard};
//!
//! let config = ScopeConfig { deny_functions: vec!["drop_*".into()], ..ScopeConfig::default() };
//! let engine = Engine::builder().guard(ScopeGuard::new(config)?).build()?;
//! assert!(engine.evaluate_blocking(CallContext::new("DROP_TABLE")).is_denied());
//! assert!(engine.evaluate_blocking(CallContext::new("read_table")).is_allowed());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;

use halt_core::names::{NamePatterns, normalize, normalize_keys};
use halt_core::{Call, Decision, FactoryError, Guard, GuardError, TypedFactory, async_trait};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The YAML name of this guard type.
pub const KIND: &str = "scope";

/// The read-only patterns used unless configured otherwise.
pub const DEFAULT_READ_ONLY_PATTERNS: [&str; 14] = [
    "get_*",
    "read_*",
    "list_*",
    "fetch_*",
    "search_*",
    "query_*",
    "find_*",
    "lookup_*",
    "describe_*",
    "show_*",
    "view_*",
    "count_*",
    "inspect_*",
    "retrieve_*",
];

/// Words that make a call a write even when its name matches a read pattern: in read-only
/// mode, `get_and_delete_user` and `fetch_then_send_money` are refused. Whole words of the
/// normalised name only, so `list_updates` and `list_payments` are reads.
pub const WRITE_WORDS: [&str; 30] = [
    "delete",
    "remove",
    "drop",
    "destroy",
    "purge",
    "erase",
    "wipe",
    "truncate",
    "send",
    "pay",
    "purchase",
    "buy",
    "wire",
    "transfer",
    "charge",
    "write",
    "update",
    "create",
    "insert",
    "execute",
    "exec",
    "kill",
    "upload",
    "overwrite",
    "grant",
    "revoke",
    "deploy",
    "refund",
    "withdraw",
    "shutdown",
];

/// Settings of a [`ScopeGuard`]. Patterns are fnmatch-like globs (`*`, `?`, `[abc]`, `[!abc]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ScopeConfig {
    /// When set, the only functions any agent may call.
    pub allow_functions: Vec<String>,
    /// Functions no agent may call.
    pub deny_functions: Vec<String>,
    /// Per agent id: the only functions that agent may call.
    pub allow_by_agent: BTreeMap<String, Vec<String>>,
    /// Per agent id: functions that agent may not call.
    pub deny_by_agent: BTreeMap<String, Vec<String>>,
    /// Functions that need human approval.
    pub require_approval_functions: Vec<String>,
    /// When true, only functions matching `read_only_patterns` may be called.
    pub read_only_mode: bool,
    /// What counts as a read in read-only mode.
    pub read_only_patterns: Vec<String>,
}

impl Default for ScopeConfig {
    fn default() -> Self {
        Self {
            allow_functions: Vec::new(),
            deny_functions: Vec::new(),
            allow_by_agent: BTreeMap::new(),
            deny_by_agent: BTreeMap::new(),
            require_approval_functions: Vec::new(),
            read_only_mode: false,
            read_only_patterns: DEFAULT_READ_ONLY_PATTERNS.map(String::from).to_vec(),
        }
    }
}

/// Enforces a [`ScopeConfig`].
#[derive(Debug, Clone)]
pub struct ScopeGuard {
    name: String,
    config: ScopeConfig,
    allow: NamePatterns,
    deny: NamePatterns,
    approval: NamePatterns,
    read_only: NamePatterns,
    allow_by_agent: BTreeMap<String, NamePatterns>,
    deny_by_agent: BTreeMap<String, NamePatterns>,
}

fn compile(field: &str, patterns: &[String]) -> Result<NamePatterns, FactoryError> {
    NamePatterns::new(patterns).map_err(|e| FactoryError::invalid(field, e.to_string()))
}

fn compile_map(
    field: &str,
    map: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, NamePatterns>, FactoryError> {
    let map = normalize_keys(map).map_err(|e| FactoryError::invalid(field, format!("agent ids: {}", e.reason)))?;
    map.into_iter()
        .map(|(agent, patterns)| Ok((agent.clone(), compile(&format!("{field}.{agent}"), &patterns)?)))
        .collect()
}

impl ScopeGuard {
    /// A guard named `scope`.
    ///
    /// # Errors
    /// An invalid glob pattern, named by its field.
    pub fn new(config: ScopeConfig) -> Result<Self, FactoryError> {
        Self::named(KIND, config)
    }

    /// A guard with a name of its own.
    ///
    /// # Errors
    /// As [`ScopeGuard::new`].
    pub fn named(name: &str, config: ScopeConfig) -> Result<Self, FactoryError> {
        Ok(Self {
            name: name.to_owned(),
            allow: compile("allow_functions", &config.allow_functions)?,
            deny: compile("deny_functions", &config.deny_functions)?,
            approval: compile("require_approval_functions", &config.require_approval_functions)?,
            read_only: compile("read_only_patterns", &config.read_only_patterns)?,
            allow_by_agent: compile_map("allow_by_agent", &config.allow_by_agent)?,
            deny_by_agent: compile_map("deny_by_agent", &config.deny_by_agent)?,
            config,
        })
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &ScopeConfig {
        &self.config
    }
}

#[async_trait]
impl Guard for ScopeGuard {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let f = call.function();
        let shown = f;
        let write = || f.split(|c: char| !c.is_alphanumeric()).any(|w| WRITE_WORDS.contains(&w));
        if self.config.read_only_mode && (!self.read_only.is_match_normalized(f) || write()) {
            return Ok(Decision::deny(format!("Read-only mode: '{shown}' is not a read operation"))
                .with_details(json!({"rule": "read_only_mode"})));
        }
        let per_agent = !self.deny_by_agent.is_empty() || !self.allow_by_agent.is_empty();
        let agent = call.context().agent_id.as_deref().filter(|_| per_agent).map(normalize);
        if let Some(agent) = agent.as_deref() {
            if let Some(p) = self.deny_by_agent.get(agent).and_then(|d| d.first_match_normalized(f)) {
                return Ok(Decision::deny(format!("Agent '{agent}' may not call '{shown}' (matches '{p}')"))
                    .with_details(json!({"rule": "deny_by_agent", "pattern": p})));
            }
            if let Some(allow) = self.allow_by_agent.get(agent)
                && !allow.is_match_normalized(f)
            {
                return Ok(Decision::deny(format!("'{shown}' is not in the allow list of agent '{agent}'"))
                    .with_details(json!({"rule": "allow_by_agent"})));
            }
        }
        if let Some(p) = self.deny.first_match_normalized(f) {
            return Ok(Decision::deny(format!("Function '{shown}' is denied (matches '{p}')"))
                .with_details(json!({"rule": "deny_functions", "pattern": p})));
        }
        if !self.allow.is_empty() && !self.allow.is_match_normalized(f) {
            return Ok(Decision::deny(format!("Function '{shown}' is not in the allow list"))
                .with_details(json!({"rule": "allow_functions"})));
        }
        if let Some(p) = self.approval.first_match_normalized(f) {
            return Ok(Decision::require_approval(format!("Function '{shown}' needs approval (matches '{p}')"))
                .with_details(json!({"rule": "require_approval_functions", "pattern": p})));
        }
        Ok(Decision::allow("In scope"))
    }

    /// It decides from the call alone, so it may decide ahead of the call's turn.
    fn is_pure(&self) -> bool {
        true
    }

    fn describe(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or(Value::Null)
    }
}

/// The factory that builds scope guards from configuration (YAML type `scope`).
#[must_use]
pub fn factory() -> impl halt_core::GuardFactory {
    TypedFactory::new(KIND, |name: &str, config: ScopeConfig| ScopeGuard::named(name, config))
}
