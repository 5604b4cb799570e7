//! An in-process target: keeps what it is told to write, by natural key. For dry runs
//! (what would p2c write?) and for measuring p2c's own per-event cost without a network.

use crate::command::{Action, Command};
use crate::domain::System;
use crate::error::DeliveryError;
use crate::json::fingerprint;
use crate::ports::{Connector, Outcome};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Records written, by `(action, natural key)`.
pub struct MemoryConnector {
    system: System,
    records: Mutex<BTreeMap<(String, String), Value>>,
    /// Writes applied (every call that succeeded).
    applied: std::sync::atomic::AtomicU64,
}

impl MemoryConnector {
    pub fn new(system: System) -> Self {
        Self {
            system,
            records: Mutex::new(BTreeMap::new()),
            applied: Default::default(),
        }
    }

    /// How many writes were applied (a repeated write counts again: the effect count).
    pub fn applied(&self) -> u64 {
        self.applied.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many distinct records were written.
    pub fn len(&self) -> usize {
        self.records.lock().map(|r| r.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What was last written by `action` (`upsert_customer`, …) for the entity `key`.
    pub fn record(&self, action: &str, key: &str) -> Option<Value> {
        self.records
            .lock()
            .ok()?
            .get(&(action.to_string(), key.to_string()))
            .cloned()
    }
}

#[async_trait]
impl Connector for MemoryConnector {
    fn system(&self) -> System {
        self.system
    }

    async fn apply(&self, cmd: &Command) -> Result<Outcome, DeliveryError> {
        let record = serde_json::to_value(&cmd.action).unwrap_or(Value::Null);
        let written = fingerprint(&record);
        let key = (cmd.action.name().to_string(), cmd.entity.key.clone());
        let mut records = self.records.lock().map_err(|_| DeliveryError::Transient {
            system: self.system.to_string(),
            status: 0,
            message: "lock poisoned".into(),
            retry_after_ms: None,
        })?;
        let created = records.insert(key, record).is_none();
        self.applied
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let assigned = matches!(cmd.action, Action::UpsertOrder(_) | Action::UpsertQuote(_))
            .then(|| format!("M-{}", cmd.entity.key));
        Ok(Outcome {
            target_id: format!("mem-{}", cmd.entity),
            assigned_number: assigned,
            fingerprint: written,
            created,
        })
    }
}
