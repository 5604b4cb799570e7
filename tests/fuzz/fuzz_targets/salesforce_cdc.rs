//! A Salesforce change event (EventBridge envelope, AppFlow's or bare): parsed or refused
//! with a 4xx, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

fuzz_target!(|body: &[u8]| {
    let orgs = vec!["00D5f000005KcCnEAK".to_string()];
    if let Err(e) = p2c_core::inbound::salesforce::parse_cdc_bytes(body, &orgs, chrono::Utc::now())
    {
        common::check_refusal(&e);
    }
});
