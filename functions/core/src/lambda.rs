//! Glue between the Lambda runtime and the steps: configuration read once from the
//! environment, JSON logs, HTTP events to webhook requests, and SQS batches to
//! partial-batch responses (`batchItemFailures`). Built with the `lambda` feature.
//!
//! With `P2C_TABLE` set (as `template.yaml` does) the functions run on DynamoDB and SQS:
//! the table, and the queue and dead-letter queue URLs in `P2C_*_QUEUE_URL` /
//! `P2C_*_DLQ_URL`; the SDK reads region, credentials and `AWS_ENDPOINT_URL` from the
//! environment as usual. Without it they run on the embedded store at `P2C_STORE`: right
//! for the local `cargo lambda watch` / `invoke` loop, where every function shares one
//! file system, and refused on AWS, where each has its own `/tmp`.

use crate::app::{Endpoints, Pipeline};
use crate::backend::{AwsBackend, Backend};
use crate::embedded::EmbeddedStore;
use crate::inbound::dataverse::DataverseAuth;
use crate::inbound::{WebhookRequest, MAX_BODY_BYTES};
use crate::pipeline::ingest::{ingest, InboundAuth, IngestCtx};
use crate::pipeline::{process_batch, Disposition, Timings};
use crate::ports::{DeadLetterSink, Delivery, QueueName};
use crate::rules::{DirLoader, EmbeddedLoader, RuleLoader, RuleSet};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use std::sync::Arc;

/// JSON logs, one line per event, level from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .without_time()
        .init();
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn list(name: &str) -> Vec<String> {
    var(name)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The backend the environment names: DynamoDB and SQS when `P2C_TABLE` is set,
/// otherwise the embedded store (local runs only).
async fn backend_from_env() -> anyhow::Result<Backend> {
    if var("P2C_TABLE").is_some() {
        return Ok(AwsBackend::from_env().await?.into());
    }
    // The Lambda service runs functions from /var/task (and its runtime API is on
    // 127.0.0.1 too, so that address tells nothing); `cargo lambda watch` does not.
    if var("LAMBDA_TASK_ROOT").as_deref() == Some("/var/task") {
        anyhow::bail!("the embedded store cannot back functions on AWS Lambda (each has its own /tmp): set P2C_TABLE and the queue URLs, as template.yaml does");
    }
    Ok(EmbeddedStore::open(var("P2C_STORE").unwrap_or_else(|| "/tmp/p2c.db".into()))?.into())
}

/// Builds the pipeline from the environment (read once per cold start: rules compiled,
/// clients built, then reused by every invocation of the warm function).
pub async fn pipeline_from_env() -> anyhow::Result<Pipeline> {
    let loader: Box<dyn RuleLoader> = match var("P2C_RULES_DIR") {
        Some(d) => Box::new(DirLoader(d.into())),
        None => Box::new(EmbeddedLoader),
    };
    let rules = Arc::new(RuleSet::load(loader.as_ref())?);
    let company = rules
        .settings(crate::domain::System::BusinessCentral)
        .company_id
        .unwrap_or_default();
    let endpoints = Endpoints::from_urls(
        (var("P2C_DATAVERSE_URL"), var("P2C_DATAVERSE_TOKEN")),
        (var("P2C_BC_URL"), var("P2C_BC_TOKEN")),
        company,
        (var("P2C_SALESFORCE_URL"), var("P2C_SALESFORCE_TOKEN")),
        (var("P2C_FO_URL"), var("P2C_FO_TOKEN")),
    )?;
    let window = var("P2C_SIGNATURE_WINDOW_SECS")
        .and_then(|w| w.parse().ok())
        .unwrap_or(300);
    let auth = InboundAuth {
        dataverse: DataverseAuth {
            header: Some(var("P2C_DATAVERSE_KEY_HEADER").unwrap_or_else(|| "x-p2c-key".into())),
            query_param: Some("code".into()),
            secrets: list("P2C_DATAVERSE_KEYS"),
        },
        bc_client_states: list("P2C_BC_CLIENT_STATES"),
        salesforce: crate::inbound::salesforce::SalesforceAuth {
            secrets: list("P2C_SALESFORCE_KEYS"),
            org_ids: list("P2C_SALESFORCE_ORG_IDS"),
        },
        fin_ops: DataverseAuth {
            header: Some("x-p2c-key".into()),
            query_param: Some("code".into()),
            secrets: list("P2C_FO_KEYS"),
        },
        fin_ops_signed: crate::inbound::SignedAuth::new(list("P2C_FO_SIGNING_SECRETS"), window),
        senders: crate::inbound::generic::Senders::from_json(
            &var("P2C_SENDERS").unwrap_or_default(),
            window,
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    };
    let backend = backend_from_env().await?;
    // Rule sets published with `p2c rules publish --aws` replace the built-in rules
    // between batches, looked up at most every P2C_RULES_CHECK_SECS (30).
    let every = var("P2C_RULES_CHECK_SECS")
        .and_then(|s| s.parse().ok())
        .map(std::time::Duration::from_secs)
        .unwrap_or(crate::rules::live::DEFAULT_CHECK_EVERY);
    let rule_store: Arc<dyn crate::ports::RuleStore> = Arc::new(backend.clone());
    Ok(
        Pipeline::new(backend, rules, auth, &endpoints, Timings::default())?
            .with_live_rules(rule_store, every),
    )
}

/// A Function URL / HTTP API request → the ingest step → the response.
pub async fn http(
    ctx: &IngestCtx,
    req: lambda_http::Request,
) -> lambda_http::Response<lambda_http::Body> {
    use lambda_http::RequestExt;
    let system = req
        .uri()
        .path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let query: Vec<(String, String)> = req
        .query_string_parameters()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = req.body().as_ref();
    let wr = WebhookRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query,
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body: body[..body.len().min(MAX_BODY_BYTES + 1)].to_vec(),
    };
    let r = ingest(ctx, &system, &wr).await;
    let mut resp = lambda_http::Response::new(lambda_http::Body::Text(r.body));
    *resp.status_mut() = lambda_http::http::StatusCode::from_u16(r.status)
        .unwrap_or(lambda_http::http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = lambda_http::http::HeaderValue::from_str(r.content_type) {
        resp.headers_mut().insert("content-type", v);
    }
    resp
}

/// A Salesforce change event from Amazon EventBridge (Event Relay) → the inbound queue.
///
/// EventBridge and the relay authenticate the delivery (only the partner event bus's rule
/// invokes the function); the org id in `source` is still checked against
/// `P2C_SALESFORCE_ORG_IDS` when it is set. An event that can never be processed (not a
/// change event, an entity p2c does not sync, an overflow that needs a resync) goes to the
/// inbound dead-letter queue with its code and reason, where `p2c dlq list` shows it, and
/// the invocation succeeds; a queue that cannot be reached fails the invocation, so
/// EventBridge retries it.
pub async fn change_event(
    ctx: &IngestCtx,
    sink: &dyn DeadLetterSink,
    event: &serde_json::Value,
) -> Result<usize, crate::error::QueueError> {
    let events = match crate::inbound::salesforce::parse_cdc(
        event,
        &ctx.auth.salesforce.org_ids,
        chrono::Utc::now(),
    ) {
        Ok(evs) => evs,
        Err(e) => {
            let id = event
                .get("id")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("salesforce-change-event")
                .to_string();
            tracing::warn!(code = e.code(), event = %id, "change event refused");
            let body = event.to_string();
            let delivery = Delivery {
                message_id: id.clone(),
                receipt: String::new(),
                group: "salesforce/change-events".into(),
                dedup_id: crate::json::hash_parts(&[&id, &body]),
                body,
                receive_count: 1,
                typed: Default::default(),
            };
            sink.bury(QueueName::Inbound, &delivery, e.code(), &e.to_string())
                .await?;
            return Ok(0);
        }
    };
    crate::pipeline::sync::send_events(ctx.publisher.as_ref(), &events).await?;
    Ok(events.len())
}

/// An SQS event → deliveries → dispositions → `batchItemFailures`. A permanent failure is
/// buried in the dead-letter queue (and reported as processed); a retryable one is
/// reported failed, as is the rest of its message group in the batch.
pub async fn sqs<'a, F, Fut>(
    deliveries: &'a [Delivery],
    queue: QueueName,
    sink: &dyn DeadLetterSink,
    handle: F,
) -> SqsBatchResponse
where
    F: FnMut(&'a Delivery) -> Fut,
    Fut: std::future::Future<Output = Disposition> + 'a,
{
    let dispositions = process_batch(deliveries, handle).await;
    respond(deliveries, dispositions, queue, sink).await
}

/// Dispositions → `batchItemFailures` (burying permanent failures first). A message that
/// fails on the last receive the queue allows is buried too, with its reason, instead of
/// being left to the redrive policy, which would move it without one.
pub async fn respond(
    deliveries: &[Delivery],
    dispositions: Vec<Disposition>,
    queue: QueueName,
    sink: &dyn DeadLetterSink,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for (d, disp) in deliveries.iter().zip(dispositions) {
        let failed = match disp {
            Disposition::Done => false,
            Disposition::Retry { reason, .. } if d.receive_count >= sink.max_receives() => sink
                .bury(queue, d, "max_receives_exceeded", &reason)
                .await
                .is_err(),
            Disposition::Retry { .. } => true,
            Disposition::DeadLetter { code, reason } => {
                sink.bury(queue, d, &code, &reason).await.is_err()
            }
        };
        if failed {
            let mut f = BatchItemFailure::default();
            f.item_identifier = d.message_id.clone();
            response.batch_item_failures.push(f);
        }
    }
    response
}

/// The queue an SQS event came from, by its source ARN (`…:p2c-to-erp.fifo`).
pub fn queue_of(event: &SqsEvent) -> Option<QueueName> {
    let arn = event.records.first()?.event_source_arn.as_deref()?;
    let name = arn.rsplit(':').next()?.trim_end_matches(".fifo");
    QueueName::ALL
        .into_iter()
        .find(|q| name.ends_with(q.as_str()))
}

/// The messages of an SQS event, in order.
pub fn deliveries(event: &SqsEvent) -> Vec<Delivery> {
    event.records.iter().map(delivery).collect()
}

fn delivery(m: &aws_lambda_events::event::sqs::SqsMessage) -> Delivery {
    let attr = |k: &str| m.attributes.get(k).cloned().unwrap_or_default();
    Delivery {
        message_id: m.message_id.clone().unwrap_or_default(),
        receipt: m.receipt_handle.clone().unwrap_or_default(),
        group: attr("MessageGroupId"),
        dedup_id: attr("MessageDeduplicationId"),
        body: m.body.clone().unwrap_or_default(),
        receive_count: attr("ApproximateReceiveCount").parse().unwrap_or(1),
        typed: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> SqsEvent {
        let record = |id: &str, group: &str| {
            serde_json::json!({
                "messageId": id, "receiptHandle": format!("r-{id}"), "body": format!("body {id}"),
                "attributes": {"ApproximateReceiveCount": "2", "MessageGroupId": group, "MessageDeduplicationId": format!("d-{id}"),
                               "SentTimestamp": "1", "SenderId": "x", "ApproximateFirstReceiveTimestamp": "1", "SequenceNumber": "1"},
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:p2c-to-erp.fifo", "awsRegion": "eu-west-1"
            })
        };
        serde_json::from_value(serde_json::json!({"Records": [record("1", "a"), record("2", "a"), record("3", "b"), record("4", "c")]})).expect("an SQS event")
    }

    fn ingest_ctx(store: &EmbeddedStore, orgs: &[&str]) -> IngestCtx {
        IngestCtx {
            publisher: Arc::new(store.clone()),
            auth: InboundAuth {
                salesforce: crate::inbound::salesforce::SalesforceAuth {
                    secrets: vec![],
                    org_ids: orgs.iter().map(|o| o.to_string()).collect(),
                },
                ..Default::default()
            },
            fin_ops_events: crate::inbound::fo::default_business_events().into(),
        }
    }

    #[tokio::test]
    async fn a_relayed_change_event_is_queued_and_a_hopeless_one_dead_lettered_with_its_reason() {
        use crate::ports::{Consumer, DeadLetters};
        let store = EmbeddedStore::in_memory().expect("store");
        let ctx = ingest_ctx(&store, &["00D5f000005KcCnEAK"]);
        let sample: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/salesforce_cdc_order_create.json"
        ))
        .expect("sample");
        assert_eq!(
            change_event(&ctx, &store, &sample).await.expect("queued"),
            1
        );
        // EventBridge delivers at least once: the repeat is the same message.
        assert_eq!(
            change_event(&ctx, &store, &sample).await.expect("queued"),
            1
        );
        assert_eq!(store.depth(QueueName::Inbound).await.expect("depth"), 1);

        let mut overflow = sample.clone();
        overflow["detail"]["payload"]["ChangeEventHeader"]["changeType"] =
            serde_json::json!("GAP_OVERFLOW");
        assert_eq!(
            change_event(&ctx, &store, &overflow)
                .await
                .expect("handled"),
            0
        );
        let dead = store.list(QueueName::Inbound).await.expect("dlq");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].code, "resync_required");
        assert!(dead[0].reason.contains("Order"), "{}", dead[0].reason);

        // Dead letters are kept once per EventBridge event id.
        assert_eq!(
            change_event(&ctx, &store, &overflow)
                .await
                .expect("handled"),
            0
        );
        assert_eq!(store.list(QueueName::Inbound).await.expect("dlq").len(), 1);

        let other = ingest_ctx(&store, &["00D000000000001AAA"]);
        let mut another = sample.clone();
        another["id"] = serde_json::json!("8c4f1d3b-02a5-4e6f-91b2-4d0a7e3f9b58");
        assert_eq!(
            change_event(&other, &store, &another)
                .await
                .expect("handled"),
            0
        );
        let dead = store.list(QueueName::Inbound).await.expect("dlq");
        assert_eq!(dead.last().map(|d| d.code.as_str()), Some("unauthorized"));
        assert_eq!(store.depth(QueueName::Inbound).await.expect("depth"), 1);
    }

    #[test]
    fn sqs_records_become_deliveries_from_their_queue() {
        let e = event();
        assert_eq!(queue_of(&e), Some(QueueName::ToErp));
        let d = deliveries(&e);
        assert_eq!(
            (
                d[0].group.as_str(),
                d[0].dedup_id.as_str(),
                d[0].receive_count
            ),
            ("a", "d-1", 2)
        );
    }

    #[tokio::test]
    async fn failures_report_their_group_and_permanent_ones_are_buried() {
        let e = event();
        let store = EmbeddedStore::in_memory().expect("store");
        let d = deliveries(&e);
        let resp = sqs(&d, QueueName::ToErp, &store, |m| async move {
            match m.message_id.as_str() {
                "1" => Disposition::Retry {
                    delay: std::time::Duration::ZERO,
                    reason: "busy".into(),
                },
                "4" => Disposition::DeadLetter {
                    code: "target_refused".into(),
                    reason: "no".into(),
                },
                _ => Disposition::Done,
            }
        })
        .await;
        let failed: Vec<&str> = resp
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(
            failed,
            vec!["1", "2"],
            "the rest of group a fails with it; b is done; c is buried"
        );
        let dead = crate::ports::DeadLetters::list(&store, QueueName::ToErp)
            .await
            .expect("dlq");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].code, "target_refused");
    }

    #[tokio::test]
    async fn a_failure_on_the_last_receive_is_buried_with_its_reason() {
        let mut e = event();
        for r in &mut e.records {
            r.attributes
                .insert("ApproximateReceiveCount".into(), "5".into());
        }
        let store = EmbeddedStore::in_memory().expect("store");
        assert_eq!(DeadLetterSink::max_receives(&store), 5);
        let d = deliveries(&e);
        let resp = sqs(&d, QueueName::ToErp, &store, |m| async move {
            match m.message_id.as_str() {
                "3" => Disposition::Retry {
                    delay: std::time::Duration::ZERO,
                    reason: "503 from Business Central: service unavailable".into(),
                },
                _ => Disposition::Done,
            }
        })
        .await;
        assert!(
            resp.batch_item_failures.is_empty(),
            "nothing is left for the redrive policy to move without a reason"
        );
        let dead = crate::ports::DeadLetters::list(&store, QueueName::ToErp)
            .await
            .expect("dlq");
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (
                dead[0].message_id.as_str(),
                dead[0].code.as_str(),
                dead[0].reason.as_str()
            ),
            (
                "3",
                "max_receives_exceeded",
                "503 from Business Central: service unavailable"
            )
        );
    }
}
