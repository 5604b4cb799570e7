//! A bounded load run on loopback: p2c's webhook endpoint (the router `p2c serve` runs) and
//! its pipeline on the embedded store, in-process targets, and a client sending a mix of new
//! valid webhooks, redeliveries of earlier ones and invalid ones (a wrong key, a truncated
//! body, an entity p2c does not sync, an oversized body) with a fixed concurrency. It
//! reports throughput and latency, and counts the writes the targets received: one per
//! distinct valid event, whatever was redelivered or refused.

use crate::app::Pipeline;
use crate::connectors::memory::MemoryConnector;
use crate::domain::System;
use crate::embedded::EmbeddedStore;
use crate::inbound::dataverse::DataverseAuth;
use crate::pipeline::ingest::InboundAuth;
use crate::ports::{Connector, SourceReader};
use crate::rules::{EmbeddedLoader, RuleSet};
use crate::sim::dataverse::numbered_account_webhook;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Requests in all.
    pub requests: u64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Where the embedded store lives (in memory when `None`).
    pub store: Option<std::path::PathBuf>,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub requests: u64,
    pub seconds: f64,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Distinct valid events sent (new accounts).
    pub distinct_valid: u64,
    /// Redeliveries of valid events sent.
    pub duplicates: u64,
    /// Invalid requests sent.
    pub invalid: u64,
    /// Writes the ERP target received once everything was processed.
    pub applied: u64,
    /// Seconds until every queue was empty after the last answer.
    pub drain_seconds: f64,
}

impl LoadReport {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} requests in {:.2} s: {:.0} requests/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.requests,
            self.seconds,
            self.throughput(),
            self.p50_ms,
            self.p99_ms,
            self.max_ms
        )?;
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        writeln!(f, "answers: {}", statuses.join(", "))?;
        writeln!(
            f,
            "sent {} distinct valid events, {} redeliveries, {} invalid; the ERP received {} writes (queues empty {:.2} s after the last answer)",
            self.distinct_valid, self.duplicates, self.invalid, self.applied, self.drain_seconds
        )
    }
}

/// One request of the mix: its body and headers, and what kind it is.
enum Kind {
    Valid,
    Duplicate,
    Invalid,
}

fn request(
    sample: &serde_json::Value,
    i: u64,
    key: &str,
) -> (Kind, Vec<u8>, Vec<(String, String)>) {
    let valid = |n: u64| {
        let r = numbered_account_webhook(sample, n, key);
        (r.body, r.headers)
    };
    // Of every 20: 14 new, 4 redeliveries of an earlier one, 2 invalid.
    let round = i / 20;
    match i % 20 {
        0..=13 => {
            let (b, h) = valid(round * 14 + i % 20 + 1);
            (Kind::Valid, b, h)
        }
        14..=17 => {
            let earlier = round * 14 + (i % 20 - 14) * 3 + 1;
            let (b, h) = valid(earlier);
            (Kind::Duplicate, b, h)
        }
        _ => {
            let (mut b, mut h) = valid(u64::MAX - i);
            match (i / 20) % 4 {
                0 => {
                    for (k, v) in h.iter_mut() {
                        if k == "x-p2c-key" {
                            *v = "wrong-key".into();
                        }
                    }
                }
                1 => b.truncate(b.len() / 2),
                2 => {
                    let text = String::from_utf8_lossy(&b).replace("\"account\"", "\"lead\"");
                    b = text.into_bytes();
                }
                _ => b = vec![b' '; crate::inbound::MAX_BODY_BYTES + 1],
            }
            (Kind::Invalid, b, h)
        }
    }
}

/// Runs the load on loopback and returns the figures.
pub async fn run(opts: LoadOptions) -> anyhow::Result<LoadReport> {
    const KEY: &str = "load-key";
    let store = match &opts.store {
        Some(p) => EmbeddedStore::open(p)?,
        None => EmbeddedStore::in_memory()?,
    };
    let erp = Arc::new(MemoryConnector::new(System::BusinessCentral));
    let crm = Arc::new(MemoryConnector::new(System::Dataverse));
    let mut connectors: BTreeMap<System, Arc<dyn Connector>> = BTreeMap::new();
    connectors.insert(System::BusinessCentral, erp.clone());
    connectors.insert(System::Dataverse, crm.clone());
    let auth = InboundAuth {
        dataverse: DataverseAuth {
            header: Some("x-p2c-key".into()),
            query_param: None,
            secrets: vec![KEY.into()],
        },
        ..Default::default()
    };
    let rules = Arc::new(RuleSet::load(&EmbeddedLoader)?);
    let pipeline = Arc::new(Pipeline::with_connectors(
        store,
        rules,
        auth,
        connectors,
        BTreeMap::<System, Arc<dyn SourceReader>>::new(),
        crate::pipeline::Timings::default(),
    ));
    let (url, server) = crate::sim::serve(pipeline.router()).await?;
    let endpoint = format!("{url}/webhooks/dataverse");
    // The queue consumers, as `p2c serve` runs them.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (p, stop) = (pipeline.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if p.run_until_idle(Duration::from_millis(50)).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let sample: serde_json::Value = serde_json::from_str(include_str!(
        "../../../../tests/fixtures/dataverse_account_update.json"
    ))?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let mut report = LoadReport {
        requests: opts.requests,
        ..Default::default()
    };
    let requests: Vec<_> = (0..opts.requests)
        .map(|i| request(&sample, i, KEY))
        .collect();
    for (kind, _, _) in &requests {
        match kind {
            Kind::Valid => report.distinct_valid += 1,
            Kind::Duplicate => report.duplicates += 1,
            Kind::Invalid => report.invalid += 1,
        }
    }
    let semaphore = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for (_, body, headers) in requests {
        let permit = semaphore.clone().acquire_owned().await?;
        let (client, endpoint) = (client.clone(), endpoint.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let mut req = client.post(&endpoint).body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let t = Instant::now();
            let status = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, t.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(opts.requests as usize);
    while let Some(done) = tasks.join_next().await {
        let (status, took) = done?;
        *report.statuses.entry(status).or_default() += 1;
        latencies.push(took.as_secs_f64() * 1000.0);
    }
    report.seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    report.p50_ms = at(0.50);
    report.p99_ms = at(0.99);
    report.max_ms = latencies.last().copied().unwrap_or(0.0);
    // Everything accepted is processed before the writes are counted.
    let drain = Instant::now();
    loop {
        let mut pending = 0;
        for q in crate::ports::QueueName::ALL {
            pending += crate::ports::Consumer::depth(&pipeline.store, q).await?;
        }
        if pending == 0 {
            break;
        }
        anyhow::ensure!(
            drain.elapsed() < Duration::from_secs(600),
            "the queues did not empty within 10 minutes ({pending} messages left)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.drain_seconds = drain.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = worker.await;
    server.abort();
    report.applied = erp.applied();
    Ok(report)
}
