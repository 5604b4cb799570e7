//! Every store port on one DynamoDB table: partition key `pk`, sort key `sk` (strings),
//! TTL attribute `ttl` (epoch seconds, housekeeping only: expiry is checked on read).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | idempotency record | `idem#<key>` | `idem` |
//! | entity state, one item per version, with the audit entry of the step that wrote it (deflated JSON in `z`) | `entity#<type:key>` | `v#<version, 12 digits>` |
//! | cross-reference (CRM ids) | `xref#<system/type/id>` | `xref` |
//! | parked event | `parked#<dependency>` | `<event id>` |
//! | audit entry | `audit#<subject>` | `<ms, 13 digits>#<counter, 12 digits>#<token>` |
//! | open order | `open#<account>` | `<order number>` |
//! | rebate figures | `rebate#<account>` | `<period>` |
//!
//! Money is stored as decimal strings, never as DynamoDB numbers.

use super::{describe, Counters};
use crate::domain::{EntityKey, SourceRef};
use crate::error::StoreError;
use crate::ports::{
    Activation, AuditEntry, AuditLog, Claim, Decision, DecisionLog, EntityState, FiguresStore,
    IdemRecord, IdemStatus, IdempotencyStore, ParkedEvent, ParkingStore, RebateFigures, RuleStore,
    StateStore,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

/// How long audit entries are kept (the TTL set on them).
const AUDIT_KEEP: Duration = Duration::from_secs(400 * 24 * 3600);

/// The DynamoDB store. Cheap to clone; clones share the client and the counters.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    counters: Arc<Counters>,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms_to_time(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    }
}

fn backend<E: std::error::Error>(op: &str, e: &E) -> StoreError {
    StoreError::Backend {
        message: format!("DynamoDB {op}: {}", describe(e)),
        source: None,
    }
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// Bytes of one item: attribute names and values.
fn size(item: &Item) -> u64 {
    let bytes: usize = item
        .iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    AttributeValue::S(x) | AttributeValue::N(x) => x.len(),
                    AttributeValue::B(b) => b.as_ref().len(),
                    _ => 8,
                }
        })
        .sum();
    bytes as u64
}

/// Write units of one item: 1 per started KB.
fn units(item: &Item) -> u64 {
    size(item).div_ceil(1024).max(1)
}

/// The kind of an item: its partition key's prefix (`idem`, `entity`, `audit`, …).
fn kind_of(item: &Item) -> &str {
    get_s(item, "pk")
        .and_then(|pk| pk.split('#').next())
        .unwrap_or("?")
}

/// Read units of a strongly consistent read: 1 per started 4 KB.
fn read_units(bytes: u64) -> u64 {
    bytes.div_ceil(4096).max(1)
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            counters: Arc::new(Counters::default()),
        }
    }

    /// The requests and write units this store has made.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table with its key schema and TTL, as `template.yaml` declares it (for
    /// tests and the demo against moto; in AWS the stack creates it).
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| backend("CreateTable", &e))
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| backend("CreateTable", &e))
        };
        self.client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| backend("CreateTable", &e))?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("ttl")
                    .enabled(true)
                    .build()
                    .map_err(|e| backend("UpdateTimeToLive", &e))?,
            )
            .send()
            .await
            .map_err(|e| backend("UpdateTimeToLive", &e))?;
        Ok(())
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        self.counters.request("GetItem");
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend("GetItem", &e))?;
        self.counters
            .read_units(read_units(out.item.as_ref().map(size).unwrap_or(0)));
        Ok(out.item)
    }

    async fn put(&self, item: Item) -> Result<(), StoreError> {
        self.counters.request("PutItem");
        self.counters.write_units(units(&item), kind_of(&item));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| backend("PutItem", &e))?;
        Ok(())
    }

    /// A put only if `condition` holds: `Ok(false)` when it did not (nothing written).
    async fn put_if(
        &self,
        item: Item,
        condition: &str,
        values: Option<HashMap<String, AttributeValue>>,
    ) -> Result<bool, StoreError> {
        self.counters.request("PutItem");
        self.counters.write_units(units(&item), kind_of(&item));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = e.into_service_error();
                if e.is_conditional_check_failed_exception() {
                    Ok(false)
                } else {
                    Err(backend("PutItem", &e))
                }
            }
        }
    }

    async fn delete(&self, pk: String, sk: &str) -> Result<(), StoreError> {
        self.counters.request("DeleteItem");
        let k = key(pk, sk);
        self.counters.write_units(1, kind_of(&k));
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(k))
            .send()
            .await
            .map_err(|e| backend("DeleteItem", &e))?;
        Ok(())
    }

    /// Every item of a partition, in sort-key order (all pages).
    async fn query(&self, pk: String) -> Result<Vec<Item>, StoreError> {
        self.query_with(pk, false, None).await
    }

    /// The items of a partition in sort-key order (`newest_first`: descending), at most
    /// `limit` of them, over as many pages as it takes.
    async fn query_with(
        &self,
        pk: String,
        newest_first: bool,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            self.counters.request("Query");
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk.clone()))
                .scan_index_forward(!newest_first)
                .set_limit(limit.map(|l| i32::try_from(l - out.len()).unwrap_or(i32::MAX)))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend("Query", &e))?;
            let items = page.items.unwrap_or_default();
            self.counters
                .read_units(read_units(items.iter().map(size).sum()));
            out.extend(items);
            if limit.is_some_and(|l| out.len() >= l) {
                return Ok(out);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}

fn idem_record(key: &str, item: &Item) -> Result<Option<IdemRecord>, StoreError> {
    let status = match get_s(item, "status") {
        Some("completed") => IdemStatus::Completed,
        Some("in_progress") => IdemStatus::InProgress,
        other => return Err(corrupt(key, format!("unknown status {other:?}"))),
    };
    let outcome = serde_json::from_str(get_s(item, "outcome").unwrap_or("null"))
        .map_err(|e| corrupt(key, e))?;
    Ok(Some(IdemRecord {
        key: key.to_string(),
        status,
        locked_until: ms_to_time(get_n(item, "locked_until").unwrap_or(0)),
        expires_at: ms_to_time(get_n(item, "expires_at").unwrap_or(0)),
        outcome,
    }))
}

#[async_trait]
impl IdempotencyStore for DynamoStore {
    async fn claim(
        &self,
        key: &str,
        lock_for: Duration,
        keep_for: Duration,
    ) -> Result<Claim, StoreError> {
        let now = now_ms();
        let expires = now + dur_ms(keep_for);
        let item = HashMap::from([
            ("pk".to_string(), s(format!("idem#{key}"))),
            ("sk".to_string(), s("idem")),
            ("status".to_string(), s("in_progress")),
            ("locked_until".to_string(), n(now + dur_ms(lock_for))),
            ("expires_at".to_string(), n(expires)),
            ("outcome".to_string(), s("null")),
            ("ttl".to_string(), n(expires / 1000 + 1)),
        ]);
        self.counters.request("PutItem");
        self.counters.write_units(units(&item), kind_of(&item));
        // One conditional put: insert, or take over an expired record or a lapsed lock.
        // On failure DynamoDB returns the record that won, so no second read is needed.
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(pk) OR expires_at <= :now \
                 OR (#status = :in_progress AND locked_until <= :now)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":in_progress", s("in_progress"))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(Claim::Fresh),
            Err(e) => e.into_service_error(),
        };
        if !err.is_conditional_check_failed_exception() {
            return Err(backend("PutItem", &err));
        }
        let old = match &err {
            aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(
                c,
            ) => c.item().cloned(),
            _ => None,
        };
        let old = match old {
            Some(item) => item,
            // Older emulators do not return the item: read it.
            None => match self.get(format!("idem#{key}"), "idem").await? {
                Some(item) => item,
                None => {
                    return Err(StoreError::Conflict {
                        key: key.to_string(),
                    })
                }
            },
        };
        match idem_record(key, &old)? {
            Some(rec) if rec.status == IdemStatus::Completed => Ok(Claim::Duplicate(rec)),
            Some(rec) => Ok(Claim::InProgress {
                until: rec.locked_until,
            }),
            None => Err(StoreError::Conflict {
                key: key.to_string(),
            }),
        }
    }

    async fn complete(
        &self,
        key: &str,
        outcome: &serde_json::Value,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let expires = now + dur_ms(keep_for);
        self.put(HashMap::from([
            ("pk".to_string(), s(format!("idem#{key}"))),
            ("sk".to_string(), s("idem")),
            ("status".to_string(), s("completed")),
            ("locked_until".to_string(), n(now)),
            ("expires_at".to_string(), n(expires)),
            ("outcome".to_string(), s(outcome.to_string())),
            ("ttl".to_string(), n(expires / 1000 + 1)),
        ]))
        .await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.counters.request("DeleteItem");
        self.counters.write_units(1, "idem");
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self::key(format!("idem#{key}"), "idem")))
            .condition_expression("#status = :in_progress")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":in_progress", s("in_progress"))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = e.into_service_error();
                if e.is_conditional_check_failed_exception() {
                    Ok(()) // completed meanwhile, or already gone: nothing to release
                } else {
                    Err(backend("DeleteItem", &e))
                }
            }
        }
    }

    async fn peek(&self, key: &str) -> Result<Option<IdemRecord>, StoreError> {
        let Some(item) = self.get(format!("idem#{key}"), "idem").await? else {
            return Ok(None);
        };
        Ok(idem_record(key, &item)?
            .filter(|r| r.status == IdemStatus::Completed && r.expires_at > chrono::Utc::now()))
    }
}

/// The largest state document a version item may inflate to (a guard against a corrupt or
/// hostile blob; real states are a few KB).
const MAX_STATE_BYTES: usize = 4 << 20;

/// Compresses a version's document (raw deflate): JSON of this shape shrinks to a half
/// or a third, which keeps most items inside one 1 KB write unit.
fn pack(json: &str) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(json.as_bytes(), 6)
}

fn unpack(key: &str, blob: &[u8]) -> Result<String, StoreError> {
    let bytes = miniz_oxide::inflate::decompress_to_vec_with_limit(blob, MAX_STATE_BYTES)
        .map_err(|e| corrupt(key, format!("state does not inflate: {e:?}")))?;
    String::from_utf8(bytes).map_err(|e| corrupt(key, e))
}

/// One version of an entity: its state and the audit entry of the step that wrote it.
#[derive(serde::Serialize, serde::Deserialize)]
struct VersionDoc<S, E> {
    state: S,
    entry: E,
}

fn version_sk(version: u64) -> String {
    format!("v#{version:012}")
}

impl DynamoStore {
    /// The newest version item of an entity (one strongly consistent query, newest first).
    async fn latest_version(&self, k: &str) -> Result<Option<Item>, StoreError> {
        self.counters.request("Query");
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :v)")
            .expression_attribute_values(":pk", s(format!("entity#{k}")))
            .expression_attribute_values(":v", s("v#"))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend("Query", &e))?;
        let item = out.items.unwrap_or_default().into_iter().next();
        self.counters
            .read_units(read_units(item.as_ref().map(size).unwrap_or(0)));
        Ok(item)
    }

    /// A version item's document: the state and the entry, or just the part asked for.
    fn version_doc<S: serde::de::DeserializeOwned>(
        k: &str,
        item: &Item,
    ) -> Result<VersionDoc<S, AuditEntry>, StoreError> {
        let blob = match item.get("z") {
            Some(AttributeValue::B(b)) => b.as_ref(),
            _ => return Err(corrupt(k, "version item without its document")),
        };
        serde_json::from_str(&unpack(k, blob)?).map_err(|e| corrupt(k, e))
    }
}

#[async_trait]
impl StateStore for DynamoStore {
    async fn load(&self, key: &EntityKey) -> Result<Option<EntityState>, StoreError> {
        let k = key.to_string();
        let Some(item) = self.latest_version(&k).await? else {
            return Ok(None);
        };
        let mut state: EntityState = Self::version_doc(&k, &item)?.state;
        state.stored_ids = state.ids.clone();
        Ok(Some(state))
    }

    /// Each version is its own item (`entity#<key>` / `v#<version>`), written once with
    /// `attribute_not_exists`: two workers that read the same version race for the same
    /// item and only one wins. The item carries the step's audit entry, so the state, the
    /// record of the step and (through `last_applied`) its outbox are one write unit.
    async fn save(&self, state: &EntityState, entry: &AuditEntry) -> Result<(), StoreError> {
        let k = state.key.to_string();
        let doc =
            serde_json::to_string(&VersionDoc { state, entry }).map_err(|e| corrupt(&k, e))?;
        let version = i64::try_from(state.version).map_err(|e| corrupt(&k, e))?;
        let expires = (now_ms() + dur_ms(AUDIT_KEEP)) / 1000;
        let item = HashMap::from([
            ("pk".to_string(), s(format!("entity#{k}"))),
            ("sk".to_string(), s(version_sk(state.version))),
            ("version".to_string(), n(version)),
            ("z".to_string(), AttributeValue::B(pack(&doc).into())),
            ("ttl".to_string(), n(expires)),
        ]);
        // New cross-references first, as plain puts: each is idempotent, and one written
        // before a state write that then loses (or never happens) points at the entity's
        // own deterministic key, which resolves to nothing newer than the store holds.
        // A transaction would double the write units of both items.
        for (system, id) in state.new_references() {
            let source = SourceRef::new(system, state.key.entity_type, id.clone());
            self.put(HashMap::from([
                ("pk".to_string(), s(format!("xref#{}", source.group()))),
                ("sk".to_string(), s("xref")),
                ("entity_key".to_string(), s(k.clone())),
            ]))
            .await?;
        }
        if self.put_if(item, "attribute_not_exists(pk)", None).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict { key: k })
        }
    }

    async fn resolve(&self, source: &SourceRef) -> Result<Option<EntityKey>, StoreError> {
        let group = source.group();
        let Some(item) = self.get(format!("xref#{group}"), "xref").await? else {
            return Ok(None);
        };
        let k = get_s(&item, "entity_key").ok_or_else(|| corrupt(&group, "no entity key"))?;
        EntityKey::from_str(k)
            .map(Some)
            .map_err(|e| corrupt(&group, e))
    }
}

/// A sort-key suffix: ordered within this process (a counter), unique across concurrent
/// function instances (a hash of the entry, the clock and the process).
fn unique_suffix(seed: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = chrono::Utc::now()
        .timestamp_nanos_opt()
        .unwrap_or_default()
        .to_string();
    let token = crate::json::hash_parts(&[
        seed,
        &c.to_string(),
        &nanos,
        &std::process::id().to_string(),
    ]);
    format!("{c:012}#{}", &token[..8])
}

#[async_trait]
impl ParkingStore for DynamoStore {
    async fn park(&self, parked: &ParkedEvent) -> Result<(), StoreError> {
        let body = serde_json::to_string(parked).map_err(|e| corrupt(&parked.id, e))?;
        let item = HashMap::from([
            ("pk".to_string(), s(format!("parked#{}", parked.dependency))),
            ("sk".to_string(), s(parked.id.clone())),
            ("seq".to_string(), n(now_ms())),
            ("body".to_string(), s(body)),
        ]);
        // Parking the same event twice keeps the first (and its place in the line).
        self.put_if(item, "attribute_not_exists(pk)", None).await?;
        Ok(())
    }

    async fn waiting(&self, dependency: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        let mut items = self.query(format!("parked#{dependency}")).await?;
        items.sort_by_key(|i| get_n(i, "seq").unwrap_or(0));
        items
            .iter()
            .map(|i| {
                serde_json::from_str(get_s(i, "body").unwrap_or(""))
                    .map_err(|e| corrupt(dependency, e))
            })
            .collect()
    }

    async fn unpark(&self, dependency: &str, id: &str) -> Result<(), StoreError> {
        self.delete(format!("parked#{dependency}"), id).await
    }

    async fn all_parked(&self) -> Result<Vec<ParkedEvent>, StoreError> {
        // Tooling only: a filtered scan of the table.
        let mut out: Vec<(i64, ParkedEvent)> = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            self.counters.request("Scan");
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :prefix)")
                .expression_attribute_values(":prefix", s("parked#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend("Scan", &e))?;
            for i in page.items.unwrap_or_default() {
                let ev = serde_json::from_str(get_s(&i, "body").unwrap_or(""))
                    .map_err(|e| corrupt("parked", e))?;
                out.push((get_n(&i, "seq").unwrap_or(0), ev));
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let body = serde_json::to_string(entry).map_err(|e| corrupt(&entry.subject, e))?;
        let ms = entry.at.timestamp_millis();
        let sk = format!("{ms:013}#{}", unique_suffix(&body));
        let expires = (now_ms() + dur_ms(AUDIT_KEEP)) / 1000;
        self.put(HashMap::from([
            ("pk".to_string(), s(format!("audit#{}", entry.subject))),
            ("sk".to_string(), s(sk)),
            ("body".to_string(), s(body)),
            ("ttl".to_string(), n(expires)),
        ]))
        .await
    }

    /// The subject's own entries and, when the subject is an entity, the entries its
    /// state versions carry, merged in time order.
    async fn trail(&self, subject: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out: Vec<AuditEntry> = self
            .query(format!("audit#{subject}"))
            .await?
            .iter()
            .map(|i| {
                serde_json::from_str(get_s(i, "body").unwrap_or(""))
                    .map_err(|e| corrupt(subject, e))
            })
            .collect::<Result<_, _>>()?;
        if EntityKey::from_str(subject).is_ok() {
            for item in self.query(format!("entity#{subject}")).await? {
                if get_s(&item, "sk").is_some_and(|sk| sk.starts_with("v#")) {
                    let doc = Self::version_doc::<serde::de::IgnoredAny>(subject, &item)?;
                    out.push(doc.entry);
                }
            }
            // Stable: entries written in the same millisecond keep their stored order.
            out.sort_by_key(|e| e.at);
        }
        Ok(out)
    }
}

#[async_trait]
impl FiguresStore for DynamoStore {
    async fn set_open_order(
        &self,
        account: &str,
        order: &str,
        amount: Decimal,
    ) -> Result<(), StoreError> {
        self.put(HashMap::from([
            ("pk".to_string(), s(format!("open#{account}"))),
            ("sk".to_string(), s(order)),
            ("amount".to_string(), s(amount.to_string())),
        ]))
        .await
    }

    async fn clear_open_order(&self, account: &str, order: &str) -> Result<(), StoreError> {
        self.delete(format!("open#{account}"), order).await
    }

    async fn open_orders(&self, account: &str, except: &str) -> Result<Decimal, StoreError> {
        let mut sum = Decimal::ZERO;
        for i in self.query(format!("open#{account}")).await? {
            if get_s(&i, "sk") == Some(except) {
                continue;
            }
            let a = get_s(&i, "amount").unwrap_or("");
            sum += Decimal::from_str(a).map_err(|e| corrupt(account, e))?;
        }
        Ok(sum)
    }

    async fn rebate(&self, account: &str, period: &str) -> Result<RebateFigures, StoreError> {
        match self.get(format!("rebate#{account}"), period).await? {
            Some(i) => serde_json::from_str(get_s(&i, "body").unwrap_or(""))
                .map_err(|e| corrupt(account, e)),
            None => Ok(RebateFigures::default()),
        }
    }

    async fn save_rebate(
        &self,
        account: &str,
        period: &str,
        figures: &RebateFigures,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(figures).map_err(|e| corrupt(account, e))?;
        self.put(HashMap::from([
            ("pk".to_string(), s(format!("rebate#{account}"))),
            ("sk".to_string(), s(period)),
            ("body".to_string(), s(body)),
        ]))
        .await
    }
}

/// Published rule sets: `rules#<version>` / `files` holds a version's files (deflated
/// JSON), `rules#active` / `<seq>` one item per activation; the highest seq is active.
const RULES_ACTIVE: &str = "rules#active";

#[async_trait]
impl RuleStore for DynamoStore {
    async fn put_rules(
        &self,
        version: &str,
        files: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(files).map_err(|e| corrupt(version, e))?;
        // The version is the content's hash: an existing item is the same rule set.
        self.put_if(
            HashMap::from([
                ("pk".to_string(), s(format!("rules#{version}"))),
                ("sk".to_string(), s("files")),
                ("z".to_string(), AttributeValue::B(pack(&json).into())),
            ]),
            "attribute_not_exists(pk)",
            None,
        )
        .await
        .map(|_| ())
    }

    async fn get_rules(
        &self,
        version: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, StoreError> {
        let Some(item) = self.get(format!("rules#{version}"), "files").await? else {
            return Ok(None);
        };
        let Some(AttributeValue::B(blob)) = item.get("z") else {
            return Err(corrupt(version, "no rule files in the item"));
        };
        let json = unpack(version, blob.as_ref())?;
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| corrupt(version, e))
    }

    async fn activate(&self, activation: &Activation) -> Result<bool, StoreError> {
        let body =
            serde_json::to_string(activation).map_err(|e| corrupt(&activation.version, e))?;
        // The next seq only: the one before it must exist (or this is the first), and
        // this one must not. Two activations racing for a seq: one wins.
        if activation.seq > 1
            && self
                .get(RULES_ACTIVE.into(), &format!("{:010}", activation.seq - 1))
                .await?
                .is_none()
        {
            return Ok(false);
        }
        self.put_if(
            HashMap::from([
                ("pk".to_string(), s(RULES_ACTIVE)),
                ("sk".to_string(), s(format!("{:010}", activation.seq))),
                ("body".to_string(), s(body)),
            ]),
            "attribute_not_exists(pk)",
            None,
        )
        .await
    }

    async fn activations(&self, limit: usize) -> Result<Vec<Activation>, StoreError> {
        let items = self
            .query_with(RULES_ACTIVE.into(), true, Some(limit.clamp(1, 1000)))
            .await?;
        items
            .iter()
            .map(|i| {
                serde_json::from_str(get_s(i, "body").unwrap_or(""))
                    .map_err(|e| corrupt(RULES_ACTIVE, e))
            })
            .collect()
    }
}

/// How long decisions are kept for `p2c rules diff`.
const DECISIONS_KEEP: Duration = Duration::from_secs(90 * 24 * 3600);

/// Decisions are kept a partition per day (`decision#2026-11-23`), so the last N days are
/// N queries.
#[async_trait]
impl DecisionLog for DynamoStore {
    async fn record(&self, decision: &Decision) -> Result<(), StoreError> {
        let body = serde_json::to_string(decision).map_err(|e| corrupt(&decision.id, e))?;
        let ms = decision.at.timestamp_millis();
        self.put(HashMap::from([
            (
                "pk".to_string(),
                s(format!("decision#{}", decision.at.format("%Y-%m-%d"))),
            ),
            ("sk".to_string(), s(format!("{ms:013}#{}", decision.id))),
            ("body".to_string(), s(body)),
            ("ttl".to_string(), n((ms + dur_ms(DECISIONS_KEEP)) / 1000)),
        ]))
        .await
    }

    async fn decisions(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Decision>, StoreError> {
        let mut out: Vec<Decision> = Vec::new();
        let mut day = since.date_naive();
        let today = chrono::Utc::now().date_naive();
        while day <= today {
            for item in self
                .query(format!("decision#{}", day.format("%Y-%m-%d")))
                .await?
            {
                let d: Decision = serde_json::from_str(get_s(&item, "body").unwrap_or(""))
                    .map_err(|e| corrupt("decision", e))?;
                if d.at >= since && !out.iter().any(|o| o.id == d.id) {
                    out.push(d);
                }
            }
            day = day.succ_opt().unwrap_or(today + chrono::Duration::days(1));
        }
        Ok(out)
    }
}
