//! The adapter set a pipeline runs on: the embedded store and queue (one file, a log of
//! transactions), or DynamoDB and SQS FIFO. A [`Backend`] implements every store and queue
//! port by handing each call to the adapter behind it, so the steps, the runner, the CLI and
//! the tests are the same on both.

use crate::domain::{EntityKey, SourceRef};
use crate::embedded::EmbeddedStore;
use crate::error::{QueueError, StoreError};
use crate::ports::{
    Activation, AuditEntry, AuditLog, Claim, Consumer, DeadLetter, DeadLetterSink, DeadLetters,
    Decision, DecisionLog, Delivery, EntityState, FiguresStore, IdemRecord, IdempotencyStore,
    OutMessage, ParkedEvent, ParkingStore, Publisher, QueueName, RebateFigures, RuleStore,
    StateStore,
};
use async_trait::async_trait;
use rust_decimal::Decimal;
use serde_json::Value;
use std::time::Duration;

/// DynamoDB for the stores, SQS for the queues.
#[cfg(feature = "aws")]
#[derive(Clone)]
pub struct AwsBackend {
    pub store: crate::aws::DynamoStore,
    pub queues: crate::aws::SqsQueues,
}

#[cfg(feature = "aws")]
impl AwsBackend {
    /// The deployment the environment names, as `template.yaml` sets it: `P2C_TABLE`, the
    /// queue URLs `P2C_INBOUND_QUEUE_URL`, `P2C_TO_ERP_QUEUE_URL`, `P2C_TO_CRM_QUEUE_URL`
    /// and their dead-letter queues `P2C_*_DLQ_URL`, and `P2C_MAX_RECEIVES` (the redrive
    /// policies' `maxReceiveCount`, default 5). Region, credentials and
    /// `AWS_ENDPOINT_URL` come from the SDK's usual environment.
    pub async fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| anyhow::anyhow!("{name} is not set"))
        };
        let table = var("P2C_TABLE")?;
        let mut queues = std::collections::BTreeMap::new();
        let mut dead_letters = std::collections::BTreeMap::new();
        for q in QueueName::ALL {
            let name = q.as_str().replace('-', "_").to_uppercase();
            queues.insert(q, var(&format!("P2C_{name}_QUEUE_URL"))?);
            dead_letters.insert(q, var(&format!("P2C_{name}_DLQ_URL"))?);
        }
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let store = crate::aws::DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table);
        let max_receives = match std::env::var("P2C_MAX_RECEIVES") {
            Ok(v) if !v.is_empty() => v
                .parse()
                .map_err(|_| anyhow::anyhow!("P2C_MAX_RECEIVES must be a number, not `{v}`"))?,
            _ => crate::aws::sqs::DEFAULT_MAX_RECEIVES,
        };
        let queues = crate::aws::SqsQueues::new(
            aws_sdk_sqs::Client::new(&config),
            crate::aws::QueueUrls {
                queues,
                dead_letters,
            },
        )
        .with_max_receives(max_receives)
        .with_counters(store.counters());
        Ok(Self { store, queues })
    }
}

#[derive(Clone)]
pub enum Backend {
    Embedded(EmbeddedStore),
    #[cfg(feature = "aws")]
    Aws(AwsBackend),
}

impl From<EmbeddedStore> for Backend {
    fn from(s: EmbeddedStore) -> Self {
        Backend::Embedded(s)
    }
}

#[cfg(feature = "aws")]
impl From<AwsBackend> for Backend {
    fn from(a: AwsBackend) -> Self {
        Backend::Aws(a)
    }
}

impl Backend {
    /// Runs `work` as one unit of work: on the embedded store its writes share one commit;
    /// DynamoDB and SQS have no such thing, so there it simply runs.
    pub async fn unit<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, StoreError> {
        match self {
            Backend::Embedded(s) => s.unit(work).await,
            #[cfg(feature = "aws")]
            Backend::Aws(_) => Ok(work.await),
        }
    }

    /// What it runs on, for people.
    pub fn describe(&self) -> String {
        match self {
            Backend::Embedded(s) => match s.path() {
                Some(p) => format!("embedded store {}", p.display()),
                None => "embedded store in memory".into(),
            },
            #[cfg(feature = "aws")]
            Backend::Aws(a) => format!("DynamoDB table {} and SQS FIFO queues", a.store.table()),
        }
    }
}

/// Hands a store call to the adapter behind the backend.
macro_rules! store {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Backend::Embedded($s) => $call,
            #[cfg(feature = "aws")]
            Backend::Aws(a) => {
                let $s = &a.store;
                $call
            }
        }
    };
}

/// Hands a queue call to the adapter behind the backend.
macro_rules! queue {
    ($self:ident, $q:ident => $call:expr) => {
        match $self {
            Backend::Embedded($q) => $call,
            #[cfg(feature = "aws")]
            Backend::Aws(a) => {
                let $q = &a.queues;
                $call
            }
        }
    };
}

#[async_trait]
impl IdempotencyStore for Backend {
    async fn claim(
        &self,
        key: &str,
        lock_for: Duration,
        keep_for: Duration,
    ) -> Result<Claim, StoreError> {
        store!(self, s => s.claim(key, lock_for, keep_for).await)
    }
    async fn complete(
        &self,
        key: &str,
        outcome: &Value,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        store!(self, s => s.complete(key, outcome, keep_for).await)
    }
    async fn release(&self, key: &str) -> Result<(), StoreError> {
        store!(self, s => s.release(key).await)
    }
    async fn peek(&self, key: &str) -> Result<Option<IdemRecord>, StoreError> {
        store!(self, s => s.peek(key).await)
    }
}

#[async_trait]
impl StateStore for Backend {
    async fn load(&self, key: &EntityKey) -> Result<Option<EntityState>, StoreError> {
        store!(self, s => s.load(key).await)
    }
    async fn save(&self, state: &EntityState, entry: &AuditEntry) -> Result<(), StoreError> {
        store!(self, s => s.save(state, entry).await)
    }
    async fn resolve(&self, source: &SourceRef) -> Result<Option<EntityKey>, StoreError> {
        store!(self, s => s.resolve(source).await)
    }
}

#[async_trait]
impl ParkingStore for Backend {
    async fn park(&self, parked: &ParkedEvent) -> Result<(), StoreError> {
        store!(self, s => s.park(parked).await)
    }
    async fn waiting(&self, dependency: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        store!(self, s => s.waiting(dependency).await)
    }
    async fn unpark(&self, dependency: &str, id: &str) -> Result<(), StoreError> {
        store!(self, s => s.unpark(dependency, id).await)
    }
    async fn all_parked(&self) -> Result<Vec<ParkedEvent>, StoreError> {
        store!(self, s => s.all_parked().await)
    }
}

#[async_trait]
impl DecisionLog for Backend {
    async fn record(&self, decision: &Decision) -> Result<(), StoreError> {
        store!(self, s => s.record(decision).await)
    }
    async fn decisions(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Decision>, StoreError> {
        store!(self, s => s.decisions(since).await)
    }
}

#[async_trait]
impl RuleStore for Backend {
    async fn put_rules(
        &self,
        version: &str,
        files: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        store!(self, s => s.put_rules(version, files).await)
    }
    async fn get_rules(
        &self,
        version: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, StoreError> {
        store!(self, s => s.get_rules(version).await)
    }
    async fn activate(&self, activation: &Activation) -> Result<bool, StoreError> {
        store!(self, s => s.activate(activation).await)
    }
    async fn activations(&self, limit: usize) -> Result<Vec<Activation>, StoreError> {
        store!(self, s => s.activations(limit).await)
    }
}

#[async_trait]
impl AuditLog for Backend {
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        store!(self, s => s.append(entry).await)
    }
    async fn trail(&self, subject: &str) -> Result<Vec<AuditEntry>, StoreError> {
        store!(self, s => s.trail(subject).await)
    }
}

#[async_trait]
impl FiguresStore for Backend {
    async fn set_open_order(
        &self,
        account: &str,
        order: &str,
        amount: Decimal,
    ) -> Result<(), StoreError> {
        store!(self, s => s.set_open_order(account, order, amount).await)
    }
    async fn clear_open_order(&self, account: &str, order: &str) -> Result<(), StoreError> {
        store!(self, s => s.clear_open_order(account, order).await)
    }
    async fn open_orders(&self, account: &str, except: &str) -> Result<Decimal, StoreError> {
        store!(self, s => s.open_orders(account, except).await)
    }
    async fn rebate(&self, account: &str, period: &str) -> Result<RebateFigures, StoreError> {
        store!(self, s => s.rebate(account, period).await)
    }
    async fn save_rebate(
        &self,
        account: &str,
        period: &str,
        figures: &RebateFigures,
    ) -> Result<(), StoreError> {
        store!(self, s => s.save_rebate(account, period, figures).await)
    }
}

#[async_trait]
impl Publisher for Backend {
    async fn send(&self, queue: QueueName, messages: &[OutMessage]) -> Result<(), QueueError> {
        queue!(self, q => q.send(queue, messages).await)
    }

    async fn send_owned(
        &self,
        queue: QueueName,
        messages: Vec<OutMessage>,
    ) -> Result<(), QueueError> {
        queue!(self, q => q.send_owned(queue, messages).await)
    }
}

#[async_trait]
impl Consumer for Backend {
    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        queue!(self, q => q.receive(queue, max, visibility).await)
    }
    async fn ack(&self, queue: QueueName, receipt: &str) -> Result<(), QueueError> {
        queue!(self, q => q.ack(queue, receipt).await)
    }
    async fn ack_all(&self, queue: QueueName, receipts: &[&str]) -> Result<(), QueueError> {
        queue!(self, q => q.ack_all(queue, receipts).await)
    }
    async fn retry(
        &self,
        queue: QueueName,
        message: &Delivery,
        delay: Duration,
        reason: &str,
    ) -> Result<(), QueueError> {
        queue!(self, q => q.retry(queue, message, delay, reason).await)
    }
    async fn depth(&self, queue: QueueName) -> Result<usize, QueueError> {
        queue!(self, q => q.depth(queue).await)
    }
    async fn dead_letter(
        &self,
        queue: QueueName,
        message: &Delivery,
        code: &str,
        reason: &str,
    ) -> Result<(), QueueError> {
        queue!(self, q => q.dead_letter(queue, message, code, reason).await)
    }
}

#[async_trait]
impl DeadLetters for Backend {
    async fn list(&self, queue: QueueName) -> Result<Vec<DeadLetter>, QueueError> {
        queue!(self, q => q.list(queue).await)
    }
    async fn replay(&self, queue: QueueName, ids: &[String]) -> Result<usize, QueueError> {
        queue!(self, q => q.replay(queue, ids).await)
    }
}

#[async_trait]
impl DeadLetterSink for Backend {
    async fn bury(
        &self,
        queue: QueueName,
        message: &Delivery,
        code: &str,
        reason: &str,
    ) -> Result<(), QueueError> {
        queue!(self, q => q.bury(queue, message, code, reason).await)
    }
    fn max_receives(&self) -> u32 {
        queue!(self, q => q.max_receives())
    }
}
