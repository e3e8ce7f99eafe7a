//! Asks over HTTP: a signed POST to a URL of yours. The receiver answers in the response, or
//! later through the broker (with the approval's id). A timeout, a non-2xx status or a body that
//! is not an answer each refuse the call.
//!
//! The signature is an HMAC-SHA256, keyed with the shared secret, over `"{timestamp}.{body}"`;
//! the timestamp (seconds since the Unix epoch) and the signature (`v1=` and hex) travel in the
//! [`TIMESTAMP_HEADER`] and [`SIGNATURE_HEADER`] headers. A receiver checks both with [`verify`],
//! refusing a stale timestamp and a signature it has already seen, so that a captured request
//! cannot be replayed.

use std::sync::Arc;
use std::time::Duration;

use halt_core::{Clock, SystemClock, async_trait};
use halt_engine::{ApprovalError, ApprovalHandler, ApprovalRequest, ApprovalResponse};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The header that carries the request's timestamp (seconds since the Unix epoch).
pub const TIMESTAMP_HEADER: &str = "x-agenthalt-timestamp";
/// The header that carries the signature: `v1=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub const SIGNATURE_HEADER: &str = "x-agenthalt-signature";
/// The longest answer read from a receiver.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why a webhook handler cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL is not an absolute `http://` or `https://` URL.
    #[error("invalid webhook url: {0}")]
    Url(String),
    /// The secret is shorter than 16 bytes.
    #[error("the webhook secret must be at least 16 bytes")]
    WeakSecret,
    /// The HTTP client could not start.
    #[error("cannot start the HTTP client: {0}")]
    Client(String),
}

/// Why [`verify`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A header is missing or malformed.
    #[error("missing or malformed {0} header")]
    Header(&'static str),
    /// The timestamp is further from now than the tolerance allows.
    #[error("stale timestamp")]
    Stale,
    /// The signature does not match.
    #[error("bad signature")]
    Signature,
}

/// What the receiver is sent.
#[derive(Debug, Serialize)]
struct Body<'a> {
    /// The broker's approval id, to decide by later (absent without a broker).
    #[serde(skip_serializing_if = "Option::is_none")]
    approval_id: Option<&'a str>,
    call_id: &'a str,
    function: &'a str,
    /// With every guard's redaction applied.
    arguments: &'a halt_core::JsonObject,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    reasons: Vec<&'a str>,
    risk: f64,
    expires_at: f64,
}

/// What a receiver may answer: a decision, or that it comes later.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    #[serde(default)]
    approved: Option<bool>,
    #[serde(default)]
    pending: bool,
    #[serde(default)]
    approver: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    arguments: Option<halt_core::JsonObject>,
    #[serde(default)]
    function: Option<String>,
}

/// Posts each request to a URL, signed (see the module's documentation).
///
/// The receiver answers `200` with `{"approved": true|false, "approver"?, "reason"?,
/// "arguments"?}`, or `202` (or `{"pending": true}`) when a person decides later through the
/// broker. Under a broker, the handler's refusal is the broker's decision; alone, it is the
/// engine's answer.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    secret: Arc<[u8]>,
    timeout: Duration,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Webhook {
    /// A handler posting to `url`, signing with `secret`, waiting at most `timeout` for an answer.
    ///
    /// # Errors
    /// [`WebhookError::Url`], [`WebhookError::WeakSecret`], or [`WebhookError::Client`].
    pub fn new(url: &str, secret: &[u8], timeout: Duration) -> Result<Self, WebhookError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| WebhookError::Url(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(WebhookError::Url("must be an http:// or https:// URL with a host".into()));
        }
        if secret.len() < 16 {
            return Err(WebhookError::WeakSecret);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect would send the signed request somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Self { url: url.to_owned(), secret: secret.into(), timeout, client, clock: Arc::new(SystemClock) })
    }

    /// The same handler, stamping requests with `clock`'s time.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    async fn post(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        let ctx = request.context;
        let outcome = request.outcome;
        let body = Body {
            approval_id: request.approval_id,
            call_id: &ctx.call_id,
            function: &ctx.function_name,
            arguments: outcome.modified_arguments().unwrap_or(&ctx.arguments),
            agent_id: ctx.agent_id.as_deref(),
            session_id: ctx.session_id.as_deref(),
            reasons: outcome.approval_reasons(),
            risk: outcome.max_risk_score(),
            expires_at: request.expires_at,
        };
        let body = serde_json::to_vec(&body).map_err(|e| ApprovalError::Channel(e.to_string()))?;
        let timestamp = self.clock.now().as_micros().div_euclid(1_000_000).to_string();
        let signature = sign(&self.secret, &timestamp, &body);
        let fail = |what: String| ApprovalError::Channel(format!("webhook: {what}"));
        let mut response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, &signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    fail(format!("no answer within {} ms", self.timeout.as_millis()))
                } else {
                    fail("the request failed".into())
                }
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::ACCEPTED {
            return Err(ApprovalError::Deferred);
        }
        if !status.is_success() {
            return Err(fail(format!("the receiver answered {}", status.as_u16())));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|_| fail("the answer could not be read".into()))? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(fail(format!("the answer is larger than {MAX_ANSWER_BYTES} bytes")));
            }
            answer.extend_from_slice(&chunk);
        }
        let answer: Answer =
            serde_json::from_slice(&answer).map_err(|_| fail("the answer is not a decision".into()))?;
        match (answer.approved, answer.pending) {
            (None, true) => Err(ApprovalError::Deferred),
            (Some(approved), false) => Ok(ApprovalResponse {
                approved,
                approver: Some(answer.approver.unwrap_or_else(|| "webhook".into())),
                reason: answer.reason,
                arguments: answer.arguments,
                function: answer.function,
            }),
            _ => Err(fail("the answer is not a decision".into())),
        }
    }
}

#[async_trait]
impl ApprovalHandler for Webhook {
    async fn request_approval(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        self.post(request).await
    }
}

/// The signature header's value for `body` sent at `timestamp`.
#[must_use]
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!("v1={:x}", mac(secret, timestamp, body).finalize().into_bytes())
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // An HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks a received request: its signature, in constant time, and that its timestamp is within
/// `tolerance` of `now` (seconds since the Unix epoch). A receiver also remembers the signatures
/// it accepted within the tolerance and refuses one seen before.
///
/// # Errors
/// [`VerifyError`] says which check failed.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts = timestamp.ok_or(VerifyError::Header(TIMESTAMP_HEADER))?;
    let at: i64 = ts.parse().map_err(|_| VerifyError::Header(TIMESTAMP_HEADER))?;
    let sig = signature.and_then(|s| s.strip_prefix("v1=")).ok_or(VerifyError::Header(SIGNATURE_HEADER))?;
    let sig = unhex(sig).ok_or(VerifyError::Header(SIGNATURE_HEADER))?;
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.abs_diff(at) > tolerance.unsigned_abs() {
        return Err(VerifyError::Stale);
    }
    mac(secret, ts, body).verify_slice(&sig).map_err(|_| VerifyError::Signature)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_secret_body_and_time() {
        let secret = b"0123456789abcdef-secret";
        let sig = sign(secret, "1800000000", b"{\"a\":1}");
        let ok = |secret: &[u8], ts: &str, sig: &str, body: &[u8], now| {
            verify(secret, Some(ts), Some(sig), body, now, Duration::from_secs(300))
        };
        assert_eq!(ok(secret, "1800000000", &sig, b"{\"a\":1}", 1_800_000_100), Ok(()));
        assert_eq!(
            ok(b"another-secret-0123", "1800000000", &sig, b"{\"a\":1}", 1_800_000_000),
            Err(VerifyError::Signature)
        );
        assert_eq!(ok(secret, "1800000000", &sig, b"{\"a\":2}", 1_800_000_000), Err(VerifyError::Signature));
        assert_eq!(ok(secret, "1800000001", &sig, b"{\"a\":1}", 1_800_000_000), Err(VerifyError::Signature));
        assert_eq!(ok(secret, "1800000000", &sig, b"{\"a\":1}", 1_800_000_301), Err(VerifyError::Stale));
        assert_eq!(ok(secret, "soon", &sig, b"{\"a\":1}", 1_800_000_000), Err(VerifyError::Header(TIMESTAMP_HEADER)));
        assert_eq!(
            ok(secret, "1800000000", "abc", b"{\"a\":1}", 1_800_000_000),
            Err(VerifyError::Header(SIGNATURE_HEADER))
        );
        assert_eq!(ok(secret, "1800000000", "v1=zz", b"", 1_800_000_000), Err(VerifyError::Header(SIGNATURE_HEADER)));
        assert_eq!(
            verify(secret, None, Some(&sig), b"", 0, Duration::from_secs(1)),
            Err(VerifyError::Header(TIMESTAMP_HEADER))
        );
    }

    #[test]
    fn bad_targets_are_refused_when_made() {
        let t = Duration::from_secs(1);
        assert!(matches!(Webhook::new("ftp://x/y", b"0123456789abcdef", t), Err(WebhookError::Url(_))));
        assert!(matches!(Webhook::new("not a url", b"0123456789abcdef", t), Err(WebhookError::Url(_))));
        assert_eq!(Webhook::new("https://example.com/hook", b"short", t).unwrap_err(), WebhookError::WeakSecret);
        assert!(Webhook::new("https://example.com/hook", b"0123456789abcdef", t).is_ok());
    }
}
