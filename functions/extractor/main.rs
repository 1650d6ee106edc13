//! Lambda `extractor`: one `ExtractTask` (a Map item) in; its key range as Parquet parts on the stage; the
//! `ExtractResult` out. Handler: `pgshift::entry::handlers::extractor`.
//! Configuration (`pgshift::entry::config`): PGSHIFT_SOURCE and/or PGSHIFT_SOURCE_SECRET_ARN.

use std::sync::Arc;

use pgshift::entry::config::{self, ProcessEnv, SecretsManager};
use pgshift::entry::handlers;
use pgshift::{ExtractContext, UrlStages};
use pgshift_functions::{fatal, serve};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pgshift_functions::init_tracing();
    let source = config::source(&ProcessEnv, &SecretsManager::default())
        .await
        .map_err(fatal)?;
    let ctx = ExtractContext {
        source: Arc::new(source),
        stages: Arc::new(UrlStages::default()),
    };
    serve(ctx, |c, input| async move {
        handlers::extractor(&c, handlers::extractor_input(input)?).await
    })
    .await
}
