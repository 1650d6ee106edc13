//! A local interpreter for the subset of the Amazon States Language that `statemachine/pipeline.asl.json` uses, so
//! `pgshift run` executes the very definition AWS runs.
//!
//! Supported: Task, Map (inline and distributed: ItemReader, ItemsPath, ItemSelector, ItemProcessor, MaxConcurrency
//! and MaxConcurrencyPath, ResultWriter), Choice, Wait (Seconds, SecondsPath), Pass, Succeed, Fail; InputPath,
//! Parameters, ResultSelector, ResultPath, OutputPath; Retry (IntervalSeconds, MaxAttempts, BackoffRate,
//! MaxDelaySeconds, JitterStrategy) and Catch; TimeoutSeconds on Tasks and on the machine; the intrinsic functions of
//! [`intrinsics`]. The definition is parsed and checked whole before anything runs: any other field or construct is
//! an error naming the state ([`AslError`]), never skipped.
//!
//! Task resources are bound by the caller through [`Resources`]; Map iterations run as tokio tasks, so
//! `MaxConcurrency` is real parallelism. Semantics follow the AWS specification: `States.Runtime` errors are never
//! retried or caught, a Catch's `ResultPath` applies to the state's raw input, `States.TaskFailed` matches every error
//! but `States.Timeout`, only the first retrier whose `ErrorEquals` matches counts an attempt.

pub mod intrinsics;
pub mod path;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map as JsonMap, Value};
use tokio::task::JoinSet;

use intrinsics::Call;
use path::Path;

/// A definition that is not valid ASL, or uses a construct the interpreter does not run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AslError {
    #[error("state machine definition: {0}")]
    Invalid(String),
    #[error("state {state:?}: {what}")]
    State { state: String, what: String },
    #[error("state {state:?}: {what} is not supported by the local interpreter")]
    Unsupported { state: String, what: String },
}

/// How an execution (or a state) failed: the error name the Retry/Catch lists match, and its cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub error: String,
    pub cause: String,
}

impl Failure {
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            cause: cause.into(),
        }
    }

    fn runtime(state: &str, cause: impl std::fmt::Display) -> Self {
        Self::new("States.Runtime", format!("state {state:?}: {cause}"))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.cause)
    }
}

/// One Task invocation.
#[derive(Debug, Clone)]
pub struct TaskCall {
    pub state: String,
    pub resource: String,
    /// The effective input: after InputPath and Parameters.
    pub input: Value,
    /// The Map item index when the Task runs inside a Map iteration.
    pub item: Option<usize>,
    /// 0 for the first attempt.
    pub attempt: u32,
}

/// The effects of a state machine: what Task resources, Map item readers and result writers do.
pub trait Resources: Send + Sync {
    fn invoke(&self, call: TaskCall) -> BoxFuture<'_, Result<Value, Failure>>;

    /// A Map's `ItemReader`: the items, from its resource and evaluated `Parameters`.
    fn read_items<'a>(
        &'a self,
        state: &'a str,
        resource: &'a str,
        parameters: Value,
        reader_config: Option<&'a Value>,
    ) -> BoxFuture<'a, Result<Vec<Value>, Failure>> {
        let _ = (parameters, reader_config);
        Box::pin(async move {
            Err(Failure::new(
                "States.Runtime",
                format!("state {state:?}: no item reader is bound for {resource}"),
            ))
        })
    }

    /// A Map's `ResultWriter`: stores the iterations' results and returns the `ResultWriterDetails`.
    fn write_results<'a>(
        &'a self,
        state: &'a str,
        resource: &'a str,
        parameters: Value,
        results: Vec<Value>,
    ) -> BoxFuture<'a, Result<Value, Failure>> {
        let _ = (parameters, results);
        Box::pin(async move {
            Err(Failure::new(
                "States.Runtime",
                format!("state {state:?}: no result writer is bound for {resource}"),
            ))
        })
    }
}

/// A payload template (Parameters, ResultSelector, ItemSelector): literals, and `"key.$"` paths or intrinsic calls.
#[derive(Debug, Clone, PartialEq)]
enum Template {
    Literal(Value),
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
    Path(Path),
    Call(Call),
}

impl Template {
    fn parse(v: &Value, state: &str) -> Result<Template, AslError> {
        let bad = invalid(state);
        Ok(match v {
            Value::Object(m) => {
                let mut out = Vec::new();
                for (k, v) in m {
                    if let Some(key) = k.strip_suffix(".$") {
                        let Value::String(s) = v else {
                            return Err(bad(format!("{k:?} must be a path or an intrinsic function string")));
                        };
                        let t = if intrinsics::is_call(s) {
                            Template::Call(intrinsics::parse(s).map_err(bad)?)
                        } else {
                            Template::Path(Path::parse(s).map_err(bad)?)
                        };
                        out.push((key.to_string(), t));
                    } else {
                        out.push((k.clone(), Template::parse(v, state)?));
                    }
                }
                Template::Object(out)
            }
            Value::Array(a) => Template::Array(a.iter().map(|v| Template::parse(v, state)).collect::<Result<_, _>>()?),
            other => Template::Literal(other.clone()),
        })
    }

    fn eval(&self, data: &Value, context: &Value, state: &str) -> Result<Value, Failure> {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Object(fields) => {
                let mut m = JsonMap::new();
                for (k, t) in fields {
                    m.insert(k.clone(), t.eval(data, context, state)?);
                }
                Value::Object(m)
            }
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.eval(data, context, state))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Path(p) => p
                .get(data, context)
                .cloned()
                .ok_or_else(|| Failure::runtime(state, format!("the JSONPath {} matches nothing", p.text)))?,
            Template::Call(c) => intrinsics::eval(c, data, context).map_err(|e| Failure::runtime(state, e))?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Retrier {
    errors: Vec<String>,
    interval: f64,
    max_attempts: u32,
    backoff: f64,
    max_delay: Option<f64>,
    full_jitter: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Catcher {
    errors: Vec<String>,
    result_path: Option<Path>,
    next: String,
}

/// Whether an `ErrorEquals` list matches an error name.
fn error_matches(list: &[String], error: &str) -> bool {
    list.iter()
        .any(|e| e == error || e == "States.ALL" || (e == "States.TaskFailed" && error != "States.Timeout"))
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Value(Value),
    Path(Path),
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    Test { var: Path, op: String, operand: Operand },
}

const COMPARISONS: &[&str] = &[
    "StringEquals",
    "StringLessThan",
    "StringGreaterThan",
    "StringLessThanEquals",
    "StringGreaterThanEquals",
    "StringMatches",
    "NumericEquals",
    "NumericLessThan",
    "NumericGreaterThan",
    "NumericLessThanEquals",
    "NumericGreaterThanEquals",
    "BooleanEquals",
    "IsNull",
    "IsPresent",
    "IsString",
    "IsNumeric",
    "IsBoolean",
];

impl Rule {
    fn parse(v: &Value, state: &str, top: bool) -> Result<Rule, AslError> {
        let bad = invalid(state);
        let m = v
            .as_object()
            .ok_or_else(|| bad("a choice rule must be an object".into()))?;
        let nested = |k: &str| -> Result<Vec<Rule>, AslError> {
            m[k].as_array()
                .ok_or_else(|| bad(format!("{k} takes an array of rules")))?
                .iter()
                .map(|r| Rule::parse(r, state, false))
                .collect()
        };
        let allowed_meta = |k: &str| k == "Comment" || (top && k == "Next");
        if m.contains_key("And") {
            return Ok(Rule::And(nested("And")?));
        }
        if m.contains_key("Or") {
            return Ok(Rule::Or(nested("Or")?));
        }
        if let Some(n) = m.get("Not") {
            return Ok(Rule::Not(Box::new(Rule::parse(n, state, false)?)));
        }
        let var = m
            .get("Variable")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a choice rule needs Variable (or And, Or, Not)".into()))?;
        let var = Path::parse(var).map_err(bad)?;
        let mut test = None;
        for (k, v) in m {
            if k == "Variable" || allowed_meta(k) {
                continue;
            }
            let (op, is_path) = match k.strip_suffix("Path") {
                Some(op) if COMPARISONS.contains(&op) && !op.starts_with("Is") => (op, true),
                _ if COMPARISONS.contains(&k.as_str()) => (k.as_str(), false),
                _ => {
                    return Err(AslError::Unsupported {
                        state: state.into(),
                        what: format!("choice comparison {k:?}"),
                    })
                }
            };
            if test.is_some() {
                return Err(bad("a choice rule has exactly one comparison".into()));
            }
            let operand = if is_path {
                Operand::Path(Path::parse(v.as_str().ok_or_else(|| bad(format!("{k} takes a path")))?).map_err(bad)?)
            } else {
                Operand::Value(v.clone())
            };
            test = Some((op.to_string(), operand));
        }
        let (op, operand) = test.ok_or_else(|| bad("a choice rule needs a comparison".into()))?;
        Ok(Rule::Test {
            var: var.clone(),
            op,
            operand,
        })
    }

    fn eval(&self, data: &Value, context: &Value, state: &str) -> Result<bool, Failure> {
        match self {
            Rule::And(rs) => {
                for r in rs {
                    if !r.eval(data, context, state)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Rule::Or(rs) => {
                for r in rs {
                    if r.eval(data, context, state)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Rule::Not(r) => Ok(!r.eval(data, context, state)?),
            Rule::Test { var, op, operand } => {
                let found = var.get(data, context);
                if op == "IsPresent" {
                    return Ok(found.is_some() == (operand == &Operand::Value(Value::Bool(true))));
                }
                let Some(v) = found else {
                    return Err(Failure::runtime(
                        state,
                        format!("choice variable {} matches nothing", var.text),
                    ));
                };
                let b = match operand {
                    Operand::Value(b) => b.clone(),
                    Operand::Path(p) => p
                        .get(data, context)
                        .cloned()
                        .ok_or_else(|| Failure::runtime(state, format!("choice operand {} matches nothing", p.text)))?,
                };
                let want = b == Value::Bool(true);
                Ok(match op.as_str() {
                    "IsNull" => v.is_null() == want,
                    "IsString" => v.is_string() == want,
                    "IsNumeric" => v.is_number() == want,
                    "IsBoolean" => v.is_boolean() == want,
                    "BooleanEquals" => v.as_bool().is_some() && v.as_bool() == b.as_bool(),
                    "StringMatches" => match (v.as_str(), b.as_str()) {
                        (Some(s), Some(p)) => string_matches(p, s),
                        _ => false,
                    },
                    o if o.starts_with("String") => match (v.as_str(), b.as_str()) {
                        (Some(x), Some(y)) => compare(o.trim_start_matches("String"), x.cmp(y)),
                        _ => false,
                    },
                    o => match (v.as_f64(), b.as_f64()) {
                        (Some(x), Some(y)) => x
                            .partial_cmp(&y)
                            .is_some_and(|ord| compare(o.trim_start_matches("Numeric"), ord)),
                        _ => false,
                    },
                })
            }
        }
    }
}

fn compare(op: &str, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        "Equals" => ord == Equal,
        "LessThan" => ord == Less,
        "GreaterThan" => ord == Greater,
        "LessThanEquals" => ord != Greater,
        "GreaterThanEquals" => ord != Less,
        _ => false,
    }
}

/// `StringMatches`: `*` matches any run of characters; `\*` and `\\` are literal.
fn string_matches(pattern: &str, s: &str) -> bool {
    #[derive(PartialEq)]
    enum T {
        Star,
        Char(char),
    }
    let mut toks = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => toks.push(T::Char(it.next().unwrap_or('\\'))),
            '*' => toks.push(T::Star),
            c => toks.push(T::Char(c)),
        }
    }
    fn go(p: &[T], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(T::Star) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            Some(T::Char(c)) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    go(&toks, &s.chars().collect::<Vec<_>>())
}

#[derive(Debug, Clone, PartialEq)]
enum WaitFor {
    Seconds(f64),
    Path(Path),
}

#[derive(Debug, Clone)]
struct MapSpec {
    processor: Arc<Machine>,
    distributed: bool,
    items_path: Option<Path>,
    reader: Option<(String, Template, Option<Value>)>,
    selector: Option<Template>,
    max_concurrency: Option<u64>,
    max_concurrency_path: Option<Path>,
    writer: Option<(String, Template)>,
}

#[derive(Debug, Clone)]
enum Kind {
    Task {
        resource: String,
        timeout: Option<u64>,
    },
    Map(Box<MapSpec>),
    Choice {
        choices: Vec<(Rule, String)>,
        default: Option<String>,
    },
    Wait(WaitFor),
    Pass {
        result: Option<Value>,
    },
    Succeed,
    Fail {
        error: Option<String>,
        cause: Option<String>,
        error_path: Option<Path>,
        cause_path: Option<Path>,
    },
}

#[derive(Debug, Clone)]
struct State {
    name: String,
    kind: Kind,
    /// `None`: the JSON null path (an empty object).
    input_path: Option<Path>,
    output_path: Option<Path>,
    /// `None`: the result is discarded.
    result_path: Option<Path>,
    parameters: Option<Template>,
    result_selector: Option<Template>,
    next: Option<String>,
    retry: Vec<Retrier>,
    catch: Vec<Catcher>,
}

/// A parsed state machine (or a Map's item processor).
#[derive(Debug)]
pub struct Machine {
    start_at: String,
    states: HashMap<String, State>,
    timeout: Option<u64>,
}

fn root() -> Path {
    Path::parse("$").unwrap_or(Path {
        context: false,
        steps: Vec::new(),
        text: "$".into(),
    })
}

impl Machine {
    /// Parses and checks a definition: every state's fields, every transition target, every path and template.
    pub fn parse(definition: &Value) -> Result<Arc<Machine>, AslError> {
        Self::parse_at(definition, "(top level)", true)
    }

    pub fn from_json(text: &str) -> Result<Arc<Machine>, AslError> {
        let v: Value = serde_json::from_str(text).map_err(|e| AslError::Invalid(e.to_string()))?;
        Self::parse(&v)
    }

    fn parse_at(v: &Value, owner: &str, top: bool) -> Result<Arc<Machine>, AslError> {
        let m = v
            .as_object()
            .ok_or_else(|| AslError::Invalid(format!("{owner}: a state machine must be an object")))?;
        let allowed: &[&str] = if top {
            &[
                "StartAt",
                "States",
                "Comment",
                "TimeoutSeconds",
                "Version",
                "QueryLanguage",
            ]
        } else {
            &["StartAt", "States", "Comment", "ProcessorConfig"]
        };
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(AslError::Unsupported {
                    state: owner.into(),
                    what: format!("field {k:?}"),
                });
            }
        }
        if let Some(q) = m.get("QueryLanguage") {
            if q != "JSONPath" {
                return Err(AslError::Unsupported {
                    state: owner.into(),
                    what: format!("QueryLanguage {q}"),
                });
            }
        }
        let start_at = m
            .get("StartAt")
            .and_then(Value::as_str)
            .ok_or_else(|| AslError::Invalid(format!("{owner}: StartAt is missing")))?
            .to_string();
        let states_json = m
            .get("States")
            .and_then(Value::as_object)
            .ok_or_else(|| AslError::Invalid(format!("{owner}: States is missing")))?;
        let mut states = HashMap::new();
        for (name, s) in states_json {
            states.insert(name.clone(), parse_state(name, s)?);
        }
        let machine = Machine {
            start_at,
            states,
            timeout: m.get("TimeoutSeconds").and_then(Value::as_u64),
        };
        machine.check_transitions(owner)?;
        Ok(Arc::new(machine))
    }

    fn check_transitions(&self, owner: &str) -> Result<(), AslError> {
        if !self.states.contains_key(&self.start_at) {
            return Err(AslError::Invalid(format!(
                "{owner}: StartAt {:?} names no state",
                self.start_at
            )));
        }
        for s in self.states.values() {
            let mut targets: Vec<&String> = s.next.iter().chain(s.catch.iter().map(|c| &c.next)).collect();
            if let Kind::Choice { choices, default } = &s.kind {
                targets.extend(choices.iter().map(|(_, n)| n));
                targets.extend(default.iter());
            }
            for t in targets {
                if !self.states.contains_key(t) {
                    return Err(AslError::State {
                        state: s.name.clone(),
                        what: format!("transition to {t:?}, which is not a state here"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every error name the definition's Retry and Catch lists name, with the state and whether it is retried.
    pub fn error_names(&self) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        for s in self.states.values() {
            for r in &s.retry {
                out.extend(r.errors.iter().map(|e| (s.name.clone(), e.clone(), true)));
            }
            for c in &s.catch {
                out.extend(c.errors.iter().map(|e| (s.name.clone(), e.clone(), false)));
            }
            if let Kind::Map(m) = &s.kind {
                out.extend(m.processor.error_names());
            }
        }
        out
    }

    /// Whether `error`, raised by the Task state `state` (anywhere, Map processors included), is retried there.
    pub fn retries(&self, state: &str, error: &str) -> bool {
        self.states.values().any(|s| match &s.kind {
            Kind::Map(m) => m.processor.retries(state, error),
            _ => s.name == state && s.retry.iter().any(|r| error_matches(&r.errors, error)),
        })
    }

    /// The names of every Task state and its resource (Map processors included).
    pub fn tasks(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for s in self.states.values() {
            match &s.kind {
                Kind::Task { resource, .. } => out.push((s.name.clone(), resource.clone())),
                Kind::Map(m) => out.extend(m.processor.tasks()),
                _ => {}
            }
        }
        out
    }
}

/// The error of a state's definition, naming the state.
fn invalid(state: &str) -> impl Fn(String) -> AslError + Copy + '_ {
    move |what| AslError::State {
        state: state.into(),
        what,
    }
}

/// An optional field holding a path (`ErrorPath`, `ItemsPath`, …): absent is `None`, anything but a path an error.
fn optional_path(m: &JsonMap<String, Value>, k: &str, state: &str) -> Result<Option<Path>, AslError> {
    let bad = invalid(state);
    m.get(k)
        .map(|v| v.as_str().ok_or_else(|| bad(format!("{k} must be a path"))))
        .transpose()?
        .map(|p| Path::parse(p).map_err(bad))
        .transpose()
}

fn parse_state(name: &str, v: &Value) -> Result<State, AslError> {
    let bad = invalid(name);
    let m = v.as_object().ok_or_else(|| bad("a state must be an object".into()))?;
    let ty = m
        .get("Type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Type is missing".into()))?;
    const IO: &[&str] = &["Type", "Comment", "InputPath", "OutputPath"];
    const FLOW: &[&str] = &["Next", "End"];
    let extra: &[&str] = match ty {
        "Task" => &[
            "Resource",
            "Parameters",
            "ResultSelector",
            "ResultPath",
            "Retry",
            "Catch",
            "TimeoutSeconds",
        ],
        "Map" => &[
            "ItemProcessor",
            "Iterator",
            "ItemReader",
            "ItemsPath",
            "ItemSelector",
            "Parameters",
            "MaxConcurrency",
            "MaxConcurrencyPath",
            "ResultWriter",
            "ResultSelector",
            "ResultPath",
            "Retry",
            "Catch",
            "Label",
        ],
        "Choice" => &["Choices", "Default"],
        "Wait" => &["Seconds", "SecondsPath"],
        "Pass" => &["Result", "ResultPath", "Parameters"],
        "Succeed" => &[],
        "Fail" => &["Error", "Cause", "ErrorPath", "CausePath"],
        other => {
            return Err(AslError::Unsupported {
                state: name.into(),
                what: format!("state type {other:?}"),
            })
        }
    };
    let flows = !matches!(ty, "Choice" | "Succeed" | "Fail");
    for k in m.keys() {
        let known = extra.contains(&k.as_str())
            || (ty != "Fail" && IO.contains(&k.as_str()))
            || (ty == "Fail" && matches!(k.as_str(), "Type" | "Comment"))
            || (flows && FLOW.contains(&k.as_str()));
        if !known {
            return Err(AslError::Unsupported {
                state: name.into(),
                what: format!("field {k:?} on a {ty} state"),
            });
        }
    }
    let data_path = |k: &str| -> Result<Option<Path>, AslError> {
        match m.get(k) {
            None => Ok(Some(root())),
            Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Path::parse(s).map(Some).map_err(bad),
            Some(_) => Err(bad(format!("{k} must be a path or null"))),
        }
    };
    let template = |k: &str| m.get(k).map(|v| Template::parse(v, name)).transpose();
    let next = m.get("Next").and_then(Value::as_str).map(str::to_string);
    let end = m.get("End") == Some(&Value::Bool(true));
    if flows && next.is_some() == end {
        return Err(bad("exactly one of Next and End(true) is required".into()));
    }
    let mut retry = Vec::new();
    for r in m.get("Retry").and_then(Value::as_array).into_iter().flatten() {
        retry.push(parse_retrier(r, name)?);
    }
    let mut catch = Vec::new();
    for c in m.get("Catch").and_then(Value::as_array).into_iter().flatten() {
        let errors = error_list(c, name)?;
        let result_path = match c.get("ResultPath") {
            None => Some(root()),
            Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Path::parse(s).map_err(bad)?),
            Some(_) => return Err(bad("a catcher's ResultPath must be a path or null".into())),
        };
        let next = c
            .get("Next")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a catcher needs Next".into()))?
            .to_string();
        only_fields(name, "catcher", c, &["ErrorEquals", "ResultPath", "Next", "Comment"])?;
        catch.push(Catcher {
            errors,
            result_path,
            next,
        });
    }
    let kind = match ty {
        "Task" => Kind::Task {
            resource: m
                .get("Resource")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("Resource is missing".into()))?
                .to_string(),
            timeout: m
                .get("TimeoutSeconds")
                .map(|t| {
                    t.as_u64()
                        .filter(|t| *t > 0)
                        .ok_or_else(|| bad("TimeoutSeconds must be a positive integer".into()))
                })
                .transpose()?,
        },
        "Map" => Kind::Map(Box::new(parse_map(name, m)?)),
        "Choice" => {
            let mut choices = Vec::new();
            for c in m
                .get("Choices")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("Choices is missing".into()))?
            {
                let next = c
                    .get("Next")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("every choice needs Next".into()))?;
                choices.push((Rule::parse(c, name, true)?, next.to_string()));
            }
            Kind::Choice {
                choices,
                default: m.get("Default").and_then(Value::as_str).map(str::to_string),
            }
        }
        "Wait" => match (m.get("Seconds"), m.get("SecondsPath")) {
            (Some(s), None) => Kind::Wait(WaitFor::Seconds(
                s.as_f64()
                    .filter(|s| *s >= 0.0)
                    .ok_or_else(|| bad("Seconds must be a non-negative number".into()))?,
            )),
            (None, Some(Value::String(p))) => Kind::Wait(WaitFor::Path(Path::parse(p).map_err(bad)?)),
            _ => return Err(bad("a Wait needs exactly one of Seconds and SecondsPath".into())),
        },
        "Pass" => Kind::Pass {
            result: m.get("Result").cloned(),
        },
        "Succeed" => Kind::Succeed,
        "Fail" => {
            let path = |k: &str| optional_path(m, k, name);
            Kind::Fail {
                error: m.get("Error").and_then(Value::as_str).map(str::to_string),
                cause: m.get("Cause").and_then(Value::as_str).map(str::to_string),
                error_path: path("ErrorPath")?,
                cause_path: path("CausePath")?,
            }
        }
        _ => unreachable!("checked above"),
    };
    Ok(State {
        name: name.to_string(),
        kind,
        input_path: data_path("InputPath")?,
        output_path: data_path("OutputPath")?,
        result_path: data_path("ResultPath")?,
        parameters: if ty == "Map" { None } else { template("Parameters")? },
        result_selector: template("ResultSelector")?,
        next,
        retry,
        catch,
    })
}

/// Refuses any field of `v` (a `what` of `state`) outside `allowed`.
fn only_fields(state: &str, what: &str, v: &Value, allowed: &[&str]) -> Result<(), AslError> {
    match v
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .find(|k| !allowed.contains(&k.as_str()))
    {
        Some(k) => Err(AslError::Unsupported {
            state: state.into(),
            what: format!("{what} field {k:?}"),
        }),
        None => Ok(()),
    }
}

fn error_list(v: &Value, state: &str) -> Result<Vec<String>, AslError> {
    let list: Vec<String> = v
        .get("ErrorEquals")
        .and_then(Value::as_array)
        .ok_or_else(|| AslError::State {
            state: state.into(),
            what: "ErrorEquals is missing".into(),
        })?
        .iter()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    if list.is_empty() {
        return Err(AslError::State {
            state: state.into(),
            what: "ErrorEquals must name at least one error".into(),
        });
    }
    if list.iter().any(|e| e == "States.ALL") && list.len() > 1 {
        return Err(AslError::State {
            state: state.into(),
            what: "States.ALL must appear alone in ErrorEquals".into(),
        });
    }
    Ok(list)
}

fn parse_retrier(r: &Value, state: &str) -> Result<Retrier, AslError> {
    only_fields(
        state,
        "retrier",
        r,
        &[
            "ErrorEquals",
            "IntervalSeconds",
            "MaxAttempts",
            "BackoffRate",
            "MaxDelaySeconds",
            "JitterStrategy",
            "Comment",
        ],
    )?;
    let num = |k: &str, default: f64| r.get(k).and_then(Value::as_f64).unwrap_or(default);
    let full_jitter = match r.get("JitterStrategy").and_then(Value::as_str) {
        None | Some("NONE") => false,
        Some("FULL") => true,
        Some(other) => {
            return Err(AslError::State {
                state: state.into(),
                what: format!("JitterStrategy {other:?} (FULL or NONE)"),
            })
        }
    };
    Ok(Retrier {
        errors: error_list(r, state)?,
        interval: num("IntervalSeconds", 1.0),
        max_attempts: r.get("MaxAttempts").and_then(Value::as_u64).unwrap_or(3) as u32,
        backoff: num("BackoffRate", 2.0),
        max_delay: r.get("MaxDelaySeconds").and_then(Value::as_f64),
        full_jitter,
    })
}

fn parse_map(name: &str, m: &JsonMap<String, Value>) -> Result<MapSpec, AslError> {
    let bad = invalid(name);
    let processor_json = m
        .get("ItemProcessor")
        .or_else(|| m.get("Iterator"))
        .ok_or_else(|| bad("ItemProcessor is missing".into()))?;
    let distributed = processor_json.pointer("/ProcessorConfig/Mode").and_then(Value::as_str) == Some("DISTRIBUTED");
    if let Some(cfg) = processor_json.get("ProcessorConfig").and_then(Value::as_object) {
        for (k, v) in cfg {
            let ok = match k.as_str() {
                "Mode" => v == "INLINE" || v == "DISTRIBUTED",
                "ExecutionType" => v == "STANDARD" || v == "EXPRESS",
                _ => false,
            };
            if !ok {
                return Err(AslError::Unsupported {
                    state: name.into(),
                    what: format!("ProcessorConfig {k} = {v}"),
                });
            }
        }
    }
    let processor = Machine::parse_at(processor_json, &format!("{name} (ItemProcessor)"), false)?;
    // ItemReader and ResultWriter: a Resource and its Parameters (and the reader's ReaderConfig).
    let resource_of = |what: &str, v: &Value, allowed: &[&str]| -> Result<(String, Template), AslError> {
        only_fields(name, what, v, allowed)?;
        let resource = v
            .get("Resource")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{what} needs a Resource")))?;
        Ok((
            resource.to_string(),
            Template::parse(v.get("Parameters").unwrap_or(&Value::Null), name)?,
        ))
    };
    let reader = match m.get("ItemReader") {
        Some(r) => {
            let (resource, params) = resource_of("ItemReader", r, &["Resource", "Parameters", "ReaderConfig"])?;
            Some((resource, params, r.get("ReaderConfig").cloned()))
        }
        None => None,
    };
    let writer = m
        .get("ResultWriter")
        .map(|w| resource_of("ResultWriter", w, &["Resource", "Parameters"]))
        .transpose()?;
    let path = |k: &str| optional_path(m, k, name);
    if m.contains_key("ItemReader") && m.contains_key("ItemsPath") {
        return Err(bad("ItemReader and ItemsPath exclude each other".into()));
    }
    let selector = m
        .get("ItemSelector")
        .or_else(|| m.get("Parameters"))
        .map(|v| Template::parse(v, name))
        .transpose()?;
    Ok(MapSpec {
        processor,
        distributed,
        items_path: path("ItemsPath")?,
        reader,
        selector,
        max_concurrency: m.get("MaxConcurrency").and_then(Value::as_u64),
        max_concurrency_path: path("MaxConcurrencyPath")?,
        writer,
    })
}

/// Where a state runs: the execution, and the Map item when inside an iteration.
#[derive(Clone)]
struct Ctx {
    execution: Arc<Value>,
    item: Option<(usize, Value)>,
}

impl Ctx {
    fn object(&self, state: &str, retry: u32) -> Value {
        let mut c = json!({
            "Execution": *self.execution,
            "State": {"Name": state, "EnteredTime": now_rfc3339(), "RetryCount": retry},
            "StateMachine": {"Id": "arn:aws:states:local:000000000000:stateMachine:pgshift", "Name": "pgshift"},
        });
        if let Some((i, v)) = &self.item {
            c["Map"] = json!({"Item": {"Index": i, "Value": v}});
        }
        c
    }
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let whole = secs.floor() as i64;
    let (y, mo, d) = crate::pgtext::civil_from_days(whole.div_euclid(86_400));
    let t = whole.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t / 3600,
        t / 60 % 60,
        t % 60,
        ((secs - secs.floor()) * 1000.0) as u32
    )
}

/// A uniform number in [0, 1) for retry jitter (the randomness of a v4 UUID: no extra dependency for a delay).
fn unit_random() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Runs state machines against bound resources.
#[derive(Clone)]
pub struct Interpreter {
    machine: Arc<Machine>,
    resources: Arc<dyn Resources>,
    transitions: Arc<std::sync::atomic::AtomicU64>,
}

enum Step {
    Next(String, Value),
    End(Value),
}

impl Interpreter {
    pub fn new(machine: Arc<Machine>, resources: Arc<dyn Resources>) -> Self {
        Self {
            machine,
            resources,
            transitions: Arc::default(),
        }
    }

    /// States entered so far, Map iterations included (what a Standard workflow bills as state transitions).
    pub fn transitions(&self) -> u64 {
        self.transitions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs one execution to its end: the output, or the failure that ended it.
    pub async fn execute(&self, name: &str, input: Value) -> Result<Value, Failure> {
        let ctx = Ctx {
            execution: Arc::new(json!({
                "Id": format!("arn:aws:states:local:000000000000:execution:pgshift:{name}"),
                "Name": name,
                "Input": input,
                "StartTime": now_rfc3339(),
            })),
            item: None,
        };
        let run = self.run_machine(self.machine.clone(), input, ctx);
        match self.machine.timeout {
            Some(t) => tokio::time::timeout(Duration::from_secs(t), run)
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::new(
                        "States.Timeout",
                        format!("execution timed out after {t} s"),
                    ))
                }),
            None => run.await,
        }
    }

    fn run_machine(&self, machine: Arc<Machine>, input: Value, ctx: Ctx) -> BoxFuture<'static, Result<Value, Failure>> {
        let this = self.clone();
        Box::pin(async move {
            let mut current = machine.start_at.clone();
            let mut data = input;
            loop {
                let state = machine
                    .states
                    .get(&current)
                    .ok_or_else(|| Failure::new("States.Runtime", format!("no state {current:?}")))?;
                this.transitions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let span = tracing::debug_span!("state", name = %state.name, item = ?ctx.item.as_ref().map(|i| i.0));
                let step = tracing::Instrument::instrument(this.run_state(state, data, &ctx), span).await?;
                match step {
                    Step::Next(n, v) => {
                        current = n;
                        data = v;
                    }
                    Step::End(v) => return Ok(v),
                }
            }
        })
    }

    async fn run_state(&self, s: &State, raw: Value, ctx: &Ctx) -> Result<Step, Failure> {
        let done = |v: Value| match &s.next {
            Some(n) => Step::Next(n.clone(), v),
            None => Step::End(v),
        };
        match &s.kind {
            Kind::Task { .. } | Kind::Map(_) => {
                let mut attempts = vec![0u32; s.retry.len()];
                let mut retry_count = 0;
                loop {
                    let failure = match self.attempt(s, &raw, ctx, retry_count).await {
                        Ok(v) => return Ok(done(v)),
                        Err(f) => f,
                    };
                    if failure.error == "States.Runtime" {
                        return Err(failure);
                    }
                    if let Some(i) = s.retry.iter().position(|r| error_matches(&r.errors, &failure.error)) {
                        let r = &s.retry[i];
                        if attempts[i] < r.max_attempts {
                            let mut delay = r.interval * r.backoff.powi(attempts[i] as i32);
                            if let Some(max) = r.max_delay {
                                delay = delay.min(max);
                            }
                            if r.full_jitter {
                                delay *= unit_random();
                            }
                            attempts[i] += 1;
                            retry_count += 1;
                            tracing::info!(state = %s.name, error = %failure.error, cause = %failure.cause,
                                attempt = attempts[i], delay_seconds = delay, "retrying");
                            tokio::time::sleep(Duration::from_secs_f64(delay)).await;
                            continue;
                        }
                    }
                    if let Some(c) = s.catch.iter().find(|c| error_matches(&c.errors, &failure.error)) {
                        tracing::info!(state = %s.name, error = %failure.error, next = %c.next, "caught");
                        let err = json!({"Error": failure.error, "Cause": failure.cause});
                        let out = apply_result_path(c.result_path.as_ref(), raw, err, &s.name)?;
                        return Ok(Step::Next(c.next.clone(), out));
                    }
                    return Err(failure);
                }
            }
            Kind::Pass { result } => {
                let c = ctx.object(&s.name, 0);
                let effective = input_of(s, &raw, &c)?;
                let value = match (result, &s.parameters) {
                    (Some(r), _) => r.clone(),
                    (None, Some(p)) => p.eval(&effective, &c, &s.name)?,
                    (None, None) => effective,
                };
                let out = apply_result_path(s.result_path.as_ref(), raw, value, &s.name)?;
                Ok(done(output_of(s, out)?))
            }
            Kind::Wait(w) => {
                let c = ctx.object(&s.name, 0);
                let effective = input_of(s, &raw, &c)?;
                let secs = match w {
                    WaitFor::Seconds(x) => *x,
                    WaitFor::Path(p) => p
                        .get(&effective, &c)
                        .and_then(Value::as_f64)
                        .filter(|x| *x >= 0.0)
                        .ok_or_else(|| Failure::runtime(&s.name, format!("{} is not a non-negative number", p.text)))?,
                };
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                Ok(done(output_of(s, effective)?))
            }
            Kind::Choice { choices, default } => {
                let c = ctx.object(&s.name, 0);
                let effective = input_of(s, &raw, &c)?;
                for (rule, next) in choices {
                    if rule.eval(&effective, &c, &s.name)? {
                        return Ok(Step::Next(next.clone(), output_of(s, effective)?));
                    }
                }
                match default {
                    Some(d) => Ok(Step::Next(d.clone(), output_of(s, effective)?)),
                    None => Err(Failure::new(
                        "States.NoChoiceMatched",
                        format!("state {:?}: no choice rule matched and there is no Default", s.name),
                    )),
                }
            }
            Kind::Succeed => {
                let c = ctx.object(&s.name, 0);
                let effective = input_of(s, &raw, &c)?;
                Ok(Step::End(output_of(s, effective)?))
            }
            Kind::Fail {
                error,
                cause,
                error_path,
                cause_path,
            } => {
                let c = ctx.object(&s.name, 0);
                let read = |p: &Option<Path>| -> Result<Option<String>, Failure> {
                    let Some(p) = p else { return Ok(None) };
                    match p.get(&raw, &c) {
                        Some(Value::String(v)) => Ok(Some(v.clone())),
                        _ => Err(Failure::runtime(&s.name, format!("{} is not a string", p.text))),
                    }
                };
                Err(Failure::new(
                    read(error_path)?
                        .or_else(|| error.clone())
                        .unwrap_or_else(|| "States.Fail".into()),
                    read(cause_path)?.or_else(|| cause.clone()).unwrap_or_default(),
                ))
            }
        }
    }

    /// One attempt of a Task or Map: input processing, the work, result processing.
    async fn attempt(&self, s: &State, raw: &Value, ctx: &Ctx, retry: u32) -> Result<Value, Failure> {
        let c = ctx.object(&s.name, retry);
        let effective = input_of(s, raw, &c)?;
        let result = match &s.kind {
            Kind::Task { resource, timeout } => {
                let input = match &s.parameters {
                    Some(p) => p.eval(&effective, &c, &s.name)?,
                    None => effective,
                };
                let call = TaskCall {
                    state: s.name.clone(),
                    resource: resource.clone(),
                    input,
                    item: ctx.item.as_ref().map(|i| i.0),
                    attempt: retry,
                };
                let invoke = self.resources.invoke(call);
                match timeout {
                    Some(t) => tokio::time::timeout(Duration::from_secs(*t), invoke)
                        .await
                        .unwrap_or_else(|_| {
                            Err(Failure::new(
                                "States.Timeout",
                                format!("state {:?} timed out after {t} s", s.name),
                            ))
                        })?,
                    None => invoke.await?,
                }
            }
            Kind::Map(m) => self.run_map(s, m, effective, &c, ctx).await?,
            _ => unreachable!("only Task and Map states make attempts"),
        };
        let selected = match &s.result_selector {
            Some(t) => t.eval(&result, &c, &s.name)?,
            None => result,
        };
        let out = apply_result_path(s.result_path.as_ref(), raw.clone(), selected, &s.name)?;
        output_of(s, out)
    }

    async fn run_map(&self, s: &State, m: &MapSpec, effective: Value, c: &Value, ctx: &Ctx) -> Result<Value, Failure> {
        let items: Vec<Value> = match (&m.reader, &m.items_path) {
            (Some((resource, params, config)), _) => {
                let params = params.eval(&effective, c, &s.name)?;
                self.resources
                    .read_items(&s.name, resource, params, config.as_ref())
                    .await?
            }
            (None, path) => {
                let p = path.clone().unwrap_or_else(root);
                match p.get(&effective, c) {
                    Some(Value::Array(a)) => a.clone(),
                    _ => {
                        return Err(Failure::runtime(
                            &s.name,
                            format!("ItemsPath {} is not an array", p.text),
                        ))
                    }
                }
            }
        };
        let limit = match (&m.max_concurrency_path, m.max_concurrency) {
            (Some(p), _) => p.get(&effective, c).and_then(Value::as_u64).ok_or_else(|| {
                Failure::runtime(
                    &s.name,
                    format!("MaxConcurrencyPath {} is not a non-negative integer", p.text),
                )
            })?,
            (None, n) => n.unwrap_or(0),
        };
        let limit = if limit == 0 { items.len().max(1) } else { limit as usize };
        tracing::info!(state = %s.name, items = items.len(), max_concurrency = limit, "map");
        let permits = Arc::new(tokio::sync::Semaphore::new(limit));
        let mut set = JoinSet::new();
        let n = items.len();
        for (i, item) in items.into_iter().enumerate() {
            let child_ctx = Ctx {
                execution: ctx.execution.clone(),
                item: Some((i, item.clone())),
            };
            let input = match &m.selector {
                Some(t) => t.eval(&effective, &child_ctx.object(&s.name, 0), &s.name)?,
                None => item,
            };
            let permits = permits.clone();
            let run = self.run_machine(m.processor.clone(), input, child_ctx);
            set.spawn(async move {
                let _permit = permits.acquire_owned().await;
                (i, run.await)
            });
        }
        let mut results = vec![Value::Null; n];
        while let Some(joined) = set.join_next().await {
            let (i, r) = joined.map_err(|e| Failure::new("States.Runtime", format!("map iteration: {e}")))?;
            match r {
                Ok(v) => results[i] = v,
                Err(f) => {
                    set.abort_all();
                    return Err(if m.distributed {
                        Failure::new(
                            "States.ExceedToleratedFailureThreshold",
                            format!("state {:?}: item {i} failed with {}: {}", s.name, f.error, f.cause),
                        )
                    } else {
                        f
                    });
                }
            }
        }
        match &m.writer {
            Some((resource, params)) => {
                let params = params.eval(&effective, c, &s.name)?;
                let details = self.resources.write_results(&s.name, resource, params, results).await?;
                Ok(json!({
                    "MapRunArn": format!("arn:aws:states:local:000000000000:mapRun:pgshift/{}", s.name),
                    "ResultWriterDetails": details,
                }))
            }
            None => Ok(Value::Array(results)),
        }
    }
}

fn input_of(s: &State, raw: &Value, context: &Value) -> Result<Value, Failure> {
    match &s.input_path {
        None => Ok(json!({})),
        Some(p) => p
            .get(raw, context)
            .cloned()
            .ok_or_else(|| Failure::runtime(&s.name, format!("InputPath {} matches nothing", p.text))),
    }
}

fn output_of(s: &State, v: Value) -> Result<Value, Failure> {
    match &s.output_path {
        None => Ok(json!({})),
        Some(p) => p
            .get(&v, &Value::Null)
            .cloned()
            .ok_or_else(|| Failure::runtime(&s.name, format!("OutputPath {} matches nothing", p.text))),
    }
}

fn apply_result_path(path: Option<&Path>, mut raw: Value, result: Value, state: &str) -> Result<Value, Failure> {
    match path {
        None => Ok(raw),
        Some(p) if p.steps.is_empty() => Ok(result),
        Some(p) => {
            p.set(&mut raw, result).map_err(|e| Failure::runtime(state, e))?;
            Ok(raw)
        }
    }
}

#[cfg(test)]
mod tests;
