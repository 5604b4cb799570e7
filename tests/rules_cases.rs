//! Every rule under `rules/` passes its own test cases (the data-driven suite analysts extend).

use crate::common::repo_rules;
use p2c_core::rules::cases::run_all;

#[test]
fn every_rule_passes_its_cases() {
    let rules = repo_rules();
    let results = run_all(&rules);
    assert!(
        results.len() >= 40,
        "expected the full case set, found {}",
        results.len()
    );
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{} / {}: {}", r.script, r.case, r.failures.join("; ")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn every_script_has_cases_and_every_flow_a_script() {
    let rules = repo_rules();
    for s in rules.script_names() {
        let cases = s.trim_end_matches(".rhai").to_string() + ".cases.json";
        assert!(rules.files().contains_key(&cases), "{s} has no {cases}");
    }
}

#[test]
fn a_broken_rule_fails_with_its_name_line_and_column() {
    let mut files = crate::common::rule_files();
    files.insert(
        "credit_limit.rhai".into(),
        "fn rule(input) {\n    let x = ;\n}\n".into(),
    );
    let err = p2c_core::rules::RuleSet::from_files(files).expect_err("does not compile");
    match err {
        p2c_core::error::RuleError::Compile {
            rule, line, column, ..
        } => {
            assert_eq!(rule, "credit_limit.rhai");
            assert_eq!(line, 2);
            assert!(column > 0);
        }
        other => panic!("unexpected {other:?}"),
    }
}
