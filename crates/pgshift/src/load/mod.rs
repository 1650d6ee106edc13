//! Layer 4, the loader: every part verified landed, one manifest and one COPY per table into a staging table, the row
//! count reconciled, then the target changed in one transaction, so a failure at any point leaves the target as it was.
//!
//! Modes: `replace` (the target's rows become the run's), `append`, `merge` (rows with the same key replaced). Each
//! ends in a single transaction: `DELETE`/`INSERT … SELECT` from staging, a row in `pgshift.load_log`, and the
//! staging table dropped; no `TRUNCATE` (it commits in Redshift). The log makes a rerun of the same run id a no-op,
//! so nothing is loaded twice. `atomic: run` swaps every table in one transaction.
//!
//! The warehouse is a port ([`Warehouse`](crate::warehouse::Warehouse)); `postgres` streams the Parquet parts into staging with binary COPY.

mod analyze;
mod cleanup;
mod context;
mod drift;
mod dryrun;
mod error;
pub mod gc;
pub mod grants;
mod incremental;
mod keyed;
mod parts;
mod preflight;
mod progress;
mod setup;
mod soft;
mod start;
mod statements;
mod submit;
mod triggers;
mod verify;

pub use cleanup::cleanup;
pub use context::LoadContext;
pub use dryrun::dry_run;
pub use error::LoadError;
pub use preflight::preflight;
pub use progress::check;
pub use start::{hold_run, load, start};
/// The staging table a load of a target uses in a run (beside the target, named after it and the run).
pub use statements::staging_table;

use crate::contract::load::*;

/// The load's actions of the loader Lambda, its input parsed by `entry::handlers`: `preflight`, `start`, `check` and
/// `cleanup`. `sweep` and `finish` are the entry's (they reach beyond the load) and are refused here.
pub async fn handle(ctx: &LoadContext, input: LoaderInput) -> Result<serde_json::Value, LoadError> {
    let out = match input {
        LoaderInput::Preflight(req) => serde_json::to_value(preflight(ctx, req).await?),
        LoaderInput::Start(req) => serde_json::to_value(start(ctx, req).await?),
        LoaderInput::Check { progress } => serde_json::to_value(check(ctx, progress).await?),
        LoaderInput::Cleanup(req) => serde_json::to_value(cleanup(ctx, req).await?),
        other @ (LoaderInput::Sweep {} | LoaderInput::Finish(_)) => {
            return Err(LoadError::InvalidRequest(format!(
                "loader action {:?} is not the load's (entry::handlers::loader answers it)",
                other.action()
            )))
        }
    };
    out.map_err(|e| LoadError::InvalidRequest(format!("loader output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::model::TableRef;

    /// Step Functions caps a state at 256 KiB: a load of many tables, all pending at once, must stay well inside it.
    #[test]
    fn the_state_of_a_thousand_pending_tables_stays_small() {
        let pending = (0..1000)
            .map(|i| PendingLoad {
                statement_id: uuid::Uuid::new_v4().to_string(),
                tables: vec![TableRef::new(
                    "sales_mart",
                    format!("fact_table_with_a_long_name_{i:04}"),
                )],
                rows: vec![123_456_789],
                swaps: Vec::new(),
            })
            .collect();
        let p = LoadProgress {
            done: false,
            plan_url: "s3://a-stage-bucket/pgshift/runs/20261124T031245Z-rds-orders-db-2026-11-24-03-05/plan.json"
                .into(),
            wait_seconds: 60,
            checks: 12,
            started_at: 1.0,
            pending,
            queued: Vec::new(),
            options: LoadOptions::default(),
            deadline: None,
            summary: LoadSummary::default(),
        };
        let bytes = serde_json::to_vec(&p).expect("json").len();
        assert!(bytes < 160 * 1024, "{bytes} bytes for 1000 pending tables");
        eprintln!("state of 1000 pending tables: {bytes} bytes");
        let back: LoadProgress = serde_json::from_slice(&serde_json::to_vec(&p).expect("json")).expect("round trip");
        assert_eq!(back.pending[999].label(1).expected, Some(123_456_789));
    }
}
