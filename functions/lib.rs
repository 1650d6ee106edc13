//! What the three Lambda binaries share: JSON logs, and errors reported the way the state machine matches them.

use std::future::Future;
use std::sync::Arc;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use pgshift::entry::Named;
use serde_json::Value;

/// JSON log lines (CloudWatch), filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// A handler error as Lambda reports it: `errorType` is the stable name the state machine's Retry/Catch lists use.
pub fn diagnostic(name: &str, e: impl std::fmt::Display) -> Diagnostic {
    Diagnostic {
        error_type: name.to_string(),
        error_message: e.to_string(),
    }
}

/// A configuration error at cold start: logged with its message, then the process ends (Lambda reports an init
/// failure and the state machine's Retry on Lambda errors does not hide it for long).
pub fn fatal(e: pgshift::entry::config::ConfigError) -> lambda_runtime::Error {
    eprintln!("pgshift: configuration: {e}");
    e.into()
}

/// Runs a handler on the Lambda Runtime API: tracing set up, the context (clients built once, at cold start) shared
/// by every invocation, errors reported by their stable names. The three mains differ by their context and handler.
pub async fn serve<C, F, Fut, T, E>(ctx: C, handler: F) -> Result<(), lambda_runtime::Error>
where
    C: Send + Sync + 'static,
    F: Fn(Arc<C>, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: serde::Serialize,
    E: Named + std::fmt::Display,
{
    let ctx = Arc::new(ctx);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let call = handler(ctx.clone(), event.payload);
        async move { call.await.map_err(|e| diagnostic(e.name(), e)) }
    }))
    .await
}
