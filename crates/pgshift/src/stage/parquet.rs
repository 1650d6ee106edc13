//! Arrow record batches → rolling Parquet files on the stage.
//!
//! One [`writer_properties`] builder for every file pgshift writes. Row groups are flushed by encoded bytes
//! (`row_group_bytes`), so memory stays bounded whatever the row width; a file is closed and the next one started
//! when it reaches `target_file_bytes`. Encoded bytes stream to the stage in chunks as they are produced; the object
//! becomes visible only when its footer is written.

use std::io::Write;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use tokio::runtime::Handle;

use crate::contract::model::{Compression, StagedFile, WriterSettings};
use crate::stage::{ObjectWriter, Stage, StageError};

/// Bytes handed to the stage at a time (S3 multipart parts must be ≥ 5 MiB, except the last).
pub const STAGE_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// The writer properties of every Parquet file pgshift writes.
pub fn writer_properties(settings: &WriterSettings) -> Result<WriterProperties, String> {
    let compression = match settings.compression {
        Compression::Zstd { level } => {
            PqCompression::ZSTD(ZstdLevel::try_new(level).map_err(|e| format!("zstd level {level}: {e}"))?)
        }
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::None => PqCompression::UNCOMPRESSED,
    };
    // Dictionary encoding only where the planner saw few distinct values: on high-cardinality columns it costs CPU
    // and memory and makes zstd'd files larger (measured: docs/bench-extract-*.txt).
    let mut builder = WriterProperties::builder().set_dictionary_enabled(false);
    for column in &settings.dictionary_columns {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column.as_str()), true);
    }
    Ok(builder
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(compression)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        // Row groups are bounded by their estimated encoded bytes, not by rows: memory stays flat whatever the width.
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(Some(settings.row_group_bytes.max(1) as usize))
        .set_created_by(format!("pgshift version {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// `std::io::Write` over a stage object: buffers encoded bytes and hands them to the stage in chunks, from a
/// blocking thread, through the runtime handle.
struct StageSink {
    handle: Handle,
    object: Option<Box<dyn ObjectWriter>>,
    buf: Vec<u8>,
    written: u64,
    /// The stage error behind a failed write, kept so the caller can classify it (retryable or not).
    failed: Option<StageError>,
}

impl StageSink {
    fn push(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(STAGE_CHUNK_BYTES)));
        let object = self
            .object
            .as_mut()
            .ok_or_else(|| std::io::Error::other("object already closed"))?;
        self.handle.block_on(object.write(chunk)).map_err(|e| {
            let io = std::io::Error::other(e.to_string());
            self.failed = Some(e);
            io
        })
    }
}

impl Write for StageSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= STAGE_CHUNK_BYTES {
            self.push()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a stream of batches into files `<prefix>-000.parquet`, `<prefix>-001.parquet`, … on the stage.
pub struct RollingWriter {
    stage: Arc<dyn Stage>,
    handle: Handle,
    schema: SchemaRef,
    props: WriterProperties,
    settings: WriterSettings,
    key_prefix: String,
    current: Option<(ArrowWriter<StageSink>, u64)>,
    pub files: Vec<StagedFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("{0}")]
    Parquet(String),
}

impl RollingWriter {
    pub fn new(
        stage: Arc<dyn Stage>,
        handle: Handle,
        schema: SchemaRef,
        settings: &WriterSettings,
        key_prefix: String,
    ) -> Result<Self, WriteError> {
        Ok(Self {
            stage,
            handle,
            schema,
            props: writer_properties(settings).map_err(WriteError::Parquet)?,
            settings: settings.clone(),
            key_prefix,
            current: None,
            files: Vec::new(),
        })
    }

    fn key(&self, index: usize) -> String {
        format!("{}-{index:03}.parquet", self.key_prefix)
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        if self.current.is_none() {
            let key = self.key(self.files.len());
            let object = self.handle.block_on(self.stage.create(&key))?;
            let sink = StageSink {
                handle: self.handle.clone(),
                object: Some(object),
                buf: Vec::with_capacity(STAGE_CHUNK_BYTES),
                written: 0,
                failed: None,
            };
            let writer = ArrowWriter::try_new(sink, self.schema.clone(), Some(self.props.clone()))
                .map_err(|e| WriteError::Parquet(e.to_string()))?;
            self.current = Some((writer, 0));
        }
        let Some((writer, rows)) = self.current.as_mut() else {
            unreachable!("opened above")
        };
        if let Err(e) = writer.write(batch) {
            return Err(classify(writer.inner_mut(), e));
        }
        *rows += batch.num_rows() as u64;
        if writer.bytes_written() as u64 + writer.in_progress_size() as u64 >= self.settings.target_file_bytes {
            self.close_current()?;
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), WriteError> {
        let Some((mut writer, rows)) = self.current.take() else {
            return Ok(());
        };
        // The footer goes into the sink, then the last bytes to the stage. `finish` keeps the writer in hand, so
        // every failure below discards the object here, synchronously, before the error is returned.
        let written = match writer.finish() {
            Ok(_) => writer
                .inner_mut()
                .push()
                .map_err(|e| failure(writer.inner_mut(), e.to_string())),
            Err(e) => Err(failure(writer.inner_mut(), e.to_string())),
        };
        let sink = writer.inner_mut();
        let Some(object) = sink.object.take() else {
            return Err(WriteError::Parquet("object already closed".into()));
        };
        if let Err(e) = written {
            if let Err(abort) = self.handle.block_on(object.abort()) {
                tracing::warn!(error = %abort, "could not discard a partial file");
            }
            return Err(e);
        }
        let written = sink.written;
        let done = self.handle.block_on(object.finish())?;
        debug_assert_eq!(done.bytes, written);
        tracing::debug!(url = %done.url, rows, bytes = done.bytes, "file staged");
        self.files.push(StagedFile {
            url: done.url,
            rows,
            bytes: done.bytes,
            crc32: Some(done.crc32),
        });
        Ok(())
    }

    /// Closes the last file and returns every file written.
    pub fn finish(mut self) -> Result<Vec<StagedFile>, WriteError> {
        self.close_current()?;
        Ok(std::mem::take(&mut self.files))
    }

    /// Discards the file in progress (files already finished stay: a retry overwrites them by name).
    pub fn abort(mut self) {
        if let Some((mut writer, _)) = self.current.take() {
            // Take the object out of the sink before the writer is dropped, and discard it synchronously.
            if let Some(object) = writer.inner_mut().object.take() {
                if let Err(e) = self.handle.block_on(object.abort()) {
                    tracing::warn!(error = %e, "could not discard a partial file");
                }
            }
        }
    }
}

/// A Parquet error from writing into `sink`: the stage error behind it when there is one.
fn classify(sink: &mut StageSink, e: parquet::errors::ParquetError) -> WriteError {
    failure(sink, e.to_string())
}

/// The stage error behind a failed write into `sink`, else `detail` as a Parquet error.
fn failure(sink: &mut StageSink, detail: String) -> WriteError {
    match sink.failed.take() {
        Some(stage) => WriteError::Stage(stage),
        None => WriteError::Parquet(detail),
    }
}

impl Drop for StageSink {
    fn drop(&mut self) {
        // A sink dropped with its object still open (an error inside the Parquet writer) discards the object.
        if let Some(object) = self.object.take() {
            let handle = self.handle.clone();
            handle.spawn(async move {
                if let Err(e) = object.abort().await {
                    tracing::warn!(error = %e, "could not discard a partial file");
                }
            });
        }
    }
}
