//! Queue ports on SQLite, with SQS FIFO semantics: per-group order (a group with a
//! message in flight yields nothing more), a deduplication window, visibility timeouts,
//! and a receive limit after which a message moves to the dead-letter queue.

use super::{ms_to_time, now_ms, Cached, EmbeddedStore, Tx};
use crate::error::QueueError;
use crate::ports::{
    Consumer, DeadLetter, DeadLetterSink, DeadLetters, Delivery, OutMessage, Publisher, QueueName,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
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

/// The message a receipt (`<unique prefix>-<seq>`) was issued for.
fn receipt_seq(queue: QueueName, receipt: &str) -> Result<i64, QueueError> {
    receipt
        .rsplit_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .ok_or_else(|| QueueError::UnknownReceipt {
            queue: queue.to_string(),
            receipt: receipt.to_string(),
        })
}

/// A unique id: process, clock and a counter (several processes may share the file).
fn new_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}-{:x}-{n:x}", std::process::id(), now_ms())
}

fn move_to_dlq(
    tx: &Connection,
    queue: QueueName,
    seq: i64,
    code: &str,
    reason: &str,
) -> Result<(), QueueError> {
    tx.exec(
        "INSERT OR IGNORE INTO dead_letter (message_id, queue, group_id, dedup_id, body, code, reason, at)
         SELECT message_id, queue, group_id, dedup_id, body, ?2, ?3, ?4 FROM message WHERE seq = ?1",
        params![seq, code, reason, now_ms()],
    )
    .map_err(|e| backend(queue, e))?;
    tx.exec("DELETE FROM message WHERE seq = ?1", params![seq])
        .map_err(|e| backend(queue, e))?;
    Ok(())
}

/// A send waiting for the next group commit.
pub(crate) struct PendingSend {
    queue: QueueName,
    messages: Vec<OutMessage>,
    done: tokio::sync::oneshot::Sender<Result<(), QueueError>>,
}

impl EmbeddedStore {
    /// Writes `messages` in the open transaction: each is new unless its deduplication id
    /// was seen inside the window.
    fn write_messages(
        &self,
        tx: &Connection,
        queue: QueueName,
        messages: &[OutMessage],
        now: i64,
    ) -> Result<(), QueueError> {
        let window = i64::try_from(self.queue.dedup_window.as_millis()).unwrap_or(i64::MAX);
        for m in messages {
            // Fresh if never seen, or seen longer ago than the window: one conditional write.
            let fresh = tx
                .exec(
                    "INSERT INTO message_dedup (queue, dedup_id, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(queue, dedup_id) DO UPDATE SET expires_at = ?3
                     WHERE expires_at <= ?4",
                    params![queue.as_str(), m.dedup_id, now + window, now],
                )
                .map_err(|e| backend(queue, e))?;
            if fresh == 0 {
                continue;
            }
            tx.exec(
                "INSERT INTO message (queue, group_id, dedup_id, message_id, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![queue.as_str(), m.group, m.dedup_id, new_id("msg"), m.body],
            )
            .map_err(|e| backend(queue, e))?;
        }
        // Expired deduplication entries are swept (a table scan) at most once a minute;
        // expiry is also checked on every send, so a late sweep never lets a duplicate in.
        let due = self.next_sweep.load(std::sync::atomic::Ordering::Relaxed);
        if now >= due {
            self.next_sweep
                .store(now + 60_000, std::sync::atomic::Ordering::Relaxed);
            tx.exec(
                "DELETE FROM message_dedup WHERE expires_at <= ?1",
                params![now],
            )
            .map_err(|e| backend(queue, e))?;
        }
        Ok(())
    }

    /// Writes every send waiting for a group commit in one transaction and answers each.
    /// Nothing here awaits, so a caller dropped half-way cannot strand the others.
    fn flush_sends(&self) {
        let batch: Vec<PendingSend> = match self.pending_sends.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        let Some(first) = batch.first() else { return };
        let first_queue = first.queue;
        // The failure's text, for every sender in the group (the write is all or nothing).
        let result: Result<(), String> = (|| {
            let conn = self.lock().map_err(|e| backend(first_queue, e))?;
            let tx = Tx::begin(&conn).map_err(|e| backend(first_queue, e))?;
            let now = now_ms();
            for p in &batch {
                self.write_messages(&tx, p.queue, &p.messages, now)?;
            }
            self.group_commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tx.commit().map_err(|e| backend(first_queue, e))
        })()
        .map_err(|e| match e {
            QueueError::Backend { message, .. } => message,
            other => other.to_string(),
        });
        for p in batch {
            let answer = result.clone().map_err(|message| QueueError::Backend {
                queue: p.queue.to_string(),
                message,
            });
            // A sender that went away (its request dropped) is not waiting for the answer.
            let _ = p.done.send(answer);
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
            let conn = self.lock().map_err(|e| backend(queue, e))?;
            let tx = Tx::begin(&conn).map_err(|e| backend(queue, e))?;
            self.write_messages(&tx, queue, messages, now_ms())?;
            return tx.commit().map_err(|e| backend(queue, e));
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        self.pending_sends
            .lock()
            .map_err(|e| backend(queue, e))?
            .push(PendingSend {
                queue,
                messages: messages.to_vec(),
                done,
            });
        tokio::task::yield_now().await;
        self.flush_sends();
        answer
            .await
            .unwrap_or_else(|_| Err(backend(queue, "the group commit ended without an answer")))
    }
}

/// seq, group, deduplication id, message id, body, receive count, visible at, last error.
type Row = (i64, String, String, String, String, u32, i64, String);

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
        let conn = self.lock().map_err(|e| backend(queue, e))?;
        let tx = Tx::begin(&conn).map_err(|e| backend(queue, e))?;
        // Walk the queue in order only as far as it takes to fill the batch.
        let mut picked: Vec<Row> = Vec::new();
        let mut exhausted: Vec<(i64, String)> = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, group_id, dedup_id, message_id, body, receive_count, visible_at,
                            last_error
                     FROM message WHERE queue = ?1 ORDER BY seq",
                )
                .map_err(|e| backend(queue, e))?;
            let mut rows = stmt
                .query(params![queue.as_str()])
                .map_err(|e| backend(queue, e))?;
            let mut blocked: HashSet<String> = HashSet::new();
            while picked.len() < max {
                let Some(r) = rows.next().map_err(|e| backend(queue, e))? else {
                    break;
                };
                let row: Row = (
                    r.get(0).map_err(|e| backend(queue, e))?,
                    r.get(1).map_err(|e| backend(queue, e))?,
                    r.get(2).map_err(|e| backend(queue, e))?,
                    r.get(3).map_err(|e| backend(queue, e))?,
                    r.get(4).map_err(|e| backend(queue, e))?,
                    r.get(5).map_err(|e| backend(queue, e))?,
                    r.get(6).map_err(|e| backend(queue, e))?,
                    r.get(7).map_err(|e| backend(queue, e))?,
                );
                let (seq, group, _, _, _, count, visible_at, last_error) = &row;
                if blocked.contains(group) {
                    continue;
                }
                if *visible_at > now {
                    // In flight or delayed: the rest of its group waits behind it.
                    blocked.insert(group.clone());
                    continue;
                }
                if *count >= max_receives {
                    let reason = if last_error.is_empty() {
                        format!("received {count} times without success")
                    } else {
                        last_error.clone()
                    };
                    exhausted.push((*seq, reason));
                    continue;
                }
                picked.push(row);
            }
        }
        for (seq, reason) in &exhausted {
            move_to_dlq(&tx, queue, *seq, "max_receives_exceeded", reason)?;
        }
        let receipt = new_id("rcpt");
        if !picked.is_empty() {
            let seqs: Vec<i64> = picked.iter().map(|r| r.0).collect();
            tx.exec(
                "UPDATE message SET receive_count = receive_count + 1, visible_at = ?2,
                     receipt = ?3 || '-' || seq
                 WHERE seq IN (SELECT value FROM json_each(?1))",
                params![
                    serde_json::to_string(&seqs).unwrap_or_default(),
                    now + vis,
                    receipt
                ],
            )
            .map_err(|e| backend(queue, e))?;
        }
        tx.commit().map_err(|e| backend(queue, e))?;
        Ok(picked
            .into_iter()
            .map(
                |(seq, group, dedup_id, message_id, body, count, _, _)| Delivery {
                    message_id,
                    receipt: format!("{receipt}-{seq}"),
                    group,
                    dedup_id,
                    body,
                    receive_count: count + 1,
                },
            )
            .collect())
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
        let conn = self.lock().map_err(|e| backend(queue, e))?;
        let n = conn
            .exec(
                "DELETE FROM message WHERE seq IN (SELECT value FROM json_each(?2))
                 AND receipt IN (SELECT value FROM json_each(?3)) AND queue = ?1",
                params![
                    queue.as_str(),
                    serde_json::to_string(&seqs).unwrap_or_default(),
                    serde_json::to_string(receipts).unwrap_or_default()
                ],
            )
            .map_err(|e| backend(queue, e))?;
        if n < receipts.len() {
            return Err(QueueError::UnknownReceipt {
                queue: queue.to_string(),
                receipt: if receipts.len() == 1 {
                    receipts[0].to_string()
                } else {
                    format!("{} of {} receipts", receipts.len() - n, receipts.len())
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
        let conn = self.lock().map_err(|e| backend(queue, e))?;
        let n = conn
            .exec(
                "UPDATE message SET visible_at = ?4, receipt = NULL, last_error = ?5
                 WHERE seq = ?2 AND receipt = ?3 AND queue = ?1",
                params![queue.as_str(), seq, receipt, at, reason],
            )
            .map_err(|e| backend(queue, e))?;
        if n == 0 {
            return Err(QueueError::UnknownReceipt {
                queue: queue.to_string(),
                receipt: receipt.to_string(),
            });
        }
        Ok(())
    }

    async fn depth(&self, queue: QueueName) -> Result<usize, QueueError> {
        let conn = self.lock().map_err(|e| backend(queue, e))?;
        let n: i64 = conn
            .row(
                "SELECT COUNT(*) FROM message WHERE queue = ?1",
                params![queue.as_str()],
                |r| r.get(0),
            )
            .map_err(|e| backend(queue, e))?;
        Ok(usize::try_from(n).unwrap_or(0))
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
        let conn = self.lock().map_err(|e| backend(queue, e))?;
        let tx = Tx::begin(&conn).map_err(|e| backend(queue, e))?;
        let seq: Option<i64> = tx
            .row(
                "SELECT seq FROM message WHERE seq = ?2 AND receipt = ?3 AND queue = ?1",
                params![queue.as_str(), seq, receipt],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| backend(queue, e))?;
        let Some(seq) = seq else {
            return Err(QueueError::UnknownReceipt {
                queue: queue.to_string(),
                receipt: receipt.to_string(),
            });
        };
        move_to_dlq(&tx, queue, seq, code, reason)?;
        tx.commit().map_err(|e| backend(queue, e))
    }
}

#[async_trait]
impl DeadLetters for EmbeddedStore {
    async fn list(&self, queue: QueueName) -> Result<Vec<DeadLetter>, QueueError> {
        let conn = self.lock().map_err(|e| backend(queue, e))?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT message_id, group_id, dedup_id, body, code, reason, at
                 FROM dead_letter WHERE queue = ?1 ORDER BY seq",
            )
            .map_err(|e| backend(queue, e))?;
        let rows = stmt
            .query_map(params![queue.as_str()], |r| {
                Ok(DeadLetter {
                    message_id: r.get(0)?,
                    queue,
                    group: r.get(1)?,
                    dedup_id: r.get(2)?,
                    body: r.get(3)?,
                    code: r.get(4)?,
                    reason: r.get(5)?,
                    at: ms_to_time(r.get(6)?),
                })
            })
            .map_err(|e| backend(queue, e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| backend(queue, e))
    }

    async fn replay(&self, queue: QueueName, ids: &[String]) -> Result<usize, QueueError> {
        let conn = self.lock().map_err(|e| backend(queue, e))?;
        let tx = Tx::begin(&conn).map_err(|e| backend(queue, e))?;
        let mut n = 0;
        for id in ids {
            // Back onto the queue as a new message (not deduplicated against its first send).
            let moved = tx
                .execute(
                    "INSERT INTO message (queue, group_id, dedup_id, message_id, body)
                     SELECT queue, group_id, dedup_id, message_id, body FROM dead_letter
                     WHERE queue = ?1 AND message_id = ?2",
                    params![queue.as_str(), id],
                )
                .map_err(|e| backend(queue, e))?;
            if moved == 1 {
                tx.exec("DELETE FROM dead_letter WHERE message_id = ?1", params![id])
                    .map_err(|e| backend(queue, e))?;
                n += 1;
            }
        }
        tx.commit().map_err(|e| backend(queue, e))?;
        Ok(n)
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
        let conn = self.lock().map_err(|e| backend(queue, e))?;
        conn.exec(
            "INSERT OR IGNORE INTO dead_letter (message_id, queue, group_id, dedup_id, body, code, reason, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![message.message_id, queue.as_str(), message.group, message.dedup_id, message.body, code, reason, now_ms()],
        )
        .map_err(|e| backend(queue, e))?;
        Ok(())
    }
    fn max_receives(&self) -> u32 {
        self.queue.max_receives
    }
}
