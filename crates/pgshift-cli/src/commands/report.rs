//! `pgshift report`: how a run's data moved and what it cost, read back from its stage (any run: local or on AWS).

use anyhow::{bail, Context, Result};
use clap::Args;
use pgshift::UrlStages;

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// The run's plan: <stage>/<run>/plan.json.
    #[arg(long)]
    plan: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write the run's self-contained HTML report to this file (timeline, concurrency, skew, throughput, load steps,
    /// cost, failures) instead of printing the text report.
    #[arg(long)]
    html: Option<std::path::PathBuf>,
    /// Lambda memory (MB) the cost estimate assumes for the extractors.
    #[arg(long, default_value_t = 2048)]
    lambda_memory_mb: u32,
}

pub(crate) async fn run(args: ReportArgs) -> Result<()> {
    if let Some(path) = &args.html {
        let (html, _) = match pgshift::report::html_of(&UrlStages::default(), &args.plan, args.lambda_memory_mb).await {
            Ok(r) => r,
            Err(e) => bail!("{e} [{}]", e.name()),
        };
        std::fs::write(path, html).with_context(|| format!("writing --html {}", path.display()))?;
        println!("report: {}", path.display());
        return Ok(());
    }
    let (report, notes) =
        match pgshift::report::from_stage(&UrlStages::default(), &args.plan, args.lambda_memory_mb).await {
            Ok(r) => r,
            Err(e) => bail!("{e} [{}]", e.name()),
        };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("run {}{}", report.run_id, report.render());
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    Ok(())
}
