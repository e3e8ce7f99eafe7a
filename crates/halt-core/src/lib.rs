//! The core of AgentHalt: guardrails between an AI agent and the tools it calls.
//!
//! An agent proposes a [`CallContext`]; the [`Engine`] runs every applicable [`Guard`]
//! concurrently and returns an [`Outcome`] whose final decision is the most restrictive one:
//! `DENY > REQUIRE_APPROVAL > MODIFY > ALLOW`. A guard that fails, panics or times out denies
//! ("fail-safe"). Counting guards reserve in a [`StateStore`] while they evaluate; the engine
//! commits those reservations only for calls that run, releases them for calls that do not,
//! and holds them while a human decides.
//!
//! This crate is the contract that guard crates, stores and integrations build on; it stays
//! small. Built-in guards live in `halt-guards-*`, the facade is `agenthalt`.
//!
//! ```
//! use halt_core::{async_trait, Call, CallContext, Decision, Engine, Guard, GuardError};
//! use serde_json::json;
//!
//! /// Refuses emails to addresses outside the company.
//! #[derive(Debug)]
//! struct InternalMailOnly;
//!
//! #[async_trait]
//! impl Guard for InternalMailOnly {
//!     fn name(&self) -> &str {
//!         "internal_mail_only"
//!     }
//!     fn applies(&self, call: &Call<'_>) -> bool {
//!         call.function() == "send_email"
//!     }
//!     async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
//!         let to = call.arguments().get("to").and_then(|v| v.as_str()).unwrap_or("");
//!         Ok(if to.ends_with("@example.com") {
//!             Decision::allow("internal recipient")
//!         } else {
//!             Decision::deny(format!("external recipient {to}"))
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::builder().guard(InternalMailOnly).build()?;
//! let call = CallContext::new("Send_Email").with_arguments(json!({"to": "eve@evil.test"}))?;
//! let outcome = engine.evaluate(call).await;
//! assert!(outcome.is_denied());
//! assert_eq!(outcome.denial_reasons(), ["external recipient eve@evil.test"]);
//! # Ok(()) }
//! ```

pub mod approval;
pub mod clock;
pub mod context;
pub mod decision;
pub mod engine;
pub mod factory;
pub mod guard;
mod join;
pub mod money;
pub mod names;
pub mod partition;
pub mod store;

pub use approval::{ApprovalError, ApprovalHandler, ApprovalRequest, ApprovalResponse};
pub use async_trait::async_trait;
pub use clock::{CalendarWindow, Clock, DateLabel, ManualClock, ReplayClock, SystemClock, Timestamp};
pub use context::{CallContext, ContextError, JsonObject, ParseCallError};
pub use decision::{Decision, DecisionKind, Outcome};
pub use engine::{
    Engine, EngineBuilder, EngineError, EngineEvent, GuardInfo, HookError, Mode, Prepared, Preparer, ResolveError,
    SettleError, Settlement, SpentCall,
};
pub use factory::{BuildError, FactoryError, GuardFactory, GuardRegistry, TypedFactory};
pub use guard::{Call, Effect, Guard, GuardError, GuardName};
pub use money::{Money, MoneyError};
pub use store::{MemoryStore, StateStore, StoreError};
