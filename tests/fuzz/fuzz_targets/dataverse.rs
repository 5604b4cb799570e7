//! A Dataverse webhook (RemoteExecutionContext) body: parsed or refused with a 4xx, never a
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|body: &[u8]| {
    let mut req = common::request("/webhooks/dataverse", "application/json", body);
    // An odd last byte makes it a body as Dataverse sends one over 256 KB: its header set
    // (the attributes are then dropped and the record read back instead).
    if body.last().is_some_and(|b| b % 2 == 1) {
        req.headers
            .push(("x-ms-dynamics-msg-size-exceeded".into(), "true".into()));
    }
    if let Err(e) = p2c_core::inbound::dataverse::parse(&req, chrono::Utc::now()) {
        common::check_refusal(&e);
    }
});
