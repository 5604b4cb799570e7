//! An entity state as the log keeps it: a compact binary form instead of JSON. Every event
//! saves its entity's state twice (sync, then deliver) and loads it again, and as JSON that
//! was a sixth of the pipeline's time: key names, escaping, number and date text. Here the
//! fields go in a fixed order with the log's own encoding ([`super::codec`]), canonical
//! records as tagged values, and dates as seconds and nanoseconds. The commands of the last
//! applied event stay JSON (there are many kinds, they are rarely there: a delivered outbox
//! is dropped, see [`EntityState::settle_outbox`]).
//!
//! A body starts with [`FORMAT`]; a body starting with `{` is JSON, as stores written before
//! this were, and is read as such.

use super::codec::{put_i64, put_str, put_u64, DecodeError, Reader};
use crate::domain::{EntityKey, SourceVersion, System};
use crate::ports::{Applied, EntityState};
use chrono::{DateTime, Utc};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::str::FromStr;

/// The first byte of a binary state (JSON starts with `{`).
const FORMAT: u8 = 1;

/// Canonical records nest a few levels; a body nesting deeper than this is damage.
const MAX_DEPTH: usize = 128;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const NUMBER: u8 = 3;
const STRING: u8 = 4;
const ARRAY: u8 = 5;
const OBJECT: u8 = 6;

/// Why a stored state did not read.
#[derive(Debug)]
pub(crate) enum StateDecodeError {
    Json(serde_json::Error),
    Binary(DecodeError),
}

impl std::fmt::Display for StateDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Json(e) => write!(f, "{e}"),
            Self::Binary(e) => write!(f, "{e}"),
        }
    }
}

/// Appends the binary form of `s` to `out`.
pub(crate) fn encode(s: &EntityState, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    out.push(FORMAT);
    put_str(out, &s.key.to_string());
    put_u64(out, s.version);
    put_i64(out, s.updated_at.timestamp());
    put_u64(out, u64::from(s.updated_at.timestamp_subsec_nanos()));
    put_pairs(out, s.ids.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    put_u64(out, s.applied.len() as u64);
    for (system, v) in &s.applied {
        put_str(out, system.as_str());
        match v.sequence {
            Some((a, b)) => {
                out.push(1);
                put_u64(out, a);
                put_u64(out, b);
            }
            None => out.push(0),
        }
        match v.modified_ms {
            Some(ms) => {
                out.push(1);
                put_i64(out, ms);
            }
            None => out.push(0),
        }
    }
    put_pairs(out, s.written.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    put_pairs(out, s.sent.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    put_u64(out, s.records.len() as u64);
    for (kind, record) in &s.records {
        put_str(out, kind);
        put_value(out, record);
    }
    match &s.last_applied {
        Some(ap) => {
            out.push(1);
            put_str(out, &ap.idempotency_key);
            if ap.commands.is_empty() {
                put_str(out, "");
            } else {
                put_str(out, &serde_json::to_string(&ap.commands)?);
            }
        }
        None => out.push(0),
    }
    put_u64(out, s.delivered.len() as u64);
    for id in &s.delivered {
        put_str(out, id);
    }
    Ok(())
}

/// A map of text to text: how many pairs, then each.
fn put_pairs<'a>(out: &mut Vec<u8>, pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>) {
    put_u64(out, pairs.len() as u64);
    for (k, v) in pairs {
        put_str(out, k);
        put_str(out, v);
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(n) => {
            out.push(NUMBER);
            put_str(out, n.as_str());
        }
        Value::String(s) => {
            out.push(STRING);
            put_str(out, s);
        }
        Value::Array(items) => {
            out.push(ARRAY);
            put_u64(out, items.len() as u64);
            for item in items {
                put_value(out, item);
            }
        }
        Value::Object(map) => {
            out.push(OBJECT);
            put_u64(out, map.len() as u64);
            for (k, item) in map {
                put_str(out, k);
                put_value(out, item);
            }
        }
    }
}

/// Reads a stored state: the binary form, or JSON as earlier stores wrote it.
pub(crate) fn decode(body: &[u8]) -> Result<EntityState, StateDecodeError> {
    if body.first() != Some(&FORMAT) {
        return crate::json::from_bytes(body).map_err(StateDecodeError::Json);
    }
    read_state(&mut Reader::new(&body[1..])).map_err(StateDecodeError::Binary)
}

fn bad<T>(r: &Reader, what: &'static str) -> Result<T, DecodeError> {
    Err(DecodeError { at: r.pos(), what })
}

fn system(r: &mut Reader) -> Result<System, DecodeError> {
    let s = r.str()?;
    System::from_str(s).or_else(|_| bad(r, "an unknown system"))
}

/// A count of items each at least one byte long: never more than the bytes left.
fn count(r: &mut Reader) -> Result<usize, DecodeError> {
    let n = r.u64()?;
    match usize::try_from(n) {
        Ok(n) if n <= r.remaining() => Ok(n),
        _ => bad(r, "a count larger than the record"),
    }
}

fn flag(r: &mut Reader) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => bad(r, "a flag that is neither 0 nor 1"),
    }
}

fn read_state(r: &mut Reader) -> Result<EntityState, DecodeError> {
    let key = r.str()?;
    let key = EntityKey::from_str(key).or_else(|_| bad(r, "an entity key that does not parse"))?;
    let version = r.u64()?;
    let secs = r.i64()?;
    let nanos = r.u32()?;
    let updated_at: DateTime<Utc> = match DateTime::from_timestamp(secs, nanos) {
        Some(t) => t,
        None => return bad(r, "a time out of range"),
    };
    let mut ids = BTreeMap::new();
    for _ in 0..count(r)? {
        ids.insert(system(r)?, r.string()?);
    }
    let mut applied = BTreeMap::new();
    for _ in 0..count(r)? {
        let s = system(r)?;
        let sequence = if flag(r)? {
            Some((r.u64()?, r.u64()?))
        } else {
            None
        };
        let modified_ms = if flag(r)? { Some(r.i64()?) } else { None };
        applied.insert(
            s,
            SourceVersion {
                sequence,
                modified_ms,
            },
        );
    }
    let mut written = BTreeMap::new();
    for _ in 0..count(r)? {
        written.insert(system(r)?, r.string()?);
    }
    let mut sent = BTreeMap::new();
    for _ in 0..count(r)? {
        sent.insert(r.string()?, r.string()?);
    }
    let mut records = BTreeMap::new();
    for _ in 0..count(r)? {
        records.insert(r.string()?, read_value(r, 0)?);
    }
    let last_applied = if flag(r)? {
        let idempotency_key = r.string()?;
        let commands = r.str()?;
        let commands = if commands.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(commands).or_else(|_| bad(r, "commands that do not parse"))?
        };
        Some(Applied {
            idempotency_key,
            commands,
        })
    } else {
        None
    };
    let mut delivered = Vec::new();
    for _ in 0..count(r)? {
        delivered.push(r.string()?);
    }
    if !r.is_empty() {
        return bad(r, "bytes after the state");
    }
    Ok(EntityState {
        key,
        version,
        ids,
        applied,
        written,
        sent,
        records,
        last_applied,
        delivered,
        updated_at,
        stored_ids: BTreeMap::new(),
    })
}

fn read_value(r: &mut Reader, depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return bad(r, "a value nested too deep");
    }
    Ok(match r.u8()? {
        NULL => Value::Null,
        FALSE => Value::Bool(false),
        TRUE => Value::Bool(true),
        NUMBER => {
            let text = r.str()?;
            // Checked, not trusted: a number is stored as the text serde_json gave it.
            match Number::from_str(text) {
                Ok(n) => Value::Number(n),
                Err(_) => return bad(r, "a number that does not parse"),
            }
        }
        STRING => Value::String(r.string()?),
        ARRAY => {
            let n = count(r)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_value(r, depth + 1)?);
            }
            Value::Array(items)
        }
        OBJECT => {
            let n = count(r)?;
            let mut map = Map::new();
            for _ in 0..n {
                let k = r.string()?;
                map.insert(k, read_value(r, depth + 1)?);
            }
            Value::Object(map)
        }
        _ => return bad(r, "an unknown value tag"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Action, Command};
    use crate::domain::{EntityType, EventId};
    use serde_json::json;

    fn sample() -> EntityState {
        let key = EntityKey::new(EntityType::Account, "ACC-Zürich-1").expect("key");
        let mut s = EntityState::new(key.clone());
        s.version = 300;
        s.ids.insert(System::Dataverse, "4b1e3d75-a749-ef11".into());
        s.ids.insert(System::BusinessCentral, "{bc-id}".into());
        s.applied.insert(
            System::Dataverse,
            SourceVersion {
                sequence: Some((5_948_260, 3)),
                modified_ms: Some(-1_000),
            },
        );
        s.applied
            .insert(System::BusinessCentral, SourceVersion::default());
        s.written.insert(System::BusinessCentral, "ab".repeat(32));
        s.sent.insert("account_to_customer".into(), "cd".repeat(32));
        // Parsed from text, as records are: numbers keep their digits.
        let customer: Value = serde_json::from_str(
            r#"{"name": "Fabrikam \"Ost\"\n\ud83d\ude00", "credit_limit": 12345678901234567.89,
                "rate": 1e-7, "zero": 0.000, "count": -42, "flags": [true, false, null, [], {}],
                "address": {"city": "Zürich", "lines": ["a", "b"]}}"#,
        )
        .expect("record");
        s.records.insert("customer".into(), customer);
        s.records.insert("erp_number".into(), json!("C-1001"));
        s.last_applied = Some(Applied {
            idempotency_key: "sync#dataverse:e1:Update#abc".into(),
            commands: vec![Command::new(
                "cause",
                &EventId("dataverse:e1:Update".into()),
                System::BusinessCentral,
                key,
                Action::SetOrderErpNumber {
                    order_number: "SO-1".into(),
                    erp_number: "101".into(),
                },
                "r-1",
            )],
        });
        s.delivered = vec!["cmd-1".into(), "cmd-2".into()];
        s.updated_at = DateTime::from_timestamp(1_778_749_965, 123_456_789).expect("time");
        s
    }

    fn round_trip(s: &EntityState) -> EntityState {
        let mut out = Vec::new();
        encode(s, &mut out).expect("encodes");
        decode(&out).expect("decodes")
    }

    #[test]
    fn a_state_reads_back_exactly() {
        let s = sample();
        assert_eq!(round_trip(&s), s);
        // Numbers keep their text to the last digit.
        let back = round_trip(&s);
        assert_eq!(
            back.records["customer"]["credit_limit"].to_string(),
            "12345678901234567.89"
        );
        assert_eq!(back.records["customer"]["zero"].to_string(), "0.000");
        let mut empty = EntityState::new(s.key.clone());
        empty.updated_at = DateTime::from_timestamp(0, 0).expect("epoch");
        assert_eq!(round_trip(&empty), empty);
        let mut settled = s.clone();
        if let Some(ap) = settled.last_applied.as_mut() {
            ap.commands.clear();
        }
        assert_eq!(round_trip(&settled), settled);
    }

    #[test]
    fn a_long_key_and_a_json_body_read_too() {
        let key = EntityKey::new(EntityType::Account, "K".repeat(190)).expect("key");
        let s = EntityState::new(key);
        assert_eq!(round_trip(&s), s);
        // What earlier stores wrote.
        let json = serde_json::to_vec(&sample()).expect("json");
        assert_eq!(decode(&json).expect("json reads"), sample());
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        encode(&sample(), &mut out).expect("encodes");
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = out.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        // Every single-byte change reads as an error or as some state; never a panic.
        for i in 0..out.len() {
            let mut bent = out.clone();
            bent[i] ^= 0x5a;
            let _ = decode(&bent);
        }
        // A count far past the end, and nesting past the cap.
        assert!(decode(&[FORMAT, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        let mut deep = vec![FORMAT];
        put_str(&mut deep, "account:A");
        put_u64(&mut deep, 1);
        put_i64(&mut deep, 0);
        put_u64(&mut deep, 0);
        deep.extend_from_slice(&[0, 0, 0, 0, 1]);
        put_str(&mut deep, "r");
        for _ in 0..200 {
            deep.extend_from_slice(&[ARRAY, 1]);
        }
        deep.push(NULL);
        deep.extend_from_slice(&[0, 0]);
        assert!(decode(&deep).is_err());
    }
}
