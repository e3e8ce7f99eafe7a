//! Human approval for AgentHalt: handlers that ask a person, and a [`Broker`] that keeps each
//! approval in the store as a durable, bound, single-use object.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use halt_core::{CallContext, Decision, StateStore, SystemClock, Clock};
//! use halt_engine::Engine;
//! use halt_hil::{Broker, BrokerConfig, Filter, Verdict};
//! use halt_store_memory::MemoryStore;
//! # #[derive(Debug)] struct Ask;
//! # #[halt_core::async_trait]
//! # impl halt_core::Guard for Ask {
//! #     fn name(&self) -> &str { "ask" }
//! #     async fn evaluate(&self, _: &halt_core::Call<'_>) -> Result<Decision, halt_core::GuardError> {
//! #         Ok(Decision::require_approval("a person decides"))
//! #     }
//! # }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
//! let clock: Arc<dyn Clock> = Arc::new(SystemClock);
//! let broker = Broker::new(Arc::clone(&store), Arc::clone(&clock), BrokerConfig::default());
//! let engine = Engine::builder()
//!     .store_arc(store)
//!     .clock_arc(clock)
//!     .guard(Ask)
//!     .approval_handler(broker.clone())
//!     .approval_timeout(Duration::from_secs(600))
//!     .build()
//!     .unwrap();
//!
//! // The agent's call waits for a person ...
//! let call = tokio::spawn({
//!     let engine = engine.clone();
//!     async move { engine.evaluate(CallContext::new("send_invoice")).await }
//! });
//! // ... who finds it in the queue (a console, the dashboard) and approves it.
//! let pending = loop {
//!     if let Some(a) = broker.list(&Filter::default()).await.unwrap().pop() { break a; }
//!     tokio::task::yield_now().await;
//! };
//! broker.decide(&pending.id, Verdict::Approve, "alice", Some("expected")).await.unwrap();
//! let outcome = call.await.unwrap();
//! assert!(outcome.is_allowed());
//! assert_eq!(outcome.approver(), Some("alice"));
//! # }
//! ```

mod broker;
mod console;
mod handlers;
mod record;
#[cfg(feature = "webhook")]
pub mod webhook;

pub use broker::{Broker, BrokerConfig, BrokerError, Filter, Verdict};
pub use console::Console;
pub use handlers::{AutoApprove, AutoDeny, Callback, CallbackFuture, OwnedRequest};
pub use record::{Approval, ApprovalState, BINDING_KEY, Edit, Vote, fingerprint};
#[cfg(feature = "webhook")]
pub use webhook::Webhook;
