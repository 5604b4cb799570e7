//! Finance & Operations: business and data events at `POST /webhooks/fo` (the key, a
//! redelivery, a deployment paired with another ERP, echoes), the flows from F&O to the CRM
//! (invoices, order progress, products) against a simulated F&O and Dataverse, and
//! multi-company routing into F&O legal entities.

use crate::common::{fixture, inbound_depth, world};
use p2c_core::inbound::dataverse::DataverseAuth;
use p2c_core::inbound::WebhookRequest;
use p2c_core::pipeline::ingest::ingest;
use p2c_core::ports::{AuditLog, QueueName};

fn business_event(key: Option<&str>, body: String) -> WebhookRequest {
    crate::common::json_webhook("/webhooks/fo", key, body)
}

#[tokio::test]
async fn business_events_need_the_key_and_a_redelivery_is_one_event() {
    let (mut w, _d) = world().await;
    w.pipeline.ingest.auth.fin_ops = DataverseAuth {
        header: Some("x-p2c-key".into()),
        query_param: Some("code".into()),
        secrets: vec!["fo-key".into()],
    };
    let sample = fixture("fo_invoice_posted_event.json");
    for key in [None, Some("wrong")] {
        let r = ingest(
            &w.pipeline.ingest,
            "fo",
            &business_event(key, sample.clone()),
        )
        .await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    assert_eq!(inbound_depth(&w).await, 0);
    // Delivered twice (F&O retries until it gets a 2xx): queued once.
    for _ in 0..2 {
        let r = ingest(
            &w.pipeline.ingest,
            "fo",
            &business_event(Some("fo-key"), sample.clone()),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    assert_eq!(inbound_depth(&w).await, 1);
    // This deployment pairs Dataverse with Business Central: the event is recorded as
    // ignored, with the reason, and nothing is written anywhere.
    let before = (w.bc().log().len(), w.dataverse().log().len());
    w.settle().await.expect("settles");
    assert_eq!((w.bc().log().len(), w.dataverse().log().len()), before);
    // F&O keys are case-insensitive, so the record's id is kept in lower case.
    let trail = w
        .pipeline
        .store
        .trail("fin_ops/invoice/usmf:civ-000812")
        .await
        .expect("trail");
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(trail[0].outcome, "ignored");
    assert!(
        trail[0]
            .detail
            .contains("Finance & Operations is not this deployment's ERP"),
        "{}",
        trail[0].detail
    );
    // An event p2c does not read is refused with a stable code, naming it.
    let other = sample.replace("SalesInvoicePostedBusinessEvent", "VendorPaidBusinessEvent");
    let r = ingest(
        &w.pipeline.ingest,
        "fo",
        &business_event(Some("fo-key"), other),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("unknown_entity") && r.body.contains("VendorPaidBusinessEvent"),
        "{}",
        r.body
    );
}

/// A Salesforce account change event, as an API destination posts it.
fn account_event(n: u64, company: Option<&str>) -> WebhookRequest {
    let mut payload = serde_json::json!({
        "ChangeEventHeader": {
            "entityName": "Account", "recordIds": [format!("0015f00002J9Y{n:05}")], "changeType": "CREATE",
            "changeOrigin": "com/salesforce/api/soap/62.0;client=SfdcInternalAPI/",
            "transactionKey": format!("tk-{n}"), "sequenceNumber": 1, "commitTimestamp": 1778749965000u64,
            "commitNumber": 1778749965433528300u64 + n, "commitUser": "0055f000005mc66AAA",
            "nulledFields": [], "diffFields": [], "changedFields": []
        },
        "Name": format!("Account {n}"), "ERP_Customer_Number__c": format!("C-{n}"), "CurrencyIsoCode": "USD",
    });
    if let Some(c) = company {
        payload["P2C_Company__c"] = serde_json::json!(c);
    }
    let body = serde_json::json!({
        "version": "0", "id": format!("ev-{n}"), "detail-type": "AccountChangeEvent",
        "source": "aws.partner/salesforce.com/00D5f000005KcCnEAK/0YL5f000000CabWGAS",
        "account": "123456789012", "time": "2026-05-14T09:12:46Z", "region": "eu-west-1", "resources": [],
        "detail": { "payload": payload }
    });
    WebhookRequest {
        method: "POST".into(),
        path: "/webhooks/salesforce".into(),
        query: vec![],
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-p2c-key".into(), "k".into()),
        ],
        body: body.to_string().into_bytes(),
    }
}

/// Multi-company: a Salesforce picklist names each account's legal entity, mapped through
/// the `companies` value map; F&O gets each customer in its own `dataAreaId`, an account
/// without one goes to the configured legal entity, and an account naming a company
/// nobody mapped is dead-lettered with the reason, written nowhere.
#[tokio::test]
async fn each_account_goes_to_the_legal_entity_its_company_field_names() {
    let sim = p2c_core::sim::fo::SimFinOps::start("usmf")
        .await
        .expect("sim");
    let mut files = crate::common::rule_files();
    let flows = files.get_mut("flows.toml").expect("flows.toml");
    *flows = flows
        .replace("crm = \"dataverse\"", "crm = \"salesforce\"")
        .replace("erp = \"business_central\"", "erp = \"fin_ops\"")
        .replace(
            "[systems.salesforce]\n",
            "[systems.salesforce]\ncompany_field = \"P2C_Company__c\"\n",
        );
    files
        .get_mut("value_maps.toml")
        .expect("value maps")
        .push_str(
            "\n[companies]\n\"Contoso Retail\" = \"USRT\"\n\"Contoso Manufacturing\" = \"USMF\"\n",
        );
    let rules = std::sync::Arc::new(p2c_core::rules::RuleSet::from_files(files).expect("rules"));
    let endpoints = p2c_core::app::Endpoints {
        dataverse: None,
        business_central: None,
        salesforce: None,
        fin_ops: Some((
            sim.data_url(),
            p2c_core::connectors::oauth::Credentials::Bearer("t".into()),
        )),
    };
    let auth = p2c_core::pipeline::ingest::InboundAuth {
        salesforce: p2c_core::inbound::salesforce::SalesforceAuth {
            secrets: vec!["k".into()],
            org_ids: vec!["00D5f000005KcCnEAK".into()],
        },
        ..Default::default()
    };
    let (p, _dir) = crate::common::pipeline_on_file(rules, auth, &endpoints);
    for (n, company) in [
        (1, Some("Contoso Retail")),
        (2, None),
        (3, Some("Fabrikam Europe")),
    ] {
        let r = ingest(&p.ingest, "salesforce", &account_event(n, company)).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    p.run_until_idle(std::time::Duration::from_secs(30))
        .await
        .expect("runs");
    let c1 = sim.find("CustomersV3", "CustomerAccount", "C-1");
    assert_eq!(c1.len(), 1);
    assert_eq!(c1[0]["dataAreaId"], "usrt", "routed by its picklist");
    let c2 = sim.find("CustomersV3", "CustomerAccount", "C-2");
    assert_eq!(
        c2[0]["dataAreaId"], "usmf",
        "no company named: the configured one"
    );
    assert!(sim.find("CustomersV3", "CustomerAccount", "C-3").is_empty());
    let dead = p2c_core::ports::DeadLetters::list(&p.store, QueueName::Inbound)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].code, "unmapped_company");
    assert!(
        dead[0].reason.contains("Fabrikam Europe"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].reason.contains("[companies]"), "{}", dead[0].reason);
}

/// An invoice posted in F&O reaches the Dataverse sales history: the business event, the
/// order header read for the CRM's order number, the F&O invoice mapping, the rebate rule,
/// the Web API write.
#[tokio::test]
async fn an_invoice_posted_in_f_and_o_lands_in_the_crm_sales_history_against_its_order() {
    let (fo, crm) = simulated().await;
    // The order the CRM sent earlier, as F&O holds it, and the CRM's side of it.
    fo.insert(
        "SalesOrderHeadersV2",
        serde_json::json!({"dataAreaId": "usmf", "SalesOrderNumber": "000731",
            "CustomersOrderReference": "ORD-01007-K4Z8V1", "OrderingCustomerAccountNumber": "US-027"}),
    );
    crm_account_and_order(&crm);
    let (p, _dir) = dataverse_with_fin_ops(&crm, &fo);
    post_and_run(&p, fixture("fo_invoice_posted_event.json")).await;
    let dead = p2c_core::ports::DeadLetters::list(&p.store, QueueName::Inbound)
        .await
        .expect("dead letters");
    assert!(dead.is_empty(), "{dead:?}");
    let invoice = crm
        .find("invoices", "invoicenumber", "CIV-000812")
        .expect("the invoice is in Dataverse");
    assert_eq!(invoice["totalamount"].to_string(), "20240");
    assert_eq!(invoice["totaltax"].to_string(), "1840");
    assert_eq!(invoice["p2c_invoicedate"], "2026-05-14");
    let order_id = crm
        .find("salesorders", "ordernumber", "ORD-01007-K4Z8V1")
        .and_then(|o| o.get("salesorderid").cloned())
        .expect("order id");
    assert_eq!(
        invoice["_salesorderid_value"], order_id,
        "linked to the CRM's order"
    );
    // 18,400.00 net crosses into the Silver tier: 2% accrued on the invoice.
    assert_eq!(invoice["p2c_rebatetier"], "Silver");
    assert_eq!(invoice["p2c_rebateaccrual"].to_string(), "368");
    // Crossing the tier raises the rebate credit note: an unposted free text invoice in F&O
    // with one negative line, in the invoice's legal entity.
    let to_erp = p2c_core::ports::DeadLetters::list(&p.store, QueueName::ToErp)
        .await
        .expect("dead letters");
    assert!(to_erp.is_empty(), "{to_erp:?}");
    let notes = fo.records("FreeTextInvoiceHeaders");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["CustomersReference"], "REB-US-027-2026-Q2-Silver");
    assert_eq!(notes[0]["dataAreaId"], "usmf");
    let lines = fo.records("FreeTextInvoiceLines");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["Amount"], serde_json::json!(-368));
}

/// A deployment pairing Dataverse with Finance & Operations, both simulated.
fn dataverse_with_fin_ops(
    crm: &p2c_core::sim::dataverse::SimDataverse,
    fo: &p2c_core::sim::fo::SimFinOps,
) -> (p2c_core::app::Pipeline, tempfile::TempDir) {
    let mut files = crate::common::rule_files();
    let flows = files.get_mut("flows.toml").expect("flows.toml");
    *flows = flows.replace("erp = \"business_central\"", "erp = \"fin_ops\"");
    let rules = std::sync::Arc::new(p2c_core::rules::RuleSet::from_files(files).expect("rules"));
    let bearer = || p2c_core::connectors::oauth::Credentials::Bearer("t".into());
    let endpoints = p2c_core::app::Endpoints {
        dataverse: Some((crm.api_base(), bearer())),
        business_central: None,
        salesforce: None,
        fin_ops: Some((fo.data_url(), bearer())),
    };
    let auth = p2c_core::pipeline::ingest::InboundAuth {
        fin_ops: DataverseAuth {
            header: Some("x-p2c-key".into()),
            query_param: Some("code".into()),
            secrets: vec!["fo-key".into()],
        },
        ..Default::default()
    };
    crate::common::pipeline_on_file(rules, auth, &endpoints)
}

/// An event raised by p2c's own Entra application in F&O (`integration_user` under
/// `[systems.fin_ops]`) is an echo: recorded and dropped, nothing written to the CRM.
#[tokio::test]
async fn an_event_initiated_by_p2c_s_own_application_is_an_echo() {
    let (fo, crm) = simulated().await;
    let (p, _dir) = dataverse_with_fin_ops(&crm, &fo);
    let me = p
        .sync
        .rules
        .settings(p2c_core::domain::System::FinOps)
        .integration_user
        .expect("configured");
    let body = fixture("fo_invoice_posted_event.json").replace(
        "{C600136F-6814-41D9-8642-40CA0EC4EDD4}",
        &format!("{{{}}}", me.to_uppercase()),
    );
    let r = ingest(&p.ingest, "fo", &business_event(Some("fo-key"), body)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    p.run_until_idle(std::time::Duration::from_secs(30))
        .await
        .expect("runs");
    assert!(crm
        .find("invoices", "invoicenumber", "CIV-000812")
        .is_none());
    let trail = p
        .store
        .trail("fin_ops/invoice/usmf:civ-000812")
        .await
        .expect("trail");
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(trail[0].outcome, "echo");
    assert!(
        trail[0].detail.contains("Finance & Operations user"),
        "{}",
        trail[0].detail
    );
}

/// A data event as the Power Platform integration proxies it: a `RemoteExecutionContext`
/// naming the virtual table and carrying the record's key.
fn order_data_event(operation: &str, order: &str) -> String {
    serde_json::json!({
        "MessageName": "Update", "PrimaryEntityName": "mserp_salesorderheaderv2entity",
        "PrimaryEntityId": "5b1e3d75-a749-ef11-acce-00224802d26d", "OperationId": operation,
        "CorrelationId": "c1b3a8e0-0000-4000-8000-000000000001", "Depth": 1,
        "OperationCreatedOn": "/Date(1778753145000)/",
        "InitiatingUserAzureActiveDirectoryObjectId": "c600136f-6814-41d9-8642-40ca0ec4edd4",
        "InputParameters": [{ "key": "Target", "value": {
            "__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
            "LogicalName": "mserp_salesorderheaderv2entity",
            "Attributes": [
                { "key": "mserp_dataareaid", "value": "USMF" },
                { "key": "mserp_salesordernumber", "value": order },
                { "key": "mserp_salesorderstatus", "value": { "__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 200000002 } }
            ]
        }}],
        "PostEntityImages": [], "PreEntityImages": []
    })
    .to_string()
}

/// Order progress from F&O: the data event names the order, p2c reads it with its lines
/// through OData, and the CRM order's processing status follows each step.
#[tokio::test]
async fn an_order_s_progress_in_f_and_o_shows_on_the_crm_order() {
    let (fo, crm) = simulated().await;
    fo.insert(
        "SalesOrderHeadersV2",
        serde_json::json!({"dataAreaId": "usmf", "SalesOrderNumber": "000731",
            "CustomersOrderReference": "ORD-01007-K4Z8V1", "SalesOrderStatus": "Backorder"}),
    );
    for (lot, status) in [("LOT-1", "Delivered"), ("LOT-2", "Backorder")] {
        fo.insert(
            "SalesOrderLines",
            serde_json::json!({"dataAreaId": "usmf", "InventoryLotId": lot, "SalesOrderNumber": "000731",
                "ItemNumber": "P-200", "OrderedSalesQuantity": 20, "SalesOrderLineStatus": status}),
        );
    }
    crm_account_and_order(&crm);
    let (p, _dir) = dataverse_with_fin_ops(&crm, &fo);
    post_and_run(&p, order_data_event("op-1", "000731")).await;
    let status = |crm: &p2c_core::sim::dataverse::SimDataverse| {
        crm.find("salesorders", "ordernumber", "ORD-01007-K4Z8V1")
            .and_then(|o| o.get("p2c_processingstatus").cloned())
    };
    assert_eq!(status(&crm), Some(serde_json::json!("Partially Shipped")));
    assert_eq!(
        crm.find("salesorders", "ordernumber", "ORD-01007-K4Z8V1")
            .and_then(|o| o.get("p2c_erpordernumber").cloned()),
        Some(serde_json::json!("000731"))
    );
    // Another legal entity has an order with the same number; a second data event for
    // usmf's 000731, unchanged there, says nothing new: usrt's is never read.
    fo.insert(
        "SalesOrderHeadersV2",
        serde_json::json!({"dataAreaId": "usrt", "SalesOrderNumber": "000731",
            "CustomersOrderReference": "OTHER", "SalesOrderStatus": "Backorder"}),
    );
    post_and_run(&p, order_data_event("op-2", "000731")).await;
    assert_eq!(status(&crm), Some(serde_json::json!("Partially Shipped")));
    let dead = p2c_core::ports::DeadLetters::list(&p.store, QueueName::Inbound)
        .await
        .expect("dead letters");
    assert!(dead.is_empty(), "{dead:?}");
}

/// A product released in F&O becomes a CRM product with its price: the data event names
/// it, p2c reads it through OData, the F&O item mapping prices it.
#[tokio::test]
async fn a_product_released_in_f_and_o_becomes_a_priced_crm_product() {
    let (fo, crm) = simulated().await;
    fo.insert(
        "ReleasedProductsV2",
        serde_json::json!({"dataAreaId": "usmf", "ItemNumber": "P-200", "ProductName": "Pump P-200",
            "SalesPrice": 460.10, "SalesUnitSymbol": "PCS", "ProductGroupId": "PUMPS"}),
    );
    let (p, _dir) = dataverse_with_fin_ops(&crm, &fo);
    let event = serde_json::json!({
        "MessageName": "Create", "PrimaryEntityName": "mserp_releasedproductv2entity", "OperationId": "op-p1",
        "OperationCreatedOn": "/Date(1778753145000)/",
        "InputParameters": [{ "key": "Target", "value": { "Attributes": [
            { "key": "mserp_dataareaid", "value": "usmf" }, { "key": "mserp_itemnumber", "value": "P-200" }
        ]}}]
    });
    post_and_run(&p, event.to_string()).await;
    let product = crm
        .find("products", "productnumber", "P-200")
        .expect("the product is in Dataverse");
    assert_eq!(product["name"], "Pump P-200");
    let id = product["productid"].clone();
    let price = crm
        .records("productpricelevels")
        .into_iter()
        .find(|pl| pl.get("_productid_value") == Some(&id))
        .expect("a price list item");
    assert_eq!(price["amount"].to_string(), "460.1");
}

/// A simulated F&O (default legal entity usmf) and Dataverse.
async fn simulated() -> (
    p2c_core::sim::fo::SimFinOps,
    p2c_core::sim::dataverse::SimDataverse,
) {
    let fo = p2c_core::sim::fo::SimFinOps::start("usmf")
        .await
        .expect("sim");
    let crm = p2c_core::sim::dataverse::SimDataverse::start("7d5c0e12-3b1a-ef11-9f8a-6045bdd4c6be")
        .await
        .expect("sim");
    (fo, crm)
}

/// The CRM's account US-027 and its order ORD-01007-K4Z8V1, as p2c synced them earlier.
fn crm_account_and_order(crm: &p2c_core::sim::dataverse::SimDataverse) {
    crm.create(
        "accounts",
        serde_json::json!({"accountnumber": "US-027", "name": "Fabrikam US"}),
    )
    .expect("account");
    crm.create(
        "salesorders",
        serde_json::json!({"ordernumber": "ORD-01007-K4Z8V1", "name": "Fabrikam pumps",
            "customerid_account@odata.bind": "/accounts(accountnumber='US-027')"}),
    )
    .expect("order");
    crm.outbox().take();
}

/// Posts one request to `/webhooks/fo` with the key, then runs the pipeline until quiet.
async fn post_and_run(p: &p2c_core::app::Pipeline, body: String) {
    let r = ingest(&p.ingest, "fo", &business_event(Some("fo-key"), body)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    p.run_until_idle(std::time::Duration::from_secs(30))
        .await
        .expect("runs");
}

/// The reference's OData read of a sales order header (`SalesOrderHeadersV2`), served by the
/// simulated F&O, is what the reader turns a data event into, and the F&O order mapping
/// reads it: an open (Backorder) order the CRM sent is Confirmed, with F&O's number.
#[tokio::test]
async fn the_sales_order_header_sample_feeds_the_order_progress_mapping() {
    use p2c_core::ports::SourceReader;
    let (fo, _crm) = simulated().await;
    let sample: serde_json::Value =
        serde_json::from_str(&fixture("fo_salesorderheader_odata_get.json")).expect("sample");
    fo.insert("SalesOrderHeadersV2", sample.clone());
    let http = p2c_core::connectors::http::Http::new(
        p2c_core::domain::System::FinOps,
        std::sync::Arc::new(p2c_core::connectors::http::StaticToken("t".into())),
    )
    .expect("http");
    let reader = p2c_core::connectors::fo::FinOpsConnector::new(http, fo.data_url(), "usmf", "10");
    let event = p2c_core::inbound::fo::parse(
        &business_event(None, order_data_event("op-s", "000731")),
        chrono::Utc::now(),
    )
    .expect("parses")
    .remove(0);
    let read = reader.read(&event).await.expect("read");
    assert_eq!(read.len(), 1);
    let record = &read[0].fields;
    assert_eq!(record["CustomersOrderReference"], "SF-00000123");
    assert!(!record.contains_key("@odata.etag"), "annotations dropped");
    assert_eq!(record["SalesOrderLines"], serde_json::json!([]));
    let rules = crate::common::repo_rules();
    let out = rules
        .eval(
            "mapping/fin_ops/order_progress.rhai",
            &serde_json::json!({"system": "fin_ops", "resource": "SalesOrderHeadersV2", "record": record}),
        )
        .expect("maps");
    assert_eq!(out["order_number"], "SF-00000123");
    assert_eq!(out["erp_number"], "000731");
    assert_eq!(out["status"], "Confirmed");
}

/// F&O raises no event when a balance moves: a posted invoice and a posted payment each make
/// p2c read the customer again, with its open transactions. Each event delivered twice still
/// has one effect: one invoice and one payment in the CRM, the balance right after each.
#[tokio::test]
async fn posted_invoices_and_payments_move_the_crm_balance_once_each_even_redelivered() {
    let (w, _d) = dataverse_and_fin_ops().await;
    let (crm, fo) = (w.dataverse(), w.fin_ops());
    crm.create("accounts", crate::common::account("ACC-BAL", "Balance Ltd"))
        .expect("account");
    w.settle().await.expect("settles");
    assert_eq!(
        fo.find("CustomersV3", "CustomerAccount", "ACC-BAL").len(),
        1
    );
    fo.set_credit_limit("ACC-BAL", "5000").expect("limit");
    // An order entered in F&O directly, invoiced: 10 × 100.00 + 10 % tax.
    fo.insert(
        "SalesOrderHeadersV2",
        serde_json::json!({"dataAreaId": "usmf", "SalesOrderNumber": "000900", "CustomersOrderReference": "",
            "InvoiceCustomerAccountNumber": "ACC-BAL", "CurrencyCode": "USD", "SalesOrderStatus": "Backorder"}),
    );
    fo.insert(
        "SalesOrderLines",
        serde_json::json!({"dataAreaId": "usmf", "SalesOrderNumber": "000900", "InventoryLotId": "LOT-1",
            "ItemNumber": "P-200", "OrderedSalesQuantity": 10, "SalesPrice": 100}),
    );
    let balance = || {
        crm.find("accounts", "accountnumber", "ACC-BAL")
            .and_then(|a| a.get("p2c_balance").cloned())
            .map(|b| b.to_string())
    };
    let client = reqwest::Client::new();
    let redeliver_all = |hooks: Vec<p2c_core::sim::Hook>| {
        let client = client.clone();
        async move {
            for h in hooks.iter().chain(hooks.iter()) {
                let (status, body) = h.send(&client).await.expect("sent");
                assert_eq!(status, 202, "{}: {body}", h.label);
            }
        }
    };
    let invoice = fo.ship_and_invoice("000900").expect("invoiced");
    redeliver_all(fo.outbox().take()).await;
    w.settle().await.expect("settles");
    assert_eq!(balance().as_deref(), Some("1100"));
    assert_eq!(crm.records("invoices").len(), 1);
    let payment = fo.register_payment(&invoice, "600").expect("paid");
    redeliver_all(fo.outbox().take()).await;
    w.settle().await.expect("settles");
    assert_eq!(balance().as_deref(), Some("500"), "what is still open");
    let payments = crm.records("p2c_payments");
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0]["p2c_paymentnumber"], payment.as_str());
    // The trail shows why the customer was read.
    let trail = w
        .pipeline
        .store
        .trail("fin_ops/invoice/usmf:civ-000813")
        .await
        .expect("trail");
    assert!(
        trail.iter().any(|e| e.detail.contains("usmf:acc-bal")),
        "{trail:?}"
    );
}

/// A business event configured in `[systems.fin_ops.business_events]` as being about a
/// customer (here collections' status change, which raises no data event): p2c reads the
/// customer again and the CRM gets its financials, the hold included. A class that is not
/// listed stays refused.
#[tokio::test]
async fn a_configured_business_event_about_a_customer_reads_the_customer_again() {
    let (w, _d) = dataverse_and_fin_ops().await;
    let (crm, fo) = (w.dataverse(), w.fin_ops());
    crm.create(
        "accounts",
        crate::common::account("ACC-COL", "Collections Ltd"),
    )
    .expect("account");
    w.settle().await.expect("settles");
    assert!(fo.change_quietly(
        "CustomersV3",
        "CustomerAccount",
        "ACC-COL",
        serde_json::json!({"OnHoldStatus": "Invoice", "CreditLimit": 2500})
    ));
    let post = |class: &str, id: &str| {
        let body = serde_json::json!({
            "BusinessEventId": class, "BusinessEventLegalEntity": "USMF", "ControlNumber": 5637144999u64,
            "EventId": id, "EventTime": "/Date(1778753145000)/", "MajorVersion": 0, "MinorVersion": 0,
            "CustomerAccount": "ACC-COL", "CollectionStatus": "Disputed",
        })
        .to_string();
        let req = business_event(Some(&w.bc_client_state), body);
        let ctx = &w.pipeline.ingest;
        async move { ingest(ctx, "fo", &req).await }
    };
    let r = post(
        "CustCollectionStatusChangedBusinessEvent",
        "0D8B6C2E-5A11-4C3B-9E7D-2F4A6B8C0E11",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    w.settle().await.expect("settles");
    let account = crm
        .find("accounts", "accountnumber", "ACC-COL")
        .expect("account");
    assert_eq!(account["creditonhold"], true, "{account:?}");
    assert_eq!(account["creditlimit"].to_string(), "2500");
    let r = post(
        "CustInterestNotePostedBusinessEvent",
        "0D8B6C2E-5A11-4C3B-9E7D-2F4A6B8C0E12",
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("unknown_entity"), "{}", r.body);
}

/// With signing secrets set (a relay that signs F&O's events), the signature is required:
/// the key alone is refused, a signed event is queued once, the same signed request again
/// is a replay, and an old signature is stale. Nothing refused is queued.
#[tokio::test]
async fn signed_events_need_a_fresh_signature_and_the_key_alone_is_refused() {
    use p2c_core::inbound::SignedAuth;
    let (mut w, _d) = world().await;
    w.pipeline.ingest.auth.fin_ops = DataverseAuth {
        header: Some("x-p2c-key".into()),
        query_param: None,
        secrets: vec!["fo-key".into()],
    };
    w.pipeline.ingest.auth.fin_ops_signed = SignedAuth::new(vec!["relay-secret".into()], 300);
    let body = fixture("fo_invoice_posted_event.json");
    let signed = |ts: i64, secret: &str| {
        let mut req = business_event(None, body.clone());
        req.headers.push(("x-p2c-timestamp".into(), ts.to_string()));
        req.headers.push((
            "x-p2c-signature".into(),
            SignedAuth::sign(secret, ts, body.as_bytes()),
        ));
        req
    };
    let now = chrono::Utc::now().timestamp();
    for (req, code) in [
        (business_event(Some("fo-key"), body.clone()), "unauthorized"),
        (signed(now, "guess"), "unauthorized"),
        (signed(now - 3600, "relay-secret"), "stale_signature"),
    ] {
        let r = ingest(&w.pipeline.ingest, "fo", &req).await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(r.body.contains(code), "{}", r.body);
    }
    assert_eq!(inbound_depth(&w).await, 0, "nothing refused is queued");
    let once = signed(now, "relay-secret");
    let r = ingest(&w.pipeline.ingest, "fo", &once).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = ingest(&w.pipeline.ingest, "fo", &once).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("replayed_signature"), "{}", r.body);
    assert_eq!(inbound_depth(&w).await, 1);
}

/// A world pairing simulated Dataverse with simulated Finance & Operations.
async fn dataverse_and_fin_ops() -> (p2c_core::demo::World, tempfile::TempDir) {
    use p2c_core::domain::System;
    let rules = std::sync::Arc::new(
        crate::common::repo_rules()
            .with_pairing(System::Dataverse, System::FinOps)
            .expect("pairing"),
    );
    crate::common::world_with(rules).await
}
