//! `p2c rules check` and `p2c rules test` as an analyst runs them: on a copy of the
//! repository's rules, broken in the ways analysts break them.

use std::path::Path;
use std::process::Command;

mod common;
use common::{copy_dir, repo_rules, version_in};

/// A copy of the rules to break.
fn copy_rules() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&repo_rules(), dir.path());
    dir
}

/// Runs `p2c --rules <dir> rules <args…>`: (success, stdout + stderr).
fn p2c(dir: &Path, args: &[&str]) -> (bool, String) {
    p2c_with(dir, args, &[])
}

/// [`p2c`] with these environment variables set.
fn p2c_with(dir: &Path, args: &[&str], env: &[(String, String)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_p2c"))
        .args(["--rules", dir.to_str().expect("utf-8"), "rules"])
        .args(args)
        .env_remove("P2C_RULES")
        .env_remove("P2C_STORE")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string()
        + String::from_utf8_lossy(&out.stderr).as_ref();
    (out.status.success(), text)
}

/// `p2c rules run <args…>`.
fn p2c_run(dir: &Path, args: &[&str]) -> (bool, String) {
    p2c(dir, &[&["run"], args].concat())
}

/// `p2c rules <args…> --store <store>`.
fn p2c_store(dir: &Path, store: &Path, args: &[&str]) -> (bool, String) {
    p2c(
        dir,
        &[args, &["--store", store.to_str().expect("utf-8")]].concat(),
    )
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} has no `{from}`");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
}

#[test]
fn the_shipped_rules_check_and_pass() {
    let (ok, out) = p2c(&repo_rules(), &["check"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("scripts compile, the catalogue is consistent"),
        "{out}"
    );
    let (ok, out) = p2c(&repo_rules(), &["test"]);
    assert!(ok, "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn a_broken_rule_fails_check_and_test_with_its_place_and_a_caret() {
    let dir = copy_rules();
    edit(dir.path(), "credit_limit.rhai", "if ", "if (");
    let source = std::fs::read_to_string(dir.path().join("credit_limit.rhai")).expect("read");
    let line = source
        .lines()
        .position(|l| l.contains("if ("))
        .expect("edited")
        + 1;
    for action in ["check", "test"] {
        let (ok, out) = p2c(dir.path(), &[action]);
        assert!(!ok, "{action} must fail:\n{out}");
        assert!(
            out.contains("error: Expecting ')'"),
            "{action}: says what it expected:\n{out}"
        );
        let at = format!("credit_limit.rhai:{line}:");
        assert!(out.contains(&at), "{action}: names {at}:\n{out}");
        assert!(
            out.contains(&format!("{line} |")) && out.contains("^ here"),
            "{action}: shows the line and a caret:\n{out}"
        );
    }
}

#[test]
fn a_failing_case_shows_its_input_and_an_expected_versus_actual_diff() {
    let dir = copy_rules();
    // The analyst expects a hold where the rule releases.
    edit(
        dir.path(),
        "credit_limit.cases.json",
        r#""expect": { "decision": "release" }"#,
        r#""expect": { "decision": "hold" }"#,
    );
    let (ok, out) = p2c(dir.path(), &["test"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  credit_limit.rhai / an order within the limit is released"),
        "{out}"
    );
    assert!(
        out.contains("input:") && out.contains("\"total\": 18400.0"),
        "{out}"
    );
    assert!(out.contains("-   \"decision\": \"hold\""), "{out}");
    assert!(out.contains("+   \"decision\": \"release\""), "{out}");
    assert!(out.contains(" passed, 1 failed"), "{out}");
}

#[test]
fn rules_run_shows_how_a_rule_decided_on_an_input() {
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("order.json");
    std::fs::write(
        &input,
        r#"{"order": {"number": "ORD-9", "total": 9000, "currency": "USD"},
            "customer": {"number": "ACC-9", "financials_known": true, "credit_limit": 10000,
                         "balance": 1500, "open_orders": 0, "overdue_amount": 0,
                         "days_overdue": 0, "on_hold": false}}"#,
    )
    .expect("write");
    let (ok, out) = p2c_run(
        &repo_rules(),
        &["credit_limit", "--input", input.to_str().expect("utf-8")],
    );
    assert!(ok, "{out}");
    assert!(out.contains("rule credit_limit.rhai"), "{out}");
    // The decisive comparison, with the values compared, and the decision.
    assert!(out.contains("exposure = 10500"), "{out}");
    assert!(out.contains("yes (10500 > 10000)"), "{out}");
    assert!(out.contains("\"decision\": \"hold\""), "{out}");
    // A test case's input by part of its name.
    let (ok, out) = p2c_run(
        &repo_rules(),
        &["credit_limit", "--case", "within the limit"],
    );
    assert!(ok && out.contains("\"decision\": \"release\""), "{out}");
    // A rejection is an answer, not a failure.
    let (ok, out) = p2c_run(
        &repo_rules(),
        &[
            "mapping/account_to_customer.rhai",
            "--case",
            "without a number",
        ],
    );
    assert!(
        ok && out.contains("rejected: missing_account_number"),
        "{out}"
    );
}

#[test]
fn rules_run_reports_a_fault_at_its_line_and_unclear_names() {
    let dir = copy_rules();
    edit(
        dir.path(),
        "credit_limit.rhai",
        "let c = input.customer;",
        "let c = input.customer;\n    let boom = c.balance / 0;",
    );
    let (ok, out) = p2c_run(dir.path(), &["credit_limit", "--case", "within the limit"]);
    assert!(!ok, "{out}");
    assert!(out.contains("credit_limit.rhai:15:"), "{out}");
    assert!(out.contains("^ here"), "{out}");
    let (ok, out) = p2c_run(dir.path(), &["account_to_customer", "--case", "x"]);
    assert!(!ok && out.contains("name one by its path"), "{out}");
    let (ok, out) = p2c_run(dir.path(), &["no_such_rule", "--case", "x"]);
    assert!(!ok && out.contains("no rule `no_such_rule`"), "{out}");
    let (ok, out) = p2c_run(dir.path(), &["credit_limit", "--case", "no such case"]);
    assert!(!ok && out.contains("its cases:"), "{out}");
}

#[test]
fn rules_defs_writes_definitions_beside_the_rules_without_disturbing_them() {
    let dir = copy_rules();
    let (ok, out) = p2c(dir.path(), &["defs"]);
    assert!(ok, "{out}");
    let host =
        std::fs::read_to_string(dir.path().join(".defs/__static__.d.rhai")).expect("written");
    assert!(
        host.contains("fn value_map(map: String, key: ?) -> ?;"),
        "{host}"
    );
    // The definitions (`.d.rhai`) are not taken for rules.
    for action in ["check", "test"] {
        let (ok, out) = p2c(dir.path(), &[action]);
        assert!(ok, "{action}: {out}");
        assert!(!out.contains("warning"), "{action}: {out}");
    }
}

#[test]
fn publish_refuses_broken_or_failing_rules_and_rollback_returns_to_the_last_version() {
    let dir = copy_rules();
    let store = dir.path().join("store.db");
    let (ok, out) = p2c_store(dir.path(), &store, &["versions"]);
    assert!(ok && out.contains("nothing published yet"), "{out}");
    let (ok, out) = p2c_store(dir.path(), &store, &["rollback"]);
    assert!(!ok && out.contains("nothing is published yet"), "{out}");
    let (ok, out) = p2c_store(dir.path(), &store, &["publish"]);
    assert!(ok, "{out}");
    let first = version_in(&out);
    // A failing case is not published.
    edit(
        dir.path(),
        "credit_limit.rhai",
        "let reject_after_days = 120;",
        "let reject_after_days = 50;",
    );
    let (ok, out) = p2c_store(dir.path(), &store, &["publish"]);
    assert!(
        !ok && out.contains("not published") && out.contains("FAIL  credit_limit.rhai"),
        "{out}"
    );
    // Neither is a rule that does not compile.
    edit(dir.path(), "credit_limit.rhai", "if ", "if (");
    let (ok, out) = p2c_store(dir.path(), &store, &["publish"]);
    assert!(
        !ok && out.contains("not published") && out.contains("^ here"),
        "{out}"
    );
    // A good change is; then rolled back.
    edit(dir.path(), "credit_limit.rhai", "if (", "if ");
    edit(
        dir.path(),
        "credit_limit.rhai",
        "let reject_after_days = 50;",
        "let reject_after_days = 120; // reviewed",
    );
    let (ok, out) = p2c_store(dir.path(), &store, &["publish"]);
    assert!(ok, "{out}");
    let second = version_in(&out);
    assert_ne!(first, second);
    let (ok, out) = p2c_store(dir.path(), &store, &["rollback"]);
    assert!(
        ok && out.contains(&format!("from {second} to {first}")),
        "{out}"
    );
    let (ok, out) = p2c_store(dir.path(), &store, &["versions"]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("rollback")
            && lines[0].contains(&first)
            && lines[0].ends_with("(active)"),
        "{out}"
    );
    assert!(
        lines[1].contains("publish") && lines[1].contains(&second),
        "{out}"
    );
    let (ok, out) = p2c_store(dir.path(), &store, &["rollback", "--to", "r-nope"]);
    assert!(!ok && out.contains("no stored rule set r-nope"), "{out}");
}

#[test]
fn rules_diff_reports_changed_outcomes_from_the_store_and_from_a_folder() {
    use p2c_core::ports::{Decision, DecisionLog};
    let dir = tempfile::tempdir().expect("dir");
    let store_path = dir.path().join("store.db");
    let rules =
        p2c_core::rules::RuleSet::load(&p2c_core::rules::DirLoader(repo_rules())).expect("rules");
    let order = |n: u32, total: u32| {
        serde_json::json!({
            "order": {"number": format!("ORD-{n}"), "total": total, "currency": "EUR"},
            "customer": {"number": "ACC-1", "financials_known": true, "credit_limit": 10000,
                         "balance": 0, "open_orders": 0, "overdue_amount": 0,
                         "days_overdue": 0, "on_hold": false}
        })
    };
    // History: three credit decisions, as the sync step keeps them.
    let store = p2c_core::embedded::EmbeddedStore::open(&store_path).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for (n, total) in [(1, 5000), (2, 8500), (3, 9900)] {
        let input = order(n, total);
        let output = rules.eval("credit_limit.rhai", &input).expect("decides");
        rt.block_on(store.record(&Decision {
            id: format!("d{n}"),
            at: chrono::Utc::now(),
            rule: "credit_limit.rhai".into(),
            subject: format!("order:ORD-{n}"),
            input,
            output,
            rules_version: rules.version.clone(),
        }))
        .expect("recorded");
    }
    drop(store);
    // The candidate holds orders over 80% of the limit.
    let candidate = copy_rules();
    edit(
        candidate.path(),
        "credit_limit.rhai",
        "if exposure > c.credit_limit {",
        "if exposure > c.credit_limit * 0.8 {",
    );
    let cand = candidate.path().to_str().expect("utf-8");
    let (ok, out) = p2c_store(&repo_rules(), &store_path, &["diff", "--candidate", cand]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with("3 decisions compared (the decisions of the last 30 day(s))"),
        "{out}"
    );
    assert!(
        out.contains("order:ORD-2  credit_limit.rhai  release → hold  8,500.00 EUR"),
        "{out}"
    );
    assert!(
        out.contains("order:ORD-3  credit_limit.rhai  release → hold  9,900.00 EUR"),
        "{out}"
    );
    assert!(!out.contains("order:ORD-1 "), "{out}");
    assert!(
        out.contains("| credit_limit.rhai | release | hold | 2 | 18,400.00 EUR |"),
        "{out}"
    );
    assert!(
        out.contains("2 order(s) would be held instead of released, total 18,400.00 EUR"),
        "{out}"
    );
    // The same from a folder of inputs.
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).expect("dir");
    std::fs::write(
        inputs.join("orders.json"),
        serde_json::json!([
            {"rule": "credit_limit.rhai", "subject": "order:ORD-A", "input": order(9, 9000)},
            {"rule": "credit_limit.rhai", "subject": "order:ORD-B", "input": order(8, 1000)}
        ])
        .to_string(),
    )
    .expect("write");
    let (ok, out) = p2c_store(
        &repo_rules(),
        &dir.path().join("empty.db"),
        &[
            "diff",
            "--candidate",
            cand,
            "--inputs",
            inputs.to_str().expect("utf-8"),
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("order:ORD-A  credit_limit.rhai  release → hold"),
        "{out}"
    );
    assert!(
        out.contains("1 order(s) would be held instead of released, total 9,000.00 EUR"),
        "{out}"
    );
    // The candidate against itself: nothing changes.
    let (ok, out) = p2c_store(
        candidate.path(),
        &dir.path().join("empty.db"),
        &[
            "diff",
            "--candidate",
            cand,
            "--inputs",
            inputs.to_str().expect("utf-8"),
        ],
    );
    assert!(ok && out.contains("no outcome would change"), "{out}");
}

#[path = "../../../tests/moto.rs"]
#[allow(dead_code)]
mod moto;

/// The rule commands with `--aws`: a deployment's table on moto, named by the functions'
/// environment variables.
#[test]
fn publish_versions_rollback_and_diff_work_on_dynamodb() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = moto::endpoint();
    let backend = rt
        .block_on(p2c_core::aws::create_local(
            &endpoint,
            &moto::unique("cli"),
            5,
        ))
        .expect("table and queues on moto");
    let mut env: Vec<(String, String)> = vec![
        ("P2C_TABLE".into(), backend.store.table().to_string()),
        ("AWS_ENDPOINT_URL".into(), endpoint.clone()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
    ];
    let urls = backend.queues.urls();
    for (q, url) in &urls.queues {
        let name = q.as_str().replace('-', "_").to_uppercase();
        env.push((format!("P2C_{name}_QUEUE_URL"), url.clone()));
        env.push((format!("P2C_{name}_DLQ_URL"), urls.dead_letters[q].clone()));
    }
    let run = |dir: &Path, args: &[&str]| p2c_with(dir, &[args, &["--aws"]].concat(), &env);
    let (ok, out) = run(&repo_rules(), &["publish"]);
    assert!(ok, "{out}");
    let candidate = copy_rules();
    edit(
        candidate.path(),
        "credit_limit.rhai",
        "let hold_after_days = 60;",
        "let hold_after_days = 60; // v2",
    );
    let (ok, out) = run(candidate.path(), &["publish"]);
    assert!(ok && out.contains("(activation 2)"), "{out}");
    let (ok, out) = run(&repo_rules(), &["versions"]);
    assert!(
        ok && out.lines().count() == 2
            && out.lines().next().is_some_and(|l| l.ends_with("(active)")),
        "{out}"
    );
    let (ok, out) = run(&repo_rules(), &["rollback"]);
    assert!(ok && out.contains("(activation 3)"), "{out}");
    let cand = candidate.path().to_str().expect("utf-8").to_string();
    let (ok, out) = run(&repo_rules(), &["diff", "--candidate", &cand]);
    assert!(
        ok && out.contains("0 decisions compared") && out.contains("no outcome would change"),
        "{out}"
    );
}
