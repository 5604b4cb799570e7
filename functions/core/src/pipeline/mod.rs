//! The three steps as plain async functions, and the batch semantics they share.
//!
//! - [`ingest`]: authenticate, parse, queue, then answer.
//! - [`sync`]: one inbound event → state, decisions, outbound commands.
//! - [`deliver`]: one command → the target system, then ids and fingerprints recorded.
//!
//! A batch is processed in order; when a message fails, the rest of its FIFO group in
//! that batch is failed too (so order holds), other groups carry on. The Lambda binaries
//! turn dispositions into `batchItemFailures`; [`runner`] applies them to a queue directly.

pub mod deliver;
pub mod ingest;
pub mod runner;
pub mod sync;

use crate::domain::{EventId, System};
use crate::ports::{
    AuditEntry, AuditLog, Connector, Delivery, FiguresStore, ParkingStore, Publisher, SourceReader,
    StateStore,
};
use crate::rules::RuleSet;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Timings shared by the steps.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// First retry delay; doubles per receive.
    pub retry_base: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(2),
        }
    }
}

/// What the sync step needs.
#[derive(Clone)]
pub struct SyncCtx {
    pub state: Arc<dyn StateStore>,
    pub parking: Arc<dyn ParkingStore>,
    pub audit: Arc<dyn AuditLog>,
    pub figures: Arc<dyn FiguresStore>,
    pub publisher: Arc<dyn Publisher>,
    /// Where credit and rebate decisions are kept with their inputs (`p2c rules diff`).
    pub decisions: Arc<dyn crate::ports::DecisionLog>,
    pub rules: Arc<RuleSet>,
    /// When set, each batch runs on the rule set active in the rule store (published with
    /// `p2c rules publish`), looked up at most every so often; `rules` until one is.
    pub live: Option<Arc<crate::rules::live::LiveRules>>,
    pub readers: BTreeMap<System, Arc<dyn SourceReader>>,
    pub timings: Timings,
}

/// What the deliver step needs.
#[derive(Clone)]
pub struct DeliverCtx {
    pub state: Arc<dyn StateStore>,
    pub parking: Arc<dyn ParkingStore>,
    pub audit: Arc<dyn AuditLog>,
    pub publisher: Arc<dyn Publisher>,
    pub connectors: BTreeMap<System, Arc<dyn Connector>>,
    pub timings: Timings,
}

/// What to do with one message after processing it.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Processed (or a duplicate): delete it.
    Done,
    /// Try again later.
    Retry { delay: Duration, reason: String },
    /// Will never succeed as it is: move to the dead-letter queue with this reason.
    DeadLetter { code: String, reason: String },
}

/// Processes a batch in order. A failed message fails the rest of its group in the batch.
pub async fn process_batch<'a, F, Fut>(batch: &'a [Delivery], mut handle: F) -> Vec<Disposition>
where
    F: FnMut(&'a Delivery) -> Fut,
    Fut: std::future::Future<Output = Disposition> + 'a,
{
    let mut failed_groups: HashSet<&'a str> = HashSet::new();
    let mut out = Vec::with_capacity(batch.len());
    for d in batch {
        if failed_groups.contains(d.group.as_str()) {
            out.push(Disposition::Retry {
                delay: Duration::ZERO,
                reason: "an earlier message of its group failed in this batch".into(),
            });
            continue;
        }
        let disp = handle(d).await;
        if !matches!(disp, Disposition::Done) {
            failed_groups.insert(d.group.as_str());
        }
        out.push(disp);
    }
    out
}

/// Exponential backoff with jitter for the `n`th receive.
pub fn backoff(base: Duration, receive_count: u32, seed: &str) -> Duration {
    let exp = base.saturating_mul(1u32 << receive_count.min(10).saturating_sub(1));
    let capped = exp.min(Duration::from_secs(15 * 60));
    // Deterministic jitter from the message id: spreads retries without a random source.
    let h = crate::json::hash_parts(&[seed, &receive_count.to_string()]);
    let frac = u64::from_str_radix(&h[..4], 16).unwrap_or(0) as f64 / 65535.0;
    capped.mul_f64(0.5 + frac / 2.0)
}

/// An audit entry of a step, stamped now.
pub(crate) fn entry(
    subject: &str,
    step: &str,
    outcome: &str,
    detail: impl Into<String>,
    event: Option<&EventId>,
    rules_version: Option<&str>,
) -> AuditEntry {
    AuditEntry {
        at: chrono::Utc::now(),
        subject: subject.to_string(),
        step: step.to_string(),
        outcome: outcome.to_string(),
        detail: detail.into(),
        event_id: event.map(|e| e.0.clone()),
        rules_version: rules_version.map(str::to_string),
    }
}

/// Appends to the audit trail; an audit failure is logged, never fatal to the step.
pub(crate) async fn audit(
    log: &dyn AuditLog,
    subject: &str,
    step: &str,
    outcome: &str,
    detail: impl Into<String>,
    event: Option<&EventId>,
    rules_version: Option<&str>,
) {
    let entry = entry(subject, step, outcome, detail, event, rules_version);
    if let Err(e) = log.append(&entry).await {
        tracing::warn!(subject, step, error = %e, "audit append failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(group: &str, id: &str) -> Delivery {
        Delivery {
            message_id: id.into(),
            receipt: id.into(),
            group: group.into(),
            dedup_id: id.into(),
            body: String::new(),
            receive_count: 1,
            typed: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_failure_fails_the_rest_of_its_group_only() {
        let batch = vec![msg("a", "1"), msg("a", "2"), msg("b", "3"), msg("a", "4")];
        let out = process_batch(&batch, |d| {
            let fail = d.message_id == "1";
            async move {
                if fail {
                    Disposition::Retry {
                        delay: Duration::from_secs(1),
                        reason: "x".into(),
                    }
                } else {
                    Disposition::Done
                }
            }
        })
        .await;
        assert!(matches!(out[0], Disposition::Retry { .. }));
        assert!(matches!(out[1], Disposition::Retry { .. }));
        assert_eq!(out[2], Disposition::Done);
        assert!(matches!(out[3], Disposition::Retry { .. }));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Duration::from_secs(2);
        assert!(backoff(b, 1, "m") <= Duration::from_secs(2));
        assert!(backoff(b, 4, "m") >= Duration::from_secs(8));
        assert!(backoff(b, 30, "m") <= Duration::from_secs(900));
    }
}
