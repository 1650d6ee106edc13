//! The run's ledger record (`<run>/ledger.json`), built from what the stage holds of the run and what the caller
//! counted itself (a local run counts its invocations and state transitions), and written at the end of every run.

use bytes::Bytes;

use super::record::{self, RunRecord};
use crate::contract::layout::ledger_key;
use crate::contract::ledger::*;
use crate::contract::model::{StagedFile, TableRef};
use crate::stage::{puts_of, StageError, StageOpener};

/// What the caller knows beyond the stage.
#[derive(Debug, Clone, Default)]
pub struct LedgerFacts {
    /// The memory the run's functions are assumed to have where a record does not say (off Lambda).
    pub assumed_memory_mb: u32,
    /// The planner's and loader's invocations, counted (a local run); `None`: estimated from the records.
    pub invocations: Option<Vec<Billed>>,
    /// State transitions counted (a local run); `None`: estimated from the run's shape.
    pub transitions: Option<u64>,
    /// The warehouse's kind.
    pub warehouse: Option<String>,
}

/// Builds the ledger record of the run whose plan is at `plan_url`.
pub async fn build(stages: &dyn StageOpener, plan_url: &str, facts: &LedgerFacts) -> Result<Ledger, StageError> {
    let r = record::read(stages, plan_url).await?;
    Ok(of(&r, facts))
}

/// Writes a ledger record to its run's place on `stage`; returns its URL.
pub async fn put(stage: &dyn crate::stage::Stage, ledger: &Ledger) -> Result<String, StageError> {
    let body = serde_json::to_vec_pretty(ledger).unwrap_or_default();
    let put = crate::stage::put(stage, &ledger_key(&ledger.run_id), Bytes::from(body)).await?;
    tracing::info!(url = %put.url, run = %ledger.run_id, "ledger record written");
    Ok(put.url)
}

/// The ledger record of a run read back from its stage: pure, so its arithmetic is tested without a stage.
pub fn of(r: &RunRecord, facts: &LedgerFacts) -> Ledger {
    let memory = facts.assumed_memory_mb.max(128);
    let estimated = |function: &str, seconds: f64| Billed::estimated(function, seconds, memory);
    let tables: Vec<LedgerTable> = r.plan.tables.iter().map(|t| table_of(r, &t.table, memory)).collect();
    let load = r.load.as_ref();
    // What the planner and the loader recorded of themselves (actual on Lambda), else estimated from their times.
    let invocations = facts.invocations.clone().unwrap_or_else(|| {
        let mut v = vec![r.plan.billed.as_ref().map_or_else(
            || estimated("planner", r.plan.planning_seconds),
            |b| b.clone().assuming(memory),
        )];
        match load {
            Some(l) if !l.billed.is_empty() => v.extend(l.billed.iter().map(|b| b.clone().assuming(memory))),
            Some(l) => v.push(estimated("loader", l.seconds)),
            None => {}
        }
        v
    });
    let (transitions, transitions_basis) = match facts.transitions {
        Some(n) => (n, Basis::Actual),
        // The parent's states of a run (trigger, plan, pre-flight, load, the finish: about 14) and one per Map item
        // and per retry; the Redshift checks' Wait and CheckLoad (two a check) are not on the stage, so not counted.
        None => {
            let items = r.plan.tasks.len() as u64 + r.failed.len() as u64;
            (14 + items, Basis::Estimated)
        }
    };
    // The planner's lock, tasks and plan; the loader's pre-flight object, manifests, load record, report and this
    // ledger; the Map's result writer; a status record for a failed run. GETs: the plan, each result, each file's
    // checksum, the task list.
    let manifests = r.plan.tables.len() as u64;
    let record_puts = 3 + 1 + manifests + 1 + 1 + 1 + 2 + u64::from(r.failure.is_some());
    let record_gets = 2 + r.plan.tasks.len() as u64 + tables.iter().map(|t| t.files as u64).sum::<u64>() + 1;
    let part_bytes: u64 = tables.iter().map(|t| t.parquet_bytes).sum();
    let (started_at, ended_at) = r.span();
    Ledger {
        run_id: r.plan.run_id.clone(),
        plan_id: r.plan.plan_id.clone(),
        trigger: match &r.restore {
            Some(x) => Trigger::Snapshot {
                identifier: x.snapshot.clone(),
            },
            None => Trigger::Manual,
        },
        started_at,
        ended_at,
        status: r.status().label().to_string(),
        error: r.failure.as_ref().map(|(e, _)| e.clone()),
        tables,
        invocations,
        transitions,
        transitions_basis,
        stage_requests: StageRequests {
            put_class: record_puts,
            get_class: record_gets,
        },
        // Records are a few KiB each.
        stage_bytes: part_bytes + 4096 * (record_puts + r.plan.tasks.len() as u64),
        restore: r.restore.clone(),
        warehouse: facts.warehouse.clone(),
        warehouse_seconds: load.map_or(0.0, |l| l.tables.iter().flat_map(|t| &t.steps).map(|s| s.seconds).sum()),
        parts_deleted_at: load.and_then(|l| l.parts_deleted.as_ref()).map(|d| d.at),
    }
}

fn table_of(r: &RunRecord, table: &TableRef, memory: u32) -> LedgerTable {
    let results: Vec<_> = r.results.iter().filter(|x| &x.table == table).collect();
    let failed: Vec<_> = r.failed.iter().filter(|x| &x.table == table).collect();
    let files: Vec<&StagedFile> = results.iter().flat_map(|x| &x.files).collect();
    let mut invocations: Vec<Billed> = results
        .iter()
        .map(|x| match &x.billed {
            Some(b) => b.clone().assuming(memory),
            None => Billed::estimated("extractor", x.seconds, memory),
        })
        .collect();
    invocations.extend(failed.iter().map(|f| Billed::estimated("extractor", f.seconds, memory)));
    // Counted by every attempt that landed (failed attempts add their record); estimated from the objects when an
    // attempt did not count.
    let counted: Option<Vec<StageRequests>> = results.iter().map(|x| x.requests).collect();
    let (stage_requests, stage_requests_basis) = match counted {
        Some(c) if !c.is_empty() => (
            StageRequests {
                // A failed attempt's record, a kept range's marker.
                put_class: c.iter().map(|r| r.put_class).sum::<u64>()
                    + failed.len() as u64
                    + results.iter().filter(|x| x.reused).count() as u64,
                get_class: c.iter().map(|r| r.get_class).sum(),
            },
            Basis::Actual,
        ),
        _ => (
            StageRequests {
                // Each file, each result, each failed attempt's record; the resume check of each attempt.
                put_class: files.iter().map(|f| puts_of(f.bytes)).sum::<u64>() + (results.len() + failed.len()) as u64,
                get_class: (results.len() + failed.len()) as u64,
            },
            Basis::Estimated,
        ),
    };
    let committed = r
        .load
        .as_ref()
        .and_then(|l| l.tables.iter().find(|t| &t.table == table))
        .filter(|t| t.status.is_committed())
        .and_then(|t| t.committed_rows);
    LedgerTable {
        table: table.clone(),
        parts: results.len(),
        files: files.len(),
        rows: results.iter().map(|x| x.rows).sum(),
        source_bytes: results.iter().map(|x| x.source_bytes).sum(),
        parquet_bytes: files.iter().map(|f| f.bytes).sum(),
        retries: failed.len(),
        committed_rows: committed,
        invocations,
        stage_requests,
        stage_requests_basis,
    }
}

/// Parquet bytes per source byte the prediction assumes (zstd level 1 on typical tables: parts of 512 MiB of source
/// become 150–250 MB of Parquet, docs/planner.md).
pub const PREDICTED_PARQUET_RATIO: f64 = 0.4;

/// The ledger a plan predicts, before anything runs: each predicted part one extractor invocation at the planner's
/// assumed throughput, at `memory_mb`; Parquet at [`PREDICTED_PARQUET_RATIO`]; every figure estimated. What
/// `pgshift plan --explain` prices.
pub fn predicted(plan: &crate::contract::plan::Plan, memory_mb: u32, warehouse: Option<&str>) -> Ledger {
    let rate = plan.settings.throughput_bytes_per_sec.max(1) as f64;
    let file_bytes = plan
        .tasks
        .first()
        .map_or(256 << 20, |t| t.writer.target_file_bytes)
        .max(1);
    let billed = |function: &str, seconds: f64| Billed::estimated(function, seconds, memory_mb);
    let tables: Vec<LedgerTable> = plan
        .tables
        .iter()
        .map(|t| {
            let parquet: Vec<u64> = t
                .parts
                .iter()
                .map(|p| (p.bytes as f64 * PREDICTED_PARQUET_RATIO) as u64)
                .collect();
            let files: Vec<u64> = parquet
                .iter()
                .flat_map(|&b| {
                    let n = b.div_ceil(file_bytes).max(1);
                    (0..n).map(move |i| {
                        if i + 1 < n {
                            file_bytes
                        } else {
                            b - file_bytes * (n - 1)
                        }
                    })
                })
                .collect();
            LedgerTable {
                table: t.table.clone(),
                parts: t.parts.len(),
                files: files.len(),
                rows: t.parts.iter().map(|p| p.rows).sum(),
                source_bytes: t.parts.iter().map(|p| p.bytes).sum(),
                parquet_bytes: parquet.iter().sum(),
                retries: 0,
                committed_rows: None,
                invocations: t
                    .parts
                    .iter()
                    .map(|p| billed("extractor", p.bytes as f64 / rate))
                    .collect(),
                stage_requests: StageRequests {
                    put_class: files.iter().map(|&b| puts_of(b)).sum::<u64>() + t.parts.len() as u64,
                    get_class: t.parts.len() as u64,
                },
                stage_requests_basis: Basis::Estimated,
            }
        })
        .collect();
    let part_bytes: u64 = tables.iter().map(|t| t.parquet_bytes).sum();
    let files: u64 = tables.iter().map(|t| t.files as u64).sum();
    let manifests = plan.tables.len() as u64;
    Ledger {
        run_id: plan.run_id.clone(),
        plan_id: plan.plan_id.clone(),
        trigger: Trigger::Manual,
        started_at: plan.started_at,
        ended_at: plan.started_at,
        status: "predicted".into(),
        error: None,
        invocations: vec![billed("planner", plan.planning_seconds), billed("loader", 10.0)],
        transitions: 14 + plan.tasks.len() as u64,
        transitions_basis: Basis::Estimated,
        stage_requests: StageRequests {
            put_class: 3 + 1 + manifests + 4,
            get_class: 2 + plan.tasks.len() as u64 + files + 1,
        },
        stage_bytes: part_bytes + 4096 * (10 + plan.tasks.len() as u64),
        restore: None,
        warehouse: warehouse.map(str::to_string),
        // COPY of the parts at about 100 MB/s of Parquet.
        warehouse_seconds: part_bytes as f64 / 100e6,
        // A predicted run is priced as one that keeps its parts until the lifecycle rule: the most it can cost.
        parts_deleted_at: None,
        tables,
    }
}
