//! `p2c demo`: the whole prospect-to-cash story against simulated Dataverse and Business
//! Central on loopback HTTP, through the real pipeline (webhooks → ingest → sync →
//! deliver → Web API / API v2.0). Every step checks its expected outcome in the target
//! system; the run fails if any check fails.

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
use crate::sim::dataverse::{DataverseHookConfig, SimDataverse};
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
const USD: &str = "083081e1-0737-eb11-bf68-0022489b563d";
const PRIMARY_UNIT: &str = "5f8d9c10-0000-4000-8000-000000000100";

/// The running world: simulators, pipeline, webhook server.
pub struct World {
    pub crm: SimDataverse,
    pub erp: SimBusinessCentral,
    pub pipeline: Pipeline,
    pub webhook_url: String,
    pub dataverse_secret: String,
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
    /// Starts both simulators and the pipeline with its webhook endpoints, on the
    /// embedded store at `store` (a temporary directory when `None`).
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

    /// Starts both simulators and the pipeline on the given backend.
    pub async fn start_on(
        rules: Arc<RuleSet>,
        backend: Backend,
        timings: Timings,
    ) -> anyhow::Result<Self> {
        let dv = rules.settings(System::Dataverse);
        let bc = rules.settings(System::BusinessCentral);
        let price_list = dv
            .price_list_id
            .clone()
            .unwrap_or_else(|| "7d5c0e12-3b1a-ef11-9f8a-6045bdd4c6be".into());
        let company = bc
            .company_id
            .clone()
            .unwrap_or_else(|| "b18aed47-c385-49d2-b954-dbdf8ad71780".into());
        let crm = SimDataverse::start(&price_list).await?;
        let erp = SimBusinessCentral::start(&company).await?;
        let dataverse_secret = secret("dataverse");
        let bc_client_state = secret("bc");
        let auth = InboundAuth {
            dataverse: DataverseAuth {
                header: Some("x-p2c-key".into()),
                query_param: None,
                secrets: vec![dataverse_secret.clone()],
            },
            bc_client_states: vec![bc_client_state.clone()],
            salesforce: Default::default(),
        };
        let endpoints = Endpoints {
            dataverse: Some((crm.api_base(), Credentials::Bearer("sim-token".into()))),
            business_central: Some((erp.root(), company, Credentials::Bearer("sim-token".into()))),
            salesforce: None,
        };
        let pipeline = Pipeline::new(backend, rules, auth, &endpoints, timings)?;
        let (url, _task) = crate::sim::serve(pipeline.router()).await?;
        crm.set_webhook(DataverseHookConfig {
            url: format!("{url}/webhooks/dataverse"),
            header: "x-p2c-key".into(),
            secret: dataverse_secret.clone(),
            integration_user: dv.integration_user.unwrap_or_default(),
        });
        erp.set_webhook(BcHookConfig {
            url: format!("{url}/webhooks/bc"),
            client_state: bc_client_state.clone(),
        });
        Ok(Self {
            crm,
            erp,
            pipeline,
            webhook_url: url,
            dataverse_secret,
            bc_client_state,
            client: reqwest::Client::new(),
            _dir: None,
        })
    }

    /// Delivers every webhook the systems owe and runs the pipeline until nothing moves.
    /// Returns the webhooks sent, with the answer each got.
    pub async fn settle(&self) -> anyhow::Result<Vec<(String, u16)>> {
        let mut all = Vec::new();
        for _ in 0..100 {
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
    let w = match &opts.aws_endpoint {
        None => World::start(opts.rules.clone(), opts.store, timings).await?,
        #[cfg(feature = "aws")]
        Some(endpoint) => {
            let prefix = format!("p2c-demo-{}", &secret("aws")[..8]);
            let backend = crate::aws::create_local(endpoint, &prefix, 5).await?;
            World::start_on(opts.rules.clone(), backend.into(), timings).await?
        }
        #[cfg(not(feature = "aws"))]
        Some(_) => anyhow::bail!("this build has no AWS adapters (feature `aws`)"),
    };
    let _ = writeln!(
        out,
        "p2c demo — Dataverse (CRM) ⇄ Business Central (ERP), rules {}, on the {}",
        opts.rules.version,
        w.pipeline.store.describe()
    );
    let _ = writeln!(
        out,
        "   simulated Dataverse at {}, Business Central at {}, p2c webhooks at {}",
        w.crm.url, w.erp.url, w.webhook_url
    );
    let mut s = Story {
        out,
        report: DemoReport::default(),
        step: String::new(),
    };

    // 1. Account → customer, then the ERP sets the credit limit.
    s.step(
        1,
        "A salesperson creates account Fabrikam Industrial Ltd in Dataverse",
    );
    w.crm
        .create("accounts", json!({
            "accountnumber": ACCOUNT, "name": "Fabrikam Industrial Ltd", "address1_line1": "1 Microsoft Way", "address1_city": "Redmond",
            "address1_stateorprovince": "WA", "address1_postalcode": "98052", "address1_country": "US", "telephone1": "+1 425 555 0100",
            "emailaddress1": "ap@fabrikam.example", "paymenttermscode": 3, "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({USD})"),
        }))
        .map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    let customer = w.erp.find("customers", "number", ACCOUNT);
    s.eq_text(
        "Business Central has customer ACC-01042-QX7T2P",
        text(customer.as_ref(), "displayName"),
        "Fabrikam Industrial Ltd",
    );
    let terms_ok = customer
        .as_ref()
        .and_then(|c| c.get("paymentTermsId"))
        .and_then(Value::as_str)
        .and_then(|id| {
            w.erp
                .records("paymentTerms")
                .into_iter()
                .find(|t| t.get("id").and_then(Value::as_str) == Some(id))
        })
        .and_then(|t| t.get("code").and_then(Value::as_str).map(str::to_string));
    s.eq_text(
        "payment terms mapped Net 45 → NET45",
        terms_ok.unwrap_or_default(),
        "NET45",
    );

    s.step(
        2,
        "The credit controller sets a credit limit of 50,000.00 in Business Central",
    );
    w.erp
        .set_credit_limit(ACCOUNT, "50000")
        .map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    let account = w.crm.find("accounts", "accountnumber", ACCOUNT);
    s.eq_dec(
        "the Dataverse account shows the credit limit",
        num(account.as_ref(), "creditlimit"),
        "50000",
    );

    // 2. Item → product with price.
    s.step(
        3,
        "Purchasing creates item P-200 Pump at 460.00 in Business Central",
    );
    w.erp
        .create_item(ITEM, "Pump P-200", "460.00", "PCS", "PUMPS")
        .map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    let product = w.crm.find("products", "productnumber", ITEM);
    s.eq_text(
        "Dataverse has product P-200",
        text(product.as_ref(), "name"),
        "Pump P-200",
    );
    let product_id = product
        .as_ref()
        .and_then(|p| p.get("productid"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let price =
        w.crm.records("productpricelevels").into_iter().find(|p| {
            p.get("_productid_value").and_then(Value::as_str) == Some(product_id.as_str())
        });
    s.eq_dec(
        "its price list item is 460.00",
        num(price.as_ref(), "amount"),
        "460",
    );

    // 3. Quote → quotation, tax back.
    s.step(
        4,
        "The salesperson activates quote QUO-01001 for 40 × P-200",
    );
    w.crm
        .create_document("quotes", json!({
            "quotenumber": QUOTE, "name": "Fabrikam pumps", "statecode": 1, "customerid_account@odata.bind": format!("/accounts(accountnumber='{ACCOUNT}')"),
            "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({USD})"), "effectiveto": "2026-06-30T00:00:00Z",
        }), vec![json!({"productid@odata.bind": format!("/products(productnumber='{ITEM}')"), "quantity": 40, "priceperunit": 460.00, "uomid@odata.bind": format!("/uoms({PRIMARY_UNIT})")})])
        .map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    let quotation = w.erp.find("salesQuotes", "externalDocumentNumber", QUOTE);
    s.eq_dec(
        "Business Central has the sales quote, 18,400.00 before tax",
        num(quotation.as_ref(), "totalAmountExcludingTax"),
        "18400",
    );
    let quote = w.crm.find("quotes", "quotenumber", QUOTE);
    s.eq_dec(
        "the tax the ERP computed is on the Dataverse quote",
        num(quote.as_ref(), "totaltax"),
        "1840",
    );

    // 4. Order within credit → released.
    s.step(
        5,
        "The customer orders 40 × P-200 (18,400.00): within the credit limit",
    );
    w.crm
        .create_document("salesorders", json!({
            "ordernumber": ORDER_OK, "name": "Fabrikam - 40 x Pump P-200", "customerid_account@odata.bind": format!("/accounts(accountnumber='{ACCOUNT}')"),
            "pricelevelid@odata.bind": format!("/pricelevels({})", opts.rules.settings(System::Dataverse).price_list_id.unwrap_or_default()),
            "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({USD})"), "requestdeliveryby": "2026-06-01T00:00:00Z",
        }), vec![json!({"productid@odata.bind": format!("/products(productnumber='{ITEM}')"), "quantity": 40, "priceperunit": 460.00, "uomid@odata.bind": format!("/uoms({PRIMARY_UNIT})")})])
        .map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    let erp_order = w
        .erp
        .find("salesOrders", "externalDocumentNumber", ORDER_OK);
    let erp_number = text(erp_order.as_ref(), "number");
    s.check(
        "Business Central has the sales order",
        erp_order.is_some(),
        format!("number {erp_number}"),
    );
    let crm_order = w.crm.find("salesorders", "ordernumber", ORDER_OK);
    s.eq_text(
        "the ERP order number is on the Dataverse order",
        text(crm_order.as_ref(), "p2c_erpordernumber"),
        &erp_number,
    );
    s.eq_text(
        "the credit decision is visible in Dataverse",
        text(crm_order.as_ref(), "submitstatusdescription"),
        "Released to the ERP",
    );
    s.eq_text(
        "the processing status is Confirmed",
        text(crm_order.as_ref(), "p2c_processingstatus"),
        "Confirmed",
    );

    // 5. Order over credit → held, reason in the CRM.
    s.step(
        6,
        "The customer orders 100 × P-200 (46,000.00): over the credit limit with the open order",
    );
    w.crm
        .create_document("salesorders", json!({
            "ordernumber": ORDER_BIG, "name": "Fabrikam - 100 x Pump P-200", "customerid_account@odata.bind": format!("/accounts(accountnumber='{ACCOUNT}')"),
            "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({USD})"),
        }), vec![json!({"productid@odata.bind": format!("/products(productnumber='{ITEM}')"), "quantity": 100, "priceperunit": 460.00, "uomid@odata.bind": format!("/uoms({PRIMARY_UNIT})")})])
        .map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    let held = w.crm.find("salesorders", "ordernumber", ORDER_BIG);
    let reason = text(held.as_ref(), "submitstatusdescription");
    s.check(
        "the order is held, with the reason in Dataverse",
        reason.starts_with("Credit hold: Credit limit exceeded"),
        reason.clone(),
    );
    s.check(
        "no sales order was created in Business Central",
        w.erp
            .find("salesOrders", "externalDocumentNumber", ORDER_BIG)
            .is_none(),
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
        "Dataverse shows Partially Picked",
        text(
            w.crm.find("salesorders", "ordernumber", ORDER_OK).as_ref(),
            "p2c_processingstatus",
        ),
        "Partially Picked",
    );
    w.erp.pick(&erp_number, "1").map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    s.eq_text(
        "Dataverse shows Picked",
        text(
            w.crm.find("salesorders", "ordernumber", ORDER_OK).as_ref(),
            "p2c_processingstatus",
        ),
        "Picked",
    );

    s.step(8, "Business Central ships and invoices the order");
    let invoice_no = w
        .erp
        .ship_and_invoice(&erp_number)
        .map_err(anyhow::Error::msg)?;
    let sent = w.settle().await?;
    s.hooks(&sent);
    s.eq_text(
        "Dataverse shows Invoiced",
        text(
            w.crm.find("salesorders", "ordernumber", ORDER_OK).as_ref(),
            "p2c_processingstatus",
        ),
        "Invoiced",
    );
    let invoice = w.crm.find("invoices", "invoicenumber", &invoice_no);
    s.eq_dec(
        &format!("invoice {invoice_no} is in the Dataverse sales history"),
        num(invoice.as_ref(), "totalamount"),
        "20240",
    );
    s.eq_text(
        "the rebate tier reached is on the invoice",
        text(invoice.as_ref(), "p2c_rebatetier"),
        "Silver",
    );
    s.eq_dec(
        "the rebate accrued on it",
        num(invoice.as_ref(), "p2c_rebateaccrual"),
        "368",
    );
    let period = {
        use chrono::Datelike;
        let d = w
            .erp
            .find("salesInvoices", "number", &invoice_no)
            .and_then(|i| {
                i.get("invoiceDate")
                    .and_then(Value::as_str)
                    .and_then(|d| d.parse::<chrono::NaiveDate>().ok())
            })
            .unwrap_or_default();
        format!("{}-Q{}", d.year(), (d.month() - 1) / 3 + 1)
    };
    let memo = w.erp.find(
        "salesCreditMemos",
        "externalDocumentNumber",
        &format!("REB-{ACCOUNT}-{period}-Silver"),
    );
    s.eq_dec(
        "crossing the Silver tier raised a rebate credit memo in Business Central",
        num(memo.as_ref(), "totalAmountExcludingTax"),
        "368",
    );
    s.eq_dec(
        "the account balance in Dataverse",
        num(
            w.crm.find("accounts", "accountnumber", ACCOUNT).as_ref(),
            "p2c_balance",
        ),
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
    let payment = w.crm.find("p2c_payments", "p2c_paymentnumber", &payment_no);
    s.eq_dec(
        &format!("payment {payment_no} is in Dataverse"),
        num(payment.as_ref(), "p2c_amount"),
        "20240",
    );
    s.eq_dec(
        "the account balance in Dataverse is back to zero",
        num(
            w.crm.find("accounts", "accountnumber", ACCOUNT).as_ref(),
            "p2c_balance",
        ),
        "0",
    );
    let released = w.crm.find("salesorders", "ordernumber", ORDER_BIG);
    s.eq_text(
        "the held order was re-evaluated and released",
        text(released.as_ref(), "submitstatusdescription"),
        "Released to the ERP",
    );
    s.check(
        "and Business Central now has it",
        w.erp
            .find("salesOrders", "externalDocumentNumber", ORDER_BIG)
            .is_some(),
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
        "Dataverse (CRM)".into(),
        "Business Central (ERP)".into(),
    ]];
    let a = w.crm.find("accounts", "accountnumber", ACCOUNT);
    let c = w.erp.find("customers", "number", ACCOUNT);
    rows.push([
        format!("account {ACCOUNT}"),
        format!(
            "limit {} · balance {}",
            fmt(num(a.as_ref(), "creditlimit")),
            fmt(num(a.as_ref(), "p2c_balance"))
        ),
        format!(
            "customer · limit {} · balance {}",
            fmt(num(c.as_ref(), "creditLimit")),
            fmt(num(c.as_ref(), "balanceDue"))
        ),
    ]);
    let p = w.crm.find("products", "productnumber", ITEM);
    let i = w.erp.find("items", "number", ITEM);
    rows.push([
        format!("item {ITEM}"),
        format!("product · price {}", fmt(num(p.as_ref(), "price"))),
        format!("item · price {}", fmt(num(i.as_ref(), "unitPrice"))),
    ]);
    let q = w.crm.find("quotes", "quotenumber", QUOTE);
    let sq = w.erp.find("salesQuotes", "externalDocumentNumber", QUOTE);
    rows.push([
        format!("quote {QUOTE}"),
        format!(
            "tax {} · total {}",
            fmt(num(q.as_ref(), "totaltax")),
            fmt(num(q.as_ref(), "totalamount"))
        ),
        format!(
            "{} · tax {}",
            text(sq.as_ref(), "number"),
            fmt(num(sq.as_ref(), "totalTaxAmount"))
        ),
    ]);
    for o in [ORDER_OK, ORDER_BIG] {
        let co = w.crm.find("salesorders", "ordernumber", o);
        let eo = w.erp.find("salesOrders", "externalDocumentNumber", o);
        rows.push([
            format!("order {o}"),
            format!(
                "{} · {} · ERP {}",
                text(co.as_ref(), "p2c_creditstatus"),
                text(co.as_ref(), "p2c_processingstatus"),
                text(co.as_ref(), "p2c_erpordernumber")
            ),
            format!(
                "{} · {}",
                text(eo.as_ref(), "number"),
                text(eo.as_ref(), "status")
            ),
        ]);
    }
    for inv in w.erp.records("salesInvoices") {
        let n = text(Some(&inv), "number");
        let ci = w.crm.find("invoices", "invoicenumber", &n);
        rows.push([
            format!("invoice {n}"),
            format!(
                "total {} · rebate {} {}",
                fmt(num(ci.as_ref(), "totalamount")),
                text(ci.as_ref(), "p2c_rebatetier"),
                fmt(num(ci.as_ref(), "p2c_rebateaccrual"))
            ),
            format!(
                "total {} · remaining {} · {}",
                fmt(num(Some(&inv), "totalAmountIncludingTax")),
                fmt(num(Some(&inv), "remainingAmount")),
                text(Some(&inv), "status")
            ),
        ]);
    }
    for m in w.erp.records("salesCreditMemos") {
        rows.push([
            format!("credit memo {}", text(Some(&m), "externalDocumentNumber")),
            "-".into(),
            format!(
                "{} · {} · {}",
                text(Some(&m), "number"),
                fmt(num(Some(&m), "totalAmountExcludingTax")),
                text(Some(&m), "status")
            ),
        ]);
    }
    for p in w.crm.records("p2c_payments") {
        rows.push([
            format!("payment {}", text(Some(&p), "p2c_paymentnumber")),
            format!(
                "amount {} · invoice {}",
                fmt(num(Some(&p), "p2c_amount")),
                text(Some(&p), "p2c_invoicenumber")
            ),
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
