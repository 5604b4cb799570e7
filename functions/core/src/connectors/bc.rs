//! Business Central API v2.0: no native upsert, so every write is GET by business key
//! (`number`, or `externalDocumentNumber` for documents that came from the CRM), then
//! POST, or PATCH with `If-Match: <etag>`. Document lines are deep-inserted on create and
//! replaced when they differ. Reads fetch a notification's resource (with its lines).

use super::http::{odata_literal, Http, Reply};
use crate::command::{Action, Command, RebateCreditNote};
use crate::domain::{ChangeEvent, DocLine, Operation, SourceRef, SourceVersion, System};
use crate::error::DeliveryError;
use crate::inbound::bc::{entity_type_of, parse_resource};
use crate::json::{decimal_number, fingerprint};
use crate::ports::{Connector, Outcome, SourceReader};
use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Writes to and reads from one Business Central environment and company.
#[derive(Clone)]
pub struct BcConnector {
    http: Http,
    /// `https://api.businesscentral.dynamics.com/v2.0/<tenant>/<environment>`
    root: String,
    company: String,
    /// G/L account for rebate credit-memo lines.
    rebate_account: String,
    /// Payment terms ids by `<company>/<code>`.
    terms: Arc<Mutex<HashMap<String, String>>>,
}

fn permanent(status: u16, message: impl Into<String>) -> DeliveryError {
    DeliveryError::Permanent {
        system: System::BusinessCentral.to_string(),
        status,
        message: message.into(),
    }
}

impl BcConnector {
    pub fn new(
        http: Http,
        root: impl Into<String>,
        company: impl Into<String>,
        rebate_account: impl Into<String>,
    ) -> Self {
        Self {
            http,
            root: root.into().trim_end_matches('/').to_string(),
            company: company.into(),
            rebate_account: rebate_account.into(),
            terms: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn base(&self) -> String {
        format!("{}/api/v2.0/companies({})", self.root, self.company)
    }

    /// The one record of `set` matching `filter`; two are a permanent error.
    async fn find(&self, set: &str, filter: String) -> Result<Option<Value>, DeliveryError> {
        let r = self
            .http
            .send(
                Method::GET,
                &format!("{}/{set}", self.base()),
                &[("$filter", filter.clone()), ("$top", "2".into())],
                &[],
                None,
            )
            .await?;
        let list = r
            .body
            .get("value")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        match list.len() {
            0 => Ok(None),
            1 => Ok(list.into_iter().next()),
            _ => Err(permanent(
                409,
                format!("more than one {set} match {filter}"),
            )),
        }
    }

    /// Sends `method` to an existing record (PATCH, DELETE) with the etag it was read with.
    async fn on_existing(
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
                &format!("{}/{path}", self.base()),
                &[],
                &[("If-Match", etag)],
                body,
            )
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Reply, DeliveryError> {
        self.http
            .send(
                Method::POST,
                &format!("{}/{path}", self.base()),
                &[],
                &[],
                Some(body),
            )
            .await
    }

    async fn upsert(
        &self,
        set: &str,
        filter: String,
        create: Value,
        update: Value,
    ) -> Result<(Reply, bool), DeliveryError> {
        match self.find(set, filter).await? {
            Some(existing) => {
                let path = format!("{set}({})", text(&existing, "id"));
                Ok((
                    self.on_existing(Method::PATCH, &path, &existing, Some(&update))
                        .await?,
                    false,
                ))
            }
            None => Ok((self.post(set, &create).await?, true)),
        }
    }

    async fn payment_terms_id(&self, code: &str) -> Result<Option<String>, DeliveryError> {
        let cached = format!("{}/{code}", self.company);
        if let Some(hit) = self.terms.lock().ok().and_then(|m| m.get(&cached).cloned()) {
            return Ok(Some(hit));
        }
        let found = self
            .find("paymentTerms", format!("code eq {}", odata_literal(code)))
            .await?;
        let id = found.and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string));
        match id {
            Some(id) => {
                if let Ok(mut m) = self.terms.lock() {
                    m.insert(cached, id.clone());
                }
                Ok(Some(id))
            }
            None => Err(permanent(
                400,
                format!("payment terms `{code}` do not exist in Business Central"),
            )),
        }
    }

    /// Creates a document with its lines, or updates its header and replaces its lines
    /// when they differ. Returns the reply, created?, and the number the ERP gave it.
    async fn upsert_document(
        &self,
        set: &str,
        lines_set: &str,
        external: &str,
        header: Value,
        lines: &[DocLine],
    ) -> Result<(Reply, bool, Option<String>), DeliveryError> {
        let line_bodies: Vec<Value> = lines.iter().map(line_body).collect();
        let existing = self
            .find(
                set,
                format!("externalDocumentNumber eq {}", odata_literal(external)),
            )
            .await?;
        let Some(doc) = existing else {
            let mut body = header;
            body[lines_set] = Value::Array(line_bodies);
            let r = self.post(set, &body).await?;
            let number = text(&r.body, "number");
            return Ok((r, true, Some(number)));
        };
        let doc_path = format!("{set}({})", text(&doc, "id"));
        let r = self
            .on_existing(Method::PATCH, &doc_path, &doc, Some(&header))
            .await?;
        let lines_path = format!("{doc_path}/{lines_set}");
        let current = self
            .http
            .send(
                Method::GET,
                &format!("{}/{lines_path}", self.base()),
                &[],
                &[],
                None,
            )
            .await?;
        let current_lines = current
            .body
            .get("value")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !lines_equal(&current_lines, &line_bodies) {
            for l in &current_lines {
                let line_path = format!("{lines_path}({})", text(l, "id"));
                self.on_existing(Method::DELETE, &line_path, l, None)
                    .await?;
            }
            for b in &line_bodies {
                self.post(&lines_path, b).await?;
            }
        }
        Ok((r, false, Some(text(&doc, "number"))))
    }

    async fn credit_note(
        &self,
        cn: &RebateCreditNote,
    ) -> Result<(Reply, bool, Option<String>), DeliveryError> {
        if let Some(doc) = self
            .find(
                "salesCreditMemos",
                format!("externalDocumentNumber eq {}", odata_literal(&cn.reference)),
            )
            .await?
        {
            let number = Some(text(&doc, "number"));
            return Ok((
                Reply {
                    status: 200,
                    body: doc,
                    entity_id_header: None,
                },
                false,
                number,
            ));
        }
        let body = json!({
            "customerNumber": cn.account_number,
            "externalDocumentNumber": cn.reference,
            "currencyCode": cn.currency.as_str(),
            "salesCreditMemoLines": [{
                "lineType": "Account",
                "lineObjectNumber": self.rebate_account,
                "description": cn.description.chars().take(100).collect::<String>(),
                "quantity": 1,
                "unitPrice": decimal_number(cn.amount),
            }],
        });
        let r = self.post("salesCreditMemos", &body).await?;
        let number = Some(text(&r.body, "number"));
        Ok((r, true, number))
    }
}

/// A string field of a record, or empty.
fn text(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn line_body(l: &DocLine) -> Value {
    json!({
        "lineType": "Item",
        "lineObjectNumber": l.item_number,
        "description": l.description,
        "quantity": decimal_number(l.quantity),
        "unitOfMeasureCode": l.unit,
        "unitPrice": decimal_number(l.unit_price),
        "discountAmount": decimal_number(l.discount_amount),
    })
}

fn lines_equal(current: &[Value], wanted: &[Value]) -> bool {
    let keys = [
        "lineObjectNumber",
        "quantity",
        "unitPrice",
        "discountAmount",
    ];
    let project = |v: &Value| {
        fingerprint(&json!(keys
            .iter()
            .map(|k| v.get(*k).cloned().unwrap_or(Value::Null))
            .collect::<Vec<_>>()))
    };
    current.len() == wanted.len()
        && current
            .iter()
            .zip(wanted)
            .all(|(a, b)| project(a) == project(b))
}

#[async_trait]
impl Connector for BcConnector {
    fn system(&self) -> System {
        System::BusinessCentral
    }

    async fn apply(&self, cmd: &Command) -> Result<Outcome, DeliveryError> {
        // The company the rules routed this record to, else the configured one.
        match cmd.company.as_deref() {
            Some(company) if !company.eq_ignore_ascii_case(&self.company) => {
                let routed = BcConnector {
                    company: company.to_string(),
                    ..self.clone()
                };
                routed.apply_here(cmd).await
            }
            _ => self.apply_here(cmd).await,
        }
    }
}

impl BcConnector {
    /// [`Connector::apply`] in this connector's company.
    async fn apply_here(&self, cmd: &Command) -> Result<Outcome, DeliveryError> {
        let written = fingerprint(&serde_json::to_value(&cmd.action).unwrap_or(Value::Null));
        let (reply, created, assigned) = match &cmd.action {
            Action::UpsertCustomer(c) => {
                let mut body = json!({
                    "displayName": c.name,
                    "addressLine1": c.address.line1.clone().unwrap_or_default(),
                    "addressLine2": c.address.line2.clone().unwrap_or_default(),
                    "city": c.address.city.clone().unwrap_or_default(),
                    "state": c.address.state.clone().unwrap_or_default(),
                    "country": c.address.country.clone().unwrap_or_default(),
                    "postalCode": c.address.postal_code.clone().unwrap_or_default(),
                    "phoneNumber": c.phone.clone().unwrap_or_default(),
                    "email": c.email.clone().unwrap_or_default(),
                });
                if let Some(cur) = &c.currency {
                    body["currencyCode"] = json!(cur.as_str());
                }
                if let Some(t) = &c.payment_terms {
                    if let Some(id) = self.payment_terms_id(t).await? {
                        body["paymentTermsId"] = json!(id);
                    }
                }
                let mut create = body.clone();
                create["number"] = json!(c.number);
                let (r, created) = self
                    .upsert(
                        "customers",
                        format!("number eq {}", odata_literal(&c.number)),
                        create,
                        body,
                    )
                    .await?;
                (r, created, None)
            }
            Action::UpsertContact(c) => {
                let email = c.email.clone().filter(|e| !e.is_empty()).ok_or_else(|| {
                    permanent(
                        400,
                        "Business Central contacts are matched by e-mail; the contact has none",
                    )
                })?;
                let name = match &c.first_name {
                    Some(f) if !f.is_empty() => format!("{f} {}", c.last_name),
                    _ => c.last_name.clone(),
                };
                let body = json!({ "type": "Person", "displayName": name, "email": email, "phoneNumber": c.phone.clone().unwrap_or_default() });
                let (r, created) = self
                    .upsert(
                        "contacts",
                        format!("email eq {}", odata_literal(&email)),
                        body.clone(),
                        body,
                    )
                    .await?;
                (r, created, None)
            }
            // Documents from the CRM: their number is the ERP's external document number.
            Action::UpsertQuote(q) => {
                let header = json!({
                    "customerNumber": q.account_number,
                    "externalDocumentNumber": q.number,
                    "currencyCode": q.currency.as_str(),
                    "validUntilDate": q.valid_until.map(|d| d.to_string()),
                });
                self.upsert_document(
                    "salesQuotes",
                    "salesQuoteLines",
                    &q.number,
                    header,
                    &q.lines,
                )
                .await?
            }
            Action::UpsertOrder(o) => {
                let header = json!({
                    "customerNumber": o.account_number,
                    "externalDocumentNumber": o.number,
                    "currencyCode": o.currency.as_str(),
                    "requestedDeliveryDate": o.requested_delivery.map(|d| d.to_string()),
                });
                self.upsert_document(
                    "salesOrders",
                    "salesOrderLines",
                    &o.number,
                    header,
                    &o.lines,
                )
                .await?
            }
            Action::CreateCreditNote(cn) => self.credit_note(cn).await?,
            other => {
                return Err(permanent(
                    400,
                    format!("{} is not an ERP write", other.name()),
                ))
            }
        };
        let target_id = reply
            .body
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Outcome {
            target_id,
            assigned_number: assigned,
            fingerprint: written,
            created,
        })
    }
}

/// Lines to expand with each document set.
fn lines_of(set: &str) -> Option<&'static str> {
    match set {
        "salesOrders" => Some("salesOrderLines"),
        "salesQuotes" => Some("salesQuoteLines"),
        "salesInvoices" => Some("salesInvoiceLines"),
        "salesCreditMemos" => Some("salesCreditMemoLines"),
        "customers" => Some("customerFinancialDetail"),
        _ => None,
    }
}

impl BcConnector {
    fn event_for(
        &self,
        notif: &ChangeEvent,
        set: &str,
        rec: &Map<String, Value>,
        event_suffix: Option<&str>,
    ) -> Option<ChangeEvent> {
        let id = rec.get("id").and_then(Value::as_str)?.to_ascii_lowercase();
        let entity_type = entity_type_of(set)?;
        let mut fields: Map<String, Value> = rec
            .iter()
            .filter(|(k, _)| !k.starts_with("@odata"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fields.insert("@p2c.entitySet".into(), Value::String(set.to_string()));
        let modified = rec
            .get("lastModifiedDateTime")
            .and_then(Value::as_str)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp_millis());
        let mut event_id = notif.event_id.clone();
        if let Some(s) = event_suffix {
            event_id.0 = format!("{}:{s}", event_id.0);
        }
        Some(ChangeEvent {
            event_id,
            source: SourceRef::new(System::BusinessCentral, entity_type, id),
            natural_key: rec
                .get("number")
                .and_then(Value::as_str)
                .map(str::to_string),
            operation: if notif.operation == Operation::Changed {
                Operation::Update
            } else {
                notif.operation
            },
            fields,
            previous: Map::new(),
            needs_fetch: false,
            resource: None,
            version: SourceVersion {
                sequence: None,
                modified_ms: modified.or(notif.version.modified_ms),
            },
            origin: notif.origin.clone(),
            company: notif.company.clone(),
            received_at: notif.received_at,
            content_hash: Default::default(),
        })
    }

    /// Open invoices of a customer past their due date, for the days-overdue figure.
    async fn overdue_invoices(
        &self,
        customer_number: &str,
        today: chrono::NaiveDate,
    ) -> Result<Value, DeliveryError> {
        let filter = format!(
            "customerNumber eq {} and status eq 'Open' and dueDate lt {today}",
            odata_literal(customer_number)
        );
        let r = self
            .http
            .send(
                Method::GET,
                &format!("{}/salesInvoices", self.base()),
                &[
                    ("$filter", filter),
                    ("$select", "number,dueDate,remainingAmount".into()),
                ],
                &[],
                None,
            )
            .await?;
        Ok(r.body.get("value").cloned().unwrap_or(Value::Array(vec![])))
    }
}

#[async_trait]
impl SourceReader for BcConnector {
    fn system(&self) -> System {
        System::BusinessCentral
    }

    async fn read(&self, event: &ChangeEvent) -> Result<Vec<ChangeEvent>, DeliveryError> {
        let resource = event.resource.as_deref().ok_or_else(|| {
            permanent(
                400,
                "a Business Central event without a resource cannot be read",
            )
        })?;
        let res = parse_resource(resource).map_err(|e| permanent(400, e.to_string()))?;
        let url = format!(
            "{}/{}",
            self.root,
            res.path.split('?').next().unwrap_or_default()
        );
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(q) = res.path.split_once('?').map(|(_, q)| q) {
            for (k, v) in crate::inbound::WebhookRequest::parse_query(q) {
                if k == "$filter" {
                    query.push(("$filter", v));
                }
            }
        }
        if let Some(e) = lines_of(&res.entity_set) {
            query.push(("$expand", e.to_string()));
        }
        let reply = match self.http.send(Method::GET, &url, &query, &[], None).await {
            Ok(r) => r,
            Err(DeliveryError::Permanent { status: 404, .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let today = event.received_at.date_naive();
        let mut out = Vec::new();
        // A payment journal notifies for its lines: read them.
        if res.entity_set == "customerPaymentJournals" && res.id.is_some() {
            let lines = self
                .http
                .send(
                    Method::GET,
                    &format!("{url}/customerPayments"),
                    &[],
                    &[],
                    None,
                )
                .await?;
            for p in lines
                .body
                .get("value")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                if let Some(o) = p.as_object() {
                    let suffix = o
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    out.extend(self.event_for(event, "customerPayments", o, Some(&suffix)));
                }
            }
            return Ok(out);
        }
        let records: Vec<Map<String, Value>> = match (&res.id, reply.body.get("value")) {
            (None, Some(Value::Array(items))) => items
                .iter()
                .filter_map(|v| v.as_object().cloned())
                .collect(),
            _ => reply.body.as_object().cloned().into_iter().collect(),
        };
        let collection = res.id.is_none();
        for mut rec in records {
            if res.entity_set == "customers" {
                if let Some(number) = rec
                    .get("number")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                {
                    rec.insert(
                        "overdueInvoices".into(),
                        self.overdue_invoices(&number, today).await?,
                    );
                }
            }
            let suffix = if collection {
                rec.get("id").and_then(Value::as_str).map(str::to_string)
            } else {
                None
            };
            out.extend(self.event_for(event, &res.entity_set, &rec, suffix.as_deref()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EntityKey, EntityType, EventId};
    use crate::sim::bc::SimBusinessCentral;

    #[tokio::test]
    async fn a_command_routed_to_a_company_is_written_there_not_in_the_default_one() {
        let routed_to = "c0ffee00-0000-4000-8000-000000000002";
        let sim = SimBusinessCentral::start(routed_to).await.expect("sim");
        let http = Http::new(
            System::BusinessCentral,
            Arc::new(super::super::http::StaticToken("t".into())),
        )
        .expect("http");
        // Configured with another company: only the routing reaches the simulated one.
        let c = BcConnector::new(
            http,
            sim.root(),
            "b18aed47-c385-49d2-b954-dbdf8ad71780",
            "6910",
        );
        let action: Action =
            serde_json::from_value(json!({"action": "upsert_customer", "record": {
                "number": "C-9", "name": "Routed Ltd", "address": {}
            }}))
            .expect("action");
        let mut cmd = Command::new(
            "sync#e-9",
            &EventId("dataverse:e-9".into()),
            System::BusinessCentral,
            EntityKey::new(EntityType::Account, "C-9").expect("key"),
            action,
            "r-1",
        );
        match c.apply(&cmd).await {
            Err(DeliveryError::Permanent { status: 404, .. }) => {}
            other => panic!("the default company is not the simulated one: {other:?}"),
        }
        cmd.company = Some(routed_to.to_uppercase());
        let out = c.apply(&cmd).await.expect("written in the routed company");
        assert!(out.created);
        assert_eq!(
            sim.find("customers", "number", "C-9")
                .and_then(|r| r.get("displayName").cloned()),
            Some(json!("Routed Ltd"))
        );
    }

    /// Create, then update by number with the etag; throttling is transient with the
    /// Retry-After Business Central gives; a refusal is permanent with BC's own message.
    #[tokio::test]
    async fn a_customer_is_created_then_updated_throttling_waits_and_refusals_keep_the_message() {
        let company = "b18aed47-c385-49d2-b954-dbdf8ad71780";
        let sim = SimBusinessCentral::start(company).await.expect("sim");
        let http = Http::new(
            System::BusinessCentral,
            Arc::new(super::super::http::StaticToken("t".into())),
        )
        .expect("http");
        let c = BcConnector::new(http, sim.root(), company, "6910");
        let customer = |name: &str| {
            let action: Action =
                serde_json::from_value(json!({"action": "upsert_customer", "record": {
                    "number": "C-1", "name": name, "address": {}
                }}))
                .expect("action");
            Command::new(
                "sync#e-1",
                &EventId("dataverse:e-1".into()),
                System::BusinessCentral,
                EntityKey::new(EntityType::Account, "C-1").expect("key"),
                action,
                "r-1",
            )
        };
        assert!(
            c.apply(&customer("Contoso"))
                .await
                .expect("created")
                .created
        );
        sim.inject(crate::sim::Fault {
            matching: "PATCH customers".into(),
            status: 429,
            retry_after: Some(2),
            message: "Too many requests".into(),
        });
        let err = c
            .apply(&customer("Contoso Ltd"))
            .await
            .expect_err("throttled");
        assert!(
            matches!(
                err,
                DeliveryError::Transient {
                    status: 429,
                    retry_after_ms: Some(2000),
                    ..
                }
            ),
            "{err:?}"
        );
        let done = c.apply(&customer("Contoso Ltd")).await.expect("retried");
        assert!(!done.created);
        assert_eq!(
            sim.find("customers", "number", "C-1")
                .and_then(|r| r.get("displayName").cloned()),
            Some(json!("Contoso Ltd"))
        );
        assert_eq!(sim.creates("customers"), 1);
        sim.inject(crate::sim::Fault {
            matching: "PATCH customers".into(),
            status: 400,
            retry_after: None,
            message: "The field Name of table Customer contains a value that is too long.".into(),
        });
        match c.apply(&customer("Contoso Limited")).await {
            Err(DeliveryError::Permanent {
                status, message, ..
            }) => {
                assert_eq!(status, 400);
                assert!(message.contains("too long"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
