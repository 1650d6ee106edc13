//! Layer 2, the RDS control plane port: the few RDS API actions a snapshot run makes (restore, describe, delete), in
//! the JSON shapes of Step Functions' AWS SDK integrations, so the state machine's `arn:aws:states:::aws-sdk:rds:*`
//! tasks can be bound to it locally and the sweep can run against either side.
//!
//! Adapters: [`local::LocalRds`], the stand-in that restores a base backup into a throwaway PostgreSQL server, and
//! [`aws::AwsRds`], the AWS SDK (the sweep and `pgshift gc` on AWS; the deployed state machine calls RDS itself).

use futures_util::future::BoxFuture;
use serde_json::Value;

pub mod aws;
pub mod local;

/// An RDS API error, named as Step Functions names it: `Rds.` and the error code, `Fault` made `Exception` and
/// acronyms cased as words (`Rds.DbSnapshotNotFoundException`), the names the definition's Catch lists match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct RdsError {
    pub name: String,
    pub message: String,
}

impl RdsError {
    pub fn new(name: &str, message: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            message: message.into(),
        }
    }

    /// Worth another attempt (throttling, a service hiccup).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.name.as_str(),
            "Rds.ThrottlingException" | "Rds.InternalFailureException" | "Rds.ServiceUnavailableException"
        ) || self.name.starts_with("Rds.Sdk")
    }
}

pub const SNAPSHOT_NOT_FOUND: &str = "Rds.DbSnapshotNotFoundException";
pub const CLUSTER_SNAPSHOT_NOT_FOUND: &str = "Rds.DbClusterSnapshotNotFoundException";
pub const INSTANCE_NOT_FOUND: &str = "Rds.DbInstanceNotFoundException";
pub const CLUSTER_NOT_FOUND: &str = "Rds.DbClusterNotFoundException";
pub const INSTANCE_EXISTS: &str = "Rds.DbInstanceAlreadyExistsException";
pub const CLUSTER_EXISTS: &str = "Rds.DbClusterAlreadyExistsException";
pub const INVALID_SNAPSHOT_STATE: &str = "Rds.InvalidDbSnapshotStateException";
pub const INVALID_PARAMETER: &str = "Rds.InvalidParameterValueException";

/// One RDS API action, as `arn:aws:states:::aws-sdk:rds:<action>` calls it: the action in camelCase
/// (`describeDBInstances`), the request and the response in the integration's JSON.
pub trait Rds: Send + Sync {
    fn call<'a>(&'a self, action: &'a str, request: Value) -> BoxFuture<'a, Result<Value, RdsError>>;
}

/// A string field of a request, or an `InvalidParameterValue` error naming it.
pub(crate) fn field<'a>(request: &'a Value, name: &str, action: &str) -> Result<&'a str, RdsError> {
    request
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RdsError::new(INVALID_PARAMETER, format!("{action}: {name} is required")))
}
