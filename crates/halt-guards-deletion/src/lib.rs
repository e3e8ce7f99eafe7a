//! The deletion guard: what an agent may delete, how much, how often.
//!
//! It applies to calls whose normalised name contains a deletion word (`delete`, `remove`,
//! `drop`, `purge`, ...). Targets come from `resource_id` (configurable) and the lists
//! `resource_ids`, `ids`, `items`, `targets`; failing those, the first of `id`, `name`, `path`,
//! `file`, `document_id`, `email_id`, `record_id`. Paths are resolved before matching, so
//! `temp_/../inbox` is `inbox`, and a path that climbs above its root is refused. Every target
//! counts one against the session and daily limits, and the counts and the cooldown change only
//! when a deletion runs.
//!
//! ```
//! use halt_core::{CallContext, Engine};
//! use halt_guards_deletion::{DeletionConfig, DeletionGuard};
//! use serde_json::json;
//!
//! let config = DeletionConfig {
//!     allow_patterns: vec!["temp_*".into()],
//!     protected_resources: vec!["inbox".into()],
//!     ..DeletionConfig::default()
//! };
//! let engine = Engine::builder().guard(DeletionGuard::new(config)?).build()?;
//! let delete = |id: &str| CallContext::new("delete_file").with_arguments(json!({"resource_id": id}));
//! assert!(engine.evaluate_blocking(delete("temp_1")?).is_allowed());
//! assert!(engine.evaluate_blocking(delete("temp_/../INBOX")?).is_denied());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::time::Duration;

use arrayvec::ArrayVec;

use halt_core::factory::seconds;
use halt_core::names::{NameFragments, NamePatterns, resolve_resource};
use halt_core::store::{CalendarKey, CounterSpec, ReserveOutcome, ReserveRequest, Window, key};
use halt_core::{Call, Decision, FactoryError, Guard, GuardError, Timestamp, TypedFactory, async_trait};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The YAML name of this guard type.
pub const KIND: &str = "deletion";

/// Argument lists whose items are all targets.
const LIST_FIELDS: [&str; 4] = ["resource_ids", "ids", "items", "targets"];
/// Single-target arguments read, in order, when no other target is given.
const SINGLE_FIELDS: [&str; 7] = ["id", "name", "path", "file", "document_id", "email_id", "record_id"];
/// Function-name words that make a deletion hard.
const HARD_WORDS: [&str; 5] = ["hard", "permanent", "purge", "wipe", "destroy"];
/// How long a session's deletion count is remembered after its last deletion.
const SESSION_IDLE: Duration = Duration::from_secs(7 * 86_400);

/// Settings of a [`DeletionGuard`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DeletionConfig {
    /// When set, only resources matching one of these may be deleted.
    pub allow_patterns: Vec<String>,
    /// Resources matching one of these are never deleted.
    pub deny_patterns: Vec<String>,
    /// Resources never deleted (names or patterns).
    pub protected_resources: Vec<String>,
    /// Every deletion needs human approval.
    pub require_approval_always: bool,
    /// The most resources one session may delete.
    pub max_deletions_per_session: Option<u32>,
    /// The most resources that may be deleted per UTC day.
    pub max_deletions_per_day: Option<u32>,
    /// The most resources one call may delete.
    pub max_bulk_delete: Option<u32>,
    /// The argument naming the resource.
    pub resource_field: String,
    /// Only soft (recoverable) deletions are allowed.
    pub soft_delete_only: bool,
    /// Function-name fragments that make a call a deletion.
    pub deletion_functions: Vec<String>,
    /// Seconds after a deletion during which no other deletion runs.
    pub cooldown_seconds: f64,
}

impl Default for DeletionConfig {
    fn default() -> Self {
        Self {
            allow_patterns: Vec::new(),
            deny_patterns: Vec::new(),
            protected_resources: Vec::new(),
            require_approval_always: false,
            max_deletions_per_session: None,
            max_deletions_per_day: None,
            max_bulk_delete: Some(10),
            resource_field: "resource_id".to_owned(),
            soft_delete_only: false,
            deletion_functions: [
                "delete", "remove", "drop", "destroy", "purge", "erase", "trash", "wipe", "clear", "truncate",
            ]
            .map(String::from)
            .to_vec(),
            cooldown_seconds: 0.0,
        }
    }
}

/// Enforces a [`DeletionConfig`].
#[derive(Debug, Clone)]
pub struct DeletionGuard {
    name: String,
    /// `deletion/<name>`, the start of every key (made once: keys are made on every call).
    prefix: String,
    /// `deletion/<name>/day/<date>`.
    daily: CalendarKey,
    config: DeletionConfig,
    allow: NamePatterns,
    deny: NamePatterns,
    protected: NamePatterns,
    functions: NameFragments,
    cooldown: Duration,
}

impl DeletionGuard {
    /// A guard named `deletion`.
    ///
    /// # Errors
    /// An invalid pattern, an empty field or function word, or a cooldown that is negative or
    /// not finite.
    pub fn new(config: DeletionConfig) -> Result<Self, FactoryError> {
        Self::named(KIND, config)
    }

    /// A guard with a name of its own.
    ///
    /// # Errors
    /// As [`DeletionGuard::new`].
    pub fn named(name: &str, config: DeletionConfig) -> Result<Self, FactoryError> {
        let patterns =
            |field: &str, p: &[String]| NamePatterns::new(p).map_err(|e| FactoryError::invalid(field, e.to_string()));
        let cooldown = seconds("cooldown_seconds", config.cooldown_seconds)?;
        if config.resource_field.trim().is_empty() {
            return Err(FactoryError::invalid("resource_field", "must not be empty"));
        }
        let functions = NameFragments::new(&config.deletion_functions)
            .map_err(|_| FactoryError::invalid("deletion_functions", "entries must not be empty"))?;
        Ok(Self {
            prefix: key(&["deletion", name]).to_string(),
            daily: CalendarKey::new(key(&["deletion", name, "day"]).to_string()),
            name: name.to_owned(),
            allow: patterns("allow_patterns", &config.allow_patterns)?,
            deny: patterns("deny_patterns", &config.deny_patterns)?,
            protected: patterns("protected_resources", &config.protected_resources)?,
            functions,
            cooldown,
            config,
        })
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &DeletionConfig {
        &self.config
    }

    /// The call's targets, resolved; or why one is unusable.
    fn targets<'c>(&self, call: &Call<'c>) -> Result<Targets<'c>, String> {
        let args = call.arguments();
        let mut targets = Targets::default();
        // Whether any target value is present, even `null` (then there is no fallback).
        let mut present = false;
        let mut take = |v: &'c Value| -> Result<(), String> {
            present = true;
            if !v.is_null() {
                targets.push(target_name(v)?);
            }
            Ok(())
        };
        // The resource field's value, then the lists', in this order: found in one pass over a
        // small map of arguments (most are), by lookups in a large one.
        let mut fields: [Option<&'c Value>; 1 + LIST_FIELDS.len()] = [None; 1 + LIST_FIELDS.len()];
        if args.len() <= 16 {
            for (k, v) in args {
                if *k == self.config.resource_field {
                    fields[0] = Some(v);
                }
                if let Some(i) = LIST_FIELDS.iter().position(|f| f == k) {
                    fields[1 + i] = Some(v);
                }
            }
        } else {
            fields[0] = args.get(&self.config.resource_field);
            for (slot, f) in fields[1..].iter_mut().zip(LIST_FIELDS) {
                *slot = args.get(f);
            }
        }
        if let Some(v) = fields[0] {
            take(v)?;
        }
        for list in &fields[1..] {
            match list {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => items.iter().try_for_each(&mut take)?,
                Some(other) => take(other)?,
            }
        }
        let fallback = if present { None } else { SINGLE_FIELDS.iter().find_map(|f| args.get(*f)) };
        if let Some(v) = fallback.filter(|v| !v.is_null()) {
            targets.push(target_name(v)?);
        }
        Ok(targets)
    }

    fn is_hard(&self, call: &Call<'_>) -> bool {
        let f = call.function();
        let args = call.arguments();
        HARD_WORDS.iter().any(|w| f.contains(w))
            || ["permanent", "hard_delete"].iter().any(|k| args.get(*k).is_some_and(is_truthy))
    }
}

/// A call's targets: the first few inline (most deletions name one or two), the rest on the heap.
#[derive(Default)]
struct Targets<'c> {
    few: ArrayVec<Cow<'c, str>, 2>,
    more: Vec<Cow<'c, str>>,
}

impl<'c> Targets<'c> {
    fn push(&mut self, target: Cow<'c, str>) {
        if let Err(full) = self.few.try_push(target) {
            self.more.push(full.element());
        }
    }

    fn len(&self) -> usize {
        self.few.len() + self.more.len()
    }

    fn is_empty(&self) -> bool {
        self.few.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &Cow<'c, str>> {
        self.few.iter().chain(&self.more)
    }
}

/// A truthy flag: `true`, a non-zero number, or the strings "true", "yes", "1".
fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "yes" | "1"),
        _ => false,
    }
}

/// A target's text, resolved.
fn resolve(text: &str) -> Result<Cow<'_, str>, String> {
    resolve_resource(text).map_err(|e| format!("target `{}`: {e}", text.escape_debug()))
}

/// A target's resolved name: a string or number as itself, an object by its `id`, `name` or
/// `path`.
fn target_name(v: &Value) -> Result<Cow<'_, str>, String> {
    let named = match v {
        Value::Object(o) => match ["id", "name", "path"].iter().find_map(|k| o.get(*k)) {
            Some(named @ (Value::String(_) | Value::Number(_))) => named,
            _ => return Err("a target object has no id, name or path".to_owned()),
        },
        other => other,
    };
    match named {
        Value::String(s) => resolve(s),
        Value::Number(n) => resolve(&n.to_string()).map(|t| Cow::Owned(t.into_owned())),
        other => Err(format!("a target is {other}, not a name")),
    }
}

#[async_trait]
impl Guard for DeletionGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies(&self, call: &Call<'_>) -> bool {
        self.functions.is_in(call.function())
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let c = &self.config;
        let targets = match self.targets(call) {
            Ok(t) => t,
            Err(why) => return Ok(Decision::deny(format!("Deletion refused: {why}"))),
        };
        if c.soft_delete_only && self.is_hard(call) {
            return Ok(Decision::deny(
                "Only soft deletion is allowed: move the resource to trash instead of deleting it permanently",
            )
            .with_details_for(call, || json!({"rule": "soft_delete_only"})));
        }
        let now = call.now();
        let cooldown_key = || key(&[&self.prefix, "cooldown"]);
        let cooldown_window = Window::Sliding { width: self.cooldown };
        if !self.cooldown.is_zero() {
            // A probe that adds nothing: refused while a deletion that ran is inside the window,
            // with the time it leaves it.
            let probe = ReserveRequest {
                counters: vec![CounterSpec::new(cooldown_key(), cooldown_window, 0, Some(0))],
                now,
                hold_until: now,
            };
            if let ReserveOutcome::Rejected { retry_at, .. } = call.store().reserve(&probe).await? {
                return Ok(self.cooldown_denial(call, retry_at));
            }
        }
        let n = u32::try_from(targets.len()).unwrap_or(u32::MAX);
        if let Some(max) = c.max_bulk_delete
            && n > max
        {
            return Ok(Decision::deny(format!("Bulk deletion of {n} resources exceeds the limit of {max}"))
                .with_details_for(call, || json!({"rule": "max_bulk_delete", "targets": n, "limit": max})));
        }
        // Counts and the cooldown are reserved together, atomically, and kept only if the call runs.
        let mut counters = Vec::with_capacity(3);
        let mut labels = [""; 3];
        if !self.cooldown.is_zero() {
            labels[counters.len()] = "cooldown";
            counters.push(CounterSpec::new(cooldown_key(), cooldown_window, 1, Some(1)));
        }
        if let (Some(max), Some(session)) = (c.max_deletions_per_session, call.context().session_id.as_deref()) {
            let k = key(&[&self.prefix, "session", session]);
            labels[counters.len()] = "session";
            counters.push(CounterSpec::new(k, Window::Idle { idle: SESSION_IDLE }, i64::from(n), Some(i64::from(max))));
        }
        if let Some(max) = c.max_deletions_per_day {
            let (k, day) = self.daily.at(now, Timestamp::utc_day);
            labels[counters.len()] = "daily";
            counters.push(CounterSpec::new(
                k,
                Window::Bucket { expires_at: day.end },
                i64::from(n),
                Some(i64::from(max)),
            ));
        }
        if !counters.is_empty()
            && let ReserveOutcome::Rejected { index, current, limit, retry_at, .. } = call.reserve(counters).await?
        {
            return Ok(match labels[index] {
                "cooldown" => self.cooldown_denial(call, retry_at),
                label => Decision::deny(format!(
                    "{} deletion limit reached: {current} deleted + {n} would pass {limit}",
                    if label == "session" { "Session" } else { "Daily" }
                ))
                .with_details_for(call, || json!({"rule": label, "deleted": current, "targets": n, "limit": limit})),
            });
        }
        if targets.is_empty() {
            return Ok(Decision::require_approval("Deletion with no identifiable target needs approval")
                .with_details_for(call, || json!({"rule": "no_target"})));
        }
        for t in targets.iter() {
            if let Some(p) = self.protected.first_match_normalized(t) {
                return Ok(Decision::deny(format!("'{t}' is protected ('{p}')"))
                    .with_details_for(call, || json!({"rule": "protected_resources", "target": t})));
            }
            if let Some(p) = self.deny.first_match_normalized(t) {
                return Ok(Decision::deny(format!("'{t}' matches deny pattern '{p}'"))
                    .with_details_for(call, || json!({"rule": "deny_patterns", "target": t, "pattern": p})));
            }
            if !self.allow.is_empty() && !self.allow.is_match_normalized(t) {
                return Ok(Decision::deny(format!("'{t}' matches no allow pattern"))
                    .with_details_for(call, || json!({"rule": "allow_patterns", "target": t})));
            }
        }
        if c.require_approval_always {
            return Ok(Decision::require_approval(format!("Deletion of {n} resource(s) needs approval"))
                .with_details_for(
                    call,
                    || json!({"rule": "require_approval_always", "targets": targets.iter().collect::<Vec<_>>()}),
                ));
        }
        Ok(Decision::allow("Deletion within policy"))
    }

    fn describe(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or(Value::Null)
    }
}

impl DeletionGuard {
    /// The denial for a deletion inside the cooldown, saying how long is left.
    fn cooldown_denial(&self, call: &Call<'_>, retry_at: Option<Timestamp>) -> Decision {
        let secs = retry_at.map_or(self.cooldown, |t| t.since(call.now())).as_secs_f64();
        Decision::deny(format!("Deletion cooldown active: {secs:.1}s left of {}s", self.config.cooldown_seconds))
            .with_retry_after(secs)
            .with_details_for(call, || json!({"rule": "cooldown", "seconds_left": secs}))
    }
}

/// The factory that builds deletion guards from configuration (YAML type `deletion`).
#[must_use]
pub fn factory() -> impl halt_core::GuardFactory {
    TypedFactory::new(KIND, |name: &str, config: DeletionConfig| DeletionGuard::named(name, config))
}
