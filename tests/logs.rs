//! Secrets and personal data never reach the logs, at any level: webhook keys, BC
//! `clientState`s, bearer tokens, and the e-mail addresses and phone numbers of the records
//! synced, even when a target system's error message repeats them.
//!
//! A test binary of its own: it installs the process's global log subscriber, so every
//! log line of the run is captured (a per-thread subscriber in the shared test binary could
//! miss call sites other tests had already registered).

#[path = "common.rs"]
#[allow(dead_code)]
mod common;
#[path = "moto.rs"]
#[allow(dead_code)]
mod moto;

use common::{json_webhook, world};
use p2c_core::pipeline::ingest::ingest;
use serde_json::json;
use std::sync::{Arc, Mutex};

/// Log output captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).to_string()
    }
}

#[tokio::test]
async fn no_secret_or_personal_data_reaches_the_logs_at_any_level() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let (mut w, _d) = world().await;
    let sender_secret = "generic-sender-secret-7d1";
    w.pipeline.ingest.auth.senders = p2c_core::inbound::generic::Senders::from_json(
        &json!({"bridge": {"systems": ["dataverse"], "secrets": [sender_secret]}}).to_string(),
        300,
    )
    .expect("senders");
    let email = "ap.payables@fabrikam.example";
    let phone = "+1 425 555 0199";
    // Business Central refuses the customer, repeating its e-mail and phone: the refusal is
    // logged (and kept whole in the dead-letter queue, which is not a log).
    w.bc().inject(p2c_core::sim::Fault {
        matching: "POST customers".into(),
        status: 400,
        retry_after: None,
        message: format!("Customer with e-mail {email} and phone {phone} is blocked."),
    });
    let mut account = common::account("ACC-LOG", "Fabrikam Logs Ltd");
    account["emailaddress1"] = json!(email);
    account["telephone1"] = json!(phone);
    w.dataverse().create("accounts", account).expect("account");
    w.settle().await.expect("settles");
    // Refused webhooks: a wrong key, and the right key on a malformed body.
    for (key, body) in [
        (Some("not-the-key"), "{}".to_string()),
        (
            Some(w.crm_secret.as_str()),
            format!("{{\"email\": \"{email}\""),
        ),
    ] {
        let r = ingest(
            &w.pipeline.ingest,
            "dataverse",
            &json_webhook("/webhooks/dataverse", key, body),
        )
        .await;
        assert!(r.status >= 400, "{}", r.body);
    }
    // A generic sender: a wrong signature, and a signed batch of another system's record.
    let now = chrono::Utc::now().timestamp();
    for (secret, system) in [("guess", "dataverse"), (sender_secret, "business_central")] {
        let body = json!({"events": [{"event_id": "e1", "system": system, "entity": "account",
            "id": "a1", "version": {"sequence": 1}, "fields": {"emailaddress1": email}}]})
        .to_string();
        let mut req = json_webhook("/webhooks/events", None, body.clone());
        req.headers.push(("x-p2c-sender".into(), "bridge".into()));
        req.headers
            .push(("x-p2c-timestamp".into(), now.to_string()));
        req.headers.push((
            "x-p2c-signature".into(),
            p2c_core::inbound::SignedAuth::sign(secret, now, body.as_bytes()),
        ));
        let r = ingest(&w.pipeline.ingest, "events", &req).await;
        assert!(r.status == 401 || r.status == 403, "{}", r.body);
    }
    let text = logs.text();
    assert!(
        text.contains("delivery failed permanently") && text.contains("webhook refused"),
        "the logging paths ran:\n{text}"
    );
    for (what, secret) in [
        ("the Dataverse webhook key", w.crm_secret.as_str()),
        ("the BC clientState", w.bc_client_state.as_str()),
        ("a generic sender's secret", sender_secret),
        ("the bearer token", "sim-token"),
        ("an e-mail address", email),
        ("a phone number", phone),
        ("a phone number's digits", "425 555 0199"),
    ] {
        assert!(!text.contains(secret), "{what} is in the logs:\n{text}");
    }
    // The dead-letter record keeps BC's own message whole for the operator.
    let dead =
        p2c_core::ports::DeadLetters::list(&w.pipeline.store, p2c_core::ports::QueueName::ToErp)
            .await
            .expect("dead letters");
    assert!(
        dead.iter().any(|d| d.reason.contains("is blocked")),
        "{dead:?}"
    );
}
