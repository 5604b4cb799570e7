//! The sync step: one inbound change event → entity state, decisions and outbound
//! commands, with the guarantees of DESIGN.md:
//!
//! 1. a duplicate has one effect (its key in the state; one conditional write per event);
//! 2. a stale update never overwrites newer state (source versions per system);
//! 3. our own writes coming back are dropped (integration user; payload fingerprint);
//! 4. an event whose references are not synced yet is parked, released when they land;
//! 5. a crash after the state write re-sends exactly the stored commands (outbox).

use super::{audit, Disposition, SyncCtx};
use crate::command::{Action, Command, Credit, RebateAccrual, RebateCreditNote};
use crate::domain::{
    ChangeEvent, Contact, Customer, CustomerFinancials, EntityKey, EntityType, Invoice,
    InvoiceKind, Operation, OrderProgress, Payment, Product, Quote, QuoteTotals, SalesOrder,
    SourceRef, System,
};
use crate::error::{DeliveryError, QueueError, RuleError, StoreError};
use crate::json::fingerprint;
use crate::ports::{Applied, Delivery, EntityState, OutMessage, ParkedEvent, QueueName, Typed};
use crate::rules::FlowKind;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What happened to an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SyncOutcome {
    Applied { entity: String, commands: usize },
    Duplicate,
    Stale { entity: String },
    Echo { entity: String },
    NoChange { entity: String },
    Parked { dependency: String },
    Expanded { events: usize },
    Ignored { reason: String },
    Rejected { code: String, message: String },
    Resent { entity: String, commands: usize },
}

/// Why an event could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Try again later (store or queue unavailable, lost a race, source unreachable).
    #[error("{0}")]
    Retryable(String),
    /// Will not succeed as it is: dead-letter it with this code.
    #[error("{code}: {message}")]
    Permanent { code: String, message: String },
}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt { .. } => SyncError::Permanent {
                code: "corrupt_state".into(),
                message: e.to_string(),
            },
            other => SyncError::Retryable(other.to_string()),
        }
    }
}

impl From<QueueError> for SyncError {
    fn from(e: QueueError) -> Self {
        SyncError::Retryable(e.to_string())
    }
}

impl From<DeliveryError> for SyncError {
    fn from(e: DeliveryError) -> Self {
        if e.is_retryable() {
            SyncError::Retryable(e.to_string())
        } else {
            SyncError::Permanent {
                code: "source_read_failed".into(),
                message: e.to_string(),
            }
        }
    }
}

impl From<RuleError> for SyncError {
    fn from(e: RuleError) -> Self {
        SyncError::Permanent {
            code: e.code().to_string(),
            message: e.to_string(),
        }
    }
}

impl SyncError {
    pub fn disposition(&self, receive_count: u32, ctx: &SyncCtx, seed: &str) -> Disposition {
        match self {
            SyncError::Retryable(reason) => Disposition::Retry {
                delay: super::backoff(ctx.timings.retry_base, receive_count, seed),
                reason: reason.clone(),
            },
            SyncError::Permanent { code, message } => Disposition::DeadLetter {
                code: code.clone(),
                reason: message.clone(),
            },
        }
    }
}

/// Handles one queue message (the body is a serialized [`ChangeEvent`]).
pub async fn handle_message(ctx: &SyncCtx, d: &Delivery) -> Disposition {
    let parsed = match d.typed.take() {
        Some(Typed::Event(ev)) => Ok(Arc::unwrap_or_clone(ev)),
        _ => serde_json::from_str(&d.body),
    };
    let ev: ChangeEvent = match parsed {
        Ok(ev) => ev,
        Err(e) => {
            return Disposition::DeadLetter {
                code: "malformed_message".into(),
                reason: format!("not a change event: {e}"),
            }
        }
    };
    let span = tracing::info_span!("sync", event = %ev.event_id, source = %ev.source);
    let _g = span.enter();
    match sync_event(ctx, ev).await {
        Ok(outcome) => {
            tracing::info!(
                outcome = %crate::error::redact(&format!("{outcome:?}")),
                "synced"
            );
            Disposition::Done
        }
        Err(e) => {
            tracing::warn!(error = %crate::error::redact(&e.to_string()), "sync failed");
            e.disposition(d.receive_count, ctx, &d.message_id)
        }
    }
}

/// Syncs one event exactly once in effect.
///
/// No claim is taken: everything up to the state write only reads, and the state write is
/// one conditional put on the version that was read, carrying the event's idempotency key,
/// its outbox and its audit entry. Two workers with the same event cannot both write; a
/// repeat of the event finds its key in the state and only re-sends what is not yet
/// delivered; a repeat of an older event is stale.
pub async fn sync_event(ctx: &SyncCtx, ev: ChangeEvent) -> Result<SyncOutcome, SyncError> {
    let key = ev.idempotency_key("sync").0;
    let subject = ev.source.group();
    let event_id = ev.event_id.clone();
    match process(ctx, ev, &key).await {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            if let SyncError::Permanent { code, message } = &e {
                audit(
                    ctx.audit.as_ref(),
                    &subject,
                    "sync",
                    "failed",
                    format!("{code}: {message}"),
                    Some(&event_id),
                    Some(&ctx.rules.version),
                )
                .await;
            }
            Err(e)
        }
    }
}

async fn process(ctx: &SyncCtx, mut ev: ChangeEvent, idem: &str) -> Result<SyncOutcome, SyncError> {
    let rules = ctx.rules.clone();
    let version = rules.version.clone();
    let system = ev.source.system;
    let side = system.side();

    if ev.operation == Operation::Delete {
        let subject = subject_of(ctx, &ev.source).await?;
        let reason = format!(
            "deleted in {}; p2c never deletes in the other system",
            system.label()
        );
        note(ctx, &subject, "ignored", &reason, &ev).await;
        return Ok(SyncOutcome::Ignored { reason });
    }

    // A system this deployment does not pair (a webhook registered by mistake, or left
    // over from another pairing): its changes have nowhere to go.
    if rules.paired(side) != system {
        let reason = format!(
            "{} is not this deployment's {} (rules/flows.toml pairs {} with {})",
            system.label(),
            if side == crate::domain::Side::Crm {
                "CRM"
            } else {
                "ERP"
            },
            rules.paired(crate::domain::Side::Crm).label(),
            rules.paired(crate::domain::Side::Erp).label()
        );
        note(ctx, &ev.source.group(), "ignored", &reason, &ev).await;
        return Ok(SyncOutcome::Ignored { reason });
    }

    let Some((kind, flow)) = rules.flow_for(side, ev.source.entity_type) else {
        let reason = format!(
            "no enabled flow reads {} changes from the {:?}",
            ev.source.entity_type, side
        );
        note(ctx, &ev.source.group(), "ignored", &reason, &ev).await;
        return Ok(SyncOutcome::Ignored { reason });
    };
    let flow = flow.for_system(system);

    // p2c's own writes coming back: by the API client Salesforce names (`changeOrigin`),
    // or by the integration user the change was made as.
    let settings = rules.settings(system);
    let echo = if system == System::Salesforce
        && ev.origin.client.as_deref() == Some(settings.client_id())
    {
        Some(format!(
            "written by p2c (API client `{}`); dropped",
            settings.client_id()
        ))
    } else {
        match (&ev.origin.user_id, &settings.integration_user) {
            (Some(author), Some(me)) if author.eq_ignore_ascii_case(me) => Some(format!(
                "written by p2c's own {} user; dropped",
                system.label()
            )),
            _ => None,
        }
    };
    if let Some(detail) = echo {
        let subject = subject_of(ctx, &ev.source).await?;
        note(ctx, &subject, "echo", detail, &ev).await;
        return Ok(SyncOutcome::Echo { entity: subject });
    }

    // Notifications without data, oversized payloads, and records whose lines come only
    // on a full read: read the record from its source first.
    let missing_expand = flow
        .expand
        .as_ref()
        .is_some_and(|f| !ev.fields.contains_key(f));
    if ev.needs_fetch || missing_expand {
        let reader = ctx
            .readers
            .get(&system)
            .ok_or_else(|| SyncError::Permanent {
                code: "no_reader".into(),
                message: format!("no reader configured for {system}"),
            })?;
        let mut read = reader.read(&ev).await?;
        if read.is_empty() {
            let reason = format!("the record no longer exists in {}", system.label());
            note(ctx, &ev.source.group(), "ignored", &reason, &ev).await;
            return Ok(SyncOutcome::Ignored { reason });
        }
        // The record itself goes on here; anything else the read names (related records
        // whose state the change affects, the records of a merged change) is queued first,
        // so a crash after this point re-reads and re-queues it (the same ids, deduplicated).
        if let Some(i) = read.iter().position(|r| r.source == ev.source) {
            let record = read.remove(i);
            if !read.is_empty() {
                send_events(ctx.publisher.as_ref(), &read).await?;
                let related: Vec<String> = read.iter().map(|r| r.source.to_string()).collect();
                note(
                    ctx,
                    &ev.source.group(),
                    "related",
                    format!("queued {} to be read too", related.join(", ")),
                    &ev,
                )
                .await;
            }
            ev = record;
        } else {
            let n = read.len();
            send_events(ctx.publisher.as_ref(), &read).await?;
            note(
                ctx,
                &ev.source.group(),
                "expanded",
                format!("read {n} records; each queued as its own event"),
                &ev,
            )
            .await;
            return Ok(SyncOutcome::Expanded { events: n });
        }
    }

    // ERP writes go to the record's company: routed by the rules for a CRM record, the
    // company the ERP record came from otherwise (a rebate credit note follows its invoice).
    // Decided on the whole record, before anything is planned, so a record naming an
    // unknown company has no effect at all.
    let company = if side == crate::domain::Side::Crm {
        rules
            .company_for(&ev)
            .map_err(|message| SyncError::Permanent {
                code: "unmapped_company".into(),
                message,
            })?
    } else {
        ev.company.clone()
    };

    // References: add each lookup's business key; park if a required one is not synced.
    let counterpart = rules.counterpart(side);
    let lookups = enrich_lookups(ctx, &mut ev.fields, system, counterpart).await?;
    for path in &flow.requires {
        for (p, lookup) in lookups.iter().filter(|(p, _)| p == path) {
            if !lookup.synced {
                let dependency = lookup.source.group();
                return park(
                    ctx,
                    &ev,
                    &dependency,
                    &format!(
                        "waiting for {} ({p}) to be synced to {}",
                        lookup.source,
                        counterpart.label()
                    ),
                    &version,
                    true,
                )
                .await;
            }
        }
    }

    // Map.
    // The script's input: the event's fields, read in place.
    let operation = json!(ev.operation);
    let input = {
        use crate::rules::{Field, RuleInput};
        RuleInput(vec![
            ("system", Field::Text(system.as_str().to_string())),
            ("operation", Field::Json(&operation)),
            ("record", Field::Object(&ev.fields)),
            ("previous", Field::Object(&ev.previous)),
            (
                "resource",
                ev.fields
                    .get("@p2c.entitySet")
                    .map(Field::Json)
                    .unwrap_or(Field::Unit),
            ),
            (
                "today",
                Field::Text(ev.received_at.format("%Y-%m-%d").to_string()),
            ),
        ])
    };
    let mapped = match rules.eval_input(&flow.script, &input) {
        Ok(v) => v,
        Err(RuleError::Rejected {
            code,
            message,
            rule,
        }) if code != "unmapped_value" => {
            let subject = subject_of(ctx, &ev.source).await?;
            note(
                ctx,
                &subject,
                "rejected",
                format!("{rule}: {code}: {message}"),
                &ev,
            )
            .await;
            return Ok(SyncOutcome::Rejected { code, message });
        }
        Err(e) => return Err(e.into()),
    };
    let record = Record::parse(kind, &flow.script, mapped)?;
    let key = record.key()?;
    let subject = key.to_string();

    let mut state = ctx
        .state
        .load(&key)
        .await?
        .unwrap_or_else(|| EntityState::new(key.clone()));

    // This event again. Its commands all delivered: a duplicate. Otherwise the process may
    // have died after the state write: re-send exactly what was decided then (the queue's
    // deduplication and the deliver step drop whatever did go out).
    if let Some(applied) = state
        .last_applied
        .as_ref()
        .filter(|ap| ap.idempotency_key == idem)
    {
        if state.outbox_delivered() {
            return Ok(SyncOutcome::Duplicate);
        }
        let cmds = applied.commands.clone();
        send_commands(ctx.publisher.as_ref(), &cmds).await?;
        note(
            ctx,
            &subject,
            "resent",
            format!(
                "state was already written; re-sent {} command(s)",
                cmds.len()
            ),
            &ev,
        )
        .await;
        return Ok(SyncOutcome::Resent {
            entity: subject,
            commands: cmds.len(),
        });
    }

    if let Some(applied) = state.applied.get(&system) {
        if ev.version.is_older_than(applied) {
            note(
                ctx,
                &subject,
                "stale",
                format!(
                    "{} version {} is older than the applied {}; dropped",
                    system.label(),
                    ev.version,
                    applied
                ),
                &ev,
            )
            .await;
            return Ok(SyncOutcome::Stale { entity: subject });
        }
    }

    let record_json = record.to_json();
    let fp = fingerprint(&record_json);
    let unchanged = state.sent.get(kind.as_str()) == Some(&fp);
    let quiet = |state: &EntityState| {
        if state.written.contains_key(&system) {
            (
                "echo",
                format!(
                    "same {} as p2c last synced (an echo of p2c's write to {}); dropped",
                    kind.record_kind(),
                    system.label()
                ),
            )
        } else {
            (
                "no_change",
                format!(
                    "no change to the synced {} fields; dropped",
                    kind.record_kind()
                ),
            )
        }
    };

    let mut plan = Plan::default();
    match &record {
        Record::Order(order) => {
            let previous: Option<Credit> = state
                .records
                .get("credit")
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            if unchanged && matches!(previous, Some(Credit::Release)) {
                let (o, d) = quiet(&state);
                note(ctx, &subject, o, d, &ev).await;
                return Ok(quiet_outcome(o, subject));
            }
            let credit = decide_credit(ctx, order, &rules.catalogue.credit.script).await?;
            if unchanged && previous.as_ref() == Some(&credit) {
                if let Credit::Hold { .. } = credit {
                    return park(
                        ctx,
                        &ev,
                        &credit_dependency(&order.account_number),
                        "still held; waiting for the customer's financials to change",
                        &version,
                        false,
                    )
                    .await;
                }
                let (o, d) = quiet(&state);
                note(ctx, &subject, o, d, &ev).await;
                return Ok(quiet_outcome(o, subject));
            }
            plan_order(
                ctx,
                &mut plan,
                &ev,
                idem,
                &key,
                order,
                &credit,
                &version,
                counterpart,
            )
            .await?;
            plan.records.insert(
                "credit".into(),
                serde_json::to_value(&credit).unwrap_or(Value::Null),
            );
        }
        // The very version already applied, with the same content: this event again.
        _ if unchanged
            && !ev.version.is_empty()
            && state.applied.get(&system) == Some(&ev.version) =>
        {
            return Ok(SyncOutcome::Duplicate);
        }
        _ if unchanged => {
            let (o, d) = quiet(&state);
            note(ctx, &subject, o, d, &ev).await;
            return Ok(quiet_outcome(o, subject));
        }
        Record::Invoice(inv) => {
            plan_invoice(ctx, &mut plan, &ev, idem, &key, inv, &version, counterpart).await?
        }
        other => {
            let action = other.action();
            plan.note = format!("{} → {}", action.name(), counterpart.label());
            plan.commands.push(Command::new(
                idem,
                &ev.event_id,
                counterpart,
                key.clone(),
                action,
                &version,
            ));
            if let Record::Progress(p) = other {
                if matches!(
                    p.status,
                    crate::domain::OrderStatus::Invoiced | crate::domain::OrderStatus::Cancelled
                ) {
                    if let Some(acc) = order_account(ctx, &key).await? {
                        ctx.figures.clear_open_order(&acc, &p.order_number).await?;
                    }
                }
            }
        }
    }
    let base_version = state.version;
    state.version = base_version + 1;
    let applied_version = state
        .applied
        .get(&system)
        .copied()
        .unwrap_or_default()
        .max(ev.version);
    state.applied.insert(system, applied_version);
    if !ev.source.id.starts_with("collection:") {
        state.ids.insert(system, ev.source.id.clone());
    }
    state
        .records
        .insert(kind.record_kind().to_string(), record_json);
    for (k, v) in plan.records {
        state.records.insert(k, v);
    }
    state.sent.insert(kind.as_str().to_string(), fp);
    for c in plan
        .commands
        .iter_mut()
        .filter(|c| c.target.side() == crate::domain::Side::Erp)
    {
        c.company = company.clone();
    }
    state.last_applied = Some(Applied {
        idempotency_key: idem.to_string(),
        commands: plan.commands.clone(),
    });
    state.updated_at = chrono::Utc::now();
    let applied = super::entry(
        &subject,
        "sync",
        "applied",
        format!("{}: {}", kind, plan.note),
        Some(&ev.event_id),
        Some(&ctx.rules.version),
    );
    match ctx.state.save(&state, &applied).await {
        Ok(()) => {}
        Err(StoreError::Conflict { key }) => {
            return Err(SyncError::Retryable(format!(
                "{key} changed concurrently; retrying"
            )))
        }
        Err(e) => return Err(e.into()),
    }

    send_commands(ctx.publisher.as_ref(), &plan.commands).await?;
    let n = plan.commands.len();

    if let Some(dep) = &plan.park_on {
        park(
            ctx,
            &ev,
            dep,
            "held; re-evaluated when the customer's financials change",
            &version,
            false,
        )
        .await?;
    }
    if let Record::Financials(f) = &record {
        let cause = format!("{}@{}", key, state.version);
        let released = release_waiters(
            ctx.parking.as_ref(),
            ctx.publisher.as_ref(),
            &credit_dependency(&f.account_number),
            &cause,
        )
        .await?;
        if released > 0 {
            note(
                ctx,
                &subject,
                "released",
                format!("{released} held order(s) re-evaluated with the new financials"),
                &ev,
            )
            .await;
        }
    }
    Ok(SyncOutcome::Applied {
        entity: subject,
        commands: n,
    })
}

/// Appends a sync step to the audit trail, with the event and the rule-set version.
async fn note(
    ctx: &SyncCtx,
    subject: &str,
    outcome: &str,
    detail: impl Into<String>,
    ev: &ChangeEvent,
) {
    audit(
        ctx.audit.as_ref(),
        subject,
        "sync",
        outcome,
        detail,
        Some(&ev.event_id),
        Some(&ctx.rules.version),
    )
    .await;
}

fn quiet_outcome(kind: &str, entity: String) -> SyncOutcome {
    if kind == "echo" {
        SyncOutcome::Echo { entity }
    } else {
        SyncOutcome::NoChange { entity }
    }
}

/// The dependency key held orders of a customer wait on.
pub fn credit_dependency(account_number: &str) -> String {
    format!("credit/{account_number}")
}

async fn subject_of(ctx: &SyncCtx, source: &SourceRef) -> Result<String, SyncError> {
    Ok(ctx
        .state
        .resolve(source)
        .await?
        .map(|k| k.to_string())
        .unwrap_or_else(|| source.group()))
}

async fn order_account(ctx: &SyncCtx, key: &EntityKey) -> Result<Option<String>, SyncError> {
    Ok(ctx
        .state
        .load(key)
        .await?
        .and_then(|s| s.records.get("order").cloned())
        .and_then(|o| {
            o.get("account_number")
                .and_then(Value::as_str)
                .map(str::to_string)
        }))
}

/// Parks an event under a dependency. With `recheck`, looks once more after parking, so
/// a dependency that landed between the check and the park is not missed.
async fn park(
    ctx: &SyncCtx,
    ev: &ChangeEvent,
    dependency: &str,
    why: &str,
    version: &str,
    recheck: bool,
) -> Result<SyncOutcome, SyncError> {
    let parked = ParkedEvent {
        id: ev.event_id.0.clone(),
        dependency: dependency.to_string(),
        event: ev.clone(),
        parked_at: chrono::Utc::now(),
    };
    ctx.parking.park(&parked).await?;
    let subject = subject_of(ctx, &ev.source).await?;
    audit(
        ctx.audit.as_ref(),
        &subject,
        "sync",
        "parked",
        why,
        Some(&ev.event_id),
        Some(version),
    )
    .await;
    if recheck {
        if let Some(dep_source) = parse_group(dependency) {
            let counterpart = ctx.rules.counterpart(ev.source.system.side());
            if let Some(k) = ctx.state.resolve(&dep_source).await? {
                if let Some(s) = ctx.state.load(&k).await? {
                    if s.ids.contains_key(&counterpart) {
                        let cause = format!("{}@{}", k, s.version);
                        release_waiters(
                            ctx.parking.as_ref(),
                            ctx.publisher.as_ref(),
                            dependency,
                            &cause,
                        )
                        .await?;
                    }
                }
            }
        }
    }
    Ok(SyncOutcome::Parked {
        dependency: dependency.to_string(),
    })
}

fn parse_group(group: &str) -> Option<SourceRef> {
    let mut parts = group.splitn(3, '/');
    let system: System = parts.next()?.parse().ok()?;
    let et: EntityType = parts.next()?.parse().ok()?;
    Some(SourceRef::new(system, et, parts.next()?))
}

/// Re-queues every event waiting on `dependency`, then removes it from the parking lot.
/// The re-queued event gets a new id derived from `cause` (deterministic, so two
/// releasers queue it once) and is processed afresh.
pub async fn release_waiters(
    parking: &dyn crate::ports::ParkingStore,
    publisher: &dyn crate::ports::Publisher,
    dependency: &str,
    cause: &str,
) -> Result<usize, SyncError> {
    let waiting = parking.waiting(dependency).await?;
    let mut events = Vec::with_capacity(waiting.len());
    for p in &waiting {
        let mut ev = p.event.clone();
        let base = ev
            .event_id
            .0
            .split("~after:")
            .next()
            .unwrap_or_default()
            .to_string();
        ev.event_id.0 = format!("{base}~after:{cause}");
        ev.content_hash = Default::default();
        events.push(ev);
    }
    send_events(publisher, &events).await?;
    for p in &waiting {
        parking.unpark(dependency, &p.id).await?;
    }
    Ok(waiting.len())
}

/// The queue message for an inbound event, the event moved in as its typed value.
pub fn into_message(ev: ChangeEvent) -> OutMessage {
    OutMessage {
        group: ev.source.group(),
        dedup_id: crate::json::hash_parts(&[&ev.idempotency_key("queue").0]),
        body: serde_json::to_string(&ev).unwrap_or_default(),
        typed: Some(Typed::Event(Arc::new(ev))),
    }
}

/// The queue message for an inbound event.
pub fn event_message(ev: &ChangeEvent) -> OutMessage {
    into_message(ev.clone())
}

/// Queues events on the inbound queue, each moved into its message (webhooks just parsed).
pub async fn send_owned_events(
    publisher: &dyn crate::ports::Publisher,
    events: Vec<ChangeEvent>,
) -> Result<(), QueueError> {
    let messages = events.into_iter().map(into_message).collect();
    publisher.send_owned(QueueName::Inbound, messages).await
}

/// Queues events on the inbound queue (the publisher batches the requests).
pub async fn send_events(
    publisher: &dyn crate::ports::Publisher,
    events: &[ChangeEvent],
) -> Result<(), QueueError> {
    let messages = events.iter().map(event_message).collect();
    publisher.send_owned(QueueName::Inbound, messages).await
}

/// The queue message for a command.
pub fn command_message(c: &Command) -> OutMessage {
    OutMessage {
        group: c.group(),
        dedup_id: c.id.0.clone(),
        body: serde_json::to_string(c).unwrap_or_default(),
        typed: Some(Typed::Command(Arc::new(c.clone()))),
    }
}

/// Sends commands to their target queues (the publisher batches the requests).
pub async fn send_commands(
    publisher: &dyn crate::ports::Publisher,
    commands: &[Command],
) -> Result<(), QueueError> {
    let mut by_queue: BTreeMap<&'static str, (QueueName, Vec<OutMessage>)> = BTreeMap::new();
    for c in commands {
        let q = QueueName::for_target(c.target);
        by_queue
            .entry(q.as_str())
            .or_insert_with(|| (q, Vec::new()))
            .1
            .push(command_message(c));
    }
    for (_, (q, msgs)) in by_queue {
        publisher.send_owned(q, msgs).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- references

/// A lookup found in a record.
struct Lookup {
    source: SourceRef,
    synced: bool,
}

/// Finds lookups (`{id, logical_name}`) at the top level and in lists of records, adds
/// their business key as `key` where known, and reports whether each is synced to the
/// counterpart system.
async fn enrich_lookups(
    ctx: &SyncCtx,
    fields: &mut Map<String, Value>,
    system: System,
    counterpart: System,
) -> Result<Vec<(String, Lookup)>, SyncError> {
    let mut found = Vec::new();
    for (name, value) in fields.iter_mut() {
        match value {
            Value::Object(o) => {
                if let Some(l) = enrich_one(ctx, o, system, counterpart).await? {
                    found.push((name.clone(), l));
                }
            }
            Value::Array(items) => {
                for item in items.iter_mut() {
                    if let Value::Object(rec) = item {
                        for (inner, v) in rec.iter_mut() {
                            if let Value::Object(o) = v {
                                if let Some(l) = enrich_one(ctx, o, system, counterpart).await? {
                                    found.push((format!("{name}[].{inner}"), l));
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(found)
}

async fn enrich_one(
    ctx: &SyncCtx,
    o: &mut Map<String, Value>,
    system: System,
    counterpart: System,
) -> Result<Option<Lookup>, SyncError> {
    let (Some(id), Some(ln)) = (
        o.get("id").and_then(Value::as_str),
        o.get("logical_name").and_then(Value::as_str),
    ) else {
        return Ok(None);
    };
    let Some(et) = crate::inbound::dataverse::entity_type_of(ln) else {
        return Ok(None);
    };
    let source = SourceRef::new(system, et, id);
    let key = ctx.state.resolve(&source).await?;
    let mut synced = false;
    if let Some(k) = &key {
        o.insert("key".into(), Value::String(k.key.clone()));
        if let Some(s) = ctx.state.load(k).await? {
            synced = s.ids.contains_key(&counterpart);
        }
    }
    Ok(Some(Lookup { source, synced }))
}

// ---------------------------------------------------------------- records

/// A mapping script's output, typed.
enum Record {
    Customer(Customer),
    Contact(Contact),
    Product(Product),
    Quote(Quote),
    QuoteTotals(QuoteTotals),
    Order(SalesOrder),
    Progress(OrderProgress),
    Invoice(Invoice),
    Financials(CustomerFinancials),
    Payment(Payment),
}

fn typed<T: DeserializeOwned>(script: &str, v: Value) -> Result<T, SyncError> {
    serde_json::from_value(v).map_err(|e| {
        SyncError::from(RuleError::BadOutput {
            rule: script.to_string(),
            message: e.to_string(),
        })
    })
}

impl Record {
    fn parse(kind: FlowKind, script: &str, v: Value) -> Result<Self, SyncError> {
        Ok(match kind {
            FlowKind::AccountToCustomer => Record::Customer(typed(script, v)?),
            FlowKind::ContactToContact => Record::Contact(typed(script, v)?),
            FlowKind::ItemToProduct => Record::Product(typed(script, v)?),
            FlowKind::QuoteToQuotation => Record::Quote(typed(script, v)?),
            FlowKind::QuotationTotals => Record::QuoteTotals(typed(script, v)?),
            FlowKind::OrderToSalesOrder => Record::Order(typed(script, v)?),
            FlowKind::OrderProgress => Record::Progress(typed(script, v)?),
            FlowKind::InvoiceToHistory => Record::Invoice(typed(script, v)?),
            FlowKind::CustomerFinancials => Record::Financials(typed(script, v)?),
            FlowKind::PaymentToPayment => Record::Payment(typed(script, v)?),
        })
    }

    fn key(&self) -> Result<EntityKey, SyncError> {
        let (t, k) = match self {
            Record::Customer(c) => (EntityType::Account, c.number.as_str()),
            Record::Financials(f) => (EntityType::Account, f.account_number.as_str()),
            Record::Contact(c) => (EntityType::Contact, c.number.as_str()),
            Record::Product(p) => (EntityType::Item, p.number.as_str()),
            Record::Quote(q) => (EntityType::Quote, q.number.as_str()),
            Record::QuoteTotals(q) => (EntityType::Quote, q.quote_number.as_str()),
            Record::Order(o) => (EntityType::Order, o.number.as_str()),
            Record::Progress(p) => (EntityType::Order, p.order_number.as_str()),
            Record::Invoice(i) => (EntityType::Invoice, i.number.as_str()),
            Record::Payment(p) => (EntityType::Payment, p.id.as_str()),
        };
        EntityKey::new(t, k).map_err(|m| SyncError::Permanent {
            code: "missing_key".into(),
            message: m,
        })
    }

    fn to_json(&self) -> Value {
        let r = match self {
            Record::Customer(x) => serde_json::to_value(x),
            Record::Contact(x) => serde_json::to_value(x),
            Record::Product(x) => serde_json::to_value(x),
            Record::Quote(x) => serde_json::to_value(x),
            Record::QuoteTotals(x) => serde_json::to_value(x),
            Record::Order(x) => serde_json::to_value(x),
            Record::Progress(x) => serde_json::to_value(x),
            Record::Invoice(x) => serde_json::to_value(x),
            Record::Financials(x) => serde_json::to_value(x),
            Record::Payment(x) => serde_json::to_value(x),
        };
        r.unwrap_or(Value::Null)
    }

    /// The write for the flows with one plain command.
    fn action(&self) -> Action {
        match self {
            Record::Customer(x) => Action::UpsertCustomer(x.clone()),
            Record::Contact(x) => Action::UpsertContact(x.clone()),
            Record::Product(x) => Action::UpsertProduct(x.clone()),
            Record::Quote(x) => Action::UpsertQuote(x.clone()),
            Record::QuoteTotals(x) => Action::SetQuoteTotals(x.clone()),
            Record::Order(x) => Action::UpsertOrder(x.clone()),
            Record::Progress(x) => Action::SetOrderProgress(x.clone()),
            Record::Invoice(x) => Action::UpsertInvoice {
                invoice: x.clone(),
                rebate: None,
            },
            Record::Financials(x) => Action::SetFinancials(x.clone()),
            Record::Payment(x) => Action::UpsertPayment(x.clone()),
        }
    }
}

#[derive(Default)]
struct Plan {
    commands: Vec<Command>,
    records: BTreeMap<String, Value>,
    park_on: Option<String>,
    note: String,
}

// ---------------------------------------------------------------- credit

/// Keeps a decision with its input for `p2c rules diff`. Analysis data, not the event's
/// effect: a failure to keep it is logged and the event goes on.
async fn record_decision(ctx: &SyncCtx, rule: &str, subject: &str, input: Value, output: &Value) {
    let decision = crate::ports::Decision {
        id: crate::json::hash_parts(&[rule, subject, &input.to_string()]),
        at: chrono::Utc::now(),
        rule: rule.to_string(),
        subject: subject.to_string(),
        input,
        output: output.clone(),
        rules_version: ctx.rules.version.clone(),
    };
    if let Err(e) = ctx.decisions.record(&decision).await {
        tracing::warn!(rule, subject, error = %e, "could not keep the decision for rules diff");
    }
}

async fn decide_credit(
    ctx: &SyncCtx,
    order: &SalesOrder,
    script: &str,
) -> Result<Credit, SyncError> {
    let account_key = EntityKey::new(EntityType::Account, &order.account_number).map_err(|m| {
        SyncError::Permanent {
            code: "missing_key".into(),
            message: m,
        }
    })?;
    let financials: Option<CustomerFinancials> = ctx
        .state
        .load(&account_key)
        .await?
        .and_then(|s| s.records.get("financials").cloned())
        .and_then(|v| serde_json::from_value(v).ok());
    let open = ctx
        .figures
        .open_orders(&order.account_number, &order.number)
        .await?;
    let dec = crate::json::decimal_number;
    let customer = match &financials {
        Some(f) => json!({
            "number": order.account_number,
            "financials_known": true,
            "credit_limit": dec(f.credit_limit),
            "balance": dec(f.balance),
            "open_orders": dec(open),
            "overdue_amount": dec(f.overdue_amount),
            "days_overdue": f.days_overdue,
            "on_hold": f.on_hold,
        }),
        None => {
            json!({ "number": order.account_number, "financials_known": false, "open_orders": dec(open) })
        }
    };
    let input = json!({
        "order": { "number": order.number, "total": dec(order.total()), "currency": order.currency.as_str() },
        "customer": customer,
    });
    let out = ctx.rules.eval(script, &input)?;
    record_decision(ctx, script, &format!("order:{}", order.number), input, &out).await;
    serde_json::from_value(out).map_err(|e| {
        SyncError::from(RuleError::BadOutput {
            rule: script.to_string(),
            message: format!(
                "expected {{ decision: \"release\" | \"hold\" | \"reject\", reason }}: {e}"
            ),
        })
    })
}

#[allow(clippy::too_many_arguments)]
async fn plan_order(
    ctx: &SyncCtx,
    plan: &mut Plan,
    ev: &ChangeEvent,
    cause: &str,
    key: &EntityKey,
    order: &SalesOrder,
    credit: &Credit,
    version: &str,
    erp: System,
) -> Result<(), SyncError> {
    let crm = ev.source.system;
    let credit_cmd = Command::new(
        cause,
        &ev.event_id,
        crm,
        key.clone(),
        Action::SetOrderCredit {
            order_number: order.number.clone(),
            credit: credit.clone(),
        },
        version,
    );
    match credit {
        Credit::Release => {
            ctx.figures
                .set_open_order(&order.account_number, &order.number, order.total())
                .await?;
            plan.commands.push(Command::new(
                cause,
                &ev.event_id,
                erp,
                key.clone(),
                Action::UpsertOrder(order.clone()),
                version,
            ));
            plan.commands.push(credit_cmd);
            plan.note = format!("credit release; upsert_order → {}", erp.label());
        }
        Credit::Hold { reason } => {
            ctx.figures
                .clear_open_order(&order.account_number, &order.number)
                .await?;
            plan.commands.push(credit_cmd);
            plan.park_on = Some(credit_dependency(&order.account_number));
            plan.note = format!("credit hold: {reason}");
        }
        Credit::Reject { reason } => {
            ctx.figures
                .clear_open_order(&order.account_number, &order.number)
                .await?;
            plan.commands.push(credit_cmd);
            plan.note = format!("credit reject: {reason}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- rebate

#[allow(clippy::too_many_arguments)]
async fn plan_invoice(
    ctx: &SyncCtx,
    plan: &mut Plan,
    ev: &ChangeEvent,
    cause: &str,
    key: &EntityKey,
    inv: &Invoice,
    version: &str,
    crm: System,
) -> Result<(), SyncError> {
    let erp = ev.source.system;
    let rebate_cfg = &ctx.rules.catalogue.rebate;
    let period_kind = rebate_cfg.period.as_deref().unwrap_or("quarter");
    let period = period_of(inv.invoice_date, period_kind);
    let mut figs = ctx.figures.rebate(&inv.account_number, &period).await?;
    let dec = crate::json::decimal_number;

    let out = match figs.results.get(&inv.number) {
        Some(saved) => saved.clone(),
        None => {
            let lines: Vec<Value> = inv
                .lines
                .iter()
                .map(|l| {
                    json!({
                        "item_number": l.item_number,
                        "quantity": dec(l.quantity),
                        "amount": dec(l.amount()),
                        "product_group": l.product_group,
                    })
                })
                .collect();
            let input = json!({
                "invoice": {
                    "number": inv.number,
                    "kind": match inv.kind { InvoiceKind::Invoice => "invoice", InvoiceKind::CreditNote => "credit_note" },
                    "amount": dec(inv.total_excl_tax),
                    "currency": inv.currency.as_str(),
                    "reference": inv.reference,
                    "lines": lines,
                },
                "period": period,
                "volume_before": dec(figs.volume),
                "credited_before": dec(figs.credited),
                "tier_before": figs.tier,
            });
            let out = ctx.rules.eval(&rebate_cfg.script, &input)?;
            record_decision(
                ctx,
                &rebate_cfg.script,
                &format!("invoice:{}", inv.number),
                input,
                &out,
            )
            .await;
            let get = |k: &str| out.get(k).and_then(crate::json::as_decimal);
            let bad = |what: &str| {
                SyncError::from(RuleError::BadOutput {
                    rule: rebate_cfg.script.clone(),
                    message: format!("missing or non-decimal `{what}`"),
                })
            };
            figs.volume = get("volume_after").ok_or_else(|| bad("volume_after"))?;
            figs.accrued += get("accrual").ok_or_else(|| bad("accrual"))?;
            figs.tier = out.get("tier").and_then(Value::as_str).map(str::to_string);
            if let Some(cn) = out.get("credit_note").filter(|v| !v.is_null()) {
                figs.credited += cn
                    .get("amount")
                    .and_then(crate::json::as_decimal)
                    .ok_or_else(|| bad("credit_note.amount"))?;
            }
            figs.results.insert(inv.number.clone(), out.clone());
            ctx.figures
                .save_rebate(&inv.account_number, &period, &figs)
                .await?;
            out
        }
    };
    let accrual = RebateAccrual {
        period: period.clone(),
        tier: out
            .get("tier")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        rate: out
            .get("rate")
            .and_then(crate::json::as_decimal)
            .unwrap_or(Decimal::ZERO),
        accrual: out
            .get("accrual")
            .and_then(crate::json::as_decimal)
            .unwrap_or(Decimal::ZERO),
    };
    plan.note = format!(
        "upsert_invoice → {}; rebate {} tier, accrual {}",
        crm.label(),
        accrual.tier,
        crate::money::format_amount(accrual.accrual)
    );
    plan.commands.push(Command::new(
        cause,
        &ev.event_id,
        crm,
        key.clone(),
        Action::UpsertInvoice {
            invoice: inv.clone(),
            rebate: Some(accrual.clone()),
        },
        version,
    ));
    if let Some(cn) = out.get("credit_note").filter(|v| !v.is_null()) {
        let amount = cn
            .get("amount")
            .and_then(crate::json::as_decimal)
            .unwrap_or(Decimal::ZERO);
        let note = RebateCreditNote {
            reference: format!("REB-{}-{}-{}", inv.account_number, period, accrual.tier),
            account_number: inv.account_number.clone(),
            currency: inv.currency.clone(),
            amount,
            description: cn
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("Volume rebate")
                .to_string(),
            period: period.clone(),
        };
        let cn_key = EntityKey::new(EntityType::Invoice, &note.reference).map_err(|m| {
            SyncError::Permanent {
                code: "missing_key".into(),
                message: m,
            }
        })?;
        plan.note.push_str(&format!(
            "; tier crossed: credit note {} for {}",
            note.reference,
            crate::money::format_amount(amount)
        ));
        plan.commands.push(Command::new(
            cause,
            &ev.event_id,
            erp,
            cn_key,
            Action::CreateCreditNote(note),
            version,
        ));
    }
    if let Some(order) = &inv.order_number {
        ctx.figures
            .clear_open_order(&inv.account_number, order)
            .await?;
    }
    Ok(())
}

fn period_of(date: chrono::NaiveDate, kind: &str) -> String {
    use chrono::Datelike;
    match kind {
        "month" => format!("{}-{:02}", date.year(), date.month()),
        "year" => format!("{}", date.year()),
        _ => format!("{}-Q{}", date.year(), (date.month() - 1) / 3 + 1),
    }
}

/// Handles a batch of inbound messages with one round of sends: the messages every event
/// queues (commands, released events) are sent together after the batch, ten per request.
/// If that send fails, the events that queued something are retried; their state holds
/// the outbox, so the retry re-sends exactly those commands.
pub async fn handle_batch(ctx: &SyncCtx, batch: &[Delivery]) -> Vec<Disposition> {
    let deferred = Arc::new(Deferred {
        publisher: ctx.publisher.clone(),
        inner: std::sync::Mutex::new(DeferredInner::default()),
    });
    let mut scoped = ctx.clone();
    scoped.publisher = deferred.clone();
    if let Some(live) = &ctx.live {
        // The whole batch runs on one rule set: the one active now.
        scoped.rules = live.current().await;
    }
    let scoped = &scoped;
    let deferred_ref = &deferred;
    let mut out = super::process_batch(batch, |d| async move {
        deferred_ref.set_current(&d.message_id);
        handle_message(scoped, d).await
    })
    .await;
    if let Err(failed) = deferred.flush().await {
        for (d, disp) in batch.iter().zip(out.iter_mut()) {
            if *disp == Disposition::Done && failed.messages.contains(&d.message_id) {
                *disp = Disposition::Retry {
                    delay: super::backoff(ctx.timings.retry_base, d.receive_count, &d.message_id),
                    reason: failed.reason.clone(),
                };
            }
        }
    }
    out
}

/// Sends held back until the end of a batch.
struct Deferred {
    publisher: Arc<dyn crate::ports::Publisher>,
    inner: std::sync::Mutex<DeferredInner>,
}

#[derive(Default)]
struct DeferredInner {
    /// The message being handled now.
    current: String,
    /// Messages per queue, in the order they were sent, with the message that sent them.
    sends: Vec<(QueueName, OutMessage, String)>,
}

/// Which messages lost their effect when the batch's send failed, and why.
struct FlushFailed {
    messages: std::collections::HashSet<String>,
    reason: String,
}

impl Deferred {
    fn lock(&self) -> std::sync::MutexGuard<'_, DeferredInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_current(&self, message_id: &str) {
        self.lock().current = message_id.to_string();
    }

    async fn flush(&self) -> Result<(), FlushFailed> {
        let sends = std::mem::take(&mut self.lock().sends);
        let mut by_queue: Vec<(QueueName, Vec<OutMessage>)> = Vec::new();
        let mut senders = std::collections::HashSet::new();
        for (q, m, by) in sends {
            senders.insert(by);
            match by_queue.iter_mut().find(|(x, _)| *x == q) {
                Some((_, v)) => v.push(m),
                None => by_queue.push((q, vec![m])),
            }
        }
        // If the send fails, the events that queued something lose their effect (and are
        // retried); the others are done all the same.
        for (q, messages) in by_queue {
            if let Err(e) = self.publisher.send_owned(q, messages).await {
                return Err(FlushFailed {
                    messages: senders,
                    reason: format!("sending the batch's messages failed: {e}"),
                });
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl crate::ports::Publisher for Deferred {
    async fn send(&self, queue: QueueName, messages: &[OutMessage]) -> Result<(), QueueError> {
        self.send_owned(queue, messages.to_vec()).await
    }

    async fn send_owned(
        &self,
        queue: QueueName,
        messages: Vec<OutMessage>,
    ) -> Result<(), QueueError> {
        let mut g = self.lock();
        let by = g.current.clone();
        for m in messages {
            // The same message twice in one batch (an event and its repeat): send it once.
            if !g
                .sends
                .iter()
                .any(|(q, x, _)| *q == queue && x.dedup_id == m.dedup_id)
            {
                g.sends.push((queue, m, by.clone()));
            }
        }
        Ok(())
    }
}
