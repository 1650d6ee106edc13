//! One table planned: its columns through the type table, its key checked, its split chosen ([`super::strategy`]) and
//! its boundaries read ([`super::boundaries`]), then the tasks, one per range.

use tokio_postgres::Client;

use super::boundaries::{key_correlation, key_quantiles, page_probes};
use super::select::Relation;
use super::strategy::{self, Choice, KeyMethod, Shape};
use super::PlanError;
use crate::contract::model::{Bounds, ColumnSpec, ExtractTask, KeyType};
use crate::contract::plan::{Estimates, PartEstimate, PlanRequest, SourceInfo, Strategy, TablePlan};
use crate::contract::sql;
use crate::contract::types::Cast;
use crate::source::{column_specs, key_columns, CatalogTable, SourceError};

/// What planning one table needs.
pub(super) struct TableContext<'a> {
    pub(super) client: &'a Client,
    pub(super) req: &'a PlanRequest,
    pub(super) run_id: &'a str,
    pub(super) rel: &'a Relation,
    pub(super) catalog: &'a CatalogTable,
    pub(super) parts: u32,
    pub(super) clamp_note: Option<String>,
    pub(super) source: &'a SourceInfo,
    /// Columns with few distinct values: dictionary-encoded in Parquet.
    pub(super) low_cardinality: Vec<String>,
    /// The planning budget is spent ([`crate::contract::plan::PlanSettings::planning_budget_seconds`]).
    pub(super) over_budget: bool,
    /// Where `--incremental diff` states are read, to keep their boundaries ([`super::incremental::kept_state`]).
    pub(super) stage: Option<&'a dyn crate::stage::Stage>,
}

/// How a table is split: the strategy, the ranges, why, and the rows they hold in all.
struct Split {
    strategy: Strategy,
    bounds: Vec<Bounds>,
    reason: String,
    rows: u64,
}

pub(super) async fn plan_table(cx: TableContext<'_>) -> Result<(TablePlan, Vec<ExtractTask>), PlanError> {
    let table = &cx.rel.table;
    let over = cx.req.overrides.get(&table.to_string()).cloned().unwrap_or_default();
    let policies = over.policies.clone().unwrap_or_else(|| cx.req.policies.clone());
    let casts: Vec<(String, Cast)> = over.casts.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let columns = column_specs(cx.catalog, &policies, &casts)?;
    let mut notes: Vec<String> = cx.clamp_note.clone().into_iter().collect();
    if cx.rel.kind == 'p' {
        notes.push(
            "partitioned: planned as its parent (the key range prunes partitions); leaves not planned separately"
                .into(),
        );
    }
    let key = over.key.clone().unwrap_or_else(|| cx.catalog.key.clone());
    // Refused before anything is extracted or changed.
    let mode = cx.req.load.as_ref().map(|l| l.mode).unwrap_or_default();
    let deletes = cx.req.load.as_ref().map(|l| l.deletes).unwrap_or_default();
    let incremental = crate::plan::incremental::mode_of_table(cx.req, table);
    if let Some(why) = crate::contract::incremental::soft_refusal(deletes, (mode, &incremental), table, &key) {
        return Err(PlanError::InvalidRequest(why));
    }
    if let Some(why) = crate::contract::load::keyless_merge(mode, table, &key) {
        return Err(PlanError::InvalidRequest(format!(
            "{why} (or leave it out of this run with --exclude {table})"
        )));
    }
    let design = over.design();
    design
        .check(&table.to_string(), &columns)
        .map_err(PlanError::InvalidRequest)?;
    let key_types = checked_key(&cx, &key).await?;
    let split = split(&cx, (&key, &key_types), &columns, &mut notes).await?;
    let (mut plan, tasks) = assemble(&cx, columns, key, split, notes);
    plan.design = design;
    Ok((plan, tasks))
}

/// The key's types, each column checked to hold no NULL (a key column the catalog allows NULLs in is counted).
async fn checked_key(cx: &TableContext<'_>, key: &[String]) -> Result<Vec<KeyType>, PlanError> {
    let table = &cx.rel.table;
    let mut types = Vec::new();
    for (c, ty) in key_columns(cx.catalog, table, key)? {
        if !c.not_null {
            let q = format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE {} IS NULL)",
                sql::table(table).map_err(PlanError::InvalidRequest)?,
                sql::ident(&c.name).map_err(PlanError::InvalidRequest)?
            );
            let has_null: bool = cx
                .client
                .query_one(&q, &[])
                .await
                .map_err(|e| SourceError::from_pg(table, 0, e))?
                .get(0);
            if has_null {
                return Err(PlanError::NullKey {
                    table: table.clone(),
                    column: c.name.clone(),
                });
            }
        }
        types.push(ty);
    }
    Ok(types)
}

/// The table's split: chosen from its statistics, with its boundaries read from the source for key ranges.
async fn split(
    cx: &TableContext<'_>,
    (key, key_types): (&[String], &[KeyType]),
    columns: &[ColumnSpec],
    notes: &mut Vec<String>,
) -> Result<Split, PlanError> {
    let rel = cx.rel;
    let shape = Shape {
        parts: cx.parts,
        bytes: rel.bytes,
        rows: rel.rows,
        pages: rel.pages,
        kind: rel.kind,
        key_types: key_types.to_vec(),
        server_version_num: cx.source.server_version_num,
        target_part_bytes: cx.req.settings.target_part_bytes,
        fixed_parts: cx.req.settings.parts.is_some(),
        static_source: cx.req.settings.static_source,
        samples_per_part: cx.req.settings.samples_per_part,
        over_budget: cx.over_budget,
    };
    let rows_est = rel.rows.max(0.0) as u64;
    match strategy::choose(&shape) {
        Choice::Single { reason } => Ok(Split {
            strategy: Strategy::Single,
            bounds: vec![Bounds::ALL],
            reason,
            rows: rows_est,
        }),
        Choice::Ctid { bounds, reason } => Ok(Split {
            strategy: Strategy::CtidPages { pages: rel.pages },
            bounds,
            reason,
            rows: rows_est,
        }),
        Choice::KeyRanges => match kept(cx, key, columns).await {
            Some(split) => Ok(split),
            None => key_split(cx, &shape, key, notes).await,
        },
    }
}

/// A `diff` table with a usable state: that state's boundaries, kept so that ranges compare (no key quantiles read).
async fn kept(cx: &TableContext<'_>, key: &[String], columns: &[ColumnSpec]) -> Option<Split> {
    let stage = cx.stage?;
    let s = super::incremental::kept_state((cx.client, stage), cx.req, (&cx.rel.table, key, columns)).await?;
    Some(Split {
        reason: format!(
            "{} ⇒ the {} range(s) of run {}, kept so that they compare",
            crate::contract::plan::human_bytes(cx.rel.bytes),
            s.ranges.len(),
            s.run_id
        ),
        rows: s.ranges.iter().map(|r| r.rows).sum(),
        bounds: s.ranges.into_iter().map(|r| r.bounds).collect(),
        strategy: Strategy::Kept { run_id: s.run_id },
    })
}

/// Key ranges: boundaries at the first keys of evenly spaced pages for a physically ordered key, else at quantiles
/// of a page sample.
async fn key_split(
    cx: &TableContext<'_>,
    shape: &Shape,
    key: &[String],
    notes: &mut Vec<String>,
) -> Result<Split, PlanError> {
    let (client, table, parts) = (cx.client, &cx.rel.table, cx.parts);
    let corr = key_correlation(client, table, &key[0])
        .await
        .unwrap_or(1.0)
        .abs()
        .min(1.0);
    let rows_est = cx.rel.rows.max(0.0) as u64;
    let probes = match strategy::key_method(shape, corr) {
        KeyMethod::Probes => page_probes(client, table, key, &shape.key_types, parts, cx.rel.pages).await?,
        KeyMethod::Sample { .. } => None,
    };
    let (boundaries, rows, strategy, how) = match probes {
        Some(b) => (
            b,
            rows_est,
            Strategy::KeyPageProbes {
                pages: cx.rel.pages,
                correlation: corr,
            },
            format!(
                "the first key on {} evenly spaced heap pages (key correlation {corr:.3})",
                parts - 1
            ),
        ),
        None => {
            let percent = strategy::sample_percent(shape, corr);
            let (b, sampled) = key_quantiles(client, table, key, &shape.key_types, parts, percent).await?;
            (
                b,
                if percent < 100.0 {
                    rows_est.max(sampled)
                } else {
                    sampled
                },
                Strategy::KeyQuantiles {
                    sampled_rows: sampled,
                    sample_percent: percent,
                },
                format!("key quantiles of a {percent:.2}% page sample ({sampled} keys, key correlation {corr:.3})"),
            )
        }
    };
    let got = boundaries.len() as u32 + 1;
    if got < parts {
        notes.push(format!(
            "{parts} parts wanted; the key has {got} distinct quantiles in the sample"
        ));
    }
    Ok(Split {
        strategy,
        bounds: strategy::key_ranges(boundaries),
        reason: format!(
            "{} ⇒ {parts} parts; boundaries at {how}",
            crate::contract::plan::human_bytes(cx.rel.bytes)
        ),
        rows,
    })
}

/// The table's plan and its tasks, one per range, with the dictionary columns the statistics suggest.
fn assemble(
    cx: &TableContext<'_>,
    columns: Vec<ColumnSpec>,
    key: Vec<String>,
    split: Split,
    notes: Vec<String>,
) -> (TablePlan, Vec<ExtractTask>) {
    let rel = cx.rel;
    let n = split.bounds.len() as u64;
    let parts: Vec<PartEstimate> = (0..n)
        .map(|i| PartEstimate {
            range_index: i as u32,
            rows: split.rows / n,
            bytes: rel.bytes / n,
        })
        .collect();
    let mut writer = cx.req.writer.clone();
    for c in &columns {
        if cx.low_cardinality.contains(&c.name) && !writer.dictionary_columns.contains(&c.name) {
            writer.dictionary_columns.push(c.name.clone());
        }
    }
    let tasks: Vec<ExtractTask> = split
        .bounds
        .into_iter()
        .enumerate()
        .map(|(i, b)| ExtractTask {
            task_id: String::new(),
            run_id: cx.run_id.to_string(),
            plan_id: String::new(),
            table: rel.table.clone(),
            columns: columns.clone(),
            key: if matches!(b, Bounds::Ctid { .. }) {
                Vec::new()
            } else {
                key.clone()
            },
            range_index: i as u32,
            bounds: b,
            stage: cx.req.stage.trim_end_matches('/').to_string(),
            writer: writer.clone(),
            statement_timeout_secs: cx.req.settings.statement_timeout_secs,
            source_endpoint: cx.req.source_endpoint.clone(),
            diff: None,
            since: None,
        })
        .collect();
    let kind = match rel.kind {
        'p' => "partitioned table",
        'v' => "view",
        'm' => "materialized view",
        'f' => "foreign table",
        _ => "table",
    };
    let plan = TablePlan {
        table: rel.table.clone(),
        kind: kind.into(),
        unlogged: rel.unlogged,
        key,
        strategy: split.strategy,
        reason: split.reason,
        columns,
        estimates: Estimates {
            rows: split.rows,
            bytes: rel.bytes,
            heap_bytes: rel.heap_bytes,
            total_bytes: rel.total_bytes,
            avg_row_bytes: rel.bytes / split.rows.max(1),
        },
        parts,
        notes,
        design: Default::default(),
        incremental: None,
    };
    (plan, tasks)
}
