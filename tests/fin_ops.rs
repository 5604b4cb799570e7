//! Finance & Operations in: business events at `POST /webhooks/fo`, with a key, deduplicated
//! on their `EventId`, and what a deployment paired with another ERP does with them.

use crate::common::{fixture, world};
use p2c_core::inbound::dataverse::DataverseAuth;
use p2c_core::inbound::WebhookRequest;
use p2c_core::pipeline::ingest::ingest;
use p2c_core::ports::{AuditLog, Consumer, QueueName};

fn business_event(key: Option<&str>, body: String) -> WebhookRequest {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(k) = key {
        headers.push(("x-p2c-key".into(), k.into()));
    }
    WebhookRequest {
        method: "POST".into(),
        path: "/webhooks/fo".into(),
        query: vec![],
        headers,
        body: body.into_bytes(),
    }
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
    assert_eq!(
        w.pipeline
            .store
            .depth(QueueName::Inbound)
            .await
            .expect("depth"),
        0
    );
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
    assert_eq!(
        w.pipeline
            .store
            .depth(QueueName::Inbound)
            .await
            .expect("depth"),
        1
    );
    // This deployment pairs Dataverse with Business Central: the event is recorded as
    // ignored, with the reason, and nothing is written anywhere.
    let before = (w.erp.log().len(), w.dataverse().log().len());
    w.settle().await.expect("settles");
    assert_eq!((w.erp.log().len(), w.dataverse().log().len()), before);
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
