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

/// Who owns a run id: `<run>/lock.json`, taken by the execution that triggered it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunLock {
    pub execution: String,
    pub taken_at: String,
}

/// Takes the run id's lock for `execution` (`<run>/lock.json`, written only if absent): `None` when this execution
/// holds it now (taken, or taken before by this same execution: a retried state, a redrive), or `Some(holder)` when
/// another execution does and has not ended (no `status.json`, no finished `load.json`): a duplicate delivery of
/// the same event, which must not run. The lock of an execution that ended passes to the next.
pub(crate) async fn take_run_lock(
    stage: &dyn Stage,
    run_id: &str,
    execution: &str,
) -> Result<Option<RunLock>, StageError> {
    let key = crate::contract::layout::lock_key(run_id);
    let mine = RunLock {
        execution: execution.to_string(),
        taken_at: crate::contract::clock::now_rfc3339().0,
    };
    let body = bytes::Bytes::from(serde_json::to_vec(&mine).unwrap_or_default());
    if stage.put_new(&key, body.clone()).await? {
        return Ok(None);
    }
    let holder: Option<RunLock> = read_json(stage, &key).await?;
    match holder {
        Some(h) if h.execution == execution => Ok(None),
        Some(h) if !run_ended(stage, run_id).await? => Ok(Some(h)),
        _ => {
            crate::stage::put(stage, &key, body).await?;
            Ok(None)
        }
    }
}

/// Whether the run's execution ended: its failure recorded (`status.json`), or its load finished.
async fn run_ended(stage: &dyn Stage, run_id: &str) -> Result<bool, StageError> {
    if stage
        .head(&crate::contract::layout::status_key(run_id))
        .await?
        .is_some()
    {
        return Ok(true);
    }
    let load: Option<LoadResult> = read_json(stage, &crate::contract::layout::load_key(run_id)).await?;
    Ok(load.is_some_and(|l| l.done))
}
