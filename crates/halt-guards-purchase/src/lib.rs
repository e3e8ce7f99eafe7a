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

/// Keys that state what a purchase costs, compared as [`field_key`] writes them (`Total_Amount`
/// is `totalamount`): the largest present counts.
const AMOUNT_KEYS: [&str; 15] = [
    "amount",
    "price",
    "total",
    "cost",
    "value",
    "subtotal",
    "sum",
    "charge",
    "totalamount",
    "totalprice",
    "totalcost",
    "grandtotal",
    "amounttotal",
    "paymentamount",
    "orderamount",
];
/// Keys that state the price of one unit, multiplied by the quantity beside them.
const UNIT_PRICE_KEYS: [&str; 5] = ["price", "unitprice", "priceperunit", "unitcost", "unitamount"];
/// Keys that state how many units are bought.
const QUANTITY_KEYS: [&str; 7] = ["quantity", "qty", "count", "units", "numitems", "numberofitems", "itemcount"];
/// Keys that state the currency.
const CURRENCY_KEYS: [&str; 5] = ["currency", "currencycode", "curr", "isocurrency", "currencyiso"];

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
                "transfer_money",
                "money_transfer",
                "send_money",
                "wire_transfer",
                "wire_funds",
                "charge",
                "remit",
                "donate",
                "refund",
                "withdraw",
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

/// What the arguments say a purchase costs.
enum Amount {
    /// The total: the largest amount stated, a unit price times its quantity, or the items'
    /// totals added up, whichever is largest.
    Known(Money),
    /// No amount, or one that is not a number (`field` says where).
    Unknown(String),
    /// An amount that is negative, not finite or too large, in `field`.
    Invalid(String, MoneyError),
}

/// A key as purchase fields are compared: lower case, letters and digits only (`Currency_Code`
/// is `currencycode`).
fn field_key(key: &str) -> String {
    key.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// One object of a purchase (the call's arguments, or one item in them) as its fields tell it.
#[derive(Default)]
struct Scope<'a> {
    /// Stated amounts, and where.
    amounts: Vec<(&'a str, &'a Value)>,
    /// Stated unit prices, and where.
    unit_prices: Vec<(&'a str, &'a Value)>,
    /// Stated quantities, and where.
    quantities: Vec<(&'a str, &'a Value)>,
}

/// Reads a stated amount.
fn money(field: &str, value: &Value) -> Result<Money, Amount> {
    Money::from_json(value).map_err(|e| match e {
        MoneyError::NotANumber(_) => Amount::Unknown(format!("`{field}` {}", e.problem())),
        e => Amount::Invalid(field.to_owned(), e),
    })
}

impl<'a> Scope<'a> {
    fn read(object: &'a serde_json::Map<String, Value>, amount_field: &str) -> Self {
        let mut scope = Self::default();
        for (k, v) in object {
            if v.is_null() {
                continue;
            }
            let key = field_key(k);
            if k == amount_field || AMOUNT_KEYS.contains(&key.as_str()) {
                scope.amounts.push((k, v));
            }
            if UNIT_PRICE_KEYS.contains(&key.as_str()) {
                scope.unit_prices.push((k, v));
            }
            if QUANTITY_KEYS.contains(&key.as_str()) {
                scope.quantities.push((k, v));
            }
        }
        scope
    }

    /// The largest of the amounts and of each unit price times the quantity (several
    /// quantities: the largest); `None` when nothing states one.
    fn total(&self) -> Result<Option<Money>, Amount> {
        let mut total: Option<Money> = None;
        for (field, value) in &self.amounts {
            total = total.max(Some(money(field, value)?));
        }
        let mut quantity: Option<Money> = None;
        for (field, value) in &self.quantities {
            quantity = quantity.max(Some(money(field, value)?));
        }
        if let Some(quantity) = quantity {
            for (field, value) in &self.unit_prices {
                let price = money(field, value)?;
                let product = i128::from(price.micros()) * i128::from(quantity.micros()) / 1_000_000;
                let product = i64::try_from(product)
                    .map_err(|_| Amount::Invalid((*field).to_owned(), MoneyError::Overflow(String::new())))?;
                total = total.max(Some(Money::from_micros(product)));
            }
        }
        Ok(total)
    }
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

    /// What the call's purchase costs: its own fields, or its items' added up, whichever says
    /// more (a model cannot pass a large order off by stating a small amount beside it).
    fn amount(&self, call: &Call<'_>) -> Amount {
        let field = self.config.amount_field.as_str();
        let mut total = match Scope::read(call.arguments(), field).total() {
            Ok(t) => t,
            Err(why) => return why,
        };
        let mut items: Option<Money> = None;
        for item in items_of(call.arguments()) {
            let item_total = match Scope::read(item, field).total() {
                Ok(t) => t.unwrap_or(Money::ZERO),
                Err(why) => return why,
            };
            let sum = items.unwrap_or(Money::ZERO).checked_add(item_total);
            match sum {
                Some(sum) => items = Some(sum),
                None => return Amount::Invalid("items".to_owned(), MoneyError::Overflow(String::new())),
            }
        }
        total = total.max(items.filter(|m| *m > Money::ZERO));
        total.map_or_else(|| Amount::Unknown("no amount argument".to_owned()), Amount::Known)
    }
}

/// The objects of a purchase's items: the objects among its arguments' values, and those in
/// lists among them (`item`, `items: [...]`, `order: {...}`).
fn items_of(args: &serde_json::Map<String, Value>) -> impl Iterator<Item = &serde_json::Map<String, Value>> {
    args.values().flat_map(|v| {
        let (one, list) = match v {
            Value::Object(o) => (Some(o), &[][..]),
            Value::Array(list) => (None, list.as_slice()),
            _ => (None, &[][..]),
        };
        one.into_iter().chain(list.iter().filter_map(Value::as_object))
    })
}

/// Every value of the purchase (its arguments and their items) under a key that `matches`, with
/// the key.
fn fields_where<'a>(
    args: &'a serde_json::Map<String, Value>,
    matches: impl Fn(&str, &str) -> bool + Copy + 'a,
) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
    std::iter::once(args)
        .chain(items_of(args))
        .flat_map(move |o| o.iter().filter(move |(k, _)| matches(k, &field_key(k))).map(|(k, v)| (k.as_str(), v)))
}

/// A category's values: a string, or each string of a list; anything else by its JSON text.
fn category_values(v: &Value) -> Vec<String> {
    match v {
        Value::Null => Vec::new(),
        Value::String(s) => vec![normalize(s).into_owned()],
        Value::Array(items) => items.iter().flat_map(category_values).collect(),
        other => vec![normalize(&other.to_string()).into_owned()],
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
                return Ok(Decision::deny(format!("Invalid purchase amount: `{field}` {}", e.problem())));
            }
        };
        let args = call.arguments();
        let currency = |_: &str, key: &str| CURRENCY_KEYS.contains(&key);
        for (field, stated) in fields_where(args, currency) {
            let matches = match stated {
                Value::Null => true,
                Value::String(s) => s.trim().eq_ignore_ascii_case(c.currency.trim()),
                _ => false,
            };
            if !matches {
                return Ok(Decision::deny(format!(
                    "Currency in `{field}` is not the configured currency {}",
                    c.currency
                ))
                .with_details_for(call, || json!({"field": field, "expected": c.currency})));
            }
        }
        let category_field = c.category_field.as_str();
        let is_category = |k: &str, key: &str| k == category_field || key.contains("categor");
        let mut categories = 0;
        for (field, value) in fields_where(args, is_category) {
            for cat in category_values(value) {
                categories += 1;
                if let Some(b) = self.blocked.first_in(&cat) {
                    return Ok(Decision::deny(format!("Category in `{field}` is blocked ('{b}')"))
                        .with_details_for(call, || json!({"field": field, "blocked": b})));
                }
                if !self.allowed.is_empty() && !self.allowed.is_in(&cat) {
                    return Ok(Decision::deny(format!("Category in `{field}` is not among the allowed categories"))
                        .with_details_for(call, || json!({"field": field, "allowed": c.allowed_categories})));
                }
            }
        }
        if !self.allowed.is_empty() && categories == 0 {
            return Ok(Decision::deny("No category is given, and only the allowed categories may be bought")
                .with_details_for(call, || json!({"allowed": c.allowed_categories})));
        }
        if let Some(max) = c.max_single_purchase
            && amount > max
        {
            return Ok(Decision::deny(format!("Purchase amount exceeds the single-purchase limit of {max}"))
                .with_details_for(call, || json!({"limit": max})));
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
                    "Daily purchase limit exceeded: {spent} spent today, and this purchase would pass {limit}"
                ))
                .with_details_for(call, || json!({"spent": spent, "limit": limit})));
            }
        };
        if let Some(threshold) = c.require_approval_above
            && amount > threshold
        {
            let risk = c
                .max_single_purchase
                .map_or(0.7, |max| if max.micros() == 0 { 1.0 } else { (amount.as_f64() / max.as_f64()).min(1.0) });
            return Ok(Decision::require_approval(format!(
                "Purchase amount is above the approval threshold of {threshold}"
            ))
            .with_risk(risk)
            .with_details_for(call, || json!({"threshold": threshold})));
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
