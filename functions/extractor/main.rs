//! Lambda `extractor`: one `ExtractTask` (a Map item) in; its key range as Parquet parts on the stage; the
//! `ExtractResult` out. Handler: `pgshift::entry::handlers::extractor`.
//! Configuration (`pgshift::entry::config`): PGSHIFT_SOURCE and/or PGSHIFT_SOURCE_SECRET_ARN.

use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use pgshift::entry::config::{self, ProcessEnv, SecretsManager};
use pgshift::{ExtractContext, UrlStages};
use pgshift_functions::{diagnostic, fatal};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pgshift_functions::init_tracing();
    let source = config::source(&ProcessEnv, &SecretsManager::default())
        .await
        .map_err(fatal)?;
    let ctx = Arc::new(ExtractContext {
        source: Arc::new(source),
        stages: Arc::new(UrlStages::default()),
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let ctx = ctx.clone();
        async move {
            pgshift::entry::handlers::extractor(&ctx, event.payload)
                .await
                .map_err(|e| diagnostic(e.name(), e))
        }
    }))
    .await
}
