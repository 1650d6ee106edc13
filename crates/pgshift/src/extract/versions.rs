//! What a range's extraction reads. A plain read is one `COPY` of the range. A row-by-row comparison on a plain table
//! (`--incremental diff`, docs/incremental.md) reads each row with its version (`ctid`, `xmin`), and, when the last
//! run's key file has versions, first reads only the range's keys and versions: the rows whose version is the last
//! run's are decided there, and only the others are read whole, by their tuple ids (a TID scan), in the same
//! snapshot. Spread updates then cost a read of keys, not of rows.

use futures_util::{pin_mut, StreamExt};
use tokio_postgres::Transaction;

use crate::contract::model::{Bounds, ExtractTask};
use crate::contract::sql;
use crate::source::decode::CopyDecoder;
use crate::source::screen::Screen;
use crate::source::sieve::{Horizon, Sieve};
use crate::source::SourceError;

use super::ExtractError;

/// Tuple ids per `COPY` of rows read by id (a statement of about 15 bytes an id).
const TIDS_PER_READ: usize = 10_000;

/// A range more than this share of whose rows must be read whole is read whole, in one sequential pass: fetching
/// that many rows one page at a time would not be cheaper.
const WHOLE_RANGE_SHARE: u64 = 4;

/// The `COPY` statements that read a range's rows, and the bytes a first pass of keys and versions read.
pub(super) struct Reads {
    pub(super) queries: Vec<String>,
    pub(super) screened_bytes: u64,
}

/// Whether a task's rows are read with their versions: a row-by-row comparison of a plain table's key range.
pub(super) fn versioned(task: &ExtractTask, kind: char) -> bool {
    task.diff.is_some() && kind == 'r' && matches!(task.bounds, Bounds::Key { .. }) && !task.key.is_empty()
}

/// What the read knows of its table: the relation's `relkind`, and whether the task's key is the table's primary
/// key or unique index (a windowed pass needs one row per key).
pub(super) struct Known {
    pub(super) kind: char,
    pub(super) unique_key: bool,
}

/// The reads of a task's range; a first pass of keys and versions runs here when the decoder's sieve can use it.
pub(super) async fn reads(
    tx: &Transaction<'_>,
    task: &ExtractTask,
    decoder: &mut CopyDecoder,
    known: Known,
) -> Result<Reads, ExtractError> {
    let (invalid, kind) = (ExtractError::InvalidTask, known.kind);
    let versioned = versioned(task, kind);
    let whole = || match versioned {
        true => sql::select_versioned(&task.table, &task.columns, (&task.key, &task.bounds)),
        false => sql::select_since(
            &task.table,
            &task.columns,
            (&task.key, &task.bounds),
            kind == 'r',
            task.since.as_ref(),
        ),
    };
    let sieve = decoder.sieve_mut().filter(|s| versioned && s.screens());
    let Some(sieve) = sieve else {
        return Ok(Reads {
            queries: vec![sql::copy_out(&whole().map_err(invalid)?)],
            screened_bytes: 0,
        });
    };
    let (screen, screened_bytes) = match sieve.window_since().filter(|_| known.unique_key) {
        Some(since) => windowed(tx, task, sieve, since).await?,
        None => {
            let query = sql::select_key_versions(&task.table, &task.key, &task.bounds).map_err(invalid)?;
            pass(tx, task, sieve, &query, Screen::new(task.key.len())).await?
        }
    };
    tracing::debug!(
        rows = screen.rows,
        to_read = screen.tids.len(),
        "keys and versions screened"
    );
    if screen.tids.len() as u64 * WHOLE_RANGE_SHARE > screen.rows {
        sieve.unscreen();
        return Ok(Reads {
            queries: vec![sql::copy_out(&whole().map_err(invalid)?)],
            screened_bytes,
        });
    }
    let queries = screen
        .tids
        .chunks(TIDS_PER_READ)
        .map(|ids| sql::select_tids(&task.table, &task.columns, ids).map(|q| sql::copy_out(&q)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    Ok(Reads {
        queries,
        screened_bytes,
    })
}

/// The transaction ids of the read's snapshot (the transaction's: `REPEATABLE READ`), with their epochs: they bound
/// which row versions may be new since the last run's read ([`crate::source::sieve`]). Its lineage where this role
/// may read the system identifier, on PostgreSQL 10 or later; else none (0).
pub(super) async fn horizon(tx: &Transaction<'_>, task: &ExtractTask, table_oid: u32) -> Result<Horizon, ExtractError> {
    let pg = |e| ExtractError::from(SourceError::from_pg(&task.table, task.statement_timeout_secs, e));
    // txid_current_snapshot is on every server (pg_current_snapshot, its successor, from 13 on); functions newer
    // than that only in the second statement, on a server that has them (a name is resolved even in a branch not
    // taken, and an error would end the snapshot).
    let row = tx
        .query_one(
            "SELECT pg_catalog.txid_snapshot_xmin(s), pg_catalog.txid_snapshot_xmax(s), \
             pg_catalog.current_setting('server_version_num')::pg_catalog.int4, (SELECT d.oid FROM \
             pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()) FROM \
             pg_catalog.txid_current_snapshot() AS s",
            &[],
        )
        .await
        .map_err(pg)?;
    let id = |i| row.get::<_, i64>(i).max(0) as u64;
    let (version, database): (i32, u32) = (row.get(2), row.get(3));
    let mut horizon = Horizon {
        xmin: id(0),
        xmax: id(1),
        lineage: 0,
    };
    if version >= 100_000 {
        // The server's identity, its start time, and when its shared statistics were last reset, which a
        // crash-restart does (the postmaster, and its start time, stay): ids are ordered only along one running
        // server's history (the sieve's docs). NULL, and no lineage, where any of them cannot be read.
        let row = tx
            .query_one(
                "SELECT CASE WHEN pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE') \
                 THEN (SELECT c.system_identifier::pg_catalog.text OPERATOR(pg_catalog.||) '/' \
                 OPERATOR(pg_catalog.||) pg_catalog.pg_postmaster_start_time()::pg_catalog.text \
                 OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) (SELECT b.stats_reset::pg_catalog.text FROM \
                 pg_catalog.pg_stat_bgwriter b) FROM pg_catalog.pg_control_system() c) END",
                &[],
            )
            .await
            .map_err(pg)?;
        let server: Option<String> = row.get(0);
        horizon.lineage = server.map_or(0, |s| crate::source::sieve::lineage(&s, database, table_oid));
    }
    Ok(horizon)
}

/// A windowed first pass ([`Sieve::window_since`]): the range counted, then only its rows written since the last
/// run's read, by keys and versions; when the count says keys are gone, a pass of the range's keys alone finds them
/// (unless the range will be read whole anyway).
async fn windowed(
    tx: &Transaction<'_>,
    task: &ExtractTask,
    sieve: &mut Sieve,
    since: u32,
) -> Result<(Screen, u64), ExtractError> {
    let pg = |e| ExtractError::from(SourceError::from_pg(&task.table, task.statement_timeout_secs, e));
    let (table, key, bounds) = (&task.table, &task.key, &task.bounds);
    let count = sql::count_range(table, key, bounds).map_err(ExtractError::InvalidTask)?;
    let rows = tx
        .query_one(count.as_str(), &[])
        .await
        .map_err(pg)?
        .get::<_, i64>(0)
        .max(0) as u64;
    let query = sql::select_recent_versions(table, key, bounds, since).map_err(ExtractError::InvalidTask)?;
    let (mut screen, mut bytes) = pass(tx, task, sieve, &query, Screen::new(key.len())).await?;
    screen.rows = rows;
    let gone = sieve.settle_window(rows).map_err(protocol(task))?;
    tracing::debug!(rows, recent = screen.tids.len(), gone, "window screened");
    if gone > 0 && screen.tids.len() as u64 * WHOLE_RANGE_SHARE <= rows {
        let query = sql::select_keys(table, key, bounds).map_err(ExtractError::InvalidTask)?;
        bytes += pass(tx, task, sieve, &query, Screen::keys_only(key.len())).await?.1;
        sieve.check_gone(gone).map_err(protocol(task))?;
    }
    Ok((screen, bytes))
}

/// A first pass (keys and versions, or keys alone) through the sieve: what is left to read, and the bytes read.
async fn pass(
    tx: &Transaction<'_>,
    task: &ExtractTask,
    sieve: &mut Sieve,
    select: &str,
    mut screen: Screen,
) -> Result<(Screen, u64), ExtractError> {
    let pg = |e| ExtractError::from(SourceError::from_pg(&task.table, task.statement_timeout_secs, e));
    let protocol = protocol(task);
    let query = sql::copy_out(select);
    tracing::debug!(%query, "copy keys and versions");
    let stream = tx.copy_out(&query).await.map_err(pg)?;
    pin_mut!(stream);
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(pg)?;
        bytes += chunk.len() as u64;
        screen.feed(sieve, &chunk).map_err(&protocol)?;
    }
    screen.finish().map_err(&protocol)?;
    Ok((screen, bytes))
}

/// A first pass's stream or counts that cannot be, as the task's error.
fn protocol(task: &ExtractTask) -> impl Fn(String) -> ExtractError + '_ {
    |detail| ExtractError::Protocol {
        table: task.table.clone(),
        detail,
    }
}
