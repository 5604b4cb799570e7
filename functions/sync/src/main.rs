//! sync: inbound events (SQS FIFO batch) → state, decisions, outbound commands.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use p2c_core::pipeline::sync::handle_message;
use p2c_core::ports::QueueName;

#[tokio::main]
async fn main() -> Result<(), Error> {
    p2c_core::lambda::init_tracing();
    let pipeline = p2c_core::lambda::pipeline_from_env().await?;
    let (ctx, sink) = (&pipeline.sync, &pipeline.store);
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deliveries = p2c_core::lambda::deliveries(&event.payload);
        let response: SqsBatchResponse =
            p2c_core::lambda::sqs(&deliveries, QueueName::Inbound, sink, |d| {
                handle_message(ctx, d)
            })
            .await;
        Ok::<_, Error>(response)
    }))
    .await
}
