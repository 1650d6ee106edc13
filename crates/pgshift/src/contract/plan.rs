//! The plan: what the planner is asked ([`PlanRequest`]), what it decides ([`Plan`], written to `<run>/plan.json`),
//! and the summary it hands the state machine ([`PlanSummary`]). Every plan carries its identity, a hash of itself.

use std::collections::BTreeMap;

use crate::contract::load::WarehouseLimits;
use serde::{Deserialize, Serialize};

use crate::contract::load::LoadOptions;
use crate::contract::model::{ColumnSpec, ExtractTask, TableRef, WriterSettings};
use crate::contract::snapshot::{Endpoint, Snapshot};
use crate::contract::types::{Cast, TypePolicies};

/// What to plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// Run id; generated from the time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Table patterns, `schema.table` with `*` and `?` wildcards (`sales.*`, `public.orders`); a bare name means
    /// `public.name`. System schemas are never selected.
    pub tables: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Per-table overrides, keyed by `schema.table`.
    #[serde(default)]
    pub overrides: BTreeMap<String, TableOverride>,
    #[serde(default)]
    pub policies: TypePolicies,
    #[serde(default)]
    pub settings: PlanSettings,
    /// Stage URL prefix where the plan, the task list and the parts go.
    pub stage: String,
    #[serde(default)]
    pub writer: WriterSettings,
    /// How the loader is to load this run (`{"mode": "merge"}`); passed through the summary to the Load state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadOptions>,
    /// The RDS snapshot the run was started for (set from the trigger event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
    /// What the warehouse cannot take (statements per load transaction, case-folded names): the planner refuses a
    /// run it could not load. Set by the entry point from its warehouse.
    #[serde(default, skip_serializing_if = "WarehouseLimits::is_none")]
    pub warehouse: WarehouseLimits,
    /// Read the source here instead of the configured endpoint (with the configured credentials): the instance
    /// restored from `snapshot`. Set by the state machine, not by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_endpoint: Option<Endpoint>,
    /// Start the run over: everything under `<stage>/<run>/` is deleted before planning. Without it, a run id that
    /// already has a plan is planned again only by the same request, before its load started (a retried Plan state,
    /// an interrupted local run); anything else is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart: bool,
    /// `diff`: after a first full load, each run moves only the key ranges that changed since the last committed run
    /// (a snapshot's or a static source's; docs/incremental.md). Per table in `overrides`.
    #[serde(default, skip_serializing_if = "crate::contract::plan::is_full")]
    pub incremental: crate::contract::incremental::Incremental,
    /// Incremental tables are loaded in full every this many runs (`--full-every N`): in cursor mode, what removes
    /// the rows the source deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_every: Option<u32>,
}

/// `over` merged into `base`: objects key by key, at every depth; anything else (a list, a value) replaced.
fn merge_into(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge_into(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

impl PlanRequest {
    /// This request with `over` (the fields of a request as JSON: a run's input, a config file, flags) merged in:
    /// objects key by key at every depth (`settings`, `writer`, `load`, `policies`, a table's override), lists and
    /// values replaced. The one way a request is made from layers of settings: the deployed planner merges a run's
    /// input over its defaults with it, and the command line merges `pgshift.toml` and then the flags the same way.
    /// A fixed `settings.parts` given without `settings.max_parts_per_table` raises the cap to it (asking for parts
    /// is asking for that many). An unknown field is an error naming it.
    pub fn merged(&self, over: &serde_json::Map<String, serde_json::Value>) -> Result<PlanRequest, String> {
        let mut merged = serde_json::to_value(self).map_err(|e| e.to_string())?;
        let over_value = serde_json::Value::Object(over.clone());
        merge_into(&mut merged, &over_value);
        let mut req: PlanRequest = serde_json::from_value(merged).map_err(|e| e.to_string())?;
        let settings = over.get("settings");
        if let Some(p) = settings
            .and_then(|s| s.get("parts"))
            .and_then(serde_json::Value::as_u64)
        {
            if settings.and_then(|s| s.get("max_parts_per_table")).is_none() {
                let p = u32::try_from(p).unwrap_or(u32::MAX);
                req.settings.max_parts_per_table = req.settings.max_parts_per_table.max(p);
            }
        }
        Ok(req)
    }
}

/// Whether a request's incremental mode is the default (left out of its JSON, so earlier requests keep their identity).
pub(crate) fn is_full(m: &crate::contract::incremental::Incremental) -> bool {
    *m == crate::contract::incremental::Incremental::Full
}

/// SHA-256 of a value's JSON, as 32 hex digits (its first 16 bytes): the identities of requests and plans.
pub(crate) fn json_digest<T: Serialize>(value: &T) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(value).unwrap_or_default();
    sha2::Sha256::digest(&json)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl PlanRequest {
    /// A hash of the request as it bears on the plan (`restart` aside): equal requests make the same run.
    pub fn identity(&self) -> String {
        json_digest(&self.bare())
    }

    /// The request as it bears on the plan.
    pub fn bare(&self) -> Self {
        let mut bare = self.clone();
        bare.restart = false;
        // Where the source is read (a restored snapshot's server, at another address when restored again) is not
        // what is planned: the snapshot is.
        bare.source_endpoint = None;
        bare
    }
}

/// Where two requests differ, setting by setting (`settings.max_concurrency: 16 → 4`), at most `max` of them.
pub fn request_differences(was: &serde_json::Value, now: &serde_json::Value, max: usize) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                let null = serde_json::Value::Null;
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(&p, x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), out);
                }
            }
            (a, b) if a != b => out.push(format!("{path}: {a} → {b}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", was, now, &mut out);
    out.truncate(max);
    out
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableOverride {
    /// Key columns to range on instead of the primary key.
    pub key: Option<Vec<String>>,
    pub casts: BTreeMap<String, Cast>,
    pub policies: Option<TypePolicies>,
    /// A fixed number of parts (still capped by the maxima).
    pub parts: Option<u32>,
    /// The Redshift target's design (see [`crate::contract::design::TableDesign`]): `auto`, `even`, `all`, `key`.
    pub diststyle: Option<crate::contract::design::DistStyle>,
    pub distkey: Option<String>,
    /// `"auto"` or a compound key's columns in order.
    pub sortkey: Option<crate::contract::design::SortKey>,
    /// Column → encoding (`zstd`, `az64`, …).
    pub encode: BTreeMap<String, String>,
    /// `diff` or `full`, for this table (else the request's).
    pub incremental: Option<crate::contract::incremental::Incremental>,
}

impl TableOverride {
    /// The target's design these settings give it.
    pub fn design(&self) -> crate::contract::design::TableDesign {
        crate::contract::design::TableDesign {
            diststyle: self.diststyle,
            distkey: self.distkey.clone(),
            sortkey: self.sortkey.clone(),
            encode: self
                .encode
                .iter()
                .map(|(c, e)| (c.clone(), e.to_ascii_lowercase()))
                .collect(),
        }
    }
}

/// The knobs of the partition count. Defaults: Lambda's 15 minutes with a 2× margin, a conservative extractor
/// throughput, parts of 512 MiB of source data (≈ 150–250 MB of zstd Parquet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanSettings {
    /// Source bytes (heap + TOAST) per part.
    pub target_part_bytes: u64,
    /// A table of at least twice this many source bytes is spread over the extractors that run at once (up to
    /// `max_concurrency` parts of at least this size), even when `target_part_bytes` would keep it whole.
    pub min_part_bytes: u64,
    pub max_parts_per_table: u32,
    pub max_parts_per_run: u32,
    /// Redshift slices: with more parts than slices, the part count is rounded up to a multiple of them. 0: the
    /// warehouse's own count where the run can ask it (`pgshift run` on a provisioned cluster), else 1.
    pub slices: u32,
    /// Where `slices` came from when the warehouse was asked (`stv_slices`), recorded in the plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slices_from: Option<String>,
    /// Extractors running at once (the Map state's MaxConcurrency), to protect the source.
    pub max_concurrency: u32,
    /// Expected extractor throughput in source bytes per second.
    pub throughput_bytes_per_sec: u64,
    /// Seconds one part may take (Lambda's limit is 900; the default leaves a 2× margin).
    pub part_seconds_budget: u64,
    pub statement_timeout_secs: u64,
    /// Sampled keys per part; the relative error of a part's size is about sqrt(1 / samples_per_part).
    pub samples_per_part: u32,
    /// Plan the leaf partitions of partitioned tables themselves instead of their parent.
    pub include_partitions: bool,
    /// Plan the views and materialized views a wildcard pattern matches (a view named exactly is always planned).
    pub include_views: bool,
    /// A fixed number of parts for every non-empty table, instead of the count from the data (still capped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
    /// Columns with at most this many distinct values (`pg_stats.n_distinct`) are dictionary-encoded in Parquet.
    pub dictionary_max_distinct: u32,
    /// The source does not change while the run reads it (a restored snapshot, a paused replica). Only then is a
    /// table without a key split into ctid ranges: on a live source, ranges read in separate snapshots duplicate a
    /// row that an UPDATE moves to another page, or lose it, so such a table is read in one range.
    pub static_source: bool,
    /// Seconds the planner reads boundary keys for; past them, the remaining tables of a static source are split by
    /// equal heap-page (ctid) ranges, which read nothing (a restored instance's cold pages come from S3 as they are
    /// first read, and the planner Lambda has 300 s). The plan says which tables.
    pub planning_budget_seconds: u64,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self {
            target_part_bytes: 512 * 1024 * 1024,
            min_part_bytes: 64 * 1024 * 1024,
            max_parts_per_table: 256,
            max_parts_per_run: 4096,
            slices: 0,
            slices_from: None,
            max_concurrency: 16,
            throughput_bytes_per_sec: 40 * 1000 * 1000,
            part_seconds_budget: 450,
            statement_timeout_secs: crate::contract::model::DEFAULT_STATEMENT_TIMEOUT_SECS,
            samples_per_part: 2000,
            include_partitions: false,
            include_views: false,
            parts: None,
            dictionary_max_distinct: 1000,
            static_source: false,
            planning_budget_seconds: 120,
        }
    }
}

/// How a table was split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Strategy {
    /// Boundaries at quantiles of the key, from a sample of `sampled_rows` rows (`sample_percent` of the pages).
    KeyQuantiles { sampled_rows: u64, sample_percent: f64 },
    /// A physically ordered key (|correlation| ≥ 0.99, PostgreSQL 14+): boundaries are the first keys on evenly
    /// spaced heap pages (`parts - 1` one-page reads, no sort).
    KeyPageProbes { pages: u64, correlation: f64 },
    /// Equal heap-page ranges by `ctid` (no usable key, PostgreSQL 14+); the last range is open.
    CtidPages { pages: u64 },
    /// One task for the whole table.
    Single,
    /// `--incremental diff` on a state: the boundaries of the committed run `run_id`, kept so that ranges compare.
    Kept { run_id: String },
}

impl Strategy {
    /// Its name, as plan.json tags it (`key_quantiles`, `key_page_probes`, `ctid_pages`, `single`).
    pub fn kind(&self) -> &'static str {
        match self {
            Strategy::KeyQuantiles { .. } => "key_quantiles",
            Strategy::KeyPageProbes { .. } => "key_page_probes",
            Strategy::CtidPages { .. } => "ctid_pages",
            Strategy::Single => "single",
            Strategy::Kept { .. } => "kept",
        }
    }

    /// In words, for `plan --explain`.
    pub fn describe(&self) -> String {
        match self {
            Strategy::KeyQuantiles {
                sampled_rows,
                sample_percent,
            } => format!("quantiles of the key, from a sample of {sampled_rows} rows ({sample_percent}% of the pages)"),
            Strategy::KeyPageProbes { pages, correlation } => format!(
                "the first key on evenly spaced heap pages (the key is physically ordered: correlation \
                 {correlation:.2}; {pages} pages)"
            ),
            Strategy::CtidPages { pages } => format!("equal ranges of heap pages by ctid ({pages} pages)"),
            Strategy::Single => "one part: the whole table".into(),
            Strategy::Kept { run_id } => {
                format!("the boundaries of run {run_id}, kept so that its ranges compare (--incremental diff)")
            }
        }
    }
}

/// A byte count for a person: `81.9 kB`, `13.7 MB`, `2.1 GB` (decimal units).
pub fn human_bytes(b: u64) -> String {
    let units = [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    for (unit, size) in units {
        if b as f64 >= size {
            return format!("{:.1} {unit}", b as f64 / size);
        }
    }
    format!("{b} B")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimates {
    pub rows: u64,
    /// Heap + TOAST bytes (`pg_table_size`): what the extraction reads.
    pub bytes: u64,
    /// Main-fork heap bytes alone.
    pub heap_bytes: u64,
    /// Heap, TOAST and indexes (`pg_total_relation_size`).
    pub total_bytes: u64,
    pub avg_row_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartEstimate {
    pub range_index: u32,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TablePlan {
    pub table: TableRef,
    /// table, partitioned table, view, materialized view, foreign table.
    pub kind: String,
    pub unlogged: bool,
    pub key: Vec<String>,
    pub strategy: Strategy,
    /// Why this strategy and part count, in words.
    pub reason: String,
    pub columns: Vec<ColumnSpec>,
    pub estimates: Estimates,
    pub parts: Vec<PartEstimate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The Redshift target's design as the user set it (unset: the defaults).
    #[serde(default, skip_serializing_if = "crate::contract::design::TableDesign::is_default")]
    pub design: crate::contract::design::TableDesign,
    /// An incremental table's ranges and what changed in them (`--incremental diff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<crate::contract::incremental::TableIncremental>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub server_version: String,
    pub server_version_num: i32,
    pub database: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
}

/// The full plan, written to `<stage>/<run>/plan.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub run_id: String,
    /// The plan's identity: a hash of everything else in it ([`Plan::identity`]). Every task carries it, every
    /// result echoes it, and the loader loads only results of this plan, from a plan.json that still hashes to it.
    #[serde(default)]
    pub plan_id: String,
    /// [`PlanRequest::identity`] of the request that made the plan.
    #[serde(default)]
    pub request_id: String,
    pub created_at: String,
    pub source: SourceInfo,
    pub stage: String,
    pub settings: PlanSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
    pub tables: Vec<TablePlan>,
    /// Every extraction task, in table order (also written alone to `<stage>/<run>/tasks.json`).
    pub tasks: Vec<ExtractTask>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// When planning started, in seconds since the Unix epoch (it ran for `planning_seconds`).
    #[serde(default)]
    pub started_at: f64,
    pub planning_seconds: f64,
    /// The planner's invocation as Lambda bills it (its duration, memory and architecture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed: Option<crate::contract::ledger::Billed>,
    /// The request that made the plan, as [`PlanRequest::identity`] hashes it: what a request with other settings
    /// for the same run id is told apart from, setting by setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<serde_json::Value>,
}

/// What a run's reconciliation means, by its consistency: the line every report prints next to it.
pub fn consistency_line(static_source: bool) -> &'static str {
    if static_source {
        "consistency: exact (a static source: a restored snapshot, or a source nothing wrote to during the run); every \
         range read the same data"
    } else {
        "consistency: live source (each range read in its own snapshot, when its extractor started): rows whose key \
         moved between ranges during the run may be missed or read twice, so the count reconciles what was extracted, \
         not the source at one instant; for one instant, run from a snapshot or with --static-source on a quiet source"
    }
}

impl Plan {
    /// The hash of the plan with its identity fields blank: SHA-256 of its JSON, 32 hex digits. A plan.json edited
    /// after planning (a task removed, a bound moved) no longer hashes to its `plan_id`.
    pub fn identity(&self) -> String {
        let mut bare = self.clone();
        bare.plan_id.clear();
        for t in &mut bare.tasks {
            t.plan_id.clear();
            t.task_id.clear();
            t.source_endpoint = None;
        }
        json_digest(&bare)
    }

    /// The instant the run's data is from, in seconds since the Unix epoch: the snapshot's (the time of the RDS
    /// event that announced it, when it was taken) for a run from a snapshot, else when planning started (a live
    /// source is read after that). The load log records it; a load of older data than the target's is refused.
    pub fn data_instant(&self) -> i64 {
        self.snapshot
            .as_ref()
            .and_then(|s| crate::contract::clock::parse_rfc3339(&s.time))
            .map_or(self.started_at as i64, |t| t as i64)
    }

    /// Sets the identity on the plan and on every task (its plan's, and its own: [`ExtractTask::identity`]). The plan goes through JSON first, so the hash is the one a
    /// reader of plan.json computes.
    pub fn seal(self) -> Result<Self, serde_json::Error> {
        let mut plan: Plan = serde_json::from_slice(&serde_json::to_vec(&self)?)?;
        plan.plan_id = plan.identity();
        for t in &mut plan.tasks {
            t.plan_id = plan.plan_id.clone();
            t.task_id = t.identity();
        }
        Ok(plan)
    }
}

/// What the planner returns to the state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub run_id: String,
    pub plan_url: String,
    /// A JSON array of `ExtractTask`s: the Distributed Map's item source.
    pub tasks_url: String,
    pub tables: usize,
    pub tasks: usize,
    pub estimated_rows: u64,
    pub estimated_bytes: u64,
    pub max_concurrency: u32,
    /// `tasks_url` as an S3 bucket and key: the Distributed Map's ItemReader (a `file://` stage is its own "bucket").
    pub task_list: ObjectLocation,
    /// Where the Map's ResultWriter puts the extractors' results.
    pub results: ResultsLocation,
    /// How the Load state loads the run.
    pub load: LoadOptions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLocation {
    pub bucket: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultsLocation {
    pub bucket: String,
    pub prefix: String,
}

/// What the planner Lambda is asked: `{"action": "trigger", "input": …, "execution": …}` (the `Trigger` state: a
/// trigger input, an RDS snapshot event or a manual input, made the run's request), `{"action": "plan", "request": …}`
/// (the `Plan` state), or, without `action`, a trigger input itself, planned at once (a direct invocation). An
/// unknown action, or an unknown field beside a known one, is refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlannerInput {
    Trigger {
        /// The execution's input (`$$.Execution.Input`).
        #[serde(default)]
        input: serde_json::Value,
        /// The execution's id, which takes the run's lock.
        #[serde(default)]
        execution: Option<String>,
    },
    Plan {
        request: Box<PlanRequest>,
        /// Plan the run again over its own plan (the `Plan anew` state, after the pre-flight set incremental states
        /// aside): the run's lock and records stay; `plan.json` and `tasks.json` are written anew.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replan: bool,
    },
    /// A trigger input without `action`, as it was invoked.
    #[serde(skip)]
    Direct(serde_json::Value),
}

impl<'de> Deserialize<'de> for PlannerInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        if v.get("action").is_none() {
            return Ok(PlannerInput::Direct(v));
        }
        PlannerInput::deserialize(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strategy_is_named_as_plan_json_tags_it() {
        for s in [
            Strategy::KeyQuantiles {
                sampled_rows: 1,
                sample_percent: 1.0,
            },
            Strategy::KeyPageProbes {
                pages: 1,
                correlation: 1.0,
            },
            Strategy::CtidPages { pages: 1 },
            Strategy::Single,
        ] {
            let tagged = serde_json::to_value(&s).expect("json");
            assert_eq!(tagged["kind"], s.kind());
        }
    }
}
