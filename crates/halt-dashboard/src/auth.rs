//! Bearer tokens and what each role may do.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode, header};
use halt_config::{Role, TokenSettings};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Who is calling, as their token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) role: Role,
    /// The token's name: an approver's is recorded with each decision.
    pub(crate) name: String,
    /// For an agent: the agent id its calls carry.
    pub(crate) agent_id: Option<String>,
}

/// What a request does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Evaluate, settle, report an outcome.
    Propose,
    /// Read approvals (an agent: its own only).
    ReadApprovals,
    /// Read stats, guards, the audit, the event feed, metrics.
    Read,
    /// Decide an approval.
    Decide,
    /// Reload the policy.
    Reload,
}

impl Caller {
    /// Refuses with 403 what the caller's role may not do.
    pub(crate) fn may(&self, action: Action) -> Result<(), ApiError> {
        let allowed = matches!(
            (self.role, action),
            (Role::Admin, _)
                | (Role::Agent, Action::Propose | Action::ReadApprovals)
                | (Role::Viewer | Role::Approver, Action::Read | Action::ReadApprovals)
                | (Role::Approver, Action::Decide)
        );
        if allowed {
            Ok(())
        } else {
            let what = match action {
                Action::Propose => "propose calls",
                Action::ReadApprovals => "read approvals",
                Action::Read => "read the server's state",
                Action::Decide => "decide approvals",
                Action::Reload => "reload the policy",
            };
            Err(ApiError::forbidden(format!("a token with role {} may not {what}", self.role.as_str())))
        }
    }

    /// Whether the caller may see approvals of `agent_id` (an agent sees only its own).
    pub(crate) fn owns(&self, agent_id: Option<&str>) -> bool {
        self.role != Role::Agent || (agent_id.is_some() && agent_id == self.agent_id.as_deref())
    }
}

/// The tokens the server admits, by the SHA-256 of each (lowercase hex, as the policy gives it).
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    by_digest: HashMap<String, Caller>,
}

impl Tokens {
    pub(crate) fn new(settings: &[TokenSettings]) -> Self {
        let mut by_digest = HashMap::new();
        for t in settings {
            let agent_id = (t.role == Role::Agent).then(|| t.agent_id.clone().unwrap_or_else(|| t.name.clone()));
            by_digest.insert(t.digest(), Caller { role: t.role, name: t.name.clone(), agent_id });
        }
        Self { by_digest }
    }

    /// Whether the server runs without tokens (everyone is admin: loopback only).
    pub(crate) fn open(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The caller a token belongs to.
    pub(crate) fn caller(&self, token: &str) -> Option<Caller> {
        if self.open() {
            return Some(local());
        }
        self.by_digest.get(&format!("{:x}", Sha256::digest(token.as_bytes()))).cloned()
    }

    /// The caller of a request, from its `Authorization: Bearer` header; 401 without a valid one.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if self.open() {
            return Ok(local());
        }
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized("missing bearer token (Authorization: Bearer <token>)"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        self.caller(token).ok_or_else(|| unauthorized("unknown token"))
    }
}

/// Everyone, when the server has no tokens.
fn local() -> Caller {
    Caller { role: Role::Admin, name: "local".into(), agent_id: None }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use super::*;

    fn token(name: &str, role: Role, secret: &str) -> TokenSettings {
        TokenSettings { name: name.into(), role, sha256: None, token: Some(secret.into()), agent_id: None }
    }

    #[test]
    fn roles_allow_what_they_should_and_nothing_more() {
        use Action::*;
        let table = [
            (Role::Agent, [true, true, false, false, false]),
            (Role::Viewer, [false, true, true, false, false]),
            (Role::Approver, [false, true, true, true, false]),
            (Role::Admin, [true, true, true, true, true]),
        ];
        for (role, allowed) in table {
            let caller = Caller { role, name: "x".into(), agent_id: None };
            for (action, want) in [Propose, ReadApprovals, Read, Decide, Reload].into_iter().zip(allowed) {
                assert_eq!(caller.may(action).is_ok(), want, "{role:?} {action:?}");
            }
        }
    }

    #[test]
    fn tokens_are_matched_by_digest_and_headers_are_read_strictly() {
        let tokens = Tokens::new(&[token("bot", Role::Agent, "agent-secret-0123456789")]);
        let mut headers = HeaderMap::new();
        assert_eq!(tokens.authenticate(&headers).unwrap_err().status, StatusCode::UNAUTHORIZED);
        for bad in ["Bearer nope", "Basic agent-secret-0123456789", "agent-secret-0123456789", "Bearer"] {
            headers.insert(header::AUTHORIZATION, bad.parse().unwrap());
            assert_eq!(tokens.authenticate(&headers).unwrap_err().status, StatusCode::UNAUTHORIZED, "{bad}");
        }
        headers.insert(header::AUTHORIZATION, "Bearer agent-secret-0123456789".parse().unwrap());
        let caller = tokens.authenticate(&headers).unwrap();
        assert_eq!((caller.role, caller.agent_id.as_deref()), (Role::Agent, Some("bot")));
        assert!(caller.owns(Some("bot")) && !caller.owns(Some("other")) && !caller.owns(None));
        assert!(Tokens::new(&[]).authenticate(&HeaderMap::new()).is_ok(), "no tokens: open (loopback only)");
    }
}
