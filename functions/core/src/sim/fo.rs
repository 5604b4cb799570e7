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
//!
//! Once [`SimFinOps::set_webhook`] is called, the environment also raises events into an
//! [`Outbox`], as an HTTPS business-event endpoint and the Power Platform's data events
//! deliver them:
//!
//! - a **data event** (a Dataverse `RemoteExecutionContext` naming the entity's virtual
//!   table, `mserp_…entity`, with the record's keys) for every create or update of a
//!   customer, released product, sales quotation or sales order header — made through OData
//!   (by p2c's application user, so p2c recognises its own writes) or by a user action below;
//! - **business events** in the common envelope: `SalesInvoicePostedBusinessEvent` (its
//!   documented contract) when an order is invoiced, and `CustPaymentPostedBusinessEvent`
//!   when a payment is posted (that class name and its contract are not confirmed by
//!   Microsoft's documentation; see `inbound::fo`).
//!
//! User actions stand in for F&O's own processes: a credit limit set, a product released,
//! the *Calculate sales totals* batch (totals and a 10 % sales tax on quotations and
//! orders), picking, invoicing and a customer payment. A customer's open transactions
//! (`CustomerOpenTransactions`: invoices not yet settled, with their remaining amounts and
//! due dates) are kept as those post, which is where p2c reads balances from.

use super::{take_fault, Fault, Hook, Outbox};
use crate::json::{as_decimal, decimal_number};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
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
        "CustomerOpenTransactions" => &["Voucher"],
        "FreeTextInvoiceHeaders" => &["InvoiceIdentifier"],
        "FreeTextInvoiceLines" => &["InvoiceIdentifier", "LineNumber"],
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
    /// Business events' `ControlNumber`s and the events' clock.
    control: u64,
    clock_ms: i64,
}

/// Where the environment's events go: p2c's `/webhooks/fo` with its key, and the object id
/// of p2c's application user (the initiating user of everything written through OData).
#[derive(Debug, Clone)]
pub struct FoHookConfig {
    pub url: String,
    pub header: String,
    pub key: String,
    pub integration_user: String,
}

/// The initiating user of the simulated people's and batch jobs' changes.
const USER: &str = "5b0c3e2a-7d41-4f8e-b2a9-1e6f0c9d4a77";

/// The entities that raise data events: (entity, virtual table, key field).
const DATA_EVENTS: [(&str, &str, &str); 4] = [
    (
        "CustomersV3",
        "mserp_custcustomerv3entity",
        "CustomerAccount",
    ),
    (
        "ReleasedProductsV2",
        "mserp_ecoresreleasedproductv2entity",
        "ItemNumber",
    ),
    (
        "SalesQuotationHeadersV2",
        "mserp_salesquotationheaderv2entity",
        "SalesQuotationNumber",
    ),
    (
        "SalesOrderHeadersV2",
        "mserp_salesorderheaderv2entity",
        "SalesOrderNumber",
    ),
];

struct Inner {
    env: Mutex<Env>,
    faults: Mutex<VecDeque<Fault>>,
    default_company: String,
    outbox: Outbox,
    hook: Mutex<Option<FoHookConfig>>,
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
            env: Mutex::new(Env {
                // The environment's clock starts now (whole seconds), so the dates it posts
                // (invoice and due dates) are today's, as p2c's own "today" is.
                clock_ms: chrono::Utc::now().timestamp() * 1000,
                ..Env::default()
            }),
            faults: Mutex::new(VecDeque::new()),
            default_company: default_company.to_ascii_lowercase(),
            outbox: Outbox::default(),
            hook: Mutex::new(None),
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

    /// From now on, raise data events and business events into the outbox for p2c.
    pub fn set_webhook(&self, cfg: FoHookConfig) {
        if let Ok(mut h) = self.inner.hook.lock() {
            *h = Some(cfg);
        }
    }

    /// The events the environment owes p2c.
    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// The default legal entity.
    pub fn company(&self) -> &str {
        &self.inner.default_company
    }

    /// The record of `entity` in the default legal entity whose `field` is `value`.
    pub fn find_one(&self, entity: &str, field: &str, value: &str) -> Option<Map<String, Value>> {
        let area = self.inner.default_company.clone();
        self.find(entity, field, value)
            .into_iter()
            .find(|r| r.get("dataAreaId").and_then(Value::as_str) == Some(area.as_str()))
    }

    fn env(&self) -> std::sync::MutexGuard<'_, Env> {
        self.inner.env.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes fields of the default legal entity's record of `entity` whose `field` is
    /// `value`, raising no data event (a process whose data events are not enabled, such as
    /// collections). Returns whether there was such a record.
    pub fn change_quietly(&self, entity: &str, field: &str, value: &str, fields: Value) -> bool {
        let area = self.inner.default_company.clone();
        update(
            &mut self.env(),
            entity,
            &[("dataAreaId", &area), (field, value)],
            fields,
        )
        .is_some()
    }

    /// A credit controller sets a customer's credit limit (a data event on `CustomersV3`).
    pub fn set_credit_limit(&self, customer: &str, limit: &str) -> Result<(), String> {
        let limit: Decimal = limit.parse().map_err(|_| "bad limit")?;
        let area = self.inner.default_company.clone();
        let mut env = self.env();
        changed_by_user(
            &self.inner,
            &mut env,
            "CustomersV3",
            &[("dataAreaId", &area), ("CustomerAccount", customer)],
            json!({ "CreditLimit": decimal_number(limit) }),
        )
        .ok_or("no such customer")?;
        Ok(())
    }

    /// Product management releases a product with its sales price (a data event on
    /// `ReleasedProductsV2`).
    pub fn create_item(
        &self,
        number: &str,
        name: &str,
        price: &str,
        unit: &str,
        group: &str,
    ) -> Result<(), String> {
        let price: Decimal = price.parse().map_err(|_| "bad price")?;
        let area = self.inner.default_company.clone();
        let rec = json!({
            "dataAreaId": area, "ItemNumber": number, "ProductName": name, "SearchName": name,
            "SalesPrice": decimal_number(price), "SalesUnitSymbol": unit, "ProductGroupId": group,
            "IsSalesBlocked": "No",
        });
        let mut env = self.env();
        let rec = insert_record(&mut env, "ReleasedProductsV2", rec);
        data_event(
            &self.inner,
            &mut env,
            "ReleasedProductsV2",
            "Create",
            &rec,
            USER,
        );
        Ok(())
    }

    /// The *Calculate sales totals* batch: totals and a 10 % sales tax on every quotation and
    /// order whose lines changed (a data event on each header it updates). Returns how many
    /// it updated.
    pub fn calculate_totals(&self) -> usize {
        let mut env = self.env();
        let mut changed = 0;
        for (header, lines, number, quantity) in [
            (
                "SalesQuotationHeadersV2",
                "SalesQuotationLines",
                "SalesQuotationNumber",
                "RequestedSalesQuantity",
            ),
            (
                "SalesOrderHeadersV2",
                "SalesOrderLines",
                "SalesOrderNumber",
                "OrderedSalesQuantity",
            ),
        ] {
            let headers = env.entities.get(header).cloned().unwrap_or_default();
            for h in headers {
                let area = text(&h, "dataAreaId");
                let no = text(&h, number);
                let excl = document_lines(&env, lines, number, &area, &no)
                    .iter()
                    .map(|l| line_amount(l, quantity))
                    .sum::<Decimal>();
                if h.get("TotalAmountExcludingTax").and_then(as_decimal) == Some(excl) {
                    continue;
                }
                let tax = (excl * Decimal::new(10, 2)).round_dp(2);
                if changed_by_user(
                    &self.inner,
                    &mut env,
                    header,
                    &[("dataAreaId", &area), (number, &no)],
                    json!({
                        "TotalAmountExcludingTax": decimal_number(excl),
                        "TotalTaxAmount": decimal_number(tax),
                        "TotalAmount": decimal_number(excl + tax),
                    }),
                )
                .is_some()
                {
                    changed += 1;
                }
            }
        }
        changed
    }

    /// The warehouse picks `fraction` of every line of an order (the header's document
    /// status becomes the picking list; a data event on the header).
    pub fn pick(&self, order_number: &str, fraction: &str) -> Result<(), String> {
        let f: Decimal = fraction.parse().map_err(|_| "bad fraction")?;
        let area = self.inner.default_company.clone();
        let mut env = self.env();
        for l in env.entities.entry("SalesOrderLines".into()).or_default() {
            if text(l, "dataAreaId") == area && text(l, "SalesOrderNumber") == order_number {
                let q = l
                    .get("OrderedSalesQuantity")
                    .and_then(as_decimal)
                    .unwrap_or_default();
                l.insert(
                    "PickedSalesQuantity".into(),
                    decimal_number((q * f).round_dp(2)),
                );
            }
        }
        changed_by_user(
            &self.inner,
            &mut env,
            "SalesOrderHeadersV2",
            &[("dataAreaId", &area), ("SalesOrderNumber", order_number)],
            json!({ "DocumentStatus": "PickingList" }),
        )
        .ok_or("no such order")?;
        Ok(())
    }

    /// Posts the packing slip and the invoice for a whole order: its lines and header become
    /// Invoiced, the invoice an open transaction of the customer (due in 30 days). Raises the
    /// header's data event and `SalesInvoicePostedBusinessEvent`. Returns the invoice id.
    pub fn ship_and_invoice(&self, order_number: &str) -> Result<String, String> {
        let area = self.inner.default_company.clone();
        let mut env = self.env();
        let key = [
            ("dataAreaId", area.as_str()),
            ("SalesOrderNumber", order_number),
        ];
        let order = find_in(&env, "SalesOrderHeadersV2", &key).ok_or("no such order")?;
        let lines = document_lines(
            &env,
            "SalesOrderLines",
            "SalesOrderNumber",
            &area,
            order_number,
        );
        let excl: Decimal = lines
            .iter()
            .map(|l| line_amount(l, "OrderedSalesQuantity"))
            .sum();
        let tax = (excl * Decimal::new(10, 2)).round_dp(2);
        let total = excl + tax;
        for l in env.entities.entry("SalesOrderLines".into()).or_default() {
            if text(l, "dataAreaId") == area && text(l, "SalesOrderNumber") == order_number {
                l.insert("SalesOrderLineStatus".into(), json!("Invoiced"));
            }
        }
        let invoice = next(&mut env, &area, "CIV", 812, "CIV-");
        let customer = text(&order, "InvoiceCustomerAccountNumber");
        let today = env.clock_ms;
        let due = today + 30 * 86_400_000;
        let voucher = next(&mut env, &area, "ARI", 4_100, "ARI-");
        insert_record(
            &mut env,
            "CustomerOpenTransactions",
            json!({
                "dataAreaId": area, "Voucher": voucher, "CustomerAccount": customer, "Invoice": invoice,
                "TransactionDate": date_of(today), "DueDate": date_of(due), "CurrencyCode": order.get("CurrencyCode"),
                "Amount": decimal_number(total), "RemainingAmount": decimal_number(total),
            }),
        );
        // The posted invoice journal (not an entity p2c reads: its data arrives in the event).
        insert_record(
            &mut env,
            "SalesInvoiceHeaders",
            json!({
                "dataAreaId": area, "InvoiceNumber": invoice, "InvoiceDate": date_of(today),
                "SalesOrderNumber": order_number, "InvoiceCustomerAccountNumber": customer,
                "TotalInvoiceAmount": decimal_number(total), "TotalTaxAmount": decimal_number(tax),
            }),
        );
        changed_by_user(
            &self.inner,
            &mut env,
            "SalesOrderHeadersV2",
            &key,
            json!({ "SalesOrderStatus": "Invoiced", "DocumentStatus": "Invoice" }),
        )
        .ok_or("no such order")?;
        business_event(
            &self.inner,
            &mut env,
            "SalesInvoicePostedBusinessEvent",
            &area,
            json!({
                "InvoiceAccount": customer, "InvoiceId": invoice, "SalesOrderId": order_number,
                "InvoiceDate": wcf_date(midnight(today)), "InvoiceDueDate": wcf_date(midnight(due)),
                "InvoiceAmountInAccountingCurrency": decimal_number(total),
                "InvoiceTaxAmount": decimal_number(tax), "LegalEntity": area.to_ascii_uppercase(),
            }),
        );
        Ok(invoice)
    }

    /// A customer payment posted and settled against an invoice: the invoice's open
    /// transaction goes down by `amount` (and is closed at zero), a payment journal line
    /// records it, and `CustPaymentPostedBusinessEvent` is raised. Returns the voucher.
    pub fn register_payment(&self, invoice: &str, amount: &str) -> Result<String, String> {
        let amount: Decimal = amount.parse().map_err(|_| "bad amount")?;
        let area = self.inner.default_company.clone();
        let mut env = self.env();
        let open = find_in(
            &env,
            "CustomerOpenTransactions",
            &[("dataAreaId", &area), ("Invoice", invoice)],
        )
        .ok_or("no open transaction for that invoice")?;
        let customer = text(&open, "CustomerAccount");
        let remaining = open
            .get("RemainingAmount")
            .and_then(as_decimal)
            .unwrap_or_default()
            - amount;
        if let Some(rows) = env.entities.get_mut("CustomerOpenTransactions") {
            if remaining.is_zero() {
                rows.retain(|r| !(text(r, "dataAreaId") == area && text(r, "Invoice") == invoice));
            } else if let Some(r) = rows
                .iter_mut()
                .find(|r| text(r, "dataAreaId") == area && text(r, "Invoice") == invoice)
            {
                r.insert("RemainingAmount".into(), decimal_number(remaining));
            }
        }
        let voucher = next(&mut env, &area, "ARP", 2_200, "ARP-");
        let line = env
            .entities
            .get("CustomerPaymentJournalLines")
            .map_or(0, Vec::len)
            + 1;
        let today = env.clock_ms;
        insert_record(
            &mut env,
            "CustomerPaymentJournalLines",
            json!({
                "dataAreaId": area, "JournalBatchNumber": "ARP-JNL-1", "LineNumber": line,
                "AccountDisplayValue": customer, "CreditAmount": decimal_number(amount),
                "MarkedInvoice": invoice, "TransactionDate": date_of(today), "Voucher": voucher,
                "CurrencyCode": open.get("CurrencyCode"), "IsPosted": "Yes",
            }),
        );
        business_event(
            &self.inner,
            &mut env,
            "CustPaymentPostedBusinessEvent",
            &area,
            json!({
                "CustomerAccount": customer, "Voucher": voucher, "InvoiceId": invoice,
                "PaymentDate": wcf_date(midnight(today)), "PaymentAmount": decimal_number(amount),
                "CurrencyCode": open.get("CurrencyCode"), "LegalEntity": area.to_ascii_uppercase(),
            }),
        );
        Ok(voucher)
    }
}

fn text(r: &Map<String, Value>, field: &str) -> String {
    match r.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn line_amount(l: &Map<String, Value>, quantity: &str) -> Decimal {
    let d = |f: &str| l.get(f).and_then(as_decimal).unwrap_or_default();
    (d(quantity) * d("SalesPrice") - d("LineDiscountAmount")).round_dp(2)
}

fn document_lines(
    env: &Env,
    entity: &str,
    number: &str,
    area: &str,
    value: &str,
) -> Vec<Map<String, Value>> {
    env.entities
        .get(entity)
        .map(|ls| {
            ls.iter()
                .filter(|l| text(l, "dataAreaId") == area && text(l, number) == value)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(key: &[(&str, &str)]) -> Vec<(String, String)> {
    key.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn find_in(env: &Env, entity: &str, key: &[(&str, &str)]) -> Option<Map<String, Value>> {
    let key = pairs(key);
    env.entities
        .get(entity)?
        .iter()
        .find(|r| matches(r, &key))
        .cloned()
}

/// A user's (or batch job's) change to the record at `key`: the fields set, the data event
/// raised. Returns the record as it is now.
fn changed_by_user(
    inner: &Inner,
    env: &mut Env,
    entity: &str,
    key: &[(&str, &str)],
    fields: Value,
) -> Option<Map<String, Value>> {
    let rec = update(env, entity, key, fields)?;
    data_event(inner, env, entity, "Update", &rec, USER);
    Some(rec)
}

/// Sets fields of the record at `key` (a new etag); returns the record as it is now.
fn update(
    env: &mut Env,
    entity: &str,
    key: &[(&str, &str)],
    fields: Value,
) -> Option<Map<String, Value>> {
    let key = pairs(key);
    env.etags += 1;
    let etag = format!("W/\"{}\"", env.etags);
    let rec = env
        .entities
        .get_mut(entity)?
        .iter_mut()
        .find(|r| matches(r, &key))?;
    if let Value::Object(f) = fields {
        rec.extend(f);
    }
    rec.insert("@odata.etag".into(), json!(etag));
    Some(rec.clone())
}

fn insert_record(env: &mut Env, entity: &str, fields: Value) -> Map<String, Value> {
    let mut rec = fields.as_object().cloned().unwrap_or_default();
    env.etags += 1;
    rec.insert("@odata.etag".into(), json!(format!("W/\"{}\"", env.etags)));
    env.entities
        .entry(entity.into())
        .or_default()
        .push(rec.clone());
    rec
}

/// The next number of a legal entity's number sequence: `prefix` and six digits.
fn next(env: &mut Env, area: &str, seq: &str, start: u64, prefix: &str) -> String {
    let n = env
        .sequences
        .entry(format!("{area}/{seq}"))
        .or_insert(start);
    *n += 1;
    format!("{prefix}{:06}", n)
}

fn date_of(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn midnight(ms: i64) -> i64 {
    ms - ms.rem_euclid(86_400_000)
}

fn wcf_date(ms: i64) -> String {
    format!("/Date({ms})/")
}

/// The initiating user of writes made through OData (p2c's application user).
fn integration_user(inner: &Inner) -> String {
    inner
        .hook
        .lock()
        .ok()
        .and_then(|h| h.as_ref().map(|c| c.integration_user.clone()))
        .unwrap_or_default()
}

/// A data event as the Power Platform integration proxies it through a Dataverse webhook:
/// a `RemoteExecutionContext` naming the virtual table, the record's keys in `Target`.
fn data_event(
    inner: &Inner,
    env: &mut Env,
    entity: &str,
    message: &str,
    rec: &Map<String, Value>,
    user: &str,
) {
    let Some((_, table, key_field)) = DATA_EVENTS.iter().find(|(e, _, _)| *e == entity) else {
        return;
    };
    let Some(cfg) = inner.hook.lock().ok().and_then(|h| h.clone()) else {
        return;
    };
    env.clock_ms += 1000;
    env.control += 1;
    let key = text(rec, key_field);
    let attribute = |name: &str, value: Value| json!({ "key": format!("mserp_{}", name.to_ascii_lowercase()), "value": value });
    let body = json!({
        "BusinessUnitId": "00000000-0000-0000-0000-000000000000",
        "CorrelationId": super::guid(0xf0c0_0000, env.control),
        "Depth": 1,
        "InitiatingUserAzureActiveDirectoryObjectId": user,
        "MessageName": message,
        "Mode": 1,
        "OperationCreatedOn": wcf_date(env.clock_ms),
        "OperationId": super::guid(0xf0e0_0000, env.control),
        "PrimaryEntityName": table,
        "InputParameters": [{ "key": "Target", "value": {
            "__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
            "Attributes": [attribute("dataAreaId", json!(text(rec, "dataAreaId"))), attribute(key_field, json!(key))],
            "LogicalName": table,
        }}],
        "Stage": 40,
    });
    inner.outbox.push(Hook {
        url: cfg.url,
        headers: vec![(cfg.header, cfg.key)],
        body,
        label: format!(
            "F&O data event: {message} {entity}({key}){}",
            if user == cfg.integration_user {
                " by p2c"
            } else {
                ""
            }
        ),
    });
}

/// A business event in the common envelope, the contract's fields mixed in.
fn business_event(inner: &Inner, env: &mut Env, class: &str, area: &str, contract: Value) {
    let Some(cfg) = inner.hook.lock().ok().and_then(|h| h.clone()) else {
        return;
    };
    env.clock_ms += 1000;
    env.control += 1;
    let time = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(env.clock_ms)
        // Seven fractional digits, as F&O writes them.
        .map(|t| {
            format!(
                "{}.{:07}Z",
                t.format("%Y-%m-%dT%H:%M:%S"),
                t.timestamp_subsec_nanos() / 100
            )
        })
        .unwrap_or_default();
    let mut body = json!({
        "BusinessEventId": class,
        "BusinessEventLegalEntity": area.to_ascii_uppercase(),
        "ContextRecordSubject": "",
        "ControlNumber": 5_637_144_576u64 + env.control,
        "EventId": super::guid(0xbe00_0000, env.control).to_ascii_uppercase(),
        "EventTime": wcf_date(env.clock_ms),
        "EventTimeIso8601": time,
        "InitiatingUserAADObjectId": format!("{{{}}}", USER.to_ascii_uppercase()),
        "MajorVersion": 0,
        "MinorVersion": 0,
        "ParentContextRecordSubjects": [],
    });
    if let (Some(b), Value::Object(c)) = (body.as_object_mut(), contract) {
        b.extend(c);
    }
    let label = format!(
        "F&O business event: {class} {}",
        body.get("Voucher")
            .or_else(|| body.get("InvoiceId"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    inner.outbox.push(Hook {
        url: cfg.url,
        headers: vec![(cfg.header, cfg.key)],
        body,
        label,
    });
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
    for field in [
        "SalesOrderNumber",
        "SalesQuotationNumber",
        "InventoryLotId",
        "InvoiceIdentifier",
    ] {
        let assigned = match (entity.as_str(), field) {
            ("SalesOrderHeadersV2", "SalesOrderNumber") => Some(("SO", 730u64, 6usize)),
            ("SalesQuotationHeadersV2", "SalesQuotationNumber") => Some(("SQ", 100, 6)),
            ("FreeTextInvoiceHeaders", "InvoiceIdentifier") => Some(("FTI", 300, 6)),
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
        "FreeTextInvoiceLines" => Some(("FreeTextInvoiceHeaders", "InvoiceIdentifier")),
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
    if entity == "SalesOrderHeadersV2" && !rec.contains_key("SalesOrderStatus") {
        rec.insert("SalesOrderStatus".into(), json!("Backorder"));
    }
    let rec = insert_record(&mut env, &entity, Value::Object(rec));
    env.log.push(format!("POST {entity} 201"));
    // Written through OData: by p2c's application user.
    data_event(
        &inner,
        &mut env,
        &entity,
        "Create",
        &rec,
        &integration_user(&inner),
    );
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
    if let Some(rec) = env.entities.get(&entity).and_then(|r| r.get(i)).cloned() {
        data_event(
            &inner,
            &mut env,
            &entity,
            "Update",
            &rec,
            &integration_user(&inner),
        );
    }
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
