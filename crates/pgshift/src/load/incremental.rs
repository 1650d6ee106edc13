//! An incremental table's load (`--incremental diff`, docs/incremental.md): in its one transaction, once the target is
//! locked, a guard that no other run loaded it since the state's (the load log), the target's rows in the changed
//! ranges deleted and the ranges' rows inserted, then the target's count and key sum checked against the source's.
//! Before anything is extracted, the pre-flight checks the target against the state (its count and key sum, and the
//! load log), so a target changed by hand fails in seconds and sets the state aside (the run plans that table again,
//! in full). After the commit, the state is written: the only place it is ever written, so a failed or resumed run
//! never advances it.

use bytes::Bytes;

use crate::contract::incremental::{
    key_sum_column, warehouse_predicate, Committed, SyncState, TableIncremental, DELETED_COLUMN,
};
use crate::contract::layout::{plan_key, state_key};
use crate::contract::plan::{Plan, TablePlan};
use crate::stage::Stage;
use crate::warehouse::{self, Warehouse};

use super::error::LoadError;
use super::statements::{ident, qualified, text_literal, LOG};

/// The incremental side of a table's plan, when the load builds on a state (only the changed ranges replaced).
pub(super) fn ranged(t: &TablePlan) -> Option<&TableIncremental> {
    t.incremental
        .as_ref()
        .filter(|i| i.base.is_some() && i.cursor.is_none())
}

/// The incremental side of a cursor table's plan, when the load builds on a state (the rows since its watermark
/// merged by key).
pub(super) fn merged(t: &TablePlan) -> Option<&TableIncremental> {
    t.incremental
        .as_ref()
        .filter(|i| i.base.is_some() && i.cursor.is_some())
}

/// Either kind of load on a state.
pub(super) fn on_state(t: &TablePlan) -> Option<&TableIncremental> {
    t.incremental.as_ref().filter(|i| i.base.is_some())
}

/// The guard, inside the transaction, before any change: the load log has the state's plan's load of the table,
/// and no load of it since (another run's). What the target holds was counted by the pre-flight, and is checked
/// after the changes by [`holds_source_sql`]: one scan of the target in the transaction, not two. Aggregates only
/// (no `ORDER BY … LIMIT` in a subquery), the same on both warehouses.
pub(super) fn guard_sql(t: &TablePlan, inc: &TableIncremental) -> Result<String, LoadError> {
    let Some(base) = &inc.base else {
        return Err(LoadError::InvalidRequest(format!("{}: no state to guard", t.table)));
    };
    Ok(format!(
        "SELECT 1 / (CASE WHEN ({}) = 1 AND ({}) = 0 THEN 1 ELSE 0 END) AS target_as_its_last_run_left_it",
        base_logged_sql(t, &base.plan_id)?,
        loads_since_sql(t, &base.plan_id)?
    ))
}

/// After a ranged table's changes, in the same transaction: the target holds the source's rows, its count (live
/// rows, under soft deletes) and, for a single integer key, the sum of its keys, in one scan. A target changed
/// since the pre-flight (by hand, or by a writer other than pgshift) fails the transaction here, before anything
/// commits: a count or key sum off by what was changed cannot come out right after the changes.
pub(super) fn holds_source_sql(t: &TablePlan, inc: &TableIncremental, soft: bool) -> Result<String, LoadError> {
    let sum = match (
        crate::contract::incremental::total_key_sum(&inc.ranges),
        key_sum_column(&t.key, &t.columns),
    ) {
        (Some(s), Some(_)) => format!(" AND c.s = {s}"),
        _ => String::new(),
    };
    Ok(format!(
        "SELECT 1 / (CASE WHEN c.n = {}{sum} THEN 1 ELSE 0 END) AS target_holds_the_source_rows FROM ({}) c",
        inc.source_rows(),
        stats_sql(t, soft)?
    ))
}

/// The target's rows (live rows, under soft deletes) `n` and, for a single integer key, the sum of its keys `s` (0
/// otherwise), in one scan.
fn stats_sql(t: &TablePlan, soft: bool) -> Result<String, LoadError> {
    let sum = match key_sum_column(&t.key, &t.columns) {
        Some(k) => format!("COALESCE(sum({}), 0)", ident(k)?),
        None => "0".into(),
    };
    Ok(format!(
        "SELECT count(*) AS n, {sum} AS s FROM {}{}",
        qualified(&t.table)?,
        super::soft::live_only(soft)?
    ))
}

/// `this table in the load log`, as a WHERE clause's conditions on the alias `a`.
fn logged(t: &TablePlan, a: &str) -> Result<String, LoadError> {
    Ok(format!(
        "{a}.schema_name = {} AND {a}.table_name = {}",
        text_literal(&t.table.schema)?,
        text_literal(&t.table.name)?
    ))
}

/// 1 when the load log has the base plan's load of the table (0 when not).
fn base_logged_sql(t: &TablePlan, plan_id: &str) -> Result<String, LoadError> {
    Ok(format!(
        "SELECT CASE WHEN count(*) > 0 THEN 1 ELSE 0 END FROM {LOG} b WHERE {} AND b.plan_id = {}",
        logged(t, "b")?,
        text_literal(plan_id)?
    ))
}

/// The loads of the table the log has since the base plan's (by another plan).
fn loads_since_sql(t: &TablePlan, plan_id: &str) -> Result<String, LoadError> {
    Ok(format!(
        "SELECT count(*) FROM {LOG} l WHERE {} AND l.plan_id <> {p} AND l.loaded_at >= (SELECT max(b.loaded_at) FROM \
         {LOG} b WHERE {} AND b.plan_id = {p})",
        logged(t, "l")?,
        logged(t, "b")?,
        p = text_literal(plan_id)?
    ))
}

/// How the target's changes are made: its staging table, the INSERT's column lists, whether any row is staged, and
/// under soft deletes the instant deleted rows are marked with.
pub(super) struct Changes<'a> {
    pub(super) staging: &'a str,
    pub(super) cols: &'a str,
    pub(super) values: &'a str,
    pub(super) staged: bool,
    pub(super) soft_at: Option<i64>,
}

/// The statements that change the target, after the guard: the ranges replaced by their bounds emptied (or, soft,
/// their rows the staging table does not hold marked); for a row-by-row comparison, every staged key's row deleted
/// (soft: the deletes' marked and the upserts' deleted); then the INSERT of the staged rows (not the deletes').
fn change_sql(
    t: &TablePlan,
    inc: &TableIncremental,
    c: &Changes<'_>,
) -> Result<(Vec<String>, Option<String>), LoadError> {
    let target = qualified(&t.table)?;
    let mut out = Vec::new();
    match (replaced_where(t, inc)?, c.soft_at) {
        (None, _) => {}
        (Some(w), None) => out.push(match w {
            Some(p) => format!("DELETE FROM {target} WHERE {p}"),
            None => format!("DELETE FROM {target}"),
        }),
        (Some(w), Some(at)) => out.push(super::soft::mark_missing_sql(
            &t.table,
            c.staging,
            &t.key,
            w.as_deref(),
            at,
        )?),
    }
    if !c.staged {
        return Ok((out, None));
    }
    match (inc.flagged, c.soft_at) {
        (true, Some(at)) => {
            out.push(super::soft::mark_flagged_sql(&t.table, c.staging, &t.key, at)?);
            out.push(super::soft::delete_staged_sql(&t.table, c.staging, &t.key, true)?);
        }
        (true, None) => out.push(super::soft::delete_staged_sql(&t.table, c.staging, &t.key, false)?),
        // Replaced by bounds, soft: the rows whose keys come back replace their marked rows.
        (false, Some(_)) => out.push(super::soft::delete_staged_sql(&t.table, c.staging, &t.key, false)?),
        (false, None) => {}
    }
    let only_rows = match inc.flagged {
        true => format!(" WHERE NOT {}", ident(DELETED_COLUMN)?),
        false => String::new(),
    };
    let insert = format!(
        "INSERT INTO {target} ({}) SELECT {} FROM {}{only_rows}",
        c.cols, c.values, c.staging
    );
    Ok((out, Some(insert)))
}

/// A ranged table's swap before the load log: the guard that the target is as the state's run left it, then its
/// changes; and the INSERT, if any row is staged.
pub(super) fn ranged_swap(
    t: &TablePlan,
    inc: &TableIncremental,
    c: &Changes<'_>,
) -> Result<(Vec<String>, Option<String>), LoadError> {
    let mut out = vec![guard_sql(t, inc)?];
    let (changes, insert) = change_sql(t, inc, c)?;
    out.extend(changes);
    Ok((out, insert))
}

/// The rows of the ranges replaced by their bounds: `None` when no range is, `Some(None)` for every row (a range
/// open at both ends), else the predicate.
fn replaced_where(t: &TablePlan, inc: &TableIncremental) -> Result<Option<Option<String>>, LoadError> {
    if inc.replaced.is_empty() {
        return Ok(None);
    }
    let mut ors = Vec::new();
    for &i in &inc.replaced {
        let r = inc
            .ranges
            .get(i as usize)
            .ok_or_else(|| LoadError::InvalidRequest(format!("{}: changed range {i} is not planned", t.table)))?;
        let key: &[String] = if r.bounds == crate::contract::model::Bounds::ALL {
            &[]
        } else {
            &t.key
        };
        match warehouse_predicate(key, &r.bounds).map_err(|e| LoadError::InvalidRequest(format!("{}: {e}", t.table)))? {
            Some(p) => ors.push(format!("({p})")),
            None => return Ok(Some(None)),
        }
    }
    Ok(Some(Some(ors.join(" OR "))))
}

/// The table's line in the run's report: what changed, and what moved.
pub(super) fn note(inc: &TableIncremental, diff: Option<crate::contract::incremental::DiffCounts>) -> String {
    if let Some(c) = &inc.cursor {
        return format!(
            "incremental: cursor {}: the rows at or past {} merged by key (deletes are not seen in cursor mode)",
            c.column,
            c.from.as_deref().unwrap_or("the start")
        );
    }
    let ranges = format!(
        "incremental: {} of {} key range(s) changed, {} skipped",
        inc.changed.len(),
        inc.ranges.len(),
        inc.skipped()
    );
    match diff {
        Some(d) => format!(
            "{ranges}; {} inserted, {} updated, {} deleted, {} unchanged of the changed ranges' rows read; the target \
             holds {} rows",
            d.inserted,
            d.updated,
            d.deleted,
            d.unchanged,
            inc.source_rows()
        ),
        None => format!("{ranges}; the target holds {} rows", inc.source_rows()),
    }
}

/// The pre-flight's question, before anything is extracted: is each incremental target what its state says? A
/// target that is not fails the run by name, and its state is set aside, so that the next run loads it in full.
pub(super) async fn preflight(wh: &dyn Warehouse, stage: &dyn Stage, plan: &Plan) -> Result<(), LoadError> {
    let mut changed = Vec::new();
    let soft = plan.load.as_ref().is_some_and(|l| !l.deletes.is_hard());
    for t in &plan.tables {
        let Some(inc) = on_state(t) else { continue };
        let Some(base) = &inc.base else { continue };
        let exists = !warehouse::columns(wh, &t.table).await?.is_empty();
        let why = match exists {
            false => Some("it does not exist".to_string()),
            // A resumed run whose earlier attempt committed the table: it is not loaded again.
            true if warehouse::count(wh, base_logged_sql(t, &plan.plan_id)?).await? == 1 => None,
            true => target_problem(wh, t, base, soft, inc.cursor.is_some()).await?,
        };
        if let Some(why) = why {
            set_aside(stage, t, &why).await;
            changed.push(format!("{}: {why}", t.table));
        }
    }
    match changed.is_empty() {
        true => Ok(()),
        false => Err(LoadError::TargetChanged(changed)),
    }
}

/// What is wrong with an existing target, if anything, against the state's run.
async fn target_problem(
    wh: &dyn Warehouse,
    t: &TablePlan,
    base: &crate::contract::incremental::Base,
    soft: bool,
    cursor: bool,
) -> Result<Option<String>, LoadError> {
    let stats = wh
        .query(format!("SELECT n, s::text FROM ({}) c", stats_sql(t, soft)?))
        .await?;
    let cell = |i: usize| stats.first().and_then(|r| r.get(i)).cloned();
    let rows = match cell(0) {
        Some(warehouse::Cell::Int(n)) => n,
        Some(warehouse::Cell::Text(n)) => n.parse().unwrap_or(-1),
        _ => -1,
    };
    if !cursor && rows as u64 != base.target_rows {
        return Ok(Some(format!(
            "it holds {rows} rows where run {} left {}",
            base.run_id, base.target_rows
        )));
    }
    if let (Some(sum), Some(k), false) = (&base.key_sum, key_sum_column(&t.key, &t.columns), cursor) {
        let now = match cell(1) {
            Some(warehouse::Cell::Text(s)) => Some(s),
            Some(warehouse::Cell::Int(n)) => Some(n.to_string()),
            _ => None,
        };
        if now.as_deref() != Some(sum.as_str()) {
            return Ok(Some(format!(
                "it holds the {rows} rows run {} left, but other keys (the sum of its {k} is {}, not {sum}): rows \
                 were replaced by hand",
                base.run_id,
                now.unwrap_or_default()
            )));
        }
    }
    if warehouse::count(wh, base_logged_sql(t, &base.plan_id)?).await? != 1 {
        return Ok(Some(format!("the load log has no load of it by run {}", base.run_id)));
    }
    if warehouse::count(wh, loads_since_sql(t, &base.plan_id)?).await? != 0 {
        return Ok(Some(format!("another run loaded it after run {}", base.run_id)));
    }
    Ok(None)
}

/// The state renamed beside itself (`set-aside-<time>.json`), so that the next run plans the table in full and
/// the old state stays for whoever looks into it.
async fn set_aside(stage: &dyn Stage, t: &TablePlan, why: &str) {
    let key = state_key(&t.table);
    let moved = async {
        let state: serde_json::Value = serde_json::from_slice(&stage.get(&key).await?).unwrap_or_default();
        // Why, for the plan that loads the table in full to say.
        let body = Bytes::from(serde_json::json!({"because": why, "state": state}).to_string());
        // Beside it, not under its key (a prefix): deleting the state must not delete its copy.
        let dir = key.trim_end_matches("sync.json");
        let aside = format!("{dir}set-aside-{}.json", crate::contract::clock::unix_now() as i64);
        crate::stage::put(stage, &aside, body).await?;
        stage.delete_prefix(&key).await
    };
    if let Err(e) = moved.await {
        tracing::warn!(table = %t.table, error = %e, "the state could not be set aside");
    }
}

/// After the commits: the state of each incremental table this plan committed, written (again, for a table already
/// loaded by an earlier attempt of the same plan, whose state may not have been written).
pub(super) async fn after_commit(stage: &dyn Stage, result: &mut crate::contract::load::LoadResult) {
    let wanted = result
        .tables
        .iter()
        .any(|t| t.status.is_committed() && !t.state_written);
    if !wanted {
        return;
    }
    let plan: Plan = match crate::stage::run::read_json(stage, &plan_key(&result.run_id)).await {
        Ok(Some(p)) => p,
        _ => return,
    };
    for load in result.tables.iter_mut() {
        if !load.status.is_committed() || load.state_written {
            continue;
        }
        let Some(t) = plan.tables.iter().find(|t| t.table == load.table) else {
            continue;
        };
        let Some(inc) = &t.incremental else { continue };
        let state = inc.state(
            &t.table,
            &t.key,
            Committed {
                run_id: &plan.run_id,
                plan_id: &plan.plan_id,
                data_at: plan.data_instant(),
                committed_at: crate::contract::clock::unix_now(),
            },
        );
        let before: Option<SyncState> = crate::stage::run::read_json(stage, &state_key(&t.table))
            .await
            .ok()
            .flatten();
        let body = Bytes::from(serde_json::to_vec_pretty(&state).unwrap_or_default());
        match crate::stage::put(stage, &state_key(&t.table), body).await {
            Ok(_) => load.state_written = true,
            // The next run finds the target ahead of the state and loads it in full: slower, never wrong.
            Err(e) => tracing::warn!(table = %t.table, error = %e, "the sync state was not written"),
        }
        if let (true, Some(before)) = (load.state_written, before) {
            delete_superseded(stage, &before, &state).await;
        }
    }
}

/// The key files the state before named and this one does not, deleted (best effort). Only those: a concurrent run's
/// files are never another state's, so they are never deleted here.
async fn delete_superseded(stage: &dyn Stage, before: &SyncState, now: &SyncState) {
    let kept: std::collections::BTreeSet<&String> = now.ranges.iter().filter_map(|r| r.keys.as_ref()).collect();
    for key in before.ranges.iter().filter_map(|r| r.keys.as_ref()) {
        if !kept.contains(key) {
            if let Err(e) = stage.delete_prefix(key).await {
                tracing::warn!(key = %key, error = %e, "a superseded key file was not deleted");
            }
        }
    }
}
