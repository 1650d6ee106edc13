//! Layer 4, the sweep: instances and Aurora clusters that pgshift restored for a run whose execution died before
//! deleting them (killed, timed out, its Cleanup failed) are found by their name prefix and this stack's tags and
//! deleted once older than a limit. It runs as a state at the start of every run and as `pgshift gc`. Nothing is
//! deleted that does not carry both pgshift's name prefix and this stack's tag
//! ([`crate::contract::snapshot::is_orphan`]).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::contract::code::Code;
use crate::contract::snapshot::is_orphan;
use crate::rds::{Rds, RdsError};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("listing restored instances: {0}")]
    Rds(#[from] RdsError),
}

impl SweepError {
    pub fn code(&self) -> Code {
        match self {
            SweepError::Rds(e) if e.is_retryable() => Code::RetryableRds,
            SweepError::Rds(_) => Code::FatalRds,
        }
    }

    pub fn name(&self) -> &'static str {
        self.code().name()
    }
}

/// What to sweep: this stack's orphans older than `max_age_secs` (0: any age, for `pgshift gc --older-than 0`).
#[derive(Debug, Clone)]
pub struct SweepRequest {
    pub stack: String,
    pub max_age_secs: f64,
    /// List what would be deleted; delete nothing.
    pub dry_run: bool,
}

/// What the sweep did: each identifier it deleted (or would), the failures (the next sweep tries again), and how
/// many instances it left alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    pub deleted_instances: Vec<String>,
    pub deleted_clusters: Vec<String>,
    pub failed: Vec<String>,
    pub kept: usize,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

fn tags(v: &Value) -> Vec<(String, String)> {
    v["TagList"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| Some((t["Key"].as_str()?.to_string(), t["Value"].as_str()?.to_string())))
        .collect()
}

/// Whether a described instance or cluster is an orphan of this sweep's stack. The local stand-in also says whether
/// the process that restored it still runs (`OwnerAlive`): a live run's instance is never swept.
fn orphan(v: &Value, id_key: &str, time_key: &str, req: &SweepRequest, now: f64) -> Option<String> {
    let id = v[id_key].as_str()?;
    let created = v[time_key].as_str().and_then(crate::contract::clock::parse_rfc3339)?;
    let alive = v["OwnerAlive"].as_bool() == Some(true);
    let deleting = matches!(
        v["DbInstanceStatus"].as_str().or(v["Status"].as_str()),
        Some("deleting")
    );
    (!alive && !deleting && is_orphan(id, &tags(v), created, now, &req.stack, req.max_age_secs)).then(|| id.to_string())
}

/// How one kind of resource is listed and deleted.
struct Kind {
    describe: &'static str,
    list: &'static str,
    id: &'static str,
    created: &'static str,
    delete: &'static str,
}

const INSTANCES: Kind = Kind {
    describe: "describeDBInstances",
    list: "DbInstances",
    id: "DbInstanceIdentifier",
    created: "InstanceCreateTime",
    delete: "deleteDBInstance",
};

const CLUSTERS: Kind = Kind {
    describe: "describeDBClusters",
    list: "DbClusters",
    id: "DbClusterIdentifier",
    created: "ClusterCreateTime",
    delete: "deleteDBCluster",
};

/// Deletes the orphans of one kind: (deleted, kept); a deletion that fails is listed in `failed`.
async fn sweep_kind(
    rds: &dyn Rds,
    req: &SweepRequest,
    now: f64,
    kind: &Kind,
    failed: &mut Vec<String>,
) -> Result<(Vec<String>, usize), SweepError> {
    let (mut deleted, mut kept) = (Vec::new(), 0);
    let listed = rds.call(kind.describe, json!({})).await?;
    for v in listed[kind.list].as_array().into_iter().flatten() {
        let Some(id) = orphan(v, kind.id, kind.created, req, now) else {
            kept += 1;
            continue;
        };
        if !req.dry_run {
            if let Err(e) = rds
                .call(kind.delete, json!({kind.id: id, "SkipFinalSnapshot": true}))
                .await
            {
                failed.push(format!("{id}: {e}"));
                continue;
            }
        }
        tracing::info!(%id, dry_run = req.dry_run, "swept what a dead run restored");
        deleted.push(id);
    }
    Ok((deleted, kept))
}

/// Sweeps this stack's orphans: instances first, then clusters (RDS deletes a cluster once its instances are
/// deleting).
pub async fn sweep(rds: &dyn Rds, req: &SweepRequest) -> Result<SweepResult, SweepError> {
    let now = crate::contract::clock::unix_now();
    let mut out = SweepResult {
        dry_run: req.dry_run,
        ..SweepResult::default()
    };
    let (deleted, kept) = sweep_kind(rds, req, now, &INSTANCES, &mut out.failed).await?;
    out.deleted_instances = deleted;
    out.kept = kept;
    // Clusters after their instances: RDS deletes a cluster once its instances are deleting.
    out.deleted_clusters = sweep_kind(rds, req, now, &CLUSTERS, &mut out.failed).await?.0;
    Ok(out)
}
