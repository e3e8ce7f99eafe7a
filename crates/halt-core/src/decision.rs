//! What guards decide ([`Decision`]) and what the engine concludes ([`Outcome`]).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::JsonObject;
use crate::guard::GuardName;

/// The kinds of decision, ordered from least to most restrictive:
/// `Allow < Modify < RequireApproval < Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// The call may run as proposed.
    Allow,
    /// The call may run with changed arguments.
    Modify,
    /// A human must approve the call first.
    RequireApproval,
    /// The call must not run.
    Deny,
}

impl DecisionKind {
    /// The wire name: `allow`, `modify`, `require_approval`, `deny`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Modify => "modify",
            Self::RequireApproval => "require_approval",
            Self::Deny => "deny",
        }
    }

    /// The risk score a decision of this kind carries unless its guard says otherwise.
    #[must_use]
    pub const fn default_risk(self) -> f64 {
        match self {
            Self::Allow => 0.0,
            Self::Modify => 0.3,
            Self::RequireApproval => 0.7,
            Self::Deny => 1.0,
        }
    }
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One guard's decision about one call.
///
/// Built with [`Decision::allow`], [`Decision::deny`], [`Decision::require_approval`] or
/// [`Decision::modify`]; the engine fills in the guard's name.
///
/// ```
/// use halt_core::{Decision, DecisionKind};
/// use serde_json::json;
///
/// let d = Decision::deny("over the daily budget").with_details(json!({"spent": 9.5}));
/// assert_eq!(d.kind(), DecisionKind::Deny);
/// assert_eq!(d.risk_score(), 1.0);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    kind: DecisionKind,
    #[serde(serialize_with = "guard_name")]
    guard: Option<GuardName>,
    reason: Cow<'static, str>,
    risk_score: f64,
    /// What most decisions lack, boxed so a plain decision stays small and cheap to move.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
struct Extra {
    #[serde(skip_serializing_if = "Value::is_null")]
    details: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<f64>,
    #[serde(skip)]
    modified_arguments: Option<JsonObject>,
}

impl Decision {
    fn new(kind: DecisionKind, reason: impl Into<Cow<'static, str>>) -> Self {
        Self { kind, guard: None, reason: reason.into(), risk_score: kind.default_risk(), extra: None }
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Lets the call run.
    #[must_use]
    pub fn allow(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(DecisionKind::Allow, reason)
    }

    /// Blocks the call.
    #[must_use]
    pub fn deny(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(DecisionKind::Deny, reason)
    }

    /// Asks a human first.
    #[must_use]
    pub fn require_approval(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(DecisionKind::RequireApproval, reason)
    }

    /// Lets the call run with `arguments` instead of the proposed ones.
    #[must_use]
    pub fn modify(reason: impl Into<Cow<'static, str>>, arguments: JsonObject) -> Self {
        let mut d = Self::new(DecisionKind::Modify, reason);
        d.extra_mut().modified_arguments = Some(arguments);
        d
    }

    /// Sets the risk score; clamped to `[0, 1]`, and NaN counts as 1.
    #[must_use]
    pub fn with_risk(mut self, risk: f64) -> Self {
        self.risk_score = if risk.is_nan() { 1.0 } else { risk.clamp(0.0, 1.0) };
        self
    }

    /// Attaches structured details (figures, limits, findings).
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.extra_mut().details = details;
        self
    }

    /// Says after how many seconds the same call may succeed (rate limits, cooldowns).
    #[must_use]
    pub fn with_retry_after(mut self, seconds: f64) -> Self {
        self.extra_mut().retry_after = Some(if seconds.is_finite() { seconds.max(0.0) } else { f64::MAX });
        self
    }

    /// Sets the guard's name (done by the engine).
    #[must_use]
    pub fn with_guard(mut self, guard: GuardName) -> Self {
        self.guard = Some(guard);
        self
    }

    /// The kind of decision.
    #[must_use]
    pub fn kind(&self) -> DecisionKind {
        self.kind
    }

    /// The name of the guard that decided.
    #[must_use]
    pub fn guard(&self) -> &str {
        self.guard.as_ref().map_or("", GuardName::as_str)
    }

    /// Why.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Structured details; `null` when none.
    #[must_use]
    pub fn details(&self) -> &Value {
        self.extra.as_ref().map_or(&Value::Null, |e| &e.details)
    }

    /// The risk score in `[0, 1]`.
    #[must_use]
    pub fn risk_score(&self) -> f64 {
        self.risk_score
    }

    /// Seconds until the same call may succeed, when the guard knows.
    #[must_use]
    pub fn retry_after(&self) -> Option<f64> {
        self.extra.as_ref().and_then(|e| e.retry_after)
    }

    /// The arguments a modifying guard wants instead.
    #[must_use]
    pub fn modified_arguments(&self) -> Option<&JsonObject> {
        self.extra.as_ref().and_then(|e| e.modified_arguments.as_ref())
    }
}

fn guard_name<S: serde::Serializer>(guard: &Option<GuardName>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(guard.as_ref().map_or("", GuardName::as_str))
}

/// The most restrictive of a list of decisions: the first with the highest kind (ties go to the
/// earlier one, i.e. the guard registered first). `None` for an empty list.
#[must_use]
pub fn most_restrictive(decisions: &[Decision]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, d) in decisions.iter().enumerate() {
        if best.is_none_or(|b| d.kind > decisions[b].kind) {
            best = Some(i);
        }
    }
    best
}

/// The engine's conclusion about one call: every applicable guard's decision and the final one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    call_id: String,
    function_name: String,
    decisions: Vec<Decision>,
    #[serde(skip)]
    final_index: Option<usize>,
    decision: DecisionKind,
    enforced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    approved: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modified_arguments: Option<JsonObject>,
}

impl Outcome {
    /// Builds an outcome from the decisions of the applicable guards, in registration order.
    /// `original` are the arguments the guards saw, against which modifications are composed.
    #[must_use]
    pub fn new(call_id: String, function_name: String, decisions: Vec<Decision>, original: &JsonObject) -> Self {
        let final_index = most_restrictive(&decisions);
        let decision = final_index.map_or(DecisionKind::Allow, |i| decisions[i].kind);
        // A call that may run (modified, or once a human approves it) runs with every change a
        // guard made: approval never drops a redaction.
        let may_run = match decision {
            DecisionKind::Modify => true,
            DecisionKind::RequireApproval => decisions.iter().any(|d| d.modified_arguments().is_some()),
            DecisionKind::Allow | DecisionKind::Deny => false,
        };
        let modified_arguments = may_run.then(|| compose_modifications(original, &decisions));
        Self {
            call_id,
            function_name,
            decisions,
            final_index,
            decision,
            enforced: true,
            approved: None,
            approver: None,
            modified_arguments,
        }
    }

    /// The call's id.
    #[must_use]
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The function name as proposed.
    #[must_use]
    pub fn function_name(&self) -> &str {
        &self.function_name
    }

    /// Every applicable guard's decision, in registration order.
    #[must_use]
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// The deciding decision (the most restrictive; the first such on ties); `None` when no guard
    /// applied.
    #[must_use]
    pub fn final_decision(&self) -> Option<&Decision> {
        self.final_index.map(|i| &self.decisions[i])
    }

    /// The final kind of decision (allow when no guard applied), whether or not it is enforced.
    #[must_use]
    pub fn decision(&self) -> DecisionKind {
        self.decision
    }

    /// False in monitor mode: the decision was computed and recorded, but the call runs anyway.
    #[must_use]
    pub fn enforced(&self) -> bool {
        self.enforced
    }

    /// The human's answer, once an approval was asked for and given (`Some(true)`) or refused.
    #[must_use]
    pub fn approved(&self) -> Option<bool> {
        self.approved
    }

    /// Who answered the approval request, when known.
    #[must_use]
    pub fn approver(&self) -> Option<&str> {
        self.approver.as_deref()
    }

    /// Whether the call may run: allowed, modified, or approved by a human. Always true in monitor
    /// mode.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        !self.enforced
            || match self.decision {
                DecisionKind::Allow | DecisionKind::Modify => true,
                DecisionKind::RequireApproval => self.approved == Some(true),
                DecisionKind::Deny => false,
            }
    }

    /// Whether the call is blocked: denied, or its approval was refused. False in monitor mode.
    #[must_use]
    pub fn is_denied(&self) -> bool {
        self.enforced
            && (self.decision == DecisionKind::Deny
                || (self.decision == DecisionKind::RequireApproval && self.approved == Some(false)))
    }

    /// Whether the call waits for a human. False in monitor mode and once answered.
    #[must_use]
    pub fn needs_approval(&self) -> bool {
        self.enforced && self.decision == DecisionKind::RequireApproval && self.approved.is_none()
    }

    /// The reasons of every denying guard.
    #[must_use]
    pub fn denial_reasons(&self) -> Vec<&str> {
        self.reasons_of(DecisionKind::Deny)
    }

    /// The reasons of every guard asking for approval.
    #[must_use]
    pub fn approval_reasons(&self) -> Vec<&str> {
        self.reasons_of(DecisionKind::RequireApproval)
    }

    fn reasons_of(&self, kind: DecisionKind) -> Vec<&str> {
        self.decisions.iter().filter(|d| d.kind == kind).map(Decision::reason).collect()
    }

    /// The highest risk score of any decision (0 when none).
    #[must_use]
    pub fn max_risk_score(&self) -> f64 {
        self.decisions.iter().map(Decision::risk_score).fold(0.0, f64::max)
    }

    /// The arguments to run the call with when a guard changed them: every modifying guard's
    /// changes composed in registration order, for a final decision of modify, or of approval
    /// (an approved call runs with them too; a human who edits the arguments replaces them).
    /// `None` otherwise, and in monitor mode.
    #[must_use]
    pub fn modified_arguments(&self) -> Option<&JsonObject> {
        if self.enforced { self.modified_arguments.as_ref() } else { None }
    }

    /// Names the call (an engine names it last, moving the names out of a call it is done with).
    pub fn set_call(&mut self, call_id: String, function_name: String) {
        self.call_id = call_id;
        self.function_name = function_name;
    }

    /// Marks the outcome as computed but not enforced (an engine in monitor mode).
    pub fn set_enforced(&mut self, enforced: bool) {
        self.enforced = enforced;
    }

    /// Records the human's answer (an engine does, once one is given).
    pub fn set_approved(&mut self, approved: bool, approver: Option<String>) {
        self.approved = Some(approved);
        self.approver = approver;
    }

    /// Replaces the modified arguments (a human approved with edited arguments).
    pub fn set_modified_arguments(&mut self, args: JsonObject) {
        self.modified_arguments = Some(args);
    }
}

/// Applies each modifying decision's changes, relative to `original`, in order: a key a guard
/// changed takes the guard's value (nested objects are merged the same way), a key it removed is
/// removed. Two guards changing different fields both take effect; on the same field, the later
/// guard's change wins.
fn compose_modifications(original: &JsonObject, decisions: &[Decision]) -> JsonObject {
    let mut result = original.clone();
    for modified in decisions.iter().filter_map(Decision::modified_arguments) {
        apply_changes(original, &mut result, modified);
    }
    result
}

fn apply_changes(original: &JsonObject, target: &mut JsonObject, modified: &JsonObject) {
    for (key, new) in modified {
        match original.get(key) {
            Some(old) if old == new => {}
            Some(Value::Object(old_obj)) => match (new, target.get_mut(key)) {
                (Value::Object(new_obj), Some(Value::Object(t))) => apply_changes(old_obj, t, new_obj),
                _ => {
                    target.insert(key.clone(), new.clone());
                }
            },
            _ => {
                target.insert(key.clone(), new.clone());
            }
        }
    }
    for key in original.keys() {
        if !modified.contains_key(key) {
            target.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        match v {
            Value::Object(o) => o,
            _ => unreachable!(),
        }
    }

    #[test]
    fn priority_and_ties() {
        let ds = vec![
            Decision::allow("a"),
            Decision::require_approval("first"),
            Decision::modify("m", JsonObject::new()),
            Decision::require_approval("second"),
        ];
        assert_eq!(most_restrictive(&ds), Some(1));
        let ds = vec![Decision::deny("x"), Decision::deny("y")];
        assert_eq!(most_restrictive(&ds), Some(0));
        assert_eq!(most_restrictive(&[]), None);
    }

    #[test]
    fn no_decisions_allow() {
        let o = Outcome::new("c".into(), "f".into(), vec![], &JsonObject::new());
        assert!(o.is_allowed());
        assert_eq!(o.decision(), DecisionKind::Allow);
        assert!(o.final_decision().is_none());
        assert_eq!(o.max_risk_score(), 0.0);
    }

    #[test]
    fn modifications_compose_in_order() {
        let original = obj(json!({"body": "card 4111", "meta": {"a": 1, "b": 2}, "keep": true, "drop": 1}));
        let m1 = obj(json!({"body": "card [REDACTED]", "meta": {"a": 1, "b": 2}, "keep": true, "drop": 1}));
        let m2 = obj(json!({"body": "card 4111", "meta": {"a": 10, "b": 2}, "keep": true}));
        let m3 = obj(json!({"body": "later wins", "meta": {"a": 1, "b": 2}, "keep": true, "drop": 1}));
        let ds = vec![Decision::modify("r", m1), Decision::modify("s", m2), Decision::modify("t", m3)];
        let o = Outcome::new("c".into(), "f".into(), ds, &original);
        assert_eq!(
            Value::Object(o.modified_arguments().unwrap().clone()),
            json!({"body": "later wins", "meta": {"a": 10, "b": 2}, "keep": true})
        );
    }

    #[test]
    fn a_call_waiting_for_approval_keeps_the_modifications() {
        let original = obj(json!({"body": "SSN 123-45-6789"}));
        let redacted = obj(json!({"body": "SSN [REDACTED:ssn]"}));
        let ds = vec![Decision::require_approval("send_* needs approval"), Decision::modify("redacted", redacted)];
        let mut o = Outcome::new("c".into(), "send_email".into(), ds, &original);
        o.set_approved(true, None);
        assert!(o.is_allowed());
        assert_eq!(o.modified_arguments().unwrap()["body"], "SSN [REDACTED:ssn]");
        let denied = Outcome::new("c".into(), "f".into(), vec![Decision::deny("no")], &original);
        assert!(denied.modified_arguments().is_none());
    }

    #[test]
    fn risk_is_clamped() {
        assert_eq!(Decision::allow("x").with_risk(7.0).risk_score(), 1.0);
        assert_eq!(Decision::allow("x").with_risk(-1.0).risk_score(), 0.0);
        assert_eq!(Decision::allow("x").with_risk(f64::NAN).risk_score(), 1.0);
    }

    #[test]
    fn accessors_follow_the_final_decision() {
        let o = Outcome::new(
            "c".into(),
            "f".into(),
            vec![Decision::require_approval("why").with_risk(0.4), Decision::deny("no")],
            &JsonObject::new(),
        );
        assert!(o.is_denied() && !o.is_allowed() && !o.needs_approval());
        assert_eq!(o.denial_reasons(), ["no"]);
        assert_eq!(o.approval_reasons(), ["why"]);
        assert_eq!(o.max_risk_score(), 1.0);
        let mut o = Outcome::new("c".into(), "f".into(), vec![Decision::require_approval("why")], &JsonObject::new());
        assert!(o.needs_approval() && !o.is_allowed());
        o.set_approved(true, None);
        assert!(o.is_allowed() && !o.needs_approval());
        o.set_approved(false, None);
        assert!(o.is_denied());
    }
}
