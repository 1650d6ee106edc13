//! The RDS snapshot a run was started for, as its trigger event describes it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// A DB instance snapshot (`RDS DB Snapshot Event`).
    Instance,
    /// An Aurora DB cluster snapshot (`RDS DB Cluster Snapshot Event`).
    Cluster,
}

/// The snapshot a run was started for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
