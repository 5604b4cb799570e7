//! A generic sender's event batch, signed with the sender's secret (so the fuzzer's bytes
//! reach the parser through the signature check): accepted or refused with a 4xx, never a
//! panic, and an accepted event is always of a system the sender may speak for.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2c_core::inbound::generic::{sign_request, Senders};

#[path = "common.rs"]
mod common;

fuzz_target!(|body: &[u8]| {
    let senders = Senders::from_json(
        r#"{"fuzz": {"systems": ["dataverse", "business_central"], "secrets": ["fuzz-secret"]}}"#,
        300,
    )
    .expect("config");
    let now = chrono::Utc::now();
    let mut req = common::request("/webhooks/events", "application/json", body);
    sign_request(&mut req, "fuzz", "fuzz-secret", now.timestamp());
    match senders.accept(&req, now) {
        Ok(events) => {
            assert!(!events.is_empty());
            for ev in events {
                assert!(matches!(
                    ev.source.system,
                    p2c_core::domain::System::Dataverse
                        | p2c_core::domain::System::BusinessCentral
                ));
                assert!(ev.event_id.0.starts_with("events:fuzz:"));
            }
        }
        Err(e) => common::check_refusal(&e),
    }
});
