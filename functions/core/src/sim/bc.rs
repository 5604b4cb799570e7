//! A simulated Business Central company: API v2.0 entities with `$filter`, `$expand`,
//! etags (`If-Match` on PATCH and DELETE, 412 when stale), deep-inserted document lines,
//! 10 % sales tax computed by "the ERP", customer financials, and webhook notifications
//! (no data, just the resource) for the subscribed entity sets.

use super::{fault_response, guid, odata_error, take_fault, Fault, Hook, Outbox};
use crate::json::{as_decimal, decimal_number};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

const SUBSCRIBED: &[&str] = &[
    "customers",
    "items",
    "salesQuotes",
    "salesOrders",
    "salesInvoices",
    "salesCreditMemos",
    "customerPaymentJournals",
];

fn line_set(set: &str) -> Option<&'static str> {
    match set {
        "salesQuotes" => Some("salesQuoteLines"),
        "salesOrders" => Some("salesOrderLines"),
        "salesInvoices" => Some("salesInvoiceLines"),
        "salesCreditMemos" => Some("salesCreditMemoLines"),
        "customerPaymentJournals" => Some("customerPayments"),
        _ => None,
    }
}

/// Where notifications go.
#[derive(Debug, Clone)]
pub struct BcHookConfig {
    pub url: String,
    pub client_state: String,
}

struct BcState {
    tables: BTreeMap<String, Vec<Map<String, Value>>>,
    lines: BTreeMap<String, Vec<Map<String, Value>>>,
    seq: u64,
    clock_ms: i64,
    series: BTreeMap<String, u64>,
    log: Vec<String>,
    creates: BTreeMap<String, u64>,
    today: chrono::NaiveDate,
}

pub(crate) struct BcInner {
    state: Mutex<BcState>,
    faults: Mutex<VecDeque<Fault>>,
    outbox: Outbox,
    hook: Mutex<Option<BcHookConfig>>,
    company: String,
}

/// A running simulated Business Central.
#[derive(Clone)]
pub struct SimBusinessCentral {
    inner: Arc<BcInner>,
    pub url: String,
}

fn dec(v: Option<&Value>) -> Decimal {
    v.and_then(as_decimal).unwrap_or(Decimal::ZERO)
}

fn s(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

impl SimBusinessCentral {
    pub async fn start(company: &str) -> std::io::Result<Self> {
        let inner = Arc::new(BcInner {
            state: Mutex::new(BcState {
                tables: BTreeMap::new(),
                lines: BTreeMap::new(),
                seq: 0,
                clock_ms: chrono::Utc::now().timestamp_millis(),
                series: BTreeMap::new(),
                log: Vec::new(),
                creates: BTreeMap::new(),
                today: chrono::Utc::now().date_naive(),
            }),
            faults: Mutex::new(VecDeque::new()),
            outbox: Outbox::default(),
            hook: Mutex::new(None),
            company: company.to_ascii_lowercase(),
        });
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let (url, _task) = super::serve(router).await?;
        let sim = Self { inner, url };
        for (code, days) in [
            ("NET30", 30),
            ("NET45", 45),
            ("NET60", 60),
            ("2%10NET30", 30),
        ] {
            sim.admin_insert("paymentTerms", json!({"code": code, "displayName": code, "dueDateCalculation": format!("{days}D")}));
        }
        Ok(sim)
    }

    /// The environment root for the connector (`…/v2.0/<tenant>/<environment>`).
    pub fn root(&self) -> String {
        format!("{}/v2.0/contoso.com/production", self.url)
    }

    pub fn company(&self) -> &str {
        &self.inner.company
    }

    pub fn set_webhook(&self, cfg: BcHookConfig) {
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

    fn admin_insert(&self, set: &str, rec: Value) -> String {
        let Ok(mut st) = self.inner.state.lock() else {
            return String::new();
        };
        insert(
            &mut st,
            set,
            rec.as_object().cloned().unwrap_or_default(),
            None,
        )
        .0
    }

    /// A record by `number` (or `externalDocumentNumber` for documents).
    pub fn find(&self, set: &str, field: &str, value: &str) -> Option<Map<String, Value>> {
        let st = self.inner.state.lock().ok()?;
        st.tables
            .get(set)?
            .iter()
            .find(|r| r.get(field).and_then(Value::as_str) == Some(value))
            .cloned()
    }

    pub fn records(&self, set: &str) -> Vec<Map<String, Value>> {
        self.inner
            .state
            .lock()
            .map(|st| st.tables.get(set).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn lines(&self, doc_id: &str) -> Vec<Map<String, Value>> {
        self.inner
            .state
            .lock()
            .map(|st| st.lines.get(doc_id).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn creates(&self, set: &str) -> u64 {
        self.inner
            .state
            .lock()
            .map(|st| st.creates.get(set).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn log(&self) -> Vec<String> {
        self.inner
            .state
            .lock()
            .map(|st| st.log.clone())
            .unwrap_or_default()
    }

    /// An item created by a user in BC (notifies `items`).
    pub fn create_item(
        &self,
        number: &str,
        name: &str,
        unit_price: &str,
        unit: &str,
        category: &str,
    ) -> Result<(), String> {
        let price: Decimal = unit_price.parse().map_err(|_| "bad price")?;
        let rec = json!({"number": number, "displayName": name, "type": "Inventory", "blocked": false, "baseUnitOfMeasureCode": unit,
            "unitPrice": decimal_number(price), "itemCategoryCode": category, "inventory": 100});
        self.user_change("items", None, rec, "created")
    }

    /// A credit controller sets a customer's credit limit (notifies `customers`).
    pub fn set_credit_limit(&self, customer: &str, limit: &str) -> Result<(), String> {
        let limit: Decimal = limit.parse().map_err(|_| "bad limit")?;
        let id = self
            .find("customers", "number", customer)
            .and_then(|c| c.get("id").cloned())
            .ok_or("no such customer")?;
        self.user_change(
            "customers",
            id.as_str(),
            json!({"creditLimit": decimal_number(limit)}),
            "updated",
        )
    }

    /// The warehouse registers a pick: Qty. to Ship on each item line becomes `fraction` of it.
    pub fn pick(&self, order_number: &str, fraction: &str) -> Result<(), String> {
        let f: Decimal = fraction.parse().map_err(|_| "bad fraction")?;
        let order = self
            .find("salesOrders", "number", order_number)
            .ok_or("no such order")?;
        let id = s(order.get("id"));
        {
            let mut st = self.inner.state.lock().map_err(|_| "lock")?;
            for l in st.lines.entry(id.clone()).or_default().iter_mut() {
                let q = dec(l.get("quantity"));
                l.insert("shipQuantity".into(), decimal_number((q * f).round_dp(2)));
            }
        }
        self.user_change("salesOrders", Some(&id), json!({}), "updated")
    }

    /// Posts shipment and invoice for the whole order (`Microsoft.NAV.shipAndInvoice`).
    /// Returns the invoice number.
    pub fn ship_and_invoice(&self, order_number: &str) -> Result<String, String> {
        let order = self
            .find("salesOrders", "number", order_number)
            .ok_or("no such order")?;
        let oid = s(order.get("id"));
        let invoice_no = {
            let mut st = self.inner.state.lock().map_err(|_| "lock")?;
            let lines = st.lines.get(&oid).cloned().unwrap_or_default();
            let inv_lines: Vec<Value> = lines
                .iter()
                .filter(|l| s(l.get("lineType")) == "Item")
                .map(|l| {
                    json!({"lineType": "Item", "lineObjectNumber": l.get("lineObjectNumber"), "description": l.get("description"), "quantity": l.get("quantity"),
                        "unitOfMeasureCode": l.get("unitOfMeasureCode"), "unitPrice": l.get("unitPrice"), "discountAmount": l.get("discountAmount"), "itemCategoryCode": l.get("itemCategoryCode")})
                })
                .collect();
            for l in st.lines.entry(oid.clone()).or_default().iter_mut() {
                let q = l.get("quantity").cloned().unwrap_or(json!(0));
                l.insert("shippedQuantity".into(), q.clone());
                l.insert("invoicedQuantity".into(), q);
                l.insert("shipQuantity".into(), json!(0));
            }
            let today = st.today;
            let mut inv = json!({"customerNumber": order.get("customerNumber"), "externalDocumentNumber": order.get("externalDocumentNumber"),
                "orderNumber": order_number, "orderId": oid, "currencyCode": order.get("currencyCode"), "invoiceDate": today.to_string(),
                "postingDate": today.to_string(), "dueDate": (today + chrono::Duration::days(30)).to_string(), "status": "Open"});
            inv["salesInvoiceLines"] = Value::Array(inv_lines);
            let (inv_id, number) = insert(
                &mut st,
                "salesInvoices",
                inv.as_object().cloned().unwrap_or_default(),
                None,
            );
            let total = st
                .tables
                .get("salesInvoices")
                .and_then(|t| t.iter().find(|r| s(r.get("id")) == inv_id))
                .map(|r| dec(r.get("totalAmountIncludingTax")))
                .unwrap_or_default();
            if let Some(r) = st
                .tables
                .get_mut("salesInvoices")
                .and_then(|t| t.iter_mut().find(|r| s(r.get("id")) == inv_id))
            {
                r.insert("remainingAmount".into(), decimal_number(total));
            }
            touch(&mut st, "salesOrders", &oid);
            number
        };
        self.queue_notice("salesOrders", &oid, "updated");
        let inv_id = self
            .find("salesInvoices", "number", &invoice_no)
            .map(|r| s(r.get("id")))
            .unwrap_or_default();
        self.queue_notice("salesInvoices", &inv_id, "created");
        self.refresh_customer(&s(order.get("customerNumber")));
        Ok(invoice_no)
    }

    /// A customer payment registered in the CASH journal and applied to an invoice.
    pub fn register_payment(&self, invoice_number: &str, amount: &str) -> Result<String, String> {
        let amount: Decimal = amount.parse().map_err(|_| "bad amount")?;
        let inv = self
            .find("salesInvoices", "number", invoice_number)
            .ok_or("no such invoice")?;
        let customer = s(inv.get("customerNumber"));
        let (journal_id, doc) = {
            let mut st = self.inner.state.lock().map_err(|_| "lock")?;
            let journal_id = match st
                .tables
                .get("customerPaymentJournals")
                .and_then(|t| t.first())
                .map(|j| s(j.get("id")))
            {
                Some(id) => id,
                None => {
                    insert(
                        &mut st,
                        "customerPaymentJournals",
                        json!({"code": "CASH", "displayName": "Cash receipts"})
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                        None,
                    )
                    .0
                }
            };
            st.seq += 1;
            let n = st.seq;
            let doc = format!(
                "PAY-{:04}",
                st.lines.get(&journal_id).map(|l| l.len()).unwrap_or(0) + 1
            );
            let today = st.today;
            let line = json!({"id": guid(0x7a11_0000, n), "journalId": journal_id, "lineNumber": 10000 * (st.lines.get(&journal_id).map(|l| l.len()).unwrap_or(0) + 1),
                "customerNumber": customer, "postingDate": today.to_string(), "documentNumber": doc, "amount": decimal_number(-amount),
                "appliesToInvoiceNumber": invoice_number, "description": format!("Payment {invoice_number}")});
            if let Some(o) = line.as_object() {
                st.lines
                    .entry(journal_id.clone())
                    .or_default()
                    .push(o.clone());
            }
            if let Some(r) = st
                .tables
                .get_mut("salesInvoices")
                .and_then(|t| t.iter_mut().find(|r| s(r.get("number")) == invoice_number))
            {
                let remaining = (dec(r.get("remainingAmount")) - amount).max(Decimal::ZERO);
                r.insert("remainingAmount".into(), decimal_number(remaining));
                if remaining.is_zero() {
                    r.insert("status".into(), json!("Paid"));
                }
            }
            let inv_id = s(inv.get("id"));
            touch(&mut st, "salesInvoices", &inv_id);
            touch(&mut st, "customerPaymentJournals", &journal_id);
            (journal_id, doc)
        };
        self.queue_notice("customerPaymentJournals", &journal_id, "updated");
        self.queue_notice("salesInvoices", &s(inv.get("id")), "updated");
        self.refresh_customer(&customer);
        Ok(doc)
    }

    fn refresh_customer(&self, number: &str) {
        let id = {
            let Ok(mut st) = self.inner.state.lock() else {
                return;
            };
            let balance: Decimal = st
                .tables
                .get("salesInvoices")
                .map(|t| {
                    t.iter()
                        .filter(|i| s(i.get("customerNumber")) == number)
                        .map(|i| dec(i.get("remainingAmount")))
                        .sum()
                })
                .unwrap_or_default();
            let Some(c) = st
                .tables
                .get_mut("customers")
                .and_then(|t| t.iter_mut().find(|c| s(c.get("number")) == number))
            else {
                return;
            };
            c.insert("balanceDue".into(), decimal_number(balance));
            let id = s(c.get("id"));
            touch(&mut st, "customers", &id);
            id
        };
        self.queue_notice("customers", &id, "updated");
    }

    fn user_change(
        &self,
        set: &str,
        id: Option<&str>,
        body: Value,
        change: &str,
    ) -> Result<(), String> {
        let id = {
            let mut st = self.inner.state.lock().map_err(|_| "lock")?;
            match id {
                Some(id) => {
                    let rec = st
                        .tables
                        .get_mut(set)
                        .and_then(|t| t.iter_mut().find(|r| s(r.get("id")) == id))
                        .ok_or("no such record")?;
                    for (k, v) in body.as_object().cloned().unwrap_or_default() {
                        rec.insert(k, v);
                    }
                    touch(&mut st, set, id);
                    id.to_string()
                }
                None => {
                    insert(
                        &mut st,
                        set,
                        body.as_object().cloned().unwrap_or_default(),
                        None,
                    )
                    .0
                }
            }
        };
        self.queue_notice(set, &id, change);
        Ok(())
    }

    fn queue_notice(&self, set: &str, id: &str, change: &str) {
        queue_notice(&self.inner, set, id, change);
    }
}

fn queue_notice(inner: &BcInner, set: &str, id: &str, change: &str) {
    if !SUBSCRIBED.contains(&set) {
        return;
    }
    let Some(cfg) = inner.hook.lock().ok().and_then(|h| h.clone()) else {
        return;
    };
    let modified = inner
        .state
        .lock()
        .ok()
        .and_then(|st| {
            st.tables
                .get(set)
                .and_then(|t| t.iter().find(|r| s(r.get("id")) == id))
                .and_then(|r| r.get("lastModifiedDateTime").cloned())
        })
        .unwrap_or(Value::Null);
    let resource = format!("api/v2.0/companies({})/{set}({id})", inner.company);
    let label = format!("BC notification: {change} {set}({id})");
    let body = json!({"value": [{
        "subscriptionId": format!("sub-{set}"),
        "clientState": cfg.client_state,
        "expirationDateTime": "2026-05-17T09:00:12Z",
        "resource": resource,
        "changeType": change,
        "lastModifiedDateTime": modified,
    }]});
    inner.outbox.push(Hook {
        url: cfg.url,
        headers: vec![],
        body,
        label,
    });
}

fn now_iso(st: &BcState) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(st.clock_ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn touch(st: &mut BcState, set: &str, id: &str) {
    st.seq += 1;
    st.clock_ms += 1000;
    let now = now_iso(st);
    let etag = format!("W/\"JzE5Oz{}Oyc=\"", st.seq);
    if let Some(r) = st
        .tables
        .get_mut(set)
        .and_then(|t| t.iter_mut().find(|r| s(r.get("id")) == id))
    {
        r.insert("lastModifiedDateTime".into(), Value::String(now));
        r.insert("@odata.etag".into(), Value::String(etag));
    }
    recompute(st, set, id);
}

fn next_number(st: &mut BcState, set: &str) -> String {
    let (prefix, start) = match set {
        "salesQuotes" => ("S-QUO", 1001),
        "salesOrders" => ("", 101_001),
        "salesInvoices" => ("", 103_001),
        "salesCreditMemos" => ("", 104_001),
        "contacts" => ("CT", 100_001),
        _ => ("", 1),
    };
    let n = st.series.entry(set.to_string()).or_insert(start);
    let out = format!("{prefix}{n}");
    *n += 1;
    out
}

/// Inserts a record (and deep-inserted lines); returns (id, number).
fn insert(
    st: &mut BcState,
    set: &str,
    mut rec: Map<String, Value>,
    _etag: Option<&str>,
) -> (String, String) {
    st.seq += 1;
    let id = guid(0xb6f4_017a, st.seq);
    rec.insert("id".into(), Value::String(id.clone()));
    if rec
        .get("number")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && set != "paymentTerms"
        && set != "customerPaymentJournals"
    {
        let n = next_number(st, set);
        rec.insert("number".into(), Value::String(n));
    }
    match set {
        "customers" => {
            for (k, v) in [
                ("type", json!("Company")),
                ("balanceDue", json!(0)),
                ("creditLimit", json!(0)),
                ("blocked", json!(" ")),
                ("currencyCode", json!("")),
            ] {
                rec.entry(k).or_insert(v);
            }
        }
        "salesCreditMemos" => {
            rec.entry("status").or_insert(json!("Draft"));
            let today = st.today.to_string();
            rec.entry("creditMemoDate").or_insert(json!(today));
        }
        "salesQuotes" | "salesOrders" => {
            rec.entry("status")
                .or_insert(json!(if set == "salesOrders" {
                    "Open"
                } else {
                    "Draft"
                }));
            let today = st.today.to_string();
            rec.entry(if set == "salesOrders" {
                "orderDate"
            } else {
                "documentDate"
            })
            .or_insert(json!(today));
        }
        _ => {}
    }
    if let Some(ls) = line_set(set) {
        let lines = rec
            .remove(ls)
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        for (i, l) in lines.into_iter().enumerate() {
            let mut l = l.as_object().cloned().unwrap_or_default();
            add_line(st, &id, &mut l, i);
        }
    }
    let number = s(rec.get("number"));
    st.tables.entry(set.to_string()).or_default().push(rec);
    *st.creates.entry(set.to_string()).or_default() += 1;
    touch(st, set, &id);
    (id, number)
}

fn add_line(st: &mut BcState, doc_id: &str, l: &mut Map<String, Value>, i: usize) {
    st.seq += 1;
    l.insert("id".into(), Value::String(guid(0x11e0_0000, st.seq)));
    l.insert("documentId".into(), Value::String(doc_id.to_string()));
    l.entry("sequence").or_insert(json!(
        10000 * (i + 1 + st.lines.get(doc_id).map(|x| x.len()).unwrap_or(0))
    ));
    for k in [
        "shipQuantity",
        "shippedQuantity",
        "invoicedQuantity",
        "discountAmount",
    ] {
        l.entry(k).or_insert(json!(0));
    }
    let item = s(l.get("lineObjectNumber"));
    let category = st
        .tables
        .get("items")
        .and_then(|t| t.iter().find(|x| s(x.get("number")) == item))
        .map(|x| x.get("itemCategoryCode").cloned().unwrap_or(Value::Null));
    if let Some(c) = category {
        l.entry("itemCategoryCode").or_insert(c);
    }
    l.insert(
        "@odata.etag".into(),
        Value::String(format!("W/\"JzE5Oz{}Oyc=\"", st.seq)),
    );
    st.lines
        .entry(doc_id.to_string())
        .or_default()
        .push(l.clone());
}

/// The ERP computes totals and a 10 % tax on documents.
fn recompute(st: &mut BcState, set: &str, id: &str) {
    if !matches!(
        set,
        "salesQuotes" | "salesOrders" | "salesInvoices" | "salesCreditMemos"
    ) {
        return;
    }
    let lines = st.lines.get(id).cloned().unwrap_or_default();
    let excl: Decimal = lines
        .iter()
        .map(|l| dec(l.get("quantity")) * dec(l.get("unitPrice")) - dec(l.get("discountAmount")))
        .sum();
    let tax = (excl * Decimal::new(10, 2)).round_dp(2);
    if let Some(r) = st
        .tables
        .get_mut(set)
        .and_then(|t| t.iter_mut().find(|r| s(r.get("id")) == id))
    {
        r.insert("totalAmountExcludingTax".into(), decimal_number(excl));
        r.insert("totalTaxAmount".into(), decimal_number(tax));
        r.insert("totalAmountIncludingTax".into(), decimal_number(excl + tax));
        if set == "salesOrders" {
            let full = lines
                .iter()
                .filter(|l| s(l.get("lineType")) == "Item")
                .all(|l| dec(l.get("shippedQuantity")) >= dec(l.get("quantity")));
            r.insert("fullyShipped".into(), json!(full));
        }
    }
}

/// `a eq 'x' and b lt 2026-05-20`: eq / ne / lt / gt on strings, numbers and dates.
fn matches(rec: &Map<String, Value>, filter: &str) -> bool {
    filter.split(" and ").all(|clause| {
        let mut parts = clause.trim().splitn(3, ' ');
        let (Some(field), Some(op), Some(raw)) = (parts.next(), parts.next(), parts.next()) else {
            return true;
        };
        let Some(actual) = rec.get(field) else {
            return true;
        };
        let wanted = raw
            .strip_prefix('\'')
            .and_then(|x| x.strip_suffix('\''))
            .map(|x| x.replace("''", "'"))
            .unwrap_or_else(|| raw.to_string());
        let ord = match (as_decimal(actual), wanted.parse::<Decimal>()) {
            (Some(a), Ok(w)) if actual.is_number() => a.cmp(&w),
            _ => actual.as_str().unwrap_or_default().cmp(wanted.as_str()),
        };
        match op {
            "eq" => ord.is_eq(),
            "ne" => !ord.is_eq(),
            "lt" => ord.is_lt(),
            "gt" => ord.is_gt(),
            _ => true,
        }
    })
}

fn with_expand(st: &BcState, set: &str, rec: &Map<String, Value>, expand: Option<&str>) -> Value {
    let mut out = rec.clone();
    let id = s(rec.get("id"));
    match expand {
        Some("customerFinancialDetail") if set == "customers" => {
            let number = s(rec.get("number"));
            let invoices: Vec<&Map<String, Value>> = st
                .tables
                .get("salesInvoices")
                .map(|t| {
                    t.iter()
                        .filter(|i| s(i.get("customerNumber")) == number)
                        .collect()
                })
                .unwrap_or_default();
            let today = st.today.to_string();
            let overdue: Decimal = invoices
                .iter()
                .filter(|i| s(i.get("dueDate")) < today)
                .map(|i| dec(i.get("remainingAmount")))
                .sum();
            let sales: Decimal = invoices
                .iter()
                .map(|i| dec(i.get("totalAmountExcludingTax")))
                .sum();
            out.insert("customerFinancialDetail".into(), json!({"id": id, "number": number, "balance": decimal_number(dec(rec.get("balanceDue"))),
                "totalSalesExcludingTax": decimal_number(sales), "overdueAmount": decimal_number(overdue)}));
        }
        Some(e) if line_set(set) == Some(e) => {
            out.insert(
                e.to_string(),
                Value::Array(
                    st.lines
                        .get(&id)
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(Value::Object)
                        .collect(),
                ),
            );
        }
        _ => {}
    }
    Value::Object(out)
}

fn split_key(seg: &str) -> (&str, Option<String>) {
    match seg.split_once('(') {
        Some((n, rest)) => (
            n,
            Some(
                rest.trim_end_matches(')')
                    .trim_matches('\'')
                    .to_ascii_lowercase(),
            ),
        ),
        None => (seg, None),
    }
}

async fn handle(
    State(inner): State<Arc<BcInner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = crate::inbound::percent_decode(uri.path());
    let Some(after) = path
        .split_once("/api/v2.0/companies(")
        .map(|(_, a)| a.to_string())
    else {
        return odata_error(
            404,
            "BadRequest_NotFound",
            "No HTTP resource was found that matches the request URI.",
        );
    };
    let Some((company, rest)) = after.split_once(")/") else {
        return odata_error(404, "BadRequest_NotFound", "No resource");
    };
    if company.to_ascii_lowercase() != inner.company {
        return odata_error(404, "BadRequest_NotFound", "Company not found");
    }
    if let Some(f) = take_fault(&inner.faults, method.as_str(), rest) {
        return fault_response(&f);
    }
    let query = crate::inbound::WebhookRequest::parse_query(uri.query().unwrap_or(""));
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let (set, id) = split_key(segs[0]);
    let set = set.to_string();
    let sub = segs.get(1).map(|x| split_key(x));
    let if_match = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Ok(mut st) = inner.state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let log_line = format!("{method} {rest}");
    let find_idx = |st: &BcState, id: &str| {
        st.tables
            .get(&set)
            .and_then(|t| t.iter().position(|r| s(r.get("id")) == id))
    };
    let resp = match (method.clone(), id, sub) {
        (Method::GET, None, None) => {
            let filter = q("$filter").unwrap_or_default();
            let top = q("$top").and_then(|t| t.parse::<usize>().ok()).unwrap_or(usize::MAX);
            let items: Vec<Value> = st.tables.get(&set).map(|t| t.iter().filter(|r| matches(r, &filter)).take(top).map(|r| Value::Object(r.clone())).collect()).unwrap_or_default();
            axum::Json(json!({"value": items})).into_response()
        }
        (Method::GET, Some(id), None) => match find_idx(&st, &id) {
            Some(i) => {
                let rec = st.tables[&set][i].clone();
                axum::Json(with_expand(&st, &set, &rec, q("$expand").as_deref())).into_response()
            }
            None => odata_error(404, "Internal_RecordNotFound", &format!("The {set} record does not exist.")),
        },
        (Method::GET, Some(id), Some((ls, None))) => axum::Json(json!({"value": st.lines.get(&id).filter(|_| line_set(&set) == Some(ls)).cloned().unwrap_or_default()})).into_response(),
        (Method::POST, None, None) => {
            let Ok(rec) = serde_json::from_slice::<Map<String, Value>>(&body) else { return odata_error(400, "BadRequest", "Invalid JSON") };
            if set == "customers" {
                let number = s(rec.get("number"));
                if st.tables.get("customers").is_some_and(|t| t.iter().any(|c| s(c.get("number")) == number)) {
                    return odata_error(400, "Internal_EntityWithSameKeyExists", &format!("The record in table Customer already exists. Identification fields and values: No.='{number}'"));
                }
            }
            if ["salesQuotes", "salesOrders", "salesCreditMemos"].contains(&set.as_str()) {
                let cust = s(rec.get("customerNumber"));
                if !st.tables.get("customers").is_some_and(|t| t.iter().any(|c| s(c.get("number")) == cust)) {
                    return odata_error(400, "Internal_RecordNotFound", &format!("The Customer does not exist. Identification fields and values: No.='{cust}'"));
                }
            }
            let (id, _) = insert(&mut st, &set, rec, None);
            let created = st.tables[&set].iter().find(|r| s(r.get("id")) == id).cloned().unwrap_or_default();
            drop(st);
            queue_notice(&inner, &set, &id, "created");
            st = match inner.state.lock() { Ok(g) => g, Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
            (StatusCode::CREATED, axum::Json(Value::Object(created))).into_response()
        }
        (Method::POST, Some(id), Some((ls, None))) if line_set(&set) == Some(ls) => {
            let Ok(mut l) = serde_json::from_slice::<Map<String, Value>>(&body) else { return odata_error(400, "BadRequest", "Invalid JSON") };
            add_line(&mut st, &id, &mut l, 0);
            touch(&mut st, &set, &id);
            drop(st);
            queue_notice(&inner, &set, &id, "updated");
            st = match inner.state.lock() { Ok(g) => g, Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
            (StatusCode::CREATED, axum::Json(Value::Object(l))).into_response()
        }
        (Method::PATCH, Some(id), None) => {
            let Some(i) = find_idx(&st, &id) else { return odata_error(404, "Internal_RecordNotFound", "The record does not exist.") };
            let current = s(st.tables[&set][i].get("@odata.etag"));
            match if_match.as_deref() {
                None => return odata_error(428, "Internal_ETagMissing", "A PATCH request needs an If-Match header."),
                Some("*") => {}
                Some(tag) if tag == current => {}
                Some(_) => return odata_error(412, "Internal_EntityChanged", "Another user has modified the record."),
            }
            let Ok(patch) = serde_json::from_slice::<Map<String, Value>>(&body) else { return odata_error(400, "BadRequest", "Invalid JSON") };
            for (k, v) in patch {
                if k != "id" && k != "number" {
                    st.tables.get_mut(&set).map(|t| t[i].insert(k, v));
                }
            }
            touch(&mut st, &set, &id);
            let rec = st.tables[&set][i].clone();
            drop(st);
            queue_notice(&inner, &set, &id, "updated");
            st = match inner.state.lock() { Ok(g) => g, Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
            axum::Json(Value::Object(rec)).into_response()
        }
        (Method::DELETE, Some(id), Some((ls, Some(lid)))) if line_set(&set) == Some(ls) => {
            if if_match.is_none() {
                return odata_error(428, "Internal_ETagMissing", "A DELETE request needs an If-Match header.");
            }
            if let Some(lines) = st.lines.get_mut(&id) {
                lines.retain(|l| s(l.get("id")) != lid);
            }
            touch(&mut st, &set, &id);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => odata_error(405, "BadRequest_MethodNotAllowed", "The request method is not supported for this resource."),
    };
    if method != Method::GET {
        st.log
            .push(format!("{log_line} → {}", resp.status().as_u16()));
    }
    resp
}
