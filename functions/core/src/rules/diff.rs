//! Two rule sets side by side over real decisions: what a candidate would decide
//! differently (`p2c rules diff`).
//!
//! Each recorded decision (its rule and the exact input the rule saw, kept by the sync
//! step) is evaluated by both rule sets; a decision whose output differs is a change. Credit
//! decisions are summarised by what they would become (`release → hold`) with the orders'
//! totals per currency; other rules by their outcome label.

use super::RuleSet;
use crate::money::format_amount;
use crate::ports::Decision;
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::BTreeMap;

/// One decision the candidate would make differently.
#[derive(Debug, Clone)]
pub struct Change {
    pub decision: Decision,
    /// `release`, `hold`, `Gold (accrual 400.00)`, `rejected: code`, `fault: …`.
    pub current: String,
    pub candidate: String,
    /// The amount at stake, with its currency (an order's total, an invoice's amount).
    pub amount: Option<(Decimal, String)>,
}

/// One row of the summary: how many decisions change in the same way, and the amounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    pub rule: String,
    pub from: String,
    pub to: String,
    pub count: usize,
    /// Totals per currency.
    pub totals: BTreeMap<String, Decimal>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub compared: usize,
    pub changes: Vec<Change>,
    pub summary: Vec<SummaryRow>,
}

/// Evaluates both rule sets on every decision.
pub fn diff(current: &RuleSet, candidate: &RuleSet, decisions: &[Decision]) -> Report {
    let mut report = Report {
        compared: decisions.len(),
        ..Default::default()
    };
    for d in decisions {
        let now = current.eval(&d.rule, &d.input);
        let then = candidate.eval(&d.rule, &d.input);
        let same = match (&now, &then) {
            (Ok(a), Ok(b)) => {
                let mut diffs = Vec::new();
                super::cases::compare("", a, b, &mut diffs);
                let mut back = Vec::new();
                super::cases::compare("", b, a, &mut back);
                diffs.is_empty() && back.is_empty()
            }
            (Err(a), Err(b)) => a.to_string() == b.to_string(),
            _ => false,
        };
        if same {
            continue;
        }
        let change = Change {
            current: label(&now),
            candidate: label(&then),
            amount: amount(&d.input),
            decision: d.clone(),
        };
        match report
            .summary
            .iter_mut()
            .find(|r| r.rule == d.rule && r.from == change.current && r.to == change.candidate)
        {
            Some(row) => add(row, &change),
            None => {
                let mut row = SummaryRow {
                    rule: d.rule.clone(),
                    from: change.current.clone(),
                    to: change.candidate.clone(),
                    count: 0,
                    totals: BTreeMap::new(),
                };
                add(&mut row, &change);
                report.summary.push(row);
            }
        }
        report.changes.push(change);
    }
    report
        .summary
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.rule.cmp(&b.rule)));
    report
}

fn add(row: &mut SummaryRow, change: &Change) {
    row.count += 1;
    if let Some((amount, currency)) = &change.amount {
        *row.totals.entry(currency.clone()).or_default() += *amount;
    }
}

/// What an outcome is called in the report.
fn label(out: &Result<Value, crate::error::RuleError>) -> String {
    match out {
        Err(crate::error::RuleError::Rejected { code, .. }) => format!("rejected: {code}"),
        Err(e) => format!("fault: {}", e.code()),
        Ok(v) => {
            if let Some(decision) = v.get("decision").and_then(Value::as_str) {
                decision.to_string()
            } else if let (Some(tier), Some(accrual)) = (
                v.get("tier").and_then(Value::as_str),
                v.get("accrual").and_then(crate::json::as_decimal),
            ) {
                let credit = v
                    .get("credit_note")
                    .and_then(|c| c.get("amount"))
                    .and_then(crate::json::as_decimal)
                    .map(|a| format!(", credit note {}", format_amount(a)))
                    .unwrap_or_default();
                format!("{tier} (accrual {}{credit})", format_amount(accrual))
            } else {
                v.to_string().chars().take(60).collect()
            }
        }
    }
}

/// The amount a decision is about: an order's total or an invoice's amount.
fn amount(input: &Value) -> Option<(Decimal, String)> {
    let doc = input.get("order").or_else(|| input.get("invoice"))?;
    let value = doc.get("total").or_else(|| doc.get("amount"))?;
    Some((
        crate::json::as_decimal(value)?,
        doc.get("currency")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    ))
}

impl SummaryRow {
    /// `12 decisions of credit_limit.rhai: release → hold, total 84,300.00 EUR`.
    pub fn sentence(&self) -> String {
        let totals: Vec<String> = self
            .totals
            .iter()
            .map(|(c, a)| format!("{} {c}", format_amount(*a)).trim().to_string())
            .collect();
        let what = if self.rule.contains("credit") {
            format!(
                "{} order(s) would be {} instead of {}",
                self.count,
                past(&self.to),
                past(&self.from)
            )
        } else {
            format!(
                "{} decision(s) of {} would be {} instead of {}",
                self.count, self.rule, self.to, self.from
            )
        };
        if totals.is_empty() {
            what
        } else {
            format!("{what}, total {}", totals.join(" + "))
        }
    }
}

fn past(decision: &str) -> String {
    match decision {
        "release" => "released".into(),
        "hold" => "held".into(),
        "reject" => "rejected".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{EmbeddedLoader, RuleLoader};
    use serde_json::json;

    fn decision(n: u32, total: &str, currency: &str, limit: i64) -> Decision {
        Decision {
            id: format!("d{n}"),
            at: chrono::Utc::now(),
            rule: "credit_limit.rhai".into(),
            subject: format!("order:ORD-{n}"),
            input: json!({
                "order": {"number": format!("ORD-{n}"), "total": total.parse::<serde_json::Number>().unwrap(), "currency": currency},
                "customer": {"number": "ACC-1", "financials_known": true, "credit_limit": limit, "balance": 0,
                             "open_orders": 0, "overdue_amount": 0, "days_overdue": 0, "on_hold": false}
            }),
            output: json!({"decision": "release"}),
            rules_version: "r-old".into(),
        }
    }

    #[test]
    fn a_lower_limit_factor_shows_which_orders_would_be_held_and_for_how_much() {
        let files = EmbeddedLoader.load().expect("rules");
        let current = RuleSet::from_files(files.clone()).expect("current");
        // The candidate: orders over 80% of the credit limit are held.
        let mut cand = files.clone();
        let credit = cand["credit_limit.rhai"].replace(
            "if exposure > c.credit_limit {",
            "if exposure > c.credit_limit * 0.8 {",
        );
        assert_ne!(credit, cand["credit_limit.rhai"]);
        cand.insert("credit_limit.rhai".into(), credit);
        let candidate = RuleSet::from_files(cand).expect("candidate");
        let decisions = vec![
            decision(1, "500.00", "EUR", 1000),    // 50%: released by both
            decision(2, "900.00", "EUR", 1000),    // 90%: would be held
            decision(3, "850.50", "EUR", 1000),    // 85%: would be held
            decision(4, "9000.00", "USD", 10000),  // 90%: would be held
            decision(5, "20000.00", "USD", 10000), // over the limit: held by both
        ];
        let r = diff(&current, &candidate, &decisions);
        assert_eq!(r.compared, 5);
        let changed: Vec<&str> = r
            .changes
            .iter()
            .map(|c| c.decision.subject.as_str())
            .collect();
        assert_eq!(changed, vec!["order:ORD-2", "order:ORD-3", "order:ORD-4"]);
        assert!(r
            .changes
            .iter()
            .all(|c| c.current == "release" && c.candidate == "hold"));
        assert_eq!(r.summary.len(), 1);
        let row = &r.summary[0];
        assert_eq!(row.count, 3);
        assert_eq!(row.totals["EUR"], Decimal::new(175050, 2));
        assert_eq!(row.totals["USD"], Decimal::new(900000, 2));
        assert_eq!(
            row.sentence(),
            "3 order(s) would be held instead of released, total 1,750.50 EUR + 9,000.00 USD"
        );
        // The same rules side by side change nothing.
        assert!(diff(&current, &current, &decisions).changes.is_empty());
    }
}
