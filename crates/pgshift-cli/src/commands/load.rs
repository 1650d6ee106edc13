//! `pgshift load`: load a planned and extracted run into the warehouse.

use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use pgshift::contract::load::{CleanupRequest, LoadRequest};
use pgshift::load::LoadContext;
use pgshift::warehouse::Warehouse;
use pgshift::UrlStages;

use crate::commands::flags::{need, ConfigArg, LoadFlags};

#[derive(Args)]
pub(crate) struct LoadArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The run's plan: <stage>/<run>/plan.json (the planner prints it as plan_url).
    #[arg(long)]
    plan: String,
    /// Warehouse: postgres://user@host:port/db, redshift://<cluster>/<db>?db_user=<user>&iam_role=<arn> (or
    /// secret_arn=<arn>), redshift-serverless://<workgroup>/<db>?iam_role=<arn>[&secret_arn=<arn>]. Also
    /// PGSHIFT_WAREHOUSE.
    #[arg(long, env = "PGSHIFT_WAREHOUSE", hide_env_values = true)]
    warehouse: Option<String>,
    #[command(flatten)]
    load: LoadFlags,
}

pub(crate) async fn run(args: LoadArgs) -> Result<()> {
    let config = args.config.read()?;
    let warehouse = need(&args.warehouse, config.warehouse.clone(), "warehouse")?;
    let warehouse: Arc<dyn Warehouse> = pgshift::warehouse::warehouse(&warehouse).await?;
    let req = LoadRequest {
        plan_url: args.plan,
        results: None,
        options: args.load.over(config.load)?,
        ..LoadRequest::default()
    };
    let ctx = LoadContext::new(Arc::new(UrlStages::default()), warehouse);
    let plan_url = req.plan_url.clone();
    let loaded = match pgshift::load::hold_run(&ctx, &plan_url).await {
        Ok(()) => pgshift::load::load(&ctx, req).await,
        Err(e) => bail!("{e} [{}]", e.name()),
    };
    match loaded {
        Ok(r) => {
            out!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Err(e) => {
            // As the state machine's Cleanup state would: staging dropped, the run marked failed on the stage.
            let state = serde_json::json!({
                "plan": {"plan_url": plan_url},
                "error": {"Error": e.name(), "Cause": e.to_string()},
            });
            let said = match pgshift::load::cleanup(&ctx, CleanupRequest { state }).await {
                Ok(c) => format!("{}; {}", committed_of(&c.tables), dropped_of(&c.dropped)),
                Err(ce) => format!(
                    "cleanup failed too: {ce}; what the warehouse committed is in its load log (pgshift.load_log); \
                     pgshift gc --warehouse drops what is left"
                ),
            };
            bail!("{e} [{}] ({said})", e.name())
        }
    }
}

/// What a failed load committed, table by table: never a failure that hides it.
fn committed_of(tables: &[pgshift::contract::load::TableLoad]) -> String {
    let committed: Vec<String> = tables
        .iter()
        .filter(|t| t.status.is_committed())
        .map(|t| format!("{} ({} rows)", t.table, t.committed_rows.unwrap_or(0)))
        .collect();
    match committed.as_slice() {
        [] => "nothing of this run was committed: the warehouse is as it was".to_string(),
        c => format!(
            "committed before the failure: {} of {} tables, {}; every other table is as it was",
            c.len(),
            tables.len(),
            pgshift::contract::code::first_few(c, ", ")
        ),
    }
}

fn dropped_of(dropped: &[String]) -> String {
    match dropped {
        [] => "no staging table was left".to_string(),
        d => format!("staging tables dropped: {}", d.join(", ")),
    }
}
