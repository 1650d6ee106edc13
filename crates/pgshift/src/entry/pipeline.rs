//! The pipeline as one state machine: the definition AWS runs (`statemachine/pipeline.asl.json`, embedded here) and
//! its binding to the in-process handlers, so `pgshift run` executes the same definition on one machine.
//!
//! The binding emulates what the definition asks of AWS: Lambda functions (the same handlers the Lambda binaries
//! call, errors reported by their stable names as `errorType`), the Distributed Map's S3 item reader (`tasks.json` on
//! the stage) and its result writer (`manifest.json` and `SUCCEEDED_0.json` under the results prefix).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::contract::layout::bucket_url;
use crate::contract::load::{LoadWatch, StepKind, TableStatus};
use crate::contract::model::{ExtractResult, TableRef};
use crate::contract::plan::PlanRequest;
use crate::contract::snapshot::RestoreSettings;
use crate::entry::handlers::PlannerOutput;
use crate::entry::trigger::PlannerDefaults;
use crate::extract::ExtractContext;
use crate::load::LoadContext;
use crate::plan::PlanContext;
use crate::report::{Prices, RunFacts, RunReport};
use crate::stage::StageOpener;
use asl::{AslError, Failure, Machine, Resources, TaskCall};

/// The state machine definition, as deployed.
pub const DEFINITION: &str = include_str!("../../../../statemachine/pipeline.asl.json");

/// The placeholders of the definition: the function each stands for. The infrastructure substitutes the deployed
/// ARNs; `pgshift run` substitutes local names.
pub(crate) const FUNCTIONS: &[(&str, &str)] = &[
    ("PlannerFunctionArn", "planner"),
    ("ExtractorFunctionArn", "extractor"),
    ("LoaderFunctionArn", "loader"),
];

const LOCAL_ARN: &str = "arn:aws:lambda:local:000000000000:function:pgshift-";

/// The definition's RDS calls: Step Functions' AWS SDK integration, bound locally to the RDS stand-in.
const RDS_SDK: &str = "arn:aws:states:::aws-sdk:rds:";

/// Substitutes `${Name}` placeholders; a placeholder without a value is an error naming it.
pub(crate) fn substitute(definition: &str, values: &BTreeMap<&str, String>) -> Result<String, AslError> {
    let mut out = String::with_capacity(definition.len());
    let mut rest = definition;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find('}')
            .ok_or_else(|| AslError::Invalid("an unterminated ${ placeholder".into()))?;
        let name = &rest[i + 2..i + end];
        let v = values
            .get(name)
            .ok_or_else(|| AslError::Invalid(format!("placeholder ${{{name}}} has no value")))?;
        out.push_str(v);
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The definition with local function names, parsed.
pub(crate) fn local_machine(definition: &str) -> Result<Arc<Machine>, AslError> {
    let values = FUNCTIONS.iter().map(|(k, f)| (*k, format!("{LOCAL_ARN}{f}"))).collect();
    Machine::from_json(&substitute(definition, &values)?)
}

/// One extraction attempt as the run saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub table: TableRef,
    pub range_index: u32,
    pub attempt: u32,
    /// Seconds since the run started.
    pub started: f64,
    pub ended: Option<f64>,
    /// The error name of a failed attempt.
    pub error: Option<String>,
}

/// What the run has done so far, for a live display and the final summary.
#[derive(Debug, Default, Clone)]
pub struct RunState {
    pub phase: &'static str,
    pub parts: usize,
    pub attempts: Vec<Attempt>,
    pub results: Vec<ExtractResult>,
    /// Every function invocation: (function, seconds), for the cost estimate.
    pub invocations: Vec<(&'static str, f64)>,
    /// `<stage>/<run>/plan.json`, once the planner returned.
    pub plan_url: Option<String>,
    /// What the Cleanup state did, when it ran.
    pub cleanup: Option<crate::contract::load::CleanupResult>,
    /// Tables in the plan, once the planner returned.
    pub tables: usize,
    /// Each table's load as it runs: the step running, or how it ended.
    pub load: BTreeMap<TableRef, TableLoadState>,
    /// The restore of a snapshot run, as the Finish state recorded it.
    pub restore: Option<crate::contract::snapshot::RestoreRecord>,
}

/// Where one table's load stands, as the live line shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableLoadState {
    Running(StepKind),
    Ended(TableStatus),
}

impl RunState {
    /// Failed attempts whose range a later attempt landed: (table, range, error name).
    pub fn retried(&self) -> Vec<(TableRef, u32, String)> {
        let done: std::collections::BTreeSet<(&TableRef, u32)> =
            self.results.iter().map(|r| (&r.table, r.range_index)).collect();
        self.attempts
            .iter()
            .filter_map(|a| {
                let e = a.error.clone()?;
                done.contains(&(&a.table, a.range_index))
                    .then(|| (a.table.clone(), a.range_index, e))
            })
            .collect()
    }

    /// Rows of the tables whose load committed (their parts' rows).
    pub fn loaded_rows(&self) -> u64 {
        self.results
            .iter()
            .filter(|r| matches!(self.load.get(&r.table), Some(TableLoadState::Ended(s)) if s.is_committed()))
            .map(|r| r.rows)
            .sum()
    }

    pub fn running(&self) -> usize {
        self.attempts.iter().filter(|a| a.ended.is_none()).count()
    }

    pub fn failed_attempts(&self) -> usize {
        self.attempts.iter().filter(|a| a.error.is_some()).count()
    }

    /// The most extractions that ran at once.
    pub fn peak_concurrency(&self) -> usize {
        let mut edges: Vec<(f64, i32)> = Vec::new();
        for a in &self.attempts {
            edges.push((a.started, 1));
            edges.push((a.ended.unwrap_or(f64::INFINITY), -1));
        }
        edges.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        let (mut now, mut peak) = (0i32, 0i32);
        for (_, d) in edges {
            now += d;
            peak = peak.max(now);
        }
        peak as usize
    }
}

/// Progress of a run, updated by the bound handlers.
pub struct Progress {
    started: Instant,
    state: Mutex<RunState>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            state: Mutex::new(RunState {
                phase: "starting",
                ..RunState::default()
            }),
        }
    }
}

impl LoadWatch for Progress {
    fn step(&self, table: &TableRef, step: StepKind) {
        self.update(|s| {
            s.load.insert(table.clone(), TableLoadState::Running(step));
        });
    }

    fn done(&self, table: &TableRef, status: TableStatus) {
        self.update(|s| {
            s.load.insert(table.clone(), TableLoadState::Ended(status));
        });
    }
}

impl Progress {
    pub fn snapshot(&self) -> RunState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn update(&self, f: impl FnOnce(&mut RunState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }
}

/// The local binding: every effect of the definition, in process.
pub(crate) struct LocalPipeline {
    pub planner: PlanContext,
    /// What the planner Lambda reads from its environment; the run input overrides it.
    pub plan_defaults: PlannerDefaults,
    pub extractor: ExtractContext,
    pub loader: LoadContext,
    pub stages: Arc<dyn StageOpener>,
    pub progress: Arc<Progress>,
    /// The extractor's memory, for the run report's cost.
    pub memory_mb: u32,
    /// The RDS stand-in, and what the loader's sweep may delete.
    pub rds: Option<Arc<dyn crate::rds::Rds>>,
    pub sweep: Option<crate::entry::handlers::SweepContext>,
}

/// The message of a failure: a Lambda function error's `errorMessage` (its cause is that JSON), else the cause.
pub fn failure_message(f: &Failure) -> String {
    serde_json::from_str::<Value>(&f.cause)
        .ok()
        .and_then(|v| v.get("errorMessage").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| f.cause.clone())
}

/// A handler error as Step Functions reports a Lambda function error: the `errorType` is the error name.
fn lambda_failure(name: &str, message: String) -> Failure {
    Failure::new(name, json!({"errorMessage": message, "errorType": name}).to_string())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, Failure> {
    serde_json::to_value(v).map_err(|e| lambda_failure("Pipeline.Fatal.Internal", e.to_string()))
}

impl LocalPipeline {
    async fn extract(&self, call: TaskCall) -> Result<Value, Failure> {
        let input =
            crate::entry::handlers::extractor_input(call.input).map_err(|e| lambda_failure(e.name(), e.to_string()))?;
        let (task, attempt) = (&input.task, input.attempt);
        let t0 = self.progress.elapsed();
        let slot = {
            let mut slot = 0;
            self.progress.update(|s| {
                s.phase = "extracting";
                slot = s.attempts.len();
                s.attempts.push(Attempt {
                    table: task.table.clone(),
                    range_index: task.range_index,
                    attempt,
                    started: t0,
                    ended: None,
                    error: None,
                });
            });
            slot
        };
        let r = crate::entry::handlers::extractor(&self.extractor, input).await;
        let now = self.progress.elapsed();
        match r {
            Ok(result) => {
                let v = to_json(&result)?;
                self.progress.update(|s| {
                    s.attempts[slot].ended = Some(now);
                    s.results.push(result);
                });
                Ok(v)
            }
            Err(e) => {
                self.progress.update(|s| {
                    s.attempts[slot].ended = Some(now);
                    s.attempts[slot].error = Some(e.name().to_string());
                });
                Err(lambda_failure(e.name(), e.to_string()))
            }
        }
    }
}

impl LocalPipeline {
    /// An RDS call of the definition, made on the bound stand-in; its error named as Step Functions names it.
    async fn rds_call(&self, state: &str, action: &str, input: Value) -> Result<Value, Failure> {
        let Some(rds) = &self.rds else {
            return Err(Failure::new(
                "States.Runtime",
                format!("state {state:?}: no RDS stand-in is bound (run with --snapshot-dir)"),
            ));
        };
        self.progress.update(|s| s.phase = "restoring");
        rds.call(action, input)
            .await
            .map_err(|e| Failure::new(&e.name, e.message))
    }
}

impl Resources for LocalPipeline {
    fn invoke(&self, call: TaskCall) -> BoxFuture<'_, Result<Value, Failure>> {
        Box::pin(async move {
            if let Some(action) = call.resource.strip_prefix(RDS_SDK) {
                return self.rds_call(&call.state, action, call.input).await;
            }
            let Some(function) = call.resource.strip_prefix(LOCAL_ARN) else {
                return Err(Failure::new(
                    "States.Runtime",
                    format!(
                        "state {:?}: resource {} is not bound locally",
                        call.state, call.resource
                    ),
                ));
            };
            let t0 = Instant::now();
            let name: &'static str = match function {
                "planner" => "planner",
                "extractor" => "extractor",
                _ => "loader",
            };
            let out = match function {
                "planner" => {
                    self.progress.update(|s| s.phase = "planning");
                    let failed = |e: crate::plan::PlanError| lambda_failure(e.name(), e.to_string());
                    let input = crate::entry::handlers::planner_input(call.input).map_err(failed)?;
                    let out = crate::entry::handlers::planner(&self.planner, &self.plan_defaults, input)
                        .await
                        .map_err(failed)?;
                    if let PlannerOutput::Planned(summary) = &out {
                        self.progress.update(|s| {
                            s.plan_url = Some(summary.plan_url.clone());
                            s.tables = summary.tables;
                        });
                    }
                    to_json(&out)
                }
                "extractor" => self.extract(call).await,
                "loader" => {
                    use crate::contract::load::LoaderInput;
                    let input = crate::entry::handlers::loader_input(call.input);
                    let (cleanup, finish) = (
                        matches!(input, Ok(LoaderInput::Cleanup(_))),
                        matches!(input, Ok(LoaderInput::Finish(_))),
                    );
                    let phase = if cleanup { "cleaning up" } else { "loading" };
                    self.progress.update(|s| s.phase = phase);
                    let out = match input {
                        Ok(input) => {
                            crate::entry::handlers::loader(&self.loader, self.sweep.as_ref(), input, self.memory_mb)
                                .await
                        }
                        Err(e) => Err(e),
                    }
                    .map_err(|e| lambda_failure(e.name(), e.to_string()));
                    if let (Ok(v), true) = (&out, cleanup) {
                        let done = serde_json::from_value(v.clone()).ok();
                        self.progress.update(|s| s.cleanup = done);
                    }
                    if let (Ok(v), true) = (&out, finish) {
                        let restore = v.get("restore").and_then(|r| serde_json::from_value(r.clone()).ok());
                        self.progress.update(|s| s.restore = restore);
                    }
                    out
                }
                other => Err(Failure::new(
                    "States.Runtime",
                    format!("state {:?}: no local function {other:?}", call.state),
                )),
            };
            let secs = t0.elapsed().as_secs_f64();
            self.progress.update(|s| s.invocations.push((name, secs)));
            out
        })
    }

    fn read_items<'a>(
        &'a self,
        state: &'a str,
        resource: &'a str,
        parameters: Value,
        reader_config: Option<&'a Value>,
    ) -> BoxFuture<'a, Result<Vec<Value>, Failure>> {
        Box::pin(async move {
            let input_type = reader_config.and_then(|c| c.get("InputType")).and_then(Value::as_str);
            if resource != "arn:aws:states:::s3:getObject" || input_type != Some("JSON") {
                return Err(Failure::new(
                    "States.Runtime",
                    format!("state {state:?}: only an s3:getObject item reader of a JSON array is bound locally"),
                ));
            }
            let (bucket, key) = bucket_key(&parameters, "Key", state)?;
            let stage = self
                .stages
                .open(&bucket_url(&bucket))
                .await
                .map_err(|e| Failure::new("States.ItemReaderFailed", e.to_string()))?;
            let body = stage
                .get(&key)
                .await
                .map_err(|e| Failure::new("States.ItemReaderFailed", e.to_string()))?;
            let items: Vec<Value> = serde_json::from_slice(&body).map_err(|e| {
                Failure::new(
                    "States.ItemReaderFailed",
                    format!("{bucket}/{key} is not a JSON array: {e}"),
                )
            })?;
            self.progress.update(|s| s.parts = items.len());
            Ok(items)
        })
    }

    fn write_results<'a>(
        &'a self,
        state: &'a str,
        resource: &'a str,
        parameters: Value,
        results: Vec<Value>,
    ) -> BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(async move {
            if resource != "arn:aws:states:::s3:putObject" {
                return Err(Failure::new(
                    "States.Runtime",
                    format!("state {state:?}: only an s3:putObject result writer is bound locally"),
                ));
            }
            let (bucket, prefix) = bucket_key(&parameters, "Prefix", state)?;
            let failed = |e: crate::stage::StageError| Failure::new("States.ResultWriterFailed", e.to_string());
            let stage = self.stages.open(&bucket_url(&bucket)).await.map_err(failed)?;
            let dir = format!("{}/{}", prefix.trim_end_matches('/'), uuid::Uuid::new_v4());
            let succeeded: Vec<Value> = results
                .iter()
                .map(|r| json!({"Status": "SUCCEEDED", "Output": r.to_string()}))
                .collect();
            let body = Bytes::from(Value::Array(succeeded).to_string());
            let size = body.len();
            let file = format!("{dir}/SUCCEEDED_0.json");
            crate::stage::put(stage.as_ref(), &file, body).await.map_err(failed)?;
            let manifest = json!({
                "DestinationBucket": bucket,
                "MapRunArn": format!("arn:aws:states:local:000000000000:mapRun:pgshift/{state}"),
                "ResultFiles": {"FAILED": [], "PENDING": [], "SUCCEEDED": [{"Key": file, "Size": size}]},
            });
            let key = format!("{dir}/manifest.json");
            crate::stage::put(stage.as_ref(), &key, Bytes::from(manifest.to_string()))
                .await
                .map_err(failed)?;
            Ok(json!({"Bucket": bucket, "Key": key}))
        })
    }
}

fn bucket_key(p: &Value, second: &str, state: &str) -> Result<(String, String), Failure> {
    let get = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Failure::new("States.Runtime", format!("state {state:?}: Parameters need {k}")))
    };
    Ok((get("Bucket")?, get(second)?))
}

/// The load's record with Cleanup's correction from the warehouse's load log (tables committed that the record
/// missed), so that a failed run's report says what the warehouse committed.
fn corrected(
    load: Option<crate::contract::load::LoadResult>,
    cleanup: Option<&crate::contract::load::CleanupResult>,
) -> Option<crate::contract::load::LoadResult> {
    let Some(c) = cleanup.filter(|c| !c.tables.is_empty()) else {
        return load;
    };
    let mut l = load.unwrap_or_else(|| crate::contract::load::LoadResult {
        run_id: c.run_id.clone().unwrap_or_default(),
        mode: Default::default(),
        tables: Vec::new(),
        started_at: 0.0,
        seconds: 0.0,
        done: false,
        billed: Vec::new(),
    });
    for t in &c.tables {
        match l.tables.iter_mut().find(|x| x.table == t.table) {
            Some(x) => *x = t.clone(),
            None => l.tables.push(t.clone()),
        }
    }
    Some(l)
}

/// A run of the pipeline on this machine: the definition, the run's request, and the ports.
pub struct LocalRun {
    /// The state machine definition (with its placeholders): [`DEFINITION`] unless given.
    pub definition: String,
    pub request: PlanRequest,
    /// The execution's input when it is not `request` itself: an RDS snapshot event, or the request naming a
    /// snapshot. `request` is then the planner's defaults.
    pub input: Option<Value>,
    pub source: Arc<dyn crate::source::SourceConnector>,
    pub stages: Arc<dyn StageOpener>,
    pub warehouse: Arc<dyn crate::warehouse::Warehouse>,
    /// Lambda memory the cost estimate assumes.
    pub memory_mb: u32,
    /// How snapshots are restored (the stand-in ignores the networking settings).
    pub restore: RestoreSettings,
    /// The RDS stand-in the definition's `aws-sdk:rds:*` tasks call; a run that restores nothing needs none.
    pub rds: Option<Arc<dyn crate::rds::Rds>>,
    /// How long one loader invocation may set tables up ([`LoadContext::budget`]); `None`, as on the command line.
    pub load_budget: Option<std::time::Duration>,
}

/// How a local run ended.
pub struct RunOutcome {
    /// The execution's output, or the failure that ended it (after the Cleanup state ran).
    pub output: Result<Value, Failure>,
    pub report: RunReport,
    /// What the Cleanup state did, when the run failed and it ran.
    pub cleanup: Option<crate::contract::load::CleanupResult>,
}

/// A run under way: its live progress, and its end.
pub struct RunHandle {
    pub progress: Arc<Progress>,
    pub outcome: tokio::task::JoinHandle<RunOutcome>,
    /// What [`RunHandle::stop`]'s Cleanup uses: the run's stages and warehouse.
    stop_ctx: LoadContext,
}

impl RunHandle {
    /// Stops the execution where it stands (a Ctrl-C, a SIGTERM): every task of it is dropped, which ends the
    /// extractors' COPY and rolls back a load transaction in flight, then Cleanup runs as the definition's Catch
    /// would run it: the run's staging tables dropped, `<run>/status.json` written with `error` as the failure.
    /// The parts that landed stay: `pgshift run --run-id` resumes from them. `None` when the run was stopped before
    /// it had a plan (nothing to clean).
    pub async fn stop(
        self,
        error: &str,
        cause: &str,
    ) -> Result<Option<crate::contract::load::CleanupResult>, crate::load::LoadError> {
        self.outcome.abort();
        let _ = self.outcome.await;
        let Some(plan_url) = self.progress.snapshot().plan_url else {
            return Ok(None);
        };
        let state = serde_json::json!({
            "plan": {"plan_url": plan_url},
            "error": {"Error": error, "Cause": cause},
        });
        let out = crate::load::cleanup(&self.stop_ctx, crate::contract::load::CleanupRequest { state }).await?;
        self.progress.update(|s| s.phase = "stopped");
        Ok(Some(out))
    }
}

impl LocalRun {
    /// Parses the definition and starts the execution on the current runtime.
    pub fn start(self, execution_name: &str) -> Result<RunHandle, AslError> {
        let machine = local_machine(&self.definition)?;
        let progress = Arc::new(Progress::default());
        let stages = self.stages.clone();
        let stop_ctx = LoadContext::new(self.stages.clone(), self.warehouse.clone());
        let warehouse_kind = self.warehouse.kind();
        let pipeline = LocalPipeline {
            planner: PlanContext {
                source: self.source.clone(),
                stages: self.stages.clone(),
            },
            plan_defaults: PlannerDefaults {
                // What the planner Lambda's environment holds: an RDS event's run takes these settings.
                request: self.request.clone(),
                restore: self.restore.clone(),
            },
            extractor: ExtractContext {
                source: self.source,
                stages: self.stages.clone(),
            },
            loader: LoadContext {
                stages: self.stages.clone(),
                warehouse: self.warehouse,
                watch: Some(progress.clone()),
                budget: self.load_budget,
            },
            stages: self.stages,
            progress: progress.clone(),
            memory_mb: self.memory_mb,
            sweep: self.rds.clone().map(|rds| crate::entry::handlers::SweepContext {
                rds,
                request: crate::sweep::SweepRequest {
                    stack: self.restore.stack.clone(),
                    max_age_secs: f64::from(self.restore.sweep_after_hours) * 3600.0,
                    dry_run: false,
                },
            }),
            rds: self.rds,
        };
        let interpreter = asl::Interpreter::new(machine, Arc::new(pipeline)).named("pgshift");
        let input = match self.input.clone() {
            Some(v) => v,
            None => serde_json::to_value(&self.request).map_err(|e| AslError::Invalid(format!("run input: {e}")))?,
        };
        let name = execution_name.to_string();
        let p = progress.clone();
        let memory_mb = self.memory_mb;
        let max_concurrency = self.request.settings.max_concurrency;
        let outcome = tokio::spawn(async move {
            let output = interpreter.execute(&name, input).await;
            p.update(|s| {
                s.phase = if output.is_ok() { "succeeded" } else { "failed" };
            });
            let snap = p.snapshot();
            // The load's record, finished or not: the tables it committed are in the warehouse either way.
            let load = match &snap.plan_url {
                Some(url) => crate::stage::run::read_load(stages.as_ref(), url).await.ok().flatten(),
                None => None,
            };
            // Cleanup read the warehouse's load log: what it says was committed is what the report says.
            let load = corrected(load, snap.cleanup.as_ref());
            // The ledger record again, with what this machine counted: the invocations and the transitions.
            let mut bill = None;
            if let Some(url) = &snap.plan_url {
                let facts = crate::report::ledger::LedgerFacts {
                    assumed_memory_mb: memory_mb,
                    invocations: Some(
                        snap.invocations
                            .iter()
                            .filter(|(f, _)| *f != "extractor")
                            .map(|(f, s)| crate::contract::ledger::Billed::here(f, *s).assuming(memory_mb))
                            .collect(),
                    ),
                    transitions: Some(interpreter.transitions()),
                    warehouse: Some(warehouse_kind.to_string()),
                };
                if let Err(e) = crate::report::ledger::write(stages.as_ref(), url, &facts).await {
                    tracing::warn!(error = %e, "could not write the run's ledger record");
                }
                bill = crate::report::ledger::build(stages.as_ref(), url, &facts)
                    .await
                    .ok()
                    .map(|l| crate::report::cost::run_cost(&l, &crate::report::cost::PriceTable::default()));
            }
            let run_id = output
                .as_ref()
                .ok()
                .and_then(|o| o.pointer("/plan/run_id"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| snap.results.first().map(|r| r.run_id.clone()))
                .unwrap_or_default();
            let retried = snap.retried();
            let static_source = match &snap.plan_url {
                Some(url) => planned_static_source(stages.as_ref(), url).await,
                None => None,
            };
            let mut report = RunReport::new(
                RunFacts {
                    run_id: &run_id,
                    seconds: Some(p.elapsed()),
                    results: &snap.results,
                    load: load.as_ref(),
                    peak_concurrency: snap.peak_concurrency(),
                    max_concurrency,
                    retried,
                    invocations: &snap.invocations,
                    memory_mb,
                    transitions: interpreter.transitions(),
                    failure: output.as_ref().err().map(|f| (f.error.clone(), failure_message(f))),
                    restore: snap.restore.as_ref(),
                    static_source,
                },
                Prices::default(),
            );
            report.bill = bill;
            RunOutcome {
                output,
                report,
                cleanup: snap.cleanup,
            }
        });
        Ok(RunHandle {
            progress,
            outcome,
            stop_ctx,
        })
    }
}

/// Whether the run's plan read a static source (its report says what its reconciliation means); `None` when the plan
/// cannot be read.
async fn planned_static_source(stages: &dyn StageOpener, plan_url: &str) -> Option<bool> {
    let stage = crate::stage::run::stage_of(stages, plan_url).await.ok()?;
    let plan = crate::stage::run::read_plan(stage.as_ref(), plan_url).await.ok()?;
    Some(plan.settings.static_source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_definition_parses_with_every_placeholder_bound() {
        let m = local_machine(DEFINITION).expect("the pipeline definition runs locally");
        let tasks = m.tasks();
        for (_, f) in FUNCTIONS {
            assert!(
                tasks.iter().any(|(_, r)| r.ends_with(&format!("pgshift-{f}"))),
                "{f} is used"
            );
        }
        let mut none = BTreeMap::new();
        none.insert("PlannerFunctionArn", "x".to_string());
        let e = substitute(DEFINITION, &none).expect_err("unbound");
        assert!(e.to_string().contains("FunctionArn"), "{e}");
    }

    #[test]
    fn the_infrastructure_deploys_this_definition_with_every_placeholder_and_trigger() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
        let template = std::fs::read_to_string(path).expect("infra/template.yaml");
        assert!(template.contains("DefinitionUri: ../statemachine/pipeline.asl.json"));
        let subs = template
            .split("DefinitionSubstitutions:")
            .nth(1)
            .expect("DefinitionSubstitutions");
        for (name, _) in FUNCTIONS {
            assert!(DEFINITION.contains(&format!("${{{name}}}")), "{name} is used");
            assert!(
                subs.contains(&format!("{name}: !GetAtt")),
                "the template substitutes {name}"
            );
        }
        // The rule starts runs on exactly the events the planner accepts: all of them, or the automated or manual
        // ones (the SnapshotTypes parameter).
        assert!(template.contains("EventID: !FindInMap [SnapshotEvents, !Ref SnapshotTypes, Ids]"));
        let ids = |kind: &str| -> Vec<String> {
            let at = template.find(&format!("    {kind}:\n      Ids: [")).expect(kind);
            let list = &template[at..];
            let list = &list[list.find('[').unwrap_or(0) + 1..list.find(']').unwrap_or(0)];
            let mut v: Vec<String> = list.split(", ").map(str::to_string).collect();
            v.sort();
            v
        };
        let want = |keep: &dyn Fn(bool) -> bool| -> Vec<String> {
            let mut v: Vec<String> = crate::entry::trigger::SNAPSHOT_CREATED
                .iter()
                .filter(|e| keep(e.3))
                .map(|e| e.0.to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(ids("all"), want(&|_| true));
        assert_eq!(ids("automated"), want(&|automated| automated));
        assert_eq!(ids("manual"), want(&|automated| !automated));
        // The planner reads an existing plan of the run id (a missing one must be 404: ListBucket) and deletes a
        // restarted run's objects.
        let planner = template
            .split("PlannerFunction:")
            .nth(1)
            .and_then(|t| t.split("ExtractorFunction:").next())
            .expect("the planner");
        for action in ["s3:GetObject", "s3:DeleteObject", "s3:ListBucket", "s3:PutObject"] {
            assert!(planner.contains(action), "the planner's role allows {action}");
        }
        // The loader writes the run report: it reads every result and failed attempt (GetObject, ListBucket) and
        // prices the extractors at their configured memory.
        let section = |name: &str, next: &str| {
            template
                .split(&format!("{name}:"))
                .nth(1)
                .and_then(|t| t.split(&format!("{next}:")).next())
                .unwrap_or_default()
                .to_string()
        };
        let loader = section("LoaderFunction", "S3GatewayEndpoint");
        for action in ["s3:GetObject", "s3:ListBucket", "s3:PutObject"] {
            assert!(loader.contains(action), "the loader's role allows {action}");
        }
        let extractor = section("ExtractorFunction", "LoaderFunction");
        let memory = extractor
            .split("MemorySize: ")
            .nth(1)
            .and_then(|m| m.split_whitespace().next());
        assert!(
            loader.contains(&format!("PGSHIFT_EXTRACTOR_MEMORY_MB: \"{}\"", memory.unwrap_or("?"))),
            "the loader prices the extractor at its MemorySize ({memory:?})"
        );
        // What `sam build` (rust-cargolambda, scripts/package.sh) builds: each function's Binary is a [[bin]] of the
        // functions package, in the workspace at CodeUri, run as `bootstrap` on provided.al2023, arm64.
        let bins = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../functions/Cargo.toml"))
            .expect("functions/Cargo.toml");
        let workspace = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
            .expect("the workspace's Cargo.toml");
        assert!(
            workspace.contains("\"functions\""),
            "the workspace at CodeUri builds the functions package"
        );
        let globals = section("Globals", "Resources");
        for (text, want) in [
            ("Runtime: provided.al2023", true),
            ("Architectures: [arm64]", true),
            ("Handler: bootstrap", true),
            ("CodeUri: ../", true),
            ("CostCenter: !Ref CostCenter", true),
        ] {
            assert_eq!(globals.contains(text), want, "Globals: {text}");
        }
        for (function, binary) in [
            ("PlannerFunction", "planner"),
            ("ExtractorFunction", "extractor"),
            ("LoaderFunction", "loader"),
        ] {
            let f = section(function, "    Properties");
            assert!(
                f.contains("BuildMethod: rust-cargolambda") && f.contains(&format!("Binary: {binary}")),
                "{function} builds {binary}"
            );
            assert!(
                bins.contains(&format!("[[bin]]\nname = \"{binary}\"")),
                "functions/Cargo.toml has {binary}"
            );
        }
        // Only the functions that reach the source are in the VPC; the loader reaches public AWS endpoints only.
        assert!(!globals.contains("VpcConfig"), "no VPC for every function");
        assert!(planner.contains("VpcConfig") && extractor.contains("VpcConfig"));
        assert!(!loader.contains("VpcConfig"), "the loader is out of the VPC");
        // A Serverless workgroup without a secret: the Data API needs GetCredentials on it.
        assert!(loader.contains("redshift-serverless:GetCredentials"));
        // The planner's scope of sources and its batch limit come from the template.
        assert!(planner.contains("PGSHIFT_SOURCE_IDENTIFIERS: !Ref SourceDbIdentifiers"));
        assert!(planner.contains("PGSHIFT_WAREHOUSE_KIND: redshift"));
        for (endpoint, next) in [
            ("S3GatewayEndpoint", "EndpointSecurityGroup"),
            ("SecretsManagerEndpoint", "PipelineLogs"),
        ] {
            let e = section(endpoint, next);
            assert!(
                e.contains("Type: AWS::EC2::VPCEndpoint") && e.contains("Condition: CreateEndpoints"),
                "{endpoint}: {e}"
            );
        }
    }

    /// `rds:Action` names in a piece of the template.
    fn rds_actions(text: &str) -> std::collections::BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
            .filter_map(|w| w.strip_prefix("rds:"))
            .filter(|a| a.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
            .map(|a| format!("rds:{a}"))
            .collect()
    }

    #[test]
    fn the_templates_source_url_verifies_the_server_against_the_packaged_rds_bundle() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
        let template = std::fs::read_to_string(path).expect("infra/template.yaml");
        let urls: Vec<&str> = template
            .lines()
            .filter_map(|l| l.trim().strip_prefix("PGSHIFT_SOURCE: !Sub \""))
            .map(|l| l.trim_end_matches('"'))
            .collect();
        assert_eq!(urls.len(), 2, "the planner's and the extractor's");
        let url = |mode: &str| {
            urls[0]
                .replace("${SourceHost}", "orders.abc.eu-west-1.rds.amazonaws.com")
                .replace("${SourcePort}", "5432")
                .replace("${SourceDatabase}", "orders")
                .replace("${SourceSslMode}", mode)
        };
        assert!(urls.iter().all(|u| *u == urls[0]));
        // verify-full reads the bundle at cold start: here, where /var/task holds none, it names the path.
        let e = crate::pgclient::tls::config(&url("verify-full"))
            .err()
            .expect("no bundle here");
        assert!(e.contains("sslrootcert /var/task/rds-global-bundle.pem"), "{e}");
        assert!(crate::pgclient::tls::config(&url("require")).is_ok());
        let package = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/package.sh"))
            .expect("scripts/package.sh");
        assert!(package.contains("/$f/rds-global-bundle.pem") && package.contains("PlannerFunction ExtractorFunction"));
    }

    #[test]
    fn the_state_machine_may_make_exactly_the_rds_calls_of_the_definition_and_the_sweep_only_deletes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
        let template = std::fs::read_to_string(path).expect("infra/template.yaml");
        let m = local_machine(DEFINITION).expect("definition");
        let mut used: std::collections::BTreeSet<String> = m
            .tasks()
            .iter()
            .filter_map(|(_, r)| r.strip_prefix(RDS_SDK))
            .map(|a| {
                let mut c = a.chars();
                let first = c.next().map(|f| f.to_ascii_uppercase()).unwrap_or_default();
                format!("rds:{first}{}", c.as_str())
            })
            .collect();
        // Tags given at creation are authorised as AddTagsToResource.
        used.insert("rds:AddTagsToResource".into());
        let machine = template
            .split("  Pipeline:\n")
            .nth(1)
            .and_then(|t| t.split("Events:").next())
            .expect("the state machine");
        assert_eq!(
            rds_actions(machine),
            used,
            "the state machine's RDS actions are the definition's"
        );
        let loader = template
            .split("LoaderFunction:")
            .nth(1)
            .and_then(|t| t.split("PipelineLogs:").next())
            .expect("the loader");
        let sweep: std::collections::BTreeSet<String> = [
            "rds:DescribeDBInstances",
            "rds:DescribeDBClusters",
            "rds:DeleteDBInstance",
            "rds:DeleteDBCluster",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            rds_actions(loader),
            sweep,
            "the loader sweeps: it lists and deletes, nothing else"
        );
        assert!(
            loader.contains("db:pgshift-*") && loader.contains("cluster:pgshift-*"),
            "deletes by prefix only"
        );
        for name in ["PlannerFunction", "ExtractorFunction"] {
            let f = template.split(&format!("{name}:")).nth(1).unwrap_or_default();
            let f = f.split("Function:").next().unwrap_or_default();
            assert!(rds_actions(f).is_empty(), "{name} has no RDS access");
        }
    }

    #[test]
    fn every_error_name_of_the_definition_exists_and_every_retryable_one_is_retried() {
        use crate::contract::code::Code;
        let m = local_machine(DEFINITION).expect("definition");
        for (state, name, _) in m.error_names() {
            // RDS's names come from the SDK integration (Step Functions names them `Rds.<Code>Exception`).
            let known = Code::of(&name).is_some()
                || name.starts_with("States.")
                || name.starts_with("Lambda.")
                || (name.starts_with("Rds.") && name.ends_with("Exception"));
            assert!(known, "state {state} names {name}, which no handler reports");
        }
        for (state, resource) in m.tasks() {
            if resource.starts_with(RDS_SDK) {
                assert!(
                    m.retries(&state, "Rds.ThrottlingException"),
                    "{state} does not retry RDS throttling"
                );
                continue;
            }
            for name in Code::ALL.iter().filter(|c| c.is_retryable()).map(|c| c.name()) {
                assert!(m.retries(&state, name), "{state} ({resource}) does not retry {name}");
            }
            for name in ["Lambda.ServiceException", "Lambda.TooManyRequestsException"] {
                assert!(m.retries(&state, name), "{state} does not retry {name}");
            }
            for name in Code::ALL.iter().filter(|c| !c.is_retryable()).map(|c| c.name()) {
                assert!(!m.retries(&state, name), "{state} retries the fatal {name}");
            }
        }
    }

    /// What a first deploy and a first run need of the template, beyond what the linters can see: credentials for
    /// the loader's database as well as its user, and the Distributed Map's child executions stoppable.
    #[test]
    fn the_loader_may_get_credentials_for_its_database_and_the_map_may_stop_its_children() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
        let template = std::fs::read_to_string(path).expect("infra/template.yaml");
        let compact: String = template.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            compact.contains(
                "Action: [redshift:GetClusterCredentials] Resource: [!Ref RedshiftDbUserArn, !Ref RedshiftDbNameArn]"
            ),
            "GetClusterCredentials on the dbuser and the dbname"
        );
        assert!(
            compact.contains("DbUserNeedsItsDatabase:"),
            "a user alone is refused at deploy"
        );
        let stop = compact
            .split("Action: [states:DescribeExecution, states:StopExecution]")
            .nth(1)
            .expect("the Map's execution rights");
        let stop = &stop[..stop.find("- Effect").unwrap_or(stop.len())];
        assert!(stop.contains(":execution:${AWS::StackName}-pipeline:*"), "{stop}");
        assert!(
            stop.contains(":execution:${AWS::StackName}-pipeline/*"),
            "the Map's children: {stop}"
        );
        // Each function that reads a secret may decrypt it with the customer-managed key when one is given.
        let kms = "- HasSecretsKey - Effect: Allow Action: [kms:Decrypt] Resource: !Ref SecretsKmsKeyArn";
        assert_eq!(compact.matches(kms).count(), 3, "planner, extractor, loader");
        // Every function logs to a group of the stack's, kept LogRetentionDays, as the state machine's is.
        for f in ["Planner", "Extractor", "Loader"] {
            assert!(
                compact.contains(&format!("LoggingConfig: LogGroup: !Ref {f}Logs")),
                "{f}"
            );
        }
        assert_eq!(compact.matches("RetentionInDays: !Ref LogRetentionDays").count(), 4);
    }
}
