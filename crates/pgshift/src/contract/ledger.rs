//! The run ledger: one record per run on its stage (`<run>/ledger.json`), local runs too, holding what the run did
//! and the facts its cost is computed from. Each fact says where it came from: what a function measured of itself
//! in the runtime that bills it is *actual*; what is derived from the run's objects or assumed is *estimated*.

use serde::{Deserialize, Serialize};

use crate::contract::model::TableRef;

/// Where a figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Read from AWS or measured by the run itself where AWS bills it.
    Actual,
    /// Derived from the run's records, or a price or size assumed.
    Estimated,
}

/// One function invocation as Lambda bills it: its duration, the memory configured and the architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Billed {
    /// `planner`, `extractor` or `loader`.
    pub function: String,
    /// The handler's duration, measured by the function itself.
    pub seconds: f64,
    pub memory_mb: u32,
    /// `arm64` or `x86_64`.
    pub arch: String,
    /// `actual` when the memory was read from the Lambda runtime (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`,
    /// <https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime>);
    /// `estimated` off Lambda, where it is the memory the run assumes.
    pub basis: Basis,
}

impl Billed {
    /// This process's invocation of `function`, `seconds` long, with the memory of the Lambda runtime it runs in;
    /// off Lambda the memory is unknown (0) until [`Self::assuming`] fills it in.
    pub fn here(function: &str, seconds: f64) -> Self {
        let lambda = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
            .ok()
            .and_then(|m| m.parse::<u32>().ok());
        Self {
            function: function.to_string(),
            seconds,
            memory_mb: lambda.unwrap_or(0),
            arch: match std::env::consts::ARCH {
                "aarch64" => "arm64".into(),
                other => other.to_string(),
            },
            basis: if lambda.is_some() {
                Basis::Actual
            } else {
                Basis::Estimated
            },
        }
    }

    /// An invocation nothing recorded but its duration: estimated at `memory_mb`, on arm64 (the template's).
    pub fn estimated(function: &str, seconds: f64, memory_mb: u32) -> Self {
        Self {
            function: function.to_string(),
            seconds,
            memory_mb,
            arch: "arm64".into(),
            basis: Basis::Estimated,
        }
    }

    /// The invocation with `memory_mb` where its memory is unknown (recorded off Lambda): estimated then.
    pub fn assuming(self, memory_mb: u32) -> Self {
        match self.memory_mb {
            0 => Self {
                memory_mb,
                basis: Basis::Estimated,
                ..self
            },
            _ => self,
        }
    }

    /// Lambda bills the duration rounded up to the millisecond
    /// (<https://aws.amazon.com/lambda/pricing/>: "Duration is calculated … rounded up to the nearest 1 ms").
    pub fn billed_ms(&self) -> u64 {
        (self.seconds * 1000.0).ceil().max(1.0) as u64
    }

    pub fn gb_seconds(&self) -> f64 {
        self.billed_ms() as f64 / 1000.0 * f64::from(self.memory_mb) / 1024.0
    }
}

/// Requests a run made of its stage, by S3's price classes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRequests {
    /// PUT, COPY, POST, LIST class: PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
    /// ListObjectsV2.
    pub put_class: u64,
    /// GET, SELECT and all other requests: GetObject, HeadObject.
    pub get_class: u64,
}

/// One table of a run, as the ledger counts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerTable {
    pub table: TableRef,
    pub parts: usize,
    pub files: usize,
    pub rows: u64,
    pub source_bytes: u64,
    pub parquet_bytes: u64,
    /// Failed extraction attempts.
    pub retries: usize,
    /// Rows the warehouse committed; `None` unless its load committed.
    pub committed_rows: Option<u64>,
    /// Every extraction attempt of its ranges (the last successful one and those that failed).
    pub invocations: Vec<Billed>,
    pub stage_requests: StageRequests,
    /// `actual` when every attempt counted its requests (the extractors do), `estimated` from the objects otherwise.
    #[serde(default = "estimated")]
    pub stage_requests_basis: Basis,
}

fn estimated() -> Basis {
    Basis::Estimated
}

/// What started the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    Manual,
    Snapshot { identifier: String },
}

/// `<run>/ledger.json`: one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub run_id: String,
    pub plan_id: String,
    pub trigger: Trigger,
    /// Seconds since the Unix epoch.
    pub started_at: f64,
    pub ended_at: f64,
    /// `succeeded`, `failed` or `incomplete`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub tables: Vec<LedgerTable>,
    /// The planner's and loader's invocations (the extractors' are per table).
    pub invocations: Vec<Billed>,
    /// Step Functions state transitions of the run (the parent execution and every Map child): counted by the local
    /// interpreter (`actual` for what Step Functions would count), or estimated from the run's shape.
    pub transitions: u64,
    pub transitions_basis: Basis,
    /// Stage requests of the planner and loader (the extractors' are per table).
    pub stage_requests: StageRequests,
    /// Bytes the run keeps on the stage (parts, results, manifests, records) until its lifecycle rule expires them.
    pub stage_bytes: u64,
    /// The restored snapshot instance (snapshot runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<crate::contract::snapshot::RestoreRecord>,
    /// The warehouse the run loaded: `postgres`, `redshift` or `redshift-serverless`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    /// Seconds of the load's statements in the warehouse (from the load's timed steps).
    pub warehouse_seconds: f64,
    /// When the load deleted the run's parts (every table committed, `--keep-parts` not given): their storage is
    /// billed until then, not until the lifecycle rule expires them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts_deleted_at: Option<f64>,
}

/// The largest count a record may hold: PostgreSQL counts rows and bytes in int8.
const MAX_COUNT: u64 = i64::MAX as u64;

impl Ledger {
    pub fn rows(&self) -> u64 {
        self.tables.iter().fold(0u64, |a, t| a.saturating_add(t.rows))
    }

    pub fn source_bytes(&self) -> u64 {
        self.tables.iter().fold(0u64, |a, t| a.saturating_add(t.source_bytes))
    }

    /// What in the record cannot be true: seconds negative or not finite, an end before the start, counts past int8.
    /// A record with any is refused by name, never priced or printed as fact.
    pub fn impossible(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut secs = |what: &str, s: f64| {
            if !(s.is_finite() && s >= 0.0) {
                out.push(format!("{what}: {s} seconds"));
            }
        };
        secs("started_at", self.started_at);
        secs("ended_at", self.ended_at);
        secs("warehouse_seconds", self.warehouse_seconds);
        for b in &self.invocations {
            secs(&format!("{} invocation", b.function), b.seconds);
        }
        for t in &self.tables {
            for b in &t.invocations {
                secs(&format!("{}: {} invocation", t.table, b.function), b.seconds);
            }
        }
        if self.ended_at < self.started_at {
            out.push(format!(
                "ended_at {} before started_at {}",
                self.ended_at, self.started_at
            ));
        }
        let mut counts: Vec<(String, u64)> = vec![
            ("transitions".into(), self.transitions),
            ("stage_bytes".into(), self.stage_bytes),
            ("stage PUT requests".into(), self.stage_requests.put_class),
            ("stage GET requests".into(), self.stage_requests.get_class),
        ];
        for t in &self.tables {
            counts.extend([
                (format!("{}: rows", t.table), t.rows),
                (format!("{}: source_bytes", t.table), t.source_bytes),
                (format!("{}: parquet_bytes", t.table), t.parquet_bytes),
                (format!("{}: committed_rows", t.table), t.committed_rows.unwrap_or(0)),
                (format!("{}: stage PUT requests", t.table), t.stage_requests.put_class),
                (format!("{}: stage GET requests", t.table), t.stage_requests.get_class),
            ]);
        }
        out.extend(
            counts
                .into_iter()
                .filter(|(_, n)| *n > MAX_COUNT)
                .map(|(what, n)| format!("{what}: {n}, past any count PostgreSQL keeps")),
        );
        out
    }

    pub fn parts(&self) -> usize {
        self.tables.iter().map(|t| t.parts).sum()
    }

    pub fn retries(&self) -> usize {
        self.tables.iter().map(|t| t.retries).sum()
    }
}
