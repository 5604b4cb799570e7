//! `p2c demo`: the whole prospect-to-cash story against a simulated CRM (Dataverse or
//! Salesforce) and ERP (Business Central or Finance & Operations) on loopback HTTP, through
//! the real pipeline (webhooks, change events, notifications, data and business events →
//! ingest → sync → deliver → Web API / REST / API v2.0 / OData). Every step checks its
//! expected outcome in the target system; the run fails if any check fails.

use crate::app::{Credentials, Endpoints, Pipeline};
use crate::backend::Backend;
use crate::domain::System;
use crate::embedded::EmbeddedStore;
use crate::inbound::dataverse::DataverseAuth;
use crate::json::as_decimal;
use crate::money::format_amount;
use crate::pipeline::ingest::InboundAuth;
use crate::pipeline::Timings;
use crate::rules::RuleSet;
use crate::sim::bc::{BcHookConfig, SimBusinessCentral};
use crate::sim::dataverse::{DataverseHookConfig, SimDataverse, PRIMARY_UNIT, USD};
use crate::sim::fo::{FoHookConfig, SimFinOps};
use crate::sim::salesforce::{ChangeEventConfig, SimSalesforce};
use crate::sim::Outbox;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How to run the demo.
pub struct DemoOptions {
    pub rules: Arc<RuleSet>,
    /// Where the embedded store lives (a temporary directory when `None`).
    pub store: Option<PathBuf>,
    /// Run on DynamoDB and SQS at this emulator endpoint (moto server) instead.
    pub aws_endpoint: Option<String>,
    /// The CRM to pair with the ERP (the rules' pairing is set to it for the run).
    pub crm: System,
    /// The ERP.
    pub erp: System,
}

/// One expected outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub step: String,
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

/// What the demo did.
#[derive(Debug, Default)]
pub struct DemoReport {
    pub checks: Vec<Check>,
}

impl DemoReport {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }
}

const ACCOUNT: &str = "ACC-01042-QX7T2P";
const ITEM: &str = "P-200";
const QUOTE: &str = "QUO-01001-A1B2C3";
const ORDER_OK: &str = "ORD-01007-K4Z8V1";
const ORDER_BIG: &str = "ORD-01008-M2P4R6";
/// The simulated Salesforce org's id (in its change events' `source`).
const SALESFORCE_ORG: &str = "00D5f000005KcCnEAK";

/// The simulated CRM.
pub enum Crm {
    Dataverse(SimDataverse),
    Salesforce(SimSalesforce),
}

/// A CRM order as the story checks it.
struct CrmOrder {
    erp_number: String,
    credit_text: String,
    credit_status: String,
    status: String,
}

impl Crm {
    pub fn name(&self) -> &'static str {
        match self {
            Crm::Dataverse(_) => "Dataverse",
            Crm::Salesforce(_) => "Salesforce",
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Crm::Dataverse(d) => &d.url,
            Crm::Salesforce(s) => s.instance_url(),
        }
    }

    /// The webhooks or change events the CRM owes p2c.
    pub fn outbox(&self) -> &Outbox {
        match self {
            Crm::Dataverse(d) => d.outbox(),
            Crm::Salesforce(s) => s.outbox(),
        }
    }

    /// One Salesforce record by a field's value.
    fn sf(s: &SimSalesforce, object: &str, field: &str, value: &str) -> Option<Map<String, Value>> {
        s.find(object, field, value).into_iter().next()
    }

    fn sf_id(s: &SimSalesforce, object: &str, field: &str, value: &str) -> anyhow::Result<String> {
        Self::sf(s, object, field, value)
            .and_then(|r| r.get("Id").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| anyhow::anyhow!("Salesforce has no {object} with {field} {value}"))
    }

    /// A salesperson creates the account (payment terms Net 45).
    fn create_account(&self) -> anyhow::Result<()> {
        match self {
            Crm::Dataverse(d) => d
                .create("accounts", json!({
                    "accountnumber": ACCOUNT, "name": "Fabrikam Industrial Ltd", "address1_line1": "1 Microsoft Way", "address1_city": "Redmond",
                    "address1_stateorprovince": "WA", "address1_postalcode": "98052", "address1_country": "US", "telephone1": "+1 425 555 0100",
                    "emailaddress1": "ap@fabrikam.example", "paymenttermscode": 3, "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({USD})"),
                }))
                .map(|_| ())
                .map_err(anyhow::Error::msg),
            Crm::Salesforce(s) => {
                // The ERP customer number is an external-id field the org fills (an
                // auto-number or sales operations); the payment terms an ERP code picklist.
                s.user_create("Account", json!({
                    "Name": "Fabrikam Industrial Ltd", "AccountNumber": ACCOUNT, "ERP_Customer_Number__c": ACCOUNT,
                    "BillingAddress": { "Street": "1 Microsoft Way", "City": "Redmond", "State": "WA", "PostalCode": "98052", "Country": "US" },
                    "Phone": "+1 425 555 0100", "P2C_Payment_Terms__c": "NET45", "CurrencyIsoCode": "USD",
                }));
                Ok(())
            }
        }
    }

    /// A figure on the account: its Dataverse column or its Salesforce field.
    fn account_figure(&self, dataverse: &str, salesforce: &str) -> Option<Decimal> {
        match self {
            Crm::Dataverse(d) => num(
                d.find("accounts", "accountnumber", ACCOUNT).as_ref(),
                dataverse,
            ),
            Crm::Salesforce(s) => num(
                Self::sf(s, "Account", "ERP_Customer_Number__c", ACCOUNT).as_ref(),
                salesforce,
            ),
        }
    }

    fn credit_limit(&self) -> Option<Decimal> {
        self.account_figure("creditlimit", "P2C_Credit_Limit__c")
    }

    fn balance(&self) -> Option<Decimal> {
        self.account_figure("p2c_balance", "P2C_Balance__c")
    }

    /// The product's name and its price in the price list / price book.
    fn product(&self) -> (String, Option<Decimal>) {
        match self {
            Crm::Dataverse(d) => {
                let product = d.find("products", "productnumber", ITEM);
                let id = product
                    .as_ref()
                    .and_then(|p| p.get("productid"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let price = d.records("productpricelevels").into_iter().find(|p| {
                    p.get("_productid_value").and_then(Value::as_str) == Some(id.as_str())
                });
                (
                    text(product.as_ref(), "name"),
                    num(price.as_ref(), "amount"),
                )
            }
            Crm::Salesforce(s) => {
                let product = Self::sf(s, "Product2", "ERP_Item_Number__c", ITEM);
                let id = text(product.as_ref(), "Id");
                let price = Self::sf(s, "PricebookEntry", "Product2Id", &id);
                (
                    text(product.as_ref(), "Name"),
                    num(price.as_ref(), "UnitPrice"),
                )
            }
        }
    }

    /// The quote for 40 × the item, made ready for the ERP (activated / approved).
    fn create_quote(&self) -> anyhow::Result<()> {
        match self {
            Crm::Dataverse(d) => d
                .create_document("quotes", json!({
                    "quotenumber": QUOTE, "name": "Fabrikam pumps", "statecode": 1, "customerid_account@odata.bind": format!("/accounts(accountnumber='{ACCOUNT}')"),
                    "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({USD})"), "effectiveto": "2026-06-30T00:00:00Z",
                }), vec![json!({"productid@odata.bind": format!("/products(productnumber='{ITEM}')"), "quantity": 40, "priceperunit": 460.00, "uomid@odata.bind": format!("/uoms({PRIMARY_UNIT})")})])
                .map(|_| ())
                .map_err(anyhow::Error::msg),
            Crm::Salesforce(s) => {
                let account = Self::sf_id(s, "Account", "ERP_Customer_Number__c", ACCOUNT)?;
                let product = Self::sf_id(s, "Product2", "ERP_Item_Number__c", ITEM)?;
                let quote = s.user_create("Quote", json!({
                    "QuoteNumber": QUOTE, "Name": "Fabrikam pumps", "AccountId": account, "Status": "Draft",
                    "CurrencyIsoCode": "USD", "ExpirationDate": "2026-06-30",
                }));
                s.insert("QuoteLineItem", json!({
                    "QuoteId": quote, "Product2Id": product, "Quantity": 40, "UnitPrice": 460.00, "Discount": 0,
                }));
                s.user_update("Quote", &quote, json!({ "Status": "Approved" }))
                    .map_err(anyhow::Error::msg)
            }
        }
    }

    fn quote_tax(&self) -> Option<Decimal> {
        match self {
            Crm::Dataverse(d) => num(d.find("quotes", "quotenumber", QUOTE).as_ref(), "totaltax"),
            Crm::Salesforce(s) => num(
                Self::sf(s, "Quote", "QuoteNumber", QUOTE).as_ref(),
                "P2C_ERP_Tax__c",
            ),
        }
    }

    /// An order for `quantity` × the item at 460.00, submitted (Dataverse) / activated
    /// (Salesforce).
    fn create_order(&self, number: &str, quantity: u32, price_list: &str) -> anyhow::Result<()> {
        match self {
            Crm::Dataverse(d) => {
                let mut order = json!({
                    "ordernumber": number, "name": format!("Fabrikam - {quantity} x Pump P-200"), "customerid_account@odata.bind": format!("/accounts(accountnumber='{ACCOUNT}')"),
                    "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({USD})"),
                });
                if number == ORDER_OK {
                    order["pricelevelid@odata.bind"] = json!(format!("/pricelevels({price_list})"));
                    order["requestdeliveryby"] = json!("2026-06-01T00:00:00Z");
                }
                d.create_document("salesorders", order, vec![json!({"productid@odata.bind": format!("/products(productnumber='{ITEM}')"), "quantity": quantity, "priceperunit": 460.00, "uomid@odata.bind": format!("/uoms({PRIMARY_UNIT})")})])
                    .map(|_| ())
                    .map_err(anyhow::Error::msg)
            }
            Crm::Salesforce(s) => {
                let account = Self::sf_id(s, "Account", "ERP_Customer_Number__c", ACCOUNT)?;
                let product = Self::sf_id(s, "Product2", "ERP_Item_Number__c", ITEM)?;
                let order = s.user_create("Order", json!({
                    "OrderNumber": number, "Name": format!("Fabrikam - {quantity} x Pump P-200"), "AccountId": account,
                    "Status": "Draft", "StatusCode": "Draft", "EffectiveDate": "2026-05-14", "CurrencyIsoCode": "USD",
                    "Pricebook2Id": price_list,
                }));
                s.insert("OrderItem", json!({
                    "OrderId": order, "Product2Id": product, "Quantity": quantity, "UnitPrice": 460.00,
                }));
                s.user_update(
                    "Order",
                    &order,
                    json!({ "Status": "Activated", "StatusCode": "Activated" }),
                )
                .map_err(anyhow::Error::msg)
            }
        }
    }

    fn order(&self, number: &str) -> CrmOrder {
        match self {
            Crm::Dataverse(d) => {
                let o = d.find("salesorders", "ordernumber", number);
                CrmOrder {
                    erp_number: text(o.as_ref(), "p2c_erpordernumber"),
                    credit_text: text(o.as_ref(), "submitstatusdescription"),
                    credit_status: text(o.as_ref(), "p2c_creditstatus"),
                    status: text(o.as_ref(), "p2c_processingstatus"),
                }
            }
            Crm::Salesforce(s) => {
                let o = Self::sf(s, "Order", "OrderNumber", number);
                CrmOrder {
                    erp_number: text(o.as_ref(), "ERP_Order_Number__c"),
                    credit_text: text(o.as_ref(), "P2C_Credit_Message__c"),
                    credit_status: text(o.as_ref(), "P2C_Credit_Status__c"),
                    status: text(o.as_ref(), "P2C_Processing_Status__c"),
                }
            }
        }
    }

    /// An invoice in the CRM's sales history: total, rebate tier, rebate accrued.
    fn invoice(&self, number: &str) -> (Option<Decimal>, String, Option<Decimal>) {
        match self {
            Crm::Dataverse(d) => {
                let i = d.find("invoices", "invoicenumber", number);
                (
                    num(i.as_ref(), "totalamount"),
                    text(i.as_ref(), "p2c_rebatetier"),
                    num(i.as_ref(), "p2c_rebateaccrual"),
                )
            }
            Crm::Salesforce(s) => {
                let i = Self::sf(s, "ERP_Invoice__c", "ERP_Invoice_Number__c", number);
                (
                    num(i.as_ref(), "Total__c"),
                    text(i.as_ref(), "Rebate_Tier__c"),
                    num(i.as_ref(), "Rebate_Accrual__c"),
                )
            }
        }
    }

    /// Every payment in the CRM: (number, amount, invoice).
    fn payments(&self) -> Vec<(String, Option<Decimal>, String)> {
        match self {
            Crm::Dataverse(d) => d
                .records("p2c_payments")
                .iter()
                .map(|p| {
                    (
                        text(Some(p), "p2c_paymentnumber"),
                        num(Some(p), "p2c_amount"),
                        text(Some(p), "p2c_invoicenumber"),
                    )
                })
                .collect(),
            Crm::Salesforce(s) => s
                .records("ERP_Payment__c")
                .iter()
                .map(|p| {
                    (
                        text(Some(p), "ERP_Payment_Id__c"),
                        num(Some(p), "Amount__c"),
                        text(Some(p), "Invoice_Number__c"),
                    )
                })
                .collect(),
        }
    }
}

/// The simulated ERP.
pub enum Erp {
    BusinessCentral(SimBusinessCentral),
    FinOps(SimFinOps),
}

/// An ERP order as the story checks it: its number and status.
struct ErpOrder {
    number: String,
    status: String,
}

impl Erp {
    pub fn name(&self) -> &'static str {
        match self {
            Erp::BusinessCentral(_) => "Business Central",
            Erp::FinOps(_) => "Finance & Operations",
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Erp::BusinessCentral(b) => &b.url,
            Erp::FinOps(f) => &f.url,
        }
    }

    /// The notifications or events the ERP owes p2c.
    pub fn outbox(&self) -> &Outbox {
        match self {
            Erp::BusinessCentral(b) => b.outbox(),
            Erp::FinOps(f) => f.outbox(),
        }
    }

    /// The ERP's own batch jobs between rounds: F&O's *Calculate sales totals* (Business
    /// Central computes totals as lines are written). Returns how many records they changed.
    pub fn run_batches(&self) -> usize {
        match self {
            Erp::BusinessCentral(_) => 0,
            Erp::FinOps(f) => f.calculate_totals(),
        }
    }

    /// The customer's name and payment terms code.
    fn customer(&self) -> (String, String) {
        match self {
            Erp::BusinessCentral(b) => {
                let c = b.find("customers", "number", ACCOUNT);
                let terms = c
                    .as_ref()
                    .and_then(|c| c.get("paymentTermsId"))
                    .and_then(Value::as_str)
                    .and_then(|id| {
                        b.records("paymentTerms")
                            .into_iter()
                            .find(|t| t.get("id").and_then(Value::as_str) == Some(id))
                    });
                (
                    text(c.as_ref(), "displayName"),
                    text(terms.as_ref(), "code"),
                )
            }
            Erp::FinOps(f) => {
                let c = f.find_one("CustomersV3", "CustomerAccount", ACCOUNT);
                (
                    text(c.as_ref(), "OrganizationName"),
                    text(c.as_ref(), "PaymentTerms"),
                )
            }
        }
    }

    fn set_credit_limit(&self, limit: &str) -> Result<(), String> {
        match self {
            Erp::BusinessCentral(b) => b.set_credit_limit(ACCOUNT, limit),
            Erp::FinOps(f) => f.set_credit_limit(ACCOUNT, limit),
        }
    }

    fn create_item(&self) -> Result<(), String> {
        match self {
            Erp::BusinessCentral(b) => b.create_item(ITEM, "Pump P-200", "460.00", "PCS", "PUMPS"),
            Erp::FinOps(f) => f.create_item(ITEM, "Pump P-200", "460.00", "PCS", "PUMPS"),
        }
    }

    /// The ERP quotation made from the CRM quote: its number, total before tax and tax.
    fn quotation(&self) -> (String, Option<Decimal>, Option<Decimal>) {
        let (q, fields) = match self {
            Erp::BusinessCentral(b) => (
                b.find("salesQuotes", "externalDocumentNumber", QUOTE),
                ["number", "totalAmountExcludingTax", "totalTaxAmount"],
            ),
            Erp::FinOps(f) => (
                f.find_one("SalesQuotationHeadersV2", "CustomersReference", QUOTE),
                [
                    "SalesQuotationNumber",
                    "TotalAmountExcludingTax",
                    "TotalTaxAmount",
                ],
            ),
        };
        (
            text(q.as_ref(), fields[0]),
            num(q.as_ref(), fields[1]),
            num(q.as_ref(), fields[2]),
        )
    }

    /// The ERP order made from a CRM order, if there is one.
    fn order(&self, crm_number: &str) -> Option<ErpOrder> {
        match self {
            Erp::BusinessCentral(b) => b
                .find("salesOrders", "externalDocumentNumber", crm_number)
                .map(|o| ErpOrder {
                    number: text(Some(&o), "number"),
                    status: text(Some(&o), "status"),
                }),
            Erp::FinOps(f) => f
                .find_one("SalesOrderHeadersV2", "CustomersOrderReference", crm_number)
                .map(|o| ErpOrder {
                    number: text(Some(&o), "SalesOrderNumber"),
                    status: text(Some(&o), "SalesOrderStatus"),
                }),
        }
    }

    fn pick(&self, order: &str, fraction: &str) -> Result<(), String> {
        match self {
            Erp::BusinessCentral(b) => b.pick(order, fraction),
            Erp::FinOps(f) => f.pick(order, fraction),
        }
    }

    fn ship_and_invoice(&self, order: &str) -> Result<String, String> {
        match self {
            Erp::BusinessCentral(b) => b.ship_and_invoice(order),
            Erp::FinOps(f) => f.ship_and_invoice(order),
        }
    }

    fn register_payment(&self, invoice: &str, amount: &str) -> Result<String, String> {
        match self {
            Erp::BusinessCentral(b) => b.register_payment(invoice, amount),
            Erp::FinOps(f) => f.register_payment(invoice, amount),
        }
    }

    /// An invoice's date.
    fn invoice_date(&self, invoice: &str) -> Option<chrono::NaiveDate> {
        let (rec, field) = match self {
            Erp::BusinessCentral(b) => (b.find("salesInvoices", "number", invoice), "invoiceDate"),
            Erp::FinOps(f) => (
                f.find_one("SalesInvoiceHeaders", "InvoiceNumber", invoice),
                "InvoiceDate",
            ),
        };
        rec.and_then(|r| {
            r.get(field)
                .and_then(Value::as_str)
                .and_then(|d| d.parse().ok())
        })
    }

    /// The rebate credit note with p2c's reference: its number, amount and status.
    fn credit_note(&self, reference: &str) -> Option<(String, Option<Decimal>, String)> {
        match self {
            Erp::BusinessCentral(b) => b
                .find("salesCreditMemos", "externalDocumentNumber", reference)
                .map(|m| {
                    (
                        text(Some(&m), "number"),
                        num(Some(&m), "totalAmountExcludingTax"),
                        text(Some(&m), "status"),
                    )
                }),
            Erp::FinOps(f) => f
                .find_one("FreeTextInvoiceHeaders", "CustomersReference", reference)
                .map(|h| {
                    let number = text(Some(&h), "InvoiceIdentifier");
                    let amount: Option<Decimal> = f
                        .find("FreeTextInvoiceLines", "InvoiceIdentifier", &number)
                        .iter()
                        .map(|l| num(Some(l), "Amount"))
                        .sum();
                    (number, amount.map(|a| -a), "unposted".to_string())
                }),
        }
    }

    /// The references of every credit note.
    fn credit_note_references(&self) -> Vec<String> {
        let (recs, field) = match self {
            Erp::BusinessCentral(b) => (b.records("salesCreditMemos"), "externalDocumentNumber"),
            Erp::FinOps(f) => (f.records("FreeTextInvoiceHeaders"), "CustomersReference"),
        };
        recs.iter().map(|r| text(Some(r), field)).collect()
    }

    /// Every invoice: its number, total, what remains to be paid and its status.
    fn invoices(&self) -> Vec<(String, Option<Decimal>, Option<Decimal>, String)> {
        match self {
            Erp::BusinessCentral(b) => b
                .records("salesInvoices")
                .iter()
                .map(|i| {
                    (
                        text(Some(i), "number"),
                        num(Some(i), "totalAmountIncludingTax"),
                        num(Some(i), "remainingAmount"),
                        text(Some(i), "status"),
                    )
                })
                .collect(),
            Erp::FinOps(f) => f
                .records("SalesInvoiceHeaders")
                .iter()
                .map(|i| {
                    let number = text(Some(i), "InvoiceNumber");
                    let open = f.find_one("CustomerOpenTransactions", "Invoice", &number);
                    (
                        number,
                        num(Some(i), "TotalInvoiceAmount"),
                        Some(num(open.as_ref(), "RemainingAmount").unwrap_or(Decimal::ZERO)),
                        if open.is_some() { "Open" } else { "Settled" }.to_string(),
                    )
                })
                .collect(),
        }
    }

    /// The customer's credit limit and balance, as the ERP has them.
    fn customer_figures(&self) -> (Option<Decimal>, Option<Decimal>) {
        match self {
            Erp::BusinessCentral(b) => {
                let c = b.find("customers", "number", ACCOUNT);
                (
                    num(c.as_ref(), "creditLimit"),
                    num(c.as_ref(), "balanceDue"),
                )
            }
            Erp::FinOps(f) => {
                let c = f.find_one("CustomersV3", "CustomerAccount", ACCOUNT);
                let balance = f
                    .find("CustomerOpenTransactions", "CustomerAccount", ACCOUNT)
                    .iter()
                    .map(|t| num(Some(t), "RemainingAmount").unwrap_or_default())
                    .sum();
                (num(c.as_ref(), "CreditLimit"), Some(balance))
            }
        }
    }

    fn item_price(&self) -> Option<Decimal> {
        match self {
            Erp::BusinessCentral(b) => num(b.find("items", "number", ITEM).as_ref(), "unitPrice"),
            Erp::FinOps(f) => num(
                f.find_one("ReleasedProductsV2", "ItemNumber", ITEM)
                    .as_ref(),
                "SalesPrice",
            ),
        }
    }
}

/// The running world: simulators, pipeline, webhook server.
pub struct World {
    pub crm: Crm,
    pub erp: Erp,
    pub pipeline: Pipeline,
    pub webhook_url: String,
    /// The CRM's webhook secret (Dataverse's header key, Salesforce's API-destination key).
    pub crm_secret: String,
    /// Business Central's subscription `clientState`, or F&O's endpoint key.
    pub bc_client_state: String,
    client: reqwest::Client,
    _dir: Option<tempdir::TempDir>,
}

mod tempdir {
    /// A directory removed on drop (the demo's default store location).
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn secret(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    crate::json::hash_parts(&[tag, &nanos.to_string(), &std::process::id().to_string()])[..32]
        .to_string()
}

impl World {
    /// Starts both simulators (Dataverse with Business Central) and the pipeline with its
    /// webhook endpoints, on the embedded store at `store` (a temporary directory when
    /// `None`).
    pub async fn start(
        rules: Arc<RuleSet>,
        store: Option<PathBuf>,
        timings: Timings,
    ) -> anyhow::Result<Self> {
        let (path, dir) = match store {
            Some(p) => (p, None),
            None => {
                let d = std::env::temp_dir().join(format!("p2c-demo-{}", secret("dir")));
                std::fs::create_dir_all(&d)?;
                (d.join("p2c.db"), Some(tempdir::TempDir(d)))
            }
        };
        let mut w = Self::start_on(rules, EmbeddedStore::open(&path)?.into(), timings).await?;
        w._dir = dir;
        Ok(w)
    }

    /// Starts the simulators of the rules' pairing and the pipeline on the given backend.
    pub async fn start_on(
        rules: Arc<RuleSet>,
        backend: Backend,
        timings: Timings,
    ) -> anyhow::Result<Self> {
        use crate::domain::Side;
        let crm_secret = secret("crm");
        let bc_client_state = secret("bc");
        let mut auth = InboundAuth::default();
        let mut endpoints = Endpoints {
            dataverse: None,
            business_central: None,
            salesforce: None,
            fin_ops: None,
        };
        let erp = match rules.paired(Side::Erp) {
            System::FinOps => {
                let settings = rules.settings(System::FinOps);
                let f = SimFinOps::start(settings.company_id.as_deref().unwrap_or("usmf")).await?;
                auth.fin_ops = DataverseAuth {
                    header: Some("x-p2c-key".into()),
                    query_param: None,
                    secrets: vec![bc_client_state.clone()],
                };
                endpoints.fin_ops = Some((f.data_url(), Credentials::Bearer("sim-token".into())));
                Erp::FinOps(f)
            }
            _ => {
                let bc = rules.settings(System::BusinessCentral);
                let company = bc
                    .company_id
                    .clone()
                    .unwrap_or_else(|| "b18aed47-c385-49d2-b954-dbdf8ad71780".into());
                let b = SimBusinessCentral::start(&company).await?;
                auth.bc_client_states = vec![bc_client_state.clone()];
                endpoints.business_central =
                    Some((b.root(), company, Credentials::Bearer("sim-token".into())));
                Erp::BusinessCentral(b)
            }
        };
        let crm = match rules.paired(Side::Crm) {
            System::Salesforce => {
                let sf = SimSalesforce::start().await?;
                auth.salesforce = crate::inbound::salesforce::SalesforceAuth {
                    secrets: vec![crm_secret.clone()],
                    org_ids: vec![SALESFORCE_ORG.into()],
                };
                endpoints.salesforce = Some((
                    sf.instance_url().to_string(),
                    Credentials::Bearer("sim-token".into()),
                ));
                Crm::Salesforce(sf)
            }
            _ => {
                let dv = rules.settings(System::Dataverse);
                let price_list = dv
                    .price_list_id
                    .clone()
                    .unwrap_or_else(|| "7d5c0e12-3b1a-ef11-9f8a-6045bdd4c6be".into());
                let d = SimDataverse::start(&price_list).await?;
                auth.dataverse = DataverseAuth {
                    header: Some("x-p2c-key".into()),
                    query_param: None,
                    secrets: vec![crm_secret.clone()],
                };
                endpoints.dataverse = Some((d.api_base(), Credentials::Bearer("sim-token".into())));
                Crm::Dataverse(d)
            }
        };
        let pipeline = Pipeline::new(backend, rules.clone(), auth, &endpoints, timings)?;
        let (url, _task) = crate::sim::serve(pipeline.router()).await?;
        match &crm {
            Crm::Dataverse(d) => d.set_webhook(DataverseHookConfig {
                url: format!("{url}/webhooks/dataverse"),
                header: "x-p2c-key".into(),
                secret: crm_secret.clone(),
                integration_user: rules
                    .settings(System::Dataverse)
                    .integration_user
                    .unwrap_or_default(),
            }),
            // Event Relay → EventBridge → an API destination posting to p2c serve.
            Crm::Salesforce(s) => s.set_change_events(ChangeEventConfig {
                url: format!("{url}/webhooks/salesforce"),
                header: "x-p2c-key".into(),
                key: crm_secret.clone(),
                org_id: SALESFORCE_ORG.into(),
            }),
        }
        match &erp {
            Erp::BusinessCentral(b) => b.set_webhook(BcHookConfig {
                url: format!("{url}/webhooks/bc"),
                client_state: bc_client_state.clone(),
            }),
            // Business events to an HTTPS endpoint, data events through the Power Platform.
            Erp::FinOps(f) => f.set_webhook(FoHookConfig {
                url: format!("{url}/webhooks/fo"),
                header: "x-p2c-key".into(),
                key: bc_client_state.clone(),
                integration_user: rules
                    .settings(System::FinOps)
                    .integration_user
                    .unwrap_or_default(),
            }),
        }
        Ok(Self {
            crm,
            erp,
            pipeline,
            webhook_url: url,
            crm_secret,
            bc_client_state,
            client: reqwest::Client::new(),
            _dir: None,
        })
    }

    /// The CRM system simulated.
    pub fn crm_system(&self) -> System {
        match self.crm {
            Crm::Dataverse(_) => System::Dataverse,
            Crm::Salesforce(_) => System::Salesforce,
        }
    }

    /// The simulated Dataverse (for tests of the Dataverse pairing).
    pub fn dataverse(&self) -> &SimDataverse {
        match &self.crm {
            Crm::Dataverse(d) => d,
            Crm::Salesforce(_) => panic!("this world's CRM is Salesforce, not Dataverse"),
        }
    }

    /// The simulated Business Central (for tests of its pairings).
    pub fn bc(&self) -> &SimBusinessCentral {
        match &self.erp {
            Erp::BusinessCentral(b) => b,
            Erp::FinOps(_) => panic!("this world's ERP is Finance & Operations"),
        }
    }

    /// The simulated Finance & Operations (for tests of its pairings).
    pub fn fin_ops(&self) -> &SimFinOps {
        match &self.erp {
            Erp::FinOps(f) => f,
            Erp::BusinessCentral(_) => panic!("this world's ERP is Business Central"),
        }
    }

    /// Delivers every webhook the systems owe and runs the pipeline until nothing moves
    /// (the ERP's batch jobs running between rounds). Returns the webhooks sent, with the
    /// answer each got.
    pub async fn settle(&self) -> anyhow::Result<Vec<(String, u16)>> {
        let mut all = Vec::new();
        for _ in 0..100 {
            self.erp.run_batches();
            let mut sent = self.crm.outbox().flush(&self.client).await;
            sent.extend(self.erp.outbox().flush(&self.client).await);
            let moved = self
                .pipeline
                .run_until_idle(Duration::from_secs(60))
                .await?;
            let quiet = sent.is_empty()
                && moved == 0
                && self.crm.outbox().is_empty()
                && self.erp.outbox().is_empty();
            all.extend(sent);
            if quiet {
                return Ok(all);
            }
        }
        anyhow::bail!("the systems did not settle after 100 rounds")
    }
}

fn num(rec: Option<&Map<String, Value>>, field: &str) -> Option<Decimal> {
    rec.and_then(|r| r.get(field)).and_then(as_decimal)
}

fn text(rec: Option<&Map<String, Value>>, field: &str) -> String {
    rec.and_then(|r| r.get(field))
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_string()
}

struct Story<'a> {
    out: &'a mut dyn Write,
    report: DemoReport,
    step: String,
}

impl Story<'_> {
    fn step(&mut self, n: usize, title: &str) {
        self.step = title.to_string();
        let _ = writeln!(self.out, "\n{n}. {title}");
    }
    fn hooks(&mut self, sent: &[(String, u16)]) {
        for (label, status) in sent {
            let _ = writeln!(self.out, "   ⇢ {label} → {status}");
        }
    }
    fn check(&mut self, what: &str, ok: bool, detail: String) {
        let _ = writeln!(
            self.out,
            "   {} {what}{}",
            if ok { "✓" } else { "✗" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            }
        );
        self.report.checks.push(Check {
            step: self.step.clone(),
            what: what.to_string(),
            ok,
            detail,
        });
    }
    fn eq_dec(&mut self, what: &str, got: Option<Decimal>, want: &str) {
        let want_d: Decimal = want.parse().unwrap_or_default();
        let ok = got == Some(want_d);
        let detail = format!(
            "{} = {}",
            if ok { "is" } else { "expected" },
            format_amount(want_d)
        );
        let detail = if ok {
            detail
        } else {
            format!(
                "{detail}, got {}",
                got.map(format_amount).unwrap_or_else(|| "nothing".into())
            )
        };
        self.check(what, ok, detail);
    }
    fn eq_text(&mut self, what: &str, got: String, want: &str) {
        let ok = got == want;
        self.check(
            what,
            ok,
            if ok {
                format!("“{got}”")
            } else {
                format!("expected “{want}”, got “{got}”")
            },
        );
    }
}

/// Runs the story, writing the timeline and the final table to `out`.
pub async fn run(opts: DemoOptions, out: &mut dyn Write) -> anyhow::Result<DemoReport> {
    let timings = Timings {
        retry_base: Duration::from_millis(20),
    };
    let rules = Arc::new(opts.rules.with_pairing(opts.crm, opts.erp)?);
    let w = match &opts.aws_endpoint {
        None => World::start(rules.clone(), opts.store, timings).await?,
        #[cfg(feature = "aws")]
        Some(endpoint) => {
            let prefix = format!("p2c-demo-{}", &secret("aws")[..8]);
            let backend = crate::aws::create_local(endpoint, &prefix, 5).await?;
            World::start_on(rules.clone(), backend.into(), timings).await?
        }
        #[cfg(not(feature = "aws"))]
        Some(_) => anyhow::bail!("this build has no AWS adapters (feature `aws`)"),
    };
    let _ = writeln!(
        out,
        "p2c demo — {} (CRM) ⇄ {} (ERP), rules {}, on the {}",
        w.crm.name(),
        w.erp.name(),
        rules.version,
        w.pipeline.store.describe()
    );
    let _ = writeln!(
        out,
        "   simulated {} at {}, {} at {}, p2c webhooks at {}",
        w.crm.name(),
        w.crm.url(),
        w.erp.name(),
        w.erp.url(),
        w.webhook_url
    );
    let mut s = Story {
        out,
        report: DemoReport::default(),
        step: String::new(),
    };

    // 1. Account → customer, then the ERP sets the credit limit.
    let crm = w.crm.name();
    let erp = w.erp.name();
    s.step(
        1,
        &format!("A salesperson creates account Fabrikam Industrial Ltd in {crm}"),
    );
    w.crm.create_account()?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    let (customer, terms) = w.erp.customer();
    s.eq_text(
        &format!("{erp} has customer ACC-01042-QX7T2P"),
        customer,
        "Fabrikam Industrial Ltd",
    );
    s.eq_text(
        if crm == "Dataverse" {
            "payment terms mapped Net 45 → NET45"
        } else {
            "payment terms NET45 carried over"
        },
        terms,
        "NET45",
    );

    s.step(
        2,
        &format!("The credit controller sets a credit limit of 50,000.00 in {erp}"),
    );
    w.erp
        .set_credit_limit("50000")
        .map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    s.eq_dec(
        &format!("the {crm} account shows the credit limit"),
        w.crm.credit_limit(),
        "50000",
    );

    // 2. Item → product with price.
    s.step(
        3,
        &format!("Purchasing creates item P-200 Pump at 460.00 in {erp}"),
    );
    w.erp.create_item().map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    let (product, price) = w.crm.product();
    s.eq_text(&format!("{crm} has product P-200"), product, "Pump P-200");
    s.eq_dec("its price list item is 460.00", price, "460");

    // 3. Quote → quotation, tax back.
    s.step(
        4,
        "The salesperson activates quote QUO-01001 for 40 × P-200",
    );
    w.crm.create_quote()?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    let (_, before_tax, _) = w.erp.quotation();
    s.eq_dec(
        &format!("{erp} has the sales quotation, 18,400.00 before tax"),
        before_tax,
        "18400",
    );
    s.eq_dec(
        &format!("the tax the ERP computed is on the {crm} quote"),
        w.crm.quote_tax(),
        "1840",
    );

    // 4. Order within credit → released.
    s.step(
        5,
        "The customer orders 40 × P-200 (18,400.00): within the credit limit",
    );
    let price_list = rules
        .settings(w.crm_system())
        .price_list_id
        .unwrap_or_default();
    w.crm.create_order(ORDER_OK, 40, &price_list)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    let erp_order = w.erp.order(ORDER_OK);
    let erp_number = erp_order
        .as_ref()
        .map(|o| o.number.clone())
        .unwrap_or_else(|| "-".into());
    s.check(
        &format!("{erp} has the sales order"),
        erp_order.is_some(),
        format!("number {erp_number}"),
    );
    let crm_order = w.crm.order(ORDER_OK);
    s.eq_text(
        &format!("the ERP order number is on the {crm} order"),
        crm_order.erp_number,
        &erp_number,
    );
    s.eq_text(
        &format!("the credit decision is visible in {crm}"),
        crm_order.credit_text,
        "Released to the ERP",
    );
    s.eq_text(
        "the processing status is Confirmed",
        crm_order.status,
        "Confirmed",
    );

    // 5. Order over credit → held, reason in the CRM.
    s.step(
        6,
        "The customer orders 100 × P-200 (46,000.00): over the credit limit with the open order",
    );
    w.crm.create_order(ORDER_BIG, 100, &price_list)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    let reason = w.crm.order(ORDER_BIG).credit_text;
    s.check(
        &format!("the order is held, with the reason in {crm}"),
        reason.starts_with("Credit hold: Credit limit exceeded"),
        reason.clone(),
    );
    s.check(
        &format!("no sales order was created in {erp}"),
        w.erp.order(ORDER_BIG).is_none(),
        String::new(),
    );

    // 6. Status: partly picked → picked → invoiced.
    s.step(7, "The warehouse picks 25 of 40, then all 40");
    w.erp
        .pick(&erp_number, "0.625")
        .map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    s.eq_text(
        &format!("{crm} shows Partially Picked"),
        w.crm.order(ORDER_OK).status,
        "Partially Picked",
    );
    w.erp.pick(&erp_number, "1").map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    s.eq_text(
        &format!("{crm} shows Picked"),
        w.crm.order(ORDER_OK).status,
        "Picked",
    );

    s.step(8, &format!("{erp} ships and invoices the order"));
    let invoice_no = w
        .erp
        .ship_and_invoice(&erp_number)
        .map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    s.eq_text(
        &format!("{crm} shows Invoiced"),
        w.crm.order(ORDER_OK).status,
        "Invoiced",
    );
    let (total, tier, accrual) = w.crm.invoice(&invoice_no);
    s.eq_dec(
        &format!("invoice {invoice_no} is in the {crm} sales history"),
        total,
        "20240",
    );
    s.eq_text("the rebate tier reached is on the invoice", tier, "Silver");
    s.eq_dec("the rebate accrued on it", accrual, "368");
    let period = {
        use chrono::Datelike;
        let d = w.erp.invoice_date(&invoice_no).unwrap_or_default();
        format!("{}-Q{}", d.year(), (d.month() - 1) / 3 + 1)
    };
    let memo = w.erp.credit_note(&format!("REB-{ACCOUNT}-{period}-Silver"));
    s.eq_dec(
        &format!("crossing the Silver tier raised a rebate credit note in {erp}"),
        memo.and_then(|(_, amount, _)| amount),
        "368",
    );
    s.eq_dec(
        &format!("the account balance in {crm}"),
        w.crm.balance(),
        "20240",
    );

    // 7. Payment → CRM; the held order is re-evaluated and released.
    s.step(
        9,
        "The customer pays invoice {invoice_no} in full"
            .replace("{invoice_no}", &invoice_no)
            .as_str(),
    );
    let payment_no = w
        .erp
        .register_payment(&invoice_no, "20240")
        .map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    let paid = w
        .crm
        .payments()
        .into_iter()
        .find(|(n, _, _)| *n == payment_no)
        .and_then(|(_, amount, _)| amount);
    s.eq_dec(&format!("payment {payment_no} is in {crm}"), paid, "20240");
    s.eq_dec(
        &format!("the account balance in {crm} is back to zero"),
        w.crm.balance(),
        "0",
    );
    s.eq_text(
        "the held order was re-evaluated and released",
        w.crm.order(ORDER_BIG).credit_text,
        "Released to the ERP",
    );
    s.check(
        &format!("and {erp} now has it"),
        w.erp.order(ORDER_BIG).is_some(),
        String::new(),
    );

    let ok = s.report.checks.iter().filter(|c| c.ok).count();
    let total = s.report.checks.len();
    let report = s.report;
    print_table(&w, out)?;
    #[cfg(feature = "aws")]
    if let Backend::Aws(a) = &w.pipeline.store {
        let c = a.store.counters();
        let ops: Vec<String> = c
            .requests()
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "\nAWS requests made: {} ({}); DynamoDB write units: {}",
            c.total_requests(),
            ops.join(", "),
            c.total_write_units()
        );
    }
    let _ = writeln!(
        out,
        "\n{ok} of {total} expected outcomes happened{}",
        if ok == total {
            "."
        } else {
            " — the demo FAILED."
        }
    );
    Ok(report)
}

fn print_table(w: &World, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut rows: Vec<[String; 3]> = vec![[
        "record".into(),
        format!("{} (CRM)", w.crm.name()),
        format!("{} (ERP)", w.erp.name()),
    ]];
    let (limit, balance) = w.erp.customer_figures();
    rows.push([
        format!("account {ACCOUNT}"),
        format!(
            "limit {} · balance {}",
            fmt(w.crm.credit_limit()),
            fmt(w.crm.balance())
        ),
        format!("customer · limit {} · balance {}", fmt(limit), fmt(balance)),
    ]);
    rows.push([
        format!("item {ITEM}"),
        format!("product · price {}", fmt(w.crm.product().1)),
        format!("item · price {}", fmt(w.erp.item_price())),
    ]);
    let (quotation, _, tax) = w.erp.quotation();
    rows.push([
        format!("quote {QUOTE}"),
        format!("tax {}", fmt(w.crm.quote_tax())),
        format!("{quotation} · tax {}", fmt(tax)),
    ]);
    for o in [ORDER_OK, ORDER_BIG] {
        let co = w.crm.order(o);
        let eo = w.erp.order(o);
        rows.push([
            format!("order {o}"),
            format!(
                "{} · {} · ERP {}",
                co.credit_status, co.status, co.erp_number
            ),
            eo.map(|e| format!("{} · {}", e.number, e.status))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    for (n, erp_total, remaining, status) in w.erp.invoices() {
        let (total, tier, accrual) = w.crm.invoice(&n);
        rows.push([
            format!("invoice {n}"),
            format!("total {} · rebate {tier} {}", fmt(total), fmt(accrual)),
            format!(
                "total {} · remaining {} · {status}",
                fmt(erp_total),
                fmt(remaining)
            ),
        ]);
    }
    for reference in w.erp.credit_note_references() {
        if let Some((number, amount, status)) = w.erp.credit_note(&reference) {
            rows.push([
                format!("credit note {reference}"),
                "-".into(),
                format!("{number} · {} · {status}", fmt(amount)),
            ]);
        }
    }
    for (number, amount, invoice) in w.crm.payments() {
        rows.push([
            format!("payment {number}"),
            format!("amount {} · invoice {invoice}", fmt(amount)),
            "journal line (posted)".into(),
        ]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    writeln!(out, "\nBoth systems at the end:")?;
    for (n, r) in rows.iter().enumerate() {
        writeln!(
            out,
            "  {:w0$}  │ {:w1$}  │ {}",
            r[0],
            r[1],
            r[2],
            w0 = widths[0],
            w1 = widths[1]
        )?;
        if n == 0 {
            writeln!(
                out,
                "  {}──┼─{}──┼─{}",
                "─".repeat(widths[0]),
                "─".repeat(widths[1]),
                "─".repeat(widths[2])
            )?;
        }
    }
    Ok(())
}

fn fmt(d: Option<Decimal>) -> String {
    d.map(format_amount).unwrap_or_else(|| "-".into())
}
