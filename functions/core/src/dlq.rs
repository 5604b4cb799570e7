//! Dead-letter tooling (`p2c dlq list`, `p2c dlq replay`): what is stuck and why, and
//! putting it back, by queue, entity or error code. Works on any [`DeadLetters`] adapter:
//! the embedded queue and SQS.

use crate::command::Command;
use crate::domain::ChangeEvent;
use crate::error::QueueError;
use crate::ports::{DeadLetter, DeadLetters, QueueName};

/// Which dead letters to act on. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub queue: Option<QueueName>,
    /// An entity key (`account:ACC-1`) or a source record (`dataverse/account/<id>`).
    pub entity: Option<String>,
    /// An error code (`target_rejected`, `max_receives_exceeded`, `rule_failed`, …).
    pub code: Option<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.queue.is_none() && self.entity.is_none() && self.code.is_none()
    }

    fn matches(&self, d: &DeadLetter) -> bool {
        self.code.as_ref().is_none_or(|c| &d.code == c)
            && self
                .entity
                .as_ref()
                .is_none_or(|e| entities(d).iter().any(|x| x == e))
    }
}

/// The entities a dead letter is about: its group, and the entity its body names (a
/// command's entity; an event's source record and `type:natural key`).
pub fn entities(d: &DeadLetter) -> Vec<String> {
    let mut out = vec![d.group.clone()];
    if let Ok(c) = serde_json::from_str::<Command>(&d.body) {
        out.push(c.entity.to_string());
    } else if let Ok(ev) = serde_json::from_str::<ChangeEvent>(&d.body) {
        out.push(ev.source.group());
        if let Some(k) = &ev.natural_key {
            out.push(format!("{}:{k}", ev.source.entity_type.as_str()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The dead letters that match, across the queues the filter names.
pub async fn list(dl: &dyn DeadLetters, filter: &Filter) -> Result<Vec<DeadLetter>, QueueError> {
    let mut out = Vec::new();
    for q in QueueName::ALL {
        if filter.queue.is_some_and(|f| f != q) {
            continue;
        }
        out.extend(dl.list(q).await?.into_iter().filter(|d| filter.matches(d)));
    }
    Ok(out)
}

/// Puts the matching dead letters back on their queues; returns how many.
pub async fn replay(dl: &dyn DeadLetters, filter: &Filter) -> Result<usize, QueueError> {
    let mut n = 0;
    for q in QueueName::ALL {
        if filter.queue.is_some_and(|f| f != q) {
            continue;
        }
        let ids: Vec<String> = dl
            .list(q)
            .await?
            .into_iter()
            .filter(|d| filter.matches(d))
            .map(|d| d.message_id)
            .collect();
        if !ids.is_empty() {
            n += dl.replay(q, &ids).await?;
        }
    }
    Ok(n)
}

/// A readable listing: one block per dead letter, then a count per code.
pub fn render(letters: &[DeadLetter]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if letters.is_empty() {
        s.push_str("No dead letters.\n");
        return s;
    }
    let mut per_code = std::collections::BTreeMap::<&str, usize>::new();
    for d in letters {
        *per_code.entry(d.code.as_str()).or_default() += 1;
        let entity = entities(d)
            .into_iter()
            .find(|e| e.contains(':'))
            .unwrap_or_else(|| d.group.clone());
        let reason: String = d.reason.chars().take(300).collect();
        let _ = writeln!(
            s,
            "{}  {:<7} {:<24} {}\n    {reason}\n    message {}",
            d.at.format("%Y-%m-%d %H:%M:%S"),
            d.queue.as_str(),
            d.code,
            entity,
            d.message_id
        );
    }
    let summary: Vec<String> = per_code.iter().map(|(c, n)| format!("{n} {c}")).collect();
    let _ = writeln!(
        s,
        "\n{} dead letter(s): {}",
        letters.len(),
        summary.join(", ")
    );
    s
}
