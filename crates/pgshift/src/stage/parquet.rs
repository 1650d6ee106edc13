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
            .map_err(|_| std::io::Error::other(UploaderStopped))
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

/// What the sink's writes fail with when the uploader's channel is closed: found again, by its type, inside the
/// Parquet error that carries it.
#[derive(Debug, thiserror::Error)]
#[error("the uploader stopped")]
struct UploaderStopped;

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

/// Why the Parquet writer stopped.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The uploader stopped (its own error says why).
    #[error("the uploader stopped")]
    UploaderStopped,
    /// The writer's settings (a compression level out of range).
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
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
            props: writer_properties(settings).map_err(WriteError::Settings)?,
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
                .map_err(WriteError::Parquet)?;
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
    if stopped_uploader(&e) {
        WriteError::UploaderStopped
    } else {
        WriteError::Parquet(e)
    }
}

/// Whether the error, or any error in its chain, is the sink's [`UploaderStopped`] (inside the `io::Error` it
/// travels in).
fn stopped_uploader(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        let inner = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        if e.is::<UploaderStopped>() || inner.is_some_and(|i| i.is::<UploaderStopped>()) {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::errors::ParquetError;

    #[test]
    fn a_write_into_a_closed_channel_is_the_uploader_stopping_by_its_type() {
        let closed = ParquetError::from(std::io::Error::other(UploaderStopped));
        assert!(matches!(parquet_error(closed), WriteError::UploaderStopped));
        // Its words in another error's message are not it.
        let other = ParquetError::General("the uploader stopped".into());
        let e = parquet_error(other);
        assert!(matches!(e, WriteError::Parquet(_)), "{e:?}");
        assert!(
            std::error::Error::source(&e).is_none(),
            "transparent: the Parquet error's own source"
        );
    }

    /// Bytes past the sink's chunk size, into a channel whose uploader is gone: the Parquet writer's own error,
    /// wrapping the sink's, is the uploader stopping.
    #[test]
    fn a_parquet_write_after_the_uploader_stopped_says_so() {
        let (tx, rx) = mpsc::channel(16);
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "b",
            arrow_schema::DataType::Binary,
            false,
        )]));
        let settings = WriterSettings {
            compression: Compression::Snappy,
            ..Default::default()
        };
        let mut writer = RollingWriter::new(tx, schema.clone(), &settings, "t/part".into()).expect("writer");
        let mut x = 0x2545_f491_u32;
        let values: Vec<Vec<u8>> = (0..12)
            .map(|_| {
                (0..1024 * 1024)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect()
            })
            .collect();
        let column = arrow_array::BinaryArray::from_vec(values.iter().map(Vec::as_slice).collect());
        let batch = RecordBatch::try_new(schema, vec![Arc::new(column)]).expect("batch");
        // The file started while the uploader was there; its bytes reach the sink only as the file closes.
        writer.write(&batch.slice(0, 1)).expect("buffered");
        drop(rx);
        let e = writer
            .write(&batch)
            .and_then(|()| writer.finish())
            .expect_err("nobody uploads");
        assert!(matches!(e, WriteError::UploaderStopped), "{e:?}");
    }
}
