//! A Finance & Operations business event (one or a list) or data event: parsed or refused
//! with a 4xx, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|body: &[u8]| {
    let req = common::request("/webhooks/fo", "application/json", body);
    if let Err(e) = p2c_core::inbound::fo::parse(&req, chrono::Utc::now()) {
        common::check_refusal(&e);
    }
});
