//! Bad input gets a clear 4xx with a stable code; nothing already accepted is lost; a
//! failing rule sends its event to the dead-letter queue with the rule's name, line and
//! column while other events keep flowing.

use crate::common::{account, fixture, rule_files, world, world_with};
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
