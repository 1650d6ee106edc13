//! Lambda `planner`: an RDS snapshot event or a manual run input in; the plan and the task list written to the
//! stage; the plan summary out (the state machine's `$.plan`). Handler: `pgshift::entry::handlers::planner`.
//! Configuration (`pgshift::entry::config`): PGSHIFT_SOURCE and/or PGSHIFT_SOURCE_SECRET_ARN, PGSHIFT_STAGE,
//! PGSHIFT_TABLES, PGSHIFT_EXCLUDE, PGSHIFT_MAX_CONCURRENCY, PGSHIFT_SLICES, PGSHIFT_PLAN_DEFAULTS.

use std::sync::Arc;

use pgshift::entry::config::{self, ProcessEnv, SecretsManager};
use pgshift::entry::handlers;
use pgshift::plan::PlanContext;
use pgshift::UrlStages;
use pgshift_functions::{fatal, serve};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pgshift_functions::init_tracing();
    let source = config::source(&ProcessEnv, &SecretsManager::default())
        .await
        .map_err(fatal)?;
    let defaults = config::planner_defaults(&ProcessEnv).map_err(fatal)?;
    let ctx = PlanContext {
        source: Arc::new(source),
        stages: Arc::new(UrlStages::default()),
    };
    serve((ctx, defaults), |c, input| async move {
        handlers::planner(&c.0, &c.1, handlers::planner_input(input)?).await
    })
    .await
}
