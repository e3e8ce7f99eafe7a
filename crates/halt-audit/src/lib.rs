//! The AgentHalt audit log: one entry for every evaluation, approval asked and answered,
//! settlement and policy load; each entry chained to the one before it by SHA-256, so that an
//! edited, deleted, reordered or truncated line shows; every text of the call redacted with every
//! detector on before it is written; and written off the evaluating task.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use halt_audit::{AuditConfig, AuditLog, FileSink, Rotation, verify};
//! use halt_core::CallContext;
//! use halt_engine::Engine;
//!
//! let dir = std::env::temp_dir().join(format!("halt-audit-doc-{}", std::process::id()));
//! let path = dir.join("audit.jsonl");
//! let file = FileSink::open(&path, Rotation::default())?;
//! let audit = AuditLog::new(vec![Box::new(file)], AuditConfig::default())?;
//! let engine = Engine::builder().recorder(Arc::new(audit.clone())).build()?;
//!
//! let call = CallContext::new("send_email")
//!     .with_arguments(serde_json::json!({"to": "a@example.com", "body": "my SSN is 123-45-6789"}))?;
//! engine.evaluate_blocking(call);
//! audit.flush(Duration::from_secs(5));
//!
//! let written = std::fs::read_to_string(&path)?;
//! assert!(!written.contains("123-45-6789"), "redacted before it is written");
//! assert_eq!(verify(&[&path])?.entries, 1);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod entry;
mod log;
mod query;
mod sink;
mod verify;

pub use entry::{Entry, EntryKind, GENESIS, GuardEntry};
pub use log::{AuditConfig, AuditError, AuditLog, OnFull};
pub use query::Query;
pub use sink::{CallbackSink, FileSink, Ring, Rotation, Sink, TracingSink};
pub use verify::{Broken, Problem, Verified, verify};
