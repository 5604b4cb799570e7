//! A Business Central notification body (and the handshake's token): parsed or refused with
//! a 4xx, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

/// The `clientState` of the seeds (tests/fixtures/bc_webhook_notification.json): a body
/// with another one stops at the secret check (compared in constant time, so the fuzzer
/// cannot learn it), and everything behind it would go unfuzzed.
const CLIENT_STATE: &str = "b64:QWxwaGFTZWNyZXQtZjNhOQ==";

fuzz_target!(|body: &[u8]| {
    let states = vec![CLIENT_STATE.to_string()];
    let req = common::request("/webhooks/bc", "application/json", body);
    if let Err(e) = p2c_core::inbound::bc::parse(&req, &states, chrono::Utc::now()) {
        common::check_refusal(&e);
    }
    // The first bytes as a handshake's query string.
    let mut handshake = common::request("/webhooks/bc", "application/json", b"");
    let query = String::from_utf8_lossy(&body[..body.len().min(256)]);
    handshake.query = p2c_core::inbound::WebhookRequest::parse_query(&query);
    // With our clientState header, or with a wrong one, or none (the last byte decides).
    match body.last().map(|b| b % 3) {
        Some(0) => handshake
            .headers
            .push(("clientstate".into(), CLIENT_STATE.into())),
        Some(1) => handshake
            .headers
            .push(("clientstate".into(), query.chars().take(32).collect())),
        _ => {}
    }
    if let Err(e) = p2c_core::inbound::bc::parse(&handshake, &states, chrono::Utc::now()) {
        common::check_refusal(&e);
    }
});
