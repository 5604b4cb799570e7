//! Least privilege: each function's IAM statements in `template.yaml` grant the DynamoDB and
//! SQS actions its code makes and nothing more. The steps run as each Lambda function runs
//! them (webhooks in, an SQS batch handled and its failures buried), on DynamoDB and SQS
//! FIFO at moto server, and the adapters count every request. Receiving, deleting and the
//! visibility of the messages a function is invoked with are the SQS event source mapping's
//! (SAM grants them with the event), so they are not the function's own.

use p2c_core::app::Pipeline;
use p2c_core::pipeline::ingest::ingest;
use p2c_core::pipeline::runner;
use p2c_core::ports::{Consumer, DeadLetterSink, Delivery, QueueName};
use p2c_core::rules::{EmbeddedLoader, RuleSet};
use p2c_core::sim::dataverse::{numbered_account_change, numbered_account_webhook};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// The IAM action a counted request needs, or `None` for the event source mapping's.
fn iam_action(op: &str) -> Option<String> {
    match op {
        "ReceiveMessage"
        | "DeleteMessage"
        | "DeleteMessageBatch"
        | "ChangeMessageVisibility"
        | "ChangeMessageVisibilityBatch"
        | "GetQueueAttributes" => None,
        // A batch send is authorised as sqs:SendMessage.
        "SendMessage" | "SendMessageBatch" => Some("sqs:SendMessage".into()),
        other => Some(format!("dynamodb:{other}")),
    }
}

/// The actions `template.yaml` grants a function (its `Policies` statements).
fn granted(function: &str) -> BTreeSet<String> {
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"),
    )
    .expect("template.yaml");
    let mut lines = template
        .lines()
        .skip_while(|l| l.trim_end() != format!("  {function}:"));
    assert!(lines.next().is_some(), "{function} is in template.yaml");
    lines
        // Up to the next resource (two spaces, a name, a colon).
        .take_while(|l| {
            !(l.starts_with("  ") && !l.starts_with("   ") && l.trim_end().ends_with(':'))
        })
        .filter_map(|l| l.trim().strip_prefix("Action:"))
        .flat_map(|a| {
            a.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn used(
    before: &BTreeMap<&'static str, u64>,
    after: &BTreeMap<&'static str, u64>,
) -> BTreeSet<String> {
    after
        .iter()
        .filter(|(op, n)| before.get(*op).copied().unwrap_or(0) < **n)
        .filter_map(|(op, _)| iam_action(op))
        .collect()
}

/// Receives what the event source mapping would hand a function (not counted as its own).
async fn batches(p: &Pipeline, queue: QueueName) -> Vec<Delivery> {
    p.store
        .receive(queue, 10, Duration::from_secs(30))
        .await
        .expect("receive")
}

#[tokio::test]
async fn each_function_is_granted_exactly_the_actions_its_code_makes() {
    let backend =
        p2c_core::aws::create_local(&crate::moto::endpoint(), &crate::moto::unique("p2c-iam"), 5)
            .await
            .expect("table and queues on moto");
    let counters = backend.store.counters();
    let rules = Arc::new(RuleSet::load(&EmbeddedLoader).expect("rules"));
    let p = Pipeline::with_in_process_targets(backend, rules, "k");
    let sample: serde_json::Value =
        serde_json::from_str(&crate::common::fixture("dataverse_account_update.json"))
            .expect("sample");
    let mut uses: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();

    // Webhooks in: new accounts, a change to each, a redelivery, a refused one.
    let before = counters.requests();
    for n in 1..=3 {
        for rev in [0, 1] {
            let r = ingest(
                &p.ingest,
                "dataverse",
                &numbered_account_change(&sample, n, rev, "k"),
            )
            .await;
            assert_eq!(r.status, 202, "{}", r.body);
        }
    }
    let again = ingest(
        &p.ingest,
        "dataverse",
        &numbered_account_webhook(&sample, 1, "k"),
    )
    .await;
    assert_eq!(again.status, 202);
    let refused = ingest(
        &p.ingest,
        "dataverse",
        &numbered_account_webhook(&sample, 9, "wrong"),
    )
    .await;
    assert_eq!(refused.status, 401);
    uses.entry("IngestFunction")
        .or_default()
        .extend(used(&before, &counters.requests()));

    // Sync, then deliver, batch by batch until the queues are empty, as each function's
    // handler does; each function also buries one message, as its handler does with a
    // permanent failure.
    let drained: std::cell::RefCell<BTreeMap<&str, BTreeSet<String>>> = Default::default();
    let step = |queue: QueueName| {
        let (p, counters, uses) = (&p, &counters, &drained);
        async move {
            let batch = p.store.receive(queue, 10, runner::VISIBILITY).await?;
            if batch.is_empty() {
                return Ok(0);
            }
            let before = counters.requests();
            let dispositions = match queue {
                QueueName::Inbound => p2c_core::pipeline::sync::handle_batch(&p.sync, &batch).await,
                _ => {
                    let mut out = Vec::new();
                    for d in &batch {
                        out.push(p2c_core::pipeline::deliver::handle_message(&p.deliver, d).await);
                    }
                    out
                }
            };
            let function = if queue == QueueName::Inbound {
                "SyncFunction"
            } else {
                "DeliverFunction"
            };
            uses.borrow_mut()
                .entry(function)
                .or_default()
                .extend(used(&before, &counters.requests()));
            runner::settle(&p.store, queue, &batch, &dispositions).await?;
            Ok(batch.len())
        }
    };
    let moved = runner::run_until_idle(&p.store, Duration::from_secs(60), step)
        .await
        .expect("drains");
    assert!(moved >= 12, "{moved} messages");
    for (function, actions) in drained.into_inner() {
        uses.entry(function).or_default().extend(actions);
    }
    for (rev, function, queue) in [
        (7, "SyncFunction", QueueName::Inbound),
        (8, "DeliverFunction", QueueName::ToErp),
    ] {
        let r = ingest(
            &p.ingest,
            "dataverse",
            &numbered_account_change(&sample, 1, rev, "k"),
        )
        .await;
        assert_eq!(r.status, 202);
        let doomed = batches(&p, QueueName::Inbound).await;
        let before = counters.requests();
        p.store
            .bury(queue, &doomed[0], "test", "a permanent failure")
            .await
            .expect("buried");
        uses.entry(function)
            .or_default()
            .extend(used(&before, &counters.requests()));
        let receipts: Vec<&str> = doomed.iter().map(|d| d.receipt.as_str()).collect();
        p.store
            .ack_all(QueueName::Inbound, &receipts)
            .await
            .expect("the mapping deletes");
    }

    // Granted but not made in this run, each with the path that needs it.
    let elsewhere: BTreeMap<&str, &[&str]> = BTreeMap::from([
        // Parked events released when what they waited for lands (a Query, then a
        // DeleteItem per event).
        ("DeliverFunction", &["dynamodb:DeleteItem"][..]),
        // Parked events released; open orders cleared; cross-references read.
        ("SyncFunction", &["dynamodb:DeleteItem"][..]),
    ]);
    for function in ["IngestFunction", "SyncFunction", "DeliverFunction"] {
        let made = uses.get(function).cloned().unwrap_or_default();
        let grants = granted(function);
        let missing: Vec<&String> = made.difference(&grants).collect();
        assert!(
            missing.is_empty(),
            "{function} makes {missing:?} but template.yaml does not grant it ({grants:?})"
        );
        let unused: BTreeSet<&str> = grants
            .difference(&made)
            .map(String::as_str)
            .filter(|a| !elsewhere.get(function).is_some_and(|e| e.contains(a)))
            .collect();
        assert!(
            unused.is_empty(),
            "{function} is granted {unused:?}, which its code did not use (made: {made:?})"
        );
    }
    // The relay only queues change events, as ingest does.
    assert_eq!(
        granted("RelayFunction"),
        BTreeSet::from(["sqs:SendMessage".to_string()])
    );
}
