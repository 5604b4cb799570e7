//! Dynamics 365 Finance & Operations business events, as an HTTPS endpoint receives them.
//!
//! Every event is the common envelope with its contract's fields mixed in, serialized
//! alphabetically: `BusinessEventId` (the event class), `BusinessEventLegalEntity` (the
//! `dataAreaId`), `ControlNumber` (int64, increasing: the order events were raised in),
//! `EventId` (a GUID: a redelivery carries the same one), `EventTime` (`/Date(ms)/`),
//! `InitiatingUserAADObjectId` (`{GUID}`), `MajorVersion`, `MinorVersion`. A body is one
//! event, or an array of them (as a batching endpoint delivers).
//!
//! Which events p2c reads, and the contract field that keys the record each is about:
//!
//! | `BusinessEventId` | entity | key |
//! |---|---|---|
//! | `SalesInvoicePostedBusinessEvent` (invoice created from a sales order) | invoice | `InvoiceId` |
//! | `CustFreeTextInvoicePostedBusinessEvent` (free text invoice posted) | invoice | `InvoiceId` |
//! | `CustPaymentPostedBusinessEvent` (payment posted) | payment | `Voucher` |
//!
//! The sales-invoice contract is documented (`InvoiceAccount`, `InvoiceId`, `SalesOrderId`,
//! `InvoiceDate`, `InvoiceDueDate`, `InvoiceAmountInAccountingCurrency`,
//! `InvoiceTaxAmount`, `LegalEntity`). The free-text invoice's and the payment's class names
//! are the catalogue's likely ones and **not confirmed**; the payment contract p2c reads
//! (`CustomerAccount`, `Voucher`, `InvoiceId`, `PaymentDate`, `PaymentAmount`,
//! `CurrencyCode`) is an assumption too, read only by the analysts' mapping script
//! (`rules/mapping/fin_ops/payment_to_payment.rhai`) apart from the key. Compare them with
//! the schema the business event catalogue downloads (*Business event catalog > Download
//! schema*) before going live. Other events (collection status changed, …) are refused with
//! `unknown_entity` naming the event.
//!
//! A posted invoice or payment changes the customer's balance, which F&O announces with no
//! event of its own: reading these events, p2c also re-reads the customer (see
//! `connectors::fo`). Payment events are therefore marked to be read first.
//!
//! Data events (create, update, delete of a data entity) arrive as a Dataverse
//! `RemoteExecutionContext` when the Power Platform integration proxies them: p2c takes the
//! entity and the record's key from it and reads the record through OData (see
//! [`DATA_ENTITIES`]).
//!
//! Records are identified as `<dataAreaId>:<key>` (F&O keys are per legal entity), the
//! legal entity is the event's `company`, and `ControlNumber` is its version. Contract
//! dates become ISO-8601 dates.

use super::{parse_json_body, WebhookError, WebhookRequest};
use crate::domain::{
    ChangeEvent, EntityType, EventId, Operation, Origin, SourceRef, SourceVersion, System,
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// A business event p2c reads: its class, the entity it is about and the contract field
/// keying that record. An event about a customer (`EntityType::Account`) carries no customer
/// data p2c uses: the customer is read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessEventSpec {
    pub class: String,
    pub entity_type: EntityType,
    pub key: String,
}

/// The business events read unless `[systems.fin_ops.business_events]` says otherwise.
pub fn default_business_events() -> Vec<BusinessEventSpec> {
    [
        (
            "SalesInvoicePostedBusinessEvent",
            EntityType::Invoice,
            "InvoiceId",
        ),
        (
            "CustFreeTextInvoicePostedBusinessEvent",
            EntityType::Invoice,
            "InvoiceId",
        ),
        (
            "CustPaymentPostedBusinessEvent",
            EntityType::Payment,
            "Voucher",
        ),
    ]
    .into_iter()
    .map(|(class, entity_type, key)| BusinessEventSpec {
        class: class.into(),
        entity_type,
        key: key.into(),
    })
    .collect()
}

const FORMAT: &str = "Finance & Operations business event";

fn invalid(message: impl Into<String>) -> WebhookError {
    WebhookError::InvalidPayload {
        format: FORMAT,
        message: message.into(),
    }
}

/// Parses a request: a data event (a `RemoteExecutionContext`, as Dataverse proxies F&O
/// data events), or business events (one or an array) of the built-in classes.
pub fn parse(
    req: &WebhookRequest,
    received_at: DateTime<Utc>,
) -> Result<Vec<ChangeEvent>, WebhookError> {
    parse_with(req, received_at, &default_business_events())
}

/// [`parse`], reading the business events of `classes`.
pub fn parse_with(
    req: &WebhookRequest,
    received_at: DateTime<Utc>,
    classes: &[BusinessEventSpec],
) -> Result<Vec<ChangeEvent>, WebhookError> {
    let doc = parse_json_body(req)?;
    if doc.get("PrimaryEntityName").is_some() && doc.get("MessageName").is_some() {
        return Ok(vec![data_event(&doc, received_at)?]);
    }
    parse_events_with(&doc, received_at, classes)
}

/// The data entities whose data events p2c reads: (entity type, OData entity set, key
/// field, names the event may give it). A data event names the entity as its Dataverse
/// virtual table does (`mserp_` and the entity's name, e.g. `mserp_salesorderheaderv2entity`)
/// or by its public name; both are matched without case, prefix or `entity` suffix. (The
/// virtual tables' exact names are not confirmed in the reference, hence the tolerance.)
pub const DATA_ENTITIES: [(EntityType, &str, &str, &[&str]); 4] = [
    (
        EntityType::Order,
        "SalesOrderHeadersV2",
        "SalesOrderNumber",
        &["salesorderheaderv2", "salesorderheadersv2"],
    ),
    (
        EntityType::Account,
        "CustomersV3",
        "CustomerAccount",
        &["customerv3", "customersv3", "custcustomerv3"],
    ),
    (
        EntityType::Item,
        "ReleasedProductsV2",
        "ItemNumber",
        &[
            "releasedproductv2",
            "releasedproductsv2",
            "ecoresreleasedproductv2",
        ],
    ),
    (
        EntityType::Quote,
        "SalesQuotationHeadersV2",
        "SalesQuotationNumber",
        &["salesquotationheaderv2", "salesquotationheadersv2"],
    ),
];

/// A name as matched: lower case, without `mserp_` and a trailing `entity`.
fn plain_name(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    let n = n.strip_prefix("mserp_").unwrap_or(&n).to_string();
    n.strip_suffix("entity").map(str::to_string).unwrap_or(n)
}

/// A data event: which record of which entity changed. Only the key is taken from it; the
/// record itself is read through OData (whose field names are the documented ones).
fn data_event(doc: &Value, received_at: DateTime<Utc>) -> Result<ChangeEvent, WebhookError> {
    let o = doc
        .as_object()
        .ok_or_else(|| invalid("not a JSON object"))?;
    let entity =
        text(o, "PrimaryEntityName").ok_or(WebhookError::MissingKey("PrimaryEntityName".into()))?;
    let wanted = plain_name(entity);
    let (entity_type, set, key_field, _) = DATA_ENTITIES
        .iter()
        .find(|(_, _, _, names)| names.contains(&wanted.as_str()))
        .ok_or_else(|| WebhookError::UnknownEntity(entity.chars().take(64).collect()))?;
    let message = text(o, "MessageName").ok_or(WebhookError::MissingKey("MessageName".into()))?;
    let operation = match message {
        "Create" => Operation::Create,
        "Delete" => Operation::Delete,
        _ => Operation::Update,
    };
    // The record's attributes: the Target entity's, then the images'.
    let attributes: Vec<(String, Value)> =
        ["InputParameters", "PostEntityImages", "PreEntityImages"]
            .iter()
            .filter_map(|c| o.get(*c).and_then(Value::as_array))
            .flatten()
            .filter_map(|kv| kv.get("value").and_then(|v| v.get("Attributes")))
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|kv| {
                let k = kv.get("key").and_then(Value::as_str)?;
                Some((
                    plain_name(k),
                    kv.get("value").cloned().unwrap_or(Value::Null),
                ))
            })
            .collect();
    let attr = |name: &str| {
        let name = name.to_ascii_lowercase();
        attributes
            .iter()
            .find(|(k, v)| *k == name && v.as_str().is_some_and(|s| !s.trim().is_empty()))
            .and_then(|(_, v)| v.as_str())
            .map(|s| s.trim().to_string())
    };
    let key = attr(key_field).ok_or_else(|| WebhookError::MissingKey((*key_field).into()))?;
    let area = attr("dataAreaId")
        .ok_or(WebhookError::MissingKey("dataAreaId".into()))?
        .to_ascii_lowercase();
    let event_id = text(o, "OperationId")
        .or_else(|| text(o, "RequestId"))
        .or_else(|| text(o, "CorrelationId"))
        .ok_or(WebhookError::MissingKey("OperationId".into()))?;
    let at = o
        .get("OperationCreatedOn")
        .and_then(Value::as_str)
        .and_then(super::dataverse::parse_wcf_date)
        .and_then(|iso| DateTime::parse_from_rfc3339(&iso).ok())
        .map(|t| t.timestamp_millis());
    let user = text(o, "InitiatingUserAzureActiveDirectoryObjectId")
        .map(|u| u.trim_matches(['{', '}']).to_ascii_lowercase());
    Ok(ChangeEvent {
        event_id: EventId(format!(
            "fin_ops:{}:{message}",
            event_id.to_ascii_lowercase()
        )),
        source: SourceRef::new(System::FinOps, *entity_type, format!("{area}:{key}")),
        natural_key: Some(key),
        operation,
        fields: Map::new(),
        previous: Map::new(),
        needs_fetch: operation != Operation::Delete,
        resource: Some((*set).to_string()),
        version: SourceVersion {
            sequence: None,
            modified_ms: at,
        },
        origin: Origin {
            user_id: user,
            correlation_id: text(o, "CorrelationId").map(str::to_string),
            client: None,
            depth: None,
        },
        company: Some(area),
        received_at,
        content_hash: Default::default(),
    })
}

/// Parses a business-event document (one event or an array) of the built-in classes.
pub fn parse_events(
    doc: &Value,
    received_at: DateTime<Utc>,
) -> Result<Vec<ChangeEvent>, WebhookError> {
    parse_events_with(doc, received_at, &default_business_events())
}

fn parse_events_with(
    doc: &Value,
    received_at: DateTime<Utc>,
    classes: &[BusinessEventSpec],
) -> Result<Vec<ChangeEvent>, WebhookError> {
    match doc {
        Value::Array(items) if items.is_empty() => Err(invalid("an empty list of events")),
        Value::Array(items) => items
            .iter()
            .map(|e| event(e, received_at, classes))
            .collect(),
        other => Ok(vec![event(other, received_at, classes)?]),
    }
}

fn text<'a>(o: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    o.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// `ControlNumber`: an exact integer (never through a float), number or numeric text.
fn control_number(o: &Map<String, Value>) -> Option<u64> {
    match o.get("ControlNumber")? {
        Value::Number(n) => n.as_str().parse().ok(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A contract value in its plain form: `/Date(ms)/` becomes an ISO-8601 date (a midnight
/// UTC timestamp, how F&O sends a date) or date-time.
fn plain(v: &Value) -> Value {
    match v {
        Value::String(s) if s.starts_with("/Date(") => match super::dataverse::parse_wcf_date(s) {
            Some(iso) if iso.ends_with("T00:00:00Z") => {
                Value::String(iso.trim_end_matches("T00:00:00Z").to_string())
            }
            Some(iso) => Value::String(iso),
            None => v.clone(),
        },
        other => other.clone(),
    }
}

fn event(
    doc: &Value,
    received_at: DateTime<Utc>,
    classes: &[BusinessEventSpec],
) -> Result<ChangeEvent, WebhookError> {
    let o = doc
        .as_object()
        .ok_or_else(|| invalid("an event is not a JSON object"))?;
    let class =
        text(o, "BusinessEventId").ok_or(WebhookError::MissingKey("BusinessEventId".into()))?;
    let spec = classes
        .iter()
        .find(|s| s.class == class)
        .ok_or_else(|| WebhookError::UnknownEntity(class.chars().take(64).collect()))?;
    let (entity_type, key_field) = (&spec.entity_type, spec.key.as_str());
    let event_id = text(o, "EventId").ok_or(WebhookError::MissingKey("EventId".into()))?;
    let legal_entity = text(o, "BusinessEventLegalEntity")
        .or_else(|| text(o, "LegalEntity"))
        .ok_or(WebhookError::MissingKey("BusinessEventLegalEntity".into()))?
        .to_ascii_lowercase();
    let key = text(o, key_field).ok_or_else(|| WebhookError::MissingKey(key_field.into()))?;
    let control = control_number(o).ok_or(WebhookError::MissingKey("ControlNumber".into()))?;
    let event_ms = o
        .get("EventTimeIso8601")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_millis());
    let user = text(o, "InitiatingUserAADObjectId")
        .map(|u| u.trim_matches(['{', '}']).to_ascii_lowercase());
    // An event about a customer is a cue to read the customer again: its fields are not the
    // customer's, so none are kept.
    let about_customer = *entity_type == EntityType::Account;
    let fields: Map<String, Value> = if about_customer {
        Map::new()
    } else {
        o.iter().map(|(k, v)| (k.clone(), plain(v))).collect()
    };
    Ok(ChangeEvent {
        event_id: EventId(format!("fin_ops:{}", event_id.to_ascii_lowercase())),
        source: SourceRef::new(
            System::FinOps,
            *entity_type,
            format!("{legal_entity}:{key}"),
        ),
        natural_key: Some(key.to_string()),
        // A posted document is final: each event is its creation.
        operation: Operation::Create,
        fields,
        previous: Map::new(),
        // A payment is read for its customer's balance (an invoice is read for its order), a
        // customer read afresh.
        needs_fetch: matches!(entity_type, EntityType::Payment | EntityType::Account),
        resource: about_customer.then(|| "CustomersV3".to_string()),
        version: SourceVersion {
            sequence: Some((control, 0)),
            modified_ms: event_ms,
        },
        origin: Origin {
            user_id: user,
            correlation_id: None,
            client: None,
            depth: None,
        },
        company: Some(legal_entity),
        received_at,
        content_hash: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn invoice_event() -> Value {
        json!({
            "BusinessEventId": "SalesInvoicePostedBusinessEvent",
            "BusinessEventLegalEntity": "USMF",
            "ControlNumber": 9007199254740993u64,
            "EventId": "9C091AF1-5BAF-4CA9-B0A4-94D6E59A0D1C",
            "EventTime": "/Date(1778753145000)/",
            "InvoiceId": "CIV-000812",
            "InvoiceDate": "/Date(1778716800000)/",
        })
    }

    fn context(entity: &str, attributes: Value) -> Value {
        json!({
            "MessageName": "Update", "PrimaryEntityName": entity, "OperationId": "OP-1",
            "OperationCreatedOn": "/Date(1778753145000)/",
            "InputParameters": [{ "key": "Target", "value": { "Attributes": attributes } }]
        })
    }

    fn request(doc: &Value) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            path: "/webhooks/fo".into(),
            query: vec![],
            headers: vec![("content-type".into(), "application/json".into())],
            body: doc.to_string().into_bytes(),
        }
    }

    #[test]
    fn a_data_event_names_the_record_to_read_by_virtual_table_or_public_name() {
        for (entity, area, key) in [
            (
                "mserp_salesorderheaderv2entity",
                "mserp_dataareaid",
                "mserp_salesordernumber",
            ),
            ("SalesOrderHeadersV2", "dataAreaId", "SalesOrderNumber"),
        ] {
            let doc = context(
                entity,
                json!([{ "key": area, "value": "USMF" }, { "key": key, "value": "000731" }]),
            );
            let evs = parse(&request(&doc), Utc::now()).expect("parses");
            assert_eq!(evs.len(), 1);
            let ev = &evs[0];
            assert_eq!(ev.source.entity_type, EntityType::Order);
            assert_eq!(ev.source.id, "usmf:000731");
            assert_eq!(ev.company.as_deref(), Some("usmf"));
            assert!(ev.needs_fetch, "the record is read through OData");
            assert_eq!(ev.resource.as_deref(), Some("SalesOrderHeadersV2"));
            assert_eq!(ev.event_id.0, "fin_ops:op-1:Update");
            assert_eq!(ev.version.modified_ms, Some(1_778_753_145_000));
        }
        let keyless = context(
            "mserp_customerv3entity",
            json!([{ "key": "mserp_dataareaid", "value": "usmf" }]),
        );
        assert_eq!(
            parse(&request(&keyless), Utc::now())
                .expect_err("refused")
                .code(),
            "missing_key"
        );
        let unknown = context("mserp_vendvendorv2entity", json!([]));
        assert_eq!(
            parse(&request(&unknown), Utc::now())
                .expect_err("refused")
                .code(),
            "unknown_entity"
        );
    }

    #[test]
    fn the_control_number_is_the_exact_version() {
        // 2^53 + 1: a float would round it.
        let ev = parse_events(&invoice_event(), Utc::now()).expect("parses");
        assert_eq!(ev[0].version.sequence, Some((9_007_199_254_740_993, 0)));
        assert_eq!(ev[0].fields["InvoiceDate"], "2026-05-14");
        assert_eq!(ev[0].source.id, "usmf:civ-000812");
    }

    #[test]
    fn a_list_of_events_is_one_change_each_and_unknown_classes_are_refused() {
        let mut second = invoice_event();
        second["EventId"] = json!("0C091AF1-5BAF-4CA9-B0A4-94D6E59A0D1C");
        second["InvoiceId"] = json!("CIV-000813");
        let evs = parse_events(&json!([invoice_event(), second]), Utc::now()).expect("parses");
        assert_eq!(evs.len(), 2);
        assert_ne!(evs[0].event_id, evs[1].event_id);
        let mut other = invoice_event();
        other["BusinessEventId"] = json!("VendorInvoicePostedBusinessEvent");
        let err = parse_events(&other, Utc::now()).expect_err("refused");
        assert_eq!(err.code(), "unknown_entity");
        assert!(err.to_string().contains("VendorInvoicePostedBusinessEvent"));
        let mut keyless = invoice_event();
        keyless.as_object_mut().map(|o| o.remove("InvoiceId"));
        assert_eq!(
            parse_events(&keyless, Utc::now())
                .expect_err("refused")
                .code(),
            "missing_key"
        );
        assert_eq!(
            parse_events(&json!([]), Utc::now())
                .expect_err("refused")
                .code(),
            "invalid_payload"
        );
    }
}
