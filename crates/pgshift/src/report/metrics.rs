//! A run's metrics as CloudWatch Embedded Metric Format lines (namespace `pgshift`): JSON log lines that CloudWatch
//! Logs turns into metrics with no API call of the function's
//! ([specification](https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html)).
//! The loader prints the run's and each table's when the run ends; the extractor one per part. Pure: the lines, from
//! the one run record and the one bill.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::contract::model::{ExtractResult, TableRef};

use super::cost::RunCost;
use super::record::{RunRecord, RunStatus};

pub const NAMESPACE: &str = "pgshift";

/// One EMF line: the metrics' values as members, their directive under `_aws`, the dimensions' values as members.
fn line(now_ms: i64, dims: &[(&str, String)], metrics: &[(&str, &str, f64)]) -> Value {
    let mut root = Map::new();
    for (k, v) in dims {
        root.insert((*k).to_string(), json!(v));
    }
    for (name, _, value) in metrics {
        root.insert((*name).to_string(), json!(value));
    }
    let names: Vec<&str> = dims.iter().map(|(k, _)| *k).collect();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [names],
                "Metrics": metrics.iter().map(|(n, u, _)| json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
            }],
        }),
    );
    Value::Object(root)
}

/// The run's line (dimension `Stack`) and one line per table its load committed (`Stack`, `Table`). `previous`:
/// each table's rows as the warehouse's load log had them before this run (for the drop from the last run).
pub fn run_lines(
    rec: &RunRecord,
    bill: &RunCost,
    stack: &str,
    now: f64,
    previous: &BTreeMap<TableRef, u64>,
) -> Vec<Value> {
    let ms = (now * 1000.0) as i64;
    let (started, _) = rec.span();
    let succeeded = rec.status() == RunStatus::Succeeded;
    let freshness = now - rec.plan.data_instant() as f64;
    let tables = table_rows(rec);
    let drops: Vec<f64> = tables
        .iter()
        .filter_map(|(t, rows)| drop_percent(previous.get(t).copied(), *rows))
        .collect();
    let mut run = vec![
        ("RunSucceeded", "Count", f64::from(u8::from(succeeded))),
        ("RunFailed", "Count", f64::from(u8::from(rec.failure.is_some()))),
        ("RunSeconds", "Seconds", (now - started).max(0.0)),
        ("CostDollars", "None", bill.total),
        ("Retries", "Count", rec.retried().len() as f64),
        ("RowsLoaded", "Count", tables.values().sum::<u64>() as f64),
    ];
    if succeeded {
        run.push(("MaxFreshnessSeconds", "Seconds", freshness.max(0.0)));
    }
    if let Some(max) = drops.iter().copied().reduce(f64::max) {
        run.push(("MaxRowDropPercent", "Percent", max));
    }
    let mut out = vec![line(ms, &[("Stack", stack.to_string())], &run)];
    for (t, rows) in &tables {
        let bytes: u64 = rec
            .results
            .iter()
            .filter(|r| &r.table == t)
            .flat_map(|r| &r.files)
            .map(|f| f.bytes)
            .sum();
        let mut m = vec![
            ("RowsLoaded", "Count", *rows as f64),
            ("BytesLoaded", "Bytes", bytes as f64),
            ("FreshnessSeconds", "Seconds", freshness.max(0.0)),
        ];
        if let Some(d) = drop_percent(previous.get(t).copied(), *rows) {
            m.push(("RowDropPercent", "Percent", d));
        }
        out.push(line(ms, &[("Stack", stack.to_string()), ("Table", t.to_string())], &m));
    }
    out
}

/// The names of the run's line's metrics (dimension `Stack` alone): what an alarm of the stack may watch.
pub fn emitted_at_stack() -> [&'static str; 8] {
    [
        "RunSucceeded",
        "RunFailed",
        "RunSeconds",
        "CostDollars",
        "Retries",
        "RowsLoaded",
        "MaxFreshnessSeconds",
        "MaxRowDropPercent",
    ]
}

/// The rows each committed table holds from this run.
fn table_rows(rec: &RunRecord) -> BTreeMap<TableRef, u64> {
    rec.load
        .iter()
        .flat_map(|l| &l.tables)
        .filter(|t| t.status.is_committed())
        .map(|t| (t.table.clone(), t.committed_rows.unwrap_or(t.rows)))
        .collect()
}

/// How far the rows fell from the last run's, in percent (0 when they grew); `None` without a last run.
fn drop_percent(previous: Option<u64>, now: u64) -> Option<f64> {
    let p = previous.filter(|p| *p > 0)? as f64;
    Some(((p - now as f64) / p * 100.0).max(0.0))
}

/// An extractor's line for one part (`Stack`, `Table`): its seconds, rows and bytes, and whether it was a retry.
pub fn part_line(r: &ExtractResult, stack: &str, attempt: u32, now: f64) -> Value {
    line(
        (now * 1000.0) as i64,
        &[("Stack", stack.to_string()), ("Table", r.table.to_string())],
        &[
            ("PartSeconds", "Seconds", r.seconds),
            ("PartRows", "Count", r.rows as f64),
            ("PartSourceBytes", "Bytes", r.source_bytes as f64),
            ("PartRetries", "Count", f64::from(u8::from(attempt > 0))),
        ],
    )
}
