//! A parsed definition: states, their transitions, retriers, catchers, waits and Map specifications.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::choice::Rule;
use crate::path::Path;
use crate::template::Template;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Retrier {
    pub(crate) errors: Vec<String>,
    pub(crate) interval: f64,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: f64,
    pub(crate) max_delay: Option<f64>,
    pub(crate) full_jitter: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Catcher {
    pub(crate) errors: Vec<String>,
    pub(crate) result_path: Option<Path>,
    pub(crate) next: String,
}

/// Whether an `ErrorEquals` list matches an error name.
pub(crate) fn error_matches(list: &[String], error: &str) -> bool {
    list.iter()
        .any(|e| e == error || e == "States.ALL" || (e == "States.TaskFailed" && error != "States.Timeout"))
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WaitFor {
    Seconds(f64),
    Path(Path),
}

#[derive(Debug, Clone)]
pub(crate) struct MapSpec {
    pub(crate) processor: Arc<Machine>,
    pub(crate) distributed: bool,
    pub(crate) items_path: Option<Path>,
    pub(crate) reader: Option<(String, Template, Option<Value>)>,
    pub(crate) selector: Option<Template>,
    pub(crate) max_concurrency: Option<u64>,
    pub(crate) max_concurrency_path: Option<Path>,
    pub(crate) writer: Option<(String, Template)>,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
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
pub(crate) struct State {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// `None`: the JSON null path (an empty object).
    pub(crate) input_path: Option<Path>,
    pub(crate) output_path: Option<Path>,
    /// `None`: the result is discarded.
    pub(crate) result_path: Option<Path>,
    pub(crate) parameters: Option<Template>,
    pub(crate) result_selector: Option<Template>,
    pub(crate) next: Option<String>,
    pub(crate) retry: Vec<Retrier>,
    pub(crate) catch: Vec<Catcher>,
}

/// A parsed state machine (or a Map's item processor).
#[derive(Debug)]
pub struct Machine {
    pub(crate) start_at: String,
    pub(crate) states: HashMap<String, State>,
    pub(crate) timeout: Option<u64>,
}

pub(crate) fn root() -> Path {
    Path::parse("$").unwrap_or(Path {
        context: false,
        steps: Vec::new(),
        text: "$".into(),
    })
}
