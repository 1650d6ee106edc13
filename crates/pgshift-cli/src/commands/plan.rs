//! `pgshift plan`: plan a run, write it to the stage, and show it.

use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use pgshift::contract::plan::TablePlan;
use pgshift::plan::{count_rows, PlanContext};
use pgshift::source::{PgConnector, SourceConnector};
use pgshift::UrlStages;

use crate::commands::flags::{self, need, ConfigArg, PlanFlags};

#[derive(Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Source connection string (postgres://user:pass@host:port/db). Also PGSHIFT_SOURCE.
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true)]
    source: Option<String>,
    #[command(flatten)]
    plan: PlanFlags,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// Print per table: strategy, parts with predicted rows and bytes, a histogram of rows per part and the skew.
    #[arg(long)]
    explain: bool,
    /// With --explain: count the actual rows of every range (one index range scan per part).
    #[arg(long)]
    verify: bool,
    /// With --explain: the extractors' Lambda memory (MB) the predicted cost assumes.
    #[arg(long, default_value_t = 2048)]
    lambda_memory_mb: u32,
}

pub(crate) async fn run(args: PlanArgs) -> Result<()> {
    let config = args.config.read()?;
    let source = Arc::new(PgConnector::new(&need(&args.source, config.source.clone(), "source")?)?);
    // The load's defaults (and pgshift.toml's [load]) are part of the request, as `run` makes it: `plan` then `run` with
    // the same settings is one run.
    let req = flags::request(config, &args.plan, Some(&flags::LoadFlags::default()))?;
    let ctx = PlanContext {
        source: source.clone(),
        stages: Arc::new(UrlStages::default()),
    };
    let (plan, summary) = match pgshift::plan::handle(&ctx, req).await {
        Ok(p) => p,
        Err(e) => bail!("{e} [{}]", e.name()),
    };
    if args.json {
        out!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    if args.explain {
        let client = if args.verify {
            Some(source.connect().await?)
        } else {
            None
        };
        for t in &plan.tables {
            let actual = match &client {
                Some(c) => {
                    let mut v = Vec::new();
                    for task in plan.tasks.iter().filter(|x| x.table == t.table) {
                        v.push(count_rows(c, task).await?);
                    }
                    Some(v)
                }
                None => None,
            };
            explain(t, actual.as_deref());
        }
        for n in &plan.notes {
            out!("note: {n}");
        }
        out!("planned in {:.2} s", plan.planning_seconds);
        predicted_cost(&plan, args.lambda_memory_mb);
    }
    out!(
        "planned run {}: {} tables, {} parts, ~{} rows, {}; the plan: {}",
        plan.run_id,
        summary.tables,
        summary.tasks,
        pgshift::report::thousands(summary.estimated_rows),
        pgshift::contract::plan::human_bytes(summary.estimated_bytes),
        summary.plan_url
    );
    out!(
        "next: pgshift run with the same settings and --run-id {} extracts and loads it",
        pgshift::report::shell_word(&plan.run_id)
    );
    Ok(())
}

fn explain(t: &TablePlan, actual: Option<&[u64]>) {
    let key = match t.key.is_empty() {
        true => "no key".to_string(),
        false => format!("key ({})", t.key.join(", ")),
    };
    out!(
        "\n{}  ({}{})  {key}",
        t.table,
        t.kind,
        if t.unlogged { ", unlogged" } else { "" },
    );
    out!("  strategy: {}", t.strategy.describe());
    out!("  {}", t.reason);
    out!(
        "  estimated {} rows, {} ({} B/row) in {} part{} of ~{} rows / {}",
        pgshift::report::thousands(t.estimates.rows),
        pgshift::contract::plan::human_bytes(t.estimates.bytes),
        t.estimates.avg_row_bytes,
        t.parts.len(),
        if t.parts.len() == 1 { "" } else { "s" },
        pgshift::report::thousands(t.parts.first().map_or(0, |p| p.rows)),
        pgshift::contract::plan::human_bytes(t.parts.first().map_or(0, |p| p.bytes)),
    );
    out!("  redshift design: {}", t.design.describe(&t.key));
    for n in &t.notes {
        out!("  note: {n}");
    }
    let (label, rows): (&str, Vec<u64>) = match actual {
        Some(a) => ("actual rows", a.to_vec()),
        None => ("predicted rows", t.parts.iter().map(|p| p.rows).collect()),
    };
    let max = rows.iter().copied().max().unwrap_or(0).max(1);
    let mean = rows.iter().sum::<u64>() as f64 / rows.len().max(1) as f64;
    out!("  {label} per part:");
    for (i, r) in rows.iter().enumerate() {
        let width = (*r as f64 / max as f64 * 50.0).round() as usize;
        out!("  {i:>5} {:<50} {}", "█".repeat(width), pgshift::report::thousands(*r));
    }
    let min = rows.iter().copied().min().unwrap_or(0);
    out!(
        "  skew max/mean {:.3}, emptiest part {min} rows",
        max as f64 / mean.max(1.0)
    );
}

/// The run this plan predicts, priced: every figure estimated from the predicted parts (a dry run of the bill).
fn predicted_cost(plan: &pgshift::Plan, memory_mb: u32) {
    let ledger = pgshift::report::ledger::predicted(plan, memory_mb, None);
    let bill = pgshift::report::cost::run_cost(&ledger, &pgshift::report::cost::PriceTable::default());
    let mut by_item: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for i in &bill.items {
        *by_item.entry(i.item.as_str()).or_default() += i.dollars;
    }
    let mut items: Vec<(&str, f64)> = by_item.into_iter().filter(|(_, d)| *d > 0.0).collect();
    items.sort_by(|a, b| b.1.total_cmp(&a.1));
    out!(
        "\npredicted cost (estimated: {} predicted parts at {} MB/s each, {memory_mb} MB extractors, Parquet at {:.0}% \
         of the source; {}; the warehouse's own time not included): ${:.6}{}",
        plan.tasks.len(),
        plan.settings.throughput_bytes_per_sec / 1_000_000,
        pgshift::report::ledger::PREDICTED_PARQUET_RATIO * 100.0,
        bill.prices,
        bill.total,
        bill.per_gb.map_or(String::new(), |g| format!(", ${g:.6} per GB"))
    );
    for (item, dollars) in items {
        out!("  {item:<48} ${dollars:.6}");
    }
}
