//! What a run cost, item by item, from its ledger record and a price table: per table where the item belongs to a
//! table, the rest as the run's overhead. Every item says whether its quantity is *actual* (measured by the run where
//! AWS bills it, or counted from its records) or *estimated*, and every price is the table's (its region and date),
//! which a file can replace (`pgshift cost --prices FILE`).

use serde::{Deserialize, Serialize};

use super::RestoreCost;
use crate::contract::ledger::{Basis, Billed, Ledger, StageRequests};
use crate::contract::model::TableRef;

/// List prices, in dollars, for one region on one date. Every field can be given in a file (TOML or JSON); the rest
/// keep these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriceTable {
    pub region: String,
    /// When the prices were read.
    pub date: String,
    /// Lambda duration per GB-second (<https://aws.amazon.com/lambda/pricing/>), by architecture.
    pub lambda_gb_second_arm64: f64,
    pub lambda_gb_second_x86_64: f64,
    pub lambda_request: f64,
    /// Standard workflows, per state transition (<https://aws.amazon.com/step-functions/pricing/>).
    pub transition: f64,
    /// S3 Standard (<https://aws.amazon.com/s3/pricing/>): per PUT/COPY/POST/LIST request, per GET and other request,
    /// per GB-month stored.
    pub s3_put_class: f64,
    pub s3_get_class: f64,
    pub s3_gb_month: f64,
    /// Days the stage keeps a run's objects (the template's `StageRetentionDays` lifecycle rule).
    pub stage_retention_days: f64,
    /// CloudWatch Logs ingestion per GB (<https://aws.amazon.com/cloudwatch/pricing/>), and the log bytes an
    /// invocation writes (the functions log a few lines per invocation at the default level).
    pub logs_ingest_gb: f64,
    pub log_bytes_per_invocation: u64,
    /// Redshift Serverless per RPU-hour, and the workgroup's base capacity
    /// (<https://aws.amazon.com/redshift/pricing/>), billed per second with a 60-second minimum.
    pub redshift_rpu_hour: f64,
    pub redshift_base_rpus: f64,
    /// The file these prices were read from, when one replaced the defaults (bills name it).
    #[serde(skip)]
    pub file: Option<String>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            date: "2026-12-01".into(),
            lambda_gb_second_arm64: 0.000_013_333_4,
            lambda_gb_second_x86_64: 0.000_016_666_7,
            lambda_request: 0.000_000_2,
            transition: 0.000_025,
            s3_put_class: 0.000_005,
            s3_get_class: 0.000_000_4,
            s3_gb_month: 0.023,
            stage_retention_days: 14.0,
            logs_ingest_gb: 0.50,
            log_bytes_per_invocation: 2048,
            redshift_rpu_hour: 0.375,
            redshift_base_rpus: 8.0,
            file: None,
        }
    }
}

impl PriceTable {
    /// A price table from a file: TOML, or JSON when the name ends in `.json`; fields not given keep the defaults.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        };
        let mut table: Self = parsed.map_err(|e| format!("price table {}: {e}", path.display()))?;
        let bad: Vec<String> = table
            .numbers()
            .iter()
            .filter(|(_, v)| !(v.is_finite() && *v >= 0.0))
            .map(|(name, v)| format!("{name} = {v}"))
            .collect();
        if !bad.is_empty() {
            return Err(format!(
                "price table {}: {}: every price must be a finite number of 0 or more; correct it in the file",
                path.display(),
                bad.join(", ")
            ));
        }
        table.file = Some(path.display().to_string());
        Ok(table)
    }

    /// Every price and quantity of the table, by name.
    fn numbers(&self) -> [(&'static str, f64); 12] {
        [
            ("lambda_gb_second_arm64", self.lambda_gb_second_arm64),
            ("lambda_gb_second_x86_64", self.lambda_gb_second_x86_64),
            ("lambda_request", self.lambda_request),
            ("transition", self.transition),
            ("s3_put_class", self.s3_put_class),
            ("s3_get_class", self.s3_get_class),
            ("s3_gb_month", self.s3_gb_month),
            ("stage_retention_days", self.stage_retention_days),
            ("logs_ingest_gb", self.logs_ingest_gb),
            ("log_bytes_per_invocation", self.log_bytes_per_invocation as f64),
            ("redshift_rpu_hour", self.redshift_rpu_hour),
            ("redshift_base_rpus", self.redshift_base_rpus),
        ]
    }

    /// What a bill's header says of its prices: the region and date, and the file when one replaced the defaults.
    pub fn describe(&self) -> String {
        match &self.file {
            Some(f) => format!(
                "{} list prices of {} as given by {f} (built-in list prices for what it does not name)",
                self.region, self.date
            ),
            None => format!("{} list prices of {}", self.region, self.date),
        }
    }

    fn gb_second(&self, arch: &str) -> f64 {
        match arch {
            "x86_64" => self.lambda_gb_second_x86_64,
            _ => self.lambda_gb_second_arm64,
        }
    }
}

/// One line of a bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostItem {
    /// The table the item belongs to; `None` for the run's overhead.
    pub table: Option<TableRef>,
    pub item: String,
    pub quantity: f64,
    pub unit: String,
    pub unit_price: f64,
    pub dollars: f64,
    /// Whether the quantity is actual or estimated (the price is always the table's).
    pub basis: Basis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A run's bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunCost {
    pub run_id: String,
    pub status: String,
    pub started_at: f64,
    pub rows: u64,
    pub source_bytes: u64,
    pub items: Vec<CostItem>,
    pub total: f64,
    /// Dollars per GB of source data read, and per million rows.
    pub per_gb: Option<f64>,
    pub per_million_rows: Option<f64>,
    /// The price table's region and date.
    pub prices: String,
    /// Incremental tables: what this run cost for each against what its last full load cost.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<Baseline>,
}

/// An incremental table's cost in this run against its last full load's (read from that run's ledger record, priced
/// by the same table).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    pub table: TableRef,
    pub full_run: String,
    pub full: f64,
    pub now: f64,
    /// Bytes read from the source for the table: in that full load, and in this run.
    pub full_bytes: u64,
    pub now_bytes: u64,
}

impl RunCost {
    /// The dollars of one table's items.
    pub fn table_total(&self, t: &TableRef) -> f64 {
        self.items
            .iter()
            .filter(|i| i.table.as_ref() == Some(t))
            .map(|i| i.dollars)
            .sum()
    }
}

struct Line<'a> {
    table: Option<&'a TableRef>,
    item: &'a str,
    quantity: f64,
    unit: &'a str,
    unit_price: f64,
    basis: Basis,
    note: Option<String>,
}

fn line(l: Line<'_>) -> CostItem {
    CostItem {
        table: l.table.cloned(),
        item: l.item.to_string(),
        quantity: l.quantity,
        unit: l.unit.to_string(),
        unit_price: l.unit_price,
        dollars: l.quantity * l.unit_price,
        basis: l.basis,
        note: l.note,
    }
}

/// Actual only when every part of the quantity is.
fn basis_of(invocations: &[Billed]) -> Basis {
    match invocations.iter().all(|b| b.basis == Basis::Actual) && !invocations.is_empty() {
        true => Basis::Actual,
        false => Basis::Estimated,
    }
}

/// Lambda duration (by architecture, each invocation rounded up to the millisecond) and requests of `invocations`.
fn lambda(table: Option<&TableRef>, what: &str, invocations: &[Billed], p: &PriceTable) -> Vec<CostItem> {
    if invocations.is_empty() {
        return Vec::new();
    }
    let gb_s: f64 = invocations.iter().map(Billed::gb_seconds).sum();
    let dollars: f64 = invocations.iter().map(|b| b.gb_seconds() * p.gb_second(&b.arch)).sum();
    let mut duration = line(Line {
        table,
        item: &format!("Lambda {what} duration"),
        quantity: gb_s,
        unit: "GB-s",
        unit_price: dollars / gb_s.max(f64::MIN_POSITIVE),
        basis: basis_of(invocations),
        note: None,
    });
    duration.dollars = dollars;
    vec![
        duration,
        line(Line {
            table,
            item: &format!("Lambda {what} requests"),
            quantity: invocations.len() as f64,
            unit: "requests",
            unit_price: p.lambda_request,
            basis: Basis::Actual,
            note: None,
        }),
    ]
}

/// How long objects stay on the stage: until the lifecycle rule expires them, or, for parts the load deleted, from
/// the run's start until then.
#[derive(Clone, Copy)]
enum Kept {
    Lifecycle,
    DeletedAfter { days: f64 },
}

/// S3 requests and storage of `bytes` kept as `kept` says.
fn stage(
    table: Option<&TableRef>,
    (r, basis): (StageRequests, Basis),
    bytes: u64,
    kept: Kept,
    p: &PriceTable,
) -> Vec<CostItem> {
    let how = match basis {
        Basis::Actual => "counted by the functions as they made them",
        Basis::Estimated => "derived from the objects the run wrote",
    };
    vec![
        line(Line {
            table,
            item: "S3 PUT/COPY/POST/LIST requests",
            quantity: r.put_class as f64,
            unit: "requests",
            unit_price: p.s3_put_class,
            basis,
            note: Some(how.into()),
        }),
        line(Line {
            table,
            item: "S3 GET and other requests",
            quantity: r.get_class as f64,
            unit: "requests",
            unit_price: p.s3_get_class,
            basis,
            note: None,
        }),
        match kept {
            Kept::Lifecycle => line(Line {
                table,
                item: "S3 storage until the lifecycle rule expires it",
                quantity: bytes as f64 / 1e9 * p.stage_retention_days / 30.0,
                unit: "GB-months",
                unit_price: p.s3_gb_month,
                basis: Basis::Actual,
                note: Some(format!("{:.0} days", p.stage_retention_days)),
            }),
            Kept::DeletedAfter { days } => line(Line {
                table,
                item: "S3 storage of the parts until the load deleted them",
                quantity: bytes as f64 / 1e9 * days / 30.0,
                unit: "GB-months",
                unit_price: p.s3_gb_month,
                basis: Basis::Actual,
                note: Some(format!(
                    "{:.2} h, not the lifecycle rule's {:.0} days (--keep-parts keeps them)",
                    days * 24.0,
                    p.stage_retention_days
                )),
            }),
        },
    ]
}

/// Each table's items: its extractors' Lambda, its stage requests and its parts' storage.
fn table_items(l: &Ledger, p: &PriceTable) -> Vec<CostItem> {
    let kept = match l.parts_deleted_at {
        Some(at) => Kept::DeletedAfter {
            days: (at - l.started_at).max(0.0) / 86_400.0,
        },
        None => Kept::Lifecycle,
    };
    let mut items = Vec::new();
    for t in &l.tables {
        items.extend(lambda(Some(&t.table), "extractor", &t.invocations, p));
        items.extend(stage(
            Some(&t.table),
            (t.stage_requests, t.stage_requests_basis),
            t.parquet_bytes,
            kept,
            p,
        ));
    }
    items
}

/// The run's bill from its ledger record.
pub fn run_cost(l: &Ledger, p: &PriceTable) -> RunCost {
    let mut items = table_items(l, p);
    let part_bytes: u64 = l.tables.iter().map(|t| t.parquet_bytes).sum();
    items.extend(lambda(None, "planner and loader", &l.invocations, p));
    let records = l.stage_bytes.saturating_sub(part_bytes);
    items.extend(stage(
        None,
        (l.stage_requests, Basis::Estimated),
        records,
        Kept::Lifecycle,
        p,
    ));
    items.push(line(Line {
        table: None,
        item: "Step Functions state transitions",
        quantity: l.transitions as f64,
        unit: "transitions",
        unit_price: p.transition,
        basis: l.transitions_basis,
        note: None,
    }));
    let calls = l.invocations.len() + l.tables.iter().map(|t| t.invocations.len()).sum::<usize>();
    items.push(line(Line {
        table: None,
        item: "CloudWatch Logs ingestion",
        quantity: (calls as u64 * p.log_bytes_per_invocation) as f64 / 1e9,
        unit: "GB",
        unit_price: p.logs_ingest_gb,
        basis: Basis::Estimated,
        note: Some(format!("{} B an invocation", p.log_bytes_per_invocation)),
    }));
    items.push(warehouse(l, p));
    if let Some(r) = &l.restore {
        let c = RestoreCost::of(r);
        let mut i = line(Line {
            table: None,
            item: "restored snapshot instance",
            quantity: c.billed_seconds / 60.0,
            unit: "minutes",
            unit_price: c.hourly.unwrap_or(0.0) / 60.0,
            basis: Basis::Actual,
            note: Some(format!("{} at its on-demand price", r.instance_class)),
        });
        i.dollars = c.dollars;
        items.push(i);
        if let Some(s) = &c.storage {
            items.push(line(Line {
                table: None,
                item: "restored instance storage",
                quantity: s.gb_months,
                unit: "GB-months",
                unit_price: s.gb_month_price,
                basis: Basis::Actual,
                note: Some(format!(
                    "{} GiB of {} from the restore to its deletion",
                    s.gb, s.storage_type
                )),
            }));
        }
    }
    let total: f64 = items.iter().map(|i| i.dollars).sum();
    let (rows, bytes) = (l.rows(), l.source_bytes());
    RunCost {
        run_id: l.run_id.clone(),
        status: l.status.clone(),
        started_at: l.started_at,
        rows,
        source_bytes: bytes,
        items,
        total,
        per_gb: (bytes > 0).then(|| total / (bytes as f64 / 1e9)),
        per_million_rows: (rows > 0).then(|| total / (rows as f64 / 1e6)),
        prices: p.describe(),
        baselines: Vec::new(),
    }
}

/// The warehouse's part: Redshift Serverless by RPU-seconds of the load's statements at the base capacity; a
/// provisioned cluster's hours are not marginal to a run; a PostgreSQL warehouse is not billed by AWS here.
fn warehouse(l: &Ledger, p: &PriceTable) -> CostItem {
    let kind = l.warehouse.as_deref().unwrap_or("unknown");
    let (quantity, unit_price, note) = match kind {
        "redshift-serverless" => (
            l.warehouse_seconds.max(60.0) * p.redshift_base_rpus / 3600.0,
            p.redshift_rpu_hour,
            format!(
                "the load's statements at {} base RPUs, 60 s minimum",
                p.redshift_base_rpus
            ),
        ),
        "redshift" => (
            0.0,
            0.0,
            "a provisioned cluster bills its hours whether or not a run loads: not marginal".into(),
        ),
        _ => (0.0, 0.0, format!("a {kind} warehouse: not billed by this run")),
    };
    line(Line {
        table: None,
        item: "warehouse load",
        quantity,
        unit: "RPU-hours",
        unit_price,
        basis: Basis::Estimated,
        note: Some(format!("{note}; {:.1} s of load statements", l.warehouse_seconds)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ledger::{LedgerTable, Trigger};

    fn billed(function: &str, seconds: f64, memory_mb: u32, arch: &str) -> Billed {
        Billed {
            function: function.into(),
            seconds,
            memory_mb,
            arch: arch.into(),
            basis: Basis::Actual,
        }
    }

    #[test]
    fn the_bill_of_a_recorded_run_matches_the_arithmetic_done_by_hand() {
        let t = TableRef::new("sales", "orders");
        let l = Ledger {
            run_id: "r".into(),
            plan_id: "p".into(),
            trigger: Trigger::Manual,
            started_at: 0.0,
            ended_at: 100.0,
            status: "succeeded".into(),
            error: None,
            tables: vec![LedgerTable {
                table: t.clone(),
                parts: 2,
                files: 2,
                rows: 2_000_000,
                source_bytes: 2_000_000_000,
                parquet_bytes: 600_000_000,
                retries: 0,
                committed_rows: Some(2_000_000),
                // 10.0004 s rounds up to 10.001 s; 2048 MB is 2 GB: 20.002 GB-s; 5 s at 1024 MB on x86: 5 GB-s.
                invocations: vec![
                    billed("extractor", 10.0004, 2048, "arm64"),
                    billed("extractor", 5.0, 1024, "x86_64"),
                ],
                stage_requests: StageRequests {
                    put_class: 100,
                    get_class: 2,
                },
                stage_requests_basis: Basis::Actual,
            }],
            invocations: vec![
                billed("planner", 1.0, 1024, "arm64"),
                billed("loader", 3.0, 512, "arm64"),
            ],
            transitions: 40,
            transitions_basis: Basis::Actual,
            stage_requests: StageRequests {
                put_class: 10,
                get_class: 20,
            },
            stage_bytes: 600_000_000 + 300_000_000,
            restore: None,
            warehouse: Some("redshift-serverless".into()),
            warehouse_seconds: 30.0,
            parts_deleted_at: None,
        };
        let p = PriceTable::default();
        let c = run_cost(&l, &p);
        let find = |table: Option<&TableRef>, item: &str| {
            c.items
                .iter()
                .find(|i| i.table.as_ref() == table && i.item == item)
                .unwrap_or_else(|| panic!("{item}"))
                .clone()
        };
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} != {b}");
        let ex = find(Some(&t), "Lambda extractor duration");
        close(ex.quantity, 25.002);
        close(ex.dollars, 20.002 * 0.000_013_333_4 + 5.0 * 0.000_016_666_7);
        assert_eq!(ex.basis, Basis::Actual);
        close(find(Some(&t), "Lambda extractor requests").dollars, 2.0 * 0.000_000_2);
        close(
            find(Some(&t), "S3 PUT/COPY/POST/LIST requests").dollars,
            100.0 * 0.000_005,
        );
        // 0.6 GB for 14 of 30 days.
        close(
            find(Some(&t), "S3 storage until the lifecycle rule expires it").dollars,
            0.6 * 14.0 / 30.0 * 0.023,
        );
        // Planner 1 GB-s, loader 1.5 GB-s.
        close(find(None, "Lambda planner and loader duration").quantity, 2.5);
        close(find(None, "Step Functions state transitions").dollars, 40.0 * 0.000_025);
        // 4 invocations (2 extractors, the planner, the loader) of 2 KiB.
        close(find(None, "CloudWatch Logs ingestion").quantity, 4.0 * 2048.0 / 1e9);
        // 30 s of statements bill the 60-second minimum: 60 s × 8 RPUs = 480 RPU-s.
        close(find(None, "warehouse load").dollars, 60.0 * 8.0 / 3600.0 * 0.375);
        let sum: f64 = c.items.iter().map(|i| i.dollars).sum();
        close(c.total, sum);
        close(c.per_gb.expect("bytes"), c.total / 2.0);
        close(c.per_million_rows.expect("rows"), c.total / 2.0);
        let tables: f64 = c.table_total(&t)
            + c.items
                .iter()
                .filter(|i| i.table.is_none())
                .map(|i| i.dollars)
                .sum::<f64>();
        close(tables, c.total);
    }

    #[test]
    fn a_price_file_replaces_only_what_it_names() {
        let dir = std::env::temp_dir().join(format!("pgshift-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("prices.toml");
        std::fs::write(&f, "region = \"eu-west-1\"\ntransition = 0.00003\n").expect("write");
        let p = PriceTable::load(&f).expect("loads");
        assert_eq!((p.region.as_str(), p.transition), ("eu-west-1", 0.00003));
        assert_eq!(p.s3_gb_month, PriceTable::default().s3_gb_month);
        std::fs::write(&f, "transitions = 1\n").expect("write");
        assert!(PriceTable::load(&f).expect_err("typo").contains("transitions"));
    }
}
