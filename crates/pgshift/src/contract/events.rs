//! The events a run emits when it ends (`docs/events.md`: the documented contract, a test per event): to EventBridge
//! on AWS (source `pgshift`), to `<run>/events.jsonl` on the stage, and with `--events URL` to a file or an HTTP
//! endpoint. Every detail carries `version` (this shape's: 1), the stack and the run id.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The events' `source`.
pub const SOURCE: &str = "pgshift";
/// The shape's version, in every detail.
pub const VERSION: u32 = 1;

pub const RUN_SUCCEEDED: &str = "Run Succeeded";
pub const RUN_FAILED: &str = "Run Failed";
pub const TABLE_LOADED: &str = "Table Loaded";
pub const RUN_COST: &str = "Run Cost";

/// One event, in EventBridge's envelope terms: `source`, `detail-type`, `time` (RFC 3339) and the `detail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub source: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub time: String,
    pub detail: Value,
}

/// What every detail starts with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Common {
    pub version: u32,
    /// The CloudFormation stack (deployed), or `local`.
    pub stack: String,
    pub run_id: String,
    /// Where the run's records are: `<stage>/<run>/` holds the plan, the ledger and `report.html`.
    pub stage: String,
    pub report_url: String,
    /// The snapshot the run loaded (its identifier and time), when it ran from one.
    pub snapshot: Option<SnapshotRef>,
    /// The instant the run's data is from, RFC 3339: the snapshot's time, else the run's start.
    pub data_as_of: String,
    pub started_at: String,
    pub ended_at: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub identifier: String,
    pub time: String,
}

/// `Run Succeeded`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSucceeded {
    #[serde(flatten)]
    pub common: Common,
    pub tables: usize,
    pub rows: u64,
    pub parquet_bytes: u64,
    pub cost_dollars: f64,
}

/// `Run Failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFailed {
    #[serde(flatten)]
    pub common: Common,
    /// The error's stable name (`Pipeline.Fatal.*`, `Pipeline.Retryable.*`, `States.*`).
    pub error: String,
    pub message: String,
    /// Where the run stopped, in words (before its plan, extracting a range, loading a table).
    pub failed_at: String,
    /// The table it failed on, when it failed on one.
    pub table: Option<String>,
    /// What the warehouse holds now.
    pub warehouse: String,
    /// The command that goes on from here.
    pub resume: String,
    /// Whether the same command may pass as it is (a retryable error), or something must be fixed first.
    pub retryable: bool,
}

/// `Table Loaded`: one per table the run's load committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableLoaded {
    #[serde(flatten)]
    pub common: Common,
    /// `schema.table`, in the source and the warehouse alike.
    pub table: String,
    /// `full` (every run today), or `incremental`.
    pub load: String,
    /// `replace`, `append` or `merge`.
    pub mode: String,
    /// Rows the load wrote: inserted (a replace's or an append's every row), updated and deleted where the
    /// warehouse tells them apart (`null` where it does not).
    pub rows_inserted: Option<u64>,
    pub rows_updated: Option<u64>,
    pub rows_deleted: Option<u64>,
    /// Rows the target holds from this run (the reconciled count).
    pub rows: u64,
    pub parquet_bytes: u64,
    pub source_bytes: u64,
    /// Seconds of the table's load steps (set-up, COPY, reconcile, swap).
    pub load_seconds: f64,
    /// Committed by an earlier attempt of this run id (a resumed run).
    pub earlier_attempt: bool,
}

/// `Run Cost`: the run's bill, the same as `pgshift cost` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCostEvent {
    #[serde(flatten)]
    pub common: Common,
    pub status: String,
    pub total_dollars: f64,
    /// The price table: region and date.
    pub prices: String,
    pub items: Vec<CostLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostLine {
    pub table: Option<String>,
    pub item: String,
    pub quantity: f64,
    pub unit: String,
    pub unit_price: f64,
    pub dollars: f64,
    /// `actual` or `estimated`.
    pub basis: String,
}

impl Event {
    /// An event of `detail_type` at `time` with `detail`.
    pub fn new(detail_type: &str, time: &str, detail: &impl Serialize) -> Self {
        Event {
            source: SOURCE.into(),
            detail_type: detail_type.into(),
            time: time.into(),
            detail: serde_json::to_value(detail).unwrap_or(Value::Null),
        }
    }
}
