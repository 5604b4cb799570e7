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

/// Parses JSON from bytes, checking the UTF-8 once for the whole text rather than once per
/// string as `serde_json::from_slice` does (a webhook holds hundreds of short strings).
/// Bytes that are not UTF-8 are parsed by `from_slice`, for its error and its position.
pub fn from_bytes<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// Canonical JSON text: object keys sorted at every level, numbers normalised so that
/// `50000.0` and `50000` compare equal.
pub fn canonical(v: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Where canonical text goes: a buffer, or straight into a hash.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// `io::Write` over a [`Sink`], for serde_json's string escaping.
struct Writer<'a, S: Sink>(&'a mut S);

impl<S: Sink> std::io::Write for Writer<'_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.put(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A JSON string, escaped exactly as serde_json writes it.
fn write_str(s: &str, out: &mut impl Sink) {
    // Plain text (no quote, backslash or control character) needs no escaping.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.put(b"\"");
        out.put(s.as_bytes());
        out.put(b"\"");
    } else {
        let _ = serde_json::to_writer(Writer(out), s);
    }
}

/// Writes the canonical form of `v` into `out`, without building it as a string first.
pub fn write_canonical(v: &Value, out: &mut impl Sink) {
    match v {
        // serde_json's map (without `preserve_order`) iterates its keys sorted.
        Value::Object(m) => write_canonical_map(m, out),
        Value::Array(a) => {
            out.put(b"[");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                write_canonical(x, out);
            }
            out.put(b"]");
        }
        Value::Number(n) => {
            let text = n.as_str();
            // An integer's text is already its normal form; only a fraction or an exponent
            // (or a leading `-0`) needs the decimal round trip.
            let plain = !text.is_empty()
                && text.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                && !text.starts_with("-0")
                && (text == "0" || !text.starts_with('0'));
            if plain {
                out.put(text.as_bytes());
            } else {
                match parse_decimal_text(text) {
                    Some(d) => out.put(d.normalize().to_string().as_bytes()),
                    None => out.put(text.as_bytes()),
                }
            }
        }
        Value::String(s) => write_str(s, out),
        Value::Bool(true) => out.put(b"true"),
        Value::Bool(false) => out.put(b"false"),
        Value::Null => out.put(b"null"),
    }
}

/// The canonical form of an object given as a map (keys sorted by the map itself).
pub fn write_canonical_map(m: &serde_json::Map<String, Value>, out: &mut impl Sink) {
    out.put(b"{");
    for (i, (k, val)) in m.iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        write_str(k, out);
        out.put(b":");
        write_canonical(val, out);
    }
    out.put(b"}");
}

/// SHA-256 (hex) of the canonical form.
pub fn fingerprint(v: &Value) -> String {
    let mut h = Sha256::new();
    write_canonical(v, &mut h);
    hex(&h.finalize())
}

/// Lower-case hex of `bytes` (hashes are turned into keys on every event; `hex::encode`
/// builds its string a char at a time).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = vec![0; bytes.len() * 2];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // Only ASCII digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// SHA-256 (hex) of several parts joined unambiguously.
pub fn hash_parts(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hex_is_the_hex_crates() {
        for bytes in [&b""[..], &[0u8, 1, 0x0f, 0x10, 0x7f, 0x80, 0xab, 0xff][..]] {
            assert_eq!(hex(bytes), hex::encode(bytes));
        }
        assert_eq!(
            hex(&Sha256::digest(b"p2c")),
            hex::encode(Sha256::digest(b"p2c"))
        );
    }

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

    /// The canonical form as it was first written (keys collected and sorted, every
    /// number through a decimal): stored idempotency keys depend on it staying the same.
    fn reference(v: &Value, out: &mut String) {
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
                    reference(&m[k.as_str()], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    reference(x, out);
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

    #[test]
    fn the_streamed_canonical_form_is_the_original_one() {
        let samples = [
            include_str!("../../../tests/fixtures/dataverse_account_update.json"),
            r#"{"z": "tab\there \"quoted\" \\ back", "a": [0, -0, -0.0, 10, 7.5e1, 1e3, -12.50, 0.000,
                 123456789012345678901234567890, -5, 1.5E-3], "ü": {"b": null, "a": true, "c": false},
                 "ctl": "\u0001\u001f\u007f", "emoji": "😀"}"#,
        ];
        for text in samples {
            let v: Value = match serde_json::from_str(text) {
                Ok(v) => v,
                Err(e) => panic!("{e}: {text}"),
            };
            let mut old = String::new();
            reference(&v, &mut old);
            assert_eq!(canonical(&v), old);
            assert_eq!(fingerprint(&v), hex::encode(Sha256::digest(old.as_bytes())));
        }
    }

    #[test]
    fn bytes_parse_as_from_slice_does() {
        for bytes in [
            &b"{\"a\": [1, \"x\"]}"[..],
            b"{\"a\": \"\xff\"}",
            b"{\"a\": 1,}",
            b"\xfe{}",
            b"",
        ] {
            let ours: serde_json::Result<Value> = from_bytes(bytes);
            let theirs: serde_json::Result<Value> = serde_json::from_slice(bytes);
            match (ours, theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("{a:?} / {b:?}"),
            }
        }
    }

    #[test]
    fn hash_parts_is_unambiguous() {
        assert_ne!(hash_parts(&["ab", "c"]), hash_parts(&["a", "bc"]));
    }
}
