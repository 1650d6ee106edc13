//! Lambda `loader`: `{"action": "start" | "check" | "cleanup", …}` in (the Load, CheckLoad and Cleanup states);
//! load progress or the cleanup's result out. Handler: `pgshift::entry::handlers::loader`.
//! Configuration (`pgshift::entry::config`): PGSHIFT_WAREHOUSE (and PGSHIFT_WAREHOUSE_SECRET_ARN for a postgres:// one).

use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use pgshift::entry::config::{self, ProcessEnv, SecretsManager};
use pgshift::load::LoadContext;
use pgshift::UrlStages;
use pgshift_functions::{diagnostic, fatal};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pgshift_functions::init_tracing();
    let warehouse = config::warehouse(&ProcessEnv, &SecretsManager::default())
        .await
        .map_err(fatal)?;
    let ctx = Arc::new(LoadContext {
        stages: Arc::new(UrlStages::default()),
        warehouse,
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let ctx = ctx.clone();
        async move {
            pgshift::entry::handlers::loader(&ctx, event.payload)
                .await
                .map_err(|e| diagnostic(e.name(), e))
        }
    }))
    .await
}
