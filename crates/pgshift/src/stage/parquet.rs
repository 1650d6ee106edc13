//! Arrow record batches → rolling Parquet files on the stage.
//!
//! One [`writer_properties`] builder for every file pgshift writes. Row groups are flushed by encoded bytes
//! (`row_group_bytes`), so memory stays bounded whatever the row width; a file is closed and the next one started
//! when it reaches `target_file_bytes`. The arrow-rs `AsyncArrowWriter` way: the encoder ([`RollingWriter`], on a
//! blocking thread) only encodes and hands chunks over a bounded channel; one async [`upload`] task owns the stage
//! objects, writes the chunks as they come, and makes an object visible only when its footer is written.

use std::io::Write;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use tokio::sync::mpsc;

use crate::contract::model::{Compression, StagedFile, WriterSettings};
use crate::stage::{ObjectWriter, Stage, StageError};

/// Bytes handed to the stage at a time (S3 multipart parts must be ≥ 5 MiB, except the last).
pub(crate) const STAGE_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// The writer properties of every Parquet file pgshift writes.
pub(crate) fn writer_properties(settings: &WriterSettings) -> Result<WriterProperties, String> {
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

/// What the encoder hands the uploader: a file begins, its encoded bytes in chunks, the file is complete. A channel
/// closed before `Finish` discards the file in progress (the encoder stopped: nothing of it is to be published).
#[derive(Debug)]
pub(crate) enum Upload {
    Start { key: String },
    Bytes(Bytes),
    Finish { rows: u64 },
}

/// Chunks of encoded bytes in flight between the encoder and the uploader (each [`STAGE_CHUNK_BYTES`]).
pub(crate) const CHUNKS_IN_FLIGHT: usize = 1;

/// The uploader: owns the stage objects, writes the chunks as they come, and publishes each file when it is complete.
/// Every failure discards the object in progress before it is returned; files already complete stay (a retry
/// overwrites them by name).
pub(crate) async fn upload(
    stage: Arc<dyn Stage>,
    mut rx: mpsc::Receiver<Upload>,
) -> Result<Vec<StagedFile>, StageError> {
    let mut files = Vec::new();
    let mut current: Option<Box<dyn ObjectWriter>> = None;
    while let Some(msg) = rx.recv().await {
        match msg {
            Upload::Start { key } => {
                discard(current.take()).await;
                current = Some(stage.create(&key).await?);
            }
            Upload::Bytes(chunk) => {
                let Some(object) = current.as_mut() else { continue };
                if let Err(e) = object.write(chunk).await {
                    discard(current.take()).await;
                    return Err(e);
                }
            }
            Upload::Finish { rows } => {
                let Some(object) = current.take() else { continue };
                let done = object.finish().await?;
                tracing::debug!(url = %done.url, rows, bytes = done.bytes, "file staged");
                files.push(StagedFile {
                    url: done.url,
                    rows,
                    bytes: done.bytes,
                    crc32: Some(done.crc32),
                });
            }
        }
    }
    discard(current).await;
    Ok(files)
}

async fn discard(object: Option<Box<dyn ObjectWriter>>) {
    if let Some(o) = object {
        if let Err(e) = o.abort().await {
            tracing::warn!(error = %e, "could not discard a partial file");
        }
    }
}

/// `std::io::Write` into the uploader's channel: encoded bytes buffered and handed over in chunks.
struct ChannelSink {
    tx: mpsc::Sender<Upload>,
    buf: Vec<u8>,
}

impl ChannelSink {
    fn push(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(STAGE_CHUNK_BYTES)));
        self.tx
            .blocking_send(Upload::Bytes(chunk))
            .map_err(|_| std::io::Error::other(UPLOADER_STOPPED))
    }
}

impl Write for ChannelSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= STAGE_CHUNK_BYTES {
            self.push()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const UPLOADER_STOPPED: &str = "the uploader stopped";

/// Encodes a stream of batches into files `<prefix>-000.parquet`, `<prefix>-001.parquet`, …, handed to the uploader
/// as they are produced. Synchronous (it runs on the encoder's blocking thread); it never touches the stage itself.
pub(crate) struct RollingWriter {
    tx: mpsc::Sender<Upload>,
    schema: SchemaRef,
    props: WriterProperties,
    settings: WriterSettings,
    key_prefix: String,
    current: Option<(ArrowWriter<ChannelSink>, u64)>,
    started: usize,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// The uploader stopped (its own error says why).
    #[error("{UPLOADER_STOPPED}")]
    UploaderStopped,
    #[error("{0}")]
    Parquet(String),
}

impl RollingWriter {
    pub(crate) fn new(
        tx: mpsc::Sender<Upload>,
        schema: SchemaRef,
        settings: &WriterSettings,
        key_prefix: String,
    ) -> Result<Self, WriteError> {
        Ok(Self {
            tx,
            schema,
            props: writer_properties(settings).map_err(WriteError::Parquet)?,
            settings: settings.clone(),
            key_prefix,
            current: None,
            started: 0,
        })
    }

    fn send(&self, msg: Upload) -> Result<(), WriteError> {
        self.tx.blocking_send(msg).map_err(|_| WriteError::UploaderStopped)
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        if self.current.is_none() {
            let key = format!("{}-{:03}.parquet", self.key_prefix, self.started);
            self.started += 1;
            self.send(Upload::Start { key })?;
            let sink = ChannelSink {
                tx: self.tx.clone(),
                buf: Vec::with_capacity(STAGE_CHUNK_BYTES),
            };
            let writer = ArrowWriter::try_new(sink, self.schema.clone(), Some(self.props.clone()))
                .map_err(|e| WriteError::Parquet(e.to_string()))?;
            self.current = Some((writer, 0));
        }
        let Some((writer, rows)) = self.current.as_mut() else {
            unreachable!("opened above")
        };
        writer.write(batch).map_err(parquet_error)?;
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
        // The footer goes into the sink, the last bytes to the uploader, then the file is complete.
        writer.finish().map_err(parquet_error)?;
        writer.inner_mut().push().map_err(|_| WriteError::UploaderStopped)?;
        self.send(Upload::Finish { rows })
    }

    /// Closes the last file: the uploader publishes it.
    pub(crate) fn finish(mut self) -> Result<(), WriteError> {
        self.close_current()
    }
}

/// A Parquet error; one from writing into the channel means the uploader stopped.
fn parquet_error(e: parquet::errors::ParquetError) -> WriteError {
    if e.to_string().contains(UPLOADER_STOPPED) {
        WriteError::UploaderStopped
    } else {
        WriteError::Parquet(e.to_string())
    }
}
