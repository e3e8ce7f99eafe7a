//! AgentHalt: production-grade guardrails for AI agent tool calls.
//!
//! An agent proposes a call; before it runs, the [`Engine`] evaluates it against your policies
//! (budgets, purchases, deletions, rate limits, scopes, sensitive data) and answers allow, deny,
//! modify or require human approval. Policies live in code or YAML, never in the prompt, so no
//! prompt injection can talk them away.
//!
//! This facade re-exports the crates of the workspace behind features:
//!
//! | feature | crate | what it brings |
//! |---------|-------|----------------|
//! | (always) | `halt-core` | context, decisions, guards, engine, clock, money, state store |
//! | `budget` (default) | `halt-guards-budget` | [`budget::BudgetGuard`]: per-call, session, daily, monthly spend |
//! | `purchase` (default) | `halt-guards-purchase` | [`purchase::PurchaseGuard`]: amounts, categories, currency, daily totals |
//! | `deletion` (default) | `halt-guards-deletion` | [`deletion::DeletionGuard`]: protected resources, patterns, bulk and daily limits, cooldown |
//! | `rate-limit` (default) | `halt-guards-rate-limit` | [`rate_limit::RateLimitGuard`]: sliding minutes, sessions, loops, bursts |
//! | `scope` (default) | `halt-guards-scope` | [`scope::ScopeGuard`]: which tools each agent may call |
//! | `sensitive` (default) | `halt-guards-sensitive` | [`sensitive::SensitiveGuard`]: PII and secrets, denied or redacted |
//! | `yaml` (default) | `halt-config` | [`config::PolicyLoader`]: YAML policies with precise errors, JSON Schema |
//! | `rules` | `halt-guards-rules` | `rules::RulesGuard`: declarative rules on argument values (paths, URLs, email domains, amounts) |
//! | `hil` (default) | `halt-hil` | `hil::Broker`: human approvals, durable, bound and single-use; console, webhook, callback |
//! | `audit` (default) | `halt-audit` | `audit::AuditLog`: hash-chained, redacted audit entries of every decision |
//! | `openai` | `halt-openai` | `openai::ToolGuard`: OpenAI-style tool calls through the engine |
//! | `macros` | `halt-macros` | `#[guarded]`: a function's every call through the engine |
//! | `sled` | `halt-store-sled` | [`sled::SledStore`]: the embedded persistent store |
//! | `redis` | `halt-store-redis` | [`redis::RedisStore`]: one shared state for many processes and hosts |
//! | `full` | all of the above | everything |
//!
//! ```
//! use agenthalt::{async_trait, Call, CallContext, Decision, Engine, Guard, GuardError};
//!
//! #[derive(Debug)]
//! struct ReadOnly;
//!
//! #[async_trait]
//! impl Guard for ReadOnly {
//!     fn name(&self) -> &str { "read_only" }
//!     async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
//!         Ok(if call.function().starts_with("get_") {
//!             Decision::allow("read")
//!         } else {
//!             Decision::deny("read-only agent")
//!         })
//!     }
//! }
//!
//! let engine = Engine::builder().guard(ReadOnly).build()?;
//! assert!(engine.evaluate_blocking(CallContext::new("get_user")).is_allowed());
//! assert!(engine.evaluate_blocking(CallContext::new("delete_user")).is_denied());
//! # Ok::<(), agenthalt::EngineError>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use halt_core::*;
pub use halt_engine::*;
pub use halt_store_memory::MemoryStore;

/// The core crate, for paths such as `agenthalt::core::store::CounterSpec`.
pub use halt_core as core;
/// The engine crate, whole.
pub use halt_engine as engine;

/// The budget guard.
#[cfg(feature = "budget")]
#[cfg_attr(docsrs, doc(cfg(feature = "budget")))]
pub use halt_guards_budget as budget;

/// YAML policies.
#[cfg(feature = "yaml")]
#[cfg_attr(docsrs, doc(cfg(feature = "yaml")))]
pub use halt_config as config;

/// Human approval: handlers and the approval broker.
#[cfg(feature = "hil")]
#[cfg_attr(docsrs, doc(cfg(feature = "hil")))]
pub use halt_hil as hil;

/// The audit log: hash-chained, redacted entries of every decision.
#[cfg(feature = "audit")]
#[cfg_attr(docsrs, doc(cfg(feature = "audit")))]
pub use halt_audit as audit;

/// OpenAI-style tool calls (Chat Completions, streamed chunks, the Responses API) through the
/// engine.
#[cfg(feature = "openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
pub use halt_openai as openai;

/// `#[guarded]`: every call of a function goes through an engine before its body runs.
///
/// ```
/// use std::sync::LazyLock;
/// use agenthalt::{guarded, Blocked, Engine};
///
/// #[derive(Debug)]
/// enum MailError { Blocked(Blocked) }
/// impl From<Blocked> for MailError {
///     fn from(b: Blocked) -> Self { MailError::Blocked(b) }
/// }
///
/// static ENGINE: LazyLock<Engine> = LazyLock::new(Engine::new);
///
/// #[guarded(engine = ENGINE, agent_id = "mailer")]
/// fn send_email(to: String, body: String) -> Result<usize, MailError> {
///     Ok(to.len() + body.len())
/// }
///
/// assert_eq!(send_email("a@b.c".into(), "hi".into()).unwrap(), 7);
/// ```
#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use halt_macros::guarded;

#[cfg(feature = "macros")]
#[doc(hidden)]
pub mod __private;

/// The argument rules guard.
#[cfg(feature = "rules")]
#[cfg_attr(docsrs, doc(cfg(feature = "rules")))]
pub use halt_guards_rules as rules;

/// The embedded persistent store.
#[cfg(feature = "sled")]
#[cfg_attr(docsrs, doc(cfg(feature = "sled")))]
pub use halt_store_sled as sled;

/// The decision server: the HTTP API, the event feed and the dashboard page, to run inside a
/// program of your own (`agenthalt serve` runs it alone).
#[cfg(feature = "dashboard")]
#[cfg_attr(docsrs, doc(cfg(feature = "dashboard")))]
pub use halt_dashboard as dashboard;

/// The shared Redis store.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use halt_store_redis as redis;

/// The deletion guard.
#[cfg(feature = "deletion")]
#[cfg_attr(docsrs, doc(cfg(feature = "deletion")))]
pub use halt_guards_deletion as deletion;

/// The rate-limit guard.
#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub use halt_guards_rate_limit as rate_limit;

/// The scope guard.
#[cfg(feature = "scope")]
#[cfg_attr(docsrs, doc(cfg(feature = "scope")))]
pub use halt_guards_scope as scope;

/// The sensitive-data guard and its redactor.
#[cfg(feature = "sensitive")]
#[cfg_attr(docsrs, doc(cfg(feature = "sensitive")))]
pub use halt_guards_sensitive as sensitive;

/// The purchase guard.
#[cfg(feature = "purchase")]
#[cfg_attr(docsrs, doc(cfg(feature = "purchase")))]
pub use halt_guards_purchase as purchase;
