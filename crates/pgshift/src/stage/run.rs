//! A run's records read back from its stage: the plan, each range's result, the load's result. What the loader, the
//! report and a local run all read, through the stage port and the contract's layout only.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{Stage, StageError, StageOpener};
use crate::contract::layout::{load_key_at, result_key, split_plan_url};
use crate::contract::load::LoadResult;
use crate::contract::model::{ExtractResult, ExtractTask};
use crate::contract::plan::Plan;

/// The stage URL and run directory of a `<stage>/<run>/plan.json` URL.
pub(crate) fn plan_dirs(plan_url: &str) -> Result<(&str, &str), StageError> {
    split_plan_url(plan_url).ok_or_else(|| StageError::BadUrl {
        url: plan_url.to_string(),
        reason: "not a <stage>/<run>/plan.json URL".into(),
    })
}

/// The stage a plan URL is on.
pub(crate) async fn stage_of(stages: &dyn StageOpener, plan_url: &str) -> Result<Arc<dyn Stage>, StageError> {
    stages.open(plan_dirs(plan_url)?.0).await
}

/// The object at `key` as JSON, or `None` when there is none.
pub(crate) async fn read_json<T: DeserializeOwned>(stage: &dyn Stage, key: &str) -> Result<Option<T>, StageError> {
    match stage.get(key).await {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| StageError::Malformed {
            location: format!("{}/{key}", stage.url()),
            reason: e.to_string(),
        }),
        Err(StageError::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The plan a `<stage>/<run>/plan.json` URL names.
pub(crate) async fn read_plan(stage: &dyn Stage, plan_url: &str) -> Result<Plan, StageError> {
    let key = stage.key_of(plan_url).unwrap_or("plan.json").to_string();
    read_json(stage, &key).await?.ok_or_else(|| StageError::Missing {
        location: plan_url.to_string(),
    })
}

/// The result an extractor left beside a task's files, when it finished.
pub(crate) async fn read_result(stage: &dyn Stage, task: &ExtractTask) -> Result<Option<ExtractResult>, StageError> {
    read_json(stage, &result_key(task)).await
}

/// `<run>/load.json` of a run, when it was loaded (or started loading).
pub(crate) async fn read_load(stages: &dyn StageOpener, plan_url: &str) -> Result<Option<LoadResult>, StageError> {
    let (stage_url, run) = plan_dirs(plan_url)?;
    let stage = stages.open(stage_url).await?;
    read_json(stage.as_ref(), &load_key_at(run)).await
}
