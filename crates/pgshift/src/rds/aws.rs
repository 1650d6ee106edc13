//! The RDS port on AWS, for the sweep (the loader's `sweep` action) and `pgshift gc`: list pgshift's instances and
//! clusters with their tags, delete them. The deployed state machine makes its restore calls itself through Step
//! Functions' SDK integrations; this adapter implements only what the sweep needs.

use aws_sdk_rds::Client;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::{field, Rds, RdsError};

/// The AWS SDK for RDS, in this process's region and credentials.
pub struct AwsRds {
    client: Client,
}

impl AwsRds {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// A client from the default credential chain.
    pub async fn from_env() -> Self {
        let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(Client::new(&conf))
    }
}

/// An RDS error code (`DBInstanceNotFound`, `Throttling`) as Step Functions names it: acronyms cased as words,
/// `Fault` made `Exception` (`Rds.DbInstanceNotFoundException`).
pub fn step_functions_name(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
        if c.is_ascii_uppercase() && prev_upper && !next_lower {
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(*c);
        }
    }
    let base = out.strip_suffix("Fault").unwrap_or(&out).to_string();
    let base = base.strip_suffix("Exception").unwrap_or(&base).to_string();
    format!("Rds.{base}Exception")
}

fn sdk_error<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> RdsError {
    if let Some(problem) = crate::awsclient::setup_problem(&e) {
        return RdsError::new("Rds.SdkClientException", problem);
    }
    let code = e.code().map(str::to_string);
    let message = e.message().map(str::to_string).unwrap_or_else(|| format!("{e:?}"));
    match code {
        Some(c) => RdsError::new(&step_functions_name(&c), message),
        None => RdsError::new("Rds.SdkClientException", message),
    }
}

fn tag_list(tags: &[aws_sdk_rds::types::Tag]) -> Value {
    tags.iter()
        .map(|t| json!({"Key": t.key(), "Value": t.value()}))
        .collect()
}

fn time(t: Option<&aws_smithy_types::DateTime>) -> Value {
    t.and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

impl AwsRds {
    async fn describe_instances(&self) -> Result<Value, RdsError> {
        let mut out = Vec::new();
        let mut pages = self.client.describe_db_instances().into_paginator().send();
        while let Some(page) = pages.next().await {
            for i in page.map_err(sdk_error)?.db_instances() {
                out.push(json!({
                    "DbInstanceIdentifier": i.db_instance_identifier(),
                    "DbInstanceStatus": i.db_instance_status(),
                    "DbInstanceClass": i.db_instance_class(),
                    "DbClusterIdentifier": i.db_cluster_identifier(),
                    "InstanceCreateTime": time(i.instance_create_time()),
                    "TagList": tag_list(i.tag_list()),
                }));
            }
        }
        Ok(json!({"DbInstances": out}))
    }

    async fn describe_clusters(&self) -> Result<Value, RdsError> {
        let mut out = Vec::new();
        let mut pages = self.client.describe_db_clusters().into_paginator().send();
        while let Some(page) = pages.next().await {
            for c in page.map_err(sdk_error)?.db_clusters() {
                let members: Vec<Value> = c
                    .db_cluster_members()
                    .iter()
                    .map(|m| json!({"DbInstanceIdentifier": m.db_instance_identifier()}))
                    .collect();
                out.push(json!({
                    "DbClusterIdentifier": c.db_cluster_identifier(),
                    "Status": c.status(),
                    "ClusterCreateTime": time(c.cluster_create_time()),
                    "TagList": tag_list(c.tag_list()),
                    "DbClusterMembers": members,
                }));
            }
        }
        Ok(json!({"DbClusters": out}))
    }

    async fn delete_instance(&self, request: &Value) -> Result<Value, RdsError> {
        let id = field(request, "DbInstanceIdentifier", "deleteDBInstance")?;
        let out = self
            .client
            .delete_db_instance()
            .db_instance_identifier(id)
            .skip_final_snapshot(true)
            .delete_automated_backups(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let status = out.db_instance().and_then(|i| i.db_instance_status());
        Ok(json!({"DbInstance": {"DbInstanceIdentifier": id, "DbInstanceStatus": status}}))
    }

    async fn delete_cluster(&self, request: &Value) -> Result<Value, RdsError> {
        let id = field(request, "DbClusterIdentifier", "deleteDBCluster")?;
        let out = self
            .client
            .delete_db_cluster()
            .db_cluster_identifier(id)
            .skip_final_snapshot(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let status = out.db_cluster().and_then(|c| c.status());
        Ok(json!({"DbCluster": {"DbClusterIdentifier": id, "Status": status}}))
    }
}

impl Rds for AwsRds {
    fn call<'a>(&'a self, action: &'a str, request: Value) -> BoxFuture<'a, Result<Value, RdsError>> {
        Box::pin(async move {
            match action {
                "describeDBInstances" if request.get("DbInstanceIdentifier").is_none() => {
                    self.describe_instances().await
                }
                "describeDBClusters" if request.get("DbClusterIdentifier").is_none() => self.describe_clusters().await,
                "deleteDBInstance" => self.delete_instance(&request).await,
                "deleteDBCluster" => self.delete_cluster(&request).await,
                other => Err(RdsError::new(
                    "Rds.InvalidActionException",
                    format!("{other} is made by the state machine, not by pgshift's RDS client"),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_codes_are_named_as_step_functions_names_them() {
        assert_eq!(
            step_functions_name("DBInstanceNotFound"),
            "Rds.DbInstanceNotFoundException"
        );
        assert_eq!(
            step_functions_name("DBSnapshotNotFoundFault"),
            "Rds.DbSnapshotNotFoundException"
        );
        assert_eq!(step_functions_name("Throttling"), "Rds.ThrottlingException");
        assert_eq!(
            step_functions_name("InvalidDBClusterStateFault"),
            "Rds.InvalidDbClusterStateException"
        );
    }
}
