//! What the three Lambda binaries share: JSON logs, and errors reported the way the state machine matches them.

use lambda_runtime::Diagnostic;

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
