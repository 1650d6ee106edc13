//! What a snapshot run's restored instance cost: its minutes at the class's on-demand price (from `available` to
//! deleted, 10 at least) and the storage provisioned for it (GB-months from the restore to the deletion).

use serde::Serialize;

use super::truncate;
use crate::contract::snapshot::RestoreRecord;

/// RDS bills an instance per second from the moment it is `available` until it is deleted, with a 10-minute minimum
/// (<https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_OnDemandDBInstances.html>).
pub const RDS_MINIMUM_BILLED_SECONDS: f64 = 600.0;

/// On-demand list prices per instance-hour (us-east-1, Single-AZ, no Extended Support), for the classes a restore
/// is likely to use: (class, RDS for PostgreSQL, Aurora PostgreSQL Standard). `None` where the engine has no such
/// class. The t4g prices of RDS for PostgreSQL were checked against a 2026 pricing breakdown; the others are list
/// prices as published on aws.amazon.com/rds/pricing (2025) and are estimates (`docs/snapshots.md`).
const RDS_HOURLY: &[(&str, Option<f64>, Option<f64>)] = &[
    ("db.t4g.micro", Some(0.016), None),
    ("db.t4g.small", Some(0.032), None),
    ("db.t4g.medium", Some(0.065), Some(0.073)),
    ("db.t4g.large", Some(0.129), Some(0.146)),
    ("db.t3.micro", Some(0.018), None),
    ("db.t3.small", Some(0.036), None),
    ("db.t3.medium", Some(0.072), Some(0.082)),
    ("db.m6g.large", Some(0.152), None),
    ("db.m6g.xlarge", Some(0.304), None),
    ("db.m7g.large", Some(0.168), None),
    ("db.r6g.large", Some(0.225), Some(0.26)),
    ("db.r6g.xlarge", Some(0.45), Some(0.519)),
    ("db.r6g.2xlarge", Some(0.899), Some(1.038)),
    ("db.r7g.large", Some(0.239), Some(0.276)),
    ("db.r7g.xlarge", Some(0.478), Some(0.553)),
];

/// RDS for PostgreSQL storage per GB-month (us-east-1, Single-AZ), by `StorageType`: General Purpose SSD (gp2, gp3:
/// its 3,000 IOPS and 125 MB/s included) and Provisioned IOPS SSD (io1, io2: the storage share; provisioned IOPS are
/// not in the record), from aws.amazon.com/rds/postgresql/pricing (2026, estimates, `docs/snapshots.md`). Storage is
/// billed per GB-month for as long as the instance exists
/// (<https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_OnDemandDBInstances.html>). Aurora's cluster volume
/// is billed by the GB used and the I/O: not here.
const RDS_STORAGE_GB_MONTH: &[(&str, f64)] = &[("gp2", 0.115), ("gp3", 0.115), ("io1", 0.125), ("io2", 0.125)];

/// Hours in a billing month, as AWS prices a GB-month by the hour.
const HOURS_PER_MONTH: f64 = 730.0;

/// The on-demand hourly price of an instance class for an engine (`aurora-postgresql` or RDS for PostgreSQL).
pub fn rds_hourly_price(class: &str, engine: Option<&str>) -> Option<f64> {
    let aurora = engine.is_some_and(|e| e.starts_with("aurora"));
    RDS_HOURLY
        .iter()
        .find(|(c, _, _)| *c == class)
        .and_then(|(_, rds, au)| if aurora { *au } else { *rds })
}

/// The instance a snapshot run restored, as the run's cost counts it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoreCost {
    pub record: RestoreRecord,
    /// From the restore call to `available`.
    pub wait_seconds: Option<f64>,
    /// From the restore call to its deletion.
    pub life_seconds: Option<f64>,
    /// From `available` to deleted, at least the 10-minute minimum; 0 for an instance that never became available
    /// (RDS bills from `available`). An instance not deleted by the run counts the minimum (it is billed until the
    /// sweep deletes it).
    pub billed_seconds: f64,
    /// The class's on-demand price per hour; `None` for a class the price table does not know.
    pub hourly: Option<f64>,
    pub dollars: f64,
    /// The provisioned storage's GB-months (from the restore to its deletion, or the billed minutes while it lives),
    /// its price per GB-month, and its dollars; `None` where the record has no storage or its type has no price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageCost>,
}

/// The restored instance's provisioned storage, as the bill counts it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageCost {
    pub gb: u64,
    pub storage_type: String,
    pub gb_months: f64,
    pub gb_month_price: f64,
    pub dollars: f64,
}

impl StorageCost {
    fn of(record: &RestoreRecord, life_seconds: Option<f64>, billed_seconds: f64) -> Option<Self> {
        let (gb, kind) = (record.allocated_gb?, record.storage_type.clone()?);
        let price = RDS_STORAGE_GB_MONTH.iter().find(|(k, _)| *k == kind)?.1;
        let gb_months = gb as f64 * life_seconds.unwrap_or(billed_seconds) / 3600.0 / HOURS_PER_MONTH;
        Some(StorageCost {
            gb,
            storage_type: kind,
            gb_months,
            gb_month_price: price,
            dollars: gb_months * price,
        })
    }
}

impl RestoreCost {
    pub fn of(record: &RestoreRecord) -> Self {
        let (wait_seconds, life_seconds) = record.durations();
        let billed_seconds = match (wait_seconds, life_seconds) {
            (None, _) => 0.0,
            (Some(w), Some(l)) => (l - w).max(RDS_MINIMUM_BILLED_SECONDS),
            (Some(_), None) => RDS_MINIMUM_BILLED_SECONDS,
        };
        let hourly = rds_hourly_price(&record.instance_class, record.engine.as_deref());
        RestoreCost {
            record: record.clone(),
            wait_seconds,
            life_seconds,
            billed_seconds,
            hourly,
            dollars: hourly.unwrap_or(0.0) * billed_seconds / 3600.0,
            storage: StorageCost::of(record, life_seconds, billed_seconds),
        }
    }

    /// One line: the snapshot, the instant it reflects, the restore's wait and life, and what it cost.
    pub fn line(&self) -> String {
        let r = &self.record;
        let s = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.0} s"));
        let price = match self.hourly {
            Some(h) => format!("${:.4} at ${h}/h", self.dollars),
            None => format!("price of {} unknown", r.instance_class),
        };
        let deleted = match (&r.deleted_at, &r.teardown_error) {
            (Some(_), _) => String::new(),
            (None, Some(e)) => format!("; NOT deleted ({}): `pgshift gc` deletes it", truncate(e, 120)),
            (None, None) => "; NOT deleted: `pgshift gc` deletes it".into(),
        };
        format!(
            "snapshot {} (taken {}) restored into {} ({}): waited {} for available, lived {}; billed {:.1} min, {price}{deleted}",
            r.snapshot,
            r.snapshot_created_at.as_deref().unwrap_or("?"),
            r.instance,
            r.instance_class,
            s(self.wait_seconds),
            s(self.life_seconds),
            self.billed_seconds / 60.0,
        )
    }
}
