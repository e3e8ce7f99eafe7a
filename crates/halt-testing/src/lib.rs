//! Test support for AgentHalt: mock guards, and the conformance suite every
//! [`StateStore`](halt_core::StateStore) implementation must pass.
//!
//! ```
//! use halt_core::{CallContext, Decision};
//! use halt_engine::Engine;
//! use halt_testing::guards::StaticGuard;
//!
//! let engine = Engine::builder()
//!     .guard(StaticGuard::new("a", Decision::allow("fine")))
//!     .guard(StaticGuard::new("b", Decision::require_approval("ask")))
//!     .build()?;
//! assert!(engine.evaluate_blocking(CallContext::new("f")).needs_approval());
//! # Ok::<(), halt_engine::EngineError>(())
//! ```
//!
//! Run the store suite from a store crate's tests:
//!
//! ```
//! use std::sync::Arc;
//! use halt_core::StateStore;
//! use halt_store_memory::MemoryStore;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! halt_testing::store_conformance::run(|| async { Arc::new(MemoryStore::new()) as Arc<dyn StateStore> }).await;
//! # });
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test support: failing loudly is its job")]

pub mod bench;
pub mod guards;
pub mod mcp_servers;
pub mod redis_server;
pub mod store_conformance;
