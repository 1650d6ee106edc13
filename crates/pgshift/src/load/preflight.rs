//! The pre-flight check, before anything is extracted: the warehouse and the stage reached, and written; the
//! warehouse user's privileges checked against what the run will ask of it (`load::grants`).

use std::time::Instant;

use bytes::Bytes;

use crate::contract::load::{LoadOptions, PreflightRequest, PreflightResult};
use crate::stage::run;
use crate::warehouse::{self, WarehouseError};

use super::context::{stage_of, LoadContext};
use super::error::LoadError;
use super::{grants, triggers};

/// Before the extraction: the warehouse reached and written (its `pgshift` schema created if missing), and an object
/// written to the run's stage directory and read back, so that an unreachable warehouse or a stage that refuses
/// writes is found in seconds, not after the whole extraction. First of all on the warehouse, the grants a run needs
/// (`load::grants`, one read-only query): a user without them fails here by name, with the statements to run.
pub async fn preflight(ctx: &LoadContext, req: PreflightRequest) -> Result<PreflightResult, LoadError> {
    let started = Instant::now();
    // The warehouse first: a wrong host, port or password is named in seconds, not after retries.
    ctx.warehouse
        .reach()
        .await
        .map_err(|e| LoadError::Warehouse(preflight_context(e)))?;
    let stage = stage_of(ctx, &req.plan_url).await?;
    let (_, run_dir) = run::plan_dirs(&req.plan_url)?;
    let key = format!("{run_dir}/preflight.json");
    let body = serde_json::json!({"checked_at": crate::contract::clock::now_rfc3339().0}).to_string();
    let put = crate::stage::put(stage.as_ref(), &key, Bytes::from(body)).await?;
    stage.get(&key).await?;
    let wh = ctx.warehouse.as_ref();
    let plan = run::read_plan(stage.as_ref(), &req.plan_url).await?;
    grants::check(wh, &plan).await.map_err(|e| match e {
        LoadError::Warehouse(w) => LoadError::Warehouse(preflight_context(w)),
        other => other,
    })?;
    // Set-ups of every run take turns where the dialect needs it: two concurrent CREATE SCHEMA IF NOT EXISTS of one
    // name fail with a duplicate key in PostgreSQL.
    let mut ddl: Vec<String> = wh.dialect().setup_lock().into_iter().collect();
    ddl.push("CREATE SCHEMA IF NOT EXISTS \"pgshift\"".into());
    warehouse::execute(wh, ddl)
        .await
        .map_err(|e| LoadError::Warehouse(preflight_context(e)))?;
    warehouse::count(wh, "SELECT 1".into())
        .await
        .map_err(|e| LoadError::Warehouse(preflight_context(e)))?;
    triggers::check(wh, &plan, &mut LoadOptions::default()).await?;
    super::incremental::preflight(wh, stage.as_ref(), &plan).await?;
    tracing::info!(stage = %put.url, "pre-flight: warehouse and stage reached and written");
    Ok(PreflightResult {
        warehouse: format!("{:?}", wh.dialect()),
        stage_object: put.url,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A warehouse error of the pre-flight check, saying that nothing was extracted yet.
fn preflight_context(e: WarehouseError) -> WarehouseError {
    match e {
        WarehouseError::Sql { detail, retryable } => WarehouseError::Sql {
            detail: format!("before extracting anything, the warehouse check failed: {detail}"),
            retryable,
        },
        WarehouseError::Connect {
            at,
            cause,
            hint,
            not_found,
            ..
        } => WarehouseError::Connect {
            context: "before extracting anything: ".into(),
            at,
            cause,
            hint,
            not_found,
        },
        other => other,
    }
}
