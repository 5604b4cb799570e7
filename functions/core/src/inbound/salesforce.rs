//! Salesforce Change Data Capture events, as Event Relay delivers them to Amazon
//! EventBridge (the event's fields under `detail.payload`), as AppFlow delivers them (the
//! fields directly in `detail`), or bare (a CometD / Pub/Sub payload decoded to JSON).
//!
//! What the `ChangeEventHeader` means, and how it becomes [`ChangeEvent`]s:
//!
//! - `recordIds`: one event per id (Salesforce merges identical changes to several
//!   records into one message). A wildcard id (`001*`, after a lossy field conversion)
//!   names no record: [`WebhookError::ResyncRequired`].
//! - `changeType`: `CREATE` carries the record's fields; `UPDATE` only the changed ones,
//!   where `null` means *unchanged* unless the field is in `nulledFields` (compound fields
//!   dotted, `BillingAddress.City`), so an update is read in full from Salesforce before it
//!   is mapped (`needs_fetch`) and its delta is kept in `fields`; `DELETE` carries nothing;
//!   `UNDELETE` carries the restored record. Gap events (`GAP_CREATE`, `GAP_UPDATE`,
//!   `GAP_DELETE`, `GAP_UNDELETE`) carry no fields: re-read the record. `GAP_OVERFLOW`
//!   (a transaction over the change-event threshold) names no records:
//!   [`WebhookError::ResyncRequired`].
//! - `commitNumber` (the system change number, which can exceed 2^53) and
//!   `sequenceNumber` order the changes: they are the source version, read as integers,
//!   never through a float. `commitTimestamp` is the modification time.
//! - `changeOrigin` names the API client (`…;client=<id>`): p2c's own writes carry its
//!   client id (`Sforce-Call-Options: client=<id>`), which is how their echoes are known.
//! - Line items (`OrderItem`, `QuoteLineItem`) become a change of their parent order or
//!   quote, read in full; without the parent id in the body (an update that did not
//!   change it) they are dropped, since the parent's own change event (its roll-up totals
//!   change) carries the change.
//!
//! Field values are kept as Salesforce sent them: dates and date-times are epoch
//! milliseconds, addresses nested objects. The mapping scripts convert what they use.

use super::WebhookError;
use crate::domain::System;
use crate::domain::{
    ChangeEvent, EntityType, EventId, Operation, Origin, SourceRef, SourceVersion,
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// The EventBridge `source` prefix of a Salesforce partner event source:
/// `aws.partner/salesforce.com/<orgId>/<channelId>`.
const PARTNER_SOURCE: &str = "aws.partner/salesforce.com/";

/// Maps a CDC `entityName` to the entity it changes, and whether it is a line item whose
/// parent (named by the field) is the entity.
fn entity_of(name: &str) -> Option<(EntityType, Option<&'static str>)> {
    Some(match name {
        "Account" => (EntityType::Account, None),
        "Contact" => (EntityType::Contact, None),
        "Product2" => (EntityType::Item, None),
        "Quote" => (EntityType::Quote, None),
        "QuoteLineItem" => (EntityType::Quote, Some("QuoteId")),
        "Order" => (EntityType::Order, None),
        "OrderItem" => (EntityType::Order, Some("OrderId")),
        _ => return None,
    })
}

/// The business key's field of an entity, when Salesforce carries one.
fn key_field(name: &str) -> Option<&'static str> {
    match name {
        "Account" => Some("AccountNumber"),
        "Product2" => Some("ProductCode"),
        "Quote" => Some("QuoteNumber"),
        "Order" => Some("OrderNumber"),
        _ => None,
    }
}

/// A record id: 15 or 18 characters, letters and digits.
fn is_record_id(s: &str) -> bool {
    (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// An integer header field, exactly (a JSON number or a decimal string).
fn integer(header: &Map<String, Value>, name: &str) -> Option<u64> {
    match header.get(name)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn text<'a>(header: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    header.get(name).and_then(Value::as_str)
}

fn strings(header: &Map<String, Value>, name: &str) -> Vec<String> {
    header
        .get(name)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn invalid(message: impl Into<String>) -> WebhookError {
    WebhookError::InvalidPayload {
        format: "Salesforce change event",
        message: message.into(),
    }
}

/// Finds the change event payload in an EventBridge envelope, an AppFlow envelope, or a
/// bare payload; checks the partner event source's org id against `allowed_orgs` (when
/// any are configured).
fn payload<'a>(
    doc: &'a Value,
    allowed_orgs: &[String],
) -> Result<&'a Map<String, Value>, WebhookError> {
    let obj = doc
        .as_object()
        .ok_or_else(|| invalid("not a JSON object"))?;
    if obj.contains_key("ChangeEventHeader") {
        return Ok(obj);
    }
    let detail = obj
        .get("detail")
        .and_then(Value::as_object)
        .ok_or(WebhookError::MissingKey(
            "detail.payload.ChangeEventHeader".into(),
        ))?;
    if !allowed_orgs.is_empty() {
        let org = obj
            .get("source")
            .and_then(Value::as_str)
            .and_then(|s| s.strip_prefix(PARTNER_SOURCE))
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        if !allowed_orgs.iter().any(|a| a == org) {
            return Err(WebhookError::Unauthorized);
        }
    }
    match detail.get("payload").and_then(Value::as_object) {
        Some(p) if p.contains_key("ChangeEventHeader") => Ok(p),
        _ if detail.contains_key("ChangeEventHeader") => Ok(detail),
        _ => Err(WebhookError::MissingKey(
            "detail.payload.ChangeEventHeader".into(),
        )),
    }
}

/// Sets `path` (`Field` or `Compound.Field`) to null in `fields`.
fn set_null(fields: &mut Map<String, Value>, path: &str) {
    match path.split_once('.') {
        None => {
            fields.insert(path.to_string(), Value::Null);
        }
        Some((compound, field)) => {
            let entry = fields
                .entry(compound.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(o) = entry {
                o.insert(field.to_string(), Value::Null);
            }
        }
    }
}

/// An update's delta: the non-null values, and nulls only where `nulledFields` says the
/// field was cleared (inside compound fields too).
fn update_delta(body: &Map<String, Value>, nulled: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in body {
        match v {
            Value::Null => {}
            Value::Object(o) => {
                let inner: Map<String, Value> = o
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !inner.is_empty() {
                    out.insert(k.clone(), Value::Object(inner));
                }
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }
    for path in nulled {
        set_null(&mut out, path);
    }
    out
}

/// Parses a Salesforce change event (see the module documentation for the envelopes and
/// the header's meaning) into one change event per record it names.
pub fn parse_cdc(
    doc: &Value,
    allowed_orgs: &[String],
    received_at: DateTime<Utc>,
) -> Result<Vec<ChangeEvent>, WebhookError> {
    let payload = payload(doc, allowed_orgs)?;
    let header = payload
        .get("ChangeEventHeader")
        .and_then(Value::as_object)
        .ok_or(WebhookError::MissingKey("ChangeEventHeader".into()))?;
    let entity_name =
        text(header, "entityName").ok_or(WebhookError::MissingKey("entityName".into()))?;
    let change_type =
        text(header, "changeType").ok_or(WebhookError::MissingKey("changeType".into()))?;
    let (entity_type, parent_field) = entity_of(entity_name)
        .ok_or_else(|| WebhookError::UnknownEntity(entity_name.chars().take(64).collect()))?;
    if change_type == "GAP_OVERFLOW" {
        return Err(WebhookError::ResyncRequired {
            entity: entity_name.chars().take(64).collect(),
            reason: "an overflow event: one transaction changed more records than change \
                     events are published for"
                .into(),
        });
    }
    let (operation, body_is, gap) = match change_type {
        "CREATE" => (Operation::Create, Body::Record, false),
        "UPDATE" => (Operation::Update, Body::Delta, false),
        "DELETE" => (Operation::Delete, Body::Nothing, false),
        "UNDELETE" => (Operation::Update, Body::Record, false),
        "GAP_CREATE" => (Operation::Create, Body::Nothing, true),
        "GAP_UPDATE" | "GAP_UNDELETE" => (Operation::Update, Body::Nothing, true),
        "GAP_DELETE" => (Operation::Delete, Body::Nothing, true),
        other => {
            return Err(invalid(format!(
                "unknown changeType `{}`",
                other.chars().take(32).collect::<String>()
            )))
        }
    };
    let record_ids = strings(header, "recordIds");
    if record_ids.is_empty() {
        return Err(WebhookError::MissingKey("recordIds".into()));
    }
    if let Some(w) = record_ids.iter().find(|id| id.ends_with('*')) {
        return Err(WebhookError::ResyncRequired {
            entity: entity_name.chars().take(64).collect(),
            reason: format!(
                "the change names every record with id prefix `{}` (a field type conversion)",
                w.trim_end_matches('*').chars().take(18).collect::<String>()
            ),
        });
    }
    if let Some(bad) = record_ids.iter().find(|id| !is_record_id(id)) {
        return Err(invalid(format!(
            "`{}` is not a record id",
            bad.chars().take(32).collect::<String>()
        )));
    }
    let transaction =
        text(header, "transactionKey").ok_or(WebhookError::MissingKey("transactionKey".into()))?;
    let commit_number = integer(header, "commitNumber");
    let sequence = integer(header, "sequenceNumber").unwrap_or(0);
    let version = SourceVersion {
        sequence: commit_number.map(|c| (c, sequence)),
        modified_ms: integer(header, "commitTimestamp").and_then(|t| i64::try_from(t).ok()),
    };
    let origin = Origin {
        user_id: text(header, "commitUser").map(str::to_string),
        correlation_id: Some(transaction.to_string()),
        client: text(header, "changeOrigin")
            .and_then(|o| o.split(';').find_map(|p| p.trim().strip_prefix("client=")))
            .map(|c| c.trim_end_matches('/').to_string())
            .filter(|c| !c.is_empty()),
        depth: None,
    };

    let body: Map<String, Value> = payload
        .iter()
        .filter(|(k, _)| k.as_str() != "ChangeEventHeader")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let fields = match body_is {
        Body::Record => body,
        Body::Delta => update_delta(&body, &strings(header, "nulledFields")),
        Body::Nothing => Map::new(),
    };

    // A line item changes its parent: the parent is read in full.
    if let Some(parent_field) = parent_field {
        let Some(parent) = fields
            .get(parent_field)
            .and_then(Value::as_str)
            .filter(|p| is_record_id(p))
        else {
            return Ok(Vec::new());
        };
        return Ok(vec![ChangeEvent {
            event_id: EventId(format!(
                "salesforce:{transaction}:{sequence}:{parent}:{entity_name}"
            )),
            source: SourceRef::new(System::Salesforce, entity_type, parent),
            natural_key: None,
            operation: Operation::Update,
            fields: Map::new(),
            previous: Map::new(),
            needs_fetch: true,
            resource: None,
            version,
            origin,
            company: None,
            received_at,
            content_hash: Default::default(),
        }]);
    }

    let natural_key = key_field(entity_name)
        .and_then(|f| fields.get(f))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(record_ids
        .iter()
        .map(|id| ChangeEvent {
            event_id: EventId(format!(
                "salesforce:{transaction}:{sequence}:{id}:{change_type}"
            )),
            source: SourceRef::new(System::Salesforce, entity_type, id.clone()),
            natural_key: natural_key.clone(),
            operation,
            fields: fields.clone(),
            previous: Map::new(),
            needs_fetch: operation != Operation::Delete && (gap || body_is == Body::Delta),
            resource: None,
            version,
            origin: origin.clone(),
            company: None,
            received_at,
            content_hash: Default::default(),
        })
        .collect())
}

/// What a change event's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// The record's fields (create, undelete).
    Record,
    /// Only the changed fields (update).
    Delta,
    /// Nothing (delete, gap events).
    Nothing,
}

/// Parses a change event from raw JSON bytes (size and depth checked first, as for
/// webhooks).
pub fn parse_cdc_bytes(
    body: &[u8],
    allowed_orgs: &[String],
    received_at: DateTime<Utc>,
) -> Result<Vec<ChangeEvent>, WebhookError> {
    if body.len() > super::MAX_BODY_BYTES {
        return Err(WebhookError::TooLarge {
            limit: super::MAX_BODY_BYTES,
        });
    }
    if super::nests_deeper_than(body, super::MAX_JSON_DEPTH) {
        return Err(WebhookError::TooDeep(super::MAX_JSON_DEPTH));
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        WebhookError::MalformedJson(format!("line {}, column {}", e.line(), e.column()))
    })?;
    parse_cdc(&doc, allowed_orgs, received_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(header: Value, body: Value) -> Value {
        let mut p = body.as_object().cloned().unwrap_or_default();
        p.insert("ChangeEventHeader".into(), header);
        json!({
            "version": "0", "id": "e-1", "detail-type": "AccountChangeEvent",
            "source": "aws.partner/salesforce.com/00D5f000005KcCnEAK/0YL5f000000CabWGAS",
            "account": "123456789012", "time": "2026-05-14T09:12:46Z", "region": "eu-west-1",
            "resources": [], "detail": { "payload": p }
        })
    }

    fn header(change: &str, ids: &[&str]) -> Value {
        json!({
            "entityName": "Account", "recordIds": ids, "changeType": change,
            "changeOrigin": "", "transactionKey": "t-1", "sequenceNumber": 2,
            "commitTimestamp": 1778750512000u64, "commitNumber": "9007199254740993",
            "commitUser": "0055f000007IntgAAC", "nulledFields": [], "diffFields": [],
            "changedFields": []
        })
    }

    const A: &str = "0015f00002J9YYEAA3";
    const B: &str = "0015f00002J9YYFAA3";

    #[test]
    fn merged_record_ids_become_one_event_each() {
        let evs = parse_cdc(
            &event(
                header("CREATE", &[A, B]),
                json!({"Name": "Contoso", "AccountNumber": "C-1"}),
            ),
            &[],
            Utc::now(),
        )
        .expect("parses");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].source.id, A);
        assert_eq!(evs[1].source.id, B);
        assert_ne!(evs[0].event_id, evs[1].event_id);
        assert_eq!(evs[1].fields["Name"], json!("Contoso"));
        assert_eq!(evs[1].natural_key.as_deref(), Some("C-1"));
        assert!(!evs[0].needs_fetch, "a create carries the record");
    }

    #[test]
    fn the_commit_number_is_exact_beyond_two_to_the_53() {
        let evs =
            parse_cdc(&event(header("CREATE", &[A]), json!({})), &[], Utc::now()).expect("parses");
        // 2^53 + 1: a float would round it to 2^53.
        assert_eq!(evs[0].version.sequence, Some((9_007_199_254_740_993, 2)));
        assert_eq!(evs[0].version.modified_ms, Some(1_778_750_512_000));
    }

    #[test]
    fn gap_events_are_read_again_and_overflow_needs_a_resync() {
        let gap = parse_cdc(
            &event(header("GAP_UPDATE", &[A]), json!({})),
            &[],
            Utc::now(),
        )
        .expect("parses");
        assert!(gap[0].needs_fetch && gap[0].fields.is_empty());
        assert_eq!(gap[0].operation, Operation::Update);
        let gone = parse_cdc(
            &event(header("GAP_DELETE", &[A]), json!({})),
            &[],
            Utc::now(),
        )
        .expect("parses");
        assert_eq!(gone[0].operation, Operation::Delete);
        assert!(!gone[0].needs_fetch);
        let err = parse_cdc(
            &event(header("GAP_OVERFLOW", &[]), json!({})),
            &[],
            Utc::now(),
        )
        .expect_err("overflow");
        assert_eq!(err.code(), "resync_required");
        let err = parse_cdc(
            &event(header("UPDATE", &["001*"]), json!({})),
            &[],
            Utc::now(),
        )
        .expect_err("wildcard");
        assert_eq!(err.code(), "resync_required");
    }

    #[test]
    fn an_update_keeps_changed_values_and_only_the_nulls_it_names() {
        let mut h = header("UPDATE", &[A]);
        h["nulledFields"] = json!(["Fax", "BillingAddress.Street"]);
        let evs = parse_cdc(
            &event(
                h,
                json!({"Name": null, "Fax": null, "Phone": "+1 425 555 0100",
                       "BillingAddress": {"Street": null, "City": "Bellevue", "State": null}}),
            ),
            &[],
            Utc::now(),
        )
        .expect("parses");
        let f = &evs[0].fields;
        assert!(!f.contains_key("Name"), "null and not nulled: unchanged");
        assert_eq!(f["Fax"], Value::Null);
        assert_eq!(f["Phone"], json!("+1 425 555 0100"));
        assert_eq!(
            f["BillingAddress"],
            json!({"City": "Bellevue", "Street": null})
        );
        assert!(
            evs[0].needs_fetch,
            "an update is read in full before mapping"
        );
    }

    #[test]
    fn line_items_change_their_parent() {
        let mut h = header("UPDATE", &["8025f000000AbcdAAC"]);
        h["entityName"] = json!("OrderItem");
        let evs = parse_cdc(
            &event(
                h.clone(),
                json!({"OrderId": "8015f000000Xy1QAAS", "Quantity": 3}),
            ),
            &[],
            Utc::now(),
        )
        .expect("parses");
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].source.entity_type, EntityType::Order);
        assert_eq!(evs[0].source.id, "8015f000000Xy1QAAS");
        assert!(evs[0].needs_fetch);
        let none = parse_cdc(&event(h, json!({"Quantity": 3})), &[], Utc::now()).expect("parses");
        assert!(
            none.is_empty(),
            "no parent id: the parent's own event covers it"
        );
    }

    #[test]
    fn the_org_is_checked_and_bad_headers_are_refused_with_stable_codes() {
        let doc = event(header("CREATE", &[A]), json!({}));
        assert!(parse_cdc(&doc, &["00D5f000005KcCnEAK".into()], Utc::now()).is_ok());
        assert_eq!(
            parse_cdc(&doc, &["00D000000000001AAA".into()], Utc::now())
                .expect_err("other org")
                .code(),
            "unauthorized"
        );
        let mut h = header("CREATE", &[A]);
        h["entityName"] = json!("Opportunity");
        assert_eq!(
            parse_cdc(&event(h, json!({})), &[], Utc::now())
                .expect_err("unknown")
                .code(),
            "unknown_entity"
        );
        assert_eq!(
            parse_cdc(
                &event(header("CREATE", &["not-an-id"]), json!({})),
                &[],
                Utc::now()
            )
            .expect_err("bad id")
            .code(),
            "invalid_payload"
        );
        assert_eq!(
            parse_cdc(&json!({"detail": {}}), &[], Utc::now())
                .expect_err("no payload")
                .code(),
            "missing_key"
        );
        assert_eq!(
            parse_cdc_bytes(b"{\"detail\":", &[], Utc::now())
                .expect_err("truncated")
                .code(),
            "malformed_json"
        );
    }

    #[test]
    fn the_client_id_of_the_writer_is_kept_for_echo_recognition() {
        let mut h = header("UPDATE", &[A]);
        h["changeOrigin"] = json!("com/salesforce/api/rest/62.0;client=p2c-sync");
        let evs = parse_cdc(&event(h, json!({"Name": "x"})), &[], Utc::now()).expect("parses");
        assert_eq!(evs[0].origin.client.as_deref(), Some("p2c-sync"));
        assert_eq!(evs[0].origin.user_id.as_deref(), Some("0055f000007IntgAAC"));
    }
}
