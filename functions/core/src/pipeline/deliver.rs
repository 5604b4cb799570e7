//! The deliver step: one command → its target system, exactly once in effect.
//!
//! The connector upserts by natural key, so a redelivered command finds what the first
//! attempt wrote. After the write, the ids the target assigned and a fingerprint of what
//! was written are recorded on the entity (for cross-references and echo recognition),
//! follow-up commands are queued (the ERP order number back to the CRM), and events
//! parked on this entity are released.

use super::{audit, DeliverCtx, Disposition};
use crate::command::{Action, Command};
use crate::domain::{SourceRef, System};
use crate::error::{DeliveryError, StoreError};
use crate::ports::{AuditEntry, Delivery, EntityState, Outcome};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// What happened to a command.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DeliverOutcome {
    Delivered { target_id: String, created: bool },
    Duplicate,
}

/// Why a command was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("{reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    #[error("{code}: {message}")]
    Permanent { code: String, message: String },
}

impl From<StoreError> for DeliverError {
    fn from(e: StoreError) -> Self {
        DeliverError::Retryable {
            reason: e.to_string(),
            retry_after: None,
        }
    }
}

impl From<crate::error::QueueError> for DeliverError {
    fn from(e: crate::error::QueueError) -> Self {
        DeliverError::Retryable {
            reason: e.to_string(),
            retry_after: None,
        }
    }
}

impl From<super::sync::SyncError> for DeliverError {
    fn from(e: super::sync::SyncError) -> Self {
        DeliverError::Retryable {
            reason: e.to_string(),
            retry_after: None,
        }
    }
}

impl From<DeliveryError> for DeliverError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::Transient { retry_after_ms, .. } => DeliverError::Retryable {
                reason: e.to_string(),
                retry_after: retry_after_ms.map(Duration::from_millis),
            },
            DeliveryError::Permanent { .. } => DeliverError::Permanent {
                code: "target_refused".into(),
                message: e.to_string(),
            },
            DeliveryError::NoConnector { .. } => DeliverError::Permanent {
                code: "no_connector".into(),
                message: e.to_string(),
            },
        }
    }
}

/// Handles one queue message (the body is a serialized [`Command`]).
pub async fn handle_message(ctx: &DeliverCtx, d: &Delivery) -> Disposition {
    let parsed = match d.typed.take() {
        Some(crate::ports::Typed::Command(c)) => Ok(c),
        _ => serde_json::from_str::<Command>(&d.body).map(std::sync::Arc::new),
    };
    let cmd = match parsed {
        Ok(c) => c,
        Err(e) => {
            return Disposition::DeadLetter {
                code: "malformed_message".into(),
                reason: format!("not a command: {e}"),
            }
        }
    };
    let span = tracing::info_span!("deliver", command = %cmd.id, target = %cmd.target, entity = %cmd.entity);
    let _g = span.enter();
    match deliver_command(ctx, &cmd).await {
        Ok(_) => Disposition::Done,
        Err(DeliverError::Retryable {
            reason,
            retry_after,
        }) => {
            tracing::warn!(reason = %crate::error::redact(&reason), "delivery will be retried");
            let backoff = super::backoff(ctx.timings.retry_base, d.receive_count, &d.message_id);
            Disposition::Retry {
                delay: retry_after.map_or(backoff, |r| r.max(backoff)),
                reason,
            }
        }
        Err(DeliverError::Permanent { code, message }) => {
            // The target's own message can repeat what it was sent: logged redacted, kept
            // whole in the dead-letter record.
            tracing::warn!(
                %code,
                message = %crate::error::redact(&message),
                "delivery failed permanently"
            );
            Disposition::DeadLetter {
                code,
                reason: message,
            }
        }
    }
}

/// Delivers one command exactly once in effect.
///
/// No claim is taken: the entity's state lists the commands delivered to it, and the
/// state write after the target write is the step's one conditional write (with its audit
/// entry). A command found in that list is a duplicate: nothing goes to the target, and
/// only what follows a delivery (the ERP number back, parked events released) is done
/// again, since a crash may have cut it short. A crash between the target write and the
/// state write repeats the target write on redelivery, which the connector's upsert by
/// natural key makes harmless.
pub async fn deliver_command(
    ctx: &DeliverCtx,
    cmd: &Command,
) -> Result<DeliverOutcome, DeliverError> {
    match apply(ctx, cmd).await {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            let outcome = if matches!(e, DeliverError::Permanent { .. }) {
                "failed"
            } else {
                "retry"
            };
            audit(
                ctx.audit.as_ref(),
                &cmd.entity.to_string(),
                "deliver",
                outcome,
                format!("{} → {}: {e}", cmd.action.name(), cmd.target.label()),
                None,
                Some(&cmd.rules_version),
            )
            .await;
            Err(e)
        }
    }
}

async fn apply(ctx: &DeliverCtx, cmd: &Command) -> Result<DeliverOutcome, DeliverError> {
    let loaded = ctx.state.load(&cmd.entity).await?;
    if let Some(state) = loaded.as_ref().filter(|s| s.delivered.contains(&cmd.id.0)) {
        let number = state
            .records
            .get(&format!("{}_number", system_tag(cmd.target)))
            .and_then(Value::as_str)
            .map(str::to_string);
        after_delivery(ctx, cmd, state, number.as_deref()).await?;
        return Ok(DeliverOutcome::Duplicate);
    }
    let connector = ctx
        .connectors
        .get(&cmd.target)
        .ok_or_else(|| DeliveryError::NoConnector {
            system: cmd.target.to_string(),
        })?;
    let outcome = connector.apply(cmd).await?;
    let detail = format!(
        "{} → {}: {} {}{}",
        cmd.action.name(),
        cmd.target.label(),
        if outcome.created {
            "created"
        } else {
            "updated"
        },
        outcome.target_id,
        outcome
            .assigned_number
            .as_ref()
            .map(|n| format!(" (number {n})"))
            .unwrap_or_default()
    );
    let delivered = super::entry(
        &cmd.entity.to_string(),
        "deliver",
        "delivered",
        detail,
        None,
        Some(&cmd.rules_version),
    );
    let state = record(ctx, cmd, &outcome, &delivered, loaded).await?;
    after_delivery(ctx, cmd, &state, outcome.assigned_number.as_deref()).await?;
    Ok(DeliverOutcome::Delivered {
        target_id: outcome.target_id,
        created: outcome.created,
    })
}

/// What follows a delivery: the ERP's order number back to the CRM order, and the events
/// parked on this entity released. Both are idempotent (deterministic deduplication ids;
/// a released event is no longer parked), so a duplicate runs them again safely.
async fn after_delivery(
    ctx: &DeliverCtx,
    cmd: &Command,
    state: &EntityState,
    assigned_number: Option<&str>,
) -> Result<(), DeliverError> {
    if let (Action::UpsertOrder(order), Some(number)) = (&cmd.action, assigned_number) {
        if let Some(crm) = state
            .ids
            .keys()
            .copied()
            .find(|s| s.side() == crate::domain::Side::Crm)
        {
            let follow = Command::new(
                &cmd.id.0,
                &cmd.caused_by,
                crm,
                cmd.entity.clone(),
                Action::SetOrderErpNumber {
                    order_number: order.number.clone(),
                    erp_number: number.to_string(),
                },
                &cmd.rules_version,
            );
            super::sync::send_commands(ctx.publisher.as_ref(), &[follow]).await?;
        }
    }

    // Anything parked on this entity can go now. Events wait on the CRM records they look
    // up (only CRM records point at others by id), so only the CRM ids are checked.
    let cause = format!("{}@{}", state.key, state.version);
    for (system, id) in state
        .ids
        .iter()
        .filter(|(s, _)| s.side() == crate::domain::Side::Crm)
    {
        let dep = SourceRef::new(*system, state.key.entity_type, id.clone()).group();
        let n = super::sync::release_waiters(
            ctx.parking.as_ref(),
            ctx.publisher.as_ref(),
            &dep,
            &cause,
        )
        .await?;
        if n > 0 {
            audit(
                ctx.audit.as_ref(),
                &state.key.to_string(),
                "deliver",
                "released",
                format!("{n} parked event(s) waiting on {dep} re-queued"),
                None,
                Some(&cmd.rules_version),
            )
            .await;
        }
    }
    Ok(())
}

/// Records the target's id, the written fingerprint and the command as delivered, in one
/// conditional write with the step's audit entry; a lost race reloads and tries again.
async fn record(
    ctx: &DeliverCtx,
    cmd: &Command,
    outcome: &Outcome,
    entry: &AuditEntry,
    mut loaded: Option<EntityState>,
) -> Result<EntityState, DeliverError> {
    for _ in 0..8 {
        let mut state = match loaded.take() {
            Some(s) => s,
            None => ctx
                .state
                .load(&cmd.entity)
                .await?
                .unwrap_or_else(|| EntityState::new(cmd.entity.clone())),
        };
        state.version += 1;
        state.ids.insert(cmd.target, outcome.target_id.clone());
        state
            .written
            .insert(cmd.target, outcome.fingerprint.clone());
        if let Some(n) = &outcome.assigned_number {
            state.records.insert(
                format!("{}_number", system_tag(cmd.target)),
                Value::String(n.clone()),
            );
        }
        state.mark_delivered(&cmd.id.0);
        state.settle_outbox();
        state.updated_at = chrono::Utc::now();
        match ctx.state.save(&state, entry).await {
            Ok(()) => return Ok(state),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(DeliverError::Retryable {
        reason: format!("{} kept changing; retrying", cmd.entity),
        retry_after: None,
    })
}

fn system_tag(s: System) -> &'static str {
    match s.side() {
        crate::domain::Side::Erp => "erp",
        crate::domain::Side::Crm => "crm",
    }
}
