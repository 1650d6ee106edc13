//! The loader's errors, each with one stable name (`Pipeline.Retryable.*` or `Pipeline.Fatal.*`).

use crate::contract::code::{first_few, Code};
use crate::contract::model::TableRef;
use crate::stage::StageError;
use crate::warehouse::WarehouseError;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid load request: {0}")]
    InvalidRequest(String),
    #[error(
        "{} range(s) missing or incomplete on the stage, nothing loaded: {}; extract them first: pgshift run with the \
         run's --run-id and settings extracts what is missing and loads (pgshift extract --task \
         <stage>/<run>/tasks.json --index N extracts one)",
        .0.len(),
        first_few(.0, "; ")
    )]
    PartsMissing(Vec<String>),
    #[error("parts on the stage differ from what their extractors wrote, nothing loaded: {}", first_few(.0, "; "))]
    PartCorrupt(Vec<String>),
    #[error("{plan_url}: the plan and its results do not hold together, nothing loaded: {}", first_few(.problems, "; "))]
    PlanMismatch { plan_url: String, problems: Vec<String> },
    #[error("the source's columns differ from the existing target's, nothing loaded: {}", first_few(.0, "; "))]
    SchemaDrift(Vec<String>),
    #[error("{table}: staging holds {} rows but the parts hold {expected}; rolled back", staged.map_or("a different number of".to_string(), |n| n.to_string()))]
    Reconcile {
        table: TableRef,
        /// `None` when the check ran inside a warehouse batch that reports only that it failed.
        staged: Option<i64>,
        expected: u64,
    },
    #[error("{table}.{column}: values of {bytes} bytes exceed Redshift's {limit}, nothing loaded; {what}")]
    TooLong {
        table: TableRef,
        column: String,
        bytes: u64,
        /// The limit: `VARCHAR(65535)` or `VARBYTE(16777216)`.
        limit: String,
        /// What to do.
        what: &'static str,
    },
    #[error("{} still loading {hours:.1} h after the load started, too close to the execution's timeout: cancelled, nothing of them committed; load them in a run of their own or give the warehouse more capacity", first_few(.tables, ", "))]
    Deadline { tables: Vec<String>, hours: f64 },
    #[error(
        "{table} holds data from {} (the instant of its last load); this run's data is older, from {}: refused, \
         nothing of it loaded (pass --allow-older to load it anyway)",
        crate::contract::clock::rfc3339(*current), crate::contract::clock::rfc3339(*instant)
    )]
    OlderData {
        table: TableRef,
        instant: i64,
        current: i64,
    },
    #[error("rules or triggers on the target change what a load writes, and no count of the run's rows can see it; nothing loaded: {}; drop or disable them, or pass --allow-target-triggers to load anyway (what the target holds is then theirs)", first_few(.0, "; "))]
    TargetTriggers(Vec<String>),
    #[error(
        "the warehouse user {user:?} lacks privileges this run needs, nothing extracted: {}. As a superuser or the \
         objects' owner, run: {}",
        .missing.join("; "), .statements.join(" ")
    )]
    Grants {
        user: String,
        /// What is missing, one phrase each.
        missing: Vec<String>,
        /// The GRANT and ALTER TABLE … OWNER TO statements that give it.
        statements: Vec<String>,
    },
    #[error(
        "incremental targets are not what their last run left, nothing extracted or loaded yet: {}; their states are \
         set aside, and the run plans them again, in full (the Plan anew state)",
        first_few(.0, "; ")
    )]
    TargetChanged(Vec<String>),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error(transparent)]
    Stage(#[from] StageError),
}

impl LoadError {
    pub fn code(&self) -> Code {
        match self {
            LoadError::InvalidRequest(_) => Code::FatalInvalidInput,
            LoadError::PartsMissing(_) => Code::FatalPartsMissing,
            LoadError::PartCorrupt(_) => Code::FatalPartCorrupt,
            LoadError::PlanMismatch { .. } => Code::FatalPlanMismatch,
            LoadError::SchemaDrift(_) => Code::FatalSchemaDrift,
            LoadError::Reconcile { .. } => Code::FatalReconcile,
            LoadError::TooLong { .. } => Code::FatalBadValue,
            LoadError::Deadline { .. } => Code::FatalLoadTimeout,
            LoadError::OlderData { .. } => Code::FatalOlderData,
            LoadError::TargetTriggers(_) => Code::FatalTargetTriggers,
            LoadError::TargetChanged(_) => Code::FatalTargetChanged,
            LoadError::Grants { .. } => Code::FatalPermissionDenied,
            LoadError::Warehouse(e) => e.code(),
            LoadError::Stage(e) => e.code(),
        }
    }

    /// The stable name of [`Self::code`].
    pub fn name(&self) -> &'static str {
        self.code().name()
    }
}
