//! The Lambda handlers: what each function does with the JSON the state machine hands it. Each takes the ports its
//! IAM role allows (a context built once at cold start) and reports errors by their stable names.

use serde_json::Value;

use crate::contract::layout;
use crate::contract::load::LoaderInput;
use crate::contract::model::{ExtractResult, ExtractorInput};
use crate::contract::plan::{PlanSummary, PlannerInput};
use crate::contract::snapshot::RestoreRecord;
use crate::entry::trigger::{triggered, PlannerDefaults, Triggered};
use crate::extract::{ExtractContext, ExtractError};
use crate::load::{LoadContext, LoadError};
use crate::plan::{PlanContext, PlanError};

/// What the planner returns: the `Trigger` state's output, or the plan summary (the state machine's `$.plan`).
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum PlannerOutput {
    Triggered(Box<Triggered>),
    Planned(Box<PlanSummary>),
}

/// The planner's input parsed, once: anything but the shapes [`PlannerInput`] names is `Pipeline.Fatal.InvalidInput`.
pub fn planner_input(input: Value) -> Result<PlannerInput, PlanError> {
    serde_json::from_value(input).map_err(|e| PlanError::InvalidRequest(format!("planner input: {e}")))
}

/// The planner Lambda's handler: a `trigger` makes a trigger input (an RDS snapshot event or a manual input) the
/// run's request and what to restore for it; a `plan` plans that request and writes the plan to the stage; a trigger
/// input without `action` is planned at once (no restore: a direct invocation reads the configured source).
pub async fn planner(
    ctx: &PlanContext,
    defaults: &PlannerDefaults,
    input: PlannerInput,
) -> Result<PlannerOutput, PlanError> {
    let req = match input {
        PlannerInput::Trigger { input, execution } => {
            let t = trigger(ctx, defaults, &input, execution.as_deref()).await?;
            return Ok(PlannerOutput::Triggered(Box::new(t)));
        }
        PlannerInput::Plan { request, replan: true } => {
            return Ok(PlannerOutput::Planned(Box::new(
                crate::plan::replan(ctx, *request).await?.1,
            )))
        }
        PlannerInput::Plan { request, .. } => *request,
        PlannerInput::Direct(input) => crate::entry::trigger::plan_request(&input, &defaults.request)?,
    };
    Ok(PlannerOutput::Planned(Box::new(crate::plan::handle(ctx, req).await?.1)))
}

/// The `Trigger` state: the run's request and restore; with the execution's id, the run's lock taken (a duplicate
/// delivery ends, a restart while another execution holds the run is refused).
async fn trigger(
    ctx: &PlanContext,
    defaults: &PlannerDefaults,
    input: &Value,
    execution: Option<&str>,
) -> Result<Triggered, PlanError> {
    let mut t = triggered(input, defaults)?;
    let Some(execution) = execution else {
        return Ok(t);
    };
    let stage = ctx.stages.open(&t.stage).await?;
    refuse_loaded(stage.as_ref(), &t).await?;
    t.duplicate_of = crate::stage::run::take_run_lock(stage.as_ref(), &t.run_id, execution).await?;
    if let Some(holder) = &t.duplicate_of {
        if t.request.restart {
            // A restart asked for by hand is no duplicate delivery: it is refused, naming the holder.
            return Err(PlanError::RunExists {
                run_id: t.run_id.clone(),
                detail: format!(
                    "it is held by {}, which has not ended; nothing was deleted: wait for it to end, or stop it, \
                     before --restart",
                    holder.holder()
                ),
            });
        }
        tracing::warn!(run = %t.run_id, holder = %holder.execution, "a duplicate trigger: ending");
    }
    Ok(t)
}

/// A run id already loaded is refused here, before any restore is paid for: a redelivered RDS event is that same run
/// (its run id comes from the event), and a restart must be asked for.
async fn refuse_loaded(stage: &dyn crate::stage::Stage, t: &Triggered) -> Result<(), PlanError> {
    if t.request.restart {
        return Ok(());
    }
    let key = layout::load_key(&t.run_id);
    let load: Option<crate::contract::load::LoadResult> =
        crate::stage::run::read_json(stage, &key).await.ok().flatten();
    if !load.is_some_and(|l| l.done) {
        return Ok(());
    }
    let how = match &t.request.snapshot {
        Some(s) if !s.event_id.is_empty() => format!(
            "this RDS event was delivered again (a run from an event takes its run id from it), and nothing was \
             restored; to load snapshot {} again, run pgshift run --snapshot {} with a new --run-id",
            s.identifier, s.identifier
        ),
        _ => "nothing was restored; use a new --run-id, or --restart to extract and load it again".into(),
    };
    Err(PlanError::RunExists {
        run_id: t.run_id.clone(),
        detail: format!("it was loaded already; {how}"),
    })
}

/// The extractor's input parsed, once: a task as the Map hands it over (with its attempt number), or a bare task.
pub fn extractor_input(input: Value) -> Result<ExtractorInput, ExtractError> {
    serde_json::from_value(input).map_err(|e| ExtractError::InvalidTask(format!("extract task: {e}")))
}

/// The extractor Lambda's handler: the task checked, then run.
pub async fn extractor(ctx: &ExtractContext, input: ExtractorInput) -> Result<ExtractResult, ExtractError> {
    crate::extract::extract_attempt(ctx, input.task, input.attempt).await
}

/// What the loader Lambda may sweep: the RDS port and this stack's limits (absent: the sweep is skipped).
pub struct SweepContext {
    pub rds: std::sync::Arc<dyn crate::rds::Rds>,
    pub request: crate::sweep::SweepRequest,
}

/// The loader's errors: the load's, or the sweep's.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Sweep(#[from] crate::sweep::SweepError),
}

impl LoaderError {
    pub fn name(&self) -> &'static str {
        match self {
            LoaderError::Load(e) => e.name(),
            LoaderError::Sweep(e) => e.name(),
        }
    }
}

/// The loader's input parsed, once: anything but the shapes [`LoaderInput`] names is `Pipeline.Fatal.InvalidInput`.
pub fn loader_input(input: Value) -> Result<LoaderInput, LoaderError> {
    LoaderInput::from_json(input).map_err(|e| LoadError::InvalidRequest(format!("loader input: {e}")).into())
}

/// What the loader has beside its load context: the sweep's RDS client, what a run's end tells
/// ([`crate::entry::announce`]), and the extractors' memory the report prices their GB-seconds at.
#[derive(Default, Clone, Copy)]
pub struct LoaderExtras<'a> {
    pub sweep: Option<&'a SweepContext>,
    pub announce: Option<&'a crate::entry::announce::Announce>,
    pub extractor_memory_mb: u32,
}

/// The loader Lambda's handler: `sweep` (restored instances dead runs left) and `finish` (the restore's record, and
/// the run's end told: its events, metrics and lineage) here, the load's own actions by [`crate::load::handle`]. When
/// the run ends here (its load done, or its cleanup run), the run's HTML report is written to `<run>/report.html`; a
/// report that cannot be written is logged and never fails the run.
pub async fn loader(ctx: &LoadContext, extras: &LoaderExtras<'_>, input: LoaderInput) -> Result<Value, LoaderError> {
    let memory = extras.extractor_memory_mb;
    let (cleanup, preflight) = match &input {
        LoaderInput::Sweep {} => return run_sweep(extras.sweep).await,
        LoaderInput::Finish(req) => return Ok(finish(ctx, &req.state, extras).await?),
        LoaderInput::Cleanup(_) => (true, None),
        LoaderInput::Preflight(p) => (false, Some(p.plan_url.clone())),
        _ => (false, None),
    };
    let out = crate::load::handle(ctx, input).await?;
    // Cleanup names the run's plan URL, also of a run that failed before planning (its record is its status).
    let ended = if cleanup {
        text_at(&out, "/plan_url")
    } else {
        done_plan_url(&out)
    };
    if let Some(plan_url) = ended {
        write_report(ctx, &plan_url, memory).await;
    }
    if let (Some(plan_url), Some(a)) = (preflight, extras.announce) {
        for e in a.run_started(ctx.stages.as_ref(), &plan_url).await {
            tracing::warn!(error = %e, "lineage START not sent");
        }
    }
    Ok(out)
}

/// Writes the run's ledger record (`<run>/ledger.json`) as its stage has it, then its HTML report priced from that
/// record; what cannot be written is logged and never fails the run.
async fn write_report(ctx: &LoadContext, plan_url: &str, extractor_memory_mb: u32) -> Option<crate::report::Published> {
    let facts = crate::report::ledger::LedgerFacts {
        assumed_memory_mb: extractor_memory_mb,
        warehouse: Some(ctx.warehouse.kind().to_string()),
        ..Default::default()
    };
    crate::report::publish(ctx.stages.as_ref(), plan_url, &facts)
        .await
        .map_err(|e| tracing::warn!(error = %e, "could not read the run's record for its ledger and report"))
        .ok()
}

async fn run_sweep(sweep: Option<&SweepContext>) -> Result<Value, LoaderError> {
    let Some(s) = sweep else {
        return Ok(serde_json::json!({"skipped": "no RDS client is configured for the sweep"}));
    };
    let out = crate::sweep::sweep(s.rds.as_ref(), &s.request).await?;
    Ok(serde_json::to_value(out).unwrap_or_default())
}

/// The restore's record from the execution's state, as the definition leaves it.
pub fn restore_record(state: &Value) -> Option<RestoreRecord> {
    let restore = state.pointer("/trigger/restore")?;
    let text = |p: &str| text_at(state, p);
    Some(RestoreRecord {
        snapshot: text_at(restore, "/snapshot").unwrap_or_default(),
        snapshot_created_at: text("/source_snapshot/snapshot/SnapshotCreateTime"),
        engine: text("/source_snapshot/snapshot/Engine"),
        instance: text("/restored/instance").unwrap_or_else(|| text_at(restore, "/instance").unwrap_or_default()),
        cluster: text("/restored_cluster/cluster"),
        instance_class: text_at(restore, "/instance_request/DbInstanceClass").unwrap_or_default(),
        started_at: text("/restored/started_at"),
        available_at: text("/restored/available_at"),
        deleted_at: text("/restored_deleted/deleted_at"),
        allocated_gb: state.pointer("/restored/allocated_gb").and_then(Value::as_u64),
        storage_type: text("/restored/storage_type"),
        teardown_error: state.get("teardown_error").map(|e| {
            format!(
                "{}: {}",
                text_at(e, "/Error").unwrap_or_default(),
                text_at(e, "/Cause").unwrap_or_default()
            )
        }),
    })
}

/// The run's end: its restore recorded (a snapshot run), its report written, and, where the Finish state tells it
/// (deployed), its events, metrics and lineage.
async fn finish(ctx: &LoadContext, state: &Value, extras: &LoaderExtras<'_>) -> Result<Value, LoadError> {
    let plan_url = text_at(state, "/plan/plan_url").or_else(|| text_at(state, "/cleanup/plan_url"));
    let (out, published) = record_end(ctx, state, plan_url.as_deref(), extras.extractor_memory_mb).await?;
    // Told from the record and bill the report was drawn from: the stage is not read again.
    if let (Some(p), Some(a)) = (published, extras.announce.filter(|a| a.at_finish)) {
        let told = a.run_ended(&p.record, &p.bill, Some(ctx.warehouse.as_ref())).await;
        for e in &told.errors {
            tracing::warn!(error = %e, "the run's end not told everywhere");
        }
    }
    Ok(out)
}

/// Writes `<run>/restore.json` for a run that restored a snapshot, and then the run's report again (it now holds the
/// restore's times and cost); for a live run, the report. Returns what was published.
async fn record_end(
    ctx: &LoadContext,
    state: &Value,
    plan_url: Option<&str>,
    extractor_memory_mb: u32,
) -> Result<(Value, Option<crate::report::Published>), LoadError> {
    let Some(record) = restore_record(state) else {
        let published = match plan_url {
            Some(u) => write_report(ctx, u, extractor_memory_mb).await,
            None => None,
        };
        return Ok((serde_json::json!({"restore": null}), published));
    };
    let (Some(stage), Some(run)) = (text_at(state, "/trigger/stage"), text_at(state, "/trigger/run_id")) else {
        return Ok((serde_json::json!({"restore": record}), None));
    };
    let stage = ctx.stages.open(&stage).await?;
    let body = serde_json::to_vec_pretty(&record).unwrap_or_default();
    let put = crate::stage::put(stage.as_ref(), &layout::restore_key(&run), bytes::Bytes::from(body)).await?;
    tracing::info!(url = %put.url, instance = %record.instance, "restore recorded");
    let published = match plan_url {
        Some(u) => write_report(ctx, u, extractor_memory_mb).await,
        None => None,
    };
    Ok((serde_json::json!({"restore": record, "url": put.url}), published))
}

fn text_at(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer).and_then(Value::as_str).map(str::to_string)
}

/// The plan of a load the output says is done.
fn done_plan_url(out: &Value) -> Option<String> {
    (out.get("done") == Some(&Value::Bool(true)))
        .then(|| text_at(out, "/plan_url"))
        .flatten()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contract::load::{LoadOptions, LoadProgress, LoadSummary};
    use crate::contract::plan::PlanRequest;

    /// A Task state of the definition that invokes one of the three functions: its name, the function, and its
    /// Parameters.
    fn function_tasks(v: &Value, out: &mut Vec<(String, String, Value)>) {
        let Some(states) = v.get("States").and_then(Value::as_object) else {
            if let Some(o) = v.as_object() {
                o.values().for_each(|c| function_tasks(c, out));
            } else if let Some(a) = v.as_array() {
                a.iter().for_each(|c| function_tasks(c, out));
            }
            return;
        };
        for (name, state) in states {
            let resource = state.get("Resource").and_then(Value::as_str).unwrap_or_default();
            if state.get("Type") == Some(&json!("Task")) && resource.ends_with("FunctionArn}") {
                let params = state.get("Parameters").cloned().unwrap_or(Value::Null);
                out.push((name.clone(), resource.to_string(), params));
            }
            state
                .as_object()
                .into_iter()
                .flat_map(|o| o.values())
                .for_each(|c| function_tasks(c, out));
        }
    }

    /// A Parameters template applied as Step Functions applies it: `key.$` takes the value at its path.
    fn apply(template: &Value, data: &Value, context: &Value) -> Value {
        let Some(fields) = template.as_object() else {
            return template.clone();
        };
        let mut out = serde_json::Map::new();
        for (k, v) in fields {
            match k.strip_suffix(".$") {
                Some(key) => {
                    let text = v.as_str().expect("a path");
                    let path = asl::path::Path::parse(text).expect("a path");
                    let value = path
                        .get(data, context)
                        .unwrap_or_else(|| panic!("the sample state has no {text}"));
                    out.insert(key.to_string(), value.clone());
                }
                None => {
                    out.insert(k.clone(), apply(v, data, context));
                }
            }
        }
        Value::Object(out)
    }

    /// An execution's state as far as the definition's Task states read it, built from the types that write it.
    fn sample_state() -> Value {
        let load = LoadOptions {
            concurrency: Some(4),
            ..Default::default()
        };
        let progress = LoadProgress {
            done: false,
            plan_url: "s3://stage/runs/r1/plan.json".into(),
            wait_seconds: 30,
            checks: 1,
            started_at: 1.0,
            pending: Vec::new(),
            queued: Vec::new(),
            options: load.clone(),
            deadline: None,
            summary: LoadSummary::default(),
        };
        json!({
            "trigger": {"request": PlanRequest::default(), "run_id": "r1", "stage": "s3://stage/runs"},
            "plan": {"plan_url": "s3://stage/runs/r1/plan.json", "load": load},
            "load": {"progress": progress},
        })
    }

    #[test]
    fn every_task_state_of_the_definition_parses_into_its_functions_input() {
        let definition: Value = serde_json::from_str(crate::entry::local::DEFINITION).expect("definition");
        let mut tasks = Vec::new();
        function_tasks(&definition, &mut tasks);
        let state = sample_state();
        let task: Value =
            serde_json::from_str(include_str!("../../../../tests/fixtures/extract_task.json")).expect("task fixture");
        let context = json!({
            "Execution": {"Id": "arn:aws:states:eu-west-1:1:execution:pgshift:x", "Input": {},
                          "StartTime": "2026-12-06T08:00:00Z"},
            "State": {"RetryCount": 2},
        });
        let mut seen = Vec::new();
        for (name, resource, params) in &tasks {
            let what = match resource.as_str() {
                "${PlannerFunctionArn}" => match planner_input(apply(params, &state, &context)) {
                    Ok(PlannerInput::Trigger { execution, .. }) => format!("trigger {}", execution.is_some()),
                    Ok(PlannerInput::Plan { replan, .. }) => format!("plan{}", if replan { " anew" } else { "" }),
                    Ok(PlannerInput::Direct(_)) => "direct".into(),
                    Err(e) => panic!("{name}: {e}"),
                },
                "${ExtractorFunctionArn}" => {
                    let input =
                        extractor_input(apply(params, &task, &context)).unwrap_or_else(|e| panic!("{name}: {e}"));
                    format!("extract {}", input.attempt)
                }
                "${LoaderFunctionArn}" => loader_input(apply(params, &state, &context))
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
                    .action()
                    .to_string(),
                other => panic!("{name}: a function {other} no handler answers"),
            };
            seen.push((name.as_str(), what));
        }
        seen.sort();
        let expected = [
            ("CheckLoad", "check"),
            ("Cleanup", "cleanup"),
            ("ExtractRange", "extract 2"),
            ("Finish", "finish"),
            ("Load", "start"),
            ("Plan", "plan"),
            ("Plan anew", "plan anew"),
            ("Preflight", "preflight"),
            ("Sweep", "sweep"),
            ("Trigger", "trigger true"),
        ];
        let seen: Vec<(&str, &str)> = seen.iter().map(|(n, w)| (*n, w.as_str())).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_loader_input_without_action_is_a_start() {
        let input = loader_input(json!({"plan_url": "s3://stage/runs/r1/plan.json"})).expect("start");
        assert!(matches!(input, LoaderInput::Start(ref r) if r.plan_url.ends_with("plan.json")));
        let input = loader_input(json!({"plan_url": "s3://stage/runs/r1/plan.json", "mode": "append"})).expect("start");
        assert!(
            matches!(input, LoaderInput::Start(ref r) if r.options.mode == crate::contract::load::LoadMode::Append)
        );
    }

    #[test]
    fn a_planner_input_without_action_is_a_trigger_input() {
        let event = json!({"detail-type": "RDS DB Snapshot Event", "detail": {}});
        assert_eq!(
            planner_input(event.clone()).expect("direct"),
            PlannerInput::Direct(event)
        );
        let text = json!("not an object");
        assert_eq!(planner_input(text.clone()).expect("direct"), PlannerInput::Direct(text));
    }

    #[test]
    fn an_unknown_action_or_field_is_invalid_input() {
        let loader = [
            json!({"action": "frobnicate"}),
            json!({"action": "sweep", "dry_run": true}),
            json!({"action": "check"}),
            json!({"action": "cleanup", "state": {}, "extra": 1}),
            json!({"action": "finish", "state": {}, "extra": 1}),
            json!({"action": "preflight", "plan_url": "p", "extra": 1}),
            json!({"action": "start", "plan_url": "p", "extra": 1}),
            json!({"plan_url": "p", "atomic": "all"}),
            json!([1, 2]),
        ];
        for input in loader {
            let e = loader_input(input.clone()).expect_err("refused");
            assert_eq!(e.name(), "Pipeline.Fatal.InvalidInput", "{input}: {e}");
        }
        let e = loader_input(json!({"action": "stop"}))
            .expect_err("unknown action")
            .to_string();
        assert!(
            e.contains("start") && e.contains("sweep") && e.contains("finish"),
            "{e}"
        );
        for input in [
            json!({"action": "replan"}),
            json!({"action": "trigger", "input": {}, "extra": 1}),
            json!({"action": "plan"}),
            json!({"action": "plan", "request": {"not_a_field": 1}}),
        ] {
            let e = planner_input(input.clone()).expect_err("refused");
            assert_eq!(e.name(), "Pipeline.Fatal.InvalidInput", "{input}: {e}");
        }
        for input in [
            json!({"task": {}}),
            json!({"task": {}, "attempt": 1, "extra": 1}),
            json!(3),
        ] {
            let e = extractor_input(input.clone()).expect_err("refused");
            assert_eq!(e.name(), "Pipeline.Fatal.InvalidInput", "{input}: {e}");
        }
    }
}
