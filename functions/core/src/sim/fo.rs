//! A simulated Finance & Operations environment's OData endpoint (`/data/`) on loopback
//! HTTP, as much of it as p2c uses:
//!
//! - `GET /data/<Entity>?$filter=<Field> eq '<v>' [and …]&$top=n&cross-company=true`:
//!   without `cross-company=true` only the default legal entity's records are visible, as in
//!   F&O.
//! - `POST /data/<Entity>`: creates (`201` with the record). Keys must be complete and new;
//!   numbers F&O assigns from a number sequence (`SalesOrderNumber`,
//!   `SalesQuotationNumber`, a line's `InventoryLotId`) are filled in. A customer needs a
//!   customer group; a line needs its order.
//! - `GET`, `PATCH` (`204`) and `DELETE` (`204`) by the full key,
//!   `Entity(dataAreaId='usmf',Field='value')`, `If-Match` checked against the record's
//!   `@odata.etag` (`412` when it moved on). A missing key is `404`.
//!
//! Requests without a bearer token are refused (`401`); faults can be injected as for the
//! other simulators. Errors have F&O's shape: `{"error": {"code", "message",
//! "innererror": {"message"}}}`.

use super::{take_fault, Fault};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// The key fields of each entity the simulator knows (after `dataAreaId`).
fn key_fields(entity: &str) -> Option<&'static [&'static str]> {
    Some(match entity {
        "CustomersV3" => &["CustomerAccount"],
        "ReleasedProductsV2" => &["ItemNumber"],
        "SalesOrderHeadersV2" => &["SalesOrderNumber"],
        "SalesOrderLines" | "SalesQuotationLines" => &["InventoryLotId"],
        "SalesQuotationHeadersV2" => &["SalesQuotationNumber"],
        "CustomerPaymentJournalLines" => &["JournalBatchNumber", "LineNumber"],
        _ => return None,
    })
}

fn fo_error(status: u16, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(json!({ "error": {
            "code": "",
            "message": message,
            "innererror": { "message": message, "type": "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException", "stacktrace": "" }
        }})),
    )
        .into_response()
}

#[derive(Default)]
struct Env {
    entities: BTreeMap<String, Vec<Map<String, Value>>>,
    sequences: HashMap<String, u64>,
    etags: u64,
    log: Vec<String>,
}

struct Inner {
    env: Mutex<Env>,
    faults: Mutex<VecDeque<Fault>>,
    default_company: String,
}

/// The simulated environment. Cheap to clone.
#[derive(Clone)]
pub struct SimFinOps {
    inner: Arc<Inner>,
    pub url: String,
}

impl SimFinOps {
    /// Starts the environment; `default_company` is the caller's default legal entity.
    pub async fn start(default_company: &str) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            env: Mutex::new(Env::default()),
            faults: Mutex::new(VecDeque::new()),
            default_company: default_company.to_ascii_lowercase(),
        });
        let router = axum::Router::new()
            .route(
                "/data/{segment}",
                axum::routing::get(get)
                    .post(post)
                    .patch(patch)
                    .delete(delete),
            )
            .with_state(inner.clone());
        let (url, _task) = super::serve(router).await?;
        Ok(Self { inner, url })
    }

    /// The OData root p2c is configured with (`…/data`).
    pub fn data_url(&self) -> String {
        format!("{}/data", self.url)
    }

    /// Fails the next request matching `fault.matching` (e.g. `POST SalesOrderLines`).
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut f) = self.inner.faults.lock() {
            f.push_back(fault);
        }
    }

    /// Every record of an entity.
    pub fn records(&self, entity: &str) -> Vec<Map<String, Value>> {
        let env = self.inner.env.lock().unwrap_or_else(|p| p.into_inner());
        env.entities.get(entity).cloned().unwrap_or_default()
    }

    /// The records of an entity whose `field` is `value`.
    pub fn find(&self, entity: &str, field: &str, value: &str) -> Vec<Map<String, Value>> {
        self.records(entity)
            .into_iter()
            .filter(|r| r.get(field).and_then(Value::as_str) == Some(value))
            .collect()
    }

    /// Adds a record as if a user had created it in F&O.
    pub fn insert(&self, entity: &str, fields: Value) {
        let mut env = self.inner.env.lock().unwrap_or_else(|p| p.into_inner());
        let mut rec = fields.as_object().cloned().unwrap_or_default();
        env.etags += 1;
        rec.insert("@odata.etag".into(), json!(format!("W/\"{}\"", env.etags)));
        env.entities.entry(entity.into()).or_default().push(rec);
    }

    /// Every write, as `METHOD Entity status`.
    pub fn log(&self) -> Vec<String> {
        self.inner
            .env
            .lock()
            .map(|e| e.log.clone())
            .unwrap_or_default()
    }
}

/// `Entity(k='v',k2='v2')` → the entity and its key values (quotes undone).
fn parse_key(segment: &str) -> Option<(String, Vec<(String, String)>)> {
    let (entity, rest) = segment.split_once('(')?;
    let inner = rest.strip_suffix(')')?;
    let mut pairs = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '\'' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    value.push('\'');
                }
                '\'' => break,
                c => value.push(c),
            }
        }
        pairs.push((name.trim().to_string(), value));
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(_) => return None,
        }
    }
    Some((entity.to_string(), pairs))
}

/// `A eq 'x' and B eq 'y'` → the comparisons (the only filter shape p2c sends).
fn parse_filter(filter: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in filter.split(" and ") {
        let (field, value) = part.split_once(" eq ")?;
        let value = value.trim();
        let value = value
            .strip_prefix('\'')?
            .strip_suffix('\'')?
            .replace("''", "'");
        out.push((field.trim().to_string(), value));
    }
    Some(out)
}

fn matches(rec: &Map<String, Value>, pairs: &[(String, String)]) -> bool {
    pairs.iter().all(|(k, v)| {
        rec.get(k).is_some_and(|x| match x {
            Value::String(s) => s.eq_ignore_ascii_case(v),
            Value::Number(n) => n.to_string() == *v,
            _ => false,
        })
    })
}

fn gate(inner: &Inner, headers: &HeaderMap, method: &Method, path: &str) -> Option<Response> {
    if !super::has_bearer(headers) {
        return Some(fo_error(401, "Unauthorized"));
    }
    take_fault(&inner.faults, method.as_str(), path).map(|f| super::fault_response(&f))
}

fn entity_of(segment: &str) -> &str {
    segment.split('(').next().unwrap_or(segment)
}

async fn get(
    State(inner): State<Arc<Inner>>,
    Path(segment): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&inner, &headers, &Method::GET, entity_of(&segment)) {
        return r;
    }
    let env = inner.env.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((entity, key)) = parse_key(&segment) {
        return match env
            .entities
            .get(&entity)
            .and_then(|recs| recs.iter().find(|r| matches(r, &key)))
        {
            Some(r) => axum::Json(Value::Object(r.clone())).into_response(),
            None => fo_error(404, &format!("No {entity} matches the key")),
        };
    }
    if key_fields(&segment).is_none() {
        return fo_error(
            404,
            &format!("Resource not found for the segment '{segment}'."),
        );
    }
    let pairs = match q.get("$filter").map(|f| parse_filter(f)) {
        Some(Some(p)) => p,
        Some(None) => return fo_error(400, "The $filter is not supported by this simulator"),
        None => Vec::new(),
    };
    let cross_company = q.get("cross-company").is_some_and(|v| v == "true");
    let top = q
        .get("$top")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(10_000);
    let value: Vec<Value> = env
        .entities
        .get(&segment)
        .map(|recs| {
            recs.iter()
                .filter(|r| {
                    cross_company
                        || r.get("dataAreaId").and_then(Value::as_str)
                            == Some(inner.default_company.as_str())
                })
                .filter(|r| matches(r, &pairs))
                .take(top)
                .cloned()
                .map(Value::Object)
                .collect()
        })
        .unwrap_or_default();
    axum::Json(json!({ "@odata.context": format!("/data/$metadata#{segment}"), "value": value }))
        .into_response()
}

fn body_object(body: &str) -> Result<Map<String, Value>, Box<Response>> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(Box::new(fo_error(
            400,
            "The request body is not a JSON object",
        ))),
    }
}

async fn post(
    State(inner): State<Arc<Inner>>,
    Path(entity): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(r) = gate(&inner, &headers, &Method::POST, &entity) {
        return r;
    }
    let Some(keys) = key_fields(&entity) else {
        return fo_error(
            404,
            &format!("Resource not found for the segment '{entity}'."),
        );
    };
    let mut rec = match body_object(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let mut env = inner.env.lock().unwrap_or_else(|p| p.into_inner());
    let area = rec
        .get("dataAreaId")
        .and_then(Value::as_str)
        .unwrap_or(&inner.default_company)
        .to_ascii_lowercase();
    rec.insert("dataAreaId".into(), json!(area));
    // Numbers from the legal entity's number sequences.
    for field in ["SalesOrderNumber", "SalesQuotationNumber", "InventoryLotId"] {
        let assigned = match (entity.as_str(), field) {
            ("SalesOrderHeadersV2", "SalesOrderNumber") => Some(("SO", 730u64, 6usize)),
            ("SalesQuotationHeadersV2", "SalesQuotationNumber") => Some(("SQ", 100, 6)),
            ("SalesOrderLines" | "SalesQuotationLines", "InventoryLotId") => {
                Some(("LOT", 5_000, 7))
            }
            _ => None,
        };
        if let Some((seq, start, width)) = assigned {
            if rec
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                let n = env
                    .sequences
                    .entry(format!("{area}/{seq}"))
                    .or_insert(start);
                *n += 1;
                let number = if seq == "SO" {
                    format!("{:0width$}", n)
                } else {
                    format!("{seq}-{:0width$}", n)
                };
                rec.insert(field.into(), json!(number));
            }
        }
    }
    let mut key = vec![("dataAreaId".to_string(), area.clone())];
    for k in keys {
        match rec.get(*k) {
            Some(Value::String(s)) if !s.is_empty() => key.push((k.to_string(), s.clone())),
            Some(Value::Number(n)) => key.push((k.to_string(), n.to_string())),
            _ => {
                env.log.push(format!("POST {entity} 400"));
                return fo_error(400, &format!("Write failed for table row of type '{entity}'. Infolog: Field '{k}' must be filled in."));
            }
        }
    }
    if env
        .entities
        .get(&entity)
        .is_some_and(|recs| recs.iter().any(|r| matches(r, &key)))
    {
        env.log.push(format!("POST {entity} 400"));
        return fo_error(400, &format!("Write failed for table row of type '{entity}'. Infolog: The record already exists."));
    }
    if entity == "CustomersV3"
        && rec
            .get("CustomerGroupId")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    {
        env.log.push(format!("POST {entity} 400"));
        return fo_error(400, "Write failed for table row of type 'CustCustomerV3Entity'. Infolog: Customer group must be filled in.");
    }
    if let Some((header, number)) = match entity.as_str() {
        "SalesOrderLines" => Some(("SalesOrderHeadersV2", "SalesOrderNumber")),
        "SalesQuotationLines" => Some(("SalesQuotationHeadersV2", "SalesQuotationNumber")),
        _ => None,
    } {
        let parent = rec.get(number).and_then(Value::as_str).unwrap_or("");
        let exists = env.entities.get(header).is_some_and(|recs| {
            recs.iter().any(|r| {
                matches(
                    r,
                    &[
                        ("dataAreaId".into(), area.clone()),
                        (number.into(), parent.to_string()),
                    ],
                )
            })
        });
        if !exists {
            env.log.push(format!("POST {entity} 400"));
            return fo_error(400, &format!("Write failed for table row of type '{entity}'. Infolog: {number} {parent} does not exist."));
        }
    }
    env.etags += 1;
    rec.insert("@odata.etag".into(), json!(format!("W/\"{}\"", env.etags)));
    env.entities
        .entry(entity.clone())
        .or_default()
        .push(rec.clone());
    env.log.push(format!("POST {entity} 201"));
    (StatusCode::CREATED, axum::Json(Value::Object(rec))).into_response()
}

/// The index of the record a key addresses, after the If-Match check.
fn addressed(
    env: &Env,
    segment: &str,
    headers: &HeaderMap,
) -> Result<(String, usize), Box<Response>> {
    let Some((entity, key)) = parse_key(segment) else {
        return Err(Box::new(fo_error(400, "A key is required")));
    };
    if key_fields(&entity).is_none() {
        return Err(Box::new(fo_error(
            404,
            &format!("Resource not found for the segment '{entity}'."),
        )));
    }
    let Some(i) = env
        .entities
        .get(&entity)
        .and_then(|recs| recs.iter().position(|r| matches(r, &key)))
    else {
        return Err(Box::new(fo_error(
            404,
            &format!("No {entity} matches the key"),
        )));
    };
    let etag = env.entities[&entity][i]
        .get("@odata.etag")
        .and_then(Value::as_str)
        .unwrap_or("");
    match headers.get("if-match").and_then(|v| v.to_str().ok()) {
        Some("*") | None => {}
        Some(given) if given == etag => {}
        Some(_) => {
            return Err(Box::new(fo_error(
                412,
                "The record was changed by another user since it was read",
            )))
        }
    }
    Ok((entity, i))
}

async fn patch(
    State(inner): State<Arc<Inner>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(r) = gate(&inner, &headers, &Method::PATCH, entity_of(&segment)) {
        return r;
    }
    let fields = match body_object(&body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let mut env = inner.env.lock().unwrap_or_else(|p| p.into_inner());
    let (entity, i) = match addressed(&env, &segment, &headers) {
        Ok(x) => x,
        Err(r) => {
            env.log.push(format!(
                "PATCH {} {}",
                entity_of(&segment),
                r.status().as_u16()
            ));
            return *r;
        }
    };
    env.etags += 1;
    let etag = format!("W/\"{}\"", env.etags);
    if let Some(rec) = env.entities.get_mut(&entity).and_then(|r| r.get_mut(i)) {
        for (k, v) in fields {
            if k != "dataAreaId" {
                rec.insert(k, v);
            }
        }
        rec.insert("@odata.etag".into(), json!(etag));
    }
    env.log.push(format!("PATCH {entity} 204"));
    StatusCode::NO_CONTENT.into_response()
}

async fn delete(
    State(inner): State<Arc<Inner>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&inner, &headers, &Method::DELETE, entity_of(&segment)) {
        return r;
    }
    let mut env = inner.env.lock().unwrap_or_else(|p| p.into_inner());
    let (entity, i) = match addressed(&env, &segment, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Some(recs) = env.entities.get_mut(&entity) {
        recs.remove(i);
    }
    env.log.push(format!("DELETE {entity} 204"));
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_filters_are_read_as_f_and_o_writes_them() {
        assert_eq!(
            parse_key("CustomersV3(dataAreaId='usmf',CustomerAccount='O''Brien #1')"),
            Some((
                "CustomersV3".into(),
                vec![
                    ("dataAreaId".into(), "usmf".into()),
                    ("CustomerAccount".into(), "O'Brien #1".into())
                ]
            ))
        );
        assert_eq!(parse_key("CustomersV3(dataAreaId='usmf'"), None);
        assert_eq!(
            parse_filter("dataAreaId eq 'usmf' and CustomersOrderReference eq 'ORD-1'"),
            Some(vec![
                ("dataAreaId".into(), "usmf".into()),
                ("CustomersOrderReference".into(), "ORD-1".into())
            ])
        );
        assert_eq!(parse_filter("startswith(Name, 'x')"), None);
    }
}
