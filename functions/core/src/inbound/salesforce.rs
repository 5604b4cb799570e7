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

/// The business key a record carries, as its mapping keys the entity: an account by its
/// ERP customer number, else its account number; a product by its code; orders and quotes
/// by their Salesforce number.
pub fn natural_key(entity_name: &str, fields: &Map<String, Value>) -> Option<String> {
    let candidates: &[&str] = match entity_name {
        "Account" => &["ERP_Customer_Number__c", "AccountNumber"],
        "Product2" => &["ProductCode"],
        "Quote" => &["QuoteNumber"],
        "Order" => &["OrderNumber"],
        _ => &[],
    };
    candidates
        .iter()
        .find_map(|f| fields.get(*f).and_then(Value::as_str))
        .map(str::to_string)
}

/// Reference fields p2c follows, and the entity each points at (by the table name the
/// lookups share with Dataverse's).
const REFERENCES: [(&str, &str); 8] = [
    ("AccountId", "account"),
    ("ParentId", "account"),
    ("ContactId", "contact"),
    ("BillToContactId", "contact"),
    ("ShipToContactId", "contact"),
    ("Product2Id", "product"),
    ("QuoteId", "quote"),
    ("OrderId", "salesorder"),
];

/// Turns reference fields (plain record ids in Salesforce) into lookups,
/// `{"id": …, "logical_name": …}`, the shape the sync step resolves to the entity's business
/// key (and parks on while it is not synced), in line items too.
pub fn as_lookups(fields: &mut Map<String, Value>) {
    for (name, value) in fields.iter_mut() {
        match value {
            Value::String(id) if is_record_id(id) => {
                if let Some((_, logical)) = REFERENCES.iter().find(|(f, _)| f == name) {
                    *value = serde_json::json!({ "id": id.clone(), "logical_name": logical });
                }
            }
            Value::Array(items) => {
                for item in items.iter_mut() {
                    if let Value::Object(o) = item {
                        as_lookups(o);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The parent a line item names in `parent_field` (`OrderId`, `QuoteId`), if it does.
fn parent_of<'a>(fields: &'a Map<String, Value>, parent_field: &str) -> Option<&'a str> {
    fields
        .get(parent_field)
        .and_then(Value::as_str)
        .filter(|p| is_record_id(p))
}

/// A record's fields as an event carries them: its business key, and its references
/// turned into lookups.
fn record_fields(
    entity_name: &str,
    mut fields: Map<String, Value>,
) -> (Option<String>, Map<String, Value>) {
    let natural_key = natural_key(entity_name, &fields);
    as_lookups(&mut fields);
    (natural_key, fields)
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
/// any are configured: a bare payload, which names no org, is then refused).
fn payload<'a>(
    doc: &'a Value,
    allowed_orgs: &[String],
) -> Result<&'a Map<String, Value>, WebhookError> {
    let obj = doc
        .as_object()
        .ok_or_else(|| invalid("not a JSON object"))?;
    if obj.contains_key("ChangeEventHeader") {
        // A bare payload names no org: with an allow-list configured it cannot pass it.
        if !allowed_orgs.is_empty() {
            return Err(WebhookError::Unauthorized);
        }
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
        let Some(parent) = parent_of(&fields, parent_field) else {
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

    let (natural_key, fields) = record_fields(entity_name, fields);
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
    let doc: Value = crate::json::from_bytes(body).map_err(|e| {
        WebhookError::MalformedJson(format!("line {}, column {}", e.line(), e.column()))
    })?;
    parse_cdc(&doc, allowed_orgs, received_at)
}

// ---------------------------------------------------------------- outbound messages

/// The Outbound Messaging namespace.
const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
const SOAP_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// Salesforce sends 1 to 100 notifications per message.
pub const MAX_NOTIFICATIONS: usize = 100;
/// Elements, attributes and text nodes a message may have (100 notifications of a few
/// dozen fields each fit many times over).
const MAX_XML_NODES: u32 = 100_000;

/// The SOAP answer that tells Salesforce the notifications were received. Send it only
/// once they are durably queued: without it Salesforce retries (up to 24 hours).
pub const OUTBOUND_ACK: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#,
    r#"<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">"#,
    r#"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#
);

/// The Ack as a response.
pub fn outbound_ack() -> super::WebhookResponse {
    super::WebhookResponse {
        status: 200,
        content_type: "text/xml; charset=utf-8",
        body: OUTBOUND_ACK.to_string(),
    }
}

/// How Outbound Messages are authenticated: they are unsigned, so the endpoint URL
/// configured in Salesforce carries a secret (`?key=…`; several may be active while one is
/// rotated), and the message's `OrganizationId` must be one of `org_ids`. Empty lists admit
/// nothing.
#[derive(Debug, Clone, Default)]
pub struct SalesforceAuth {
    pub secrets: Vec<String>,
    pub org_ids: Vec<String>,
}

impl SalesforceAuth {
    /// The URL secret (`key` query parameter, or the `x-p2c-key` header from a proxy),
    /// compared in constant time.
    pub fn check(&self, req: &super::WebhookRequest) -> Result<(), WebhookError> {
        let presented = req.query_param("key").or_else(|| req.header("x-p2c-key"));
        match presented {
            Some(p) if super::secret_matches(p, &self.secrets) => Ok(()),
            _ => Err(WebhookError::Unauthorized),
        }
    }
}

fn om_invalid(message: impl Into<String>) -> WebhookError {
    WebhookError::InvalidPayload {
        format: "Salesforce outbound message",
        message: message.into(),
    }
}

fn child<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    ns: &str,
    name: &str,
) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|c| c.has_tag_name((ns, name)))
}

/// An element's value: `null` for `xsi:nil="true"`, an object for an element with element
/// children (one level), else its text (`""` when empty).
fn xml_value(node: roxmltree::Node<'_, '_>) -> Value {
    if node.attribute((XSI_NS, "nil")) == Some("true") {
        return Value::Null;
    }
    let elements: Vec<_> = node.children().filter(|c| c.is_element()).collect();
    if elements.is_empty() {
        return Value::String(node.text().unwrap_or_default().to_string());
    }
    Value::Object(
        elements
            .iter()
            .map(|c| {
                let v = if c.attribute((XSI_NS, "nil")) == Some("true") {
                    Value::Null
                } else {
                    Value::String(c.text().unwrap_or_default().to_string())
                };
                (c.tag_name().name().to_string(), v)
            })
            .collect(),
    )
}

/// Parses a Salesforce Outbound Message (SOAP 1.1, `text/xml`) into one change event per
/// notification. The message's `OrganizationId` must be one of `allowed_orgs` (an empty
/// list admits none: the endpoint is on the internet and the message is unsigned). XML
/// with a DTD is refused before anything in it is processed. Each event's id is the
/// notification id, so a notification Salesforce delivers again is the same event.
/// Field values are the text Salesforce sent (`2026-05-14`, `18400.0`); `xsi:nil` is null.
pub fn parse_outbound(
    req: &super::WebhookRequest,
    allowed_orgs: &[String],
    received_at: DateTime<Utc>,
) -> Result<Vec<ChangeEvent>, WebhookError> {
    if req.body.len() > super::MAX_BODY_BYTES {
        return Err(WebhookError::TooLarge {
            limit: super::MAX_BODY_BYTES,
        });
    }
    if let Some(ct) = req.header("content-type") {
        let ct = ct.to_ascii_lowercase();
        if !ct.contains("xml") {
            return Err(WebhookError::UnsupportedMediaType(
                ct.chars().take(60).collect(),
            ));
        }
    }
    let text = std::str::from_utf8(&req.body)
        .map_err(|e| WebhookError::MalformedXml(format!("not UTF-8: {e}")))?;
    let doc = roxmltree::Document::parse_with_options(
        text,
        roxmltree::ParsingOptions {
            allow_dtd: false,
            nodes_limit: MAX_XML_NODES,
        },
    )
    .map_err(|e| WebhookError::MalformedXml(e.to_string()))?;
    let envelope = doc.root_element();
    if !envelope.has_tag_name((SOAP_ENV_NS, "Envelope")) {
        return Err(om_invalid("the root is not a SOAP 1.1 Envelope"));
    }
    let notifications = child(envelope, SOAP_ENV_NS, "Body")
        .and_then(|b| child(b, OUTBOUND_NS, "notifications"))
        .ok_or_else(|| om_invalid("no notifications element in the SOAP Body"))?;
    let org = child(notifications, OUTBOUND_NS, "OrganizationId")
        .and_then(|n| n.text())
        .map(str::trim)
        .ok_or(WebhookError::MissingKey("OrganizationId".into()))?;
    if !allowed_orgs.iter().any(|a| a == org) {
        return Err(WebhookError::Unauthorized);
    }
    let action = child(notifications, OUTBOUND_NS, "ActionId")
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string());
    let items: Vec<_> = notifications
        .children()
        .filter(|c| c.has_tag_name((OUTBOUND_NS, "Notification")))
        .collect();
    if items.is_empty() {
        return Err(om_invalid("no Notification"));
    }
    if items.len() > MAX_NOTIFICATIONS {
        return Err(om_invalid(format!(
            "{} notifications; Salesforce sends at most {MAX_NOTIFICATIONS}",
            items.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for n in items {
        let id = child(n, OUTBOUND_NS, "Id")
            .and_then(|i| i.text())
            .map(str::trim)
            .filter(|i| is_record_id(i))
            .ok_or(WebhookError::MissingKey("Notification/Id".into()))?;
        let object = child(n, OUTBOUND_NS, "sObject")
            .ok_or(WebhookError::MissingKey("Notification/sObject".into()))?;
        let entity_name = object
            .attribute((XSI_NS, "type"))
            .map(|t| t.rsplit(':').next().unwrap_or(t))
            .ok_or(WebhookError::MissingKey("sObject/@xsi:type".into()))?;
        let (entity_type, parent_field) = entity_of(entity_name)
            .ok_or_else(|| WebhookError::UnknownEntity(entity_name.chars().take(64).collect()))?;
        let fields: Map<String, Value> = object
            .children()
            .filter(|c| c.is_element())
            .map(|c| (c.tag_name().name().to_string(), xml_value(c)))
            .collect();
        let record = fields
            .get("Id")
            .and_then(Value::as_str)
            .filter(|i| is_record_id(i))
            .ok_or(WebhookError::MissingKey("sObject/Id".into()))?
            .to_string();
        let modified_ms = fields
            .get("LastModifiedDate")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis());
        let origin = Origin {
            user_id: fields
                .get("LastModifiedById")
                .and_then(Value::as_str)
                .map(str::to_string),
            correlation_id: action.clone(),
            client: None,
            depth: None,
        };
        let (source, fields, needs_fetch, natural_key) = match parent_field {
            // A line item: its parent, read in full (the message carries only the item).
            Some(pf) => {
                let Some(parent) = parent_of(&fields, pf) else {
                    return Err(WebhookError::MissingKey(format!("sObject/{pf}")));
                };
                (
                    SourceRef::new(System::Salesforce, entity_type, parent),
                    Map::new(),
                    true,
                    None,
                )
            }
            None => {
                let (key, fields) = record_fields(entity_name, fields);
                (
                    SourceRef::new(System::Salesforce, entity_type, record),
                    fields,
                    false,
                    key,
                )
            }
        };
        out.push(ChangeEvent {
            event_id: EventId(format!("salesforce:om:{id}")),
            source,
            natural_key,
            operation: Operation::Update,
            fields,
            previous: Map::new(),
            needs_fetch,
            resource: None,
            version: SourceVersion {
                sequence: None,
                modified_ms,
            },
            origin,
            company: None,
            received_at,
            content_hash: Default::default(),
        });
    }
    Ok(out)
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
        // With the ERP customer number, the key the account mapping uses for the entity.
        let with_erp = parse_cdc(
            &event(
                header("CREATE", &[A]),
                json!({"AccountNumber": "C-1", "ERP_Customer_Number__c": "C000123"}),
            ),
            &[],
            Utc::now(),
        )
        .expect("parses");
        assert_eq!(with_erp[0].natural_key.as_deref(), Some("C000123"));
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
    fn soap(notifications: &str, org: &str) -> crate::inbound::WebhookRequest {
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{org}</OrganizationId><ActionId>04k5f000000CaRkAAK</ActionId>
   {notifications}
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#
        );
        crate::inbound::WebhookRequest {
            method: "POST".into(),
            path: "/webhooks/salesforce".into(),
            query: vec![],
            headers: vec![("content-type".into(), "text/xml; charset=utf-8".into())],
            body: body.into_bytes(),
        }
    }

    fn notification(n: usize, object: &str) -> String {
        format!(
            r#"<Notification><Id>04l5f00000G{n:04}AAJ</Id>
            <sObject xsi:type="sf:{object}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
            <sf:Id>0015f00002J{n:04}AA3</sf:Id><sf:AccountNumber>C-{n}</sf:AccountNumber>
            <sf:Fax xsi:nil="true"/><sf:Name>Acme &amp; Sons</sf:Name>
            <sf:LastModifiedDate>2026-05-14T09:20:03.000Z</sf:LastModifiedDate>
            </sObject></Notification>"#
        )
    }

    const ORG: &str = "00D5f000005KcCnEAK";

    #[test]
    fn outbound_notifications_become_events_keyed_by_notification_id() {
        let items: String = (0..3).map(|n| notification(n, "Account")).collect();
        let evs = parse_outbound(&soap(&items, ORG), &[ORG.into()], Utc::now()).expect("parses");
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[1].event_id.0, "salesforce:om:04l5f00000G0001AAJ");
        assert_eq!(evs[1].source.id, "0015f00002J0001AA3");
        assert_eq!(evs[1].natural_key.as_deref(), Some("C-1"));
        assert_eq!(evs[1].fields["Name"], json!("Acme & Sons"));
        assert_eq!(evs[1].fields["Fax"], Value::Null);
        assert_eq!(evs[1].version.modified_ms, Some(1_778_750_403_000));
        assert!(!evs[1].needs_fetch);
    }

    #[test]
    fn outbound_messages_are_refused_from_other_orgs_and_with_no_orgs_configured() {
        let req = soap(&notification(1, "Account"), ORG);
        assert_eq!(
            parse_outbound(&req, &[], Utc::now()).expect_err("none allowed"),
            WebhookError::Unauthorized
        );
        assert_eq!(
            parse_outbound(&req, &["00D000000000001AAA".into()], Utc::now())
                .expect_err("other org"),
            WebhookError::Unauthorized
        );
    }

    #[test]
    fn outbound_xml_with_a_dtd_or_entities_is_refused_unread() {
        let req = |body: &str| crate::inbound::WebhookRequest {
            headers: vec![("content-type".into(), "text/xml".into())],
            body: body.as_bytes().to_vec(),
            ..Default::default()
        };
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>"#;
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><l>&b;</l>"#;
        for body in [xxe, laughs, "<notifications>", "not xml"] {
            assert_eq!(
                parse_outbound(&req(body), &[ORG.into()], Utc::now())
                    .expect_err("refused")
                    .code(),
                "malformed_xml",
                "{body}"
            );
        }
        let json = crate::inbound::WebhookRequest {
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
            ..Default::default()
        };
        assert_eq!(
            parse_outbound(&json, &[ORG.into()], Utc::now())
                .expect_err("json")
                .code(),
            "unsupported_media_type"
        );
    }

    #[test]
    fn outbound_messages_over_one_hundred_notifications_or_without_ids_are_invalid() {
        let many: String = (0..101).map(|n| notification(n, "Account")).collect();
        assert_eq!(
            parse_outbound(&soap(&many, ORG), &[ORG.into()], Utc::now())
                .expect_err("too many")
                .code(),
            "invalid_payload"
        );
        let no_id = notification(1, "Account").replace("<Id>04l5f00000G0001AAJ</Id>", "");
        assert_eq!(
            parse_outbound(&soap(&no_id, ORG), &[ORG.into()], Utc::now())
                .expect_err("no id")
                .code(),
            "missing_key"
        );
        assert_eq!(
            parse_outbound(
                &soap(&notification(1, "Lead"), ORG),
                &[ORG.into()],
                Utc::now()
            )
            .expect_err("unknown")
            .code(),
            "unknown_entity"
        );
    }

    #[test]
    fn the_ack_is_the_soap_notifications_response() {
        let doc = roxmltree::Document::parse(OUTBOUND_ACK).expect("well-formed");
        let ack = doc
            .descendants()
            .find(|n| n.has_tag_name((OUTBOUND_NS, "Ack")))
            .expect("Ack");
        assert_eq!(ack.text(), Some("true"));
        assert!(outbound_ack().content_type.starts_with("text/xml"));
    }
}
