//! The Lambda handlers: what each function does with the JSON the state machine hands it. Each takes the ports its
//! IAM role allows (a context built once at cold start) and reports errors by their stable names.

use crate::contract::model::ExtractResult;
use crate::contract::plan::{PlanRequest, PlanSummary};
use crate::extract::{ExtractContext, ExtractError};
use crate::load::{LoadContext, LoadError};
use crate::plan::{PlanContext, PlanError};

/// The planner Lambda's handler: a trigger input (an RDS snapshot event or a manual input) over the configured
/// defaults, planned and written to the stage; the summary is the state machine's `$.plan`.
pub async fn planner(
    ctx: &PlanContext,
    defaults: &PlanRequest,
    input: serde_json::Value,
) -> Result<PlanSummary, PlanError> {
    let req = crate::entry::trigger::plan_request(&input, defaults)?;
    Ok(crate::plan::handle(ctx, req).await?.1)
}

/// The extractor Lambda's handler: a task as the Map hands it over (JSON, with its attempt number), checked, then
/// run.
pub async fn extractor(ctx: &ExtractContext, input: serde_json::Value) -> Result<ExtractResult, ExtractError> {
    let (task, attempt) = crate::contract::model::extractor_input(input)
        .map_err(|e| ExtractError::InvalidTask(format!("extract task: {e}")))?;
    crate::extract::extract_attempt(ctx, task, attempt).await
}

/// The loader Lambda's handler: `{"action": "start", …}` (the default), `{"action": "check", "progress": …}` or
/// `{"action": "cleanup", "state": …}`. When the run ends here (its load done, or its cleanup run), the run's HTML
/// report is written to `<run>/report.html`; a report that cannot be written is logged and never fails the run.
/// `extractor_memory_mb` prices the extractors' GB-seconds in the report.
pub async fn loader(
    ctx: &LoadContext,
    input: serde_json::Value,
    extractor_memory_mb: u32,
) -> Result<serde_json::Value, LoadError> {
    let cleanup_of = cleanup_plan_url(&input);
    let out = crate::load::handle(ctx, input).await?;
    let ended = cleanup_of.or_else(|| done_plan_url(&out));
    if let Some(plan_url) = ended {
        match crate::report::write_html(ctx.stages.as_ref(), &plan_url, extractor_memory_mb).await {
            Ok(url) => tracing::info!(%url, "run report written"),
            Err(e) => tracing::warn!(error = %e, "could not write the run report"),
        }
    }
    Ok(out)
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
