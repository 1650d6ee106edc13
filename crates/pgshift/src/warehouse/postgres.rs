//! PostgreSQL as the warehouse: the local stand-in for Redshift (same modes, same SQL shape), useful on its own.
//! The COPY step reads the manifest's Parquet parts from the stage and streams them into the staging table with
//! binary `COPY FROM STDIN`, encoding Arrow values straight into Postgres' binary format.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::{pin_mut, SinkExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_postgres::{Client, CopyInSink, Transaction};

use super::{Batch, Cell, CopyJob, Dialect, Step, Submission, Timing, Warehouse, WarehouseError};
use crate::contract::model::StagedFile;
use crate::contract::pgtext::{PG_EPOCH_DAYS, PG_EPOCH_MICROS};
use crate::contract::sql;
use crate::stage::Stage;

/// A PostgreSQL database reached by a connection string.
pub struct PgWarehouse {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// Parts decoded at once across every load this warehouse runs: what bounds the loader's memory, however many
    /// tables load side by side and however large they are.
    decoders: Arc<tokio::sync::Semaphore>,
    /// Where the password came from (for an authentication error).
    password: crate::pgclient::libpq::PasswordOrigin,
}

impl PgWarehouse {
    pub fn new(url: &str) -> Result<Self, WarehouseError> {
        let parsed =
            crate::pgclient::tls::config(url).map_err(|e| WarehouseError::Invalid(format!("warehouse {e}")))?;
        let mut wh = Self::from_parts(parsed.config, parsed.tls);
        wh.password = parsed.password;
        Ok(wh)
    }

    pub fn from_parts(config: tokio_postgres::Config, tls: tokio_postgres_rustls::MakeRustlsConnect) -> Self {
        Self {
            config,
            tls,
            decoders: Arc::new(tokio::sync::Semaphore::new(COPY_STREAMS)),
            password: Default::default(),
        }
    }

    async fn connect(&self) -> Result<Client, WarehouseError> {
        self.open(false).await
    }

    /// A session; `first`: the run's first contact ([`Warehouse::reach`]).
    async fn open(&self, first: bool) -> Result<Client, WarehouseError> {
        use crate::pgclient::ConnectFailure;
        let (client, conn) = match crate::pgclient::connect(&self.config, self.tls.clone()).await {
            Ok(c) => c,
            Err(ConnectFailure::Driver(e)) => return Err(connect_error(self, &e, first)),
            Err(ConnectFailure::NoAnswer(secs)) => {
                return Err(WarehouseError::Sql {
                    detail: format!(
                        "connecting to the warehouse at {}: no answer within {secs} s (connect_timeout)",
                        crate::pgclient::endpoint(&self.config)
                    ),
                    retryable: true,
                })
            }
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client.batch_execute(SESSION).await.map_err(pg)?;
        Ok(client)
    }
}

/// What every warehouse session pins, whatever the database's or the role's defaults: built-ins resolved in
/// `pg_catalog` only (a user's function can never stand in for one the loader calls; every table it names is
/// schema-qualified), rows never hidden by a policy, no timeout of the role's, writable, `READ COMMITTED` (each load
/// transaction also begins with it explicitly: under `REPEATABLE READ` its snapshot would be taken before it locks
/// the target, and two replaces would both keep rows the other deleted), and the value formats of the source's
/// sessions.
const SESSION: &str = "SET search_path = pg_catalog; SET row_security = off; SET statement_timeout = 0; \
     SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET default_transaction_read_only = off; \
     SET default_transaction_isolation = 'read committed'; SET client_encoding = 'UTF8'; \
     SET standard_conforming_strings = on; SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'; \
     SET extra_float_digits = 3";

/// A driver error: retryable when the connection failed or the server may answer differently next time.
/// A failed connection to the warehouse, naming host and port: fatal when no retry can help (authentication, no
/// such database or host, a certificate that does not verify), else retryable.
fn connect_error(wh: &PgWarehouse, e: &tokio_postgres::Error, first: bool) -> WarehouseError {
    let at = crate::pgclient::endpoint(&wh.config);
    let cause = crate::pgclient::chain(e);
    match crate::pgclient::permanent_connect_error(e, first, &wh.password) {
        Some(p) => {
            let (hint, not_found) = match p {
                crate::pgclient::Permanent::Refused(h) => (h, false),
                crate::pgclient::Permanent::NotFound(h) => (h, true),
            };
            WarehouseError::Connect {
                context: String::new(),
                at,
                cause,
                hint,
                not_found,
            }
        }
        None => WarehouseError::Sql {
            detail: format!("connecting to the warehouse at {at}: {cause}"),
            retryable: true,
        },
    }
}

fn pg(e: tokio_postgres::Error) -> WarehouseError {
    // No server error: the connection broke, which a retry may mend.
    let retryable = e.code().is_none_or(crate::pgclient::transient);
    let detail = match e.as_db_error() {
        // An append of rows whose key the target holds already: the user's mode, not a fault to retry.
        Some(db) if *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => format!(
            "{} (SQLSTATE {}): a key of the run's rows is in the target already (an append: --mode merge updates \
             such rows), or twice in the run's rows (a key set for the table in pgshift.toml that is not unique)",
            db.message(),
            db.code().code()
        ),
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    WarehouseError::Sql { detail, retryable }
}

impl Warehouse for PgWarehouse {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn reach(&self) -> BoxFuture<'_, Result<(), WarehouseError>> {
        Box::pin(async move { self.open(true).await.map(drop) })
    }

    fn query(&self, sql: String) -> BoxFuture<'_, Result<Vec<Vec<Cell>>, WarehouseError>> {
        Box::pin(async move {
            let client = self.connect().await?;
            let rows = client.query(&sql, &[]).await.map_err(pg)?;
            rows.iter().map(cells).collect()
        })
    }

    /// Runs to the end whatever `until` asks: PostgreSQL has no statement to poll.
    fn submit<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<Submission, WarehouseError>> {
        Box::pin(async move {
            let mut client = self.connect().await?;
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
                .start()
                .await
                .map_err(pg)?;
            let mut timings = Vec::with_capacity(batch.steps.len());
            for (i, step) in batch.steps.into_iter().enumerate() {
                if let Some(f) = batch.on_step {
                    f(i);
                }
                let (started_at, t0) = (crate::contract::clock::unix_now(), std::time::Instant::now());
                run_step(self, &tx, step).await?;
                timings.push(Timing {
                    started_at,
                    seconds: t0.elapsed().as_secs_f64(),
                });
            }
            tx.commit().await.map_err(pg)?;
            Ok(Submission::Done(timings))
        })
    }
}

/// One step of a load transaction, inside `tx`.
async fn run_step(wh: &PgWarehouse, tx: &Transaction<'_>, step: Step<'_>) -> Result<(), WarehouseError> {
    match step {
        Step::Copy(job) => copy_into(wh, tx, &job).await,
        Step::Reconcile {
            table,
            staging,
            expected,
        } => {
            let q = format!(
                "SELECT count(*) FROM {}",
                sql::table(&staging).map_err(WarehouseError::Invalid)?
            );
            let staged: i64 = tx.query_one(&q, &[]).await.map_err(pg)?.get(0);
            if staged != expected as i64 {
                return Err(WarehouseError::Reconcile {
                    counted: if table == staging {
                        super::COUNTED_TARGET
                    } else {
                        super::COUNTED_STAGING
                    },
                    table,
                    staged,
                    expected,
                });
            }
            Ok(())
        }
        Step::Sql(s) => {
            tracing::debug!(sql = %s, "warehouse");
            tx.batch_execute(&s).await.map_err(|e| match super::guard_named(&s) {
                Some(why) if e.code() == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO) => {
                    WarehouseError::Sql {
                        detail: why.to_string(),
                        retryable: false,
                    }
                }
                _ => pg(e),
            })
        }
        Step::Written { table, sql, expected } => {
            tracing::debug!(sql = %sql, "warehouse");
            let written = tx.execute(&sql, &[]).await.map_err(pg)?;
            if written != expected {
                return Err(WarehouseError::Reconcile {
                    table,
                    staged: i64::try_from(written).unwrap_or(i64::MAX),
                    expected,
                    counted: super::COUNTED_WRITTEN,
                });
            }
            Ok(())
        }
    }
}

/// A row's values as cells: integers and text (what the loader's queries select); any other type is refused.
fn cells(row: &tokio_postgres::Row) -> Result<Vec<Cell>, WarehouseError> {
    use tokio_postgres::types::Type;
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            let cell = match *ty {
                Type::INT8 => row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int)),
                Type::INT4 => row.try_get::<_, Option<i32>>(i).map(|v| v.map(|n| Cell::Int(n.into()))),
                Type::INT2 => row.try_get::<_, Option<i16>>(i).map(|v| v.map(|n| Cell::Int(n.into()))),
                Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                    row.try_get::<_, Option<String>>(i).map(|v| v.map(Cell::Text))
                }
                _ => {
                    return Err(WarehouseError::Invalid(format!(
                        "warehouse query: column {} is of type {ty}; select integers or text",
                        row.columns()[i].name()
                    )))
                }
            };
            Ok(cell.map_err(pg)?.unwrap_or(Cell::Null))
        })
        .collect()
}

/// COPY streams at most into one staging table side by side.
const COPY_STREAMS: usize = 4;

/// Streams the job's Parquet parts into its staging table by binary `COPY FROM STDIN`: inside `tx` when one stream
/// suffices, else on up to [`COPY_STREAMS`] connections side by side, each committing its share. The staging table
/// was committed at set-up and is the run's own, so rows committed in it are visible to nothing else; the load
/// transaction then reconciles its count and swaps it in, and a failure anywhere leaves it for Cleanup to drop.
async fn copy_into(wh: &PgWarehouse, tx: &Transaction<'_>, job: &CopyJob<'_>) -> Result<(), WarehouseError> {
    let (staging, cols) = job.target()?;
    let sql = format!("COPY {staging} ({cols}) FROM STDIN (FORMAT binary)");
    // An earlier attempt's streams may have committed their shares before it died (a load retried, or resumed after
    // a kill): the COPY starts from an empty staging table, so that the reconcile counts this attempt's rows only.
    let empty = format!("TRUNCATE {staging}");
    let shares = shares(job.files, COPY_STREAMS);
    if shares.len() <= 1 {
        tx.batch_execute(&empty).await.map_err(pg)?;
        let sink = tx.copy_in::<_, Bytes>(&sql).await.map_err(pg)?;
        return stream_parts(wh, sink, job.stage, job.files.iter()).await;
    }
    // On a connection of its own, committed before the streams start (the load transaction holds no lock on the
    // staging table yet: its COPY comes first).
    wh.connect().await?.batch_execute(&empty).await.map_err(pg)?;
    let streams = shares.iter().map(|share| {
        let sql = &sql;
        async move {
            let client = wh.connect().await?;
            let sink = client.copy_in::<_, Bytes>(sql).await.map_err(pg)?;
            stream_parts(wh, sink, job.stage, share.iter().copied()).await
        }
    });
    futures_util::future::try_join_all(streams).await?;
    Ok(())
}

/// The files dealt into at most `n` shares of about equal bytes (largest first, each to the lightest share).
fn shares(files: &[StagedFile], n: usize) -> Vec<Vec<&StagedFile>> {
    let mut sorted: Vec<&StagedFile> = files.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.bytes));
    let mut out: Vec<(u64, Vec<&StagedFile>)> = vec![(0, Vec::new()); n.clamp(1, files.len().max(1))];
    for f in sorted {
        if let Some(lightest) = out.iter_mut().min_by_key(|(b, _)| *b) {
            lightest.0 += f.bytes;
            lightest.1.push(f);
        }
    }
    out.into_iter().map(|(_, s)| s).filter(|s| !s.is_empty()).collect()
}

/// One COPY stream: the header, every file's rows, the trailer. Each file is decoded and encoded on a blocking
/// thread, in 1 MiB messages through a short channel: a local part is read a row group at a time, never whole, and
/// at most [`COPY_STREAMS`] parts are decoded at once by the warehouse.
async fn stream_parts<'f>(
    wh: &PgWarehouse,
    sink: CopyInSink<Bytes>,
    stage: &dyn Stage,
    files: impl Iterator<Item = &'f StagedFile>,
) -> Result<(), WarehouseError> {
    pin_mut!(sink);
    let mut header = BytesMut::with_capacity(19);
    header.put_slice(b"PGCOPY\n\xff\r\n\0");
    header.put_i32(0);
    header.put_i32(0);
    sink.send(header.freeze()).await.map_err(pg)?;
    for f in files {
        let key = stage
            .key_of(&f.url)
            .ok_or_else(|| WarehouseError::Invalid(format!("{} is not on the stage", f.url)))?;
        let part = match stage.local_path(key) {
            Some(path) => Part::File(path),
            None => Part::Bytes(stage.get(key).await?),
        };
        let _permit = wh
            .decoders
            .acquire()
            .await
            .map_err(|e| WarehouseError::Invalid(format!("decoder permits: {e}")))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let url = f.url.clone();
        let encoder = tokio::task::spawn_blocking(move || encode_part(part, &tx).map_err(|e| format!("{url}: {e}")));
        while let Some(chunk) = rx.recv().await {
            sink.send(chunk).await.map_err(pg)?;
        }
        encoder
            .await
            .map_err(|e| WarehouseError::Invalid(format!("{}: encoder: {e}", f.url)))?
            .map_err(WarehouseError::Invalid)?;
    }
    sink.send(Bytes::from_static(&[0xff, 0xff])).await.map_err(pg)?;
    sink.finish().await.map_err(pg)?;
    Ok(())
}

/// A Parquet part: a local file (read as the reader needs it) or an object fetched whole.
enum Part {
    File(std::path::PathBuf),
    Bytes(Bytes),
}

/// Decodes a part and sends its rows in binary COPY format, 1 MiB at a time. Stops quietly when the receiver is gone
/// (the COPY failed: its error is the one reported).
fn encode_part(part: Part, tx: &tokio::sync::mpsc::Sender<Bytes>) -> Result<(), String> {
    let reader = match part {
        Part::File(path) => {
            let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| b.build())
        }
        Part::Bytes(b) => ParquetRecordBatchReaderBuilder::try_new(b).and_then(|b| b.build()),
    }
    .map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(1 << 20);
    for batch in reader {
        encode_batch(&batch.map_err(|e| e.to_string())?, &mut buf)?;
        if buf.len() >= 1 << 20 && tx.blocking_send(buf.split().freeze()).is_err() {
            return Ok(());
        }
    }
    if !buf.is_empty() {
        let _ = tx.blocking_send(buf.split().freeze());
    }
    Ok(())
}

/// Arrow arrays, downcast once per batch.
enum Col<'a> {
    Bool(&'a arrow_array::BooleanArray),
    I16(&'a arrow_array::Int16Array),
    I32(&'a arrow_array::Int32Array),
    I64(&'a arrow_array::Int64Array),
    F32(&'a arrow_array::Float32Array),
    F64(&'a arrow_array::Float64Array),
    Decimal(&'a arrow_array::Decimal128Array, i8),
    Text(&'a arrow_array::StringArray),
    Binary(&'a arrow_array::BinaryArray),
    Date(&'a arrow_array::Date32Array),
    Ts(&'a arrow_array::TimestampMicrosecondArray),
}

fn col(a: &ArrayRef) -> Result<Col<'_>, String> {
    Ok(match a.data_type() {
        DataType::Boolean => Col::Bool(a.as_boolean()),
        DataType::Int16 => Col::I16(a.as_primitive::<Int16Type>()),
        DataType::Int32 => Col::I32(a.as_primitive::<Int32Type>()),
        DataType::Int64 => Col::I64(a.as_primitive::<Int64Type>()),
        DataType::Float32 => Col::F32(a.as_primitive::<Float32Type>()),
        DataType::Float64 => Col::F64(a.as_primitive::<Float64Type>()),
        DataType::Decimal128(_, s) => Col::Decimal(a.as_primitive::<Decimal128Type>(), *s),
        DataType::Utf8 => Col::Text(a.as_string::<i32>()),
        DataType::Binary => Col::Binary(a.as_binary::<i32>()),
        DataType::Date32 => Col::Date(a.as_primitive::<Date32Type>()),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Col::Ts(a.as_primitive::<TimestampMicrosecondType>()),
        other => return Err(format!("no binary COPY encoding for Arrow {other}")),
    })
}

/// Appends the batch's rows in Postgres' binary COPY format.
pub(crate) fn encode_batch(batch: &RecordBatch, buf: &mut BytesMut) -> Result<(), String> {
    let cols = batch.columns().iter().map(col).collect::<Result<Vec<_>, _>>()?;
    let arrays: &[Arc<dyn Array>] = batch.columns();
    for row in 0..batch.num_rows() {
        buf.put_i16(cols.len() as i16);
        for (c, a) in cols.iter().zip(arrays) {
            if a.is_null(row) {
                buf.put_i32(-1);
                continue;
            }
            match c {
                Col::Bool(x) => {
                    buf.put_i32(1);
                    buf.put_u8(x.value(row) as u8);
                }
                Col::I16(x) => {
                    buf.put_i32(2);
                    buf.put_i16(x.value(row));
                }
                Col::I32(x) => {
                    buf.put_i32(4);
                    buf.put_i32(x.value(row));
                }
                Col::I64(x) => {
                    buf.put_i32(8);
                    buf.put_i64(x.value(row));
                }
                Col::F32(x) => {
                    buf.put_i32(4);
                    buf.put_f32(x.value(row));
                }
                Col::F64(x) => {
                    buf.put_i32(8);
                    buf.put_f64(x.value(row));
                }
                Col::Decimal(x, scale) => {
                    let n = numeric_binary(x.value(row), *scale);
                    buf.put_i32(n.len() as i32);
                    buf.put_slice(&n);
                }
                Col::Text(x) => {
                    let v = x.value(row).as_bytes();
                    buf.put_i32(v.len() as i32);
                    buf.put_slice(v);
                }
                Col::Binary(x) => {
                    let v = x.value(row);
                    buf.put_i32(v.len() as i32);
                    buf.put_slice(v);
                }
                Col::Date(x) => {
                    buf.put_i32(4);
                    buf.put_i32(x.value(row) - PG_EPOCH_DAYS);
                }
                Col::Ts(x) => {
                    buf.put_i32(8);
                    buf.put_i64(x.value(row) - PG_EPOCH_MICROS);
                }
            }
        }
    }
    Ok(())
}

/// Postgres' binary numeric for `v × 10^-scale`: base-10000 digit groups around the decimal point, leading and
/// trailing zero groups dropped, `dscale = scale`.
pub(crate) fn numeric_binary(v: i128, scale: i8) -> Vec<u8> {
    let scale = scale.max(0) as usize;
    let digits = v.unsigned_abs().to_string();
    let (int, frac) = if digits.len() > scale {
        let (i, f) = digits.split_at(digits.len() - scale);
        (i.to_string(), f.to_string())
    } else {
        (String::new(), format!("{digits:0>scale$}"))
    };
    let int = format!("{}{int}", "0".repeat((4 - int.len() % 4) % 4));
    let frac = format!("{frac}{}", "0".repeat((4 - frac.len() % 4) % 4));
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| c.iter().fold(0i16, |a, d| a * 10 + (d - b'0') as i16))
            .collect()
    };
    let int_groups = group(&int);
    let mut groups = int_groups.clone();
    groups.extend(group(&frac));
    let mut weight = int_groups.len() as i16 - 1;
    let mut start = 0;
    while start < groups.len() && groups[start] == 0 {
        start += 1;
        weight -= 1;
    }
    let mut end = groups.len();
    while end > start && groups[end - 1] == 0 {
        end -= 1;
    }
    let digits = &groups[start..end];
    if digits.is_empty() {
        weight = 0;
    }
    let mut out = Vec::with_capacity(8 + 2 * digits.len());
    out.extend((digits.len() as i16).to_be_bytes());
    out.extend(weight.to_be_bytes());
    out.extend((if v < 0 && !digits.is_empty() { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend((scale as u16).to_be_bytes());
    for d in digits {
        out.extend(d.to_be_bytes());
    }
    out
}

/// Reads a Parquet part as a load reads it back (decoded, then encoded as binary COPY rows): the bytes of COPY data
/// it makes, or the error. The fuzz targets' and the bounded fuzz test's entry: no input may panic it.
#[doc(hidden)]
pub fn read_part_bytes(part: Bytes) -> Result<usize, String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1 << 16);
    encode_part(Part::Bytes(part), &tx)?;
    drop(tx);
    let mut n = 0;
    while let Ok(chunk) = rx.try_recv() {
        n += chunk.len();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::pgtext::NumericWire;

    #[test]
    fn numerics_encode_like_postgres_and_decode_back() {
        for (v, scale, text) in [
            (12345i128, 2i8, "123.45"),
            (5, 2, "0.05"),
            (-5, 4, "-0.0005"),
            (0, 3, "0.000"),
            (100000000, 0, "100000000"),
            (-(10i128.pow(38) - 1), 10, "-9999999999999999999999999999.9999999999"),
            (1, 18, "0.000000000000000001"),
        ] {
            let b = numeric_binary(v, scale);
            let n = NumericWire::parse(&b).unwrap();
            assert_eq!(n.to_text(), text);
            assert_eq!(n.to_scaled_i128(38, scale).unwrap(), v);
        }
    }
}
