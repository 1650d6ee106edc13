//! Lambda `loader`: `{"action": "preflight" | "start" | "check" | "cleanup" | "sweep" | "finish", …}` in (the
//! Preflight, Load, CheckLoad, Cleanup, Sweep and Finish states), parsed once into `LoaderInput`;
//! load progress or the cleanup's result out. Handler: `pgshift::entry::handlers::loader`.
//! Configuration (`pgshift::entry::config`): PGSHIFT_WAREHOUSE (and PGSHIFT_WAREHOUSE_SECRET_ARN for a postgres:// one),
//! PGSHIFT_EXTRACTOR_MEMORY_MB for the run report's cost, PGSHIFT_LOADER_BUDGET_SECONDS (time to set tables up per
//! invocation),
//! PGSHIFT_STACK and PGSHIFT_SWEEP_AFTER_HOURS for the sweep; PGSHIFT_EVENT_BUS, PGSHIFT_OPENLINEAGE_URL and
//! PGSHIFT_LINEAGE_SOURCE for what a run's end tells (its events, EMF metrics on standard output, its lineage).

use std::sync::Arc;

use pgshift::entry::config::{self, ProcessEnv, SecretsManager};
use pgshift::entry::handlers;
use pgshift::load::LoadContext;
use pgshift::UrlStages;
use pgshift_functions::{fatal, serve};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pgshift_functions::init_tracing();
    let warehouse = config::warehouse(&ProcessEnv, &SecretsManager::default())
        .await
        .map_err(fatal)?;
    let memory_mb = config::extractor_memory_mb(&ProcessEnv).map_err(fatal)?;
    let restore = config::restore_settings(&ProcessEnv).map_err(fatal)?;
    let stages = Arc::new(UrlStages::default());
    let announce = config::announce(&ProcessEnv, stages.clone()).await.map_err(fatal)?;
    let mut ctx = LoadContext::new(stages, warehouse);
    ctx.budget = Some(config::loader_budget(&ProcessEnv).map_err(fatal)?);
    let sweep = handlers::SweepContext {
        rds: Arc::new(pgshift::rds::aws::AwsRds::from_env().await),
        request: pgshift::sweep::SweepRequest {
            stack: restore.stack,
            max_age_secs: f64::from(restore.sweep_after_hours) * 3600.0,
            dry_run: false,
        },
    };
    serve((ctx, sweep, announce), move |c, input| async move {
        let extras = handlers::LoaderExtras {
            sweep: Some(&c.1),
            announce: Some(&c.2),
            extractor_memory_mb: memory_mb,
        };
        handlers::loader(&c.0, &extras, handlers::loader_input(input)?).await
    })
    .await
}
