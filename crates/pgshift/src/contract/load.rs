//! How a run is loaded and where a load stands: the options a plan request carries to the Load state, the loader's
//! request and result (`<run>/load.json`), the progress the state machine carries between `start` and `check`, and
//! what Cleanup reports.

use serde::{Deserialize, Serialize};

use crate::contract::model::{ExtractResult, TableRef};

/// What a load may change in an existing target's columns.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaEvolution {
    /// Any difference between the run's columns and the target's fails the load, naming the columns.
    #[default]
    Refuse,
    /// Columns new in the source are added to the target (NULL in its existing rows) and types that widen losslessly
    /// (int2 → int4 → int8 → numeric wide enough, numeric to more digits on both sides of the point, real → double,
    /// longer varchar) are altered. Dropped columns and narrowing or incompatible types still fail.
    AddAndWiden,
}

#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    #[default]
    Replace,
    Append,
    Merge,
}

/// SQL statements per Redshift Data API `BatchExecuteStatement`
/// (<https://docs.aws.amazon.com/redshift-data/latest/APIReference/API_BatchExecuteStatement.html>).
pub const REDSHIFT_BATCH_STATEMENTS: u32 = 40;

impl LoadMode {
    /// The fewest statements a table adds to its load transaction: COPY, reconcile, LOCK, the guard against older
    /// data, the mode's DELETE (none to append), INSERT, the load log, DROP of the staging table and its row in the
    /// staging registry. A `replace` by rename may add its grants.
    pub fn statements_per_table(self) -> u32 {
        match self {
            LoadMode::Append => 8,
            LoadMode::Replace | LoadMode::Merge => 9,
        }
    }
}

/// What the planner must know of the warehouse to refuse, before anything is extracted, a run it cannot load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WarehouseLimits {
    /// The most statements one load transaction may hold (Redshift's Data API batch: 40).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_statements: Option<u32>,
    /// Identifiers are folded to lower case, quoted or not: `"Id"` and `"id"` are one name (Redshift, unless
    /// `enable_case_sensitive_identifier` is on:
    /// <https://docs.aws.amazon.com/redshift/latest/dg/r_enable_case_sensitive_identifier.html>).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub folds_case: bool,
}

impl WarehouseLimits {
    /// Amazon Redshift through the Data API.
    pub fn redshift() -> Self {
        Self {
            batch_statements: Some(REDSHIFT_BATCH_STATEMENTS),
            folds_case: true,
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

/// Refuses `atomic: run` for more tables than one transaction of the warehouse can hold (`limit` statements), before
/// anything is extracted; the error says what to change.
/// The one rule of a merge's key, asked by the planner (before anything is extracted), the loader (before any set-up)
/// and the swap: a merge matches rows by key, so a table without one is refused, saying what to do.
pub fn keyless_merge(mode: LoadMode, table: &TableRef, key: &[String]) -> Option<String> {
    (mode == LoadMode::Merge && key.is_empty()).then(|| {
        format!(
            "{table}: --mode merge matches rows by key, and {table} has no primary key: set its key in pgshift.toml \
             ([table.\"{table}\"] key = [\"column\", …], a column or columns unique in every row) and plan it again, or \
             load it with --mode replace or append"
        )
    })
}

pub fn check_batch(options: &LoadOptions, tables: usize, limit: Option<u32>) -> Result<(), String> {
    let (Atomicity::Run, Some(limit)) = (options.atomic, limit) else {
        return Ok(());
    };
    let per = options.mode.statements_per_table();
    let needed = per as usize * tables;
    if needed <= limit as usize {
        return Ok(());
    }
    Err(format!(
        "atomic: run loads all {tables} tables in one transaction of at least {needed} statements, and the warehouse \
         takes at most {limit} in one (the Redshift Data API's batch): load with --atomic table (each table all or \
         nothing), or at most {} tables per run",
        limit / per
    ))
}

#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Atomicity {
    /// Each table is swapped in its own transaction.
    #[default]
    Table,
    /// Every table of the run in one transaction.
    Run,
}

/// What to do with text longer than Redshift's 65,535-byte VARCHAR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongText {
    #[default]
    Fail,
    /// `TRUNCATECOLUMNS` in the Redshift COPY.
    Truncate,
}

/// How to load a run, as a plan request carries it to the Load state (every field has its default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadOptions {
    pub mode: LoadMode,
    pub atomic: Atomicity,
    pub long_text: LongText,
    /// Redshift: load json and jsonb columns into SUPER (COPY … SERIALIZETOJSON) instead of VARCHAR.
    pub json_as_super: bool,
    /// What a load may change in an existing target whose columns differ from the run's (default: nothing).
    pub schema_evolution: SchemaEvolution,
    /// Load transactions run side by side (each holds a warehouse connection or a Data API statement); default 8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Load data older than what the target holds: by default a load whose data is from an earlier instant than the
    /// target's last load (an older snapshot loaded after a newer one) is refused. Always serialized: the Load state
    /// passes it on by path.
    pub allow_older: bool,
    /// Check every value against this warehouse's limits as well as the configured one's: a local rehearsal on
    /// PostgreSQL (`--warehouse-dialect redshift`) fails where the real run on Redshift would, before anything loads.
    /// Always serialized (`null`: the warehouse's own limits only): the Load state passes it on by path.
    pub warehouse_dialect: Option<WarehouseDialect>,
    /// Load into a target that has rules or enabled triggers on INSERT, UPDATE or DELETE (`--allow-target-triggers`).
    /// Refused by default: they change what the load writes, and no count of the run's rows can see it. Allowed,
    /// the target's contents are its rules' and triggers' business, and the load's outcome says so.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_target_triggers: bool,
    /// Keep the Parquet parts once every table committed (`--keep-parts`); else they are deleted then. Always
    /// serialized: the Load state passes it on by path.
    pub keep_parts: bool,
    /// `soft`: a row whose key the source no longer holds stays in the target, marked by
    /// [`crate::contract::incremental::DELETED_AT_COLUMN`] (`--deletes soft`); `hard` (the default) deletes it.
    #[serde(skip_serializing_if = "crate::contract::incremental::Deletes::is_hard")]
    pub deletes: crate::contract::incremental::Deletes,
}

/// A warehouse whose value limits a load can apply on another (`--warehouse-dialect`).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarehouseDialect {
    /// PostgreSQL: no limit on a text's or a bytea's length beyond its own.
    Postgres,
    /// Amazon Redshift: VARCHAR(65535) and VARBYTE(16777216), in bytes.
    Redshift,
}

impl LoadOptions {
    /// Load transactions at once when unset.
    pub const DEFAULT_CONCURRENCY: u32 = 8;

    /// [`Self::concurrency`], or the default.
    pub fn concurrency(&self) -> usize {
        self.concurrency.unwrap_or(Self::DEFAULT_CONCURRENCY).max(1) as usize
    }
}

/// What the Load state asks: the plan, the extractors' results, and how to load (the plan request's
/// [`LoadOptions`], flattened: the JSON carries `mode`, `atomic`, … beside `plan_url`, and an unknown key is refused).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FlatLoadRequest")]
pub struct LoadRequest {
    /// `<stage>/<run>/plan.json`, as the planner's summary names it.
    pub plan_url: String,
    /// The extractors' results as the Map state hands them over; read back from the stage when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<ExtractResult>>,
    /// When the execution started (`$$.Execution.StartTime`) and its `TimeoutSeconds`: the load's checks end, and
    /// Cleanup runs, [`LoadRequest::CLEANUP_MARGIN_SECONDS`] before that timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_timeout_seconds: Option<u64>,
    #[serde(flatten)]
    pub options: LoadOptions,
}

impl LoadRequest {
    /// Time kept for Cleanup (cancel, drop, status) and the restore's teardown after the load gives up.
    pub const CLEANUP_MARGIN_SECONDS: f64 = 1800.0;

    /// The unix time after which the load gives up, when the execution's start and timeout are known.
    pub fn deadline(&self) -> Result<Option<f64>, String> {
        let (Some(at), Some(timeout)) = (&self.execution_started_at, self.execution_timeout_seconds) else {
            return Ok(None);
        };
        let start = super::clock::parse_rfc3339(at)
            .ok_or_else(|| format!("execution_started_at {at:?} is not an RFC 3339 time"))?;
        Ok(Some(start + timeout as f64 - Self::CLEANUP_MARGIN_SECONDS))
    }
}

/// A [`LoadRequest`] as it arrives. serde ignores `deny_unknown_fields` of a flattened struct, so the keys beside
/// `plan_url` and `results` are read as a map and then as [`LoadOptions`], which refuses a key it does not know.
#[derive(Deserialize)]
struct FlatLoadRequest {
    plan_url: String,
    #[serde(default)]
    results: Option<Vec<ExtractResult>>,
    #[serde(default)]
    execution_started_at: Option<String>,
    #[serde(default)]
    execution_timeout_seconds: Option<u64>,
    #[serde(flatten)]
    options: serde_json::Map<String, serde_json::Value>,
}

impl TryFrom<FlatLoadRequest> for LoadRequest {
    type Error = serde_json::Error;

    fn try_from(f: FlatLoadRequest) -> Result<Self, Self::Error> {
        Ok(LoadRequest {
            plan_url: f.plan_url,
            results: f.results,
            execution_started_at: f.execution_started_at,
            execution_timeout_seconds: f.execution_timeout_seconds,
            options: serde_json::from_value(serde_json::Value::Object(f.options))?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableLoad {
    pub table: TableRef,
    /// Rows the run's parts hold.
    pub rows: u64,
    pub files: usize,
    pub bytes: u64,
    pub manifest_url: String,
    /// `false` when the log says this plan already loaded the table (a retried load).
    pub loaded: bool,
    /// What the warehouse holds of this table's load: only `committed` and `already_loaded` changed the target.
    #[serde(default)]
    pub status: TableStatus,
    /// Rows the warehouse committed for this table (from the load log for an earlier attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_rows: Option<u64>,
    /// Why the table's load failed (`status: failed`), with the error's stable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When and how long each step of the table's load ran (set-up, COPY, reconcile, swap), as far as it got.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepTime>,
    /// How `replace` changed the target: `rename` (the staging table swapped in) or `rows` (DELETE + INSERT … SELECT,
    /// where a rename would lose something of the target: [`Self::swap_note`] says what).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_note: Option<String>,
    /// The load's set-up created the target (it did not exist): when the load does not commit, Cleanup drops it again
    /// if it is still empty and no run ever committed to it, so a failed first load leaves the warehouse as it was.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created_target: bool,
    /// Schema evolution applied to the existing target before its load transaction (`ALTER TABLE … ADD COLUMN`,
    /// `… ALTER COLUMN … TYPE`): committed on their own (Redshift alters a column's type outside a transaction block
    /// only), so they stay even when the load then fails; the report says so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evolved: Vec<String>,
    /// `ANALYZE … PREDICATE COLUMNS` was submitted after the table's commit (Redshift).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub analyzed: bool,
    /// The table's sync state was written after its commit (`--incremental diff`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_written: bool,
    /// What the row-by-row comparison of its ranges found (`--incremental diff`): `rows` counts a row per delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<crate::contract::incremental::DiffCounts>,
}

/// How a `replace` load changed its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapKind {
    /// The staging table became the target (`DROP TABLE` + `ALTER TABLE … RENAME`), owner, grants and key carried.
    Rename,
    /// The target's rows were replaced (`DELETE` + `INSERT … SELECT`).
    Rows,
}

/// One step of a table's load: when it started (seconds since the Unix epoch) and how long it ran.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepTime {
    pub step: StepKind,
    pub started_at: f64,
    pub seconds: f64,
}

impl TableLoad {
    /// A table's load before anything happened to it: pending, with the parts' rows, files and bytes.
    pub fn pending(table: TableRef, (rows, files, bytes): (u64, usize, u64), manifest_url: String) -> Self {
        TableLoad {
            table,
            rows,
            files,
            bytes,
            manifest_url,
            loaded: true,
            status: TableStatus::Pending,
            committed_rows: None,
            error: None,
            steps: Vec::new(),
            swap: None,
            swap_note: None,
            created_target: false,
            evolved: Vec::new(),
            analyzed: false,
            state_written: false,
            diff: None,
        }
    }

    /// Adds a step's time; several statements of one kind (the swap's) add up to one step.
    pub fn add_step(&mut self, step: StepKind, started_at: f64, seconds: f64) {
        match self.steps.iter_mut().find(|s| s.step == step) {
            Some(s) => {
                s.started_at = s.started_at.min(started_at);
                s.seconds += seconds;
            }
            None => self.steps.push(StepTime {
                step,
                started_at,
                seconds,
            }),
        }
    }
}

/// Who watches a load as it runs (the command line's live line): told as a table's step starts and as its load
/// ends.
pub trait LoadWatch: Send + Sync {
    fn step(&self, table: &TableRef, step: StepKind);
    fn done(&self, table: &TableRef, status: TableStatus);
}

/// Where one table's load stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableStatus {
    /// Submitted, or waiting for its transaction.
    #[default]
    Pending,
    /// This load's transaction committed.
    Committed,
    /// An earlier attempt of the same plan committed it (the load log says so); nothing was changed now.
    AlreadyLoaded,
    /// Its transaction failed and rolled back: the target is as it was.
    Failed,
}

impl TableStatus {
    /// The warehouse holds this plan's rows for the table.
    pub fn is_committed(self) -> bool {
        matches!(self, TableStatus::Committed | TableStatus::AlreadyLoaded)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    pub run_id: String,
    pub mode: LoadMode,
    pub tables: Vec<TableLoad>,
    /// When the load started (seconds since the Unix epoch).
    #[serde(default)]
    pub started_at: f64,
    pub seconds: f64,
    /// False while the warehouse still runs the load transactions.
    #[serde(default)]
    pub done: bool,
    /// The loader's invocations that wrote this record, as Lambda bills them (the start, and each check that
    /// recorded an outcome).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub billed: Vec<crate::contract::ledger::Billed>,
    /// The run's Parquet parts, deleted from the stage once every table committed (unless `keep_parts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts_deleted: Option<PartsDeleted>,
}

/// Parts deleted after a committed load: when (seconds since the Unix epoch), how many files and bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartsDeleted {
    pub at: f64,
    pub files: u64,
    pub bytes: u64,
}

/// A table the warehouse committed (`rows` of it), as its load log says, into a load's outcomes: marked committed
/// where they have it otherwise, added where they lack it.
pub fn mark_committed(tables: &mut Vec<TableLoad>, table: &TableRef, status: TableStatus, rows: Option<u64>) {
    match tables.iter_mut().find(|t| &t.table == table) {
        Some(t) if t.status.is_committed() => {}
        Some(t) => {
            t.status = status;
            t.committed_rows = rows;
            t.error = None;
        }
        None => tables.push(TableLoad {
            status,
            committed_rows: rows,
            ..TableLoad::pending(table.clone(), (rows.unwrap_or(0), 0, 0), String::new())
        }),
    }
}

impl LoadResult {
    /// The record of a load that wrote none of its own (what Cleanup and the run's record fill in from the load log).
    pub fn unrecorded(run_id: &str) -> Self {
        LoadResult {
            run_id: run_id.to_string(),
            mode: LoadMode::default(),
            tables: Vec::new(),
            started_at: 0.0,
            seconds: 0.0,
            done: false,
            billed: Vec::new(),
            parts_deleted: None,
        }
    }

    /// A table the warehouse committed, as its load log says, into the record ([`mark_committed`]).
    pub fn mark_committed(&mut self, table: &TableRef, status: TableStatus, rows: Option<u64>) {
        mark_committed(&mut self.tables, table, status, rows);
    }
}

/// What a step of a submitted transaction was: lets a later status check name the table and the kind of failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepLabel {
    pub table: TableRef,
    pub kind: StepKind,
    /// For a reconcile step: the rows the parts hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Target and staging tables made, schema evolution, the load log read (before the load transaction).
    Setup,
    Copy,
    Reconcile,
    Swap,
}

impl StepKind {
    pub fn label(self) -> &'static str {
        match self {
            StepKind::Setup => "set-up",
            StepKind::Copy => "COPY",
            StepKind::Reconcile => "reconcile",
            StepKind::Swap => "swap",
        }
    }
}

/// A transaction still running in the warehouse. Its steps are, in order, COPY and reconcile of each table, then
/// the swap statements: what [`PendingLoad::label`] reads back from the tables alone (the state stays small).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLoad {
    pub statement_id: String,
    pub tables: Vec<TableRef>,
    /// The rows the parts of each table hold.
    pub rows: Vec<u64>,
    /// The swap statements of each table, in order after the COPY and reconcile steps (absent: all are the first
    /// table's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swaps: Vec<usize>,
}

impl PendingLoad {
    /// What step `i` of the transaction was.
    pub fn label(&self, i: usize) -> StepLabel {
        let n = self.tables.len();
        let table = self.tables.get((i / 2).min(n.saturating_sub(1))).cloned();
        let table = table.unwrap_or_else(|| TableRef::new("", ""));
        match (i < 2 * n, i % 2) {
            (true, 0) => StepLabel {
                table,
                kind: StepKind::Copy,
                expected: None,
            },
            (true, _) => StepLabel {
                table,
                kind: StepKind::Reconcile,
                expected: self.rows.get(i / 2).copied(),
            },
            (false, _) => {
                // Swap statement j belongs to the table whose run of swap statements it falls in.
                let (mut j, mut owner) = (i - 2 * n, None);
                for (t, &k) in self.swaps.iter().enumerate() {
                    if j < k {
                        owner = Some(t);
                        break;
                    }
                    j -= k;
                }
                StepLabel {
                    table: owner
                        .and_then(|o| self.tables.get(o).cloned())
                        .or_else(|| self.tables.first().cloned())
                        .unwrap_or(table),
                    kind: StepKind::Swap,
                    expected: None,
                }
            }
        }
    }
}

/// A load in a few numbers (the per-table detail is in `<run>/load.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    pub run_id: String,
    pub tables: usize,
    /// Tables this run changed (the others were loaded by an earlier attempt of the same run).
    pub loaded: usize,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Where a load stands: what the state machine carries between the loader's `start` and its `check`s, waiting in a
/// Wait state instead of a Lambda while the warehouse works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadProgress {
    pub done: bool,
    pub plan_url: String,
    /// Seconds the state machine should wait before the next check.
    pub wait_seconds: u64,
    pub checks: u32,
    /// Unix time the load started, for the result's duration.
    pub started_at: f64,
    #[serde(default)]
    pub pending: Vec<PendingLoad>,
    /// Tables not set up yet: the next check sets them up and submits them as pending transactions end (at most
    /// [`LoadOptions::concurrency`] pending at once) and as its time allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued: Vec<TableRef>,
    /// How the load was asked to run, for the tables a check still sets up.
    #[serde(default)]
    pub options: LoadOptions,
    /// Unix time after which a check gives up on the transactions still running and fails as
    /// `Pipeline.Fatal.LoadTimeout`, so that Cleanup runs before the execution's own timeout (which runs no Catch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<f64>,
    pub summary: LoadSummary,
}

pub use super::loader::{CleanupRequest, CleanupResult, FinishRequest, LoaderInput, PreflightRequest, PreflightResult};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_input_is_one_tagged_enum_start_by_default() {
        let start = LoaderInput::from_json(serde_json::json!({"plan_url": "file:///s/r/plan.json"})).expect("start");
        assert!(
            matches!(start, LoaderInput::Start(LoadRequest { ref plan_url, .. }) if plan_url.ends_with("plan.json"))
        );
        let cleanup =
            LoaderInput::from_json(serde_json::json!({"action": "cleanup", "state": {"x": 1}})).expect("cleanup");
        assert!(matches!(cleanup, LoaderInput::Cleanup(_)));
        let e = LoaderInput::from_json(serde_json::json!({"action": "stop"})).expect_err("unknown action");
        assert!(
            e.to_string().contains("start") && e.to_string().contains("cleanup"),
            "{e}"
        );
        assert!(
            LoaderInput::from_json(serde_json::json!({"action": "check"})).is_err(),
            "check needs progress"
        );
    }

    #[test]
    fn each_step_of_a_pending_transaction_names_its_table_and_kind() {
        let a = TableRef::new("s", "a");
        let b = TableRef::new("s", "b");
        let p = PendingLoad {
            statement_id: "x".into(),
            tables: vec![a.clone(), b.clone()],
            rows: vec![10, 20],
            swaps: vec![3, 2],
        };
        let kinds: Vec<(TableRef, StepKind)> = (0..9).map(|i| (p.label(i).table, p.label(i).kind)).collect();
        use StepKind::*;
        assert_eq!(
            kinds,
            [
                (a.clone(), Copy),
                (a.clone(), Reconcile),
                (b.clone(), Copy),
                (b.clone(), Reconcile),
                (a.clone(), Swap),
                (a.clone(), Swap),
                (a.clone(), Swap),
                (b.clone(), Swap),
                (b.clone(), Swap),
            ]
        );
        assert_eq!(p.label(3).expected, Some(20));
        let mut t = TableLoad {
            status: TableStatus::Committed,
            committed_rows: Some(1),
            ..TableLoad::pending(a, (1, 1, 1), String::new())
        };
        t.add_step(Swap, 10.0, 1.0);
        t.add_step(Swap, 9.5, 0.5);
        assert_eq!(
            t.steps,
            [StepTime {
                step: Swap,
                started_at: 9.5,
                seconds: 1.5
            }],
            "a swap's statements add up"
        );
    }

    #[test]
    fn a_load_request_carries_its_options_flat_and_refuses_an_unknown_key() {
        let input = serde_json::json!({"plan_url": "p", "mode": "merge", "atomic": "run", "json_as_super": true});
        let req: LoadRequest = serde_json::from_value(input.clone()).expect("flat options");
        assert_eq!(req.options.mode, LoadMode::Merge);
        assert_eq!(req.options.atomic, Atomicity::Run);
        assert!(req.options.json_as_super);
        assert_eq!(req.options.schema_evolution, SchemaEvolution::Refuse);
        let back = serde_json::to_value(&req).expect("serialize");
        assert_eq!(back["mode"], "merge", "{back}");
        assert!(back.get("options").is_none(), "{back}");
        let e = serde_json::from_value::<LoadRequest>(serde_json::json!({"plan_url": "p", "mdoe": "merge"}))
            .expect_err("a misspelt option is refused");
        assert!(e.to_string().contains("mdoe"), "{e}");
        let e = LoaderInput::from_json(serde_json::json!({"plan_url": "p", "atomic": "all"})).expect_err("bad value");
        assert!(e.to_string().contains("all"), "{e}");
    }
}
