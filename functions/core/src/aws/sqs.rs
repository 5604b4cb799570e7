//! The queue ports on SQS FIFO: `inbound`, `to-erp`, `to-crm`, each with a FIFO
//! dead-letter queue (redrive after `maxReceiveCount`). `MessageGroupId` is the entity
//! key, `MessageDeduplicationId` the deterministic event or command id; sends and
//! deletes are batched ten per request.
//!
//! A message dead-lettered by p2c carries its error code and reason as message
//! attributes (`p2c-code`, `p2c-reason`). That includes a message that fails on its last
//! allowed receive: p2c moves it itself, as `max_receives_exceeded` with the last error.
//! Only one the redrive policy moves (the function crashed or timed out on that receive)
//! arrives without them, and is listed as `max_receives_exceeded` with the receive count.

use super::{describe, Counters};
use crate::error::QueueError;
use crate::ports::{
    Consumer, DeadLetter, DeadLetterSink, DeadLetters, Delivery, OutMessage, Publisher, QueueName,
};
use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// SQS's limit on entries per batch request.
const BATCH: usize = 10;

/// Queue URLs of one deployment.
#[derive(Debug, Clone)]
pub struct QueueUrls {
    pub queues: BTreeMap<QueueName, String>,
    pub dead_letters: BTreeMap<QueueName, String>,
}

/// The SQS adapter. Cheap to clone; clones share the client and the counters.
#[derive(Clone)]
pub struct SqsQueues {
    client: Client,
    urls: Arc<QueueUrls>,
    counters: Arc<Counters>,
    max_receives: u32,
}

/// The redrive policies' `maxReceiveCount` unless told otherwise (`template.yaml`'s
/// `MaxReceives` parameter, passed to the functions as `P2C_MAX_RECEIVES`).
pub const DEFAULT_MAX_RECEIVES: u32 = 5;

fn err(queue: QueueName, op: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Backend {
        queue: queue.to_string(),
        message: format!("SQS {op}: {e}"),
    }
}

fn sdk_err<E: std::error::Error>(queue: QueueName, op: &str, e: &E) -> QueueError {
    err(queue, op, describe(e))
}

fn text(queue: QueueName, v: impl Into<String>) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .map_err(|e| err(queue, "MessageAttributeValue", e))
}

fn attr(m: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    m.attributes()
        .and_then(|a| a.get(&name))
        .map(String::as_str)
}

fn user_attr<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
}

/// The id a dead letter had on its own queue (the one `p2c dlq` shows and replays by):
/// recorded when p2c buried it, the message's own when the redrive policy moved it.
fn original_id(m: &Message) -> String {
    user_attr(m, "p2c-message-id")
        .or(m.message_id())
        .unwrap_or_default()
        .to_string()
}

impl SqsQueues {
    pub fn new(client: Client, urls: QueueUrls) -> Self {
        Self {
            client,
            urls: Arc::new(urls),
            counters: Arc::new(Counters::default()),
            max_receives: DEFAULT_MAX_RECEIVES,
        }
    }

    /// The queues' `maxReceiveCount`: on that receive, a failed message is moved to the
    /// dead-letter queue by us, with its reason, rather than by the redrive policy without.
    /// The queues' and dead-letter queues' URLs.
    pub fn urls(&self) -> &QueueUrls {
        &self.urls
    }

    pub fn with_max_receives(mut self, max_receives: u32) -> Self {
        self.max_receives = max_receives.max(1);
        self
    }

    /// Shares request counters with another adapter (one set of figures per deployment).
    pub fn with_counters(mut self, counters: Arc<Counters>) -> Self {
        self.counters = counters;
        self
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Creates the three FIFO queues and their FIFO dead-letter queues, named
    /// `<prefix>-<queue>.fifo` and `<prefix>-<queue>-dlq.fifo`, as `template.yaml`
    /// declares them (for tests and the demo against moto; in AWS the stack creates them).
    pub async fn create(
        client: Client,
        prefix: &str,
        max_receives: u32,
        visibility: Duration,
    ) -> Result<Self, QueueError> {
        let mut queues = BTreeMap::new();
        let mut dead_letters = BTreeMap::new();
        for q in QueueName::ALL {
            let dlq = client
                .create_queue()
                .queue_name(format!("{prefix}-{q}-dlq.fifo"))
                .attributes(QueueAttributeName::FifoQueue, "true")
                .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
                .send()
                .await
                .map_err(|e| sdk_err(q, "CreateQueue", &e))?
                .queue_url
                .unwrap_or_default();
            let arn = client
                .get_queue_attributes()
                .queue_url(&dlq)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .map_err(|e| sdk_err(q, "GetQueueAttributes", &e))?
                .attributes
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .unwrap_or_default();
            let redrive = serde_json::json!({
                "deadLetterTargetArn": arn,
                "maxReceiveCount": max_receives.to_string(),
            });
            let url = client
                .create_queue()
                .queue_name(format!("{prefix}-{q}.fifo"))
                .attributes(QueueAttributeName::FifoQueue, "true")
                .attributes(
                    QueueAttributeName::VisibilityTimeout,
                    visibility.as_secs().to_string(),
                )
                .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
                .send()
                .await
                .map_err(|e| sdk_err(q, "CreateQueue", &e))?
                .queue_url
                .unwrap_or_default();
            queues.insert(q, url);
            dead_letters.insert(q, dlq);
        }
        Ok(Self::new(
            client,
            QueueUrls {
                queues,
                dead_letters,
            },
        )
        .with_max_receives(max_receives))
    }

    fn url(&self, q: QueueName) -> Result<&str, QueueError> {
        self.urls
            .queues
            .get(&q)
            .map(String::as_str)
            .ok_or_else(|| err(q, "configuration", "no queue URL"))
    }

    fn dlq_url(&self, q: QueueName) -> Result<&str, QueueError> {
        self.urls
            .dead_letters
            .get(&q)
            .map(String::as_str)
            .ok_or_else(|| err(q, "configuration", "no dead-letter queue URL"))
    }

    /// Sends up to ten entries in one request; any failed entry fails the call.
    async fn send_batch(
        &self,
        queue: QueueName,
        url: &str,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<(), QueueError> {
        self.counters.request("SendMessageBatch");
        let out = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sdk_err(queue, "SendMessageBatch", &e))?;
        if let Some(f) = out.failed().first() {
            let message = format!(
                "{} message(s) not sent: {}: {}",
                out.failed().len(),
                f.code(),
                f.message().unwrap_or_default()
            );
            return Err(if f.sender_fault() {
                QueueError::Rejected {
                    queue: queue.to_string(),
                    message,
                }
            } else {
                err(queue, "SendMessageBatch", message)
            });
        }
        Ok(())
    }

    /// Deletes up to ten messages in one request; returns the receipts that failed.
    async fn delete_batch(
        &self,
        queue: QueueName,
        url: &str,
        receipts: &[&str],
    ) -> Result<Vec<String>, QueueError> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*r)
                    .build()
                    .map_err(|e| err(queue, "DeleteMessageBatch", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.counters.request("DeleteMessageBatch");
        let out = self
            .client
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sdk_err(queue, "DeleteMessageBatch", &e))?;
        Ok(out
            .failed()
            .iter()
            .filter_map(|f| f.id().parse::<usize>().ok())
            .filter_map(|i| receipts.get(i).map(|r| r.to_string()))
            .collect())
    }

    /// Every message on a dead-letter queue. SQS cannot peek: each is received (hidden
    /// for a short while) and then made visible again at once.
    async fn drain_view(&self, queue: QueueName) -> Result<Vec<Message>, QueueError> {
        let url = self.dlq_url(queue)?.to_string();
        let mut seen: HashMap<String, Message> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        loop {
            self.counters.request("ReceiveMessage");
            let got = self
                .client
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(BATCH as i32)
                .visibility_timeout(30)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| sdk_err(queue, "ReceiveMessage", &e))?
                .messages
                .unwrap_or_default();
            if got.is_empty() {
                break;
            }
            for m in got {
                let id = m.message_id().unwrap_or_default().to_string();
                if !seen.contains_key(&id) {
                    order.push(id.clone());
                }
                seen.insert(id, m);
            }
        }
        // Visible again for the next reader.
        let handles: Vec<(String, String)> = order
            .iter()
            .filter_map(|id| {
                seen.get(id)
                    .and_then(|m| m.receipt_handle())
                    .map(|r| (id.clone(), r.to_string()))
            })
            .collect();
        for chunk in handles.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (_, r))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(0)
                        .build()
                        .map_err(|e| err(queue, "ChangeMessageVisibilityBatch", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.counters.request("ChangeMessageVisibilityBatch");
            self.client
                .change_message_visibility_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_err(queue, "ChangeMessageVisibilityBatch", &e))?;
        }
        Ok(order
            .into_iter()
            .filter_map(|id| seen.remove(&id))
            .collect())
    }

    /// Puts a copy of a message on the dead-letter queue with its code and reason.
    async fn to_dead_letters(
        &self,
        queue: QueueName,
        message: &Delivery,
        code: &str,
        reason: &str,
    ) -> Result<(), QueueError> {
        let url = self.dlq_url(queue)?.to_string();
        // SQS caps a message attribute's value at the message size; keep reasons short.
        let reason: String = reason.chars().take(2000).collect();
        self.counters.request("SendMessage");
        self.client
            .send_message()
            .queue_url(url)
            .message_body(&message.body)
            .message_group_id(&message.group)
            // Idempotent per original message: burying it twice keeps one copy.
            .message_deduplication_id(crate::json::hash_parts(&[&message.message_id, "dlq"]))
            .message_attributes("p2c-code", text(queue, code)?)
            .message_attributes("p2c-reason", text(queue, reason)?)
            .message_attributes("p2c-message-id", text(queue, &message.message_id)?)
            .message_attributes("p2c-dedup-id", text(queue, &message.dedup_id)?)
            .message_attributes("p2c-at", text(queue, chrono::Utc::now().to_rfc3339())?)
            .send()
            .await
            .map_err(|e| sdk_err(queue, "SendMessage", &e))?;
        Ok(())
    }
}

#[async_trait]
impl Publisher for SqsQueues {
    async fn send(&self, queue: QueueName, messages: &[OutMessage]) -> Result<(), QueueError> {
        let url = self.url(queue)?.to_string();
        for chunk in messages.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&m.body)
                        .message_group_id(&m.group)
                        .message_deduplication_id(&m.dedup_id)
                        .build()
                        .map_err(|e| err(queue, "SendMessageBatch", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.send_batch(queue, &url, entries).await?;
        }
        Ok(())
    }
}

fn delivery(m: Message) -> Delivery {
    let group = attr(&m, MessageSystemAttributeName::MessageGroupId)
        .unwrap_or_default()
        .to_string();
    let dedup_id = attr(&m, MessageSystemAttributeName::MessageDeduplicationId)
        .unwrap_or_default()
        .to_string();
    let receive_count = attr(&m, MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    Delivery {
        message_id: m.message_id.unwrap_or_default(),
        receipt: m.receipt_handle.unwrap_or_default(),
        group,
        dedup_id,
        body: m.body.unwrap_or_default(),
        receive_count,
        typed: Default::default(),
    }
}

#[async_trait]
impl Consumer for SqsQueues {
    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let url = self.url(queue)?.to_string();
        let got = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, BATCH) as i32)
            .visibility_timeout(i32::try_from(visibility.as_secs()).unwrap_or(i32::MAX))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| sdk_err(queue, "ReceiveMessage", &e))?;
        let messages = got.messages.unwrap_or_default();
        // Empty receives are the poller idling, not work: counted apart.
        self.counters.request(if messages.is_empty() {
            "ReceiveMessage (empty)"
        } else {
            "ReceiveMessage"
        });
        Ok(messages.into_iter().map(delivery).collect())
    }

    async fn ack(&self, queue: QueueName, receipt: &str) -> Result<(), QueueError> {
        self.ack_all(queue, &[receipt]).await
    }

    async fn ack_all(&self, queue: QueueName, receipts: &[&str]) -> Result<(), QueueError> {
        let url = self.url(queue)?.to_string();
        let mut failed = Vec::new();
        for chunk in receipts.chunks(BATCH) {
            failed.extend(self.delete_batch(queue, &url, chunk).await?);
        }
        match failed.first() {
            None => Ok(()),
            Some(r) => Err(QueueError::UnknownReceipt {
                queue: queue.to_string(),
                receipt: if failed.len() == 1 {
                    r.clone()
                } else {
                    format!("{} of {} receipts", failed.len(), receipts.len())
                },
            }),
        }
    }

    async fn retry(
        &self,
        queue: QueueName,
        message: &Delivery,
        delay: Duration,
        reason: &str,
    ) -> Result<(), QueueError> {
        // On its last receive the message goes to the dead-letter queue with the reason;
        // left to the redrive policy it would arrive there without one.
        if message.receive_count >= self.max_receives {
            return self
                .dead_letter(queue, message, "max_receives_exceeded", reason)
                .await;
        }
        // Otherwise it becomes visible again after the delay (SQS caps it at 12 hours).
        let receipt = message.receipt.as_str();
        let url = self.url(queue)?.to_string();
        self.counters.request("ChangeMessageVisibility");
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            // Whole seconds, rounded up: a retry is never earlier than asked for.
            .visibility_timeout(
                i32::try_from(delay.as_millis().div_ceil(1000).min(43_200)).unwrap_or(43_200),
            )
            .send()
            .await
            .map_err(|e| sdk_err(queue, "ChangeMessageVisibility", &e))?;
        Ok(())
    }

    async fn depth(&self, queue: QueueName) -> Result<usize, QueueError> {
        let url = self.url(queue)?.to_string();
        self.counters.request("GetQueueAttributes");
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| sdk_err(queue, "GetQueueAttributes", &e))?;
        Ok(out
            .attributes
            .unwrap_or_default()
            .values()
            .filter_map(|v| v.parse::<usize>().ok())
            .sum())
    }

    async fn dead_letter(
        &self,
        queue: QueueName,
        message: &Delivery,
        code: &str,
        reason: &str,
    ) -> Result<(), QueueError> {
        // A copy with the reason onto the dead-letter queue, then the original deleted: a
        // crash between the two leaves the original to be redelivered and buried again,
        // and the copy's deduplication id keeps one.
        self.to_dead_letters(queue, message, code, reason).await?;
        self.ack(queue, &message.receipt).await
    }
}

#[async_trait]
impl DeadLetterSink for SqsQueues {
    async fn bury(
        &self,
        queue: QueueName,
        message: &Delivery,
        code: &str,
        reason: &str,
    ) -> Result<(), QueueError> {
        self.to_dead_letters(queue, message, code, reason).await
    }
    fn max_receives(&self) -> u32 {
        self.max_receives
    }
}

#[async_trait]
impl DeadLetters for SqsQueues {
    async fn list(&self, queue: QueueName) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self
            .drain_view(queue)
            .await?
            .into_iter()
            .map(|m| {
                let code = user_attr(&m, "p2c-code")
                    .unwrap_or("max_receives_exceeded")
                    .to_string();
                let receives = attr(&m, MessageSystemAttributeName::ApproximateReceiveCount)
                    .unwrap_or("?")
                    .to_string();
                let reason = user_attr(&m, "p2c-reason")
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        format!("moved by the redrive policy after {receives} receives")
                    });
                let at = user_attr(&m, "p2c-at")
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .or_else(|| {
                        attr(&m, MessageSystemAttributeName::SentTimestamp)
                            .and_then(|t| t.parse::<i64>().ok())
                            .and_then(chrono::DateTime::from_timestamp_millis)
                    })
                    .unwrap_or_default();
                DeadLetter {
                    message_id: original_id(&m),
                    queue,
                    group: attr(&m, MessageSystemAttributeName::MessageGroupId)
                        .unwrap_or_default()
                        .to_string(),
                    dedup_id: user_attr(&m, "p2c-dedup-id")
                        .map(str::to_string)
                        .or_else(|| {
                            attr(&m, MessageSystemAttributeName::MessageDeduplicationId)
                                .map(str::to_string)
                        })
                        .unwrap_or_default(),
                    body: m.body.clone().unwrap_or_default(),
                    code,
                    reason,
                    at,
                }
            })
            .collect())
    }

    async fn replay(&self, queue: QueueName, ids: &[String]) -> Result<usize, QueueError> {
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let dlq = self.dlq_url(queue)?.to_string();
        let mut n = 0;
        for m in self.drain_view(queue).await? {
            let id = original_id(&m);
            if !wanted.contains(id.as_str()) {
                continue;
            }
            // A new deduplication id: the first send is inside SQS's window perhaps, and
            // a replay must not be dropped as its duplicate. (The steps' own idempotency
            // still makes the replay's effect exactly-once.)
            let again = OutMessage {
                group: attr(&m, MessageSystemAttributeName::MessageGroupId)
                    .unwrap_or_default()
                    .to_string(),
                dedup_id: crate::json::hash_parts(&[
                    &id,
                    "replay",
                    &chrono::Utc::now().to_rfc3339(),
                ]),
                body: m.body().unwrap_or_default().to_string(),
                typed: None,
            };
            self.send(queue, &[again]).await?;
            // The receipt from the listing is still the latest one: delete the original.
            if let Some(r) = m.receipt_handle() {
                let left = self.delete_batch(queue, &dlq, &[r]).await?;
                if !left.is_empty() {
                    tracing::warn!(queue = %queue, message = %id, "replayed, but still on the dead-letter queue");
                }
            }
            n += 1;
        }
        Ok(n)
    }
}
