//! Dataverse service-endpoint webhooks: a serialized `RemoteExecutionContext`.
//!
//! Collections are key/value lists; typed values carry a WCF `__type` (EntityReference,
//! Money, OptionSetValue); dates are `/Date(ms)/` (ISO-8601 is tolerated too). The
//! record after the change is the post-image overlaid with `Target`; the pre-image is
//! kept as `previous`. Over 256 KB Dataverse strips images and parameters and sets
//! `x-ms-dynamics-msg-size-exceeded`: the event is then marked for a re-read.
//!
//! The same normalisation applies to Web API reads ([`normalize_webapi_record`]), so a
//! mapping script sees one shape whichever way the record arrived.

use super::{secret_matches, Parsed, WebhookError, WebhookRequest};
use crate::domain::{
    ChangeEvent, EntityType, EventId, Operation, Origin, SourceRef, SourceVersion, System,
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// How Dataverse authenticates to us (the service endpoint's authentication type).
#[derive(Debug, Clone, Default)]
pub struct DataverseAuth {
    /// `HttpHeader`: this header must carry one of `secrets`.
    pub header: Option<String>,
    /// `WebhookKey` (`?code=`) or `HttpQueryString`: this query parameter must.
    pub query_param: Option<String>,
    /// Active secrets (several during a rotation).
    pub secrets: Vec<String>,
}

impl DataverseAuth {
    pub fn check(&self, req: &WebhookRequest) -> Result<(), WebhookError> {
        let presented = self
            .header
            .as_deref()
            .and_then(|h| req.header(h))
            .or_else(|| self.query_param.as_deref().and_then(|q| req.query_param(q)));
        match presented {
            Some(p) if secret_matches(p, &self.secrets) => Ok(()),
            _ => Err(WebhookError::Unauthorized),
        }
    }
}

/// The Dataverse table behind each entity type, and the column holding its business key.
pub fn table_of(entity_type: EntityType) -> (&'static str, &'static str, Option<&'static str>) {
    // (logical name, entity set, natural key column)
    match entity_type {
        EntityType::Account => ("account", "accounts", Some("accountnumber")),
        EntityType::Contact => ("contact", "contacts", None),
        EntityType::Item => ("product", "products", Some("productnumber")),
        EntityType::Quote => ("quote", "quotes", Some("quotenumber")),
        EntityType::Order => ("salesorder", "salesorders", Some("ordernumber")),
        EntityType::Invoice => ("invoice", "invoices", Some("invoicenumber")),
        EntityType::Payment => ("p2c_payment", "p2c_payments", Some("p2c_paymentnumber")),
    }
}

/// The entity type of a Dataverse table, if p2c syncs it.
pub fn entity_type_of(logical_name: &str) -> Option<EntityType> {
    EntityType::ALL
        .into_iter()
        .find(|t| table_of(*t).0 == logical_name)
}

/// A key/value pair of a RemoteExecutionContext parameter or image collection, its value
/// read as an entity (other kinds of value are skipped: p2c reads only entities there).
#[derive(Debug, serde::Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: EntityValue,
}

/// An `Entity` (or `EntityReference`) value: its attributes, normalised as they are read,
/// and its row version. `FormattedValues`, `KeyAttributes` and the rest are skipped
/// without being built.
#[derive(Debug, Default)]
struct EntityValue {
    attributes: Option<Map<String, Value>>,
    row_version: Option<Value>,
}

impl<'de> serde::Deserialize<'de> for EntityValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EntityValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an entity or any other parameter value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<EntityValue, A::Error> {
                let mut out = EntityValue::default();
                while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match k.as_ref() {
                        "Attributes" => {
                            out.attributes = map.next_value::<Option<Attributes>>()?.map(|a| a.0)
                        }
                        "RowVersion" => out.row_version = Some(map.next_value()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<EntityValue, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(EntityValue::default())
            }
            fn visit_unit<E>(self) -> Result<EntityValue, E> {
                Ok(EntityValue::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<EntityValue, E> {
                Ok(EntityValue::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<EntityValue, E> {
                Ok(EntityValue::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<EntityValue, E> {
                Ok(EntityValue::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<EntityValue, E> {
                Ok(EntityValue::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<EntityValue, E> {
                Ok(EntityValue::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// An entity's `Attributes` key/value list, normalised into a map as it is read.
struct Attributes(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Attribute {
            key: String,
            #[serde(default)]
            value: Normalized,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Attributes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of {key, value} attributes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Attributes, A::Error> {
                let mut out = Map::new();
                while let Some(a) = seq.next_element::<Attribute>()? {
                    out.insert(a.key, a.value.0);
                }
                Ok(Attributes(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A webhook value in its plain form, normalised as it is read: the same value as
/// [`normalize_owned`] makes of it, without building the typed form first (an
/// `EntityReference` is six members, of which three are kept).
#[derive(Debug, Default)]
struct Normalized(Value);

/// The key under which serde_json (with `arbitrary_precision`) hands a number to a map
/// visitor, its exact text as the value. `Value` reads numbers the same way; a test holds
/// money exact through this path.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> serde::Deserialize<'de> for Normalized {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        use std::borrow::Cow;
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
                Ok(Value::from(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
                Ok(Value::from(n))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
                Ok(Value::from(n))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::String(
                    parse_wcf_date(s).unwrap_or_else(|| s.to_owned()),
                ))
            }
            fn visit_string<E>(self, s: String) -> Result<Value, E> {
                Ok(Value::String(parse_wcf_date(&s).unwrap_or(s)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(Normalized(v)) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Value::Array(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Value, A::Error> {
                // The members that decide the value's kind are kept as read; the rest are
                // normalised as they come.
                let mut ty: Option<Value> = None;
                let mut id: Option<Value> = None;
                let mut logical_name: Option<Value> = None;
                let mut name: Option<Value> = None;
                let mut attributes: Option<Value> = None;
                let mut rest = Map::new();
                let mut first = true;
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    if first && k == NUMBER_TOKEN {
                        let text: Cow<'de, str> = map.next_value()?;
                        return text
                            .parse::<serde_json::Number>()
                            .map(Value::Number)
                            .map_err(|_| A::Error::custom("invalid number"));
                    }
                    first = false;
                    let slot = match k.as_ref() {
                        "__type" => &mut ty,
                        "Id" => &mut id,
                        "LogicalName" => &mut logical_name,
                        "Name" => &mut name,
                        "Attributes" => &mut attributes,
                        _ => {
                            let Normalized(v) = map.next_value()?;
                            rest.insert(k.into_owned(), v);
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                let kind = kind_of(
                    ty.as_ref(),
                    id.is_some(),
                    logical_name.is_some(),
                    attributes.is_some(),
                );
                Ok(match kind {
                    Kind::Reference => reference(id.as_ref(), logical_name, name),
                    Kind::Entity => entity(attributes),
                    Kind::Other => {
                        if let Some(inner) = rest.remove("Value") {
                            return Ok(inner);
                        }
                        // Kept as read so far: normalised now, as every other member was.
                        for (k, v) in [
                            ("__type", ty),
                            ("Id", id),
                            ("LogicalName", logical_name),
                            ("Name", name),
                        ] {
                            if let Some(v) = v {
                                rest.insert(k.to_owned(), normalize_owned(v));
                            }
                        }
                        Value::Object(rest)
                    }
                })
            }
        }
        d.deserialize_any(V).map(Normalized)
    }
}

/// The parts of a RemoteExecutionContext p2c reads. Everything else — notably the
/// `ParentContext`, which repeats the whole context — is skipped without being built.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Context {
    primary_entity_name: Option<String>,
    primary_entity_id: Option<String>,
    message_name: Option<String>,
    #[serde(default)]
    input_parameters: Option<Vec<KeyValue>>,
    #[serde(default)]
    post_entity_images: Option<Vec<KeyValue>>,
    #[serde(default)]
    pre_entity_images: Option<Vec<KeyValue>>,
    operation_id: Option<String>,
    request_id: Option<String>,
    correlation_id: Option<String>,
    initiating_user_id: Option<String>,
    user_id: Option<String>,
    depth: Option<u32>,
}

impl Context {
    /// How deep what p2c read nests in the document: an attribute's value sits 6 levels
    /// down (`{ "InputParameters": [ { "value": { "Attributes": [ { "value": …`), a row
    /// version 4.
    fn depth(&self) -> usize {
        [
            &self.input_parameters,
            &self.post_entity_images,
            &self.pre_entity_images,
        ]
        .into_iter()
        .flatten()
        .flatten()
        .map(|kv| {
            let attributes = kv
                .value
                .attributes
                .iter()
                .flat_map(|a| a.values())
                .map(|v| 6 + super::value_depth(v));
            let row_version = kv
                .value
                .row_version
                .iter()
                .map(|v| 4 + super::value_depth(v));
            attributes.chain(row_version).max().unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
    }
}

/// Parses a Dataverse webhook into one change event.
pub fn parse(req: &WebhookRequest, received_at: DateTime<Utc>) -> Result<Parsed, WebhookError> {
    let ctx: Context = super::parse_typed(req, "Dataverse RemoteExecutionContext", Context::depth)?;
    let entity_name = ctx
        .primary_entity_name
        .as_deref()
        .ok_or(WebhookError::MissingKey("PrimaryEntityName".into()))?;
    let entity_type = entity_type_of(entity_name)
        .ok_or_else(|| WebhookError::UnknownEntity(entity_name.chars().take(64).collect()))?;
    let id = ctx
        .primary_entity_id
        .as_deref()
        .filter(|s| is_guid(s))
        .ok_or(WebhookError::MissingKey("PrimaryEntityId".into()))?;
    let message = ctx
        .message_name
        .as_deref()
        .ok_or(WebhookError::MissingKey("MessageName".into()))?;
    let operation = match message {
        "Create" => Operation::Create,
        "Delete" => Operation::Delete,
        _ => Operation::Update,
    };
    let size_exceeded = req.header("x-ms-dynamics-msg-size-exceeded").is_some();

    let mut input = ctx.input_parameters.unwrap_or_default();
    let target = take(&mut input, "Target");
    let (target_attrs, row_version) = match target {
        Some(t) => (t.attributes.unwrap_or_default(), t.row_version),
        None => (Map::new(), None),
    };
    let post = first_image(ctx.post_entity_images, "PostImage");
    let pre = first_image(ctx.pre_entity_images, "PreImage");

    let mut fields = post.unwrap_or_default();
    for (k, v) in target_attrs {
        fields.insert(k, v);
    }
    let previous = pre.unwrap_or_default();

    let (_, _, key_column) = table_of(entity_type);
    let natural_key = key_column
        .and_then(|c| {
            fields
                .get(c)
                .or_else(|| previous.get(c))
                .and_then(Value::as_str)
        })
        .map(str::to_string);

    let row_version = row_version.as_ref().and_then(|v| match v {
        Value::String(s) => s.parse::<u64>().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    });
    let modified_ms = fields
        .get("modifiedon")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_millis());
    let version = SourceVersion {
        sequence: row_version.map(|r| (r, 0)),
        modified_ms,
    };

    let event_id = ctx
        .operation_id
        .as_deref()
        .or(ctx.request_id.as_deref())
        .or(ctx.correlation_id.as_deref())
        .ok_or(WebhookError::MissingKey("OperationId".into()))?;
    let origin = Origin {
        user_id: ctx
            .initiating_user_id
            .as_deref()
            .or(ctx.user_id.as_deref())
            .map(str::to_ascii_lowercase),
        correlation_id: ctx.correlation_id.clone(),
        client: None,
        depth: ctx.depth,
    };

    Ok(Parsed::Events(vec![ChangeEvent {
        event_id: EventId(format!(
            "dataverse:{}:{}",
            event_id.to_ascii_lowercase(),
            message
        )),
        source: SourceRef::new(System::Dataverse, entity_type, id),
        natural_key,
        operation,
        fields: if size_exceeded { Map::new() } else { fields },
        previous: if size_exceeded { Map::new() } else { previous },
        needs_fetch: size_exceeded && operation != Operation::Delete,
        resource: None,
        version,
        origin,
        company: None,
        received_at,
        content_hash: Default::default(),
    }]))
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// The entity under `key` in a key/value collection, taken out of it.
fn take(coll: &mut Vec<KeyValue>, key: &str) -> Option<EntityValue> {
    let i = coll.iter().position(|kv| kv.key == key)?;
    Some(coll.swap_remove(i).value)
}

/// The attributes of the image named `preferred`, else of the first image.
fn first_image(coll: Option<Vec<KeyValue>>, preferred: &str) -> Option<Map<String, Value>> {
    let mut list = coll?;
    match take(&mut list, preferred) {
        Some(image) => image.attributes,
        None => list
            .into_iter()
            .find(|kv| kv.key != "AsynchronousStepPrimaryName")
            .and_then(|kv| kv.value.attributes),
    }
}

/// What a typed webhook object stands for, told by its `__type` and which of its
/// deciding members it has (the same test for a value read whole or read normalised).
enum Kind {
    /// An `EntityReference` (or its untyped image form): kept as `{id, logical_name, name}`.
    Reference,
    /// A nested `Entity`: its attributes, normalised.
    Entity,
    /// Money, an option set (their `Value`), or any other object, member by member.
    Other,
}

fn kind_of(ty: Option<&Value>, id: bool, logical_name: bool, attributes: bool) -> Kind {
    let ty = ty.and_then(Value::as_str).unwrap_or("");
    if ty.starts_with("EntityReference") || (logical_name && id && !attributes) {
        Kind::Reference
    } else if ty.starts_with("Entity:") || attributes {
        Kind::Entity
    } else {
        Kind::Other
    }
}

/// A lookup's plain form, from the reference's members as they were sent.
fn reference(id: Option<&Value>, logical_name: Option<Value>, name: Option<Value>) -> Value {
    let mut r = Map::new();
    r.insert(
        "id".into(),
        id.and_then(Value::as_str)
            .map(|s| Value::String(s.to_ascii_lowercase()))
            .unwrap_or(Value::Null),
    );
    r.insert("logical_name".into(), logical_name.unwrap_or(Value::Null));
    r.insert("name".into(), name.unwrap_or(Value::Null));
    Value::Object(r)
}

/// A nested entity's plain form, from its `Attributes` as they were sent.
fn entity(attributes: Option<Value>) -> Value {
    match attributes {
        Some(Value::Array(items)) => attributes_owned(items)
            .map(Value::Object)
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// One typed webhook value → its plain form (taken apart, not copied).
pub fn normalize_owned(v: Value) -> Value {
    match v {
        Value::String(s) => match parse_wcf_date(&s) {
            Some(iso) => Value::String(iso),
            None => Value::String(s),
        },
        Value::Object(mut o) => match kind_of(
            o.get("__type"),
            o.contains_key("Id"),
            o.contains_key("LogicalName"),
            o.contains_key("Attributes"),
        ) {
            Kind::Reference => {
                let (logical_name, name) = (o.remove("LogicalName"), o.remove("Name"));
                reference(o.get("Id"), logical_name, name)
            }
            Kind::Entity => entity(o.remove("Attributes")),
            // Money, OptionSetValue (and their untyped image forms).
            Kind::Other => match o.remove("Value") {
                Some(inner) => normalize_owned(inner),
                None => Value::Object(
                    o.into_iter()
                        .map(|(k, v)| (k, normalize_owned(v)))
                        .collect(),
                ),
            },
        },
        Value::Array(a) => Value::Array(a.into_iter().map(normalize_owned).collect()),
        other => other,
    }
}

/// A nested entity's attribute list (already read as JSON) → a normalised map.
fn attributes_owned(items: Vec<Value>) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    for kv in items {
        let Value::Object(mut kv) = kv else {
            return None;
        };
        let Some(Value::String(key)) = kv.remove("key") else {
            return None;
        };
        out.insert(
            key,
            normalize_owned(kv.remove("value").unwrap_or(Value::Null)),
        );
    }
    Some(out)
}

/// `/Date(1506384247000)/` or `/Date(1506384247000+0000)/` → ISO-8601 UTC.
pub fn parse_wcf_date(s: &str) -> Option<String> {
    let inner = s.strip_prefix("/Date(")?.strip_suffix(")/")?;
    // The sign of the offset, not of the milliseconds: search after the first byte.
    let end = inner
        .get(1..)?
        .find(['+', '-'])
        .map(|i| i + 1)
        .unwrap_or(inner.len());
    let ms: i64 = inner.get(..end)?.parse().ok()?;
    DateTime::<Utc>::from_timestamp_millis(ms).map(|t| iso_seconds(&t))
}

/// `%Y-%m-%dT%H:%M:%SZ`, written digit by digit for the years of four digits (every date
/// in a webhook has one; chrono's `format` parses its pattern again on every call).
fn iso_seconds(t: &DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let Ok(year @ 0..=9999) = u32::try_from(t.year()) else {
        return t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    };
    let mut b = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, n: u32| {
        b[at] = b'0' + (n / 10 % 10) as u8;
        b[at + 1] = b'0' + (n % 10) as u8;
    };
    put(0, year / 100);
    put(2, year % 100);
    put(5, t.month());
    put(8, t.day());
    put(11, t.hour());
    put(14, t.minute());
    put(17, t.second());
    String::from_utf8_lossy(&b).into_owned()
}

/// A Web API (OData) record → the same normalised shape as a webhook record: lookups
/// `_x_value` become `x: {id, logical_name, name}`, annotations are dropped, expanded
/// collections are normalised recursively.
pub fn normalize_webapi_record(rec: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in rec {
        if k.contains('@') {
            continue;
        }
        if let Some(name) = k.strip_prefix('_').and_then(|s| s.strip_suffix("_value")) {
            let lookup = if v.is_null() {
                Value::Null
            } else {
                let mut r = Map::new();
                r.insert(
                    "id".into(),
                    v.as_str()
                        .map(|s| Value::String(s.to_ascii_lowercase()))
                        .unwrap_or(Value::Null),
                );
                r.insert(
                    "logical_name".into(),
                    rec.get(&format!("{k}@Microsoft.Dynamics.CRM.lookuplogicalname"))
                        .cloned()
                        .unwrap_or(Value::Null),
                );
                r.insert(
                    "name".into(),
                    rec.get(&format!("{k}@OData.Community.Display.V1.FormattedValue"))
                        .cloned()
                        .unwrap_or(Value::Null),
                );
                Value::Object(r)
            };
            out.insert(name.to_string(), lookup);
            continue;
        }
        let nv = match v {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| match i.as_object() {
                        Some(o) => Value::Object(normalize_webapi_record(o)),
                        None => i.clone(),
                    })
                    .collect(),
            ),
            Value::Object(o) => Value::Object(normalize_webapi_record(o)),
            other => other.clone(),
        };
        out.insert(k.clone(), nv);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The sample with the value at `place` replaced by `levels` nested arrays (spliced
    /// into the text: a value that deep would overflow the stack being built or dropped).
    fn sample_nested(place: impl FnOnce(&mut Value), levels: usize) -> WebhookRequest {
        let mut body: Value = serde_json::from_str(include_str!(
            "../../../../tests/fixtures/dataverse_account_update.json"
        ))
        .expect("sample");
        place(&mut body);
        let deep = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        let body = body.to_string().replace("\"DEEP\"", &deep);
        WebhookRequest {
            method: "POST".into(),
            path: "/webhooks/dataverse".into(),
            query: vec![],
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into_bytes(),
        }
    }

    /// What p2c keeps is held to the depth cap; what it skips is skipped without being
    /// built, however deep (serde_json skips it without recursing).
    #[test]
    fn the_depth_cap_holds_for_what_is_kept_and_skipped_parts_cost_no_stack() {
        let code = |r: Result<Parsed, WebhookError>| r.err().map(|e| e.code());
        // An attribute's value sits 6 levels down: 26 more is the cap, 27 is over it.
        let at = |levels| {
            sample_nested(
                |b| b["InputParameters"][0]["value"]["Attributes"][1]["value"] = json!("DEEP"),
                levels,
            )
        };
        assert_eq!(code(parse(&at(26), Utc::now())), None);
        assert_eq!(code(parse(&at(27), Utc::now())), Some("json_too_deep"));
        // Deeper than serde_json builds (128): refused as too deep, not as malformed.
        assert_eq!(code(parse(&at(500), Utc::now())), Some("json_too_deep"));
        let in_image = sample_nested(
            |b| b["PostEntityImages"][0]["value"]["Attributes"][0]["value"] = json!("DEEP"),
            40,
        );
        assert_eq!(code(parse(&in_image, Utc::now())), Some("json_too_deep"));
        // The parent context is not read: any nesting there is skipped.
        let parent = sample_nested(|b| b["ParentContext"] = json!("DEEP"), 100_000);
        assert!(parse(&parent, Utc::now()).is_ok());
        // A deep body that is not a context at all: too deep, as the scan finds.
        let deep = WebhookRequest {
            body: format!("{}1{}", "[".repeat(40), "]".repeat(40)).into_bytes(),
            ..at(0)
        };
        assert_eq!(code(parse(&deep, Utc::now())), Some("json_too_deep"));
    }

    /// Values normalised as they are read come out as the typed value read first and then
    /// normalised, money to its last digit.
    #[test]
    fn values_read_normalised_are_the_typed_ones_normalised() {
        let fixture = include_str!("../../../../tests/fixtures/dataverse_account_update.json");
        let cases = [
            fixture,
            r#"{"__type": "Money:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 12345678901234567.89}"#,
            r#"{"Value": -0.000100}"#,
            r#"[1, -2, 3.50, 1e400, 18446744073709551616, "/Date(0)/", null, true, {}]"#,
            r#"{"__type": "EntityReference:x", "Id": "ABC", "Name": "N", "LogicalName": "account", "Attributes": [], "Value": 1}"#,
            r#"{"Id": "X", "LogicalName": "contact"}"#,
            r#"{"Id": "/Date(1000)/", "Name": "/Date(2000)/", "__type": "/Date(3000)/", "other": ["/Date(4000)/"]}"#,
            r#"{"__type": "Entity:x", "Attributes": [{"key": "a", "value": {"Value": 2}}, {"key": "b", "value": "/Date(5000)/"}]}"#,
            r#"{"Attributes": [{"key": 1}]}"#,
            r#"{"Attributes": {"key": "a"}}"#,
            r#"{"Value": 1, "Value": {"Value": "dup"}}"#,
            r#"{"__type": "EntityReference:x", "__type": "Money:y", "Value": 7}"#,
            r#"{"a": {"b": {"c": {"__type": "OptionSetValue:x", "Value": 3}}}}"#,
            r#"{"$serde_json::private::Number": "1.50"}"#,
            r#""été""#,
        ];
        for text in cases {
            let read: Normalized = serde_json::from_str(text).expect(text);
            let typed: Value = serde_json::from_str(text).expect(text);
            assert_eq!(read.0, normalize_owned(typed), "{text}");
        }
        let money: Normalized = serde_json::from_str(cases[1]).expect("money");
        assert_eq!(money.0.to_string(), "12345678901234567.89");
        // What the number token takes, it takes as serde_json's own value does.
        for text in [
            r#"{"$serde_json::private::Number": "x"}"#,
            r#"{"$serde_json::private::Number": 1}"#,
        ] {
            assert!(serde_json::from_str::<Normalized>(text).is_err(), "{text}");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn wcf_dates_become_iso() {
        assert_eq!(
            parse_wcf_date("/Date(1778749965000)/").as_deref(),
            Some("2026-05-14T09:12:45Z")
        );
        assert_eq!(
            parse_wcf_date("/Date(1778749966000+0000)/").as_deref(),
            Some("2026-05-14T09:12:46Z")
        );
        assert_eq!(
            parse_wcf_date("/Date(-1000-0700)/").as_deref(),
            Some("1969-12-31T23:59:59Z")
        );
        assert_eq!(parse_wcf_date("2026-05-14"), None);
        // Written by hand, as chrono's pattern would, over the whole range of millis.
        let mut ms: i64 = -62_167_219_200_000 - 86_400_000; // the day before year 0
        for step in [1i64, 999, 86_399_999, 7_776_000_000_123, 31_556_952_000_077] {
            for _ in 0..400 {
                if let Some(t) = DateTime::<Utc>::from_timestamp_millis(ms) {
                    assert_eq!(
                        iso_seconds(&t),
                        t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                        "{ms}"
                    );
                }
                ms = ms.saturating_add(step * 997);
            }
        }
        for ms in [
            i64::MIN,
            -1,
            0,
            253_402_300_799_999,
            253_402_300_800_000,
            i64::MAX,
        ] {
            if let Some(t) = DateTime::<Utc>::from_timestamp_millis(ms) {
                assert_eq!(iso_seconds(&t), t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
        }
        assert_eq!(parse_wcf_date("/Date()/"), None);
        assert_eq!(parse_wcf_date("/Date(é)/"), None);
    }

    #[test]
    fn webapi_lookups_take_the_webhook_shape() {
        let rec: Value = serde_json::json!({
            "@odata.etag": "W/\"1\"",
            "ordernumber": "ORD-1",
            "_customerid_value": "4B1E3D75-A749-EF11-ACCE-00224802D26D",
            "_customerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "account",
            "order_details": [ { "_productid_value": "P1", "_productid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "product", "quantity": 40 } ]
        });
        let n = normalize_webapi_record(rec.as_object().unwrap());
        assert_eq!(
            n["customerid"]["id"],
            "4b1e3d75-a749-ef11-acce-00224802d26d"
        );
        assert_eq!(n["customerid"]["logical_name"], "account");
        assert_eq!(
            n["order_details"][0]["productid"]["logical_name"],
            "product"
        );
        assert!(!n.contains_key("@odata.etag"));
    }
}
