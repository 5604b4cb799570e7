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

fn new_id(prefix: &str, seq: i64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{seq}-{}-{n}", now_ms())
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
         SELECT message_id, queue, group_id, dedup_id, body, ?2, ?3, ?4 FROM queue WHERE seq = ?1",
        params![seq, code, reason, now_ms()],
    )
    .map_err(|e| backend(queue, e))?;
    tx.exec("DELETE FROM queue WHERE seq = ?1", params![seq])
        .map_err(|e| backend(queue, e))?;
    Ok(())
}

#[async_trait]
impl Publisher for EmbeddedStore {
    async fn send(&self, queue: QueueName, messages: &[OutMessage]) -> Result<(), QueueError> {
        let now = now_ms();
        let window = i64::try_from(self.queue.dedup_window.as_millis()).unwrap_or(i64::MAX);
        let conn = self.lock().map_err(|e| backend(queue, e))?;
        let tx = Tx::begin(&conn).map_err(|e| backend(queue, e))?;
        for m in messages {
            if m.group.is_empty() || m.dedup_id.is_empty() {
                return Err(QueueError::Rejected {
                    queue: queue.to_string(),
                    message: "a FIFO message needs a group and a deduplication id".into(),
                });
            }
            let seen: Option<i64> = tx
                .row(
                    "SELECT expires_at FROM queue_dedup WHERE queue = ?1 AND dedup_id = ?2",
                    params![queue.as_str(), m.dedup_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| backend(queue, e))?;
            if matches!(seen, Some(exp) if exp > now) {
                continue;
            }
            tx.exec(
                "INSERT INTO queue_dedup (queue, dedup_id, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(queue, dedup_id) DO UPDATE SET expires_at = ?3",
                params![queue.as_str(), m.dedup_id, now + window],
            )
            .map_err(|e| backend(queue, e))?;
            tx.exec(
                "INSERT INTO queue (queue, group_id, dedup_id, message_id, body)
                 VALUES (?1, ?2, ?3, '', ?4)",
                params![queue.as_str(), m.group, m.dedup_id, m.body],
            )
            .map_err(|e| backend(queue, e))?;
            let seq = tx.last_insert_rowid();
            tx.exec(
                "UPDATE queue SET message_id = ?2 WHERE seq = ?1",
                params![seq, new_id("msg", seq)],
            )
            .map_err(|e| backend(queue, e))?;
        }
        // Expired deduplication entries are swept at most once a second (expiry is also
        // checked on every send, so a late sweep never lets a duplicate through).
        let due = self.next_sweep.load(std::sync::atomic::Ordering::Relaxed);
        if now >= due {
            self.next_sweep
                .store(now + 1000, std::sync::atomic::Ordering::Relaxed);
            tx.exec(
                "DELETE FROM queue_dedup WHERE expires_at <= ?1",
                params![now],
            )
            .map_err(|e| backend(queue, e))?;
        }
        tx.commit().map_err(|e| backend(queue, e))
    }
}

type Row = (
    i64,
    String,
    String,
    String,
    String,
    u32,
    i64,
    Option<String>,
    String,
);

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
        let rows: Vec<Row> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, group_id, dedup_id, message_id, body, receive_count, visible_at,
                            receipt, last_error
                     FROM queue WHERE queue = ?1 ORDER BY seq",
                )
                .map_err(|e| backend(queue, e))?;
            let it = stmt
                .query_map(params![queue.as_str()], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                })
                .map_err(|e| backend(queue, e))?;
            it.collect::<Result<_, _>>()
                .map_err(|e| backend(queue, e))?
        };
        let mut blocked: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for (seq, group, dedup, message_id, body, count, visible_at, _receipt, last_error) in rows {
            if out.len() >= max {
                break;
            }
            if blocked.contains(&group) {
                continue;
            }
            if visible_at > now {
                // In flight or delayed: the rest of its group waits behind it.
                blocked.insert(group);
                continue;
            }
            if count >= max_receives {
                let reason = if last_error.is_empty() {
                    format!("received {count} times without success")
                } else {
                    last_error
                };
                move_to_dlq(&tx, queue, seq, "max_receives_exceeded", &reason)?;
                continue;
            }
            let receipt = new_id("rcpt", seq);
            tx.exec(
                "UPDATE queue SET receive_count = receive_count + 1, visible_at = ?2, receipt = ?3
                 WHERE seq = ?1",
                params![seq, now + vis, receipt],
            )
            .map_err(|e| backend(queue, e))?;
            out.push(Delivery {
                message_id,
                receipt,
                group,
                dedup_id: dedup,
                body,
                receive_count: count + 1,
            });
        }
        tx.commit().map_err(|e| backend(queue, e))?;
        Ok(out)
    }

    async fn ack(&self, queue: QueueName, receipt: &str) -> Result<(), QueueError> {
        let conn = self.lock().map_err(|e| backend(queue, e))?;
        let n = conn
            .execute(
                "DELETE FROM queue WHERE queue = ?1 AND receipt = ?2",
                params![queue.as_str(), receipt],
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

    async fn retry(
        &self,
        queue: QueueName,
        receipt: &str,
        delay: Duration,
        reason: &str,
    ) -> Result<(), QueueError> {
        let at = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
        let conn = self.lock().map_err(|e| backend(queue, e))?;
        let n = conn
            .execute(
                "UPDATE queue SET visible_at = ?3, receipt = NULL, last_error = ?4
                 WHERE queue = ?1 AND receipt = ?2",
                params![queue.as_str(), receipt, at, reason],
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
                "SELECT COUNT(*) FROM queue WHERE queue = ?1",
                params![queue.as_str()],
                |r| r.get(0),
            )
            .map_err(|e| backend(queue, e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn dead_letter(
        &self,
        queue: QueueName,
        receipt: &str,
        code: &str,
        reason: &str,
    ) -> Result<(), QueueError> {
        let conn = self.lock().map_err(|e| backend(queue, e))?;
        let tx = Tx::begin(&conn).map_err(|e| backend(queue, e))?;
        let seq: Option<i64> = tx
            .row(
                "SELECT seq FROM queue WHERE queue = ?1 AND receipt = ?2",
                params![queue.as_str(), receipt],
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
                    "INSERT INTO queue (queue, group_id, dedup_id, message_id, body)
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
}
