//! Layer 4, how the data moved in a run: per table and per part rows, bytes and seconds, the skew of the parts, the
//! peak concurrency, the reconciliation of extracted and loaded rows, and what the run would cost on AWS.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

mod baseline;
pub mod cost;
pub mod events;
pub mod html;
pub mod ledger;
pub mod lineage;
pub mod metrics;
pub mod record;
mod restore;
mod words;
pub use words::{shell_word, thousands};

pub use restore::{rds_hourly_price, RestoreCost, StorageCost, RDS_MINIMUM_BILLED_SECONDS};

use bytes::Bytes;

use crate::contract::layout::{ledger_key, report_key};
use crate::contract::ledger::Ledger;
use crate::contract::load::{LoadResult, TableLoad, TableStatus};
use crate::contract::model::{ExtractResult, TableRef};
use crate::contract::plan::consistency_line;
use crate::stage::{run, StageError};
use cost::PriceTable;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartReport {
    pub range_index: u32,
    pub rows: u64,
    pub files: usize,
    pub parquet_bytes: u64,
    pub source_bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableReport {
    pub table: TableRef,
    pub parts: Vec<PartReport>,
    pub rows: u64,
    pub parquet_bytes: u64,
    pub source_bytes: u64,
    /// Rows of the largest part over the mean (1.0 is perfect balance).
    pub skew: f64,
    /// Rows the warehouse committed for the table (reconciled in the load transaction with the parts' rows); `None`
    /// unless its load committed.
    pub loaded_rows: Option<u64>,
    /// Where the table's load stands, when it was loaded at all.
    pub status: Option<TableStatus>,
    pub reconciled: bool,
    /// Ranges whose parts landed in an earlier attempt or an interrupted run and were kept, not read again.
    pub reused_parts: usize,
    /// Schema evolution applied to the target before its load transaction, kept whatever the load did.
    pub evolved: Vec<String>,
    /// What the load said of the table beyond its rows: how its swap ran, and a target whose rules or triggers were
    /// allowed (what it holds is then theirs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The bill by item (summed over tables), each marked actual or estimated, and the total.
fn render_bill(o: &mut String, b: &cost::RunCost, stage: &str) {
    if b.items.is_empty() {
        let _ = writeln!(
            o,
            "cost: no ledger record (the run ended before it had a plan; its planner call and state transitions are \
             not itemized)"
        );
        return;
    }
    let mut items: Vec<(&str, f64, bool)> = Vec::new();
    for i in &b.items {
        let actual = i.basis == crate::contract::ledger::Basis::Actual;
        match items.iter_mut().find(|(n, _, _)| *n == i.item) {
            Some(x) => {
                x.1 += i.dollars;
                x.2 &= actual;
            }
            None => items.push((i.item.as_str(), i.dollars, actual)),
        }
    }
    let per = b.per_gb.map_or(String::new(), |g| format!(", ${g:.6} per GB read"));
    let _ = writeln!(o, "cost on AWS at {}: ${:.6}{per}", b.prices, b.total);
    for (item, dollars, actual) in items.iter().filter(|(_, d, _)| *d > 0.0) {
        let basis = if *actual { "actual" } else { "estimated" };
        let _ = writeln!(o, "  {item:<48} ${dollars:>10.6}  ({basis})");
    }
    baseline::render(o, &b.baselines);
    if !b.run_id.is_empty() && !stage.is_empty() {
        let _ = writeln!(
            o,
            "  per table and per item: pgshift cost --stage {} --run {}",
            shell_word(stage),
            shell_word(&b.run_id)
        );
    }
}

/// A run as its stage records it, in numbers: per table and per part, the load's outcome, and the run's bill. One
/// report for every view of a run (the summary of `pgshift run`, `pgshift report`, `report.html`), read from the one
/// run record ([`record::RunRecord`]) and priced from the one ledger record ([`ledger`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub run_id: String,
    /// Wall time of the run, when it was watched (a local run); `None` for a report read back from the stage.
    pub seconds: Option<f64>,
    pub tables: Vec<TableReport>,
    pub peak_concurrency: usize,
    pub max_concurrency: u32,
    /// Failed extraction attempts that a retry then completed: (table, range, error name).
    pub retried: Vec<(TableRef, u32, String)>,
    /// The restored snapshot instance of a snapshot run: its times and what it cost (an item of `bill` too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreCost>,
    /// The error name and message that ended a failed run.
    pub failure: Option<(String, String)>,
    /// The run's bill item by item, from its ledger record: what `pgshift cost` prints for the run.
    pub bill: cost::RunCost,
    /// What the reconciliation means: exact (a static source) or live ([`consistency_line`]).
    pub consistency: String,
    /// The run's stage (for the commands the report suggests).
    pub stage: String,
    /// Where a failed run stopped, in words ([`record::RunRecord::failed_where`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_where: Option<String>,
    /// The command that goes on from a failed run ([`record::RunRecord::resume_hint`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

/// The parts of a table a terminal summary lists one by one; more are summed up in a line (`pgshift report --parts`
/// lists them all).
const PARTS_SHOWN: usize = 12;

/// Per table: its parts, and what the load said of it.
fn table_reports(results: &[ExtractResult], load: Option<&LoadResult>) -> Vec<TableReport> {
    let mut by_table: BTreeMap<&TableRef, Vec<&ExtractResult>> = BTreeMap::new();
    for r in results {
        by_table.entry(&r.table).or_default().push(r);
    }
    // A table whose load read no range (an incremental one that did not change) is reported all the same.
    for t in load.map(|l| l.tables.as_slice()).unwrap_or_default() {
        by_table.entry(&t.table).or_default();
    }
    by_table
        .into_iter()
        .map(|(table, mut rs)| {
            rs.sort_by_key(|r| r.range_index);
            // A retried range reports once: its last successful result.
            rs.dedup_by_key(|r| r.range_index);
            table_report(
                table,
                &rs,
                load.and_then(|l| l.tables.iter().find(|t| &t.table == table)),
            )
        })
        .collect()
}

fn table_report(table: &TableRef, rs: &[&ExtractResult], load: Option<&TableLoad>) -> TableReport {
    let parts: Vec<PartReport> = rs
        .iter()
        .map(|r| PartReport {
            range_index: r.range_index,
            rows: r.rows,
            files: r.files.len(),
            parquet_bytes: r.files.iter().map(|x| x.bytes).sum(),
            source_bytes: r.source_bytes,
            seconds: r.seconds,
        })
        .collect();
    let rows: u64 = parts.iter().map(|p| p.rows).sum();
    let max = parts.iter().map(|p| p.rows).max().unwrap_or(0);
    let mean = rows as f64 / parts.len().max(1) as f64;
    // Only what the warehouse committed counts as loaded.
    let loaded = load.filter(|t| t.status.is_committed()).and_then(|t| t.committed_rows);
    TableReport {
        table: table.clone(),
        rows,
        parquet_bytes: parts.iter().map(|p| p.parquet_bytes).sum(),
        source_bytes: parts.iter().map(|p| p.source_bytes).sum(),
        skew: if mean > 0.0 { max as f64 / mean } else { 1.0 },
        loaded_rows: loaded,
        status: load.map(|t| t.status),
        reconciled: loaded == Some(rows),
        reused_parts: rs.iter().filter(|r| r.reused).count(),
        evolved: load.map(|t| t.evolved.clone()).unwrap_or_default(),
        note: load.and_then(|t| t.swap_note.clone()),
        parts,
    }
}

impl RunReport {
    /// The report of a run record, priced by its ledger record's bill.
    pub fn of(rec: &record::RunRecord, bill: cost::RunCost) -> Self {
        RunReport {
            run_id: rec.plan.run_id.clone(),
            seconds: None,
            tables: table_reports(&rec.results, rec.load.as_ref()),
            peak_concurrency: rec.peak_concurrency(),
            max_concurrency: rec.plan.settings.max_concurrency,
            retried: rec.retried(),
            restore: rec.restore.as_ref().map(RestoreCost::of),
            failure: rec.failure.clone(),
            bill,
            consistency: consistency_line(rec.plan.settings.static_source).to_string(),
            stage: rec.plan.stage.clone(),
            failed_where: rec.failed_where(),
            resume: rec.resume_hint(),
        }
    }

    /// The report of a run that ended before it had a plan: nothing extracted, nothing loaded, nothing billed that
    /// the stage records.
    pub fn unplanned(run_id: &str, failure: Option<(String, String)>) -> Self {
        let prices = PriceTable::default();
        RunReport {
            run_id: run_id.to_string(),
            seconds: None,
            tables: Vec::new(),
            peak_concurrency: 0,
            max_concurrency: 0,
            retried: Vec::new(),
            restore: None,
            failure,
            bill: cost::RunCost {
                run_id: run_id.to_string(),
                status: "failed".into(),
                started_at: 0.0,
                rows: 0,
                source_bytes: 0,
                items: Vec::new(),
                total: 0.0,
                per_gb: None,
                per_million_rows: None,
                prices: prices.describe(),
                baselines: Vec::new(),
            },
            consistency: "nothing was read: the run ended before it had a plan".into(),
            stage: String::new(),
            failed_where: None,
            resume: None,
        }
    }

    /// The run succeeded and every table holds exactly the rows extracted.
    pub fn reconciled(&self) -> bool {
        self.failure.is_none() && !self.tables.is_empty() && self.tables.iter().all(|t| t.reconciled)
    }

    /// What the warehouse holds now: the reconciliation of a run that succeeded, or, of a failed one, which tables
    /// its load committed before the failure and that the others are as they were.
    fn render_outcome(&self, o: &mut String) {
        let committed: Vec<&TableReport> = self.tables.iter().filter(|t| t.loaded_rows.is_some()).collect();
        let evolved: Vec<&TableReport> = self.tables.iter().filter(|t| !t.evolved.is_empty()).collect();
        if let Some((name, cause)) = &self.failure {
            let _ = writeln!(o, "run FAILED [{name}]: {}", truncate(cause, 400));
            if let Some(w) = &self.failed_where {
                let _ = writeln!(o, "where: {w}");
            }
            if let Some(r) = &self.resume {
                let _ = writeln!(o, "next: {r}");
            }
            if !evolved.is_empty() {
                let _ = writeln!(
                    o,
                    "changed before the load transaction, and kept (schema evolution only adds a nullable column or \
                     widens a type: the target's rows read the same):"
                );
                for t in &evolved {
                    for s in &t.evolved {
                        let _ = writeln!(o, "  {}: {s}", t.table);
                    }
                }
            }
            match committed.as_slice() {
                [] if !evolved.is_empty() => {
                    let _ = writeln!(
                        o,
                        "no table of this run was committed: every table holds the rows it held"
                    );
                }
                [] => {
                    let _ = writeln!(o, "the warehouse is as it was: no table of this run was committed");
                }
                c => {
                    let _ = writeln!(
                        o,
                        "committed before the failure: {} of {} tables",
                        c.len(),
                        self.tables.len()
                    );
                    for t in c {
                        let _ = writeln!(o, "  {}: {} rows", t.table, thousands(t.loaded_rows.unwrap_or(0)));
                    }
                    let _ = writeln!(o, "every other table is as it was");
                    let _ = writeln!(o, "{}", self.consistency);
                }
            }
            return;
        }
        let ok = self.tables.iter().filter(|t| t.reconciled).count();
        let _ = writeln!(
            o,
            "reconciliation: {ok} of {} tables loaded exactly the rows extracted{}",
            self.tables.len(),
            if self.reconciled() { " ✓" } else { " ✗" }
        );
        let _ = writeln!(o, "{}", self.consistency);
        for t in &self.tables {
            if let Some(n) = &t.note {
                let _ = writeln!(o, "  {}: {}", t.table, truncate(n, 400));
            }
        }
        for t in self.tables.iter().filter(|t| !t.reconciled) {
            let loaded = match (t.loaded_rows, t.status) {
                (Some(n), Some(TableStatus::AlreadyLoaded)) => format!("{n} (committed by an earlier attempt)"),
                (Some(n), _) => n.to_string(),
                (None, s) => format!("nothing ({})", s.map_or("not loaded".into(), |s| format!("{s:?}"))),
            };
            let _ = writeln!(o, "  {}: extracted {} loaded {loaded}", t.table, t.rows);
        }
    }

    /// The report as text tables for a terminal; a table's parts listed one by one up to a dozen.
    pub fn render(&self) -> String {
        self.render_parts(false)
    }

    /// The report as text tables for a terminal, every part listed when `all_parts`.
    pub fn render_parts(&self, all_parts: bool) -> String {
        let mut o = String::new();
        // A run that ended before it had a plan read nothing: its outcome alone.
        if !self.tables.is_empty() {
            let _ = writeln!(o, "\n{}", self.tables_table());
            for t in self.tables.iter().filter(|t| t.parts.len() > 1) {
                if all_parts || t.parts.len() <= PARTS_SHOWN {
                    let _ = writeln!(o, "\nparts of {}:\n{}", t.table, parts_table(t));
                } else {
                    let _ = writeln!(o, "\n{}", self.parts_line(t));
                }
            }
            self.render_totals(&mut o);
        }
        self.render_outcome(&mut o);
        if let Some(r) = &self.restore {
            let _ = writeln!(o, "{}", r.line());
        }
        render_bill(&mut o, &self.bill, &self.stage);
        o
    }

    /// A table's parts in one line: how many, the smallest, median and largest by rows, the slowest, and the command
    /// that lists them all.
    fn parts_line(&self, t: &TableReport) -> String {
        let mut rows: Vec<u64> = t.parts.iter().map(|p| p.rows).collect();
        rows.sort_unstable();
        let slowest = t.parts.iter().max_by(|a, b| a.seconds.total_cmp(&b.seconds));
        let slow = slowest.map_or(String::new(), |p| {
            format!("; slowest range {} ({:.2} s)", p.range_index, p.seconds)
        });
        let every = if self.stage.is_empty() {
            String::new()
        } else {
            format!(
                "; every part: pgshift report --stage {} --run {} --parts",
                shell_word(&self.stage),
                shell_word(&self.run_id)
            )
        };
        format!(
            "parts of {}: {} parts, rows smallest {} / median {} / largest {}{slow}{every}",
            t.table,
            t.parts.len(),
            thousands(rows[0]),
            thousands(rows[rows.len() / 2]),
            thousands(rows[rows.len() - 1]),
        )
    }
}

/// A text table for a terminal: the header, columns two spaces apart (none after the last), the columns named in
/// `right` right-aligned (the numbers). Every text table pgshift prints is one of these.
pub fn text_table(header: &[&str], right: &[usize]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    let last = header.len().saturating_sub(1);
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((0, if i == last { 0 } else { 2 }));
        if right.contains(&i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    t
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// Per part of a table: its rows, size, time and rate, and a bar of its rows against the largest part's.
fn parts_table(t: &TableReport) -> comfy_table::Table {
    let mut out = text_table(
        &["range", "rows", "parquet MB", "s", "source MB/s", "rows"],
        &[0, 1, 2, 3, 4],
    );
    let max = t.parts.iter().map(|p| p.rows).max().unwrap_or(0).max(1);
    for p in &t.parts {
        let bar = "█".repeat((p.rows as f64 / max as f64 * 30.0).round() as usize);
        out.add_row(vec![
            p.range_index.to_string(),
            thousands(p.rows),
            format!("{:.2}", mb(p.parquet_bytes)),
            format!("{:.2}", p.seconds),
            format!("{:.1}", mb(p.source_bytes) / p.seconds.max(1e-9)),
            bar,
        ]);
    }
    out
}

impl RunReport {
    /// Per table: parts, rows, bytes, the slowest part, the skew, and the rows loaded.
    fn tables_table(&self) -> comfy_table::Table {
        let mut out = text_table(
            &[
                "table",
                "parts",
                "rows",
                "source MB",
                "parquet MB",
                "max s",
                "skew",
                "loaded",
            ],
            &[1, 2, 3, 4, 5, 6],
        );
        for t in &self.tables {
            let max_s = t.parts.iter().map(|p| p.seconds).fold(0.0, f64::max);
            out.add_row(vec![
                truncate(&t.table.to_string(), 40),
                t.parts.len().to_string(),
                thousands(t.rows),
                format!("{:.1}", mb(t.source_bytes)),
                format!("{:.1}", mb(t.parquet_bytes)),
                format!("{max_s:.2}"),
                format!("{:.3}", t.skew),
                t.loaded_rows.map_or("-".into(), thousands),
            ]);
        }
        out
    }

    /// Rows and bytes read, the rate, the peak concurrency, the retries and the ranges kept from an earlier attempt.
    fn render_totals(&self, o: &mut String) {
        let rows: u64 = self.tables.iter().map(|t| t.rows).sum();
        let src: u64 = self.tables.iter().map(|t| t.source_bytes).sum();
        let _ = write!(o, "\n{} rows, {:.1} MB read from the source", thousands(rows), mb(src));
        if let Some(s) = self.seconds {
            let rate = (rows as f64 / s.max(1e-9)).round() as u64;
            let _ = write!(o, " in {s:.1} s ({} rows/s)", thousands(rate));
        }
        if self.peak_concurrency > 0 {
            let _ = write!(o, "; peak {} extractors at once", self.peak_concurrency);
        }
        let _ = writeln!(o, " (limit {})", self.max_concurrency);
        for (t, r, e) in &self.retried {
            let _ = writeln!(o, "retried: {t} range {r} after {e}");
        }
        for t in self.tables.iter().filter(|t| t.reused_parts > 0) {
            let _ = writeln!(
                o,
                "resumed: {}: {} of {} ranges kept from an earlier attempt (verified on the stage, not read again)",
                t.table,
                t.reused_parts,
                t.parts.len()
            );
        }
    }
}

/// A run as its stage has it: the run record, and its bill, priced from its ledger record (`<run>/ledger.json`;
/// built from the record as `facts` say when the run has none yet, as while it runs). The one bill every view shows.
pub async fn read_run(
    stages: &dyn crate::stage::StageOpener,
    plan_url: &str,
    facts: &ledger::LedgerFacts,
) -> Result<(record::RunRecord, cost::RunCost), StageError> {
    let rec = record::read(stages, plan_url).await?;
    let stage = run::stage_of(stages, plan_url).await?;
    let written: Option<Ledger> = run::read_json(stage.as_ref(), &ledger_key(&rec.plan.run_id))
        .await
        .ok()
        .flatten()
        .filter(|l: &Ledger| l.impossible().is_empty());
    let l = written.unwrap_or_else(|| ledger::of(&rec, facts));
    let mut bill = cost::run_cost(&l, &PriceTable::default());
    bill.baselines = baseline::of(stage.as_ref(), &rec, &bill).await;
    Ok((rec, bill))
}

/// The report of a run read back from its stage, and what the stage lacks of it. `memory_mb` is the extractors'
/// memory assumed where neither the ledger record nor a result says.
pub async fn from_stage(
    stages: &dyn crate::stage::StageOpener,
    plan_url: &str,
    memory_mb: u32,
) -> Result<(RunReport, Vec<String>), StageError> {
    let (rec, bill) = read_run(stages, plan_url, &assuming(memory_mb)).await?;
    let report = RunReport::of(&rec, bill);
    Ok((report, rec.notes))
}

fn assuming(memory_mb: u32) -> ledger::LedgerFacts {
    ledger::LedgerFacts {
        assumed_memory_mb: memory_mb,
        ..Default::default()
    }
}

/// A run's end as [`publish`] wrote it: its report, and the record and bill it was drawn from (what the run's end is
/// told from, with no second read of the stage).
pub struct Published {
    pub report: RunReport,
    pub record: record::RunRecord,
    pub bill: cost::RunCost,
}

/// Writes the run's ledger record (`<run>/ledger.json`, from the stage and `facts`) and then its HTML report
/// (`<run>/report.html`), priced from that same record; the run's record is read once. What the loader does when a
/// run ends, and what a local run does again with what it counted. A record or a report that cannot be written is
/// logged and the rest still done (it never fails a run); only a run whose record cannot be read is an error.
pub async fn publish(
    stages: &dyn crate::stage::StageOpener,
    plan_url: &str,
    facts: &ledger::LedgerFacts,
) -> Result<Published, StageError> {
    let rec = record::read(stages, plan_url).await?;
    let l = ledger::of(&rec, facts);
    let stage = run::stage_of(stages, plan_url).await?;
    if let Err(e) = ledger::put(stage.as_ref(), &l).await {
        tracing::warn!(error = %e, "could not write the run's ledger record");
    }
    let mut bill = cost::run_cost(&l, &PriceTable::default());
    bill.baselines = baseline::of(stage.as_ref(), &rec, &bill).await;
    let html = Bytes::from(html::render(&rec, &bill));
    match crate::stage::put(stage.as_ref(), &report_key(&rec.plan.run_id), html).await {
        Ok(put) => tracing::info!(url = %put.url, "run report written"),
        Err(e) => tracing::warn!(error = %e, "could not write the run report"),
    }
    Ok(Published {
        report: RunReport::of(&rec, bill.clone()),
        record: rec,
        bill,
    })
}

/// The run's HTML report, and its run id.
pub async fn html_of(
    stages: &dyn crate::stage::StageOpener,
    plan_url: &str,
    memory_mb: u32,
) -> Result<(String, String), StageError> {
    let (rec, bill) = read_run(stages, plan_url, &assuming(memory_mb)).await?;
    Ok((html::render(&rec, &bill), rec.plan.run_id.clone()))
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n.saturating_sub(1)) {
        Some((i, _)) if s.chars().count() > n => format!("{}…", &s[..i]),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::snapshot::RestoreRecord;

    fn record(available: Option<&str>, deleted: Option<&str>) -> RestoreRecord {
        RestoreRecord {
            snapshot: "snap".into(),
            instance: "pgshift-r1".into(),
            instance_class: "db.r6g.large".into(),
            engine: Some("postgres".into()),
            started_at: Some("2026-12-03T10:00:00Z".into()),
            available_at: available.map(str::to_string),
            deleted_at: deleted.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn a_restored_instance_is_billed_from_available_to_deleted_with_the_ten_minute_minimum() {
        // 12 min waiting (not billed), 30 min available: 30 min × $0.225/h.
        let c = RestoreCost::of(&record(Some("2026-12-03T10:12:00Z"), Some("2026-12-03T10:42:00Z")));
        assert_eq!((c.wait_seconds, c.life_seconds), (Some(720.0), Some(2520.0)));
        assert_eq!(c.billed_seconds, 1800.0);
        assert!((c.dollars - 0.1125).abs() < 1e-9, "{}", c.dollars);
        // 2 min available: the 10-minute minimum.
        let c = RestoreCost::of(&record(Some("2026-12-03T10:12:00Z"), Some("2026-12-03T10:14:00Z")));
        assert_eq!(c.billed_seconds, 600.0);
        // Storage: 100 GiB of gp3 for the 42 minutes from the restore to the deletion, at $0.115 a GB-month.
        let mut r = record(Some("2026-12-03T10:12:00Z"), Some("2026-12-03T10:42:00Z"));
        (r.allocated_gb, r.storage_type) = (Some(100), Some("gp3".into()));
        let s = RestoreCost::of(&r).storage.expect("priced");
        assert!((s.gb_months - 100.0 * 2520.0 / 3600.0 / 730.0).abs() < 1e-12, "{s:?}");
        assert!((s.dollars - s.gb_months * 0.115).abs() < 1e-12);
        r.storage_type = Some("aurora".into());
        assert_eq!(RestoreCost::of(&r).storage, None, "Aurora's volume is billed otherwise");
        // Never available: never billed.
        let c = RestoreCost::of(&record(None, Some("2026-12-03T10:14:00Z")));
        assert_eq!((c.billed_seconds, c.dollars), (0.0, 0.0));
        // Not deleted: at least the minimum, and the line says who deletes it.
        let c = RestoreCost::of(&record(Some("2026-12-03T10:12:00Z"), None));
        assert_eq!(c.billed_seconds, 600.0);
        assert!(
            c.line().contains("NOT deleted") && c.line().contains("pgshift gc"),
            "{}",
            c.line()
        );
    }

    #[test]
    fn counts_group_by_thousands_and_words_paste_into_a_shell() {
        let t: Vec<String> = [0, 999, 1_000, 3_000_000, 1_234_567_890]
            .into_iter()
            .map(thousands)
            .collect();
        assert_eq!(t, ["0", "999", "1,000", "3,000,000", "1,234,567,890"]);
        assert_eq!(shell_word("file:///tmp/stage"), "file:///tmp/stage");
        assert_eq!(shell_word("it's a run"), "'it'\\''s a run'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn aurora_and_unknown_classes_are_priced_apart() {
        assert_eq!(rds_hourly_price("db.r6g.large", Some("aurora-postgresql")), Some(0.26));
        assert_eq!(rds_hourly_price("db.r6g.large", Some("postgres")), Some(0.225));
        assert_eq!(rds_hourly_price("db.t4g.micro", Some("aurora-postgresql")), None);
        let mut r = record(Some("2026-12-03T10:12:00Z"), Some("2026-12-03T10:42:00Z"));
        r.instance_class = "db.x2iedn.32xlarge".into();
        let c = RestoreCost::of(&r);
        assert_eq!((c.hourly, c.dollars), (None, 0.0));
        assert!(c.line().contains("price of db.x2iedn.32xlarge unknown"), "{}", c.line());
    }
}
