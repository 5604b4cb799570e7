//! A Business Central notification body (and the handshake's token): parsed or refused with
//! a 4xx, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|body: &[u8]| {
    let states = vec!["client-state".to_string()];
    let req = common::request("/webhooks/bc", "application/json", body);
    if let Err(e) = p2c_core::inbound::bc::parse(&req, &states, chrono::Utc::now()) {
        common::check_refusal(&e);
    }
    // The first bytes as a handshake's query string.
    let mut handshake = common::request("/webhooks/bc", "application/json", b"");
    let query = String::from_utf8_lossy(&body[..body.len().min(256)]);
    handshake.query = p2c_core::inbound::WebhookRequest::parse_query(&query);
    if let Err(e) = p2c_core::inbound::bc::parse(&handshake, &states, chrono::Utc::now()) {
        common::check_refusal(&e);
    }
});
