//! [`AuditLog`]: the engine's recorder. Taking a record costs the evaluating task a copy and a
//! push onto a bounded queue; a writer thread redacts, chains, and writes to the sinks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use halt_core::{CallContext, Clock, DecisionKind, JsonObject, Outcome, SystemClock};
use halt_engine::{Record, RecordError, Recorder};
use halt_guards_sensitive::{Redactor, RedactorConfig, SensitiveConfig, detector_names};
use serde_json::{Value, json};

use crate::entry::{Entry, EntryKind, GENESIS, GuardEntry, sha256_hex};
use crate::sink::Sink;

/// What happens to an entry when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFull {
    /// It is dropped and counted; a gap entry records how many were lost.
    #[default]
    Drop,
    /// The call is refused ("audit unavailable (fail-safe)").
    Deny,
    /// The evaluating task waits for room: for batch runs (`agenthalt eval --audit`), never for
    /// a live agent.
    Wait,
}

/// The audit log's settings.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// How many entries may wait for the writer. Default 10,000.
    pub queue: usize,
    /// What a full queue does. Default: drop (and count).
    pub on_full: OnFull,
    /// Refuse calls while the audit cannot be written (a failing sink, a full queue).
    pub required: bool,
    /// The policy version stamped on entries (until [`AuditLog::policy_loaded`] changes it).
    pub policy_version: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { queue: 10_000, on_full: OnFull::Drop, required: false, policy_version: String::new() }
    }
}

/// Why an audit log could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A sink could not be read to carry on its chain (a file whose last line is not an entry).
    #[error("cannot carry on the audit chain: {0}")]
    Resume(std::io::Error),
    /// The writer thread could not start.
    #[error("cannot start the audit writer: {0}")]
    Thread(std::io::Error),
}

/// What the evaluating task hands the writer: owned, not yet redacted.
#[derive(Debug, Default)]
struct Raw {
    kind: Option<EntryKind>,
    at: f64,
    call_id: Option<String>,
    function: Option<String>,
    agent_id: Option<String>,
    session_id: Option<String>,
    decision: Option<DecisionKind>,
    enforced: Option<bool>,
    risk: Option<f64>,
    guards: Vec<GuardEntry>,
    policy_version: Option<Arc<str>>,
    approved: Option<bool>,
    approver: Option<String>,
    approver_reason: Option<String>,
    arguments: Option<JsonObject>,
    details: Option<Value>,
}

enum Message {
    Entry(Box<Raw>),
    Flush(mpsc::Sender<()>),
}

/// What the handles and the writer thread both see. The writer holds only this, so that dropping
/// the last handle drops the queue's sender and lets the writer finish.
struct Health {
    dropped: AtomicU64,
    failing: AtomicBool,
    clock: Arc<dyn Clock>,
}

impl Health {
    fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Shared {
    /// Read on every record (no clone of the sender); written once, to close.
    tx: RwLock<Option<SyncSender<Message>>>,
    health: Arc<Health>,
    config: AuditConfig,
    policy_version: RwLock<Arc<str>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The audit log: give it to the engine as its recorder ([`halt_engine::EngineBuilder::recorder`]).
/// Clones share it. Dropping the last clone (or [`AuditLog::close`]) writes what is queued.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts a log writing to `sinks`, carrying on the chain where the first sink that keeps
    /// one left it (a file from an earlier run), or beginning a new chain.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn new(mut sinks: Vec<Box<dyn Sink>>, config: AuditConfig) -> Result<Self, AuditError> {
        let mut resumed = None;
        for sink in &mut sinks {
            if let Some(point) = sink.resume().map_err(AuditError::Resume)? {
                resumed = Some(point);
                break;
            }
        }
        let mut chain = match &resumed {
            Some((last, _)) => Chain { id: last.chain.clone(), next: last.seq + 1, prev: last.hash.clone() },
            None => Chain { id: new_chain_id(), next: 0, prev: GENESIS.to_owned() },
        };
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let policy_version = RwLock::new(Arc::from(config.policy_version.as_str()));
        let health = Arc::new(Health {
            dropped: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            clock: Arc::new(SystemClock),
        });
        if resumed.is_some_and(|(_, cut)| cut) {
            // A line a crash cut short was dropped from the file: say so in the chain.
            health.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let shared = Arc::new(Shared {
            tx: RwLock::new(Some(tx)),
            health: Arc::clone(&health),
            config,
            policy_version,
            writer: Mutex::new(None),
        });
        let redactor = audit_redactor();
        let writer = std::thread::Builder::new()
            .name("agenthalt-audit".into())
            .spawn(move || write_loop(&rx, &mut sinks, &mut chain, &redactor, &health))
            .map_err(AuditError::Thread)?;
        *shared.writer.lock().unwrap_or_else(PoisonError::into_inner) = Some(writer);
        Ok(Self { shared })
    }

    /// How many entries were dropped because the queue was full, since the log started.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.shared.health.dropped_total()
    }

    /// Records that a policy was loaded, and stamps its version on the entries that follow.
    pub fn policy_loaded(&self, version: &str, origin: &str, guards: usize) {
        *self.shared.policy_version.write().unwrap_or_else(PoisonError::into_inner) = Arc::from(version);
        let raw = Raw {
            kind: Some(EntryKind::PolicyLoad),
            at: self.shared.health.clock.now().as_secs_f64(),
            policy_version: Some(Arc::from(version)),
            details: Some(json!({"origin": origin, "guards": guards})),
            ..Raw::default()
        };
        let _ = self.shared.push(raw);
    }

    /// Waits until every entry queued so far is written and the sinks are flushed (at most
    /// `timeout`). Returns whether it got there.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::channel();
        {
            let tx = self.shared.tx.read().unwrap_or_else(PoisonError::into_inner);
            let Some(tx) = tx.as_ref() else { return true };
            if tx.send(Message::Flush(ack)).is_err() {
                return false;
            }
        }
        done.recv_timeout(timeout).is_ok()
    }

    /// Writes what is queued and stops the writer; later records are refused.
    pub fn close(&self) {
        drop(self.shared.tx.write().unwrap_or_else(PoisonError::into_inner).take());
        if let Some(writer) = self.shared.writer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        drop(self.tx.get_mut().unwrap_or_else(PoisonError::into_inner).take());
        if let Some(writer) = self.writer.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = writer.join();
        }
    }
}

impl Shared {
    /// Queues a record; says why not when the call must then be refused.
    fn push(&self, raw: Raw) -> Result<(), RecordError> {
        let unavailable = || RecordError("audit unavailable (fail-safe)".into());
        let tx = self.tx.read().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = tx.as_ref() else { return Err(unavailable()) };
        let message = Message::Entry(Box::new(raw));
        let sent = if self.config.on_full == OnFull::Wait {
            tx.send(message).map_err(|e| TrySendError::Disconnected(e.0))
        } else {
            tx.try_send(message)
        };
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.health.dropped.fetch_add(1, Ordering::Relaxed);
                if self.config.required || self.config.on_full == OnFull::Deny {
                    return Err(unavailable());
                }
            }
            Err(TrySendError::Disconnected(_)) => return Err(unavailable()),
        }
        if self.config.required && self.health.failing.load(Ordering::Relaxed) {
            return Err(unavailable());
        }
        Ok(())
    }

    fn version(&self) -> Arc<str> {
        Arc::clone(&self.policy_version.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Recorder for AuditLog {
    fn record(&self, record: Record<'_>) -> Result<(), RecordError> {
        let s = &self.shared;
        let raw = match record {
            Record::Evaluated { context, outcome } => Raw {
                kind: Some(EntryKind::Evaluation),
                policy_version: Some(s.version()),
                ..decided(context, outcome)
            },
            Record::ApprovalRequested { context, outcome } => Raw {
                kind: Some(EntryKind::ApprovalRequest),
                policy_version: Some(s.version()),
                ..decided(context, outcome)
            },
            Record::ApprovalResolved { call_id, context, response } => Raw {
                kind: Some(EntryKind::ApprovalDecision),
                at: s.health.clock.now().as_secs_f64(),
                call_id: Some(call_id.to_owned()),
                function: context.map(|c| c.function_name.clone()),
                agent_id: context.and_then(|c| c.agent_id.clone()),
                session_id: context.and_then(|c| c.session_id.clone()),
                policy_version: Some(s.version()),
                approved: Some(response.approved),
                approver: response.approver.clone(),
                approver_reason: response.reason.clone(),
                arguments: response.arguments.clone(),
                details: response.function.as_ref().map(|f| json!({"edited_function": f})),
                ..Raw::default()
            },
            Record::Settled(settlement) => Raw {
                kind: Some(EntryKind::Settlement),
                at: s.health.clock.now().as_secs_f64(),
                call_id: Some(settlement.call_id.clone()),
                details: Some(json!({
                    "previous": settlement.previous.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "actual": settlement.actual.to_string(),
                    "counters": settlement.counters,
                })),
                ..Raw::default()
            },
            _ => return Ok(()),
        };
        s.push(raw)
    }

    fn required(&self) -> bool {
        self.shared.config.required || self.shared.config.on_full == OnFull::Deny
    }
}

/// A call and its outcome, copied.
fn decided(ctx: &CallContext, outcome: &Outcome) -> Raw {
    Raw {
        at: ctx.timestamp.unwrap_or_default(),
        call_id: Some(ctx.call_id.clone()),
        function: Some(ctx.function_name.clone()),
        agent_id: ctx.agent_id.clone(),
        session_id: ctx.session_id.clone(),
        decision: Some(outcome.decision()),
        enforced: Some(outcome.enforced()),
        risk: Some(outcome.max_risk_score()),
        guards: outcome
            .decisions()
            .iter()
            .map(|d| GuardEntry {
                guard: d.guard().to_owned(),
                decision: kind_name(d.kind()).to_owned(),
                reason: d.reason().to_owned(),
                risk: d.risk_score(),
            })
            .collect(),
        arguments: Some(ctx.arguments.clone()),
        ..Raw::default()
    }
}

fn kind_name(kind: DecisionKind) -> &'static str {
    match kind {
        DecisionKind::Allow => "allow",
        DecisionKind::Modify => "modify",
        DecisionKind::RequireApproval => "require_approval",
        DecisionKind::Deny => "deny",
    }
}

/// The redactor of the audit: every detector, and the usual sensitive field names, whatever the
/// policy enables.
fn audit_redactor() -> Redactor {
    let config = RedactorConfig {
        patterns: detector_names().into_iter().map(str::to_owned).collect(),
        custom_patterns: std::collections::BTreeMap::new(),
        sensitive_fields: SensitiveConfig::default().sensitive_fields,
        max_depth: 64,
        max_bytes: 1 << 20,
    };
    // Built from the built-in names only, so it cannot fail; if it ever did, nothing is logged
    // unredacted: every value is left out instead.
    Redactor::new(&config).unwrap_or_else(|e| unreachable!("the built-in detectors are valid: {e}"))
}

/// The chain as the writer carries it on.
struct Chain {
    id: String,
    next: u64,
    prev: String,
}

fn new_chain_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.write_u32(std::process::id());
    sha256_hex(&h.finish().to_le_bytes())[..16].to_owned()
}

fn write_loop(
    rx: &Receiver<Message>,
    sinks: &mut [Box<dyn Sink>],
    chain: &mut Chain,
    redactor: &Redactor,
    shared: &Health,
) {
    // The drops the chain has already recorded in gap entries.
    let mut recorded = 0u64;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Entry(raw) => {
                    let total = shared.dropped_total();
                    let lost = total.saturating_sub(std::mem::replace(&mut recorded, total));
                    if lost > 0 {
                        let gap =
                            Raw { kind: Some(EntryKind::Gap), at: shared.clock.now().as_secs_f64(), ..Raw::default() };
                        write(sinks, chain, redactor, shared, gap, Some(lost));
                    }
                    write(sinks, chain, redactor, shared, *raw, None);
                }
                Message::Flush(ack) => {
                    flush(sinks, shared);
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        flush(sinks, shared);
    }
    flush(sinks, shared);
}

fn flush(sinks: &mut [Box<dyn Sink>], shared: &Health) {
    let mut ok = true;
    for sink in sinks.iter_mut() {
        ok &= sink.flush().is_ok();
    }
    if !ok {
        shared.failing.store(true, Ordering::Relaxed);
    }
}

fn write(
    sinks: &mut [Box<dyn Sink>],
    chain: &mut Chain,
    redactor: &Redactor,
    shared: &Health,
    raw: Raw,
    lost: Option<u64>,
) {
    let mut entry = redacted(raw, redactor);
    entry.seq = chain.next;
    entry.chain.clone_from(&chain.id);
    entry.prev = std::mem::take(&mut chain.prev);
    entry.lost = lost;
    let line = entry.seal();
    chain.next += 1;
    chain.prev.clone_from(&entry.hash);
    let mut ok = true;
    for sink in sinks.iter_mut() {
        ok &= sink.write(&entry, &line).is_ok();
    }
    shared.failing.store(!ok, Ordering::Relaxed);
}

/// The entry of `raw`, every text that came from the call redacted.
fn redacted(raw: Raw, redactor: &Redactor) -> Entry {
    // A text that cannot be scanned (too large) is left out, never written as it is.
    let clean = |text: Option<String>| {
        let mut value = Value::String(text?);
        match (redactor.redact_in_place(&mut value), value) {
            (Ok(_), Value::String(s)) => Some(s),
            _ => None,
        }
    };
    let call_id = clean(raw.call_id);
    let function = clean(raw.function);
    let agent_id = clean(raw.agent_id);
    let session_id = clean(raw.session_id);
    let approver = clean(raw.approver);
    let approver_reason = clean(raw.approver_reason);
    let arguments = raw.arguments.map(|args| {
        let mut value = Value::Object(args);
        match redactor.redact_in_place(&mut value) {
            Ok(_) => value,
            // Partly redacted is not redacted: the arguments are left out.
            Err(e) => Value::String(format!("[not logged: {e}]")),
        }
    });
    Entry {
        at: raw.at,
        kind: raw.kind,
        call_id,
        function,
        agent_id,
        session_id,
        decision: raw.decision.map(|d| kind_name(d).to_owned()),
        enforced: raw.enforced,
        risk: raw.risk,
        guards: raw.guards,
        policy_version: raw.policy_version.map(|v| v.to_string()).filter(|v| !v.is_empty()),
        approved: raw.approved,
        approver,
        approver_reason,
        arguments,
        details: raw.details,
        ..Entry::default()
    }
}
