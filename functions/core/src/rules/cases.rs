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
    /// On a failed `expect`: the expected lines against the output's, as a line diff of
    /// both pretty-printed (the output cut to the keys the case lists).
    pub diff: Vec<DiffLine>,
    /// The rule's error, when it failed where the case expected output (for its position).
    pub error: Option<RuleError>,
}

/// One line of an expected-versus-actual diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffLine {
    Same(String),
    Expected(String),
    Actual(String),
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
                diff: vec![],
                error: None,
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
                    diff: vec![],
                    error: None,
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
    let mut diff = Vec::new();
    let mut error = None;
    match (
        rules.eval(script, &case.input),
        &case.expect,
        &case.expect_error,
    ) {
        (Ok(out), Some(expect), None) => {
            compare("", expect, &out, &mut failures);
            if !failures.is_empty() {
                diff = diff_lines(expect, &project(expect, &out));
            }
        }
        (Ok(out), None, Some(err)) => failures.push(format!(
            "expected error `{}`, got output {}",
            err.code,
            serde_json::to_string(&out).unwrap_or_default()
        )),
        (Err(e), Some(_), None) => {
            failures.push(format!("expected output, got error: {e}"));
            error = Some(e);
        }
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
        diff,
        error,
    }
}

/// `actual` cut to the shape of `expected`: only the keys `expected` lists (a key it lacks
/// is shown as missing), and where the two are equal as the comparison sees them (`5000`
/// and `"5000.00"` as decimals), `expected`'s spelling, so the diff shows real differences.
pub fn project(expected: &Value, actual: &Value) -> Value {
    let mut diffs = Vec::new();
    compare("", expected, actual, &mut diffs);
    if diffs.is_empty() {
        return expected.clone();
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => Value::Object(
            e.iter()
                .map(|(k, ev)| match a.get(k) {
                    Some(av) => (k.clone(), project(ev, av)),
                    None if ev.is_null() => (k.clone(), Value::Null),
                    None => (k.clone(), Value::String("<missing>".into())),
                })
                .collect(),
        ),
        (Value::Array(e), Value::Array(a)) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, av)| {
                    e.get(i)
                        .map(|ev| project(ev, av))
                        .unwrap_or_else(|| av.clone())
                })
                .collect(),
        ),
        _ => actual.clone(),
    }
}

/// A line diff (longest common subsequence) of the two values pretty-printed.
pub fn diff_lines(expected: &Value, actual: &Value) -> Vec<DiffLine> {
    let pretty = |v: &Value| -> Vec<String> {
        serde_json::to_string_pretty(v)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let (e, a) = (pretty(expected), pretty(actual));
    let mut lcs = vec![vec![0usize; a.len() + 1]; e.len() + 1];
    for i in (0..e.len()).rev() {
        for j in (0..a.len()).rev() {
            lcs[i][j] = if e[i] == a[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < e.len() || j < a.len() {
        if i < e.len() && j < a.len() && e[i] == a[j] {
            out.push(DiffLine::Same(e[i].clone()));
            i += 1;
            j += 1;
        } else if i < e.len() && (j == a.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(DiffLine::Expected(e[i].clone()));
            i += 1;
        } else {
            out.push(DiffLine::Actual(a[j].clone()));
            j += 1;
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_diff_shows_only_what_differs_under_the_keys_the_case_lists() {
        let expected = json!({"decision": "hold", "limit": 5000, "reason": "over the limit"});
        let actual = json!({"decision": "release", "limit": "5000.00", "extra": 1});
        let projected = project(&expected, &actual);
        assert_eq!(
            projected,
            json!({"decision": "release", "limit": 5000, "reason": "<missing>"})
        );
        let d = diff_lines(&expected, &projected);
        let changed: Vec<&DiffLine> = d
            .iter()
            .filter(|l| !matches!(l, DiffLine::Same(_)))
            .collect();
        assert_eq!(
            changed,
            vec![
                &DiffLine::Expected("  \"decision\": \"hold\",".into()),
                &DiffLine::Actual("  \"decision\": \"release\",".into()),
                &DiffLine::Expected("  \"reason\": \"over the limit\"".into()),
                &DiffLine::Actual("  \"reason\": \"<missing>\"".into()),
            ]
        );
        assert!(d.contains(&DiffLine::Same("  \"limit\": 5000,".into())));
        assert_eq!(
            diff_lines(&expected, &expected)
                .iter()
                .filter(|l| !matches!(l, DiffLine::Same(_)))
                .count(),
            0
        );
    }
}
