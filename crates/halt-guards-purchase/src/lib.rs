//! The purchase guard: limits what an agent may buy, by amount, category, currency and daily
//! totals, and asks a human above a threshold.
//!
//! It applies to calls whose normalised name contains one of `purchase_functions` (`purchase`,
//! `buy`, `order`, `checkout`, `pay`, ...). The day's count and total are reserved atomically
//! while the guard evaluates and counted only if the purchase runs, including after a human
//! approves it.
//!
//! ```
//! use halt_core::CallContext;
//! use halt_engine::Engine;
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

use arrayvec::ArrayVec;
use halt_core::names::{NameFragments, normalize};
use halt_core::store::{CalendarKey, CounterSpec, ReserveOutcome, StoreError, Window, key};
use halt_core::{
    Call, Decision, FactoryError, Guard, GuardError, Money, MoneyError, StateStore, Timestamp, TypedFactory, Usage,
    async_trait,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The YAML name of this guard type.
pub const KIND: &str = "purchase";

/// What a key of a purchase states, by its name as [`field_key`] writes it (`Total_Amount` is
/// `totalamount`, `Currency_Code` is `currencycode`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fact {
    /// What the purchase costs: the largest stated counts.
    Amount,
    /// What one unit costs, and what the purchase costs when no quantity is given.
    UnitPrice,
    /// The price, which is both.
    Price,
    /// How many units.
    Quantity,
    /// The currency.
    Currency,
    /// Nothing the guard reads (a category is told by its name: it holds `categor`).
    Other,
}

impl Fact {
    fn of(key: &[u8]) -> Self {
        match key {
            b"amount" | b"total" | b"cost" | b"value" | b"subtotal" | b"sum" | b"charge" | b"totalamount"
            | b"totalprice" | b"totalcost" | b"grandtotal" | b"amounttotal" | b"paymentamount" | b"orderamount" => {
                Self::Amount
            }
            b"price" => Self::Price,
            b"unitprice" | b"priceperunit" | b"unitcost" | b"unitamount" => Self::UnitPrice,
            b"quantity" | b"qty" | b"count" | b"units" | b"numitems" | b"numberofitems" | b"itemcount" => {
                Self::Quantity
            }
            b"currency" | b"currencycode" | b"curr" | b"isocurrency" | b"currencyiso" => Self::Currency,
            _ => Self::Other,
        }
    }
}

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
/// is `currencycode`); `None` for a key too long to be one of them.
fn field_key(key: &str) -> Option<ArrayVec<u8, 32>> {
    let mut out = ArrayVec::new();
    for &b in key.as_bytes().iter().filter(|b| b.is_ascii_alphanumeric()) {
        out.try_push(b.to_ascii_lowercase()).ok()?;
    }
    Some(out)
}

/// Reads a stated amount.
fn money(field: &str, value: &Value) -> Result<Money, Amount> {
    Money::from_json(value).map_err(|e| match e {
        MoneyError::NotANumber(_) => Amount::Unknown(format!("`{field}` {}", e.problem())),
        e => Amount::Invalid(field.to_owned(), e),
    })
}

/// What a purchase's arguments and their items state, read in one pass over each. The fields
/// are held inline: a purchase names a few; one naming more than [`MAX_FIELDS`] currencies or
/// categories goes to a human.
#[derive(Default)]
struct Stated<'a> {
    /// Every currency field, and where.
    currencies: ArrayVec<(&'a str, &'a Value), MAX_FIELDS>,
    /// Every category field, and where.
    categories: ArrayVec<(&'a str, &'a Value), MAX_FIELDS>,
}

/// The most currency fields, and category fields, one purchase is read with.
const MAX_FIELDS: usize = 8;

impl<'a> Stated<'a> {
    fn keep(
        fields: &mut ArrayVec<(&'a str, &'a Value), MAX_FIELDS>,
        key: &'a str,
        value: &'a Value,
    ) -> Result<(), Amount> {
        fields
            .try_push((key, value))
            .map_err(|_| Amount::Unknown(format!("more than {MAX_FIELDS} fields like `{key}`")))
    }

    /// Reads one object (the arguments, or an item): keeps its currency and category fields, and
    /// returns what it says it costs: the largest of its amounts and of its unit price times its
    /// quantity; `None` when it states neither.
    fn read(
        &mut self,
        object: &'a serde_json::Map<String, Value>,
        config: &PurchaseConfig,
    ) -> Result<Option<Money>, Amount> {
        let (mut total, mut price, mut quantity): (Option<Money>, Option<(&str, Money)>, Option<Money>) =
            (None, None, None);
        for (k, v) in object {
            if v.is_null() {
                continue;
            }
            let key = field_key(k).unwrap_or_default();
            let fact = if *k == config.amount_field { Fact::Amount } else { Fact::of(&key) };
            match fact {
                Fact::Amount => total = total.max(Some(money(k, v)?)),
                Fact::Price | Fact::UnitPrice => {
                    let p = money(k, v)?;
                    if fact == Fact::Price {
                        total = total.max(Some(p));
                    }
                    if price.is_none_or(|(_, q)| p > q) {
                        price = Some((k, p));
                    }
                }
                Fact::Quantity => quantity = quantity.max(Some(money(k, v)?)),
                Fact::Currency => Self::keep(&mut self.currencies, k, v)?,
                Fact::Other => {}
            }
            if *k == config.category_field || key.windows(7).any(|w| w == b"categor") {
                Self::keep(&mut self.categories, k, v)?;
            }
        }
        if let (Some((field, price)), Some(quantity)) = (price, quantity) {
            let product = i128::from(price.micros()) * i128::from(quantity.micros()) / 1_000_000;
            let product = i64::try_from(product)
                .map_err(|_| Amount::Invalid(field.to_owned(), MoneyError::Overflow(String::new())))?;
            total = total.max(Some(Money::from_micros(product)));
        }
        Ok(total)
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

/// Calls `f` with each category a category field states: a string, or each string of a list;
/// anything else by its JSON text. Stops at the first `Some`.
fn each_category<T>(v: &Value, f: &mut impl FnMut(&str) -> Option<T>) -> Option<T> {
    match v {
        Value::Null => None,
        Value::String(s) => f(&normalize(s)),
        Value::Array(items) => items.iter().find_map(|i| each_category(i, f)),
        other => f(&normalize(&other.to_string())),
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

    /// What the call's purchase costs (its own fields, or its items' added up, whichever says
    /// more: a model cannot pass a large order off by stating a small amount beside it), with
    /// every currency and category field it states.
    fn stated<'c>(&self, call: &Call<'c>) -> (Stated<'c>, Amount) {
        let args = call.arguments();
        let mut stated = Stated::default();
        let own = match stated.read(args, &self.config) {
            Ok(t) => t,
            Err(why) => return (stated, why),
        };
        let mut items: Option<Money> = None;
        for item in items_of(args) {
            let item_total = match stated.read(item, &self.config) {
                Ok(t) => t.unwrap_or(Money::ZERO),
                Err(why) => return (stated, why),
            };
            match items.unwrap_or(Money::ZERO).checked_add(item_total) {
                Some(sum) => items = Some(sum),
                None => return (stated, Amount::Invalid("items".to_owned(), MoneyError::Overflow(String::new()))),
            }
        }
        let total = own.max(items.filter(|m| *m > Money::ZERO));
        (stated, total.map_or_else(|| Amount::Unknown("no amount argument".to_owned()), Amount::Known))
    }

    /// The purchase's amount, once every currency and category field it states is allowed; or
    /// the decision refusing it.
    fn check_fields(&self, call: &Call<'_>) -> Result<Money, Decision> {
        let c = &self.config;
        let (stated, amount) = self.stated(call);
        let amount = match amount {
            Amount::Known(m) => m,
            Amount::Unknown(why) => {
                return Err(Decision::require_approval(format!("Cannot determine purchase amount ({why})")));
            }
            Amount::Invalid(field, e) => {
                return Err(Decision::deny(format!("Invalid purchase amount: `{field}` {}", e.problem())));
            }
        };
        for &(field, currency) in &stated.currencies {
            let matches = match currency {
                Value::String(s) => s.trim().eq_ignore_ascii_case(c.currency.trim()),
                _ => false,
            };
            if !matches {
                return Err(Decision::deny(format!(
                    "Currency in `{field}` is not the configured currency {}",
                    c.currency
                ))
                .with_details(json!({"field": field, "expected": c.currency})));
            }
        }
        let mut categories = 0;
        for &(field, value) in &stated.categories {
            let refusal = each_category(value, &mut |cat| {
                categories += 1;
                if let Some(b) = self.blocked.first_in(cat) {
                    return Some(
                        Decision::deny(format!("Category in `{field}` is blocked ('{b}')"))
                            .with_details(json!({"field": field, "blocked": b})),
                    );
                }
                (!self.allowed.is_empty() && !self.allowed.is_in(cat)).then(|| {
                    Decision::deny(format!("Category in `{field}` is not among the allowed categories"))
                        .with_details(json!({"field": field, "allowed": c.allowed_categories}))
                })
            });
            if let Some(d) = refusal {
                return Err(d);
            }
        }
        if !self.allowed.is_empty() && categories == 0 {
            return Err(Decision::deny("No category is given, and only the allowed categories may be bought")
                .with_details(json!({"allowed": c.allowed_categories})));
        }
        Ok(amount)
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
        // What the arguments say is read before anything waits: it stays out of this future.
        let amount = match self.check_fields(call) {
            Ok(amount) => amount,
            Err(refusal) => return Ok(refusal),
        };
        if let Some(max) = c.max_single_purchase
            && amount > max
        {
            return Ok(Decision::deny(format!("Purchase amount exceeds the single-purchase limit of {max}"))
                .with_details(json!({"limit": max})));
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
                    .with_details(json!({"count": current, "limit": limit})));
            }
            ReserveOutcome::Rejected { current, limit, .. } => {
                let (spent, limit) = (Money::from_micros(current), Money::from_micros(limit));
                return Ok(Decision::deny(format!(
                    "Daily purchase limit exceeded: {spent} spent today, and this purchase would pass {limit}"
                ))
                .with_details(json!({"spent": spent, "limit": limit})));
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
            .with_details(json!({"threshold": threshold})));
        }
        Ok(Decision::allow("Purchase within limits"))
    }

    fn describe(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or(Value::Null)
    }

    /// The day's purchases (their total and their count) against their limits.
    async fn usage(&self, store: &dyn StateStore, now: Timestamp) -> Result<Vec<Usage>, StoreError> {
        let c = &self.config;
        let limits = [
            ("daily_purchases", "money", &self.daily_total, c.max_daily_purchases.map(Money::as_f64), 1e-6),
            ("daily_purchase_count", "calls", &self.daily_count, c.max_purchase_count_per_day.map(f64::from), 1.0),
        ];
        let mut out = Vec::new();
        for (name, unit, key, limit, scale) in limits {
            let Some(limit) = limit else { continue };
            let (k, day) = key.at(now, Timestamp::utc_day);
            #[allow(clippy::cast_precision_loss, reason = "a gauge: amounts far below 2^53 micro-units")]
            let used = store.total(&k, Window::Bucket { expires_at: day.end }, now).await? as f64 * scale;
            out.push(Usage {
                guard: self.name.clone(),
                limit_name: name.to_owned(),
                window: day.label.to_string(),
                unit,
                used,
                limit,
                warn_at: None,
            });
        }
        Ok(out)
    }
}

/// The factory that builds purchase guards from configuration (YAML type `purchase`).
#[must_use]
pub fn factory() -> impl halt_core::GuardFactory {
    TypedFactory::new(KIND, |name: &str, config: PurchaseConfig| PurchaseGuard::named(name, config))
}
