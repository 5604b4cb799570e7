//! Bad input gets a clear 4xx with a stable code; nothing already accepted is lost; a
//! failing rule sends its event to the dead-letter queue with the rule's name, line and
//! column while other events keep flowing.

use crate::common::{account, fixture, inbound_depth, rule_files, world, world_with};
use p2c_core::ports::{DeadLetters, QueueName};
use serde_json::{json, Value};
use std::sync::Arc;

/// (name, url, headers, body, expected status, expected code)
type Case<'a> = (
    &'a str,
    String,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    u16,
    &'a str,
);

async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = client.post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("answered");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn malformed_unknown_and_unauthenticated_webhooks_get_documented_4xx_and_lose_nothing() {
    let (w, _d) = world().await;
    let client = reqwest::Client::new();
    // Something valid is accepted first…
    w.dataverse()
        .create("accounts", account("ACC-SAFE", "Safe Ltd"))
        .expect("account");
    let good = w.crm.outbox().take();
    assert_eq!(good[0].send(&client).await.expect("sent").0, 202);

    let dv = format!("{}/webhooks/dataverse", w.webhook_url);
    let key = w.crm_secret.clone();
    let json_ct = ("content-type", "application/json");
    let sample = fixture("dataverse_account_update.json");
    let mut unknown: Value = serde_json::from_str(&sample).expect("json");
    unknown["PrimaryEntityName"] = json!("incident");
    let mut no_id: Value = serde_json::from_str(&sample).expect("json");
    no_id
        .as_object_mut()
        .expect("object")
        .remove("PrimaryEntityId");
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let bc = format!("{}/webhooks/bc", w.webhook_url);
    let bc_body = fixture("bc_webhook_notification.json")
        .replace("b64:QWxwaGFTZWNyZXQtZjNhOQ==", &w.bc_client_state);
    let mut vendors: Value = serde_json::from_str(&bc_body).expect("json");
    vendors["value"][0]["resource"] = json!("api/v2.0/companies(x)/vendors(1)");

    let cases: Vec<Case> = vec![
        (
            "no key",
            dv.clone(),
            vec![json_ct],
            sample.clone().into_bytes(),
            401,
            "unauthorized",
        ),
        (
            "wrong key",
            dv.clone(),
            vec![json_ct, ("x-p2c-key", "nope")],
            sample.clone().into_bytes(),
            401,
            "unauthorized",
        ),
        (
            "truncated",
            dv.clone(),
            vec![json_ct, ("x-p2c-key", &key)],
            sample.as_bytes()[..200].to_vec(),
            400,
            "malformed_json",
        ),
        (
            "not json",
            dv.clone(),
            vec![("content-type", "text/plain"), ("x-p2c-key", &key)],
            b"hello".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "oversized",
            dv.clone(),
            vec![json_ct, ("x-p2c-key", &key)],
            vec![b' '; 2 * 1024 * 1024],
            413,
            "payload_too_large",
        ),
        (
            "deeply nested",
            dv.clone(),
            vec![json_ct, ("x-p2c-key", &key)],
            deep.into_bytes(),
            400,
            "json_too_deep",
        ),
        (
            "unknown entity",
            dv.clone(),
            vec![json_ct, ("x-p2c-key", &key)],
            unknown.to_string().into_bytes(),
            422,
            "unknown_entity",
        ),
        (
            "missing id",
            dv.clone(),
            vec![json_ct, ("x-p2c-key", &key)],
            no_id.to_string().into_bytes(),
            422,
            "missing_key",
        ),
        (
            "wrong types",
            dv.clone(),
            vec![json_ct, ("x-p2c-key", &key)],
            b"[1,2,3]".to_vec(),
            422,
            "invalid_payload",
        ),
        (
            "unknown system",
            format!("{}/webhooks/sap", w.webhook_url),
            vec![json_ct],
            b"{}".to_vec(),
            404,
            "unknown_system",
        ),
        (
            "bc wrong state",
            bc.clone(),
            vec![json_ct],
            fixture("bc_webhook_notification.json").into_bytes(),
            401,
            "unauthorized",
        ),
        (
            "bc unknown set",
            bc.clone(),
            vec![json_ct],
            vendors.to_string().into_bytes(),
            422,
            "unknown_entity",
        ),
        (
            "bc no value",
            bc.clone(),
            vec![json_ct],
            b"{\"values\": []}".to_vec(),
            422,
            "missing_key",
        ),
    ];
    for (name, url, headers, body, status, code) in cases {
        let (got, answer) = post(&client, &url, &headers, body).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert_eq!(answer["error"], json!(code), "{name}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty() && !m.contains(&key)),
            "{name}: a safe message"
        );
    }
    let dup = client
        .get(&dv)
        .header("x-p2c-key", &key)
        .send()
        .await
        .expect("answered");
    assert_eq!(dup.status().as_u16(), 405);

    // …and is still processed after all that.
    w.settle().await.expect("settles");
    assert_eq!(
        w.bc()
            .find("customers", "number", "ACC-SAFE")
            .expect("customer")["displayName"],
        json!("Safe Ltd")
    );
}

#[tokio::test]
async fn a_failing_rule_dead_letters_its_event_with_rule_line_and_column_and_others_flow() {
    let mut files = rule_files();
    let broken = files
        .get("mapping/account_to_customer.rhai")
        .expect("script")
        .replacen(
            "    #{\n        number: a.accountnumber,",
            "    let oops = a.name * 2;\n    #{\n        number: a.accountnumber,",
            1,
        );
    files.insert("mapping/account_to_customer.rhai".into(), broken);
    let rules =
        Arc::new(p2c_core::rules::RuleSet::from_files(files).expect("compiles; fails when run"));
    let (w, _d) = world_with(rules).await;
    w.dataverse()
        .create("accounts", account("ACC-BROKEN", "Broken Ltd"))
        .expect("account");
    w.bc()
        .create_item("P-9", "Widget", "1.50", "PCS", "MISC")
        .expect("item");
    w.settle().await.expect("settles");
    let dead = w
        .pipeline
        .store
        .list(QueueName::Inbound)
        .await
        .expect("dlq");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].code, "rule_runtime_error");
    assert!(
        dead[0].reason.contains("mapping/account_to_customer.rhai")
            && dead[0].reason.contains("line 9, column"),
        "{}",
        dead[0].reason
    );
    assert!(w.bc().find("customers", "number", "ACC-BROKEN").is_none());
    assert!(
        w.dataverse()
            .find("products", "productnumber", "P-9")
            .is_some(),
        "other events kept flowing"
    );
}

#[tokio::test]
async fn a_target_refusal_is_dead_lettered_with_the_targets_own_message_and_can_be_replayed() {
    let (w, _d) = world().await;
    w.bc().inject(p2c_core::sim::Fault {
        matching: "POST customers".into(),
        status: 400,
        retry_after: None,
        message: "Name must not be blank".into(),
    });
    w.dataverse()
        .create("accounts", account("ACC-REFUSED", "Refused Ltd"))
        .expect("account");
    w.settle().await.expect("settles");
    let dead = w.pipeline.store.list(QueueName::ToErp).await.expect("dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].code, "target_refused");
    assert!(
        dead[0].reason.contains("Name must not be blank"),
        "{}",
        dead[0].reason
    );
    let n = w
        .pipeline
        .store
        .replay(QueueName::ToErp, &[dead[0].message_id.clone()])
        .await
        .expect("replay");
    assert_eq!(n, 1);
    w.settle().await.expect("settles");
    assert!(
        w.bc().find("customers", "number", "ACC-REFUSED").is_some(),
        "delivered after the replay"
    );
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_time_the_target_asks_for() {
    let (w, _d) = world().await;
    w.bc().inject(p2c_core::sim::Fault {
        matching: "POST customers".into(),
        status: 429,
        retry_after: Some(1),
        message: "Too many requests".into(),
    });
    w.dataverse()
        .create("accounts", account("ACC-429", "Busy Ltd"))
        .expect("account");
    let start = std::time::Instant::now();
    w.settle().await.expect("settles");
    assert!(
        start.elapsed() >= std::time::Duration::from_secs(1),
        "waited for Retry-After"
    );
    assert_eq!(w.bc().creates("customers"), 1);
}

/// The same matrix for the other doors: Salesforce Outbound Messages (SOAP) and change
/// events (JSON), Finance & Operations business events, keyed and signed. Each refusal is
/// its documented 4xx; a duplicate delivery is accepted and queued once; what was accepted
/// before stays queued, unchanged.
#[tokio::test]
async fn salesforce_and_f_and_o_bad_input_gets_documented_4xx_and_loses_nothing() {
    use p2c_core::inbound::salesforce::SalesforceAuth;
    use p2c_core::inbound::{SignedAuth, WebhookRequest};
    use p2c_core::pipeline::ingest::ingest;
    use p2c_core::ports::Consumer;
    let (mut w, _d) = world().await;
    let org = "00D5f000005KcCnEAK";
    w.pipeline.ingest.auth.salesforce = SalesforceAuth {
        secrets: vec!["sf-key".into()],
        org_ids: vec![org.into()],
    };
    w.pipeline.ingest.auth.fin_ops.header = Some("x-p2c-key".into());
    w.pipeline.ingest.auth.fin_ops.secrets = vec!["fo-key".into()];
    let request = |path: &str, ct: &str, headers: &[(&str, &str)], body: &[u8]| WebhookRequest {
        method: "POST".into(),
        path: path.into(),
        query: vec![],
        headers: std::iter::once(("content-type".to_string(), ct.to_string()))
            .chain(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .collect(),
        body: body.to_vec(),
    };
    let xml = "text/xml; charset=utf-8";
    let json_ct = "application/json";
    let soap = fixture("salesforce_outbound_message.xml");
    let cdc = fixture("salesforce_cdc_account_update.json");
    let fo = fixture("fo_invoice_posted_event.json");
    let mut fo_doc: Value = serde_json::from_str(&fo).expect("json");
    let sf_key = [("x-p2c-key", "sf-key")];
    let fo_key = [("x-p2c-key", "fo-key")];

    // Accepted first, and must survive everything below.
    let ctx = w.pipeline.ingest.clone();
    let r = ingest(
        &ctx,
        "fo",
        &request("/webhooks/fo", json_ct, &fo_key, fo.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let queued_before = inbound_depth(&w).await;
    assert_eq!(queued_before, 1);

    let other_org = soap.replace(org, "00D000000000001AAA");
    let with_dtd = soap.replacen(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>",
        1,
    );
    let truncated_soap = &soap.as_bytes()[..soap.len() / 2];
    // Change events as Event Relay puts them on EventBridge.
    let envelope = |org: &str, detail: Value| {
        json!({
            "version": "0", "id": "3f9c1a55-2b7e-4d1a-9c1e-5d2f0b6a7e10", "detail-type": "AccountChangeEvent",
            "source": format!("aws.partner/salesforce.com/{org}/0YLxx0000000001"), "account": "123456789012",
            "time": "2026-05-14T09:21:52Z", "region": "us-east-1", "resources": [], "detail": detail,
        })
    };
    let bare: Value = serde_json::from_str(&cdc).expect("json");
    let cdc_other_org = envelope("00D000000000001AAA", json!({ "payload": bare.clone() }));
    let cdc_no_payload = envelope(org, json!({}));
    let mut fo_unknown = fo_doc.clone();
    fo_unknown["BusinessEventId"] = json!("VendInvoicePostedBusinessEvent");
    let mut fo_no_id = fo_doc.clone();
    fo_no_id.as_object_mut().expect("object").remove("EventId");
    let mut fo_float_control = fo_doc.clone();
    fo_float_control["ControlNumber"] = json!(1.5);
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let big = vec![b' '; p2c_core::inbound::MAX_BODY_BYTES + 1];
    let s = |v: &Value| v.to_string().into_bytes();
    let cases: Vec<(&str, &str, WebhookRequest, u16, &str)> = vec![
        (
            "soap without the key",
            "salesforce",
            request("/webhooks/salesforce", xml, &[], soap.as_bytes()),
            401,
            "unauthorized",
        ),
        (
            "soap from another org",
            "salesforce",
            request("/webhooks/salesforce", xml, &sf_key, other_org.as_bytes()),
            401,
            "unauthorized",
        ),
        (
            "soap with a DTD",
            "salesforce",
            request("/webhooks/salesforce", xml, &sf_key, with_dtd.as_bytes()),
            400,
            "malformed_xml",
        ),
        (
            "soap truncated",
            "salesforce",
            request("/webhooks/salesforce", xml, &sf_key, truncated_soap),
            400,
            "malformed_xml",
        ),
        (
            "soap oversized",
            "salesforce",
            request("/webhooks/salesforce", xml, &sf_key, &big),
            413,
            "payload_too_large",
        ),
        (
            "cdc from another org",
            "salesforce",
            request("/webhooks/salesforce", json_ct, &sf_key, &s(&cdc_other_org)),
            401,
            "unauthorized",
        ),
        (
            "cdc without a payload",
            "salesforce",
            request(
                "/webhooks/salesforce",
                json_ct,
                &sf_key,
                &s(&cdc_no_payload),
            ),
            422,
            "missing_key",
        ),
        (
            "cdc naming no org",
            "salesforce",
            request("/webhooks/salesforce", json_ct, &sf_key, &s(&bare)),
            401,
            "unauthorized",
        ),
        (
            "cdc too deep",
            "salesforce",
            request("/webhooks/salesforce", json_ct, &sf_key, deep.as_bytes()),
            400,
            "json_too_deep",
        ),
        (
            "fo without the key",
            "fo",
            request("/webhooks/fo", json_ct, &[], fo.as_bytes()),
            401,
            "unauthorized",
        ),
        (
            "fo unknown class",
            "fo",
            request("/webhooks/fo", json_ct, &fo_key, &s(&fo_unknown)),
            422,
            "unknown_entity",
        ),
        (
            "fo without EventId",
            "fo",
            request("/webhooks/fo", json_ct, &fo_key, &s(&fo_no_id)),
            422,
            "missing_key",
        ),
        (
            "fo with a fractional ControlNumber",
            "fo",
            request("/webhooks/fo", json_ct, &fo_key, &s(&fo_float_control)),
            422,
            "missing_key",
        ),
        (
            "fo empty list",
            "fo",
            request("/webhooks/fo", json_ct, &fo_key, b"[]"),
            422,
            "invalid_payload",
        ),
        (
            "fo truncated",
            "fo",
            request(
                "/webhooks/fo",
                json_ct,
                &fo_key,
                &fo.as_bytes()[..fo.len() / 2],
            ),
            400,
            "malformed_json",
        ),
        (
            "fo as XML",
            "fo",
            request("/webhooks/fo", xml, &fo_key, fo.as_bytes()),
            415,
            "unsupported_media_type",
        ),
        (
            "fo oversized",
            "fo",
            request("/webhooks/fo", json_ct, &fo_key, &big),
            413,
            "payload_too_large",
        ),
    ];
    for (name, system, req, status, code) in cases {
        let r = ingest(&ctx, system, &req).await;
        assert_eq!(r.status, status, "{name}: {}", r.body);
        let answer: Value = serde_json::from_str(&r.body).expect("a JSON answer");
        assert_eq!(answer["error"], json!(code), "{name}: {answer}");
    }
    // Signed F&O events: a bad, a stale and a replayed signature.
    let mut signed_ctx = ctx.clone();
    signed_ctx.auth.fin_ops_signed = SignedAuth::new(vec!["relay".into()], 300);
    fo_doc["EventId"] = json!("7C091AF1-5BAF-4CA9-B0A4-94D6E59A0D1C");
    let body = s(&fo_doc);
    let now = chrono::Utc::now().timestamp();
    let signed = |ts: i64, secret: &str| {
        let sig = SignedAuth::sign(secret, ts, &body);
        request(
            "/webhooks/fo",
            json_ct,
            &[
                ("x-p2c-timestamp", &ts.to_string()),
                ("x-p2c-signature", &sig),
            ],
            &body,
        )
    };
    for (name, req, code) in [
        ("bad signature", signed(now, "guess"), "unauthorized"),
        (
            "stale signature",
            signed(now - 900, "relay"),
            "stale_signature",
        ),
    ] {
        let r = ingest(&signed_ctx, "fo", &req).await;
        assert_eq!(
            (r.status, r.body.contains(code)),
            (401, true),
            "{name}: {}",
            r.body
        );
    }
    let fresh = signed(now, "relay");
    assert_eq!(ingest(&signed_ctx, "fo", &fresh).await.status, 202);
    let replay = ingest(&signed_ctx, "fo", &fresh).await;
    assert_eq!(replay.status, 401, "{}", replay.body);
    assert!(
        replay.body.contains("replayed_signature"),
        "{}",
        replay.body
    );
    // A duplicate delivery (the first event again, keyed): accepted, queued once.
    let again = ingest(
        &ctx,
        "fo",
        &request("/webhooks/fo", json_ct, &fo_key, fo.as_bytes()),
    )
    .await;
    assert_eq!(again.status, 202);
    assert_eq!(
        inbound_depth(&w).await,
        2,
        "the first event and the signed one, nothing else"
    );
    // What was accepted first is still there, unchanged.
    let queued = w
        .pipeline
        .store
        .receive(QueueName::Inbound, 10, std::time::Duration::from_secs(30))
        .await
        .expect("receive");
    assert!(
        queued.iter().any(|d| d
            .body
            .contains("fin_ops:9c091af1-5baf-4ca9-b0a4-94d6e59a0d1c")),
        "the first event is still queued: {queued:?}"
    );
}
