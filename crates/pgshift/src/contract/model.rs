//! The JSON contract between the states of the pipeline: what the planner hands an extractor (`ExtractTask`) and
//! what the extractor hands the loader (`ExtractResult`). Every field is plain serde; fixtures under
//! `tests/fixtures/` round-trip through these types.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::contract::types::{Cast, Mapping};

/// A table in the source database. Names are stored unquoted, exactly as in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRef {
    pub schema: String,
    pub name: String,
}

impl TableRef {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// Parses `schema.name` (or `name`, meaning `public.name`). Double quotes allow dots inside a part:
    /// `"my.schema"."my.table"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts = split_qualified(s)?;
        match parts.as_slice() {
            [name] => Ok(Self::new("public", name.clone())),
            [schema, name] => Ok(Self::new(schema.clone(), name.clone())),
            _ => Err(format!("table name {s:?} has more than two parts; use schema.table")),
        }
    }
}

fn split_qualified(s: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if cur.is_empty() => {
                quoted = true;
                was_quoted = true;
            }
            (true, '"') => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                }
            }
            (false, '.') => {
                if cur.is_empty() {
                    return Err(format!("table name {s:?} has an empty part"));
                }
                parts.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            (false, c) if was_quoted => {
                return Err(format!("table name {s:?}: unexpected {c:?} after a quoted part"));
            }
            (_, c) => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("table name {s:?} has an unterminated quote"));
    }
    if cur.is_empty() {
        return Err(format!("table name {s:?} has an empty part"));
    }
    parts.push(cur);
    Ok(parts)
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A Postgres type as the catalog names it. For a domain, `oid`/`name`/`typmod` describe the base type the domain
/// resolves to, and `declared` keeps the domain's own name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgType {
    /// `format_type()` of the base type, e.g. `numeric(12,2)`, `character varying(16)`, `text[]`.
    pub name: String,
    pub oid: u32,
    /// Type modifier (`atttypmod`), -1 when none.
    pub typmod: i32,
    /// The declared type when it differs from the base (a domain), for messages and drift checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<String>,
}

/// One column of the extraction, in output (Parquet) order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub pg_type: PgType,
    #[serde(default = "yes")]
    pub nullable: bool,
    /// A cast applied in the SELECT list before the value reaches the wire (the column is never a key predicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cast: Option<Cast>,
    /// How the wire value becomes an Arrow value.
    pub mapping: Mapping,
}

fn yes() -> bool {
    true
}

/// The Postgres types a key column may have. Their ordering is the one the primary-key index serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    Int2,
    Int4,
    Int8,
    Numeric,
    Text,
    Varchar,
    Bpchar,
    Uuid,
    Date,
    Timestamp,
    Timestamptz,
}

impl KeyType {
    /// The SQL type name used in the literal cast. Fixed strings: never user input.
    pub fn sql_name(self) -> &'static str {
        match self {
            KeyType::Int2 => "int2",
            KeyType::Int4 => "int4",
            KeyType::Int8 => "int8",
            KeyType::Numeric => "numeric",
            KeyType::Text => "text",
            KeyType::Varchar => "varchar",
            KeyType::Bpchar => "bpchar",
            KeyType::Uuid => "uuid",
            KeyType::Date => "date",
            KeyType::Timestamp => "timestamp",
            KeyType::Timestamptz => "timestamptz",
        }
    }

    /// The key type for a base type oid, if pgshift can range-partition on it.
    pub fn from_oid(oid: u32) -> Option<Self> {
        use crate::contract::types::oid;
        Some(match oid {
            oid::INT2 => KeyType::Int2,
            oid::INT4 => KeyType::Int4,
            oid::INT8 => KeyType::Int8,
            oid::NUMERIC => KeyType::Numeric,
            oid::TEXT => KeyType::Text,
            oid::VARCHAR => KeyType::Varchar,
            oid::BPCHAR => KeyType::Bpchar,
            oid::UUID => KeyType::Uuid,
            oid::DATE => KeyType::Date,
            oid::TIMESTAMP => KeyType::Timestamp,
            oid::TIMESTAMPTZ => KeyType::Timestamptz,
            _ => return None,
        })
    }
}

/// One component of a key bound: its type and its value in the type's Postgres text input form
/// (`"42"`, `"2024-01-31"`, `"2024-01-31 12:00:00.5+00"`, `"0b7e…"`, any UTF-8 text). The text form round-trips
/// exactly for every key type (int8 beyond 2^53 included, which JSON numbers would not).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(rename = "type")]
    pub ty: KeyType,
    pub value: String,
}

impl KeyValue {
    pub fn new(ty: KeyType, value: impl Into<String>) -> Self {
        Self {
            ty,
            value: value.into(),
        }
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}::{}", self.value, self.ty.sql_name())
    }
}

/// Renders a composite key as `(a, b)` for messages.
pub fn display_key(key: &[KeyValue]) -> String {
    match key {
        [one] => one.to_string(),
        many => format!(
            "({})",
            many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Which rows of the table a task reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Bounds {
    /// `key >= lower AND key < upper` on the task's key columns (row-value comparison for composite keys); a missing
    /// bound is open. `lower` is inclusive, `upper` exclusive.
    Key {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lower: Option<Vec<KeyValue>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upper: Option<Vec<KeyValue>>,
    },
    /// Heap pages `[first_page, end_page)` by `ctid` (a TID range scan, PostgreSQL 14+), for tables without a key.
    /// `end_page: None` is open above.
    Ctid {
        first_page: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end_page: Option<u32>,
    },
}

impl Bounds {
    pub const ALL: Bounds = Bounds::Key {
        lower: None,
        upper: None,
    };
}

/// Parquet compression codec of the staged files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "codec", rename_all = "snake_case")]
pub enum Compression {
    Zstd { level: i32 },
    Snappy,
    None,
}

/// How the extractor shapes its Parquet output. Defaults are sized for a 1–10 GB Lambda and Redshift COPY.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterSettings {
    pub compression: Compression,
    /// A row group is flushed once its encoded, buffered size reaches this many bytes: this bounds memory.
    pub row_group_bytes: u64,
    /// A new file is started once the current one reaches this many bytes.
    pub target_file_bytes: u64,
    /// Decoded bytes per Arrow record batch handed to the Parquet writer.
    pub batch_bytes: u64,
    /// Columns to dictionary-encode (the planner picks those with few distinct values); every other column is plain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dictionary_columns: Vec<String>,
}

impl WriterSettings {
    /// What no extractor could write with, named by the command line's flag: refused when the run is planned, not
    /// by every extractor after the plan was made.
    pub fn check(&self) -> Result<(), String> {
        const MIB: u64 = 1024 * 1024;
        if let Compression::Zstd { level } = self.compression {
            // Parquet's zstd levels: https://docs.rs/parquet/latest/parquet/basic/struct.ZstdLevel.html
            if !(1..=22).contains(&level) {
                return Err(format!("zstd level {level}: give --zstd-level from 1 to 22"));
            }
        }
        if !(1..=1024 * MIB).contains(&self.row_group_bytes) {
            return Err(format!(
                "row groups of {} bytes: give --row-group-mib from 1 to 1024 (MiB)",
                self.row_group_bytes
            ));
        }
        if self.target_file_bytes < self.row_group_bytes {
            return Err(format!(
                "files of {} MiB cannot hold a row group of {} MiB: give --file-mib at least --row-group-mib",
                self.target_file_bytes / MIB,
                self.row_group_bytes / MIB
            ));
        }
        if self.batch_bytes == 0 {
            return Err("batch_bytes 0: give 1 or more (default 4 MiB)".into());
        }
        Ok(())
    }
}

impl Default for WriterSettings {
    fn default() -> Self {
        Self {
            compression: Compression::Zstd { level: 1 },
            row_group_bytes: 16 * 1024 * 1024,
            target_file_bytes: 256 * 1024 * 1024,
            batch_bytes: 4 * 1024 * 1024,
            dictionary_columns: Vec::new(),
        }
    }
}

/// One unit of extraction work: one key range of one table, into Parquet files under `stage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractTask {
    pub run_id: String,
    /// The identity of the plan this task belongs to ([`plan_id`](crate::contract::plan::Plan::plan_id)): the extractor echoes
    /// it in its result, and the loader accepts only results of the plan it loads.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plan_id: String,
    /// The task's own identity ([`ExtractTask::identity`]), sealed by the planner: the extractor refuses a task that
    /// no longer hashes to it (tasks.json edited after planning), and its result records the identity of the task it
    /// ran, which the loader compares with the plan's own task. Empty for a task made by hand (`pgshift extract`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task_id: String,
    pub table: TableRef,
    /// Output columns in order (this is the Parquet and the warehouse staging-table column order).
    pub columns: Vec<ColumnSpec>,
    /// Key column names, in key order. Empty for `Bounds::Ctid` tasks and whole-table tasks of keyless tables.
    #[serde(default)]
    pub key: Vec<String>,
    /// Position of this range in the table's plan; names the files.
    #[serde(default)]
    pub range_index: u32,
    pub bounds: Bounds,
    /// Stage URL prefix: `file:///dir` (and `s3://bucket/prefix` once the S3 stage exists).
    pub stage: String,
    #[serde(default)]
    pub writer: WriterSettings,
    /// `statement_timeout` for the COPY, in seconds (0 disables).
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_secs: u64,
    /// Where to read the range when not at the configured source: the instance restored from the run's snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_endpoint: Option<crate::contract::snapshot::Endpoint>,
    /// `--incremental diff`: the range compared row by row with the last committed run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<crate::contract::incremental::RowDiff>,
    /// `--incremental cursor=COLUMN`: only the rows whose column is at or past the mark's watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<crate::contract::incremental::CursorMark>,
}

impl ExtractTask {
    /// A hash of everything in the task but its own `task_id` and the endpoint it reads from (its plan's id, table,
    /// columns and casts, key, bounds, stage, writer settings, timeout included).
    pub fn identity(&self) -> String {
        let mut bare = self.clone();
        bare.task_id.clear();
        // Where the range is read (a restored snapshot's server) is not what is read.
        bare.source_endpoint = None;
        crate::contract::plan::json_digest(&bare)
    }
}

/// `statement_timeout` of an extraction, seconds: 14 minutes, under Lambda's 15 with a minute for the rest.
pub const DEFAULT_STATEMENT_TIMEOUT_SECS: u64 = 840;

fn default_statement_timeout() -> u64 {
    DEFAULT_STATEMENT_TIMEOUT_SECS
}

/// One Parquet file the extractor completed on the stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    pub url: String,
    pub rows: u64,
    /// Content length in bytes, as the Redshift manifest's `meta.content_length` needs it.
    pub bytes: u64,
    /// Full-object CRC32 (base64 of the big-endian value, as S3 reports `ChecksumCRC32`), computed while writing: the
    /// loader checks it against the stage before anything loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<String>,
}

/// What an extractor did with its task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractResult {
    pub run_id: String,
    /// The plan the task came from (its `plan_id`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plan_id: String,
    /// The identity of the task the extractor ran ([`ExtractTask::identity`] of it as it read it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task_id: String,
    pub table: TableRef,
    pub range_index: u32,
    /// Files written, in order. An empty range writes no file: `files` is empty and `rows` is 0.
    pub files: Vec<StagedFile>,
    pub rows: u64,
    /// Bytes of binary COPY data read from the source.
    pub source_bytes: u64,
    pub seconds: f64,
    /// Key of the first and last row in stream order (the COPY has no ORDER BY, so these are not min and max).
    /// `None` for an empty range or when the key columns are not extracted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_key: Option<Vec<KeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key: Option<Vec<KeyValue>>,
    /// Longest value in bytes per text/binary column (the loader sizes VARCHAR/VARBYTE from it).
    pub max_value_bytes: BTreeMap<String, u64>,
    /// Peak resident memory of the process (VmHWM) when the platform reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// Which attempt of the task this was (0: the first; Step Functions' `$$.State.RetryCount`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// When the attempt started, in seconds since the Unix epoch (its end is `started_at + seconds`; 0: unknown).
    #[serde(default, skip_serializing_if = "is_unknown_time")]
    pub started_at: f64,
    /// The range landed and verified in an earlier attempt or an interrupted run of the same plan, and was kept
    /// as it was: nothing was read again (the result on the stage is that earlier attempt's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// The attempt as Lambda bills it (duration, memory, architecture), measured by the extractor itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed: Option<crate::contract::ledger::Billed>,
    /// The requests the attempt made of the stage, counted as S3 bills them (its result's PUT included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<crate::contract::ledger::StageRequests>,
    /// What the row-by-row comparison found (a task with `diff`): the files hold the inserted and updated rows and a
    /// row per deleted key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<crate::contract::incremental::DiffCounts>,
}

impl ExtractResult {
    /// What in the result cannot be true (an edited or corrupted record): seconds negative or not finite, counts past
    /// int8 (PostgreSQL's own count type). A run with such a result is refused by name, never reported as fact.
    pub fn impossible(&self) -> Vec<String> {
        let max = i64::MAX as u64;
        let mut out = Vec::new();
        for (what, s) in [("seconds", self.seconds), ("started_at", self.started_at)] {
            if !(s.is_finite() && s >= 0.0) {
                out.push(format!("{what}: {s}"));
            }
        }
        let mut counts = vec![("rows", self.rows), ("source_bytes", self.source_bytes)];
        for f in &self.files {
            counts.extend([("a file's rows", f.rows), ("a file's bytes", f.bytes)]);
        }
        out.extend(
            counts
                .into_iter()
                .filter(|(_, n)| *n > max)
                .map(|(what, n)| format!("{what}: {n}, past any count PostgreSQL keeps")),
        );
        out
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_unknown_time(t: &f64) -> bool {
    *t == 0.0
}

/// An extraction attempt that failed, as the extractor leaves it beside the range's files (best effort): what the run
/// report shows of retries and failures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    pub run_id: String,
    pub table: TableRef,
    pub range_index: u32,
    pub attempt: u32,
    pub started_at: f64,
    pub seconds: f64,
    /// The error's stable name and its message.
    pub error: String,
    pub message: String,
}

/// A range an attempt kept because an earlier attempt landed it and it verified (`<range>.kept.json`): which result
/// (by its start) was kept, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptRange {
    pub table: TableRef,
    pub range_index: u32,
    /// The kept result's `started_at`: the marker names that result, not a later one of the same range.
    pub result_started_at: f64,
    pub kept_at: f64,
}

/// What the extractor Lambda is handed: `{"task": …, "attempt": n}` as the definition's Parameters build it, or a
/// bare task (attempt 0), as `pgshift extract --task` and older definitions send it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractorInput {
    pub task: ExtractTask,
    /// The Map's retry count of this task (`$$.State.RetryCount`).
    pub attempt: u32,
}

impl<'de> Deserialize<'de> for ExtractorInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wrapped {
            task: ExtractTask,
            #[serde(default)]
            attempt: u32,
        }
        let input = serde_json::Value::deserialize(d)?;
        let parsed = match input.get("task") {
            Some(_) => serde_json::from_value(input).map(|w: Wrapped| (w.task, w.attempt)),
            None => serde_json::from_value(input).map(|t| (t, 0)),
        };
        let (task, attempt) = parsed.map_err(serde::de::Error::custom)?;
        Ok(ExtractorInput { task, attempt })
    }
}
