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
    /// A local execution's process (`pgshift run`, `pgshift load` on this machine): whether it still runs is
    /// known, so its leftovers can be collected the moment it is gone (a kill -9) instead of after a day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<LocalProcess>,
}

impl RunLock {
    /// Who holds the run, for a message: the execution, its process where it is a local one, and since when.
    pub fn holder(&self) -> String {
        match &self.process {
            Some(p) => format!(
                "execution {} (process {} on {}, since {})",
                self.execution, p.pid, p.host, self.taken_at
            ),
            None => format!("execution {} (since {})", self.execution, self.taken_at),
        }
    }
}

/// A process on a host: its pid and its start time (so a pid used again by another process is not mistaken for it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalProcess {
    pub host: String,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks since boot); 0 where there is no /proc.
    pub start_ticks: u64,
}

impl LocalProcess {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            host: hostname(),
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
        }
    }

    /// Whether the process still runs: `None` when that cannot be told from here (another host).
    pub fn alive(&self) -> Option<bool> {
        if self.host != hostname() {
            return None;
        }
        Some(match start_ticks(self.pid) {
            Some(t) => self.start_ticks == 0 || t == self.start_ticks,
            None => false,
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether a run can still touch the warehouse: what garbage collection of staging tables asks of each run it finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Its execution ended (failure recorded, load finished), its process is gone, its lock is older than any
    /// execution can live, or its records are gone from the stage: what it left is garbage.
    Dead(String),
    /// It may still run: nothing of it is touched.
    Live(String),
}

/// No execution lives longer than this: the state machine's TimeoutSeconds (a day), with an hour's margin.
pub(crate) const MAX_EXECUTION_SECONDS: u64 = 86_400 + 3_600;

/// Whether run `run_id` on this stage may still be running, from its records (`status.json`, `load.json`,
/// `lock.json`, `plan.json`).
pub(crate) async fn liveness(stage: &dyn Stage, run_id: &str) -> Result<Liveness, StageError> {
    use crate::contract::layout;
    if run_ended(stage, run_id).await? {
        return Ok(Liveness::Dead("its execution ended".into()));
    }
    let lock: Option<RunLock> = read_json(stage, &layout::lock_key(run_id)).await.unwrap_or(None);
    let Some(lock) = lock else {
        if stage.head(&layout::plan_key(run_id)).await?.is_none() {
            return Ok(Liveness::Dead("its records are gone from the stage".into()));
        }
        return Ok(Liveness::Live("planned, not ended, and no execution holds it".into()));
    };
    if let Some(p) = &lock.process {
        match p.alive() {
            Some(false) => return Ok(Liveness::Dead(format!("its process {} on {} is gone", p.pid, p.host))),
            Some(true) => return Ok(Liveness::Live(format!("its process {} still runs", p.pid))),
            None => {}
        }
    }
    let age = chrono::DateTime::parse_from_rfc3339(&lock.taken_at)
        .map(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .num_seconds()
                .max(0) as u64
        })
        .unwrap_or(0);
    if age > MAX_EXECUTION_SECONDS {
        return Ok(Liveness::Dead(format!(
            "its execution {} started {age} s ago, longer than any execution lives",
            lock.execution
        )));
    }
    Ok(Liveness::Live(format!(
        "its execution {} may still run",
        lock.execution
    )))
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
    // Local executions (the interpreter's ARNs are in the `local` region) are this process.
    let local = execution.starts_with("arn:aws:states:local:") || execution.starts_with("local:");
    let mine = RunLock {
        execution: execution.to_string(),
        // To the millisecond: a run that fails before its plan is timed from its lock.
        taken_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        process: local.then(LocalProcess::current),
    };
    let body = bytes::Bytes::from(serde_json::to_vec(&mine).unwrap_or_default());
    if stage.put_new(&key, body.clone()).await? {
        return Ok(None);
    }
    let holder: Option<RunLock> = read_json(stage, &key).await?;
    match holder {
        // The same execution again (a retried state, a redrive) — unless another live process on this machine runs
        // an execution of that name (two `pgshift run --run-id X` at once): that one holds the run.
        Some(h) if h.execution == execution && !another_live_process(&h) => Ok(None),
        // A local holder whose process is gone (killed) holds nothing any more.
        Some(h) if h.process.as_ref().and_then(LocalProcess::alive) == Some(false) => {
            crate::stage::put(stage, &key, body).await?;
            Ok(None)
        }
        Some(h) if !run_ended(stage, run_id).await? => Ok(Some(h)),
        _ => {
            crate::stage::put(stage, &key, body).await?;
            Ok(None)
        }
    }
}

/// Whether a lock is held by a process other than this one that still runs on this host.
fn another_live_process(lock: &RunLock) -> bool {
    lock.process
        .as_ref()
        .is_some_and(|p| *p != LocalProcess::current() && p.alive() == Some(true))
}

/// The holder of the run's lock when it is another process on this host that still runs and whose run has not
/// ended: the run id is not restarted, resumed or planned again beside it (a restart would delete its objects, lock
/// included, and race it).
pub(crate) async fn live_holder(stage: &dyn Stage, run_id: &str) -> Result<Option<RunLock>, StageError> {
    let lock: Option<RunLock> = read_json(stage, &crate::contract::layout::lock_key(run_id))
        .await
        .unwrap_or(None);
    let Some(lock) = lock else { return Ok(None) };
    if !another_live_process(&lock) || run_ended(stage, run_id).await? {
        return Ok(None);
    }
    Ok(Some(lock))
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
