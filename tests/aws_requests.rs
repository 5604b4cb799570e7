//! Benchmark: DynamoDB and SQS requests, and DynamoDB request units, per event on the happy
//! path, counted by the adapters themselves (moto server serves the calls; no AWS account).
//! The runner receives and deletes in batches of ten as the Lambda event source mapping
//! does, so those calls are in the figures; empty polls and queue-depth checks are not.
//!
//! Run: `cargo bench -p p2c-tests --bench aws_requests` (starts moto_server itself unless
//! `P2C_MOTO_ENDPOINT` names one).

#[path = "moto.rs"]
#[allow(dead_code)]
mod moto;

use p2c_core::app::Pipeline;
use p2c_core::pipeline::ingest::ingest;
use p2c_core::rules::{EmbeddedLoader, RuleSet};
use p2c_core::sim::dataverse::{numbered_account_change, numbered_account_webhook};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// List prices, us-east-1: DynamoDB on demand per million write / read request units
/// (after the November 2024 reduction), SQS FIFO per million requests.
const USD_PER_M_WRU: f64 = 0.625;
const USD_PER_M_RRU: f64 = 0.125;
const USD_PER_M_SQS_FIFO: f64 = 0.50;

const EVENTS: u64 = 50;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let backend =
        p2c_core::aws::create_local(&moto::endpoint(), &moto::unique("p2c-bench"), 5).await?;
    let counters = backend.store.counters();
    let rules = Arc::new(RuleSet::load(&EmbeddedLoader)?);
    let p = Pipeline::with_in_process_targets(backend, rules, "k");
    let sample: Value =
        serde_json::from_str(include_str!("fixtures/dataverse_account_update.json"))?;

    // New accounts first (each also writes a cross-reference per system id), then a
    // rename of each: the steady state of a running integration.
    let new_accounts = run(&p, &counters, |n| numbered_account_webhook(&sample, n, "k")).await?;
    let updates = run(&p, &counters, |n| {
        numbered_account_change(&sample, n, 1, "k")
    })
    .await?;
    report(
        &format!("{EVENTS} new Dataverse accounts → Business Central customers (ingest → sync → deliver), per event:"),
        &new_accounts,
    );
    report(
        &format!("{EVENTS} changes to those accounts → their customers, per event:"),
        &updates,
    );
    Ok(())
}

/// What one run of `EVENTS` webhooks cost.
struct Figures {
    requests: BTreeMap<&'static str, u64>,
    write_units: u64,
    write_units_by_kind: BTreeMap<String, u64>,
    read_units: u64,
}

async fn run(
    p: &Pipeline,
    counters: &p2c_core::aws::Counters,
    webhook: impl Fn(u64) -> p2c_core::inbound::WebhookRequest,
) -> anyhow::Result<Figures> {
    counters.reset();
    for n in 0..EVENTS {
        let r = ingest(&p.ingest, "dataverse", &webhook(n)).await;
        anyhow::ensure!(r.status == 202, "webhook refused: {}", r.body);
    }
    let done = p.run_until_idle(Duration::from_secs(120)).await?;
    anyhow::ensure!(done as u64 == 2 * EVENTS, "{done} messages processed");
    Ok(Figures {
        requests: counters.requests(),
        write_units: counters.total_write_units(),
        write_units_by_kind: counters.write_units_by_kind(),
        read_units: counters.total_read_units(),
    })
}

fn report(title: &str, f: &Figures) {
    let per = |n: u64| n as f64 / EVENTS as f64;
    let is_sqs = |op: &str| op.contains("Message") || op.contains("Queue");
    let sqs: u64 = f
        .requests
        .iter()
        .filter(|(op, _)| is_sqs(op) && !op.contains("(empty)") && **op != "GetQueueAttributes")
        .map(|(_, n)| n)
        .sum();
    let dynamo: u64 = f
        .requests
        .iter()
        .filter(|(op, _)| !is_sqs(op))
        .map(|(_, n)| n)
        .sum();
    let (wru, rru) = (f.write_units, f.read_units);
    println!("{title}");
    for (op, n) in &f.requests {
        println!("  {op:<30} {:>6.2}", per(*n));
    }
    println!("  DynamoDB requests              {:>6.2}", per(dynamo));
    println!(
        "  DynamoDB write request units   {:>6.2}   (target ≤ 3)",
        per(wru)
    );
    for (kind, n) in &f.write_units_by_kind {
        println!("    write units on {kind:<16} {:>6.2}", per(*n));
    }
    println!("  DynamoDB read request units    {:>6.2}", per(rru));
    println!(
        "  SQS requests (no idle polls)   {:>6.2}   (target ≤ 1.5)",
        per(sqs)
    );
    let usd = per(wru) * USD_PER_M_WRU + per(rru) * USD_PER_M_RRU + per(sqs) * USD_PER_M_SQS_FIFO;
    println!(
        "  cost per million events        ${usd:.2}  (DynamoDB on demand ${USD_PER_M_WRU}/M writes, ${USD_PER_M_RRU}/M reads; SQS FIFO ${USD_PER_M_SQS_FIFO}/M; Lambda not included)"
    );
}
