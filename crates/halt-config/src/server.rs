//! The `server:` section: how `agenthalt serve` listens, and whom it lets in.

use serde::{Deserialize, Serialize};

/// The `server:` section, read by `agenthalt serve` (other commands ignore it).
///
/// ```yaml
/// server:
///   bind: 127.0.0.1:8550            # the default; --bind overrides it
///   tokens:
///     - name: support-bot           # an agent: evaluate, settle, its own approvals
///       role: agent
///       sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
///     - name: alice                 # decides approvals
///       role: approver
///       token: ${ALICE_TOKEN}       # the token itself, from the environment
///   allowed_origins: []             # other origins whose pages may open the event feed
/// ```
///
/// Without tokens every request is admitted as `admin`, so the server then refuses to listen
/// anywhere but on a loopback address.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// The address to listen on, such as `127.0.0.1:8550`.
    pub bind: Option<String>,
    /// Who may call the server.
    pub tokens: Vec<TokenSettings>,
    /// Origins, besides the server's own, whose pages may open `/v1/events` (such as
    /// `https://ops.example.com`).
    pub allowed_origins: Vec<String>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Seconds a request may take, waits aside.
    pub request_timeout_seconds: f64,
    /// The longest wait a request may ask for (`?wait=`, `?timeout=`), in seconds.
    pub max_wait_seconds: f64,
    /// Requests handled at once; more wait their turn.
    pub max_concurrent_requests: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: None,
            tokens: Vec::new(),
            allowed_origins: Vec::new(),
            max_body_bytes: 1 << 20,
            request_timeout_seconds: 30.0,
            max_wait_seconds: 300.0,
            max_concurrent_requests: 1024,
        }
    }
}

/// One bearer token and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// Who holds it: an approver's name is recorded with each decision.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The token's SHA-256, in hex (`printf %s "$TOKEN" | sha256sum`): the file then holds no
    /// secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The token itself, usually `${VARIABLE}` from the environment; at least 16 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// For an agent token: the agent id its calls carry (default: `name`). A call naming another
    /// agent is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// What a token may do. Each role may do what the roles before it in this list may, except
/// that only `agent` and `admin` propose calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Proposes calls (evaluate, settle, outcome) and waits on its own approvals.
    Agent,
    /// Reads: approvals, stats, guards, audit, events, metrics.
    Viewer,
    /// Reads, and decides approvals.
    Approver,
    /// Everything, and reloads the policy.
    Admin,
}

impl Role {
    /// The role's name as written in a policy.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Viewer => "viewer",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }
}

impl TokenSettings {
    /// The SHA-256 of the token, in lowercase hex, whichever way it is given.
    #[must_use]
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        match (&self.sha256, &self.token) {
            (Some(hex), _) => hex.to_ascii_lowercase(),
            (None, Some(token)) => format!("{:x}", Sha256::digest(token.as_bytes())),
            (None, None) => String::new(),
        }
    }
}

/// The shortest token accepted in clear.
const MIN_TOKEN_CHARS: usize = 16;

/// Checks what the types do not; errors name the key path.
pub(crate) fn check(s: &ServerSettings) -> Result<(), (Vec<String>, String)> {
    let at = |parts: &[&str]| parts.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
    if s.max_body_bytes < 1024 {
        return Err((at(&["server", "max_body_bytes"]), "must be at least 1024".into()));
    }
    for (key, v) in [("request_timeout_seconds", s.request_timeout_seconds), ("max_wait_seconds", s.max_wait_seconds)] {
        if !(v > 0.0 && v <= 86_400.0) {
            return Err((at(&["server", key]), "must be a number of seconds from 0 to 86400".into()));
        }
    }
    if s.max_concurrent_requests == 0 {
        return Err((at(&["server", "max_concurrent_requests"]), "must be at least 1".into()));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut digests = std::collections::BTreeSet::new();
    for (i, t) in s.tokens.iter().enumerate() {
        let here = |key: &str| vec!["server".to_owned(), "tokens".to_owned(), i.to_string(), key.to_owned()];
        if t.name.trim().is_empty() || t.name.len() > 256 {
            return Err((here("name"), "must be 1 to 256 characters".into()));
        }
        if !names.insert(t.name.clone()) {
            return Err((here("name"), format!("`{}` names two tokens", t.name)));
        }
        match (&t.sha256, &t.token) {
            (Some(_), Some(_)) | (None, None) => {
                return Err((here("sha256"), "give exactly one of `sha256` and `token`".into()));
            }
            (Some(hex), None) => {
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err((here("sha256"), "must be 64 hex digits (a SHA-256)".into()));
                }
            }
            (None, Some(token)) => {
                if token.chars().count() < MIN_TOKEN_CHARS || token.chars().any(char::is_whitespace) {
                    return Err((
                        here("token"),
                        format!("must be at least {MIN_TOKEN_CHARS} characters, with no spaces"),
                    ));
                }
            }
        }
        if !digests.insert(t.digest()) {
            return Err((here("sha256"), "the same token is given twice".into()));
        }
        if t.agent_id.is_some() && t.role != Role::Agent {
            return Err((here("agent_id"), "only an agent token carries an agent id".into()));
        }
    }
    Ok(())
}
