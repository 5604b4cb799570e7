//! JSON helpers shared by parsers, rules and connectors.
//!
//! Decimal amounts travel as JSON numbers whose text is exact (serde_json's
//! `arbitrary_precision`), fingerprints are SHA-256 over canonical JSON (keys sorted,
//! no whitespace), so the same content always hashes the same, whatever order the
//! source system wrote its keys in.

use rust_decimal::Decimal;
use serde_json::{Number, Value};
use sha2::{Digest, Sha256};
use std::str::FromStr;

/// An exact JSON number for a decimal amount (no float round trip).
pub fn decimal_number(d: Decimal) -> Value {
    let text = d.normalize().to_string();
    match Number::from_str(&text) {
        Ok(n) => Value::Number(n),
        Err(_) => Value::String(text),
    }
}

/// Reads a decimal from a JSON number (exact text) or a numeric string.
pub fn as_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => parse_decimal_text(&n.to_string()),
        Value::String(s) => parse_decimal_text(s.trim()),
        _ => None,
    }
}

fn parse_decimal_text(s: &str) -> Option<Decimal> {
    Decimal::from_str(s)
        .ok()
        .or_else(|| Decimal::from_scientific(s).ok())
}

/// Canonical JSON text: object keys sorted at every level, numbers normalised so that
/// `50000.0` and `50000` compare equal.
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(val) = m.get(k) {
                    write_canonical(val, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        Value::Number(n) => match parse_decimal_text(&n.to_string()) {
            Some(d) => out.push_str(&d.normalize().to_string()),
            None => out.push_str(&n.to_string()),
        },
        other => out.push_str(&other.to_string()),
    }
}

/// SHA-256 (hex) of the canonical form.
pub fn fingerprint(v: &Value) -> String {
    hex::encode(Sha256::digest(canonical(v).as_bytes()))
}

/// SHA-256 (hex) of several parts joined unambiguously.
pub fn hash_parts(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn money_text_survives_parsing_exactly() {
        let v: Value = serde_json::from_str(r#"{"Value": 2154.32, "big": 12345678901234567.89}"#)
            .expect("valid json");
        assert_eq!(as_decimal(&v["Value"]), Decimal::from_str("2154.32").ok());
        assert_eq!(
            as_decimal(&v["big"]),
            Decimal::from_str("12345678901234567.89").ok()
        );
    }

    #[test]
    fn canonical_form_ignores_key_order_and_trailing_zeros() {
        let a: Value = serde_json::from_str(r#"{"b": 50000.0, "a": [1, {"y": 1, "x": 2}]}"#)
            .expect("valid json");
        let b = json!({"a": [1, {"x": 2, "y": 1}], "b": 50000});
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&json!({"a": [1], "b": 50000})));
    }

    #[test]
    fn hash_parts_is_unambiguous() {
        assert_ne!(hash_parts(&["ab", "c"]), hash_parts(&["a", "bc"]));
    }
}
