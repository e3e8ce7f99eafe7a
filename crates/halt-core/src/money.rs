//! Fixed-point money: [`Money`] counts whole micro-units, so sums are exact.
//!
//! Ten charges of 0.1 fill a budget of 1.0 exactly, and 0.1 + 0.1 + 0.1 never exceeds 0.3.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// Micro-units in one unit.
const SCALE: i64 = 1_000_000;
/// Decimal places kept.
const DECIMALS: usize = 6;

/// A non-negative amount of money (or cost) in micro-units (millionths of one unit).
///
/// ```
/// use halt_core::Money;
///
/// let tenth: Money = "0.1".parse()?;
/// let mut total = Money::ZERO;
/// for _ in 0..10 {
///     total = total.checked_add(tenth).unwrap();
/// }
/// assert_eq!(total, Money::from_units(1));
/// assert_eq!(total.to_string(), "1");
/// # Ok::<(), halt_core::MoneyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

/// Why a value is not an amount of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// The value is not a number, nor a string holding one.
    #[error("`{0}` is not a number")]
    NotANumber(String),
    /// NaN or an infinity.
    #[error("`{0}` is not a finite number")]
    NotFinite(String),
    /// Below zero.
    #[error("`{0}` is negative")]
    Negative(String),
    /// Too large to count in micro-units.
    #[error("`{0}` is too large")]
    Overflow(String),
}

impl MoneyError {
    /// What is wrong, without the value: for reasons shown about a call, which never repeat
    /// the call's own values (`is not a number`, `is negative`).
    ///
    /// ```
    /// use halt_core::Money;
    ///
    /// let e = "SSN 123-45-6789".parse::<Money>().unwrap_err();
    /// assert_eq!(e.problem(), "is not a number");
    /// ```
    #[must_use]
    pub fn problem(&self) -> &'static str {
        match self {
            Self::NotANumber(_) => "is not a number",
            Self::NotFinite(_) => "is not a finite number",
            Self::Negative(_) => "is negative",
            Self::Overflow(_) => "is too large",
        }
    }
}

impl Money {
    /// Zero.
    pub const ZERO: Self = Self(0);
    /// The largest amount, about 9.2 trillion units.
    pub const MAX: Self = Self(i64::MAX);

    /// An amount from micro-units; negative input is clamped to zero.
    #[must_use]
    pub const fn from_micros(micros: i64) -> Self {
        Self(if micros < 0 { 0 } else { micros })
    }

    /// An amount of whole units, saturating at [`Money::MAX`].
    #[must_use]
    pub const fn from_units(units: i64) -> Self {
        Self::from_micros(units.saturating_mul(SCALE))
    }

    /// Micro-units.
    #[must_use]
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// The amount as a float, for display and ratios only.
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "for display and ratios only")]
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / SCALE as f64
    }

    /// The sum, or `None` on overflow.
    #[must_use]
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// The difference, or `None` below zero.
    #[must_use]
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).filter(|m| *m >= 0).map(Self)
    }

    /// The amount scaled by `ratio` (for thresholds such as 80 % of a limit), rounded down.
    ///
    /// A ratio that is NaN or negative gives zero; the result saturates at [`Money::MAX`].
    #[must_use]
    pub fn scale(self, ratio: f64) -> Self {
        if ratio.is_nan() || ratio <= 0.0 {
            return Self::ZERO;
        }
        #[allow(clippy::cast_precision_loss, reason = "thresholds tolerate rounding")]
        let v = (self.0 as f64 * ratio).floor();
        if v >= i64::MAX as f64 {
            Self::MAX
        } else {
            #[allow(clippy::cast_possible_truncation, reason = "range checked above")]
            Self(v as i64)
        }
    }

    /// Reads an amount from JSON: a number or a string holding a decimal number.
    ///
    /// # Errors
    /// Anything else is [`MoneyError::NotANumber`]; NaN and infinities, negative values and
    /// values too large for micro-units get their own error.
    pub fn from_json(value: &Value) -> Result<Self, MoneyError> {
        match value {
            Value::Number(n) => match n.as_u64() {
                Some(units) => i64::try_from(units)
                    .ok()
                    .and_then(|u| u.checked_mul(SCALE))
                    .map(Self)
                    .ok_or_else(|| MoneyError::Overflow(n.to_string())),
                None => Self::from_f64_exact(n.as_f64()).map_or_else(|| n.to_string().parse(), Ok),
            },
            Value::String(s) => s.parse(),
            other => Err(MoneyError::NotANumber(preview(&other.to_string()))),
        }
    }
}

impl Money {
    /// The micro-units of a float whose decimal form has at most six decimals, when that can be
    /// read off the float itself; `None` sends the caller to the exact decimal parse.
    ///
    /// Below 10^9 units the float is within 0.2 micro-units of its decimal value, so when it
    /// lands within 0.001 of a whole micro-unit, that micro-unit is the decimal's.
    fn from_f64_exact(f: Option<f64>) -> Option<Self> {
        let f = f?;
        if !(0.0..1e9).contains(&f) {
            return None;
        }
        let scaled = f * 1e6;
        let rounded = scaled.round();
        #[allow(clippy::cast_possible_truncation, reason = "below 10^15, checked above")]
        ((scaled - rounded).abs() < 1e-3).then_some(Self(rounded as i64))
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    /// Parses a decimal number: optional sign, digits with an optional fraction, an optional
    /// exponent (`1e3`), surrounding whitespace ignored. Digits past the sixth decimal are
    /// rounded half up.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let shown = || preview(text);
        let lower = text.to_ascii_lowercase();
        let unsigned = lower.strip_prefix(['+', '-']).unwrap_or(&lower);
        if matches!(unsigned, "nan" | "inf" | "infinity") {
            return Err(MoneyError::NotFinite(shown()));
        }
        let negative = text.starts_with('-');
        let (mantissa, exponent) = match unsigned.split_once('e') {
            Some((m, e)) => (
                m,
                exponent(e)
                    .ok_or_else(|| MoneyError::NotANumber(shown()))?
                    .map_err(|()| MoneyError::Overflow(shown()))?,
            ),
            None => (unsigned, 0),
        };
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (int_part.is_empty() && frac_part.is_empty()) || !all_digits(int_part) || !all_digits(frac_part) {
            return Err(MoneyError::NotANumber(shown()));
        }
        // All digits as one string without leading zeros, the decimal point `point` places in.
        let all = format!("{int_part}{frac_part}");
        let digits = all.trim_start_matches('0');
        let leading_zeros = all.len() - digits.len();
        let point = i64::try_from(int_part.len())
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(leading_zeros).unwrap_or(i64::MAX))
            .saturating_add(exponent);
        let micros = scale_digits(digits, point).ok_or_else(|| MoneyError::Overflow(shown()))?;
        if negative && micros > 0 {
            return Err(MoneyError::Negative(shown()));
        }
        Ok(Self(micros))
    }
}

/// The exponent of a decimal number, the text after its `e`: one optional sign, then digits.
/// `None` when it is anything else (`--1`, `+-3`, `-`, `1.5`); `Some(Err(()))` when it is far
/// too large; a vanishingly small one (`-99999999999999999999`) reads as `i64::MIN / 2`.
fn exponent(text: &str) -> Option<Result<i64, ()>> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(match text.parse::<i64>() {
        Ok(e) => Ok(e),
        Err(_) if text.starts_with('-') => Ok(i64::MIN / 2),
        Err(_) => Err(()),
    })
}

/// The value in micro-units of the digit string `digits` (no leading zeros) with the decimal
/// point after `point` digits (which may be negative or past the end), rounded half up.
fn scale_digits(digits: &str, point: i64) -> Option<i64> {
    if digits.is_empty() {
        return Some(0);
    }
    // Micro-units keep the digits up to position point + 6.
    let keep = point.checked_add(DECIMALS as i64)?;
    if keep <= 0 {
        // Every digit is below a micro-unit; rounding can give at most 1.
        return Some(i64::from(keep == 0 && digits.as_bytes()[0] >= b'5'));
    }
    let len = i64::try_from(digits.len()).ok()?;
    let mut value: i64 = 0;
    for i in 0..keep {
        let d = if i < len { i64::from(digits.as_bytes()[usize::try_from(i).ok()?] - b'0') } else { 0 };
        // The first digit is not zero, so this overflows within 19 rounds for huge exponents.
        value = value.checked_mul(10)?.checked_add(d)?;
    }
    if keep < len && digits.as_bytes()[usize::try_from(keep).ok()?] >= b'5' {
        value = value.checked_add(1)?;
    }
    Some(value)
}

impl fmt::Display for Money {
    /// The shortest decimal text that parses back to the same amount (`1`, `0.1`, `12.000001`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = self.0 / SCALE;
        let frac = self.0 % SCALE;
        if frac == 0 {
            write!(f, "{units}")
        } else {
            let frac = format!("{frac:06}");
            write!(f, "{units}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl serde::Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

impl<'de> serde::Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_json(&v).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Money {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Money".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A non-negative amount with up to six decimals: a number or a numeric string",
            "anyOf": [
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*\\+?[0-9]*\\.?[0-9]+([eE][+-]?[0-9]+)?\\s*$" }
            ]
        })
    }
}

/// At most 40 characters of a rejected value, for error messages.
fn preview(text: &str) -> String {
    if text.chars().count() <= 40 {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(40).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(m("0.1").micros(), 100_000);
        assert_eq!(m("1").micros(), 1_000_000);
        assert_eq!(m(" 12.5 ").micros(), 12_500_000);
        assert_eq!(m(".5").micros(), 500_000);
        assert_eq!(m("5.").micros(), 5_000_000);
        assert_eq!(m("0.000001").micros(), 1);
        assert_eq!(m("0.0000005").micros(), 1);
        assert_eq!(m("0.0000004").micros(), 0);
        assert_eq!(m("1e3").micros(), 1_000_000_000);
        assert_eq!(m("1.5E2").micros(), 150_000_000);
        assert_eq!(m("25e-2").micros(), 250_000);
        assert_eq!(m("0001.10").micros(), 1_100_000);
        assert_eq!(m("-0").micros(), 0);
        assert_eq!(m("+3").micros(), 3_000_000);
        assert_eq!(m("1.9999995").micros(), 2_000_000);
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "", "abc", "$5", "1.2.3", "e5", ".", "1e", "--1", "1,5", "0x10", "5000e--1", "1e-+3", "5e-+-+-", "9e--9",
            "1e--5", "1e+", "1e-", "1e++3", "1e3.5", "1e 3", "1ee3", "1e3e4", "- 1", "+-1", "1_000",
        ] {
            assert!(matches!(bad.parse::<Money>(), Err(MoneyError::NotANumber(_))), "{bad}");
        }
        for bad in ["NaN", "Infinity", "-inf", "+infinity"] {
            assert!(matches!(bad.parse::<Money>(), Err(MoneyError::NotFinite(_))), "{bad}");
        }
        assert!(matches!("-5".parse::<Money>(), Err(MoneyError::Negative(_))));
        assert!(matches!("1e400".parse::<Money>(), Err(MoneyError::Overflow(_))));
        assert!(matches!("99999999999999999999".parse::<Money>(), Err(MoneyError::Overflow(_))));
        assert!(matches!("1e99999999999999999999".parse::<Money>(), Err(MoneyError::Overflow(_))));
        assert_eq!(m("1e-99999999999999999999"), Money::ZERO);
    }

    #[test]
    fn reads_json() {
        assert_eq!(Money::from_json(&json!(0.1)).unwrap().micros(), 100_000);
        assert_eq!(Money::from_json(&json!(3)).unwrap().micros(), 3_000_000);
        assert_eq!(Money::from_json(&json!("2.50")).unwrap().micros(), 2_500_000);
        assert!(matches!(Money::from_json(&json!(-5)), Err(MoneyError::Negative(_))));
        for bad in [json!(true), json!({}), json!([]), json!(null)] {
            assert!(matches!(Money::from_json(&bad), Err(MoneyError::NotANumber(_))), "{bad}");
        }
    }

    #[test]
    fn fixed_point_sums() {
        let tenth = m("0.1");
        let three = tenth.checked_add(tenth).and_then(|t| t.checked_add(tenth)).unwrap();
        assert!(three <= m("0.3"));
        assert_eq!(three, m("0.3"));
    }

    #[test]
    fn display_round_trips() {
        for s in ["0", "1", "0.1", "12.000001", "9223372036854.775807"] {
            assert_eq!(m(s).to_string(), s);
        }
    }

    #[test]
    fn scale_floors_and_guards() {
        assert_eq!(m("1").scale(0.8), m("0.8"));
        assert_eq!(m("1").scale(f64::NAN), Money::ZERO);
        assert_eq!(Money::MAX.scale(2.0), Money::MAX);
    }
}
