//! The fast path for straight-line rules.
//!
//! Most rules are a handful of `let`s, `if`s, property reads, comparisons and a map
//! literal. Rhai's tree walker spends most of such a call cloning the input's nested maps
//! (`let c = input.customer` copies the whole map) and resolving functions afresh on every
//! call. This module compiles the *same Rhai AST* of such a rule into a small tree that reads
//! the JSON input in place and writes the JSON output directly.
//!
//! It is an accelerator, never a second authority: [`FastRule::eval`] returns `None`
//! whenever anything is not exactly covered here (an error, a `throw`, an operator on
//! types it does not handle, a value over the sandbox's size limits), and the caller then
//! runs Rhai itself, whose answer — value or error, with line and column — is the one
//! that counts. Whenever it returns `Some`, the value is the one Rhai returns; tests run
//! every rule case and randomised inputs through both and compare.
//!
//! Covered: one `fn rule(input)` with no other functions and no top-level statements;
//! `let`, assignment and op-assignment to a variable, `if` / `else` (as statements and
//! expressions), `for x in array`, `return`, `throw` (falls back), literals, map and array
//! literals, property chains including `?.`, `??`, `&&`, `||`, `!`, unary `-`,
//! `+ - * / %` and comparisons on integers, decimals, strings, booleans and `()`,
//! `array.push(x)` on a variable, `x.is_empty()`, and the host functions `dec`, `money`,
//! `fmt_money`, `value_map`, `is_blank`, `or_else`, `date_of`, `days_between` and
//! `period_of`. Anything else (other methods, indexing, `break`, helper functions) leaves
//! the whole script to Rhai. Straight-line code runs each statement once; a loop that runs
//! more than an eighth of Rhai's operation limit in statements is handed to Rhai, so Rhai's
//! limit decides every long run.

use super::engine::{classify_number, host, Limits, Num};
use crate::json::decimal_number;
use rhai::{ASTFlags, ASTNode, Dynamic, Expr, FnCallExpr, Stmt, StmtBlock, Token, AST};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A rule compiled for the fast path.
pub struct FastRule {
    body: Vec<St>,
    slots: usize,
    limits: Limits,
    maps: Arc<host::PreparedMaps>,
}

impl std::fmt::Debug for FastRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastRule")
            .field("slots", &self.slots)
            .finish()
    }
}

// ---------------------------------------------------------------- values

/// A value during evaluation: JSON from the input is read in place (`JMap`, `JArr`,
/// borrowed strings); what the rule builds is owned.
#[derive(Clone, Debug)]
pub enum V<'a> {
    Unit,
    Bool(bool),
    Int(rhai::INT),
    Dec(Decimal),
    Str(Cow<'a, str>),
    JArr(&'a [Value]),
    JMap(&'a Map<String, Value>),
    Arr(Arc<Vec<V<'a>>>),
    Map(Arc<BTreeMap<Cow<'a, str>, V<'a>>>),
}

impl<'a> V<'a> {
    /// A JSON value as the script sees it (the same conversion as
    /// [`super::engine::to_dynamic`]).
    pub fn of_json(v: &'a Value) -> V<'a> {
        match v {
            Value::Null => V::Unit,
            Value::Bool(b) => V::Bool(*b),
            Value::Number(n) => match classify_number(n) {
                Num::Int(i) => V::Int(i),
                Num::Dec(d) => V::Dec(d),
                Num::Text(t) => V::Str(Cow::Owned(t)),
            },
            Value::String(s) => V::Str(Cow::Borrowed(s)),
            Value::Array(a) => V::JArr(a),
            Value::Object(o) => V::JMap(o),
        }
    }

    /// An input map of named top-level fields.
    pub fn fields(fields: impl IntoIterator<Item = (&'a str, V<'a>)>) -> V<'a> {
        V::Map(Arc::new(
            fields
                .into_iter()
                .map(|(k, v)| (Cow::Borrowed(k), v))
                .collect(),
        ))
    }

    /// The output as JSON, exactly as [`super::engine::from_dynamic`] renders Rhai's value.
    pub fn to_json(&self) -> Value {
        match self {
            V::Unit => Value::Null,
            V::Bool(b) => Value::Bool(*b),
            V::Int(i) => Value::Number((*i).into()),
            V::Dec(d) => decimal_number(*d),
            V::Str(s) => Value::String(s.to_string()),
            V::JArr(a) => Value::Array(a.iter().map(|x| V::of_json(x).to_json()).collect()),
            V::JMap(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (k.clone(), V::of_json(x).to_json()))
                    .collect(),
            ),
            V::Arr(a) => Value::Array(a.iter().map(V::to_json).collect()),
            V::Map(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (k.to_string(), x.to_json()))
                    .collect(),
            ),
        }
    }

    /// A copy that borrows this value's text instead of copying it.
    fn borrowed(&self) -> V<'_> {
        match self {
            V::Str(s) => V::Str(Cow::Borrowed(s)),
            other => other.clone(),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            V::Unit => Kind::Unit,
            V::Bool(_) => Kind::Bool,
            V::Int(_) => Kind::Int,
            V::Dec(_) => Kind::Dec,
            V::Str(_) => Kind::Str,
            V::JArr(_) | V::Arr(_) => Kind::Array,
            V::JMap(_) | V::Map(_) => Kind::Map,
        }
    }

    /// Rhai's `to_string` of a scalar (what `"text" + value` appends).
    fn scalar_text(&self) -> Option<String> {
        match self {
            V::Bool(b) => Some(b.to_string()),
            V::Int(i) => Some(i.to_string()),
            V::Dec(d) => Some(d.to_string()),
            V::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }

    fn as_decimal(&self) -> Option<Decimal> {
        match self {
            V::Int(i) => Some(Decimal::from(*i)),
            V::Dec(d) => Some(*d),
            _ => None,
        }
    }

    /// A constant of the AST.
    fn of_dynamic(d: &Dynamic) -> Option<V<'static>> {
        if d.is_unit() {
            return Some(V::Unit);
        }
        if let Ok(b) = d.as_bool() {
            return Some(V::Bool(b));
        }
        if let Ok(i) = d.as_int() {
            return Some(V::Int(i));
        }
        if let Ok(x) = d.as_decimal() {
            return Some(V::Dec(x));
        }
        if d.is_string() {
            return Some(V::Str(Cow::Owned(d.clone().into_string().ok()?)));
        }
        if let Some(a) = d.read_lock::<rhai::Array>() {
            let items: Option<Vec<V<'static>>> = a.iter().map(V::of_dynamic).collect();
            return Some(V::Arr(Arc::new(items?)));
        }
        if let Some(m) = d.read_lock::<rhai::Map>() {
            let mut out = BTreeMap::new();
            for (k, x) in m.iter() {
                out.insert(Cow::Owned(k.to_string()), V::of_dynamic(x)?);
            }
            return Some(V::Map(Arc::new(out)));
        }
        None
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Unit,
    Bool,
    Int,
    Dec,
    Str,
    Array,
    Map,
}

/// Rhai's data sizes of a value: (array items, map entries, string bytes), counted
/// the way `rhai::eval::calc_data_sizes` counts them.
fn sizes(v: &V) -> (usize, usize, usize) {
    const ITEM: (usize, usize, usize) = (1, 0, 0);
    const ENTRY: (usize, usize, usize) = (0, 1, 0);
    /// Each item counts `each`, plus what it holds.
    fn add_up<T>(
        items: impl Iterator<Item = T>,
        each: (usize, usize, usize),
        size: impl Fn(T) -> (usize, usize, usize),
    ) -> (usize, usize, usize) {
        items.fold((0, 0, 0), |t, x| {
            let d = size(x);
            (t.0 + each.0 + d.0, t.1 + each.1 + d.1, t.2 + d.2)
        })
    }
    fn json(v: &Value) -> (usize, usize, usize) {
        match v {
            Value::String(s) => (0, 0, s.len()),
            Value::Number(n) => match classify_number(n) {
                Num::Text(t) => (0, 0, t.len()),
                _ => (0, 0, 0),
            },
            Value::Array(a) => add_up(a.iter(), ITEM, json),
            Value::Object(m) => add_up(m.values(), ENTRY, json),
            _ => (0, 0, 0),
        }
    }
    match v {
        V::Str(s) => (0, 0, s.len()),
        V::JArr(a) => add_up(a.iter(), ITEM, json),
        V::JMap(m) => add_up(m.values(), ENTRY, json),
        V::Arr(a) => add_up(a.iter(), ITEM, sizes),
        V::Map(m) => add_up(m.values(), ENTRY, sizes),
        _ => (0, 0, 0),
    }
}

impl Limits {
    fn within(&self, (a, m, s): (usize, usize, usize)) -> bool {
        s <= self.max_string_size && a <= self.max_array_size && m <= self.max_map_size
    }
}

// ---------------------------------------------------------------- the compiled tree

enum St {
    Let(usize, Ex),
    Assign(usize, Ex),
    If(Ex, Vec<St>, Vec<St>),
    /// `for x in array { … }`: the loop variable's slot, the array, the body.
    For(usize, Ex, Vec<St>),
    Expr(Ex),
    Return(Option<Ex>),
    Throw,
}

#[derive(Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy)]
enum Host {
    Dec,
    Money,
    FmtMoney,
    ValueMap,
    IsBlank,
    OrElse,
    DateOf,
    DaysBetween,
    PeriodOf,
}

/// The host functions the fast path evaluates, by name and number of arguments. None of
/// these names exists in Rhai's standard package (a test checks), so a call can only
/// mean the registered function.
const HOST_FUNCTIONS: &[(&str, usize, Host)] = &[
    ("dec", 1, Host::Dec),
    ("money", 1, Host::Money),
    ("fmt_money", 1, Host::FmtMoney),
    ("value_map", 2, Host::ValueMap),
    ("value_map", 3, Host::ValueMap),
    ("is_blank", 1, Host::IsBlank),
    ("or_else", 2, Host::OrElse),
    ("date_of", 1, Host::DateOf),
    ("days_between", 2, Host::DaysBetween),
    ("period_of", 2, Host::PeriodOf),
];

enum Ex {
    Const(V<'static>),
    Var(usize),
    Path(Box<Ex>, Vec<(String, bool)>),
    Map(Vec<(String, V<'static>)>, Vec<(String, Ex)>),
    Array(Vec<Ex>),
    Bin(Op, Box<Ex>, Box<Ex>),
    Neg(Box<Ex>),
    Not(Box<Ex>),
    And(Vec<Ex>),
    Or(Vec<Ex>),
    Coalesce(Vec<Ex>),
    Block(Vec<St>),
    Call(Host, Vec<Ex>),
    /// `x.is_empty()` on an array, a map or a string.
    IsEmpty(Box<Ex>),
    /// `var.push(value)` on an array held in a variable.
    Push(usize, Box<Ex>),
}

/// Arrays a rule builds with `push` are left to Rhai beyond this length, which keeps the
/// size check after each push cheap.
const MAX_PUSHED: usize = 500;

// ---------------------------------------------------------------- compiling

struct Compiler {
    scopes: Vec<Vec<(String, usize)>>,
    slots: usize,
    nodes: u64,
}

/// Compiles `fn rule(input)` for the fast path, or `None` if the script is not covered.
pub fn compile(ast: &AST, limits: Limits, maps: Arc<host::PreparedMaps>) -> Option<FastRule> {
    if !ast.statements().is_empty() {
        return None;
    }
    let functions: Vec<_> = ast.iter_functions().collect();
    let [rule] = functions.as_slice() else {
        return None;
    };
    if rule.name != super::engine::ENTRY || rule.params.len() != 1 {
        return None;
    }
    let param = rule.params[0].to_string();
    // The body's top-level statements (the walk visits function bodies after the
    // script's own statements, of which there are none).
    let mut body: Vec<Stmt> = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let [ASTNode::Stmt(s)] = path {
            body.push((*s).clone());
        }
        true
    });
    let mut c = Compiler {
        scopes: vec![vec![(param, 0)]],
        slots: 1,
        nodes: 0,
    };
    let body = c.statements(&body)?;
    // Straight-line code runs each node at most once; stay far below the operation limit.
    if c.nodes.saturating_mul(4) > limits.max_operations {
        return None;
    }
    Some(FastRule {
        body,
        slots: c.slots,
        limits,
        maps,
    })
}

impl Compiler {
    fn lookup(&self, name: &str) -> Option<usize> {
        self.scopes
            .iter()
            .rev()
            .flat_map(|s| s.iter().rev())
            .find(|(n, _)| n == name)
            .map(|(_, slot)| *slot)
    }

    fn block(&mut self, b: &StmtBlock) -> Option<Vec<St>> {
        self.scopes.push(Vec::new());
        let out = self.statements(b.statements());
        self.scopes.pop();
        out
    }

    fn statements(&mut self, stmts: &[Stmt]) -> Option<Vec<St>> {
        let mut out = Vec::with_capacity(stmts.len());
        for s in stmts {
            self.nodes += 1;
            match s {
                Stmt::Noop(_) => {}
                Stmt::Var(x, _, _) => {
                    let (ident, expr, _) = &**x;
                    let value = self.expr(expr)?;
                    let slot = self.slots;
                    self.slots += 1;
                    self.scopes.last_mut()?.push((ident.name.to_string(), slot));
                    out.push(St::Let(slot, value));
                }
                Stmt::Assignment(x) => {
                    let (op, bin) = &**x;
                    let Expr::Variable(v, _, _) = &bin.lhs else {
                        return None;
                    };
                    if !v.2.is_empty() {
                        return None;
                    }
                    let slot = self.lookup(&v.1)?;
                    let rhs = self.expr(&bin.rhs)?;
                    // `x op= y` gives what `x = x op y` gives for every type covered here
                    // (the optimiser also turns `x = x + 1` into `x += 1`).
                    let value = match op.get_op_assignment_info() {
                        None => rhs,
                        Some((.., base, _)) => {
                            let op = match base {
                                Token::Plus => Op::Add,
                                Token::Minus => Op::Sub,
                                Token::Multiply => Op::Mul,
                                Token::Divide => Op::Div,
                                Token::Modulo => Op::Rem,
                                _ => return None,
                            };
                            Ex::Bin(op, Box::new(Ex::Var(slot)), Box::new(rhs))
                        }
                    };
                    out.push(St::Assign(slot, value));
                }
                Stmt::If(fc, _) => {
                    let cond = self.expr(&fc.expr)?;
                    let then = self.block(&fc.body)?;
                    let otherwise = self.block(&fc.branch)?;
                    out.push(St::If(cond, then, otherwise));
                }
                Stmt::For(x, _) => {
                    let (var, counter, fc) = &**x;
                    if counter.is_some() {
                        return None;
                    }
                    let iterable = self.expr(&fc.expr)?;
                    let slot = self.slots;
                    self.slots += 1;
                    self.scopes.push(vec![(var.name.to_string(), slot)]);
                    let body = self.block(&fc.body);
                    self.scopes.pop();
                    out.push(St::For(slot, iterable, body?));
                }
                Stmt::Expr(e) => out.push(St::Expr(self.expr(e)?)),
                Stmt::FnCall(f, _) => out.push(St::Expr(self.call(f)?)),
                Stmt::Block(b) => out.push(St::Expr(Ex::Block(self.block(b)?))),
                Stmt::Return(e, flags, _) => {
                    if flags.contains(ASTFlags::BREAK) {
                        out.push(St::Throw);
                    } else {
                        let e = match e {
                            Some(e) => Some(self.expr(e)?),
                            None => None,
                        };
                        out.push(St::Return(e));
                    }
                }
                _ => return None,
            }
        }
        Some(out)
    }

    fn exprs(&mut self, es: &[Expr]) -> Option<Vec<Ex>> {
        es.iter().map(|e| self.expr(e)).collect()
    }

    fn expr(&mut self, e: &Expr) -> Option<Ex> {
        self.nodes += 1;
        Some(match e {
            Expr::DynamicConstant(d, _) => Ex::Const(V::of_dynamic(d)?),
            Expr::BoolConstant(b, _) => Ex::Const(V::Bool(*b)),
            Expr::IntegerConstant(i, _) => Ex::Const(V::Int(*i)),
            Expr::StringConstant(s, _) => Ex::Const(V::Str(Cow::Owned(s.to_string()))),
            Expr::Unit(_) => Ex::Const(V::Unit),
            Expr::Array(items, _) => Ex::Array(self.exprs(items)?),
            Expr::Map(x, _) => {
                let (entries, template) = &**x;
                let template = template
                    .iter()
                    .map(|(k, d)| Some((k.to_string(), V::of_dynamic(d)?)))
                    .collect::<Option<Vec<_>>>()?;
                let entries = entries
                    .iter()
                    .map(|(k, e)| Some((k.name.to_string(), self.expr(e)?)))
                    .collect::<Option<Vec<_>>>()?;
                Ex::Map(template, entries)
            }
            Expr::Variable(v, _, _) => {
                if !v.2.is_empty() {
                    return None;
                }
                Ex::Var(self.lookup(&v.1)?)
            }
            Expr::Dot(bin, flags, _) => {
                if matches!(bin.lhs, Expr::Property(..)) {
                    return None;
                }
                let root = self.expr(&bin.lhs)?;
                let mut steps = Vec::new();
                let method = steps_of(*flags, &bin.rhs, &mut steps)?;
                let value = if steps.is_empty() {
                    root
                } else {
                    Ex::Path(Box::new(root), steps)
                };
                match method {
                    None => value,
                    Some(f) if !f.namespace.is_empty() || f.capture_parent_scope => return None,
                    Some(f) if f.name == "is_empty" && f.args.is_empty() => {
                        Ex::IsEmpty(Box::new(value))
                    }
                    Some(f) if f.name == "push" && f.args.len() == 1 => match value {
                        Ex::Var(slot) => Ex::Push(slot, Box::new(self.expr(&f.args[0])?)),
                        _ => return None,
                    },
                    Some(_) => return None,
                }
            }
            Expr::FnCall(f, _) => self.call(f)?,
            Expr::And(x, _) => Ex::And(self.exprs(x)?),
            Expr::Or(x, _) => Ex::Or(self.exprs(x)?),
            Expr::Coalesce(x, _) => Ex::Coalesce(self.exprs(x)?),
            Expr::Stmt(b) => Ex::Block(self.block(b)?),
            _ => return None,
        })
    }

    fn call(&mut self, f: &FnCallExpr) -> Option<Ex> {
        if !f.namespace.is_empty() || f.capture_parent_scope {
            return None;
        }
        if let Some(token) = &f.op_token {
            return match (token, f.args.as_slice()) {
                (Token::Minus | Token::UnaryMinus, [x]) => Some(Ex::Neg(Box::new(self.expr(x)?))),
                (Token::Bang, [x]) => Some(Ex::Not(Box::new(self.expr(x)?))),
                (t, [a, b]) => {
                    let op = match t {
                        Token::Plus => Op::Add,
                        Token::Minus => Op::Sub,
                        Token::Multiply => Op::Mul,
                        Token::Divide => Op::Div,
                        Token::Modulo => Op::Rem,
                        Token::EqualsTo => Op::Eq,
                        Token::NotEqualsTo => Op::Ne,
                        Token::LessThan => Op::Lt,
                        Token::LessThanEqualsTo => Op::Le,
                        Token::GreaterThan => Op::Gt,
                        Token::GreaterThanEqualsTo => Op::Ge,
                        _ => return None,
                    };
                    Some(Ex::Bin(
                        op,
                        Box::new(self.expr(a)?),
                        Box::new(self.expr(b)?),
                    ))
                }
                _ => None,
            };
        }
        let arity = f.args.len();
        let (.., host) = HOST_FUNCTIONS
            .iter()
            .find(|(name, n, _)| *name == f.name.as_str() && *n == arity)?;
        Some(Ex::Call(*host, self.exprs(&f.args)?))
    }
}

/// Flattens the right-hand side of a property chain: `a.b?.c` is
/// `Dot(a, Dot(b, c, NEGATED))`, the flag on each `Dot` saying its own step is `?.`.
/// A chain may end in a method call (`a.b.is_empty()`), which is returned.
fn steps_of<'e>(
    flags: ASTFlags,
    rhs: &'e Expr,
    out: &mut Vec<(String, bool)>,
) -> Option<Option<&'e FnCallExpr>> {
    let elvis = flags.contains(ASTFlags::NEGATED);
    match rhs {
        Expr::Property(p, _) => {
            out.push((p.2.to_string(), elvis));
            Some(None)
        }
        Expr::MethodCall(f, _) if !elvis => Some(Some(&**f)),
        Expr::Dot(bin, inner, _) => {
            let Expr::Property(p, _) = &bin.lhs else {
                return None;
            };
            out.push((p.2.to_string(), elvis));
            steps_of(*inner, &bin.rhs, out)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- evaluating

/// Why evaluation stopped early.
#[derive(Clone, Copy)]
enum Stop {
    /// Not covered: let Rhai evaluate the rule.
    Bail,
    /// `return`: the value is in [`Frame::returned`].
    Return,
}

type R<T> = Result<T, Stop>;

fn bail<T>() -> R<T> {
    Err(Stop::Bail)
}

/// The variables of one evaluation.
struct Frame<'a> {
    slots: Vec<V<'a>>,
    returned: V<'a>,
    /// Statements and loop rounds run so far (see [`FastRule::max_steps`]).
    steps: u64,
}

impl FastRule {
    /// Evaluates the rule on `input`; `None` means "ask Rhai".
    pub fn eval<'a>(&'a self, input: V<'a>) -> Option<Value> {
        let mut frame = Frame {
            slots: vec![V::Unit; self.slots],
            returned: V::Unit,
            steps: 0,
        };
        frame.slots[0] = input;
        let value = match self.block(&self.body, &mut frame) {
            Ok(v) => v,
            Err(Stop::Return) => std::mem::replace(&mut frame.returned, V::Unit),
            Err(Stop::Bail) => return None,
        };
        if !self.limits.within(sizes(&value)) {
            return None;
        }
        Some(value.to_json())
    }

    /// Loops make the work depend on the input. Rhai counts an operation for every
    /// statement, expression and call, so a rule that runs more than an eighth of its
    /// operation limit in statements here is left to Rhai, which decides.
    fn max_steps(&self) -> u64 {
        self.limits.max_operations / 8
    }

    fn block<'a>(&'a self, body: &'a [St], f: &mut Frame<'a>) -> R<V<'a>> {
        let mut last = V::Unit;
        for st in body {
            f.steps += 1;
            if f.steps > self.max_steps() {
                return bail();
            }
            last = match st {
                St::Let(slot, e) | St::Assign(slot, e) => {
                    f.slots[*slot] = self.expr(e, f)?;
                    V::Unit
                }
                St::If(cond, then, otherwise) => match self.expr(cond, f)? {
                    V::Bool(true) => self.block(then, f)?,
                    V::Bool(false) => self.block(otherwise, f)?,
                    _ => return bail(),
                },
                St::For(slot, iterable, body) => {
                    match self.expr(iterable, f)? {
                        V::JArr(items) => {
                            for item in items {
                                f.slots[*slot] = V::of_json(item);
                                self.block(body, f)?;
                            }
                        }
                        V::Arr(items) => {
                            for item in items.iter() {
                                f.slots[*slot] = item.clone();
                                self.block(body, f)?;
                            }
                        }
                        _ => return bail(),
                    }
                    V::Unit
                }
                St::Expr(e) => self.expr(e, f)?,
                St::Return(e) => {
                    f.returned = match e {
                        Some(e) => self.expr(e, f)?,
                        None => V::Unit,
                    };
                    return Err(Stop::Return);
                }
                St::Throw => return bail(),
            };
        }
        Ok(last)
    }

    fn expr<'a>(&'a self, e: &'a Ex, f: &mut Frame<'a>) -> R<V<'a>> {
        Ok(match e {
            Ex::Const(v) => v.borrowed(),
            Ex::Var(slot) => f.slots[*slot].clone(),
            Ex::Path(root, steps) => {
                let mut v = match &**root {
                    Ex::Var(slot) => f.slots[*slot].clone(),
                    other => self.expr(other, f)?,
                };
                for (i, (name, elvis)) in steps.iter().enumerate() {
                    v = match v {
                        V::JMap(m) => m.get(name.as_str()).map(V::of_json).unwrap_or(V::Unit),
                        V::Map(m) => m.get(name.as_str()).cloned().unwrap_or(V::Unit),
                        // `x?.y` on `()` is `()`; further steps are left to Rhai.
                        V::Unit if *elvis && i + 1 == steps.len() => V::Unit,
                        _ => return bail(),
                    };
                }
                v
            }
            Ex::Map(template, entries) => {
                let mut map: BTreeMap<Cow<'a, str>, V<'a>> = template
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), v.borrowed()))
                    .collect();
                let mut total = (0, 0, 0);
                for (k, e) in entries {
                    let v = self.expr(e, f)?;
                    let d = sizes(&v);
                    total = (total.0 + d.0, total.1 + d.1 + 1, total.2 + d.2);
                    if !self.limits.within(total) {
                        return bail();
                    }
                    map.insert(Cow::Borrowed(k.as_str()), v);
                }
                V::Map(Arc::new(map))
            }
            Ex::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut total = (0, 0, 0);
                for e in items {
                    let v = self.expr(e, f)?;
                    let d = sizes(&v);
                    total = (total.0 + d.0 + 1, total.1 + d.1, total.2 + d.2);
                    if !self.limits.within(total) {
                        return bail();
                    }
                    out.push(v);
                }
                V::Arr(Arc::new(out))
            }
            Ex::Bin(op, a, b) => {
                let a = self.expr(a, f)?;
                let b = self.expr(b, f)?;
                self.binary(*op, a, b)?
            }
            Ex::Neg(x) => match self.expr(x, f)? {
                V::Int(i) => V::Int(i.checked_neg().ok_or(Stop::Bail)?),
                V::Dec(d) => V::Dec(-d),
                _ => return bail(),
            },
            Ex::Not(x) => match self.expr(x, f)? {
                V::Bool(b) => V::Bool(!b),
                _ => return bail(),
            },
            Ex::And(xs) | Ex::Or(xs) => {
                // `&&` stops at the first `false`, `||` at the first `true`.
                let stop_at = matches!(e, Ex::Or(_));
                for x in xs {
                    match self.expr(x, f)? {
                        V::Bool(b) if b == stop_at => return Ok(V::Bool(stop_at)),
                        V::Bool(_) => {}
                        _ => return bail(),
                    }
                }
                V::Bool(!stop_at)
            }
            Ex::Coalesce(xs) => {
                let mut v = V::Unit;
                for x in xs {
                    v = self.expr(x, f)?;
                    if !matches!(v, V::Unit) {
                        break;
                    }
                }
                v
            }
            Ex::Block(body) => self.block(body, f)?,
            Ex::IsEmpty(x) => V::Bool(match self.expr(x, f)? {
                V::JArr(a) => a.is_empty(),
                V::Arr(a) => a.is_empty(),
                V::JMap(m) => m.is_empty(),
                V::Map(m) => m.is_empty(),
                V::Str(s) => s.is_empty(),
                _ => return bail(),
            }),
            Ex::Push(slot, x) => {
                let v = self.expr(x, f)?;
                let array = match std::mem::replace(&mut f.slots[*slot], V::Unit) {
                    V::Arr(mut a) => {
                        Arc::make_mut(&mut a).push(v);
                        a
                    }
                    V::JArr(j) => {
                        let mut a: Vec<V<'a>> = j.iter().map(V::of_json).collect();
                        a.push(v);
                        Arc::new(a)
                    }
                    _ => return bail(),
                };
                let array = V::Arr(array);
                // Rhai checks the array's size after every push.
                if matches!(&array, V::Arr(a) if a.len() > MAX_PUSHED)
                    || !self.limits.within(sizes(&array))
                {
                    return bail();
                }
                f.slots[*slot] = array;
                V::Unit
            }
            Ex::Call(host, args) => {
                let mut values = Vec::with_capacity(args.len());
                for a in args {
                    values.push(self.expr(a, f)?);
                }
                self.host(*host, values)?
            }
        })
    }

    fn binary<'a>(&self, op: Op, a: V<'a>, b: V<'a>) -> R<V<'a>> {
        use std::cmp::Ordering;
        let (ka, kb) = (a.kind(), b.kind());
        let ordering: Option<Ordering> = match (&a, &b) {
            (V::Int(x), V::Int(y)) => {
                let r = match op {
                    Op::Add => x.checked_add(*y),
                    Op::Sub => x.checked_sub(*y),
                    Op::Mul => x.checked_mul(*y),
                    Op::Div if *y == 0 => None,
                    Op::Div => x.checked_div(*y),
                    Op::Rem => x.checked_rem(*y),
                    _ => return Ok(compare(op, Some(x.cmp(y)))),
                };
                return r.map(V::Int).ok_or(Stop::Bail);
            }
            (V::Int(_) | V::Dec(_), V::Int(_) | V::Dec(_)) => {
                let (x, y) = (
                    a.as_decimal().ok_or(Stop::Bail)?,
                    b.as_decimal().ok_or(Stop::Bail)?,
                );
                let r = match op {
                    Op::Add => x.checked_add(y),
                    Op::Sub => x.checked_sub(y),
                    Op::Mul => x.checked_mul(y),
                    Op::Div if y.is_zero() => None,
                    Op::Div => x.checked_div(y),
                    Op::Rem => x.checked_rem(y),
                    _ => return Ok(compare(op, Some(x.cmp(&y)))),
                };
                return r.map(V::Dec).ok_or(Stop::Bail);
            }
            (V::Str(x), V::Str(y)) => match op {
                Op::Add => return self.concat(x, y),
                Op::Sub | Op::Mul | Op::Div | Op::Rem => return bail(),
                _ => Some(x.as_ref().cmp(y.as_ref())),
            },
            (V::Bool(x), V::Bool(y)) => match op {
                Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Rem => return bail(),
                _ => Some(x.cmp(y)),
            },
            (V::Unit, V::Unit) => match op {
                Op::Eq => return Ok(V::Bool(true)),
                Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => return Ok(V::Bool(false)),
                _ => return bail(),
            },
            // `"text" + ()` and `() + "text"` are the text.
            (V::Str(_), V::Unit) if matches!(op, Op::Add) => return Ok(a),
            (V::Unit, V::Str(_)) if matches!(op, Op::Add) => return Ok(b),
            // `"text" + value` appends the value's text; `value + "text"` prepends it.
            (V::Str(x), _) if matches!(op, Op::Add) => {
                let t = b.scalar_text().ok_or(Stop::Bail)?;
                return self.concat(x, &t);
            }
            (_, V::Str(y)) if matches!(op, Op::Add) => {
                let t = a.scalar_text().ok_or(Stop::Bail)?;
                return self.concat(&t, y);
            }
            _ => None,
        };
        match ordering {
            Some(o) => Ok(compare(op, Some(o))),
            // Different types, not both numbers: Rhai's comparisons say "not equal".
            None if ka != kb => match op {
                Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => Ok(compare(op, None)),
                _ => bail(),
            },
            None => bail(),
        }
    }

    fn concat<'a>(&self, x: &str, y: &str) -> R<V<'a>> {
        if x.len() + y.len() > self.limits.max_string_size {
            return bail();
        }
        let mut s = String::with_capacity(x.len() + y.len());
        s.push_str(x);
        s.push_str(y);
        Ok(V::Str(Cow::Owned(s)))
    }

    fn host<'a>(&'a self, func: Host, mut args: Vec<V<'a>>) -> R<V<'a>> {
        let text = |s: String| V::Str(Cow::Owned(s));
        let out = match (func, args.as_slice()) {
            (Host::Dec, [V::Str(s)]) => V::Dec(host::dec_of_str(s).map_err(|_| Stop::Bail)?),
            (Host::Dec, [V::Int(i)]) => V::Dec(Decimal::from(*i)),
            (Host::Dec, [V::Dec(d)]) => V::Dec(*d),
            (Host::Dec, [V::Unit]) => V::Dec(Decimal::ZERO),
            (Host::Money, [V::Dec(d)]) => V::Dec(host::money(*d)),
            (Host::Money, [V::Int(i)]) => V::Dec(host::money_int(*i)),
            (Host::FmtMoney, [V::Dec(d)]) => text(host::fmt_money(*d)),
            (Host::FmtMoney, [V::Int(i)]) => text(host::fmt_money(Decimal::from(*i))),
            (Host::ValueMap, [V::Str(name), key, rest @ ..]) => {
                let key = match key {
                    V::Str(s) => s.to_string(),
                    V::Unit => String::new(),
                    other => other.scalar_text().ok_or(Stop::Bail)?,
                };
                match self.maps.lookup(name, &key).map_err(|_| Stop::Bail)? {
                    Some(found) => V::Str(Cow::Owned(
                        found.clone().into_string().map_err(|_| Stop::Bail)?,
                    )),
                    None => match rest {
                        [default] => default.clone(),
                        _ => return bail(),
                    },
                }
            }
            (Host::IsBlank, [v]) => V::Bool(match v {
                V::Unit => true,
                V::Str(s) => s.trim().is_empty(),
                _ => false,
            }),
            (Host::OrElse, [_, _]) => {
                let default = args.pop().ok_or(Stop::Bail)?;
                let v = args.pop().ok_or(Stop::Bail)?;
                if matches!(v, V::Unit) {
                    default
                } else {
                    v
                }
            }
            (Host::DateOf, [V::Str(s)]) => text(host::date_of(s).map_err(|_| Stop::Bail)?),
            (Host::DaysBetween, [V::Str(a), V::Str(b)]) => {
                V::Int(host::days_between(a, b).map_err(|_| Stop::Bail)?)
            }
            (Host::PeriodOf, [V::Str(d), V::Str(k)]) => {
                text(host::period_of(d, k).map_err(|_| Stop::Bail)?)
            }
            _ => return bail(),
        };
        // Rhai checks the size of every value a function returns.
        if !self.limits.within(sizes(&out)) {
            return bail();
        }
        Ok(out)
    }
}

fn compare<'a>(op: Op, o: Option<std::cmp::Ordering>) -> V<'a> {
    use std::cmp::Ordering::*;
    V::Bool(match (op, o) {
        (Op::Eq, Some(o)) => o == Equal,
        (Op::Ne, Some(o)) => o != Equal,
        (Op::Lt, Some(o)) => o == Less,
        (Op::Le, Some(o)) => o != Greater,
        (Op::Gt, Some(o)) => o == Greater,
        (Op::Ge, Some(o)) => o != Less,
        (Op::Ne, None) => true,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::engine::{self, ValueMaps};
    use crate::rules::{cases::Case, DirLoader, RuleSet};
    use serde_json::json;

    fn maps() -> Arc<host::PreparedMaps> {
        let mut m = ValueMaps::new();
        m.insert(
            "m".into(),
            [
                ("1", "one"),
                ("a", "A"),
                ("true", "T"),
                ("", "empty"),
                ("1.50", "x"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        Arc::new(host::PreparedMaps::new(&m))
    }

    struct Pair {
        engine: rhai::Engine,
        script: engine::Script,
        fast: FastRule,
    }

    fn pair(src: &str) -> Pair {
        let limits = Limits::default();
        let maps = maps();
        let engine = engine::build_engine_with(limits, maps.clone());
        let script = engine::compile(&engine, "t.rhai", src).expect("compiles");
        let fast = compile(&script.ast, limits, maps)
            .unwrap_or_else(|| panic!("not covered by the fast path: {src}"));
        Pair {
            engine,
            script,
            fast,
        }
    }

    impl Pair {
        /// Asserts the fast path agrees with Rhai on `input`; returns whether it answered.
        fn agree(&self, input: &Value) -> bool {
            let rhai = engine::run(&self.engine, &self.script, engine::to_dynamic(input))
                .map(|v| engine::from_dynamic(&v));
            match self.fast.eval(V::of_json(input)) {
                Some(fast) => {
                    assert_eq!(
                        rhai.as_ref().ok(),
                        Some(&fast),
                        "the fast path answered {fast} where Rhai gave {rhai:?}\ninput: {input}"
                    );
                    // Same JSON, and the same exact decimal text.
                    assert_eq!(fast.to_string(), rhai.expect("ok").to_string());
                    true
                }
                None => false,
            }
        }
    }

    /// Values of every kind the input can carry, and edge cases of each.
    fn values() -> Vec<Value> {
        let mut v: Vec<Value> = [
            "null",
            "true",
            "false",
            "0",
            "1",
            "-1",
            "7",
            "9223372036854775807",
            "-9223372036854775808",
            "18446744073709551615",
            "0.0",
            "1.50",
            "-2.25",
            "0.1",
            "1e3",
            "79228162514264337593543950335",
            "1e40",
            "\"\"",
            "\" \"",
            "\"a\"",
            "\"b\"",
            "\"1\"",
            "\"1.50\"",
            "\"true\"",
            "\"2026-03-31\"",
            "\"2026-05-14T09:12:45Z\"",
            "\"month\"",
            "[]",
            "[1, \"a\"]",
            "{}",
            "{\"a\": 1, \"b\": {\"c\": \"x\"}}",
        ]
        .iter()
        .map(|t| serde_json::from_str(t).expect("json"))
        .collect();
        v.push(Value::String("x".repeat(40_000)));
        v
    }

    #[test]
    fn binary_operators_agree_with_rhai_on_every_pair_of_kinds() {
        let ops = [
            "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "??",
        ];
        let values = values();
        let mut answered = 0;
        for op in ops {
            let p = pair(&format!("fn rule(input) {{ input.a {op} input.b }}"));
            for a in &values {
                for b in &values {
                    if p.agree(&json!({ "a": a, "b": b })) {
                        answered += 1;
                    }
                }
            }
        }
        // Most combinations are answered on the fast path, not all left to Rhai.
        assert!(answered > 5_000, "only {answered} answered");
    }

    #[test]
    fn unary_operators_host_functions_and_chains_agree_with_rhai() {
        let exprs = [
            "-input.a",
            "!input.a",
            "is_blank(input.a)",
            "dec(input.a)",
            "money(input.a)",
            "fmt_money(input.a)",
            "value_map(\"m\", input.a)",
            "value_map(\"m\", input.a, input.b)",
            "value_map(\"nope\", input.a, 1)",
            "value_map(input.a, \"1\", 2)",
            "or_else(input.a, input.b)",
            "date_of(input.a)",
            "days_between(input.a, input.b)",
            "period_of(input.a, input.b)",
            "\"s\" + input.a",
            "input.a + \"s\"",
            "input.a.b",
            "input.a?.b",
            "input.a.b.c",
            "input.a?.b.c",
            "input.a.b?.c",
            "if input.a { 1 } else { 2 }",
            "if input.a == () { \"none\" } else { input.a }",
            "#{ x: input.a, y: #{ z: input.b }, k: 1, s: \"t\" }",
            "[input.a, input.b, 0.5]",
            "#{ s: input.a + input.a }",
            "input.a ?? input.b ?? 3",
        ];
        let values = values();
        for e in exprs {
            let p = pair(&format!("fn rule(input) {{ {e} }}"));
            for a in &values {
                for b in [
                    &values[0],
                    &values[5],
                    &values[19],
                    &values[24],
                    &values[26],
                ] {
                    p.agree(&json!({ "a": a, "b": b }));
                }
            }
        }
    }

    #[test]
    fn statements_scopes_and_returns_agree_with_rhai() {
        let src = r#"
            fn rule(input) {
                let x = input.a;
                let limit = 10;
                if x == () { return #{ kind: "none" }; }
                let y = if x > limit { "big" } else { let x = "shadow"; x + "ed" };
                if is_blank(input.b) {
                    throw #{ code: "blank", message: "b is blank" };
                }
                x = x + 1;
                { let z = 2; z }
                #{ x: x, y: y, b: input.b }
            }
        "#;
        let p = pair(src);
        let mut answered = 0;
        for a in values() {
            for b in ["\"\"", "\"b\"", "null", "3"] {
                let b: Value = serde_json::from_str(b).expect("json");
                if p.agree(&json!({ "a": a, "b": b })) {
                    answered += 1;
                }
            }
        }
        assert!(answered > 20, "only {answered} answered");
        // The `throw` is Rhai's to raise: the fast path steps aside.
        assert!(p
            .fast
            .eval(V::of_json(&json!({ "a": 1, "b": "" })))
            .is_none());
    }

    #[test]
    fn op_assignments_agree_with_rhai() {
        let values = values();
        for op in ["+=", "-=", "*=", "/=", "%="] {
            let p = pair(&format!(
                "fn rule(input) {{ let x = input.a; x {op} input.b; x }}"
            ));
            for a in &values {
                for b in &values {
                    p.agree(&json!({ "a": a, "b": b }));
                }
            }
        }
    }

    #[test]
    fn loops_push_and_is_empty_agree_with_rhai() {
        let p = pair(
            r#"
            fn rule(input) {
                let out = [];
                let n = 0;
                let total = 0;
                for x in input.a {
                    n += 1;
                    out.push(#{ n: n, x: x });
                    total += x;
                }
                #{ out: out, n: n, total: total, empty: out.is_empty(), a_empty: input.a.is_empty() }
            }
            "#,
        );
        let mut arrays: Vec<Value> = vec![
            json!([]),
            json!([1, 2, 3]),
            json!([1.50, 2, -0.25]),
            json!(["a", "b"]),
            json!([1, "a"]),
            json!([null]),
            json!([{ "k": 1 }]),
            json!([[1], [2]]),
            json!((0..600).collect::<Vec<_>>()),
        ];
        arrays.extend(values());
        let mut answered = 0;
        for a in &arrays {
            if p.agree(&json!({ "a": a })) {
                answered += 1;
            }
        }
        assert!(answered >= 4, "only {answered} answered");
        // A long loop is Rhai's to run (its operation limit decides).
        assert!(!p.agree(&json!({ "a": (0..600).collect::<Vec<_>>() })));
    }

    #[test]
    fn size_limits_are_left_to_rhai() {
        let big = "x".repeat(40_000);
        for src in [
            "fn rule(input) { input.s + input.s }",
            "fn rule(input) { #{ a: input.s, b: input.s } }",
            "fn rule(input) { [input.s, input.s] }",
            "fn rule(input) { let m = #{ a: input.s, b: input.s }; 1 }",
        ] {
            let p = pair(src);
            let input = json!({ "s": big });
            assert!(!p.agree(&input), "{src} answered over the string limit");
            let err = engine::run(&p.engine, &p.script, engine::to_dynamic(&input));
            assert!(err.is_err(), "{src}: Rhai accepts it");
        }
    }

    #[test]
    fn scripts_outside_the_subset_are_left_to_rhai() {
        let limits = Limits::default();
        let engine = engine::build_engine_with(limits, maps());
        for src in [
            "fn rule(input) { for (x, i) in input.a { } 1 }",
            "fn rule(input) { for x in input.a { break; } 1 }",
            "fn rule(input) { input.a.len() }",
            "fn rule(input) { input.a.b.push(1); 1 }",
            "fn rule(input) { input.a?.is_empty() }",
            "fn rule(input) { input.a[0] }",
            "fn rule(input) { helper(input) } fn helper(x) { x }",
            "fn rule(input) { max(input.a, 1) }",
            "fn rule(input) { input.a.b += 1; input.a }",
            "fn rule(input) { let x = 1; x **= 2; x }",
            "fn rule(input) { `x${input.a}` }",
            "let top = 1; fn rule(input) { 1 }",
        ] {
            let s = engine::compile(&engine, "t.rhai", src).expect("compiles");
            assert!(
                compile(&s.ast, limits, maps()).is_none(),
                "{src} was covered"
            );
        }
    }

    #[test]
    fn the_fast_host_functions_are_not_in_rhais_standard_package() {
        let mut engine = rhai::Engine::new_raw();
        {
            use rhai::packages::Package;
            engine
                .register_global_module(rhai::packages::StandardPackage::new().as_shared_module());
        }
        for (name, arity, _) in HOST_FUNCTIONS {
            let args = vec!["1"; *arity].join(", ");
            let err = engine
                .eval::<Dynamic>(&format!("{name}({args})"))
                .expect_err("not a standard function");
            assert!(
                matches!(*err, rhai::EvalAltResult::ErrorFunctionNotFound(..)),
                "{name}: {err}"
            );
        }
    }

    fn repo_rules() -> RuleSet {
        RuleSet::load(&DirLoader(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules"),
        ))
        .expect("the repository's rules compile")
    }

    fn cases_of(rules: &RuleSet, script: &str) -> Vec<Case> {
        let path = script.trim_end_matches(".rhai").to_string() + ".cases.json";
        serde_json::from_str(&rules.files()[&path]).expect("cases parse")
    }

    #[test]
    fn the_shipped_straight_line_rules_take_the_fast_path_and_agree_on_every_case() {
        let rules = repo_rules();
        for script in [
            "credit_limit.rhai",
            "mapping/account_to_customer.rhai",
            "mapping/contact_to_contact.rhai",
            "mapping/item_to_product.rhai",
            "mapping/payment_to_payment.rhai",
            "mapping/quotation_totals.rhai",
            "mapping/order_to_sales_order.rhai",
            "mapping/invoice_to_history.rhai",
            "mapping/order_progress.rhai",
            "mapping/customer_financials.rhai",
        ] {
            assert!(rules.is_fast(script), "{script} is not on the fast path");
        }
        for script in rules.script_names() {
            for case in cases_of(&rules, script) {
                let rhai = rules.eval_interpreted(script, &case.input);
                if let Some(fast) = rules.eval_fast(script, &case.input) {
                    assert_eq!(
                        rhai.as_ref().ok(),
                        Some(&fast),
                        "{script} / {}: fast path disagrees",
                        case.name
                    );
                } else if rules.is_fast(script) && case.expect.is_some() {
                    panic!("{script} / {}: left to Rhai", case.name);
                }
            }
        }
    }

    /// A small deterministic generator, so a failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Replaces, removes or adds a random field somewhere in `v`.
    fn mutate(v: &mut Value, rng: &mut Rng, values: &[Value]) {
        match v {
            Value::Object(m) if !m.is_empty() && rng.below(4) > 0 => {
                let keys: Vec<String> = m.keys().cloned().collect();
                let k = &keys[rng.below(keys.len())];
                match rng.below(5) {
                    0 => {
                        m.remove(k);
                    }
                    1 | 2 => mutate(m.get_mut(k).expect("key"), rng, values),
                    _ => {
                        m.insert(k.clone(), values[rng.below(values.len())].clone());
                    }
                }
            }
            Value::Array(a) if !a.is_empty() && rng.below(2) == 0 => {
                let i = rng.below(a.len());
                mutate(&mut a[i], rng, values);
            }
            other => *other = values[rng.below(values.len())].clone(),
        }
    }

    #[test]
    fn randomised_inputs_give_the_same_answers_on_both_paths() {
        let rules = repo_rules();
        let values = values();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut answered = 0;
        for script in rules.script_names().filter(|s| rules.is_fast(s)) {
            let cases = cases_of(&rules, script);
            for _ in 0..1_000 {
                let mut input = cases[rng.below(cases.len())].input.clone();
                for _ in 0..=rng.below(3) {
                    mutate(&mut input, &mut rng, &values);
                }
                let rhai = rules.eval_interpreted(script, &input);
                if let Some(fast) = rules.eval_fast(script, &input) {
                    answered += 1;
                    assert_eq!(
                        rhai.as_ref().ok(),
                        Some(&fast),
                        "{script}: fast path disagrees on {input}"
                    );
                }
                // And the combined path always gives Rhai's answer.
                assert_eq!(
                    rules.eval(script, &input).map_err(|e| e.to_string()),
                    rhai.map_err(|e| e.to_string())
                );
            }
        }
        assert!(answered > 600, "only {answered} answered");
    }
}
