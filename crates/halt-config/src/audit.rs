//! The `audit:` section: where the audit log is written, and what happens when it cannot be.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `audit:` section. With no section, nothing is audited.
///
/// ```yaml
/// audit:
///   file:
///     path: /var/log/agenthalt/audit.jsonl
///     rotate_bytes: 104857600   # start a new file past 100 MiB
///     rotate_daily: true        # and at each new day (UTC)
///   tracing: false              # also emit each entry as a `tracing` event
///   memory: 10000               # keep the last entries in memory, to be queried
///   queue: 10000                # entries waiting for the writer
///   on_full: drop               # drop (counted, and recorded as a gap) or deny
///   required: false             # true: refuse calls while the audit cannot be written
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// A JSONL file, rotated, the chain carrying on across files.
    pub file: Option<AuditFileSettings>,
    /// Emit each entry as a `tracing` event (target `agenthalt::audit`).
    pub tracing: bool,
    /// How many of the last entries to keep in memory, to be queried (0: none).
    pub memory: usize,
    /// How many entries may wait for the writer.
    pub queue: usize,
    /// What a full queue does.
    pub on_full: OnFullSetting,
    /// Refuse calls while the audit cannot be written ("audit unavailable (fail-safe)").
    pub required: bool,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { file: None, tracing: false, memory: 0, queue: 10_000, on_full: OnFullSetting::Drop, required: false }
    }
}

/// The audit file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditFileSettings {
    /// The file (created with its directory if missing; appended to, carrying on its chain).
    pub path: PathBuf,
    /// Start a new file once this one would pass this many bytes.
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
    /// Start a new file at each new day (UTC).
    #[serde(default)]
    pub rotate_daily: bool,
}

/// What a full audit queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFullSetting {
    /// Drop the entry, count it, and record the loss as a gap in the chain.
    #[default]
    Drop,
    /// Refuse the call.
    Deny,
}

/// Checks what the types do not; errors name the key path.
pub(crate) fn check(a: &AuditSettings) -> Result<(), (Vec<&'static str>, String)> {
    if a.file.is_none() && !a.tracing && a.memory == 0 {
        return Err((vec!["audit"], "names no sink: give it a `file`, `tracing: true` or `memory`".into()));
    }
    if a.queue == 0 || a.queue > 10_000_000 {
        return Err((vec!["audit", "queue"], "must be from 1 to 10000000".into()));
    }
    if let Some(f) = &a.file {
        if f.path.as_os_str().is_empty() {
            return Err((vec!["audit", "file", "path"], "must not be empty".into()));
        }
        if f.rotate_bytes.is_some_and(|b| b < 4096) {
            return Err((vec!["audit", "file", "rotate_bytes"], "must be at least 4096".into()));
        }
    }
    Ok(())
}

#[cfg(feature = "audit")]
impl crate::Policy {
    /// The audit log this policy's `audit:` section describes (`None` without the section), and
    /// its in-memory ring if it keeps one. The log's first entry records this policy's load.
    ///
    /// # Errors
    /// The file cannot be opened, or its chain cannot be carried on.
    pub fn audit_log(
        &self,
        origin: &str,
    ) -> Result<Option<(halt_audit::AuditLog, Option<halt_audit::Ring>)>, halt_audit::AuditError> {
        let Some(a) = &self.audit else { return Ok(None) };
        let mut sinks: Vec<Box<dyn halt_audit::Sink>> = Vec::new();
        if let Some(f) = &a.file {
            let rotation = halt_audit::Rotation { max_bytes: f.rotate_bytes, daily: f.rotate_daily };
            let file = halt_audit::FileSink::open(&f.path, rotation).map_err(halt_audit::AuditError::Resume)?;
            sinks.push(Box::new(file));
        }
        if a.tracing {
            sinks.push(Box::new(halt_audit::TracingSink));
        }
        let ring = (a.memory > 0).then(|| halt_audit::Ring::new(a.memory));
        if let Some(ring) = &ring {
            sinks.push(Box::new(ring.clone()));
        }
        let config = halt_audit::AuditConfig {
            queue: a.queue,
            on_full: match a.on_full {
                OnFullSetting::Drop => halt_audit::OnFull::Drop,
                OnFullSetting::Deny => halt_audit::OnFull::Deny,
            },
            required: a.required,
            policy_version: self.version.clone(),
        };
        let log = halt_audit::AuditLog::new(sinks, config)?;
        log.policy_loaded(&self.version, origin, self.guards.len());
        Ok(Some((log, ring)))
    }
}
