//! Lambda `loader`: a `LoadRequest` in (the plan URL, and the Map's results or none to read them from the stage), a
//! `LoadResult` out. The handler lives in the core crate (`pgshift::load::load`).
//!
//! Configuration: `PGSHIFT_WAREHOUSE`, the warehouse URL (`redshift://…`, `redshift-serverless://…`, `postgres://…`).

use std::sync::Arc;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use pgshift::load::{LoadContext, LoadError, LoadRequest, LoadResult};
use pgshift::UrlStages;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let url = std::env::var("PGSHIFT_WAREHOUSE").map_err(|_| "PGSHIFT_WAREHOUSE is not set")?;
    let warehouse = pgshift::load::warehouse(&url).await?;
    let ctx = Arc::new(LoadContext {
        stages: Arc::new(UrlStages::default()),
        warehouse,
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<LoadRequest>| {
        let ctx = ctx.clone();
        async move { handle(&ctx, event.payload).await }
    }))
    .await
}

async fn handle(ctx: &LoadContext, req: LoadRequest) -> Result<LoadResult, Diagnostic> {
    pgshift::load::load(ctx, req).await.map_err(diagnostic)
}

/// The error name is what the state machine's Retry/Catch lists match on.
fn diagnostic(e: LoadError) -> Diagnostic {
    Diagnostic {
        error_type: e.name().to_string(),
        error_message: e.to_string(),
    }
}
