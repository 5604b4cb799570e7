//! Business Central API v2.0 webhooks.
//!
//! A new or renewed subscription is validated by a request carrying `validationToken`,
//! answered with the token as plain text. Notifications carry no record data: each
//! becomes an event marked for a read of its `resource`. A `collection` notification
//! (over 1,000 changes in 30 s) carries a filtered collection URL, which the read expands
//! into one event per record. `clientState` is our secret, compared in constant time.

use super::{parse_json_body, secret_matches, Parsed, WebhookError, WebhookRequest};
use crate::domain::{
    ChangeEvent, EntityType, EventId, Operation, SourceRef, SourceVersion, System,
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// The BC API entity set of each entity type, and the sets that notify for it.
pub fn entity_type_of(entity_set: &str) -> Option<EntityType> {
    Some(match entity_set {
        "customers" => EntityType::Account,
        "contacts" => EntityType::Contact,
        "items" => EntityType::Item,
        "salesQuotes" => EntityType::Quote,
        "salesOrders" => EntityType::Order,
        "salesInvoices" | "salesCreditMemos" => EntityType::Invoice,
        "customerPaymentJournals" | "customerPayments" => EntityType::Payment,
        _ => return None,
    })
}

/// A parsed `resource`: `api/v2.0/companies(<company>)/<set>(<id>)` or a filtered collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The resource path without a leading `/`, query included.
    pub path: String,
    pub company: Option<String>,
    pub entity_set: String,
    /// The record id; `None` for a collection URL.
    pub id: Option<String>,
}

/// Parses a notification's `resource`.
pub fn parse_resource(resource: &str) -> Result<Resource, WebhookError> {
    let path = resource.trim().trim_start_matches('/').to_string();
    let bad = || WebhookError::InvalidPayload {
        format: "Business Central notification",
        message: "resource is not an API v2.0 entity path".into(),
    };
    let without_query = path.split('?').next().unwrap_or("");
    let mut company = None;
    let mut last: Option<(&str, Option<&str>)> = None;
    for seg in without_query.split('/') {
        let (name, key) = match seg.split_once('(') {
            Some((n, rest)) => (n, Some(rest.strip_suffix(')').ok_or_else(bad)?)),
            None => (seg, None),
        };
        if name == "companies" {
            company = key.map(|k| k.trim_matches('\'').to_ascii_lowercase());
        }
        last = Some((name, key));
    }
    let (set, id) = last.ok_or_else(bad)?;
    if set.is_empty() || !set.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad());
    }
    let entity_set = set.to_string();
    let id = id.map(|i| i.trim_matches('\'').to_ascii_lowercase());
    Ok(Resource {
        path,
        company,
        entity_set,
        id,
    })
}

/// Parses a BC webhook: a validation handshake, or a batch of notifications whose
/// `clientState` must match one of `client_states`.
pub fn parse(
    req: &WebhookRequest,
    client_states: &[String],
    received_at: DateTime<Utc>,
) -> Result<Parsed, WebhookError> {
    if let Some(token) = req.query_param("validationToken") {
        // Only answer handshakes for subscriptions we created: they carry our clientState
        // when the sender sends one (the REST guidelines' `ClientState` header).
        if let Some(cs) = req.header("clientstate") {
            if !secret_matches(cs, client_states) {
                return Err(WebhookError::Unauthorized);
            }
        }
        if token.len() > 4096 {
            return Err(WebhookError::InvalidPayload {
                format: "Business Central handshake",
                message: "validationToken is too long".into(),
            });
        }
        return Ok(Parsed::Handshake(token.to_string()));
    }
    let body = parse_json_body(req)?;
    let list = body
        .get("value")
        .and_then(Value::as_array)
        .ok_or(WebhookError::MissingKey("value".into()))?;
    let mut events = Vec::with_capacity(list.len());
    for n in list {
        let n = n.as_object().ok_or(WebhookError::InvalidPayload {
            format: "Business Central notification",
            message: "a notification is not an object".into(),
        })?;
        let field = |k: &str| n.get(k).and_then(Value::as_str);
        let state = field("clientState").unwrap_or("");
        if !secret_matches(state, client_states) {
            return Err(WebhookError::Unauthorized);
        }
        let resource =
            parse_resource(field("resource").ok_or(WebhookError::MissingKey("resource".into()))?)?;
        let entity_type = entity_type_of(&resource.entity_set).ok_or_else(|| {
            WebhookError::UnknownEntity(resource.entity_set.chars().take(64).collect())
        })?;
        let change = field("changeType").ok_or(WebhookError::MissingKey("changeType".into()))?;
        let operation = match change {
            "created" => Operation::Create,
            "updated" => Operation::Update,
            "deleted" => Operation::Delete,
            "collection" => Operation::Changed,
            other => {
                return Err(WebhookError::InvalidPayload {
                    format: "Business Central notification",
                    message: format!(
                        "unknown changeType `{}`",
                        other.chars().take(32).collect::<String>()
                    ),
                })
            }
        };
        let modified = field("lastModifiedDateTime")
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        let id = match (&resource.id, operation) {
            (Some(id), _) => id.clone(),
            (None, Operation::Changed) => format!("collection:{}", resource.entity_set),
            (None, _) => return Err(WebhookError::MissingKey("resource id".into())),
        };
        let subscription = field("subscriptionId").unwrap_or("");
        let mut fields = Map::new();
        fields.insert(
            "@p2c.entitySet".into(),
            Value::String(resource.entity_set.clone()),
        );
        events.push(ChangeEvent {
            event_id: EventId(format!(
                "bc:{subscription}:{}:{change}:{}",
                resource.path,
                modified.map(|m| m.timestamp_millis()).unwrap_or(0)
            )),
            source: SourceRef::new(System::BusinessCentral, entity_type, id),
            natural_key: None,
            operation,
            fields,
            previous: Map::new(),
            needs_fetch: operation != Operation::Delete,
            resource: Some(resource.path.clone()),
            version: SourceVersion {
                sequence: None,
                modified_ms: modified.map(|m| m.timestamp_millis()),
            },
            origin: Default::default(),
            company: resource.company.clone(),
            received_at,
            content_hash: Default::default(),
        });
    }
    Ok(Parsed::Events(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_parse_with_or_without_leading_slash() {
        let r = parse_resource("api/v2.0/companies(b18aed47-C385-49d2-b954-dbdf8ad71780)/salesOrders(b6f4017a-b749-ee11-ad0b-a1422c0f7f1f)").unwrap();
        assert_eq!(
            r.company.as_deref(),
            Some("b18aed47-c385-49d2-b954-dbdf8ad71780")
        );
        assert_eq!(r.entity_set, "salesOrders");
        assert_eq!(
            r.id.as_deref(),
            Some("b6f4017a-b749-ee11-ad0b-a1422c0f7f1f")
        );
        let c = parse_resource("/api/v2.0/companies(x)/salesInvoices?$filter=lastDateTimeModified%20gt%202026-05-14T09:29:00Z").unwrap();
        assert_eq!(c.entity_set, "salesInvoices");
        assert_eq!(c.id, None);
        assert!(c.path.starts_with("api/v2.0/"));
        assert!(parse_resource("api/v2.0/companies(x)/sales(Orders").is_err());
    }
}
