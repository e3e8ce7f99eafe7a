//! YAML policies: load a policy file into an [`Engine`], with errors that point at the mistake.
//!
//! The file's `guards:` section is a map of guard type to settings (the reference format), or a
//! list of guards with a `type` and an optional `name`, so one type can appear several times.
//! `enabled: false` switches a guard off. `${VAR}` is replaced from the environment. The
//! `engine:` section sets the guard timeout, the approval timeout and the mode (`enforce` or
//! `monitor`). JSON is YAML too.
//!
//! ```
//! use halt_config::PolicyLoader;
//! use halt_core::CallContext;
//!
//! let yaml = "
//! guards:
//!   scope:
//!     deny_functions: [\"drop_*\"]
//!   budget:
//!     max_daily_spend: 10.0
//! ";
//! let engine = PolicyLoader::new().load_str(yaml, "policy.yaml")?.build_engine()?;
//! assert!(engine.evaluate_blocking(CallContext::new("drop_table")).is_denied());
//!
//! let err = PolicyLoader::new().load_str("guards:\n  budget:\n    max_daily_spnd: 1\n", "policy.yaml").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "policy.yaml:3:5: unknown field `max_daily_spnd` at guards.budget; did you mean `max_daily_spend`?"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![allow(clippy::result_large_err, reason = "loading a policy is not a hot path, and a flat error is easier to use")]

mod approvals;
mod audit;
mod env;
mod locate;
mod mcp;
mod schema;
mod server;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use halt_core::{BuildError, FactoryError, Guard, GuardFactory, GuardRegistry};
use halt_engine::{Engine, EngineBuilder, EngineError, Mode};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

pub use approvals::{ApprovalSettings, HandlerSetting, WebhookSettings};
pub use audit::{AuditFileSettings, AuditSettings, OnFullSetting};
pub use mcp::McpSettings;
pub use schema::policy_schema;
pub use server::{Role, ServerSettings, TokenSettings};

/// The top-level sections a policy file may have.
const SECTIONS: [&str; 7] = ["guards", "engine", "store", "approvals", "audit", "server", "mcp"];

/// A policy file's mistake: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ConfigError {
    /// The file (or the name given to a string).
    pub origin: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The key path (`guards.budget.max_daily_spend`), when known.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The key that was probably meant.
    pub suggestion: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if let Some(path) = &self.path {
            write!(f, " at {path}")?;
        }
        if let Some(s) = &self.suggestion {
            write!(f, "; did you mean `{s}`?")?;
        }
        Ok(())
    }
}

/// The `engine:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// `enforce` (default) or `monitor` (shadow mode: decide, record, stream, but let every call run).
    pub mode: Mode,
    /// Seconds the guards of one call may take before the ones still running are denied.
    pub guard_timeout_seconds: f64,
    /// Seconds a call may wait for a human before it is refused and its reservations released.
    pub approval_timeout_seconds: f64,
    /// Seconds after a call during which its charged cost can be settled.
    pub settle_window_seconds: f64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            guard_timeout_seconds: 5.0,
            approval_timeout_seconds: 900.0,
            settle_window_seconds: 3600.0,
        }
    }
}

/// The `store:` section: where counters, windows and pending approvals live.
///
/// ```yaml
/// store: memory               # the default: fast, gone on exit
/// # or
/// store:
///   sled:
///     path: /var/lib/agenthalt
///     durability: strict      # or relaxed (flush every flush_every_ms)
/// # or
/// store:
///   redis:
///     url: redis://127.0.0.1:6379/0
///     prefix: "{agenthalt}:"
/// ```
#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreSettings {
    /// In process memory.
    #[default]
    Memory,
    /// The embedded persistent store.
    Sled(SledSettings),
    /// A Redis shared by many processes and hosts.
    Redis(RedisSettings),
}

/// Settings of the Redis store.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// The server, such as `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// The prefix of every key (a hash tag such as `{agenthalt}:` keeps a cluster's keys together).
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
}

fn default_redis_prefix() -> String {
    "{agenthalt}:".to_owned()
}

/// Settings of the sled store.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SledSettings {
    /// The database directory.
    pub path: std::path::PathBuf,
    /// `strict` (default: flushed before a commit returns) or `relaxed`.
    #[serde(default)]
    pub durability: DurabilitySetting,
    /// With relaxed durability, the flush interval in milliseconds.
    #[serde(default = "default_flush_every_ms")]
    pub flush_every_ms: u64,
}

fn default_flush_every_ms() -> u64 {
    500
}

/// When sled data reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DurabilitySetting {
    /// Flushed before a commit returns (concurrent commits share a flush).
    #[default]
    Strict,
    /// Flushed in the background every `flush_every_ms`.
    Relaxed,
}

impl StoreSettings {
    /// Opens the store these settings describe (a Redis store connects on a Tokio runtime).
    ///
    /// # Errors
    /// The store cannot be opened, or this build lacks its support.
    pub async fn open(&self) -> Result<Arc<dyn halt_core::StateStore>, halt_core::StoreError> {
        match self {
            Self::Memory => Ok(Arc::new(halt_store_memory::MemoryStore::new())),
            #[cfg(feature = "sled")]
            Self::Sled(s) => {
                let durability = match s.durability {
                    DurabilitySetting::Strict => halt_store_sled::Durability::Strict,
                    DurabilitySetting::Relaxed => {
                        halt_store_sled::Durability::Relaxed { flush_every_ms: s.flush_every_ms }
                    }
                };
                let store = halt_store_sled::SledStore::open(
                    &halt_store_sled::SledStoreConfig::new(&s.path).durability(durability),
                )?;
                Ok(Arc::new(store))
            }
            #[cfg(not(feature = "sled"))]
            Self::Sled(_) => Err(halt_core::StoreError::Unavailable("this build has no sled support".into())),
            #[cfg(feature = "redis")]
            Self::Redis(r) => Ok(Arc::new(halt_store_redis::RedisStore::connect(&r.url, &r.prefix).await?)),
            #[cfg(not(feature = "redis"))]
            Self::Redis(_) => Err(halt_core::StoreError::Unavailable("this build has no redis support".into())),
        }
    }
}

/// One configured guard.
#[derive(Debug, Clone)]
pub struct ConfiguredGuard {
    /// Its type (`budget`).
    pub kind: String,
    /// Its name, unique in the policy.
    pub name: String,
    /// False when the policy says `enabled: false`.
    pub enabled: bool,
    /// The guard.
    pub guard: Arc<dyn Guard>,
}

/// A loaded policy: its guards, in file order, and its engine settings.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The guards, enabled or not.
    pub guards: Vec<ConfiguredGuard>,
    /// The engine settings.
    pub engine: EngineSettings,
    /// Where state lives, when the policy says (`store:`); without it each program picks:
    /// `agenthalt eval` keeps state in memory, `agenthalt serve` in sled under `./.agenthalt/`.
    pub store: Option<StoreSettings>,
    /// Who is asked for approvals, and their rules.
    pub approvals: ApprovalSettings,
    /// The audit log, if the policy has one.
    pub audit: Option<AuditSettings>,
    /// How `agenthalt serve` listens and whom it admits.
    pub server: ServerSettings,
    /// How `agenthalt mcp-proxy` treats the MCP traffic it stands in.
    pub mcp: McpSettings,
    /// The policy's version: a SHA-256 (hex) of the policy as loaded, its `server:` section
    /// aside (who may call the server does not change a decision). An approval covers only calls
    /// evaluated under the version it was asked under.
    pub version: String,
}

/// Whether `v` is a positive number of seconds that a duration holds.
fn positive_seconds(v: f64) -> bool {
    v > 0.0 && Duration::try_from_secs_f64(v).is_ok()
}

/// `v` seconds as a duration (checked when loaded; a policy built by hand with a negative or
/// NaN value gets zero, which times out at once, and one too large gets the longest duration).
pub(crate) fn duration(v: f64) -> Duration {
    if v > 0.0 { Duration::try_from_secs_f64(v).unwrap_or(Duration::MAX) } else { Duration::ZERO }
}

impl Policy {
    /// An engine builder with the policy's guards and settings; add a store, a clock or an
    /// approval handler before building.
    #[must_use]
    pub fn engine_builder(&self) -> EngineBuilder {
        let mut b = Engine::builder()
            .mode(self.engine.mode)
            .guard_timeout(duration(self.engine.guard_timeout_seconds))
            .approval_timeout(duration(self.engine.approval_timeout_seconds))
            .settle_window(duration(self.engine.settle_window_seconds));
        for g in &self.guards {
            b = b.guard_arc(Arc::clone(&g.guard));
        }
        b
    }

    /// Builds the engine with a memory store and the system clock, with disabled guards
    /// registered but off. (Open [`Policy::store`] and pass it to [`Policy::engine_builder`]
    /// for the configured store.)
    ///
    /// # Errors
    /// Only if two guards share a name, which loading already refuses.
    pub fn build_engine(&self) -> Result<Engine, EngineError> {
        self.apply_enabled(self.engine_builder().build()?)
    }

    /// Switches off the guards the policy disables, on an engine built from
    /// [`Policy::engine_builder`].
    ///
    /// # Errors
    /// A guard of the policy is missing from the engine.
    pub fn apply_enabled(&self, engine: Engine) -> Result<Engine, EngineError> {
        for g in self.guards.iter().filter(|g| !g.enabled) {
            engine.set_enabled(&g.name, false)?;
        }
        Ok(engine)
    }
}

/// Loads policy files, knowing the built-in guard types and any a caller registers.
#[derive(Debug, Clone)]
pub struct PolicyLoader {
    registry: GuardRegistry,
}

impl Default for PolicyLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyLoader {
    /// A loader that knows the built-in guards compiled in (by feature).
    #[must_use]
    pub fn new() -> Self {
        let mut registry = GuardRegistry::new();
        for f in builtin_factories() {
            // Built-in kinds are distinct, so registering cannot fail.
            let _ = registry.register_arc(f);
        }
        Self { registry }
    }

    /// A loader that knows only the factories of `registry`.
    #[must_use]
    pub fn with_registry(registry: GuardRegistry) -> Self {
        Self { registry }
    }

    /// Registers a third party's guard type, configurable in the same file.
    ///
    /// # Errors
    /// A type of that name is already registered.
    pub fn register(&mut self, factory: impl GuardFactory) -> Result<(), BuildError> {
        self.registry.register(factory)
    }

    /// The guard types this loader knows.
    #[must_use]
    pub fn registry(&self) -> &GuardRegistry {
        &self.registry
    }

    /// Loads a policy file.
    ///
    /// # Errors
    /// The file cannot be read, or any mistake in it.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Policy, ConfigError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            column: None,
            path: None,
            message: format!("cannot read the file: {e}"),
            suggestion: None,
        })?;
        self.load_str(&text, &origin)
    }

    /// Loads a policy from text; `origin` names it in errors.
    ///
    /// # Errors
    /// Any mistake in the text.
    pub fn load_str(&self, text: &str, origin: &str) -> Result<Policy, ConfigError> {
        self.load_with_env(text, origin, &|name| std::env::var(name).ok())
    }

    /// As [`PolicyLoader::load_str`], reading `${VAR}` values from `env` instead of the
    /// process environment.
    ///
    /// # Errors
    /// Any mistake in the text, or a variable `env` does not know.
    pub fn load_with_env(
        &self,
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Policy, ConfigError> {
        let ctx = Ctx { origin, text };
        let mut doc: Value = serde_yaml::from_str(text).map_err(|e| ctx.yaml_error(&e))?;
        // Variables are replaced in values once the text is read, never in the text: a value
        // cannot turn into YAML of its own, and comments are left alone.
        env::substitute(&mut doc, &mut Vec::new(), env).map_err(|(path, message)| ctx.at_path(&path, message, None))?;
        let version = approvals::version(&doc);
        let root = match doc {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m,
            other => {
                return Err(ctx.at_path(&[], format!("a policy must be a mapping, not {}", yaml_type(&other)), None));
            }
        };
        let mut engine = EngineSettings::default();
        let mut store = None;
        let mut approvals = ApprovalSettings::default();
        let mut audit = None;
        let mut server = ServerSettings::default();
        let mut mcp = McpSettings::default();
        let mut guards = Vec::new();
        for (key, value) in root {
            let Some(section) = key.as_str() else {
                return Err(ctx.at_path(&[], format!("section names must be strings, not {}", yaml_type(&key)), None));
            };
            match section {
                "guards" => guards = self.guards(&ctx, value)?,
                "engine" => engine = ctx.section("engine", value)?,
                "store" => store = Some(ctx.section("store", value)?),
                "approvals" => approvals = ctx.section("approvals", value)?,
                "audit" => audit = Some(ctx.section::<AuditSettings>("audit", value)?),
                "server" => server = ctx.section("server", value)?,
                "mcp" => mcp = ctx.section("mcp", value)?,
                other => {
                    let s = suggest(other, SECTIONS.iter().copied());
                    return Err(ctx.at_path(&[Seg::Key(other.to_owned())], format!("unknown section `{other}`"), s));
                }
            }
        }
        if !positive_seconds(engine.guard_timeout_seconds) {
            return Err(ctx.at_path(
                &key_path(&["engine", "guard_timeout_seconds"]),
                "must be a positive number of seconds".into(),
                None,
            ));
        }
        if !positive_seconds(engine.settle_window_seconds) {
            return Err(ctx.at_path(
                &key_path(&["engine", "settle_window_seconds"]),
                "must be a positive number of seconds".into(),
                None,
            ));
        }
        if !positive_seconds(engine.approval_timeout_seconds) {
            return Err(ctx.at_path(
                &key_path(&["engine", "approval_timeout_seconds"]),
                "must be a positive number of seconds".into(),
                None,
            ));
        }
        match &store {
            None | Some(StoreSettings::Memory) => {}
            Some(StoreSettings::Sled(s)) => {
                if cfg!(not(feature = "sled")) {
                    return Err(ctx.at_path(
                        &key_path(&["store", "sled"]),
                        "this build has no sled support".into(),
                        None,
                    ));
                }
                if s.path.as_os_str().is_empty() {
                    return Err(ctx.at_path(&key_path(&["store", "sled", "path"]), "must not be empty".into(), None));
                }
            }
            Some(StoreSettings::Redis(r)) => {
                if cfg!(not(feature = "redis")) {
                    return Err(ctx.at_path(
                        &key_path(&["store", "redis"]),
                        "this build has no redis support".into(),
                        None,
                    ));
                }
                if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://") || r.url.starts_with("unix://")) {
                    return Err(ctx.at_path(
                        &key_path(&["store", "redis", "url"]),
                        "must start with redis://, rediss:// or unix://".into(),
                        None,
                    ));
                }
            }
        }
        approvals::check(&approvals, &engine)
            .map_err(|(path, message)| ctx.at_path(&key_path(&path), message, None))?;
        if let Some(a) = &audit {
            audit::check(a).map_err(|(path, message)| ctx.at_path(&key_path(&path), message, None))?;
        }
        // Their paths name list items by number.
        let at = |(path, message): (Vec<String>, String)| {
            let path: Vec<Seg> = path.into_iter().map(|p| p.parse::<usize>().map_or(Seg::Key(p), Seg::Index)).collect();
            ctx.at_path(&path, message, None)
        };
        server::check(&server).map_err(at)?;
        mcp::check(&mcp).map_err(at)?;
        Ok(Policy { guards, engine, store, approvals, audit, server, mcp, version })
    }

    fn guards(&self, ctx: &Ctx<'_>, value: Value) -> Result<Vec<ConfiguredGuard>, ConfigError> {
        let mut out: Vec<ConfiguredGuard> = Vec::new();
        let mut names = BTreeSet::new();
        match value {
            Value::Null => {}
            Value::Mapping(map) => {
                for (key, cfg) in map {
                    let Some(kind) = key.as_str() else {
                        return Err(ctx.at_path(&key_path(&["guards"]), "guard types must be strings".into(), None));
                    };
                    let path = key_path(&["guards", kind]);
                    let g = self.build(ctx, &path, kind, kind, cfg)?;
                    names.insert(g.name.clone());
                    out.push(g);
                }
            }
            Value::Sequence(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let path = vec![Seg::Key("guards".into()), Seg::Index(i)];
                    let Value::Mapping(mut map) = item else {
                        return Err(ctx.at_path(&path, "each guard must be a mapping with a `type`".into(), None));
                    };
                    let kind = match map.remove("type") {
                        Some(Value::String(s)) => s,
                        Some(other) => {
                            return Err(ctx.at_path(
                                &path,
                                format!("`type` must be a string, not {}", yaml_type(&other)),
                                None,
                            ));
                        }
                        None => return Err(ctx.at_path(&path, "missing `type`".into(), None)),
                    };
                    let name = match map.remove("name") {
                        Some(Value::String(s)) => s,
                        None | Some(Value::Null) => kind.clone(),
                        Some(other) => {
                            return Err(ctx.at_path(
                                &path,
                                format!("`name` must be a string, not {}", yaml_type(&other)),
                                None,
                            ));
                        }
                    };
                    if !names.insert(name.clone()) {
                        return Err(ctx.at_path(
                            &path,
                            format!("two guards are named `{name}`; give one a `name`"),
                            None,
                        ));
                    }
                    out.push(self.build(ctx, &path, &kind, &name, Value::Mapping(map))?);
                }
            }
            other => {
                return Err(ctx.at_path(
                    &key_path(&["guards"]),
                    format!("`guards` must be a mapping or a list, not {}", yaml_type(&other)),
                    None,
                ));
            }
        }
        Ok(out)
    }

    fn build(
        &self,
        ctx: &Ctx<'_>,
        path: &[Seg],
        kind: &str,
        name: &str,
        cfg: Value,
    ) -> Result<ConfiguredGuard, ConfigError> {
        // Checked here, where the error can point at the policy, as the engine checks it.
        if let Err(e) = halt_core::names::validate(name) {
            return Err(ctx.at_path(path, format!("invalid guard name: {e}"), None));
        }
        if self.registry.get(kind).is_none() {
            let s = suggest(kind, self.registry.kinds().iter().map(String::as_str));
            let known = self.registry.kinds().join(", ");
            return Err(ctx.at_path(path, format!("unknown guard type `{kind}` (known: {known})"), s));
        }
        let mut map = match cfg {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m,
            other => {
                return Err(ctx.at_path(
                    path,
                    format!("guard settings must be a mapping, not {}", yaml_type(&other)),
                    None,
                ));
            }
        };
        let enabled = match map.remove("enabled") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                let mut p = path.to_vec();
                p.push(Seg::Key("enabled".into()));
                return Err(ctx.at_path(
                    &p,
                    format!("`enabled` must be true or false, not {}", yaml_type(&other)),
                    None,
                ));
            }
        };
        let mut track = serde_path_to_error::Track::new();
        let result = {
            let de = serde_path_to_error::Deserializer::new(Value::Mapping(map), &mut track);
            let mut erased = <dyn erased_serde::Deserializer<'_>>::erase(de);
            self.registry.build(kind, name, &mut erased)
        };
        let guard = result.map_err(|e| {
            let mut p = path.to_vec();
            let (message, field) = match e {
                BuildError::Factory(FactoryError::Invalid { field, reason }) => {
                    (format!("invalid `{field}`: {reason}"), Some(field))
                }
                BuildError::Factory(FactoryError::Deserialize(msg)) => (msg, None),
                other => (other.to_string(), None),
            };
            let field_path = track.path().to_string();
            if let Some(f) = field {
                p.push(Seg::Key(f));
            } else if field_path != "." && !message.starts_with("unknown field") {
                p.extend(field_path.split('.').map(|s| Seg::Key(s.to_owned())));
            }
            let suggestion = unknown_field_suggestion(&message);
            let (message, p) = match &suggestion {
                Some((field, _)) => {
                    let mut q = p.clone();
                    q.push(Seg::Key(field.clone()));
                    // Point at the unknown key, but name the section it sits in.
                    let mut err =
                        ctx.at_path(&q, format!("unknown field `{field}`"), suggestion.clone().and_then(|s| s.1));
                    err.path = Some(render(&p));
                    return err;
                }
                None => (strip_expected(&message), p),
            };
            ctx.at_path(&p, message, None)
        })?;
        Ok(ConfiguredGuard { kind: kind.to_owned(), name: name.to_owned(), enabled, guard })
    }
}

/// The factories of the built-in guards compiled in.
#[must_use]
#[allow(clippy::vec_init_then_push, reason = "each push depends on a feature")]
pub fn builtin_factories() -> Vec<Arc<dyn GuardFactory>> {
    #[allow(unused_mut, reason = "empty without guard features")]
    let mut v: Vec<Arc<dyn GuardFactory>> = Vec::new();
    #[cfg(feature = "budget")]
    v.push(Arc::new(halt_guards_budget::factory()));
    #[cfg(feature = "purchase")]
    v.push(Arc::new(halt_guards_purchase::factory()));
    #[cfg(feature = "deletion")]
    v.push(Arc::new(halt_guards_deletion::factory()));
    #[cfg(feature = "rate-limit")]
    v.push(Arc::new(halt_guards_rate_limit::factory()));
    #[cfg(feature = "scope")]
    v.push(Arc::new(halt_guards_scope::factory()));
    #[cfg(feature = "rules")]
    v.push(Arc::new(halt_guards_rules::factory()));
    #[cfg(feature = "sensitive")]
    v.push(Arc::new(halt_guards_sensitive::factory()));
    v
}

/// A segment of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn key_path(keys: &[&str]) -> Vec<Seg> {
    keys.iter().map(|k| Seg::Key((*k).to_owned())).collect()
}

fn render(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// What errors need to point into the text.
struct Ctx<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn error(
        &self,
        pos: Option<(usize, usize)>,
        path: Option<String>,
        message: String,
        suggestion: Option<String>,
    ) -> ConfigError {
        ConfigError {
            origin: self.origin.to_owned(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            path,
            message,
            suggestion,
        }
    }

    fn at_path(&self, path: &[Seg], message: String, suggestion: Option<String>) -> ConfigError {
        let pos = locate::locate(self.text, path);
        let rendered = (!path.is_empty()).then(|| render(path));
        self.error(pos, rendered, message, suggestion)
    }

    fn yaml_error(&self, e: &serde_yaml::Error) -> ConfigError {
        let pos = e.location().map(|l| (l.line(), l.column()));
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        self.error(pos, None, format!("invalid YAML: {msg}"), None)
    }

    /// Deserializes a whole section (`engine`, `store`), with positions for its errors.
    fn section<T: serde::de::DeserializeOwned + Default>(&self, name: &str, value: Value) -> Result<T, ConfigError> {
        if value.is_null() {
            return Ok(T::default());
        }
        // Through JSON, whose enums are plain maps and strings (YAML's want tags).
        let value = serde_json::to_value(&value).map_err(|e| self.at_path(&key_path(&[name]), e.to_string(), None))?;
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(value, &mut track);
        T::deserialize(de).map_err(|e| {
            let message = e.to_string();
            let mut p = key_path(&[name]);
            let field_path = track.path().to_string();
            if field_path != "." {
                p.extend(field_path.split('.').map(|s| Seg::Key(s.to_owned())));
            }
            if let Some((field, s)) = unknown_field_suggestion(&message) {
                // The tracked path ends at the unknown key itself: name the mapping it sits in.
                if p.last() == Some(&Seg::Key(field.clone())) {
                    p.pop();
                }
                let section = render(&p);
                p.push(Seg::Key(field.clone()));
                let mut err = self.at_path(&p, format!("unknown field `{field}`"), s);
                err.path = Some(section);
                return err;
            }
            self.at_path(&p, strip_expected(&message), None)
        })
    }
}

/// From serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`"): the field,
/// and the expected name closest to it.
fn unknown_field_suggestion(message: &str) -> Option<(String, Option<String>)> {
    let rest = message.split("unknown field `").nth(1)?;
    let (field, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    Some((field.to_owned(), suggest(field, expected.into_iter())))
}

/// Drops serde's long "expected one of ..." tails.
fn strip_expected(message: &str) -> String {
    message.split(", expected one of").next().unwrap_or(message).to_owned()
}

/// The candidate closest to `word`, if it is close enough to be a typo.
fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

fn yaml_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        assert_eq!(
            suggest("max_daily_spnd", ["max_daily_spend", "max_call_cost"].into_iter()).as_deref(),
            Some("max_daily_spend")
        );
        assert_eq!(suggest("zzz", ["budget", "scope"].into_iter()), None);
        assert_eq!(suggest("budgit", ["budget", "scope"].into_iter()).as_deref(), Some("budget"));
    }
}
