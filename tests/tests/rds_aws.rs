//! The RDS adapter on AWS (the sweep's and `pgshift gc`'s calls) at the SDK boundary, with recorded responses: the
//! describes are paged, only this stack's old `pgshift-` instances and clusters are deleted, with `SkipFinalSnapshot`,
//! and RDS's errors carry Step Functions' names.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use aws_sdk_rds::error::ErrorMetadata;
use aws_sdk_rds::operation::delete_db_cluster::DeleteDbClusterOutput;
use aws_sdk_rds::operation::delete_db_instance::{DeleteDBInstanceError, DeleteDbInstanceOutput};
use aws_sdk_rds::operation::describe_db_clusters::DescribeDbClustersOutput;
use aws_sdk_rds::operation::describe_db_instances::{DescribeDBInstancesError, DescribeDbInstancesOutput};
use aws_sdk_rds::primitives::DateTime;
use aws_sdk_rds::types::{DbCluster, DbClusterMember, DbInstance, Tag};
use aws_sdk_rds::Client;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use pgshift::rds::aws::AwsRds;
use pgshift::sweep::{sweep, SweepRequest};

const DAY_AGO: i64 = 86_400;

/// The identifiers deleted, with their `SkipFinalSnapshot`.
type Deleted = Arc<Mutex<Vec<(String, Option<bool>)>>>;

fn tags(stack: &str) -> Vec<Tag> {
    vec![
        Tag::builder().key("pgshift:stack").value(stack).build(),
        Tag::builder().key("pgshift:run").value("r-1").build(),
    ]
}

fn instance(id: &str, stack: Option<&str>, age_secs: i64) -> DbInstance {
    let now = DateTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64,
    );
    DbInstance::builder()
        .db_instance_identifier(id)
        .db_instance_status("available")
        .db_instance_class("db.r6g.large")
        .instance_create_time(DateTime::from_secs(now.secs() - age_secs))
        .set_tag_list(stack.map(tags))
        .build()
}

fn request() -> SweepRequest {
    SweepRequest {
        stack: "pgshift".into(),
        max_age_secs: 6.0 * 3600.0,
        dry_run: false,
    }
}

#[tokio::test]
async fn the_sweep_pages_the_describes_and_deletes_only_this_stacks_old_restores() -> Result<()> {
    // Each page answered once, and only to the request carrying exactly the marker the page before returned (none
    // for the first): a sweep that drops or repeats the marker asks for a page no rule serves.
    let page_1 = mock!(Client::describe_db_instances)
        .match_requests(|r| r.marker().is_none())
        .sequence()
        .output(|| {
            DescribeDbInstancesOutput::builder()
                .db_instances(instance("pgshift-dead", Some("pgshift"), DAY_AGO))
                .db_instances(instance("orders-prod", None, DAY_AGO))
                .marker("page-2")
                .build()
        })
        .build();
    let page_2 = mock!(Client::describe_db_instances)
        .match_requests(|r| r.marker() == Some("page-2"))
        .sequence()
        .output(|| {
            DescribeDbInstancesOutput::builder()
                .db_instances(instance("pgshift-young", Some("pgshift"), 60))
                .db_instances(instance("pgshift-other", Some("prod"), DAY_AGO))
                .db_instances(instance("pgshift-dead-2", Some("pgshift"), DAY_AGO))
                .build()
        })
        .build();
    let deleted: Deleted = Arc::default();
    let seen = deleted.clone();
    let delete = mock!(Client::delete_db_instance)
        .match_requests(move |r| {
            let id = r.db_instance_identifier().unwrap_or_default().to_string();
            seen.lock().unwrap().push((id, r.skip_final_snapshot()));
            true
        })
        .then_output(|| {
            DeleteDbInstanceOutput::builder()
                .db_instance(DbInstance::builder().db_instance_status("deleting").build())
                .build()
        });
    let clusters = mock!(Client::describe_db_clusters)
        .match_requests(|r| r.marker().is_none())
        .then_output(|| {
            DescribeDbClustersOutput::builder()
                .db_clusters(
                    DbCluster::builder()
                        .db_cluster_identifier("pgshift-aurora")
                        .status("available")
                        .cluster_create_time(DateTime::from_secs(0))
                        .set_tag_list(Some(tags("pgshift")))
                        .db_cluster_members(
                            DbClusterMember::builder()
                                .db_instance_identifier("pgshift-dead")
                                .build(),
                        )
                        .build(),
                )
                .db_clusters(
                    DbCluster::builder()
                        .db_cluster_identifier("analytics")
                        .status("available")
                        .cluster_create_time(DateTime::from_secs(0))
                        .build(),
                )
                .build()
        });
    let cluster_deleted: Deleted = Arc::default();
    let seen = cluster_deleted.clone();
    let delete_cluster = mock!(Client::delete_db_cluster)
        .match_requests(move |r| {
            let id = r.db_cluster_identifier().unwrap_or_default().to_string();
            seen.lock().unwrap().push((id, r.skip_final_snapshot()));
            true
        })
        .then_output(|| DeleteDbClusterOutput::builder().build());
    let client = mock_client!(
        aws_sdk_rds,
        RuleMode::MatchAny,
        [&page_1, &page_2, &delete, &clusters, &delete_cluster]
    );
    let out = sweep(&AwsRds::new(client), &request()).await?;
    assert_eq!(out.deleted_instances, ["pgshift-dead", "pgshift-dead-2"], "{out:?}");
    assert_eq!(out.deleted_clusters, ["pgshift-aurora"], "{out:?}");
    assert_eq!(out.kept, 3, "{out:?}");
    assert_eq!(
        *deleted.lock().unwrap(),
        [
            ("pgshift-dead".to_string(), Some(true)),
            ("pgshift-dead-2".to_string(), Some(true))
        ],
        "deleted without a final snapshot, nothing else"
    );
    assert_eq!(
        *cluster_deleted.lock().unwrap(),
        [("pgshift-aurora".to_string(), Some(true))]
    );
    assert!(page_1.is_exhausted() && page_2.is_exhausted(), "both pages were read");
    Ok(())
}

#[tokio::test]
async fn rds_errors_are_named_as_step_functions_names_them_and_a_refused_delete_is_reported_not_fatal() -> Result<()> {
    // Throttled listing: the sweep fails with a retryable name (the definition's Sweep state continues anyway).
    let throttled = mock!(Client::describe_db_instances).then_error(|| {
        DescribeDBInstancesError::generic(
            ErrorMetadata::builder()
                .code("Throttling")
                .message("Rate exceeded")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_rds, [&throttled]);
    let e = sweep(&AwsRds::new(client), &request()).await.expect_err("throttled");
    assert_eq!(e.name(), "Pipeline.Retryable.Rds", "{e}");
    assert!(e.to_string().contains("Rate exceeded"), "{e}");

    // A delete RDS refuses (the instance is still being modified): listed as failed, the rest go on.
    let pages = mock!(Client::describe_db_instances).then_output(|| {
        DescribeDbInstancesOutput::builder()
            .db_instances(instance("pgshift-busy", Some("pgshift"), DAY_AGO))
            .build()
    });
    let refuse = mock!(Client::delete_db_instance).then_error(|| {
        DeleteDBInstanceError::generic(
            ErrorMetadata::builder()
                .code("InvalidDBInstanceState")
                .message("Instance pgshift-busy is not in available state.")
                .build(),
        )
    });
    let clusters = mock!(Client::describe_db_clusters).then_output(|| DescribeDbClustersOutput::builder().build());
    let client = mock_client!(aws_sdk_rds, RuleMode::MatchAny, [&pages, &refuse, &clusters]);
    let out = sweep(&AwsRds::new(client), &request()).await?;
    assert!(out.deleted_instances.is_empty(), "{out:?}");
    assert_eq!(out.failed.len(), 1, "{out:?}");
    assert!(
        out.failed[0].contains("pgshift-busy") && out.failed[0].contains("Rds.InvalidDbInstanceStateException"),
        "{out:?}"
    );
    Ok(())
}
