//! Parsing and checking a definition whole, before anything runs: any field or construct the interpreter does not run
//! is an error naming the state.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map as JsonMap, Value};

use crate::ast::*;
use crate::choice::Rule;
use crate::error::AslError;
use crate::path::Path;
use crate::template::Template;

impl Machine {
    /// Parses and checks a definition: every state's fields, every transition target, every path and template.
    pub fn parse(definition: &Value) -> Result<Arc<Machine>, AslError> {
        Self::parse_at(definition, "(top level)", true)
    }

    pub fn from_json(text: &str) -> Result<Arc<Machine>, AslError> {
        let v: Value = serde_json::from_str(text).map_err(|e| AslError::Invalid(e.to_string()))?;
        Self::parse(&v)
    }

    pub(crate) fn parse_at(v: &Value, owner: &str, top: bool) -> Result<Arc<Machine>, AslError> {
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

    pub(crate) fn check_transitions(&self, owner: &str) -> Result<(), AslError> {
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
pub(crate) fn invalid(state: &str) -> impl Fn(String) -> AslError + Copy + '_ {
    move |what| AslError::State {
        state: state.into(),
        what,
    }
}

/// An optional field holding a path (`ErrorPath`, `ItemsPath`, …): absent is `None`, anything but a path an error.
pub(crate) fn optional_path(m: &JsonMap<String, Value>, k: &str, state: &str) -> Result<Option<Path>, AslError> {
    let bad = invalid(state);
    m.get(k)
        .map(|v| v.as_str().ok_or_else(|| bad(format!("{k} must be a path"))))
        .transpose()?
        .map(|p| Path::parse(p).map_err(bad))
        .transpose()
}

pub(crate) fn parse_state(name: &str, v: &Value) -> Result<State, AslError> {
    let bad = invalid(name);
    let m = v.as_object().ok_or_else(|| bad("a state must be an object".into()))?;
    let ty = m
        .get("Type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Type is missing".into()))?;
    check_fields(name, ty, m)?;
    let flows = !matches!(ty, "Choice" | "Succeed" | "Fail");
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
        catch.push(parse_catcher(c, name)?);
    }
    Ok(State {
        name: name.to_string(),
        kind: parse_kind(name, ty, m)?,
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

/// The fields a state of type `ty` may have; any other is refused, naming it. An unknown type is refused too.
fn check_fields(name: &str, ty: &str, m: &JsonMap<String, Value>) -> Result<(), AslError> {
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
    Ok(())
}

/// One `Catch` entry.
fn parse_catcher(c: &Value, name: &str) -> Result<Catcher, AslError> {
    let bad = invalid(name);
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
    Ok(Catcher {
        errors,
        result_path,
        next,
    })
}

/// What a state of type `ty` does.
fn parse_kind(name: &str, ty: &str, m: &JsonMap<String, Value>) -> Result<Kind, AslError> {
    let bad = invalid(name);
    Ok(match ty {
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
        "Choice" => parse_choice(name, m)?,
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
        other => {
            return Err(AslError::Unsupported {
                state: name.into(),
                what: format!("state type {other:?}"),
            })
        }
    })
}

/// A Choice state's rules, each with its Next, and its Default.
fn parse_choice(name: &str, m: &JsonMap<String, Value>) -> Result<Kind, AslError> {
    let bad = invalid(name);
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
    Ok(Kind::Choice {
        choices,
        default: m.get("Default").and_then(Value::as_str).map(str::to_string),
    })
}

/// Refuses any field of `v` (a `what` of `state`) outside `allowed`.
pub(crate) fn only_fields(state: &str, what: &str, v: &Value, allowed: &[&str]) -> Result<(), AslError> {
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

pub(crate) fn error_list(v: &Value, state: &str) -> Result<Vec<String>, AslError> {
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

pub(crate) fn parse_retrier(r: &Value, state: &str) -> Result<Retrier, AslError> {
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

pub(crate) fn parse_map(name: &str, m: &JsonMap<String, Value>) -> Result<MapSpec, AslError> {
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
