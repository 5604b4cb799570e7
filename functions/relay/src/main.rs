//! relay: Salesforce change events (Event Relay → Amazon EventBridge) → the inbound queue.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    p2c_core::lambda::init_tracing();
    // Configuration and clients once per cold start.
    let pipeline = p2c_core::lambda::pipeline_from_env().await?;
    let (ctx, sink) = (&pipeline.ingest, &pipeline.store);
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let queued = p2c_core::lambda::change_event(ctx, sink, &event.payload).await?;
        Ok::<_, Error>(serde_json::json!({ "queued": queued }))
    }))
    .await
}
