//! Running a parsed machine: states in order, Retry and Catch, Wait, Choice, and Map iterations as tokio tasks.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::ast::*;
use crate::error::Failure;
use crate::path::Path;
use crate::resources::{Resources, TaskCall};

/// Where a state runs: the execution, and the Map item when inside an iteration.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// The state machine's name, as its ARNs carry it.
    machine: Arc<str>,
    execution: Arc<Value>,
    item: Option<(usize, Value)>,
    /// History events of the execution this state runs in (a Distributed Map's items are executions of their own).
    history: Arc<History>,
}

/// Step Functions caps a standard execution's history at 25,000 events and fails the execution that reaches it
/// (<https://docs.aws.amazon.com/step-functions/latest/dg/bp-history-limit.html>). The interpreter counts what
/// Step Functions would record (a state entered and exited: 2 events; a task attempt scheduled, started and ended:
/// 3 more; a Map iteration started and ended: 2) and fails the same way, so a definition that loops ends by name
/// instead of hanging.
pub(crate) struct History {
    events: std::sync::atomic::AtomicU64,
    limit: u64,
}

/// The cap of a standard execution's history.
pub const HISTORY_LIMIT: u64 = 25_000;

impl History {
    fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            events: std::sync::atomic::AtomicU64::new(0),
            limit,
        })
    }

    fn record(&self, n: u64, state: &str) -> Result<(), Failure> {
        let total = self.events.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        if total > self.limit {
            return Err(Failure::new(
                "States.Runtime",
                format!(
                    "the execution's history reached {} events at state {state:?} (Step Functions' cap for a \
                     standard execution): the definition loops, or a run needs fewer polls or a Distributed Map",
                    self.limit
                ),
            ));
        }
        Ok(())
    }
}

impl Ctx {
    fn object(&self, state: &str, retry: u32) -> Value {
        let mut c = json!({
            "Execution": *self.execution,
            "State": {"Name": state, "EnteredTime": now_rfc3339(), "RetryCount": retry},
            "StateMachine": {"Id": arn("stateMachine", &self.machine), "Name": &*self.machine},
        });
        if let Some((i, v)) = &self.item {
            c["Map"] = json!({"Item": {"Index": i, "Value": v}});
        }
        c
    }
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A uniform number in [0, 1) for retry jitter (the randomness of a v4 UUID: no extra dependency for a delay).
pub(crate) fn unit_random() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Runs state machines against bound resources.
#[derive(Clone)]
pub struct Interpreter {
    machine: Arc<Machine>,
    resources: Arc<dyn Resources>,
    transitions: Arc<std::sync::atomic::AtomicU64>,
    name: Arc<str>,
    history_limit: u64,
}

/// A local ARN of a resource type (Step Functions' shape, in the `local` region of account 000000000000).
fn arn(kind: &str, name: &str) -> String {
    format!("arn:aws:states:local:000000000000:{kind}:{name}")
}

pub(crate) enum Step {
    Next(String, Value),
    End(Value),
}

impl Interpreter {
    pub fn new(machine: Arc<Machine>, resources: Arc<dyn Resources>) -> Self {
        Self {
            machine,
            resources,
            transitions: Arc::default(),
            name: Arc::from("state-machine"),
            history_limit: HISTORY_LIMIT,
        }
    }

    /// Another cap on an execution's history events (tests; [`HISTORY_LIMIT`] by default).
    pub fn with_history_limit(mut self, events: u64) -> Self {
        self.history_limit = events;
        self
    }

    /// The state machine's name in the ARNs of its context object (`$$.StateMachine`, `$$.Execution.Id`, Map runs).
    pub fn named(mut self, name: &str) -> Self {
        self.name = Arc::from(name);
        self
    }

    /// States entered so far, Map iterations included (what a Standard workflow bills as state transitions).
    pub fn transitions(&self) -> u64 {
        self.transitions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs one execution to its end: the output, or the failure that ended it.
    pub async fn execute(&self, name: &str, input: Value) -> Result<Value, Failure> {
        let ctx = Ctx {
            machine: self.name.clone(),
            execution: Arc::new(json!({
                "Id": arn("execution", &format!("{}:{name}", self.name)),
                "Name": name,
                "Input": input,
                "StartTime": now_rfc3339(),
            })),
            item: None,
            history: History::new(self.history_limit),
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
                ctx.history.record(2, &state.name)?;
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
        let c = ctx.object(&s.name, 0);
        match &s.kind {
            Kind::Task { .. } | Kind::Map(_) => self.run_with_retries(s, raw, ctx).await,
            Kind::Pass { result } => {
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
                let effective = input_of(s, &raw, &c)?;
                let secs = wait_seconds(s, w, &effective, &c)?;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                Ok(done(output_of(s, effective)?))
            }
            Kind::Choice { choices, default } => {
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
            Kind::Succeed => Ok(Step::End(output_of(s, input_of(s, &raw, &c)?)?)),
            Kind::Fail { .. } => Err(fail_of(s, &raw, &c)?),
        }
    }

    /// A Task or Map state: attempts, retried by the first Retrier that matches the error while it has attempts
    /// left, then caught by the first Catcher that matches, or failed.
    async fn run_with_retries(&self, s: &State, raw: Value, ctx: &Ctx) -> Result<Step, Failure> {
        let mut attempts = vec![0u32; s.retry.len()];
        let mut retry_count = 0;
        loop {
            let failure = match self.attempt(s, &raw, ctx, retry_count).await {
                Ok(v) => {
                    return Ok(match &s.next {
                        Some(n) => Step::Next(n.clone(), v),
                        None => Step::End(v),
                    })
                }
                Err(f) => f,
            };
            if failure.error == "States.Runtime" {
                return Err(failure);
            }
            if let Some(i) = s.retry.iter().position(|r| error_matches(&r.errors, &failure.error)) {
                if attempts[i] < s.retry[i].max_attempts {
                    let delay = retry_delay(&s.retry[i], attempts[i]);
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

    /// One attempt of a Task or Map: input processing, the work, result processing.
    async fn attempt(&self, s: &State, raw: &Value, ctx: &Ctx, retry: u32) -> Result<Value, Failure> {
        let c = ctx.object(&s.name, retry);
        let effective = input_of(s, raw, &c)?;
        let result = match &s.kind {
            Kind::Task { resource, timeout } => {
                ctx.history.record(3, &s.name)?;
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
        let items = self.map_items(s, m, &effective, c).await?;
        let limit = match map_limit(s, m, &effective, c)? {
            0 => items.len().max(1),
            n => n as usize,
        };
        tracing::info!(state = %s.name, items = items.len(), max_concurrency = limit, "map");
        let permits = Arc::new(tokio::sync::Semaphore::new(limit));
        let mut set = JoinSet::new();
        let n = items.len();
        for (i, item) in items.into_iter().enumerate() {
            let child_ctx = Ctx {
                machine: ctx.machine.clone(),
                execution: ctx.execution.clone(),
                item: Some((i, item.clone())),
                history: if m.distributed {
                    History::new(self.history_limit)
                } else {
                    ctx.history.record(2, &s.name)?;
                    ctx.history.clone()
                },
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
                    "MapRunArn": arn("mapRun", &format!("{}/{}", ctx.machine, s.name)),
                    "ResultWriterDetails": details,
                }))
            }
            None => Ok(Value::Array(results)),
        }
    }

    /// A Map's items: from its ItemReader, or the array at its ItemsPath (the whole input by default).
    async fn map_items(&self, s: &State, m: &MapSpec, effective: &Value, c: &Value) -> Result<Vec<Value>, Failure> {
        if let Some((resource, params, config)) = &m.reader {
            let params = params.eval(effective, c, &s.name)?;
            return self
                .resources
                .read_items(&s.name, resource, params, config.as_ref())
                .await;
        }
        let p = m.items_path.clone().unwrap_or_else(root);
        match p.get(effective, c) {
            Some(Value::Array(a)) => Ok(a.clone()),
            _ => Err(Failure::runtime(
                &s.name,
                format!("ItemsPath {} is not an array", p.text),
            )),
        }
    }
}

/// A Map's MaxConcurrency (0: no limit), from its path when it has one.
fn map_limit(s: &State, m: &MapSpec, effective: &Value, c: &Value) -> Result<u64, Failure> {
    match &m.max_concurrency_path {
        Some(p) => p.get(effective, c).and_then(Value::as_u64).ok_or_else(|| {
            Failure::runtime(
                &s.name,
                format!("MaxConcurrencyPath {} is not a non-negative integer", p.text),
            )
        }),
        None => Ok(m.max_concurrency.unwrap_or(0)),
    }
}

/// The delay before retry `attempt` (0-based) of a Retrier: interval × backoff^attempt, capped, jittered.
fn retry_delay(r: &Retrier, attempt: u32) -> f64 {
    let mut delay = r.interval * r.backoff.powi(attempt as i32);
    if let Some(max) = r.max_delay {
        delay = delay.min(max);
    }
    if r.full_jitter {
        delay *= unit_random();
    }
    delay
}

/// A Wait state's seconds, fixed or read from its path.
fn wait_seconds(s: &State, w: &WaitFor, effective: &Value, c: &Value) -> Result<f64, Failure> {
    match w {
        WaitFor::Seconds(x) => Ok(*x),
        WaitFor::Path(p) => p
            .get(effective, c)
            .and_then(Value::as_f64)
            .filter(|x| *x >= 0.0)
            .ok_or_else(|| Failure::runtime(&s.name, format!("{} is not a non-negative number", p.text))),
    }
}

/// The failure a Fail state ends with: its Error and Cause, or the strings at their paths.
fn fail_of(s: &State, raw: &Value, c: &Value) -> Result<Failure, Failure> {
    let Kind::Fail {
        error,
        cause,
        error_path,
        cause_path,
    } = &s.kind
    else {
        unreachable!("only Fail states fail this way")
    };
    let read = |p: &Option<Path>| -> Result<Option<String>, Failure> {
        let Some(p) = p else { return Ok(None) };
        match p.get(raw, c) {
            Some(Value::String(v)) => Ok(Some(v.clone())),
            _ => Err(Failure::runtime(&s.name, format!("{} is not a string", p.text))),
        }
    };
    Ok(Failure::new(
        read(error_path)?
            .or_else(|| error.clone())
            .unwrap_or_else(|| "States.Fail".into()),
        read(cause_path)?.or_else(|| cause.clone()).unwrap_or_default(),
    ))
}

pub(crate) fn input_of(s: &State, raw: &Value, context: &Value) -> Result<Value, Failure> {
    match &s.input_path {
        None => Ok(json!({})),
        Some(p) => p
            .get(raw, context)
            .cloned()
            .ok_or_else(|| Failure::runtime(&s.name, format!("InputPath {} matches nothing", p.text))),
    }
}

pub(crate) fn output_of(s: &State, v: Value) -> Result<Value, Failure> {
    match &s.output_path {
        None => Ok(json!({})),
        Some(p) => p
            .get(&v, &Value::Null)
            .cloned()
            .ok_or_else(|| Failure::runtime(&s.name, format!("OutputPath {} matches nothing", p.text))),
    }
}

pub(crate) fn apply_result_path(
    path: Option<&Path>,
    mut raw: Value,
    result: Value,
    state: &str,
) -> Result<Value, Failure> {
    match path {
        None => Ok(raw),
        Some(p) if p.steps.is_empty() => Ok(result),
        Some(p) => {
            p.set(&mut raw, result).map_err(|e| Failure::runtime(state, e))?;
            Ok(raw)
        }
    }
}
