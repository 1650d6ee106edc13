//! Lambda `planner`: a `PlanRequest` in; the plan and the task list written to the stage; a small `PlanSummary` out
//! (the Distributed Map reads the tasks from the stage, so the state payload stays small). The handler lives in the
//! core crate (`pgshift::plan::handle`).
//!
//! Configuration: `PGSHIFT_SOURCE`, the source connection string.

use std::sync::Arc;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use pgshift::plan::{PlanContext, PlanError, PlanRequest, PlanSummary};
use pgshift::source::PgConnector;
use pgshift::UrlStages;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let source = std::env::var("PGSHIFT_SOURCE").map_err(|_| "PGSHIFT_SOURCE is not set")?;
    let ctx = Arc::new(PlanContext {
        source: Arc::new(PgConnector::new(&source)?),
        stages: Arc::new(UrlStages::default()),
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<PlanRequest>| {
        let ctx = ctx.clone();
        async move { handle(&ctx, event.payload).await }
    }))
    .await
}

async fn handle(ctx: &PlanContext, req: PlanRequest) -> Result<PlanSummary, Diagnostic> {
    match pgshift::plan::handle(ctx, req).await {
        Ok((_, summary)) => Ok(summary),
        Err(e) => Err(diagnostic(e)),
    }
}

/// The error name is what the state machine's Retry/Catch lists match on.
fn diagnostic(e: PlanError) -> Diagnostic {
    Diagnostic {
        error_type: e.name().to_string(),
        error_message: e.to_string(),
    }
}
