//! A run as its stage records it: the plan, every part's result, every failed attempt, the load's outcome and the
//! run's failure. What the HTML report is drawn from, on AWS and locally alike.

use crate::contract::layout::{restore_key, status_key, table_dir};
use crate::contract::load::LoadResult;
use crate::contract::model::{ExtractResult, FailedAttempt, KeptRange, TableRef};
use crate::contract::plan::Plan;
use crate::contract::snapshot::RestoreRecord;
use crate::stage::{run, Stage, StageError, StageOpener};

/// Everything the stage knows of one run.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub plan: Plan,
    /// The result of every range that landed (one per range).
    pub results: Vec<ExtractResult>,
    /// Attempts that failed, retried or not.
    pub failed: Vec<FailedAttempt>,
    pub load: Option<LoadResult>,
    /// The error name and message (in words: a Lambda error's `errorMessage`) that ended a failed run
    /// (`status.json`).
    pub failure: Option<(String, String)>,
    /// When the failure was recorded, in seconds since the Unix epoch (the run's end).
    pub failed_at: Option<f64>,
    /// The restore of a snapshot run (`restore.json`, written when its instance is gone).
    pub restore: Option<RestoreRecord>,
    /// What the stage lacks: ranges never extracted, a load that did not finish.
    pub notes: Vec<String>,
}

/// How a run ended, as far as the stage says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Succeeded,
    Failed,
    /// Neither: still running, or interrupted.
    Incomplete,
}

impl RunStatus {
    pub fn label(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Incomplete => "incomplete",
        }
    }
}

impl RunRecord {
    pub fn status(&self) -> RunStatus {
        match (&self.failure, &self.load) {
            (Some(_), _) => RunStatus::Failed,
            (None, Some(l)) if l.done && l.tables.iter().all(|t| t.status.is_committed()) => RunStatus::Succeeded,
            _ => RunStatus::Incomplete,
        }
    }

    /// Failed attempts whose range a later attempt landed: (table, range, error name), oldest first.
    pub fn retried(&self) -> Vec<(TableRef, u32, String)> {
        self.failed
            .iter()
            .filter(|a| self.landed(&a.table, a.range_index))
            .map(|a| (a.table.clone(), a.range_index, a.error.clone()))
            .collect()
    }

    /// Whether a range of a table landed.
    pub fn landed(&self, table: &TableRef, range_index: u32) -> bool {
        self.results
            .iter()
            .any(|r| &r.table == table && r.range_index == range_index)
    }

    /// Every extraction attempt, landed or failed, as (start, end) in seconds since the Unix epoch.
    pub fn attempt_spans(&self) -> Vec<(f64, f64)> {
        let landed = self.results.iter().map(|r| (r.started_at, r.seconds));
        let failed = self.failed.iter().map(|a| (a.started_at, a.seconds));
        landed.chain(failed).map(|(s, d)| (s, s + d)).collect()
    }

    /// The most extractions that ran at once.
    pub fn peak_concurrency(&self) -> usize {
        let mut edges: Vec<(f64, i32)> = self
            .attempt_spans()
            .into_iter()
            .flat_map(|(s, e)| [(s, 1), (e, -1)])
            .collect();
        // An attempt that ends as another starts does not overlap it.
        edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let (mut now, mut peak) = (0i32, 0i32);
        for (_, d) in edges {
            now += d;
            peak = peak.max(now);
        }
        peak as usize
    }

    /// Where a failed run stopped, in words: before its plan, in its pre-flight or extraction, or in a table's load.
    pub fn failed_where(&self) -> Option<String> {
        self.failure.as_ref()?;
        if self.plan.tables.is_empty() {
            return Some("before it had a plan (nothing was read from the source)".into());
        }
        let load_failed = self.load.iter().flat_map(|l| &l.tables).find(|t| t.error.is_some());
        if let Some(t) = load_failed {
            return Some(format!("loading {}", t.table));
        }
        let lost = self
            .failed
            .iter()
            .filter(|a| !self.landed(&a.table, a.range_index))
            .map(|a| format!("{} range {}", a.table, a.range_index))
            .collect::<Vec<_>>();
        let mut lost = lost;
        lost.dedup();
        if !lost.is_empty() {
            return Some(format!("extracting {}", crate::contract::code::first_few(&lost, ", ")));
        }
        if self.results.is_empty() && self.load.is_none() {
            return Some(format!(
                "before extracting anything: the plan was made ({} ranges), no range was read",
                self.plan.tasks.len()
            ));
        }
        if self.results.len() < self.plan.tasks.len() {
            let landed = self.results.len();
            return Some(format!(
                "before the load, with {landed} of {} ranges extracted",
                self.plan.tasks.len()
            ));
        }
        Some("in the load, after every range was extracted".into())
    }

    /// What the warehouse holds after a failed run: the tables its load committed, the others as they were.
    pub fn warehouse_now(&self) -> String {
        let committed: Vec<String> = self
            .load
            .iter()
            .flat_map(|l| &l.tables)
            .filter(|t| t.status.is_committed())
            .map(|t| {
                format!(
                    "{} ({} rows)",
                    t.table,
                    t.committed_rows.map_or("?".into(), super::thousands)
                )
            })
            .collect();
        if committed.is_empty() {
            "as it was: no table of this run was committed".into()
        } else {
            format!(
                "{} of {} tables committed: {}; every other table as it was",
                committed.len(),
                self.plan.tables.len(),
                committed.join(", ")
            )
        }
    }

    /// The command that goes on from a failed run: the same run id resumes it (the ranges that landed kept, the
    /// tables committed skipped); after a failure no retry mends, once its cause is fixed.
    pub fn resume_hint(&self) -> Option<String> {
        let id = super::shell_word(&self.plan.run_id);
        let how = format!(
            "run the same command again with --run-id {id} (pgshift run, or pgshift start on the deployed stack)"
        );
        Some(if self.may_pass_again()? {
            format!("{how}: the ranges that landed are kept and committed tables skipped")
        } else {
            format!("fix what the error names, then {how}; or start over with --restart")
        })
    }

    /// Of a failed run: whether the same command may pass as it is (a retryable error, a timeout, a run stopped by a
    /// signal), judged by the error its failure stands for ([`crate::contract::code::effective_name`]).
    pub fn may_pass_again(&self) -> Option<bool> {
        let (name, cause) = self.failure.as_ref()?;
        let name = crate::contract::code::effective_name(name, cause);
        Some(crate::contract::code::may_pass_again(&name))
    }

    /// When the run started and ended, in seconds since the Unix epoch: from the planner's start to the last thing
    /// the stage records (a part, a failed attempt, a load step).
    pub fn span(&self) -> (f64, f64) {
        let start = self.plan.started_at;
        let mut end = start + self.plan.planning_seconds;
        for r in &self.results {
            end = end.max(r.started_at + r.seconds);
        }
        for a in &self.failed {
            end = end.max(a.started_at + a.seconds);
        }
        if let Some(at) = self.failed_at {
            end = end.max(at);
        }
        if let Some(l) = &self.load {
            end = end.max(l.started_at + l.seconds);
            for s in l.tables.iter().flat_map(|t| &t.steps) {
                end = end.max(s.started_at + s.seconds);
            }
        }
        (start, end.max(start))
    }
}

/// Reads a run back from its stage by its plan's URL.
pub async fn read(stages: &dyn StageOpener, plan_url: &str) -> Result<RunRecord, StageError> {
    let stage = run::stage_of(stages, plan_url).await?;
    let plan = match run::read_plan(stage.as_ref(), plan_url).await {
        Ok(p) => p,
        Err(e) => return unplanned(stage.as_ref(), plan_url).await.ok_or(e),
    };
    let mut notes = Vec::new();
    let mut results = Vec::new();
    for task in &plan.tasks {
        match run::read_result(stage.as_ref(), task).await? {
            Some(r) if !r.impossible().is_empty() => {
                return Err(StageError::Malformed {
                    location: format!("{}/{}", stage.url(), crate::contract::layout::result_key(task)),
                    reason: format!(
                        "impossible values, not reported: {}; extract the range again",
                        crate::contract::code::first_few(&r.impossible(), "; ")
                    ),
                })
            }
            Some(r) => results.push(r),
            None => notes.push(format!("{} range {}: not extracted", task.table, task.range_index)),
        }
    }
    let (failed, kept) = attempts(stage.as_ref(), &plan).await?;
    mark_kept(&mut results, &kept);
    let load = run::read_load(stages, plan_url).await?;
    match &load {
        None => notes.push("not loaded (no load.json)".into()),
        Some(l) if !l.done => notes.push("the load has not finished (or failed): only committed tables count".into()),
        Some(_) => {}
    }
    let status: Option<serde_json::Value> = run::read_json(stage.as_ref(), &status_key(&plan.run_id))
        .await
        .ok()
        .flatten();
    let mut load = load;
    if let Some(v) = &status {
        committed_by_cleanup(&mut load, v, &plan.run_id);
    }
    let failed_at = status
        .as_ref()
        .and_then(|v| v.get("at"))
        .and_then(serde_json::Value::as_f64);
    let failure = status.map(|v| {
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        (text("error"), crate::contract::code::in_words(&text("cause")))
    });
    let restore = run::read_json(stage.as_ref(), &restore_key(&plan.run_id))
        .await
        .ok()
        .flatten();
    Ok(RunRecord {
        plan,
        results,
        failed,
        load,
        failure,
        failed_at,
        restore,
        notes,
    })
}

/// The record of a run that failed before it had a plan: its `status.json` (written by Cleanup, `"planned": false`)
/// and its restore's record, if it restored a snapshot; `None` for anything else.
async fn unplanned(stage: &dyn Stage, plan_url: &str) -> Option<RunRecord> {
    let (_, run_dir) = crate::contract::layout::split_plan_url(plan_url)?;
    let status: serde_json::Value = run::read_json(stage, &format!("{run_dir}/status.json")).await.ok()??;
    if status.get("planned") != Some(&serde_json::Value::Bool(false)) {
        return None;
    }
    let text = |k: &str| status.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let run_id = text("run_id");
    let ended = status.get("at").and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    let started = status
        .get("started_at")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(ended);
    let plan = Plan {
        run_id: run_id.clone(),
        plan_id: String::new(),
        request_id: String::new(),
        created_at: crate::contract::clock::rfc3339(started as i64),
        source: crate::contract::plan::SourceInfo {
            server_version: String::new(),
            server_version_num: 0,
            database: String::new(),
            system_identifier: None,
        },
        stage: stage.url().to_string(),
        settings: Default::default(),
        load: None,
        snapshot: None,
        tables: Vec::new(),
        tasks: Vec::new(),
        notes: Vec::new(),
        started_at: started,
        planning_seconds: (ended - started).max(0.0),
        billed: None,
        request: None,
    };
    let restore = run::read_json(stage, &restore_key(&run_id)).await.ok().flatten();
    Some(RunRecord {
        plan,
        results: Vec::new(),
        failed: Vec::new(),
        load: None,
        failure: Some((text("error"), crate::contract::code::in_words(&text("cause")))),
        failed_at: Some(ended),
        restore,
        notes: vec!["the run failed before it had a plan: nothing was read from the source".into()],
    })
}

/// The failed-attempt records of every table of the plan, and the ranges kept from an earlier attempt (one listing per
/// table: both lie beside the parts).
async fn attempts(stage: &dyn Stage, plan: &Plan) -> Result<(Vec<FailedAttempt>, Vec<KeptRange>), StageError> {
    let (mut failed, mut kept) = (Vec::new(), Vec::new());
    for t in &plan.tables {
        let dir = format!("{}/", table_dir(&plan.run_id, &t.table));
        for (key, _) in stage.list(&dir).await? {
            if key.ends_with(".failed.json") {
                failed.extend(run::read_json::<FailedAttempt>(stage, &key).await.ok().flatten());
            } else if key.ends_with(".kept.json") {
                kept.extend(run::read_json::<KeptRange>(stage, &key).await.ok().flatten());
            }
        }
    }
    failed.sort_by(|a, b| a.started_at.total_cmp(&b.started_at));
    Ok((failed, kept))
}

/// The tables Cleanup found committed (`status.json`, from the warehouse's load log) that the load's own record
/// lacks (its write after the commit failed): the record says what the warehouse committed.
fn committed_by_cleanup(load: &mut Option<LoadResult>, status: &serde_json::Value, run_id: &str) {
    #[derive(serde::Deserialize)]
    struct Outcome {
        table: TableRef,
        status: crate::contract::load::TableStatus,
        committed_rows: Option<u64>,
    }
    let outcomes: Vec<Outcome> = status
        .get("tables")
        .cloned()
        .and_then(|t| serde_json::from_value(t).ok())
        .unwrap_or_default();
    for o in outcomes.into_iter().filter(|o| o.status.is_committed()) {
        load.get_or_insert_with(|| LoadResult::unrecorded(run_id))
            .mark_committed(&o.table, o.status, o.committed_rows);
    }
}

/// Marks the results a later attempt kept (its marker names that very result by its start).
fn mark_kept(results: &mut [ExtractResult], kept: &[KeptRange]) {
    for r in results {
        r.reused = kept
            .iter()
            .any(|k| k.table == r.table && k.range_index == r.range_index && k.result_started_at == r.started_at);
    }
}
