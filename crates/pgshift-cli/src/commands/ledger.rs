//! `pgshift runs` and `pgshift cost`: the run ledger on a stage (`<run>/ledger.json`, one per run) as one line per
//! run, and the billing review: per run and per table, the cost by item, totals per GB and per million rows, the
//! trend over runs and the most expensive tables.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use pgshift::contract::ledger::{Basis, Ledger};
use pgshift::report::cost::{run_cost, PriceTable, RunCost};
use pgshift::report::text_table as table;
use pgshift::stage::StageOpener;
use pgshift::UrlStages;

use crate::commands::flags::{need, ConfigArg};

#[derive(Args)]
pub(crate) struct RunsArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The stage whose runs to list: file:///dir or s3://bucket/prefix. Also PGSHIFT_STAGE, or stage in
    /// pgshift.toml.
    #[arg(long, env = "PGSHIFT_STAGE", conflicts_with = "state_machine")]
    stage: Option<String>,
    /// List the executions of this deployed state machine instead (ListExecutions).
    #[arg(long)]
    state_machine: Option<String>,
    /// Only runs that started this long ago or later: 30d, 12h, 90m.
    #[arg(long, value_parser = parse_age)]
    since: Option<f64>,
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    #[arg(long)]
    csv: bool,
}

/// One line per execution of a deployed state machine.
async fn executions(machine: &str, since: Option<f64>, json: bool) -> Result<()> {
    let x = pgshift::executions::aws::AwsExecutions::from_env().await;
    let mut all = pgshift::executions::all_executions(&x, Some(machine), None)
        .await
        .map_err(|e| anyhow::anyhow!("{e} [{}]", e.name()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    all.retain(|e| since.is_none_or(|s| e.started_at >= now - s));
    if json {
        out!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    for e in &all {
        let took = e
            .stopped_at
            .map_or("-".into(), |s| format!("{:.0} s", s - e.started_at));
        out!(
            "{:<40} {:<17} {:<16} {:>8}  redriven {}",
            e.name,
            when(e.started_at),
            e.status,
            took,
            e.redrive_count
        );
    }
    out!(
        "{} execution(s) of {machine} (pgshift report --execution ARN for one)",
        all.len()
    );
    Ok(())
}

#[derive(Args)]
pub(crate) struct CostArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The stage whose runs to review: file:///dir or s3://bucket/prefix. Also PGSHIFT_STAGE, or stage in
    /// pgshift.toml.
    #[arg(long, env = "PGSHIFT_STAGE")]
    stage: Option<String>,
    /// A deployed run by its execution: its stage read from the history, its state transitions counted from the
    /// history of the execution and of every child execution of its Map run (actual, not estimated).
    #[arg(long, conflicts_with_all = ["run", "since", "stage"])]
    execution: Option<String>,
    /// The extractors' Lambda memory (MB) assumed where a record does not say (with --execution).
    #[arg(long, default_value_t = 2048)]
    lambda_memory_mb: u32,
    /// One run.
    #[arg(long, conflicts_with = "since")]
    run: Option<String>,
    /// Runs that started this long ago or later: 30d, 12h, 90m.
    #[arg(long, value_parser = parse_age)]
    since: Option<f64>,
    /// A price table (TOML, or JSON by its .json name) replacing the built-in list prices it names.
    #[arg(long)]
    prices: Option<PathBuf>,
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// One line per cost item.
    #[arg(long)]
    csv: bool,
}

/// `30d`, `12h`, `90m`, `45s` as seconds.
fn parse_age(s: &str) -> Result<f64, String> {
    let (n, unit) = s.split_at(s.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 30d or 12h"))?;
    let mult = match unit {
        "d" => 86_400.0,
        "h" => 3_600.0,
        "m" => 60.0,
        "s" | "" => 1.0,
        other => return Err(format!("{s:?}: unknown unit {other:?}; use d, h, m or s")),
    };
    Ok(n * mult)
}

/// Every readable ledger record on the stage, oldest first (runs without one are still running, or ended before
/// ledgers), and the records that could not be read or parsed, each named with why: one broken record never hides
/// the others.
async fn ledgers(stage_url: &str, since: Option<f64>) -> Result<(Vec<Ledger>, Vec<String>)> {
    let stage = UrlStages::default().open(stage_url).await?;
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for (key, _) in stage.list("").await? {
        if !key.ends_with("/ledger.json") {
            continue;
        }
        let parsed = match stage.get(&key).await {
            Ok(bytes) => serde_json::from_slice::<Ledger>(&bytes).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match parsed.map(|l| (l.impossible(), l)) {
            Ok((bad, l)) if bad.is_empty() => out.push(l),
            Ok((bad, _)) => unreadable.push(format!(
                "{}/{key}: impossible values, not priced: {}",
                stage.url(),
                first_few(&bad)
            )),
            Err(e) => unreadable.push(format!("{}/{key}: {e}", stage.url())),
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    out.retain(|l| since.is_none_or(|s| l.started_at >= now - s));
    out.sort_by(|a, b| a.started_at.total_cmp(&b.started_at));
    Ok((out, unreadable))
}

/// The first few of `items`, and how many more.
fn first_few(items: &[String]) -> String {
    const FEW: usize = 3;
    let mut s = items.iter().take(FEW).cloned().collect::<Vec<_>>().join("; ");
    if items.len() > FEW {
        s.push_str(&format!("; and {} more", items.len() - FEW));
    }
    s
}

/// Names the ledger records that could not be read (on stderr, so that --json and --csv stay parseable).
fn name_unreadable(unreadable: &[String]) {
    if unreadable.is_empty() {
        return;
    }
    eprintln!(
        "{} unreadable ledger record(s), left out (move or delete them, or run pgshift report on their runs):",
        unreadable.len()
    );
    for u in unreadable {
        eprintln!("  {u}");
    }
}

/// A time in seconds since the Unix epoch as `YYYY-MM-DD HH:MMZ`.
fn when(t: f64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0)
        .map_or_else(|| "-".into(), |d| d.format("%Y-%m-%d %H:%MZ").to_string())
}

/// Rows as CSV on standard output, quoted where a field needs it.
fn print_csv<I, R>(header: &[&str], rows: I) -> Result<()>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = String>,
{
    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
    w.write_record(header)?;
    for r in rows {
        w.write_record(r)?;
    }
    w.flush()?;
    Ok(())
}

pub(crate) async fn runs(a: RunsArgs) -> Result<()> {
    if let Some(machine) = &a.state_machine {
        return executions(machine, a.since, a.json).await;
    }
    let stage = crate::commands::flags::stage_url(&need(&a.stage, a.config.read()?.stage, "stage")?)?;
    let (all, unreadable) = ledgers(&stage, a.since).await?;
    name_unreadable(&unreadable);
    let prices = PriceTable::default();
    if a.json {
        out!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let header = [
        "run_id",
        "started",
        "status",
        "trigger",
        "tables",
        "rows",
        "source_mb",
        "parts",
        "retries",
        "seconds",
        "cost_usd",
        "error",
    ];
    let rows = all.iter().map(|l| {
        let trigger = match &l.trigger {
            pgshift::contract::ledger::Trigger::Manual => "manual".to_string(),
            pgshift::contract::ledger::Trigger::Snapshot { identifier } => format!("snapshot:{identifier}"),
        };
        vec![
            l.run_id.clone(),
            when(l.started_at),
            l.status.clone(),
            trigger,
            l.tables.len().to_string(),
            l.rows().to_string(),
            format!("{:.1}", l.source_bytes() as f64 / 1e6),
            l.parts().to_string(),
            l.retries().to_string(),
            format!("{:.1}", l.ended_at - l.started_at),
            format!("{:.6}", run_cost(l, &prices).total),
            l.error.clone().unwrap_or_default(),
        ]
    });
    if a.csv {
        return print_csv(&header, rows);
    }
    runs_table(rows);
    out!(
        "{} run(s) on {}; cost at {} list prices of {} (pgshift cost for the items)",
        all.len(),
        stage,
        prices.region,
        prices.date
    );
    Ok(())
}

/// The runs as a text table, counts as a person reads them (the CSV keeps plain numbers).
fn runs_table(rows: impl Iterator<Item = Vec<String>>) {
    let mut t = table(
        &[
            "run",
            "started",
            "status",
            "trigger",
            "tables",
            "rows",
            "source MB",
            "parts",
            "retries",
            "seconds",
            "cost $",
            "error",
        ],
        &[4, 5, 6, 7, 8, 9, 10],
    );
    t.add_rows(rows.map(|mut r| {
        r[5] = r[5].parse::<u64>().map_or(r[5].clone(), pgshift::report::thousands);
        if r[11].is_empty() {
            r[11] = "-".into();
        }
        r
    }));
    out!("{t}");
}

pub(crate) async fn cost(a: CostArgs) -> Result<()> {
    let prices = match &a.prices {
        Some(p) => PriceTable::load(p).map_err(anyhow::Error::msg)?,
        None => PriceTable::default(),
    };
    let stage = match &a.execution {
        Some(_) => None,
        None => Some(crate::commands::flags::stage_url(&need(
            &a.stage,
            a.config.read()?.stage,
            "stage",
        )?)?),
    };
    let (mut all, mut unreadable) = match (&a.execution, &stage) {
        (Some(arn), _) => (vec![deployed(arn, a.lambda_memory_mb).await?], Vec::new()),
        (None, Some(stage)) => ledgers(stage, a.since).await?,
        (None, None) => bail!("pass --stage URL or --execution ARN"),
    };
    if let (Some(id), Some(stage)) = (&a.run, &stage) {
        all.retain(|l| &l.run_id == id);
        // Only this run's own record matters: another run's broken record is not this one's business.
        let own = format!("/{}", pgshift::contract::layout::ledger_key(id));
        unreadable.retain(|u| u.split(": ").next().is_some_and(|k| k.ends_with(&own)));
        if all.is_empty() {
            name_unreadable(&unreadable);
            bail!(
                "no readable ledger record of run {id:?} on {stage}: list the runs with pgshift runs --stage {stage}"
            );
        }
    }
    name_unreadable(&unreadable);
    let bills: Vec<RunCost> = all.iter().map(|l| run_cost(l, &prices)).collect();
    if a.json {
        out!("{}", serde_json::to_string_pretty(&bills)?);
        return Ok(());
    }
    if a.csv {
        let rows = bills.iter().flat_map(|b| {
            b.items.iter().map(|i| {
                vec![
                    b.run_id.clone(),
                    i.table.as_ref().map_or("(run)".to_string(), |t| t.to_string()),
                    i.item.clone(),
                    i.quantity.to_string(),
                    i.unit.clone(),
                    i.unit_price.to_string(),
                    i.dollars.to_string(),
                    basis(i.basis).to_string(),
                ]
            })
        });
        return print_csv(
            &[
                "run_id",
                "table",
                "item",
                "quantity",
                "unit",
                "unit_price_usd",
                "usd",
                "basis",
            ],
            rows,
        );
    }
    for b in &bills {
        print_bill(b);
    }
    print_review(&bills);
    Ok(())
}

/// The ledger of a deployed run: from its stage, with the state transitions counted from the execution's history
/// and the history of every child execution of its Map run.
async fn deployed(arn: &str, memory_mb: u32) -> Result<Ledger> {
    let x = pgshift::executions::aws::AwsExecutions::from_env().await;
    let plan_url = crate::commands::report::plan_of_execution(&x, arn).await?;
    let n = pgshift::executions::run_transitions(&x, arn)
        .await
        .map_err(|e| anyhow::anyhow!("{e} [{}]", e.name()))?;
    let facts = pgshift::report::ledger::LedgerFacts {
        assumed_memory_mb: memory_mb,
        transitions: Some(n),
        ..Default::default()
    };
    match pgshift::report::ledger::build(&UrlStages::default(), &plan_url, &facts).await {
        Ok(l) => Ok(l),
        Err(e) => bail!("{e} [{}]", e.name()),
    }
}

fn basis(b: Basis) -> &'static str {
    match b {
        Basis::Actual => "actual",
        Basis::Estimated => "estimated",
    }
}

fn print_bill(b: &RunCost) {
    out!(
        "\nrun {} ({}, started {}): {}",
        b.run_id,
        b.status,
        when(b.started_at),
        b.prices
    );
    let mut t = table(&["table", "item", "quantity", "unit", "basis", "$", "note"], &[2, 5]);
    t.add_rows(b.items.iter().map(|i| {
        vec![
            i.table.as_ref().map_or("(run)".to_string(), |t| t.to_string()),
            i.item.clone(),
            format!("{:.6}", i.quantity),
            i.unit.clone(),
            basis(i.basis).to_string(),
            format!("{:.6}", i.dollars),
            i.note.clone().unwrap_or_default(),
        ]
    }));
    out!("{t}");
    let per = |x: Option<f64>, what: &str| x.map_or(String::new(), |v| format!(", ${v:.6} {what}"));
    out!(
        "  total ${:.6}{}{}",
        b.total,
        per(b.per_gb, "per GB read"),
        per(b.per_million_rows, "per million rows")
    );
}

/// Across runs: the trend, and the tables that cost most.
fn print_review(bills: &[RunCost]) {
    if bills.is_empty() {
        out!("no run with a ledger record on this stage");
        return;
    }
    out!("\ntrend:");
    for b in bills {
        let per_gb = b.per_gb.map_or("-".to_string(), |v| format!("{v:.6}"));
        out!(
            "  {}  {:<34} ${:>12.6}  $/GB {per_gb}",
            when(b.started_at),
            b.run_id,
            b.total
        );
    }
    let mut by_table: BTreeMap<String, f64> = BTreeMap::new();
    for b in bills {
        for i in &b.items {
            if let Some(t) = &i.table {
                *by_table.entry(t.to_string()).or_default() += i.dollars;
            }
        }
    }
    let mut top: Vec<(String, f64)> = by_table.into_iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    out!("most expensive tables:");
    for (t, d) in top.iter().take(5) {
        out!("  {t:<40} ${d:.6}");
    }
    let total: f64 = bills.iter().map(|b| b.total).sum();
    out!("{} run(s), ${total:.6} in all", bills.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_dates_read_as_people_write_them() {
        assert_eq!(parse_age("30d"), Ok(30.0 * 86_400.0));
        assert_eq!(parse_age("12h"), Ok(43_200.0));
        assert!(parse_age("3w").is_err());
        assert!(parse_age("d").is_err());
        assert_eq!(when(0.0), "1970-01-01 00:00Z");
        assert_eq!(when(1_796_342_400.0), "2026-12-04 00:00Z");
    }
}
