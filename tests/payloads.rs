//! The real payload samples of Dataverse and Business Central parse into the expected events.

use crate::common::{fixture, repo_rules};
use chrono::Utc;
use p2c_core::domain::{EntityType, Operation, System};
use p2c_core::inbound::{bc, dataverse, Parsed, WebhookError, WebhookRequest};
use serde_json::{json, Value};

fn request(body: &str, headers: &[(&str, &str)]) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        path: "/webhooks/x".into(),
        query: vec![],
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

fn events(p: Parsed) -> Vec<p2c_core::domain::ChangeEvent> {
    match p {
        Parsed::Events(e) => e,
        Parsed::Handshake(t) => panic!("unexpected handshake {t}"),
    }
}

#[test]
fn dataverse_account_update_sample_parses_with_images_typed_values_and_version() {
    let ev = events(
        dataverse::parse(
            &request(
                &fixture("dataverse_account_update.json"),
                &[("content-type", "application/json")],
            ),
            Utc::now(),
        )
        .expect("parses"),
    )
    .remove(0);
    assert_eq!(ev.source.system, System::Dataverse);
    assert_eq!(ev.source.entity_type, EntityType::Account);
    assert_eq!(ev.source.id, "4b1e3d75-a749-ef11-acce-00224802d26d");
    assert_eq!(ev.operation, Operation::Update);
    assert_eq!(
        ev.natural_key.as_deref(),
        Some("ACC-01042-QX7T2P"),
        "the key comes from the post-image"
    );
    assert_eq!(ev.fields["name"], json!("Fabrikam Industrial Ltd"));
    assert_eq!(
        ev.fields["creditlimit"].to_string(),
        "50000.0",
        "money keeps its exact text"
    );
    assert_eq!(ev.fields["paymenttermscode"], json!(1));
    assert_eq!(ev.fields["modifiedon"], json!("2026-05-14T09:12:45Z"));
    assert_eq!(
        ev.fields["primarycontactid"]["logical_name"],
        json!("contact")
    );
    assert_eq!(
        ev.fields["transactioncurrencyid"]["name"],
        json!("US Dollar"),
        "post-image values are merged in"
    );
    assert_eq!(ev.previous["name"], json!("Fabrikam Industrial"));
    assert_eq!(ev.previous["paymenttermscode"], json!(3));
    assert_eq!(ev.version.sequence, Some((5_948_260, 0)));
    assert_eq!(
        ev.origin.user_id.as_deref(),
        Some("d89254ff-9438-ef11-a315-000d3a5a54dc")
    );
    assert!(ev
        .event_id
        .0
        .contains("1a14c3ec-9c50-ef11-bfe3-00224802dbb1"));
    assert!(!ev.needs_fetch);
}

#[test]
fn dataverse_salesorder_create_sample_parses_lookups_dates_and_options() {
    let ev = events(
        dataverse::parse(
            &request(&fixture("dataverse_salesorder_create.json"), &[]),
            Utc::now(),
        )
        .expect("parses"),
    )
    .remove(0);
    assert_eq!(ev.source.entity_type, EntityType::Order);
    assert_eq!(ev.operation, Operation::Create);
    assert_eq!(ev.natural_key.as_deref(), Some("ORD-01007-K4Z8V1"));
    assert_eq!(
        ev.fields["customerid"],
        json!({"id": "4b1e3d75-a749-ef11-acce-00224802d26d", "logical_name": "account", "name": null})
    );
    assert_eq!(
        ev.fields["requestdeliveryby"],
        json!("2026-06-01T00:00:00Z")
    );
    assert_eq!(ev.fields["statecode"], json!(0));
    assert_eq!(ev.fields["totalamount"].to_string(), "0.0");
    assert_eq!(ev.version.sequence, None, "a Create has no RowVersion here");
    assert!(
        ev.version.modified_ms.is_some(),
        "modifiedon is the fallback version"
    );
    assert!(!ev.fields.contains_key("AsynchronousStepPrimaryName"));
}

#[test]
fn an_oversized_dataverse_payload_is_marked_for_a_re_read() {
    let body = fixture("dataverse_account_update.json");
    let ev = events(
        dataverse::parse(
            &request(&body, &[("x-ms-dynamics-msg-size-exceeded", "true")]),
            Utc::now(),
        )
        .expect("parses"),
    )
    .remove(0);
    assert!(ev.needs_fetch);
    assert!(ev.fields.is_empty() && ev.previous.is_empty());
    assert_eq!(ev.source.id, "4b1e3d75-a749-ef11-acce-00224802d26d");
}

#[test]
fn dataverse_dates_in_iso_form_are_tolerated() {
    let mut v: Value =
        serde_json::from_str(&fixture("dataverse_salesorder_create.json")).expect("json");
    v["InputParameters"][0]["value"]["Attributes"][16]["value"] = json!("2026-06-01T00:00:00Z");
    let ev = events(dataverse::parse(&request(&v.to_string(), &[]), Utc::now()).expect("parses"))
        .remove(0);
    assert_eq!(
        ev.fields["requestdeliveryby"],
        json!("2026-06-01T00:00:00Z")
    );
}

#[test]
fn business_central_notification_sample_yields_one_event_per_notification() {
    let states = vec!["b64:QWxwaGFTZWNyZXQtZjNhOQ==".to_string()];
    let evs = events(
        bc::parse(
            &request(
                &fixture("bc_webhook_notification.json"),
                &[("content-type", "application/json")],
            ),
            &states,
            Utc::now(),
        )
        .expect("parses"),
    );
    assert_eq!(evs.len(), 4);
    assert_eq!(
        (evs[0].source.entity_type, evs[0].operation),
        (EntityType::Order, Operation::Update)
    );
    assert!(evs[0].needs_fetch, "notifications carry no data");
    assert_eq!(
        evs[0].company.as_deref(),
        Some("b18aed47-c385-49d2-b954-dbdf8ad71780")
    );
    assert_eq!(evs[0].source.id, "b6f4017a-b749-ee11-ad0b-a1422c0f7f1f");
    assert_eq!(
        (evs[1].source.entity_type, evs[1].operation),
        (EntityType::Account, Operation::Create)
    );
    assert_eq!(evs[2].operation, Operation::Delete);
    assert!(
        !evs[2].needs_fetch,
        "a deletion is mapped by the id in the URL"
    );
    assert_eq!(evs[3].operation, Operation::Changed);
    assert_eq!(evs[3].source.id, "collection:salesinvoices");
    assert!(
        evs[3]
            .resource
            .as_deref()
            .is_some_and(|r| r.starts_with("api/v2.0/") && r.contains("$filter")),
        "the collection URL is kept as given, leading slash normalised"
    );
    assert!(evs[0].version.modified_ms.is_some());
}

#[test]
fn business_central_notifications_with_a_wrong_client_state_are_refused() {
    let err = bc::parse(
        &request(&fixture("bc_webhook_notification.json"), &[]),
        &["another-secret".to_string()],
        Utc::now(),
    )
    .expect_err("refused");
    assert_eq!(err, WebhookError::Unauthorized);
    assert_eq!(err.status(), 401);
}

#[test]
fn business_central_validation_handshake_echoes_the_token() {
    let mut req = request("", &[]);
    req.query = vec![("validationToken".into(), "abc 123".into())];
    assert_eq!(
        bc::parse(&req, &["s".to_string()], Utc::now()).expect("handshake"),
        Parsed::Handshake("abc 123".into())
    );
}

#[test]
fn business_central_sales_order_read_feeds_the_order_progress_rule() {
    let order: Value =
        serde_json::from_str(&fixture("bc_salesorder_get_response.json")).expect("json");
    let out = repo_rules()
        .eval(
            "mapping/order_progress.rhai",
            &json!({"system": "business_central", "record": order}),
        )
        .expect("maps");
    assert_eq!(out["order_number"], json!("SF-00000123"));
    assert_eq!(out["erp_number"], json!("101005"));
    assert_eq!(out["status"], json!("Confirmed"));
    assert_eq!(out["tax"].to_string(), "1840");
}

#[test]
fn dataverse_account_sample_maps_to_a_customer() {
    let ev = events(
        dataverse::parse(
            &request(&fixture("dataverse_account_update.json"), &[]),
            Utc::now(),
        )
        .expect("parses"),
    )
    .remove(0);
    let out = repo_rules()
        .eval(
            "mapping/account_to_customer.rhai",
            &json!({"system": "dataverse", "record": ev.fields}),
        )
        .expect("maps");
    assert_eq!(out["number"], json!("ACC-01042-QX7T2P"));
    assert_eq!(out["payment_terms"], json!("NET30"));
    assert_eq!(out["currency"], json!("USD"));
}

#[test]
fn salesforce_account_change_event_sample_parses_as_a_delta_to_read_in_full() {
    let evs = p2c_core::inbound::salesforce::parse_cdc_bytes(
        fixture("salesforce_cdc_account_update.json").as_bytes(),
        &[],
        Utc::now(),
    )
    .expect("parses");
    assert_eq!(evs.len(), 1);
    let ev = &evs[0];
    assert_eq!(ev.source.system, System::Salesforce);
    assert_eq!(ev.source.entity_type, EntityType::Account);
    assert_eq!(ev.source.id, "0015f00002J9YYEAA3", "ids keep their case");
    assert_eq!(ev.operation, Operation::Update);
    assert!(ev.needs_fetch, "an update carries only what changed");
    assert_eq!(ev.version.sequence, Some((11_657_372_702_432, 1)));
    assert_eq!(ev.version.modified_ms, Some(1_778_750_512_000));
    assert_eq!(
        ev.fields["BillingAddress"],
        json!({"City": "Bellevue", "PostalCode": "98004"})
    );
    assert_eq!(ev.fields["Fax"], Value::Null, "nulled: cleared");
    assert!(
        !ev.fields.contains_key("Name"),
        "null, not nulled: unchanged"
    );
    assert_eq!(ev.fields["ERP_Customer_Number__c"], json!("C000123"));
    assert_eq!(ev.origin.client.as_deref(), Some("crm-erp-sync"));
    assert_eq!(ev.origin.user_id.as_deref(), Some("0055f000007IntgAAC"));
}

#[test]
fn salesforce_order_change_event_from_event_bridge_parses_with_its_exact_commit_number() {
    let org = "00D5f000005KcCnEAK".to_string();
    let body = fixture("salesforce_cdc_order_create.json");
    let evs = p2c_core::inbound::salesforce::parse_cdc_bytes(
        body.as_bytes(),
        std::slice::from_ref(&org),
        Utc::now(),
    )
    .expect("parses");
    assert_eq!(evs.len(), 1);
    let ev = &evs[0];
    assert_eq!(ev.source.entity_type, EntityType::Order);
    assert_eq!(ev.source.id, "8015f000000Xy1QAAS");
    assert_eq!(ev.operation, Operation::Create);
    assert!(!ev.needs_fetch, "a create carries the record");
    assert_eq!(ev.natural_key.as_deref(), Some("00000123"));
    // Above 2^53: read as an integer, never through a float.
    assert_eq!(ev.version.sequence, Some((1_778_749_965_433_528_300, 1)));
    assert_eq!(
        ev.fields["AccountId"],
        json!({"id": "0015f00002J9YYEAA3", "logical_name": "account"}),
        "references become lookups the sync step resolves"
    );
    assert_eq!(ev.fields["EffectiveDate"], json!(1_778_716_800_000u64));
    assert_eq!(ev.fields["PoNumber"], json!("PO-778812"));
    assert_eq!(ev.origin.client.as_deref(), Some("SfdcInternalAPI"));
    let refused = p2c_core::inbound::salesforce::parse_cdc_bytes(
        body.as_bytes(),
        &["00D000000000001AAA".to_string()],
        Utc::now(),
    )
    .expect_err("another org's relay");
    assert_eq!(refused, WebhookError::Unauthorized);
}

#[test]
fn salesforce_outbound_message_sample_parses_and_is_answered_with_its_ack() {
    let req = request(
        &fixture("salesforce_outbound_message.xml"),
        &[("content-type", "text/xml; charset=utf-8")],
    );
    let evs = p2c_core::inbound::salesforce::parse_outbound(
        &req,
        &["00D5f000005KcCnEAK".to_string()],
        Utc::now(),
    )
    .expect("parses");
    assert_eq!(evs.len(), 1);
    let ev = &evs[0];
    assert_eq!(ev.event_id.0, "salesforce:om:04l5f00000Gx7QzAAJ");
    assert_eq!(ev.source.system, System::Salesforce);
    assert_eq!(ev.source.entity_type, EntityType::Order);
    assert_eq!(ev.source.id, "8015f000000Xy1QAAS");
    assert_eq!(ev.natural_key.as_deref(), Some("00000123"));
    assert_eq!(ev.fields["Status"], json!("Activated"));
    assert_eq!(
        ev.fields["TotalAmount"],
        json!("18400.0"),
        "money keeps its exact text"
    );
    assert_eq!(ev.fields["EffectiveDate"], json!("2026-05-14"));
    assert_eq!(ev.version.modified_ms, Some(1_778_750_403_000));
    // Our answer says what the sample answer says.
    let ack_of = |xml: &str| {
        let doc = roxmltree::Document::parse(xml).expect("well-formed");
        doc.descendants()
            .find(|n| n.has_tag_name(("http://soap.sforce.com/2005/09/outbound", "Ack")))
            .and_then(|n| n.text().map(str::to_string))
    };
    assert_eq!(
        ack_of(&p2c_core::inbound::salesforce::outbound_ack().body),
        ack_of(&fixture("salesforce_outbound_message_ack.xml"))
    );
    assert_eq!(
        ack_of(&fixture("salesforce_outbound_message_ack.xml")).as_deref(),
        Some("true")
    );
}

#[test]
fn finance_and_operations_invoice_posted_sample_parses_with_its_control_number_and_legal_entity() {
    let body = fixture("fo_invoice_posted_event.json");
    let evs = p2c_core::inbound::fo::parse(
        &request(&body, &[("content-type", "application/json")]),
        Utc::now(),
    )
    .expect("parses");
    assert_eq!(evs.len(), 1);
    let ev = &evs[0];
    assert_eq!(ev.source.system, System::FinOps);
    assert_eq!(ev.source.entity_type, EntityType::Invoice);
    assert_eq!(ev.source.id, "usmf:civ-000812");
    assert_eq!(ev.natural_key.as_deref(), Some("CIV-000812"));
    assert_eq!(ev.company.as_deref(), Some("usmf"));
    // Deduplicated on EventId, ordered by ControlNumber.
    assert_eq!(
        ev.event_id.0,
        "fin_ops:9c091af1-5baf-4ca9-b0a4-94d6e59a0d1c"
    );
    assert_eq!(ev.version.sequence, Some((5_637_985_363, 0)));
    assert_eq!(
        ev.origin.user_id.as_deref(),
        Some("c600136f-6814-41d9-8642-40ca0ec4edd4")
    );
    assert_eq!(ev.fields["InvoiceDate"], json!("2026-05-14"));
    assert_eq!(ev.fields["InvoiceDueDate"], json!("2026-06-13"));
    assert_eq!(ev.fields["InvoiceAccount"], json!("US-027"));
    assert_eq!(ev.fields["SalesOrderId"], json!("000731"));
    assert_eq!(
        p2c_core::json::as_decimal(&ev.fields["InvoiceAmountInAccountingCurrency"]),
        Some("20240".parse().expect("decimal"))
    );
    assert_eq!(
        p2c_core::json::as_decimal(&ev.fields["InvoiceTaxAmount"]),
        Some("1840".parse().expect("decimal"))
    );
    assert!(!ev.needs_fetch);
}

/// An event queued in this process reaches the sync step as its sender had it, not parsed
/// from the message body; after a restart (or on SQS) the body is parsed. Both must be the
/// same event, for every kind of sample.
#[test]
fn every_sample_event_reads_back_from_its_queue_message_exactly() {
    use p2c_core::pipeline::sync::event_message;
    use p2c_core::ports::Typed;
    let json = [("content-type", "application/json")];
    let mut all = Vec::new();
    for f in [
        "dataverse_account_update.json",
        "dataverse_salesorder_create.json",
    ] {
        all.extend(events(
            dataverse::parse(&request(&fixture(f), &json), Utc::now()).expect("parses"),
        ));
    }
    all.extend(events(
        bc::parse(
            &request(&fixture("bc_webhook_notification.json"), &json),
            &["b64:QWxwaGFTZWNyZXQtZjNhOQ==".to_string()],
            Utc::now(),
        )
        .expect("parses"),
    ));
    let org = "00D5f000005KcCnEAK".to_string();
    all.extend(
        p2c_core::inbound::salesforce::parse_cdc_bytes(
            fixture("salesforce_cdc_order_create.json").as_bytes(),
            std::slice::from_ref(&org),
            Utc::now(),
        )
        .expect("parses"),
    );
    all.extend(
        p2c_core::inbound::fo::parse(
            &request(&fixture("fo_invoice_posted_event.json"), &json),
            Utc::now(),
        )
        .expect("parses"),
    );
    assert!(all.len() >= 8);
    for ev in all {
        let m = event_message(&ev);
        let parsed: p2c_core::domain::ChangeEvent =
            serde_json::from_str(&m.body).expect("the body parses");
        assert_eq!(parsed, ev, "{}", m.body);
        assert_eq!(
            serde_json::to_string(&parsed).expect("json"),
            m.body,
            "and serializes to the same body"
        );
        match m.typed {
            Some(Typed::Event(typed)) => assert_eq!(*typed, ev),
            other => panic!("not typed: {other:?}"),
        }
    }
}
