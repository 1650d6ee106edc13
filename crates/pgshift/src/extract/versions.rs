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
use crate::source::sieve::Sieve;
use crate::source::Snapshot;
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
    /// The planner's list of the range's rows written since the last run's digest, when this read is in the
    /// snapshot it was made in ([`listed`]).
    pub(super) listed: Option<Listed>,
}

/// The planner's list of a range's recent rows ([`crate::contract::incremental::RecentRows`]), read from the stage.
pub(super) struct Listed {
    rows: u64,
    tids: Vec<(u32, u16)>,
}

/// The planner's list of the task's recent rows, when the read is on the server and in the snapshot the list was
/// made in (equal snapshots see the same rows at the same tuple ids); else `None`, and a windowed pass reads them.
pub(super) async fn listed(
    stage: &dyn crate::stage::Stage,
    task: &ExtractTask,
    read: Option<&Snapshot>,
) -> Result<Option<Listed>, ExtractError> {
    let (Some(r), Some(now)) = (task.diff.as_ref().and_then(|d| d.recent.as_ref()), read) else {
        return Ok(None);
    };
    let lineage = now.horizon.lineage;
    if lineage == 0 || lineage != r.lineage || now.standby || now.text != r.snapshot {
        tracing::debug!(planned = %r.snapshot, now = %now.text, "the planner's list of recent rows is of another snapshot");
        return Ok(None);
    }
    let bytes = match stage.get(&r.tids).await {
        Ok(b) => b,
        Err(crate::stage::StageError::Missing { .. }) => {
            tracing::warn!(key = %r.tids, "the planner's list of recent rows is gone from the stage");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    if bytes.len() % 6 != 0 {
        return Err(protocol(task)(format!(
            "the planner's list of recent rows {} has {} bytes, not 6 a row",
            r.tids,
            bytes.len()
        )));
    }
    let tids = bytes
        .chunks_exact(6)
        .map(|t| {
            (
                u32::from_be_bytes([t[0], t[1], t[2], t[3]]),
                u16::from_be_bytes([t[4], t[5]]),
            )
        })
        .collect();
    Ok(Some(Listed { rows: r.rows, tids }))
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
        Some(since) => windowed(tx, task, sieve, (since, known.listed)).await?,
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

/// The read's snapshot ([`crate::source::horizon`]: the transaction's, `REPEATABLE READ`).
pub(super) async fn horizon(
    tx: &Transaction<'_>,
    task: &ExtractTask,
    table_oid: u32,
) -> Result<Snapshot, ExtractError> {
    crate::source::horizon(tx, table_oid)
        .await
        .map_err(|e| ExtractError::from(SourceError::from_pg(&task.table, task.statement_timeout_secs, e)))
}

/// A windowed first pass ([`Sieve::window_since`]): the range counted, then only its rows written since the last
/// run's read, by keys and versions (or the planner's count and list of them, [`Listed`]); when the count says keys
/// are gone, a pass of the range's keys alone finds them (unless the range will be read whole anyway).
async fn windowed(
    tx: &Transaction<'_>,
    task: &ExtractTask,
    sieve: &mut Sieve,
    (since, listed): (u32, Option<Listed>),
) -> Result<(Screen, u64), ExtractError> {
    let pg = |e| ExtractError::from(SourceError::from_pg(&task.table, task.statement_timeout_secs, e));
    let (table, key, bounds) = (&task.table, &task.key, &task.bounds);
    let (mut screen, mut bytes, rows) = match listed {
        Some(l) => {
            let (screen, bytes) = listed_pass(tx, task, sieve, &l.tids).await?;
            (screen, bytes, l.rows)
        }
        None => {
            let count = sql::count_range(table, key, bounds).map_err(ExtractError::InvalidTask)?;
            let rows = tx
                .query_one(count.as_str(), &[])
                .await
                .map_err(pg)?
                .get::<_, i64>(0)
                .max(0) as u64;
            let query = sql::select_recent_versions(table, key, bounds, since).map_err(ExtractError::InvalidTask)?;
            let (screen, bytes) = pass(tx, task, sieve, &query, Screen::new(key.len())).await?;
            (screen, bytes, rows)
        }
    };
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

/// The first pass of the rows the planner listed: their keys and versions, by tuple id.
async fn listed_pass(
    tx: &Transaction<'_>,
    task: &ExtractTask,
    sieve: &mut Sieve,
    tids: &[(u32, u16)],
) -> Result<(Screen, u64), ExtractError> {
    let (mut screen, mut bytes) = (Screen::new(task.key.len()), 0);
    for ids in tids.chunks(TIDS_PER_READ) {
        let query = sql::select_key_versions_at(&task.table, &task.key, ids).map_err(ExtractError::InvalidTask)?;
        screen.next_stream();
        let (s, b) = pass(tx, task, sieve, &query, screen).await?;
        (screen, bytes) = (s, bytes + b);
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
