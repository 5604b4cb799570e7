//! Diagnostics for analysts: every problem in a rule set at once, each with its file, line
//! and column, the source line with a caret under the spot, what was expected, and a hint.
//!
//! ```text
//! error: Expecting ')' to close the parameters list
//!   --> rules/credit_limit.rhai:12:18
//!    |
//! 12 |     if total > limit {
//!    |                  ^ here
//!    |
//!    = help: …
//! ```

use super::{engine, RuleSet};
use crate::error::RuleError;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How bad a finding is: an error stops the rule set loading; a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file, relative to the rules folder.
    pub file: String,
    /// 1-based; 0 when the finding is about the whole file.
    pub line: usize,
    pub column: usize,
    /// What is wrong (and, where the parser knows, what it expected instead).
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    fn error(file: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: file.to_string(),
            line,
            column,
            message: message.into(),
            help: None,
        }
    }

    fn with_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// Renders the finding with the offending line of `source` (the file's text) and a
    /// caret; `origin` is the rules folder as the user named it (prefixes the path).
    pub fn render(&self, source: Option<&str>, origin: &str) -> String {
        let mut out = String::new();
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{label}: {}", self.message);
        let path = if origin.is_empty() {
            self.file.clone()
        } else {
            format!("{}/{}", origin.trim_end_matches('/'), self.file)
        };
        let text_line = source.and_then(|s| s.lines().nth(self.line.checked_sub(1)?));
        let gutter = " ".repeat(self.line.max(1).to_string().len());
        match (self.line, text_line) {
            (0, _) => {
                let _ = writeln!(out, "{gutter}--> {path}");
            }
            (line, Some(text)) => {
                let _ = writeln!(out, "{gutter}--> {path}:{line}:{}", self.column.max(1));
                let _ = writeln!(out, "{gutter} |");
                let _ = writeln!(out, "{line} | {}", text.trim_end());
                // The caret sits under the column (characters, tabs kept so it lines up).
                let pad: String = text
                    .chars()
                    .take(self.column.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let _ = writeln!(out, "{gutter} | {pad}^ here");
                let _ = writeln!(out, "{gutter} |");
            }
            (line, None) => {
                let _ = writeln!(out, "{gutter}--> {path}:{line}:{}", self.column.max(1));
            }
        }
        if let Some(h) = &self.help {
            let _ = writeln!(out, "{gutter} = help: {h}");
        }
        out
    }
}

/// Parses one of the TOML files, if present; a parse error becomes a finding at its place.
fn parse_toml<T: serde::de::DeserializeOwned>(
    files: &BTreeMap<String, String>,
    name: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<T> {
    let text = files.get(name)?;
    toml::from_str(text)
        .map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            out.push(Diagnostic::error(name, line, column, e.message().trim()));
        })
        .ok()
}

/// Checks a whole rule set and returns every finding (empty: it loads and every script has
/// its test cases). Scripts are compiled one by one, so a broken script does not hide the
/// next one; the catalogue's cross-checks run once every file parses.
pub fn check(files: &BTreeMap<String, String>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if !files.contains_key("flows.toml") {
        out.push(Diagnostic::error(
            "flows.toml",
            0,
            0,
            "flows.toml is missing: it names the flows and their scripts",
        ));
    }
    let _ = parse_toml::<super::Catalogue>(files, "flows.toml", &mut out);
    let maps: engine::ValueMaps =
        parse_toml(files, "value_maps.toml", &mut out).unwrap_or_default();
    let engine = engine::build_engine(engine::Limits::default(), std::sync::Arc::new(maps));
    for (path, text) in files.iter().filter(|(p, _)| p.ends_with(".rhai")) {
        if let Err(RuleError::Compile {
            line,
            column,
            message,
            ..
        }) = engine::compile(&engine, path, text)
        {
            let help = compile_help(&message, text);
            out.push(Diagnostic::error(path, line, column, message).with_help(help));
        }
    }
    for (path, text) in files.iter().filter(|(p, _)| p.ends_with(".cases.json")) {
        let script = path.trim_end_matches(".cases.json").to_string() + ".rhai";
        if !files.contains_key(&script) {
            out.push(
                Diagnostic::error(path, 0, 0, format!("no script `{script}` for these cases"))
                    .with_help(Some(
                        "a case file sits beside the script it tests, with the same name".into(),
                    )),
            );
        }
        if let Err(e) = serde_json::from_str::<Vec<super::cases::Case>>(text) {
            out.push(Diagnostic::error(path, e.line(), e.column(), e.to_string().split(" at line ").next().unwrap_or_default().to_string()).with_help(Some(
                "a case file is a JSON list of {\"name\", \"input\", \"expect\"} or {\"name\", \"input\", \"expect_error\": {\"code\"}}".into(),
            )));
        }
    }
    for path in files.keys().filter(|p| p.ends_with(".rhai")) {
        let cases = path.trim_end_matches(".rhai").to_string() + ".cases.json";
        if !files.contains_key(&cases) {
            out.push(Diagnostic {
                severity: Severity::Warning,
                ..Diagnostic::error(path, 0, 0, format!("no test cases: add `{cases}`"))
            });
        }
    }
    if out.iter().any(|d| d.severity == Severity::Error) {
        return out;
    }
    // Everything parses: the cross-checks (scripts the catalogue names, business events,
    // the pairing) are the loader's own.
    if let Err(e) = RuleSet::from_files(files.clone()) {
        let flows = files
            .get("flows.toml")
            .map(String::as_str)
            .unwrap_or_default();
        out.push(match e {
            RuleError::Missing { rule } => {
                let (line, column) = find(flows, &format!("\"{rule}\""));
                Diagnostic::error(
                    "flows.toml",
                    line,
                    column,
                    format!("the script `{rule}` does not exist"),
                )
                .with_help(Some(format!(
                    "create rules/{rule}, or name an existing script"
                )))
            }
            RuleError::Config { message } => {
                let at = ["business_events", "[pairing]"]
                    .iter()
                    .find(|k| message.contains(k.trim_matches(['[', ']'])))
                    .map(|k| find(flows, k))
                    .unwrap_or((0, 0));
                Diagnostic::error("flows.toml", at.0, at.1, message)
            }
            other => Diagnostic::error("flows.toml", 0, 0, other.to_string()),
        });
    }
    out
}

/// A rule's compile error or runtime fault as a finding at its position (`None` for other
/// errors: a rejection is a business decision, not a fault in the script).
pub fn of_error(e: &RuleError) -> Option<Diagnostic> {
    match e {
        RuleError::Compile {
            rule,
            line,
            column,
            message,
        }
        | RuleError::Runtime {
            rule,
            line,
            column,
            message,
        } => Some(Diagnostic::error(rule, *line, *column, message.clone())),
        _ => None,
    }
}

/// Renders every finding, then a summary line.
pub fn render_all(diags: &[Diagnostic], files: &BTreeMap<String, String>, origin: &str) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.render(files.get(&d.file).map(String::as_str), origin));
        out.push('\n');
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diags.len() - errors;
    let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
    out
}

/// A hint for the commonest compile errors an analyst meets.
fn compile_help(message: &str, source: &str) -> Option<String> {
    if let Some(name) = message.strip_prefix("Undefined variable: ") {
        let known = identifiers(source);
        let close = known
            .iter()
            .filter(|k| k.as_str() != name && distance(k, name) <= 2.max(name.len() / 4))
            .min_by_key(|k| distance(k, name));
        return Some(match close {
            Some(k) => format!("did you mean `{k}`? Variables are declared with `let` before use"),
            None => "declare it with `let` first; the rule's data is in `input` (for example `input.record`)".into(),
        });
    }
    if message.contains("'import'") {
        return Some(
            "rules cannot load other files: copy the helper function into this script".into(),
        );
    }
    if message.contains("fn rule(input)") {
        return Some("every script defines `fn rule(input) { … }` and returns a map, or throws #{ code, message }".into());
    }
    if message.starts_with("Expecting ';'") {
        return Some("statements end with `;` (the line before may be missing it)".into());
    }
    if message.contains("reserved keyword") {
        return Some("this word has a meaning in Rhai: choose another name".into());
    }
    None
}

/// The names a script declares (`let`, `const`, `for`, function parameters) and `input`,
/// for "did you mean" (comments and strings are skipped).
fn identifiers(source: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            '"' | '`' => {
                let mut escaped = false;
                for n in chars.by_ref() {
                    if n == c && !escaped {
                        break;
                    }
                    escaped = n == '\\' && !escaped;
                }
            }
            c if c.is_alphanumeric() || c == '_' => {
                cur.push(c);
                continue;
            }
            '(' | ')' | ',' => words.push(c.to_string()),
            _ => {}
        }
        if !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
    }
    words.push(cur);
    let mut out = vec!["input".to_string()];
    let mut in_params = false;
    for (i, w) in words.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| words[p].as_str());
        let declared = matches!(prev, Some("let" | "const" | "for"))
            || (in_params && w.starts_with(|c: char| c.is_alphabetic() || c == '_'));
        if declared && !out.contains(w) {
            out.push(w.clone());
        }
        match w.as_str() {
            "(" if i >= 2 && words[i - 2] == "fn" => in_params = true,
            ")" => in_params = false,
            _ => {}
        }
    }
    out
}

/// Edit distance (Levenshtein), for short names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            row[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(row[j] + 1);
        }
        prev = row;
    }
    prev[b.len()]
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Where `needle` first appears (1-based), or (0, 0).
fn find(text: &str, needle: &str) -> (usize, usize) {
    text.find(needle)
        .map(|at| line_col(text, at))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_files() -> BTreeMap<String, String> {
        super::super::EmbeddedLoader.load().expect("embedded rules")
    }

    use super::super::RuleLoader;

    #[test]
    fn the_shipped_rules_have_no_findings() {
        assert_eq!(check(&repo_files()), vec![]);
    }

    #[test]
    fn a_syntax_error_is_placed_with_what_was_expected_and_a_caret() {
        let mut files = repo_files();
        let path = "credit_limit.rhai".to_string();
        let broken = files[&path].replacen("if ", "if (", 1);
        let line = broken
            .lines()
            .position(|l| l.contains("if ("))
            .expect("an if")
            + 1;
        files.insert(path.clone(), broken);
        let diags = check(&files);
        assert_eq!(diags.len(), 1, "{diags:?}");
        let d = &diags[0];
        assert_eq!(
            (d.file.as_str(), d.severity),
            ("credit_limit.rhai", Severity::Error)
        );
        assert!(d.line >= line, "{d:?}");
        assert!(
            d.message.starts_with("Expecting"),
            "says what it expected: {d:?}"
        );
        let text = d.render(files.get(&d.file).map(String::as_str), "rules");
        assert!(
            text.contains(&format!(
                "--> rules/credit_limit.rhai:{}:{}",
                d.line, d.column
            )),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        let caret = lines
            .iter()
            .position(|l| l.ends_with("^ here"))
            .expect("caret");
        // The caret is under the column, in the line shown above it.
        let src = lines[caret - 1];
        let col_in_src = src.find(" | ").expect("gutter") + 3 + d.column - 1;
        assert_eq!(lines[caret].find('^'), Some(col_in_src), "{text}");
    }

    #[test]
    fn every_broken_file_is_reported_not_just_the_first() {
        let mut files = repo_files();
        files.insert(
            "rebate.rhai".into(),
            files["rebate.rhai"].replace("fn rule(input)", "fn rule(input"),
        );
        files.insert(
            "mapping/account_to_customer.rhai".into(),
            "// the number, numbered\nfn rule(input) {\n    let number = input.record.accountnumber;\n    #{ number: numbr, name: inptu.name }\n}\n".into(),
        );
        files.insert("value_maps.toml".into(), "[payment_terms\n".into());
        let diags = check(&files);
        let found: Vec<(&str, usize)> = diags.iter().map(|d| (d.file.as_str(), d.line)).collect();
        let rebate_line = files["rebate.rhai"]
            .lines()
            .position(|l| l.contains("fn rule(input"))
            .expect("fn rule")
            + 1;
        assert!(found.contains(&("rebate.rhai", rebate_line)), "{diags:?}");
        assert!(
            found.contains(&("mapping/account_to_customer.rhai", 4)),
            "{diags:?}"
        );
        assert!(found.contains(&("value_maps.toml", 1)), "{diags:?}");
        let typo = diags
            .iter()
            .find(|d| d.file == "mapping/account_to_customer.rhai")
            .expect("typo");
        assert_eq!(typo.message, "Undefined variable: numbr");
        assert_eq!(
            typo.help
                .as_deref()
                .map(|h| h.starts_with("did you mean `number`?")),
            Some(true),
            "{typo:?}"
        );
    }

    #[test]
    fn catalogue_problems_point_into_flows_toml() {
        let mut files = repo_files();
        let flows = files["flows.toml"].replace("\"credit_limit.rhai\"", "\"credit_limits.rhai\"");
        files.insert("flows.toml".into(), flows.clone());
        let diags = check(&files);
        assert_eq!(diags.len(), 1, "{diags:?}");
        let d = &diags[0];
        assert_eq!(d.file, "flows.toml");
        assert!(d.message.contains("credit_limits.rhai"), "{d:?}");
        assert_eq!(
            flows
                .lines()
                .nth(d.line - 1)
                .map(|l| l.contains("credit_limits.rhai")),
            Some(true)
        );
        // Bad TOML: the line and column of the fault.
        files.insert("flows.toml".into(), "[pairing]\ncrm = dataverse\n".into());
        let d = &check(&files)[0];
        assert_eq!((d.file.as_str(), d.line), ("flows.toml", 2), "{d:?}");
    }

    #[test]
    fn cases_files_are_checked_and_untested_scripts_warned_about() {
        let mut files = repo_files();
        files.insert(
            "rebate.cases.json".into(),
            "[{\"name\": \"x\", \"inptu\": {}}]".into(),
        );
        files.insert("mapping/extra.rhai".into(), "fn rule(input) { #{} }".into());
        let diags = check(&files);
        let bad = diags
            .iter()
            .find(|d| d.file == "rebate.cases.json")
            .expect("cases finding");
        assert_eq!((bad.line, bad.severity), (1, Severity::Error));
        assert!(bad.message.contains("inptu"), "{bad:?}");
        let warn = diags
            .iter()
            .find(|d| d.file == "mapping/extra.rhai")
            .expect("warning");
        assert_eq!(warn.severity, Severity::Warning);
        assert!(warn.message.contains("mapping/extra.cases.json"));
        let text = render_all(&diags, &files, "rules");
        assert!(text.ends_with("1 error(s), 1 warning(s)\n"), "{text}");
    }
}
