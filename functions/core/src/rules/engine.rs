//! The Rhai host: a sandboxed engine, compiled scripts, and the exact conversion of
//! JSON to and from script values.
//!
//! Rhai is built with `no_float` + `decimal`: every fractional literal in a script and
//! every fractional JSON number is a `rust_decimal::Decimal`, so money never becomes a
//! float on either side of the boundary.

use crate::error::RuleError;
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map as RMap, Position, Scope, AST};
use rust_decimal::Decimal;
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

/// Every script exposes its decision as `fn rule(input)`.
pub const ENTRY: &str = "rule";

/// Sandbox limits. Generous for real rules, fatal for runaway ones.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 200_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
        }
    }
}

/// Value maps: name → (source value → target value), from `rules/value_maps.toml`.
pub type ValueMaps = BTreeMap<String, BTreeMap<String, String>>;

/// Builds the sandboxed engine with the host API registered.
pub fn build_engine(limits: Limits, value_maps: Arc<ValueMaps>) -> Engine {
    build_engine_with(limits, Arc::new(host::PreparedMaps::new(&value_maps)))
}

/// [`build_engine`] with the value maps already prepared (shared with the fast path).
pub(crate) fn build_engine_with(limits: Limits, maps: Arc<host::PreparedMaps>) -> Engine {
    let mut engine = Engine::new_raw();
    {
        use rhai::packages::Package;
        engine.register_global_module(rhai::packages::StandardPackage::new().as_shared_module());
    }
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(false)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    // No dynamic code, no modules (refused when the script is compiled, wherever they
    // appear: an `import` in a nested block would otherwise be skipped silently), no
    // output to the host's stdout.
    engine.disable_symbol("eval");
    engine.disable_symbol("import");
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    register_host_api(&mut engine, maps);
    engine
}

fn rt_err(msg: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(msg.into()),
        Position::NONE,
    ))
}

fn structured(code: &str, message: String) -> Box<EvalAltResult> {
    let mut m = RMap::new();
    m.insert("code".into(), Dynamic::from(code.to_string()));
    m.insert("message".into(), Dynamic::from(message));
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from_map(m),
        Position::NONE,
    ))
}

/// The host functions, as plain Rust: the engine registers them and the fast path
/// ([`super::fast`]) calls the very same code, so the two cannot drift apart.
pub(crate) mod host {
    use rhai::{Dynamic, ImmutableString, INT};
    use rust_decimal::Decimal;
    use std::collections::BTreeMap;
    use std::str::FromStr;

    pub fn dec_of_str(s: &str) -> Result<Decimal, String> {
        Decimal::from_str(s.trim()).map_err(|_| format!("`{s}` is not a decimal number"))
    }
    pub fn money(d: Decimal) -> Decimal {
        d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
    }
    pub fn money_int(i: INT) -> Decimal {
        Decimal::from(i).round_dp(2)
    }
    pub fn fmt_money(d: Decimal) -> String {
        crate::money::format_amount(d)
    }

    fn parse_date(s: &str) -> Result<chrono::NaiveDate, String> {
        let d = s.get(..10).unwrap_or(s);
        chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD)"))
    }
    pub fn days_between(from: &str, to: &str) -> Result<INT, String> {
        Ok((parse_date(to)? - parse_date(from)?).num_days())
    }
    pub fn date_of(s: &str) -> Result<String, String> {
        Ok(parse_date(s)?.format("%Y-%m-%d").to_string())
    }
    pub fn period_of(date: &str, kind: &str) -> Result<String, String> {
        use chrono::Datelike;
        let d = parse_date(date)?;
        match kind {
            "month" => Ok(format!("{}-{:02}", d.year(), d.month())),
            "quarter" => Ok(format!("{}-Q{}", d.year(), (d.month() - 1) / 3 + 1)),
            "year" => Ok(format!("{}", d.year())),
            other => Err(format!("unknown period `{other}` (month, quarter, year)")),
        }
    }

    /// Value maps prepared once as shared strings, so a lookup allocates nothing.
    pub struct PreparedMaps(BTreeMap<String, BTreeMap<String, Dynamic>>);

    impl PreparedMaps {
        pub fn new(maps: &super::ValueMaps) -> Self {
            Self(
                maps.iter()
                    .map(|(name, m)| {
                        (
                            name.clone(),
                            m.iter()
                                .map(|(k, v)| {
                                    (k.clone(), Dynamic::from(ImmutableString::from(v.as_str())))
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            )
        }
        /// `Err` when there is no map of that name; `Ok(None)` when the key is not in it.
        pub fn lookup(&self, name: &str, key: &str) -> Result<Option<&Dynamic>, String> {
            let map = self
                .0
                .get(name)
                .ok_or_else(|| format!("no value map `{name}`"))?;
            Ok(map.get(key))
        }
        pub fn unmapped(name: &str, key: &str) -> String {
            format!("value map `{name}` has no entry for `{key}`")
        }
    }
}

/// Registers one host function with its parameters and documentation, which the Rhai
/// language server shows (`p2c rules defs`; recorded only with the `tools` feature).
fn reg<A: 'static, const N: usize, const X: bool, R, const F: bool, FUNC>(
    engine: &mut Engine,
    name: &str,
    params: &[&str],
    doc: &str,
    func: FUNC,
) where
    R: rhai::Variant + Clone,
    FUNC: rhai::RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
{
    let r = rhai::FuncRegistration::new(name);
    #[cfg(feature = "tools")]
    let r = r.with_params_info(params).with_comments([doc
        .lines()
        .map(|l| format!("/// {l}").trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")]);
    #[cfg(not(feature = "tools"))]
    let _ = (params, doc);
    r.register_into_engine(engine, func);
}

fn register_host_api(engine: &mut Engine, prepared: Arc<host::PreparedMaps>) {
    // Decimal money.
    const DEC: &str = "An exact decimal number (money is never a float).\n\n```rhai\nlet price = dec(\"12.50\");\n```\nA missing value (`()`) is zero.";
    reg(
        engine,
        "dec",
        &["text: String", "Decimal"],
        DEC,
        |s: ImmutableString| -> Result<Decimal, Box<EvalAltResult>> {
            host::dec_of_str(&s).map_err(rt_err)
        },
    );
    reg(
        engine,
        "dec",
        &["number: int", "Decimal"],
        DEC,
        |i: rhai::INT| Decimal::from(i),
    );
    reg(
        engine,
        "dec",
        &["number: Decimal", "Decimal"],
        DEC,
        |d: Decimal| d,
    );
    reg(engine, "dec", &["missing: ()", "Decimal"], DEC, |_: ()| {
        Decimal::ZERO
    });
    const MONEY: &str = "Rounds to cents, halves away from zero: `money(dec(\"2.345\"))` is 2.35.";
    reg(
        engine,
        "money",
        &["amount: Decimal", "Decimal"],
        MONEY,
        host::money,
    );
    reg(
        engine,
        "money",
        &["amount: int", "Decimal"],
        MONEY,
        host::money_int,
    );
    const MAX: &str = "The larger of two amounts.";
    const MIN: &str = "The smaller of two amounts.";
    reg(
        engine,
        "max",
        &["a: Decimal", "b: Decimal", "Decimal"],
        MAX,
        |a: Decimal, b: Decimal| a.max(b),
    );
    reg(
        engine,
        "min",
        &["a: Decimal", "b: Decimal", "Decimal"],
        MIN,
        |a: Decimal, b: Decimal| a.min(b),
    );
    reg(
        engine,
        "max",
        &["a: Decimal", "b: int", "Decimal"],
        MAX,
        |a: Decimal, b: rhai::INT| a.max(Decimal::from(b)),
    );
    reg(
        engine,
        "min",
        &["a: Decimal", "b: int", "Decimal"],
        MIN,
        |a: Decimal, b: rhai::INT| a.min(Decimal::from(b)),
    );
    const FMT: &str = "An amount for people to read, with thousands separators and cents: `fmt_money(dec(\"1200.5\"))` is \"1,200.50\".";
    reg(
        engine,
        "fmt_money",
        &["amount: Decimal", "String"],
        FMT,
        host::fmt_money,
    );
    reg(
        engine,
        "fmt_money",
        &["amount: int", "String"],
        FMT,
        |i: rhai::INT| host::fmt_money(Decimal::from(i)),
    );

    // Value maps.
    fn key_text(key: &Dynamic) -> String {
        match key.read_lock::<ImmutableString>() {
            Some(s) => s.to_string(),
            None => key.to_string(),
        }
    }
    let vm = prepared.clone();
    reg(
        engine,
        "value_map",
        &["map: String", "key: ?", "?"],
        "Looks `key` up in the map `map` of `rules/value_maps.toml`.\nA key the map lacks rejects the record with `unmapped_value`, naming map and key.\n\n```rhai\nlet terms = value_map(\"payment_terms\", a.paymenttermscode);\n```",
        move |name: ImmutableString, key: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
            let k = key_text(&key);
            match vm.lookup(&name, &k).map_err(rt_err)? {
                Some(v) => Ok(v.clone()),
                None => Err(structured(
                    "unmapped_value",
                    host::PreparedMaps::unmapped(&name, &k),
                )),
            }
        },
    );
    let vm = prepared;
    reg(
        engine,
        "value_map",
        &["map: String", "key: ?", "default: ?", "?"],
        "Looks `key` up in the map `map` of `rules/value_maps.toml`; `default` when the map lacks it.",
        move |name: ImmutableString,
              key: Dynamic,
              default: Dynamic|
              -> Result<Dynamic, Box<EvalAltResult>> {
            Ok(vm
                .lookup(&name, &key_text(&key))
                .map_err(rt_err)?
                .cloned()
                .unwrap_or(default))
        },
    );

    // Dates (ISO-8601 strings in, plain values out).
    reg(
        engine,
        "days_between",
        &["from: String", "to: String", "int"],
        "Whole days from one date to another (`YYYY-MM-DD`, a time after it is ignored); negative when `to` is earlier.",
        |from: ImmutableString, to: ImmutableString| -> Result<rhai::INT, Box<EvalAltResult>> {
            host::days_between(&from, &to).map_err(rt_err)
        },
    );
    reg(
        engine,
        "date_of",
        &["timestamp: String", "String"],
        "The date (`YYYY-MM-DD`) of a date or timestamp: `date_of(\"2026-06-30T12:00:00Z\")` is \"2026-06-30\".",
        |s: ImmutableString| -> Result<String, Box<EvalAltResult>> {
            host::date_of(&s).map_err(rt_err)
        },
    );
    reg(
        engine,
        "period_of",
        &["date: String", "kind: String", "String"],
        "The period a date falls in: kind \"month\" (\"2026-06\"), \"quarter\" (\"2026-Q2\") or \"year\" (\"2026\").",
        |date: ImmutableString, kind: ImmutableString| -> Result<String, Box<EvalAltResult>> {
            host::period_of(&date, &kind).map_err(rt_err)
        },
    );

    // Small conveniences for optional data.
    reg(
        engine,
        "is_blank",
        &["value: ?", "bool"],
        "True for a missing value (`()`) and for text that is empty or only spaces.",
        |v: Dynamic| {
            v.is_unit()
                || v.clone()
                    .into_immutable_string()
                    .map(|s| s.trim().is_empty())
                    .unwrap_or(false)
        },
    );
    reg(
        engine,
        "or_else",
        &["value: ?", "default: ?", "?"],
        "`value`, or `default` when it is missing (`()`).",
        |v: Dynamic, default: Dynamic| if v.is_unit() { default } else { v },
    );
}

/// A compiled script with its name (its path under `rules/`).
#[derive(Clone)]
pub struct Script {
    pub name: String,
    pub ast: Arc<AST>,
    /// The same rule compiled for the fast path, when it is covered (see [`super::fast`]).
    pub fast: Option<Arc<super::fast::FastRule>>,
}

/// Compiles a script, checking it defines `fn rule(input)`.
pub fn compile(engine: &Engine, name: &str, source: &str) -> Result<Script, RuleError> {
    let mut ast = engine.compile(source).map_err(|e| {
        let p = e.position();
        RuleError::Compile {
            rule: name.to_string(),
            line: p.line().unwrap_or(0),
            column: p.position().unwrap_or(0),
            message: e.err_type().to_string(),
        }
    })?;
    if !ast
        .iter_functions()
        .any(|f| f.name == ENTRY && f.params.len() == 1)
    {
        return Err(RuleError::Compile {
            rule: name.to_string(),
            line: 1,
            column: 1,
            message: format!("the script must define `fn {ENTRY}(input)`"),
        });
    }
    ast.set_source(name);
    Ok(Script {
        name: name.to_string(),
        ast: Arc::new(ast),
        fast: None,
    })
}

/// Runs `fn rule(input)`.
pub fn run(engine: &Engine, script: &Script, input: Dynamic) -> Result<Dynamic, RuleError> {
    let mut scope = Scope::new();
    // Scripts are functions only: skip re-running top-level statements on every call.
    let options = rhai::CallFnOptions::new()
        .eval_ast(false)
        .rewind_scope(true);
    engine
        .call_fn_with_options::<Dynamic>(options, &mut scope, &script.ast, ENTRY, (input,))
        .map_err(|e| to_rule_error(&script.name, *e))
}

/// The innermost error and the deepest place known for it (calls wrap the real fault; a
/// fault without a position of its own, such as calls nested too deeply, is placed at the
/// innermost call that has one).
fn innermost(e: EvalAltResult, at: Position) -> (EvalAltResult, Position) {
    match e {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, pos) => {
            innermost(*inner, if pos.is_none() { at } else { pos })
        }
        other => {
            let own = other.position();
            (other, if own.is_none() { at } else { own })
        }
    }
}

fn to_rule_error(rule: &str, e: EvalAltResult) -> RuleError {
    let (e, p) = innermost(e, Position::NONE);
    let (line, column) = (p.line().unwrap_or(0), p.position().unwrap_or(0));
    if let EvalAltResult::ErrorRuntime(value, _) = &e {
        if let Some(m) = value.read_lock::<RMap>() {
            let code = m.get("code").map(|c| c.to_string());
            if let Some(code) = code {
                let message = m.get("message").map(|x| x.to_string()).unwrap_or_default();
                return RuleError::Rejected {
                    rule: rule.to_string(),
                    code,
                    message,
                };
            }
        }
    }
    let message = match &e {
        EvalAltResult::ErrorTooManyOperations(_) => {
            "stopped: too many operations (an endless loop?)".to_string()
        }
        EvalAltResult::ErrorStackOverflow(_) => "stopped: calls nested too deeply".to_string(),
        EvalAltResult::ErrorDataTooLarge(what, _) => format!("stopped: {what} too large"),
        EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
        other => other
            .to_string()
            .split(" (line ")
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    RuleError::Runtime {
        rule: rule.to_string(),
        line,
        column,
        message,
    }
}

// ---------------------------------------------------------------- JSON <-> Dynamic

/// JSON to a script value: integers stay integers, fractions become exact decimals.
pub fn to_dynamic(v: &Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => number_to_dynamic(n),
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(a) => Dynamic::from_array(a.iter().map(to_dynamic).collect()),
        Value::Object(o) => Dynamic::from_map(object_to_map(o)),
    }
}

/// A JSON object to a script map.
pub fn object_to_map(o: &Map<String, Value>) -> RMap {
    o.iter()
        .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
        .collect()
}

/// How a JSON number enters a script: an integer if it is one, else an exact decimal,
/// else (beyond what a decimal holds) its text.
pub(crate) enum Num {
    Int(rhai::INT),
    Dec(Decimal),
    Text(String),
}

pub(crate) fn classify_number(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        return Num::Int(i);
    }
    let text = n.as_str();
    match Decimal::from_str(text).or_else(|_| Decimal::from_scientific(text)) {
        Ok(d) => Num::Dec(d),
        Err(_) => Num::Text(text.to_string()),
    }
}

fn number_to_dynamic(n: &Number) -> Dynamic {
    match classify_number(n) {
        Num::Int(i) => Dynamic::from_int(i),
        Num::Dec(d) => Dynamic::from_decimal(d),
        Num::Text(t) => Dynamic::from(t),
    }
}

/// A script value to JSON; decimals become exact JSON numbers.
pub fn from_dynamic(d: &Dynamic) -> Value {
    if d.is_unit() {
        return Value::Null;
    }
    if let Ok(b) = d.as_bool() {
        return Value::Bool(b);
    }
    if let Ok(i) = d.as_int() {
        return Value::Number(i.into());
    }
    if let Ok(x) = d.as_decimal() {
        return crate::json::decimal_number(x);
    }
    if d.is_string() {
        return Value::String(d.clone().into_string().unwrap_or_default());
    }
    if d.is_char() {
        return Value::String(d.to_string());
    }
    if let Some(a) = d.read_lock::<rhai::Array>() {
        return Value::Array(a.iter().map(from_dynamic).collect());
    }
    if let Some(m) = d.read_lock::<RMap>() {
        return Value::Object(
            m.iter()
                .map(|(k, v)| (k.to_string(), from_dynamic(v)))
                .collect(),
        );
    }
    Value::String(d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut maps = ValueMaps::new();
        maps.insert(
            "payment_terms".into(),
            [("1".to_string(), "NET30".to_string())]
                .into_iter()
                .collect(),
        );
        build_engine(Limits::default(), Arc::new(maps))
    }

    #[test]
    fn decimals_cross_the_boundary_exactly() {
        let e = engine();
        let s = compile(
            &e,
            "t.rhai",
            "fn rule(input) { #{ total: input.a * 3 + 0.01, q: input.q + 1 } }",
        )
        .expect("compiles");
        let input: Value = serde_json::from_str(r#"{"a": 0.1, "q": 2}"#).expect("json");
        let out = from_dynamic(&run(&e, &s, to_dynamic(&input)).expect("runs"));
        assert_eq!(out["total"].to_string(), "0.31");
        assert_eq!(out["q"], serde_json::json!(3));
    }

    #[test]
    fn decimal_compares_with_integers() {
        let e = engine();
        let s = compile(
            &e,
            "t.rhai",
            "fn rule(input) { input.a <= 100 && input.a > 99 }",
        )
        .expect("compiles");
        let input: Value = serde_json::from_str(r#"{"a": 99.99}"#).expect("json");
        assert!(run(&e, &s, to_dynamic(&input))
            .expect("runs")
            .as_bool()
            .expect("bool"));
    }

    #[test]
    fn thrown_maps_are_business_rejections() {
        let e = engine();
        let s = compile(
            &e,
            "r.rhai",
            "fn rule(input) {\n  throw #{ code: \"no_terms\", message: \"missing\" };\n}",
        )
        .expect("compiles");
        let err = run(&e, &s, Dynamic::UNIT).expect_err("throws");
        assert_eq!(
            err,
            RuleError::Rejected {
                rule: "r.rhai".into(),
                code: "no_terms".into(),
                message: "missing".into()
            }
        );
    }

    #[test]
    fn runtime_faults_carry_line_and_column() {
        let e = engine();
        let s = compile(
            &e,
            "f.rhai",
            "fn rule(input) {\n  let x = 1;\n  x + \"a\" * 2\n}",
        )
        .expect("compiles");
        match run(&e, &s, Dynamic::UNIT).expect_err("fails") {
            RuleError::Runtime {
                rule, line, column, ..
            } => {
                assert_eq!(rule, "f.rhai");
                assert_eq!(line, 3);
                assert!(column > 0);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn compile_errors_carry_position_and_undefined_variables_are_errors() {
        let e = engine();
        match compile(
            &e,
            "c.rhai",
            "fn rule(input) {\n  let y = nope + 1;\n  y\n}",
        ) {
            Err(RuleError::Compile { line, .. }) => assert_eq!(line, 2),
            other => panic!("unexpected {:?}", other.map(|s| s.name)),
        }
        assert!(matches!(
            compile(&e, "d.rhai", "let x = 1;"),
            Err(RuleError::Compile { .. })
        ));
    }

    #[test]
    fn endless_loops_and_imports_are_stopped() {
        let e = engine();
        let s = compile(&e, "loop.rhai", "fn rule(input) { loop { } }").expect("compiles");
        assert!(matches!(
            run(&e, &s, Dynamic::UNIT),
            Err(RuleError::Runtime { .. })
        ));
        // Imports and eval are refused when the rule is compiled, wherever they appear.
        for src in [
            "fn rule(input) { import \"os\" as os; 1 }",
            "fn rule(input) { if input == () { import \"os\" as os; } 1 }",
            "fn rule(input) { if input == () { eval(\"1\"); } 1 }",
        ] {
            assert!(
                matches!(compile(&e, "imp.rhai", src), Err(RuleError::Compile { .. })),
                "{src}"
            );
        }
        let s = compile(
            &e,
            "rec.rhai",
            "fn f(n) { f(n + 1) } fn rule(input) { f(0) }",
        )
        .expect("compiles");
        match run(&e, &s, Dynamic::UNIT) {
            Err(RuleError::Runtime {
                line,
                column,
                message,
                ..
            }) => {
                // Rhai gives this fault no position; nothing is invented.
                assert_eq!((line, column), (0, 0), "{message}");
                assert!(message.contains("nested too deeply"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn value_maps_resolve_or_reject() {
        let e = engine();
        let s = compile(
            &e,
            "v.rhai",
            "fn rule(input) { value_map(\"payment_terms\", input) }",
        )
        .expect("compiles");
        assert_eq!(
            run(&e, &s, Dynamic::from_int(1)).expect("maps").to_string(),
            "NET30"
        );
        assert!(matches!(
            run(&e, &s, Dynamic::from_int(9)),
            Err(RuleError::Rejected { code, .. }) if code == "unmapped_value"
        ));
    }
}
