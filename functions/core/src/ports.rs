//! Ports: the capabilities the steps need, sized so each function gets only what it
//! uses (and its IAM policy grants only that). Adapters are named technology-first:
//! [`crate::embedded::EmbeddedStore`], later `DynamoStateStore`, `SqsPublisher`.

use crate::command::Command;
use crate::domain::{ChangeEvent, EntityKey, SourceRef, SourceVersion, System};
use crate::error::{DeliveryError, QueueError, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

// ---------------------------------------------------------------- idempotency

/// Status of an idempotency record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdemStatus {
    InProgress,
    Completed,
}

/// A stored idempotency record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub key: String,
    pub status: IdemStatus,
    /// For `InProgress`: when the lock lapses and another worker may take over.
    pub locked_until: DateTime<Utc>,
    /// When the record stops counting (checked on read; TTL is only housekeeping).
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub outcome: Value,
}

/// The result of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Nobody has this key (or its record expired, or its lock lapsed): go ahead.
    Fresh,
    /// Already done; here is what it produced.
    Duplicate(IdemRecord),
    /// Another worker holds it until `until`: retry later.
    InProgress { until: DateTime<Utc> },
}

/// Idempotency keys (the Powertools algorithm: one conditional put returning the old item).
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` in one conditional write. The in-progress lock lasts `lock_for`
    /// (longer than the function timeout); the record counts for `keep_for`.
    async fn claim(
        &self,
        key: &str,
        lock_for: Duration,
        keep_for: Duration,
    ) -> Result<Claim, StoreError>;
    /// Marks the key completed with its outcome. Call only after every side effect.
    async fn complete(
        &self,
        key: &str,
        outcome: &Value,
        keep_for: Duration,
    ) -> Result<(), StoreError>;
    /// Drops an in-progress claim after a failure, so a retry can claim it at once.
    async fn release(&self, key: &str) -> Result<(), StoreError>;
    /// Reads a live, completed record without claiming anything (a cheap duplicate check).
    async fn peek(&self, key: &str) -> Result<Option<IdemRecord>, StoreError>;
}

// ---------------------------------------------------------------- entity state

/// The outbox of the last applied event: if the process dies after writing state but
/// before every command is queued, the redelivered event re-sends exactly these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub idempotency_key: String,
    pub commands: Vec<Command>,
}

/// What p2c knows of one entity across systems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityState {
    pub key: EntityKey,
    /// Optimistic-lock version: every save must name the version it read.
    pub version: u64,
    /// The entity's id in each system.
    #[serde(default)]
    pub ids: BTreeMap<System, String>,
    /// The newest source version applied from each system.
    #[serde(default)]
    pub applied: BTreeMap<System, SourceVersion>,
    /// Fingerprint of the fields p2c last wrote into each system (echo recognition).
    #[serde(default)]
    pub written: BTreeMap<System, String>,
    /// Fingerprint of the last payload sent per flow (a repeat is a no-op).
    #[serde(default)]
    pub sent: BTreeMap<String, String>,
    /// The latest canonical records, by kind (`customer`, `financials`, `order`, …).
    #[serde(default)]
    pub records: BTreeMap<String, Value>,
    #[serde(default)]
    pub last_applied: Option<Applied>,
    /// The commands most recently delivered to this entity, oldest first (at most
    /// [`EntityState::DELIVERED_KEPT`]): a redelivered command found here is a duplicate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered: Vec<String>,
    pub updated_at: DateTime<Utc>,
    /// The ids as the store last saw them (set on load, not stored): a save writes
    /// cross-references only for ids that are not among them.
    #[serde(skip)]
    pub stored_ids: BTreeMap<System, String>,
}

impl EntityState {
    /// How many delivered command ids the state keeps. An event queues a handful of
    /// commands per entity, so this covers the last few events' worth; an older command
    /// delivered again is still harmless, as every target write is an upsert by key.
    pub const DELIVERED_KEPT: usize = 16;

    /// The ids a save must record cross-references for: the CRM-side ids not stored yet.
    /// Only CRM records point at other records by id (lookups such as an order's customer
    /// or an order line's product, resolved through these); ERP records name what they
    /// point at by number, so an ERP id is never looked up and costs no write.
    pub fn new_references(&self) -> impl Iterator<Item = (System, &String)> + '_ {
        self.ids.iter().filter_map(move |(system, id)| {
            (system.side() == crate::domain::Side::Crm && self.stored_ids.get(system) != Some(id))
                .then_some((*system, id))
        })
    }

    /// Records a command as delivered to this entity.
    pub fn mark_delivered(&mut self, command_id: &str) {
        if !self.delivered.iter().any(|c| c == command_id) {
            self.delivered.push(command_id.to_string());
        }
        let over = self.delivered.len().saturating_sub(Self::DELIVERED_KEPT);
        self.delivered.drain(..over);
    }

    /// Drops the last applied event's commands once they are all delivered
    /// ([`Self::outbox_delivered`]): they are kept only to re-send after a crash, and were
    /// written again with every save after it. A repeat of the event is then recognised by
    /// its idempotency key alone.
    pub fn settle_outbox(&mut self) {
        if self.outbox_delivered() {
            if let Some(ap) = self.last_applied.as_mut() {
                ap.commands.clear();
            }
        }
    }

    /// Whether the last applied event has nothing left to send: every one of its commands is
    /// for this entity and delivered here. A command for another entity (a rebate's credit
    /// note) cannot be checked here, so an event that had one is re-sent in full when it
    /// comes back; the queue's deduplication and the deliver step drop what did go out.
    pub fn outbox_delivered(&self) -> bool {
        self.last_applied.as_ref().is_some_and(|ap| {
            ap.commands
                .iter()
                .all(|c| c.entity == self.key && self.delivered.contains(&c.id.0))
        })
    }

    pub fn new(key: EntityKey) -> Self {
        Self {
            key,
            version: 0,
            ids: BTreeMap::new(),
            applied: BTreeMap::new(),
            written: BTreeMap::new(),
            sent: BTreeMap::new(),
            records: BTreeMap::new(),
            last_applied: None,
            delivered: Vec::new(),
            updated_at: Utc::now(),
            stored_ids: BTreeMap::new(),
        }
    }
}

/// Entity state and cross-references.
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn load(&self, key: &EntityKey) -> Result<Option<EntityState>, StoreError>;
    /// Saves `state` only if the stored version is `state.version - 1` (or absent when
    /// `state.version == 1`); otherwise [`StoreError::Conflict`]. The step's audit entry
    /// goes with it, in the same write: a step's effect and its record land together or
    /// not at all ([`AuditLog::trail`] returns it with the subject's other entries). Also
    /// records a cross-reference for each of [`EntityState::new_references`] (new CRM ids),
    /// with the state or just before it (a cross-reference only ever points at the entity's
    /// own key, so one left by a save that then lost is harmless; the next save writes it
    /// again).
    async fn save(&self, state: &EntityState, entry: &AuditEntry) -> Result<(), StoreError>;
    /// The entity a CRM record id belongs to (ERP ids are not cross-referenced).
    async fn resolve(&self, source: &SourceRef) -> Result<Option<EntityKey>, StoreError>;
}

// ---------------------------------------------------------------- parking

/// An event waiting for a dependency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedEvent {
    pub id: String,
    pub dependency: String,
    pub event: ChangeEvent,
    pub parked_at: DateTime<Utc>,
}

/// Events parked until what they depend on has been synced.
#[async_trait]
pub trait ParkingStore: Send + Sync {
    /// Parks an event under a dependency key; parking the same event twice keeps one.
    async fn park(&self, parked: &ParkedEvent) -> Result<(), StoreError>;
    /// The events waiting on a dependency, oldest first.
    async fn waiting(&self, dependency: &str) -> Result<Vec<ParkedEvent>, StoreError>;
    /// Removes one parked event (after it has been re-queued).
    async fn unpark(&self, dependency: &str, id: &str) -> Result<(), StoreError>;
    /// Every parked event (for tooling).
    async fn all_parked(&self) -> Result<Vec<ParkedEvent>, StoreError>;
}

// ---------------------------------------------------------------- audit

/// One step in an entity's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// Entity key, or the source record (`system/type/id`) while the key is unknown.
    pub subject: String,
    pub step: String,
    pub outcome: String,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_version: Option<String>,
}

/// Append-only audit trail.
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// The trail of a subject, oldest first.
    async fn trail(&self, subject: &str) -> Result<Vec<AuditEntry>, StoreError>;
}

// ---------------------------------------------------------------- credit and rebate figures

/// Running rebate figures of one customer in one period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RebateFigures {
    /// Net invoiced volume in the period before the current invoice.
    pub volume: Decimal,
    /// Accrued rebate so far.
    pub accrued: Decimal,
    /// Rebate already paid out by credit notes.
    #[serde(default)]
    pub credited: Decimal,
    /// Highest tier reached (name), if any.
    pub tier: Option<String>,
    /// The rule's output per invoice already counted: a replayed invoice reuses it, so it
    /// is never counted twice and produces the same commands.
    #[serde(default)]
    pub results: BTreeMap<String, Value>,
}

/// Figures kept for the credit and rebate rules.
#[async_trait]
pub trait FiguresStore: Send + Sync {
    /// Records (or replaces) an order's open amount for its customer.
    async fn set_open_order(
        &self,
        account: &str,
        order: &str,
        amount: Decimal,
    ) -> Result<(), StoreError>;
    async fn clear_open_order(&self, account: &str, order: &str) -> Result<(), StoreError>;
    /// Sum of the customer's open orders other than `except`.
    async fn open_orders(&self, account: &str, except: &str) -> Result<Decimal, StoreError>;
    async fn rebate(&self, account: &str, period: &str) -> Result<RebateFigures, StoreError>;
    async fn save_rebate(
        &self,
        account: &str,
        period: &str,
        figures: &RebateFigures,
    ) -> Result<(), StoreError>;
}

// ---------------------------------------------------------------- queues

/// The pipeline's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueName {
    Inbound,
    ToErp,
    ToCrm,
}

impl QueueName {
    pub const ALL: [QueueName; 3] = [QueueName::Inbound, QueueName::ToErp, QueueName::ToCrm];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Inbound => "inbound",
            QueueName::ToErp => "to-erp",
            QueueName::ToCrm => "to-crm",
        }
    }

    /// The queue a command for `system` goes to.
    pub fn for_target(system: System) -> QueueName {
        match system.side() {
            crate::domain::Side::Erp => QueueName::ToErp,
            crate::domain::Side::Crm => QueueName::ToCrm,
        }
    }
}

impl std::fmt::Display for QueueName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for QueueName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueName::ALL
            .into_iter()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| format!("unknown queue `{s}`"))
    }
}

/// What a message's body holds, as the sender had it. The embedded queue keeps it beside
/// the body, so a consumer in the same process takes it instead of parsing what was just
/// serialized; it is never sent or stored (after a restart, or on SQS, the body is parsed).
#[derive(Debug, Clone)]
pub enum Typed {
    Event(std::sync::Arc<crate::domain::ChangeEvent>),
    Command(std::sync::Arc<crate::command::Command>),
}

/// A message to send.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutMessage {
    /// FIFO group: messages of one group are delivered in order, one batch at a time.
    pub group: String,
    /// Deduplication id: a second send with the same id inside the window is dropped.
    pub dedup_id: String,
    pub body: String,
    /// The body's value, for a consumer in this process (see [`Typed`]).
    #[serde(skip)]
    pub typed: Option<Typed>,
}

impl PartialEq for OutMessage {
    /// Messages are equal by what is sent: group, deduplication id and body.
    fn eq(&self, other: &Self) -> bool {
        (&self.group, &self.dedup_id, &self.body) == (&other.group, &other.dedup_id, &other.body)
    }
}

/// A received message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub message_id: String,
    pub receipt: String,
    pub group: String,
    pub dedup_id: String,
    pub body: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    /// The body's value, when the sender was in this process (see [`Typed`]), for the
    /// consumer to take.
    #[serde(skip)]
    pub typed: TypedSlot,
}

/// A delivery's typed value, taken by the one consumer that handles it: the value moves
/// to the consumer instead of being copied.
#[derive(Debug, Default)]
pub struct TypedSlot(std::sync::Mutex<Option<Typed>>);

impl TypedSlot {
    pub fn new(typed: Option<Typed>) -> Self {
        TypedSlot(std::sync::Mutex::new(typed))
    }

    /// The value, if it is there and not taken yet.
    pub fn take(&self) -> Option<Typed> {
        self.0.lock().map(|mut t| t.take()).unwrap_or(None)
    }
}

impl Clone for TypedSlot {
    fn clone(&self) -> Self {
        TypedSlot::new(self.0.lock().map(|t| t.clone()).unwrap_or(None))
    }
}

impl PartialEq for Delivery {
    /// Deliveries are equal by what was received (the typed value is the body's).
    fn eq(&self, other: &Self) -> bool {
        (
            &self.message_id,
            &self.receipt,
            &self.group,
            &self.dedup_id,
            &self.body,
            self.receive_count,
        ) == (
            &other.message_id,
            &other.receipt,
            &other.group,
            &other.dedup_id,
            &other.body,
            other.receive_count,
        )
    }
}

/// A dead-lettered message and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub message_id: String,
    pub queue: QueueName,
    pub group: String,
    pub dedup_id: String,
    pub body: String,
    pub code: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Sends to a queue.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Sends messages (the adapter batches 10 per request); all or an error.
    async fn send(&self, queue: QueueName, messages: &[OutMessage]) -> Result<(), QueueError>;

    /// [`Publisher::send`] with the messages moved in: a publisher that keeps them (the
    /// embedded queue, a batch's deferred sends) takes them without copying their bodies.
    async fn send_owned(
        &self,
        queue: QueueName,
        messages: Vec<OutMessage>,
    ) -> Result<(), QueueError> {
        self.send(queue, &messages).await
    }
}

/// Receives from a queue.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// Up to `max` visible messages; a group with a message in flight yields nothing more.
    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;
    /// Deletes a processed message.
    async fn ack(&self, queue: QueueName, receipt: &str) -> Result<(), QueueError>;
    /// Deletes processed messages, batched as the backend allows (`DeleteMessageBatch`).
    async fn ack_all(&self, queue: QueueName, receipts: &[&str]) -> Result<(), QueueError> {
        for r in receipts {
            self.ack(queue, r).await?;
        }
        Ok(())
    }
    /// Returns a message for redelivery after `delay`; past the receive limit it moves
    /// to the queue's dead-letter queue with `reason` (code `max_receives_exceeded`).
    async fn retry(
        &self,
        queue: QueueName,
        message: &Delivery,
        delay: Duration,
        reason: &str,
    ) -> Result<(), QueueError>;
    /// Messages on the queue, visible or not (in flight, or delayed for a retry).
    async fn depth(&self, queue: QueueName) -> Result<usize, QueueError>;
    /// Moves a received message to the dead-letter queue at once (a permanent failure),
    /// with the error code and reason `p2c dlq list` shows.
    async fn dead_letter(
        &self,
        queue: QueueName,
        message: &Delivery,
        code: &str,
        reason: &str,
    ) -> Result<(), QueueError>;
}

/// Puts a message that arrived outside the queue port (a Lambda SQS event) on the
/// dead-letter queue, with its reason. Idempotent per message id.
#[async_trait]
pub trait DeadLetterSink: Send + Sync {
    async fn bury(
        &self,
        queue: QueueName,
        message: &Delivery,
        code: &str,
        reason: &str,
    ) -> Result<(), QueueError>;
    /// How many receives the queue allows before it moves a message to its dead-letter
    /// queue (the redrive policy's `maxReceiveCount`). A consumer that fails a message on
    /// its last receive buries it itself, so the reason is not lost.
    fn max_receives(&self) -> u32;
}

/// The dead-letter queues.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    async fn list(&self, queue: QueueName) -> Result<Vec<DeadLetter>, QueueError>;
    /// Moves the chosen dead letters back onto their queue; returns how many.
    async fn replay(&self, queue: QueueName, ids: &[String]) -> Result<usize, QueueError>;
}

// ---------------------------------------------------------------- target systems

/// What a target system did with a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The record's id in the target (GUID / SystemId).
    pub target_id: String,
    /// A number the target assigned (e.g. the ERP order number), if any.
    #[serde(default)]
    pub assigned_number: Option<String>,
    /// Fingerprint of the fields written, as they will come back in an echo.
    pub fingerprint: String,
    pub created: bool,
}

/// Writes commands into one target system.
#[async_trait]
pub trait Connector: Send + Sync {
    fn system(&self) -> System;
    /// Applies a command, upserting by natural key so a repeat has no further effect.
    async fn apply(&self, command: &Command) -> Result<Outcome, DeliveryError>;
}

/// Reads records from a source system when a notification carried no data.
#[async_trait]
pub trait SourceReader: Send + Sync {
    fn system(&self) -> System;
    /// Reads what `event` refers to. A collection notification yields several events.
    async fn read(&self, event: &ChangeEvent) -> Result<Vec<ChangeEvent>, DeliveryError>;
}

// ---------------------------------------------------------------- published rule sets

/// One activation of a rule set: a publish or a rollback. The newest is the active one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// 1, 2, 3, … in the order activations happened.
    pub seq: u64,
    /// The rule set's content version (`r-…`).
    pub version: String,
    pub at: DateTime<Utc>,
    /// Who did it (the operating-system user running the command).
    pub by: String,
    /// `publish` or `rollback`.
    pub action: String,
}

/// Published rule sets and which one is active, so running functions can pick up a new
/// version without a deploy.
#[async_trait]
pub trait RuleStore: Send + Sync {
    /// Stores a version's files (path under `rules/` → content). The version is their
    /// content hash, so storing it again changes nothing.
    async fn put_rules(
        &self,
        version: &str,
        files: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), StoreError>;
    async fn get_rules(
        &self,
        version: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, StoreError>;
    /// Records `activation` if its `seq` is the next one (the active one is still what the
    /// caller saw); `false` when another activation came first.
    async fn activate(&self, activation: &Activation) -> Result<bool, StoreError>;
    /// Activations, newest first, at most `limit`.
    async fn activations(&self, limit: usize) -> Result<Vec<Activation>, StoreError>;
}

// ---------------------------------------------------------------- decision log

/// One decision a rule made on a live event (credit and rebate), with its input, so a
/// candidate rule set can be evaluated against real history (`p2c rules diff`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Deterministic (rule, subject and input): a redelivered event records it once.
    pub id: String,
    pub at: DateTime<Utc>,
    /// The script (`credit_limit.rhai`).
    pub rule: String,
    /// What it decided about (`order:ORD-1`, `invoice:PSI-1001`).
    pub subject: String,
    pub input: serde_json::Value,
    pub output: serde_json::Value,
    pub rules_version: String,
}

/// The decisions rules made, kept for a while (see each store) for `p2c rules diff`.
#[async_trait]
pub trait DecisionLog: Send + Sync {
    async fn record(&self, decision: &Decision) -> Result<(), StoreError>;
    /// Decisions made at or after `since`, oldest first.
    async fn decisions(&self, since: DateTime<Utc>) -> Result<Vec<Decision>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Action, Command};
    use crate::domain::{EntityType, EventId};

    fn command(cause: &str, entity: &EntityKey) -> Command {
        Command::new(
            cause,
            &EventId("dataverse:e1:Update".into()),
            System::Dataverse,
            entity.clone(),
            Action::SetOrderErpNumber {
                order_number: "SO-1".into(),
                erp_number: "101".into(),
            },
            "r-1",
        )
    }

    fn applied(state: &mut EntityState, commands: Vec<Command>) {
        state.last_applied = Some(Applied {
            idempotency_key: "sync#e1#abc".into(),
            commands,
        });
    }

    #[test]
    fn an_outbox_is_settled_only_when_all_of_it_was_delivered_here() {
        let key = EntityKey::new(EntityType::Order, "SO-1").expect("key");
        let other = EntityKey::new(EntityType::Invoice, "CN-1").expect("key");
        let (a, b) = (command("a", &key), command("b", &key));

        // Half delivered: both kept, so a crash-redelivered event re-sends them.
        let mut s = EntityState::new(key.clone());
        applied(&mut s, vec![a.clone(), b.clone()]);
        s.mark_delivered(&a.id.0);
        s.settle_outbox();
        assert_eq!(s.last_applied.as_ref().map(|ap| ap.commands.len()), Some(2));
        assert!(!s.outbox_delivered());

        // All delivered: dropped, and the event still counts as done.
        s.mark_delivered(&b.id.0);
        s.settle_outbox();
        let ap = s.last_applied.as_ref().expect("applied");
        assert!(ap.commands.is_empty());
        assert_eq!(ap.idempotency_key, "sync#e1#abc");
        assert!(s.outbox_delivered());

        // A command for another entity (a rebate's credit note) is never dropped here.
        let mut s = EntityState::new(key.clone());
        let cn = command("c", &other);
        applied(&mut s, vec![a.clone(), cn]);
        s.mark_delivered(&a.id.0);
        s.settle_outbox();
        assert_eq!(s.last_applied.as_ref().map(|ap| ap.commands.len()), Some(2));
        assert!(
            !s.outbox_delivered(),
            "whether the credit note went out is not known here"
        );
    }
}
