//! The production adapters: DynamoDB for every store port, SQS FIFO for the queues.
//!
//! Both count the requests they make ([`Counters`]), so the cost per event can be
//! measured rather than guessed.

pub mod dynamo;
pub mod sqs;

pub use dynamo::DynamoStore;
pub use sqs::{QueueUrls, SqsQueues};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Requests made, per operation (`PutItem`, `SendMessageBatch`, …), and DynamoDB request
/// units as on-demand billing counts them: a write unit per started KB of each item
/// written (twice inside a transaction), a read unit per strongly consistent read of up
/// to 4 KB (per item read, or per query page; an estimate from the item sizes).
#[derive(Debug, Default)]
pub struct Counters {
    requests: Mutex<BTreeMap<&'static str, u64>>,
    write_units: AtomicU64,
    read_units: AtomicU64,
    /// Write units by item kind (the partition key's prefix: `idem`, `entity`, `audit`, …).
    write_units_by_kind: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub(crate) fn request(&self, op: &'static str) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry(op).or_default() += 1;
        }
    }

    pub(crate) fn write_units(&self, units: u64, kind: &str) {
        self.write_units.fetch_add(units, Ordering::Relaxed);
        if let Ok(mut m) = self.write_units_by_kind.lock() {
            match m.get_mut(kind) {
                Some(n) => *n += units,
                None => {
                    m.insert(kind.to_string(), units);
                }
            }
        }
    }

    /// Write units so far by item kind (the partition key's prefix).
    pub fn write_units_by_kind(&self) -> BTreeMap<String, u64> {
        self.write_units_by_kind
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    pub(crate) fn read_units(&self, units: u64) {
        self.read_units.fetch_add(units, Ordering::Relaxed);
    }

    /// Read units consumed so far.
    pub fn total_read_units(&self) -> u64 {
        self.read_units.load(Ordering::Relaxed)
    }

    /// Requests per operation so far.
    pub fn requests(&self) -> BTreeMap<&'static str, u64> {
        self.requests.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// All requests so far.
    pub fn total_requests(&self) -> u64 {
        self.requests().values().sum()
    }

    /// Write units consumed so far.
    pub fn total_write_units(&self) -> u64 {
        self.write_units.load(Ordering::Relaxed)
    }

    /// Starts counting again from zero.
    pub fn reset(&self) {
        if let Ok(mut m) = self.requests.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.write_units_by_kind.lock() {
            m.clear();
        }
        self.write_units.store(0, Ordering::Relaxed);
        self.read_units.store(0, Ordering::Relaxed);
    }
}

/// The SDK configuration: the standard environment (region, credentials, and
/// `AWS_ENDPOINT_URL` for moto or LocalStack), or an explicit endpoint.
pub async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// An SDK error with its whole chain (the SDK's own `Display` says only "service error").
pub(crate) fn describe<E: std::error::Error>(e: &E) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()
}

/// SDK configuration for an AWS emulator on this machine (moto server, LocalStack):
/// the endpoint must be a loopback address; region and credentials default to dummies.
pub async fn local_config(endpoint: &str) -> anyhow::Result<aws_config::SdkConfig> {
    let loopback = reqwest::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .is_some_and(|h| {
            h == "localhost"
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
    if !loopback {
        anyhow::bail!(
            "`{endpoint}` is not on this machine: the AWS-path demo creates tables and queues \
             and leaves them behind, so it only runs against an emulator on loopback \
             (e.g. `moto_server -H 127.0.0.1 -p 5000`)"
        );
    }
    let creds = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "p2c-local");
    Ok(aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .load()
        .await)
}

/// A fresh table and queues named `<prefix>…` on an emulator, with one set of counters.
pub async fn create_local(
    endpoint: &str,
    prefix: &str,
    max_receives: u32,
) -> anyhow::Result<crate::backend::AwsBackend> {
    let config = local_config(endpoint).await?;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), prefix);
    store.create_table().await?;
    let queues = SqsQueues::create(
        aws_sdk_sqs::Client::new(&config),
        prefix,
        max_receives,
        std::time::Duration::from_secs(120),
    )
    .await?
    .with_counters(store.counters());
    Ok(crate::backend::AwsBackend { store, queues })
}
