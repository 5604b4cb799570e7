//! `p2c`: the command line. Demo, serve, trace, dead letters and rule tooling.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use p2c_core::app::{Endpoints, Pipeline};
use p2c_core::domain::{EntityKey, SourceRef};
use p2c_core::embedded::EmbeddedStore;
use p2c_core::inbound::dataverse::DataverseAuth;
use p2c_core::pipeline::ingest::InboundAuth;
use p2c_core::pipeline::Timings;
use p2c_core::ports::{AuditLog, StateStore};
use p2c_core::rules::RuleSet;
use std::path::PathBuf;

mod rules_cmd;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "p2c",
    version,
    about = "Prospect-to-cash sync between a CRM and an ERP"
)]
struct Cli {
    /// Rule directory (default: the rules built into the binary).
    #[arg(long, global = true, env = "P2C_RULES")]
    rules: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole story against simulated Dataverse and Business Central.
    Demo {
        /// Keep the embedded store here (default: a temporary directory).
        #[arg(long, conflicts_with = "aws_endpoint")]
        store: Option<PathBuf>,
        /// Run on DynamoDB and SQS FIFO instead, at this emulator endpoint on loopback
        /// (moto server: `moto_server -H 127.0.0.1 -p 5000`); a new table and queues are
        /// created for the run.
        #[arg(long, value_name = "URL")]
        aws_endpoint: Option<String>,
        /// The CRM: dataverse or salesforce (default: the pairing in rules/flows.toml).
        #[arg(long)]
        crm: Option<p2c_core::domain::System>,
        /// The ERP: business_central (bc). Finance & Operations is not simulated yet.
        #[arg(long)]
        erp: Option<p2c_core::domain::System>,
    },
    /// Serve the webhook endpoints and run the pipeline on the embedded store.
    Serve(Box<ServeArgs>),
    /// Print the audit trail of an entity (`account:ACC-1`) or a source record (`dataverse/account/<id>`).
    Trace {
        subject: String,
        #[arg(long, default_value = ".p2c/p2c.db", env = "P2C_STORE")]
        store: PathBuf,
    },
    /// Rule tooling for analysts.
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
    /// Dead letters: what is stuck and why; put it back once the cause is fixed.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

/// `p2c serve`'s options.
#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    #[arg(long, default_value = ".p2c/p2c.db", env = "P2C_STORE")]
    store: PathBuf,
    /// How often to look for a rule set published with `p2c rules publish` (seconds).
    #[arg(long, env = "P2C_RULES_CHECK_SECS", default_value_t = p2c_core::rules::live::DEFAULT_CHECK_EVERY.as_secs())]
    rules_check_secs: u64,
    /// Dataverse Web API base, e.g. https://org.crm.dynamics.com/api/data/v9.2
    #[arg(long, env = "P2C_DATAVERSE_URL")]
    dataverse_url: Option<String>,
    #[arg(long, env = "P2C_DATAVERSE_TOKEN", hide_env_values = true)]
    dataverse_token: Option<String>,
    /// Business Central environment root, e.g. https://api.businesscentral.dynamics.com/v2.0/<tenant>/<env>
    #[arg(long, env = "P2C_BC_URL")]
    bc_url: Option<String>,
    #[arg(long, env = "P2C_BC_TOKEN", hide_env_values = true)]
    bc_token: Option<String>,
    /// Salesforce My Domain URL, e.g. https://contoso.my.salesforce.com
    #[arg(long, env = "P2C_SALESFORCE_URL")]
    salesforce_url: Option<String>,
    #[arg(long, env = "P2C_SALESFORCE_TOKEN", hide_env_values = true)]
    salesforce_token: Option<String>,
    /// Finance & Operations OData root, e.g. https://contoso.operations.dynamics.com/data
    #[arg(long, env = "P2C_FO_URL")]
    fo_url: Option<String>,
    #[arg(long, env = "P2C_FO_TOKEN", hide_env_values = true)]
    fo_token: Option<String>,
    /// Header Dataverse sends the webhook key in (service endpoint `HttpHeader` auth).
    #[arg(long, default_value = "x-p2c-key")]
    dataverse_key_header: String,
    /// Webhook keys Dataverse may present (comma-separated, for rotation).
    #[arg(
        long,
        env = "P2C_DATAVERSE_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    dataverse_keys: Vec<String>,
    /// Business Central subscription clientState values (comma-separated).
    #[arg(
        long,
        env = "P2C_BC_CLIENT_STATES",
        hide_env_values = true,
        value_delimiter = ','
    )]
    bc_client_states: Vec<String>,
    /// Secrets Salesforce Outbound Messages carry in the endpoint URL (`?key=`, comma-separated).
    #[arg(
        long,
        env = "P2C_SALESFORCE_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    salesforce_keys: Vec<String>,
    /// Salesforce org ids whose Outbound Messages are accepted (comma-separated).
    #[arg(long, env = "P2C_SALESFORCE_ORG_IDS", value_delimiter = ',')]
    salesforce_org_ids: Vec<String>,
    /// Keys Finance & Operations business events carry (`x-p2c-key` header or `?code=`,
    /// comma-separated).
    #[arg(
        long,
        env = "P2C_FO_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    fo_keys: Vec<String>,
    /// Secrets of a relay that signs Finance & Operations events (HMAC-SHA256 of
    /// `<timestamp>.<body>` in `X-P2C-Signature`, the time in `X-P2C-Timestamp`;
    /// comma-separated). When set, the signature is required instead of the key.
    #[arg(
        long,
        env = "P2C_FO_SIGNING_SECRETS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    fo_signing_secrets: Vec<String>,
    /// How far a signature's timestamp may be from now, in seconds.
    #[arg(long, env = "P2C_SIGNATURE_WINDOW_SECS", default_value_t = 300)]
    signature_window_secs: u64,
    /// Generic senders posting p2c's event format to `/webhooks/events`, as JSON:
    /// `{"<sender>": {"systems": ["business_central"], "secrets": ["…"]}}`.
    #[arg(long, env = "P2C_SENDERS", hide_env_values = true, default_value = "")]
    senders: String,
}

/// Which store: the embedded one, or a deployment's DynamoDB table and SQS queues.
#[derive(clap::Args)]
struct StoreWhere {
    /// The embedded store (`p2c serve`'s).
    #[arg(
        long,
        default_value = ".p2c/p2c.db",
        env = "P2C_STORE",
        conflicts_with = "aws"
    )]
    store: PathBuf,
    /// A deployment's table and queues, named by `P2C_TABLE` and the `P2C_*_QUEUE_URL` /
    /// `P2C_*_DLQ_URL` variables (the functions' environment).
    #[arg(long)]
    aws: bool,
}

/// Which dead letters.
#[derive(clap::Args)]
struct DlqSelect {
    /// Only this queue: inbound, to-erp or to-crm.
    #[arg(long)]
    queue: Option<p2c_core::ports::QueueName>,
    /// Only this entity (`account:ACC-1`) or source record (`dataverse/account/<id>`).
    #[arg(long)]
    entity: Option<String>,
    /// Only this error code (`target_rejected`, `max_receives_exceeded`, …).
    #[arg(long)]
    code: Option<String>,
}

impl DlqSelect {
    fn filter(self) -> p2c_core::dlq::Filter {
        p2c_core::dlq::Filter {
            queue: self.queue,
            entity: self.entity,
            code: self.code,
        }
    }
}

#[derive(Subcommand)]
enum DlqAction {
    /// List the dead letters with their error code and reason.
    List {
        #[command(flatten)]
        select: DlqSelect,
        #[command(flatten)]
        at: StoreWhere,
    },
    /// Put dead letters back on their queues (the steps' idempotency keeps the effect
    /// exactly once).
    Replay {
        #[command(flatten)]
        select: DlqSelect,
        /// Replay every dead letter (otherwise a selection is required).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        at: StoreWhere,
    },
}

/// The store `at` names; an embedded one is created when `create` (else it must exist).
async fn open_store(at: StoreWhere, create: bool) -> Result<p2c_core::backend::Backend> {
    Ok(if at.aws {
        p2c_core::backend::AwsBackend::from_env().await?.into()
    } else {
        if !create && !at.store.exists() {
            bail!("no store at {}", at.store.display());
        }
        EmbeddedStore::open(&at.store)?.into()
    })
}

#[derive(Subcommand)]
enum RulesAction {
    /// Compile every script and check the catalogue.
    Check,
    /// Run every rule's test cases.
    Test,
    /// Evaluate one rule once and show how it decided: each statement run, the values set,
    /// which way each `if` went, and the output.
    Run {
        /// The rule: its path under the rules folder (`credit_limit.rhai`,
        /// `mapping/account_to_customer`) or its name when only one script has it.
        rule: String,
        /// The rule's input as JSON (`-` reads stdin).
        #[arg(long, conflicts_with = "case")]
        input: Option<PathBuf>,
        /// Or the input of one of the rule's test cases (a part of its name).
        #[arg(long)]
        case: Option<String>,
    },
    /// Check and test the rules, store them and make them the active version: a running
    /// `p2c serve` on the same store picks them up within its check interval.
    Publish {
        #[command(flatten)]
        at: StoreWhere,
    },
    /// Make an earlier version active again (default: the one before the active one).
    Rollback {
        /// The version to return to (`r-…`, as `p2c rules versions` lists them).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        at: StoreWhere,
    },
    /// What a candidate rule set would decide differently: both evaluated over the credit
    /// and rebate decisions kept in the store (or a folder of inputs), every changed
    /// outcome listed, then a summary ("12 orders would be held instead of released").
    Diff {
        /// The candidate rules (a folder like `rules/`).
        #[arg(long)]
        candidate: PathBuf,
        /// The decisions of the last N days.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Instead: a folder of `.json` files, each `{"rule", "input"}` or a list of them.
        #[arg(long)]
        inputs: Option<PathBuf>,
        #[command(flatten)]
        at: StoreWhere,
    },
    /// The published versions, newest first, and which one is active.
    Versions {
        #[command(flatten)]
        at: StoreWhere,
    },
    /// Write definition files (`.d.rhai`) of the functions rules can call, for the Rhai
    /// language server's completion and hover help.
    Defs {
        /// Where to write them (default: `.defs` in the rules folder, which the rules
        /// loader skips).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn load_rules(dir: &Option<PathBuf>) -> Result<RuleSet> {
    rules_cmd::load(dir, &mut std::io::stderr())
}

fn parse_source(s: &str) -> Option<SourceRef> {
    let mut parts = s.splitn(3, '/');
    let system = parts.next()?.parse().ok()?;
    let entity_type = parts.next()?.parse().ok()?;
    Some(SourceRef::new(system, entity_type, parts.next()?))
}

fn init_logs() {
    // Logs go to stderr, and only when asked for (RUST_LOG), so the demo's story stays readable.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
}

fn main() -> std::process::ExitCode {
    init_logs();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            store,
            aws_endpoint,
            crm,
            erp,
        } => {
            use p2c_core::domain::Side;
            let rules = Arc::new(load_rules(&cli.rules)?);
            let crm = crm.unwrap_or(rules.paired(Side::Crm));
            let erp = erp.unwrap_or(rules.paired(Side::Erp));
            if crm.side() != Side::Crm || erp.side() != Side::Erp {
                bail!("--crm takes dataverse or salesforce, --erp business_central or fo");
            }
            let mut stdout = std::io::stdout();
            let opts = p2c_core::demo::DemoOptions {
                rules,
                store,
                aws_endpoint,
                crm,
                erp,
            };
            let report = p2c_core::demo::run(opts, &mut stdout).await?;
            if !report.passed() {
                eprintln!(
                    "error: {} expected outcome(s) did not happen",
                    report.checks.iter().filter(|c| !c.ok).count()
                );
                std::process::exit(1);
            }
        }
        Command::Serve(args) => {
            let ServeArgs {
                listen,
                store,
                rules_check_secs,
                dataverse_url,
                dataverse_token,
                bc_url,
                bc_token,
                salesforce_url,
                salesforce_token,
                fo_url,
                fo_token,
                dataverse_key_header,
                dataverse_keys,
                bc_client_states,
                salesforce_keys,
                salesforce_org_ids,
                fo_keys,
                fo_signing_secrets,
                signature_window_secs,
                senders,
            } = *args;
            let rules = Arc::new(load_rules(&cli.rules)?);
            if dataverse_keys.is_empty() || bc_client_states.is_empty() {
                bail!("set P2C_DATAVERSE_KEYS and P2C_BC_CLIENT_STATES: webhooks are always authenticated");
            }
            let company = rules
                .settings(p2c_core::domain::System::BusinessCentral)
                .company_id
                .unwrap_or_default();
            let endpoints = Endpoints::from_urls(
                (dataverse_url, dataverse_token),
                (bc_url, bc_token),
                company,
                (salesforce_url, salesforce_token),
                (fo_url, fo_token),
            )?;
            let auth = InboundAuth {
                dataverse: DataverseAuth {
                    header: Some(dataverse_key_header),
                    query_param: Some("code".into()),
                    secrets: dataverse_keys,
                },
                bc_client_states,
                salesforce: p2c_core::inbound::salesforce::SalesforceAuth {
                    secrets: salesforce_keys,
                    org_ids: salesforce_org_ids,
                },
                fin_ops: DataverseAuth {
                    header: Some("x-p2c-key".into()),
                    query_param: Some("code".into()),
                    secrets: fo_keys,
                },
                fin_ops_signed: p2c_core::inbound::SignedAuth::new(
                    fo_signing_secrets,
                    signature_window_secs,
                ),
                senders: p2c_core::inbound::generic::Senders::from_json(
                    &senders,
                    signature_window_secs,
                )
                .map_err(anyhow::Error::msg)?,
            };
            let store = EmbeddedStore::open(&store)?;
            let rule_store: Arc<dyn p2c_core::ports::RuleStore> = Arc::new(store.clone());
            let pipeline =
                Pipeline::new(store, rules.clone(), auth, &endpoints, Timings::default())?
                    .with_live_rules(rule_store, Duration::from_secs(rules_check_secs));
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            // The address actually bound (`--listen 127.0.0.1:0` picks a free port).
            let bound = listener.local_addr()?;
            eprintln!(
                "p2c serving webhooks on http://{bound}/webhooks/{{dataverse,bc,salesforce,fo,events}} with rules {}",
                rules.version
            );
            let worker = pipeline.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = worker.run_until_idle(Duration::from_secs(5)).await {
                        tracing::error!(error = %e, "pipeline step failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            axum::serve(listener, pipeline.router())
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
        }
        Command::Dlq { action } => match action {
            DlqAction::List { select, at } => {
                let backend = open_store(at, false).await?;
                let letters = p2c_core::dlq::list(&backend, &select.filter()).await?;
                print!("{}", p2c_core::dlq::render(&letters));
            }
            DlqAction::Replay { select, all, at } => {
                let filter = select.filter();
                if filter.is_empty() && !all {
                    bail!("say what to replay: --queue, --entity, --code, or --all");
                }
                let backend = open_store(at, false).await?;
                let n = p2c_core::dlq::replay(&backend, &filter).await?;
                println!("{n} dead letter(s) put back on their queues");
            }
        },
        Command::Trace { subject, store } => {
            let store = EmbeddedStore::open(&store)?;
            // An entity key, or a source record (`system/type/id`) resolved to its entity.
            let mut subjects = vec![subject.clone()];
            let key = match subject.parse::<EntityKey>() {
                Ok(k) => Some(k),
                Err(_) => match parse_source(&subject) {
                    Some(src) => store.resolve(&src).await?,
                    None => None,
                },
            };
            if let Some(key) = key {
                subjects.push(key.to_string());
                if let Some(state) = store.load(&key).await? {
                    for (system, id) in &state.ids {
                        subjects.push(SourceRef::new(*system, key.entity_type, id.clone()).group());
                    }
                }
            }
            subjects.sort();
            subjects.dedup();
            let mut entries = Vec::new();
            for s in &subjects {
                entries.extend(store.trail(s).await?);
            }
            entries.sort_by_key(|e| e.at);
            if entries.is_empty() {
                bail!("no audit trail for `{subject}`");
            }
            for e in entries {
                println!(
                    "{}  {:<8} {:<10} {}{}",
                    e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                    e.step,
                    e.outcome,
                    e.detail,
                    e.rules_version
                        .map(|v| format!("  [{v}]"))
                        .unwrap_or_default()
                );
            }
        }
        Command::Rules { action } => {
            let mut out = std::io::stdout().lock();
            match action {
                RulesAction::Check => rules_cmd::check(&cli.rules, &mut out)?,
                RulesAction::Test => rules_cmd::test(&cli.rules, &mut out)?,
                RulesAction::Run { rule, input, case } => rules_cmd::run(
                    &cli.rules,
                    &rule,
                    input.as_deref(),
                    case.as_deref(),
                    &mut out,
                )?,
                RulesAction::Defs { out: to } => rules_cmd::defs(&cli.rules, to, &mut out)?,
                RulesAction::Publish { at } => {
                    rules_cmd::publish(&cli.rules, &open_store(at, true).await?, &mut out).await?
                }
                RulesAction::Rollback { to, at } => {
                    rules_cmd::rollback(&open_store(at, true).await?, to.as_deref(), &mut out)
                        .await?
                }
                RulesAction::Diff {
                    candidate,
                    days,
                    inputs,
                    at,
                } => {
                    rules_cmd::diff(
                        &cli.rules,
                        &open_store(at, true).await?,
                        &candidate,
                        days,
                        inputs.as_deref(),
                        &mut out,
                    )
                    .await?
                }
                RulesAction::Versions { at } => {
                    rules_cmd::versions(&open_store(at, true).await?, &mut out).await?
                }
            }
        }
    }
    Ok(())
}
