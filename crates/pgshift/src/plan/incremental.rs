//! `--incremental diff` planned: each such table's ranges digested on the source (a count and a digest per range in
//! SQL, no row leaving the server) and compared with the sync state its last committed run left on the stage; only
//! changed ranges become tasks. A table with a usable state keeps that state's boundaries, so ranges compare; a table
//! without one (the first run, a lost or unreadable state, a key or columns changed) is loaded in full, and says why.

use tokio_postgres::Client;

use super::PlanError;
use crate::contract::incremental::{self, Base, Incremental, RangeDigest, RowDiff, SyncState, TableIncremental, Want};
use crate::contract::load::LoadMode;
use crate::contract::model::{Bounds, ExtractTask, TableRef};
use crate::contract::plan::{Plan, PlanRequest, TablePlan};
use crate::source::SourceError;
use crate::stage::Stage;

/// The table's incremental mode: its own section's, else the request's.
pub(crate) fn mode_of(req: &PlanRequest, table: &TablePlan) -> Incremental {
    mode_of_table(req, &table.table)
}

/// [`mode_of`] by the table's name.
pub(crate) fn mode_of_table(req: &PlanRequest, table: &TableRef) -> Incremental {
    req.overrides
        .get(&table.to_string())
        .and_then(|o| o.incremental.clone())
        .unwrap_or_else(|| req.incremental.clone())
}

/// Refusals before anything is digested: a live source (two reads of it are two instants), a load that does not
/// replace (the changed ranges replace the target's rows in them).
fn check(req: &PlanRequest, table: &TablePlan) -> Result<(), PlanError> {
    if !req.settings.static_source {
        return Err(PlanError::InvalidRequest(format!(
            "{}: --incremental diff compares the source at one instant with the last run's: run from a snapshot, or \
             pass --static-source when nothing writes to the source during the run (or leave out --incremental)",
            table.table
        )));
    }
    let mode = req.load.as_ref().map(|l| l.mode).unwrap_or_default();
    if mode != LoadMode::Replace {
        return Err(PlanError::InvalidRequest(format!(
            "{}: --incremental diff replaces the target's rows range by range; it does not combine with --mode {} \
             (leave out one of them)",
            table.table,
            format!("{mode:?}").to_lowercase()
        )));
    }
    Ok(())
}

/// What planning a table incrementally reads from and needs.
#[derive(Clone, Copy)]
struct Cx<'a> {
    client: &'a Client,
    source: &'a dyn crate::source::SourceConnector,
    stage: &'a dyn Stage,
    req: &'a PlanRequest,
    data_at: i64,
    run_id: &'a str,
    server_version_num: i32,
}

/// Every `diff` table of `plan` digested and compared with its state; the plan sealed again.
pub(super) async fn apply(
    (client, source): (&Client, &dyn crate::source::SourceConnector),
    stage: &dyn Stage,
    req: &PlanRequest,
    mut plan: Plan,
) -> Result<Plan, PlanError> {
    if plan.tables.iter().all(|t| mode_of(req, t) == Incremental::Full) {
        return Ok(plan);
    }
    let data_at = plan.data_instant();
    let run_id = plan.run_id.clone();
    let server_version_num = plan.source.server_version_num;
    let mut tasks = Vec::new();
    for t in &mut plan.tables {
        let mine: Vec<ExtractTask> = plan.tasks.iter().filter(|x| x.table == t.table).cloned().collect();
        let mode = mode_of(req, t);
        if mode == Incremental::Full {
            tasks.extend(mine);
            continue;
        }
        let signature = table_signature(client, (&t.table, &t.key, &t.columns)).await?;
        let soft = req.load.as_ref().is_some_and(|l| !l.deletes.is_hard());
        let want = Want {
            table: &t.table.clone(),
            key: &t.key.clone(),
            signature: &signature,
            cursor: matches!(mode, Incremental::Cursor(_)),
            soft,
        };
        let state = read_state(stage, &t.table, &want).await;
        match &mode {
            Incremental::Cursor(column) => {
                tasks.extend(super::cursor::plan_table((client, req), t, mine, column, state).await?);
            }
            _ => {
                check(req, t)?;
                let cx = Cx {
                    client,
                    source,
                    stage,
                    req,
                    data_at,
                    run_id: &run_id,
                    server_version_num,
                };
                tasks.extend(plan_table(&cx, t, mine, state).await?);
            }
        }
        if let Some(inc) = t.incremental.as_mut() {
            (inc.signature, inc.soft) = (signature, soft);
        }
    }
    plan.tasks = tasks;
    plan.seal()
        .map_err(|e| PlanError::InvalidRequest(format!("plan JSON: {e}")))
}

/// Per column of the table: its collation (`""` for a type without one) and, for an enum (or an array or domain of
/// one), its labels in order. A relabel (`ALTER TYPE … RENAME VALUE`) changes the values' wire bytes and no row's
/// version.
const COLUMN_FACTS_SQL: &str = "SELECT a.attname::pg_catalog.text, COALESCE(c.collname::pg_catalog.text, ''), \
     COALESCE((SELECT pg_catalog.array_agg(e.enumlabel::pg_catalog.text ORDER BY e.enumtypid, e.enumsortorder) \
     FROM pg_catalog.pg_enum e WHERE e.enumtypid OPERATOR(pg_catalog.=) ANY (ARRAY[t.oid, t.typelem, \
     t.typbasetype, b.typelem])), '{}') FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid \
     OPERATOR(pg_catalog.=) a.atttypid LEFT JOIN pg_catalog.pg_type b ON b.oid OPERATOR(pg_catalog.=) \
     t.typbasetype LEFT JOIN pg_catalog.pg_collation c ON c.oid OPERATOR(pg_catalog.=) a.attcollation WHERE \
     a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.text::pg_catalog.regclass AND a.attnum OPERATOR(pg_catalog.>) 0 \
     AND NOT a.attisdropped";

/// The table's [`incremental::signature`] as the catalog has it now: the key's collations (they order its ranges)
/// and the labels of the enum columns read.
async fn table_signature(
    client: &Client,
    (table, key, columns): (&TableRef, &[String], &[crate::contract::model::ColumnSpec]),
) -> Result<String, PlanError> {
    let name = crate::contract::sql::table(table).map_err(PlanError::InvalidRequest)?;
    let rows = client
        .query(COLUMN_FACTS_SQL, &[&name])
        .await
        .map_err(|e| SourceError::from_pg(table, 0, e))?;
    let facts: Vec<(String, String, Vec<String>)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let of = |k: &String| {
        facts
            .iter()
            .find(|f| f.0 == *k)
            .map(|f| f.1.clone())
            .unwrap_or_default()
    };
    let collations: Vec<String> = key.iter().map(of).collect();
    let labels: Vec<(String, Vec<String>)> = columns
        .iter()
        .filter_map(|c| facts.iter().find(|f| f.0 == c.name && !f.2.is_empty()))
        .map(|f| (f.0.clone(), f.2.clone()))
        .collect();
    Ok(incremental::signature(key, &collations, columns, &labels))
}

/// The state a `diff` table's run will build on, read before its boundaries are planned: when there is one, the
/// planner keeps its boundaries and reads no key quantiles ([`apply`] then compares with the same state). `None`
/// when the table is not `diff`, has no usable state, or is due a full load (`--full-every`): its boundaries are
/// planned anew.
pub(super) async fn kept_state(
    (client, stage): (&Client, &dyn Stage),
    req: &PlanRequest,
    (table, key, columns): (&TableRef, &[String], &[crate::contract::model::ColumnSpec]),
) -> Option<SyncState> {
    if mode_of_table(req, table) != Incremental::Diff || key.is_empty() || !req.settings.static_source {
        return None;
    }
    let signature = table_signature(client, (table, key, columns)).await.ok()?;
    let want = Want {
        table,
        key,
        signature: &signature,
        cursor: false,
        soft: req.load.as_ref().is_some_and(|l| !l.deletes.is_hard()),
    };
    let s = read_state(stage, table, &want).await.ok()?;
    let keyed = !s.ranges.is_empty() && s.ranges.iter().all(|r| matches!(r.bounds, Bounds::Key { .. }));
    (keyed && full_due(req, &s).is_none()).then_some(s)
}

/// Why this run loads the table in full though its state is usable: `--full-every` runs reached.
fn full_due(req: &PlanRequest, s: &SyncState) -> Option<String> {
    let n = req.full_every?;
    (s.runs_since_full + 1 >= n).then(|| {
        format!(
            "--full-every {n}: {} incremental run(s) since the last full load",
            s.runs_since_full
        )
    })
}

/// Why a pre-flight set the state at `key` aside, when it did (the newest `set-aside-<time>.json` beside it).
async fn set_aside(stage: &dyn Stage, key: &str) -> Option<String> {
    let dir = key.trim_end_matches("sync.json");
    let listed = stage.list(dir).await.ok()?;
    let newest = listed
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k[dir.len().min(k.len())..].starts_with("set-aside-"))
        .max()?;
    let record: serde_json::Value = crate::stage::run::read_json(stage, newest).await.ok()??;
    Some(
        record["because"]
            .as_str()
            .unwrap_or("the target was not as the last run left it")
            .to_string(),
    )
}

/// The table's state, or why there is none to build on.
async fn read_state(stage: &dyn Stage, table: &TableRef, want: &Want<'_>) -> Result<SyncState, String> {
    let key = crate::contract::layout::state_key(table);
    match crate::stage::run::read_json::<SyncState>(stage, &key).await {
        Ok(Some(s)) => match incremental::unusable(&s, want) {
            None => Ok(s),
            Some(why) => Err(why),
        },
        Ok(None) => Err(match set_aside(stage, &key).await {
            Some(why) => format!("its state was set aside: the pre-flight found that {why}"),
            None => "no state of a committed run on the stage (the first incremental run)".into(),
        }),
        Err(e) => Err(format!("its state cannot be read ({e})")),
    }
}

/// One table: its ranges digested; the tasks of the changed ones.
async fn plan_table(
    cx: &Cx<'_>,
    t: &mut TablePlan,
    planned: Vec<ExtractTask>,
    state: Result<SyncState, String>,
) -> Result<Vec<ExtractTask>, PlanError> {
    let Cx {
        stage,
        req,
        data_at,
        run_id,
        ..
    } = *cx;
    // A table split by heap pages (no usable key) is compared whole; its ranges cannot be found in the target.
    let keyed = !t.key.is_empty() && planned.iter().all(|x| matches!(x.bounds, Bounds::Key { .. }));
    let state = usable(req, state, keyed);
    if let Ok(s) = &state {
        if data_at < s.data_at && !req.load.as_ref().is_some_and(|l| l.allow_older) {
            return Err(PlanError::OlderData {
                table: t.table.clone(),
                instant: data_at,
                state_at: s.data_at,
                state_run: s.run_id.clone(),
            });
        }
    }
    let bounds: Vec<Bounds> = match (&state, keyed) {
        (Ok(s), true) => s.ranges.iter().map(|r| r.bounds.clone()).collect(),
        (_, true) => planned.iter().map(|x| x.bounds.clone()).collect(),
        (_, false) => vec![Bounds::ALL],
    };
    let base = state.as_ref().ok().filter(|_| keyed);
    let marks = super::digests::Marks::of(cx.client, t, base, cx.server_version_num).await?;
    let (ranges, listed) =
        super::digests::digest_ranges(cx.source, t, (&bounds, &marks), cx.server_version_num).await?;
    let compared = keyed
        && t.key
            .iter()
            .all(|k| t.columns.iter().any(|c| &c.name == k && c.cast.is_none()));
    let state = match state {
        Ok(s) if compared => match missing_keys(stage, &s).await {
            Some(why) => Err(why),
            None => Ok(s),
        },
        other => other,
    };
    let (inc, tasks) = match state {
        Ok(s) => with_base(t, planned, &s, ranges, keyed),
        Err(why) => {
            let changed: Vec<u32> = ranges.iter().map(|r| r.range_index).collect();
            let inc = TableIncremental {
                base: None,
                full_because: Some(why),
                ranges,
                replaced: changed.clone(),
                changed,
                flagged: false,
                cursor: None,
                runs_since_full: 0,
                signature: String::new(),
                soft: false,
            };
            (inc, planned)
        }
    };
    let (inc, tasks) = match compared {
        true => row_by_row(t, inc, tasks, run_id),
        false => (inc, tasks),
    };
    let tasks = super::digests::hand_over(stage, (t, run_id), tasks, listed).await?;
    note(t, &inc);
    t.incremental = Some(inc);
    Ok(tasks)
}

/// The state, if this run can build on it: its ranges fit the table's split, and no full load is due.
fn usable(req: &PlanRequest, state: Result<SyncState, String>, keyed: bool) -> Result<SyncState, String> {
    let s = match (state, keyed) {
        (Ok(s), true) => s,
        (Ok(s), false) if s.ranges.len() == 1 && s.ranges[0].bounds == Bounds::ALL => s,
        (Ok(_), false) => return Err("its state's ranges do not fit a table compared whole".into()),
        (Err(why), _) => return Err(why),
    };
    match full_due(req, &s) {
        Some(why) => Err(why),
        None => Ok(s),
    }
}

/// Why the state's key files cannot be compared with, when one is gone from the stage (its lifecycle expired it).
async fn missing_keys(stage: &dyn Stage, s: &SyncState) -> Option<String> {
    for r in &s.ranges {
        let Some(key) = &r.keys else { continue };
        match stage.head(key).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Some(format!(
                    "the last run's key file of range {} is gone from the stage",
                    r.range_index
                ))
            }
            Err(e) => {
                return Some(format!(
                    "the last run's key file of range {} cannot be read ({e})",
                    r.range_index
                ))
            }
        }
    }
    None
}

/// The tasks compare row by row: each writes its range's key file for the next run; on a state, each compares with
/// the last run's file of its range (where there is one) and its parts carry the deleted flag. The ranges' key files
/// as the state will name them: this run's for the ranges it reads, the last run's for the others.
fn row_by_row(
    t: &TablePlan,
    mut inc: TableIncremental,
    tasks: Vec<ExtractTask>,
    run_id: &str,
) -> (TableIncremental, Vec<ExtractTask>) {
    let flagged = inc.base.is_some();
    let tasks = tasks
        .into_iter()
        .map(|mut x| {
            let previous = match flagged {
                true => inc.ranges.get(x.range_index as usize).and_then(|r| r.keys.clone()),
                false => None,
            };
            x.diff = Some(RowDiff {
                previous,
                keys_out: incremental::keys_key(&t.table, run_id, x.range_index),
                flagged,
                recent: None,
            });
            x
        })
        .collect();
    if flagged {
        // Ranges the last run left no key file of are replaced by their bounds; the others row by row.
        inc.flagged = true;
        inc.replaced = inc
            .changed
            .iter()
            .copied()
            .filter(|&i| inc.ranges.get(i as usize).is_none_or(|r| r.keys.is_none()))
            .collect();
    }
    for r in &mut inc.ranges {
        if !flagged || inc.changed.contains(&r.range_index) {
            r.keys = Some(incremental::keys_key(&t.table, run_id, r.range_index));
        }
    }
    (inc, tasks)
}

/// A table with a usable state: the changed ranges' tasks (every planned task, for a table compared whole).
fn with_base(
    t: &mut TablePlan,
    planned: Vec<ExtractTask>,
    s: &SyncState,
    ranges: Vec<RangeDigest>,
    keyed: bool,
) -> (TableIncremental, Vec<ExtractTask>) {
    let changed = incremental::changed(&s.ranges, &ranges);
    let mut ranges = ranges;
    for r in &mut ranges {
        let last = s.ranges.get(r.range_index as usize);
        r.keys = last.and_then(|p| p.keys.clone());
        // A range left as it was keeps its key file, and the mark of the digest before the read that wrote it: the
        // rows listed next time are then all those the file's own read may not have seen ([`ReadMark`]).
        if !changed.contains(&r.range_index) {
            r.read = last.and_then(|p| p.read);
        }
    }
    let base = Base {
        run_id: s.run_id.clone(),
        plan_id: s.plan_id.clone(),
        target_rows: s.target_rows,
        data_at: s.data_at,
        changed_rows_before: s
            .ranges
            .iter()
            .filter(|r| changed.contains(&r.range_index))
            .map(|r| r.rows)
            .sum(),
        key_sum: incremental::total_key_sum(&s.ranges),
        full_run: s.full_run.clone(),
    };
    let tasks = match (keyed, changed.is_empty(), planned.first()) {
        (_, true, _) | (_, _, None) => Vec::new(),
        (false, false, _) => planned,
        (true, false, Some(template)) => changed
            .iter()
            .map(|&i| ExtractTask {
                range_index: i,
                bounds: ranges[i as usize].bounds.clone(),
                ..template.clone()
            })
            .collect(),
    };
    if keyed {
        t.parts = ranges
            .iter()
            .map(|r| crate::contract::plan::PartEstimate {
                range_index: r.range_index,
                rows: r.rows,
                bytes: t.estimates.avg_row_bytes.saturating_mul(r.rows),
            })
            .collect();
    }
    let inc = TableIncremental {
        base: Some(base),
        full_because: None,
        ranges,
        replaced: changed.clone(),
        changed,
        flagged: false,
        cursor: None,
        runs_since_full: s.runs_since_full + 1,
        signature: String::new(),
        soft: false,
    };
    (inc, tasks)
}

/// The plan's words for the table: full and why, or how many ranges changed.
fn note(t: &mut TablePlan, inc: &TableIncremental) {
    let n = inc.ranges.len();
    t.notes.push(match (&inc.base, &inc.full_because) {
        (Some(b), _) => format!(
            "incremental: {} of {n} range(s) changed since run {} ({} skipped); {} row(s) at the source",
            inc.changed.len(),
            b.run_id,
            inc.skipped(),
            inc.source_rows()
        ),
        (None, why) => format!(
            "incremental: a full load, since {}; its {n} range(s) digested for the next run",
            why.as_deref().unwrap_or("there is nothing to build on")
        ),
    });
}
