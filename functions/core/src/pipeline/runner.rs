//! Runs the queue consumers in-process, doing what the Lambda SQS event source mapping
//! does on AWS: receive a batch, process it, delete what succeeded, return the rest for
//! a retry, dead-letter what can never succeed.

use super::{deliver, process_batch, sync, DeliverCtx, Disposition, SyncCtx};
use crate::error::QueueError;
use crate::ports::{Consumer, QueueName};
use std::time::Duration;

/// Visibility timeout while a batch is being processed.
pub const VISIBILITY: Duration = Duration::from_secs(120);

/// Applies dispositions to the queue.
pub async fn settle(
    consumer: &dyn Consumer,
    queue: QueueName,
    batch: &[crate::ports::Delivery],
    dispositions: &[Disposition],
) -> Result<(), QueueError> {
    let done: Vec<&str> = batch
        .iter()
        .zip(dispositions)
        .filter(|(_, disp)| matches!(disp, Disposition::Done))
        .map(|(d, _)| d.receipt.as_str())
        .collect();
    consumer.ack_all(queue, &done).await?;
    for (d, disp) in batch.iter().zip(dispositions) {
        match disp {
            Disposition::Done => {}
            Disposition::Retry { delay, reason } => {
                consumer.retry(queue, d, *delay, reason).await?
            }
            Disposition::DeadLetter { code, reason } => {
                consumer.dead_letter(queue, d, code, reason).await?
            }
        }
    }
    Ok(())
}

/// Receives and processes one batch from `queue`; returns how many messages it took.
pub async fn step(
    consumer: &dyn Consumer,
    queue: QueueName,
    sync_ctx: &SyncCtx,
    deliver_ctx: &DeliverCtx,
) -> Result<usize, QueueError> {
    let batch = consumer.receive(queue, 10, VISIBILITY).await?;
    if batch.is_empty() {
        return Ok(0);
    }
    let dispositions = match queue {
        QueueName::Inbound => sync::handle_batch(sync_ctx, &batch).await,
        QueueName::ToErp | QueueName::ToCrm => {
            process_batch(&batch, |d| deliver::handle_message(deliver_ctx, d)).await
        }
    };
    settle(consumer, queue, &batch, &dispositions).await?;
    Ok(batch.len())
}

/// Runs `step` over every queue until all are empty (waiting out retry delays), or
/// `deadline` passes. Returns the number of messages processed.
pub async fn run_until_idle<F, Fut>(
    consumer: &dyn Consumer,
    deadline: Duration,
    mut step: F,
) -> Result<usize, QueueError>
where
    F: FnMut(QueueName) -> Fut,
    Fut: std::future::Future<Output = Result<usize, QueueError>>,
{
    let start = std::time::Instant::now();
    let mut total = 0;
    loop {
        let mut took = 0;
        for q in QueueName::ALL {
            took += step(q).await?;
        }
        total += took;
        if took == 0 {
            let mut pending = 0;
            for q in QueueName::ALL {
                pending += consumer.depth(q).await?;
            }
            if pending == 0 || start.elapsed() > deadline {
                return Ok(total);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
