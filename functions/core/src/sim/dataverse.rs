//! A simulated Dataverse environment: Web API (`/api/data/v9.2/`) with upsert by
//! alternate key, `If-Match: *` / `If-None-Match: *`, `@odata.bind` lookups by key,
//! `$expand` of order and quote lines, and service-endpoint webhooks
//! (RemoteExecutionContext with typed values, images and `/Date(ms)/` dates) for the
//! tables a customer would register steps on.

use super::{fault_response, guid, odata_error, take_fault, Fault, Hook, Outbox};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

struct SetInfo {
    logical: &'static str,
    id_col: &'static str,
    key_col: Option<&'static str>,
    notify: bool,
}

fn info(set: &str) -> Option<SetInfo> {
    let (logical, id_col, key_col, notify) = match set {
        "accounts" => ("account", "accountid", Some("accountnumber"), true),
        "contacts" => ("contact", "contactid", None, true),
        "products" => ("product", "productid", Some("productnumber"), false),
        "quotes" => ("quote", "quoteid", Some("quotenumber"), true),
        "quotedetails" => ("quotedetail", "quotedetailid", None, false),
        "salesorders" => ("salesorder", "salesorderid", Some("ordernumber"), true),
        "salesorderdetails" => ("salesorderdetail", "salesorderdetailid", None, false),
        "invoices" => ("invoice", "invoiceid", Some("invoicenumber"), false),
        "p2c_payments" => (
            "p2c_payment",
            "p2c_paymentid",
            Some("p2c_paymentnumber"),
            false,
        ),
        "productpricelevels" => ("productpricelevel", "productpricelevelid", None, false),
        "uoms" => ("uom", "uomid", None, false),
        "uomschedules" => ("uomschedule", "uomscheduleid", None, false),
        "pricelevels" => ("pricelevel", "pricelevelid", None, false),
        "transactioncurrencies" => ("transactioncurrency", "transactioncurrencyid", None, false),
        _ => return None,
    };
    Some(SetInfo {
        logical,
        id_col,
        key_col,
        notify,
    })
}

const MONEY: &[&str] = &[
    "creditlimit",
    "totalamount",
    "totaltax",
    "totalamountlessfreight",
    "priceperunit",
    "price",
    "amount",
    "manualdiscountamount",
    "p2c_balance",
    "p2c_overdueamount",
    "p2c_remainingamount",
    "p2c_rebateaccrual",
    "p2c_amount",
];
const OPTIONS: &[&str] = &["statecode", "statuscode", "paymenttermscode"];
const DATES: &[&str] = &[
    "createdon",
    "modifiedon",
    "requestdeliveryby",
    "effectiveto",
];

/// Where the simulator sends its webhooks, and as whom p2c writes.
#[derive(Debug, Clone)]
pub struct DataverseHookConfig {
    pub url: String,
    pub header: String,
    pub secret: String,
    /// p2c's application user: writes through the API are made as this user.
    pub integration_user: String,
}

struct DvState {
    tables: BTreeMap<String, BTreeMap<String, Map<String, Value>>>,
    seq: u64,
    clock_ms: i64,
    log: Vec<String>,
    creates: BTreeMap<String, u64>,
}

pub(crate) struct DvInner {
    state: Mutex<DvState>,
    faults: Mutex<VecDeque<Fault>>,
    pub(crate) outbox: Outbox,
    hook: Mutex<Option<DataverseHookConfig>>,
    org_id: String,
    user: String,
}

/// A running simulated Dataverse.
#[derive(Clone)]
pub struct SimDataverse {
    inner: Arc<DvInner>,
    /// `http://127.0.0.1:<port>`
    pub url: String,
}

/// The seeded US dollar currency (`transactioncurrencies`).
pub const USD: &str = "083081e1-0737-eb11-bf68-0022489b563d";
/// The seeded primary unit (`uoms`), the first of the default unit group.
pub const PRIMARY_UNIT: &str = "5f8d9c10-0000-4000-8000-000000000100";

/// The user who makes changes through the simulated UI.
pub const HUMAN_USER: &str = "d89254ff-9438-ef11-a315-000d3a5a54dc";

impl SimDataverse {
    /// Starts the simulator with a price list, currencies and units.
    pub async fn start(price_list_id: &str) -> std::io::Result<Self> {
        let inner = Arc::new(DvInner {
            state: Mutex::new(DvState {
                tables: BTreeMap::new(),
                seq: 0,
                clock_ms: chrono::Utc::now().timestamp_millis(),
                log: Vec::new(),
                creates: BTreeMap::new(),
            }),
            faults: Mutex::new(VecDeque::new()),
            outbox: Outbox::default(),
            hook: Mutex::new(None),
            org_id: "6042beb1-a93a-ef11-8e4b-00224802c699".into(),
            user: HUMAN_USER.into(),
        });
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let (url, _task) = super::serve(router).await?;
        let sim = Self { inner, url };
        sim.seed(price_list_id);
        Ok(sim)
    }

    /// The Web API base URL for the connector.
    pub fn api_base(&self) -> String {
        format!("{}/api/data/v9.2", self.url)
    }

    pub fn set_webhook(&self, cfg: DataverseHookConfig) {
        if let Ok(mut h) = self.inner.hook.lock() {
            *h = Some(cfg);
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    pub fn inject(&self, fault: Fault) {
        if let Ok(mut f) = self.inner.faults.lock() {
            f.push_back(fault);
        }
    }

    fn seed(&self, price_list_id: &str) {
        let Ok(mut st) = self.inner.state.lock() else {
            return;
        };
        let mut put = |set: &str, id: &str, rec: Value| {
            if let Value::Object(m) = rec {
                st.tables
                    .entry(set.into())
                    .or_default()
                    .insert(id.into(), m);
            }
        };
        let sched = "5f8d9c10-0000-4000-8000-000000000001";
        put(
            "uomschedules",
            sched,
            json!({"uomscheduleid": sched, "name": "Default Unit"}),
        );
        for (i, name) in ["Primary Unit", "Box", "Hour"].iter().enumerate() {
            let id = format!("5f8d9c10-0000-4000-8000-00000000010{i}");
            put(
                "uoms",
                &id,
                json!({"uomid": id, "name": name, "_uomscheduleid_value": sched}),
            );
        }
        put(
            "pricelevels",
            price_list_id,
            json!({"pricelevelid": price_list_id, "name": "Retail USD"}),
        );
        put(
            "transactioncurrencies",
            USD,
            json!({"transactioncurrencyid": USD, "currencyname": "US Dollar", "isocurrencycode": "USD"}),
        );
    }

    /// Creates a record as a user would in the app (fires a Create webhook).
    pub fn create(&self, set: &str, body: Value) -> Result<String, String> {
        let user = self.inner.user.clone();
        write(&self.inner, set, None, body, &user, WriteMode::Create, true).map(|(id, _, _)| id)
    }

    /// Creates a document (quote or order) with its lines, then fires one Create webhook
    /// for the header (as Dataverse does once the user saves).
    pub fn create_document(
        &self,
        set: &str,
        header: Value,
        lines: Vec<Value>,
    ) -> Result<String, String> {
        let user = self.inner.user.clone();
        let (id, _, _) = write(
            &self.inner,
            set,
            None,
            header,
            &user,
            WriteMode::Create,
            false,
        )?;
        let (child, parent_bind) = match set {
            "salesorders" => ("salesorderdetails", "salesorderid@odata.bind"),
            "quotes" => ("quotedetails", "quoteid@odata.bind"),
            _ => return Err(format!("{set} has no lines")),
        };
        for mut l in lines {
            l[parent_bind] = json!(format!("/{set}({id})"));
            write(&self.inner, child, None, l, &user, WriteMode::Create, false)?;
        }
        notify(&self.inner, set, &id, None, "Create", &user);
        Ok(id)
    }

    /// Updates a record as a user would (fires an Update webhook).
    pub fn update(&self, set: &str, id: &str, body: Value) -> Result<(), String> {
        let user = self.inner.user.clone();
        write(
            &self.inner,
            set,
            Some(id.to_string()),
            body,
            &user,
            WriteMode::Update,
            true,
        )
        .map(|_| ())
    }

    /// A record by its alternate key, in Web API form.
    pub fn find(&self, set: &str, key_col: &str, value: &str) -> Option<Map<String, Value>> {
        let st = self.inner.state.lock().ok()?;
        st.tables
            .get(set)?
            .values()
            .find(|r| r.get(key_col).and_then(Value::as_str) == Some(value))
            .cloned()
    }

    pub fn records(&self, set: &str) -> Vec<Map<String, Value>> {
        self.inner
            .state
            .lock()
            .map(|st| {
                st.tables
                    .get(set)
                    .map(|t| t.values().cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// How many records of `set` were created through the API (exactly-once checks).
    pub fn creates(&self, set: &str) -> u64 {
        self.inner
            .state
            .lock()
            .map(|st| st.creates.get(set).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Every API write so far, `PATCH accounts(accountnumber='…') → 204`.
    pub fn log(&self) -> Vec<String> {
        self.inner
            .state
            .lock()
            .map(|st| st.log.clone())
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum WriteMode {
    Upsert,
    Create,
    Update,
}

/// Parses `set(keyspec)` into the set and `(column, value)` pairs (a bare GUID → id).
fn parse_target(seg: &str) -> Option<(String, Vec<(String, String)>)> {
    let (set, rest) = seg.split_once('(')?;
    let spec = rest.strip_suffix(')')?;
    let mut pairs = Vec::new();
    for part in split_top(spec) {
        match part.split_once('=') {
            Some((k, v)) => pairs.push((k.trim().to_string(), unquote(v.trim()))),
            None => pairs.push(("@id".into(), unquote(part.trim()))),
        }
    }
    Some((set.to_string(), pairs))
}

fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn unquote(v: &str) -> String {
    v.strip_prefix('\'')
        .and_then(|x| x.strip_suffix('\''))
        .map(|x| x.replace("''", "'"))
        .unwrap_or_else(|| v.to_string())
}

fn find_id(st: &DvState, set: &str, pairs: &[(String, String)]) -> Option<String> {
    info(set)?;
    let table = st.tables.get(set)?;
    if let [(k, v)] = pairs {
        if k == "@id" {
            let id = v.to_ascii_lowercase();
            return table.contains_key(&id).then_some(id);
        }
    }
    table
        .iter()
        .find(|(_, r)| {
            pairs.iter().all(|(k, v)| {
                r.get(k)
                    .and_then(Value::as_str)
                    .map(|x| x.eq_ignore_ascii_case(v))
                    .unwrap_or(false)
            })
        })
        .map(|(id, _)| id.clone())
}

/// Resolves `/set(keyspec)` to (logical name, id).
fn resolve_bind(st: &DvState, target: &str) -> Result<(String, String), String> {
    let (set, pairs) = parse_target(target.trim_start_matches('/'))
        .ok_or_else(|| format!("`{target}` is not an entity reference"))?;
    let i = info(&set).ok_or_else(|| format!("Resource not found for the segment '{set}'"))?;
    let id = find_id(st, &set, &pairs).ok_or_else(|| {
        format!(
            "A record with the specified key values does not exist in {} entity",
            i.logical
        )
    })?;
    Ok((i.logical.to_string(), id))
}

/// The one write path for the API and the simulated UI. Returns (id, created, record).
fn write(
    inner: &DvInner,
    set: &str,
    target: Option<String>,
    body: Value,
    user: &str,
    mode: WriteMode,
    fire: bool,
) -> Result<(String, bool, Map<String, Value>), String> {
    let si = info(set).ok_or_else(|| format!("Resource not found for the segment '{set}'"))?;
    let body = body
        .as_object()
        .cloned()
        .ok_or("the body is not a JSON object")?;
    let (id, created, before, after) = {
        let mut st = inner.state.lock().map_err(|_| "lock")?;
        let (key_pairs, existing) = match &target {
            Some(t) if t.contains('(') => {
                let (_, pairs) = parse_target(t).ok_or("bad key")?;
                let id = find_id(&st, set, &pairs);
                (pairs, id)
            }
            Some(id) => (
                Vec::new(),
                st.tables
                    .get(set)
                    .and_then(|tb| tb.contains_key(id).then(|| id.clone())),
            ),
            None => (Vec::new(), None),
        };
        if mode == WriteMode::Update && existing.is_none() {
            return Err(format!(
                "404:{} With Id = {} Does Not Exist",
                si.logical,
                target.unwrap_or_default()
            ));
        }
        let mut values = Map::new();
        for (k, v) in &body {
            if let Some(nav) = k.strip_suffix("@odata.bind") {
                let col = nav
                    .trim_end_matches("_account")
                    .trim_end_matches("_contact");
                let (logical, rid) = resolve_bind(&st, v.as_str().unwrap_or_default())?;
                values.insert(format!("_{col}_value"), Value::String(rid));
                values.insert(
                    format!("_{col}_value@Microsoft.Dynamics.CRM.lookuplogicalname"),
                    Value::String(logical),
                );
            } else {
                values.insert(k.clone(), v.clone());
            }
        }
        st.seq += 1;
        st.clock_ms += 1000;
        let now = st.clock_ms;
        let seq = st.seq;
        let modified = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let table = st.tables.entry(set.to_string()).or_default();
        let (id, created, before) = match existing {
            Some(id) => (id.clone(), false, table.get(&id).cloned()),
            None => (guid(0x9e0b_7c51, seq), true, None),
        };
        let rec = table.entry(id.clone()).or_default();
        if created {
            rec.insert(si.id_col.into(), Value::String(id.clone()));
            for (k, v) in &key_pairs {
                if k != "@id" {
                    rec.insert(k.clone(), Value::String(v.clone()));
                }
            }
            rec.insert("createdon".into(), Value::String(modified.clone()));
            if let Some(kc) = si.key_col {
                if !rec.contains_key(kc) && !values.contains_key(kc) && set == "salesorders" {
                    rec.insert(kc.into(), Value::String(format!("ORD-{seq:05}")));
                }
            }
            if !values.contains_key("statecode")
                && ["salesorders", "quotes", "accounts"].contains(&set)
            {
                rec.insert("statecode".into(), json!(0));
            }
        }
        for (k, v) in values {
            // Key columns in the body do not change an existing record's key.
            if !created && key_pairs.iter().any(|(kc, _)| kc == &k) {
                continue;
            }
            rec.insert(k, v);
        }
        rec.insert("modifiedon".into(), Value::String(modified));
        rec.insert("versionnumber".into(), json!(5_948_000 + seq));
        let after = rec.clone();
        if created {
            *st.creates.entry(set.to_string()).or_default() += 1;
        }
        (id, created, before, after)
    };
    if fire && si.notify {
        notify(
            inner,
            set,
            &id,
            before.as_ref(),
            if created { "Create" } else { "Update" },
            user,
        );
    }
    Ok((id, created, after))
}

fn typed(k: &str, v: &Value, rec: &Map<String, Value>) -> Option<(String, Value)> {
    if k.contains('@') {
        return None;
    }
    if let Some(col) = k.strip_prefix('_').and_then(|x| x.strip_suffix("_value")) {
        let logical = rec
            .get(&format!("{k}@Microsoft.Dynamics.CRM.lookuplogicalname"))
            .cloned()
            .unwrap_or(Value::Null);
        let r = if v.is_null() {
            Value::Null
        } else {
            json!({"__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts", "Id": v, "KeyAttributes": [], "LogicalName": logical, "Name": null, "RowVersion": null})
        };
        return Some((col.to_string(), r));
    }
    let t = if v.is_null() {
        Value::Null
    } else if MONEY.contains(&k) {
        json!({"__type": "Money:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": v})
    } else if OPTIONS.contains(&k) {
        json!({"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": v})
    } else if DATES.contains(&k) {
        match v
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        {
            Some(t) => Value::String(format!("/Date({})/", t.timestamp_millis())),
            None => v.clone(),
        }
    } else {
        v.clone()
    };
    Some((k.to_string(), t))
}

fn attributes(rec: &Map<String, Value>, only: Option<&Map<String, Value>>) -> Value {
    Value::Array(
        rec.iter()
            .filter(|(k, _)| {
                only.is_none_or(|o| {
                    o.get(*k) != rec.get(*k) || k.ends_with("id") || *k == "modifiedon"
                })
            })
            .filter_map(|(k, v)| typed(k, v, rec))
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

/// Queues the service-endpoint webhook for a change.
fn notify(
    inner: &DvInner,
    set: &str,
    id: &str,
    before: Option<&Map<String, Value>>,
    message: &str,
    user: &str,
) {
    let Some(cfg) = inner.hook.lock().ok().and_then(|h| h.clone()) else {
        return;
    };
    let Some(si) = info(set) else { return };
    let Some(after) = inner
        .state
        .lock()
        .ok()
        .and_then(|st| st.tables.get(set).and_then(|t| t.get(id)).cloned())
    else {
        return;
    };
    let user = if user == "api" {
        cfg.integration_user.clone()
    } else {
        user.to_string()
    };
    let op = guid(
        0x1a14_c3ec,
        after
            .get("versionnumber")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    );
    let entity = |attrs: Value, rv: Value| {
        json!({
            "__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
            "Attributes": attrs, "EntityState": null, "FormattedValues": [], "Id": id, "KeyAttributes": [],
            "LogicalName": si.logical, "RelatedEntities": [], "RowVersion": rv,
        })
    };
    let rv = after
        .get("versionnumber")
        .map(|v| Value::String(v.to_string()))
        .unwrap_or(Value::Null);
    let target = entity(attributes(&after, before), rv.clone());
    let mut ctx = json!({
        "BusinessUnitId": "a3c20b02-4e38-ef11-a315-000d3a5a54dc",
        "CorrelationId": guid(0x6f2b_1c0e, 1),
        "Depth": 1,
        "InitiatingUserId": user,
        "InputParameters": [{"key": "Target", "value": target}],
        "IsExecutingOffline": false, "IsInTransaction": false, "IsOfflinePlayback": false, "IsolationMode": 1,
        "MessageName": message, "Mode": 1,
        "OperationCreatedOn": format!("/Date({}+0000)/", chrono::Utc::now().timestamp_millis()),
        "OperationId": op,
        "OrganizationId": inner.org_id, "OrganizationName": "unqsim",
        "OutputParameters": if message == "Create" { json!([{"key": "id", "value": id}]) } else { json!([]) },
        "OwningExtension": {"Id": "8ff4bda5-9d4e-ef11-bfe3-00224802dbb1", "KeyAttributes": [], "LogicalName": "sdkmessageprocessingstep", "Name": null, "RowVersion": null},
        "ParentContext": null,
        "PostEntityImages": [{"key": "PostImage", "value": entity(attributes(&after, None), rv)}],
        "PreEntityImages": [],
        "PrimaryEntityId": id, "PrimaryEntityName": si.logical,
        "RequestId": op, "SecondaryEntityName": "none", "SharedVariables": [], "Stage": 40, "UserId": user,
    });
    if let Some(b) = before {
        ctx["PreEntityImages"] =
            json!([{"key": "PreImage", "value": entity(attributes(b, None), Value::Null)}]);
    }
    let label = format!(
        "Dataverse webhook: {message} {} {}",
        si.logical,
        si.key_col
            .and_then(|k| after.get(k))
            .and_then(Value::as_str)
            .unwrap_or(id)
    );
    inner.outbox.push(Hook {
        url: cfg.url.clone(),
        headers: vec![
            (cfg.header.clone(), cfg.secret.clone()),
            (
                "x-ms-dynamics-organization".into(),
                "unqsim.crm.dynamics.com".into(),
            ),
            ("x-ms-dynamics-entity-name".into(), si.logical.into()),
            ("x-ms-dynamics-request-name".into(), message.into()),
            ("x-ms-correlation-request-id".into(), guid(0x6f2b_1c0e, 1)),
        ],
        body: ctx,
        label,
    });
}

fn with_expand(st: &DvState, set: &str, id: &str, expand: Option<&str>) -> Option<Value> {
    let mut rec = st.tables.get(set)?.get(id)?.clone();
    if let Some(e) = expand {
        let (child, parent_col) = match e {
            "order_details" => ("salesorderdetails", "_salesorderid_value"),
            "quote_details" => ("quotedetails", "_quoteid_value"),
            _ => return Some(Value::Object(rec)),
        };
        let lines: Vec<Value> = st
            .tables
            .get(child)
            .map(|t| {
                t.values()
                    .filter(|l| l.get(parent_col).and_then(Value::as_str) == Some(id))
                    .map(|l| Value::Object(l.clone()))
                    .collect()
            })
            .unwrap_or_default();
        rec.insert(e.to_string(), Value::Array(lines));
    }
    rec.insert(
        "@odata.etag".into(),
        Value::String(format!(
            "W/\"{}\"",
            rec.get("versionnumber").cloned().unwrap_or(Value::Null)
        )),
    );
    Some(Value::Object(rec))
}

async fn handle(
    State(inner): State<Arc<DvInner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_start_matches("/api/data/v9.2/").to_string();
    let path = crate::inbound::percent_decode(&path);
    if let Some(f) = take_fault(&inner.faults, method.as_str(), &path) {
        return fault_response(&f);
    }
    let query = crate::inbound::WebhookRequest::parse_query(uri.query().unwrap_or(""));
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let return_repr = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.contains("return=representation"));
    match method {
        Method::GET => {
            let Ok(st) = inner.state.lock() else {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            };
            if let Some((set, pairs)) = parse_target(&path) {
                let Some(id) = find_id(&st, &set, &pairs) else {
                    return odata_error(
                        404,
                        "0x80040217",
                        &format!(
                            "{set} With Id = {} Does Not Exist",
                            pairs.first().map(|p| p.1.clone()).unwrap_or_default()
                        ),
                    );
                };
                return match with_expand(&st, &set, &id, q("$expand").as_deref()) {
                    Some(v) => axum::Json(v).into_response(),
                    None => odata_error(404, "0x80040217", "Does Not Exist"),
                };
            }
            // Collections: only `name eq '…'` filters are needed (units).
            let filter = q("$filter").unwrap_or_default();
            let wanted = filter.strip_prefix("name eq ").map(unquote);
            let items: Vec<Value> = st
                .tables
                .get(&path)
                .map(|t| {
                    t.values()
                        .filter(|r| {
                            wanted
                                .as_ref()
                                .is_none_or(|w| r.get("name").and_then(Value::as_str) == Some(w))
                        })
                        .map(|r| Value::Object(r.clone()))
                        .collect()
                })
                .unwrap_or_default();
            axum::Json(json!({"value": items})).into_response()
        }
        Method::PATCH => {
            let Some((set, _)) = parse_target(&path) else {
                return odata_error(400, "0x80060888", "Bad Request - Error in query syntax.");
            };
            let Ok(body_json) = serde_json::from_slice::<Value>(&body) else {
                return odata_error(400, "0x80040333", "Invalid JSON");
            };
            let exists = inner
                .state
                .lock()
                .ok()
                .and_then(|st| parse_target(&path).and_then(|(s, p)| find_id(&st, &s, &p)))
                .is_some();
            let if_match = headers.get("if-match").is_some();
            let if_none = headers.get("if-none-match").is_some();
            if if_match && !exists {
                return odata_error(
                    404,
                    "0x80040217",
                    &format!("{} With Id = {} Does Not Exist", set, path),
                );
            }
            if if_none && exists {
                return odata_error(
                    412,
                    "0x80060892",
                    "A record with matching key values already exists.",
                );
            }
            match write(
                &inner,
                &set,
                Some(path.clone()),
                body_json,
                "api",
                WriteMode::Upsert,
                true,
            ) {
                Ok((id, created, rec)) => {
                    let status = if created {
                        201
                    } else if return_repr {
                        200
                    } else {
                        204
                    };
                    if let Ok(mut st) = inner.state.lock() {
                        st.log.push(format!("PATCH {path} → {status}"));
                    }
                    if return_repr {
                        (
                            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                            axum::Json(Value::Object(rec)),
                        )
                            .into_response()
                    } else {
                        let mut r = StatusCode::NO_CONTENT.into_response();
                        if let Ok(v) = axum::http::HeaderValue::from_str(&format!(
                            "{}/{set}({id})",
                            "https://sim.crm.dynamics.com/api/data/v9.2"
                        )) {
                            r.headers_mut().insert("odata-entityid", v);
                        }
                        r
                    }
                }
                Err(e) if e.starts_with("404:") => odata_error(404, "0x80040217", &e[4..]),
                Err(e) => odata_error(400, "0x80060891", &e),
            }
        }
        _ => odata_error(405, "0x80060888", "Method not allowed"),
    }
}

/// The `n`th distinct change built from a sample account webhook
/// (`tests/fixtures/dataverse_account_update.json`): its own operation id, record id and
/// account number, signed with `key` in `x-p2c-key`. For benchmarks and load runs.
pub fn numbered_account_webhook(
    sample: &Value,
    n: u64,
    key: &str,
) -> crate::inbound::WebhookRequest {
    numbered_account_change(sample, n, 0, key)
}

/// A later change to the `n`th account of [`numbered_account_webhook`]: revision `rev`
/// renames it, with a newer row version and modification time and its own operation id.
pub fn numbered_account_change(
    sample: &Value,
    n: u64,
    rev: u64,
    key: &str,
) -> crate::inbound::WebhookRequest {
    let mut body = sample.clone();
    body["OperationId"] = json!(format!("00000000-{rev:04x}-4000-8000-{n:012x}"));
    body["PrimaryEntityId"] = json!(format!("10000000-0000-4000-8000-{n:012x}"));
    let target = &mut body["InputParameters"][0]["value"];
    target["Attributes"][0]["value"] = json!(format!("10000000-0000-4000-8000-{n:012x}"));
    if rev > 0 {
        let name = format!("Fabrikam Industrial Ltd (revision {rev})");
        target["Attributes"][1]["value"] = json!(name);
        body["PostEntityImages"][0]["value"]["Attributes"][2]["value"] = json!(name);
        let target = &mut body["InputParameters"][0]["value"];
        if let Some(v) = target["RowVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
        {
            target["RowVersion"] = json!((v + rev).to_string());
        }
        target["Attributes"][5]["value"] =
            json!(format!("/Date({})/", 1_778_749_965_000u64 + rev * 1000));
    }
    body["PostEntityImages"][0]["value"]["Attributes"][1]["value"] = json!(format!("ACC-{n:08}"));
    crate::inbound::WebhookRequest {
        method: "POST".into(),
        path: "/webhooks/dataverse".into(),
        query: vec![],
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-p2c-key".into(), key.to_string()),
        ],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}
