//! The AgentHalt engine: runs the guards on every proposed call and keeps the books on their
//! effects.
//!
//! An [`Engine`] evaluates each applicable guard concurrently on the calling task and returns an
//! [`Outcome`](halt_core::Outcome) whose final decision is the most restrictive one. A guard that
//! fails, panics or times out denies ("fail-safe"). Reservations made while guards evaluate are
//! committed when the call runs, released when it does not, and held while a human decides
//! ([`ApprovalHandler`]); [`Engine::settle`] corrects a cost once the call ran.
//!
//! ```
//! use halt_core::{async_trait, Call, CallContext, Decision, Guard, GuardError};
//! use halt_engine::Engine;
//!
//! #[derive(Debug)]
//! struct NoDrops;
//!
//! #[async_trait]
//! impl Guard for NoDrops {
//!     fn name(&self) -> &str {
//!         "no_drops"
//!     }
//!     async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
//!         Ok(if call.function().starts_with("drop_") {
//!             Decision::deny("dropping is not allowed")
//!         } else {
//!             Decision::allow("not a drop")
//!         })
//!     }
//! }
//!
//! let engine = Engine::builder().guard(NoDrops).build()?;
//! assert!(engine.evaluate_blocking(CallContext::new("DROP_table")).is_denied());
//! # Ok::<(), halt_engine::EngineError>(())
//! ```

mod approval;
mod blocked;
mod builder;
mod effects;
mod engine;
mod evaluate;
mod events;
mod join;
mod prepare;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
mod prepare_tests;
mod record;
mod stream;

pub use approval::ResolveError;
pub use approval::{ApprovalError, ApprovalHandler, ApprovalRequest, ApprovalResponse};
pub use blocked::Blocked;
pub use builder::EngineBuilder;
pub use effects::{SettleError, Settlement};
pub use engine::{ENGINE_GUARD_NAME, Engine, EngineError, GuardInfo, HookError, Mode, PostHook, PreHook};
pub use events::EngineEvent;
pub use record::{Record, RecordError, Recorder};
pub use stream::StreamError;
