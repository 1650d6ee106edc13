//! Staging tables of dead runs: a run killed (kill -9, a Lambda timed out, a machine lost) or a load that failed
//! without its Cleanup leaves its staging tables behind. The staging registry (`pgshift.staging`, written in the
//! set-up transaction that creates each staging table) names every one with its run and stage; each run's records on
//! its stage say whether it can still touch them ([`Liveness`]). Only the dead runs' tables are dropped: the next load
//! of the same target does it, and `pgshift gc --warehouse` does it for the whole warehouse.

use super::context::LoadContext;
use super::error::LoadError;
use super::statements::{drop_staging_sql, registry_sql, registry_table};
use crate::contract::model::TableRef;
use crate::stage::run::{liveness, Liveness};
use crate::warehouse::{self, Cell};

/// One staging table the registry names, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Collected {
    pub staging: String,
    pub target: String,
    pub run_id: String,
    /// Its run is dead: it is garbage.
    pub dead: bool,
    /// Dropped (dead, and not a dry run), or kept, and why.
    pub dropped: bool,
    pub why: String,
}

/// What to collect: the staging tables of some targets (a load's, before it sets them up) or all; never those of
/// `own_run`.
pub struct GcScope<'a> {
    pub targets: Option<&'a [TableRef]>,
    pub own_run: Option<&'a str>,
    /// Report what would be dropped, drop nothing.
    pub dry_run: bool,
}

struct Row {
    staging: TableRef,
    target: TableRef,
    run_id: String,
    stage: String,
}

/// Drops the staging tables of dead runs in `scope`; keeps, and reports, those of runs that may still be running.
pub async fn collect(ctx: &LoadContext, scope: &GcScope<'_>) -> Result<Vec<Collected>, LoadError> {
    let wh = ctx.warehouse.as_ref();
    if warehouse::columns(wh, &registry_table()).await?.is_empty() {
        return Ok(Vec::new());
    }
    let rows = wh.query(registry_sql()).await?;
    let mut out = Vec::new();
    for row in rows.iter().filter_map(|r| parse_row(r)) {
        let wanted = scope.targets.is_none_or(|ts| ts.contains(&row.target));
        if !wanted || Some(row.run_id.as_str()) == scope.own_run {
            continue;
        }
        let verdict = match ctx.stages.open(&row.stage).await {
            Ok(stage) => match liveness(stage.as_ref(), &row.run_id).await {
                Ok(l) => l,
                Err(e) => Liveness::Live(format!("its stage could not be read ({e})")),
            },
            Err(e) => Liveness::Live(format!("its stage {} could not be opened ({e})", row.stage)),
        };
        let (dead, why) = match verdict {
            Liveness::Dead(w) => (true, w),
            Liveness::Live(w) => (false, w),
        };
        if dead && !scope.dry_run {
            let drop = drop_staging_sql(&row.staging)?;
            warehouse::execute(wh, drop).await?;
        }
        tracing::info!(staging = %row.staging, run = %row.run_id, dropped = dead && !scope.dry_run, %why,
            "staging table of another run");
        out.push(Collected {
            staging: row.staging.to_string(),
            target: row.target.to_string(),
            run_id: row.run_id,
            dead,
            dropped: dead && !scope.dry_run,
            why,
        });
    }
    Ok(out)
}

/// The staging tables the registry names for run `run_id` on the stage `stage_url` (none when there is no registry):
/// what a Cleanup drops, with or without the run's plan.
pub(super) async fn staging_of_run(
    wh: &dyn warehouse::Warehouse,
    run_id: &str,
    stage_url: &str,
) -> Result<Vec<TableRef>, LoadError> {
    if warehouse::columns(wh, &registry_table()).await?.is_empty() {
        return Ok(Vec::new());
    }
    let rows = wh.query(registry_sql()).await?;
    Ok(rows
        .iter()
        .filter_map(|r| parse_row(r))
        .filter(|r| r.run_id == run_id && r.stage.trim_end_matches('/') == stage_url.trim_end_matches('/'))
        .map(|r| r.staging)
        .collect())
}

fn parse_row(r: &[Cell]) -> Option<Row> {
    let text = |i: usize| match r.get(i) {
        Some(Cell::Text(s)) => Some(s.clone()),
        _ => None,
    };
    Some(Row {
        staging: TableRef::new(text(0)?, text(1)?),
        target: TableRef::new(text(2)?, text(3)?),
        run_id: text(4)?,
        stage: text(5)?,
    })
}
