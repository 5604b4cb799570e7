//! The guarantees of DESIGN.md, each with a test that fails if it breaks.

use crate::common::{
    account, customer_with_item, order_header, order_line, outcomes, repo_rules, world, world_with,
};
use p2c_core::domain::{ChangeEvent, EntityKey};
use p2c_core::pipeline::sync::{event_message, sync_event, SyncOutcome};
use p2c_core::ports::{Publisher, QueueName, StateStore};
use serde_json::{json, Value};
use std::sync::Arc;

fn count(log: &[String], prefix: &str) -> usize {
    log.iter().filter(|l| l.starts_with(prefix)).count()
}

/// 1. Duplicates have one effect.
#[tokio::test]
async fn a_webhook_delivered_twice_has_one_effect() {
    let (w, _d) = world().await;
    w.dataverse()
        .create("accounts", account("ACC-DUP-1", "Duplicate Ltd"))
        .expect("account");
    let hooks = w.crm.outbox().take();
    assert_eq!(hooks.len(), 1);
    let client = reqwest::Client::new();
    let (s1, b1) = hooks[0].send(&client).await.expect("first");
    let (s2, _) = hooks[0]
        .send(&client)
        .await
        .expect("a retry before it was synced");
    assert_eq!((s1, s2), (202, 202));
    assert!(b1.contains("\"accepted\":1"), "{b1}");
    let depth = p2c_core::ports::Consumer::depth(&w.pipeline.store, QueueName::Inbound)
        .await
        .expect("depth");
    assert_eq!(depth, 1, "the queue dropped the retry");
    w.settle().await.expect("settles");
    let (s3, b3) = hooks[0]
        .send(&client)
        .await
        .expect("a retry after it was synced");
    assert_eq!(s3, 202);
    assert!(b3.contains("\"accepted\":1"), "{b3}");
    w.settle().await.expect("settles");
    assert_eq!(w.bc().creates("customers"), 1);
    assert_eq!(count(&w.bc().log(), "POST customers"), 1);
    assert_eq!(
        count(&w.bc().log(), "PATCH customers"),
        0,
        "the duplicates caused no second write"
    );
}

#[tokio::test]
async fn an_event_queued_twice_past_the_webhook_claim_is_synced_once() {
    let (w, _d) = world().await;
    w.dataverse()
        .create("accounts", account("ACC-DUP-2", "Twice Ltd"))
        .expect("account");
    let hooks = w.crm.outbox().take();
    let client = reqwest::Client::new();
    hooks[0].send(&client).await.expect("sent");
    // The same event again on the queue with another deduplication id (an SQS redelivery).
    let queued = p2c_core::ports::Consumer::receive(
        &w.pipeline.store,
        QueueName::Inbound,
        10,
        std::time::Duration::from_secs(60),
    )
    .await
    .expect("receive");
    let ev: ChangeEvent = serde_json::from_str(&queued[0].body).expect("event");
    p2c_core::ports::Consumer::retry(
        &w.pipeline.store,
        QueueName::Inbound,
        &queued[0],
        std::time::Duration::ZERO,
        "test",
    )
    .await
    .expect("back");
    let mut again = event_message(&ev);
    again.dedup_id.push_str("-redelivered");
    w.pipeline
        .store
        .send(QueueName::Inbound, &[again])
        .await
        .expect("sent again");
    w.settle().await.expect("settles");
    assert_eq!(w.bc().creates("customers"), 1);
    assert_eq!(count(&w.bc().log(), "PATCH customers"), 0);
    assert_eq!(
        sync_event(&w.pipeline.sync, ev).await.expect("syncs"),
        SyncOutcome::Duplicate
    );
}

/// 2. A stale update never overwrites newer state.
#[tokio::test]
async fn a_stale_update_never_overwrites_newer_state() {
    let (w, _d) = world().await;
    let id = w
        .dataverse()
        .create("accounts", account("ACC-STALE", "Name v1"))
        .expect("account");
    w.settle().await.expect("settles");
    w.dataverse()
        .update("accounts", &id, json!({"name": "Name v2"}))
        .expect("v2");
    let v2 = w.crm.outbox().take();
    w.dataverse()
        .update("accounts", &id, json!({"name": "Name v3"}))
        .expect("v3");
    let v3 = w.crm.outbox().take();
    let client = reqwest::Client::new();
    v3[0].send(&client).await.expect("v3 first");
    w.settle().await.expect("settles");
    v2[0].send(&client).await.expect("then the older v2");
    w.settle().await.expect("settles");
    let c = w
        .bc()
        .find("customers", "number", "ACC-STALE")
        .expect("customer");
    assert_eq!(c["displayName"], json!("Name v3"));
    assert!(outcomes(&w, "account:ACC-STALE")
        .await
        .contains(&"sync:stale".to_string()));
}

/// 3. Our own writes coming back are recognised and dropped.
#[tokio::test]
async fn our_own_writes_coming_back_are_dropped_and_audited() {
    let (w, _d) = world().await;
    w.dataverse()
        .create("accounts", account("ACC-ECHO", "Echo Ltd"))
        .expect("account");
    w.settle().await.expect("settles");
    w.bc().set_credit_limit("ACC-ECHO", "1000").expect("limit");
    w.settle().await.expect("settles (no loop)");
    let trail = outcomes(&w, "account:ACC-ECHO").await;
    assert!(
        trail.iter().filter(|o| *o == "sync:echo").count() >= 2,
        "{trail:?}"
    );
    assert_eq!(count(&w.bc().log(), "POST customers"), 1);
    assert_eq!(
        count(&w.bc().log(), "PATCH customers"),
        0,
        "the CRM echo did not write the customer again"
    );
}

#[tokio::test]
async fn echoes_are_recognised_by_fingerprint_when_the_author_is_unknown() {
    // Without the integration user configured, only the payload fingerprint can tell.
    let mut files = crate::common::rule_files();
    let flows = files.get("flows.toml").expect("flows").replace(
        "integration_user = \"7f7e0a3e-5b1c-4f7e-9a51-0c2a1d9e7b11\"",
        "",
    );
    files.insert("flows.toml".into(), flows);
    let rules = Arc::new(p2c_core::rules::RuleSet::from_files(files).expect("rules"));
    let (w, _d) = world_with(rules).await;
    w.dataverse()
        .create("accounts", account("ACC-FP", "Fingerprint Ltd"))
        .expect("account");
    w.settle().await.expect("settles");
    w.bc().set_credit_limit("ACC-FP", "2000").expect("limit");
    w.settle().await.expect("settles (no loop)");
    let trail = outcomes(&w, "account:ACC-FP").await;
    assert!(trail.contains(&"sync:echo".to_string()), "{trail:?}");
    assert_eq!(count(&w.bc().log(), "PATCH customers"), 0);
}

/// 4. Dependencies: an order whose customer is not synced yet is parked, then released.
#[tokio::test]
async fn an_order_waits_for_its_customer_and_is_released_once_when_it_lands() {
    let (w, _d) = world().await;
    w.bc()
        .create_item("P-200", "Pump P-200", "460.00", "PCS", "PUMPS")
        .expect("item");
    w.settle().await.expect("settles");
    w.dataverse()
        .create("accounts", account("ACC-LATE", "Late Ltd"))
        .expect("account");
    let held_back = w.crm.outbox().take();
    w.dataverse()
        .create_document(
            "salesorders",
            order_header("ORD-WAIT", "ACC-LATE"),
            vec![order_line("P-200", 2, "460.00")],
        )
        .expect("order");
    w.settle().await.expect("settles");
    assert!(
        w.bc()
            .find("salesOrders", "externalDocumentNumber", "ORD-WAIT")
            .is_none(),
        "not before its customer"
    );
    let parked = p2c_core::ports::ParkingStore::all_parked(&w.pipeline.store)
        .await
        .expect("parked");
    assert_eq!(parked.len(), 1, "the order is parked, not failed");
    let client = reqwest::Client::new();
    held_back[0].send(&client).await.expect("account arrives");
    w.settle().await.expect("settles");
    // Released when the customer landed; without a credit limit yet it is held, then
    // released when the ERP sends the limit — and created in the ERP exactly once.
    assert!(outcomes(&w, "order:ORD-WAIT")
        .await
        .contains(&"sync:applied".to_string()));
    w.bc().set_credit_limit("ACC-LATE", "10000").expect("limit");
    w.settle().await.expect("settles");
    assert!(
        w.bc()
            .find("salesOrders", "externalDocumentNumber", "ORD-WAIT")
            .is_some(),
        "released when the customer landed"
    );
    assert_eq!(w.bc().creates("salesOrders"), 1);
    assert!(p2c_core::ports::ParkingStore::all_parked(&w.pipeline.store)
        .await
        .expect("parked")
        .is_empty());
    let key: EntityKey = "order:ORD-WAIT".parse().expect("key");
    assert!(w.pipeline.store.load(&key).await.expect("state").is_some());
}

/// 5. Per-entity order: events for one entity apply in order, even across a retry.
#[tokio::test]
async fn events_for_one_entity_apply_in_order_across_a_failed_delivery() {
    let (w, _d) = world().await;
    let id = w
        .dataverse()
        .create("accounts", account("ACC-ORDER", "Order v1"))
        .expect("account");
    w.settle().await.expect("settles");
    w.bc().inject(p2c_core::sim::Fault {
        matching: "PATCH customers".into(),
        status: 503,
        retry_after: None,
        message: "busy".into(),
    });
    w.dataverse()
        .update("accounts", &id, json!({"name": "Order v2"}))
        .expect("v2");
    w.dataverse()
        .update("accounts", &id, json!({"name": "Order v3"}))
        .expect("v3");
    w.settle().await.expect("settles");
    let c = w
        .bc()
        .find("customers", "number", "ACC-ORDER")
        .expect("customer");
    assert_eq!(
        c["displayName"],
        json!("Order v3"),
        "v2's retry did not land after v3"
    );
    let patches: Vec<String> = w
        .bc()
        .log()
        .into_iter()
        .filter(|l| l.starts_with("PATCH customers"))
        .collect();
    assert_eq!(
        patches.len(),
        2,
        "v2 once (after its retry), then v3: {patches:?}"
    );
}

#[tokio::test]
async fn held_orders_show_the_reason_and_are_re_evaluated_when_financials_change() {
    let (w, _d) = world().await;
    customer_with_item(&w, "ACC-HOLD", "1000").await;
    w.dataverse()
        .create_document(
            "salesorders",
            order_header("ORD-HOLD", "ACC-HOLD"),
            vec![order_line("P-200", 10, "460.00")],
        )
        .expect("order");
    w.settle().await.expect("settles");
    let o = w
        .dataverse()
        .find("salesorders", "ordernumber", "ORD-HOLD")
        .expect("order");
    let reason = o["submitstatusdescription"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("4,600.00") && reason.contains("limit 1,000.00"),
        "{reason}"
    );
    assert!(w
        .bc()
        .find("salesOrders", "externalDocumentNumber", "ORD-HOLD")
        .is_none());
    w.bc().set_credit_limit("ACC-HOLD", "10000").expect("raise");
    w.settle().await.expect("settles");
    let o = w
        .dataverse()
        .find("salesorders", "ordernumber", "ORD-HOLD")
        .expect("order");
    assert_eq!(o["submitstatusdescription"], json!("Released to the ERP"));
    assert_eq!(w.bc().creates("salesOrders"), 1);
}

#[tokio::test]
async fn every_step_writes_the_audit_trail_with_the_rules_version() {
    let (w, _d) = world().await;
    w.dataverse()
        .create("accounts", account("ACC-AUDIT", "Audit Ltd"))
        .expect("account");
    w.settle().await.expect("settles");
    let trail = p2c_core::ports::AuditLog::trail(&w.pipeline.store, "account:ACC-AUDIT")
        .await
        .expect("trail");
    let steps: Vec<(&str, &str)> = trail
        .iter()
        .map(|e| (e.step.as_str(), e.outcome.as_str()))
        .collect();
    assert!(steps.contains(&("sync", "applied")), "{steps:?}");
    assert!(steps.contains(&("deliver", "delivered")), "{steps:?}");
    let version = repo_rules().version.clone();
    assert!(trail
        .iter()
        .all(|e| e.rules_version.as_deref() == Some(version.as_str())));
    let applied = trail
        .iter()
        .find(|e| e.outcome == "applied")
        .expect("applied");
    assert!(applied.event_id.is_some());
    let _: Option<Value> = None;
}
