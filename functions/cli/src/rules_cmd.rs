//! `p2c rules …`: the analysts' commands.

use anyhow::{bail, Context, Result};
use p2c_core::ports::{Decision, DecisionLog, RuleStore};
use p2c_core::rules::cases::{self, CaseResult, DiffLine};
use p2c_core::rules::diagnostic::{self, Severity};
use p2c_core::rules::{live, trace};
use p2c_core::rules::{DirLoader, EmbeddedLoader, RuleLoader, RuleSet};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// Where the rules come from: a folder, or the copy built into the binary.
pub fn loader(dir: &Option<PathBuf>) -> Box<dyn RuleLoader> {
    match dir {
        Some(d) => Box::new(DirLoader(d.clone())),
        None => Box::new(EmbeddedLoader),
    }
}

/// The folder as the user named it, to prefix paths in diagnostics.
fn origin(dir: &Option<PathBuf>) -> String {
    match dir {
        Some(d) => d.display().to_string(),
        None => "rules (built in)".into(),
    }
}

/// Loads and compiles the rule set; if it does not load, every finding is printed (file,
/// line, column, the line with a caret) and the command fails.
pub fn load(dir: &Option<PathBuf>, err: &mut dyn Write) -> Result<RuleSet> {
    let loader = loader(dir);
    let files = loader.load()?;
    match RuleSet::from_files(files.clone()) {
        Ok(r) => Ok(r),
        Err(e) => {
            let diags = diagnostic::check(&files);
            let errors: Vec<_> = diags
                .into_iter()
                .filter(|d| d.severity == Severity::Error)
                .collect();
            if errors.is_empty() {
                bail!("loading rules from {}: {e}", loader.origin());
            }
            write!(
                err,
                "{}",
                diagnostic::render_all(&errors, &files, &origin(dir))
            )?;
            bail!(
                "the rules in {} do not load: {} error(s)",
                loader.origin(),
                errors.len()
            )
        }
    }
}

/// `p2c rules check`: every finding in every file; fails on any error.
pub fn check(dir: &Option<PathBuf>, out: &mut dyn Write) -> Result<()> {
    let loader = loader(dir);
    let files = loader.load()?;
    let diags = diagnostic::check(&files);
    if !diags.is_empty() {
        write!(
            out,
            "{}",
            diagnostic::render_all(&diags, &files, &origin(dir))
        )?;
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        bail!("{errors} error(s) in the rules");
    }
    // No errors: `diagnostic::check` has compiled every script and loaded the set.
    writeln!(
        out,
        "rules {}: {} scripts compile, the catalogue is consistent",
        p2c_core::rules::content_version(&files),
        files.keys().filter(|p| p.ends_with(".rhai")).count()
    )?;
    Ok(())
}

/// `p2c rules test`: every case of every rule; a failure shows the case, its input and the
/// expected against the actual output as a diff. Fails if any case fails.
pub fn test(dir: &Option<PathBuf>, out: &mut dyn Write) -> Result<()> {
    let rules = load(dir, out)?;
    let results = cases::run_all(&rules);
    let failed = results.iter().filter(|r| !r.passed()).count();
    for r in &results {
        if r.passed() {
            writeln!(out, "ok    {} / {}", r.script, r.case)?;
        } else {
            write_failure(r, rules.files(), &origin(dir), out)?;
        }
    }
    writeln!(
        out,
        "\n{} passed, {} failed ({} cases, rules {})",
        results.len() - failed,
        failed,
        results.len(),
        rules.version
    )?;
    if failed > 0 {
        bail!("{failed} rule case(s) failed");
    }
    Ok(())
}

fn write_failure(
    r: &CaseResult,
    files: &BTreeMap<String, String>,
    origin: &str,
    out: &mut dyn Write,
) -> Result<()> {
    writeln!(out, "FAIL  {} / {}", r.script, r.case)?;
    if !r.input.is_null() {
        writeln!(out, "      input:")?;
        for line in serde_json::to_string_pretty(&r.input)?.lines() {
            writeln!(out, "        {line}")?;
        }
    }
    if r.diff.is_empty() {
        for f in &r.failures {
            writeln!(out, "      {f}")?;
        }
    } else {
        writeln!(out, "      expected (-) and actual (+) output:")?;
        for line in &r.diff {
            match line {
                DiffLine::Same(l) => writeln!(out, "        {l}")?,
                DiffLine::Expected(l) => writeln!(out, "      - {l}")?,
                DiffLine::Actual(l) => writeln!(out, "      + {l}")?,
            }
        }
    }
    if let Some(d) = r.error.as_ref().and_then(diagnostic::of_error) {
        for line in d
            .render(files.get(&d.file).map(String::as_str), origin)
            .lines()
        {
            writeln!(out, "      {line}")?;
        }
    }
    writeln!(out)?;
    Ok(())
}

/// The script a name means: a path under the rules folder, with or without `.rhai`, or a
/// script's name alone when only one script has it.
pub fn resolve(rules: &RuleSet, name: &str) -> Result<String> {
    let wanted = name.trim_start_matches("rules/").trim_end_matches(".rhai");
    let scripts: Vec<&String> = rules.script_names().collect();
    if let Some(s) = scripts
        .iter()
        .find(|s| s.trim_end_matches(".rhai") == wanted)
    {
        return Ok((*s).clone());
    }
    let by_name: Vec<&&String> = scripts
        .iter()
        .filter(|s| {
            s.trim_end_matches(".rhai")
                .rsplit('/')
                .next()
                .is_some_and(|n| n == wanted)
        })
        .collect();
    match by_name.as_slice() {
        [one] => Ok((**one).clone()),
        [] => bail!(
            "no rule `{name}`; the rules are: {}",
            scripts
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        many => bail!(
            "`{name}` could be {}: name one by its path",
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

/// The input of the rule's test case whose name contains `part` (one case only).
fn case_input(rules: &RuleSet, script: &str, part: &str) -> Result<serde_json::Value> {
    let path = script.trim_end_matches(".rhai").to_string() + ".cases.json";
    let Some(text) = rules.files().get(&path) else {
        bail!("{script} has no test cases ({path})");
    };
    let all: Vec<cases::Case> = serde_json::from_str(text)?;
    let found: Vec<&cases::Case> = all.iter().filter(|c| c.name.contains(part)).collect();
    match found.as_slice() {
        [one] => Ok(one.input.clone()),
        [] => bail!(
            "no case of {script} is named like `{part}`; its cases:\n  {}",
            all.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        ),
        many => bail!(
            "`{part}` names {} cases of {script}: {}",
            many.len(),
            many.iter()
                .map(|c| format!("`{}`", c.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `p2c rules run`: one rule on one input, with the trace of how it decided.
pub fn run(
    dir: &Option<PathBuf>,
    rule: &str,
    input: Option<&std::path::Path>,
    case: Option<&str>,
    out: &mut dyn Write,
) -> Result<()> {
    let rules = load(dir, out)?;
    let script = resolve(&rules, rule)?;
    let input: serde_json::Value = match (input, case) {
        (Some(p), None) => {
            let text = if p.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?
            };
            serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not JSON: {e} (line {}, column {})",
                    p.display(),
                    e.line(),
                    e.column()
                )
            })?
        }
        (None, Some(c)) => case_input(&rules, &script, c)?,
        _ => bail!("give the input as --input <file.json> (or - for stdin), or --case <name>"),
    };
    let trace = rules.trace(&script, &input)?;
    writeln!(out, "rule {script} (rules {})\n", rules.version)?;
    writeln!(out, "how it decided:")?;
    let width = trace
        .steps
        .iter()
        .map(|s| s.source.chars().count().min(60) + 2 * s.depth)
        .max()
        .unwrap_or(0);
    for s in &trace.steps {
        let code: String = s.source.chars().take(60).collect();
        let code = format!("{}{code}", "  ".repeat(s.depth));
        let mut notes: Vec<String> = Vec::new();
        if let Some(c) = s.condition {
            let answer = if c { "yes" } else { "no" };
            notes.push(match &s.because {
                Some(b) => format!("{answer} ({b})"),
                None => answer.to_string(),
            });
        }
        for (name, value) in &s.set {
            notes.push(format!("{name} = {}", trace::shown(value, 80)));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("  → {}", notes.join(", "))
        };
        writeln!(out, "  {:>4} | {code:<width$}{notes}", s.line)?;
    }
    writeln!(out)?;
    match trace.result {
        Ok(v) => {
            writeln!(out, "output:")?;
            for line in serde_json::to_string_pretty(&v)?.lines() {
                writeln!(out, "  {line}")?;
            }
            Ok(())
        }
        Err(p2c_core::error::RuleError::Rejected { code, message, .. }) => {
            writeln!(out, "rejected: {code}: {message}")?;
            Ok(())
        }
        Err(e) => {
            if let Some(d) = diagnostic::of_error(&e) {
                write!(
                    out,
                    "{}",
                    d.render(rules.files().get(&d.file).map(String::as_str), &origin(dir))
                )?;
            }
            bail!("{e}")
        }
    }
}

/// `p2c rules defs`: writes the language server's definition files.
pub fn defs(dir: &Option<PathBuf>, to: Option<PathBuf>, out: &mut dyn Write) -> Result<()> {
    let rules = load(dir, out)?;
    let to = to.unwrap_or_else(|| {
        dir.clone()
            .unwrap_or_else(|| PathBuf::from("rules"))
            .join(".defs")
    });
    std::fs::create_dir_all(&to)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", to.display()))?;
    for (name, text) in rules.definitions() {
        let path = to.join(&name);
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(())
}

fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// `p2c rules publish`: only a rule set that checks clean and passes every case is stored
/// and made active.
pub async fn publish(
    dir: &Option<PathBuf>,
    store: &dyn RuleStore,
    out: &mut dyn Write,
) -> Result<()> {
    // Loading compiles the set once; if it does not load, every finding is shown.
    let rules = load(dir, out).context("not published")?;
    let failed: Vec<CaseResult> = cases::run_all(&rules)
        .into_iter()
        .filter(|r| !r.passed())
        .collect();
    if !failed.is_empty() {
        for r in &failed {
            write_failure(r, rules.files(), &origin(dir), out)?;
        }
        bail!("not published: {} rule case(s) fail", failed.len());
    }
    let a = live::activate(store, rules.files(), "publish", &operator()).await?;
    writeln!(
        out,
        "published rules {} (activation {}); running services pick it up within their check interval",
        a.version, a.seq
    )?;
    Ok(())
}

/// `p2c rules rollback`: an earlier stored version made active again.
pub async fn rollback(store: &dyn RuleStore, to: Option<&str>, out: &mut dyn Write) -> Result<()> {
    let history = store.activations(1000).await?;
    let Some(current) = history.first() else {
        bail!("nothing is published yet: there is nothing to roll back");
    };
    let target = match to {
        Some(v) => v.to_string(),
        None => match history.iter().find(|a| a.version != current.version) {
            Some(a) => a.version.clone(),
            None => bail!(
                "{} is the only version ever published: there is nothing earlier to return to \
                 (the rules a service was started with are not stored until they are published)",
                current.version
            ),
        },
    };
    if target == current.version {
        bail!("{target} is already active");
    }
    let Some(files) = store.get_rules(&target).await? else {
        bail!("no stored rule set {target}; `p2c rules versions` lists them");
    };
    let a = live::activate(store, &files, "rollback", &operator()).await?;
    writeln!(
        out,
        "rolled back from {} to {} (activation {})",
        current.version, a.version, a.seq
    )?;
    Ok(())
}

/// `p2c rules versions`: the activations, newest first.
pub async fn versions(store: &dyn RuleStore, out: &mut dyn Write) -> Result<()> {
    let history = store.activations(100).await?;
    if history.is_empty() {
        writeln!(
            out,
            "nothing published yet: services run the rules they were started with"
        )?;
        return Ok(());
    }
    for (i, a) in history.iter().enumerate() {
        writeln!(
            out,
            "{:>4}  {}  {:<8}  {}  by {}{}",
            a.seq,
            a.at.format("%Y-%m-%d %H:%M:%S UTC"),
            a.action,
            a.version,
            a.by,
            if i == 0 { "  (active)" } else { "" }
        )?;
    }
    Ok(())
}

/// Decisions from a folder: each `.json` file holds one `{"rule", "input"}` (optionally
/// `"subject"`; a decision as the store keeps it has these too) or a list of them.
fn decisions_in(folder: &std::path::Path) -> Result<Vec<Decision>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p)?;
        let doc: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", p.display()))?;
        let items = match doc {
            serde_json::Value::Array(a) => a,
            one => vec![one],
        };
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        for (i, item) in items.into_iter().enumerate() {
            let (Some(rule), Some(input)) =
                (item.get("rule").and_then(|r| r.as_str()), item.get("input"))
            else {
                bail!("{name}[{i}] needs \"rule\" and \"input\"");
            };
            out.push(Decision {
                id: format!("{name}#{i}"),
                at: chrono::Utc::now(),
                rule: rule.to_string(),
                subject: item
                    .get("subject")
                    .and_then(|s| s.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{name}#{i}")),
                input: input.clone(),
                output: item.get("output").cloned().unwrap_or_default(),
                rules_version: String::new(),
            });
        }
    }
    Ok(out)
}

/// `p2c rules diff`: the current rules (the active published version, else the folder)
/// and a candidate, over recorded decisions; every changed outcome, then a summary.
pub async fn diff<S: RuleStore + DecisionLog>(
    dir: &Option<PathBuf>,
    store: &S,
    candidate: &std::path::Path,
    days: u32,
    inputs: Option<&std::path::Path>,
    out: &mut dyn Write,
) -> Result<()> {
    let current = match store.activations(1).await?.into_iter().next() {
        Some(a) => match store.get_rules(&a.version).await? {
            Some(files) => RuleSet::from_files(files)?,
            None => bail!("the active rule set {} is not stored", a.version),
        },
        None => load(dir, out)?,
    };
    let candidate_dir = Some(candidate.to_path_buf());
    let candidate = load(&candidate_dir, out)?;
    let (decisions, from) = match inputs {
        Some(folder) => (
            decisions_in(folder)?,
            format!("the inputs in {}", folder.display()),
        ),
        None => (
            store
                .decisions(chrono::Utc::now() - chrono::Duration::days(i64::from(days)))
                .await?,
            format!("the decisions of the last {days} day(s)"),
        ),
    };
    let report = p2c_core::rules::diff::diff(&current, &candidate, &decisions);
    writeln!(
        out,
        "{} decisions compared ({from}): rules {} against candidate {}\n",
        report.compared, current.version, candidate.version
    )?;
    if report.changes.is_empty() {
        writeln!(out, "no outcome would change")?;
        return Ok(());
    }
    let width = report
        .changes
        .iter()
        .map(|c| c.decision.subject.chars().count())
        .max()
        .unwrap_or(0);
    for c in &report.changes {
        let amount = c
            .amount
            .as_ref()
            .map(|(a, cur)| format!("  {} {cur}", p2c_core::money::format_amount(*a)))
            .unwrap_or_default();
        writeln!(
            out,
            "  {:<width$}  {}  {} → {}{amount}",
            c.decision.subject, c.decision.rule, c.current, c.candidate
        )?;
    }
    writeln!(out, "\nsummary:")?;
    writeln!(out, "  | rule | now | candidate | decisions | total |")?;
    writeln!(out, "  |---|---|---|---|---|")?;
    for row in &report.summary {
        let totals: Vec<String> = row
            .totals
            .iter()
            .map(|(c, a)| format!("{} {c}", p2c_core::money::format_amount(*a)))
            .collect();
        writeln!(
            out,
            "  | {} | {} | {} | {} | {} |",
            row.rule,
            row.from,
            row.to,
            row.count,
            totals.join(" + ")
        )?;
    }
    writeln!(out)?;
    for row in &report.summary {
        writeln!(out, "{}", row.sentence())?;
    }
    Ok(())
}
