//! Errors at the extractor's boundary. Every variant maps to a stable error name ([`ExtractError::name`]) that the
//! state machine's Retry/Catch lists use: `Pipeline.Retryable.*` is worth another attempt, `Pipeline.Fatal.*` is not.

use crate::contract::code::Code;
use crate::contract::model::TableRef;
use crate::source::SourceError;
use crate::stage::StageError;

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

    #[error("parquet writer for {table}: {detail}")]
    Parquet { table: TableRef, detail: String },

    #[error(transparent)]
    Stage(#[from] StageError),
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
