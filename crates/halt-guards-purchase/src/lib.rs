//! The purchase guard: limits what an agent may buy, by amount, category, currency and daily
//! totals, and asks a human above a threshold.
//!
//! It applies to calls whose normalised name contains one of `purchase_functions` (`purchase`,
//! `buy`, `order`, `checkout`, `pay`, ...). The day's count and total are reserved atomically
//! while the guard evaluates and counted only if the purchase runs, including after a human
//! approves it.
//!
//! ```
//! use halt_core::{CallContext, Engine};
//! use halt_guards_purchase::{PurchaseConfig, PurchaseGuard};
//! use serde_json::json;
//!
//! let config = PurchaseConfig {
//!     max_single_purchase: Some("100".parse()?),
//!     require_approval_above: Some("50".parse()?),
//!     blocked_categories: vec!["gambling".into()],
//!     ..PurchaseConfig::default()
//! };
//! let engine = Engine::builder().guard(PurchaseGuard::new(config)?).build()?;
//! let buy = |args| CallContext::new("buy_item").with_arguments(args);
//! assert!(engine.evaluate_blocking(buy(json!({"amount": 20, "category": "office"}))?).is_allowed());
//! assert!(engine.evaluate_blocking(buy(json!({"amount": 75}))?).needs_approval());
//! assert!(engine.evaluate_blocking(buy(json!({"amount": 5, "category": "Online_Gambling"}))?).is_denied());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use halt_core::names::{NameFragments, normalize};
use halt_core::store::{CalendarKey, CounterSpec, ReserveOutcome, Window, key};
use halt_core::{
    Call, Decision, FactoryError, Guard, GuardError, Money, MoneyError, Timestamp, TypedFactory, async_trait,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The YAML name of this guard type.
pub const KIND: &str = "purchase";

/// The arguments read, in order, when `amount_field` is absent.
const AMOUNT_FALLBACKS: [&str; 4] = ["price", "total", "cost", "value"];

/// Settings of a [`PurchaseGuard`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PurchaseConfig {
    /// The most one purchase may cost.
    pub max_single_purchase: Option<Money>,
    /// The most all purchases of one UTC day may cost together.
    pub max_daily_purchases: Option<Money>,
    /// The most purchases per UTC day.
    pub max_purchase_count_per_day: Option<u32>,
    /// Purchases above this amount need human approval.
    pub require_approval_above: Option<Money>,
    /// Categories never bought (an entry matches a category that contains it).
    pub blocked_categories: Vec<String>,
    /// When set, the only categories bought.
    pub allowed_categories: Vec<String>,
    /// The argument holding the amount.
    pub amount_field: String,
    /// The argument holding the category (else `item.category`).
    pub category_field: String,
    /// The currency purchases are made in; a call stating another is denied.
    pub currency: String,
    /// Function-name fragments that make a call a purchase.
    pub purchase_functions: Vec<String>,
}

impl Default for PurchaseConfig {
    fn default() -> Self {
        Self {
            max_single_purchase: None,
            max_daily_purchases: None,
            max_purchase_count_per_day: None,
            require_approval_above: None,
            blocked_categories: Vec::new(),
            allowed_categories: Vec::new(),
            amount_field: "amount".to_owned(),
            category_field: "category".to_owned(),
            currency: "USD".to_owned(),
            purchase_functions: [
                "purchase",
                "buy",
                "order",
                "checkout",
                "make_payment",
                "place_order",
                "subscribe",
                "pay",
                "transfer_funds",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Enforces a [`PurchaseConfig`].
#[derive(Debug, Clone)]
pub struct PurchaseGuard {
    name: String,
    /// `purchase/<name>/count/<date>` and `purchase/<name>/total/<date>` (made once a day: keys
    /// are made on every call).
    daily_count: CalendarKey,
    daily_total: CalendarKey,
    config: PurchaseConfig,
    functions: NameFragments,
    blocked: NameFragments,
    allowed: NameFragments,
}

/// What the amount argument says.
enum Amount {
    Known(Money),
    Unknown(String),
    Invalid(String, MoneyError),
}

impl PurchaseGuard {
    /// A guard named `purchase`.
    ///
    /// # Errors
    /// An empty field name, currency or purchase function.
    pub fn new(config: PurchaseConfig) -> Result<Self, FactoryError> {
        Self::named(KIND, config)
    }

    /// A guard with a name of its own.
    ///
    /// # Errors
    /// As [`PurchaseGuard::new`].
    pub fn named(name: &str, config: PurchaseConfig) -> Result<Self, FactoryError> {
        for (field, value) in [
            ("amount_field", &config.amount_field),
            ("category_field", &config.category_field),
            ("currency", &config.currency),
        ] {
            if value.trim().is_empty() {
                return Err(FactoryError::invalid(field, "must not be empty"));
            }
        }
        let list = |field: &str, items: &[String]| {
            NameFragments::new(items).map_err(|_| FactoryError::invalid(field, "entries must not be empty"))
        };
        Ok(Self {
            daily_count: CalendarKey::new(key(&["purchase", name, "count"]).to_string()),
            daily_total: CalendarKey::new(key(&["purchase", name, "total"]).to_string()),
            name: name.to_owned(),
            functions: list("purchase_functions", &config.purchase_functions)?,
            blocked: list("blocked_categories", &config.blocked_categories)?,
            allowed: list("allowed_categories", &config.allowed_categories)?,
            config,
        })
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &PurchaseConfig {
        &self.config
    }

    fn amount(&self, call: &Call<'_>) -> Amount {
        let args = call.arguments();
        let field = &self.config.amount_field;
        let found = args
            .get(field)
            .map(|v| (field.as_str(), v))
            .or_else(|| AMOUNT_FALLBACKS.iter().find_map(|f| args.get(*f).map(|v| (*f, v))));
        let Some((field, value)) = found else {
            return Amount::Unknown("no amount argument".to_owned());
        };
        match Money::from_json(value) {
            Ok(m) => Amount::Known(m),
            Err(e @ MoneyError::NotANumber(_)) => Amount::Unknown(format!("`{field}`: {e}")),
            Err(e) => Amount::Invalid(field.to_owned(), e),
        }
    }

    fn category(&self, call: &Call<'_>) -> Option<String> {
        let args = call.arguments();
        let value =
            args.get(&self.config.category_field).or_else(|| args.get("item").and_then(|i| i.get("category")))?;
        match value {
            Value::String(s) => Some(normalize(s).into_owned()),
            Value::Null => None,
            other => Some(normalize(&other.to_string()).into_owned()),
        }
    }
}

#[async_trait]
impl Guard for PurchaseGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies(&self, call: &Call<'_>) -> bool {
        self.functions.is_in(call.function())
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let c = &self.config;
        let amount = match self.amount(call) {
            Amount::Known(m) => m,
            Amount::Unknown(why) => {
                return Ok(Decision::require_approval(format!("Cannot determine purchase amount ({why})")));
            }
            Amount::Invalid(field, e) => {
                return Ok(Decision::deny(format!("Invalid purchase amount: `{field}` {e}")));
            }
        };
        if let Some(stated) = call.arguments().get("currency") {
            let matches = stated.as_str().is_some_and(|s| s.trim().eq_ignore_ascii_case(c.currency.trim()));
            if !matches {
                return Ok(Decision::deny(format!("Currency {stated} is not the configured currency {}", c.currency))
                    .with_details_for(call, || json!({"currency": stated, "expected": c.currency})));
            }
        }
        let category = self.category(call);
        if let Some(cat) = &category
            && let Some(b) = self.blocked.first_in(cat)
        {
            return Ok(Decision::deny(format!("Category '{cat}' is blocked ('{b}')"))
                .with_details_for(call, || json!({"category": cat, "blocked": b})));
        }
        if !self.allowed.is_empty() && !category.as_deref().is_some_and(|cat| self.allowed.is_in(cat)) {
            let shown = category.as_deref().unwrap_or("(none)");
            return Ok(Decision::deny(format!("Category '{shown}' is not among the allowed categories"))
                .with_details_for(call, || json!({"category": category, "allowed": self.allowed.fragments()})));
        }
        if let Some(max) = c.max_single_purchase
            && amount > max
        {
            return Ok(Decision::deny(format!("Purchase of {amount} exceeds the single-purchase limit of {max}"))
                .with_details_for(call, || json!({"amount": amount, "limit": max})));
        }
        let (count_key, day) = self.daily_count.at(call.now(), Timestamp::utc_day);
        let (total_key, _) = self.daily_total.at(call.now(), Timestamp::utc_day);
        let window = Window::Bucket { expires_at: day.end };
        let counters = vec![
            CounterSpec::new(count_key, window, 1, c.max_purchase_count_per_day.map(i64::from)),
            CounterSpec::new(total_key, window, amount.micros(), c.max_daily_purchases.map(Money::micros)),
        ];
        match call.reserve(counters).await? {
            ReserveOutcome::Reserved { .. } => {}
            ReserveOutcome::Rejected { index: 0, current, limit, .. } => {
                return Ok(Decision::deny(format!("Daily purchase count limit reached: {current}/{limit}"))
                    .with_details_for(call, || json!({"count": current, "limit": limit})));
            }
            ReserveOutcome::Rejected { current, limit, .. } => {
                let (spent, limit) = (Money::from_micros(current), Money::from_micros(limit));
                return Ok(Decision::deny(format!(
                    "Daily purchase limit exceeded: {spent} spent today + {amount} would pass {limit}"
                ))
                .with_details_for(call, || json!({"spent": spent, "amount": amount, "limit": limit})));
            }
        };
        if let Some(threshold) = c.require_approval_above
            && amount > threshold
        {
            let risk = c
                .max_single_purchase
                .map_or(0.7, |max| if max.micros() == 0 { 1.0 } else { (amount.as_f64() / max.as_f64()).min(1.0) });
            return Ok(Decision::require_approval(format!(
                "Purchase of {amount} is above the approval threshold of {threshold}"
            ))
            .with_risk(risk)
            .with_details_for(call, || json!({"amount": amount, "threshold": threshold})));
        }
        Ok(Decision::allow("Purchase within limits"))
    }

    fn describe(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or(Value::Null)
    }
}

/// The factory that builds purchase guards from configuration (YAML type `purchase`).
#[must_use]
pub fn factory() -> impl halt_core::GuardFactory {
    TypedFactory::new(KIND, |name: &str, config: PurchaseConfig| PurchaseGuard::named(name, config))
}
