//! Store ports on SQLite.

use super::{ms_to_time, now_ms, Cached, EmbeddedStore, Tx};
use crate::domain::{EntityKey, SourceRef};
use crate::error::StoreError;
use crate::ports::{
    Activation, AuditEntry, AuditLog, Claim, Decision, DecisionLog, EntityState, FiguresStore,
    IdemRecord, IdemStatus, IdempotencyStore, ParkedEvent, ParkingStore, RebateFigures, RuleStore,
    StateStore,
};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    }
}

#[async_trait]
impl IdempotencyStore for EmbeddedStore {
    async fn claim(
        &self,
        key: &str,
        lock_for: Duration,
        keep_for: Duration,
    ) -> Result<Claim, StoreError> {
        let now = now_ms();
        let conn = self.lock()?;
        // One conditional put: insert, or take over a record that expired or whose lock
        // lapsed. Only when that writes nothing is the old record read, to say why.
        let taken = conn
            .exec(
                "INSERT INTO idem (key, status, locked_until, expires_at, outcome)
                 VALUES (?1, 'in_progress', ?2, ?3, 'null')
                 ON CONFLICT(key) DO UPDATE SET status = 'in_progress', locked_until = ?2,
                     expires_at = ?3, outcome = 'null'
                 WHERE expires_at <= ?4 OR (status = 'in_progress' AND locked_until <= ?4)",
                params![key, now + dur_ms(lock_for), now + dur_ms(keep_for), now],
            )
            .map_err(StoreError::backend)?;
        if taken == 1 {
            return Ok(Claim::Fresh);
        }
        let (status, locked_until, expires_at, outcome): (String, i64, i64, String) = conn
            .row(
                "SELECT status, locked_until, expires_at, outcome FROM idem WHERE key = ?1",
                params![key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(StoreError::backend)?;
        if status == "completed" {
            let outcome = serde_json::from_str(&outcome).map_err(|e| corrupt(key, e))?;
            return Ok(Claim::Duplicate(IdemRecord {
                key: key.to_string(),
                status: IdemStatus::Completed,
                locked_until: ms_to_time(locked_until),
                expires_at: ms_to_time(expires_at),
                outcome,
            }));
        }
        Ok(Claim::InProgress {
            until: ms_to_time(locked_until),
        })
    }

    async fn complete(
        &self,
        key: &str,
        outcome: &Value,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let conn = self.lock()?;
        conn.exec(
            "INSERT INTO idem (key, status, locked_until, expires_at, outcome)
             VALUES (?1, 'completed', ?2, ?3, ?4)
             ON CONFLICT(key) DO UPDATE SET status = 'completed', locked_until = ?2,
                 expires_at = ?3, outcome = ?4",
            params![key, now, now + dur_ms(keep_for), outcome.to_string()],
        )
        .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn peek(&self, key: &str) -> Result<Option<IdemRecord>, StoreError> {
        let now = now_ms();
        let conn = self.lock()?;
        let row: Option<(i64, i64, String)> = conn
            .row(
                "SELECT locked_until, expires_at, outcome FROM idem WHERE key = ?1 AND status = 'completed'",
                params![key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(StoreError::backend)?;
        match row {
            Some((locked_until, expires_at, outcome)) if expires_at > now => Ok(Some(IdemRecord {
                key: key.to_string(),
                status: IdemStatus::Completed,
                locked_until: ms_to_time(locked_until),
                expires_at: ms_to_time(expires_at),
                outcome: serde_json::from_str(&outcome).map_err(|e| corrupt(key, e))?,
            })),
            _ => Ok(None),
        }
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.exec(
            "DELETE FROM idem WHERE key = ?1 AND status = 'in_progress'",
            params![key],
        )
        .map_err(StoreError::backend)?;
        Ok(())
    }
}

#[async_trait]
impl StateStore for EmbeddedStore {
    async fn load(&self, key: &EntityKey) -> Result<Option<EntityState>, StoreError> {
        let k = key.to_string();
        let conn = self.lock()?;
        let body: Option<String> = conn
            .row("SELECT body FROM entity WHERE key = ?1", params![k], |r| {
                r.get(0)
            })
            .optional()
            .map_err(StoreError::backend)?;
        let Some(body) = body else { return Ok(None) };
        let mut state: EntityState = serde_json::from_str(&body).map_err(|e| corrupt(&k, e))?;
        state.stored_ids = state.ids.clone();
        Ok(Some(state))
    }

    async fn save(&self, state: &EntityState, entry: &AuditEntry) -> Result<(), StoreError> {
        let k = state.key.to_string();
        let body = serde_json::to_string(state).map_err(|e| corrupt(&k, e))?;
        let entry_body = serde_json::to_string(entry).map_err(|e| corrupt(&k, e))?;
        let version = i64::try_from(state.version).map_err(|e| corrupt(&k, e))?;
        let new_ids: Vec<_> = state.new_references().collect();
        let conn = self.lock()?;
        // The state, its audit entry and any new cross-references: all or nothing.
        let tx = Tx::begin(&conn).map_err(StoreError::backend)?;
        let changed = if version == 1 {
            conn.exec(
                "INSERT INTO entity (key, entity_type, version, body) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT(key) DO NOTHING",
                params![k, state.key.entity_type.as_str(), body],
            )
        } else {
            conn.exec(
                "UPDATE entity SET version = ?2, body = ?3 WHERE key = ?1 AND version = ?4",
                params![k, version, body, version - 1],
            )
        }
        .map_err(StoreError::backend)?;
        if changed != 1 {
            return Err(StoreError::Conflict { key: k });
        }
        for (system, id) in new_ids {
            let source = SourceRef::new(system, state.key.entity_type, id.clone());
            conn.exec(
                "INSERT INTO xref (source, entity_key) VALUES (?1, ?2)
                 ON CONFLICT(source) DO UPDATE SET entity_key = ?2",
                params![source.group(), k],
            )
            .map_err(StoreError::backend)?;
        }
        conn.exec(
            "INSERT INTO audit (subject, body) VALUES (?1, ?2)",
            params![entry.subject, entry_body],
        )
        .map_err(StoreError::backend)?;
        tx.commit().map_err(StoreError::backend)
    }

    async fn resolve(&self, source: &SourceRef) -> Result<Option<EntityKey>, StoreError> {
        let conn = self.lock()?;
        let key: Option<String> = conn
            .row(
                "SELECT entity_key FROM xref WHERE source = ?1",
                params![source.group()],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::backend)?;
        key.map(|k| EntityKey::from_str(&k).map_err(|e| corrupt(&source.group(), e)))
            .transpose()
    }
}

#[async_trait]
impl ParkingStore for EmbeddedStore {
    async fn park(&self, parked: &ParkedEvent) -> Result<(), StoreError> {
        let body = serde_json::to_string(parked).map_err(|e| corrupt(&parked.id, e))?;
        let conn = self.lock()?;
        conn.exec(
            "INSERT INTO parked (dependency, id, seq, body)
             VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM parked), ?3)
             ON CONFLICT(dependency, id) DO NOTHING",
            params![parked.dependency, parked.id, body],
        )
        .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn waiting(&self, dependency: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached("SELECT body FROM parked WHERE dependency = ?1 ORDER BY seq")
            .map_err(StoreError::backend)?;
        let rows = stmt
            .query_map(params![dependency], |r| r.get::<_, String>(0))
            .map_err(StoreError::backend)?;
        let mut out = Vec::new();
        for r in rows {
            let b = r.map_err(StoreError::backend)?;
            out.push(serde_json::from_str(&b).map_err(|e| corrupt(dependency, e))?);
        }
        Ok(out)
    }

    async fn unpark(&self, dependency: &str, id: &str) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.exec(
            "DELETE FROM parked WHERE dependency = ?1 AND id = ?2",
            params![dependency, id],
        )
        .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn all_parked(&self) -> Result<Vec<ParkedEvent>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached("SELECT body FROM parked ORDER BY seq")
            .map_err(StoreError::backend)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(StoreError::backend)?;
        let mut out = Vec::new();
        for r in rows {
            let b = r.map_err(StoreError::backend)?;
            out.push(serde_json::from_str(&b).map_err(|e| corrupt("parked", e))?);
        }
        Ok(out)
    }
}

#[async_trait]
impl AuditLog for EmbeddedStore {
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let body = serde_json::to_string(entry).map_err(|e| corrupt(&entry.subject, e))?;
        let conn = self.lock()?;
        conn.exec(
            "INSERT INTO audit (subject, body) VALUES (?1, ?2)",
            params![entry.subject, body],
        )
        .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn trail(&self, subject: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached("SELECT body FROM audit WHERE subject = ?1 ORDER BY seq")
            .map_err(StoreError::backend)?;
        let rows = stmt
            .query_map(params![subject], |r| r.get::<_, String>(0))
            .map_err(StoreError::backend)?;
        let mut out = Vec::new();
        for r in rows {
            let b = r.map_err(StoreError::backend)?;
            out.push(serde_json::from_str(&b).map_err(|e| corrupt(subject, e))?);
        }
        Ok(out)
    }
}

#[async_trait]
impl FiguresStore for EmbeddedStore {
    async fn set_open_order(
        &self,
        account: &str,
        order: &str,
        amount: Decimal,
    ) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.exec(
            "INSERT INTO open_order (account, order_no, amount) VALUES (?1, ?2, ?3)
             ON CONFLICT(account, order_no) DO UPDATE SET amount = ?3",
            params![account, order, amount.to_string()],
        )
        .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn clear_open_order(&self, account: &str, order: &str) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.exec(
            "DELETE FROM open_order WHERE account = ?1 AND order_no = ?2",
            params![account, order],
        )
        .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn open_orders(&self, account: &str, except: &str) -> Result<Decimal, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached("SELECT amount FROM open_order WHERE account = ?1 AND order_no <> ?2")
            .map_err(StoreError::backend)?;
        let rows = stmt
            .query_map(params![account, except], |r| r.get::<_, String>(0))
            .map_err(StoreError::backend)?;
        let mut sum = Decimal::ZERO;
        for r in rows {
            let a = r.map_err(StoreError::backend)?;
            sum += Decimal::from_str(&a).map_err(|e| corrupt(account, e))?;
        }
        Ok(sum)
    }

    async fn rebate(&self, account: &str, period: &str) -> Result<RebateFigures, StoreError> {
        let conn = self.lock()?;
        let body: Option<String> = conn
            .row(
                "SELECT body FROM rebate WHERE account = ?1 AND period = ?2",
                params![account, period],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::backend)?;
        match body {
            Some(b) => serde_json::from_str(&b).map_err(|e| corrupt(account, e)),
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
        let conn = self.lock()?;
        conn.exec(
            "INSERT INTO rebate (account, period, body) VALUES (?1, ?2, ?3)
             ON CONFLICT(account, period) DO UPDATE SET body = ?3",
            params![account, period, body],
        )
        .map_err(StoreError::backend)?;
        Ok(())
    }
}

#[async_trait]
impl RuleStore for EmbeddedStore {
    async fn put_rules(
        &self,
        version: &str,
        files: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(files).map_err(|e| corrupt(version, e))?;
        let conn = self.lock()?;
        conn.exec(
            "INSERT INTO rule_version (version, body, stored_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(version) DO NOTHING",
            params![version, body, chrono::Utc::now().timestamp()],
        )
        .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn get_rules(
        &self,
        version: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let conn = self.lock()?;
        let body: Option<String> = conn
            .row(
                "SELECT body FROM rule_version WHERE version = ?1",
                params![version],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::backend)?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| corrupt(version, e)))
            .transpose()
    }

    async fn activate(&self, activation: &Activation) -> Result<bool, StoreError> {
        let body =
            serde_json::to_string(activation).map_err(|e| corrupt(&activation.version, e))?;
        let seq = i64::try_from(activation.seq).map_err(|e| corrupt(&activation.version, e))?;
        let conn = self.lock()?;
        let changed = conn
            .exec(
                "INSERT INTO rule_activation (seq, version, body)
                 SELECT ?1, ?2, ?3
                 WHERE ?1 = (SELECT COALESCE(MAX(seq), 0) + 1 FROM rule_activation)
                 ON CONFLICT(seq) DO NOTHING",
                params![seq, activation.version, body],
            )
            .map_err(StoreError::backend)?;
        Ok(changed == 1)
    }

    async fn activations(&self, limit: usize) -> Result<Vec<Activation>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached("SELECT body FROM rule_activation ORDER BY seq DESC LIMIT ?1")
            .map_err(StoreError::backend)?;
        let rows = stmt
            .query_map(params![limit as i64], |r| r.get::<_, String>(0))
            .map_err(StoreError::backend)?;
        let mut out = Vec::new();
        for r in rows {
            let body = r.map_err(StoreError::backend)?;
            out.push(serde_json::from_str(&body).map_err(|e| corrupt("rule_activation", e))?);
        }
        Ok(out)
    }
}

#[async_trait]
impl DecisionLog for EmbeddedStore {
    async fn record(&self, decision: &Decision) -> Result<(), StoreError> {
        let body = serde_json::to_string(decision).map_err(|e| corrupt(&decision.id, e))?;
        let conn = self.lock()?;
        conn.exec(
            "INSERT INTO decision (id, at, body) VALUES (?1, ?2, ?3) ON CONFLICT(id) DO NOTHING",
            params![decision.id, decision.at.timestamp_millis(), body],
        )
        .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn decisions(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Decision>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached("SELECT body FROM decision WHERE at >= ?1 ORDER BY at, id")
            .map_err(StoreError::backend)?;
        let rows = stmt
            .query_map(params![since.timestamp_millis()], |r| r.get::<_, String>(0))
            .map_err(StoreError::backend)?;
        let mut out = Vec::new();
        for r in rows {
            let body = r.map_err(StoreError::backend)?;
            out.push(serde_json::from_str(&body).map_err(|e| corrupt("decision", e))?);
        }
        Ok(out)
    }
}
