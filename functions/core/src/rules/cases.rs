//! Rule test cases: every script `x.rhai` sits beside `x.cases.json`, a list of
//! `{ "name", "input", "expect" }` or `{ "name", "input", "expect_error": { "code" } }`.
//! `expect` is matched as a subset: keys it lists must be equal (numbers compared as
//! exact decimals), keys it omits are not checked.

use super::RuleSet;
use crate::error::RuleError;
use serde::Deserialize;
use serde_json::Value;

/// One case from a `.cases.json` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub input: Value,
    #[serde(default)]
    pub expect: Option<Value>,
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
}

/// An expected rejection or fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedError {
    /// The thrown `code`, or `rule_runtime_error` for a fault.
    pub code: String,
    /// Optional substring of the message.
    #[serde(default)]
    pub message_contains: Option<String>,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub script: String,
    pub case: String,
    pub input: Value,
    /// Empty when the case passed; otherwise one line per difference.
    pub failures: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every case file of the set. A case file without its script, or a script that
/// has no case file, is itself a failure (every rule is tested).
pub fn run_all(rules: &RuleSet) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for script in rules.script_names() {
        let case_path = script.trim_end_matches(".rhai").to_string() + ".cases.json";
        let Some(text) = rules.files().get(&case_path) else {
            results.push(CaseResult {
                script: script.clone(),
                case: "(cases file)".into(),
                input: Value::Null,
                failures: vec![format!(
                    "{case_path} is missing: every rule needs test cases"
                )],
            });
            continue;
        };
        let cases: Vec<Case> = match serde_json::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                results.push(CaseResult {
                    script: script.clone(),
                    case: "(cases file)".into(),
                    input: Value::Null,
                    failures: vec![format!("{case_path} is not valid: {e}")],
                });
                continue;
            }
        };
        for case in cases {
            results.push(run_case(rules, script, case));
        }
    }
    results
}

fn run_case(rules: &RuleSet, script: &str, case: Case) -> CaseResult {
    let mut failures = Vec::new();
    match (
        rules.eval(script, &case.input),
        &case.expect,
        &case.expect_error,
    ) {
        (Ok(out), Some(expect), None) => compare("", expect, &out, &mut failures),
        (Ok(out), None, Some(err)) => failures.push(format!(
            "expected error `{}`, got output {}",
            err.code,
            serde_json::to_string(&out).unwrap_or_default()
        )),
        (Err(e), Some(_), None) => failures.push(format!("expected output, got error: {e}")),
        (Err(e), None, Some(want)) => {
            let code = e.code();
            if code != want.code {
                failures.push(format!("expected error `{}`, got `{code}`: {e}", want.code));
            }
            if let Some(part) = &want.message_contains {
                let msg = match &e {
                    RuleError::Rejected { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                if !msg.contains(part.as_str()) {
                    failures.push(format!("error message `{msg}` does not contain `{part}`"));
                }
            }
        }
        (_, _, _) => {
            failures.push("a case needs exactly one of `expect` and `expect_error`".into())
        }
    }
    CaseResult {
        script: script.to_string(),
        case: case.name,
        input: case.input,
        failures,
    }
}

/// Subset comparison, collecting `path: expected X, got Y` lines.
pub fn compare(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    let here = if path.is_empty() { "(output)" } else { path };
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    Some(av) => compare(&p, ev, av, out),
                    None if ev.is_null() => {}
                    None => out.push(format!("{p}: expected {ev}, but it is missing")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                out.push(format!(
                    "{here}: expected {} items, got {}",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                compare(&format!("{path}[{i}]"), ev, av, out);
            }
        }
        (e, a) => {
            let same = match (crate::json::as_decimal(e), crate::json::as_decimal(a)) {
                (Some(x), Some(y)) if e.is_number() || a.is_number() => x == y,
                _ => e == a,
            };
            if !same {
                out.push(format!("{here}: expected {e}, got {a}"));
            }
        }
    }
}
