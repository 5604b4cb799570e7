//! Queue ports on the embedded tables, with SQS FIFO semantics: per-group order (a group
//! with a message in flight yields nothing more), a deduplication window, visibility
//! timeouts, and a receive limit after which a message moves to the dead-letter queue.

use super::tables::{queue_index, Op, Tables};
use super::{ms_to_time, now_ms, EmbeddedStore};
use crate::error::{QueueError, StoreError};
use crate::ports::{
    Consumer, DeadLetter, DeadLetterSink, DeadLetters, Delivery, OutMessage, Publisher, QueueName,
};
use async_trait::async_trait;
use std::collections::HashSet;
use std::time::Duration;

/// Queue behaviour, as configured on the SQS queues in `template.yaml`.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    /// Receives after which a message goes to the dead-letter queue (`maxReceiveCount`).
    pub max_receives: u32,
    /// Deduplication window (SQS FIFO: 5 minutes).
    pub dedup_window: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_receives: 5,
            dedup_window: Duration::from_secs(300),
        }
    }
}

fn backend(queue: QueueName, e: impl std::fmt::Display) -> QueueError {
    QueueError::Backend {
        queue: queue.to_string(),
        message: e.to_string(),
    }
}

/// A store failure inside a queue operation, named after the queue.
struct Failed(QueueError);

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Failed(QueueError::Backend {
            queue: String::new(),
            message: e.to_string(),
        })
    }
}

impl EmbeddedStore {
    /// A write on the queue tables (see [`EmbeddedStore::write`]).
    fn queue_write<T>(
        &self,
        queue: QueueName,
        decide: impl FnOnce(&Tables) -> Result<(Vec<Op>, T), QueueError>,
    ) -> Result<T, QueueError> {
        self.write(|t| decide(t).map_err(Failed))
            .map_err(|Failed(e)| match e {
                QueueError::Backend { queue: q, message } if q.is_empty() => {
                    backend(queue, message)
                }
                other => other,
            })
    }
}

fn unknown_receipt(queue: QueueName, receipt: &str) -> QueueError {
    QueueError::UnknownReceipt {
        queue: queue.to_string(),
        receipt: receipt.to_string(),
    }
}

/// The message a receipt (`<unique prefix>-<seq>`) was issued for.
fn receipt_seq(queue: QueueName, receipt: &str) -> Result<u64, QueueError> {
    receipt
        .rsplit_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .ok_or_else(|| unknown_receipt(queue, receipt))
}

/// A unique id: process, clock and a counter (several processes may share the file).
/// The process id is read once: `std::process::id` is a system call each time, and ids
/// are made for every message sent and received.
fn new_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = *PID.get_or_init(std::process::id);
    format!("{prefix}-{pid:x}-{:x}-{n:x}", now_ms())
}

/// Whether `receipt` is message `seq`'s latest (a receipt from before a retry, or of a
/// message since acknowledged, is not).
fn current(t: &Tables, queue: QueueName, seq: u64, receipt: &str) -> Result<(), QueueError> {
    let latest = t.queues[queue_index(queue)]
        .messages
        .get(&seq)
        .is_some_and(|m| m.receipt.as_deref() == Some(receipt));
    if latest {
        Ok(())
    } else {
        Err(unknown_receipt(queue, receipt))
    }
}

/// The ops that move message `seq` to the dead-letter queue.
fn to_dlq(t: &Tables, queue: QueueName, seq: u64, code: &str, reason: &str) -> Vec<Op> {
    let Some(m) = t.queues[queue_index(queue)].messages.get(&seq) else {
        return vec![];
    };
    let mut ops = Vec::with_capacity(2);
    if !t.dead_ids.contains_key(&m.message_id) {
        ops.push(Op::DeadAdd {
            seq: t.dead_seq + 1,
            dead: DeadLetter {
                message_id: m.message_id.clone(),
                queue,
                group: m.group.clone(),
                dedup_id: m.dedup_id.clone(),
                body: m.body.clone(),
                code: code.to_string(),
                reason: reason.to_string(),
                at: ms_to_time(now_ms()),
            },
        });
    }
    ops.push(Op::MsgDel {
        queue,
        seqs: vec![seq],
    });
    ops
}

/// The messages of one transaction being queued.
struct SendBatch {
    next_seq: u64,
    /// Deduplication ids queued in this transaction.
    fresh: HashSet<(QueueName, String)>,
    ops: Vec<Op>,
}

/// A send waiting for the next group commit.
pub(crate) struct PendingSend {
    queue: QueueName,
    messages: Vec<OutMessage>,
    done: tokio::sync::oneshot::Sender<Result<(), QueueError>>,
}

impl EmbeddedStore {
    /// Adds the ops that queue `messages` to `batch`: each is new unless its
    /// deduplication id was seen inside the window, or earlier in the batch.
    fn message_ops(
        &self,
        t: &Tables,
        queue: QueueName,
        messages: Vec<OutMessage>,
        now: i64,
        batch: &mut SendBatch,
    ) {
        let window = i64::try_from(self.queue.dedup_window.as_millis()).unwrap_or(i64::MAX);
        let q = &t.queues[queue_index(queue)];
        for m in messages {
            let seen = q.dedup.get(&m.dedup_id).is_some_and(|exp| *exp > now)
                || !batch.fresh.insert((queue, m.dedup_id.clone()));
            if seen {
                continue;
            }
            batch.next_seq += 1;
            batch.ops.push(Op::DedupPut {
                queue,
                dedup_id: m.dedup_id.clone(),
                expires_at: now + window,
            });
            batch.ops.push(Op::MsgAdd {
                queue,
                seq: batch.next_seq,
                group: m.group,
                dedup_id: m.dedup_id,
                message_id: new_id("msg"),
                body: m.body,
                typed: m.typed,
            });
        }
    }

    /// Queues the sends of one transaction.
    fn write_sends(
        &self,
        first: QueueName,
        sends: impl Iterator<Item = (QueueName, Vec<OutMessage>)>,
    ) -> Result<(), QueueError> {
        let now = now_ms();
        // Expired deduplication entries are dropped at most once a minute (expiry is also
        // checked on every send, so a late sweep never lets a duplicate in).
        let sweep = super::due(&self.next_sweep, now, 60_000);
        self.queue_write(first, |t| {
            let mut batch = SendBatch {
                next_seq: t.msg_seq,
                fresh: HashSet::new(),
                ops: Vec::new(),
            };
            for (queue, messages) in sends {
                self.message_ops(t, queue, messages, now, &mut batch);
            }
            if sweep {
                batch.ops.push(Op::DedupSweep { now });
            }
            Ok((batch.ops, ()))
        })
    }

    /// Writes every send waiting for a group commit in one transaction and answers each.
    /// Nothing here awaits, so a caller dropped half-way cannot strand the others.
    fn flush_sends(&self) {
        let batch: Vec<PendingSend> = match self.pending_sends.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        let Some(first) = batch.first().map(|p| p.queue) else {
            return;
        };
        let (sends, answers): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|p| ((p.queue, p.messages), (p.queue, p.done)))
            .unzip();
        // The failure's text, for every sender in the group (the write is all or nothing).
        let result: Result<(), String> = self
            .write_sends(first, sends.into_iter())
            .map(|()| {
                self.group_commits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .map_err(|e| match e {
                QueueError::Backend { message, .. } => message,
                other => other.to_string(),
            });
        for (queue, done) in answers {
            let answer = result.clone().map_err(|message| QueueError::Backend {
                queue: queue.to_string(),
                message,
            });
            // A sender that went away (its request dropped) is not waiting for the answer.
            let _ = done.send(answer);
        }
    }
}

#[async_trait]
impl Publisher for EmbeddedStore {
    /// Inside a unit of work the messages join the unit's transaction. Otherwise (a
    /// webhook being answered) the send is durable when it returns, and sends that arrive
    /// together share one commit: each adds itself to the waiting list and lets the other
    /// ready tasks run once, then the first to come back writes the whole list.
    async fn send(&self, queue: QueueName, messages: &[OutMessage]) -> Result<(), QueueError> {
        self.send_owned(queue, messages.to_vec()).await
    }

    async fn send_owned(
        &self,
        queue: QueueName,
        messages: Vec<OutMessage>,
    ) -> Result<(), QueueError> {
        if messages.is_empty() {
            return Ok(());
        }
        if messages
            .iter()
            .any(|m| m.group.is_empty() || m.dedup_id.is_empty())
        {
            return Err(QueueError::Rejected {
                queue: queue.to_string(),
                message: "a FIFO message needs a group and a deduplication id".into(),
            });
        }
        if self.in_unit() {
            return self.write_sends(queue, std::iter::once((queue, messages)));
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        self.pending_sends
            .lock()
            .map_err(|e| backend(queue, e))?
            .push(PendingSend {
                queue,
                messages,
                done,
            });
        tokio::task::yield_now().await;
        self.flush_sends();
        answer
            .await
            .unwrap_or_else(|_| Err(backend(queue, "the group commit ended without an answer")))
    }
}

#[async_trait]
impl Consumer for EmbeddedStore {
    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let now = now_ms();
        let vis = i64::try_from(visibility.as_millis()).unwrap_or(i64::MAX);
        let max_receives = self.queue.max_receives;
        let receipt = new_id("rcpt");
        self.queue_write(queue, |t| {
            // Walk the queue in order only as far as it takes to fill the batch.
            let mut picked = Vec::new();
            let mut ops = Vec::new();
            let mut blocked: HashSet<&str> = HashSet::new();
            let mut dead_seq = t.dead_seq;
            for (seq, m) in &t.queues[queue_index(queue)].messages {
                if picked.len() >= max {
                    break;
                }
                if blocked.contains(m.group.as_str()) {
                    continue;
                }
                if m.visible_at > now {
                    // In flight or delayed: the rest of its group waits behind it.
                    blocked.insert(&m.group);
                    continue;
                }
                if m.receive_count >= max_receives {
                    let reason = if m.last_error.is_empty() {
                        format!("received {} times without success", m.receive_count)
                    } else {
                        m.last_error.clone()
                    };
                    for op in to_dlq(t, queue, *seq, "max_receives_exceeded", &reason) {
                        ops.push(match op {
                            Op::DeadAdd { dead, .. } => {
                                dead_seq += 1;
                                Op::DeadAdd {
                                    seq: dead_seq,
                                    dead,
                                }
                            }
                            other => other,
                        });
                    }
                    continue;
                }
                picked.push(Delivery {
                    message_id: m.message_id.clone(),
                    receipt: format!("{receipt}-{seq}"),
                    group: m.group.clone(),
                    dedup_id: m.dedup_id.clone(),
                    body: m.body.clone(),
                    receive_count: m.receive_count + 1,
                    typed: crate::ports::TypedSlot::new(m.typed.clone()),
                });
            }
            if !picked.is_empty() {
                let seqs = picked
                    .iter()
                    .map(|d| receipt_seq(queue, &d.receipt))
                    .collect::<Result<Vec<_>, _>>()?;
                ops.push(Op::MsgReceive {
                    queue,
                    receipt: receipt.clone(),
                    visible_at: now.saturating_add(vis),
                    seqs,
                });
            }
            Ok((ops, picked))
        })
    }

    async fn ack(&self, queue: QueueName, receipt: &str) -> Result<(), QueueError> {
        self.ack_all(queue, &[receipt]).await
    }

    async fn ack_all(&self, queue: QueueName, receipts: &[&str]) -> Result<(), QueueError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let seqs = receipts
            .iter()
            .map(|r| receipt_seq(queue, r))
            .collect::<Result<Vec<_>, _>>()?;
        let missing = self.queue_write(queue, |t| {
            let q = &t.queues[queue_index(queue)];
            // Each receipt acknowledges its message only while it is the message's latest.
            let (found, missing): (Vec<_>, Vec<_>) =
                seqs.iter().zip(receipts).partition(|(seq, r)| {
                    q.messages
                        .get(seq)
                        .is_some_and(|m| m.receipt.as_deref() == Some(**r))
                });
            let ops = if found.is_empty() {
                vec![]
            } else {
                vec![Op::MsgDel {
                    queue,
                    seqs: found.into_iter().map(|(s, _)| *s).collect(),
                }]
            };
            Ok((
                ops,
                missing.into_iter().map(|(_, r)| *r).collect::<Vec<_>>(),
            ))
        })?;
        if !missing.is_empty() {
            return Err(QueueError::UnknownReceipt {
                queue: queue.to_string(),
                receipt: if receipts.len() == 1 {
                    receipts[0].to_string()
                } else {
                    format!("{} of {} receipts", missing.len(), receipts.len())
                },
            });
        }
        Ok(())
    }

    async fn retry(
        &self,
        queue: QueueName,
        message: &Delivery,
        delay: Duration,
        reason: &str,
    ) -> Result<(), QueueError> {
        // Past the limit, the next receive moves it to the dead-letter queue with `reason`.
        let receipt = message.receipt.as_str();
        let at = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
        let seq = receipt_seq(queue, receipt)?;
        self.queue_write(queue, |t| {
            current(t, queue, seq, receipt)?;
            Ok((
                vec![Op::MsgRetry {
                    queue,
                    seq,
                    visible_at: at,
                    last_error: reason.to_string(),
                }],
                (),
            ))
        })
    }

    async fn depth(&self, queue: QueueName) -> Result<usize, QueueError> {
        self.read(|e| Ok(e.tables.queues[queue_index(queue)].messages.len()))
            .map_err(|e| backend(queue, e))
    }

    async fn dead_letter(
        &self,
        queue: QueueName,
        message: &Delivery,
        code: &str,
        reason: &str,
    ) -> Result<(), QueueError> {
        let receipt = message.receipt.as_str();
        let seq = receipt_seq(queue, receipt)?;
        self.queue_write(queue, |t| {
            current(t, queue, seq, receipt)?;
            Ok((to_dlq(t, queue, seq, code, reason), ()))
        })
    }
}

#[async_trait]
impl DeadLetters for EmbeddedStore {
    async fn list(&self, queue: QueueName) -> Result<Vec<DeadLetter>, QueueError> {
        self.read(|e| {
            Ok(e.tables
                .dead
                .values()
                .filter(|d| d.queue == queue)
                .cloned()
                .collect())
        })
        .map_err(|e| backend(queue, e))
    }

    async fn replay(&self, queue: QueueName, ids: &[String]) -> Result<usize, QueueError> {
        self.queue_write(queue, |t| {
            let mut ops = Vec::new();
            let mut next_seq = t.msg_seq;
            let mut moved = HashSet::new();
            for id in ids {
                let Some(d) = t
                    .dead_ids
                    .get(id)
                    .and_then(|seq| t.dead.get(seq))
                    .filter(|d| d.queue == queue && !moved.contains(id))
                else {
                    continue;
                };
                // Back onto the queue as a new message (not deduplicated against its first
                // send).
                moved.insert(id);
                next_seq += 1;
                ops.push(Op::MsgAdd {
                    queue,
                    seq: next_seq,
                    group: d.group.clone(),
                    dedup_id: d.dedup_id.clone(),
                    message_id: d.message_id.clone(),
                    body: d.body.clone(),
                    typed: None,
                });
                ops.push(Op::DeadDel {
                    message_id: id.clone(),
                });
            }
            Ok((ops, moved.len()))
        })
    }
}

#[async_trait]
impl DeadLetterSink for EmbeddedStore {
    async fn bury(
        &self,
        queue: QueueName,
        message: &Delivery,
        code: &str,
        reason: &str,
    ) -> Result<(), QueueError> {
        self.queue_write(queue, |t| {
            let ops = if t.dead_ids.contains_key(&message.message_id) {
                vec![]
            } else {
                vec![Op::DeadAdd {
                    seq: t.dead_seq + 1,
                    dead: DeadLetter {
                        message_id: message.message_id.clone(),
                        queue,
                        group: message.group.clone(),
                        dedup_id: message.dedup_id.clone(),
                        body: message.body.clone(),
                        code: code.to_string(),
                        reason: reason.to_string(),
                        at: ms_to_time(now_ms()),
                    },
                }]
            };
            Ok((ops, ()))
        })
    }
    fn max_receives(&self) -> u32 {
        self.queue.max_receives
    }
}
