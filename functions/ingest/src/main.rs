//! ingest: webhooks in (Function URL / HTTP API), events queued, then 2xx.

use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    p2c_core::lambda::init_tracing();
    // Configuration and clients once per cold start.
    let pipeline = p2c_core::lambda::pipeline_from_env().await?;
    let ctx = &pipeline.ingest;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(p2c_core::lambda::http(ctx, req).await)
    }))
    .await
}
