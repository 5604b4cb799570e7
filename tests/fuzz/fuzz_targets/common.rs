//! What every target shares: a request around the fuzzer's bytes.

use p2c_core::inbound::WebhookRequest;

pub fn request(path: &str, content_type: &str, body: &[u8]) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        path: path.into(),
        query: vec![],
        headers: vec![("content-type".into(), content_type.into())],
        body: body.to_vec(),
    }
}

/// Every refusal must map to a 4xx with a stable code (503 is for queueing only).
pub fn check_refusal(e: &p2c_core::inbound::WebhookError) {
    let status = e.status();
    assert!((400..500).contains(&status), "{} is a {status}", e.code());
    assert!(!e.code().is_empty());
}
