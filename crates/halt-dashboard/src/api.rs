//! The routes and their handlers, and the JSON types of the API (the OpenAPI document is made
//! from them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use halt_core::{CallContext, DecisionKind, JsonObject, Money, Outcome, Usage};
use halt_hil::{Approval, ApprovalState, Filter, Verdict};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tower::limit::ConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

use crate::Shared;
use crate::approvals::{ASKED, Asked};
use crate::auth::{Action, Caller};
use crate::error::ApiError;
use crate::events::Seen;
use crate::metrics::Counts;

type AppState = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let limits = &shared.limits;
    let quick = Duration::from_secs_f64(limits.request_timeout_seconds);
    let waits = quick + Duration::from_secs_f64(limits.max_wait_seconds);
    // Routes that may wait for a human get the longest wait on top of the usual time.
    let waiting = Router::new()
        .route("/v1/evaluate", post(evaluate))
        .route("/v1/approvals/{id}/wait", get(wait_approval))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, waits));
    let quick_routes = Router::new()
        .route("/v1/calls/{call_id}/settle", post(settle))
        .route("/v1/calls/{call_id}/outcome", post(call_outcome))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}", get(get_approval))
        .route("/v1/approvals/{id}/decision", post(decide))
        .route("/v1/stats", get(stats))
        .route("/v1/guards", get(guards))
        .route("/v1/audit", get(audit))
        .route("/v1/policy/reload", post(reload))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/v1/me", get(me))
        .route("/", get(crate::page::index))
        .route("/assets/app.js", get(crate::page::app))
        .route("/assets/style.css", get(crate::page::style))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, quick));
    Router::new()
        .merge(waiting)
        .merge(quick_routes)
        // The feed lives as long as its socket: no timeout.
        .route("/v1/events", get(events))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), count_refusals))
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(ConcurrencyLimitLayer::new(limits.max_concurrent_requests))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }))
        .with_state(shared)
}

/// Counts the requests answered with an error, and gives a timeout its JSON body too.
async fn count_refusals(State(shared): AppState, request: Request<axum::body::Body>, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
    }
    if response.status() == StatusCode::REQUEST_TIMEOUT && !response.headers().contains_key(header::CONTENT_TYPE) {
        return ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request took too long and was dropped").into_response();
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (see /openapi.json)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint (see /openapi.json)")
}

/// The caller of a request, under the policy serving now.
fn caller(shared: &Shared, headers: &HeaderMap, action: Action) -> Result<Caller, ApiError> {
    let caller = shared.live().tokens.authenticate(headers)?;
    caller.may(action)?;
    Ok(caller)
}

/// A JSON request body, checked: its content type, its size, its syntax, its fields.
fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = checked_body(headers, body)?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

fn checked_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    body.map_err(|e| ApiError::new(e.status(), format!("cannot read the body: {}", e.body_text())))
}

/// The query string's parameters; each may appear once, and only those in `known`.
fn query(raw: Option<&str>, known: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !known.contains(&k.as_ref()) {
            return Err(ApiError::bad_request(format!("unknown query parameter `{k}` (known: {})", known.join(", "))));
        }
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(ApiError::bad_request(format!("query parameter `{k}` is given twice")));
        }
    }
    Ok(out)
}

/// A path parameter, or a JSON 400 naming what is wrong with it.
fn path_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(v)| v).map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))
}

/// A number of seconds from a query parameter, at most the server's longest wait.
fn seconds(shared: &Shared, params: &BTreeMap<String, String>, key: &str, default: f64) -> Result<Duration, ApiError> {
    let max = shared.limits.max_wait_seconds;
    let value = match params.get(key) {
        Some(text) => {
            text.parse::<f64>().map_err(|_| ApiError::bad_request(format!("`{key}` must be a number of seconds")))?
        }
        None => default,
    };
    if !(0.0..=max).contains(&value) {
        return Err(ApiError::bad_request(format!("`{key}` must be from 0 to {max} seconds")));
    }
    Ok(Duration::from_secs_f64(value))
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Calls

/// A call an agent proposes.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "read by CallContext::from_json_str; this type checks fields and documents them")]
pub(crate) struct EvaluateRequest {
    /// Identifies the call (generated when absent): settle and outcome name it.
    call_id: Option<String>,
    /// The tool.
    function_name: String,
    /// The tool's arguments: a JSON object.
    arguments: Option<JsonObject>,
    /// The agent proposing the call (an agent token sets it).
    agent_id: Option<String>,
    /// The conversation or run.
    session_id: Option<String>,
    /// Seconds since the Unix epoch, as the caller saw it (informative: the server keeps time).
    timestamp: Option<f64>,
    /// Facts from the host application, such as a tenant.
    metadata: Option<JsonObject>,
}

/// One guard's decision.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct GuardDecision {
    guard: String,
    /// `allow`, `modify`, `require_approval` or `deny`.
    decision: &'static str,
    reason: String,
    risk_score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<f64>,
}

/// The approval a call waits for.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ApprovalRef {
    /// What `/v1/approvals/{id}` names.
    id: String,
    /// `pending` (propose the same call again once it is decided), `approved` or `denied`.
    state: &'static str,
    /// When it lapses, in seconds since the Unix epoch.
    expires_at: f64,
}

/// The engine's answer about a call.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct EvaluateResponse {
    call_id: String,
    function_name: String,
    /// The final decision: `allow`, `modify`, `require_approval` or `deny`.
    decision: &'static str,
    /// Whether the call may run now (with `modified_arguments` when present).
    allowed: bool,
    /// False in monitor mode: the decision is recorded but not enforced.
    enforced: bool,
    /// The highest risk score of any guard.
    risk_score: f64,
    /// The reasons of the guards that decided it.
    reasons: Vec<String>,
    /// Every applicable guard's decision.
    guards: Vec<GuardDecision>,
    /// The arguments to run the call with, when a guard (or an approver) changed them.
    #[serde(skip_serializing_if = "Option::is_none")]
    modified_arguments: Option<JsonObject>,
    /// The approval, when a human is asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<ApprovalRef>,
    /// Who approved or refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    approver: Option<String>,
    /// The policy version that decided.
    policy_version: String,
}

fn response(outcome: &Outcome, approval: Option<(String, f64)>, version: &str) -> EvaluateResponse {
    let kind = outcome.decision();
    EvaluateResponse {
        call_id: outcome.call_id().to_owned(),
        function_name: outcome.function_name().to_owned(),
        decision: kind.as_str(),
        allowed: outcome.is_allowed(),
        enforced: outcome.enforced(),
        risk_score: outcome.max_risk_score(),
        reasons: outcome.decisions().iter().filter(|d| d.kind() == kind).map(|d| d.reason().to_owned()).collect(),
        guards: outcome
            .decisions()
            .iter()
            .map(|d| GuardDecision {
                guard: d.guard().to_owned(),
                decision: d.kind().as_str(),
                reason: d.reason().to_owned(),
                risk_score: d.risk_score(),
                retry_after: d.retry_after(),
            })
            .collect(),
        modified_arguments: outcome.modified_arguments().cloned(),
        approval: approval.map(|(id, expires_at)| ApprovalRef {
            id,
            state: match outcome.approved() {
                None => "pending",
                Some(true) => "approved",
                Some(false) => "denied",
            },
            expires_at,
        }),
        approver: outcome.approver().map(str::to_owned),
        policy_version: version.to_owned(),
    }
}

async fn evaluate(
    State(shared): AppState,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&shared, &headers, Action::Propose)?;
    let params = query(raw.as_deref(), &["wait"])?;
    let wait = seconds(&shared, &params, "wait", 0.0)?;
    let bytes = checked_body(&headers, body)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let mut ctx =
        CallContext::from_json_str(text).map_err(|e| ApiError::unprocessable(format!("invalid call: {e}")))?;
    serde_json::from_str::<EvaluateRequest>(text).map_err(|e| ApiError::unprocessable(format!("invalid call: {e}")))?;
    if let Some(agent) = &caller.agent_id {
        match &ctx.agent_id {
            Some(given) if given != agent => {
                return Err(ApiError::forbidden(format!("this token proposes calls for agent `{agent}` only")));
            }
            _ => ctx.agent_id = Some(agent.clone()),
        }
    }
    let live = shared.live();
    let seen = shared.events.listened().then(|| Seen::of(&ctx));
    let asked = Asked::new(wait);
    let started = Instant::now();
    let outcome = ASKED.scope(Arc::clone(&asked), live.engine.evaluate(ctx)).await;
    shared.metrics.record(&outcome, started.elapsed());
    let approval = asked.approval();
    if let Some(seen) = seen {
        let id = approval.as_ref().map(|(id, _)| id.as_str());
        shared.events.evaluated(&seen, &outcome, id, shared.clock.now().as_secs_f64());
    }
    let approval = approval.filter(|_| outcome.decision() == DecisionKind::RequireApproval);
    Ok(json(StatusCode::OK, &response(&outcome, approval, &live.version)))
}

/// A call's actual cost.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettleRequest {
    /// What the call cost, in the policy's currency (a number or a decimal string; never
    /// negative).
    actual_cost: Money,
}

fn settle_error(shared: &Shared, e: halt_engine::SettleError) -> ApiError {
    match e {
        halt_engine::SettleError::UnknownCall(_) => ApiError::not_found(e.to_string()),
        halt_engine::SettleError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        _ => {
            shared.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            ApiError::unavailable(e.to_string())
        }
    }
}

async fn settle(
    State(shared): AppState,
    call_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let call_id = path_param(call_id)?;
    caller(&shared, &headers, Action::Propose)?;
    let request: SettleRequest = json_body(&headers, body)?;
    let s = shared.live().engine.settle(&call_id, request.actual_cost).await.map_err(|e| settle_error(&shared, e))?;
    Ok(json(StatusCode::OK, &s))
}

/// Whether an allowed call ran.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutcomeRequest {
    /// False when the call did not run after all: what it was charged is given back.
    executed: bool,
    /// When it ran: what it actually cost, if known.
    #[serde(default)]
    actual_cost: Option<Money>,
}

/// What became of a reported outcome.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct OutcomeResponse {
    call_id: String,
    /// Whether the call's charges were given back (it did not run).
    released: bool,
    /// The cost now charged, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    actual: Option<Money>,
}

async fn call_outcome(
    State(shared): AppState,
    call_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let call_id = path_param(call_id)?;
    caller(&shared, &headers, Action::Propose)?;
    let request: OutcomeRequest = json_body(&headers, body)?;
    let actual = match (request.executed, request.actual_cost) {
        (false, Some(_)) => return Err(ApiError::unprocessable("a call that did not run has no `actual_cost`")),
        (false, None) => Some(Money::ZERO),
        (true, cost) => cost,
    };
    let mut changed = None;
    if let Some(actual) = actual {
        match shared.live().engine.settle(&call_id, actual).await {
            Ok(s) => changed = Some(s.actual),
            // Nothing was charged (or the receipt lapsed): nothing to give back.
            Err(halt_engine::SettleError::UnknownCall(_)) if !request.executed => {}
            Err(e) => return Err(settle_error(&shared, e)),
        }
    }
    let released = !request.executed && changed.is_some();
    Ok(json(StatusCode::OK, &OutcomeResponse { call_id, released, actual: changed }))
}

// ---------------------------------------------------------------------------------------------
// Approvals

/// The approvals kept.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ApprovalList {
    approvals: Vec<Approval>,
}

async fn list_approvals(
    State(shared): AppState,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&shared, &headers, Action::ReadApprovals)?;
    let mut params = query(raw.as_deref(), &["state", "agent_id", "function"])?;
    let state = match params.remove("state").as_deref() {
        None => None,
        Some("pending") => Some(ApprovalState::Pending),
        Some("approved") => Some(ApprovalState::Approved),
        Some("denied") => Some(ApprovalState::Denied),
        Some("expired") => Some(ApprovalState::Expired),
        Some("used") => Some(ApprovalState::Used),
        Some(_) => return Err(ApiError::bad_request("`state` must be pending, approved, denied, expired or used")),
    };
    let mut filter = Filter { state, agent_id: params.remove("agent_id"), function: params.remove("function") };
    if caller.agent_id.is_some() {
        // An agent sees its own only.
        filter.agent_id.clone_from(&caller.agent_id);
    }
    let approvals = shared.live().broker.list(&filter).await.map_err(|e| broker_error(&shared, e))?;
    let approvals = approvals.into_iter().filter(|a| caller.owns(a.agent_id.as_deref())).collect();
    Ok(json(StatusCode::OK, &ApprovalList { approvals }))
}

fn broker_error(shared: &Shared, e: halt_hil::BrokerError) -> ApiError {
    if matches!(e, halt_hil::BrokerError::Store(_)) {
        shared.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
    }
    e.into()
}

/// An approval the caller may see, or 404 (an agent is not told that another's exists).
async fn visible(shared: &Shared, caller: &Caller, id: &str) -> Result<Approval, ApiError> {
    let a = shared.live().broker.get(id).await.map_err(|e| broker_error(shared, e))?;
    if caller.owns(a.agent_id.as_deref()) { Ok(a) } else { Err(halt_hil::BrokerError::Unknown(id.to_owned()).into()) }
}

async fn get_approval(
    State(shared): AppState,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = path_param(id)?;
    let caller = caller(&shared, &headers, Action::ReadApprovals)?;
    Ok(json(StatusCode::OK, &visible(&shared, &caller, &id).await?))
}

async fn wait_approval(
    State(shared): AppState,
    id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = path_param(id)?;
    let caller = caller(&shared, &headers, Action::ReadApprovals)?;
    let params = query(raw.as_deref(), &["timeout"])?;
    let timeout = seconds(&shared, &params, "timeout", 30.0_f64.min(shared.limits.max_wait_seconds))?;
    visible(&shared, &caller, &id).await?;
    let a = shared.live().broker.wait(&id, timeout).await.map_err(|e| broker_error(&shared, e))?;
    Ok(json(StatusCode::OK, &a))
}

/// A decision about an approval.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionRequest {
    /// `approve`, `deny`, or `edit` (approve with `arguments` instead of the proposed ones).
    decision: DecisionVerb,
    /// Why, in the approver's words (kept in the audit).
    #[serde(default)]
    reason: Option<String>,
    /// For `edit`: the arguments to run the call with (every guard checks them again).
    #[serde(default)]
    arguments: Option<serde_json::Value>,
    /// For `edit`: another tool to run instead (it asks again).
    #[serde(default)]
    function: Option<String>,
    /// Who decides, when the server has no tokens (a token's name is used otherwise).
    #[serde(default)]
    approver: Option<String>,
}

/// What an approver decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DecisionVerb {
    Approve,
    Deny,
    Edit,
}

/// The longest reason kept.
const MAX_REASON_CHARS: usize = 2000;

async fn decide(
    State(shared): AppState,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = path_param(id)?;
    let caller = caller(&shared, &headers, Action::Decide)?;
    let request: DecisionRequest = json_body(&headers, body)?;
    let approver = match (&request.approver, shared.live().tokens.open()) {
        (Some(name), true) => name.clone(),
        (None, true) => caller.name.clone(),
        (Some(_), false) => {
            return Err(ApiError::unprocessable("`approver` is the token's name: leave it out"));
        }
        (None, false) => caller.name.clone(),
    };
    if request.reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
        return Err(ApiError::unprocessable(format!("`reason` is longer than {MAX_REASON_CHARS} characters")));
    }
    let verdict = match (request.decision, request.arguments, request.function) {
        (DecisionVerb::Approve, None, None) => Verdict::Approve,
        (DecisionVerb::Deny, None, None) => Verdict::Deny,
        (DecisionVerb::Edit, Some(arguments), function) => Verdict::Edit { arguments, function },
        (DecisionVerb::Edit, None, _) => return Err(ApiError::unprocessable("`edit` needs `arguments`")),
        _ => return Err(ApiError::unprocessable("`arguments` and `function` go only with `edit`")),
    };
    let live = shared.live();
    let a = live
        .broker
        .decide(&id, verdict, &approver, request.reason.as_deref())
        .await
        .map_err(|e| broker_error(&shared, e))?;
    shared.events.approval_decided(&a);
    Ok(json(StatusCode::OK, &a))
}

// ---------------------------------------------------------------------------------------------
// Reading

/// What the server has seen, and where budgets stand.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct StatsResponse {
    #[serde(flatten)]
    counts: Counts,
    /// Approvals waiting for a decision now.
    approvals_pending: usize,
    /// Each limit of each guard that reports one, and how much of it is used.
    usage: Vec<Usage>,
    policy_version: String,
}

async fn stats(State(shared): AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    caller(&shared, &headers, Action::Read)?;
    let live = shared.live();
    let now = shared.clock.now();
    let mut usage = Vec::new();
    for info in live.engine.guards() {
        let Some(guard) = live.engine.guard(&info.name) else { continue };
        match guard.usage(shared.store.as_ref(), now).await {
            Ok(u) => usage.extend(u.into_iter().map(|mut u| {
                info.name.clone_into(&mut u.guard);
                u
            })),
            Err(e) => {
                shared.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::unavailable(format!("cannot read usage: {e}")));
            }
        }
    }
    let pending = pending(&shared, &live).await?;
    let response = StatsResponse {
        counts: shared.metrics.counts(),
        approvals_pending: pending,
        usage,
        policy_version: live.version.clone(),
    };
    Ok(json(StatusCode::OK, &response))
}

async fn pending(shared: &Shared, live: &crate::Live) -> Result<usize, ApiError> {
    let filter = Filter { state: Some(ApprovalState::Pending), ..Filter::default() };
    Ok(live.broker.list(&filter).await.map_err(|e| broker_error(shared, e))?.len())
}

/// A guard of the policy serving now.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct GuardStatus {
    name: String,
    enabled: bool,
    /// Its settings, as `agenthalt check` shows them.
    settings: serde_json::Value,
    /// Its decisions by kind since the server started.
    decisions: BTreeMap<String, u64>,
}

/// The guards.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct GuardList {
    guards: Vec<GuardStatus>,
    policy_version: String,
    /// `enforce` or `monitor`.
    mode: &'static str,
}

async fn guards(State(shared): AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    caller(&shared, &headers, Action::Read)?;
    let live = shared.live();
    let mut counts = shared.metrics.counts().by_guard;
    let guards = live
        .engine
        .guards()
        .into_iter()
        .map(|g| GuardStatus {
            decisions: counts.remove(&g.name).unwrap_or_default(),
            name: g.name,
            enabled: g.enabled,
            settings: g.settings,
        })
        .collect();
    let mode = match live.engine.mode() {
        halt_engine::Mode::Monitor => "monitor",
        _ => "enforce",
    };
    Ok(json(StatusCode::OK, &GuardList { guards, policy_version: live.version.clone(), mode }))
}

/// Audit entries, oldest first.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct AuditResponse {
    #[schemars(with = "Vec<serde_json::Value>")]
    entries: Vec<halt_audit::Entry>,
    /// Lines of the files that are not sealed entries (edited or cut short), left out.
    skipped: usize,
}

/// The most entries one audit query returns.
const MAX_AUDIT_ENTRIES: usize = 1000;

async fn audit(State(shared): AppState, RawQuery(raw): RawQuery, headers: HeaderMap) -> Result<Response, ApiError> {
    caller(&shared, &headers, Action::Read)?;
    let mut p =
        query(raw.as_deref(), &["function", "decision", "guard", "agent_id", "session_id", "since", "until", "limit"])?;
    let time = |v: Option<String>, key: &str| -> Result<Option<f64>, ApiError> {
        v.map(|t| {
            t.parse::<f64>()
                .ok()
                .filter(|t| t.is_finite())
                .ok_or_else(|| ApiError::bad_request(format!("`{key}` must be seconds since the epoch")))
        })
        .transpose()
    };
    let limit = match p.remove("limit") {
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_AUDIT_ENTRIES).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("`limit` must be from 1 to {MAX_AUDIT_ENTRIES}")))?,
        None => 100,
    };
    let function = match p.remove("function") {
        Some(pattern) => Some(
            halt_core::names::NamePatterns::new([pattern.as_str()])
                .map_err(|e| ApiError::bad_request(format!("`function`: {e}")))?,
        ),
        None => None,
    };
    if let Some(d) = p.get("decision")
        && !["allow", "modify", "require_approval", "deny"].contains(&d.as_str())
    {
        return Err(ApiError::bad_request("`decision` must be allow, modify, require_approval or deny"));
    }
    let q = halt_audit::Query {
        function,
        decision: p.remove("decision"),
        guard: p.remove("guard"),
        agent_id: p.remove("agent_id"),
        session_id: p.remove("session_id"),
        since: time(p.remove("since"), "since")?,
        until: time(p.remove("until"), "until")?,
        limit: Some(limit),
    };
    let file = shared.audit_settings.as_ref().and_then(|a| a.file.as_ref()).map(|f| f.path.clone());
    let (entries, skipped) = match (file, &shared.ring) {
        (Some(path), _) => {
            let paths = audit_files(&path);
            tokio::task::spawn_blocking(move || q.over_files(&paths))
                .await
                .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the audit query failed"))?
                .map_err(|e| ApiError::unavailable(format!("cannot read the audit files: {e}")))?
        }
        (None, Some(ring)) => (ring.query(&q), 0),
        (None, None) => {
            return Err(ApiError::not_found(
                "the policy keeps no audit log to search (`audit:` with a file or memory)",
            ));
        }
    };
    Ok(json(StatusCode::OK, &AuditResponse { entries, skipped }))
}

/// The audit file and the files rotated from it (`<path>.<12 digits>`).
fn audit_files(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        let dir = if dir.as_os_str().is_empty() { std::path::Path::new(".") } else { dir };
        if let Ok(read) = std::fs::read_dir(dir) {
            for entry in read.flatten() {
                let file = entry.file_name();
                let Some(file) = file.to_str() else { continue };
                let rotated = file
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .is_some_and(|seq| seq.len() == 12 && seq.bytes().all(|b| b.is_ascii_digit()));
                if rotated {
                    out.push(entry.path());
                }
            }
        }
    }
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

async fn events(
    State(shared): AppState,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let live = shared.live();
    check_origin(&headers, &live.origins)?;
    let upgrade =
        upgrade.map_err(|e| ApiError::bad_request(format!("a WebSocket upgrade is expected: {}", e.body_text())))?;
    // A header signs in at once; a browser (which cannot set one) sends its token first.
    let caller = if headers.contains_key(header::AUTHORIZATION) || live.tokens.open() {
        let c = live.tokens.authenticate(&headers)?;
        c.may(Action::Read)?;
        Some(c)
    } else {
        None
    };
    let tokens = Arc::clone(&live.tokens);
    let events = shared.events.clone();
    let closing = shared.closing.subscribe();
    Ok(upgrade.on_upgrade(move |socket| crate::events::feed(socket, caller, tokens, events, closing)))
}

/// A page may open the feed only from the server's own origin or one the policy allows; a
/// client that is no browser sends no `Origin`.
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().map_err(|_| ApiError::forbidden("unreadable Origin"))?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let own = [format!("http://{host}"), format!("https://{host}")];
    if own.iter().any(|o| o == origin) || allowed.iter().any(|a| a == origin) {
        Ok(())
    } else {
        Err(ApiError::forbidden("this origin may not open the event feed"))
    }
}

// ---------------------------------------------------------------------------------------------
// Operations

/// A reloaded policy.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ReloadResponse {
    policy_version: String,
    guards: usize,
}

async fn reload(State(shared): AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    caller(&shared, &headers, Action::Reload)?;
    match shared.reload().await {
        Ok(live) => Ok(json(
            StatusCode::OK,
            &ReloadResponse { policy_version: live.version.clone(), guards: live.engine.guards().len() },
        )),
        Err(e) => Err(ApiError::unprocessable(format!("the policy was not reloaded: {e}"))),
    }
}

async fn metrics(State(shared): AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    caller(&shared, &headers, Action::Read)?;
    let live = shared.live();
    let pending = pending(&shared, &live).await.ok();
    let dropped = shared.audit.as_ref().map_or(0, halt_audit::AuditLog::dropped);
    let mut r = shared.metrics.prometheus(pending, dropped).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    Ok(r)
}

/// Who the token belongs to.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Me {
    /// The token's name (`local` when the server has no tokens).
    name: String,
    /// `agent`, `viewer`, `approver` or `admin`.
    role: &'static str,
    /// For an agent token: the agent id its calls carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<String>,
}

async fn me(State(shared): AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    let c = shared.live().tokens.authenticate(&headers)?;
    Ok(json(StatusCode::OK, &Me { name: c.name, role: c.role.as_str(), agent_id: c.agent_id }))
}

/// Health.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Health {
    /// `ok`, or why not.
    status: String,
    policy_version: String,
}

async fn healthz(State(shared): AppState) -> Response {
    json(StatusCode::OK, &Health { status: "ok".into(), policy_version: shared.live().version.clone() })
}

async fn readyz(State(shared): AppState) -> Response {
    let version = shared.live().version.clone();
    match shared.store.get_record("halt/readyz", shared.clock.now()).await {
        Ok(_) => json(StatusCode::OK, &Health { status: "ok".into(), policy_version: version }),
        Err(e) => {
            shared.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &Health { status: format!("store unreachable: {e}"), policy_version: version },
            )
        }
    }
}

async fn openapi() -> Response {
    json(StatusCode::OK, &crate::openapi())
}
