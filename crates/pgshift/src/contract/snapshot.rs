//! The RDS snapshot a run was started for, and how the run restores it: the temporary instance's name, tags and the
//! requests of the RDS calls the state machine makes (`docs/snapshots.md`).
//!
//! Field names of the requests and of the responses read back are those of Step Functions' AWS SDK integrations
//! (PascalCase with acronyms cased as words: `DbInstanceIdentifier`, `DbInstances[0].DbInstanceStatus`), as
//! <https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html> describes them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// A DB instance snapshot (`RDS DB Snapshot Event`).
    #[default]
    Instance,
    /// An Aurora DB cluster snapshot (`RDS DB Cluster Snapshot Event`).
    Cluster,
}

/// The snapshot a run was started for. A manual input may name only its `identifier` (and `kind`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Snapshot {
    pub kind: SnapshotKind,
    pub automated: bool,
    /// `SourceIdentifier`: the snapshot's name (`rds:` prefixed when automated).
    pub identifier: String,
    pub arn: String,
    /// The EventBridge event: its id, RDS event id and message, time, account and region.
    pub event_id: String,
    pub rds_event_id: String,
    pub message: String,
    pub time: String,
    pub account: String,
    pub region: String,
}

/// Where the source is read when it is not the configured endpoint: the instance restored from the snapshot. The
/// configured credentials (user, password, database, TLS) are kept; only host and port change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// Every instance and cluster pgshift creates starts with this, and only such are ever deleted.
pub const NAME_PREFIX: &str = "pgshift-";
/// The tag naming the stack (deployment) that created a restored instance: the sweep deletes only its own.
pub const TAG_STACK: &str = "pgshift:stack";
/// The tag naming the run a restored instance belongs to.
pub const TAG_RUN: &str = "pgshift:run";
/// The tag naming the snapshot it was restored from.
pub const TAG_SNAPSHOT: &str = "pgshift:snapshot";

/// How snapshots are restored: the planner's environment on AWS (template parameters), flags locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestoreSettings {
    /// The restored instance's class (`db.r6g.large`).
    pub instance_class: String,
    /// The DB subnet group the instance goes into (the Lambdas' subnets); RDS's default group when absent.
    pub subnet_group: Option<String>,
    /// VPC security groups of the instance (one that lets the extractors in).
    pub security_groups: Vec<String>,
    /// DB parameter group (instance snapshots) and DB cluster parameter group (Aurora); RDS's defaults when absent.
    pub parameter_group: Option<String>,
    pub cluster_parameter_group: Option<String>,
    /// The `pgshift:stack` tag value: the deployment that owns what it restores.
    pub stack: String,
    /// How long a restore may take to become `available` before the run fails (and deletes it), seconds.
    pub timeout_seconds: u32,
    /// Seconds between two status checks of a restore.
    pub poll_seconds: u32,
    /// An instance of this stack older than this is an orphan (its execution died): the sweep deletes it.
    pub sweep_after_hours: u32,
    /// The DB instances and Aurora clusters whose snapshots this stack loads; `*` (or none) is any. A snapshot of
    /// another database ends the run at once, before anything is restored.
    pub sources: Vec<String>,
}

impl RestoreSettings {
    /// Whether every database's snapshots are loaded (no list of sources, or `*`).
    pub fn any_source(&self) -> bool {
        self.sources.is_empty() || self.sources.iter().any(|s| s == "*")
    }
}

impl Default for RestoreSettings {
    fn default() -> Self {
        Self {
            instance_class: "db.r6g.large".into(),
            subnet_group: None,
            security_groups: Vec::new(),
            parameter_group: None,
            cluster_parameter_group: None,
            stack: "pgshift".into(),
            timeout_seconds: 3600,
            poll_seconds: 30,
            sweep_after_hours: 26,
            sources: Vec::new(),
        }
    }
}

/// What the state machine restores for a run, and the requests of its RDS calls (absent settings are left out of
/// them, so RDS applies its defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestorePlan {
    pub kind: SnapshotKind,
    /// The snapshot's identifier (an ARN for a shared or automated snapshot works too).
    pub snapshot: String,
    /// The temporary instance: `pgshift-…`, from the run id.
    pub instance: String,
    /// The temporary Aurora cluster (cluster snapshots only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// `RestoreDBInstanceFromDBSnapshot` (instance snapshots) or `CreateDBInstance` into the cluster (Aurora).
    pub instance_request: Value,
    /// `RestoreDBClusterFromSnapshot` (Aurora only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_request: Option<Value>,
    /// `DescribeDBSnapshots` (`DescribeDBClusterSnapshots` for Aurora) of the snapshot. An automated snapshot's
    /// identifier must come with `SnapshotType: automated` ("If this identifier is for an automated snapshot, the
    /// SnapshotType parameter must also be specified",
    /// <https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeDBSnapshots.html>; likewise
    /// <https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeDBClusterSnapshots.html>).
    #[serde(default)]
    pub describe_request: Value,
    /// Status checks before the restore counts as timed out, and the seconds between two.
    pub max_checks: u32,
    pub poll_seconds: u32,
    /// The DB instances or clusters whose snapshots this stack loads (the definition checks the described
    /// snapshot's source against them), and whether any source is (no list, or `*`).
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default = "yes")]
    pub any_source: bool,
}

fn yes() -> bool {
    true
}

/// An RDS identifier for what a run restores: `pgshift-` and the run id's letters and digits (lower case, single
/// hyphens, at most 63 characters, never ending in a hyphen), with a hash of the whole run id so that two run ids
/// cut to the same prefix still differ.
pub fn instance_name(run_id: &str) -> String {
    use sha2::Digest;
    let mut cleaned = String::new();
    for c in run_id.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if !(c == '-' && (cleaned.is_empty() || cleaned.ends_with('-'))) {
            cleaned.push(c);
        }
    }
    let hash: String = sha2::Sha256::digest(run_id.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // 63 = prefix (8) + name + '-' + hash (8).
    let room = 63 - NAME_PREFIX.len() - 1 - hash.len();
    let name: String = cleaned.chars().take(room).collect();
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        format!("{NAME_PREFIX}{hash}")
    } else {
        format!("{NAME_PREFIX}{name}-{hash}")
    }
}

/// The tags of everything a run restores: the stack, the run, the snapshot; plus the cost allocation tag.
fn tags(settings: &RestoreSettings, run_id: &str, snapshot: &str) -> Value {
    json!([
        {"Key": TAG_STACK, "Value": settings.stack},
        {"Key": TAG_RUN, "Value": run_id},
        {"Key": TAG_SNAPSHOT, "Value": snapshot},
    ])
}

/// The subnet group and security groups of a restore request, when configured (RDS's defaults otherwise).
fn networking(request: &mut Value, settings: &RestoreSettings) {
    if let Some(g) = &settings.subnet_group {
        request["DbSubnetGroupName"] = json!(g);
    }
    if !settings.security_groups.is_empty() {
        request["VpcSecurityGroupIds"] = json!(settings.security_groups);
    }
}

/// The describe request of a snapshot: its identifier, and its type when it is an automated one (an `rds:` name).
fn describe_request(snapshot: &Snapshot) -> Value {
    let key = match snapshot.kind {
        SnapshotKind::Instance => "DbSnapshotIdentifier",
        SnapshotKind::Cluster => "DbClusterSnapshotIdentifier",
    };
    let mut request = json!({ key: snapshot.identifier });
    if snapshot.automated || snapshot.identifier.starts_with("rds:") {
        request["SnapshotType"] = json!("automated");
    }
    request
}

/// The restore of `snapshot` for run `run_id`.
pub fn restore_plan(settings: &RestoreSettings, run_id: &str, snapshot: &Snapshot) -> RestorePlan {
    let instance = instance_name(run_id);
    let tags = tags(settings, run_id, &snapshot.identifier);
    let max_checks = settings.timeout_seconds.div_ceil(settings.poll_seconds.max(1)).max(1);
    let mut common = json!({
        "DbInstanceIdentifier": instance,
        "DbInstanceClass": settings.instance_class,
        "PubliclyAccessible": false,
        "AutoMinorVersionUpgrade": false,
        "Tags": tags,
    });
    match snapshot.kind {
        SnapshotKind::Instance => {
            common["DbSnapshotIdentifier"] = json!(snapshot.identifier);
            common["MultiAZ"] = json!(false);
            common["DeletionProtection"] = json!(false);
            common["CopyTagsToSnapshot"] = json!(false);
            networking(&mut common, settings);
            if let Some(p) = &settings.parameter_group {
                common["DbParameterGroupName"] = json!(p);
            }
            RestorePlan {
                kind: snapshot.kind,
                snapshot: snapshot.identifier.clone(),
                instance,
                cluster: None,
                instance_request: common,
                cluster_request: None,
                describe_request: describe_request(snapshot),
                max_checks,
                poll_seconds: settings.poll_seconds,
                sources: settings.sources.clone(),
                any_source: settings.any_source(),
            }
        }
        SnapshotKind::Cluster => {
            let cluster = instance.clone();
            let mut restore = json!({
                "DbClusterIdentifier": cluster,
                "SnapshotIdentifier": snapshot.identifier,
                "Engine": "aurora-postgresql",
                "DeletionProtection": false,
                "CopyTagsToSnapshot": false,
                "Tags": tags,
            });
            networking(&mut restore, settings);
            if let Some(p) = &settings.cluster_parameter_group {
                restore["DbClusterParameterGroupName"] = json!(p);
            }
            common["DbClusterIdentifier"] = json!(cluster);
            common["Engine"] = json!("aurora-postgresql");
            if let Some(p) = &settings.parameter_group {
                common["DbParameterGroupName"] = json!(p);
            }
            // The instance is the cluster's name with a suffix: both are pgshift's, both are deleted.
            let instance = format!("{}-1", &cluster[..cluster.len().min(61)]);
            common["DbInstanceIdentifier"] = json!(instance);
            RestorePlan {
                kind: snapshot.kind,
                snapshot: snapshot.identifier.clone(),
                instance,
                cluster: Some(cluster),
                instance_request: common,
                cluster_request: Some(restore),
                describe_request: describe_request(snapshot),
                max_checks,
                poll_seconds: settings.poll_seconds,
                sources: settings.sources.clone(),
                any_source: settings.any_source(),
            }
        }
    }
}

/// What the run records of its restore (`<run>/restore.json`): the snapshot (the instant the warehouse reflects),
/// the restored instance, and when it was created, became available and was deleted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreRecord {
    pub snapshot: String,
    /// When the snapshot was taken (`SnapshotCreateTime`): the instant the warehouse now reflects.
    pub snapshot_created_at: Option<String>,
    pub engine: Option<String>,
    pub instance: String,
    pub cluster: Option<String>,
    pub instance_class: String,
    pub started_at: Option<String>,
    pub available_at: Option<String>,
    pub deleted_at: Option<String>,
    /// Why the restored instance was not deleted by the run (the sweep and `pgshift gc` will).
    pub teardown_error: Option<String>,
    /// The storage RDS provisioned for the restore (`AllocatedStorage`, GiB, and `StorageType`), billed per GB-month
    /// from the restore to the deletion; `None` in records older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_gb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_type: Option<String>,
}

impl RestoreRecord {
    /// Seconds from the restore's start to its availability, and to its deletion (the instance's billed life).
    pub fn durations(&self) -> (Option<f64>, Option<f64>) {
        let at = |t: &Option<String>| t.as_deref().and_then(crate::contract::clock::parse_rfc3339);
        let start = at(&self.started_at);
        let span = |end: Option<f64>| Some(end? - start?).filter(|s| *s >= 0.0);
        (span(at(&self.available_at)), span(at(&self.deleted_at)))
    }
}

/// Whether an instance (its identifier, tags and creation time, seconds since the epoch) is an orphan of `stack` the
/// sweep may delete: its name has pgshift's prefix, it carries this stack's and a run's tag, and it is older than
/// `max_age_secs`. Anything else is never touched.
pub fn is_orphan(
    identifier: &str,
    tags: &[(String, String)],
    created: f64,
    now: f64,
    stack: &str,
    max_age: f64,
) -> bool {
    let tag = |k: &str| tags.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    identifier.starts_with(NAME_PREFIX)
        && tag(TAG_STACK) == Some(stack)
        && tag(TAG_RUN).is_some_and(|r| !r.is_empty())
        && now - created > max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_valid_rds_identifiers_and_distinct() {
        for run in [
            "20261124T031000Z-rds-orders-2026-11-24-03-05",
            "--Weird__Run  id!!",
            &"x".repeat(200),
            "",
        ] {
            let n = instance_name(run);
            assert!(n.len() <= 63 && n.starts_with(NAME_PREFIX), "{n}");
            assert!(!n.ends_with('-') && !n.contains("--"), "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
        }
        let long = "a".repeat(100);
        assert_ne!(instance_name(&format!("{long}1")), instance_name(&format!("{long}2")));
    }

    #[test]
    fn restore_requests_carry_the_settings_and_leave_out_what_is_not_set() {
        let settings = RestoreSettings {
            subnet_group: Some("private".into()),
            security_groups: vec!["sg-1".into()],
            stack: "prod".into(),
            timeout_seconds: 1800,
            poll_seconds: 20,
            ..RestoreSettings::default()
        };
        let snap = Snapshot {
            identifier: "rds:orders-2026-11-24".into(),
            ..Snapshot::default()
        };
        let p = restore_plan(&settings, "run-1", &snap);
        let r = &p.instance_request;
        assert_eq!(r["DbInstanceIdentifier"], json!(p.instance));
        assert_eq!(r["DbSnapshotIdentifier"], json!("rds:orders-2026-11-24"));
        assert_eq!(r["DbSubnetGroupName"], json!("private"));
        assert_eq!(r["VpcSecurityGroupIds"], json!(["sg-1"]));
        assert_eq!(r["PubliclyAccessible"], json!(false));
        assert!(r.get("DbParameterGroupName").is_none(), "RDS's default group");
        assert_eq!(r["Tags"][0], json!({"Key": TAG_STACK, "Value": "prod"}));
        assert_eq!(p.max_checks, 90);
        let aurora = restore_plan(
            &settings,
            "run-1",
            &Snapshot {
                kind: SnapshotKind::Cluster,
                ..snap
            },
        );
        let c = aurora.cluster_request.as_ref().expect("cluster restore");
        assert_eq!(c["Engine"], json!("aurora-postgresql"));
        assert_eq!(aurora.instance_request["DbClusterIdentifier"], c["DbClusterIdentifier"]);
        assert!(aurora.instance.starts_with(NAME_PREFIX) && aurora.instance.len() <= 63);
    }

    #[test]
    fn only_old_instances_of_this_stack_with_pgshift_names_are_orphans() {
        let t = |s: &str, r: &str| {
            vec![
                (TAG_STACK.to_string(), s.to_string()),
                (TAG_RUN.to_string(), r.to_string()),
            ]
        };
        let day = 86_400.0;
        assert!(is_orphan("pgshift-a", &t("prod", "r"), 0.0, 2.0 * day, "prod", day));
        assert!(
            !is_orphan("pgshift-a", &t("prod", "r"), 0.0, 0.5 * day, "prod", day),
            "too young"
        );
        assert!(
            !is_orphan("orders-db", &t("prod", "r"), 0.0, 2.0 * day, "prod", day),
            "not our name"
        );
        assert!(
            !is_orphan("pgshift-a", &t("dev", "r"), 0.0, 2.0 * day, "prod", day),
            "another stack"
        );
        assert!(
            !is_orphan("pgshift-a", &t("prod", ""), 0.0, 2.0 * day, "prod", day),
            "no run"
        );
        assert!(!is_orphan("pgshift-a", &[], 0.0, 2.0 * day, "prod", day), "untagged");
    }
}
