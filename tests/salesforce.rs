//! Salesforce in: Outbound Messages through the webhook endpoint (secret in the URL, org
//! allow-list, SOAP Ack only once queued), and what the pipeline does with changes from a
//! Salesforce org it is not paired with.

use crate::common::{fixture, inbound_depth, world};
use p2c_core::inbound::salesforce::SalesforceAuth;
use p2c_core::inbound::WebhookRequest;
use p2c_core::pipeline::ingest::ingest;
use p2c_core::ports::QueueName;

const ORG: &str = "00D5f000005KcCnEAK";

fn outbound(key: Option<&str>, body: String) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        path: "/webhooks/salesforce".into(),
        query: key
            .map(|k| vec![("key".to_string(), k.to_string())])
            .unwrap_or_default(),
        headers: vec![
            ("content-type".into(), "text/xml; charset=utf-8".into()),
            ("soapaction".into(), "\"\"".into()),
        ],
        body: body.into_bytes(),
    }
}

#[tokio::test]
async fn an_outbound_message_is_acked_only_once_queued_and_only_with_the_key_and_org() {
    let (mut w, _d) = world().await;
    w.pipeline.ingest.auth.salesforce = SalesforceAuth {
        secrets: vec!["old-key".into(), "new-key".into()],
        org_ids: vec![ORG.into()],
    };
    let sample = fixture("salesforce_outbound_message.xml");

    for (key, why) in [(None, "no key"), (Some("wrong"), "a wrong key")] {
        let r = ingest(
            &w.pipeline.ingest,
            "salesforce",
            &outbound(key, sample.clone()),
        )
        .await;
        assert_eq!(r.status, 401, "{why}: {}", r.body);
        assert!(!r.body.contains("old-key") && !r.body.contains("new-key"));
    }
    let other_org = sample.replace(ORG, "00D000000000001AAA");
    let r = ingest(
        &w.pipeline.ingest,
        "salesforce",
        &outbound(Some("new-key"), other_org),
    )
    .await;
    assert_eq!(r.status, 401, "another org: {}", r.body);
    let dtd = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{}",
        sample.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
    );
    let r = ingest(
        &w.pipeline.ingest,
        "salesforce",
        &outbound(Some("new-key"), dtd),
    )
    .await;
    assert_eq!(
        (r.status, r.body.contains("malformed_xml")),
        (400, true),
        "{}",
        r.body
    );
    assert_eq!(inbound_depth(&w).await, 0, "nothing refused was queued");

    // Both keys work while one is rotated; the retry Salesforce sends is the same event.
    for key in ["old-key", "new-key"] {
        let r = ingest(
            &w.pipeline.ingest,
            "salesforce",
            &outbound(Some(key), sample.clone()),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.content_type.starts_with("text/xml"));
        assert!(r.body.contains("<Ack>true</Ack>"), "{}", r.body);
    }
    assert_eq!(
        inbound_depth(&w).await,
        1,
        "the repeated notification was dropped by the queue"
    );

    // With the queue down, no Ack: Salesforce keeps the notification and retries.
    w.pipeline.ingest.publisher = std::sync::Arc::new(Down);
    let r = ingest(
        &w.pipeline.ingest,
        "salesforce",
        &outbound(Some("new-key"), sample),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(!r.body.contains("Ack"));
}

/// A change event as an EventBridge API destination posts it: the whole event, JSON, the
/// connection's API key in a header.
fn change_event(key: Option<&str>, body: String) -> WebhookRequest {
    crate::common::json_webhook("/webhooks/salesforce", key, body)
}

#[tokio::test]
async fn a_change_event_posted_by_an_api_destination_is_queued_only_with_the_key_and_org() {
    let (mut w, _d) = world().await;
    w.pipeline.ingest.auth.salesforce = SalesforceAuth {
        secrets: vec!["k".into()],
        org_ids: vec![ORG.into()],
    };
    let sample = fixture("salesforce_cdc_order_create.json");
    for key in [None, Some("wrong")] {
        let r = ingest(
            &w.pipeline.ingest,
            "salesforce",
            &change_event(key, sample.clone()),
        )
        .await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let other_org = sample.replace(ORG, "00D000000000001AAA");
    let r = ingest(
        &w.pipeline.ingest,
        "salesforce",
        &change_event(Some("k"), other_org),
    )
    .await;
    assert_eq!(
        r.status, 401,
        "another org's events are refused: {}",
        r.body
    );
    let r = ingest(
        &w.pipeline.ingest,
        "salesforce",
        &change_event(Some("k"), "{\"detail\": ".into()),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("malformed_json"), "{}", r.body);
    assert_eq!(inbound_depth(&w).await, 0);
    let r = ingest(
        &w.pipeline.ingest,
        "salesforce",
        &change_event(Some("k"), sample),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body, "{\"accepted\":1}");
    assert_eq!(inbound_depth(&w).await, 1);
}

struct Down;

#[async_trait::async_trait]
impl p2c_core::ports::Publisher for Down {
    async fn send(
        &self,
        queue: QueueName,
        _: &[p2c_core::ports::OutMessage],
    ) -> Result<(), p2c_core::error::QueueError> {
        Err(p2c_core::error::QueueError::Backend {
            queue: queue.to_string(),
            message: "down".into(),
        })
    }
}

#[tokio::test]
async fn changes_from_a_system_outside_the_pairing_are_ignored_with_the_reason() {
    let (mut w, _d) = world().await;
    w.pipeline.ingest.auth.salesforce = SalesforceAuth {
        secrets: vec!["k".into()],
        org_ids: vec![ORG.into()],
    };
    let r = ingest(
        &w.pipeline.ingest,
        "salesforce",
        &outbound(Some("k"), fixture("salesforce_outbound_message.xml")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let before = w.bc().log().len();
    w.settle().await.expect("settles");
    assert_eq!(w.bc().log().len(), before, "nothing written to the ERP");
    let trail =
        p2c_core::ports::AuditLog::trail(&w.pipeline.store, "salesforce/order/8015f000000Xy1QAAS")
            .await
            .expect("trail");
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(trail[0].outcome, "ignored");
    assert!(
        trail[0]
            .detail
            .contains("Salesforce is not this deployment's CRM")
            && trail[0]
                .detail
                .contains("pairs Dataverse with Business Central"),
        "{}",
        trail[0].detail
    );
}

/// A deployment that pairs Salesforce with Business Central: the repository's rules with
/// `pairing.crm = "salesforce"`, the ERP in process.
fn salesforce_pipeline() -> (
    p2c_core::app::Pipeline,
    std::sync::Arc<p2c_core::connectors::memory::MemoryConnector>,
) {
    use p2c_core::domain::System;
    let mut files = crate::common::rule_files();
    let flows = files.get_mut("flows.toml").expect("flows.toml");
    *flows = flows.replace("crm = \"dataverse\"", "crm = \"salesforce\"");
    let rules = std::sync::Arc::new(p2c_core::rules::RuleSet::from_files(files).expect("rules"));
    let erp = std::sync::Arc::new(p2c_core::connectors::memory::MemoryConnector::new(
        System::BusinessCentral,
    ));
    let mut connectors: std::collections::BTreeMap<
        System,
        std::sync::Arc<dyn p2c_core::ports::Connector>,
    > = std::collections::BTreeMap::new();
    connectors.insert(System::BusinessCentral, erp.clone());
    let auth = p2c_core::pipeline::ingest::InboundAuth {
        salesforce: SalesforceAuth {
            secrets: vec!["k".into()],
            org_ids: vec![ORG.into()],
        },
        ..Default::default()
    };
    let p = p2c_core::app::Pipeline::with_connectors(
        p2c_core::embedded::EmbeddedStore::in_memory().expect("store"),
        rules,
        auth,
        connectors,
        std::collections::BTreeMap::new(),
        crate::common::fast(),
    );
    (p, erp)
}

/// An Outbound Message for one account, as Salesforce would send it.
fn account_message(notification: &str, client_fields: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{ORG}</OrganizationId>
   <ActionId>04k5f000000CaRkAAK</ActionId>
   <Notification>
    <Id>{notification}</Id>
    <sObject xsi:type="sf:Account" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>0015f00002J9YYEAA3</sf:Id>
     <sf:ERP_Customer_Number__c>C000123</sf:ERP_Customer_Number__c>
     <sf:Name>Contoso Pharmaceuticals</sf:Name>
     <sf:BillingCity>Redmond</sf:BillingCity>
     <sf:Fax xsi:nil="true"/>
     {client_fields}
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#
    )
}

#[tokio::test]
async fn a_salesforce_account_becomes_an_erp_customer_when_salesforce_is_the_paired_crm() {
    let (p, erp) = salesforce_pipeline();
    let body = account_message(
        "04l5f00000Gx7R0AAJ",
        "<sf:LastModifiedDate>2026-05-14T09:20:03.000Z</sf:LastModifiedDate>",
    );
    send_and_run(&p, body).await;
    let customer = erp
        .record("upsert_customer", "C000123")
        .expect("the ERP got the customer");
    assert_eq!(
        customer["record"]["name"],
        serde_json::json!("Contoso Pharmaceuticals")
    );
    assert_eq!(
        customer["record"]["address"]["city"],
        serde_json::json!("Redmond")
    );
    assert_eq!(customer["record"]["currency"], serde_json::json!("USD"));
    let trail = p2c_core::ports::AuditLog::trail(&p.store, "account:C000123")
        .await
        .expect("trail");
    let outcomes: Vec<_> = trail
        .iter()
        .map(|e| format!("{}:{}", e.step, e.outcome))
        .collect();
    assert_eq!(outcomes, ["sync:applied", "deliver:delivered"], "{trail:?}");
}

#[tokio::test]
async fn a_change_made_by_p2c_s_own_api_client_is_an_echo() {
    let (p, erp) = salesforce_pipeline();
    let event = |client: &str| {
        serde_json::json!({
            "ChangeEventHeader": {
                "entityName": "Account", "recordIds": ["0015f00002J9YYEAA3"], "changeType": "CREATE",
                "changeOrigin": format!("com/salesforce/api/rest/62.0;client={client}"),
                "transactionKey": format!("t-{client}"), "sequenceNumber": 1,
                "commitTimestamp": 1778750512000u64, "commitNumber": 11657372702432u64,
                "commitUser": "0055f000007IntgAAC", "nulledFields": [], "diffFields": [], "changedFields": []
            },
            "ERP_Customer_Number__c": "C000777", "Name": "Echo Ltd"
        })
    };
    let sync = |client: &str| {
        let ev = p2c_core::inbound::salesforce::parse_cdc(&event(client), &[], chrono::Utc::now())
            .expect("parses")
            .remove(0);
        p2c_core::pipeline::sync::sync_event(&p.sync, ev)
    };
    let out = sync("p2c").await.expect("syncs");
    assert!(
        matches!(out, p2c_core::pipeline::sync::SyncOutcome::Echo { .. }),
        "{out:?}"
    );
    p.run_until_idle(std::time::Duration::from_secs(30))
        .await
        .expect("runs");
    assert!(erp.record("upsert_customer", "C000777").is_none());
    // The same change made by someone else's client is synced.
    let out = sync("SfdcInternalAPI").await.expect("syncs");
    assert!(
        matches!(out, p2c_core::pipeline::sync::SyncOutcome::Applied { .. }),
        "{out:?}"
    );
}

/// An Outbound Message with one notification of `object` carrying `fields` (`sf:` elements).
fn message(notification: &str, object: &str, fields: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{ORG}</OrganizationId>
   <Notification><Id>{notification}</Id>
    <sObject xsi:type="sf:{object}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{fields}</sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#
    )
}

/// Sends an Outbound Message to the pipeline and runs it until idle.
async fn send_and_run(p: &p2c_core::app::Pipeline, body: String) {
    let r = ingest(&p.ingest, "salesforce", &outbound(Some("k"), body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    p.run_until_idle(std::time::Duration::from_secs(30))
        .await
        .expect("runs");
}

#[tokio::test]
async fn a_salesforce_order_waits_for_its_account_then_is_read_with_its_items_and_decided() {
    use p2c_core::connectors::salesforce::SalesforceConnector;
    use p2c_core::domain::{EntityType, System};
    use p2c_core::ports::StateStore;
    use p2c_core::sim::salesforce::SimSalesforce;
    use std::sync::Arc;

    let sim = SimSalesforce::start().await.expect("org");
    let account = sim.insert(
        "Account",
        serde_json::json!({"ERP_Customer_Number__c": "C000123", "Name": "Contoso"}),
    );
    let product = sim.insert(
        "Product2",
        serde_json::json!({"ERP_Item_Number__c": "P-200"}),
    );
    let order = sim.insert(
        "Order",
        serde_json::json!({"OrderNumber": "00000123", "AccountId": account, "Status": "Activated", "PoNumber": "PO-1"}),
    );
    sim.insert(
        "OrderItem",
        serde_json::json!({"OrderId": order, "Product2Id": product, "Quantity": 40, "UnitPrice": 460.0}),
    );

    let (mut p, erp) = salesforce_pipeline();
    let http = p2c_core::connectors::http::Http::new(
        System::Salesforce,
        Arc::new(p2c_core::connectors::http::StaticToken("t".into())),
    )
    .expect("http");
    let crm = Arc::new(SalesforceConnector::new(
        http,
        sim.instance_url(),
        Default::default(),
    ));
    p.sync.readers.insert(System::Salesforce, crm.clone());
    p.deliver.connectors.insert(System::Salesforce, crm);

    // The product was synced from the ERP earlier.
    let mut item = p2c_core::ports::EntityState::new(
        p2c_core::domain::EntityKey::new(EntityType::Item, "P-200").expect("key"),
    );
    item.version = 1;
    item.ids.insert(System::Salesforce, product.clone());
    item.ids.insert(System::BusinessCentral, "bc-item-1".into());
    let entry = p2c_core::ports::AuditEntry {
        at: chrono::Utc::now(),
        subject: "item:P-200".into(),
        step: "deliver".into(),
        outcome: "delivered".into(),
        detail: "synced earlier".into(),
        event_id: None,
        rules_version: None,
    };
    p.store.save(&item, &entry).await.expect("item state");

    // The order comes first: it waits for its account.
    let order_fields = format!(
        "<sf:Id>{order}</sf:Id><sf:OrderNumber>00000123</sf:OrderNumber><sf:AccountId>{account}</sf:AccountId><sf:Status>Activated</sf:Status>"
    );
    send_and_run(&p, message("04l5f00000G0001AAJ", "Order", &order_fields)).await;
    let group = format!("salesforce/order/{order}");
    let trail = p2c_core::ports::AuditLog::trail(&p.store, &group)
        .await
        .expect("trail");
    assert_eq!(
        trail.last().map(|e| e.outcome.as_str()),
        Some("parked"),
        "{trail:?}"
    );
    assert!(sim.find("Order", "OrderNumber", "00000123")[0]
        .get("P2C_Credit_Status__c")
        .is_none());

    // The account lands in the ERP; the order is released, read with its items, decided,
    // and the decision written back to the Salesforce order.
    let account_fields = format!(
        "<sf:Id>{account}</sf:Id><sf:ERP_Customer_Number__c>C000123</sf:ERP_Customer_Number__c><sf:Name>Contoso</sf:Name>"
    );
    send_and_run(
        &p,
        message("04l5f00000G0002AAJ", "Account", &account_fields),
    )
    .await;
    assert!(erp.record("upsert_customer", "C000123").is_some());
    let o = &sim.find("Order", "OrderNumber", "00000123")[0];
    assert_eq!(
        o["P2C_Credit_Status__c"],
        serde_json::json!("On hold"),
        "{o:?}"
    );
    assert!(
        o["P2C_Credit_Message__c"]
            .as_str()
            .is_some_and(|m| m.contains("No credit limit is known yet for C000123")),
        "{o:?}"
    );
    let state = p
        .store
        .load(&"order:00000123".parse().expect("key"))
        .await
        .expect("load")
        .expect("order state");
    let mapped = &state.records["order"];
    assert_eq!(mapped["account_number"], serde_json::json!("C000123"));
    assert_eq!(
        mapped["lines"][0]["item_number"],
        serde_json::json!("P-200")
    );
    assert_eq!(
        mapped["lines"][0]["quantity"],
        serde_json::json!("40"),
        "exact decimal text"
    );
    assert!(
        erp.record("upsert_order", "00000123").is_none(),
        "held, not sent"
    );
}

#[tokio::test]
async fn a_salesforce_contact_follows_its_account_to_the_erp() {
    let (p, erp) = salesforce_pipeline();
    let contact = "<sf:Id>0035f00000AbCdEAAZ</sf:Id><sf:FirstName>Robert</sf:FirstName><sf:LastName>Townes</sf:LastName><sf:AccountId>0015f00002J9YYEAA3</sf:AccountId>";
    send_and_run(&p, message("04l5f00000G0011AAJ", "Contact", contact)).await;
    assert!(
        erp.record("upsert_contact", "0035f00000AbCdEAAZ").is_none(),
        "waits for its account"
    );
    let account = "<sf:Id>0015f00002J9YYEAA3</sf:Id><sf:ERP_Customer_Number__c>C000123</sf:ERP_Customer_Number__c><sf:Name>Contoso</sf:Name>";
    send_and_run(&p, message("04l5f00000G0012AAJ", "Account", account)).await;
    let c = erp
        .record("upsert_contact", "0035f00000AbCdEAAZ")
        .expect("released with its account");
    assert_eq!(c["record"]["account_number"], serde_json::json!("C000123"));
    assert_eq!(c["record"]["last_name"], serde_json::json!("Townes"));
}
