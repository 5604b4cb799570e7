//! A published rule change takes effect in a running pipeline without a restart, every
//! decision names the version that made it, and a rollback returns to the earlier rules.

use crate::common::{customer_with_item, order_header, order_line, rule_files, world};
use p2c_core::ports::{AuditLog, RuleStore};
use p2c_core::rules::live::activate;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_published_credit_rule_applies_to_the_next_orders_and_a_rollback_undoes_it() {
    let (mut w, _d) = world().await;
    let p2c_core::backend::Backend::Embedded(embedded) = &w.pipeline.store else {
        panic!("the world runs on the embedded store");
    };
    let store: Arc<dyn RuleStore> = Arc::new(embedded.clone());
    let started_with = w.pipeline.sync.rules.version.clone();
    w.pipeline.sync.live = Some(Arc::new(p2c_core::rules::live::LiveRules::new(
        store.clone(),
        w.pipeline.sync.rules.clone(),
        Duration::ZERO,
    )));
    customer_with_item(&w, "ACC-PUB", "50000").await;
    let order = |n: &str| {
        w.dataverse()
            .create_document(
                "salesorders",
                order_header(n, "ACC-PUB"),
                vec![order_line("P-200", 1, "460.00")],
            )
            .expect("order");
    };
    let in_erp = |n: &str| {
        w.bc()
            .find("salesOrders", "externalDocumentNumber", n)
            .is_some()
    };
    let version_of = |n: &'static str| {
        let store = w.pipeline.store.clone();
        async move {
            store
                .trail(&format!("order:{n}"))
                .await
                .expect("trail")
                .iter()
                .filter_map(|e| e.rules_version.clone())
                .next_back()
                .expect("a decision with its version")
        }
    };
    order("ORD-PUB-1");
    w.settle().await.expect("settles");
    assert!(
        in_erp("ORD-PUB-1"),
        "released under the rules it started with"
    );
    assert_eq!(version_of("ORD-PUB-1").await, started_with);

    // An analyst publishes a credit rule that holds every order for review.
    let mut files = rule_files();
    let credit = files["credit_limit.rhai"].replacen(
        "fn rule(input) {",
        "fn rule(input) {\n    return #{ decision: \"hold\", reason: \"Every order is reviewed this week\" };",
        1,
    );
    files.insert("credit_limit.rhai".into(), credit);
    let published = activate(store.as_ref(), &files, "publish", "ana")
        .await
        .expect("published");
    assert_ne!(published.version, started_with);
    order("ORD-PUB-2");
    w.settle().await.expect("settles");
    assert!(
        !in_erp("ORD-PUB-2"),
        "held by the published rule, no restart"
    );
    let held = w
        .dataverse()
        .find("salesorders", "ordernumber", "ORD-PUB-2")
        .expect("order");
    assert_eq!(
        held["submitstatusdescription"],
        "Credit hold: Every order is reviewed this week"
    );
    assert_eq!(version_of("ORD-PUB-2").await, published.version);

    // Rolled back: the next order is released again, by the first version.
    let back = activate(store.as_ref(), &rule_files(), "rollback", "ana")
        .await
        .expect("rolled back");
    assert_eq!(back.version, started_with);
    order("ORD-PUB-3");
    w.settle().await.expect("settles");
    assert!(in_erp("ORD-PUB-3"));
    assert_eq!(version_of("ORD-PUB-3").await, started_with);
}

/// The sync step keeps each credit decision with the input the rule saw, and a candidate
/// rule set evaluated over that history names the orders it would decide differently.
#[tokio::test]
async fn a_candidate_is_compared_with_the_decisions_actually_made() {
    use p2c_core::ports::DecisionLog;
    let (w, _d) = world().await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    customer_with_item(&w, "ACC-DIFF", "10000").await;
    for (n, qty) in [("ORD-D1", 5), ("ORD-D2", 14), ("ORD-D3", 30)] {
        w.dataverse()
            .create_document(
                "salesorders",
                order_header(n, "ACC-DIFF"),
                vec![order_line("P-200", qty, "460.00")],
            )
            .expect("order");
    }
    w.settle().await.expect("settles");
    let decisions = w.pipeline.store.decisions(since).await.expect("decisions");
    let credit: Vec<_> = decisions
        .iter()
        .filter(|d| d.rule == "credit_limit.rhai")
        .collect();
    let subjects: Vec<&str> = credit.iter().map(|d| d.subject.as_str()).collect();
    assert_eq!(
        subjects,
        vec!["order:ORD-D1", "order:ORD-D2", "order:ORD-D3"]
    );
    assert_eq!(credit[1].input["order"]["total"].to_string(), "6440");
    assert_eq!(credit[1].output["decision"], "release");
    assert_eq!(
        credit[2].output["decision"], "hold",
        "with the open orders, over 10,000"
    );
    assert!(credit
        .iter()
        .all(|d| d.rules_version == w.pipeline.sync.rules.version));
    // A candidate holding orders over 80% of the limit: only ORD-D2 changes.
    let mut files = rule_files();
    let strict = files["credit_limit.rhai"].replace(
        "if exposure > c.credit_limit {",
        "if exposure > c.credit_limit * 0.8 {",
    );
    files.insert("credit_limit.rhai".into(), strict);
    let candidate = p2c_core::rules::RuleSet::from_files(files).expect("candidate");
    let report = p2c_core::rules::diff::diff(&w.pipeline.sync.rules, &candidate, &decisions);
    let changed: Vec<(&str, &str, &str)> = report
        .changes
        .iter()
        .map(|c| {
            (
                c.decision.subject.as_str(),
                c.current.as_str(),
                c.candidate.as_str(),
            )
        })
        .collect();
    assert_eq!(changed, vec![("order:ORD-D2", "release", "hold")]);
    assert_eq!(
        report.summary[0].sentence(),
        "1 order(s) would be held instead of released, total 6,440.00 USD"
    );
}
