//! A fixed workload for profilers: N Dataverse account webhooks (arriving together, or one
//! after another with `--sequential`) into a file store, then the queues drained, as the
//! `pipeline_throughput` benchmark does. Prints events per second; under `perf stat` the
//! instruction count per event is the steadier figure on a noisy machine.
//!
//! `cargo run --release -p p2c-core --example drain -- 5000 [--sequential] [--memory]`
//!
//! Besides the wall-clock rate it prints the time the thread spent on a CPU per event, the
//! steadier figure when other processes share the machine.

use p2c_core::app::Pipeline;
use p2c_core::embedded::EmbeddedStore;
use p2c_core::pipeline::ingest::ingest;
use p2c_core::rules::{EmbeddedLoader, RuleSet};
use p2c_core::sim::dataverse::numbered_account_webhook;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(5000);
    let sequential = args.iter().any(|a| a == "--sequential");
    let memory = args.iter().any(|a| a == "--memory");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let dir_path = std::env::var("P2C_DRAIN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().to_path_buf());
    let store = if memory {
        EmbeddedStore::in_memory()
    } else {
        EmbeddedStore::open(dir_path.join("drain.db"))
    }
    .expect("store");
    let rules = Arc::new(RuleSet::load(&EmbeddedLoader).expect("rules"));
    let p = Pipeline::with_in_process_targets(store, rules, "k");
    let sample: serde_json::Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/dataverse_account_update.json"
    ))
    .expect("sample");
    // Requests are built first, outside the timing (the senders' part).
    let batches: Vec<Vec<_>> = (0..n)
        .map(|i| numbered_account_webhook(&sample, i + 1, "k"))
        .collect::<Vec<_>>()
        .chunks(100)
        .map(|c| c.to_vec())
        .collect();
    let on_cpu_before = on_cpu();
    let started = Instant::now();
    rt.block_on(async {
        for batch in batches {
            if sequential {
                for req in &batch {
                    assert_eq!(ingest(&p.ingest, "dataverse", req).await.status, 202);
                }
            } else {
                let mut set = tokio::task::JoinSet::new();
                for req in batch {
                    let ctx = p.ingest.clone();
                    set.spawn(async move { ingest(&ctx, "dataverse", &req).await });
                }
                while let Some(r) = set.join_next().await {
                    assert_eq!(r.expect("joins").status, 202);
                }
            }
            p.run_until_idle(Duration::from_secs(60))
                .await
                .expect("drains");
        }
    });
    let took = started.elapsed();
    let cpu = match (on_cpu_before, on_cpu()) {
        (Some(a), Some(b)) => format!(", on CPU {:.1} µs/event", (b - a) as f64 / 1e3 / n as f64),
        _ => String::new(),
    };
    println!(
        "{n} events in {:.3} s: {:.0} events/s ({:.1} µs/event{cpu})",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / n as f64
    );
}

/// Nanoseconds this thread has run on a CPU (Linux: the first field of
/// /proc/thread-self/schedstat). On a machine other processes share, the wall-clock time
/// includes their turns; this does not (their effect on the caches it still does).
fn on_cpu() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
