//! After a failure: the load transactions still running cancelled, the run's staging tables dropped (only those that
//! exist, and only those reported), and `<run>/status.json` written with every table's outcome.

use bytes::Bytes;

use super::context::{stage_of, LoadContext};
use super::error::LoadError;
use std::collections::BTreeSet;

use super::statements::{
    drop_staging_sql, drop_stagings_sql, logged_tables_sql, marked_tables_sql, staging_table, STAGINGS_PER_TRANSACTION,
};
use crate::contract::layout::status_key;
use crate::contract::load::*;
use crate::contract::model::TableRef;
use crate::contract::plan::{Plan, TablePlan};
use crate::stage::run;
use crate::warehouse::{Cell, Warehouse};
use serde_json::{json, Value};

/// After a failure: cancels the load transactions still running, drops the run's staging tables, and marks the run
/// failed on the stage. Best effort: what it cannot do is reported in `notes`.
pub async fn cleanup(ctx: &LoadContext, req: CleanupRequest) -> Result<CleanupResult, LoadError> {
    let state = &req.state;
    let mut out = CleanupResult {
        run_id: None,
        dropped: Vec::new(),
        cancelled: Vec::new(),
        status_url: None,
        plan_url: None,
        notes: Vec::new(),
        tables: Vec::new(),
    };
    cancel_pending(ctx.warehouse.as_ref(), state, &mut out).await?;
    let Some(plan_url) = state.pointer("/plan/plan_url").and_then(|v| v.as_str()) else {
        unplanned(ctx, state, &mut out).await;
        return Ok(out);
    };
    out.plan_url = Some(plan_url.to_string());
    let stage = stage_of(ctx, plan_url).await?;
    // The plan may be gone (deleted mid-load): the run's staging tables are still found, through the registry.
    let plan = match run::read_plan(stage.as_ref(), plan_url).await {
        Ok(p) => Some(p),
        Err(e) => {
            out.notes.push(format!(
                "the plan could not be read ({e}): the run's staging tables were found through the registry"
            ));
            None
        }
    };
    let from_url = || crate::contract::layout::split_plan_url(plan_url).map(|(_, dir)| dir.to_string());
    let Some(run_id) = plan
        .as_ref()
        .map(|p| p.run_id.clone())
        .or_else(|| run_id_of(state))
        .or_else(from_url)
    else {
        out.notes
            .push("no run id: the run failed before planning finished".into());
        return Ok(out);
    };
    out.run_id = Some(run_id.clone());
    drop_staging(ctx.warehouse.as_ref(), (&run_id, stage.url()), plan.as_ref(), &mut out).await?;
    // Every table's outcome as the load recorded it: tables committed before the failure stay committed.
    let mut tables = match run::read_load(ctx.stages.as_ref(), plan_url).await {
        Ok(Some(r)) => r.tables,
        Ok(None) => Vec::new(),
        Err(e) => {
            out.notes.push(format!("reading load.json: {e}"));
            Vec::new()
        }
    };
    let corrected = match &plan {
        Some(plan) => committed_by_log(ctx.warehouse.as_ref(), plan, &mut tables, &mut out.notes).await,
        None => false,
    };
    if corrected {
        record_correction(ctx, (stage.as_ref(), plan_url, &run_id), &tables, &mut out.notes).await;
    }
    drop_created_targets(ctx.warehouse.as_ref(), &tables, &mut out).await;
    out.tables = tables.clone();
    let error = state.get("error").cloned().unwrap_or(Value::Null);
    let status = status_of((&run_id, plan.as_ref()), &tables, &error, &out);
    match crate::stage::put(stage.as_ref(), &status_key(&run_id), Bytes::from(status.to_string())).await {
        Ok(o) => out.status_url = Some(o.url),
        Err(e) => out.notes.push(format!("marking the run failed: {e}")),
    }
    tracing::info!(run = %run_id, dropped = out.dropped.len(), "run cleaned up after a failure");
    Ok(out)
}

/// A run that failed before it had a plan, but after its trigger gave it a run id and a stage: `<run>/status.json`
/// records its failure (with `"planned": false`), which is its whole record; a run id whose plan exists (another
/// run's, planned with other settings) is left as it is.
async fn unplanned(ctx: &LoadContext, state: &Value, out: &mut CleanupResult) {
    let text = |p: &str| state.pointer(p).and_then(Value::as_str);
    let (Some(run_id), Some(stage_url)) = (text("/trigger/run_id"), text("/trigger/stage")) else {
        out.notes
            .push("no plan and no run id: the run failed before its trigger".into());
        return;
    };
    out.run_id = Some(run_id.to_string());
    let written = async {
        let stage = ctx.stages.open(stage_url).await?;
        if stage.head(&crate::contract::layout::plan_key(run_id)).await?.is_some() {
            return Ok::<_, crate::stage::StageError>(None);
        }
        let lock: Option<run::RunLock> = run::read_json(stage.as_ref(), &crate::contract::layout::lock_key(run_id))
            .await
            .unwrap_or(None);
        let started_at = lock.and_then(|l| crate::contract::clock::parse_rfc3339(&l.taken_at));
        let error = state.get("error").cloned().unwrap_or(Value::Null);
        let status = json!({
            "run_id": run_id,
            "planned": false,
            "status": "FAILED",
            "error": error.get("Error"),
            "cause": error.get("Cause"),
            "started_at": started_at,
            "at": crate::contract::clock::unix_now(),
            "tables": [],
        });
        let put = crate::stage::put(stage.as_ref(), &status_key(run_id), Bytes::from(status.to_string())).await?;
        Ok(Some((
            put.url,
            format!("{}/{}", stage.url(), crate::contract::layout::plan_key(run_id)),
        )))
    };
    match written.await {
        Ok(Some((status_url, plan_url))) => {
            out.status_url = Some(status_url);
            out.plan_url = Some(plan_url);
        }
        Ok(None) => out.notes.push(format!(
            "run id {run_id} has a plan on the stage (another run's): its record is left as it is"
        )),
        Err(e) => out.notes.push(format!("marking the run failed: {e}")),
    }
}

/// The load's record corrected from the load log, so that the run's record says what the warehouse committed,
/// whether or not the load wrote its own record.
async fn record_correction(
    ctx: &LoadContext,
    (stage, plan_url, run_id): (&dyn crate::stage::Stage, &str, &str),
    tables: &[TableLoad],
    notes: &mut Vec<String>,
) {
    let mut load = match run::read_load(ctx.stages.as_ref(), plan_url).await {
        Ok(Some(l)) => l,
        _ => LoadResult::unrecorded(run_id),
    };
    load.tables = tables.to_vec();
    if let Err(e) = super::progress::record(stage, &load).await {
        notes.push(format!("correcting load.json from the load log: {e}"));
    }
}

/// Drops the targets this run's set-up created whose load did not commit, so that a failed first load leaves the
/// warehouse as it was. In one transaction, after the target is locked: only a target still empty, into which no run
/// ever committed (no row of it in the load log), is dropped; anything else fails a guard and the target stays.
async fn drop_created_targets(wh: &dyn Warehouse, tables: &[TableLoad], out: &mut CleanupResult) {
    // Each its own guarded transaction (a target another run loaded meanwhile must stay), several at once: the
    // round trips' wall time is that of a few, whatever the count.
    let created: Vec<&TableLoad> = tables
        .iter()
        .filter(|t| t.created_target && !t.status.is_committed())
        .collect();
    for group in created.chunks(CREATED_AT_ONCE) {
        let said = futures_util::future::join_all(group.iter().map(|t| drop_created(wh, &t.table))).await;
        out.notes.extend(said);
    }
}

/// One created target dropped when it is still empty and no run committed into it; what happened, in words.
async fn drop_created(wh: &dyn Warehouse, table: &TableRef) -> String {
    let steps = match super::statements::drop_created_target_sql(wh.dialect(), table) {
        Ok(s) => s,
        Err(e) => return format!("dropping the target {table} this run created: {e}"),
    };
    match crate::warehouse::execute(wh, steps).await {
        Ok(()) => format!("dropped the empty target {table} this run had created"),
        Err(e) => format!("kept the target {table} this run created (not empty, or loaded by another run): {e}"),
    }
}

/// Created targets Cleanup drops at once (each a transaction of its own).
const CREATED_AT_ONCE: usize = 8;

/// Cancels the load transactions the state says are still running.
async fn cancel_pending(wh: &dyn Warehouse, state: &Value, out: &mut CleanupResult) -> Result<(), LoadError> {
    let pending: Vec<PendingLoad> = state
        .pointer("/load/progress/pending")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| LoadError::InvalidRequest(format!("cleanup: load.progress.pending: {e}")))?
        .unwrap_or_default();
    for p in pending {
        match wh.cancel(&p.statement_id).await {
            Ok(()) => out.cancelled.push(p.statement_id),
            Err(e) => out.notes.push(format!("cancel {}: {e}", p.statement_id)),
        }
    }
    Ok(())
}

/// Corrects the load's record from the warehouse: a table the load log says this plan committed is committed,
/// whatever the record says (the record's write after the commit may have failed). `true` when it changed.
async fn committed_by_log(
    wh: &dyn Warehouse,
    plan: &Plan,
    tables: &mut Vec<TableLoad>,
    notes: &mut Vec<String>,
) -> bool {
    let rows = match logged_tables_sql(plan) {
        Ok(sql) => wh.query(sql).await.map_err(LoadError::from),
        Err(e) => Err(e),
    };
    let rows = match rows {
        Ok(rows) => rows,
        // No load log yet: nothing of this run was ever committed.
        Err(_) if tables.is_empty() => return false,
        Err(e) => {
            notes.push(format!("reading the load log: {e}"));
            return false;
        }
    };
    let mut changed = false;
    for row in &rows {
        let (Some(Cell::Text(schema)), Some(Cell::Text(name)), Some(Cell::Int(n))) =
            (row.first(), row.get(1), row.get(2))
        else {
            continue;
        };
        let table = TableRef::new(schema.clone(), name.clone());
        let known = plan.tables.iter().any(|t| t.table == table);
        if known && !tables.iter().any(|l| l.table == table && l.status.is_committed()) {
            changed = true;
            mark_committed(tables, &table, TableStatus::Committed, Some(*n as u64));
        }
    }
    changed
}

/// The run id the state names (the plan summary's), when the plan itself cannot be read.
fn run_id_of(state: &Value) -> Option<String> {
    state
        .pointer("/plan/run_id")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Drops the run's staging tables, those the registry names for this run on this stage and those its plan would
/// have made: only those that exist, and only those are reported dropped.
async fn drop_staging(
    wh: &dyn Warehouse,
    (run_id, stage_url): (&str, &str),
    plan: Option<&Plan>,
    out: &mut CleanupResult,
) -> Result<(), LoadError> {
    let mut candidates = match super::gc::staging_of_run(wh, run_id, stage_url).await {
        Ok(c) => c,
        Err(e) => {
            out.notes.push(format!("reading the staging registry: {e}"));
            Vec::new()
        }
    };
    for t in plan.iter().flat_map(|p| &p.tables) {
        let staging = staging_table(&t.table, run_id);
        if !candidates.contains(&staging) {
            candidates.push(staging);
        }
    }
    // One query finds which are there, whatever their number; then one transaction drops them all (per 4,000).
    let present = match wh.query(marked_tables_sql(wh.dialect(), run_id)?).await {
        Ok(rows) => rows,
        Err(e) => {
            out.notes
                .push(format!("listing the run's staging tables: {e}; dropped one by one"));
            return drop_one_by_one(wh, candidates, out).await;
        }
    };
    let fold = |t: &TableRef| (wh.dialect().fold(&t.schema), wh.dialect().fold(&t.name));
    let present: BTreeSet<(String, String)> = present
        .iter()
        .filter_map(|r| match (r.first(), r.get(1)) {
            (Some(Cell::Text(s)), Some(Cell::Text(n))) => Some((s.clone(), n.clone())),
            _ => None,
        })
        .collect();
    let there: Vec<TableRef> = candidates.into_iter().filter(|c| present.contains(&fold(c))).collect();
    for (tx, group) in drop_stagings_sql(&there)?
        .into_iter()
        .zip(there.chunks(STAGINGS_PER_TRANSACTION))
    {
        match crate::warehouse::execute(wh, tx).await {
            Ok(()) => out.dropped.extend(group.iter().map(|t| t.to_string())),
            Err(e) => {
                out.notes.push(format!(
                    "dropping {} staging tables at once: {e}; one by one",
                    group.len()
                ));
                drop_one_by_one(wh, group.to_vec(), out).await?;
            }
        }
    }
    Ok(())
}

/// Each staging table that is there dropped in its own transaction: the way back when the bounded way failed. The
/// same error for several tables (an unreachable warehouse) is noted once, naming them all.
async fn drop_one_by_one(
    wh: &dyn Warehouse,
    candidates: Vec<TableRef>,
    out: &mut CleanupResult,
) -> Result<(), LoadError> {
    let mut failed: Vec<(String, Vec<String>)> = Vec::new();
    let mut note = |what: &str, staging: &TableRef, e: &dyn std::fmt::Display| {
        let key = format!("{what}: {e}");
        match failed.iter_mut().find(|(k, _)| *k == key) {
            Some((_, tables)) => tables.push(staging.to_string()),
            None => failed.push((key, vec![staging.to_string()])),
        }
    };
    for staging in candidates {
        match crate::warehouse::columns(wh, &staging).await {
            Ok(cols) if cols.is_empty() => continue,
            Ok(_) => {}
            Err(e) => {
                note("looking for it", &staging, &e);
                continue;
            }
        }
        match crate::warehouse::execute(wh, drop_staging_sql(&staging)?).await {
            Ok(()) => out.dropped.push(staging.to_string()),
            Err(e) => note("dropping it", &staging, &e),
        }
    }
    for (error, tables) in failed {
        out.notes.push(format!("{} ({error})", tables.join(", ")));
    }
    Ok(())
}

/// `<run>/status.json`: the failure, and every table's outcome as the load recorded it (every planned table's, when
/// the plan could be read).
fn status_of((run_id, plan): (&str, Option<&Plan>), tables: &[TableLoad], error: &Value, out: &CleanupResult) -> Value {
    let outcome = |table: &TableRef| {
        let load = tables.iter().find(|l| &l.table == table);
        json!({
            "table": table,
            "status": load.map_or(TableStatus::Pending, |l| l.status),
            "committed_rows": load.and_then(|l| l.committed_rows),
            "error": load.and_then(|l| l.error.clone()),
        })
    };
    let outcomes: Vec<Value> = match plan {
        Some(plan) => plan.tables.iter().map(|t: &TablePlan| outcome(&t.table)).collect(),
        None => tables.iter().map(|l| outcome(&l.table)).collect(),
    };
    json!({
        "run_id": run_id,
        "plan_id": plan.map(|p| p.plan_id.as_str()),
        "status": "FAILED",
        "error": error.get("Error"),
        "cause": error.get("Cause"),
        "at": crate::contract::clock::unix_now(),
        "tables": outcomes,
        "dropped_staging": out.dropped,
        "cancelled": out.cancelled,
    })
}
