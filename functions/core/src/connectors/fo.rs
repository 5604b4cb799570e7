//! Dynamics 365 Finance & Operations through its OData data entities
//! (`https://<environment>.operations.dynamics.com/data/`).
//!
//! Every key includes `dataAreaId` (the legal entity) and every key field must be given:
//! `CustomersV3(dataAreaId='usmf',CustomerAccount='US-001')`. Queries name the legal
//! entity in the filter and ask for `cross-company=true`, since without it only the
//! caller's default company is visible. There is no upsert: each write reads first, then
//! creates (`POST`, `201`) or updates by the full key (`PATCH`, `204`).
//!
//! - Customers: `CustomersV3`, keyed by `CustomerAccount` (the CRM account number).
//! - Sales orders: `SalesOrderHeadersV2` found by `CustomersOrderReference` (the CRM order
//!   number); F&O numbers the order (`SalesOrderNumber`). Lines are `SalesOrderLines`
//!   (key `InventoryLotId`), created one by one and replaced when they differ, so a retry
//!   after a crash between the header and its lines converges.
//! - Quotations: `SalesQuotationHeadersV2` found by `CustomersReference`, lines
//!   `SalesQuotationLines` (the line entity's name and the reference field are not
//!   confirmed by Microsoft's documentation; they follow the order entities).
//!
//! - Rebate credit notes: a free text invoice with a negative line, `FreeTextInvoiceHeaders`
//!   found by `CustomersReference` (p2c's deterministic reference) and
//!   `FreeTextInvoiceLines`, posted to the configured main account. It is left unposted for
//!   accounts receivable to review and post. (These entities' names and fields are not
//!   confirmed by Microsoft's documentation.)
//!
//! Reads: a posted invoice's business event names F&O's order number (`SalesOrderId`); the
//! read adds the CRM's (`CustomersOrderReference` of the order header, `null` for an invoice
//! without an order). A posted invoice or payment also changes its customer's balance, which
//! F&O raises no event for: the read returns the customer too, to be read afresh. A customer
//! is read from `CustomersV3` with its open transactions (the entity named by
//! `open_transactions_entity` in `[systems.fin_ops]`, `CustomerOpenTransactions` unless set;
//! an empty name reads none), from which the financials mapping computes the balance and
//! what is overdue.
//!
//! Contacts are not written to F&O yet: the contact-person entity's shape is unconfirmed, so
//! that command fails permanently with that reason rather than guess.

use super::http::{odata_literal, Http, Reply};
use crate::command::{Action, Command};
use crate::domain::{ChangeEvent, EntityType};
use crate::domain::{DocLine, System};
use crate::error::DeliveryError;
use crate::json::{decimal_number, fingerprint};
use crate::ports::{Connector, Outcome, SourceReader};
use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Value};

/// Writes to one Finance & Operations environment, in one legal entity.
#[derive(Clone)]
pub struct FinOpsConnector {
    http: Http,
    /// `https://<environment>.operations.dynamics.com/data`
    base: String,
    /// The legal entity (`dataAreaId`) records are written in, lower case.
    data_area: String,
    /// The customer group new customers get (F&O requires one).
    customer_group: String,
    /// The entity a customer's open transactions are read from (none when empty).
    open_transactions: String,
    /// The main account rebate credit-note lines are posted to.
    rebate_account: String,
}

fn permanent(status: u16, message: impl Into<String>) -> DeliveryError {
    DeliveryError::Permanent {
        system: System::FinOps.to_string(),
        status,
        message: message.into(),
    }
}

/// An OData key value in a URL path: a quoted literal with everything but unreserved
/// characters percent-encoded (keys may hold `/`, `#`, spaces).
fn key_literal(value: &str) -> Result<String, DeliveryError> {
    if value.is_empty() {
        return Err(permanent(400, "an empty key value cannot address a record"));
    }
    let quoted = odata_literal(value);
    let inner = &quoted[1..quoted.len() - 1];
    let encoded: String = inner
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'\'' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    Ok(format!("'{encoded}'"))
}

/// A string field of a record, or empty.
fn text(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl FinOpsConnector {
    pub fn new(
        http: Http,
        base: impl Into<String>,
        data_area: impl Into<String>,
        customer_group: impl Into<String>,
    ) -> Self {
        Self {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            data_area: data_area.into().to_ascii_lowercase(),
            customer_group: customer_group.into(),
            open_transactions: "CustomerOpenTransactions".into(),
            rebate_account: String::new(),
        }
    }

    /// Reads a customer's open transactions from `entity` (none when empty).
    pub fn with_open_transactions(mut self, entity: impl Into<String>) -> Self {
        self.open_transactions = entity.into();
        self
    }

    /// Posts rebate credit-note lines to this main account.
    pub fn with_rebate_account(mut self, account: impl Into<String>) -> Self {
        self.rebate_account = account.into();
        self
    }

    /// A rebate credit note: an unposted free text invoice with one negative line, found
    /// again by its reference, so a retry never makes a second one.
    async fn create_credit_note(
        &self,
        note: &crate::command::RebateCreditNote,
    ) -> Result<(String, bool), DeliveryError> {
        const HEADER: &str = "FreeTextInvoiceHeaders";
        const LINES: &str = "FreeTextInvoiceLines";
        let (number, created) = match self
            .find(HEADER, "CustomersReference", &note.reference)
            .await?
        {
            Some(existing) => (text(&existing, "InvoiceIdentifier"), false),
            None => {
                let body = json!({
                    "dataAreaId": self.data_area,
                    "CustomerAccount": note.account_number,
                    "CustomersReference": note.reference,
                    "CurrencyCode": note.currency.as_str(),
                    "InvoiceDescription": note.description,
                });
                let r = self.post(HEADER, &body).await?;
                (text(&r.body, "InvoiceIdentifier"), true)
            }
        };
        if number.is_empty() {
            return Err(permanent(
                502,
                format!("{HEADER} {} has no InvoiceIdentifier", note.reference),
            ));
        }
        // A retry after the header was made but not its line adds the line now.
        if created
            || self
                .query(LINES, "InvoiceIdentifier", &number, 1)
                .await?
                .is_empty()
        {
            let line = json!({
                "dataAreaId": self.data_area,
                "InvoiceIdentifier": number,
                "LineNumber": 1,
                "Description": format!("{} ({})", note.description, note.period),
                "MainAccountDisplayValue": self.rebate_account,
                "Amount": decimal_number(-note.amount),
            });
            self.post(LINES, &line).await?;
        }
        Ok((number, created))
    }

    /// An event to read `account`'s customer record again (its balance changed with `ev`).
    fn customer_reread(&self, ev: &ChangeEvent, account: &str) -> Option<ChangeEvent> {
        let account = account.trim();
        if account.is_empty() {
            return None;
        }
        let area = ev.company.clone().unwrap_or_else(|| self.data_area.clone());
        Some(ChangeEvent {
            event_id: crate::domain::EventId(format!("{}:customer", ev.event_id)),
            source: crate::domain::SourceRef::new(
                System::FinOps,
                EntityType::Account,
                format!("{area}:{account}"),
            ),
            natural_key: Some(account.to_string()),
            operation: crate::domain::Operation::Update,
            fields: Default::default(),
            previous: Default::default(),
            needs_fetch: true,
            resource: Some("CustomersV3".into()),
            // Unversioned: a read of the record as it is now is never stale.
            version: Default::default(),
            origin: Default::default(),
            company: Some(area),
            received_at: ev.received_at,
            content_hash: Default::default(),
        })
    }

    /// This connector in `area` (a routed command's or an event's legal entity), or as
    /// configured when that is `None` or the same.
    fn in_area(&self, area: Option<&str>) -> std::borrow::Cow<'_, FinOpsConnector> {
        match area.map(str::to_ascii_lowercase) {
            Some(area) if area != self.data_area => std::borrow::Cow::Owned(FinOpsConnector {
                data_area: area,
                ..self.clone()
            }),
            _ => std::borrow::Cow::Borrowed(self),
        }
    }

    /// `Entity(dataAreaId='usmf',Field='value')`.
    fn key_path(&self, entity: &str, field: &str, value: &str) -> Result<String, DeliveryError> {
        Ok(format!(
            "{entity}(dataAreaId={},{field}={})",
            key_literal(&self.data_area)?,
            key_literal(value)?
        ))
    }

    /// The records of `entity` in this legal entity where `field` is `value`.
    async fn query(
        &self,
        entity: &str,
        field: &str,
        value: &str,
        top: usize,
    ) -> Result<Vec<Value>, DeliveryError> {
        let filter = format!(
            "dataAreaId eq {} and {field} eq {}",
            odata_literal(&self.data_area),
            odata_literal(value)
        );
        let r = self
            .http
            .send(
                Method::GET,
                &format!("{}/{entity}", self.base),
                &[
                    ("$filter", filter),
                    ("$top", top.to_string()),
                    ("cross-company", "true".into()),
                ],
                &[],
                None,
            )
            .await?;
        Ok(r.body
            .get("value")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// The one record where `field` is `value`; two are a permanent error.
    async fn find(
        &self,
        entity: &str,
        field: &str,
        value: &str,
    ) -> Result<Option<Value>, DeliveryError> {
        let mut found = self.query(entity, field, value, 2).await?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(permanent(
                409,
                format!(
                    "more than one {entity} in {} has {field} {value}",
                    self.data_area
                ),
            )),
        }
    }

    async fn post(&self, entity: &str, body: &Value) -> Result<Reply, DeliveryError> {
        self.http
            .send(
                Method::POST,
                &format!("{}/{entity}", self.base),
                &[],
                &[],
                Some(body),
            )
            .await
    }

    /// PATCH or DELETE by the full key, with the etag the record was read with.
    async fn on_key(
        &self,
        method: Method,
        path: &str,
        record: &Value,
        body: Option<&Value>,
    ) -> Result<Reply, DeliveryError> {
        let etag = record
            .get("@odata.etag")
            .and_then(Value::as_str)
            .unwrap_or("*")
            .to_string();
        self.http
            .send(
                method,
                &format!("{}/{path}", self.base),
                &[],
                &[("If-Match", etag)],
                body,
            )
            .await
    }

    async fn upsert_customer(
        &self,
        c: &crate::domain::Customer,
    ) -> Result<(String, bool), DeliveryError> {
        let mut body = json!({
            "OrganizationName": c.name,
            "AddressStreet": c.address.line1,
            "AddressCity": c.address.city,
            "AddressState": c.address.state,
            "AddressZipCode": c.address.postal_code,
            "AddressCountryRegionISOCode": c.address.country,
            "PrimaryContactPhone": c.phone,
            "PrimaryContactEmail": c.email,
        });
        if let Some(cur) = &c.currency {
            body["SalesCurrencyCode"] = json!(cur.as_str());
        }
        if let Some(t) = &c.payment_terms {
            body["PaymentTerms"] = json!(t);
        }
        match self
            .find("CustomersV3", "CustomerAccount", &c.number)
            .await?
        {
            Some(existing) => {
                let path = self.key_path("CustomersV3", "CustomerAccount", &c.number)?;
                self.on_key(Method::PATCH, &path, &existing, Some(&body))
                    .await?;
                Ok((c.number.clone(), false))
            }
            None => {
                body["dataAreaId"] = json!(self.data_area);
                body["CustomerAccount"] = json!(c.number);
                body["CustomerGroupId"] = json!(self.customer_group);
                body["PartyType"] = json!("Organization");
                self.post("CustomersV3", &body).await?;
                Ok((c.number.clone(), true))
            }
        }
    }

    /// A document found by the CRM's number in `reference`: created with its lines, or its
    /// header updated and its lines replaced when they differ. Returns the number F&O gave
    /// it and whether it was created.
    async fn upsert_document(
        &self,
        doc: &DocumentEntities,
        crm_number: &str,
        header: Value,
        lines: &[DocLine],
    ) -> Result<(String, bool), DeliveryError> {
        let (number, created, existing) =
            match self.find(doc.header, doc.reference, crm_number).await? {
                Some(existing) => {
                    let number = text(&existing, doc.number);
                    let path = self.key_path(doc.header, doc.number, &number)?;
                    self.on_key(Method::PATCH, &path, &existing, Some(&header))
                        .await?;
                    (number, false, true)
                }
                None => {
                    let mut body = header;
                    body["dataAreaId"] = json!(self.data_area);
                    body[doc.reference] = json!(crm_number);
                    let r = self.post(doc.header, &body).await?;
                    let number = text(&r.body, doc.number);
                    if number.is_empty() {
                        return Err(permanent(
                            502,
                            format!("{} was created without a {}", doc.header, doc.number),
                        ));
                    }
                    (number, true, false)
                }
            };
        let wanted: Vec<Value> = lines
            .iter()
            .map(|l| {
                // Without its legal entity a line would go to the caller's default one.
                let mut b = doc.line_body(&number, l);
                b["dataAreaId"] = json!(self.data_area);
                b
            })
            .collect();
        // A document found again may hold lines from an earlier attempt, complete or not.
        let current = if existing {
            self.query(doc.lines, doc.number, &number, 1000).await?
        } else {
            Vec::new()
        };
        if !lines_equal(&current, &wanted) {
            for l in &current {
                let key = text(l, "InventoryLotId");
                let path = self.key_path(doc.lines, "InventoryLotId", &key)?;
                self.on_key(Method::DELETE, &path, l, None).await?;
            }
            for b in &wanted {
                self.post(doc.lines, b).await?;
            }
        }
        Ok((number, created))
    }
}

/// The entities and fields of one kind of sales document.
struct DocumentEntities {
    header: &'static str,
    lines: &'static str,
    /// The header's number field (assigned by F&O).
    number: &'static str,
    /// The header field holding the CRM's document number.
    reference: &'static str,
    /// The line's quantity field.
    quantity: &'static str,
}

const ORDER: DocumentEntities = DocumentEntities {
    header: "SalesOrderHeadersV2",
    lines: "SalesOrderLines",
    number: "SalesOrderNumber",
    reference: "CustomersOrderReference",
    quantity: "OrderedSalesQuantity",
};

const QUOTATION: DocumentEntities = DocumentEntities {
    header: "SalesQuotationHeadersV2",
    lines: "SalesQuotationLines",
    number: "SalesQuotationNumber",
    reference: "CustomersReference",
    quantity: "RequestedSalesQuantity",
};

impl DocumentEntities {
    fn line_body(&self, number: &str, l: &DocLine) -> Value {
        json!({
            self.number: number,
            "LineNumber": l.line_no,
            "ItemNumber": l.item_number,
            "LineDescription": l.description,
            self.quantity: decimal_number(l.quantity),
            "SalesUnitSymbol": l.unit,
            "SalesPrice": decimal_number(l.unit_price),
            "LineDiscountAmount": decimal_number(l.discount_amount),
        })
    }
}

/// Whether the lines F&O holds are the ones wanted (item, quantity, price, discount, in
/// order; the quantity field is whichever the document uses).
fn lines_equal(current: &[Value], wanted: &[Value]) -> bool {
    let project = |v: &Value| {
        let qty = v
            .get("OrderedSalesQuantity")
            .or_else(|| v.get("RequestedSalesQuantity"))
            .cloned()
            .unwrap_or(Value::Null);
        fingerprint(&json!([
            v.get("ItemNumber"),
            qty,
            v.get("SalesPrice"),
            v.get("LineDiscountAmount")
        ]))
    };
    current.len() == wanted.len()
        && current
            .iter()
            .zip(wanted)
            .all(|(a, b)| project(a) == project(b))
}

#[async_trait]
impl Connector for FinOpsConnector {
    fn system(&self) -> System {
        System::FinOps
    }

    async fn apply(&self, cmd: &Command) -> Result<Outcome, DeliveryError> {
        let written = fingerprint(&serde_json::to_value(&cmd.action).unwrap_or(Value::Null));
        // The legal entity the rules routed this record to, else the configured one.
        let this = self.in_area(cmd.company.as_deref());
        let (target_id, created, assigned) = match &cmd.action {
            Action::UpsertCustomer(c) => {
                let (id, created) = this.upsert_customer(c).await?;
                (id, created, None)
            }
            Action::UpsertOrder(o) => {
                let header = json!({
                    "OrderingCustomerAccountNumber": o.account_number,
                    "InvoiceCustomerAccountNumber": o.account_number,
                    "CurrencyCode": o.currency.as_str(),
                    "CustomerRequisitionNumber": o.customer_reference,
                    "RequestedShippingDate": o.requested_delivery.map(|d| format!("{d}T12:00:00Z")),
                });
                let (number, created) = this
                    .upsert_document(&ORDER, &o.number, header, &o.lines)
                    .await?;
                (number.clone(), created, Some(number))
            }
            Action::UpsertQuote(q) => {
                let header = json!({
                    "RequestingCustomerAccountNumber": q.account_number,
                    "CurrencyCode": q.currency.as_str(),
                    "SalesQuotationExpiryDate": q.valid_until.map(|d| format!("{d}T12:00:00Z")),
                });
                let (number, created) = this
                    .upsert_document(&QUOTATION, &q.number, header, &q.lines)
                    .await?;
                (number.clone(), created, Some(number))
            }
            Action::CreateCreditNote(note) => {
                let (number, created) = this.create_credit_note(note).await?;
                (number, created, None)
            }
            Action::UpsertContact(_) => {
                return Err(permanent(
                    501,
                    format!(
                        "{} is not written to Finance & Operations yet (its data entity is \
                         not confirmed)",
                        cmd.action.name()
                    ),
                ))
            }
            other => {
                return Err(permanent(
                    400,
                    format!("{} is not an ERP write", other.name()),
                ))
            }
        };
        Ok(Outcome {
            target_id,
            assigned_number: assigned,
            fingerprint: written,
            created,
        })
    }
}

#[async_trait]
impl SourceReader for FinOpsConnector {
    fn system(&self) -> System {
        System::FinOps
    }

    async fn read(&self, event: &ChangeEvent) -> Result<Vec<ChangeEvent>, DeliveryError> {
        match event.source.entity_type {
            EntityType::Invoice => {
                let mut ev = event.clone();
                let order = ev
                    .fields
                    .get("SalesOrderId")
                    .and_then(Value::as_str)
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_string);
                let reference = match order {
                    Some(order) => self
                        .in_area(event.company.as_deref())
                        .find("SalesOrderHeadersV2", "SalesOrderNumber", &order)
                        .await?
                        .and_then(|h| h.get("CustomersOrderReference").cloned())
                        .filter(|r| r.as_str().is_some_and(|s| !s.is_empty()))
                        .unwrap_or(Value::Null),
                    None => Value::Null,
                };
                ev.fields
                    .insert("CustomersOrderReference".into(), reference);
                // The fields changed: the content hash is computed afresh.
                ev.content_hash = Default::default();
                let account = ev
                    .fields
                    .get("InvoiceAccount")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let reread = self.customer_reread(&ev, &account);
                Ok(std::iter::once(ev).chain(reread).collect())
            }
            EntityType::Payment => {
                let mut ev = event.clone();
                ev.needs_fetch = false;
                let account = ev
                    .fields
                    .get("CustomerAccount")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let reread = self.customer_reread(&ev, &account);
                Ok(std::iter::once(ev).chain(reread).collect())
            }
            _ => self.read_record(event).await,
        }
    }
}

impl FinOpsConnector {
    /// The record a data event names, read by its key (with its lines for documents).
    async fn read_record(&self, event: &ChangeEvent) -> Result<Vec<ChangeEvent>, DeliveryError> {
        let Some((_, set, key_field, _)) = crate::inbound::fo::DATA_ENTITIES
            .iter()
            .find(|(t, _, _, _)| *t == event.source.entity_type)
        else {
            return Err(permanent(
                501,
                format!(
                    "{} records are not read from Finance & Operations",
                    event.source.entity_type
                ),
            ));
        };
        let key = event
            .natural_key
            .clone()
            .or_else(|| event.source.id.split_once(':').map(|(_, k)| k.to_string()))
            .unwrap_or_default();
        let scoped = self.in_area(event.company.as_deref());
        let Some(record) = scoped.find(set, key_field, &key).await? else {
            return Ok(Vec::new());
        };
        let mut fields: serde_json::Map<String, Value> = record
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| !k.starts_with('@'))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let lines = match event.source.entity_type {
            EntityType::Order => Some((ORDER.lines, ORDER.number)),
            EntityType::Quote => Some((QUOTATION.lines, QUOTATION.number)),
            _ => None,
        };
        if let Some((lines_set, number)) = lines {
            let found = scoped.query(lines_set, number, &key, 1000).await?;
            fields.insert(lines_set.into(), Value::Array(found));
        }
        if event.source.entity_type == EntityType::Account && !self.open_transactions.is_empty() {
            let open = scoped
                .query(&self.open_transactions, "CustomerAccount", &key, 10_000)
                .await?;
            fields.insert("OpenTransactions".into(), Value::Array(open));
        }
        let mut ev = event.clone();
        ev.fields = fields;
        ev.needs_fetch = false;
        ev.content_hash = Default::default();
        Ok(vec![ev])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EntityType, EventId};
    use crate::sim::fo::SimFinOps;
    use crate::sim::Fault;
    use std::sync::Arc;

    async fn env() -> (SimFinOps, FinOpsConnector) {
        let sim = SimFinOps::start("usmf").await.expect("sim");
        let http = Http::new(
            System::FinOps,
            Arc::new(super::super::http::StaticToken("t".into())),
        )
        .expect("http");
        // A legal entity other than the caller's default: only cross-company queries see it.
        let c = FinOpsConnector::new(http, sim.data_url(), "USRT", "10");
        (sim, c)
    }

    fn command(entity: EntityType, key: &str, action: Value) -> Command {
        let action: Action = serde_json::from_value(action).expect("action");
        Command::new(
            "sync#e-1",
            &EventId("dataverse:e-1".into()),
            System::FinOps,
            crate::domain::EntityKey::new(entity, key).expect("key"),
            action,
            "r-1",
        )
    }

    fn customer(name: &str) -> Command {
        command(
            EntityType::Account,
            "ACC-1",
            json!({"action": "upsert_customer", "record": {
                "number": "ACC-1", "name": name, "address": {"line1": "1 Main St", "city": "Redmond", "country": "US"},
                "currency": "USD", "payment_terms": "Net45"
            }}),
        )
    }

    fn order(lines: &[(&str, &str, &str)]) -> Command {
        let lines: Vec<Value> = lines
            .iter()
            .enumerate()
            .map(|(i, (item, qty, price))| {
                json!({"line_no": i + 1, "item_number": item, "quantity": qty, "unit": "ea", "unit_price": price})
            })
            .collect();
        command(
            EntityType::Order,
            "ORD-1",
            json!({"action": "upsert_order", "record": {
                "number": "ORD-1", "account_number": "ACC-1", "currency": "USD", "lines": lines,
                "requested_delivery": "2026-06-01", "customer_reference": "PO-7"
            }}),
        )
    }

    #[tokio::test]
    async fn a_customer_is_created_in_its_legal_entity_then_updated_by_its_full_key() {
        let (sim, c) = env().await;
        let first = c.apply(&customer("Contoso")).await.expect("created");
        assert!(first.created);
        let recs = sim.find("CustomersV3", "CustomerAccount", "ACC-1");
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0]["dataAreaId"], "usrt");
        assert_eq!(recs[0]["CustomerGroupId"], "10");
        assert_eq!(recs[0]["OrganizationName"], "Contoso");
        assert_eq!(recs[0]["PaymentTerms"], "Net45");
        let second = c.apply(&customer("Contoso Ltd")).await.expect("updated");
        assert!(!second.created);
        let recs = sim.find("CustomersV3", "CustomerAccount", "ACC-1");
        assert_eq!(recs.len(), 1, "updated, not duplicated");
        assert_eq!(recs[0]["OrganizationName"], "Contoso Ltd");
        assert_eq!(
            sim.log(),
            ["POST CustomersV3 201", "PATCH CustomersV3 204"],
            "read, then create; read, then update by key"
        );
    }

    #[tokio::test]
    async fn an_order_is_numbered_by_f_and_o_and_its_lines_replaced_only_when_they_differ() {
        let (sim, c) = env().await;
        let out = c
            .apply(&order(&[("P-200", "40", "460.00"), ("P-300", "2", "15.5")]))
            .await
            .expect("created");
        assert!(out.created);
        let number = out.assigned_number.expect("F&O's number");
        let header = &sim.find("SalesOrderHeadersV2", "CustomersOrderReference", "ORD-1")[0];
        assert_eq!(header["SalesOrderNumber"], json!(number));
        assert_eq!(header["OrderingCustomerAccountNumber"], "ACC-1");
        assert_eq!(header["RequestedShippingDate"], "2026-06-01T12:00:00Z");
        let lines = sim.find("SalesOrderLines", "SalesOrderNumber", &number);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["ItemNumber"], "P-200");
        assert_eq!(lines[0]["SalesPrice"].to_string(), "460");
        // The same order again: the header is updated, the lines are left alone.
        let again = c
            .apply(&order(&[("P-200", "40", "460.00"), ("P-300", "2", "15.5")]))
            .await
            .expect("updated");
        assert!(!again.created);
        assert_eq!(again.assigned_number.as_deref(), Some(number.as_str()));
        assert_eq!(
            sim.log()
                .iter()
                .filter(|l| l.starts_with("POST SalesOrderLines"))
                .count(),
            2
        );
        // A changed quantity: the lines are replaced.
        c.apply(&order(&[("P-200", "45", "460.00")]))
            .await
            .expect("updated");
        let lines = sim.find("SalesOrderLines", "SalesOrderNumber", &number);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["OrderedSalesQuantity"].to_string(), "45");
        assert_eq!(sim.records("SalesOrderHeadersV2").len(), 1);
    }

    #[tokio::test]
    async fn a_retry_after_a_failed_line_completes_the_order_without_a_second_header() {
        let (sim, c) = env().await;
        sim.inject(Fault {
            matching: "POST SalesOrderLines".into(),
            status: 429,
            retry_after: Some(7),
            message: "Too many requests".into(),
        });
        let err = c
            .apply(&order(&[("P-200", "40", "460.00")]))
            .await
            .expect_err("throttled");
        match err {
            DeliveryError::Transient {
                status,
                retry_after_ms,
                ..
            } => {
                assert_eq!(status, 429);
                assert_eq!(retry_after_ms, Some(7_000));
            }
            other => panic!("{other:?}"),
        }
        // The header exists without lines; the retry finds it and adds them.
        c.apply(&order(&[("P-200", "40", "460.00")]))
            .await
            .expect("retried");
        assert_eq!(sim.records("SalesOrderHeadersV2").len(), 1);
        assert_eq!(sim.records("SalesOrderLines").len(), 1);
    }

    #[tokio::test]
    async fn f_and_o_s_own_error_message_is_kept_and_permanent() {
        let (sim, c) = env().await;
        let http = Http::new(
            System::FinOps,
            Arc::new(super::super::http::StaticToken("t".into())),
        )
        .expect("http");
        // No customer group configured: F&O refuses the customer.
        let no_group = FinOpsConnector::new(http, sim.data_url(), "usmf", "");
        match no_group.apply(&customer("Contoso")).await {
            Err(DeliveryError::Permanent {
                status, message, ..
            }) => {
                assert_eq!(status, 400);
                assert!(
                    message.contains("Customer group must be filled in"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Contacts are refused with the reason, not guessed at.
        let contact = command(
            EntityType::Contact,
            "CON-1",
            json!({"action": "upsert_contact", "record": {
                "number": "CON-1", "account_number": "ACC-1", "first_name": "Ana", "last_name": "Silva"
            }}),
        );
        match c.apply(&contact).await {
            Err(DeliveryError::Permanent { message, .. }) => {
                assert!(
                    message.contains("not written to Finance & Operations yet"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn throttling_is_transient_with_the_retry_after_f_and_o_asks_for() {
        let (sim, c) = env().await;
        sim.inject(Fault {
            matching: "GET CustomersV3".into(),
            status: 429,
            retry_after: Some(5),
            message: "Too many requests".into(),
        });
        let err = c.apply(&customer("Contoso")).await.expect_err("throttled");
        assert!(
            matches!(
                err,
                DeliveryError::Transient {
                    status: 429,
                    retry_after_ms: Some(5000),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(sim.records("CustomersV3").is_empty(), "nothing written");
        let done = c
            .apply(&customer("Contoso"))
            .await
            .expect("the retry goes through");
        assert!(done.created);
    }

    #[tokio::test]
    async fn a_rebate_credit_note_is_one_negative_free_text_invoice_even_after_a_failed_line() {
        let (sim, c) = env().await;
        let c = c.with_rebate_account("403200");
        let cn = command(
            EntityType::Invoice,
            "REB-ACC-1-2026-Q2-Silver",
            json!({"action": "create_credit_note", "record": {
                "account_number": "ACC-1", "reference": "REB-ACC-1-2026-Q2-Silver", "currency": "USD",
                "amount": "368.00", "description": "Volume rebate", "period": "2026-Q2"
            }}),
        );
        // The line fails after the header was made: the retry adds the line only.
        sim.inject(Fault {
            matching: "POST FreeTextInvoiceLines".into(),
            status: 503,
            retry_after: None,
            message: "Service unavailable".into(),
        });
        assert!(c.apply(&cn).await.is_err());
        let done = c.apply(&cn).await.expect("retried");
        let again = c.apply(&cn).await.expect("once more");
        assert_eq!(done.target_id, again.target_id);
        assert!(!again.created);
        let headers = sim.records("FreeTextInvoiceHeaders");
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers[0]["CustomersReference"], "REB-ACC-1-2026-Q2-Silver");
        assert_eq!(
            headers[0]["dataAreaId"], "usrt",
            "the connector's legal entity"
        );
        let lines = sim.records("FreeTextInvoiceLines");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["Amount"], json!(-368));
        assert_eq!(lines[0]["MainAccountDisplayValue"], "403200");
    }

    #[tokio::test]
    async fn a_quotation_gets_f_and_o_s_number_and_its_lines() {
        let (sim, c) = env().await;
        let q = command(
            EntityType::Quote,
            "QUO-1",
            json!({"action": "upsert_quote", "record": {
                "number": "QUO-1", "account_number": "ACC-1", "currency": "USD", "valid_until": "2026-06-30",
                "lines": [{"line_no": 1, "item_number": "P-200", "quantity": "40", "unit_price": "460", "discount_amount": "92"}]
            }}),
        );
        let out = c.apply(&q).await.expect("created");
        let number = out.assigned_number.expect("number");
        assert!(number.starts_with("SQ-"), "{number}");
        let header = &sim.find("SalesQuotationHeadersV2", "CustomersReference", "QUO-1")[0];
        assert_eq!(header["SalesQuotationNumber"], json!(number));
        assert_eq!(header["dataAreaId"], "usrt");
        let lines = sim.find("SalesQuotationLines", "SalesQuotationNumber", &number);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["RequestedSalesQuantity"].to_string(), "40");
        assert_eq!(lines[0]["LineDiscountAmount"].to_string(), "92");
        assert!(!c.apply(&q).await.expect("again").created);
        assert_eq!(sim.records("SalesQuotationLines").len(), 1);
    }

    #[test]
    fn key_values_are_quoted_and_encoded() {
        assert_eq!(
            key_literal("O'Brien #1/2").expect("key"),
            "'O''Brien%20%231%2F2'"
        );
        assert!(key_literal("").is_err());
    }
}
