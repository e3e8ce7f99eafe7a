//! The broker: pending approvals as records in the [`StateStore`], so that they outlive a
//! restart (sled) and are shared between processes (Redis). Every rule is enforced here.

use std::sync::Arc;
use std::time::Duration;

use halt_core::names::{self, NamePatterns};
use halt_core::store::StoreError;
use halt_core::{CallContext, Clock, DecisionKind, StateStore, Timestamp, async_trait};
use halt_engine::{ApprovalError, ApprovalHandler, ApprovalRequest, ApprovalResponse};
use serde_json::Value;
use tokio::sync::Notify;

use crate::record::{Approval, ApprovalState, Edit, Vote, fingerprint};

/// The longest approver name accepted.
const MAX_APPROVER_BYTES: usize = 256;
/// The most approvals kept at once (pending, or decided within the retention).
const MAX_APPROVALS: usize = 10_000;

/// Errors of the broker's operations. Each leaves the approval as it was.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// No approval has that id (never asked, or forgotten after its retention).
    #[error("no approval with id `{0}`")]
    Unknown(String),
    /// It was already decided (or used, or expired): of concurrent decisions, one wins.
    #[error("approval `{id}` is already decided: {state}")]
    AlreadyDecided {
        /// The approval.
        id: String,
        /// Where it stands.
        state: ApprovalState,
    },
    /// Nobody decided in time: it was refused.
    #[error("approval `{0}` expired")]
    Expired(String),
    /// The approver is missing or not acceptable (the agent that asked cannot approve).
    #[error("invalid approver: {0}")]
    InvalidApprover(String),
    /// The edit is not acceptable.
    #[error("invalid edit: {0}")]
    InvalidEdit(String),
    /// Too many approvals are kept at once.
    #[error("too many approvals pending (at most {MAX_APPROVALS})")]
    Full,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an approver decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The call may run as proposed (under a two-person rule: one of the approvals needed).
    Approve,
    /// The call must not run.
    Deny,
    /// The call may run with these arguments (a JSON object), after every guard checks it
    /// again; naming another `function` asks again.
    Edit {
        /// The edited arguments; anything but a JSON object is refused.
        arguments: Value,
        /// Another tool, if any.
        function: Option<String>,
    },
}

/// Which approvals [`Broker::list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only in this state (as it stands now: a pending one past its time is expired).
    pub state: Option<ApprovalState>,
    /// Only for this agent.
    pub agent_id: Option<String>,
    /// Only for this function (compared normalised).
    pub function: Option<String>,
}

/// The broker's settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// How long an approval waits for a decision before it is refused. Default 5 minutes.
    pub expires_after: Duration,
    /// How long a decided approval is kept to be seen (listed, audited). Default 1 day.
    pub retention: Duration,
    /// The policy's version: an approval covers calls evaluated under the same one.
    pub policy_version: String,
    /// How often a waiter looks at the store for a decision made in another process.
    pub poll_interval: Duration,
    /// Functions that need more than one approver, and how many: the largest number among the
    /// patterns a function matches counts.
    pub require_approvers: Vec<(NamePatterns, u32)>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            expires_after: Duration::from_secs(300),
            retention: Duration::from_secs(86_400),
            policy_version: String::new(),
            poll_interval: Duration::from_millis(100),
            require_approvers: Vec::new(),
        }
    }
}

struct Inner {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    config: BrokerConfig,
    /// Told of each new approval, to ask a human (console, webhook, callback).
    notify: Option<Arc<dyn ApprovalHandler>>,
    /// Woken by every decision made in this process (shared by a broker and its copies).
    decided: Arc<Notify>,
}

/// Keeps approvals in the store and enforces their rules: each is bound to the exact call (and
/// policy version) it was asked for, used at most once, decided once, refused when it expires,
/// and approved by as many distinct people as the two-person rule says.
///
/// As the engine's [`ApprovalHandler`], it records each request, tells its own handler (if any)
/// so that a human is asked, and waits until somebody decides through [`Broker::decide`] (from
/// this process or another sharing the store), then uses the approval.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker keeping approvals in `store`, on `clock` (use the engine's two).
    #[must_use]
    pub fn new(store: Arc<dyn StateStore>, clock: Arc<dyn Clock>, config: BrokerConfig) -> Self {
        Self { inner: Arc::new(Inner { store, clock, config, notify: None, decided: Arc::new(Notify::new()) }) }
    }

    /// The same broker, telling `handler` of each new approval so that it asks a human; its
    /// answer becomes that human's decision.
    #[must_use]
    pub fn with_handler(self, handler: Arc<dyn ApprovalHandler>) -> Self {
        let i = &self.inner;
        let inner = Inner {
            store: Arc::clone(&i.store),
            clock: Arc::clone(&i.clock),
            config: i.config.clone(),
            notify: Some(handler),
            decided: Arc::clone(&i.decided),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Records a new pending approval for the call in `request`.
    ///
    /// # Errors
    /// [`BrokerError::Full`], or a store error.
    pub async fn ask(&self, request: &ApprovalRequest<'_>) -> Result<Approval, BrokerError> {
        let ctx = request.context;
        let outcome = request.outcome;
        let now = self.now();
        let config = &self.inner.config;
        let function = names::normalize(&ctx.function_name);
        let required = config
            .require_approvers
            .iter()
            .filter(|(p, _)| p.is_match(&function))
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(1)
            .max(1);
        let asking = outcome.decisions().iter().filter(|d| d.kind() == DecisionKind::RequireApproval);
        let approval = Approval {
            id: new_id(),
            call_id: ctx.call_id.clone(),
            function: ctx.function_name.clone(),
            arguments: outcome.modified_arguments().unwrap_or(&ctx.arguments).clone(),
            agent_id: ctx.agent_id.clone(),
            session_id: ctx.session_id.clone(),
            fingerprint: fingerprint(ctx, &config.policy_version),
            policy_version: config.policy_version.clone(),
            reasons: asking.clone().map(|d| d.reason().to_owned()).collect(),
            guards: asking.map(|d| d.guard().to_owned()).collect(),
            risk: outcome.max_risk_score(),
            created_at: now.as_secs_f64(),
            expires_at: now.saturating_add(config.expires_after).as_secs_f64(),
            state: ApprovalState::Pending,
            required,
            votes: Vec::new(),
            decided_by: None,
            decided_at: None,
            reason: None,
            edit: None,
            used_at: None,
        };
        let store = &self.inner.store;
        let keep_until = keep_until(approval.expires_at, config.retention);
        let mut full = false;
        let mut corrupt = None;
        let id = approval.id.clone();
        store
            .update_record(
                INDEX_KEY,
                &mut |current, out| {
                    let mut index: Vec<(String, i64)> = match current.map(serde_json::from_slice).transpose() {
                        Ok(index) => index.unwrap_or_default(),
                        Err(e) => {
                            // Never start a new list over one that cannot be read.
                            corrupt = Some(e.to_string());
                            return false;
                        }
                    };
                    corrupt = None;
                    index.retain(|(_, until)| *until > now.as_micros());
                    full = index.len() >= MAX_APPROVALS;
                    if !full {
                        index.push((id.clone(), keep_until.as_micros()));
                    }
                    *out = serde_json::to_vec(&index).unwrap_or_default();
                    true
                },
                None,
                now,
            )
            .await?;
        if let Some(reason) = corrupt {
            return Err(StoreError::Corrupt { key: INDEX_KEY.into(), reason }.into());
        }
        if full {
            return Err(BrokerError::Full);
        }
        let bytes = encode(&approval);
        if !store.swap_record(&approval_key(&approval.id), None, Some(&bytes), Some(keep_until), now).await? {
            return Err(StoreError::Corrupt { key: approval_key(&approval.id), reason: "id taken".into() }.into());
        }
        let by_call = by_call_key(&approval.fingerprint);
        store.put_record(&by_call, Some(approval.id.as_bytes()), Some(keep_until), now).await?;
        Ok(approval)
    }

    /// The approval `id`, as it stands now.
    ///
    /// # Errors
    /// [`BrokerError::Unknown`], or a store error.
    pub async fn get(&self, id: &str) -> Result<Approval, BrokerError> {
        let now = self.now();
        let mut approval = self.read(id, now).await?.ok_or_else(|| BrokerError::Unknown(id.to_owned()))?;
        approval.state = approval.state_at(now.as_secs_f64());
        Ok(approval)
    }

    /// The approvals kept now that pass `filter`, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn list(&self, filter: &Filter) -> Result<Vec<Approval>, BrokerError> {
        let now = self.now();
        let index: Vec<(String, i64)> = match self.inner.store.get_record(INDEX_KEY, now).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt { key: INDEX_KEY.into(), reason: e.to_string() })?,
            None => Vec::new(),
        };
        let function = filter.function.as_deref().map(names::normalize);
        let mut out = Vec::new();
        for (id, _) in index {
            let Some(mut a) = self.read(&id, now).await? else { continue };
            a.state = a.state_at(now.as_secs_f64());
            if filter.state.is_some_and(|s| s != a.state)
                || filter.agent_id.as_ref().is_some_and(|agent| a.agent_id.as_ref() != Some(agent))
                || function.as_ref().is_some_and(|f| names::normalize(&a.function) != *f)
            {
                continue;
            }
            out.push(a);
        }
        out.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        Ok(out)
    }

    /// Decides approval `id` as `approver`. Of concurrent decisions, exactly one wins; the others
    /// get [`BrokerError::AlreadyDecided`]. Under a two-person rule an approval only counts its
    /// approver once, and completes with the last approver needed; any one denial ends it.
    ///
    /// # Errors
    /// [`BrokerError::Unknown`], [`BrokerError::AlreadyDecided`], [`BrokerError::Expired`],
    /// [`BrokerError::InvalidApprover`], [`BrokerError::InvalidEdit`], or a store error. Each
    /// changes nothing.
    pub async fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        approver: &str,
        reason: Option<&str>,
    ) -> Result<Approval, BrokerError> {
        check_approver(approver)?;
        let act = match verdict {
            Verdict::Edit { arguments: Value::Object(arguments), function } => {
                if let Some(f) = &function {
                    names::validate(f).map_err(|e| BrokerError::InvalidEdit(format!("function: {e}")))?;
                }
                Act::Edit(Edit { arguments, function })
            }
            Verdict::Edit { .. } => {
                return Err(BrokerError::InvalidEdit("the edited arguments must be a JSON object".into()));
            }
            Verdict::Approve => Act::Approve,
            Verdict::Deny => Act::Deny,
        };
        let now = self.now();
        let at = now.as_secs_f64();
        let key = approval_key(id);
        // The record's own expiry never changes: read it once to keep the record as long.
        let keep_until = match self.read(id, now).await? {
            Some(a) => keep_until(a.expires_at, self.inner.config.retention),
            None => return Err(BrokerError::Unknown(id.to_owned())),
        };
        let vote = Vote { approver: approver.to_owned(), at, reason: reason.map(str::to_owned) };
        let mut result = Err(BrokerError::Unknown(id.to_owned()));
        self.inner
            .store
            .update_record(
                &key,
                &mut |current, out| {
                    result = decided(current, id, at, &vote, &act);
                    match &result {
                        Ok((a, true)) => {
                            *out = encode(a);
                            true
                        }
                        _ => false,
                    }
                },
                Some(keep_until),
                now,
            )
            .await?;
        let (approval, changed) = result?;
        if changed {
            self.inner.decided.notify_waiters();
        }
        Ok(approval)
    }

    /// Waits until approval `id` is decided (or expires), for at most `timeout`; returns it as it
    /// stands then (still pending if nobody decided in time).
    ///
    /// # Errors
    /// [`BrokerError::Unknown`], or a store error.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Approval, BrokerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Listen before reading, so that a decision between the two is not missed.
            let notified = self.inner.decided.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let approval = self.get(id).await?;
            let now = tokio::time::Instant::now();
            if approval.state != ApprovalState::Pending || now >= deadline {
                return Ok(approval);
            }
            let step = self.inner.config.poll_interval.min(deadline - now);
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(step) => {}
            }
        }
    }

    /// Uses approval `id` for its call: an approved one becomes used, once.
    async fn take(&self, id: &str) -> Result<Approval, BrokerError> {
        let now = self.now();
        let Some(current) = self.read(id, now).await? else { return Err(BrokerError::Unknown(id.to_owned())) };
        let retention = self.inner.config.retention;
        let mut result = Err(BrokerError::Unknown(id.to_owned()));
        self.inner
            .store
            .update_record(
                &approval_key(id),
                &mut |bytes, out| {
                    result = parse(bytes, id).and_then(|mut a| {
                        if a.state != ApprovalState::Approved {
                            return Err(BrokerError::AlreadyDecided { id: id.to_owned(), state: a.state });
                        }
                        a.state = ApprovalState::Used;
                        a.used_at = Some(now.as_secs_f64());
                        Ok(a)
                    });
                    result.as_ref().is_ok_and(|a| {
                        *out = encode(a);
                        true
                    })
                },
                Some(keep_until(current.expires_at, retention)),
                now,
            )
            .await?;
        result
    }

    /// Marks a pending approval past its time as expired, for good.
    async fn expire(&self, id: &str) -> Result<(), BrokerError> {
        let now = self.now();
        let Some(current) = self.read(id, now).await? else { return Ok(()) };
        let at = now.as_secs_f64();
        self.inner
            .store
            .update_record(
                &approval_key(id),
                &mut |bytes, out| match parse(bytes, id) {
                    Ok(mut a) if a.state == ApprovalState::Pending && at >= a.expires_at => {
                        a.state = ApprovalState::Expired;
                        a.decided_by = Some("broker".into());
                        a.decided_at = Some(at);
                        *out = encode(&a);
                        true
                    }
                    _ => false,
                },
                Some(keep_until(current.expires_at, self.inner.config.retention)),
                now,
            )
            .await?;
        Ok(())
    }

    /// Uses an approval already given for exactly this call, if there is one.
    async fn use_given(&self, ctx: &CallContext) -> Result<Option<Approval>, BrokerError> {
        let now = self.now();
        let fp = fingerprint(ctx, &self.inner.config.policy_version);
        let Some(id) = self.inner.store.get_record(&by_call_key(&fp), now).await? else { return Ok(None) };
        let id = String::from_utf8_lossy(&id).into_owned();
        match self.read(&id, now).await? {
            Some(a)
                if a.state == ApprovalState::Approved && a.fingerprint == fp && now.as_secs_f64() < a.expires_at =>
            {
                match self.take(&id).await {
                    Ok(a) => Ok(Some(a)),
                    Err(BrokerError::AlreadyDecided { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            _ => Ok(None),
        }
    }

    async fn read(&self, id: &str, now: Timestamp) -> Result<Option<Approval>, BrokerError> {
        match self.inner.store.get_record(&approval_key(id), now).await? {
            Some(bytes) => parse(Some(&bytes), id).map(Some),
            None => Ok(None),
        }
    }

    /// Asks, lets the handler (if any) ask a human, and waits for the decision; then uses it.
    async fn settle(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, BrokerError> {
        if let Some(given) = self.use_given(request.context).await? {
            return Ok(response(&given));
        }
        let approval = self.ask(request).await?;
        let id = approval.id.as_str();
        let front = async {
            if let Some(handler) = &self.inner.notify {
                let asked = ApprovalRequest { expires_at: approval.expires_at, approval_id: Some(id), ..*request };
                match handler.request_approval(&asked).await {
                    Ok(answer) => {
                        let approver = answer.approver.clone().unwrap_or_else(|| "approval handler".into());
                        let verdict = match (answer.approved, answer.arguments) {
                            (false, _) => Verdict::Deny,
                            (true, None) if answer.function.is_none() => Verdict::Approve,
                            (true, arguments) => Verdict::Edit {
                                arguments: Value::Object(
                                    arguments.unwrap_or_else(|| request.context.arguments.clone()),
                                ),
                                function: answer.function,
                            },
                        };
                        let decided = self.decide(id, verdict, &approver, answer.reason.as_deref()).await;
                        if let Err(e) = decided {
                            tracing::debug!(approval = id, error = %e, "the handler's answer was not taken");
                        }
                    }
                    // The answer comes through the broker (a dashboard, a later webhook call).
                    Err(ApprovalError::Deferred) => {}
                    Err(e) => {
                        let reason = format!("the approval handler failed: {e}");
                        let _ = self.decide(id, Verdict::Deny, "broker", Some(&reason)).await;
                    }
                }
            }
            std::future::pending::<()>().await;
        };
        let settled = async {
            loop {
                let a = self.wait(id, Duration::from_secs(3600)).await?;
                if a.state != ApprovalState::Pending {
                    return Ok::<_, BrokerError>(a);
                }
            }
        };
        let decided = tokio::select! {
            decided = settled => decided?,
            () = front => unreachable!("the front never ends"),
        };
        match decided.state {
            ApprovalState::Approved => Ok(response(&self.take(id).await?)),
            ApprovalState::Expired => {
                self.expire(id).await?;
                Ok(ApprovalResponse::refuse("broker").with_reason("the approval expired"))
            }
            ApprovalState::Pending | ApprovalState::Used | ApprovalState::Denied => Ok(response(&decided)),
        }
    }
}

#[async_trait]
impl ApprovalHandler for Broker {
    async fn request_approval(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        self.settle(request).await.map_err(|e| ApprovalError::Channel(e.to_string()))
    }
}

/// The engine's answer for a decided approval.
fn response(a: &Approval) -> ApprovalResponse {
    let approved = matches!(a.state, ApprovalState::Approved | ApprovalState::Used);
    ApprovalResponse {
        approved,
        approver: a.decided_by.clone(),
        reason: a.reason.clone(),
        arguments: a.edit.as_ref().map(|e| e.arguments.clone()),
        function: a.edit.as_ref().and_then(|e| e.function.clone()),
    }
}

/// A [`Verdict`] checked.
enum Act {
    Approve,
    Deny,
    Edit(Edit),
}

/// The approval after `vote` decided it by `act`, and whether that changed it.
fn decided(current: Option<&[u8]>, id: &str, at: f64, vote: &Vote, act: &Act) -> Result<(Approval, bool), BrokerError> {
    let mut a = parse(current, id)?;
    if a.state != ApprovalState::Pending {
        return Err(BrokerError::AlreadyDecided { id: id.to_owned(), state: a.state });
    }
    if at >= a.expires_at {
        return Err(BrokerError::Expired(id.to_owned()));
    }
    if a.agent_id.as_deref().is_some_and(|agent| names::normalize(agent) == names::normalize(&vote.approver)) {
        return Err(BrokerError::InvalidApprover("the agent that asked cannot decide its own call".into()));
    }
    let finish = |a: &mut Approval, state| {
        a.state = state;
        a.decided_by = Some(vote.approver.clone());
        a.decided_at = Some(at);
        a.reason.clone_from(&vote.reason);
    };
    match act {
        Act::Deny => finish(&mut a, ApprovalState::Denied),
        Act::Approve => {
            if a.votes.iter().any(|v| v.approver == vote.approver) {
                // The same approver twice counts once.
                return Ok((a, false));
            }
            a.votes.push(vote.clone());
            if a.votes.len() >= a.required as usize {
                finish(&mut a, ApprovalState::Approved);
            }
        }
        Act::Edit(edit) => {
            if a.required > 1 {
                return Err(BrokerError::InvalidEdit(format!(
                    "a call that needs {} approvers cannot be approved with edits: deny it, and the edited call is proposed anew",
                    a.required
                )));
            }
            a.votes.push(vote.clone());
            a.edit = Some(edit.clone());
            finish(&mut a, ApprovalState::Approved);
        }
    }
    Ok((a, true))
}

fn parse(bytes: Option<&[u8]>, id: &str) -> Result<Approval, BrokerError> {
    let bytes = bytes.ok_or_else(|| BrokerError::Unknown(id.to_owned()))?;
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt { key: approval_key(id), reason: e.to_string() }.into())
}

fn keep_until(expires_at: f64, retention: Duration) -> Timestamp {
    Timestamp::from_secs_f64(expires_at).unwrap_or(Timestamp::MAX).saturating_add(retention)
}

/// The store key of the list of approvals kept.
const INDEX_KEY: &str = "halt/approvals";

fn approval_key(id: &str) -> String {
    format!("halt/approval/{id}")
}

fn by_call_key(fingerprint: &str) -> String {
    format!("halt/approval-by-call/{fingerprint}")
}

fn encode(approval: &Approval) -> Vec<u8> {
    serde_json::to_vec(approval).unwrap_or_default()
}

fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No system randomness: unique still, from the clock and a counter (never guessed by an
        // agent, which has no way to decide anyway).
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        bytes[8..].copy_from_slice(&t.to_le_bytes()[..8]);
    }
    format!("{:032x}", u128::from_be_bytes(bytes))
}

fn check_approver(approver: &str) -> Result<(), BrokerError> {
    if approver.trim().is_empty() {
        return Err(BrokerError::InvalidApprover("empty".into()));
    }
    if approver.len() > MAX_APPROVER_BYTES {
        return Err(BrokerError::InvalidApprover(format!("longer than {MAX_APPROVER_BYTES} bytes")));
    }
    if approver.chars().any(char::is_control) {
        return Err(BrokerError::InvalidApprover("a control character".into()));
    }
    Ok(())
}
