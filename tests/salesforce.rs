//! Salesforce in: Outbound Messages through the webhook endpoint (secret in the URL, org
//! allow-list, SOAP Ack only once queued), and what the pipeline does with changes from a
//! Salesforce org it is not paired with.

use crate::common::{fixture, world};
use p2c_core::inbound::salesforce::SalesforceAuth;
use p2c_core::inbound::WebhookRequest;
use p2c_core::pipeline::ingest::ingest;
use p2c_core::ports::{Consumer, QueueName};

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
    let depth = |w: &p2c_core::demo::World| {
        let store = w.pipeline.store.clone();
        async move { store.depth(QueueName::Inbound).await.expect("depth") }
    };

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
    assert_eq!(depth(&w).await, 0, "nothing refused was queued");

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
        depth(&w).await,
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
    let before = w.erp.log().len();
    w.settle().await.expect("settles");
    assert_eq!(w.erp.log().len(), before, "nothing written to the ERP");
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
