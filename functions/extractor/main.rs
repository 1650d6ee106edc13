//! Lambda `extractor`: one `ExtractTask` (a Map item) in; its key range as Parquet parts on the stage; the
//! `ExtractResult` out. Handler: `pgshift::entry::handlers::extractor`.
//! Configuration (`pgshift::entry::config`): PGSHIFT_SOURCE and/or PGSHIFT_SOURCE_SECRET_ARN; PGSHIFT_STACK, the
//! `Stack` dimension of the part's EMF metrics line.

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
    let stack = std::env::var("PGSHIFT_STACK").unwrap_or_else(|_| "pgshift".into());
    serve((ctx, stack), |c, input| async move {
        let input = handlers::extractor_input(input)?;
        let attempt = input.attempt;
        let out = handlers::extractor(&c.0, input).await?;
        // The part's metrics as an EMF line on standard output (CloudWatch turns it into metrics).
        let now = pgshift::contract::clock::unix_now();
        println!("{}", pgshift::report::metrics::part_line(&out, &c.1, attempt, now));
        Ok::<_, pgshift::ExtractError>(out)
    })
    .await
}
