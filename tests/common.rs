//! Helpers shared by the end-to-end tests.

use p2c_core::demo::World;
use p2c_core::pipeline::Timings;
use p2c_core::ports::AuditLog;
use p2c_core::rules::{DirLoader, RuleLoader, RuleSet};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use p2c_core::sim::dataverse::{PRIMARY_UNIT, USD};

pub fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .expect("fixture exists")
}

pub fn rule_files() -> BTreeMap<String, String> {
    DirLoader(rules_dir()).load().expect("rules load")
}

pub fn repo_rules() -> Arc<RuleSet> {
    Arc::new(RuleSet::from_files(rule_files()).expect("rules compile"))
}

pub fn fast() -> Timings {
    Timings {
        retry_base: Duration::from_millis(10),
    }
}

/// A world with the repository's rules and its own temporary store.
pub async fn world() -> (World, tempfile::TempDir) {
    world_with(repo_rules()).await
}

pub async fn world_with(rules: Arc<RuleSet>) -> (World, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = World::start(rules, Some(dir.path().join("p2c.db")), fast())
        .await
        .expect("world starts");
    (w, dir)
}

pub fn account(number: &str, name: &str) -> Value {
    json!({
        "accountnumber": number, "name": name, "address1_city": "Redmond", "paymenttermscode": 1,
        "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({USD})"),
    })
}

pub fn order_header(number: &str, account: &str) -> Value {
    json!({
        "ordernumber": number, "name": format!("order {number}"),
        "customerid_account@odata.bind": format!("/accounts(accountnumber='{account}')"),
        "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({USD})"),
    })
}

pub fn order_line(item: &str, qty: i64, price: &str) -> Value {
    json!({
        "productid@odata.bind": format!("/products(productnumber='{item}')"), "quantity": qty,
        "priceperunit": price.parse::<serde_json::Number>().expect("number"), "uomid@odata.bind": format!("/uoms({PRIMARY_UNIT})"),
    })
}

/// Audit outcomes recorded for a subject, in order.
pub async fn outcomes(w: &World, subject: &str) -> Vec<String> {
    w.pipeline
        .store
        .trail(subject)
        .await
        .expect("trail")
        .into_iter()
        .map(|e| format!("{}:{}", e.step, e.outcome))
        .collect()
}

/// Account, credit limit and item synced: the set-up most order tests need.
pub async fn customer_with_item(w: &World, account_no: &str, limit: &str) {
    w.dataverse()
        .create("accounts", account(account_no, "Contoso Pumps"))
        .expect("account");
    w.settle().await.expect("settles");
    w.bc().set_credit_limit(account_no, limit).expect("limit");
    w.bc()
        .create_item("P-200", "Pump P-200", "460.00", "PCS", "PUMPS")
        .expect("item");
    w.settle().await.expect("settles");
}

/// A world on DynamoDB and SQS FIFO (moto server), with the repository's rules and its
/// own new table and queues.
pub async fn world_aws() -> World {
    let backend =
        p2c_core::aws::create_local(&crate::moto::endpoint(), &crate::moto::unique("p2c"), 5)
            .await
            .expect("table and queues on moto");
    World::start_on(repo_rules(), backend.into(), fast())
        .await
        .expect("world starts")
}

/// A JSON webhook POSTed to `path`, with `key` in the `x-p2c-key` header when given.
pub fn json_webhook(
    path: &str,
    key: Option<&str>,
    body: String,
) -> p2c_core::inbound::WebhookRequest {
    let mut headers = vec![(
        "content-type".to_string(),
        "application/json; charset=utf-8".to_string(),
    )];
    if let Some(k) = key {
        headers.push(("x-p2c-key".into(), k.into()));
    }
    p2c_core::inbound::WebhookRequest {
        method: "POST".into(),
        path: path.into(),
        query: vec![],
        headers,
        body: body.into_bytes(),
    }
}

/// A pipeline on an embedded store in its own temporary directory.
pub fn pipeline_on_file(
    rules: Arc<RuleSet>,
    auth: p2c_core::pipeline::ingest::InboundAuth,
    endpoints: &p2c_core::app::Endpoints,
) -> (p2c_core::app::Pipeline, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let p = p2c_core::app::Pipeline::new(
        p2c_core::embedded::EmbeddedStore::open(dir.path().join("p2c.db")).expect("store"),
        rules,
        auth,
        endpoints,
        fast(),
    )
    .expect("pipeline");
    (p, dir)
}

/// How many messages wait on the inbound queue (what ingest accepted and sync has not
/// taken yet).
pub async fn inbound_depth(w: &World) -> usize {
    use p2c_core::ports::Consumer;
    w.pipeline
        .store
        .depth(p2c_core::ports::QueueName::Inbound)
        .await
        .expect("depth")
}
