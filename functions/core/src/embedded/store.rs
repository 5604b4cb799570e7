//! Store ports on the embedded tables.

use super::tables::{Cold, Entity, Idem, Op, Parked};
use super::{ms_to_time, now_ms, EmbeddedStore};
use crate::domain::{EntityKey, SourceRef};
use crate::error::StoreError;
use crate::ports::{
    Activation, AuditEntry, AuditLog, Claim, Decision, DecisionLog, EntityState, FiguresStore,
    IdemRecord, IdemStatus, IdempotencyStore, ParkedEvent, ParkingStore, RebateFigures, RuleStore,
    StateStore,
};
use async_trait::async_trait;
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

fn completed(key: &str, r: &Idem) -> Result<IdemRecord, StoreError> {
    Ok(IdemRecord {
        key: key.to_string(),
        status: IdemStatus::Completed,
        locked_until: ms_to_time(r.locked_until),
        expires_at: ms_to_time(r.expires_at),
        outcome: serde_json::from_str(&r.outcome).map_err(|e| corrupt(key, e))?,
    })
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
        // Expired records are dropped at most once a minute (they are absent to every read
        // already; this only frees them).
        let sweep = super::due(&self.next_idem_sweep, now, 60_000);
        self.write(|t| {
            // Taken when new, expired, or its lock lapsed; otherwise the record says why not.
            let claim = match t.idem.get(key) {
                Some(r) if r.expires_at > now && (r.completed || r.locked_until > now) => {
                    if r.completed {
                        Claim::Duplicate(completed(key, r)?)
                    } else {
                        Claim::InProgress {
                            until: ms_to_time(r.locked_until),
                        }
                    }
                }
                _ => Claim::Fresh,
            };
            let mut ops = Vec::new();
            if sweep {
                ops.push(Op::IdemSweep { now });
            }
            if matches!(claim, Claim::Fresh) {
                ops.push(Op::IdemPut {
                    key: key.to_string(),
                    idem: Idem {
                        completed: false,
                        locked_until: now + dur_ms(lock_for),
                        expires_at: now + dur_ms(keep_for),
                        outcome: "null".into(),
                    },
                });
            }
            Ok((ops, claim))
        })
    }

    async fn complete(
        &self,
        key: &str,
        outcome: &Value,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let op = Op::IdemPut {
            key: key.to_string(),
            idem: Idem {
                completed: true,
                locked_until: now,
                expires_at: now + dur_ms(keep_for),
                outcome: outcome.to_string(),
            },
        };
        self.write(|_| Ok::<_, StoreError>((vec![op], ())))
    }

    async fn peek(&self, key: &str) -> Result<Option<IdemRecord>, StoreError> {
        let now = now_ms();
        self.read(|e| match e.tables.idem.get(key) {
            Some(r) if r.completed && r.expires_at > now => completed(key, r).map(Some),
            _ => Ok(None),
        })
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.write(|t| {
            let ops = match t.idem.get(key) {
                Some(r) if !r.completed => vec![Op::IdemDel {
                    key: key.to_string(),
                }],
                _ => vec![],
            };
            Ok::<_, StoreError>((ops, ()))
        })
    }
}

#[async_trait]
impl StateStore for EmbeddedStore {
    async fn load(&self, key: &EntityKey) -> Result<Option<EntityState>, StoreError> {
        let k = key.to_string();
        // Parsed where it is (not copied out first).
        let state = self.read(|e| {
            e.tables
                .entity
                .get(&k)
                .map(|e| super::state_codec::decode(&e.body))
                .transpose()
                .map_err(|e| corrupt(&k, e))
        })?;
        Ok(state.map(|mut state| {
            state.stored_ids = state.ids.clone();
            state
        }))
    }

    async fn save(&self, state: &EntityState, entry: &AuditEntry) -> Result<(), StoreError> {
        let k = state.key.to_string();
        let mut body = Vec::with_capacity(512);
        super::state_codec::encode(state, &mut body).map_err(|e| corrupt(&k, e))?;
        let entry_body = serde_json::to_string(entry).map_err(|e| corrupt(&k, e))?;
        let version = state.version;
        self.write(|t| {
            // Written only over the version it was read at (or as new): the state, its
            // audit entry and any new cross-references together.
            let stored = t.entity.get(&k).map(|e| e.version);
            let expected = if version == 1 {
                None
            } else {
                Some(version - 1)
            };
            if stored != expected {
                return Err(StoreError::Conflict { key: k.clone() });
            }
            let mut ops = Vec::with_capacity(3);
            for (system, id) in state.new_references() {
                let source = SourceRef::new(system, state.key.entity_type, id.clone());
                ops.push(Op::XrefPut {
                    source: source.group(),
                    entity_key: k.clone(),
                });
            }
            ops.push(Op::AuditAdd {
                subject: entry.subject.clone(),
                body: Cold::Mem(entry_body),
            });
            ops.push(Op::EntityPut {
                key: k.clone(),
                entity: Entity { version, body },
            });
            Ok((ops, ()))
        })
    }

    async fn resolve(&self, source: &SourceRef) -> Result<Option<EntityKey>, StoreError> {
        let group = source.group();
        let key = self.read(|e| Ok(e.tables.xref.get(&group).cloned()))?;
        key.map(|k| EntityKey::from_str(&k).map_err(|e| corrupt(&group, e)))
            .transpose()
    }
}

#[async_trait]
impl ParkingStore for EmbeddedStore {
    async fn park(&self, parked: &ParkedEvent) -> Result<(), StoreError> {
        let body = serde_json::to_string(parked).map_err(|e| corrupt(&parked.id, e))?;
        self.write(|t| {
            let key = (parked.dependency.clone(), parked.id.clone());
            let ops = if t.parked.contains_key(&key) {
                vec![]
            } else {
                vec![Op::ParkPut {
                    dependency: key.0,
                    id: key.1,
                    parked: Parked {
                        seq: t.parked_seq + 1,
                        body,
                    },
                }]
            };
            Ok::<_, StoreError>((ops, ()))
        })
    }

    async fn waiting(&self, dependency: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        let mut bodies = self.read(|e| {
            Ok(e.tables
                .parked
                .range((dependency.to_string(), String::new())..)
                .take_while(|((d, _), _)| d == dependency)
                .map(|(_, p)| (p.seq, p.body.clone()))
                .collect::<Vec<_>>())
        })?;
        bodies.sort_by_key(|(seq, _)| *seq);
        bodies
            .into_iter()
            .map(|(_, b)| serde_json::from_str(&b).map_err(|e| corrupt(dependency, e)))
            .collect()
    }

    async fn unpark(&self, dependency: &str, id: &str) -> Result<(), StoreError> {
        let op = Op::ParkDel {
            dependency: dependency.to_string(),
            id: id.to_string(),
        };
        self.write(|_| Ok::<_, StoreError>((vec![op], ())))
    }

    async fn all_parked(&self) -> Result<Vec<ParkedEvent>, StoreError> {
        let mut bodies = self.read(|e| {
            Ok(e.tables
                .parked
                .values()
                .map(|p| (p.seq, p.body.clone()))
                .collect::<Vec<_>>())
        })?;
        bodies.sort_by_key(|(seq, _)| *seq);
        bodies
            .into_iter()
            .map(|(_, b)| serde_json::from_str(&b).map_err(|e| corrupt("parked", e)))
            .collect()
    }
}

#[async_trait]
impl AuditLog for EmbeddedStore {
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let body = serde_json::to_string(entry).map_err(|e| corrupt(&entry.subject, e))?;
        let op = Op::AuditAdd {
            subject: entry.subject.clone(),
            body: Cold::Mem(body),
        };
        self.write(|_| Ok::<_, StoreError>((vec![op], ())))
    }

    async fn trail(&self, subject: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let bodies = self.read(|e| {
            e.tables
                .audit
                .get(subject)
                .map(|entries| entries.iter().map(|c| e.cold(c)).collect())
                .unwrap_or_else(|| Ok(Vec::new()))
        })?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(|e| corrupt(subject, e)))
            .collect()
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
        let op = Op::OpenOrderPut {
            account: account.to_string(),
            order: order.to_string(),
            amount: amount.to_string(),
        };
        self.write(|_| Ok::<_, StoreError>((vec![op], ())))
    }

    async fn clear_open_order(&self, account: &str, order: &str) -> Result<(), StoreError> {
        self.write(|t| {
            let key = (account.to_string(), order.to_string());
            let ops = if t.open_order.contains_key(&key) {
                vec![Op::OpenOrderDel {
                    account: key.0,
                    order: key.1,
                }]
            } else {
                vec![]
            };
            Ok::<_, StoreError>((ops, ()))
        })
    }

    async fn open_orders(&self, account: &str, except: &str) -> Result<Decimal, StoreError> {
        self.read(|e| {
            let mut sum = Decimal::ZERO;
            for ((_, order), amount) in e
                .tables
                .open_order
                .range((account.to_string(), String::new())..)
                .take_while(|((a, _), _)| a == account)
            {
                if order != except {
                    sum += Decimal::from_str(amount).map_err(|e| corrupt(account, e))?;
                }
            }
            Ok(sum)
        })
    }

    async fn rebate(&self, account: &str, period: &str) -> Result<RebateFigures, StoreError> {
        let body = self.read(|e| {
            Ok(e.tables
                .rebate
                .get(&(account.to_string(), period.to_string()))
                .cloned())
        })?;
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
        let op = Op::RebatePut {
            account: account.to_string(),
            period: period.to_string(),
            body: serde_json::to_string(figures).map_err(|e| corrupt(account, e))?,
        };
        self.write(|_| Ok::<_, StoreError>((vec![op], ())))
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
        self.write(|t| {
            let ops = if t.rule_versions.contains_key(version) {
                vec![]
            } else {
                vec![Op::RuleVersionPut {
                    version: version.to_string(),
                    body,
                    stored_at: chrono::Utc::now().timestamp(),
                }]
            };
            Ok::<_, StoreError>((ops, ()))
        })
    }

    async fn get_rules(
        &self,
        version: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let body =
            self.read(|e| Ok(e.tables.rule_versions.get(version).map(|(b, _)| b.clone())))?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| corrupt(version, e)))
            .transpose()
    }

    async fn activate(&self, activation: &Activation) -> Result<bool, StoreError> {
        let body =
            serde_json::to_string(activation).map_err(|e| corrupt(&activation.version, e))?;
        self.write(|t| {
            // Only as the next activation: two publishes at once cannot both win.
            let next = t.activations.keys().next_back().copied().unwrap_or(0) + 1;
            if activation.seq != next {
                return Ok((vec![], false));
            }
            Ok::<_, StoreError>((
                vec![Op::ActivationPut {
                    seq: activation.seq,
                    body,
                }],
                true,
            ))
        })
    }

    async fn activations(&self, limit: usize) -> Result<Vec<Activation>, StoreError> {
        let bodies = self.read(|e| {
            Ok(e.tables
                .activations
                .values()
                .rev()
                .take(limit)
                .cloned()
                .collect::<Vec<_>>())
        })?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(|e| corrupt("rule_activation", e)))
            .collect()
    }
}

#[async_trait]
impl DecisionLog for EmbeddedStore {
    async fn record(&self, decision: &Decision) -> Result<(), StoreError> {
        let body = serde_json::to_string(decision).map_err(|e| corrupt(&decision.id, e))?;
        self.write(|t| {
            let ops = if t.decision_ids.contains_key(&decision.id) {
                vec![]
            } else {
                vec![Op::DecisionAdd {
                    id: decision.id.clone(),
                    at: decision.at.timestamp_millis(),
                    body: Cold::Mem(body),
                }]
            };
            Ok::<_, StoreError>((ops, ()))
        })
    }

    async fn decisions(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Decision>, StoreError> {
        let from = since.timestamp_millis();
        let bodies = self.read(|e| {
            e.tables
                .decisions
                .range((from, String::new())..)
                .map(|(_, c)| e.cold(c))
                .collect::<Result<Vec<_>, _>>()
        })?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(|e| corrupt("decision", e)))
            .collect()
    }
}
