//! The Lambda handlers: what each function does with the JSON the state machine hands it. Each takes the ports its
//! IAM role allows (a context built once at cold start) and reports errors by their stable names.

use crate::contract::layout;
use crate::contract::model::ExtractResult;
use crate::contract::plan::PlanSummary;
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

/// The planner Lambda's handler: `{"action": "trigger", "input": …}` makes a trigger input (an RDS snapshot event or a
/// manual input) the run's request and what to restore for it; `{"action": "plan", "request": …}` plans that request
/// and writes the plan to the stage. Any other input is a trigger input planned at once (no restore: a direct
/// invocation reads the configured source).
pub async fn planner(
    ctx: &PlanContext,
    defaults: &PlannerDefaults,
    input: serde_json::Value,
) -> Result<PlannerOutput, PlanError> {
    let action = input
        .get("action")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);
    let req = match action.as_deref() {
        Some("trigger") => {
            let mut t = triggered(input.get("input").unwrap_or(&serde_json::Value::Null), defaults)?;
            if let Some(execution) = input.get("execution").and_then(serde_json::Value::as_str) {
                let stage = ctx.stages.open(&t.stage).await?;
                refuse_loaded(stage.as_ref(), &t).await?;
                t.duplicate_of = crate::stage::run::take_run_lock(stage.as_ref(), &t.run_id, execution).await?;
                if let Some(holder) = &t.duplicate_of {
                    if t.request.restart {
                        // A restart asked for by hand is no duplicate delivery: it is refused, naming the holder.
                        return Err(PlanError::RunExists {
                            run_id: t.run_id.clone(),
                            detail: format!(
                                "it is held by {}, which has not ended; nothing was deleted: wait for it to end, or \
                                 stop it, before --restart",
                                holder.holder()
                            ),
                        });
                    }
                    tracing::warn!(run = %t.run_id, holder = %holder.execution, "a duplicate trigger: ending");
                }
            }
            return Ok(PlannerOutput::Triggered(Box::new(t)));
        }
        Some("plan") => serde_json::from_value(input.get("request").cloned().unwrap_or_default())
            .map_err(|e| PlanError::InvalidRequest(format!("plan request: {e}")))?,
        Some(other) => {
            return Err(PlanError::InvalidRequest(format!(
                "planner action {other:?}: use \"trigger\" or \"plan\""
            )))
        }
        None => crate::entry::trigger::plan_request(&input, &defaults.request)?,
    };
    Ok(PlannerOutput::Planned(Box::new(crate::plan::handle(ctx, req).await?.1)))
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

/// The extractor Lambda's handler: a task as the Map hands it over (JSON, with its attempt number), checked, then
/// run.
pub async fn extractor(ctx: &ExtractContext, input: serde_json::Value) -> Result<ExtractResult, ExtractError> {
    let (task, attempt) = crate::contract::model::extractor_input(input)
        .map_err(|e| ExtractError::InvalidTask(format!("extract task: {e}")))?;
    crate::extract::extract_attempt(ctx, task, attempt).await
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

/// The loader Lambda's handler: `{"action": "start", …}` (the default), `{"action": "check", "progress": …}`,
/// `{"action": "cleanup", "state": …}`, `{"action": "sweep"}` (restored instances dead runs left) or
/// `{"action": "finish", "state": …}` (the restore's record). When the run ends here (its load done, or its cleanup
/// run), the run's HTML report is written to `<run>/report.html`; a report that cannot be written is logged and never
/// fails the run. `extractor_memory_mb` prices the extractors' GB-seconds in the report.
pub async fn loader(
    ctx: &LoadContext,
    sweep: Option<&SweepContext>,
    input: serde_json::Value,
    extractor_memory_mb: u32,
) -> Result<serde_json::Value, LoaderError> {
    match input.get("action").and_then(serde_json::Value::as_str) {
        Some("sweep") => return run_sweep(sweep).await,
        Some("finish") => return Ok(finish(ctx, &input, extractor_memory_mb).await?),
        _ => {}
    }
    let cleanup_of = cleanup_plan_url(&input);
    let out = crate::load::handle(ctx, input).await?;
    if let Some(plan_url) = cleanup_of.or_else(|| done_plan_url(&out)) {
        write_report(ctx, &plan_url, extractor_memory_mb).await;
    }
    Ok(out)
}

/// Writes the run's ledger record (`<run>/ledger.json`) as its stage has it, then its HTML report priced from that
/// record; what cannot be written is logged and never fails the run.
async fn write_report(ctx: &LoadContext, plan_url: &str, extractor_memory_mb: u32) {
    let facts = crate::report::ledger::LedgerFacts {
        assumed_memory_mb: extractor_memory_mb,
        warehouse: Some(ctx.warehouse.kind().to_string()),
        ..Default::default()
    };
    if let Err(e) = crate::report::publish(ctx.stages.as_ref(), plan_url, &facts).await {
        tracing::warn!(error = %e, "could not write the run's ledger record and report");
    }
}

async fn run_sweep(sweep: Option<&SweepContext>) -> Result<serde_json::Value, LoaderError> {
    let Some(s) = sweep else {
        return Ok(serde_json::json!({"skipped": "no RDS client is configured for the sweep"}));
    };
    let out = crate::sweep::sweep(s.rds.as_ref(), &s.request).await?;
    Ok(serde_json::to_value(out).unwrap_or_default())
}

/// The restore's record from the execution's state, as the definition leaves it.
pub fn restore_record(state: &serde_json::Value) -> Option<RestoreRecord> {
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
        teardown_error: state.get("teardown_error").map(|e| {
            format!(
                "{}: {}",
                text_at(e, "/Error").unwrap_or_default(),
                text_at(e, "/Cause").unwrap_or_default()
            )
        }),
    })
}

/// Writes `<run>/restore.json` for a run that restored a snapshot, and then the run's report again (it now holds the
/// restore's times and cost); nothing for a live run.
async fn finish(
    ctx: &LoadContext,
    input: &serde_json::Value,
    extractor_memory_mb: u32,
) -> Result<serde_json::Value, LoadError> {
    let state = input.get("state").cloned().unwrap_or_default();
    let Some(record) = restore_record(&state) else {
        if let Some(plan_url) = text_at(&state, "/plan/plan_url") {
            write_report(ctx, &plan_url, extractor_memory_mb).await;
        }
        return Ok(serde_json::json!({"restore": null}));
    };
    let (Some(stage), Some(run)) = (text_at(&state, "/trigger/stage"), text_at(&state, "/trigger/run_id")) else {
        return Ok(serde_json::json!({"restore": record}));
    };
    let stage = ctx.stages.open(&stage).await?;
    let body = serde_json::to_vec_pretty(&record).unwrap_or_default();
    let put = crate::stage::put(stage.as_ref(), &layout::restore_key(&run), bytes::Bytes::from(body)).await?;
    tracing::info!(url = %put.url, instance = %record.instance, "restore recorded");
    if let Some(plan_url) = text_at(&state, "/plan/plan_url") {
        write_report(ctx, &plan_url, extractor_memory_mb).await;
    }
    Ok(serde_json::json!({"restore": record, "url": put.url}))
}

fn text_at(v: &serde_json::Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

/// The plan of the run a cleanup input is for.
fn cleanup_plan_url(input: &serde_json::Value) -> Option<String> {
    (input.get("action").and_then(serde_json::Value::as_str) == Some("cleanup"))
        .then(|| text_at(input, "/state/plan/plan_url"))
        .flatten()
}

/// The plan of a load the output says is done.
fn done_plan_url(out: &serde_json::Value) -> Option<String> {
    (out.get("done") == Some(&serde_json::Value::Bool(true)))
        .then(|| text_at(out, "/plan_url"))
        .flatten()
}
