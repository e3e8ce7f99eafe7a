//! An audit entry, and how a line of the log seals it into the chain.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A call was evaluated.
    Evaluation,
    /// A human was asked about a call.
    ApprovalRequest,
    /// A human answered (or nobody did in time).
    ApprovalDecision,
    /// A call's cost was settled.
    Settlement,
    /// A policy was loaded.
    PolicyLoad,
    /// Entries were lost (the queue was full, or a write was cut short): `lost` says how many.
    Gap,
}

impl EntryKind {
    /// Its name, as in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Evaluation => "evaluation",
            Self::ApprovalRequest => "approval_request",
            Self::ApprovalDecision => "approval_decision",
            Self::Settlement => "settlement",
            Self::PolicyLoad => "policy_load",
            Self::Gap => "gap",
        }
    }
}

/// One guard's decision, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardEntry {
    /// The guard.
    pub guard: String,
    /// `allow`, `modify`, `require_approval` or `deny`.
    pub decision: String,
    /// Its reason (reasons never carry a value of the call).
    pub reason: String,
    /// Its risk score.
    pub risk: f64,
}

/// One entry of the audit log. Every text that came from the call (arguments, names, an
/// approver's reason) is redacted before it is written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Entry {
    /// Its place in the chain, from 0.
    pub seq: u64,
    /// The chain it belongs to (random when the chain began).
    pub chain: String,
    /// The `hash` of the entry before it ([`GENESIS`] for the first).
    pub prev: String,
    /// When, in seconds since the Unix epoch.
    pub at: f64,
    /// What it records.
    pub kind: Option<EntryKind>,
    /// The call's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// The function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The final decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// False in monitor mode (the decision was not enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced: Option<bool>,
    /// The highest risk score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<f64>,
    /// Each guard's decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<GuardEntry>,
    /// The policy version the decision was made under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// Whether a human approved (approval decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    /// Who decided (approval decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// Why, as they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_reason: Option<String>,
    /// The arguments, redacted with every detector on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// What else the entry says (a settlement's amounts, a policy load's origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// For a gap: how many entries were lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// The SHA-256 (hex) of the entry's line without this field.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// The text that ends the hashed part of a line and starts its hash.
const HASH_FIELD: &str = ",\"hash\":\"";

impl Entry {
    /// Seals the entry: sets its `hash` and returns its line (without the newline).
    #[must_use]
    pub fn seal(&mut self) -> String {
        self.hash.clear();
        let mut body = serde_json::to_string(self).unwrap_or_default();
        self.hash = sha256_hex(body.as_bytes());
        body.pop();
        body.push_str(HASH_FIELD);
        body.push_str(&self.hash);
        body.push_str("\"}");
        body
    }
}

/// Why a line is not a sealed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineError {
    /// It is not an entry at all.
    NotEntry,
    /// It is an entry whose content no longer matches its hash.
    Edited,
}

/// Reads a line of the log: the entry, checked against its own hash.
pub(crate) fn unseal(line: &str) -> Result<Entry, LineError> {
    let cut = line.rfind(HASH_FIELD).ok_or(LineError::NotEntry)?;
    let hash = line[cut + HASH_FIELD.len()..].strip_suffix("\"}").ok_or(LineError::NotEntry)?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LineError::NotEntry);
    }
    let mut body = String::with_capacity(cut + 1);
    body.push_str(&line[..cut]);
    body.push('}');
    let entry: Entry = serde_json::from_str(&body).map_err(|_| LineError::NotEntry)?;
    if !entry.hash.is_empty() || sha256_hex(body.as_bytes()) != hash {
        return Err(LineError::Edited);
    }
    Ok(Entry { hash: hash.to_owned(), ..entry })
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_line_reads_back_and_any_change_shows() {
        let mut e = Entry {
            seq: 7,
            chain: "abc".into(),
            prev: GENESIS.into(),
            at: 1_800_000_000.25,
            kind: Some(EntryKind::Evaluation),
            function: Some("buy".into()),
            decision: Some("deny".into()),
            ..Entry::default()
        };
        let line = e.seal();
        assert_eq!(unseal(&line).unwrap(), e);
        assert_eq!(unseal(&line.replace("deny", "allow")), Err(LineError::Edited));
        assert_eq!(unseal(&line.replace("\"seq\":7", "\"seq\":8")), Err(LineError::Edited));
        assert_eq!(unseal(&line[..line.len() - 5]), Err(LineError::NotEntry));
        assert_eq!(unseal("{\"seq\":1}"), Err(LineError::NotEntry));
        assert_eq!(unseal("not json at all"), Err(LineError::NotEntry));
        // A hash field smuggled into the hashed part is not an entry either.
        let smuggled = line.replacen("{", &format!("{{\"hash\":\"{}\",", "0".repeat(64)), 1);
        assert!(unseal(&smuggled).is_err());
    }
}
