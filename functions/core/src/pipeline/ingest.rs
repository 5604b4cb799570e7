//! The ingest step: authenticate, parse, queue — and only then answer 2xx.
//!
//! A request that cannot be queued gets 503 (the sender retries; nothing was accepted),
//! a bad one a 4xx with a stable code. A repeated webhook is queued again: the queue drops
//! it inside its deduplication window, and the sync step recognises it after that.

use super::sync::send_owned_events;
use crate::domain::System;
use crate::inbound::{
    bc, dataverse, fo, salesforce, Parsed, WebhookError, WebhookRequest, WebhookResponse,
};
use crate::ports::Publisher;
use serde::Serialize;
use std::sync::Arc;

/// Inbound credentials per system.
#[derive(Debug, Clone, Default)]
pub struct InboundAuth {
    pub dataverse: dataverse::DataverseAuth,
    /// Business Central `clientState` values of our subscriptions (several while rotating).
    pub bc_client_states: Vec<String>,
    /// Salesforce Outbound Messages: the endpoint secret and the orgs allowed.
    pub salesforce: salesforce::SalesforceAuth,
    /// Finance & Operations business events: a key in a header or in the endpoint URL's
    /// query (`?code=`), checked as Dataverse's is.
    pub fin_ops: dataverse::DataverseAuth,
    /// Finance & Operations events through a relay that signs them: when secrets are set,
    /// a valid HMAC signature within the replay window is required instead of the key.
    pub fin_ops_signed: crate::inbound::SignedAuth,
    /// Generic senders (`/webhooks/events`): p2c's own event format, HMAC-signed.
    pub senders: crate::inbound::generic::Senders,
}

/// What the ingest step needs.
#[derive(Clone)]
pub struct IngestCtx {
    pub publisher: Arc<dyn Publisher>,
    pub auth: InboundAuth,
    /// The Finance & Operations business events read (from the rules' F&O settings).
    pub fin_ops_events: Arc<[fo::BusinessEventSpec]>,
}

/// The 2xx answer body.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Accepted {
    pub accepted: usize,
}

/// Handles one webhook for `system` (the path segment: `dataverse`, `bc`, …).
pub async fn ingest(ctx: &IngestCtx, system: &str, req: &WebhookRequest) -> WebhookResponse {
    match ingest_inner(ctx, system, req).await {
        Ok(r) => r,
        Err(e) => {
            // Internal details go to the log; the caller gets the stable code.
            // Parser messages can quote the payload: redacted.
            tracing::warn!(
                system,
                code = e.code(),
                error = %crate::error::redact(&e.to_string()),
                "webhook refused"
            );
            e.response()
        }
    }
}

async fn ingest_inner(
    ctx: &IngestCtx,
    system: &str,
    req: &WebhookRequest,
) -> Result<WebhookResponse, WebhookError> {
    if system == "events" {
        if !req.method.eq_ignore_ascii_case("POST") {
            return Err(WebhookError::MethodNotAllowed(req.method.clone()));
        }
        let events = ctx.auth.senders.accept(req, chrono::Utc::now())?;
        let accepted = queue(ctx, events).await?;
        return Ok(WebhookResponse::json(202, &Accepted { accepted }));
    }
    let system: System = system
        .parse()
        .map_err(|_| WebhookError::UnknownSystem(system.chars().take(32).collect()))?;
    let now = chrono::Utc::now();
    let parsed = match system {
        System::Dataverse => {
            if !req.method.eq_ignore_ascii_case("POST") {
                return Err(WebhookError::MethodNotAllowed(req.method.clone()));
            }
            ctx.auth.dataverse.check(req)?;
            dataverse::parse(req, now)?
        }
        System::BusinessCentral => {
            let handshake = req.query_param("validationToken").is_some();
            if !handshake && !req.method.eq_ignore_ascii_case("POST") {
                return Err(WebhookError::MethodNotAllowed(req.method.clone()));
            }
            bc::parse(req, &ctx.auth.bc_client_states, now)?
        }
        System::Salesforce => {
            // Unsigned senders both: a secret in the endpoint URL or a header, and the org
            // allow-list.
            if !req.method.eq_ignore_ascii_case("POST") {
                return Err(WebhookError::MethodNotAllowed(req.method.clone()));
            }
            ctx.auth.salesforce.check(req)?;
            let json = req
                .header("content-type")
                .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
            if json {
                // A Change Data Capture event, as an EventBridge API destination posts it
                // (the relay's rule target when p2c runs as `p2c serve`, not on Lambda).
                let doc = crate::inbound::parse_json_body(req)?;
                let events = salesforce::parse_cdc(&doc, &ctx.auth.salesforce.org_ids, now)?;
                let accepted = queue(ctx, events).await?;
                return Ok(WebhookResponse::json(202, &Accepted { accepted }));
            }
            // An Outbound Message: answered with the SOAP Ack once queued.
            let events = salesforce::parse_outbound(req, &ctx.auth.salesforce.org_ids, now)?;
            queue(ctx, events).await?;
            return Ok(salesforce::outbound_ack());
        }
        System::FinOps => {
            if !req.method.eq_ignore_ascii_case("POST") {
                return Err(WebhookError::MethodNotAllowed(req.method.clone()));
            }
            if ctx.auth.fin_ops_signed.is_configured() {
                ctx.auth.fin_ops_signed.check(req, now.timestamp())?;
            } else {
                ctx.auth.fin_ops.check(req)?;
            }
            Parsed::Events(fo::parse_with(req, now, &ctx.fin_ops_events)?)
        }
    };
    let events = match parsed {
        Parsed::Handshake(token) => return Ok(WebhookResponse::text(200, token)),
        Parsed::Events(evs) => evs,
    };
    let accepted = queue(ctx, events).await?;
    Ok(WebhookResponse::json(202, &Accepted { accepted }))
}

/// Queues accepted events before anything is answered.
async fn queue(
    ctx: &IngestCtx,
    events: Vec<crate::domain::ChangeEvent>,
) -> Result<usize, WebhookError> {
    // One write per accepted event: the queue send, with the event's deterministic
    // deduplication id. No store is read or written here.
    let n = events.len();
    if let Err(e) = send_owned_events(ctx.publisher.as_ref(), events).await {
        tracing::error!(error = %e, "could not queue inbound events");
        return Err(WebhookError::Unavailable);
    }
    Ok(n)
}
