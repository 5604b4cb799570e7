//! deliver: outbound commands (SQS FIFO batch) → the target system's API.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use p2c_core::pipeline::deliver::handle_message;
use p2c_core::ports::QueueName;

#[tokio::main]
async fn main() -> Result<(), Error> {
    p2c_core::lambda::init_tracing();
    let pipeline = p2c_core::lambda::pipeline_from_env().await?;
    let (ctx, sink) = (&pipeline.deliver, &pipeline.store);
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        // One function serves both outbound queues: each batch says which it came from.
        let queue = p2c_core::lambda::queue_of(&event.payload).unwrap_or(QueueName::ToErp);
        let deliveries = p2c_core::lambda::deliveries(&event.payload);
        let response: SqsBatchResponse =
            p2c_core::lambda::sqs(&deliveries, queue, sink, |d| handle_message(ctx, d)).await;
        Ok::<_, Error>(response)
    }))
    .await
}
