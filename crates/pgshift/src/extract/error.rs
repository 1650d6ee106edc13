//! Errors at the extractor's boundary. Every variant maps to a stable error name ([`ExtractError::name`]) that the
//! state machine's Retry/Catch lists use: `Pipeline.Retryable.*` is worth another attempt, `Pipeline.Fatal.*` is not.

use crate::contract::code::Code;
use crate::contract::model::TableRef;
use crate::source::SourceError;
use crate::stage::{StageError, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("invalid task: {0}")]
    InvalidTask(String),

    #[error("value of {table}.{column} at key {key}: {reason}")]
    Value {
        table: TableRef,
        column: String,
        key: String,
        reason: String,
    },

    #[error(transparent)]
    Source(#[from] SourceError),

    #[error("malformed COPY stream from {table}: {detail}")]
    Protocol { table: TableRef, detail: String },

    #[error("parquet writer for {table}: {source}")]
    Parquet {
        table: TableRef,
        #[source]
        source: ParquetFailure,
    },

    #[error(transparent)]
    Stage(#[from] StageError),
}

/// Why the range's Parquet files could not be written, its cause kept as the error's source.
#[derive(Debug, thiserror::Error)]
pub enum ParquetFailure {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("encoder thread: {0}")]
    EncoderThread(#[source] tokio::task::JoinError),
    #[error("uploader task: {0}")]
    UploaderTask(#[source] tokio::task::JoinError),
    #[error("result JSON: {0}")]
    ResultJson(#[source] serde_json::Error),
    #[error("the encoder stopped before the end of the stream")]
    EncoderStopped,
    #[error("decoded {decoded} rows but the files hold {in_files}")]
    RowCount { decoded: u64, in_files: u64 },
}

impl ExtractError {
    /// The stable name the state machine matches on (`ErrorEquals`).
    pub fn code(&self) -> Code {
        match self {
            ExtractError::InvalidTask(_) => Code::FatalInvalidInput,
            ExtractError::Value { .. } => Code::FatalBadValue,
            ExtractError::Source(e) => e.code(),
            ExtractError::Protocol { .. } => Code::RetryableProtocol,
            ExtractError::Parquet { .. } => Code::FatalInternal,
            ExtractError::Stage(e) => e.code(),
        }
    }

    /// The stable name of [`Self::code`].
    pub fn name(&self) -> &'static str {
        self.code().name()
    }

    pub fn is_retryable(&self) -> bool {
        self.name().starts_with("Pipeline.Retryable.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parquet_failure_keeps_its_cause_and_says_it() {
        let cause = parquet::errors::ParquetError::General("page too large".into());
        let e = ExtractError::Parquet {
            table: TableRef::new("sales", "orders"),
            source: ParquetFailure::Write(WriteError::Parquet(cause)),
        };
        assert_eq!(e.name(), "Pipeline.Fatal.Internal");
        let message = e.to_string();
        assert!(
            message.contains("sales") && message.contains("orders") && message.contains("page too large"),
            "{message}"
        );
        let source = std::error::Error::source(&e).expect("the cause is kept");
        assert!(source.downcast_ref::<ParquetFailure>().is_some());
        let stopped = ExtractError::Parquet {
            table: TableRef::new("sales", "orders"),
            source: WriteError::UploaderStopped.into(),
        };
        assert!(matches!(
            stopped,
            ExtractError::Parquet {
                source: ParquetFailure::Write(WriteError::UploaderStopped),
                ..
            }
        ));
    }
}
