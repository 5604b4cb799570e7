//! The embedded store's data, held in memory: every table the ports need. The tables change
//! only by applying [`Op`]s, the same ops whether a port has just made them or they are
//! read back from the log, so a store reopened from its file is the store that was closed.
//!
//! Audit entries and recorded decisions are history that only grows; their bodies stay in
//! the file ([`Cold::Disk`]) and only their index is in memory.

use super::codec::{put_bytes, put_i64, put_str, put_u64, DecodeError, Reader};
use super::log::WindowReader;
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
    /// The state ([`super::state_codec`]: binary, or JSON from an earlier store).
    pub body: Vec<u8>,
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

// The encodings of the ops a snapshot writes most of, from borrowed values (a snapshot
// encodes the tables without copying them into ops first).

fn put_idem(out: &mut Vec<u8>, key: &str, idem: &Idem) {
    out.push(1);
    put_str(out, key);
    out.push(u8::from(idem.completed));
    put_i64(out, idem.locked_until);
    put_i64(out, idem.expires_at);
    put_str(out, &idem.outcome);
}

fn put_entity(out: &mut Vec<u8>, key: &str, entity: &Entity) {
    out.push(4);
    put_str(out, key);
    put_u64(out, entity.version);
    put_bytes(out, &entity.body);
}

fn put_xref(out: &mut Vec<u8>, source: &str, entity_key: &str) {
    out.push(5);
    put_str(out, source);
    put_str(out, entity_key);
}

/// A body kept in the file: returns where it starts in `out` and its length.
fn put_body(out: &mut Vec<u8>, body: &[u8]) -> (usize, usize) {
    put_u64(out, body.len() as u64);
    let at = out.len();
    out.extend_from_slice(body);
    (at, body.len())
}

fn put_audit(out: &mut Vec<u8>, subject: &str, body: &[u8]) -> (usize, usize) {
    out.push(8);
    put_str(out, subject);
    put_body(out, body)
}

fn put_decision(out: &mut Vec<u8>, id: &str, at: i64, body: &[u8]) -> (usize, usize) {
    out.push(20);
    put_str(out, id);
    put_i64(out, at);
    put_body(out, body)
}

fn put_msg(
    out: &mut Vec<u8>,
    queue: QueueName,
    seq: u64,
    group: &str,
    dedup_id: &str,
    message_id: &str,
    body: &str,
) {
    out.push(12);
    out.push(queue_index(queue) as u8);
    put_u64(out, seq);
    put_str(out, group);
    put_str(out, dedup_id);
    put_str(out, message_id);
    put_str(out, body);
}

fn put_dedup(out: &mut Vec<u8>, queue: QueueName, dedup_id: &str, expires_at: i64) {
    out.push(16);
    out.push(queue_index(queue) as u8);
    put_str(out, dedup_id);
    put_i64(out, expires_at);
}

/// Where compaction copied a body kept in the file: from the offset in the old file to the
/// one in the new.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Moved {
    from: u64,
    to: u64,
    len: u32,
}

/// Bodies kept in the file by offset, then those still in memory (the newest).
fn file_order(c: &Cold) -> u64 {
    match c {
        Cold::Disk { offset, .. } => *offset,
        Cold::Mem(_) => u64::MAX,
    }
}

/// A body, with its offset when it is read from the file.
fn cold_body<'a>(
    c: &'a Cold,
    file: &'a mut WindowReader,
) -> std::io::Result<(Option<u64>, &'a [u8])> {
    match c {
        Cold::Mem(s) => Ok((None, s.as_bytes())),
        Cold::Disk { offset, len } => Ok((Some(*offset), file.get(*offset, *len as usize)?)),
    }
}

impl Op {
    /// Appends the op's encoding to `out`. For an audit entry or a decision, returns where
    /// its body starts in `out` and its length.
    pub fn encode(&self, out: &mut Vec<u8>) -> Option<(usize, usize)> {
        // A body is encoded only from memory (compaction reads those in the file itself).
        fn body(b: &Cold) -> Option<&[u8]> {
            match b {
                Cold::Mem(s) => Some(s.as_bytes()),
                Cold::Disk { .. } => None,
            }
        }
        match self {
            Op::IdemPut { key, idem } => put_idem(out, key, idem),
            Op::IdemDel { key } => {
                out.push(2);
                put_str(out, key);
            }
            Op::IdemSweep { now } => {
                out.push(3);
                put_i64(out, *now);
            }
            Op::EntityPut { key, entity } => put_entity(out, key, entity),
            Op::XrefPut { source, entity_key } => put_xref(out, source, entity_key),
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
            Op::AuditAdd { subject, body: b } => {
                let b = body(b);
                let at = put_audit(out, subject, b.unwrap_or_default());
                return b.map(|_| at);
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
            } => put_msg(out, *queue, *seq, group, dedup_id, message_id, body),
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
            } => put_dedup(out, *queue, dedup_id, *expires_at),
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
            Op::DecisionAdd { id, at, body: b } => {
                let b = body(b);
                let place = put_decision(out, id, *at, b.unwrap_or_default());
                return b.map(|_| place);
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
                    body: r.bytes()?.to_vec(),
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
                        // The typed value went with the delivery (the consumer takes it;
                        // a later delivery parses the body).
                        m.typed = None;
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

    /// The ops that rebuild these tables from nothing, passed to `emit` in frames of about
    /// `frame` bytes (`emit` answers where a frame's payload landed), the bodies kept in
    /// the file copied from `file` in the order of their offsets. Returns where each of
    /// those bodies went, for [`Tables::relocate_cold`].
    pub fn snapshot(
        &self,
        frame: usize,
        file: &mut WindowReader,
        emit: &mut dyn FnMut(&[u8]) -> std::io::Result<u64>,
    ) -> std::io::Result<Vec<Moved>> {
        let mut buf = Vec::with_capacity(frame + 4096);
        let mut placed = Vec::new();
        // Bodies in `buf` (by their old offset), placed once its frame is written.
        let mut pending: Vec<(u64, usize, usize)> = Vec::new();
        let mut write = |buf: &mut Vec<u8>, pending: &mut Vec<(u64, usize, usize)>| {
            let base = emit(buf)?;
            placed.extend(pending.drain(..).map(|(from, pos, len)| Moved {
                from,
                to: base + pos as u64,
                len: len as u32,
            }));
            buf.clear();
            std::io::Result::Ok(())
        };
        // After each op: its body to place, and the frame written once full.
        let mut next =
            |buf: &mut Vec<u8>, body: Option<(u64, usize, usize)>| -> std::io::Result<()> {
                pending.extend(body);
                if buf.len() >= frame {
                    write(buf, &mut pending)?;
                }
                Ok(())
            };
        // The big tables are encoded from where they are; the rest through ops.
        type Next<'a> =
            dyn FnMut(&mut Vec<u8>, Option<(u64, usize, usize)>) -> std::io::Result<()> + 'a;
        fn put(op: Op, buf: &mut Vec<u8>, next: &mut Next<'_>) -> std::io::Result<()> {
            op.encode(buf);
            next(buf, None)
        }
        for (key, idem) in &self.idem {
            put_idem(&mut buf, key, idem);
            next(&mut buf, None)?;
        }
        for (key, entity) in &self.entity {
            put_entity(&mut buf, key, entity);
            next(&mut buf, None)?;
        }
        for (source, entity_key) in &self.xref {
            put_xref(&mut buf, source, entity_key);
            next(&mut buf, None)?;
        }
        for ((dependency, id), parked) in &self.parked {
            put(
                Op::ParkPut {
                    dependency: dependency.clone(),
                    id: id.clone(),
                    parked: parked.clone(),
                },
                &mut buf,
                &mut next,
            )?;
        }
        // The audit trail in the order it is in the file, so its bodies are read in one
        // pass (each subject's entries are in the file in their order, which a replay
        // keeps; entries still in memory sort last, in their order, as the sort is
        // stable); should a subject's be otherwise, subject by subject.
        let mut audit: Vec<(&str, &Cold)> = self
            .audit
            .iter()
            .flat_map(|(s, entries)| entries.iter().map(move |c| (s.as_str(), c)))
            .collect();
        let in_order = self
            .audit
            .values()
            .all(|e| e.windows(2).all(|w| file_order(&w[0]) <= file_order(&w[1])));
        if in_order {
            audit.sort_by_key(|(_, c)| file_order(c));
        }
        for (subject, c) in audit {
            let (from, body) = cold_body(c, file)?;
            let (pos, len) = put_audit(&mut buf, subject, body);
            next(&mut buf, from.map(|from| (from, pos, len)))?;
        }
        for ((account, order), amount) in &self.open_order {
            put(
                Op::OpenOrderPut {
                    account: account.clone(),
                    order: order.clone(),
                    amount: amount.clone(),
                },
                &mut buf,
                &mut next,
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
                &mut next,
            )?;
        }
        for (i, q) in self.queues.iter().enumerate() {
            let queue = QueueName::ALL[i];
            for (seq, m) in &q.messages {
                put_msg(
                    &mut buf,
                    queue,
                    *seq,
                    &m.group,
                    &m.dedup_id,
                    &m.message_id,
                    &m.body,
                );
                next(&mut buf, None)?;
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
                        &mut next,
                    )?;
                }
            }
            for (dedup_id, expires_at) in &q.dedup {
                put_dedup(&mut buf, queue, dedup_id, *expires_at);
                next(&mut buf, None)?;
            }
        }
        for (seq, dead) in &self.dead {
            put(
                Op::DeadAdd {
                    seq: *seq,
                    dead: dead.clone(),
                },
                &mut buf,
                &mut next,
            )?;
        }
        // Decisions too (any order rebuilds the same map).
        let mut decisions: Vec<_> = self.decisions.iter().collect();
        decisions.sort_by_key(|(_, c)| file_order(c));
        for ((at, id), c) in decisions {
            let (from, body) = cold_body(c, file)?;
            let (pos, len) = put_decision(&mut buf, id, *at, body);
            next(&mut buf, from.map(|from| (from, pos, len)))?;
        }
        for (version, (body, stored_at)) in &self.rule_versions {
            put(
                Op::RuleVersionPut {
                    version: version.clone(),
                    body: body.clone(),
                    stored_at: *stored_at,
                },
                &mut buf,
                &mut next,
            )?;
        }
        for (seq, body) in &self.activations {
            put(
                Op::ActivationPut {
                    seq: *seq,
                    body: body.clone(),
                },
                &mut buf,
                &mut next,
            )?;
        }
        if !buf.is_empty() {
            write(&mut buf, &mut pending)?;
        }
        Ok(placed)
    }

    /// Points every audit entry and decision kept in the file at its place in the file
    /// [`Tables::snapshot`] wrote (the tables unchanged since). False if one was not moved
    /// (then the file is to be read again).
    #[must_use]
    pub fn relocate_cold(&mut self, moved: &mut [Moved]) -> bool {
        moved.sort_unstable_by_key(|m| m.from);
        let cold = self
            .audit
            .values_mut()
            .flat_map(|entries| entries.iter_mut())
            .chain(self.decisions.values_mut());
        for c in cold {
            if let Cold::Disk { offset, .. } = *c {
                let Ok(i) = moved.binary_search_by_key(&offset, |m| m.from) else {
                    return false;
                };
                *c = Cold::Disk {
                    offset: moved[i].to,
                    len: moved[i].len,
                };
            }
        }
        true
    }
}
