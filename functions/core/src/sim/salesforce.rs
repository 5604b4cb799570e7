//! A simulated Salesforce org's REST API on loopback HTTP, as much of it as p2c uses:
//!
//! - `PATCH /services/data/<v>/sobjects/<Object>/<ExternalIdField>/<value>`: upsert by
//!   external id — `201 {"id","success","errors","created":true}` for a new record; for an
//!   existing one `200 {…,"created":false}`, or `204` with no body as older API versions
//!   answer ([`SimSalesforce::answer_updates_with_204`]); `300` with the matching records'
//!   URLs when several match; `?updateOnly=true` makes a missing record a `404`.
//!   Parent references by external id (`"Account__r": {"ERP_Customer_Number__c": "C-1"}`)
//!   resolve to the parent's id (`Account__c`), or fail with `400 INVALID_FIELD`.
//! - `PATCH /services/data/<v>/sobjects/<Object>/<Id>`: update by id (`204`).
//! - `GET /services/data/<v>/sobjects/<Object>/<Id>`: one record.
//! - `GET /services/data/<v>/query?q=SELECT Id FROM <Object> WHERE <Field> = '<value>'`:
//!   the one query shape p2c sends, nothing more.
//!
//! Change Data Capture: once [`SimSalesforce::set_change_events`] names p2c's endpoint,
//! every change to an Account, Contact, Quote or Order — a user's ([`SimSalesforce::user_create`],
//! [`SimSalesforce::user_update`]) or an API client's — is published as a change event in
//! the EventBridge envelope Salesforce's Event Relay produces (`detail.payload` with its
//! `ChangeEventHeader`: record ids, change type, `changeOrigin` naming the API client,
//! commit number), held in an [`Outbox`] until flushed, as an EventBridge API destination
//! would post it.
//!
//! Errors have Salesforce's shape, `[{"message": …, "errorCode": …}]`. Each write records
//! the caller's `Sforce-Call-Options: client=<id>` as the record's `LastModifiedByClient`
//! (what a change event's `changeOrigin` would carry), and requests without a bearer token
//! are refused with `401 INVALID_SESSION_ID`. Faults can be injected as for the others.

use super::{take_fault, Fault, Hook, Outbox};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Salesforce's error shape.
fn sf_error(status: u16, code: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(json!([{ "message": message, "errorCode": code, "fields": [] }])),
    )
        .into_response()
}

#[derive(Default)]
struct Org {
    /// Records by object, in creation order.
    objects: BTreeMap<String, Vec<Map<String, Value>>>,
    next_id: u64,
    log: Vec<String>,
    updates_204: bool,
    /// Where change events go, once set.
    events: Option<ChangeEventConfig>,
    commits: u64,
    /// Change events not yet handed to the outbox.
    published: Vec<Hook>,
}

/// Where the org's change events are delivered (an EventBridge API destination's target).
#[derive(Debug, Clone)]
pub struct ChangeEventConfig {
    pub url: String,
    /// The API destination connection's API-key header and its value.
    pub header: String,
    pub key: String,
    /// The org id in the event's `source` (`aws.partner/salesforce.com/<org>/<relay>`).
    pub org_id: String,
}

/// The objects whose changes the org publishes (change data capture selected for them).
const CAPTURED: [&str; 4] = ["Account", "Contact", "Quote", "Order"];

struct Inner {
    org: Mutex<Org>,
    faults: Mutex<VecDeque<Fault>>,
    api_version: String,
    outbox: Outbox,
}

/// The simulated org. Cheap to clone.
#[derive(Clone)]
pub struct SimSalesforce {
    inner: Arc<Inner>,
    url: String,
}

/// Key prefixes of the objects p2c writes (the first three characters of an id).
fn prefix_of(object: &str) -> &'static str {
    match object {
        "Account" => "001",
        "Contact" => "003",
        "Product2" => "01t",
        "PricebookEntry" => "01u",
        "Order" => "801",
        "Quote" => "0Q0",
        _ => "a0X",
    }
}

impl SimSalesforce {
    /// Starts the org's API on a loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            org: Mutex::new(Org::default()),
            faults: Mutex::new(VecDeque::new()),
            api_version: "v62.0".into(),
            outbox: Outbox::default(),
        });
        let router = axum::Router::new()
            .route(
                "/services/data/{version}/sobjects/{object}/{field}/{value}",
                axum::routing::patch(upsert).get(get_by_external_id),
            )
            .route(
                "/services/data/{version}/sobjects/{object}/{id}",
                axum::routing::patch(update_by_id).get(get_by_id),
            )
            .route("/services/data/{version}/query", axum::routing::get(query))
            .with_state(inner.clone());
        let (url, _task) = super::serve(router).await?;
        Ok(Self { inner, url })
    }

    /// The instance URL (`https://<domain>.my.salesforce.com` in a real org).
    pub fn instance_url(&self) -> &str {
        &self.url
    }

    pub fn api_version(&self) -> &str {
        &self.inner.api_version
    }

    /// Answer updates by external id with `204` and no body, as API versions before 46.0.
    pub fn answer_updates_with_204(&self, yes: bool) {
        if let Ok(mut o) = self.inner.org.lock() {
            o.updates_204 = yes;
        }
    }

    /// Fails the next request matching `fault.matching` (e.g. `PATCH Account`).
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut f) = self.inner.faults.lock() {
            f.push_back(fault);
        }
    }

    /// Publishes change events to `config` from now on.
    pub fn set_change_events(&self, config: ChangeEventConfig) {
        if let Ok(mut o) = self.inner.org.lock() {
            o.events = Some(config);
        }
    }

    /// Change events waiting to be delivered.
    pub fn outbox(&self) -> &Outbox {
        self.release();
        &self.inner.outbox
    }

    /// Moves published events into the outbox (they are published under the org's lock).
    fn release(&self) {
        let hooks = match self.inner.org.lock() {
            Ok(mut o) => std::mem::take(&mut o.published),
            Err(_) => return,
        };
        for h in hooks {
            self.inner.outbox.push(h);
        }
    }

    /// A user creates a record in the Salesforce UI: stored, and a `CREATE` change event
    /// published. Returns its id.
    pub fn user_create(&self, object: &str, fields: Value) -> String {
        let mut org = self.inner.org.lock().unwrap_or_else(|p| p.into_inner());
        let id = org.new_id(object);
        let mut rec = fields.as_object().cloned().unwrap_or_default();
        rec.insert("Id".into(), json!(id));
        org.publish(object, &id, "CREATE", &rec, None);
        org.objects.entry(object.into()).or_default().push(rec);
        drop(org);
        self.release();
        id
    }

    /// A user changes fields of a record: stored, and an `UPDATE` change event (the changed
    /// fields only) published.
    pub fn user_update(&self, object: &str, id: &str, fields: Value) -> Result<(), String> {
        let mut org = self.inner.org.lock().unwrap_or_else(|p| p.into_inner());
        let changed = fields.as_object().cloned().unwrap_or_default();
        let rec = org
            .objects
            .get_mut(object)
            .and_then(|recs| {
                recs.iter_mut()
                    .find(|r| r.get("Id").and_then(Value::as_str) == Some(id))
            })
            .ok_or_else(|| format!("no {object} {id}"))?;
        for (k, v) in &changed {
            rec.insert(k.clone(), v.clone());
        }
        org.publish(object, id, "UPDATE", &changed, None);
        drop(org);
        self.release();
        Ok(())
    }

    /// Adds a record as if a user had created it (returns its id).
    pub fn insert(&self, object: &str, fields: Value) -> String {
        let mut org = self.inner.org.lock().unwrap_or_else(|p| p.into_inner());
        let id = org.new_id(object);
        let mut rec = fields.as_object().cloned().unwrap_or_default();
        rec.insert("Id".into(), json!(id));
        org.objects.entry(object.into()).or_default().push(rec);
        id
    }

    /// The records of an object whose `field` is `value`.
    pub fn find(&self, object: &str, field: &str, value: &str) -> Vec<Map<String, Value>> {
        let org = self.inner.org.lock().unwrap_or_else(|p| p.into_inner());
        org.objects
            .get(object)
            .map(|recs| {
                recs.iter()
                    .filter(|r| r.get(field).and_then(Value::as_str) == Some(value))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every record of an object, in creation order.
    pub fn records(&self, object: &str) -> Vec<Map<String, Value>> {
        let org = self.inner.org.lock().unwrap_or_else(|p| p.into_inner());
        org.objects.get(object).cloned().unwrap_or_default()
    }

    /// Every write, as `METHOD Object status`.
    pub fn log(&self) -> Vec<String> {
        self.inner
            .org
            .lock()
            .map(|o| o.log.clone())
            .unwrap_or_default()
    }
}

impl Org {
    /// Publishes a change event for a captured object, when events are configured. `client`
    /// is the API client that made the change (`None`: a user in the UI).
    fn publish(
        &mut self,
        object: &str,
        id: &str,
        change_type: &str,
        fields: &Map<String, Value>,
        client: Option<&str>,
    ) {
        let Some(cfg) = self.events.clone() else {
            return;
        };
        if !CAPTURED.contains(&object) {
            return;
        }
        self.commits += 1;
        let now = chrono::Utc::now();
        let origin = match client {
            Some(c) => format!("com/salesforce/api/rest/62.0;client={c}"),
            None => "com/salesforce/api/soap/62.0;client=SfdcInternalAPI/".into(),
        };
        let mut payload: Map<String, Value> = fields
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "Id" | "LastModifiedByClient" | "attributes"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // An update names the fields it changed, and those it set to null.
        let (changed, nulled): (Vec<Value>, Vec<Value>) = if change_type == "UPDATE" {
            (
                payload.keys().map(|k| json!(k)).collect(),
                payload
                    .iter()
                    .filter(|(_, v)| v.is_null())
                    .map(|(k, _)| json!(k))
                    .collect(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        payload.insert(
            "ChangeEventHeader".into(),
            json!({
                "entityName": object,
                "recordIds": [id],
                "changeType": change_type,
                "changeOrigin": origin,
                "transactionKey": format!("{:08x}-sim-{:012x}", self.commits, self.commits),
                "sequenceNumber": 1,
                "commitTimestamp": now.timestamp_millis(),
                "commitNumber": 1_778_749_965_433_528_300u64 + self.commits,
                "commitUser": "0055f000005mc66AAA",
                "nulledFields": nulled,
                "diffFields": [],
                "changedFields": changed,
            }),
        );
        let envelope = json!({
            "version": "0",
            "id": format!("7b3e0c2a-91f4-4d5e-b0a1-{:012x}", self.commits),
            "detail-type": format!("{object}ChangeEvent"),
            "source": format!("aws.partner/salesforce.com/{}/0YL5f000000CabWGAS", cfg.org_id),
            "account": "123456789012",
            "time": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "region": "eu-west-1",
            "resources": [],
            "detail": { "payload": payload },
        });
        self.published.push(Hook {
            url: cfg.url.clone(),
            headers: vec![(cfg.header.clone(), cfg.key.clone())],
            body: envelope,
            label: format!(
                "Salesforce {object}ChangeEvent {change_type}{}",
                if client.is_some() { " (by p2c)" } else { "" }
            ),
        });
    }

    fn new_id(&mut self, object: &str) -> String {
        self.next_id += 1;
        // 18 characters, like a real id: prefix, pod, counter, checksum-like suffix.
        format!("{}5f{:010}AAA", prefix_of(object), self.next_id)
    }

    /// Replaces `<Rel>__r: {<ExtField>: v}` (and standard `<Rel>: {…}`) by the parent's id.
    fn resolve_parents(&self, body: &mut Map<String, Value>) -> Result<(), Box<Response>> {
        let refs: Vec<(String, Map<String, Value>)> = body
            .iter()
            .filter_map(|(k, v)| v.as_object().map(|o| (k.clone(), o.clone())))
            .collect();
        for (rel, key) in refs {
            let Some((field, value)) = key.iter().next() else {
                continue;
            };
            let (object, id_field) = match rel.strip_suffix("__r") {
                Some(custom) => (custom_parent(custom), format!("{custom}__c")),
                None => (rel.clone(), format!("{rel}Id")),
            };
            let value = value.as_str().unwrap_or_default();
            let matches: Vec<&Map<String, Value>> = self
                .objects
                .get(&object)
                .map(|recs| {
                    recs.iter()
                        .filter(|r| r.get(field).and_then(Value::as_str) == Some(value))
                        .collect()
                })
                .unwrap_or_default();
            match matches.as_slice() {
                [one] => {
                    let id = one.get("Id").cloned().unwrap_or(Value::Null);
                    body.remove(&rel);
                    body.insert(id_field, id);
                }
                [] => {
                    return Err(Box::new(sf_error(
                        400,
                        "INVALID_FIELD",
                        &format!("Foreign key external ID: {value} not found for field {field} in entity {object}"),
                    )))
                }
                _ => {
                    return Err(Box::new(sf_error(
                        400,
                        "DUPLICATE_EXTERNAL_ID",
                        &format!("Foreign key external ID: {value} matches more than one {object}"),
                    )))
                }
            }
        }
        Ok(())
    }
}

/// The parent object of a custom relationship (`Account__r` → `Account`).
fn custom_parent(rel: &str) -> String {
    match rel {
        "Account" | "Order" | "Product2" => rel.to_string(),
        other => format!("{other}__c"),
    }
}

fn caller_client(headers: &HeaderMap) -> Option<String> {
    headers
        .get("sforce-call-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').find_map(|p| p.trim().strip_prefix("client=")))
        .map(str::to_string)
}

/// Common checks: token, injected faults.
fn gate(inner: &Inner, headers: &HeaderMap, method: &Method, path: &str) -> Option<Response> {
    if !super::has_bearer(headers) {
        return Some(sf_error(
            401,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        ));
    }
    take_fault(&inner.faults, method.as_str(), path).map(|f| {
        let mut r = sf_error(f.status, "REQUEST_LIMIT_EXCEEDED", &f.message);
        if let Some(s) = f.retry_after {
            if let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
        }
        r
    })
}

/// The org, locked, and the body of a write, ready to apply.
type Write<'a> = (std::sync::MutexGuard<'a, Org>, Map<String, Value>);

/// What every write does first: the token and injected faults, the JSON body, parents by
/// external id, and the caller's client id recorded on the record.
fn write<'a>(
    inner: &'a Inner,
    headers: &HeaderMap,
    path: &str,
    body: &str,
) -> Result<Write<'a>, Box<Response>> {
    if let Some(r) = gate(inner, headers, &Method::PATCH, path) {
        return Err(Box::new(r));
    }
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(body) else {
        return Err(Box::new(sf_error(
            400,
            "JSON_PARSER_ERROR",
            "The request body is not a JSON object",
        )));
    };
    let org = inner.org.lock().unwrap_or_else(|p| p.into_inner());
    org.resolve_parents(&mut fields)?;
    if let Some(c) = caller_client(headers) {
        fields.insert("LastModifiedByClient".into(), json!(c));
    }
    Ok((org, fields))
}

#[derive(serde::Deserialize)]
struct UpsertParams {
    #[serde(default, rename = "updateOnly")]
    update_only: Option<String>,
}

async fn upsert(
    State(inner): State<Arc<Inner>>,
    Path((_version, object, field, value)): Path<(String, String, String, String)>,
    Query(params): Query<UpsertParams>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (mut org, mut fields) = match write(&inner, &headers, &format!("{object}/{field}"), &body) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let version = inner.api_version.clone();
    let updates_204 = org.updates_204;
    let positions: Vec<usize> = org
        .objects
        .get(&object)
        .map(|recs| {
            recs.iter()
                .enumerate()
                .filter(|(_, r)| r.get(&field).and_then(Value::as_str) == Some(value.as_str()))
                .map(|(i, _)| i)
                .collect()
        })
        .unwrap_or_default();
    match positions.as_slice() {
        [] if params.update_only.as_deref() == Some("true") => {
            org.log.push(format!("PATCH {object} 404"));
            sf_error(
                404,
                "NOT_FOUND",
                &format!("Provided external ID field does not exist or is not accessible: {value}"),
            )
        }
        [] => {
            let id = org.new_id(&object);
            fields.insert(field.clone(), json!(value));
            fields.insert("Id".into(), json!(id));
            let client = caller_client(&headers);
            org.publish(&object, &id, "CREATE", &fields, client.as_deref());
            org.objects.entry(object.clone()).or_default().push(fields);
            org.log.push(format!("PATCH {object} 201"));
            (
                StatusCode::CREATED,
                axum::Json(json!({"id": id, "success": true, "errors": [], "created": true})),
            )
                .into_response()
        }
        [i] => {
            let i = *i;
            let recs = org.objects.entry(object.clone()).or_default();
            let rec = &mut recs[i];
            for (k, v) in &fields {
                rec.insert(k.clone(), v.clone());
            }
            let id = rec.get("Id").cloned().unwrap_or(Value::Null);
            let client = caller_client(&headers);
            org.publish(
                &object,
                id.as_str().unwrap_or_default(),
                "UPDATE",
                &fields,
                client.as_deref(),
            );
            if updates_204 {
                org.log.push(format!("PATCH {object} 204"));
                StatusCode::NO_CONTENT.into_response()
            } else {
                org.log.push(format!("PATCH {object} 200"));
                (
                    StatusCode::OK,
                    axum::Json(json!({"id": id, "success": true, "errors": [], "created": false})),
                )
                    .into_response()
            }
        }
        many => {
            let urls: Vec<Value> = many
                .iter()
                .filter_map(|i| org.objects.get(&object).and_then(|r| r.get(*i)))
                .filter_map(|r| r.get("Id").and_then(Value::as_str))
                .map(|id| json!(format!("/services/data/{version}/sobjects/{object}/{id}")))
                .collect();
            org.log.push(format!("PATCH {object} 300"));
            (StatusCode::MULTIPLE_CHOICES, axum::Json(Value::Array(urls))).into_response()
        }
    }
}

async fn update_by_id(
    State(inner): State<Arc<Inner>>,
    Path((_version, object, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (mut org, fields) = match write(&inner, &headers, &format!("{object}/{id}"), &body) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let Some(rec) = org.objects.get_mut(&object).and_then(|recs| {
        recs.iter_mut()
            .find(|r| r.get("Id").and_then(Value::as_str) == Some(id.as_str()))
    }) else {
        org.log.push(format!("PATCH {object} 404"));
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist");
    };
    for (k, v) in &fields {
        rec.insert(k.clone(), v.clone());
    }
    let client = caller_client(&headers);
    org.publish(&object, &id, "UPDATE", &fields, client.as_deref());
    org.log.push(format!("PATCH {object} 204"));
    StatusCode::NO_CONTENT.into_response()
}

async fn get_by_id(
    State(inner): State<Arc<Inner>>,
    Path((_version, object, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&inner, &headers, &Method::GET, &format!("{object}/{id}")) {
        return r;
    }
    let org = inner.org.lock().unwrap_or_else(|p| p.into_inner());
    match org.objects.get(&object).and_then(|recs| {
        recs.iter()
            .find(|r| r.get("Id").and_then(Value::as_str) == Some(id.as_str()))
    }) {
        Some(r) => axum::Json(Value::Object(r.clone())).into_response(),
        None => sf_error(404, "NOT_FOUND", "The requested resource does not exist"),
    }
}

async fn get_by_external_id(
    State(inner): State<Arc<Inner>>,
    Path((_version, object, field, value)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&inner, &headers, &Method::GET, &format!("{object}/{field}")) {
        return r;
    }
    let org = inner.org.lock().unwrap_or_else(|p| p.into_inner());
    let matches: Vec<&Map<String, Value>> = org
        .objects
        .get(&object)
        .map(|recs| {
            recs.iter()
                .filter(|r| r.get(&field).and_then(Value::as_str) == Some(value.as_str()))
                .collect()
        })
        .unwrap_or_default();
    match matches.as_slice() {
        [one] => axum::Json(Value::Object((*one).clone())).into_response(),
        [] => sf_error(404, "NOT_FOUND", "The requested resource does not exist"),
        _ => sf_error(300, "MULTIPLE_CHOICES", "More than one record matches"),
    }
}

#[derive(serde::Deserialize)]
struct QueryParams {
    q: String,
}

/// `SELECT <fields> FROM <Object> WHERE <Field> = '<value>'` (backslash escapes as SOQL
/// has them): the fields, the object, the field and the value.
fn parse_soql(q: &str) -> Option<(Vec<String>, String, String, String)> {
    let rest = q.trim().strip_prefix("SELECT ")?;
    let (fields, rest) = rest.split_once(" FROM ")?;
    let fields: Vec<String> = fields.split(',').map(|f| f.trim().to_string()).collect();
    if fields
        .iter()
        .any(|f| f.is_empty() || !f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return None;
    }
    let (object, rest) = rest.split_once(" WHERE ")?;
    let (field, literal) = rest.split_once(" = ")?;
    let literal = literal.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    let mut value = String::new();
    let mut chars = literal.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?),
            '\'' => return None,
            c => value.push(c),
        }
    }
    Some((fields, object.trim().into(), field.trim().into(), value))
}

async fn query(
    State(inner): State<Arc<Inner>>,
    Query(params): Query<QueryParams>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&inner, &headers, &Method::GET, "query") {
        return r;
    }
    let Some((wanted, object, field, value)) = parse_soql(&params.q) else {
        return sf_error(400, "MALFORMED_QUERY", "unexpected token in the query");
    };
    let org = inner.org.lock().unwrap_or_else(|p| p.into_inner());
    let records: Vec<Value> = org
        .objects
        .get(&object)
        .map(|recs| {
            recs.iter()
                .filter(|r| r.get(&field).and_then(Value::as_str) == Some(value.as_str()))
                .map(|r| {
                    let mut out = Map::new();
                    out.insert("attributes".into(), json!({"type": object}));
                    for f in &wanted {
                        out.insert(f.clone(), r.get(f).cloned().unwrap_or(Value::Null));
                    }
                    Value::Object(out)
                })
                .collect()
        })
        .unwrap_or_default();
    axum::Json(json!({"totalSize": records.len(), "done": true, "records": records}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_query_shape_parses_with_escapes() {
        assert_eq!(
            parse_soql("SELECT Id FROM Order WHERE OrderNumber = 'O\\'1'"),
            Some((
                vec!["Id".into()],
                "Order".into(),
                "OrderNumber".into(),
                "O'1".into()
            ))
        );
        assert_eq!(parse_soql("SELECT Id, ; FROM Order WHERE X = 'y'"), None);
        assert_eq!(parse_soql("SELECT Id FROM Order WHERE X = 'a'b'"), None);
    }
}
