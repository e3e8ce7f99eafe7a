//! The budget guard: stops an agent from spending more than you allow, per call, per session,
//! per UTC day and per UTC month.
//!
//! Each call's cost is read from its arguments (`estimated_cost` by default), else from its
//! metadata, else from the `cost_estimator` price list, else `default_cost`. A cost the model
//! writes into the arguments can never undercut the price list. The cost is reserved atomically
//! in every window while the guard evaluates, counted only if the call runs, and can be replaced
//! with the actual cost later by `Engine::settle`.
//!
//! ```
//! use halt_core::CallContext;
//! use halt_engine::Engine;
//! use halt_guards_budget::{BudgetConfig, BudgetGuard};
//! use serde_json::json;
//!
//! let config = BudgetConfig { max_daily_spend: Some("1.00".parse()?), ..BudgetConfig::default() };
//! let engine = Engine::builder().guard(BudgetGuard::new(config)?).build()?;
//! let call = |cost: f64| CallContext::new("gpt4_call").with_arguments(json!({"estimated_cost": cost}));
//! assert!(engine.evaluate_blocking(call(0.6)?).is_allowed());
//! // 0.6 + 0.5 would pass 1.00.
//! assert!(engine.evaluate_blocking(call(0.5)?).is_denied());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use halt_core::names::normalize_keys;
use halt_core::partition::Partition;
use halt_core::store::{CalendarKey, CounterSpec, ReserveOutcome, StoreError, Window, key, key_part};
use halt_core::{
    CalendarWindow, Call, Decision, FactoryError, Guard, GuardError, Money, MoneyError, StateStore, Timestamp,
    TypedFactory, Usage, async_trait,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The YAML name of this guard type.
pub const KIND: &str = "budget";

/// How long a session's spend is remembered after its last call.
const SESSION_IDLE: Duration = Duration::from_secs(7 * 86_400);

/// Settings of a [`BudgetGuard`]. Every limit is optional; amounts are fixed-point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// The most one call may cost.
    pub max_call_cost: Option<Money>,
    /// The most one session may spend (calls without a session id skip this limit).
    pub max_session_spend: Option<Money>,
    /// The most that may be spent per UTC calendar day.
    pub max_daily_spend: Option<Money>,
    /// The most that may be spent per UTC calendar month.
    pub max_monthly_spend: Option<Money>,
    /// The argument (or metadata key) holding a call's cost.
    pub cost_field: String,
    /// The cost of a call that states none and is not in `cost_estimator`.
    pub default_cost: Money,
    /// The share of a limit past which a call needs human approval, in (0, 1]. Applies to every
    /// window.
    pub warn_threshold: f64,
    /// Known prices per function name.
    pub cost_estimator: BTreeMap<String, Money>,
    /// Whose day and month budgets a call counts against: `global` (default), `agent`,
    /// `session` or `metadata:<key>`.
    pub partition_by: Partition,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            max_call_cost: None,
            max_session_spend: None,
            max_daily_spend: None,
            max_monthly_spend: None,
            cost_field: "estimated_cost".to_owned(),
            default_cost: Money::from_micros(10_000),
            warn_threshold: 0.8,
            cost_estimator: BTreeMap::new(),
            partition_by: Partition::Global,
        }
    }
}

impl BudgetConfig {
    /// Checks the values serde cannot.
    ///
    /// # Errors
    /// A `warn_threshold` outside (0, 1], or an empty `cost_field`.
    pub fn validate(&self) -> Result<(), FactoryError> {
        if !(self.warn_threshold > 0.0 && self.warn_threshold <= 1.0) {
            return Err(FactoryError::invalid("warn_threshold", format!("{} is not in (0, 1]", self.warn_threshold)));
        }
        if self.cost_field.trim().is_empty() {
            return Err(FactoryError::invalid("cost_field", "must not be empty"));
        }
        Ok(())
    }
}

/// Enforces a [`BudgetConfig`].
#[derive(Debug, Clone)]
pub struct BudgetGuard {
    name: String,
    config: BudgetConfig,
    /// `cost_estimator` with normalised names.
    prices: BTreeMap<String, Money>,
    /// `budget/<name>`, the start of every key (made once: keys are made on every call).
    prefix: String,
    /// The daily and monthly keys when there is only one partition (made once per window).
    global: Option<[CalendarKey; 2]>,
}

/// The windows a call is charged to: the counters, and each one's label and limit (at most
/// three: session, day, month; a fixed array so that charging allocates only the counters).
#[derive(Default)]
struct Charges {
    specs: Vec<CounterSpec>,
    limits: [(&'static str, Money); 3],
}

impl Charges {
    fn push(&mut self, label: &'static str, limit: Money, spec: CounterSpec) {
        self.limits[self.specs.len()] = (label, limit);
        self.specs.push(spec);
    }
}

impl BudgetGuard {
    /// A guard named `budget`.
    ///
    /// # Errors
    /// An invalid configuration ([`BudgetConfig::validate`]).
    pub fn new(config: BudgetConfig) -> Result<Self, FactoryError> {
        Self::named(KIND, config)
    }

    /// A guard with a name of its own (several budget guards in one engine).
    ///
    /// # Errors
    /// An invalid configuration ([`BudgetConfig::validate`]).
    pub fn named(name: &str, config: BudgetConfig) -> Result<Self, FactoryError> {
        config.validate()?;
        let prices = normalize_keys(&config.cost_estimator)
            .map_err(|e| FactoryError::invalid("cost_estimator", format!("function names: {}", e.reason)))?;
        let prefix = key(&["budget", name]).to_string();
        let global = (config.partition_by == Partition::Global).then(|| {
            ["daily", "monthly"]
                .map(|label| CalendarKey::new(key(&[&prefix, Partition::GLOBAL_KEY, label]).to_string()))
        });
        Ok(Self { name: name.to_owned(), config, prices, prefix, global })
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// The call's cost, and where it came from; or why it cannot be known.
    fn cost(&self, call: &Call<'_>) -> Result<(Money, &'static str), (String, MoneyError)> {
        let field = &self.config.cost_field;
        let price = self.prices.get(call.function()).copied();
        if let Some(v) = call.arguments().get(field) {
            let stated = Money::from_json(v).map_err(|e| (format!("arguments.{field}"), e))?;
            // The model cannot talk a known price down.
            return Ok(match price {
                Some(p) if p > stated => (p, "cost_estimator"),
                _ => (stated, "arguments"),
            });
        }
        if let Some(v) = call.context().metadata.get(field) {
            return Money::from_json(v).map(|m| (m, "metadata")).map_err(|e| (format!("metadata.{field}"), e));
        }
        Ok(price.map_or((self.config.default_cost, "default_cost"), |p| (p, "cost_estimator")))
    }

    fn windows(&self, call: &Call<'_>, cost: Money) -> Charges {
        let c = &self.config;
        let ctx = call.context();
        let mut windows = Charges { specs: Vec::with_capacity(3), ..Charges::default() };
        if let (Some(limit), Some(session)) = (c.max_session_spend, ctx.session_id.as_deref()) {
            let k = key(&[&self.prefix, "session", &key_part(session)]);
            let idle = Window::Idle { idle: SESSION_IDLE };
            windows.push("session", limit, CounterSpec::new(k, idle, cost.micros(), Some(limit.micros())));
        }
        if c.max_daily_spend.is_none() && c.max_monthly_spend.is_none() {
            return windows;
        }
        let now = call.now();
        type Span = fn(Timestamp) -> CalendarWindow;
        let calendar: [(&str, Option<Money>, Span); 2] =
            [("daily", c.max_daily_spend, Timestamp::utc_day), ("monthly", c.max_monthly_spend, Timestamp::utc_month)];
        for (i, (label, limit, span)) in calendar.into_iter().enumerate() {
            let Some(limit) = limit else { continue };
            let (k, span) = match &self.global {
                Some(keys) => keys[i].at(now, span),
                None => {
                    let span = span(now);
                    (key(&[&self.prefix, &c.partition_by.key(ctx), label, &span.label]), span)
                }
            };
            let bucket = Window::Bucket { expires_at: span.end };
            windows.push(label, limit, CounterSpec::new(k, bucket, cost.micros(), Some(limit.micros())));
        }
        windows
    }
}

#[async_trait]
impl Guard for BudgetGuard {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let (cost, source) = match self.cost(call) {
            Ok(c) => c,
            Err((field, e)) => return Ok(unknown_cost(&field, &e)),
        };
        if let Some(max) = self.config.max_call_cost
            && cost > max
        {
            return Ok(over_call_limit(cost, max, source));
        }
        let Charges { specs, limits } = self.windows(call, cost);
        if specs.is_empty() {
            return Ok(Decision::allow("No spend limit applies"));
        }
        let totals = match call.reserve_cost(specs).await? {
            ReserveOutcome::Reserved { totals, .. } => totals,
            ReserveOutcome::Rejected { index, current, .. } => {
                let (label, limit) = limits[index];
                return Ok(over_budget(label, limit, Money::from_micros(current), cost, source));
            }
        };
        for ((label, limit), total) in limits.iter().zip(&totals) {
            let warn_at = limit.scale(self.config.warn_threshold);
            if *total > warn_at.micros() {
                return Ok(near_limit(
                    label,
                    *limit,
                    Money::from_micros(*total),
                    cost,
                    source,
                    self.config.warn_threshold,
                ));
            }
        }
        Ok(Decision::allow("Within budget"))
    }

    fn describe(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or(Value::Null)
    }

    /// The day's and the month's spend against their limits, when the budget is one for all
    /// calls (`partition_by: global`); a partitioned budget has one per partition, and none here.
    async fn usage(&self, store: &dyn StateStore, now: Timestamp) -> Result<Vec<Usage>, StoreError> {
        let Some(keys) = &self.global else { return Ok(Vec::new()) };
        let c = &self.config;
        type Span = fn(Timestamp) -> CalendarWindow;
        let calendar: [(&str, Option<Money>, Span); 2] =
            [("daily", c.max_daily_spend, Timestamp::utc_day), ("monthly", c.max_monthly_spend, Timestamp::utc_month)];
        let mut out = Vec::new();
        for ((label, limit, span), key) in calendar.into_iter().zip(keys) {
            let Some(limit) = limit else { continue };
            let (k, span) = key.at(now, span);
            let used = store.total(&k, Window::Bucket { expires_at: span.end }, now).await?;
            out.push(Usage {
                guard: self.name.clone(),
                limit_name: label.to_owned(),
                window: span.label.to_string(),
                unit: "money",
                used: Money::from_micros(used).as_f64(),
                limit: limit.as_f64(),
                warn_at: Some(c.warn_threshold),
            });
        }
        Ok(out)
    }
}

// The decisions other than "within budget", apart and cold, so that the common path stays small.

#[cold]
fn unknown_cost(field: &str, e: &MoneyError) -> Decision {
    // The value itself is never repeated: only where it is and what is wrong with it.
    let reason = match e {
        MoneyError::NotANumber(_) => format!("Cannot determine call cost: `{field}` {}", e.problem()),
        _ => format!("Invalid call cost: `{field}` {}", e.problem()),
    };
    Decision::deny(reason).with_details(json!({"field": field}))
}

/// The call's cost as a reason shows it: a price from the policy as a figure, a cost the call
/// states itself only by where it is (a reason never repeats a value of the call's).
fn cost_text(cost: Money, source: &str) -> String {
    if source == "arguments" { "the call's stated cost".to_owned() } else { cost.to_string() }
}

/// The cost in a decision's details, unless the call stated it.
fn cost_detail(cost: Money, source: &str) -> Value {
    if source == "arguments" { Value::Null } else { json!(cost) }
}

#[cold]
fn over_call_limit(cost: Money, max: Money, source: &str) -> Decision {
    let reason = if source == "arguments" {
        format!("The call's stated cost exceeds the per-call limit of {max}")
    } else {
        format!("Call cost {cost} exceeds the per-call limit of {max}")
    };
    Decision::deny(reason)
        .with_details(json!({"window": "call", "cost": cost_detail(cost, source), "source": source, "limit": max}))
}

#[cold]
fn over_budget(label: &str, limit: Money, spent: Money, cost: Money, source: &str) -> Decision {
    Decision::deny(format!(
        "{} budget exceeded: {spent} spent + {} would pass the limit of {limit}",
        capitalise(label),
        cost_text(cost, source)
    ))
    .with_details({
        json!({"window": label, "spent": spent, "cost": cost_detail(cost, source), "source": source, "limit": limit})
    })
}

#[cold]
fn near_limit(label: &str, limit: Money, total: Money, cost: Money, source: &str, warn_threshold: f64) -> Decision {
    let ratio = if limit.micros() == 0 { 1.0 } else { total.as_f64() / limit.as_f64() };
    Decision::require_approval(format!(
        "{} spend would reach {total} of {limit} ({:.0}%), past the warning threshold of {:.0}%",
        capitalise(label),
        ratio * 100.0,
        warn_threshold * 100.0
    ))
    .with_risk(ratio)
    .with_details({
        json!({"window": label, "total": total, "cost": cost_detail(cost, source), "source": source, "limit": limit})
    })
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The factory that builds budget guards from configuration (YAML type `budget`).
#[must_use]
pub fn factory() -> impl halt_core::GuardFactory {
    TypedFactory::new(KIND, |name: &str, config: BudgetConfig| BudgetGuard::named(name, config))
}
