//! `p2c rules …`: the analysts' commands.

use anyhow::{bail, Result};
use p2c_core::rules::cases::{self, CaseResult, DiffLine};
use p2c_core::rules::diagnostic::{self, Severity};
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
    let rules = RuleSet::from_files(files)?;
    writeln!(
        out,
        "rules {}: {} scripts compile, the catalogue is consistent",
        rules.version,
        rules.script_names().count()
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
