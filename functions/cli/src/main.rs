//! `p2c`: the command line. Demo, serve, trace and rule tooling on the embedded store.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use p2c_core::rules::{cases, DirLoader, EmbeddedLoader, RuleLoader, RuleSet};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "p2c",
    version,
    about = "Prospect-to-cash sync between a CRM and an ERP"
)]
struct Cli {
    /// Rule directory (default: the rules built into the binary).
    #[arg(long, global = true, env = "P2C_RULES")]
    rules: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rule tooling for analysts.
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
}

#[derive(Subcommand)]
enum RulesAction {
    /// Compile every script and check the catalogue.
    Check,
    /// Run every rule's test cases.
    Test,
}

fn loader(dir: &Option<PathBuf>) -> Box<dyn RuleLoader> {
    match dir {
        Some(d) => Box::new(DirLoader(d.clone())),
        None => Box::new(EmbeddedLoader),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Rules { action } => {
            let loader = loader(&cli.rules);
            let rules = RuleSet::load(loader.as_ref())
                .with_context(|| format!("loading rules from {}", loader.origin()))?;
            match action {
                RulesAction::Check => {
                    println!(
                        "rules {} from {}: {} scripts compile",
                        rules.version,
                        loader.origin(),
                        rules.script_names().count()
                    );
                }
                RulesAction::Test => {
                    let results = cases::run_all(&rules);
                    let failed = results.iter().filter(|r| !r.passed()).count();
                    for r in &results {
                        if r.passed() {
                            println!("ok    {} / {}", r.script, r.case);
                        } else {
                            println!("FAIL  {} / {}", r.script, r.case);
                            println!("      input: {}", r.input);
                            for f in &r.failures {
                                println!("      {f}");
                            }
                        }
                    }
                    println!("{} passed, {} failed", results.len() - failed, failed);
                    if failed > 0 {
                        bail!("{failed} rule case(s) failed");
                    }
                }
            }
        }
    }
    Ok(())
}
