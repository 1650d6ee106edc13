//! Errors at the extractor's boundary. Every variant maps to a stable error name ([`ExtractError::name`]) that the
//! state machine's Retry/Catch lists use: `Pipeline.Retryable.*` is worth another attempt, `Pipeline.Fatal.*` is not.

use crate::contract::model::TableRef;
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

/// Every error name a pgshift handler (planner, extractor, loader) can report: what the state machine's Retry and
/// Catch lists may name. A test checks each error enum's names against it.
pub const ERROR_NAMES: &[&str] = &[
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
    "Pipeline.Fatal.PartsMissing",
    "Pipeline.Fatal.Reconcile",
    "Pipeline.Retryable.Warehouse",
    "Pipeline.Fatal.Warehouse",
    "Pipeline.Fatal.RunExists",
    "Pipeline.Fatal.PlanMismatch",
    "Pipeline.Fatal.PartCorrupt",
    "Pipeline.Fatal.SchemaDrift",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadError;
    use crate::plan::PlanError;
    use crate::stage::StageError;

    #[test]
    fn every_reported_name_is_listed_and_retryability_follows_the_name() {
        let t = || TableRef::new("s", "t");
        let io = |kind| StageError::Io {
            location: "x".into(),
            source: std::io::Error::from(kind),
        };
        let extract = vec![
            ExtractError::InvalidTask(String::new()),
            ExtractError::TableNotFound(t()),
            ExtractError::ColumnNotFound {
                table: t(),
                column: String::new(),
            },
            ExtractError::UnsupportedType {
                table: t(),
                column: String::new(),
                ty: String::new(),
            },
            ExtractError::UnsupportedKeyType {
                table: t(),
                column: String::new(),
                ty: String::new(),
            },
            ExtractError::SchemaChanged {
                table: t(),
                column: String::new(),
                expected: String::new(),
                actual: String::new(),
            },
            ExtractError::PermissionDenied {
                table: t(),
                detail: String::new(),
            },
            ExtractError::Value {
                table: t(),
                column: String::new(),
                key: String::new(),
                reason: String::new(),
            },
            ExtractError::SourceUnavailable(String::new()),
            ExtractError::Timeout { table: t(), secs: 1 },
            ExtractError::Source {
                table: t(),
                detail: String::new(),
                retryable: true,
            },
            ExtractError::Source {
                table: t(),
                detail: String::new(),
                retryable: false,
            },
            ExtractError::Protocol {
                table: t(),
                detail: String::new(),
            },
            ExtractError::Parquet {
                table: t(),
                detail: String::new(),
            },
            ExtractError::Stage(io(std::io::ErrorKind::ConnectionReset)),
            ExtractError::Stage(io(std::io::ErrorKind::PermissionDenied)),
            ExtractError::Stage(StageError::Missing {
                location: String::new(),
            }),
            ExtractError::Stage(StageError::Remote {
                location: String::new(),
                detail: String::new(),
                retryable: true,
            }),
            ExtractError::Stage(StageError::BadUrl {
                url: String::new(),
                reason: String::new(),
            }),
        ];
        let plan = [
            PlanError::InvalidRequest(String::new()),
            PlanError::NoMatch(String::new()),
            PlanError::NullKey {
                table: t(),
                column: String::new(),
            },
            PlanError::RunExists {
                run_id: String::new(),
                detail: String::new(),
            },
        ];
        let load = [
            LoadError::InvalidRequest(String::new()),
            LoadError::PartsMissing(Vec::new()),
            LoadError::Reconcile {
                table: t(),
                staged: Some(0),
                expected: 1,
            },
            LoadError::TooLong {
                table: t(),
                column: String::new(),
                bytes: 1,
            },
            LoadError::Warehouse(crate::warehouse::WarehouseError::Sql {
                detail: String::new(),
                retryable: true,
            }),
            LoadError::Warehouse(crate::warehouse::WarehouseError::Sql {
                detail: String::new(),
                retryable: false,
            }),
            LoadError::PartCorrupt(Vec::new()),
            LoadError::PlanMismatch {
                plan_url: String::new(),
                problems: Vec::new(),
            },
            LoadError::SchemaDrift(Vec::new()),
            LoadError::Warehouse(crate::warehouse::WarehouseError::Invalid(String::new())),
            LoadError::Warehouse(crate::warehouse::WarehouseError::Reconcile {
                table: t(),
                staged: 0,
                expected: 1,
            }),
        ];
        let names: Vec<&str> = extract
            .iter()
            .map(ExtractError::name)
            .chain(plan.iter().map(PlanError::name))
            .chain(load.iter().map(LoadError::name))
            .collect();
        for n in &names {
            assert!(ERROR_NAMES.contains(n), "{n} is reported but not listed");
        }
        for listed in ERROR_NAMES {
            assert!(names.contains(listed), "{listed} is listed but never reported");
        }
        for e in &extract {
            assert_eq!(e.is_retryable(), e.name().starts_with("Pipeline.Retryable."));
        }
    }
}
