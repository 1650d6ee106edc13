//! The Lambda handlers: what each function does with the JSON the state machine hands it. Each takes the ports its
//! IAM role allows (a context built once at cold start) and reports errors by their stable names.

use crate::contract::model::{ExtractResult, ExtractTask};
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

/// The extractor Lambda's handler: a task as the Map hands it over (JSON), checked, then run.
pub async fn extractor(ctx: &ExtractContext, input: serde_json::Value) -> Result<ExtractResult, ExtractError> {
    let task: ExtractTask =
        serde_json::from_value(input).map_err(|e| ExtractError::InvalidTask(format!("extract task: {e}")))?;
    crate::extract::extract(ctx, task).await
}

/// The loader Lambda's handler: `{"action": "start", …}` (the default), `{"action": "check", "progress": …}` or
/// `{"action": "cleanup", "state": …}`.
pub async fn loader(ctx: &LoadContext, input: serde_json::Value) -> Result<serde_json::Value, LoadError> {
    crate::load::handle(ctx, input).await
}
