//! Benchmarks: the per-event cost of ingest → sync → deliver on the embedded store (no
//! network: the target is the in-process connector), of parsing a webhook, and of each hot
//! rule.
//!
//! Run: `cargo bench -p p2c-core --bench pipeline`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use p2c_core::app::Pipeline;
use p2c_core::embedded::EmbeddedStore;
use p2c_core::pipeline::ingest::ingest;
use p2c_core::rules::{EmbeddedLoader, RuleSet};
use p2c_core::sim::dataverse::numbered_account_webhook;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sample Dataverse account webhook's context, which the numbered webhooks are made of.
fn account_sample() -> Value {
    serde_json::from_str(include_str!(
        "../../../tests/fixtures/dataverse_account_update.json"
    ))
    .expect("sample")
}

fn rules() -> Arc<RuleSet> {
    Arc::new(RuleSet::load(&EmbeddedLoader).expect("rules"))
}

fn bench_rules(c: &mut Criterion) {
    let rules = rules();
    let mut g = c.benchmark_group("rules");
    let credit = json!({
        "order": { "number": "ORD-1", "total": 18400.00, "currency": "USD" },
        "customer": { "number": "ACC-1", "financials_known": true, "credit_limit": 50000, "balance": 1200.50,
                      "open_orders": 0, "overdue_amount": 0, "days_overdue": 0, "on_hold": false }
    });
    assert!(rules.is_fast("credit_limit.rhai"));
    g.bench_function("credit_decision (JSON in and out)", |b| {
        b.iter(|| rules.eval("credit_limit.rhai", &credit).expect("decides"))
    });
    // The same decision with the fast path switched off: Rhai's tree walker.
    g.bench_function("credit_decision (Rhai interpreter)", |b| {
        b.iter(|| {
            rules
                .eval_interpreted("credit_limit.rhai", &credit)
                .expect("decides")
        })
    });
    let account: Value = json!({ "system": "dataverse", "record": {
        "accountnumber": "ACC-01042-QX7T2P", "name": "Fabrikam Industrial Ltd", "address1_line1": "1 Microsoft Way",
        "address1_city": "Redmond", "address1_stateorprovince": "WA", "address1_postalcode": "98052", "address1_country": "US",
        "telephone1": "+1 425 555 0100", "emailaddress1": "ap@fabrikam.example", "paymenttermscode": 3,
        "transactioncurrencyid": { "id": "083081e1-0737-eb11-bf68-0022489b563d", "logical_name": "transactioncurrency", "name": "US Dollar" },
        "creditlimit": 50000.00, "modifiedon": "2026-05-14T09:12:45Z"
    }});
    g.bench_function("account_mapping", |b| {
        b.iter(|| {
            rules
                .eval("mapping/account_to_customer.rhai", &account)
                .expect("maps")
        })
    });
    g.bench_function("account_mapping (Rhai interpreter)", |b| {
        b.iter(|| {
            rules
                .eval_interpreted("mapping/account_to_customer.rhai", &account)
                .expect("maps")
        })
    });
    // An order with three lines (the loop, `push` and value maps per line).
    let cases: Value = serde_json::from_str(include_str!(
        "../../../rules/mapping/order_to_sales_order.cases.json"
    ))
    .expect("cases");
    let mut order = cases[0]["input"].clone();
    let line = order["record"]["order_details"][0].clone();
    order["record"]["order_details"] = json!([line, line, line]);
    g.bench_function("order_mapping, 3 lines", |b| {
        b.iter(|| {
            rules
                .eval("mapping/order_to_sales_order.rhai", &order)
                .expect("maps")
        })
    });
    g.bench_function("order_mapping, 3 lines (Rhai interpreter)", |b| {
        b.iter(|| {
            rules
                .eval_interpreted("mapping/order_to_sales_order.rhai", &order)
                .expect("maps")
        })
    });
    g.finish();
}

fn pipeline(store: EmbeddedStore) -> Pipeline {
    Pipeline::with_in_process_targets(store, rules(), "k")
}

fn bench_pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sample = account_sample();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);
    for (name, durable) in [
        (
            "account event, ingest→sync→deliver (embedded store, file)",
            true,
        ),
        (
            "account event, ingest→sync→deliver (embedded store, in memory)",
            false,
        ),
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let store = if durable {
            EmbeddedStore::open(dir.path().join("bench.db")).expect("store")
        } else {
            EmbeddedStore::in_memory().expect("store")
        };
        let p = pipeline(store);
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    n += 1;
                    numbered_account_webhook(&sample, n, "k")
                },
                |req| {
                    rt.block_on(async {
                        let r = ingest(&p.ingest, "dataverse", &req).await;
                        assert_eq!(r.status, 202, "{}", r.body);
                        p.run_until_idle(Duration::from_secs(5))
                            .await
                            .expect("runs");
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    // Throughput: 100 webhooks accepted, then the queues drained in batches of 10, as the
    // Lambda event source mapping would hand them over.
    let mut g = c.benchmark_group("pipeline_throughput");
    g.throughput(Throughput::Elements(100));
    g.sample_size(10);
    for (name, durable, together) in [
        ("100 account events (embedded store, file)", true, false),
        (
            "100 account events (embedded store, in memory)",
            false,
            false,
        ),
        (
            "100 account events arriving together (embedded store, file)",
            true,
            true,
        ),
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let store = if durable {
            EmbeddedStore::open(dir.path().join("bench.db")).expect("store")
        } else {
            EmbeddedStore::in_memory().expect("store")
        };
        let p = pipeline(store);
        let mut n = 1_000_000u64;
        g.bench_function(name, |b| {
            // The senders' part (building the requests) is done before the timing starts,
            // for all of a sample's iterations at once: building them between iterations
            // would leave each timed batch to start on caches the builder just flushed.
            b.iter_custom(|iters| {
                let batches: Vec<Vec<_>> = (0..iters)
                    .map(|_| {
                        (0..100)
                            .map(|_| {
                                n += 1;
                                numbered_account_webhook(&sample, n, "k")
                            })
                            .collect()
                    })
                    .collect();
                let started = Instant::now();
                rt.block_on(async {
                    for requests in batches {
                        if together {
                            // Concurrent webhooks, as `p2c serve` receives them: their
                            // queue writes share commits.
                            let mut set = tokio::task::JoinSet::new();
                            for req in requests {
                                let ctx = p.ingest.clone();
                                set.spawn(async move { ingest(&ctx, "dataverse", &req).await });
                            }
                            while let Some(r) = set.join_next().await {
                                let r = r.expect("joins");
                                assert_eq!(r.status, 202, "{}", r.body);
                            }
                        } else {
                            for req in &requests {
                                let r = ingest(&p.ingest, "dataverse", req).await;
                                assert_eq!(r.status, 202, "{}", r.body);
                            }
                        }
                        let done = p
                            .run_until_idle(Duration::from_secs(30))
                            .await
                            .expect("runs");
                        assert_eq!(done, 200, "100 events and 100 commands");
                    }
                });
                started.elapsed()
            })
        });
    }
    g.finish();
}

/// Parsing the sample Dataverse account webhook (6.5 KB, a parent context included) into
/// its change event: a third of the pipeline's time per event.
fn bench_parse(c: &mut Criterion) {
    let sample = account_sample();
    let req = numbered_account_webhook(&sample, 1, "k");
    let now = chrono::Utc::now();
    let mut g = c.benchmark_group("inbound");
    g.throughput(Throughput::Bytes(req.body.len() as u64));
    g.bench_function("dataverse webhook parse", |b| {
        b.iter(|| p2c_core::inbound::dataverse::parse(&req, now).expect("parses"))
    });
    g.finish();
}

criterion_group!(benches, bench_rules, bench_parse, bench_pipeline);
criterion_main!(benches);
