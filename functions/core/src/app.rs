//! Wiring: one [`Pipeline`] of ingest, sync and deliver over one store and queue, with
//! connectors for the paired systems, and the HTTP router for the webhook endpoints.
//! `p2c demo`, `p2c serve` and the end-to-end tests build the same pipeline.

use crate::backend::Backend;
use crate::connectors::bc::BcConnector;
use crate::connectors::dataverse::DataverseConnector;
use crate::connectors::http::Http;
pub use crate::connectors::oauth::Credentials;
use crate::domain::System;
use crate::inbound::{WebhookError, WebhookRequest, WebhookResponse, MAX_BODY_BYTES};
use crate::pipeline::ingest::{ingest, InboundAuth, IngestCtx};
use crate::pipeline::{runner, DeliverCtx, SyncCtx, Timings};
use crate::ports::{Connector, SourceReader};
use crate::rules::RuleSet;

/// Batches of one queue committed together by [`Pipeline::run_until_idle`]: one commit
/// per ten batches instead of one per batch (2,000 webhooks drained: 575 → 370 ms).
pub const UNIT_BATCHES: usize = 10;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where the paired systems are.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Dataverse Web API base (`…/api/data/v9.2`) and how to authenticate.
    pub dataverse: Option<(String, Credentials)>,
    /// Business Central environment root (`…/v2.0/<tenant>/<env>`), company id, and how
    /// to authenticate.
    pub business_central: Option<(String, String, Credentials)>,
    /// Salesforce My Domain URL (`https://<domain>.my.salesforce.com`) and how to
    /// authenticate.
    pub salesforce: Option<(String, Credentials)>,
    /// Finance & Operations OData root (`https://<env>.operations.dynamics.com/data`) and how
    /// to authenticate.
    pub fin_ops: Option<(String, Credentials)>,
}

/// A system's URL and, optionally, a fixed bearer token to use instead of OAuth2.
pub type UrlAndToken = (Option<String>, Option<String>);

impl Endpoints {
    /// The endpoints of the systems whose URL is given, each signing in with client
    /// credentials from the environment ([`Credentials::from_env`],
    /// [`Credentials::salesforce_from_env`]) or with the fixed token given beside it.
    pub fn from_urls(
        dataverse: UrlAndToken,
        business_central: UrlAndToken,
        bc_company: String,
        salesforce: UrlAndToken,
        fin_ops: UrlAndToken,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            dataverse: dataverse
                .0
                .map(|u| {
                    let c = Credentials::from_env("DATAVERSE", &u, None, dataverse.1)?;
                    Ok::<_, anyhow::Error>((u, c))
                })
                .transpose()?,
            business_central: business_central
                .0
                .map(|u| {
                    let c = Credentials::from_env(
                        "BC",
                        &u,
                        Some(crate::connectors::oauth::BUSINESS_CENTRAL_SCOPE),
                        business_central.1,
                    )?;
                    Ok::<_, anyhow::Error>((u, bc_company, c))
                })
                .transpose()?,
            salesforce: salesforce
                .0
                .map(|u| {
                    let c = Credentials::salesforce_from_env(&u, salesforce.1)?;
                    Ok::<_, anyhow::Error>((u, c))
                })
                .transpose()?,
            fin_ops: fin_ops
                .0
                .map(|u| {
                    let c = Credentials::from_env("FO", &u, None, fin_ops.1)?;
                    Ok::<_, anyhow::Error>((u, c))
                })
                .transpose()?,
        })
    }
}

/// The whole pipeline, on the embedded store or on DynamoDB and SQS.
#[derive(Clone)]
pub struct Pipeline {
    pub store: Backend,
    pub ingest: IngestCtx,
    pub sync: SyncCtx,
    pub deliver: DeliverCtx,
}

impl Pipeline {
    pub fn new(
        store: impl Into<Backend>,
        rules: Arc<RuleSet>,
        auth: InboundAuth,
        endpoints: &Endpoints,
        timings: Timings,
    ) -> anyhow::Result<Self> {
        let mut connectors: BTreeMap<System, Arc<dyn Connector>> = BTreeMap::new();
        let mut readers: BTreeMap<System, Arc<dyn SourceReader>> = BTreeMap::new();
        if let Some((base, credentials)) = &endpoints.dataverse {
            let http = Http::new(System::Dataverse, credentials.source(System::Dataverse)?)?;
            let c = Arc::new(DataverseConnector::new(
                http,
                base.clone(),
                rules.settings(System::Dataverse),
            ));
            connectors.insert(System::Dataverse, c.clone());
            readers.insert(System::Dataverse, c);
        }
        if let Some((root, company, credentials)) = &endpoints.business_central {
            let http = Http::new(
                System::BusinessCentral,
                credentials.source(System::BusinessCentral)?,
            )?;
            let account = rules
                .settings(System::BusinessCentral)
                .rebate_gl_account
                .unwrap_or_else(|| "6910".into());
            let c = Arc::new(BcConnector::new(
                http,
                root.clone(),
                company.clone(),
                account,
            ));
            connectors.insert(System::BusinessCentral, c.clone());
            readers.insert(System::BusinessCentral, c);
        }
        if let Some((url, credentials)) = &endpoints.salesforce {
            let http = Http::new(System::Salesforce, credentials.source(System::Salesforce)?)?;
            let c = Arc::new(crate::connectors::salesforce::SalesforceConnector::new(
                http,
                url,
                rules.settings(System::Salesforce),
            ));
            connectors.insert(System::Salesforce, c.clone());
            readers.insert(System::Salesforce, c);
        }
        if let Some((base, credentials)) = &endpoints.fin_ops {
            let http = Http::new(System::FinOps, credentials.source(System::FinOps)?)?;
            let settings = rules.settings(System::FinOps);
            let c = Arc::new(
                crate::connectors::fo::FinOpsConnector::new(
                    http,
                    base,
                    settings.company_id.clone().unwrap_or_else(|| "usmf".into()),
                    settings.customer_group.clone().unwrap_or_default(),
                )
                .with_open_transactions(
                    settings
                        .open_transactions_entity
                        .clone()
                        .unwrap_or_else(|| "CustomerOpenTransactions".into()),
                )
                .with_rebate_account(settings.rebate_gl_account.clone().unwrap_or_default()),
            );
            connectors.insert(System::FinOps, c.clone());
            readers.insert(System::FinOps, c);
        }
        Ok(Self::with_connectors(
            store, rules, auth, connectors, readers, timings,
        ))
    }

    /// Dataverse webhooks in (header `x-p2c-key` = `key`), Business Central and Dataverse
    /// as in-process targets: p2c's own cost with no network, for the benchmarks and the
    /// `drain` profiling example.
    pub fn with_in_process_targets(
        store: impl Into<Backend>,
        rules: Arc<RuleSet>,
        key: &str,
    ) -> Self {
        let mut connectors: BTreeMap<System, Arc<dyn Connector>> = BTreeMap::new();
        for s in [System::BusinessCentral, System::Dataverse] {
            connectors.insert(
                s,
                Arc::new(crate::connectors::memory::MemoryConnector::new(s)),
            );
        }
        let auth = InboundAuth {
            dataverse: crate::inbound::dataverse::DataverseAuth {
                header: Some("x-p2c-key".into()),
                query_param: None,
                secrets: vec![key.to_string()],
            },
            ..Default::default()
        };
        Self::with_connectors(
            store,
            rules,
            auth,
            connectors,
            BTreeMap::new(),
            Timings::default(),
        )
    }

    /// The pipeline over given connectors and readers (in-process targets, tests, benches).
    pub fn with_connectors(
        store: impl Into<Backend>,
        rules: Arc<RuleSet>,
        auth: InboundAuth,
        connectors: BTreeMap<System, Arc<dyn Connector>>,
        readers: BTreeMap<System, Arc<dyn SourceReader>>,
        timings: Timings,
    ) -> Self {
        let store: Backend = store.into();
        let s = Arc::new(store.clone());
        Self {
            ingest: IngestCtx {
                publisher: s.clone(),
                auth,
                fin_ops_events: rules.fin_ops_business_events().into(),
            },
            sync: SyncCtx {
                state: s.clone(),
                parking: s.clone(),
                audit: s.clone(),
                figures: s.clone(),
                publisher: s.clone(),
                decisions: s.clone(),
                rules,
                live: None,
                readers,
                timings,
            },
            deliver: DeliverCtx {
                state: s.clone(),
                parking: s.clone(),
                audit: s.clone(),
                publisher: s,
                connectors,
                timings,
            },
            store,
        }
    }

    /// Runs each sync batch on the rule set active in `store` (looked up at most every
    /// `every`), so `p2c rules publish` and `rollback` take effect without a restart. The
    /// rules given at start serve until a version is active.
    pub fn with_live_rules(
        mut self,
        store: Arc<dyn crate::ports::RuleStore>,
        every: Duration,
    ) -> Self {
        self.sync.live = Some(Arc::new(crate::rules::live::LiveRules::new(
            store,
            self.sync.rules.clone(),
            every,
        )));
        self
    }

    /// Processes queued work until every queue is empty (or `deadline` passes), doing
    /// what the Lambda event source mappings do on AWS. Up to [`UNIT_BATCHES`] batches of
    /// a queue run as one unit of work on the embedded store:
    /// one commit for up to a hundred messages. A crash loses the unit's work and the queue
    /// redelivers all of it, which every step is built to survive; a webhook answered
    /// meanwhile commits what the unit has done so far first.
    pub async fn run_until_idle(&self, deadline: Duration) -> anyhow::Result<usize> {
        // With live rules, a published or rolled-back rule set is picked up here too, not
        // only by the next batch: the switch (and its log line) comes within the check
        // interval even while no events arrive.
        if let Some(live) = &self.sync.live {
            live.current().await;
        }
        let n = runner::run_until_idle(&self.store, deadline, |q| async move {
            let steps = async {
                let mut total = 0;
                for _ in 0..UNIT_BATCHES {
                    let n = runner::step(&self.store, q, &self.sync, &self.deliver).await?;
                    total += n;
                    if n == 0 {
                        break;
                    }
                }
                Ok(total)
            };
            self.store
                .unit(steps)
                .await
                .map_err(|e| crate::error::QueueError::Backend {
                    queue: q.to_string(),
                    message: e.to_string(),
                })?
        })
        .await?;
        Ok(n)
    }

    /// The webhook endpoints: `POST /webhooks/{system}` (and the BC handshake).
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/webhooks/{system}", axum::routing::any(webhook))
            .route("/health", axum::routing::get(|| async { "ok" }))
            // The handler reads at most MAX_BODY_BYTES + 1 itself, to answer with our own 413.
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(self.ingest.clone())
    }
}

async fn webhook(
    State(ctx): State<IngestCtx>,
    Path(system): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    // Read at most one byte past the cap: enough to know it is too large, no more.
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES + 1).await {
        Ok(b) => b,
        Err(_) => {
            return to_response(
                WebhookError::TooLarge {
                    limit: MAX_BODY_BYTES,
                }
                .response(),
            )
        }
    };
    let req = WebhookRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: WebhookRequest::parse_query(uri.query().unwrap_or("")),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    to_response(ingest(&ctx, &system, &req).await)
}

fn to_response(r: WebhookResponse) -> axum::response::Response {
    let status = axum::http::StatusCode::from_u16(r.status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, r.content_type)],
        r.body,
    )
        .into_response()
}
