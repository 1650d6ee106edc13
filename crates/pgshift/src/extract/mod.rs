//! Layer 4, the extractor's handler: one [`ExtractTask`] → Parquet files on the stage → [`ExtractResult`].
//!
//! The COPY runs inside a `REPEATABLE READ READ ONLY` transaction with `statement_timeout`. Decoding (binary COPY →
//! Arrow) runs on the async task that reads the stream; Parquet encoding runs on a blocking thread, fed through a
//! bounded channel, so reading, decoding and encoding overlap and memory stays bounded by
//! `2 × batch_bytes + row_group_bytes` plus one stage chunk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use futures_util::{pin_mut, StreamExt};
use tokio::sync::mpsc;
use tokio_postgres::{Client, IsolationLevel, Transaction};
use tracing::Instrument;

use crate::contract::layout::{attempt_key, file_key_prefix, kept_key, result_key};
use crate::contract::model::{display_key, Bounds, ExtractResult, ExtractTask, FailedAttempt, KeyType, StagedFile};
use crate::contract::types;
mod error;
mod versions;

use crate::source::decode::{CopyDecoder, DecodeError, DecoderSummary};
use crate::source::{check_columns, describe_table, key_columns, SourceConnector, SourceError, SESSION_SETTINGS};
use crate::stage::parquet::{upload, RollingWriter, Upload, WriteError, CHUNKS_IN_FLIGHT};
use crate::stage::StageOpener;
pub use error::{ExtractError, ParquetFailure};

/// The ports an extractor uses.
pub struct ExtractContext {
    pub source: Arc<dyn SourceConnector>,
    pub stages: Arc<dyn StageOpener>,
}

fn validate(task: &ExtractTask) -> Result<(), ExtractError> {
    let bad = |m: String| Err(ExtractError::InvalidTask(m));
    if task.run_id.is_empty() {
        return bad("run_id is empty".into());
    }
    if !task.task_id.is_empty() && task.task_id != task.identity() {
        return bad(format!(
            "{} range {} no longer hashes to the task its plan sealed ({}): tasks.json was changed after planning; \
             plan the run again (pgshift run … --restart)",
            task.table, task.range_index, task.task_id
        ));
    }
    if task.columns.is_empty() {
        return bad(format!("no columns to extract from {}", task.table));
    }
    let mut seen = std::collections::HashSet::new();
    for c in &task.columns {
        if !seen.insert(&c.name) {
            return bad(format!("column {:?} is listed twice", c.name));
        }
    }
    if let Bounds::Key { lower, upper } = &task.bounds {
        if task.key.is_empty() && (lower.is_some() || upper.is_some()) {
            return bad("a bounded key range needs key columns".into());
        }
    }
    if task.writer.row_group_bytes == 0 || task.writer.target_file_bytes == 0 || task.writer.batch_bytes == 0 {
        return bad("writer byte budgets must be positive".into());
    }
    Ok(())
}

/// Runs one extraction task (its first attempt).
pub async fn extract(ctx: &ExtractContext, task: ExtractTask) -> Result<ExtractResult, ExtractError> {
    extract_attempt(ctx, task, 0).await
}

/// When an attempt started: the clock for its duration, and the wall time its records carry.
struct Attempt {
    number: u32,
    started: Instant,
    started_at: f64,
}

/// Runs attempt `attempt` of an extraction task (0: the first). A failed attempt is recorded beside the range's files
/// (best effort: the stage may be what failed) for the run report.
pub async fn extract_attempt(
    ctx: &ExtractContext,
    task: ExtractTask,
    attempt: u32,
) -> Result<ExtractResult, ExtractError> {
    let span = tracing::info_span!(
        "extract",
        run = %task.run_id,
        table = %task.table,
        range = task.range_index,
        rows = tracing::field::Empty,
        bytes = tracing::field::Empty,
        files = tracing::field::Empty,
    );
    let a = Attempt {
        number: attempt,
        started: Instant::now(),
        started_at: crate::contract::clock::unix_now(),
    };
    let result = run(ctx, &task, &a).instrument(span.clone()).await;
    match &result {
        Ok(r) => {
            span.record("rows", r.rows);
            span.record("bytes", r.files.iter().map(|f| f.bytes).sum::<u64>());
            span.record("files", r.files.len());
            span.in_scope(|| tracing::info!(seconds = r.seconds, source_bytes = r.source_bytes, "range extracted"));
        }
        Err(e) => {
            span.in_scope(|| tracing::error!(error = %e, name = e.name(), "extraction failed"));
            record_failure(ctx, &task, &a, e).instrument(span).await;
        }
    }
    result
}

/// Leaves `<part>.attempt-<n>.failed.json` on the stage; a failure to do so is only logged.
async fn record_failure(ctx: &ExtractContext, task: &ExtractTask, a: &Attempt, e: &ExtractError) {
    let record = FailedAttempt {
        run_id: task.run_id.clone(),
        table: task.table.clone(),
        range_index: task.range_index,
        attempt: a.number,
        started_at: a.started_at,
        seconds: a.started.elapsed().as_secs_f64(),
        error: e.name().to_string(),
        message: e.to_string(),
    };
    let put = async {
        let stage = ctx.stages.open(&task.stage).await?;
        let json = serde_json::to_vec(&record).unwrap_or_default();
        crate::stage::put(stage.as_ref(), &attempt_key(task, a.number), bytes::Bytes::from(json)).await
    };
    if let Err(err) = put.await {
        tracing::warn!(error = %err, "could not record the failed attempt");
    }
}

async fn run(ctx: &ExtractContext, task: &ExtractTask, a: &Attempt) -> Result<ExtractResult, ExtractError> {
    validate(task)?;
    let count = Arc::new(crate::stage::RequestCount::default());
    let stage: Arc<dyn crate::stage::Stage> = Arc::new(crate::stage::Counted::new(
        ctx.stages.open(&task.stage).await?,
        count.clone(),
    ));
    if let Some(kept) = landed(stage.as_ref(), task).await? {
        tracing::info!(
            rows = kept.rows,
            files = kept.files.len(),
            "range already landed and verified: kept"
        );
        return Ok(keep(stage.as_ref(), task, kept).await);
    }
    // The connection is polled in this task, beside the COPY stream it feeds (no cross-thread wake-ups).
    let source = crate::source::connector_for(&ctx.source, task.source_endpoint.as_ref())?;
    let (mut client, connection) = source.connect_driven().await?;
    let mut result = crate::source::drive(connection, read_range(&mut client, stage.clone(), task, a)).await?;
    // The result lands beside the files, last: the loader reads it back from the stage (or takes it from the Map).
    // Its own PUT is counted in it.
    let mut requests = count.snapshot();
    requests.put_class += 1;
    result.requests = Some(requests);
    let json = serde_json::to_vec(&result).map_err(|e| parquet_error(task, ParquetFailure::ResultJson(e)))?;
    crate::stage::put(stage.as_ref(), &result_key(task), bytes::Bytes::from(json)).await?;
    Ok(result)
}

/// The result of this task's range that an earlier attempt (a retry after its result landed, or an interrupted run
/// resumed with its plan) left on the stage, when it is of this plan and every file is there with the size and CRC32
/// it records. Anything else (no result, another plan's, a file missing or changed) is extracted again, over it.
async fn landed(stage: &dyn crate::stage::Stage, task: &ExtractTask) -> Result<Option<ExtractResult>, ExtractError> {
    let bytes = match stage.get(&result_key(task)).await {
        Ok(b) => b,
        Err(crate::stage::StageError::Missing { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Ok(r) = serde_json::from_slice::<ExtractResult>(&bytes) else {
        tracing::warn!("an earlier result does not parse: the range is extracted again");
        return Ok(None);
    };
    let same = r.run_id == task.run_id
        && r.plan_id == task.plan_id
        && !task.plan_id.is_empty()
        && r.table == task.table
        && r.range_index == task.range_index;
    if !same {
        return Ok(None);
    }
    for f in &r.files {
        if let Some(problem) = crate::stage::file_problem(stage, f).await? {
            tracing::warn!(
                ?problem,
                "an earlier result's file does not verify: the range is extracted again"
            );
            return Ok(None);
        }
    }
    Ok(Some(r))
}

/// A range an earlier attempt landed, kept as it is: a marker beside it (`kept_key`) says so to the run's record, which
/// every report reads back; a marker that cannot be written is logged and never fails the range.
async fn keep(stage: &dyn crate::stage::Stage, task: &ExtractTask, mut kept: ExtractResult) -> ExtractResult {
    kept.reused = true;
    let marker = crate::contract::model::KeptRange {
        table: task.table.clone(),
        range_index: task.range_index,
        result_started_at: kept.started_at,
        kept_at: crate::contract::clock::unix_now(),
    };
    let body = bytes::Bytes::from(serde_json::to_vec(&marker).unwrap_or_default());
    if let Err(e) = crate::stage::put(stage, &kept_key(task), body).await {
        tracing::warn!(error = %e, "could not record the kept range");
    }
    kept
}

/// The range read in one snapshot and written to Parquet on the stage: its result, once the files are complete.
async fn read_range(
    client: &mut Client,
    stage: Arc<dyn crate::stage::Stage>,
    task: &ExtractTask,
    a: &Attempt,
) -> Result<ExtractResult, ExtractError> {
    let table = &task.table;
    let pg = |e| ExtractError::from(SourceError::from_pg(table, task.statement_timeout_secs, e));
    let tx = begin(client, task).await?;

    // Same snapshot as the COPY: the columns read are the columns planned.
    let catalog = describe_table(&tx, table).await?;
    check_columns(&catalog, &task.columns)?;
    check_key(task, &catalog)?;
    let horizon = match versions::versioned(task, catalog.kind) {
        true => Some(versions::horizon(&tx, task, catalog.oid).await?),
        false => None,
    };
    let (schema, mut decoder) = decoder_for(stage.as_ref(), task, horizon.as_ref().map(|h| h.horizon)).await?;
    let known = versions::Known {
        kind: catalog.kind,
        unique_key: catalog.key == task.key,
        listed: versions::listed(stage.as_ref(), task, horizon.as_ref()).await?,
    };
    let reads = versions::reads(&tx, task, &mut decoder, known).await?;
    // The encoder thread: batches in, files out. `Done` is sent only after a clean end of stream, so an error on
    // this side (or a panic) makes the thread discard the file in progress instead of finishing it.
    let (tx_batches, rx_batches) = mpsc::channel::<Msg>(2);
    let (tx_upload, rx_upload) = mpsc::channel::<Upload>(CHUNKS_IN_FLIGHT);
    let uploader = tokio::spawn(upload(stage.clone(), rx_upload));
    let writer = RollingWriter::new(tx_upload, schema, &task.writer, file_key_prefix(task))
        .map_err(|e| write_error(table, e))?;
    let encoder = tokio::task::spawn_blocking(move || encode(writer, rx_batches));

    let read = pump(&tx, &reads.queries, decoder, &tx_batches, task).await;
    let read = match read {
        Ok(Some(r)) => {
            let _ = tx_batches.send(Msg::Done).await;
            Some(r)
        }
        Ok(None) => None,
        Err(e) => {
            // The encoder stops, which closes the uploader's channel; the uploader discards the file in progress.
            // Both are waited for, so nothing is left uploading when the error is reported.
            drop(tx_batches);
            let _ = encoder.await;
            let _ = uploader.await;
            return Err(e);
        }
    };
    drop(tx_batches);
    let encoded = encoder
        .await
        .map_err(|e| parquet_error(task, ParquetFailure::EncoderThread(e)))?;
    // The uploader's own error first: when it stopped, the encoder only saw its channel close.
    let files = uploader
        .await
        .map_err(|e| parquet_error(task, ParquetFailure::UploaderTask(e)))??;
    encoded.map_err(|e| write_error(table, e))?;
    let (mut summary, source_bytes) = read.ok_or_else(|| parquet_error(task, ParquetFailure::EncoderStopped))?;
    let source_bytes = source_bytes + reads.screened_bytes;
    tx.commit().await.map_err(pg)?;
    // The key file lands before the result: a range with a result always has it.
    let counts = match (summary.diff.take(), &task.diff) {
        (Some((file, counts)), Some(d)) => {
            crate::stage::put(stage.as_ref(), &d.keys_out, bytes::Bytes::from(file)).await?;
            Some(counts)
        }
        _ => None,
    };
    let mut result = result_of(task, files, summary, source_bytes, a)?;
    result.diff = counts;
    Ok(result)
}

/// The Parquet schema and the decoder of a task: its columns; for a row-by-row comparison (`task.diff`), every one
/// nullable but the key's and the deleted flag after them, with the previous run's key file read from the stage;
/// `horizon`: each row is read with its version ([`versions`]), in a snapshot of this horizon.
async fn decoder_for(
    stage: &dyn crate::stage::Stage,
    task: &ExtractTask,
    horizon: Option<crate::source::sieve::Horizon>,
) -> Result<(arrow_schema::SchemaRef, CopyDecoder), ExtractError> {
    let batch = task.writer.batch_bytes as usize;
    let Some(diff) = &task.diff else {
        let schema = Arc::new(types::arrow_schema(&task.columns));
        return Ok((
            schema.clone(),
            CopyDecoder::new(schema, &task.columns, &task.key, batch),
        ));
    };
    let previous = match &diff.previous {
        None => None,
        Some(key) => Some(stage.get(key).await.map_err(|e| match e {
            crate::stage::StageError::Missing { .. } => ExtractError::InvalidTask(format!(
                "{} range {}: the last run's key file {key} is gone from the stage; run with --incremental full \
                 to load the table whole (and start its comparisons anew)",
                task.table, task.range_index
            )),
            other => other.into(),
        })?),
    };
    let sieve = crate::source::sieve::Sieve::new(previous.as_deref(), horizon).map_err(|e| {
        ExtractError::InvalidTask(format!(
            "{} range {}: the last run's key file {}: {e}; run with --incremental full to load the table whole \
                 (and start its comparisons anew)",
            task.table,
            task.range_index,
            diff.previous.as_deref().unwrap_or_default()
        ))
    })?;
    let columns = match diff.flagged {
        true => crate::contract::incremental::diff_columns(&task.columns, &task.key),
        false => task.columns.clone(),
    };
    let schema = Arc::new(types::arrow_schema(&columns));
    let decoder = CopyDecoder::new(schema.clone(), &columns, &task.key, batch)
        .with_sieve(sieve, diff.flagged, horizon.is_some())
        .map_err(|e| ExtractError::InvalidTask(format!("{}: {e}", task.table)))?;
    Ok((schema, decoder))
}

/// The session and the snapshot the range is read in: `REPEATABLE READ READ ONLY` with the task's statement timeout.
async fn begin<'c>(client: &'c mut Client, task: &ExtractTask) -> Result<Transaction<'c>, ExtractError> {
    let pg = |e| ExtractError::from(SourceError::from_pg(&task.table, task.statement_timeout_secs, e));
    client.batch_execute(SESSION_SETTINGS).await.map_err(pg)?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)?;
    // An integer we format ourselves: no user text reaches this statement.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}",
        task.statement_timeout_secs.saturating_mul(1000)
    ))
    .await
    .map_err(pg)?;
    Ok(tx)
}

/// Reads the COPY streams of `queries`, one after the other, through the decoder into the encoder's channel: the
/// decoder's summary and the bytes read, or `None` when the encoder stopped first (its error is the one to report).
async fn pump(
    tx: &Transaction<'_>,
    queries: &[String],
    mut decoder: CopyDecoder,
    batches: &mpsc::Sender<Msg>,
    task: &ExtractTask,
) -> Result<Option<(DecoderSummary, u64)>, ExtractError> {
    let pg = |e| ExtractError::from(SourceError::from_pg(&task.table, task.statement_timeout_secs, e));
    let mut source_bytes = 0u64;
    let mut pending = Vec::new();
    if queries.is_empty() {
        decoder.no_stream();
    }
    for (i, query) in queries.iter().enumerate() {
        if i > 0 {
            decoder.next_stream().map_err(|e| decode_error(task, e))?;
        }
        tracing::debug!(query = %query.get(..300).unwrap_or(query), "copy");
        let stream = tx.copy_out(query).await.map_err(pg)?;
        pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(pg)?;
            source_bytes += chunk.len() as u64;
            decoder
                .feed(&chunk, &mut |b| {
                    pending.push(b);
                    Ok(())
                })
                .map_err(|e| decode_error(task, e))?;
            for b in pending.drain(..) {
                if batches.send(Msg::Batch(b)).await.is_err() {
                    return Ok(None);
                }
            }
        }
    }
    let (last, summary) = decoder.finish().map_err(|e| decode_error(task, e))?;
    if let Some(b) = last {
        if batches.send(Msg::Batch(b)).await.is_err() {
            return Ok(None);
        }
    }
    Ok(Some((summary, source_bytes)))
}

/// The range's result: the files must hold exactly the rows decoded.
fn result_of(
    task: &ExtractTask,
    files: Vec<StagedFile>,
    summary: DecoderSummary,
    source_bytes: u64,
    a: &Attempt,
) -> Result<ExtractResult, ExtractError> {
    let rows_in_files: u64 = files.iter().map(|f| f.rows).sum();
    if rows_in_files != summary.rows {
        return Err(parquet_error(
            task,
            ParquetFailure::RowCount {
                decoded: summary.rows,
                in_files: rows_in_files,
            },
        ));
    }
    let max_value_bytes: BTreeMap<String, u64> = task
        .columns
        .iter()
        .zip(&summary.max_value_bytes)
        .filter(|(c, _)| c.mapping.is_variable_length())
        .map(|(c, &n)| (c.name.clone(), n))
        .collect();
    Ok(ExtractResult {
        run_id: task.run_id.clone(),
        plan_id: task.plan_id.clone(),
        task_id: task.identity(),
        table: task.table.clone(),
        range_index: task.range_index,
        files,
        rows: summary.rows,
        source_bytes,
        seconds: a.started.elapsed().as_secs_f64(),
        first_key: summary.first_key,
        last_key: summary.last_key,
        max_value_bytes,
        peak_memory_bytes: peak_memory_bytes(),
        attempt: a.number,
        started_at: a.started_at,
        reused: false,
        billed: Some(crate::contract::ledger::Billed::here(
            "extractor",
            a.started.elapsed().as_secs_f64(),
        )),
        requests: None,
        diff: None,
    })
}

fn parquet_error(task: &ExtractTask, source: ParquetFailure) -> ExtractError {
    ExtractError::Parquet {
        table: task.table.clone(),
        source,
    }
}

enum Msg {
    Batch(RecordBatch),
    Done,
}

fn encode(mut writer: RollingWriter, mut rx: mpsc::Receiver<Msg>) -> Result<(), WriteError> {
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Batch(batch) => writer.write(&batch)?,
            Msg::Done => return writer.finish(),
        }
    }
    // The reader gave up: dropping the writer closes the uploader's channel, which discards the file in progress.
    Ok(())
}

/// Key columns exist, have a key type, and bounds carry values of those types.
fn check_key(task: &ExtractTask, catalog: &crate::source::CatalogTable) -> Result<(), ExtractError> {
    let types: Vec<KeyType> = key_columns(catalog, &task.table, &task.key)?
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    if let Bounds::Key { lower, upper } = &task.bounds {
        for bound in [lower, upper].into_iter().flatten() {
            if bound.len() != types.len() || bound.iter().zip(&types).any(|(v, t)| v.ty != *t) {
                return Err(ExtractError::InvalidTask(format!(
                    "bound {} does not match the key ({}) of types ({})",
                    display_key(bound),
                    task.key.join(", "),
                    types.iter().map(|t| t.sql_name()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    Ok(())
}

fn decode_error(task: &ExtractTask, e: DecodeError) -> ExtractError {
    match e {
        DecodeError::Protocol(detail) => ExtractError::Protocol {
            table: task.table.clone(),
            detail,
        },
        DecodeError::Value { column, reason, key } => ExtractError::Value {
            table: task.table.clone(),
            column: task.columns.get(column).map(|c| c.name.clone()).unwrap_or_default(),
            key: key
                .map(|k| display_key(&k))
                .unwrap_or_else(|| "(key not extracted)".into()),
            reason,
        },
    }
}

fn write_error(table: &crate::contract::model::TableRef, e: WriteError) -> ExtractError {
    ExtractError::Parquet {
        table: table.clone(),
        source: e.into(),
    }
}

/// Peak resident set size (`VmHWM`) of this process, on Linux (Lambda included).
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
