//! sync: inbound events (SQS FIFO batch) → state, decisions, outbound commands.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use p2c_core::pipeline::sync::handle_batch;
use p2c_core::ports::QueueName;

#[tokio::main]
async fn main() -> Result<(), Error> {
    p2c_core::lambda::init_tracing();
    let pipeline = p2c_core::lambda::pipeline_from_env().await?;
    let (ctx, sink) = (&pipeline.sync, &pipeline.store);
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deliveries = p2c_core::lambda::deliveries(&event.payload);
        // The batch's sends go out together after it, ten per request.
        let dispositions = handle_batch(ctx, &deliveries).await;
        let response: SqsBatchResponse =
            p2c_core::lambda::respond(&deliveries, dispositions, QueueName::Inbound, sink).await;
        Ok::<_, Error>(response)
    }))
    .await
}
