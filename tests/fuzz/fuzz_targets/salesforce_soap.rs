//! A Salesforce Outbound Message (SOAP 1.1 XML): parsed or refused with a 4xx (a DTD or
//! entity is refused unread), never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|body: &[u8]| {
    let orgs = vec!["00D5f000005KcCnEAK".to_string()];
    let req = common::request("/webhooks/salesforce", "text/xml; charset=utf-8", body);
    if let Err(e) = p2c_core::inbound::salesforce::parse_outbound(&req, &orgs, chrono::Utc::now()) {
        common::check_refusal(&e);
    }
});
