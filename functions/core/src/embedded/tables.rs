//! The embedded store's data, held in memory: every table the ports need. The tables change
//! only by applying [`Op`]s, the same ops whether a port has just made them or they are
//! read back from the log, so a store reopened from its file is the store that was closed.
//!
//! Audit entries and recorded decisions are history that only grows; their bodies stay in
//! the file ([`Cold::Disk`]) and only their index is in memory.

use super::codec::{put_i64, put_str, put_u64, DecodeError, Reader};
use crate::ports::{DeadLetter, QueueName};
use std::collections::{BTreeMap, HashMap};

/// A value kept in the file once committed.
#[derive(Debug, Clone)]
pub(crate) enum Cold {
    /// Not yet in the file (or a store without one).
    Mem(String),
    Disk {
        offset: u64,
        len: u32,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Idem {
    pub completed: bool,
    pub locked_until: i64,
    pub expires_at: i64,
    pub outcome: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Entity {
    pub version: u64,
    pub body: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Parked {
    pub seq: u64,
    pub body: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub group: String,
    pub dedup_id: String,
    pub message_id: String,
    pub body: String,
    pub receive_count: u32,
    pub visible_at: i64,
    pub receipt: Option<String>,
    pub last_error: String,
    /// The body's value as its sender had it (in memory only).
    pub typed: Option<crate::ports::Typed>,
}

/// One queue: its messages in order, and the deduplication ids seen inside the window.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    pub messages: BTreeMap<u64, Msg>,
    pub dedup: HashMap<String, i64>,
}

#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub idem: HashMap<String, Idem>,
    pub entity: HashMap<String, Entity>,
    pub xref: HashMap<String, String>,
    /// (dependency, id) → the parked event.
    pub parked: BTreeMap<(String, String), Parked>,
    pub parked_seq: u64,
    /// subject → its entries, oldest first.
    pub audit: HashMap<String, Vec<Cold>>,
    /// (account, order) → amount.
    pub open_order: BTreeMap<(String, String), String>,
    /// (account, period) → figures.
    pub rebate: HashMap<(String, String), String>,
    pub queues: [Queue; 3],
    pub msg_seq: u64,
    pub dead: BTreeMap<u64, DeadLetter>,
    pub dead_ids: HashMap<String, u64>,
    pub dead_seq: u64,
    /// (at, id) → the decision.
    pub decisions: BTreeMap<(i64, String), Cold>,
    pub decision_ids: HashMap<String, i64>,
    /// version → (files, stored at).
    pub rule_versions: BTreeMap<String, (String, i64)>,
    /// seq → activation.
    pub activations: BTreeMap<u64, String>,
}

pub(crate) fn queue_index(q: QueueName) -> usize {
    match q {
        QueueName::Inbound => 0,
        QueueName::ToErp => 1,
        QueueName::ToCrm => 2,
    }
}

fn queue_of(i: u8) -> Option<QueueName> {
    QueueName::ALL.get(usize::from(i)).copied()
}

/// A change to the tables.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    IdemPut {
        key: String,
        idem: Idem,
    },
    IdemDel {
        key: String,
    },
    /// Drops the records expired at `now`.
    IdemSweep {
        now: i64,
    },
    EntityPut {
        key: String,
        entity: Entity,
    },
    XrefPut {
        source: String,
        entity_key: String,
    },
    /// Parks an event unless one with the same dependency and id is parked already.
    ParkPut {
        dependency: String,
        id: String,
        parked: Parked,
    },
    ParkDel {
        dependency: String,
        id: String,
    },
    AuditAdd {
        subject: String,
        body: Cold,
    },
    OpenOrderPut {
        account: String,
        order: String,
        amount: String,
    },
    OpenOrderDel {
        account: String,
        order: String,
    },
    RebatePut {
        account: String,
        period: String,
        body: String,
    },
    MsgAdd {
        queue: QueueName,
        seq: u64,
        group: String,
        dedup_id: String,
        message_id: String,
        body: String,
        /// Not written to the file.
        typed: Option<crate::ports::Typed>,
    },
    /// Received: each message's count goes up, it is hidden until `visible_at`, and its
    /// receipt is `<receipt>-<seq>`.
    MsgReceive {
        queue: QueueName,
        receipt: String,
        visible_at: i64,
        seqs: Vec<u64>,
    },
    /// Returned for a retry at `visible_at`, its receipt void.
    MsgRetry {
        queue: QueueName,
        seq: u64,
        visible_at: i64,
        last_error: String,
    },
    MsgDel {
        queue: QueueName,
        seqs: Vec<u64>,
    },
    /// A message's whole delivery state (compaction's snapshot).
    MsgState {
        queue: QueueName,
        seq: u64,
        receive_count: u32,
        visible_at: i64,
        receipt: Option<String>,
        last_error: String,
    },
    DedupPut {
        queue: QueueName,
        dedup_id: String,
        expires_at: i64,
    },
    /// Drops the deduplication ids expired at `now`, in every queue.
    DedupSweep {
        now: i64,
    },
    /// Buries a message unless one with its id is buried already.
    DeadAdd {
        seq: u64,
        dead: DeadLetter,
    },
    DeadDel {
        message_id: String,
    },
    /// Records a decision unless one with its id is recorded already.
    DecisionAdd {
        id: String,
        at: i64,
        body: Cold,
    },
    RuleVersionPut {
        version: String,
        body: String,
        stored_at: i64,
    },
    ActivationPut {
        seq: u64,
        body: String,
    },
}

/// Where a value kept in the file went in a transaction's encoding, to point its index at
/// the file once the transaction is written.
#[derive(Debug, Clone)]
pub(crate) enum ColdAt {
    Audit { subject: String, index: usize },
    Decision { at: i64, id: String },
}

impl Op {
    /// Appends the op's encoding to `out`. For an audit entry or a decision, returns where
    /// its body starts in `out` and its length.
    pub fn encode(&self, out: &mut Vec<u8>) -> Option<(usize, usize)> {
        let cold = |out: &mut Vec<u8>, body: &Cold| -> Option<(usize, usize)> {
            match body {
                Cold::Mem(s) => {
                    put_u64(out, s.len() as u64);
                    let at = out.len();
                    out.extend_from_slice(s.as_bytes());
                    Some((at, s.len()))
                }
                // Encoded only from memory: compaction resolves bodies first.
                Cold::Disk { .. } => {
                    put_u64(out, 0);
                    None
                }
            }
        };
        match self {
            Op::IdemPut { key, idem } => {
                out.push(1);
                put_str(out, key);
                out.push(u8::from(idem.completed));
                put_i64(out, idem.locked_until);
                put_i64(out, idem.expires_at);
                put_str(out, &idem.outcome);
            }
            Op::IdemDel { key } => {
                out.push(2);
                put_str(out, key);
            }
            Op::IdemSweep { now } => {
                out.push(3);
                put_i64(out, *now);
            }
            Op::EntityPut { key, entity } => {
                out.push(4);
                put_str(out, key);
                put_u64(out, entity.version);
                put_str(out, &entity.body);
            }
            Op::XrefPut { source, entity_key } => {
                out.push(5);
                put_str(out, source);
                put_str(out, entity_key);
            }
            Op::ParkPut {
                dependency,
                id,
                parked,
            } => {
                out.push(6);
                put_str(out, dependency);
                put_str(out, id);
                put_u64(out, parked.seq);
                put_str(out, &parked.body);
            }
            Op::ParkDel { dependency, id } => {
                out.push(7);
                put_str(out, dependency);
                put_str(out, id);
            }
            Op::AuditAdd { subject, body } => {
                out.push(8);
                put_str(out, subject);
                return cold(out, body);
            }
            Op::OpenOrderPut {
                account,
                order,
                amount,
            } => {
                out.push(9);
                put_str(out, account);
                put_str(out, order);
                put_str(out, amount);
            }
            Op::OpenOrderDel { account, order } => {
                out.push(10);
                put_str(out, account);
                put_str(out, order);
            }
            Op::RebatePut {
                account,
                period,
                body,
            } => {
                out.push(11);
                put_str(out, account);
                put_str(out, period);
                put_str(out, body);
            }
            Op::MsgAdd {
                queue,
                seq,
                group,
                dedup_id,
                message_id,
                body,
                typed: _,
            } => {
                out.push(12);
                out.push(queue_index(*queue) as u8);
                put_u64(out, *seq);
                put_str(out, group);
                put_str(out, dedup_id);
                put_str(out, message_id);
                put_str(out, body);
            }
            Op::MsgReceive {
                queue,
                receipt,
                visible_at,
                seqs,
            } => {
                out.push(13);
                out.push(queue_index(*queue) as u8);
                put_str(out, receipt);
                put_i64(out, *visible_at);
                put_u64(out, seqs.len() as u64);
                for s in seqs {
                    put_u64(out, *s);
                }
            }
            Op::MsgRetry {
                queue,
                seq,
                visible_at,
                last_error,
            } => {
                out.push(14);
                out.push(queue_index(*queue) as u8);
                put_u64(out, *seq);
                put_i64(out, *visible_at);
                put_str(out, last_error);
            }
            Op::MsgDel { queue, seqs } => {
                out.push(15);
                out.push(queue_index(*queue) as u8);
                put_u64(out, seqs.len() as u64);
                for s in seqs {
                    put_u64(out, *s);
                }
            }
            Op::MsgState {
                queue,
                seq,
                receive_count,
                visible_at,
                receipt,
                last_error,
            } => {
                out.push(23);
                out.push(queue_index(*queue) as u8);
                put_u64(out, *seq);
                put_u64(out, u64::from(*receive_count));
                put_i64(out, *visible_at);
                put_str(out, receipt.as_deref().unwrap_or(""));
                put_str(out, last_error);
            }
            Op::DedupPut {
                queue,
                dedup_id,
                expires_at,
            } => {
                out.push(16);
                out.push(queue_index(*queue) as u8);
                put_str(out, dedup_id);
                put_i64(out, *expires_at);
            }
            Op::DedupSweep { now } => {
                out.push(17);
                put_i64(out, *now);
            }
            Op::DeadAdd { seq, dead } => {
                out.push(18);
                put_u64(out, *seq);
                put_str(out, &dead.message_id);
                out.push(queue_index(dead.queue) as u8);
                put_str(out, &dead.group);
                put_str(out, &dead.dedup_id);
                put_str(out, &dead.body);
                put_str(out, &dead.code);
                put_str(out, &dead.reason);
                put_i64(out, dead.at.timestamp_millis());
            }
            Op::DeadDel { message_id } => {
                out.push(19);
                put_str(out, message_id);
            }
            Op::DecisionAdd { id, at, body } => {
                out.push(20);
                put_str(out, id);
                put_i64(out, *at);
                return cold(out, body);
            }
            Op::RuleVersionPut {
                version,
                body,
                stored_at,
            } => {
                out.push(21);
                put_str(out, version);
                put_str(out, body);
                put_i64(out, *stored_at);
            }
            Op::ActivationPut { seq, body } => {
                out.push(22);
                put_u64(out, *seq);
                put_str(out, body);
            }
        }
        None
    }

    /// Decodes the next op of a frame whose payload starts at `base` in the file (bodies
    /// kept in the file point there).
    pub fn decode(r: &mut Reader<'_>, base: u64) -> Result<Op, DecodeError> {
        let queue = |r: &mut Reader<'_>| -> Result<QueueName, DecodeError> {
            let at = r.pos();
            queue_of(r.u8()?).ok_or(DecodeError {
                at,
                what: "an unknown queue",
            })
        };
        let cold = |r: &mut Reader<'_>| -> Result<Cold, DecodeError> {
            let (s, at) = r.str_at()?;
            Ok(Cold::Disk {
                offset: base + at as u64,
                len: u32::try_from(s.len()).map_err(|_| DecodeError {
                    at,
                    what: "a body over 4 GiB",
                })?,
            })
        };
        let seqs = |r: &mut Reader<'_>| -> Result<Vec<u64>, DecodeError> {
            let n = r.u64()?;
            let mut v = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                v.push(r.u64()?);
            }
            Ok(v)
        };
        let at = r.pos();
        Ok(match r.u8()? {
            1 => Op::IdemPut {
                key: r.string()?,
                idem: Idem {
                    completed: r.u8()? == 1,
                    locked_until: r.i64()?,
                    expires_at: r.i64()?,
                    outcome: r.string()?,
                },
            },
            2 => Op::IdemDel { key: r.string()? },
            3 => Op::IdemSweep { now: r.i64()? },
            4 => Op::EntityPut {
                key: r.string()?,
                entity: Entity {
                    version: r.u64()?,
                    body: r.string()?,
                },
            },
            5 => Op::XrefPut {
                source: r.string()?,
                entity_key: r.string()?,
            },
            6 => Op::ParkPut {
                dependency: r.string()?,
                id: r.string()?,
                parked: Parked {
                    seq: r.u64()?,
                    body: r.string()?,
                },
            },
            7 => Op::ParkDel {
                dependency: r.string()?,
                id: r.string()?,
            },
            8 => Op::AuditAdd {
                subject: r.string()?,
                body: cold(r)?,
            },
            9 => Op::OpenOrderPut {
                account: r.string()?,
                order: r.string()?,
                amount: r.string()?,
            },
            10 => Op::OpenOrderDel {
                account: r.string()?,
                order: r.string()?,
            },
            11 => Op::RebatePut {
                account: r.string()?,
                period: r.string()?,
                body: r.string()?,
            },
            12 => Op::MsgAdd {
                queue: queue(r)?,
                seq: r.u64()?,
                group: r.string()?,
                dedup_id: r.string()?,
                message_id: r.string()?,
                body: r.string()?,
                typed: None,
            },
            13 => Op::MsgReceive {
                queue: queue(r)?,
                receipt: r.string()?,
                visible_at: r.i64()?,
                seqs: seqs(r)?,
            },
            14 => Op::MsgRetry {
                queue: queue(r)?,
                seq: r.u64()?,
                visible_at: r.i64()?,
                last_error: r.string()?,
            },
            15 => Op::MsgDel {
                queue: queue(r)?,
                seqs: seqs(r)?,
            },
            16 => Op::DedupPut {
                queue: queue(r)?,
                dedup_id: r.string()?,
                expires_at: r.i64()?,
            },
            17 => Op::DedupSweep { now: r.i64()? },
            18 => Op::DeadAdd {
                seq: r.u64()?,
                dead: DeadLetter {
                    message_id: r.string()?,
                    queue: queue(r)?,
                    group: r.string()?,
                    dedup_id: r.string()?,
                    body: r.string()?,
                    code: r.string()?,
                    reason: r.string()?,
                    at: super::ms_to_time(r.i64()?),
                },
            },
            19 => Op::DeadDel {
                message_id: r.string()?,
            },
            20 => Op::DecisionAdd {
                id: r.string()?,
                at: r.i64()?,
                body: cold(r)?,
            },
            21 => Op::RuleVersionPut {
                version: r.string()?,
                body: r.string()?,
                stored_at: r.i64()?,
            },
            22 => Op::ActivationPut {
                seq: r.u64()?,
                body: r.string()?,
            },
            23 => Op::MsgState {
                queue: queue(r)?,
                seq: r.u64()?,
                receive_count: r.u32()?,
                visible_at: r.i64()?,
                receipt: Some(r.string()?).filter(|s| !s.is_empty()),
                last_error: r.string()?,
            },
            _ => {
                return Err(DecodeError {
                    at,
                    what: "an unknown record",
                })
            }
        })
    }
}

impl Tables {
    /// Applies `op`; for an audit entry or a decision kept in memory, says where it went.
    pub fn apply(&mut self, op: Op) -> Option<ColdAt> {
        match op {
            Op::IdemPut { key, idem } => {
                self.idem.insert(key, idem);
            }
            Op::IdemDel { key } => {
                self.idem.remove(&key);
            }
            Op::IdemSweep { now } => self.idem.retain(|_, r| r.expires_at > now),
            Op::EntityPut { key, entity } => {
                self.entity.insert(key, entity);
            }
            Op::XrefPut { source, entity_key } => {
                self.xref.insert(source, entity_key);
            }
            Op::ParkPut {
                dependency,
                id,
                parked,
            } => {
                self.parked_seq = self.parked_seq.max(parked.seq);
                self.parked.entry((dependency, id)).or_insert(parked);
            }
            Op::ParkDel { dependency, id } => {
                self.parked.remove(&(dependency, id));
            }
            Op::AuditAdd { subject, body } => {
                let in_memory = matches!(body, Cold::Mem(_));
                let entries = self.audit.entry(subject.clone()).or_default();
                entries.push(body);
                if in_memory {
                    return Some(ColdAt::Audit {
                        index: entries.len() - 1,
                        subject,
                    });
                }
            }
            Op::OpenOrderPut {
                account,
                order,
                amount,
            } => {
                self.open_order.insert((account, order), amount);
            }
            Op::OpenOrderDel { account, order } => {
                self.open_order.remove(&(account, order));
            }
            Op::RebatePut {
                account,
                period,
                body,
            } => {
                self.rebate.insert((account, period), body);
            }
            Op::MsgAdd {
                queue,
                seq,
                group,
                dedup_id,
                message_id,
                body,
                typed,
            } => {
                self.msg_seq = self.msg_seq.max(seq);
                self.queues[queue_index(queue)].messages.insert(
                    seq,
                    Msg {
                        group,
                        dedup_id,
                        message_id,
                        body,
                        receive_count: 0,
                        visible_at: 0,
                        receipt: None,
                        last_error: String::new(),
                        typed,
                    },
                );
            }
            Op::MsgReceive {
                queue,
                receipt,
                visible_at,
                seqs,
            } => {
                let q = &mut self.queues[queue_index(queue)];
                for seq in seqs {
                    if let Some(m) = q.messages.get_mut(&seq) {
                        m.receive_count += 1;
                        m.visible_at = visible_at;
                        m.receipt = Some(format!("{receipt}-{seq}"));
                    }
                }
            }
            Op::MsgRetry {
                queue,
                seq,
                visible_at,
                last_error,
            } => {
                if let Some(m) = self.queues[queue_index(queue)].messages.get_mut(&seq) {
                    m.visible_at = visible_at;
                    m.receipt = None;
                    m.last_error = last_error;
                }
            }
            Op::MsgDel { queue, seqs } => {
                let q = &mut self.queues[queue_index(queue)];
                for seq in seqs {
                    q.messages.remove(&seq);
                }
            }
            Op::MsgState {
                queue,
                seq,
                receive_count,
                visible_at,
                receipt,
                last_error,
            } => {
                if let Some(m) = self.queues[queue_index(queue)].messages.get_mut(&seq) {
                    m.receive_count = receive_count;
                    m.visible_at = visible_at;
                    m.receipt = receipt;
                    m.last_error = last_error;
                }
            }
            Op::DedupPut {
                queue,
                dedup_id,
                expires_at,
            } => {
                self.queues[queue_index(queue)]
                    .dedup
                    .insert(dedup_id, expires_at);
            }
            Op::DedupSweep { now } => {
                for q in &mut self.queues {
                    q.dedup.retain(|_, expires| *expires > now);
                }
            }
            Op::DeadAdd { seq, dead } => {
                self.dead_seq = self.dead_seq.max(seq);
                if !self.dead_ids.contains_key(&dead.message_id) {
                    self.dead_ids.insert(dead.message_id.clone(), seq);
                    self.dead.insert(seq, dead);
                }
            }
            Op::DeadDel { message_id } => {
                if let Some(seq) = self.dead_ids.remove(&message_id) {
                    self.dead.remove(&seq);
                }
            }
            Op::DecisionAdd { id, at, body } => {
                if !self.decision_ids.contains_key(&id) {
                    let in_memory = matches!(body, Cold::Mem(_));
                    self.decision_ids.insert(id.clone(), at);
                    self.decisions.insert((at, id.clone()), body);
                    if in_memory {
                        return Some(ColdAt::Decision { at, id });
                    }
                }
            }
            Op::RuleVersionPut {
                version,
                body,
                stored_at,
            } => {
                self.rule_versions
                    .entry(version)
                    .or_insert((body, stored_at));
            }
            Op::ActivationPut { seq, body } => {
                self.activations.insert(seq, body);
            }
        }
        None
    }

    /// Applies every op of a frame read from the file (its payload at `base`).
    pub fn apply_frame(&mut self, base: u64, payload: &[u8]) -> Result<(), DecodeError> {
        let mut r = Reader::new(payload);
        while !r.is_empty() {
            let op = Op::decode(&mut r, base)?;
            self.apply(op);
        }
        Ok(())
    }

    /// Points an entry kept in memory at its place in the file.
    pub fn settle_cold(&mut self, at: &ColdAt, offset: u64, len: usize) {
        let disk = Cold::Disk {
            offset,
            len: len as u32,
        };
        match at {
            ColdAt::Audit { subject, index } => {
                if let Some(c) = self
                    .audit
                    .get_mut(subject)
                    .and_then(|entries| entries.get_mut(*index))
                {
                    *c = disk;
                }
            }
            ColdAt::Decision { at, id } => {
                if let Some(c) = self.decisions.get_mut(&(*at, id.clone())) {
                    *c = disk;
                }
            }
        }
    }

    /// About how many bytes a snapshot of the tables takes (to decide when compacting pays).
    pub fn live_bytes(&self) -> u64 {
        fn cold(c: &Cold) -> u64 {
            match c {
                Cold::Mem(s) => s.len() as u64,
                Cold::Disk { len, .. } => u64::from(*len),
            }
        }
        let mut n = 0u64;
        n += self
            .idem
            .iter()
            .map(|(k, r)| (k.len() + r.outcome.len() + 24) as u64)
            .sum::<u64>();
        n += self
            .entity
            .iter()
            .map(|(k, e)| (k.len() + e.body.len() + 12) as u64)
            .sum::<u64>();
        n += self
            .xref
            .iter()
            .map(|(k, v)| (k.len() + v.len() + 4) as u64)
            .sum::<u64>();
        n += self
            .parked
            .iter()
            .map(|((d, i), p)| (d.len() + i.len() + p.body.len() + 12) as u64)
            .sum::<u64>();
        n += self
            .audit
            .iter()
            .map(|(s, e)| e.iter().map(|c| cold(c) + s.len() as u64 + 12).sum::<u64>())
            .sum::<u64>();
        n += self
            .queues
            .iter()
            .map(|q| {
                q.messages
                    .values()
                    .map(|m| (m.body.len() + m.message_id.len() + m.group.len() + 64) as u64)
                    .sum::<u64>()
                    + q.dedup.keys().map(|k| k.len() as u64 + 12).sum::<u64>()
            })
            .sum::<u64>();
        n += self
            .decisions
            .iter()
            .map(|((_, id), c)| cold(c) + id.len() as u64 + 12)
            .sum::<u64>();
        n += self
            .rule_versions
            .values()
            .map(|(b, _)| b.len() as u64 + 48)
            .sum::<u64>();
        n += (self.open_order.len() + self.rebate.len() + self.activations.len() + self.dead.len())
            as u64
            * 256;
        n
    }

    /// The ops that rebuild these tables from nothing, with the bodies kept in the file
    /// read through `read`, passed to `emit` in frames of about `frame` bytes.
    pub fn snapshot(
        &self,
        frame: usize,
        read: &dyn Fn(&Cold) -> std::io::Result<String>,
        emit: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(frame + 4096);
        let mut put = |op: Op, buf: &mut Vec<u8>| -> std::io::Result<()> {
            op.encode(buf);
            if buf.len() >= frame {
                emit(buf)?;
                buf.clear();
            }
            Ok(())
        };
        for (key, idem) in &self.idem {
            put(
                Op::IdemPut {
                    key: key.clone(),
                    idem: idem.clone(),
                },
                &mut buf,
            )?;
        }
        for (key, entity) in &self.entity {
            put(
                Op::EntityPut {
                    key: key.clone(),
                    entity: entity.clone(),
                },
                &mut buf,
            )?;
        }
        for (source, entity_key) in &self.xref {
            put(
                Op::XrefPut {
                    source: source.clone(),
                    entity_key: entity_key.clone(),
                },
                &mut buf,
            )?;
        }
        for ((dependency, id), parked) in &self.parked {
            put(
                Op::ParkPut {
                    dependency: dependency.clone(),
                    id: id.clone(),
                    parked: parked.clone(),
                },
                &mut buf,
            )?;
        }
        // Each subject's entries in their order.
        for (subject, entries) in &self.audit {
            for c in entries {
                put(
                    Op::AuditAdd {
                        subject: subject.clone(),
                        body: Cold::Mem(read(c)?),
                    },
                    &mut buf,
                )?;
            }
        }
        for ((account, order), amount) in &self.open_order {
            put(
                Op::OpenOrderPut {
                    account: account.clone(),
                    order: order.clone(),
                    amount: amount.clone(),
                },
                &mut buf,
            )?;
        }
        for ((account, period), body) in &self.rebate {
            put(
                Op::RebatePut {
                    account: account.clone(),
                    period: period.clone(),
                    body: body.clone(),
                },
                &mut buf,
            )?;
        }
        for (i, q) in self.queues.iter().enumerate() {
            let queue = QueueName::ALL[i];
            for (seq, m) in &q.messages {
                put(
                    Op::MsgAdd {
                        queue,
                        seq: *seq,
                        group: m.group.clone(),
                        dedup_id: m.dedup_id.clone(),
                        message_id: m.message_id.clone(),
                        body: m.body.clone(),
                        typed: None,
                    },
                    &mut buf,
                )?;
                if m.receive_count > 0 || m.visible_at != 0 || !m.last_error.is_empty() {
                    put(
                        Op::MsgState {
                            queue,
                            seq: *seq,
                            receive_count: m.receive_count,
                            visible_at: m.visible_at,
                            receipt: m.receipt.clone(),
                            last_error: m.last_error.clone(),
                        },
                        &mut buf,
                    )?;
                }
            }
            for (dedup_id, expires_at) in &q.dedup {
                put(
                    Op::DedupPut {
                        queue,
                        dedup_id: dedup_id.clone(),
                        expires_at: *expires_at,
                    },
                    &mut buf,
                )?;
            }
        }
        for (seq, dead) in &self.dead {
            put(
                Op::DeadAdd {
                    seq: *seq,
                    dead: dead.clone(),
                },
                &mut buf,
            )?;
        }
        for ((at, id), c) in &self.decisions {
            put(
                Op::DecisionAdd {
                    id: id.clone(),
                    at: *at,
                    body: Cold::Mem(read(c)?),
                },
                &mut buf,
            )?;
        }
        for (version, (body, stored_at)) in &self.rule_versions {
            put(
                Op::RuleVersionPut {
                    version: version.clone(),
                    body: body.clone(),
                    stored_at: *stored_at,
                },
                &mut buf,
            )?;
        }
        for (seq, body) in &self.activations {
            put(
                Op::ActivationPut {
                    seq: *seq,
                    body: body.clone(),
                },
                &mut buf,
            )?;
        }
        if !buf.is_empty() {
            emit(&buf)?;
        }
        Ok(())
    }
}
