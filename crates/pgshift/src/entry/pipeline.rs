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
use crate::report::RunReport;
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
pub(crate) const RDS_SDK: &str = "arn:aws:states:::aws-sdk:rds:";

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

/// What the run has done so far, for the live display only: the run's report is read from its stage when it ends
/// ([`crate::report::publish`]), with what only this process knows (its wall time, its invocations, its state
/// transitions).
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
}

/// Where one table's load stands, as the live line shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableLoadState {
    Running(StepKind),
    Ended(TableStatus),
}

impl RunState {
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
                    let cleanup = matches!(input, Ok(LoaderInput::Cleanup(_)));
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
    /// The in-process binding of the definition's resources to this run's ports.
    fn pipeline(&self, progress: Arc<Progress>) -> LocalPipeline {
        LocalPipeline {
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
                source: self.source.clone(),
                stages: self.stages.clone(),
            },
            loader: LoadContext {
                stages: self.stages.clone(),
                warehouse: self.warehouse.clone(),
                watch: Some(progress.clone()),
                budget: self.load_budget,
            },
            stages: self.stages.clone(),
            progress,
            memory_mb: self.memory_mb,
            sweep: self.rds.clone().map(|rds| crate::entry::handlers::SweepContext {
                rds,
                request: crate::sweep::SweepRequest {
                    stack: self.restore.stack.clone(),
                    max_age_secs: f64::from(self.restore.sweep_after_hours) * 3600.0,
                    dry_run: false,
                },
            }),
            rds: self.rds.clone(),
        }
    }

    /// Parses the definition and starts the execution on the current runtime.
    pub fn start(self, execution_name: &str) -> Result<RunHandle, AslError> {
        let machine = local_machine(&self.definition)?;
        let progress = Arc::new(Progress::default());
        let stop_ctx = LoadContext::new(self.stages.clone(), self.warehouse.clone());
        let interpreter = asl::Interpreter::new(machine, Arc::new(self.pipeline(progress.clone()))).named("pgshift");
        let input = match self.input.clone() {
            Some(v) => v,
            None => serde_json::to_value(&self.request).map_err(|e| AslError::Invalid(format!("run input: {e}")))?,
        };
        let ending = Ending {
            stages: self.stages.clone(),
            progress: progress.clone(),
            memory_mb: self.memory_mb,
            warehouse: self.warehouse.kind().to_string(),
        };
        let name = execution_name.to_string();
        let outcome = tokio::spawn(async move {
            let output = interpreter.execute(&name, input).await;
            ending.end(output, interpreter.transitions()).await
        });
        Ok(RunHandle {
            progress,
            outcome,
            stop_ctx,
        })
    }
}

/// What a local run needs once its execution ended: where its record is, and what only this process counted.
struct Ending {
    stages: Arc<dyn StageOpener>,
    progress: Arc<Progress>,
    memory_mb: u32,
    warehouse: String,
}

impl Ending {
    /// The run's ledger record and report written again with what this process counted (the planner's and loader's
    /// invocations, the state transitions), and its report read back from the stage, as `pgshift report` reads it.
    async fn end(self, output: Result<Value, Failure>, transitions: u64) -> RunOutcome {
        self.progress.update(|s| {
            s.phase = if output.is_ok() { "succeeded" } else { "failed" };
        });
        let snap = self.progress.snapshot();
        let facts = crate::report::ledger::LedgerFacts {
            assumed_memory_mb: self.memory_mb,
            invocations: Some(
                snap.invocations
                    .iter()
                    .filter(|(f, _)| *f != "extractor")
                    .map(|(f, s)| crate::contract::ledger::Billed::here(f, *s).assuming(self.memory_mb))
                    .collect(),
            ),
            transitions: Some(transitions),
            warehouse: Some(self.warehouse.clone()),
        };
        let failure = output.as_ref().err().map(|f| (f.error.clone(), failure_message(f)));
        let read = match &snap.plan_url {
            Some(url) => crate::report::publish(self.stages.as_ref(), url, &facts)
                .await
                .map_err(|e| tracing::warn!(error = %e, "could not write the run's ledger record and report"))
                .ok(),
            None => None,
        };
        let mut report = read.unwrap_or_else(|| RunReport::unplanned(&run_id_of(&output), failure.clone()));
        report.seconds = Some(self.progress.elapsed());
        // A failure the stage does not record (a run that ended before its Cleanup state could write it).
        if report.failure.is_none() {
            report.failure = failure;
        }
        RunOutcome {
            output,
            report,
            cleanup: snap.cleanup,
        }
    }
}

/// The run id an execution's output names.
fn run_id_of(output: &Result<Value, Failure>) -> String {
    output
        .as_ref()
        .ok()
        .and_then(|o| o.pointer("/plan/run_id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
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
}
