//! The argument rules guard: an ordered list of declarative rules on what a call does, not only
//! which tool it is. A rule names the functions it covers, conditions on argument values
//! (normalised paths, URLs with a private-network set, email domains, amounts, `one_of`, regular
//! expressions, `exists`; combined with `all`, `any`, `not`), and a decision. The first rule that
//! matches decides; with none, the default (allow unless set).
//!
//! A value that fails to parse never lets an `allow` rule match, and always lets a `deny` or
//! `require_approval` rule match: what cannot be read is not waved through.
//!
//! ```
//! use halt_core::CallContext;
//! use halt_engine::Engine;
//! use halt_guards_rules::{RulesConfig, RulesGuard};
//!
//! let config: RulesConfig = serde_json::from_value(serde_json::json!({
//!     "rules": [{
//!         "functions": ["http_*"],
//!         "where": {"field": "url", "url": {"private_network": true}},
//!         "decision": "deny",
//!         "reason": "no requests to internal addresses ({field})"
//!     }]
//! }))?;
//! let engine = Engine::builder().guard(RulesGuard::new(config)?).build()?;
//! let get = |url: &str| CallContext::new("http_get").with_arguments(serde_json::json!({"url": url})).unwrap();
//! assert!(engine.evaluate_blocking(get("http://0x7f000001/admin")).is_denied());
//! assert!(engine.evaluate_blocking(get("https://example.com/")).is_allowed());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compile;
mod matchers;

use halt_core::{Call, Decision, FactoryError, Guard, GuardError, TypedFactory, async_trait};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compile::Rule;

/// The YAML name of this guard type.
pub const KIND: &str = "rules";

/// Settings of a [`RulesGuard`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// What a call no rule matches gets.
    #[serde(default)]
    pub default: DefaultDecision,
    /// The rules, in order: the first that matches decides.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// What a call no rule matches gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DefaultDecision {
    /// It is allowed.
    #[default]
    Allow,
    /// It is denied.
    Deny,
}

/// What a matching rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleDecision {
    /// Allow the call (no later rule is looked at).
    Allow,
    /// A human must approve it.
    RequireApproval,
    /// Deny it.
    Deny,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Its name, for reasons (default: `rule <n>`).
    #[serde(default)]
    pub name: Option<String>,
    /// The functions it covers: glob patterns, normalised like every other name.
    pub functions: Vec<String>,
    /// Conditions on argument values; without any, the rule matches every covered call.
    #[serde(default, rename = "where")]
    pub condition: Option<Condition>,
    /// What it decides when it matches.
    pub decision: RuleDecision,
    /// The reason given: `{rule}` and `{field}` are replaced (the rule's name, the field its
    /// first condition reads). No value of the call is ever put in it.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A condition: exactly one of `all`, `any`, `not`, or a `field` with one or more matchers (all
/// of which must hold).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Every one of these holds.
    #[serde(default)]
    pub all: Option<Vec<Condition>>,
    /// At least one of these holds.
    #[serde(default)]
    pub any: Option<Vec<Condition>>,
    /// This does not hold.
    #[serde(default)]
    pub not: Option<Box<Condition>>,
    /// The argument: a dotted path (`to`, `request.headers.host`, `recipients.*.email`); `*` is any
    /// element of a list or any value of an object. Keys are compared normalised.
    #[serde(default)]
    pub field: Option<String>,
    /// Globs on the value as a normalised path.
    #[serde(default)]
    pub path: Option<PathMatcher>,
    /// The value as a URL.
    #[serde(default)]
    pub url: Option<UrlMatcher>,
    /// Globs on the domain of the value as an email address (lowercased, trailing dot dropped).
    #[serde(default)]
    pub email_domain: Option<Vec<String>>,
    /// The value as a number is greater than this.
    #[serde(default, rename = ">")]
    pub gt: Option<Value>,
    /// … at least this.
    #[serde(default, rename = ">=")]
    pub ge: Option<Value>,
    /// … less than this.
    #[serde(default, rename = "<")]
    pub lt: Option<Value>,
    /// … at most this.
    #[serde(default, rename = "<=")]
    pub le: Option<Value>,
    /// The value is one of these (strings compared exactly).
    #[serde(default)]
    pub one_of: Option<Vec<Value>>,
    /// The value, a string, matches this regular expression (size-limited).
    #[serde(default)]
    pub regex: Option<String>,
    /// The field is present (`true`) or absent (`false`).
    #[serde(default)]
    pub exists: Option<bool>,
}

/// Globs on a normalised path.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathMatcher {
    /// The globs (`*` within a segment, `**` across segments).
    pub glob: Vec<String>,
    /// Compare without case (default: true, as on the filesystems tools usually write to).
    #[serde(default = "yes")]
    pub ignore_case: bool,
}

fn yes() -> bool {
    true
}

/// Conditions on a URL; those given must all hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlMatcher {
    /// Its scheme is one of these.
    #[serde(default)]
    pub scheme: Option<Vec<String>>,
    /// Its host (lowercased, any address form resolved) matches one of these globs.
    #[serde(default)]
    pub host: Option<Vec<String>>,
    /// Its port (the scheme's default when not written) is one of these.
    #[serde(default)]
    pub port: Option<Vec<u16>>,
    /// Its host is (`true`) or is not (`false`) on a private network: loopback, RFC 1918,
    /// carrier-grade NAT, link-local (with the cloud metadata address 169.254.169.254),
    /// unspecified, IPv6 unique-local, `localhost`.
    #[serde(default)]
    pub private_network: Option<bool>,
}

/// Enforces a [`RulesConfig`].
#[derive(Debug)]
pub struct RulesGuard {
    name: String,
    config: RulesConfig,
    rules: Vec<Rule>,
}

impl RulesGuard {
    /// A guard named `rules`.
    ///
    /// # Errors
    /// A bad glob or regular expression, an unknown matcher, a numeric matcher on a non-numeric
    /// literal, a condition that is not exactly one thing.
    pub fn new(config: RulesConfig) -> Result<Self, FactoryError> {
        Self::named(KIND, config)
    }

    /// A guard with a name of its own.
    ///
    /// # Errors
    /// As [`RulesGuard::new`].
    pub fn named(name: &str, config: RulesConfig) -> Result<Self, FactoryError> {
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| Rule::compile(i, r).map_err(|(field, reason)| FactoryError::invalid(field, reason)))
            .collect::<Result<_, _>>()?;
        Ok(Self { name: name.to_owned(), config, rules })
    }
}

#[async_trait]
impl Guard for RulesGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies(&self, call: &Call<'_>) -> bool {
        self.config.default == DefaultDecision::Deny || self.rules.iter().any(|r| r.covers(call.function()))
    }

    fn is_pure(&self) -> bool {
        true
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let function = call.function();
        for rule in self.rules.iter().filter(|r| r.covers(function)) {
            if rule.matches(call.arguments()) {
                return Ok(rule.decision());
            }
        }
        Ok(match self.config.default {
            DefaultDecision::Allow => Decision::allow("no rule matched"),
            DefaultDecision::Deny => Decision::deny("no rule allows this call"),
        })
    }

    fn describe(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

/// The factory that builds this guard from its YAML settings.
#[must_use]
pub fn factory() -> impl halt_core::GuardFactory {
    TypedFactory::new(KIND, |name: &str, config: RulesConfig| RulesGuard::named(name, config))
}
