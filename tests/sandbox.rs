//! Rule sandbox abuse, end to end: a mapping rule that loops forever, grows a string or an
//! array without end, or recurses without end is stopped by the engine's limits; its event
//! goes to the dead-letter queue with the rule's name and the reason, and the other events
//! keep flowing through the same rule. A rule that imports a module or calls `eval`, even in
//! a branch that never runs, does not load at all.

use crate::common::{account, rule_files, world_with};
use p2c_core::ports::{DeadLetters, QueueName};
use p2c_core::rules::RuleSet;
use std::sync::Arc;

/// The repository's rules with the account mapping wrapped: the account named `Evil` runs
/// `abuse` first; every other account maps as before.
fn rules_with_abuse(abuse: &str, helpers: &str) -> Result<RuleSet, String> {
    let mut files = rule_files();
    let script = files
        .get_mut("mapping/account_to_customer.rhai")
        .expect("the account mapping");
    assert!(script.contains("fn rule(input)"));
    *script = format!(
        "{}\n{helpers}\nfn rule(input) {{\n    if input.record.name == \"Evil\" {{\n        {abuse}\n    }}\n    mapped(input)\n}}\n",
        script.replace("fn rule(input)", "fn mapped(input)")
    );
    RuleSet::from_files(files).map_err(|e| e.to_string())
}

#[tokio::test]
async fn runaway_rules_are_stopped_and_dead_lettered_while_other_events_flow() {
    for (abuse, helpers, reason) in [
        ("loop { }", "", "operations"),
        ("let s = \"xx\"; loop { s += s; }", "", "string"),
        ("let a = []; loop { a.push(a.len()); }", "", "array"),
        ("deep(0);", "fn deep(n) { deep(n + 1) }", "nested"),
    ] {
        let rules = Arc::new(rules_with_abuse(abuse, helpers).expect("loads"));
        let (w, _d) = world_with(rules).await;
        let started = std::time::Instant::now();
        w.dataverse()
            .create("accounts", account("ACC-EVIL", "Evil"))
            .expect("account");
        w.dataverse()
            .create("accounts", account("ACC-GOOD", "Good Ltd"))
            .expect("account");
        w.settle().await.expect("settles");
        // A generous bound: the limits stop the rule in milliseconds.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{abuse}: took {:?}",
            started.elapsed()
        );
        assert!(
            w.bc().find("customers", "number", "ACC-GOOD").is_some(),
            "{abuse}: the other account still synced"
        );
        assert!(
            w.bc().find("customers", "number", "ACC-EVIL").is_none(),
            "{abuse}: the abusive rule had no effect"
        );
        let dead = DeadLetters::list(&w.pipeline.store, QueueName::Inbound)
            .await
            .expect("dead letters");
        assert_eq!(dead.len(), 1, "{abuse}: {dead:?}");
        let why = dead[0].reason.to_ascii_lowercase();
        assert!(
            why.contains("account_to_customer.rhai") && why.contains(reason),
            "{abuse}: {}",
            dead[0].reason
        );
    }
}

#[test]
fn rules_that_import_or_eval_never_load() {
    for abuse in ["import \"os\" as os;", "eval(\"1 + 1\");"] {
        let Err(err) = rules_with_abuse(abuse, "") else {
            panic!("{abuse}: the rule set loaded");
        };
        assert!(
            err.contains("account_to_customer.rhai") && err.contains("reserved"),
            "{abuse}: {err}"
        );
    }
}
