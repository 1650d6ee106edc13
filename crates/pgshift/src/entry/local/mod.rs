//! The pipeline on this machine: the definition AWS runs (`statemachine/pipeline.asl.json`, embedded here) and
//! its binding to the in-process handlers, so `pgshift run` executes the same definition on one machine.
//!
//! The binding emulates what the definition asks of AWS: Lambda functions (the same handlers the Lambda binaries
//! call, errors reported by their stable names as `errorType`), the Distributed Map's S3 item reader (`tasks.json` on
//! the stage) and its result writer (`manifest.json` and `SUCCEEDED_0.json` under the results prefix).
//!
//! `progress`: what the run has done so far, for its live display; `binding`: the definition's resources, in process.

mod binding;
mod progress;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::contract::plan::PlanRequest;
use crate::contract::snapshot::RestoreSettings;
use crate::entry::trigger::PlannerDefaults;
use crate::extract::ExtractContext;
use crate::load::LoadContext;
use crate::plan::PlanContext;
use crate::report::RunReport;
use crate::stage::StageOpener;
use asl::{AslError, Failure, Machine};

pub use binding::failure_message;
use binding::LocalPipeline;
pub use progress::{Attempt, Progress, RunState, TableLoadState};

/// The state machine definition, as deployed.
pub const DEFINITION: &str = include_str!("../../../../../statemachine/pipeline.asl.json");

/// The placeholders of the definition: the function each stands for. The infrastructure substitutes the deployed
/// ARNs; `pgshift run` substitutes local names.
pub(crate) const FUNCTIONS: &[(&str, &str)] = &[
    ("PlannerFunctionArn", "planner"),
    ("ExtractorFunctionArn", "extractor"),
    ("LoaderFunctionArn", "loader"),
];

pub(crate) const LOCAL_ARN: &str = "arn:aws:lambda:local:000000000000:function:pgshift-";

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
    /// Where the run's end is told beside `<run>/events.jsonl` (always written): `--events URL`, `--openlineage URL`.
    pub announce: LocalAnnounce,
}

/// What a local run tells when it ends, beyond its stage's `events.jsonl`.
#[derive(Debug, Clone, Default)]
pub struct LocalAnnounce {
    /// `--events URL`: a file or an HTTP endpoint.
    pub events_url: Option<String>,
    /// `--openlineage URL`, and the datasets' names.
    pub lineage: Option<(String, crate::report::lineage::Datasets)>,
}

impl LocalRun {
    /// The announcer of this run: the stage's `events.jsonl`, `--events`, lineage; told by the run, not by Finish.
    fn announcer(&self) -> Arc<crate::entry::announce::Announce> {
        let mut sinks: Vec<Arc<dyn crate::events::EventSink>> = vec![Arc::new(crate::events::StageEvents {
            stages: self.stages.clone(),
        })];
        if let Some(url) = &self.announce.events_url {
            sinks.push(Arc::new(crate::events::UrlEvents { url: url.clone() }));
        }
        Arc::new(crate::entry::announce::Announce {
            stack: "local".into(),
            sinks: crate::events::Fanout(sinks),
            metrics: false,
            lineage: self.announce.lineage.clone(),
            at_finish: false,
        })
    }
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
    /// What it writes after: the run's ledger record and report.
    ending: Ending,
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
        let snap = self.progress.snapshot();
        let error = serde_json::json!({"Error": error, "Cause": cause});
        // Before its plan, a run that has its run id is recorded by it (its status), as the Catch would.
        let state = match (snap.plan_url, snap.trigger) {
            (Some(plan_url), _) => serde_json::json!({"plan": {"plan_url": plan_url}, "error": error}),
            (None, Some((run_id, stage))) => {
                serde_json::json!({"trigger": {"run_id": run_id, "stage": stage}, "error": error})
            }
            (None, None) => return Ok(None),
        };
        let out = crate::load::cleanup(&self.stop_ctx, crate::contract::load::CleanupRequest { state }).await?;
        let done = out.clone();
        self.progress.update(|s| {
            s.phase = "stopped";
            s.cleanup = Some(done);
        });
        // The stopped run is a run like any other: its ledger record and report (the transitions estimated: the
        // interpreter's count went with its task).
        self.ending.publish(None).await;
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
            announce: Some(self.announcer()),
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
            announce: self.announcer(),
        };
        let name = execution_name.to_string();
        let at_end = ending.clone();
        let outcome = tokio::spawn(async move {
            let output = interpreter.execute(&name, input).await;
            at_end.end(output, interpreter.transitions()).await
        });
        Ok(RunHandle {
            progress,
            outcome,
            stop_ctx,
            ending,
        })
    }
}

/// What a local run needs once its execution ended: where its record is, and what only this process counted.
#[derive(Clone)]
struct Ending {
    stages: Arc<dyn StageOpener>,
    progress: Arc<Progress>,
    memory_mb: u32,
    warehouse: String,
    announce: Arc<crate::entry::announce::Announce>,
}

impl Ending {
    /// The run's ledger record and report written with what this process counted (the planner's and loader's
    /// invocations; the state transitions, when the execution ended by itself), and its report read back from the
    /// stage, as `pgshift report` reads it; `None` for a run without a plan, or whose record cannot be read.
    async fn publish(&self, transitions: Option<u64>) -> Option<RunReport> {
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
            transitions,
            warehouse: Some(self.warehouse.clone()),
        };
        // A run that failed before its plan is recorded by the plan URL its Cleanup named.
        let url = snap.plan_url.or(snap.cleanup.and_then(|c| c.plan_url))?;
        let published = crate::report::publish(self.stages.as_ref(), &url, &facts)
            .await
            .map_err(|e| tracing::warn!(error = %e, "could not read the run's record back"))
            .ok()?;
        // The run's end told from the same record and bill, the transitions counted.
        let told = self.announce.run_ended(&published.record, &published.bill, None).await;
        for e in &told.errors {
            tracing::warn!(error = %e, "the run's end not told everywhere");
        }
        Some(published.report)
    }

    async fn end(self, output: Result<Value, Failure>, transitions: u64) -> RunOutcome {
        self.progress.update(|s| {
            s.phase = if output.is_ok() { "succeeded" } else { "failed" };
        });
        let failure = output.as_ref().err().map(|f| (f.error.clone(), failure_message(f)));
        let read = self.publish(Some(transitions)).await;
        let mut report = read.unwrap_or_else(|| RunReport::unplanned(&run_id_of(&output), failure.clone()));
        report.seconds = Some(self.progress.elapsed());
        // A failure the stage does not record (a run that ended before its Cleanup state could write it).
        if report.failure.is_none() {
            report.failure = failure;
        }
        RunOutcome {
            output,
            report,
            cleanup: self.progress.snapshot().cleanup,
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
