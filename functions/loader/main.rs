//! Lambda `loader`: `{"action": "start" | "check" | "cleanup", …}` in (the Load, CheckLoad and Cleanup states);
//! load progress or the cleanup's result out. Handler: `pgshift::entry::handlers::loader`.
//! Configuration (`pgshift::entry::config`): PGSHIFT_WAREHOUSE (and PGSHIFT_WAREHOUSE_SECRET_ARN for a postgres:// one),
//! PGSHIFT_EXTRACTOR_MEMORY_MB for the run report's cost.

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
    let ctx = LoadContext::new(Arc::new(UrlStages::default()), warehouse);
    serve(ctx, move |c, input| async move {
        handlers::loader(&c, input, memory_mb).await
    })
    .await
}
