//! The sensitive-data guard: keeps PII and secrets out of tool calls, by denying them or by
//! redacting them in place.
//!
//! Detectors are validated, not just matched: card numbers pass Luhn and carry a real issuer
//! prefix, SSNs follow the SSA's rules, IBANs pass their check digits, JWTs have a JSON header,
//! vendor tokens follow their published formats, generic secrets must look generated, and
//! placeholders (`sk-...`, `YOUR_API_KEY`, `xxxx`) are ignored. Field names are matched as words,
//! so `api_key`, `apiKey` and `X-Api-Key` are sensitive but `max_tokens` is not. Findings never
//! carry the value itself. What is nested too deep or is too large to scan is denied, never
//! skipped. The [`Redactor`] is public so other crates (the audit log) redact the same way.
//!
//! ```
//! use halt_core::CallContext;
//! use halt_engine::Engine;
//! use halt_guards_sensitive::{SensitiveConfig, SensitiveGuard};
//! use serde_json::json;
//!
//! let config = SensitiveConfig { redact_on_modify: true, ..SensitiveConfig::default() };
//! let engine = Engine::builder().guard(SensitiveGuard::new(config)?).build()?;
//! let call = CallContext::new("send_email").with_arguments(json!({"body": "my SSN is 123-45-6789"}))?;
//! let outcome = engine.evaluate_blocking(call);
//! assert_eq!(outcome.modified_arguments().unwrap()["body"], "my SSN is [REDACTED:ssn]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod detectors;
mod fold;
mod keys;
mod redact;
mod walk;

use std::collections::BTreeMap;

use halt_core::names::NamePatterns;
use halt_core::{Call, Decision, FactoryError, Guard, GuardError, TypedFactory, async_trait};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use redact::{Finding, Redactor, RedactorConfig, RedactorError, ScanError};

/// The YAML name of this guard type.
pub const KIND: &str = "sensitive_data";

/// The names of the built-in detectors, and of the `api_key` group.
#[must_use]
pub fn detector_names() -> Vec<&'static str> {
    detectors::DETECTORS.iter().map(|d| d.name).chain(detectors::GROUPS.iter().map(|g| g.0)).collect()
}

/// Settings of a [`SensitiveGuard`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SensitiveConfig {
    /// Scan the call's arguments (metadata is always scanned).
    pub scan_arguments: bool,
    /// The deepest nesting scanned; anything deeper is denied.
    pub scan_depth: usize,
    /// Detectors that block a call (see [`detector_names`]; `api_key` stands for every vendor
    /// token, private keys and generic secrets).
    pub blocked_patterns: Vec<String>,
    /// Extra patterns: name -> regular expression.
    pub custom_patterns: BTreeMap<String, String>,
    /// Field names whose values are sensitive, matched as whole words.
    pub sensitive_fields: Vec<String>,
    /// Redact the findings and let the call run, instead of denying it.
    pub redact_on_modify: bool,
    /// Functions exempt from this guard (patterns).
    pub allow_functions: Vec<String>,
    /// The most text scanned per call, in bytes; more is denied.
    pub max_scan_bytes: usize,
}

impl Default for SensitiveConfig {
    fn default() -> Self {
        Self {
            scan_arguments: true,
            scan_depth: 5,
            blocked_patterns: ["ssn", "credit_card", "api_key", "aws_key", "jwt"].map(String::from).to_vec(),
            custom_patterns: BTreeMap::new(),
            sensitive_fields: [
                "password",
                "secret",
                "token",
                "api_key",
                "private_key",
                "ssn",
                "credit_card",
                "social_security",
                "passphrase",
                "passwd",
                "pwd",
                "credential",
                "credentials",
                "authorization",
                "access_key",
                "cvv",
                "cvc",
            ]
            .map(String::from)
            .to_vec(),
            redact_on_modify: false,
            allow_functions: Vec::new(),
            max_scan_bytes: 1 << 20,
        }
    }
}

/// Enforces a [`SensitiveConfig`].
#[derive(Debug)]
pub struct SensitiveGuard {
    name: String,
    config: SensitiveConfig,
    redactor: Redactor,
    exempt: NamePatterns,
}

impl SensitiveGuard {
    /// A guard named `sensitive_data`.
    ///
    /// # Errors
    /// An unknown pattern name, an invalid custom pattern or exempt-function pattern.
    pub fn new(config: SensitiveConfig) -> Result<Self, FactoryError> {
        Self::named(KIND, config)
    }

    /// A guard with a name of its own.
    ///
    /// # Errors
    /// As [`SensitiveGuard::new`].
    pub fn named(name: &str, config: SensitiveConfig) -> Result<Self, FactoryError> {
        let mut patterns = config.blocked_patterns.clone();
        patterns.extend(config.custom_patterns.keys().cloned());
        let redactor = Redactor::new(&RedactorConfig {
            patterns,
            custom_patterns: config.custom_patterns.clone(),
            sensitive_fields: config.sensitive_fields.clone(),
            max_depth: config.scan_depth,
            max_bytes: config.max_scan_bytes,
        })
        .map_err(|e| FactoryError::invalid(e.field, e.reason))?;
        let exempt = NamePatterns::new(&config.allow_functions)
            .map_err(|e| FactoryError::invalid("allow_functions", e.to_string()))?;
        Ok(Self { name: name.to_owned(), config, redactor, exempt })
    }

    /// The redactor this guard uses.
    #[must_use]
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }
}

/// How many findings each pattern has, by pattern: `credit_card (1), ssn (2)`.
fn summarise(findings: &[Finding], more: &[Finding]) -> String {
    let mut patterns: Vec<&str> = findings.iter().chain(more).map(|f| f.pattern.as_str()).collect();
    patterns.sort_unstable();
    let mut out = String::new();
    for run in patterns.chunk_by(|a, b| a == b) {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(run[0]);
        out.push_str(" (");
        out.push_str(itoa::Buffer::new().format(run.len()));
        out.push(')');
    }
    out
}

/// The details of a decision on findings (moved, not copied, into JSON).
fn details(args: Vec<Finding>, meta: Vec<Finding>) -> Value {
    let list = |findings: Vec<Finding>| Value::Array(findings.into_iter().map(Finding::into_json).collect());
    let mut o = serde_json::Map::new();
    o.insert("findings".to_owned(), list(args));
    o.insert("metadata_findings".to_owned(), list(meta));
    Value::Object(o)
}

#[async_trait]
impl Guard for SensitiveGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies(&self, call: &Call<'_>) -> bool {
        !self.exempt.is_match_normalized(call.function())
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let ctx = call.context();
        let scanned =
            |r: Result<Vec<Finding>, ScanError>| r.map_err(|e| Decision::deny(format!("Sensitive-data check: {e}")));
        let in_args = if self.config.scan_arguments {
            match scanned(self.redactor.scan_object(&ctx.arguments)) {
                Ok(f) => f,
                Err(d) => return Ok(d),
            }
        } else {
            Vec::new()
        };
        let in_meta = match scanned(self.redactor.scan_object(&ctx.metadata)) {
            Ok(f) => f,
            Err(d) => return Ok(d),
        };
        if in_args.is_empty() && in_meta.is_empty() {
            return Ok(Decision::allow("No sensitive data found"));
        }
        if self.config.redact_on_modify && in_meta.is_empty() {
            let mut args = Value::Object(ctx.arguments.clone());
            if let Err(e) = self.redactor.redact_in_place(&mut args) {
                return Ok(Decision::deny(format!("Sensitive-data check: {e}")));
            }
            let Value::Object(args) = args else {
                return Ok(Decision::deny("Sensitive-data check: arguments changed shape"));
            };
            let reason = format!("Sensitive data redacted: {}", summarise(&in_args, &[]));
            return Ok(Decision::modify(reason, args).with_details(details(in_args, in_meta)));
        }
        let where_ = if in_meta.is_empty() { "" } else { " (metadata cannot be redacted)" };
        let reason = format!("Sensitive data detected: {}{where_}", summarise(&in_args, &in_meta));
        Ok(Decision::deny(reason).with_details(details(in_args, in_meta)))
    }

    /// It decides from the call alone, so it may decide ahead of the call's turn.
    fn is_pure(&self) -> bool {
        true
    }

    fn describe(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or(Value::Null)
    }
}

/// The factory that builds sensitive-data guards from configuration (YAML type `sensitive_data`).
#[must_use]
pub fn factory() -> impl halt_core::GuardFactory {
    TypedFactory::new(KIND, |name: &str, config: SensitiveConfig| SensitiveGuard::named(name, config))
}
