//! Incremental loads (`--incremental diff`, docs/incremental.md): what the last committed run of a target left on
//! the stage (its sync state: the key ranges, each range's row count and digest, the data's instant, the target's
//! rows), what a run plans against it (which ranges changed), and the range predicates the load deletes by.
//!
//! A range is the unit of change: the source computes each range's count and an order-independent digest of its rows
//! in SQL ([`digest_sql`]), no row leaving the server; a range whose count and digest equal the state's is skipped;
//! a changed range is extracted whole, and the load replaces the target's rows in that key range with it (inserts,
//! updates and deletes alike) in one transaction per table.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::contract::digest::{digest_sql, DigestHow};
use crate::contract::model::{Bounds, ColumnSpec, KeyType, KeyValue, TableRef};

/// How a table is loaded from one run to the next; as text everywhere (`full`, `diff`, `cursor=updated_at`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Incremental {
    /// Every run moves the whole table (and keeps no state).
    #[default]
    Full,
    /// After a first full load, each run moves only the rows that changed since the last committed run, deletes
    /// included (a snapshot or a static source: one instant compared with the last).
    Diff,
    /// After a first full load, each run merges by key the rows whose cursor column (a `timestamptz` or `timestamp`
    /// the application sets on every write) is at or past the last run's watermark (a live source). Deletes are not
    /// seen.
    Cursor(String),
}

impl fmt::Display for Incremental {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Incremental::Full => f.write_str("full"),
            Incremental::Diff => f.write_str("diff"),
            Incremental::Cursor(c) => write!(f, "cursor={c}"),
        }
    }
}

impl From<Incremental> for String {
    fn from(i: Incremental) -> String {
        i.to_string()
    }
}

impl TryFrom<String> for Incremental {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for Incremental {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some((mode, column)) = t.split_once('=') {
            return match (mode.trim().eq_ignore_ascii_case("cursor"), column.trim()) {
                (true, c) if !c.is_empty() => Ok(Incremental::Cursor(c.to_string())),
                _ => Err(format!("--incremental {s:?}: use diff, full or cursor=COLUMN")),
            };
        }
        match t.to_ascii_lowercase().as_str() {
            "full" | "" => Ok(Incremental::Full),
            "diff" => Ok(Incremental::Diff),
            "cursor" => Err("--incremental cursor needs its column: cursor=COLUMN (updated_at, …)".into()),
            _ => Err(format!("--incremental {s:?}: use diff, full or cursor=COLUMN")),
        }
    }
}

/// What a load does with a target's row whose key the source no longer holds (`--deletes`).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deletes {
    /// Deleted from the target.
    #[default]
    Hard,
    /// Kept, with [`DELETED_AT_COLUMN`] set to the instant of the run's data (the snapshot's); live rows have it NULL.
    Soft,
}

impl Deletes {
    pub fn is_hard(&self) -> bool {
        *self == Deletes::Hard
    }
}

/// Why `--deletes soft` cannot load a table, if it cannot: a soft delete is found by key, and kept by a `replace`.
pub fn soft_refusal(
    deletes: Deletes,
    (mode, incremental): (crate::contract::load::LoadMode, &Incremental),
    table: &TableRef,
    key: &[String],
) -> Option<String> {
    if deletes.is_hard() {
        return None;
    }
    if matches!(incremental, Incremental::Cursor(_)) {
        return Some(format!(
            "--deletes soft marks the rows the source deleted, which cursor mode does not see ({table}): use \
             --incremental diff from a snapshot"
        ));
    }
    if mode != crate::contract::load::LoadMode::Replace {
        return Some(format!(
            "--deletes soft marks the rows a replace would delete; it does not combine with --mode {} ({table})",
            format!("{mode:?}").to_lowercase()
        ));
    }
    key.is_empty().then(|| {
        format!(
            "{table} has no key, and --deletes soft finds deleted rows by key: give it one in pgshift.toml \
             ([table.\"{table}\"] key = [...]) or leave it out with --exclude {table}"
        )
    })
}

/// The target's column of a soft delete's instant (`--deletes soft`).
pub const DELETED_AT_COLUMN: &str = "_pgshift_deleted_at";

/// One key range as a run saw it: its bounds, its rows, the digest of its rows, and the stage key of its key and
/// row-hash file ([`keys_key`]; none for a table compared whole).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDigest {
    pub range_index: u32,
    pub bounds: Bounds,
    pub rows: u64,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<String>,
    /// The sum of the range's keys, for a table keyed by one integer column: with the count, the target's guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sum: Option<String>,
    /// The snapshot the planner digested the range in, on a plain table of PostgreSQL 14 or later: every row version
    /// the range holds later that is not in its key file was written by a transaction at or after its `xmin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadMark>,
}

/// Where and when a range was digested ([`RangeDigest::read`]): the `xmin` of the digest's snapshot (64 bits, with
/// the epoch) and the server's lineage (as a key file records it: the same only on the same running server).
///
/// It bounds the rows a later run must look at. A version visible later whose `xmin` is below it had committed
/// before the digest, so the range's extraction in that run, which reads after the planner, saw it: it is in the
/// key file. A range left unchanged keeps its key file and the mark of the run that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMark {
    pub xmin: u64,
    pub lineage: u64,
}

/// The one integer key column whose sum guards the target (both warehouses sum integers exactly), if any.
pub fn key_sum_column<'a>(key: &'a [String], columns: &[ColumnSpec]) -> Option<&'a str> {
    use crate::contract::types::oid;
    let [k] = key else { return None };
    let c = columns.iter().find(|c| &c.name == k)?;
    (matches!(c.pg_type.oid, oid::INT2 | oid::INT4 | oid::INT8) && c.cast.is_none()).then_some(k.as_str())
}

/// The sum of the ranges' key sums, when every range has one.
pub fn total_key_sum(ranges: &[RangeDigest]) -> Option<String> {
    let mut total: i128 = 0;
    for r in ranges {
        total = total.checked_add(r.key_sum.as_deref()?.parse::<i128>().ok()?)?;
    }
    Some(total.to_string())
}

/// The row-by-row comparison of a changed range, on its extraction task: the extractor hashes each row's binary
/// wire bytes, keeps only rows that are new or whose hash differs from `previous`'s, appends a row of each key of
/// `previous` it did not see (a delete: the key's columns, every other column NULL, [`DELETED_COLUMN`] true), and
/// writes every key and row hash it read to `keys_out`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowDiff {
    /// The last committed run's key and row-hash file of this range; `None`: every row is written (and the load
    /// replaces the range by its key bounds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    pub keys_out: String,
    /// The parts carry [`DELETED_COLUMN`] (a load of changed ranges); a full load's parts are the table's columns
    /// only, every row kept, and the key file written for the next run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flagged: bool,
    /// The rows of the range written since the last run's digest, as the planner's digest found them: the extractor
    /// reads only these first when it reads in the very same snapshot, on the same server (docs/incremental.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<RecentRows>,
}

/// The planner's list of a changed range's rows written since the last run's digest ([`ReadMark`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentRows {
    /// The stage key of their tuple ids ([`recent_key`]): 6 bytes each, the block (`u32`) and the item (`u16`),
    /// big-endian, as `tidsend` writes them.
    pub tids: String,
    /// The rows the range held in that snapshot.
    pub rows: u64,
    /// The snapshot (`txid_current_snapshot()`'s text) the list was read in: only a read in a snapshot equal to it
    /// sees the same rows at the same tuple ids.
    pub snapshot: String,
    /// The lineage of the server it was read on ([`ReadMark::lineage`]).
    pub lineage: u64,
}

/// What a row-by-row comparison found in a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffCounts {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    pub unchanged: u64,
}

impl DiffCounts {
    /// Both counts, added.
    pub fn plus(self, o: DiffCounts) -> DiffCounts {
        DiffCounts {
            inserted: self.inserted + o.inserted,
            updated: self.updated + o.updated,
            deleted: self.deleted + o.deleted,
            unchanged: self.unchanged + o.unchanged,
        }
    }
}

/// The column the parts of a row-by-row comparison carry after the table's own: true for a deleted key's row.
pub const DELETED_COLUMN: &str = "_pgshift_deleted";

/// [`DELETED_COLUMN`] as a column of the parts.
pub fn deleted_column() -> ColumnSpec {
    ColumnSpec {
        name: DELETED_COLUMN.into(),
        pg_type: crate::contract::model::PgType {
            name: "boolean".into(),
            oid: crate::contract::types::oid::BOOL,
            typmod: -1,
            declared: None,
        },
        nullable: false,
        cast: None,
        mapping: crate::contract::types::Mapping::Bool,
    }
}

/// The columns of a row-by-row comparison's parts: the table's, every one nullable but the key's (a delete's row
/// holds its key only), then [`DELETED_COLUMN`].
pub fn diff_columns(columns: &[ColumnSpec], key: &[String]) -> Vec<ColumnSpec> {
    let mut out: Vec<ColumnSpec> = columns
        .iter()
        .map(|c| ColumnSpec {
            nullable: c.nullable || !key.contains(&c.name),
            ..c.clone()
        })
        .collect();
    out.push(deleted_column());
    out
}

/// `.state/<schema>/<table>/keys/<run>/range-<n>.keys`: a range's key and row-hash file, written by its extractor.
pub fn keys_key(table: &TableRef, run_id: &str, range_index: u32) -> String {
    use crate::contract::layout::key_segment;
    format!(
        ".state/{}/{}/keys/{}/range-{range_index:05}.keys",
        key_segment(&table.schema),
        key_segment(&table.name),
        key_segment(run_id)
    )
}

/// `<run>/recent/<schema>/<table>/range-<n>.tids`: a changed range's [`RecentRows`], written by the planner, read by
/// the range's extractor; in the run's prefix, gone with it.
pub fn recent_key(table: &TableRef, run_id: &str, range_index: u32) -> String {
    use crate::contract::layout::{key_segment, run_prefix};
    format!(
        "{}recent/{}/{}/range-{range_index:05}.tids",
        run_prefix(run_id),
        key_segment(&table.schema),
        key_segment(&table.name)
    )
}

/// The directory of a table's key files: `.state/<schema>/<table>/keys/`.
pub fn keys_dir(table: &TableRef) -> String {
    use crate::contract::layout::key_segment;
    format!(
        ".state/{}/{}/keys/",
        key_segment(&table.schema),
        key_segment(&table.name)
    )
}

/// What the last committed run of a target left: `.state/<schema>/<table>/sync.json` on the stage
/// ([`crate::contract::layout::state_key`]), written by the loader only after the table's transaction committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    pub version: u32,
    pub table: TableRef,
    pub key: Vec<String>,
    /// [`signature`] of the columns as planned: a column added, dropped, retyped or cast differently changes it.
    pub signature: String,
    pub ranges: Vec<RangeDigest>,
    /// The instant the loaded data is from ([`crate::contract::plan::Plan::data_instant`]), seconds since the epoch.
    pub data_at: i64,
    /// The rows the target held once the run committed.
    pub target_rows: u64,
    pub run_id: String,
    pub plan_id: String,
    pub committed_at: f64,
    /// Cursor mode: the column and the watermark the next run reads from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorMark>,
    /// Incremental runs since the last full load (`--full-every`).
    #[serde(default)]
    pub runs_since_full: u32,
    /// The target keeps soft deletes (`--deletes soft`): its counts are of live rows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft: bool,
    /// The run that last loaded the table in full (what its incremental runs' bills compare with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_run: Option<String>,
}

/// Cursor mode's mark: rows whose `column` is at or past `watermark` (a `timestamptz` in PostgreSQL's text form)
/// are read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorMark {
    pub column: String,
    pub watermark: String,
}

pub const STATE_VERSION: u32 = 1;

/// The incremental side of a table's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableIncremental {
    /// The state this run builds on; `None`: a full load (the first, or a fallback: `full_because` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Base>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_because: Option<String>,
    /// Every range of the table, as this run's source holds it.
    pub ranges: Vec<RangeDigest>,
    /// The ranges extracted (every range for a full load).
    pub changed: Vec<u32>,
    /// The changed ranges the load replaces by their key bounds (no row-by-row comparison of them): every changed
    /// range but those of a flagged table that the last run left a key file of.
    #[serde(default)]
    pub replaced: Vec<u32>,
    /// The parts carry [`DELETED_COLUMN`]: the load deletes and upserts by key, row by row.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flagged: bool,
    /// Cursor mode: the rows read since `from` (the last run's watermark; `None` on a full load), and the watermark
    /// the next run reads from, taken at planning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorPlan>,
    /// Incremental runs since the last full load, this one included (0: this run is full).
    #[serde(default)]
    pub runs_since_full: u32,
    /// [`signature`] of the key (with its columns' collations) and the columns, as this run planned them.
    #[serde(default)]
    pub signature: String,
    /// The load deletes soft (`--deletes soft`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft: bool,
}

/// A cursor table's read: its column, from where, and the next watermark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorPlan {
    pub column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub watermark: String,
}

/// The committed run an incremental load builds on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Base {
    pub run_id: String,
    pub plan_id: String,
    pub target_rows: u64,
    pub data_at: i64,
    /// The rows the changed ranges held at the base (what the load deletes from the target).
    pub changed_rows_before: u64,
    /// The sum of the target's keys the base left ([`key_sum_column`]), checked with its count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sum: Option<String>,
    /// The run that last loaded the table in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_run: Option<String>,
}

impl TableIncremental {
    /// The rows the target holds after the load: every range's rows at this run's source.
    pub fn source_rows(&self) -> u64 {
        self.ranges.iter().map(|r| r.rows).sum()
    }

    /// Ranges left as the target holds them.
    pub fn skipped(&self) -> usize {
        self.ranges.len() - self.changed.len()
    }

    /// The state to write once this run's load of the table committed.
    pub fn state(&self, table: &TableRef, key: &[String], at: Committed<'_>) -> SyncState {
        SyncState {
            version: STATE_VERSION,
            table: table.clone(),
            key: key.to_vec(),
            signature: self.signature.clone(),
            soft: self.soft,
            full_run: match &self.base {
                Some(b) => b.full_run.clone(),
                None => Some(at.run_id.to_string()),
            },
            ranges: self.ranges.clone(),
            data_at: at.data_at,
            target_rows: self.source_rows(),
            run_id: at.run_id.to_string(),
            plan_id: at.plan_id.to_string(),
            committed_at: at.committed_at,
            cursor: self.cursor.as_ref().map(|c| CursorMark {
                column: c.column.clone(),
                watermark: c.watermark.clone(),
            }),
            runs_since_full: self.runs_since_full,
        }
    }
}

/// Which run committed, when, and from which instant.
pub struct Committed<'a> {
    pub run_id: &'a str,
    pub plan_id: &'a str,
    pub data_at: i64,
    pub committed_at: f64,
}

/// A hash of the key, its columns' collations (the order of the key ranges), each column's name, type, cast and
/// mapping, and the labels of its enum columns: equal signatures compare range for range, and row for row.
pub fn signature(
    key: &[String],
    collations: &[String],
    columns: &[ColumnSpec],
    enum_labels: &[(String, Vec<String>)],
) -> String {
    let cols: Vec<_> = columns
        .iter()
        .map(|c| (&c.name, c.pg_type.oid, c.pg_type.typmod, &c.cast, &c.mapping))
        .collect();
    // A table without enum columns signs as it did before enum labels were signed: its state stays usable.
    match enum_labels.is_empty() {
        true => crate::contract::plan::json_digest(&(key, collations, cols)),
        false => crate::contract::plan::json_digest(&(key, collations, cols, enum_labels)),
    }
}

/// What a run wants of a state to build on it.
pub struct Want<'a> {
    pub table: &'a TableRef,
    pub key: &'a [String],
    pub signature: &'a str,
    pub cursor: bool,
    pub soft: bool,
}

/// Why a state cannot be built on for this table's plan, if it cannot: a full load follows.
pub fn unusable(state: &SyncState, want: &Want<'_>) -> Option<String> {
    let (table, key) = (want.table, want.key);
    if state.version != STATE_VERSION {
        return Some(format!(
            "its state is of version {}, not {STATE_VERSION}",
            state.version
        ));
    }
    if &state.table != table {
        return Some(format!("its state is of {}", state.table));
    }
    if state.key != key {
        return Some(format!(
            "its key changed ({} → {})",
            state.key.join(", "),
            key.join(", ")
        ));
    }
    if state.signature != want.signature {
        return Some(
            "its columns changed (added, dropped, retyped, cast differently, an enum's labels renamed, or the key's \
             collation changed)"
                .into(),
        );
    }
    match (state.cursor.is_some(), want.cursor) {
        (true, false) => {
            return Some("its state is of cursor mode, and this run compares with --incremental diff".into())
        }
        (false, true) => return Some("its state is not of cursor mode".into()),
        _ => {}
    }
    if state.soft != want.soft {
        return Some(format!(
            "its deletes changed ({} → {})",
            if state.soft { "soft" } else { "hard" },
            if want.soft { "soft" } else { "hard" }
        ));
    }
    let numbered = state
        .ranges
        .iter()
        .enumerate()
        .all(|(i, r)| r.range_index as usize == i);
    if state.cursor.is_none() && (state.ranges.is_empty() || !numbered) {
        return Some("its state's ranges are not numbered 0, 1, …".into());
    }
    None
}

/// The changed ranges: count or digest differ from the base's range of the same index.
pub fn changed(base: &[RangeDigest], now: &[RangeDigest]) -> Vec<u32> {
    now.iter()
        .filter(|r| {
            base.get(r.range_index as usize)
                .is_none_or(|b| b.bounds != r.bounds || b.rows != r.rows || b.digest != r.digest)
        })
        .map(|r| r.range_index)
        .collect()
}

/// The rows of `bounds` in a warehouse (PostgreSQL or Redshift): comparisons expanded column by column (Redshift
/// has no row-value comparison), each value a string literal the column's type reads (numbers, dates and times
/// cast; text and UUIDs compared as text, which both warehouses resolve to the column's type). `None`: every row.
pub fn warehouse_predicate(key: &[String], bounds: &Bounds) -> Result<Option<String>, String> {
    let Bounds::Key { lower, upper } = bounds else {
        return Err("a range by heap pages cannot be found again in the warehouse".into());
    };
    let mut parts = Vec::new();
    for (strict, last, bound) in [(">", ">=", lower), ("<", "<", upper)] {
        let Some(values) = bound else { continue };
        if values.len() != key.len() {
            return Err(format!(
                "a bound of {} value(s) for a key of {}",
                values.len(),
                key.len()
            ));
        }
        parts.push(expanded(key, values, strict, last)?);
    }
    Ok((!parts.is_empty()).then(|| parts.join(" AND ")))
}

/// `(k1 > v1) OR (k1 = v1 AND k2 > v2) OR … OR (k1 = v1 AND … AND kn >= vn)`, the row comparison spelled out.
fn expanded(key: &[String], values: &[KeyValue], strict: &str, last: &str) -> Result<String, String> {
    let cols = key
        .iter()
        .map(|k| crate::contract::sql::ident(k))
        .collect::<Result<Vec<_>, _>>()?;
    let lits = values.iter().map(warehouse_literal).collect::<Result<Vec<_>, _>>()?;
    let mut ors = Vec::new();
    for i in 0..cols.len() {
        let mut ands: Vec<String> = (0..i).map(|j| format!("{} = {}", cols[j], lits[j])).collect();
        let op = if i + 1 == cols.len() { last } else { strict };
        ands.push(format!("{} {op} {}", cols[i], lits[i]));
        ors.push(format!("({})", ands.join(" AND ")));
    }
    Ok(format!("({})", ors.join(" OR ")))
}

/// A key value as both warehouses read it.
fn warehouse_literal(v: &KeyValue) -> Result<String, String> {
    let text = crate::contract::sql::text_literal(&v.value)?;
    Ok(match v.ty {
        KeyType::Text | KeyType::Varchar | KeyType::Bpchar | KeyType::Uuid => text,
        // A number as a numeric constant: Redshift's bare `numeric` type is NUMERIC(18,0), so a cast would round.
        KeyType::Int2 | KeyType::Int4 | KeyType::Int8 | KeyType::Numeric => {
            let plain = v.value.strip_prefix('-').unwrap_or(&v.value);
            let digits = plain.split_once('.').map_or((plain, "0"), |(i, f)| (i, f));
            let is_number = !digits.0.is_empty()
                && !digits.1.is_empty()
                && (digits.0.bytes().chain(digits.1.bytes())).all(|b| b.is_ascii_digit());
            if !is_number {
                return Err(format!("key value {:?} is not a finite number", v.value));
            }
            v.value.clone()
        }
        ty => format!("{text}::{}", ty.sql_name()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &str) -> KeyValue {
        KeyValue::new(KeyType::Int8, v)
    }

    #[test]
    fn the_warehouse_predicate_spells_out_the_row_comparison() {
        let key = vec!["a".to_string(), "b".to_string()];
        let b = Bounds::Key {
            lower: Some(vec![k("1"), KeyValue::new(KeyType::Text, "x'y")]),
            upper: None,
        };
        assert_eq!(
            warehouse_predicate(&key, &b).unwrap().unwrap(),
            "((\"a\" > 1) OR (\"a\" = 1 AND \"b\" >= 'x''y'))"
        );
        assert_eq!(warehouse_predicate(&key, &Bounds::ALL).unwrap(), None);
        let one = vec!["id".to_string()];
        let b = Bounds::Key {
            lower: Some(vec![k("5")]),
            upper: Some(vec![k("9")]),
        };
        assert_eq!(
            warehouse_predicate(&one, &b).unwrap().unwrap(),
            "((\"id\" >= 5)) AND ((\"id\" < 9))"
        );
        let bad = Bounds::Key {
            lower: Some(vec![KeyValue::new(KeyType::Text, "a\\b")]),
            upper: None,
        };
        assert!(warehouse_predicate(&one, &bad).is_err());
    }

    #[test]
    fn a_range_changes_when_its_count_digest_or_bounds_do() {
        let r = |i: u32, rows: u64, d: &str| RangeDigest {
            range_index: i,
            bounds: Bounds::ALL,
            rows,
            digest: d.into(),
            keys: None,
            key_sum: None,
            read: None,
        };
        let base = vec![r(0, 10, "a"), r(1, 10, "b"), r(2, 10, "c")];
        let now = vec![r(0, 10, "a"), r(1, 10, "B"), r(2, 11, "c"), r(3, 1, "d")];
        assert_eq!(changed(&base, &now), vec![1, 2, 3]);
        assert!(changed(&base, &base).is_empty());
    }

    #[test]
    fn modes_parse_and_a_cursor_names_its_column() {
        assert_eq!("diff".parse::<Incremental>(), Ok(Incremental::Diff));
        assert_eq!("FULL".parse::<Incremental>(), Ok(Incremental::Full));
        assert_eq!(
            "cursor=updated_at".parse::<Incremental>(),
            Ok(Incremental::Cursor("updated_at".into()))
        );
        assert!("cursor".parse::<Incremental>().unwrap_err().contains("cursor=COLUMN"));
        assert!("sometimes".parse::<Incremental>().is_err());
    }
}
