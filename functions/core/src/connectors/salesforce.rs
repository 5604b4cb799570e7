//! Salesforce REST API: writes by external id, so a repeated command finds what the first
//! attempt wrote.
//!
//! - Upsert is `PATCH /services/data/<v>/sobjects/<Object>/<ExternalIdField>/<value>`:
//!   `201` created, `200` (API 46.0 and later) or `204` (earlier) updated — on a `204`
//!   the record's id is read back — and `300` when several records carry the value: a
//!   permanent error naming them, since writing either would be a guess. Records that must
//!   already exist are written with `?updateOnly=true` (a missing one is a `404`).
//! - Parents are referenced by external id (`"Account__r": {"ERP_Customer_Number__c": …}`),
//!   so no id round trips are needed.
//! - Orders and quotes are created in Salesforce and numbered by it (`OrderNumber`,
//!   `QuoteNumber`, auto-numbers that cannot be external ids): they are found by one SOQL
//!   query, then updated by id.
//! - Every request names p2c's client id in `Sforce-Call-Options`, which change events
//!   carry back in `changeOrigin`: that is how p2c recognises its own writes.
//!
//! Fields p2c adds to the org: `ERP_Customer_Number__c` (Account, external id),
//! `ERP_Item_Number__c` (Product2, external id), `P2C_Price_Key__c` (PricebookEntry,
//! external id), `ERP_Order_Number__c`, `P2C_Credit_Status__c`,
//! `P2C_Credit_Message__c`, `P2C_Processing_Status__c` and the `P2C_ERP_*` totals (Order,
//! Quote), the `P2C_*` financials on Account, and the objects `ERP_Invoice__c` (external
//! id `ERP_Invoice_Number__c`) and `ERP_Payment__c` (`ERP_Payment_Id__c`). The README
//! lists them.

use super::http::{Http, Reply};
use crate::command::{Action, Command, Credit};
use crate::domain::System;
use crate::error::DeliveryError;
use crate::json::{decimal_number, fingerprint};
use crate::ports::{Connector, Outcome};
use crate::rules::SystemSettings;
use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Value};

/// The REST API version p2c speaks.
pub const API_VERSION: &str = "v62.0";

/// Writes to one Salesforce org.
pub struct SalesforceConnector {
    http: Http,
    /// `https://<domain>.my.salesforce.com/services/data/v62.0`
    base: String,
    settings: SystemSettings,
    call_options: String,
}

fn permanent(status: u16, message: impl Into<String>) -> DeliveryError {
    DeliveryError::Permanent {
        system: System::Salesforce.to_string(),
        status,
        message: message.into(),
    }
}

/// A value as a URL path segment (external id values may hold spaces or slashes).
fn segment(value: &str) -> Result<String, DeliveryError> {
    if value.is_empty() {
        return Err(permanent(
            400,
            "an empty external id value cannot address a record",
        ));
    }
    Ok(value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect())
}

/// A SOQL string literal.
pub fn soql_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn credit_text(credit: &Credit) -> (String, &'static str) {
    match credit {
        Credit::Release => ("Released to the ERP".into(), "Released"),
        Credit::Hold { reason } => (format!("Credit hold: {reason}"), "On hold"),
        Credit::Reject { reason } => (format!("Rejected: {reason}"), "Rejected"),
    }
}

impl SalesforceConnector {
    /// `instance_url` is the org's My Domain URL.
    pub fn new(http: Http, instance_url: &str, settings: SystemSettings) -> Self {
        Self {
            http,
            base: format!(
                "{}/services/data/{API_VERSION}",
                instance_url.trim_end_matches('/')
            ),
            call_options: format!("client={}", settings.client_id()),
            settings,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply, DeliveryError> {
        self.http
            .send(
                method,
                &format!("{}/{path}", self.base),
                query,
                &[("Sforce-Call-Options", self.call_options.clone())],
                body,
            )
            .await
    }

    /// Upserts `object` by `field = value`; returns the record's id and whether it was
    /// created.
    async fn upsert(
        &self,
        object: &str,
        field: &str,
        value: &str,
        body: &Value,
        update_only: bool,
    ) -> Result<(String, bool), DeliveryError> {
        let path = format!("sobjects/{object}/{field}/{}", segment(value)?);
        let query: Vec<(&str, String)> = if update_only {
            vec![("updateOnly", "true".into())]
        } else {
            Vec::new()
        };
        let reply = match self.send(Method::PATCH, &path, &query, Some(body)).await {
            Ok(r) => r,
            Err(DeliveryError::Permanent { status: 300, .. }) => {
                return Err(permanent(
                    300,
                    format!("several {object} records have {field} = `{value}`; p2c writes none of them (make the value unique)"),
                ))
            }
            Err(e) => return Err(e),
        };
        let created = reply.status == 201;
        let id = match reply.body.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            // 204 (API versions before 46.0): updated, no body; read the id back.
            None => {
                let r = self
                    .send(Method::GET, &path, &[("fields", "Id".into())], None)
                    .await?;
                r.body
                    .get("Id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            }
        };
        Ok((id, created))
    }

    /// The id of the one `object` whose `field` is `value` (orders and quotes, numbered by
    /// Salesforce).
    async fn find_id(
        &self,
        object: &str,
        field: &str,
        value: &str,
    ) -> Result<String, DeliveryError> {
        let q = format!(
            "SELECT Id FROM {object} WHERE {field} = {}",
            soql_literal(value)
        );
        let r = self.send(Method::GET, "query", &[("q", q)], None).await?;
        let ids: Vec<&str> = r
            .body
            .get("records")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.get("Id").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        match ids.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(permanent(
                404,
                format!("no {object} with {field} = `{value}` in Salesforce"),
            )),
            _ => Err(permanent(
                300,
                format!(
                    "several {object} records have {field} = `{value}`; p2c writes none of them"
                ),
            )),
        }
    }

    /// Updates the one `object` with `field = value`.
    async fn update_found(
        &self,
        object: &str,
        field: &str,
        value: &str,
        body: &Value,
    ) -> Result<String, DeliveryError> {
        let id = self.find_id(object, field, value).await?;
        self.send(
            Method::PATCH,
            &format!("sobjects/{object}/{id}"),
            &[],
            Some(body),
        )
        .await?;
        Ok(id)
    }

    fn price_book(&self) -> Result<String, DeliveryError> {
        self.settings.price_list_id.clone().ok_or_else(|| {
            permanent(
                400,
                "no price book configured (systems.salesforce.price_list_id in rules/flows.toml)",
            )
        })
    }

    /// A product, then its price book entry. The entry's price book and product cannot be
    /// changed once it exists, so it is updated first and created only if missing.
    async fn upsert_product(
        &self,
        p: &crate::domain::Product,
    ) -> Result<(String, bool), DeliveryError> {
        let product = json!({
            "Name": p.name,
            "ProductCode": p.number,
            "IsActive": p.active,
            "QuantityUnitOfMeasure": p.unit,
            "Family": p.product_group,
        });
        let (id, created) = self
            .upsert("Product2", "ERP_Item_Number__c", &p.number, &product, false)
            .await?;
        let book = self.price_book()?;
        let key = format!("{book}:{}", p.number);
        let price = json!({ "UnitPrice": decimal_number(p.unit_price), "IsActive": p.active });
        match self
            .upsert("PricebookEntry", "P2C_Price_Key__c", &key, &price, true)
            .await
        {
            Ok(_) => {}
            Err(DeliveryError::Permanent { status: 404, .. }) => {
                let entry = json!({
                    "Pricebook2Id": book,
                    "Product2": { "ERP_Item_Number__c": p.number },
                    "UnitPrice": decimal_number(p.unit_price),
                    "IsActive": p.active,
                    "CurrencyIsoCode": p.currency.as_str(),
                });
                self.upsert("PricebookEntry", "P2C_Price_Key__c", &key, &entry, false)
                    .await?;
            }
            Err(e) => return Err(e),
        }
        Ok((id, created))
    }
}

#[async_trait]
impl Connector for SalesforceConnector {
    fn system(&self) -> System {
        System::Salesforce
    }

    async fn apply(&self, cmd: &Command) -> Result<Outcome, DeliveryError> {
        let written = fingerprint(&serde_json::to_value(&cmd.action).unwrap_or(Value::Null));
        let status_field = self
            .settings
            .order_status_column
            .clone()
            .unwrap_or_else(|| "P2C_Processing_Status__c".into());
        let (id, created) = match &cmd.action {
            Action::UpsertProduct(p) => self.upsert_product(p).await?,
            Action::SetOrderCredit {
                order_number,
                credit,
            } => {
                let (text, label) = credit_text(credit);
                let body = json!({ "P2C_Credit_Status__c": label, "P2C_Credit_Message__c": text });
                (
                    self.update_found("Order", "OrderNumber", order_number, &body)
                        .await?,
                    false,
                )
            }
            Action::SetOrderErpNumber {
                order_number,
                erp_number,
            } => {
                let body = json!({ "ERP_Order_Number__c": erp_number });
                (
                    self.update_found("Order", "OrderNumber", order_number, &body)
                        .await?,
                    false,
                )
            }
            Action::SetOrderProgress(p) => {
                let mut body =
                    json!({ status_field: p.status.label(), "ERP_Order_Number__c": p.erp_number });
                if let (Some(o), Some(t), Some(i)) = (p.total_excl_tax, p.tax, p.total_incl_tax) {
                    body["P2C_ERP_Total_Excl_Tax__c"] = decimal_number(o);
                    body["P2C_ERP_Tax__c"] = decimal_number(t);
                    body["P2C_ERP_Total__c"] = decimal_number(i);
                }
                (
                    self.update_found("Order", "OrderNumber", &p.order_number, &body)
                        .await?,
                    false,
                )
            }
            Action::SetQuoteTotals(q) => {
                let body = json!({
                    "P2C_ERP_Quote_Number__c": q.erp_number,
                    "P2C_ERP_Total_Excl_Tax__c": decimal_number(q.total_excl_tax),
                    "P2C_ERP_Tax__c": decimal_number(q.tax),
                    "P2C_ERP_Total__c": decimal_number(q.total_incl_tax),
                });
                (
                    self.update_found("Quote", "QuoteNumber", &q.quote_number, &body)
                        .await?,
                    false,
                )
            }
            Action::SetFinancials(f) => {
                let body = json!({
                    "P2C_Credit_Limit__c": decimal_number(f.credit_limit),
                    "P2C_Credit_Hold__c": f.on_hold,
                    "P2C_Balance__c": decimal_number(f.balance),
                    "P2C_Overdue_Amount__c": decimal_number(f.overdue_amount),
                    "P2C_Days_Overdue__c": f.days_overdue,
                });
                self.upsert(
                    "Account",
                    "ERP_Customer_Number__c",
                    &f.account_number,
                    &body,
                    true,
                )
                .await?
            }
            Action::UpsertInvoice { invoice: i, rebate } => {
                let kind = match i.kind {
                    crate::domain::InvoiceKind::Invoice => "Invoice",
                    crate::domain::InvoiceKind::CreditNote => "Credit note",
                };
                let mut body = json!({
                    "Name": format!("{kind} {}", i.number),
                    "Account__r": { "ERP_Customer_Number__c": i.account_number },
                    "Kind__c": kind,
                    "Invoice_Date__c": i.invoice_date.to_string(),
                    "Due_Date__c": i.due_date.map(|d| d.to_string()),
                    "Total_Excl_Tax__c": decimal_number(i.total_excl_tax),
                    "Tax__c": decimal_number(i.tax),
                    "Total__c": decimal_number(i.total_incl_tax),
                    "Remaining__c": decimal_number(i.remaining),
                    "Order_Number__c": i.order_number,
                    "CurrencyIsoCode": i.currency.as_str(),
                });
                if let Some(r) = rebate {
                    body["Rebate_Tier__c"] = json!(r.tier);
                    body["Rebate_Accrual__c"] = decimal_number(r.accrual);
                }
                self.upsert(
                    "ERP_Invoice__c",
                    "ERP_Invoice_Number__c",
                    &i.number,
                    &body,
                    false,
                )
                .await?
            }
            Action::UpsertPayment(p) => {
                let body = json!({
                    "Name": format!("Payment {}", p.id),
                    "Account__r": { "ERP_Customer_Number__c": p.account_number },
                    "Amount__c": decimal_number(p.amount),
                    "Posting_Date__c": p.posting_date.to_string(),
                    "Invoice_Number__c": p.applies_to_invoice,
                    "CurrencyIsoCode": p.currency.as_str(),
                });
                self.upsert("ERP_Payment__c", "ERP_Payment_Id__c", &p.id, &body, false)
                    .await?
            }
            other => {
                return Err(permanent(
                    400,
                    format!("{} is not a CRM write", other.name()),
                ))
            }
        };
        Ok(Outcome {
            target_id: id,
            assigned_number: None,
            fingerprint: written,
            created,
        })
    }
}

/// The object behind each entity type, and the line items read with it.
fn object_of(
    entity_type: crate::domain::EntityType,
) -> Option<(&'static str, Option<(&'static str, &'static str)>)> {
    use crate::domain::EntityType;
    // (object, (line object, its parent field))
    Some(match entity_type {
        EntityType::Account => ("Account", None),
        EntityType::Contact => ("Contact", None),
        EntityType::Item => ("Product2", None),
        EntityType::Quote => ("Quote", Some(("QuoteLineItem", "QuoteId"))),
        EntityType::Order => ("Order", Some(("OrderItem", "OrderId"))),
        _ => return None,
    })
}

/// The line item fields read with an order or quote.
const LINE_FIELDS: &str = "Id, Product2Id, Quantity, UnitPrice, Discount, Description";

/// Salesforce's date-time form (`2026-05-14T09:20:03.000+0000`) in epoch milliseconds.
pub fn salesforce_time_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|t| t.timestamp_millis())
}

#[async_trait]
impl crate::ports::SourceReader for SalesforceConnector {
    fn system(&self) -> System {
        System::Salesforce
    }

    /// Reads the record in full (update and gap events carry only part of it, or nothing),
    /// with an order's or quote's line items under `OrderItems` / `QuoteLineItems`. A record
    /// that no longer exists reads as nothing.
    async fn read(
        &self,
        event: &crate::domain::ChangeEvent,
    ) -> Result<Vec<crate::domain::ChangeEvent>, DeliveryError> {
        let (object, lines) = object_of(event.source.entity_type).ok_or_else(|| {
            permanent(
                400,
                format!(
                    "p2c does not read {} records from Salesforce",
                    event.source.entity_type
                ),
            )
        })?;
        let id = &event.source.id;
        let reply = match self
            .send(
                Method::GET,
                &format!("sobjects/{object}/{}", segment(id)?),
                &[],
                None,
            )
            .await
        {
            Ok(r) => r,
            Err(DeliveryError::Permanent { status: 404, .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut fields = reply.body.as_object().cloned().unwrap_or_default();
        fields.remove("attributes");
        if let Some((line_object, parent)) = lines {
            let q = format!(
                "SELECT {LINE_FIELDS} FROM {line_object} WHERE {parent} = {}",
                soql_literal(id)
            );
            let r = self.send(Method::GET, "query", &[("q", q)], None).await?;
            let items: Vec<Value> = r
                .body
                .get("records")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            let mut x = x.clone();
                            if let Some(o) = x.as_object_mut() {
                                o.remove("attributes");
                            }
                            x
                        })
                        .collect()
                })
                .unwrap_or_default();
            fields.insert(format!("{line_object}s"), Value::Array(items));
        }
        let natural_key = crate::inbound::salesforce::natural_key(object, &fields);
        crate::inbound::salesforce::as_lookups(&mut fields);
        let read_version = crate::domain::SourceVersion {
            sequence: None,
            modified_ms: fields
                .get("LastModifiedDate")
                .and_then(Value::as_str)
                .and_then(salesforce_time_ms),
        };
        Ok(vec![crate::domain::ChangeEvent {
            event_id: event.event_id.clone(),
            source: event.source.clone(),
            natural_key,
            operation: event.operation,
            fields,
            previous: event.previous.clone(),
            needs_fetch: false,
            resource: None,
            // A change event's commit number orders changes; a read has only a time.
            version: if event.version.is_empty() {
                read_version
            } else {
                event.version
            },
            origin: event.origin.clone(),
            company: event.company.clone(),
            received_at: event.received_at,
            content_hash: Default::default(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EntityType, EventId};
    use crate::sim::salesforce::SimSalesforce;
    use crate::sim::Fault;
    use std::sync::Arc;

    async fn org() -> (SimSalesforce, SalesforceConnector) {
        let sim = SimSalesforce::start().await.expect("sim");
        let http = Http::new(
            System::Salesforce,
            Arc::new(super::super::http::StaticToken("t".into())),
        )
        .expect("http");
        let settings = SystemSettings {
            price_list_id: Some("01s5f000000AbcdAAC".into()),
            ..Default::default()
        };
        let c = SalesforceConnector::new(http, sim.instance_url(), settings);
        (sim, c)
    }

    fn command(action: Value) -> Command {
        let action: Action = serde_json::from_value(action).expect("action");
        Command::new(
            "sync#e-1",
            &EventId("bc:e-1".into()),
            System::Salesforce,
            crate::domain::EntityKey::new(EntityType::Account, "C-1").expect("key"),
            action,
            "r-1",
        )
    }

    fn financials(balance: &str) -> Command {
        command(json!({"action": "set_financials", "record": {
            "account_number": "C-1", "currency": "USD", "balance": balance,
            "credit_limit": "50000.00", "overdue_amount": "0", "days_overdue": 0, "on_hold": false
        }}))
    }

    fn invoice(total: &str) -> Command {
        command(json!({"action": "upsert_invoice", "record": {"invoice": {
            "number": "INV-1", "kind": "invoice", "account_number": "C-1", "currency": "USD",
            "invoice_date": "2026-05-14", "total_excl_tax": total, "tax": "0", "total_incl_tax": total,
            "remaining": total
        }, "rebate": null}}))
    }

    #[tokio::test]
    async fn an_invoice_is_created_then_updated_by_its_external_id_with_its_account_by_reference() {
        let (sim, c) = org().await;
        let account = sim.insert(
            "Account",
            json!({"Name": "Contoso", "ERP_Customer_Number__c": "C-1"}),
        );
        let first = c.apply(&invoice("100.10")).await.expect("created");
        assert!(first.created);
        let again = c.apply(&invoice("100.20")).await.expect("updated");
        assert!(!again.created);
        assert_eq!(again.target_id, first.target_id);
        let recs = sim.find("ERP_Invoice__c", "ERP_Invoice_Number__c", "INV-1");
        assert_eq!(recs.len(), 1, "the repeat found the first write");
        assert_eq!(recs[0]["Account__c"], json!(account));
        assert_eq!(
            recs[0]["Total__c"].to_string(),
            "100.2",
            "money is exact (no float)"
        );
        assert_eq!(
            recs[0]["LastModifiedByClient"],
            json!("p2c"),
            "the writer's client id, which change events carry back (echo recognition)"
        );
    }

    #[tokio::test]
    async fn an_update_answered_with_204_reads_the_id_back() {
        let (sim, c) = org().await;
        let id = sim.insert("Account", json!({"ERP_Customer_Number__c": "C-1"}));
        sim.answer_updates_with_204(true);
        let out = c.apply(&financials("1200.50")).await.expect("updated");
        assert_eq!(out.target_id, id);
        assert!(!out.created);
        assert_eq!(
            sim.find("Account", "ERP_Customer_Number__c", "C-1")[0]["P2C_Balance__c"].to_string(),
            "1200.5"
        );
    }

    #[tokio::test]
    async fn financials_never_create_an_account_and_several_matches_write_nothing() {
        let (sim, c) = org().await;
        let err = c.apply(&financials("1")).await.expect_err("no account");
        assert!(
            matches!(err, DeliveryError::Permanent { status: 404, .. }),
            "{err:?}"
        );
        assert!(sim
            .find("Account", "ERP_Customer_Number__c", "C-1")
            .is_empty());
        sim.insert("Account", json!({"ERP_Customer_Number__c": "C-1"}));
        sim.insert("Account", json!({"ERP_Customer_Number__c": "C-1"}));
        let err = c.apply(&financials("1")).await.expect_err("ambiguous");
        assert!(
            matches!(&err, DeliveryError::Permanent { status: 300, message, .. } if message.contains("several Account")),
            "{err:?}"
        );
        assert!(sim
            .find("Account", "ERP_Customer_Number__c", "C-1")
            .iter()
            .all(|r| !r.contains_key("P2C_Balance__c")));
    }

    #[tokio::test]
    async fn throttling_is_transient_with_its_retry_after_and_refusals_keep_salesforce_s_message() {
        let (sim, c) = org().await;
        sim.insert("Account", json!({"ERP_Customer_Number__c": "C-1"}));
        sim.inject(Fault {
            matching: "PATCH Account".into(),
            status: 429,
            retry_after: Some(7),
            message: "TotalRequests Limit exceeded.".into(),
        });
        let err = c.apply(&financials("1")).await.expect_err("throttled");
        assert!(
            matches!(
                err,
                DeliveryError::Transient {
                    status: 429,
                    retry_after_ms: Some(7000),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            c.apply(&financials("1")).await.is_ok(),
            "the retry goes through"
        );
        // An invoice for an account Salesforce does not have: its own message is kept.
        let err = c
            .apply(&command(json!({"action": "upsert_invoice", "record": {"invoice": {
                "number": "INV-9", "kind": "invoice", "account_number": "C-404", "currency": "USD",
                "invoice_date": "2026-05-14", "total_excl_tax": "1", "tax": "0", "total_incl_tax": "1"
            }, "rebate": null}})))
            .await
            .expect_err("unknown account");
        let DeliveryError::Permanent {
            status, message, ..
        } = err
        else {
            panic!("permanent expected");
        };
        assert_eq!(status, 400);
        assert!(
            message.starts_with("INVALID_FIELD: Foreign key external ID: C-404"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn orders_numbered_by_salesforce_are_found_by_number_and_updated() {
        let (sim, c) = org().await;
        let id = sim.insert(
            "Order",
            json!({"OrderNumber": "00000123", "Status": "Draft"}),
        );
        let out = c
            .apply(&command(
                json!({"action": "set_order_credit", "record": {"order_number": "00000123",
                "credit": {"decision": "hold", "reason": "Over the credit limit"}}}),
            ))
            .await
            .expect("updated");
        assert_eq!(out.target_id, id);
        let o = &sim.find("Order", "OrderNumber", "00000123")[0];
        assert_eq!(o["P2C_Credit_Status__c"], json!("On hold"));
        assert_eq!(
            o["P2C_Credit_Message__c"],
            json!("Credit hold: Over the credit limit")
        );
        let err = c
            .apply(&command(
                json!({"action": "set_order_erp_number", "record": {"order_number": "it's-missing",
                "erp_number": "101001"}}),
            ))
            .await
            .expect_err("no such order");
        assert!(
            matches!(err, DeliveryError::Permanent { status: 404, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_product_gets_one_price_book_entry_created_once_and_then_repriced() {
        let (sim, c) = org().await;
        let product = |price: &str| {
            command(json!({"action": "upsert_product", "record": {
                "number": "P-200", "name": "Pump", "unit": "Each", "unit_price": price,
                "currency": "USD", "active": true
            }}))
        };
        assert!(c.apply(&product("460.00")).await.expect("created").created);
        c.apply(&product("470.00")).await.expect("repriced");
        let entries = sim.find(
            "PricebookEntry",
            "P2C_Price_Key__c",
            "01s5f000000AbcdAAC:P-200",
        );
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["UnitPrice"].to_string(), "470");
        let product_id = sim.find("Product2", "ERP_Item_Number__c", "P-200")[0]["Id"].clone();
        assert_eq!(
            entries[0]["Product2Id"], product_id,
            "the product by its external id"
        );
        assert_eq!(
            sim.log(),
            [
                "PATCH Product2 201",
                "PATCH PricebookEntry 404",
                "PATCH PricebookEntry 201",
                "PATCH Product2 200",
                "PATCH PricebookEntry 200"
            ],
            "the entry's price book and product are sent only when it is created"
        );
    }

    #[tokio::test]
    async fn an_update_event_reads_the_order_with_its_items_and_keeps_the_commit_number() {
        use crate::ports::SourceReader;
        let (sim, c) = org().await;
        let order = sim.insert(
            "Order",
            json!({"OrderNumber": "00000123", "AccountId": "0015f00002J9YYEAA3",
                   "LastModifiedDate": "2026-05-14T09:20:03.000+0000"}),
        );
        sim.insert("OrderItem", json!({"OrderId": order, "Product2Id": "01t5f0000001AAA", "Quantity": 40, "UnitPrice": 460.0}));
        sim.insert(
            "OrderItem",
            json!({"OrderId": "8015f0000099999AAA", "Quantity": 1}),
        );
        let body = json!({
            "ChangeEventHeader": {"entityName": "Order", "recordIds": [order], "changeType": "UPDATE",
                "changeOrigin": "", "transactionKey": "t", "sequenceNumber": 1,
                "commitTimestamp": 1778750403000u64, "commitNumber": 42, "commitUser": "005",
                "nulledFields": [], "diffFields": [], "changedFields": ["Description"]},
            "Description": "rush"
        });
        let ev = crate::inbound::salesforce::parse_cdc(&body, &[], chrono::Utc::now())
            .expect("parses")
            .remove(0);
        assert!(ev.needs_fetch);
        let read = c.read(&ev).await.expect("reads").remove(0);
        assert!(!read.needs_fetch);
        assert_eq!(read.natural_key.as_deref(), Some("00000123"));
        assert_eq!(
            read.fields["AccountId"],
            json!({"id": "0015f00002J9YYEAA3", "logical_name": "account"}),
            "a reference becomes a lookup"
        );
        let items = read.fields["OrderItems"].as_array().expect("items");
        assert_eq!(items.len(), 1, "only this order's items");
        assert_eq!(items[0]["Quantity"], json!(40));
        assert_eq!(items[0]["Product2Id"]["logical_name"], json!("product"));
        assert_eq!(
            read.version.sequence,
            Some((42, 1)),
            "the change event orders it"
        );
        let gone = crate::domain::ChangeEvent {
            source: crate::domain::SourceRef::new(
                System::Salesforce,
                EntityType::Order,
                "8015f0000000000AAA",
            ),
            ..ev
        };
        assert!(
            c.read(&gone).await.expect("reads").is_empty(),
            "a deleted record reads as nothing"
        );
        assert_eq!(
            salesforce_time_ms("2026-05-14T09:20:03.000+0000"),
            Some(1_778_750_403_000)
        );
    }

    #[test]
    fn soql_literals_and_path_segments_are_escaped() {
        assert_eq!(soql_literal(r"O'1\x"), r"'O\'1\\x'");
        assert_eq!(segment("A B/C").expect("segment"), "A%20B%2FC");
        assert!(segment("").is_err());
    }
}
