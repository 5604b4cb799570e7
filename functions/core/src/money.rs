//! Money: exact decimal amounts with ISO 4217 currency codes.
//!
//! Every amount in p2c is a `rust_decimal::Decimal`. JSON numbers are read through
//! serde_json's `arbitrary_precision`, so `2154.32` arrives as the text `2154.32` and
//! never passes through `f64`.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A three-letter ISO 4217 currency code, upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "String", into = "String")]
pub struct CurrencyCode(String);

impl CurrencyCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CurrencyCode {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let v = value.trim().to_ascii_uppercase();
        if v.len() == 3 && v.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(v))
        } else {
            Err(format!("`{value}` is not a three-letter currency code"))
        }
    }
}

impl FromStr for CurrencyCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_string())
    }
}

impl From<CurrencyCode> for String {
    fn from(c: CurrencyCode) -> String {
        c.0
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Formats an amount with thousands separators and at least two decimals: `84,300.00`.
pub fn format_amount(amount: Decimal) -> String {
    let mut a = amount.normalize();
    if a.scale() < 2 {
        a.rescale(2);
    }
    let text = a.abs().to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if amount.is_sign_negative() && !amount.is_zero() {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_formatted_with_grouping_and_two_decimals() {
        assert_eq!(
            format_amount(Decimal::from_str("84300").unwrap()),
            "84,300.00"
        );
        assert_eq!(
            format_amount(Decimal::from_str("-1234.5").unwrap()),
            "-1,234.50"
        );
        assert_eq!(format_amount(Decimal::from_str("0.125").unwrap()), "0.125");
    }

    #[test]
    fn currency_codes_are_validated() {
        assert!(CurrencyCode::from_str("eur").is_ok());
        assert!(CurrencyCode::from_str("EURO").is_err());
    }
}
