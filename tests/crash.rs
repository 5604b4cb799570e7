//! Failures between any two steps, followed by the redelivery a queue would do, end with
//! every effect applied exactly once. A wrapped adapter fails once at the chosen point,
//! as a process killed there would leave things.

use crate::common::{account, customer_with_item, order_header, order_line, outcomes, world};
use async_trait::async_trait;
use p2c_core::backend::Backend;
use p2c_core::demo::World;
use p2c_core::domain::{ChangeEvent, EntityKey, SourceRef};
use p2c_core::error::{QueueError, StoreError};
use p2c_core::pipeline::sync::{sync_event, SyncOutcome};
use p2c_core::pipeline::{deliver, runner};
use p2c_core::ports::{
    AuditEntry, Consumer, EntityState, OutMessage, Publisher, QueueName, StateStore,
};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Fails the next `n` sends to one queue, then behaves.
struct FailSends {
    inner: Backend,
    queue: QueueName,
    n: AtomicUsize,
}

#[async_trait]
impl Publisher for FailSends {
    async fn send(&self, queue: QueueName, messages: &[OutMessage]) -> Result<(), QueueError> {
        if queue == self.queue
            && self
                .n
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(QueueError::Backend {
                queue: queue.to_string(),
                message: "killed before the send".into(),
            });
        }
        self.inner.send(queue, messages).await
    }
}

/// Fails the next `n` state saves, then behaves.
struct FailSaves {
    inner: Backend,
    n: AtomicUsize,
}

#[async_trait]
impl StateStore for FailSaves {
    async fn load(&self, key: &EntityKey) -> Result<Option<EntityState>, StoreError> {
        self.inner.load(key).await
    }
    async fn save(&self, state: &EntityState, entry: &AuditEntry) -> Result<(), StoreError> {
        if self
            .n
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Backend {
                message: "killed before the save".into(),
                source: None,
            });
        }
        self.inner.save(state, entry).await
    }
    async fn resolve(&self, source: &SourceRef) -> Result<Option<EntityKey>, StoreError> {
        self.inner.resolve(source).await
    }
}

/// Runs a crash scenario on the embedded store and on DynamoDB and SQS (moto).
macro_rules! on_both_backends {
    ($scenario:ident: $embedded:ident, $aws:ident) => {
        #[tokio::test]
        async fn $embedded() {
            let (w, _d) = world().await;
            $scenario(w).await;
        }

        #[tokio::test]
        async fn $aws() {
            $scenario(crate::common::world_aws().await).await;
        }
    };
}

fn count(log: &[String], prefix: &str) -> usize {
    log.iter().filter(|l| l.starts_with(prefix)).count()
}

on_both_backends!(a_crash_after_the_state_write_before_any_send_re_sends_exactly_once: a_crash_after_the_state_write_before_any_send_re_sends_exactly_once_embedded, a_crash_after_the_state_write_before_any_send_re_sends_exactly_once_on_aws);

async fn a_crash_after_the_state_write_before_any_send_re_sends_exactly_once(mut w: World) {
    w.pipeline.sync.publisher = Arc::new(FailSends {
        inner: w.pipeline.store.clone(),
        queue: QueueName::ToErp,
        n: AtomicUsize::new(1),
    });
    w.dataverse()
        .create("accounts", account("ACC-CRASH-1", "Crash One"))
        .expect("account");
    w.settle().await.expect("settles");
    assert_eq!(w.bc().creates("customers"), 1);
    assert!(outcomes(&w, "account:ACC-CRASH-1")
        .await
        .contains(&"sync:resent".to_string()));
}

on_both_backends!(a_crash_after_some_but_not_all_sends_writes_each_target_once: a_crash_after_some_but_not_all_sends_writes_each_target_once_embedded, a_crash_after_some_but_not_all_sends_writes_each_target_once_on_aws);

async fn a_crash_after_some_but_not_all_sends_writes_each_target_once(mut w: World) {
    customer_with_item(&w, "ACC-CRASH-2", "100000").await;
    // An order release sends to the CRM queue and to the ERP queue; the ERP send dies.
    w.pipeline.sync.publisher = Arc::new(FailSends {
        inner: w.pipeline.store.clone(),
        queue: QueueName::ToErp,
        n: AtomicUsize::new(1),
    });
    w.dataverse()
        .create_document(
            "salesorders",
            order_header("ORD-CRASH-2", "ACC-CRASH-2"),
            vec![order_line("P-200", 3, "460.00")],
        )
        .expect("order");
    w.settle().await.expect("settles");
    assert_eq!(w.bc().creates("salesOrders"), 1);
    let o = w
        .dataverse()
        .find("salesorders", "ordernumber", "ORD-CRASH-2")
        .expect("order");
    assert_eq!(o["submitstatusdescription"], json!("Released to the ERP"));
    let credit_writes = w
        .dataverse()
        .log()
        .iter()
        .filter(|l| l.contains("ORD-CRASH-2"))
        .count();
    assert_eq!(
        credit_writes,
        3,
        "credit decision, ERP number, processing status: each once; {:?}",
        w.dataverse().log()
    );
}

on_both_backends!(a_crash_after_the_delivery_before_the_acknowledgement_does_not_write_twice: a_crash_after_the_delivery_before_the_acknowledgement_does_not_write_twice_embedded, a_crash_after_the_delivery_before_the_acknowledgement_does_not_write_twice_on_aws);

async fn a_crash_after_the_delivery_before_the_acknowledgement_does_not_write_twice(w: World) {
    w.dataverse()
        .create("accounts", account("ACC-CRASH-3", "Crash Three"))
        .expect("account");
    let client = reqwest::Client::new();
    w.crm.outbox().flush(&client).await;
    runner::step(
        &w.pipeline.store,
        QueueName::Inbound,
        &w.pipeline.sync,
        &w.pipeline.deliver,
    )
    .await
    .expect("sync");
    let batch = w
        .pipeline
        .store
        .receive(QueueName::ToErp, 10, Duration::from_secs(60))
        .await
        .expect("receive");
    assert_eq!(batch.len(), 1);
    let disp = deliver::handle_message(&w.pipeline.deliver, &batch[0]).await;
    assert_eq!(disp, p2c_core::pipeline::Disposition::Done);
    // The process dies before deleting the message: it becomes visible again.
    w.pipeline
        .store
        .retry(
            QueueName::ToErp,
            &batch[0],
            Duration::ZERO,
            "visibility timeout",
        )
        .await
        .expect("visible");
    w.settle().await.expect("settles");
    assert_eq!(count(&w.bc().log(), "POST customers"), 1);
    assert_eq!(count(&w.bc().log(), "PATCH customers"), 0);
}

on_both_backends!(two_workers_with_the_same_event_apply_it_once: two_workers_with_the_same_event_apply_it_once_embedded, two_workers_with_the_same_event_apply_it_once_on_aws);

/// A message whose visibility lapsed mid-run is processed by a second worker while the
/// first still runs: both read the same state version, only one write can win, and the
/// loser finds the event applied when it retries.
async fn two_workers_with_the_same_event_apply_it_once(w: World) {
    w.dataverse()
        .create("accounts", account("ACC-CRASH-4", "Crash Four"))
        .expect("account");
    let client = reqwest::Client::new();
    w.crm.outbox().flush(&client).await;
    let batch = w
        .pipeline
        .store
        .receive(QueueName::Inbound, 10, Duration::from_secs(60))
        .await
        .expect("receive");
    let ev: ChangeEvent = serde_json::from_str(&batch[0].body).expect("event");
    let (a, b) = tokio::join!(
        sync_event(&w.pipeline.sync, ev.clone()),
        sync_event(&w.pipeline.sync, ev.clone())
    );
    let applied = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Ok(SyncOutcome::Applied { .. })))
        .count();
    assert!(applied <= 1, "both workers applied it: {a:?} / {b:?}");
    w.pipeline
        .store
        .retry(QueueName::Inbound, &batch[0], Duration::ZERO, "worker died")
        .await
        .expect("visible");
    w.settle().await.expect("settles");
    assert_eq!(w.bc().creates("customers"), 1);
    assert_eq!(count(&w.bc().log(), "POST customers"), 1);
    assert_eq!(count(&w.bc().log(), "PATCH customers"), 0);
    let trail = p2c_core::ports::AuditLog::trail(&w.pipeline.store, "account:ACC-CRASH-4")
        .await
        .expect("trail");
    let applied: Vec<_> = trail
        .iter()
        .filter(|e| e.outcome == "applied" && e.event_id.as_ref() == Some(&ev.event_id.0))
        .collect();
    assert_eq!(applied.len(), 1, "{trail:?}");
    assert_eq!(
        sync_event(&w.pipeline.sync, ev).await.expect("syncs"),
        SyncOutcome::Duplicate
    );
}

on_both_backends!(a_crash_after_the_target_write_before_recording_it_leaves_one_record: a_crash_after_the_target_write_before_recording_it_leaves_one_record_embedded, a_crash_after_the_target_write_before_recording_it_leaves_one_record_on_aws);

async fn a_crash_after_the_target_write_before_recording_it_leaves_one_record(mut w: World) {
    w.pipeline.deliver.state = Arc::new(FailSaves {
        inner: w.pipeline.store.clone(),
        n: AtomicUsize::new(1),
    });
    w.dataverse()
        .create("accounts", account("ACC-CRASH-5", "Crash Five"))
        .expect("account");
    w.settle().await.expect("settles");
    assert_eq!(
        w.bc().creates("customers"),
        1,
        "the retry found the customer by number"
    );
    assert_eq!(
        w.bc()
            .find("customers", "number", "ACC-CRASH-5")
            .expect("customer")["displayName"],
        json!("Crash Five")
    );
    let state = w
        .pipeline
        .store
        .load(&"account:ACC-CRASH-5".parse().expect("key"))
        .await
        .expect("load")
        .expect("state");
    assert!(
        state
            .ids
            .contains_key(&p2c_core::domain::System::BusinessCentral),
        "the BC id was recorded on the retry"
    );
}

on_both_backends!(a_change_delivered_twice_in_one_batch_applies_once: a_change_delivered_twice_in_one_batch_applies_once_embedded, a_change_delivered_twice_in_one_batch_applies_once_on_aws);

/// The same change twice in one batch (a redelivery after the queue's deduplication
/// window): the batch's sends are held back until its end, and the second copy is a
/// duplicate of the first all the same.
async fn a_change_delivered_twice_in_one_batch_applies_once(w: World) {
    w.dataverse()
        .create("accounts", account("ACC-TWICE", "Twice Ltd"))
        .expect("account");
    let client = reqwest::Client::new();
    w.crm.outbox().flush(&client).await;
    let first = w
        .pipeline
        .store
        .receive(QueueName::Inbound, 10, Duration::from_secs(60))
        .await
        .expect("receive");
    assert_eq!(first.len(), 1);
    let again = OutMessage {
        group: first[0].group.clone(),
        dedup_id: format!("{}-redelivered", first[0].dedup_id),
        body: first[0].body.clone(),
        typed: None,
    };
    w.pipeline
        .store
        .retry(QueueName::Inbound, &first[0], Duration::ZERO, "again")
        .await
        .expect("visible");
    w.pipeline
        .store
        .send(QueueName::Inbound, &[again])
        .await
        .expect("send");
    w.settle().await.expect("settles");
    assert_eq!(w.bc().creates("customers"), 1);
    assert_eq!(count(&w.bc().log(), "POST customers"), 1);
}

on_both_backends!(a_crash_before_a_rebate_credit_note_is_sent_still_raises_it: a_crash_before_a_rebate_credit_note_is_sent_still_raises_it_embedded, a_crash_before_a_rebate_credit_note_is_sent_still_raises_it_on_aws);

/// An invoice that crosses a rebate tier writes its own record to the CRM and raises a
/// credit note, a command for another entity, to the ERP. The ERP send dies after the CRM
/// one; by the time the event comes back, the CRM write has been delivered. The event is not
/// taken for a duplicate on the strength of its own entity's commands alone: the credit
/// note is sent, once.
async fn a_crash_before_a_rebate_credit_note_is_sent_still_raises_it(mut w: World) {
    customer_with_item(&w, "ACC-CRASH-7", "100000").await;
    w.dataverse()
        .create_document(
            "salesorders",
            order_header("ORD-CRASH-7", "ACC-CRASH-7"),
            vec![order_line("P-200", 40, "460.00")],
        )
        .expect("order");
    w.settle().await.expect("settles");
    let erp_order = w
        .bc()
        .find("salesOrders", "externalDocumentNumber", "ORD-CRASH-7")
        .and_then(|o| o.get("number").and_then(|n| n.as_str()).map(str::to_string))
        .expect("the ERP order");
    w.pipeline.sync.publisher = Arc::new(FailSends {
        inner: w.pipeline.store.clone(),
        queue: QueueName::ToErp,
        n: AtomicUsize::new(1),
    });
    let invoice = w.bc().ship_and_invoice(&erp_order).expect("invoiced");
    w.settle().await.expect("settles");
    let crm_invoice = w
        .dataverse()
        .find("invoices", "invoicenumber", &invoice)
        .expect("the invoice is in the CRM");
    assert_eq!(crm_invoice["p2c_rebatetier"], json!("Silver"));
    assert_eq!(
        w.bc().creates("salesCreditMemos"),
        1,
        "the credit note is raised once: {:?}",
        w.bc().log()
    );
}
