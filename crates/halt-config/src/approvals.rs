//! The `approvals:` section: who is asked, how long an approval lives, and which calls need
//! more than one approver.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `approvals:` section.
///
/// ```yaml
/// approvals:
///   handler: webhook            # none (default: decided through the API or the dashboard),
///                               # console, webhook, auto_deny, auto_approve (tests only)
///   timeout_seconds: 60         # how long the handler may take to answer
///   expires_after_seconds: 600  # how long an approval waits (at most engine.approval_timeout_seconds)
///   webhook:
///     url: https://approvals.example.com/agenthalt
///     secret: ${AGENTHALT_WEBHOOK_SECRET}
///   require_approvers:
///     "purchase_*": 2           # two distinct people approve; one denial ends it
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalSettings {
    /// Who is asked when a guard requires approval.
    pub handler: HandlerSetting,
    /// Seconds the handler may take to answer (the console's prompt, the webhook's request).
    pub timeout_seconds: f64,
    /// Seconds an approval waits for a decision before it is refused; at most the engine's
    /// `approval_timeout_seconds`, which it defaults to.
    pub expires_after_seconds: Option<f64>,
    /// Where the webhook handler posts, and the secret it signs with.
    pub webhook: Option<WebhookSettings>,
    /// Function patterns (globs) that need several distinct approvers, and how many; the largest
    /// number among the patterns a function matches counts.
    pub require_approvers: BTreeMap<String, u32>,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            handler: HandlerSetting::None,
            timeout_seconds: 300.0,
            expires_after_seconds: None,
            webhook: None,
            require_approvers: BTreeMap::new(),
        }
    }
}

/// Who is asked when a guard requires approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HandlerSetting {
    /// Nobody is called: approvals wait in the store until decided through the API or the
    /// dashboard.
    #[default]
    None,
    /// A prompt on the terminal (denied when there is none).
    Console,
    /// A signed POST to `webhook.url`.
    Webhook,
    /// Every approval refused.
    AutoDeny,
    /// Every approval granted, with a warning each time: for tests only.
    AutoApprove,
}

/// The webhook handler's target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// The HMAC-SHA256 key the body is signed with (use `${VAR}`, never the secret itself).
    pub secret: String,
}

/// Checks what the types do not: positive times, an expiry the engine's hold covers, a webhook
/// with its target, valid patterns and approver counts. Errors name the key path.
pub(crate) fn check(a: &ApprovalSettings, engine: &crate::EngineSettings) -> Result<(), (Vec<&'static str>, String)> {
    let positive = |v: f64| v > 0.0 && std::time::Duration::try_from_secs_f64(v).is_ok();
    if !positive(a.timeout_seconds) {
        return Err((vec!["approvals", "timeout_seconds"], "must be a positive number of seconds".into()));
    }
    if let Some(e) = a.expires_after_seconds {
        if !positive(e) {
            return Err((vec!["approvals", "expires_after_seconds"], "must be a positive number of seconds".into()));
        }
        if e > engine.approval_timeout_seconds {
            return Err((
                vec!["approvals", "expires_after_seconds"],
                format!(
                    "must not exceed engine.approval_timeout_seconds ({}), for which reservations are held",
                    engine.approval_timeout_seconds
                ),
            ));
        }
    }
    match (&a.handler, &a.webhook) {
        (HandlerSetting::Webhook, None) => {
            return Err((vec!["approvals", "webhook"], "the webhook handler needs `webhook: {url, secret}`".into()));
        }
        (_, Some(w)) => {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err((vec!["approvals", "webhook", "url"], "must start with http:// or https://".into()));
            }
            if w.secret.len() < 16 {
                return Err((vec!["approvals", "webhook", "secret"], "must be at least 16 bytes".into()));
            }
        }
        _ => {}
    }
    for (pattern, n) in &a.require_approvers {
        if let Err(e) = halt_core::names::NamePatterns::new([pattern]) {
            return Err((vec!["approvals", "require_approvers"], e.to_string()));
        }
        if *n == 0 || *n > 10 {
            return Err((
                vec!["approvals", "require_approvers"],
                format!("`{pattern}`: must be from 1 to 10 approvers"),
            ));
        }
    }
    Ok(())
}

/// The version of a policy document: a SHA-256 (hex) of its canonical JSON (keys sorted), so
/// that comments, spacing and key order do not change it.
pub(crate) fn version(doc: &serde_yaml::Value) -> String {
    use sha2::{Digest, Sha256};
    let mut json = serde_json::to_value(doc).unwrap_or_default();
    if let Some(map) = json.as_object_mut() {
        map.remove("server");
        if map.is_empty() {
            // The same as an empty file.
            json = serde_json::Value::Null;
        }
    }
    // Keys sorted here, whatever order the map keeps: the text is canonical.
    let text = sorted(json).to_string();
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(feature = "hil")]
impl crate::Policy {
    /// The handler the `approvals:` section names, if any (`none` has none: approvals wait for a
    /// decision through the broker).
    ///
    /// # Errors
    /// The webhook's HTTP client cannot start, or its URL is not one it can post to.
    pub fn approval_handler(
        &self,
    ) -> Result<Option<std::sync::Arc<dyn halt_engine::ApprovalHandler>>, halt_hil::webhook::WebhookError> {
        let timeout = crate::duration(self.approvals.timeout_seconds);
        Ok(match (self.approvals.handler, &self.approvals.webhook) {
            (HandlerSetting::None, _) => None,
            (HandlerSetting::Console, _) => Some(std::sync::Arc::new(halt_hil::Console::new(timeout))),
            (HandlerSetting::AutoDeny, _) => Some(std::sync::Arc::new(halt_hil::AutoDeny)),
            (HandlerSetting::AutoApprove, _) => Some(std::sync::Arc::new(halt_hil::AutoApprove)),
            (HandlerSetting::Webhook, Some(w)) => {
                Some(std::sync::Arc::new(halt_hil::Webhook::new(&w.url, w.secret.as_bytes(), timeout)?))
            }
            (HandlerSetting::Webhook, None) => {
                return Err(halt_hil::webhook::WebhookError::Url("the policy names no webhook".into()));
            }
        })
    }

    /// The approval broker this policy describes, keeping approvals in `store` on `clock` (the
    /// engine's two), asking through [`crate::Policy::approval_handler`]. Pass it to the engine builder
    /// as its approval handler.
    ///
    /// # Errors
    /// As [`crate::Policy::approval_handler`].
    pub fn broker(
        &self,
        store: std::sync::Arc<dyn halt_core::StateStore>,
        clock: std::sync::Arc<dyn halt_core::Clock>,
    ) -> Result<halt_hil::Broker, halt_hil::webhook::WebhookError> {
        let a = &self.approvals;
        let expires = a.expires_after_seconds.unwrap_or(self.engine.approval_timeout_seconds);
        let require_approvers = a
            .require_approvers
            .iter()
            .filter_map(|(p, n)| Some((halt_core::names::NamePatterns::new([p]).ok()?, *n)))
            .collect();
        let config = halt_hil::BrokerConfig {
            expires_after: crate::duration(expires),
            policy_version: self.version.clone(),
            require_approvers,
            ..halt_hil::BrokerConfig::default()
        };
        let broker = halt_hil::Broker::new(store, clock, config);
        Ok(match self.approval_handler()? {
            Some(handler) => broker.with_handler(handler),
            None => broker,
        })
    }
}
