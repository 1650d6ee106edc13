//! `--incremental cursor=COLUMN` planned (a live source): after a first full load, a run reads the rows whose cursor
//! column is at or past the last run's watermark, and the load merges them by key. The watermark is never the
//! largest value seen: it is when planning started, less the age of the oldest transaction open then (the start of
//! the oldest open or prepared transaction, if earlier), so a row written by a transaction that commits after this
//! run read the table carries a cursor value the next run still reads. Deletes are not seen in this mode;
//! `--full-every N` loads the table in full every N runs, which removes them.

use tokio_postgres::Client;

use super::PlanError;
use crate::contract::incremental::{Base, CursorMark, CursorPlan, SyncState, TableIncremental};
use crate::contract::model::{Bounds, ExtractTask};
use crate::contract::plan::{PlanRequest, TablePlan};
use crate::contract::types::oid;
use crate::source::SourceError;

/// The watermark of this run, as `timestamptz` text: now, or the start of the oldest transaction open or prepared
/// on the server if earlier. Refused when the user cannot see every session's transaction (it would miss theirs).
async fn watermark(client: &Client, t: &TablePlan) -> Result<String, PlanError> {
    let src = |e| PlanError::from(SourceError::from_pg(&t.table, 0, e));
    let hidden: i64 = client
        .query_one(
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity WHERE query = '<insufficient privilege>'",
            &[],
        )
        .await
        .map_err(src)?
        .get(0);
    if hidden > 0 {
        return Err(PlanError::InvalidRequest(format!(
            "{}: --incremental cursor needs to see when every open transaction started, and {hidden} session(s) are \
             hidden from this user: GRANT pg_read_all_stats TO the source user (or use --incremental diff from a \
             snapshot)",
            t.table
        )));
    }
    let row = client
        .query_one(
            "SELECT LEAST(pg_catalog.now(), (SELECT pg_catalog.min(a.xact_start) FROM pg_catalog.pg_stat_activity a \
             WHERE a.xact_start IS NOT NULL AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()), \
             (SELECT pg_catalog.min(p.prepared) FROM pg_catalog.pg_prepared_xacts p))::pg_catalog.text",
            &[],
        )
        .await
        .map_err(src)?;
    Ok(row.get(0))
}

/// The column is the table's, a timestamp, and the table has a key to merge by.
fn check(req: &PlanRequest, t: &TablePlan, column: &str) -> Result<(), PlanError> {
    let bad = |why: String| {
        Err(PlanError::InvalidRequest(format!(
            "{}: --incremental cursor={column}: {why}",
            t.table
        )))
    };
    let mode = req.load.as_ref().map(|l| l.mode).unwrap_or_default();
    if mode == crate::contract::load::LoadMode::Append {
        return bad("cursor mode merges the rows by key; it does not combine with --mode append".into());
    }
    let Some(c) = t.columns.iter().find(|c| c.name == column) else {
        return bad("no such column (the column names are case-sensitive)".into());
    };
    if !matches!(c.pg_type.oid, oid::TIMESTAMPTZ | oid::TIMESTAMP) || c.cast.is_some() {
        return bad(format!(
            "a cursor is a timestamptz or timestamp the application sets on every write, not {}",
            c.pg_type.name
        ));
    }
    if t.key.is_empty() {
        return bad("the table has no key to merge the rows by: give it one in pgshift.toml".into());
    }
    Ok(())
}

/// One cursor table: its watermark read; on a usable state (of this column, not due a full load), one task of the
/// rows since the state's watermark, merged by key; else the planned tasks, a full load.
pub(super) async fn plan_table(
    (client, req): (&Client, &PlanRequest),
    t: &mut TablePlan,
    planned: Vec<ExtractTask>,
    column: &str,
    state: Result<SyncState, String>,
) -> Result<Vec<ExtractTask>, PlanError> {
    check(req, t, column)?;
    let watermark = watermark(client, t).await?;
    let state = state.and_then(|s| usable(s, column, req.full_every));
    let (inc, tasks) = match (state, planned.first()) {
        (Ok(s), Some(template)) => {
            let mark = s.cursor.clone().expect("checked");
            let task = ExtractTask {
                range_index: 0,
                bounds: Bounds::ALL,
                since: Some(mark.clone()),
                ..template.clone()
            };
            (since_state(&s, column, mark, watermark), vec![task])
        }
        (Err(why), _) => (full(column, watermark, why, &planned), planned),
        (Ok(_), None) => (
            full(column, watermark, "the table has no task".into(), &planned),
            planned,
        ),
    };
    t.notes.push(note(&inc));
    t.incremental = Some(inc);
    Ok(tasks)
}

/// The state, when this run builds on it.
fn usable(s: SyncState, column: &str, full_every: Option<u32>) -> Result<SyncState, String> {
    match &s.cursor {
        Some(c) if c.column == column => {}
        Some(c) => return Err(format!("its cursor was {}, not {column}", c.column)),
        None => return Err("its state is not of cursor mode".into()),
    }
    match full_every {
        Some(n) if s.runs_since_full + 1 >= n => Err(format!(
            "--full-every {n}: {} incremental run(s) since the last full load (a full load removes the rows the \
             source deleted, which cursor mode does not see)",
            s.runs_since_full
        )),
        _ => Ok(s),
    }
}

fn since_state(s: &SyncState, column: &str, mark: CursorMark, watermark: String) -> TableIncremental {
    TableIncremental {
        base: Some(Base {
            run_id: s.run_id.clone(),
            plan_id: s.plan_id.clone(),
            target_rows: s.target_rows,
            data_at: s.data_at,
            changed_rows_before: 0,
            key_sum: None,
            full_run: s.full_run.clone(),
        }),
        full_because: None,
        ranges: Vec::new(),
        changed: vec![0],
        replaced: Vec::new(),
        flagged: false,
        cursor: Some(CursorPlan {
            column: column.to_string(),
            from: Some(mark.watermark),
            watermark,
        }),
        runs_since_full: s.runs_since_full + 1,
        signature: String::new(),
        soft: false,
    }
}

fn full(column: &str, watermark: String, why: String, planned: &[ExtractTask]) -> TableIncremental {
    TableIncremental {
        base: None,
        full_because: Some(why),
        ranges: Vec::new(),
        changed: planned.iter().map(|x| x.range_index).collect(),
        replaced: Vec::new(),
        flagged: false,
        cursor: Some(CursorPlan {
            column: column.to_string(),
            from: None,
            watermark,
        }),
        runs_since_full: 0,
        signature: String::new(),
        soft: false,
    }
}

/// The plan's words for a cursor table (`plan --explain` prints them).
fn note(inc: &TableIncremental) -> String {
    let c = inc.cursor.as_ref().expect("a cursor table");
    let deletes = "deletes are not seen in cursor mode (--full-every N loads the table in full every N runs, which \
                   removes them; --incremental diff from a snapshot sees them)";
    match (&c.from, &inc.full_because) {
        (Some(from), _) => format!(
            "incremental: cursor {}: the rows at or past {from} merged by key; the next run reads from {}; {deletes}",
            c.column, c.watermark
        ),
        (None, why) => format!(
            "incremental: cursor {}: a full load, since {}; the next run reads from {}; {deletes}",
            c.column,
            why.as_deref().unwrap_or("there is nothing to build on"),
            c.watermark
        ),
    }
}
