//! Layer 2, the Step Functions control-plane port: what the command line asks of a deployed state machine (start an
//! execution, redrive it, follow it, read its history and its Map run, list executions), each error one named,
//! actionable [`ExecutionError`]. The adapter is [`aws::AwsExecutions`] (aws-sdk-sfn); tests bind it to recorded
//! responses at the SDK boundary.

use futures_util::future::BoxFuture;
use serde::Serialize;

pub mod aws;

/// A Step Functions error, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutionError {
    #[error("execution {arn} does not exist (in this account and region): check the ARN, or list executions with pgshift runs --state-machine")]
    NotFound { arn: String },
    #[error("state machine {arn} does not exist (in this account and region): check --state-machine (the stack's StateMachineArn output)")]
    MachineNotFound { arn: String },
    #[error("execution {arn} cannot be redriven: {why}")]
    NotRedrivable { arn: String, why: String },
    #[error("an execution named {name} exists already with another input: pass another --run-id, or follow it with --follow")]
    AlreadyExists { name: String },
    #[error("Step Functions throttled the request ({detail}): try again in a few seconds")]
    Throttled { detail: String },
    #[error("Step Functions refused the request: {detail}")]
    Invalid { detail: String },
    #[error("Step Functions: {detail}")]
    Other { detail: String },
}

impl ExecutionError {
    /// The stable name (`Sfn.` and the service's exception name).
    pub fn name(&self) -> &'static str {
        match self {
            ExecutionError::NotFound { .. } => "Sfn.ExecutionDoesNotExist",
            ExecutionError::MachineNotFound { .. } => "Sfn.StateMachineDoesNotExist",
            ExecutionError::NotRedrivable { .. } => "Sfn.ExecutionNotRedrivable",
            ExecutionError::AlreadyExists { .. } => "Sfn.ExecutionAlreadyExists",
            ExecutionError::Throttled { .. } => "Sfn.ThrottlingException",
            ExecutionError::Invalid { .. } => "Sfn.InvalidInput",
            ExecutionError::Other { .. } => "Sfn.ServiceError",
        }
    }

    /// Worth another attempt.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ExecutionError::Throttled { .. } | ExecutionError::Other { .. })
    }
}

/// An execution as `DescribeExecution` (or `ListExecutions`) has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Execution {
    pub arn: String,
    pub name: String,
    /// RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED, PENDING_REDRIVE.
    pub status: String,
    /// Seconds since the Unix epoch.
    pub started_at: f64,
    pub stopped_at: Option<f64>,
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
    pub redrive_count: i32,
}

/// A Distributed Map run's item counts (`DescribeMapRun`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MapRunCounts {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub running: i64,
    pub pending: i64,
}

/// One event of an execution's history, as far as pgshift reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEvent {
    pub id: i64,
    /// The event type (`TaskStateEntered`, `MapRunStarted`, `ExecutionFailed`, …).
    pub kind: String,
    pub timestamp: f64,
    /// The state a `…StateEntered`/`…StateExited` event is of.
    pub state: Option<String>,
    /// A state's output (`…StateExited`).
    pub output: Option<String>,
    /// The Map run a `MapRunStarted` event started.
    pub map_run_arn: Option<String>,
}

/// One page of a listing, and the token of the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// The actions of Step Functions the command line uses.
pub trait Executions: Send + Sync {
    /// StartExecution: the execution's ARN.
    fn start<'a>(
        &'a self,
        state_machine: &'a str,
        name: &'a str,
        input: &'a str,
    ) -> BoxFuture<'a, Result<String, ExecutionError>>;
    /// RedriveExecution: the execution goes on from its failed and unfinished states.
    fn redrive<'a>(&'a self, execution: &'a str) -> BoxFuture<'a, Result<(), ExecutionError>>;
    fn describe<'a>(&'a self, execution: &'a str) -> BoxFuture<'a, Result<Execution, ExecutionError>>;
    fn map_run<'a>(&'a self, map_run: &'a str) -> BoxFuture<'a, Result<MapRunCounts, ExecutionError>>;
    /// GetExecutionHistory, one page.
    fn history<'a>(
        &'a self,
        execution: &'a str,
        next: Option<String>,
    ) -> BoxFuture<'a, Result<Page<HistoryEvent>, ExecutionError>>;
    /// ListExecutions of a state machine (or, with `map_run`, the child executions of a Map run), one page.
    fn list<'a>(
        &'a self,
        state_machine: Option<&'a str>,
        map_run: Option<&'a str>,
        next: Option<String>,
    ) -> BoxFuture<'a, Result<Page<Execution>, ExecutionError>>;
}

/// Every event of an execution's history, page after page.
pub async fn full_history(x: &dyn Executions, execution: &str) -> Result<Vec<HistoryEvent>, ExecutionError> {
    let mut out = Vec::new();
    let mut next = None;
    loop {
        let page = x.history(execution, next).await?;
        out.extend(page.items);
        match page.next {
            Some(n) => next = Some(n),
            None => return Ok(out),
        }
    }
}

/// Every execution of a state machine, or every child execution of a Map run, page after page.
pub async fn all_executions(
    x: &dyn Executions,
    state_machine: Option<&str>,
    map_run: Option<&str>,
) -> Result<Vec<Execution>, ExecutionError> {
    let mut out = Vec::new();
    let mut next = None;
    loop {
        let page = x.list(state_machine, map_run, next).await?;
        out.extend(page.items);
        match page.next {
            Some(n) => next = Some(n),
            None => return Ok(out),
        }
    }
}

/// State transitions in a history: Step Functions bills one per state entered (a retry enters its state again).
pub fn transitions(events: &[HistoryEvent]) -> u64 {
    events.iter().filter(|e| e.kind.ends_with("StateEntered")).count() as u64
}

/// A deployed run's state transitions as Step Functions bills them: the states its execution entered, and those of
/// every child execution of its Distributed Map run (each a Standard execution of its own).
pub async fn run_transitions(x: &dyn Executions, execution: &str) -> Result<u64, ExecutionError> {
    let events = full_history(x, execution).await?;
    let mut n = transitions(&events);
    if let Some(map_run) = map_run_of(&events) {
        for child in all_executions(x, None, Some(map_run)).await? {
            n += transitions(&full_history(x, &child.arn).await?);
        }
    }
    Ok(n)
}

/// The Map run an execution started, from its history.
pub fn map_run_of(events: &[HistoryEvent]) -> Option<&str> {
    events.iter().rev().find_map(|e| e.map_run_arn.as_deref())
}

/// The run's plan URL, from the output of the state that planned it (`$.plan.plan_url`).
pub fn plan_url_of(events: &[HistoryEvent]) -> Option<String> {
    events.iter().filter(|e| e.kind.ends_with("StateExited")).find_map(|e| {
        let v: serde_json::Value = serde_json::from_str(e.output.as_deref()?).ok()?;
        v.pointer("/plan/plan_url").and_then(|u| u.as_str()).map(str::to_string)
    })
}
