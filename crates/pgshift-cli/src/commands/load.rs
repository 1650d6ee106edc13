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
    /// Print every statement the load would send to the warehouse, in order, one block a transaction, and send
    /// none: nothing is read from or written to the warehouse (AWS is not called), nothing is written to the stage.
    /// What the load would read from the warehouse is taken as absent (a target to create), or from --assume-target.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: the existing targets' columns, as information_schema.columns has them, in a JSON file:
    /// {"sales.orders": [{"name": "id", "data_type": "bigint"}, {"name": "note", "data_type": "character varying",
    /// "char_length": 256}]} (also precision, scale). Only columns: the dry run cannot see a target's distribution
    /// and sort keys, grants or dependent views, so it shows a replace by rename and no refused design change where
    /// the real load might replace rows (and say why) or refuse.
    #[arg(long, requires = "dry_run", value_name = "FILE")]
    assume_target: Option<std::path::PathBuf>,
}

pub(crate) async fn run(args: LoadArgs) -> Result<()> {
    let config = args.config.read()?;
    let warehouse = need(&args.warehouse, config.warehouse.clone(), "warehouse")?;
    let req = LoadRequest {
        plan_url: args.plan.clone(),
        results: None,
        options: args.load.over(config.load)?,
        ..LoadRequest::default()
    };
    if args.dry_run {
        return dry_run(&warehouse, args.assume_target.as_deref(), req).await;
    }
    let warehouse: Arc<dyn Warehouse> = pgshift::warehouse::warehouse(&warehouse).await?;
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

/// `--dry-run`: the load's transactions, printed as SQL a reader can review (and a client run), nothing sent.
async fn dry_run(url: &str, assume: Option<&std::path::Path>, req: LoadRequest) -> Result<()> {
    let assumed = match assume {
        Some(path) => assumed_targets(path)?,
        None => Vec::new(),
    };
    let wh = pgshift::warehouse::dryrun::DryRunWarehouse::of(url, &assumed)
        .map_err(|e| crate::commands::exit::usage(format!("--warehouse: {e}")))?;
    let txs = match pgshift::load::dry_run(Arc::new(UrlStages::default()), Arc::new(wh), req).await {
        Ok(t) => t,
        Err(e) => bail!("{e} [{}]", e.name()),
    };
    for (i, t) in txs.iter().enumerate() {
        if let [one] = t.statements.as_slice() {
            // Sent on its own (the Data API's ExecuteStatement): no transaction block, which some statements refuse
            // (ALTER COLUMN … TYPE) or are never put in (ANALYZE).
            out!("-- {} of {}: one statement, on its own", i + 1, txs.len());
            out!("{one};\n");
            continue;
        }
        out!(
            "-- transaction {} of {}: {} statements",
            i + 1,
            txs.len(),
            t.statements.len()
        );
        out!("BEGIN;");
        for s in &t.statements {
            out!("{s};");
        }
        out!("COMMIT;\n");
    }
    Ok(())
}

/// `--assume-target FILE`: `{"schema.table": [{"name", "data_type", "char_length"?, "precision"?, "scale"?}]}`.
fn assumed_targets(
    path: &std::path::Path,
) -> Result<
    Vec<(
        pgshift::contract::model::TableRef,
        Vec<pgshift::warehouse::WarehouseColumn>,
    )>,
> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Col {
        name: String,
        data_type: String,
        char_length: Option<i64>,
        precision: Option<i64>,
        scale: Option<i64>,
    }
    let bad = |why: String| crate::commands::exit::usage(format!("--assume-target {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let map: std::collections::BTreeMap<String, Vec<Col>> =
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    map.into_iter()
        .map(|(t, cols)| {
            let table = pgshift::contract::model::TableRef::parse(&t).map_err(bad)?;
            let cols = cols
                .into_iter()
                .map(|c| pgshift::warehouse::WarehouseColumn {
                    name: c.name,
                    data_type: c.data_type,
                    char_length: c.char_length,
                    precision: c.precision,
                    scale: c.scale,
                })
                .collect();
            Ok((table, cols))
        })
        .collect()
}

/// What a failed load committed, table by table: never a failure that hides it.
fn committed_of(tables: &[pgshift::contract::load::TableLoad]) -> String {
    let committed: Vec<String> = tables
        .iter()
        .filter(|t| t.status.is_committed())
        .map(|t| format!("{} ({} rows)", t.table, t.committed_rows.unwrap_or(0)))
        .collect();
    let evolved: Vec<String> = tables
        .iter()
        .flat_map(|t| t.evolved.iter().map(move |s| format!("{}: {s}", t.table)))
        .collect();
    let rows = match committed.as_slice() {
        [] if !evolved.is_empty() => {
            "no table of this run was committed: every table holds the rows it held".to_string()
        }
        [] => return "nothing of this run was committed: the warehouse is as it was".to_string(),
        c => format!(
            "committed before the failure: {} of {} tables, {}; every other table holds the rows it held",
            c.len(),
            tables.len(),
            pgshift::contract::code::first_few(c, ", ")
        ),
    };
    match evolved.is_empty() {
        true => rows,
        false => format!(
            "{rows}; changed before the load transaction, and kept: {}",
            pgshift::contract::code::first_few(&evolved, "; ")
        ),
    }
}

fn dropped_of(dropped: &[String]) -> String {
    match dropped {
        [] => "no staging table was left".to_string(),
        d => format!("staging tables dropped: {}", d.join(", ")),
    }
}
