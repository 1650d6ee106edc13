//! Errors at the extractor's boundary. Every variant maps to a stable error name ([`ExtractError::name`]) that the
//! state machine's Retry/Catch lists use: `Pipeline.Retryable.*` is worth another attempt, `Pipeline.Fatal.*` is not.

use crate::model::TableRef;
use crate::stage::StageError;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("invalid task: {0}")]
    InvalidTask(String),

    #[error("table {0} not found (or not visible to this user)")]
    TableNotFound(TableRef),

    #[error("column {column:?} not found in table {table}")]
    ColumnNotFound { table: TableRef, column: String },

    #[error(
        "column {column:?} of {table} has type {ty}, which pgshift does not map; override it with a per-column cast: \
         \"cast\": \"text\" (or \"json\") in the task, or --cast {column}=text on the command line"
    )]
    UnsupportedType {
        table: TableRef,
        column: String,
        ty: String,
    },

    #[error("key column {column:?} of {table} has type {ty}, which pgshift cannot range-partition on")]
    UnsupportedKeyType {
        table: TableRef,
        column: String,
        ty: String,
    },

    #[error("column {column:?} of {table} changed since planning: the task says {expected}, the source has {actual}")]
    SchemaChanged {
        table: TableRef,
        column: String,
        expected: String,
        actual: String,
    },

    #[error("permission denied reading {table}: {detail}")]
    PermissionDenied { table: TableRef, detail: String },

    #[error("value of {table}.{column} at key {key}: {reason}")]
    Value {
        table: TableRef,
        column: String,
        key: String,
        reason: String,
    },

    #[error("source unavailable: {0}")]
    SourceUnavailable(String),

    #[error("statement timeout after {secs} s extracting {table}")]
    Timeout { table: TableRef, secs: u64 },

    #[error("source error extracting {table}: {detail}")]
    Source {
        table: TableRef,
        detail: String,
        retryable: bool,
    },

    #[error("malformed COPY stream from {table}: {detail}")]
    Protocol { table: TableRef, detail: String },

    #[error("parquet writer for {table}: {detail}")]
    Parquet { table: TableRef, detail: String },

    #[error(transparent)]
    Stage(#[from] StageError),
}

impl ExtractError {
    /// The stable name the state machine matches on (`ErrorEquals`).
    pub fn name(&self) -> &'static str {
        match self {
            ExtractError::InvalidTask(_) => "Pipeline.Fatal.InvalidInput",
            ExtractError::TableNotFound(_) | ExtractError::ColumnNotFound { .. } => "Pipeline.Fatal.NotFound",
            ExtractError::UnsupportedType { .. } | ExtractError::UnsupportedKeyType { .. } => {
                "Pipeline.Fatal.UnsupportedType"
            }
            ExtractError::SchemaChanged { .. } => "Pipeline.Fatal.SchemaChanged",
            ExtractError::PermissionDenied { .. } => "Pipeline.Fatal.PermissionDenied",
            ExtractError::Value { .. } => "Pipeline.Fatal.BadValue",
            ExtractError::SourceUnavailable(_) => "Pipeline.Retryable.SourceUnavailable",
            ExtractError::Timeout { .. } => "Pipeline.Retryable.Timeout",
            ExtractError::Source { retryable: true, .. } => "Pipeline.Retryable.Source",
            ExtractError::Source { retryable: false, .. } => "Pipeline.Fatal.Source",
            ExtractError::Protocol { .. } => "Pipeline.Retryable.Protocol",
            ExtractError::Parquet { .. } => "Pipeline.Fatal.Internal",
            ExtractError::Stage(e) => e.name(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.name().starts_with("Pipeline.Retryable.")
    }

    /// Classifies a driver error met while extracting `table`.
    pub fn from_pg(table: &TableRef, statement_timeout_secs: u64, e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let Some(db) = e.as_db_error() else {
            // No server error: the connection broke (closed, reset, timed out).
            return ExtractError::SourceUnavailable(format!("{e} (while extracting {table})"));
        };
        let code = db.code();
        let detail = format!("{} (SQLSTATE {})", db.message(), code.code());
        if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            ExtractError::PermissionDenied {
                table: table.clone(),
                detail,
            }
        } else if *code == SqlState::QUERY_CANCELED {
            ExtractError::Timeout {
                table: table.clone(),
                secs: statement_timeout_secs,
            }
        } else if *code == SqlState::UNDEFINED_TABLE {
            ExtractError::TableNotFound(table.clone())
        } else {
            // Class 08 (connection), 40 (serialization/deadlock), 53 (resources), 57 (operator intervention:
            // shutdown, admin cancel) and 58 (system I/O) may pass on a retry; everything else will fail again.
            let class = &code.code()[..2];
            let retryable = matches!(class, "08" | "40" | "53" | "57" | "58");
            ExtractError::Source {
                table: table.clone(),
                detail,
                retryable,
            }
        }
    }
}

/// Every error name the extractor can report, for the test that checks them against the state machine.
pub const EXTRACT_ERROR_NAMES: &[&str] = &[
    "Pipeline.Fatal.InvalidInput",
    "Pipeline.Fatal.NotFound",
    "Pipeline.Fatal.UnsupportedType",
    "Pipeline.Fatal.SchemaChanged",
    "Pipeline.Fatal.PermissionDenied",
    "Pipeline.Fatal.BadValue",
    "Pipeline.Retryable.SourceUnavailable",
    "Pipeline.Retryable.Timeout",
    "Pipeline.Retryable.Source",
    "Pipeline.Fatal.Source",
    "Pipeline.Retryable.Protocol",
    "Pipeline.Fatal.Internal",
    "Pipeline.Retryable.Stage",
    "Pipeline.Fatal.Stage",
];
