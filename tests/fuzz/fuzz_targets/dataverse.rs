//! A Dataverse webhook (RemoteExecutionContext) body: parsed or refused with a 4xx, never a
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|body: &[u8]| {
    let req = common::request("/webhooks/dataverse", "application/json", body);
    if let Err(e) = p2c_core::inbound::dataverse::parse(&req, chrono::Utc::now()) {
        common::check_refusal(&e);
    }
});
