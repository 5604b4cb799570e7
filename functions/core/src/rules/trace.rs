//! A rule run once with a trace of its decision: each statement it executed, in order,
//! with the values its variables took and, at each `if`, which way it went
//! (`p2c rules run`).
//!
//! The trace comes from Rhai's debugger interface on an engine of its own (the same host
//! functions, value maps and limits as the rule set's; the engines that serve events have
//! no debugger registered). A condition is shown by evaluating it again at its `if`, so
//! it is shown as the rule saw it.

use super::{engine, RuleSet};
use crate::error::RuleError;
use rhai::debugger::{DebuggerCommand, DebuggerEvent};
use rhai::{ASTNode, Dynamic, Stmt};
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// One statement the rule executed.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub line: usize,
    pub column: usize,
    /// How deep in helper functions (0: in `fn rule`, 1: in a function it called, …).
    pub depth: usize,
    /// The source line, trimmed.
    pub source: String,
    /// At an `if` (or `while`): the condition's value.
    pub condition: Option<bool>,
    /// At an `if` comparing two values: the comparison with the values in (`0 > 60`).
    pub because: Option<String>,
    /// Variables this statement set or changed, with their new values (JSON).
    pub set: Vec<(String, Value)>,
}

/// What one traced run found.
#[derive(Debug)]
pub struct Trace {
    pub steps: Vec<Step>,
    pub result: Result<Value, RuleError>,
}

/// Most steps recorded (a rule looping long is cut off, not buffered without end).
const MAX_STEPS: usize = 10_000;

/// Variables in scope, by name.
type Vars = Vec<(String, Value)>;

struct Recorder {
    steps: Vec<Step>,
    /// Per call depth: the last step recorded there and the variables as they were before
    /// it ran, to tell what it changed. Deeper frames are dropped when a shallower one
    /// steps again (their call returned).
    frames: Vec<Option<(usize, Vars)>>,
    /// Re-entrancy: evaluating a condition runs the debugger for its own nodes.
    evaluating: bool,
    /// The call level `fn rule` runs at.
    base_level: Option<usize>,
}

/// What the AST says about the script, for the debugger's events.
#[derive(Default)]
struct Shape {
    /// Positions of expressions that are statements of their own (`lines.push(…)`, the
    /// map a function returns): Rhai reports them as expressions.
    expr_statements: std::collections::HashSet<rhai::Position>,
    /// `for` loop variables → the loop's position: a change of one is a new iteration.
    loop_vars: Vec<(String, rhai::Position)>,
}

fn shape(ast: &rhai::AST) -> Shape {
    let mut out = Shape::default();
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Stmt(Stmt::Expr(e))) => {
                out.expr_statements.insert(e.position());
            }
            Some(ASTNode::Stmt(Stmt::For(f, pos))) => {
                out.loop_vars.push((f.0.name.to_string(), *pos));
                if let Some(counter) = &f.1 {
                    out.loop_vars.push((counter.name.to_string(), *pos));
                }
            }
            _ => {}
        }
        true
    });
    out
}

impl RuleSet {
    /// Runs `script` on `input` in Rhai's interpreter, recording each statement.
    pub fn trace(&self, script: &str, input: &Value) -> Result<Trace, RuleError> {
        let s = self.script(script)?;
        let source: Arc<Vec<String>> = Arc::new(
            self.files
                .get(script)
                .map(|t| t.lines().map(|l| l.trim().to_string()).collect())
                .unwrap_or_default(),
        );
        let line_of = move |pos: rhai::Position| {
            pos.line()
                .and_then(|l| source.get(l.checked_sub(1)?))
                .cloned()
                .unwrap_or_default()
        };
        let shape = shape(&s.ast);
        let prepared = Arc::new(engine::host::PreparedMaps::new(&self.value_maps));
        let mut eng = engine::build_engine_with(engine::Limits::default(), prepared);
        let rec = Arc::new(Mutex::new(Recorder {
            steps: Vec::new(),
            frames: Vec::new(),
            evaluating: false,
            base_level: None,
        }));
        let r = rec.clone();
        #[allow(deprecated)] // "volatile", not deprecated: Rhai's own marking.
        eng.register_debugger(
            |_, dbg| dbg,
            move |mut ctx, event, node, _src, pos| {
                let mut rec = r.lock().unwrap_or_else(|p| p.into_inner());
                let statement = match node {
                    ASTNode::Stmt(Stmt::Block(..) | Stmt::Noop(..)) => None,
                    ASTNode::Stmt(stmt) => Some(Some(stmt)),
                    ASTNode::Expr(e) if shape.expr_statements.contains(&e.position()) => Some(None),
                    _ => None,
                };
                let (Some(stmt), false, DebuggerEvent::Step, false) =
                    (statement, rec.evaluating, event, pos.is_none())
                else {
                    return Ok(DebuggerCommand::StepInto);
                };
                let level = ctx.call_level();
                let depth = level.saturating_sub(*rec.base_level.get_or_insert(level));
                let vars = scope_values(ctx.scope());
                settle(&mut rec, depth, &vars, &shape.loop_vars, &line_of);
                if rec.steps.len() >= MAX_STEPS {
                    return Ok(DebuggerCommand::StepInto);
                }
                let (condition, because) = match stmt {
                    Some(Stmt::If(flow, _) | Stmt::While(flow, _)) => {
                        rec.evaluating = true;
                        drop(rec);
                        let v = ctx.eval_expression_tree(&(&flow.expr).into());
                        let because = comparison(&mut ctx, &flow.expr);
                        rec = r.lock().unwrap_or_else(|p| p.into_inner());
                        rec.evaluating = false;
                        (v.ok().and_then(|v| v.as_bool().ok()), because)
                    }
                    _ => (None, None),
                };
                rec.steps.push(Step {
                    line: pos.line().unwrap_or(0),
                    column: pos.position().unwrap_or(0),
                    depth,
                    source: line_of(pos),
                    condition,
                    because,
                    set: Vec::new(),
                });
                let at = rec.steps.len() - 1;
                rec.frames[depth] = Some((at, vars));
                Ok(DebuggerCommand::StepInto)
            },
        );
        let result =
            engine::run(&eng, s, engine::to_dynamic(input)).map(|d| engine::from_dynamic(&d));
        let mut rec = rec.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Trace {
            steps: std::mem::take(&mut rec.steps),
            result,
        })
    }
}

/// Attributes what changed since the last step at `depth` to that step; a loop variable's
/// change is a new iteration, shown as its `for` line again.
fn settle(
    rec: &mut Recorder,
    depth: usize,
    now: &[(String, Value)],
    loop_vars: &[(String, rhai::Position)],
    line_of: &dyn Fn(rhai::Position) -> String,
) {
    if rec.frames.len() <= depth {
        rec.frames.resize(depth + 1, None);
    }
    // Deeper calls have returned.
    rec.frames.truncate(depth + 1);
    let Some((last, before)) = rec.frames[depth].take() else {
        return;
    };
    let mut iteration: Option<Step> = None;
    for (name, value) in now {
        let changed = before
            .iter()
            .find(|(n, _)| n == name)
            .is_none_or(|(_, v)| v != value);
        if !changed {
            continue;
        }
        let existed = before.iter().any(|(n, _)| n == name);
        match loop_vars.iter().find(|(n, _)| n == name) {
            Some((_, pos)) if existed => {
                iteration
                    .get_or_insert_with(|| Step {
                        line: pos.line().unwrap_or(0),
                        column: pos.position().unwrap_or(0),
                        depth,
                        source: line_of(*pos),
                        condition: None,
                        because: None,
                        set: Vec::new(),
                    })
                    .set
                    .push((name.clone(), value.clone()));
            }
            _ => {
                let step = &mut rec.steps[last];
                if !step.set.iter().any(|(n, _)| n == name) {
                    step.set.push((name.clone(), value.clone()));
                }
            }
        }
    }
    if let Some(step) = iteration {
        if rec.steps.len() < MAX_STEPS {
            rec.steps.push(step);
        }
    }
}

/// `a > b` with both sides' values, when the condition is one comparison of two values
/// that are not both literals (`!x`, calls and `&&` chains are shown by their outcome only).
fn comparison(ctx: &mut rhai::EvalContext, expr: &rhai::Expr) -> Option<String> {
    let rhai::Expr::FnCall(call, _) = expr else {
        return None;
    };
    let op = call.op_token.as_ref()?.literal_syntax();
    if call.args.len() != 2
        || !matches!(op, "==" | "!=" | ">" | ">=" | "<" | "<=")
        || call.args.iter().all(|a| a.is_constant())
    {
        return None;
    }
    let mut side = |e: &rhai::Expr| -> Option<String> {
        let v = ctx.eval_expression_tree(&e.into()).ok()?;
        Some(shown(&engine::from_dynamic(&v), 40))
    };
    Some(format!(
        "{} {op} {}",
        side(&call.args[0])?,
        side(&call.args[1])?
    ))
}

/// A value as JSON, cut to `max` characters.
pub fn shown(v: &Value, max: usize) -> String {
    let t = v.to_string();
    if t.chars().count() > max {
        t.chars().take(max.saturating_sub(3)).collect::<String>() + "..."
    } else {
        t
    }
}

/// The variables in scope (the latest of each name), `input` left out.
fn scope_values(scope: &rhai::Scope) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for (name, _, value) in scope.iter_raw() {
        if name == "input" {
            continue;
        }
        let v = engine::from_dynamic(&value_of(value));
        match out.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v,
            None => out.push((name.to_string(), v)),
        }
    }
    out
}

fn value_of(d: &Dynamic) -> Dynamic {
    d.clone().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::EmbeddedLoader;
    use serde_json::json;

    fn rules() -> RuleSet {
        RuleSet::load(&EmbeddedLoader).expect("rules")
    }

    fn customer(limit: i64, balance: &str) -> Value {
        json!({"number": "ACC-1", "financials_known": true, "credit_limit": limit,
               "balance": balance.parse::<serde_json::Number>().unwrap(), "open_orders": 0,
               "overdue_amount": 0, "days_overdue": 0, "on_hold": false})
    }

    #[test]
    fn a_trace_shows_the_branches_taken_and_the_values_set_and_agrees_with_the_rule() {
        let r = rules();
        let input = json!({"order": {"number": "ORD-2", "total": 48799.51, "currency": "USD"},
                           "customer": customer(50000, "1200.50")});
        let t = r.trace("credit_limit.rhai", &input).expect("traced");
        let out = t.result.as_ref().expect("decides");
        assert_eq!(
            out,
            &r.eval("credit_limit.rhai", &input).expect("eval"),
            "same answer as the rule"
        );
        assert_eq!(out["decision"], "hold");
        let source = r.files()["credit_limit.rhai"].clone();
        for s in &t.steps {
            assert_eq!(
                source.lines().nth(s.line - 1).map(str::trim),
                Some(s.source.as_str())
            );
        }
        // Every `if` it passed is shown with its outcome, and at least one was taken.
        let ifs: Vec<&Step> = t
            .steps
            .iter()
            .filter(|s| s.source.starts_with("if "))
            .collect();
        assert!(!ifs.is_empty(), "{:#?}", t.steps);
        assert!(ifs.iter().all(|s| s.condition.is_some()), "{ifs:#?}");
        // A comparison shows the values compared.
        let over = ifs
            .iter()
            .find(|s| s.source.starts_with("if exposure > "))
            .expect("the limit check");
        assert_eq!(
            (over.condition, over.because.as_deref()),
            (Some(true), Some("50000.01 > 50000"))
        );
        assert!(ifs.iter().any(|s| s.condition == Some(true)), "{ifs:#?}");
        // Values the rule computed are shown where they were set.
        let set: Vec<&(String, Value)> = t.steps.iter().flat_map(|s| &s.set).collect();
        assert!(!set.is_empty(), "{:#?}", t.steps);
        // Within the limit, a different branch is taken.
        let within = json!({"order": {"number": "ORD-1", "total": 10, "currency": "USD"},
                            "customer": customer(50000, "0")});
        let t2 = r.trace("credit_limit.rhai", &within).expect("traced");
        assert_eq!(t2.result.expect("decides")["decision"], "release");
        let outcomes = |t: &[Step]| {
            t.iter()
                .filter_map(|s| s.condition.map(|c| (s.line, c)))
                .collect::<Vec<_>>()
        };
        assert_ne!(outcomes(&t.steps), outcomes(&t2.steps));
    }

    #[test]
    fn a_rejection_and_a_fault_are_results_of_the_trace() {
        let r = rules();
        let t = r
            .trace(
                "mapping/account_to_customer.rhai",
                &json!({"system": "dataverse", "record": {"name": "No Number"}}),
            )
            .expect("traced");
        assert!(
            matches!(t.result, Err(RuleError::Rejected { ref code, .. }) if code == "missing_account_number"),
            "{:?}",
            t.result
        );
        assert_eq!(
            t.steps.last().map(|s| s.source.starts_with("throw")),
            Some(true),
            "{:#?}",
            t.steps
        );
        assert!(matches!(
            r.trace("nope.rhai", &json!({})),
            Err(RuleError::Missing { .. })
        ));
    }

    #[test]
    fn helpers_are_indented_and_each_loop_iteration_is_shown() {
        let r = rules();
        let case: Value = serde_json::from_str(&r.files()["mapping/quote_to_quotation.cases.json"])
            .expect("cases");
        let input = &case[0]["input"];
        let lines = input["record"]["quote_details"]
            .as_array()
            .expect("lines")
            .len();
        assert!(lines >= 2);
        let t = r
            .trace("mapping/quote_to_quotation.rhai", input)
            .expect("traced");
        assert_eq!(
            t.result.as_ref().expect("maps"),
            &r.eval("mapping/quote_to_quotation.rhai", input)
                .expect("eval")
        );
        let helper: Vec<&Step> = t.steps.iter().filter(|s| s.depth == 1).collect();
        assert!(
            !helper.is_empty() && t.steps.iter().any(|s| s.depth == 0),
            "{:#?}",
            t.steps
        );
        let iterations = helper
            .iter()
            .filter(|s| s.source.starts_with("for "))
            .count();
        assert_eq!(iterations, lines, "{:#?}", t.steps);
        let pushes = helper
            .iter()
            .filter(|s| s.source.starts_with("lines.push"))
            .count();
        assert_eq!(pushes, lines, "{:#?}", t.steps);
        // The rule's own variables are not reported as changed by the helper's return.
        let after: Vec<&String> = t
            .steps
            .iter()
            .filter(|s| s.depth == 0)
            .flat_map(|s| s.set.iter().map(|(n, _)| n))
            .collect();
        assert_eq!(after, vec!["q"], "{:#?}", t.steps);
    }

    #[test]
    fn the_definitions_document_every_host_function_with_its_parameters() {
        let defs = rules().definitions();
        let names: Vec<&str> = defs.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"__static__.d.rhai"), "{names:?}");
        let host = &defs
            .iter()
            .find(|(n, _)| n == "__static__.d.rhai")
            .expect("static")
            .1;
        assert!(host.starts_with("module static;"));
        for sig in [
            "fn dec(text: String) -> Decimal;",
            "fn money(amount: Decimal) -> Decimal;",
            "fn fmt_money(amount: Decimal) -> String;",
            "fn value_map(map: String, key: ?) -> ?;",
            "fn value_map(map: String, key: ?, default: ?) -> ?;",
            "fn days_between(from: String, to: String) -> int;",
            "fn date_of(timestamp: String) -> String;",
            "fn period_of(date: String, kind: String) -> String;",
            "fn is_blank(value: ?) -> bool;",
            "fn or_else(value: ?, default: ?) -> ?;",
        ] {
            let at = host
                .find(sig)
                .unwrap_or_else(|| panic!("{sig} is not defined"));
            // Each is documented: a doc comment right above it.
            let before = host[..at].trim_end();
            assert!(
                before.lines().last().is_some_and(|l| l.starts_with("///")),
                "{sig} has no documentation"
            );
        }
    }
}
