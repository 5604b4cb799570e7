//! Generic senders (`/webhooks/events`): p2c's own event format, HMAC-signed per sender,
//! through the whole pipeline with the same guarantees as a system's own webhooks.

use crate::common::{inbound_depth, outcomes, world};
use p2c_core::inbound::generic::{signed_request, Senders};
use p2c_core::inbound::{SignedAuth, WebhookRequest};
use p2c_core::pipeline::ingest::ingest;
use serde_json::{json, Value};

const SECRET: &str = "bridge-secret";

fn signed(sender: &str, secret: &str, ts: i64, body: &Value) -> WebhookRequest {
    signed_request(serde_json::to_vec(body).expect("json"), sender, secret, ts)
}

/// A Dataverse account as a middleware that listens to the CRM would send it.
fn account_event(event_id: &str, sequence: u64, name: &str) -> Value {
    json!({"events": [{
        "event_id": event_id,
        "system": "dataverse",
        "entity": "account",
        "id": "5E2B1C0A-1111-4D2E-9F00-00000000A001",
        "operation": "update",
        "version": {"sequence": sequence},
        "natural_key": "ACC-GEN-1",
        "fields": {"accountnumber": "ACC-GEN-1", "name": name, "address1_city": "Leeds"}
    }]})
}

#[tokio::test]
async fn a_signed_senders_changes_flow_once_in_order_and_only_for_its_systems() {
    let (mut w, _d) = world().await;
    w.pipeline.ingest.auth.senders = Senders::from_json(
        &json!({"crm-bridge": {"systems": ["dataverse"], "secrets": [SECRET]}}).to_string(),
        300,
    )
    .expect("senders");
    let now = chrono::Utc::now().timestamp();
    let send = |body: Value, ts: i64| {
        let req = signed("crm-bridge", SECRET, ts, &body);
        let ctx = w.pipeline.ingest.clone();
        async move { ingest(&ctx, "events", &req).await }
    };
    let r = send(account_event("chg-1", 5, "Generic Ltd"), now).await;
    assert_eq!((r.status, r.body.as_str()), (202, r#"{"accepted":1}"#));
    w.settle().await.expect("settles");
    let customer = || {
        w.bc()
            .find("customers", "number", "ACC-GEN-1")
            .expect("customer in BC")
    };
    assert_eq!(customer()["displayName"], json!("Generic Ltd"));
    assert_eq!(w.bc().creates("customers"), 1);

    // The sender retries the same change (signed anew): one effect.
    let r = send(account_event("chg-1", 5, "Generic Ltd"), now + 1).await;
    assert_eq!(r.status, 202, "{}", r.body);
    w.settle().await.expect("settles");
    let writes = |log: Vec<String>| {
        log.iter()
            .filter(|l| l.contains("customers") && !l.starts_with("GET"))
            .count()
    };
    let after_first = writes(w.bc().log());
    assert!(after_first > 0, "{:?}", w.bc().log());
    assert_eq!(w.bc().creates("customers"), 1);

    // An older change arriving late never overwrites the newer one.
    let r = send(account_event("chg-0", 4, "Old Name"), now + 2).await;
    assert_eq!(r.status, 202, "{}", r.body);
    w.settle().await.expect("settles");
    assert_eq!(customer()["displayName"], json!("Generic Ltd"));
    assert_eq!(writes(w.bc().log()), after_first, "nothing written for it");
    assert!(outcomes(&w, "account:ACC-GEN-1")
        .await
        .contains(&"sync:stale".to_string()));

    // A newer one does.
    let r = send(account_event("chg-2", 6, "Generic Renamed"), now + 3).await;
    assert_eq!(r.status, 202, "{}", r.body);
    w.settle().await.expect("settles");
    assert_eq!(customer()["displayName"], json!("Generic Renamed"));

    // Refused, and nothing queued: another system, another sender's secret, a replay.
    let mut bc_event = account_event("chg-3", 7, "Sneaky");
    bc_event["events"][0]["system"] = json!("business_central");
    let refused = [
        (send(bc_event, now + 4).await, 403, "system_not_allowed"),
        (
            ingest(
                &w.pipeline.ingest,
                "events",
                &signed("crm-bridge", "guess", now, &account_event("chg-4", 8, "X")),
            )
            .await,
            401,
            "unauthorized",
        ),
    ];
    for (r, status, code) in refused {
        assert_eq!(r.status, status, "{}", r.body);
        assert!(r.body.contains(code), "{}", r.body);
    }
    let replay = signed(
        "crm-bridge",
        SECRET,
        now + 5,
        &account_event("chg-5", 9, "Y"),
    );
    assert_eq!(
        ingest(&w.pipeline.ingest, "events", &replay).await.status,
        202
    );
    let again = ingest(&w.pipeline.ingest, "events", &replay).await;
    assert_eq!(again.status, 401);
    assert!(again.body.contains("replayed_signature"), "{}", again.body);
    assert_eq!(
        inbound_depth(&w).await,
        1,
        "only the one valid request is queued"
    );
}

/// The endpoint is reached through the HTTP router like every webhook, and with no senders
/// configured it lets nobody in.
#[tokio::test]
async fn with_no_senders_configured_the_endpoint_refuses_everyone() {
    let (w, _d) = world().await;
    let body = serde_json::to_vec(&account_event("chg-1", 1, "Nobody")).expect("json");
    let ts = chrono::Utc::now().timestamp();
    let r = reqwest::Client::new()
        .post(format!("{}/webhooks/events", w.webhook_url))
        .header("content-type", "application/json")
        .header("x-p2c-sender", "crm-bridge")
        .header("x-p2c-timestamp", ts.to_string())
        .header("x-p2c-signature", SignedAuth::sign(SECRET, ts, &body))
        .body(body)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 401);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["error"], json!("unauthorized"));
    let r = reqwest::Client::new()
        .get(format!("{}/webhooks/events", w.webhook_url))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 405);
}
