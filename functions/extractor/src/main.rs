//! Lambda `extractor`: one `ExtractTask` in, one `ExtractResult` out. The handler lives in the core crate
//! (`pgshift::extract`); this binary only wires configuration and clients, once per cold start.
//!
//! Configuration: `PGSHIFT_SOURCE`, the source connection string.

use std::sync::Arc;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use pgshift::source::PgConnector;
use pgshift::{ExtractContext, ExtractError, ExtractTask, UrlStages};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let source = std::env::var("PGSHIFT_SOURCE").map_err(|_| "PGSHIFT_SOURCE is not set")?;
    let ctx = Arc::new(ExtractContext {
        source: Arc::new(PgConnector::new(&source)?),
        stages: Arc::new(UrlStages::default()),
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ExtractTask>| {
        let ctx = ctx.clone();
        async move { pgshift::extract(&ctx, event.payload).await.map_err(diagnostic) }
    }))
    .await
}

/// The error name is what the state machine's Retry/Catch lists match on.
fn diagnostic(e: ExtractError) -> Diagnostic {
    Diagnostic {
        error_type: e.name().to_string(),
        error_message: e.to_string(),
    }
}
