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

/// The reads of a task's range (`kind`: the relation's `relkind`); a first pass of keys and versions runs here when
/// the decoder's sieve can use it.
pub(super) async fn reads(
    tx: &Transaction<'_>,
    task: &ExtractTask,
    decoder: &mut CopyDecoder,
    kind: char,
) -> Result<Reads, ExtractError> {
    let invalid = ExtractError::InvalidTask;
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
    let (screen, screened_bytes) = screen(tx, task, sieve).await?;
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

/// The first pass: the range's keys and versions, screened by the sieve; what is left to read, and the bytes read.
async fn screen(tx: &Transaction<'_>, task: &ExtractTask, sieve: &mut Sieve) -> Result<(Screen, u64), ExtractError> {
    let pg = |e| ExtractError::from(SourceError::from_pg(&task.table, task.statement_timeout_secs, e));
    let protocol = |detail| ExtractError::Protocol {
        table: task.table.clone(),
        detail,
    };
    let query = sql::copy_out(
        &sql::select_key_versions(&task.table, &task.key, &task.bounds).map_err(ExtractError::InvalidTask)?,
    );
    tracing::debug!(%query, "copy keys and versions");
    let stream = tx.copy_out(&query).await.map_err(pg)?;
    pin_mut!(stream);
    let mut screen = Screen::new(task.key.len());
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(pg)?;
        bytes += chunk.len() as u64;
        screen.feed(sieve, &chunk).map_err(protocol)?;
    }
    screen.finish().map_err(protocol)?;
    Ok((screen, bytes))
}
