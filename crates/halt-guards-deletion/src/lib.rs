//! The deletion guard: what an agent may delete, how much, how often.
//!
//! It applies to calls whose normalised name contains a deletion word (`delete`, `remove`,
//! `drop`, `purge`, ...). Every argument that names a target is checked (`resource_id`, which
//! is configurable, `id`, `name`, `path`, `file`, `email_id`, the lists `ids`, `items`,
//! `targets`, ... whatever their case), lists item by item and objects by each of their own
//! target fields, and the most restrictive answer wins. Paths are resolved before matching, so
//! `temp_/../inbox` is `inbox`, and a path that climbs above its root is refused. A
//! percent-encoded target is judged in its decoded form too, and a target that is encoded or
//! holds wildcard characters (`temp_*`, which a shell would expand) needs a human even when its
//! name is allowed. Every target counts one against the session and daily limits, and the counts
//! and the cooldown change only when a deletion runs.
//!
//! ```
//! use halt_core::CallContext;
//! use halt_engine::Engine;
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
use halt_core::names::{NameError, NameFragments, NamePatterns, resolve_resource};
use halt_core::store::{CalendarKey, CounterSpec, ReserveOutcome, ReserveRequest, Window, key, key_part};
use halt_core::{Call, Decision, FactoryError, Guard, GuardError, Timestamp, TypedFactory, async_trait};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The YAML name of this guard type.
pub const KIND: &str = "deletion";

/// Arguments that name what a call deletes, compared as [`field_key`] writes them
/// (`Resource_Id` is `resourceid`): each one present is checked, lists item by item.
const TARGET_KEYS: [&[u8]; 24] = [
    b"resourceid",
    b"resourceids",
    b"resource",
    b"resources",
    b"ids",
    b"items",
    b"targets",
    b"target",
    b"id",
    b"name",
    b"names",
    b"path",
    b"paths",
    b"file",
    b"files",
    b"filename",
    b"filepath",
    b"filepaths",
    b"documentid",
    b"emailid",
    b"recordid",
    b"key",
    b"keys",
    b"uri",
];
/// Whether a target holds a character a shell, a glob or a query expands (`*`, `?`, `[`, `]`,
/// `{`, `}`): it may delete more than it names.
fn has_wildcard(text: &str) -> Option<&'static str> {
    text.bytes().any(|b| matches!(b, b'*' | b'?' | b'[' | b']' | b'{' | b'}')).then_some("it holds wildcard characters")
}
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

    /// The call's targets, resolved, from every argument that names one; or why one is
    /// unusable.
    fn targets<'c>(&self, call: &Call<'c>) -> Result<Targets<'c>, String> {
        let mut targets = Targets::default();
        for (k, v) in call.arguments() {
            if *k == self.config.resource_field || field_key(k).is_some_and(|key| TARGET_KEYS.contains(&&key[..])) {
                collect(k, v, &mut targets, 0)?;
            }
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

/// One target of a call: the argument naming it, its resolved name, and why it needs a human
/// even when its name is allowed.
struct Target<'c> {
    field: &'c str,
    name: Cow<'c, str>,
    doubt: Option<&'static str>,
}

/// A call's targets: the first few inline (most deletions name one or two), the rest on the
/// heap. A name given twice (`{"id": "a", "name": "a"}`) is one target.
#[derive(Default)]
struct Targets<'c> {
    few: ArrayVec<Target<'c>, 2>,
    more: Vec<Target<'c>>,
}

impl<'c> Targets<'c> {
    fn push(&mut self, target: Target<'c>) {
        if let Some(same) = self.few.iter_mut().chain(&mut self.more).find(|t| t.name == target.name) {
            same.doubt = same.doubt.or(target.doubt);
            return;
        }
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

    fn iter(&self) -> impl Iterator<Item = &Target<'c>> {
        self.few.iter().chain(&self.more)
    }
}

/// A key as target arguments are compared: lower case, letters and digits only; `None` for a
/// key too long to be one.
fn field_key(key: &str) -> Option<ArrayVec<u8, 16>> {
    let mut out = ArrayVec::new();
    for &b in key.as_bytes().iter().filter(|b| b.is_ascii_alphanumeric()) {
        out.try_push(b.to_ascii_lowercase()).ok()?;
    }
    Some(out)
}

/// Adds the targets `v` names, under the argument `field`: a string or number as itself, a list
/// item by item, an object by every one of its own target fields.
fn collect<'c>(field: &'c str, v: &'c Value, targets: &mut Targets<'c>, depth: usize) -> Result<(), String> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) => targets.push_text(field, s),
        Value::Number(n) => {
            let text = number_text(n);
            let name = resolve(field, &text)?.into_owned();
            targets.push(Target { field, name: Cow::Owned(name), doubt: None });
            Ok(())
        }
        Value::Array(items) if depth < 2 => items.iter().try_for_each(|i| collect(field, i, targets, depth + 1)),
        Value::Object(o) if depth < 2 => {
            let before = targets.len();
            for (k, item) in o {
                if field_key(k).is_some_and(|key| TARGET_KEYS.contains(&&key[..])) {
                    collect(field, item, targets, depth + 1)?;
                }
            }
            if targets.len() == before {
                return Err(format!("a target in `{field}` is an object naming no id, name or path"));
            }
            Ok(())
        }
        other => Err(format!("a target in `{field}` is {}, not a name", json_type(other))),
    }
}

impl<'c> Targets<'c> {
    /// Adds a target written as text: resolved, and judged in its decoded form too when it is
    /// percent-encoded (`temp_%2f..%2finbox` is `temp_/../inbox`, so `inbox`).
    fn push_text(&mut self, field: &'c str, text: &'c str) -> Result<(), String> {
        let wildcard = has_wildcard(text);
        let name = resolve(field, text)?;
        let decoded = percent_decoded(text);
        self.push(Target { field, name, doubt: wildcard.or(decoded.as_ref().map(|_| "it is percent-encoded")) });
        if let Some(decoded) = decoded {
            let wildcard = has_wildcard(&decoded);
            let name = resolve(field, &decoded)?.into_owned();
            self.push(Target { field, name: Cow::Owned(name), doubt: wildcard.or(Some("it is percent-encoded")) });
        }
        Ok(())
    }
}

/// A number's text as a target (`42` and `42.0` are one resource).
fn number_text(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.as_u64().is_none() && n.as_i64().is_none() && f.fract() == 0.0 && f.abs() < 1e15 => {
            format!("{f:.0}")
        }
        _ => n.to_string(),
    }
}

/// The text with `%XX` escapes decoded, again until nothing changes (at most a few rounds);
/// `None` when it holds none. Bytes that do not make UTF-8 become U+FFFD.
fn percent_decoded(text: &str) -> Option<String> {
    if !text.contains('%') {
        return None;
    }
    let mut current = Cow::Borrowed(text);
    for _ in 0..4 {
        let bytes = current.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                (b'%', Some(hi), Some(lo)) => {
                    out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                    i += 3;
                }
                (b, _, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        let next = String::from_utf8_lossy(&out).into_owned();
        if next == *current {
            break;
        }
        current = Cow::Owned(next);
    }
    match current {
        Cow::Borrowed(_) => None,
        Cow::Owned(decoded) => Some(decoded),
    }
}

/// The JSON type of a value, for reasons (never the value).
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
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

/// A target's text, resolved; what is wrong with it names the argument, never the text.
fn resolve<'t>(field: &str, text: &'t str) -> Result<Cow<'t, str>, String> {
    resolve_resource(text).map_err(|e| {
        let problem = match e {
            NameError::Empty => "is empty".to_owned(),
            NameError::ControlCharacter(c) => format!("holds the control character U+{c:04X}"),
            NameError::EscapesRoot(_) => "climbs above its root".to_owned(),
            _ => "is not a usable name".to_owned(),
        };
        format!("a target in `{field}` {problem}")
    })
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
            .with_details(json!({"rule": "soft_delete_only"})));
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
                .with_details(json!({"rule": "max_bulk_delete", "targets": n, "limit": max})));
        }
        // Counts and the cooldown are reserved together, atomically, and kept only if the call runs.
        let mut counters = Vec::with_capacity(3);
        let mut labels = [""; 3];
        if !self.cooldown.is_zero() {
            labels[counters.len()] = "cooldown";
            counters.push(CounterSpec::new(cooldown_key(), cooldown_window, 1, Some(1)));
        }
        if let (Some(max), Some(session)) = (c.max_deletions_per_session, call.context().session_id.as_deref()) {
            let k = key(&[&self.prefix, "session", &key_part(session)]);
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
                .with_details(json!({"rule": label, "deleted": current, "targets": n, "limit": limit})),
            });
        }
        if targets.is_empty() {
            return Ok(Decision::require_approval("Deletion with no identifiable target needs approval")
                .with_details(json!({"rule": "no_target"})));
        }
        for Target { field, name: t, .. } in targets.iter() {
            if let Some(p) = self.protected.first_match_normalized(t) {
                return Ok(Decision::deny(format!("A target in `{field}` is protected ('{p}')"))
                    .with_details(json!({"rule": "protected_resources", "field": field, "pattern": p})));
            }
            if let Some(p) = self.deny.first_match_normalized(t) {
                return Ok(Decision::deny(format!("A target in `{field}` matches the deny pattern '{p}'"))
                    .with_details(json!({"rule": "deny_patterns", "field": field, "pattern": p})));
            }
            if !self.allow.is_empty() && !self.allow.is_match_normalized(t) {
                return Ok(Decision::deny(format!("A target in `{field}` matches no allow pattern"))
                    .with_details(json!({"rule": "allow_patterns", "field": field})));
            }
        }
        if let Some(Target { field, doubt: Some(why), .. }) = targets.iter().find(|t| t.doubt.is_some()) {
            return Ok(Decision::require_approval(format!("A target in `{field}` needs approval: {why}"))
                .with_details(json!({"rule": "ambiguous_target", "field": field})));
        }
        if c.require_approval_always {
            return Ok(Decision::require_approval(format!("Deletion of {n} resource(s) needs approval"))
                .with_details(json!({"rule": "require_approval_always", "targets": n})));
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
            .with_details(json!({"rule": "cooldown", "seconds_left": secs}))
    }
}

/// The factory that builds deletion guards from configuration (YAML type `deletion`).
#[must_use]
pub fn factory() -> impl halt_core::GuardFactory {
    TypedFactory::new(KIND, |name: &str, config: DeletionConfig| DeletionGuard::named(name, config))
}
