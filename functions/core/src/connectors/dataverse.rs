//! Dataverse Web API: writes by alternate key, reads for re-reads and expanded lines.
//!
//! Upsert is `PATCH <set>(<key>='<value>')`; updates of records that must already exist
//! add `If-Match: *` (a missing record is then a 404, not a silent create). Lookups are
//! bound with `<nav>@odata.bind` to alternate-key URLs, so no GUID round trips are needed.
//! Columns p2c adds to the CRM carry the `p2c_` prefix (see the README).

use super::http::{odata_literal, Http, Reply};
use crate::command::{Action, Command, Credit};
use crate::domain::{ChangeEvent, EntityType, Operation, SourceRef, SourceVersion, System};
use crate::error::DeliveryError;
use crate::inbound::dataverse::{normalize_webapi_record, table_of};
use crate::json::{decimal_number, fingerprint};
use crate::ports::{Connector, Outcome, SourceReader};
use crate::rules::SystemSettings;
use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;

/// Writes to and reads from one Dataverse environment.
pub struct DataverseConnector {
    http: Http,
    /// `https://<org>.crm.dynamics.com/api/data/v9.2`
    base: String,
    settings: SystemSettings,
    uoms: Mutex<HashMap<String, (String, String)>>,
}

fn permanent(status: u16, message: impl Into<String>) -> DeliveryError {
    DeliveryError::Permanent {
        system: System::Dataverse.to_string(),
        status,
        message: message.into(),
    }
}

/// `set(column='value')`, refusing characters Dataverse does not allow in key values.
pub fn key_url(set: &str, column: &str, value: &str) -> Result<String, DeliveryError> {
    if value.is_empty() || value.chars().any(|c| "/<>*%&:\\?+".contains(c)) {
        return Err(permanent(400, format!("`{value}` cannot be a Dataverse alternate key value (it is empty or has one of / < > * % & : \\ ? +)")));
    }
    Ok(format!("{set}({column}={})", odata_literal(value)))
}

impl DataverseConnector {
    pub fn new(http: Http, base: impl Into<String>, settings: SystemSettings) -> Self {
        Self {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            settings,
            uoms: Mutex::new(HashMap::new()),
        }
    }

    fn odata_headers(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("OData-MaxVersion", "4.0".to_string()),
            ("OData-Version", "4.0".to_string()),
            ("Prefer", "return=representation".to_string()),
        ];
        for (k, v) in extra {
            h.push((k, v.to_string()));
        }
        h
    }

    async fn patch(
        &self,
        path: &str,
        body: &Value,
        must_exist: bool,
    ) -> Result<Reply, DeliveryError> {
        let headers = if must_exist {
            Self::odata_headers(&[("If-Match", "*")])
        } else {
            Self::odata_headers(&[])
        };
        self.http
            .send(
                Method::PATCH,
                &format!("{}/{}", self.base, path),
                &[],
                &headers,
                Some(body),
            )
            .await
    }

    /// A unit (uom) and its unit group by name, cached for the life of the process.
    async fn uom(&self, name: &str) -> Result<(String, String), DeliveryError> {
        if let Some(hit) = self.uoms.lock().ok().and_then(|m| m.get(name).cloned()) {
            return Ok(hit);
        }
        let r = self
            .http
            .send(
                Method::GET,
                &format!("{}/uoms", self.base),
                &[
                    ("$filter", format!("name eq {}", odata_literal(name))),
                    ("$select", "uomid,_uomscheduleid_value".into()),
                ],
                &Self::odata_headers(&[]),
                None,
            )
            .await?;
        let first = r
            .body
            .get("value")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .cloned()
            .ok_or_else(|| permanent(404, format!("no unit named `{name}` in Dataverse")))?;
        let pair = (
            first
                .get("uomid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            first
                .get("_uomscheduleid_value")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        );
        if let Ok(mut m) = self.uoms.lock() {
            m.insert(name.to_string(), pair.clone());
        }
        Ok(pair)
    }

    fn price_list(&self) -> Result<String, DeliveryError> {
        self.settings.price_list_id.clone().ok_or_else(|| {
            permanent(
                400,
                "no price list configured (systems.dataverse.price_list_id in rules/flows.toml)",
            )
        })
    }
}

fn id_of(reply: &Reply, id_column: &str) -> String {
    reply
        .body
        .get(id_column)
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            reply
                .entity_id_header
                .as_deref()
                .and_then(|h| h.rsplit_once('('))
                .map(|(_, r)| r.trim_end_matches(')').to_string())
        })
        .unwrap_or_default()
}

fn credit_text(credit: &Credit) -> (String, &'static str) {
    match credit {
        Credit::Release => ("Released to the ERP".into(), "Released"),
        Credit::Hold { reason } => (format!("Credit hold: {reason}"), "On hold"),
        Credit::Reject { reason } => (format!("Rejected: {reason}"), "Rejected"),
    }
}

#[async_trait]
impl Connector for DataverseConnector {
    fn system(&self) -> System {
        System::Dataverse
    }

    async fn apply(&self, cmd: &Command) -> Result<Outcome, DeliveryError> {
        let written = fingerprint(&serde_json::to_value(&cmd.action).unwrap_or(Value::Null));
        let status_col = self
            .settings
            .order_status_column
            .clone()
            .unwrap_or_else(|| "p2c_processingstatus".into());
        let order = |n: &str| key_url("salesorders", "ordernumber", n);
        // Each write: the record's key URL, the body, whether it must exist, its id column.
        let (path, body, must_exist, id_col) = match &cmd.action {
            Action::UpsertProduct(p) => return self.upsert_product(p, written).await,
            Action::SetOrderCredit {
                order_number,
                credit,
            } => {
                let (text, label) = credit_text(credit);
                (
                    order(order_number)?,
                    json!({ "submitstatusdescription": text, "p2c_creditstatus": label }),
                    true,
                    "salesorderid",
                )
            }
            Action::SetOrderErpNumber {
                order_number,
                erp_number,
            } => (
                order(order_number)?,
                json!({ "p2c_erpordernumber": erp_number }),
                true,
                "salesorderid",
            ),
            Action::SetOrderProgress(p) => {
                let mut body =
                    json!({ status_col: p.status.label(), "p2c_erpordernumber": p.erp_number });
                if let (Some(o), Some(t), Some(i)) = (p.total_excl_tax, p.tax, p.total_incl_tax) {
                    body["totalamountlessfreight"] = decimal_number(o);
                    body["totaltax"] = decimal_number(t);
                    body["totalamount"] = decimal_number(i);
                }
                (order(&p.order_number)?, body, true, "salesorderid")
            }
            Action::SetQuoteTotals(q) => {
                let body = json!({
                    "totalamountlessfreight": decimal_number(q.total_excl_tax),
                    "totaltax": decimal_number(q.tax),
                    "totalamount": decimal_number(q.total_incl_tax),
                    "p2c_erpquotenumber": q.erp_number,
                });
                (
                    key_url("quotes", "quotenumber", &q.quote_number)?,
                    body,
                    true,
                    "quoteid",
                )
            }
            Action::UpsertInvoice { invoice: i, rebate } => {
                let kind = match i.kind {
                    crate::domain::InvoiceKind::Invoice => ("Invoice", "invoice"),
                    crate::domain::InvoiceKind::CreditNote => ("Credit note", "credit_note"),
                };
                let mut body = json!({
                    "name": format!("{} {}", kind.0, i.number),
                    "customerid_account@odata.bind": format!("/{}", key_url("accounts", "accountnumber", &i.account_number)?),
                    "pricelevelid@odata.bind": format!("/pricelevels({})", self.price_list()?),
                    "totalamountlessfreight": decimal_number(i.total_excl_tax),
                    "totaltax": decimal_number(i.tax),
                    "totalamount": decimal_number(i.total_incl_tax),
                    "p2c_remainingamount": decimal_number(i.remaining),
                    "p2c_invoicedate": i.invoice_date.to_string(),
                    "duedate": i.due_date.map(|d| d.to_string()),
                    "p2c_kind": kind.1,
                });
                if let Some(o) = &i.order_number {
                    body["salesorderid@odata.bind"] = json!(format!("/{}", order(o)?));
                }
                if let Some(r) = rebate {
                    body["p2c_rebatetier"] = json!(r.tier);
                    body["p2c_rebateaccrual"] = decimal_number(r.accrual);
                }
                (
                    key_url("invoices", "invoicenumber", &i.number)?,
                    body,
                    false,
                    "invoiceid",
                )
            }
            Action::SetFinancials(f) => {
                let body = json!({
                    "creditlimit": decimal_number(f.credit_limit),
                    "creditonhold": f.on_hold,
                    "p2c_balance": decimal_number(f.balance),
                    "p2c_overdueamount": decimal_number(f.overdue_amount),
                    "p2c_daysoverdue": f.days_overdue,
                });
                (
                    key_url("accounts", "accountnumber", &f.account_number)?,
                    body,
                    true,
                    "accountid",
                )
            }
            Action::UpsertPayment(p) => {
                let body = json!({
                    "p2c_amount": decimal_number(p.amount),
                    "p2c_postingdate": p.posting_date.to_string(),
                    "p2c_invoicenumber": p.applies_to_invoice,
                    "p2c_accountid@odata.bind": format!("/{}", key_url("accounts", "accountnumber", &p.account_number)?),
                });
                (
                    key_url("p2c_payments", "p2c_paymentnumber", &p.id)?,
                    body,
                    false,
                    "p2c_paymentid",
                )
            }
            other => {
                return Err(permanent(
                    400,
                    format!("{} is not a CRM write", other.name()),
                ))
            }
        };
        let reply = self.patch(&path, &body, must_exist).await?;
        Ok(Outcome {
            target_id: id_of(&reply, id_col),
            assigned_number: None,
            fingerprint: written,
            created: reply.status == 201,
        })
    }
}

impl DataverseConnector {
    /// A product, then its price list item (keyed by price list and product).
    async fn upsert_product(
        &self,
        p: &crate::domain::Product,
        written: String,
    ) -> Result<Outcome, DeliveryError> {
        let (uom, schedule) = self.uom(&p.unit).await?;
        let body = json!({
            "name": p.name,
            "price": decimal_number(p.unit_price),
            "defaultuomid@odata.bind": format!("/uoms({uom})"),
            "defaultuomscheduleid@odata.bind": format!("/uomschedules({schedule})"),
            "p2c_productgroup": p.product_group,
            "p2c_isactive": p.active,
        });
        let reply = self
            .patch(
                &key_url("products", "productnumber", &p.number)?,
                &body,
                false,
            )
            .await?;
        let product_id = id_of(&reply, "productid");
        let pl = self.price_list()?;
        let price = json!({ "amount": decimal_number(p.unit_price), "uomid@odata.bind": format!("/uoms({uom})"), "pricingmethodcode": 1 });
        self.patch(
            &format!("productpricelevels(_pricelevelid_value={pl},_productid_value={product_id})"),
            &price,
            false,
        )
        .await?;
        Ok(Outcome {
            target_id: product_id,
            assigned_number: None,
            fingerprint: written,
            created: reply.status == 201,
        })
    }
}

/// The lines to expand when reading a record of each type.
fn expand_of(entity_type: EntityType) -> Option<&'static str> {
    match entity_type {
        EntityType::Order => Some("order_details"),
        EntityType::Quote => Some("quote_details"),
        _ => None,
    }
}

#[async_trait]
impl SourceReader for DataverseConnector {
    fn system(&self) -> System {
        System::Dataverse
    }

    async fn read(&self, event: &ChangeEvent) -> Result<Vec<ChangeEvent>, DeliveryError> {
        let (_, set, key_col) = table_of(event.source.entity_type);
        let mut query = Vec::new();
        if let Some(e) = expand_of(event.source.entity_type) {
            query.push(("$expand", e.to_string()));
        }
        let url = format!("{}/{set}({})", self.base, event.source.id);
        let reply = match self
            .http
            .send(Method::GET, &url, &query, &Self::odata_headers(&[]), None)
            .await
        {
            Ok(r) => r,
            Err(DeliveryError::Permanent { status: 404, .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let rec = reply.body.as_object().cloned().unwrap_or_default();
        let fields: Map<String, Value> = normalize_webapi_record(&rec);
        let version = SourceVersion {
            sequence: fields
                .get("versionnumber")
                .and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .map(|v| (v, 0)),
            modified_ms: fields
                .get("modifiedon")
                .and_then(Value::as_str)
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.timestamp_millis()),
        };
        let natural_key = key_col
            .and_then(|c| fields.get(c))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(vec![ChangeEvent {
            event_id: event.event_id.clone(),
            source: SourceRef::new(
                System::Dataverse,
                event.source.entity_type,
                event.source.id.clone(),
            ),
            natural_key,
            operation: if event.operation == Operation::Changed {
                Operation::Update
            } else {
                event.operation
            },
            fields,
            previous: event.previous.clone(),
            needs_fetch: false,
            resource: None,
            version: if version.is_empty() {
                event.version
            } else {
                version
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
    use crate::domain::{EntityKey, EventId};
    use crate::sim::dataverse::SimDataverse;
    use crate::sim::Fault;
    use serde_json::json;
    use std::sync::Arc;

    async fn env() -> (SimDataverse, DataverseConnector) {
        let sim = SimDataverse::start("7d5c0e12-3b1a-ef11-9f8a-6045bdd4c6be")
            .await
            .expect("sim");
        let http = Http::new(
            System::Dataverse,
            Arc::new(super::super::http::StaticToken("t".into())),
        )
        .expect("http");
        let c = DataverseConnector::new(http, sim.api_base(), SystemSettings::default());
        (sim, c)
    }

    fn financials(account: &str, balance: &str) -> Command {
        let action: Action = serde_json::from_value(json!({"action": "set_financials", "record": {
            "account_number": account, "currency": "USD", "balance": balance, "credit_limit": "5000",
            "overdue_amount": "0", "days_overdue": 0, "on_hold": false
        }}))
        .expect("action");
        Command::new(
            "sync#e-1",
            &EventId("business_central:e-1".into()),
            System::Dataverse,
            EntityKey::new(EntityType::Account, account).expect("key"),
            action,
            "r-1",
        )
    }

    /// An update by alternate key; throttling is transient with the Retry-After Dataverse
    /// gives; a refusal is permanent with Dataverse's own message.
    #[tokio::test]
    async fn an_account_is_updated_by_its_key_throttling_waits_and_refusals_keep_the_message() {
        let (sim, c) = env().await;
        sim.create(
            "accounts",
            json!({"accountnumber": "ACC-1", "name": "Contoso"}),
        )
        .expect("account");
        sim.inject(Fault {
            matching: "PATCH accounts".into(),
            status: 429,
            retry_after: Some(4),
            message:
                "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
                    .into(),
        });
        let err = c
            .apply(&financials("ACC-1", "10"))
            .await
            .expect_err("throttled");
        assert!(
            matches!(
                err,
                DeliveryError::Transient {
                    status: 429,
                    retry_after_ms: Some(4000),
                    ..
                }
            ),
            "{err:?}"
        );
        let done = c.apply(&financials("ACC-1", "10")).await.expect("retried");
        assert!(!done.created);
        let account = sim
            .find("accounts", "accountnumber", "ACC-1")
            .expect("account");
        assert_eq!(account["p2c_balance"].to_string(), "10");
        sim.inject(Fault {
            matching: "PATCH accounts".into(),
            status: 400,
            retry_after: None,
            message: "A validation error occurred. The value of 'creditlimit' is out of range."
                .into(),
        });
        match c.apply(&financials("ACC-1", "20")).await {
            Err(DeliveryError::Permanent {
                status, message, ..
            }) => {
                assert_eq!(status, 400);
                assert!(message.contains("out of range"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
