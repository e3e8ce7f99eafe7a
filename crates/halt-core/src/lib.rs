//! The contract of AgentHalt: what a guard, a store or an integration builds against.
//!
//! An agent proposes a [`CallContext`]. Each [`Guard`] sees it as a [`Call`] (its normalised
//! function name, the engine's time, its [`StateStore`]) and returns a [`Decision`]: allow,
//! deny, modify or require approval. An engine (`halt-engine`) runs the guards and concludes an
//! [`Outcome`], the most restrictive decision: `DENY > REQUIRE_APPROVAL > MODIFY > ALLOW`.
//! Counting guards reserve through [`Call::reserve`], so their effects count only for calls that
//! run. A [`GuardFactory`] lets a policy file configure a guard by name.
//!
//! This crate stays small: a third party publishes a guard or a store against it alone.
//!
//! The smallest guard:
//!
//! ```
//! use halt_core::{async_trait, Call, Decision, Guard, GuardError};
//!
//! /// Refuses every `drop_*` call, however the model spells it.
//! #[derive(Debug)]
//! struct NoDrops;
//!
//! #[async_trait]
//! impl Guard for NoDrops {
//!     fn name(&self) -> &str {
//!         "no_drops"
//!     }
//!     async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
//!         // `call.function()` is normalised: `DROP_table` and `ｄｒｏｐ_table` are `drop_table`.
//!         Ok(if call.function().starts_with("drop_") {
//!             Decision::deny("dropping is not allowed")
//!         } else {
//!             Decision::allow("not a drop")
//!         })
//!     }
//! }
//! ```

pub mod clock;
pub mod context;
pub mod decision;
pub mod factory;
pub mod guard;
pub mod money;
pub mod names;
pub mod partition;
pub mod store;

pub use async_trait::async_trait;
pub use clock::{CalendarWindow, Clock, DateLabel, ManualClock, ReplayClock, SystemClock, Timestamp};
pub use context::{CallContext, ContextError, JsonObject, ParseCallError};
pub use decision::{Decision, DecisionKind, Outcome};
pub use factory::{BuildError, FactoryError, GuardFactory, GuardRegistry, TypedFactory};
pub use guard::{Call, Effect, Guard, GuardError, GuardName, Usage};
pub use money::{Money, MoneyError};
pub use store::{StateStore, StoreError};
